//! PostgreSQL placement for the tenant tables API (seed 002, every pattern
//! with the database's own boundary under it):
//!
//! - pool: one shared table `fief_pool.items` with ROW LEVEL SECURITY
//!   enabled and FORCEd; the tenant is set per transaction with
//!   `set_config('fief.tenant', $1, true)` and the policy reads it with
//!   `current_setting('fief.tenant')` (no `missing_ok`: unset fails closed);
//! - bridge: a schema per tenant (`fief_t_<tenant>`), its table under the
//!   same forced policy;
//! - silo: a database per tenant, reached through a pool of its own.
//!
//! Two roles: the *admin* URL (owner: migrations, schemas, databases) and
//! the *runtime* URL every request uses, which must be NOSUPERUSER,
//! NOBYPASSRLS and own none of the tables — checked at start-up.

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Row};

use fief_core::{TenantId, Tier};

use crate::{Result, StoreError};

/// Per-tenant identifiers come from validated tenant ids (`[a-z0-9-]`).
fn ident(tenant: &TenantId) -> String {
    tenant.as_str().replace('-', "_")
}

/// A row as stored, before opening.
pub(crate) struct PgRow {
    pub key: String,
    pub sealed: Vec<u8>,
    pub version: i64,
    pub updated_at: String,
}

/// Which items of a table a select returns: one key, or a page by prefix.
pub(crate) struct Selection<'a> {
    pub key: Option<&'a str>,
    pub prefix: &'a str,
    pub after: &'a str,
    pub limit: i64,
}

pub(crate) struct PgTables {
    admin: PgPool,
    runtime: PgPool,
    admin_options: PgConnectOptions,
    runtime_options: PgConnectOptions,
    runtime_role: String,
    database: String,
    silos: Mutex<HashMap<TenantId, PgPool>>,
    /// Bridge schemas known to exist. Provisioning is DDL, serialised by
    /// `provisioning` (concurrent GRANT/ALTER on one table conflict).
    bridges: Mutex<std::collections::HashSet<TenantId>>,
    provisioning: tokio::sync::Mutex<()>,
}

const TABLE_DDL: &str = "(
    tenant_id  text NOT NULL,
    tbl        text NOT NULL,
    key        text NOT NULL,
    sealed     bytea NOT NULL,
    version    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, tbl, key))";

/// Statements that put a table under the tenant policy and let the runtime
/// role use it (and nothing else). Idempotent without ever dropping the
/// policy: a table with forced RLS and no policy refuses every row, and
/// requests may be running.
fn secure(table: &str, runtime: &str) -> Vec<String> {
    let (schema, name) = table.split_once('.').unwrap_or(("public", table));
    vec![
        format!("ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"),
        format!("ALTER TABLE {table} FORCE ROW LEVEL SECURITY"),
        format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = '{schema}' \
             AND tablename = '{name}' AND policyname = 'tenant_isolation') THEN \
             CREATE POLICY tenant_isolation ON {table} \
             USING (tenant_id = current_setting('fief.tenant')) \
             WITH CHECK (tenant_id = current_setting('fief.tenant')); END IF; END $$"
        ),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO \"{runtime}\""),
    ]
}

impl PgTables {
    /// Connects both roles, migrates with the admin role, and refuses a
    /// runtime role that could bypass row-level security.
    pub async fn open(url: &str, admin_url: &str) -> Result<Self> {
        let parse = |u: &str, which: &str| {
            u.parse::<PgConnectOptions>()
                .map_err(|e| StoreError::Config(format!("postgres {which} URL is not valid: {e}")))
        };
        let runtime_options = parse(url, "runtime")?.disable_statement_logging();
        let admin_options = parse(admin_url, "admin")?.disable_statement_logging();
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(admin_options.clone())
            .await?;
        let runtime = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(runtime_options.clone())
            .await?;
        let (runtime_role, database): (String, String) =
            sqlx::query_as("SELECT current_user::text, current_database()::text")
                .fetch_one(&runtime)
                .await?;
        let this = Self {
            admin,
            runtime,
            admin_options,
            runtime_options,
            runtime_role,
            database,
            silos: Mutex::new(HashMap::new()),
            bridges: Mutex::new(std::collections::HashSet::new()),
            provisioning: tokio::sync::Mutex::new(()),
        };
        this.migrate().await?;
        this.check_runtime_role().await?;
        Ok(this)
    }

    async fn migrate(&self) -> Result<()> {
        let mut statements = vec![
            "CREATE SCHEMA IF NOT EXISTS fief_pool".to_owned(),
            format!("CREATE TABLE IF NOT EXISTS fief_pool.items {TABLE_DDL}"),
            format!(
                "GRANT USAGE ON SCHEMA fief_pool TO \"{}\"",
                self.runtime_role
            ),
        ];
        statements.extend(secure("fief_pool.items", &self.runtime_role));
        for s in statements {
            sqlx::query(&s).execute(&self.admin).await?;
        }
        Ok(())
    }

    /// Refuses to serve with a role that row-level security would not bind.
    async fn check_runtime_role(&self) -> Result<()> {
        let row =
            sqlx::query("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
                .fetch_one(&self.runtime)
                .await?;
        let (superuser, bypass): (bool, bool) = (row.try_get(0)?, row.try_get(1)?);
        let refuse = |why: String| {
            Err(StoreError::Config(format!(
                "refusing to serve: the PostgreSQL runtime role \"{}\" {why}; row-level security \
                 would not bind it. Use a role created with NOSUPERUSER NOBYPASSRLS that owns no \
                 fief table (the admin URL is for the owner)",
                self.runtime_role
            )))
        };
        if superuser {
            return refuse("is a superuser".into());
        }
        if bypass {
            return refuse("has BYPASSRLS".into());
        }
        let owned: Vec<String> = sqlx::query_scalar(
            "SELECT schemaname || '.' || tablename FROM pg_tables
             WHERE tableowner = current_user AND (schemaname = 'fief_pool' OR schemaname LIKE 'fief\\_t\\_%')",
        )
        .fetch_all(&self.runtime)
        .await?;
        if !owned.is_empty() {
            return refuse(format!("owns {}", owned.join(", ")));
        }
        let forced: Option<(bool, bool)> = sqlx::query_as(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'fief_pool.items'::regclass",
        )
        .fetch_optional(&self.runtime)
        .await?;
        if forced != Some((true, true)) {
            return refuse("would use fief_pool.items without forced row-level security".into());
        }
        Ok(())
    }

    fn silo_database(&self, tenant: &TenantId) -> Result<String> {
        let name = format!("{}_t_{}", self.database, ident(tenant));
        if name.len() > 63 {
            return Err(StoreError::Config(format!(
                "silo database name {name} is longer than PostgreSQL's 63 bytes; use a shorter database or tenant name"
            )));
        }
        Ok(name)
    }

    /// Creates what `tier` needs for `tenant` (idempotent). The caller holds
    /// `provisioning`: concurrent DDL on one object conflicts.
    async fn provision_locked(&self, tenant: &TenantId, tier: Tier) -> Result<()> {
        match tier {
            Tier::Pool => Ok(()),
            Tier::Bridge => {
                let schema = format!("fief_t_{}", ident(tenant));
                let mut statements = vec![
                    format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
                    format!("CREATE TABLE IF NOT EXISTS {schema}.items {TABLE_DDL}"),
                    format!(
                        "GRANT USAGE ON SCHEMA {schema} TO \"{}\"",
                        self.runtime_role
                    ),
                ];
                statements.extend(secure(&format!("{schema}.items"), &self.runtime_role));
                for s in statements {
                    sqlx::query(&s).execute(&self.admin).await?;
                }
                Ok(())
            }
            Tier::Silo => {
                let db = self.silo_database(tenant)?;
                let exists: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                        .bind(&db)
                        .fetch_optional(&self.admin)
                        .await?;
                if exists.is_none() {
                    sqlx::query(&format!("CREATE DATABASE {db}"))
                        .execute(&self.admin)
                        .await?;
                }
                for s in [
                    format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"),
                    format!(
                        "GRANT CONNECT ON DATABASE {db} TO \"{}\"",
                        self.runtime_role
                    ),
                ] {
                    sqlx::query(&s).execute(&self.admin).await?;
                }
                let admin = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_with(self.admin_options.clone().database(&db))
                    .await?;
                let mut statements = vec![
                    "CREATE SCHEMA IF NOT EXISTS fief_silo".to_owned(),
                    format!("CREATE TABLE IF NOT EXISTS fief_silo.items {TABLE_DDL}"),
                    format!(
                        "GRANT USAGE ON SCHEMA fief_silo TO \"{}\"",
                        self.runtime_role
                    ),
                ];
                statements.extend(secure("fief_silo.items", &self.runtime_role));
                for s in statements {
                    sqlx::query(&s).execute(&admin).await?;
                }
                admin.close().await;
                Ok(())
            }
        }
    }

    /// The pool and table that hold `tenant`'s items under `tier`.
    async fn place(&self, tenant: &TenantId, tier: Tier) -> Result<(PgPool, String)> {
        match tier {
            Tier::Pool => Ok((self.runtime.clone(), "fief_pool.items".into())),
            Tier::Bridge => {
                let known = self.bridges.lock().is_ok_and(|b| b.contains(tenant));
                if !known {
                    let _one_at_a_time = self.provisioning.lock().await;
                    self.provision_locked(tenant, tier).await?;
                    if let Ok(mut b) = self.bridges.lock() {
                        b.insert(tenant.clone());
                    }
                }
                Ok((
                    self.runtime.clone(),
                    format!("fief_t_{}.items", ident(tenant)),
                ))
            }
            Tier::Silo => {
                if let Some(p) = self.silos.lock().ok().and_then(|m| m.get(tenant).cloned()) {
                    return Ok((p, "fief_silo.items".into()));
                }
                let _one_at_a_time = self.provisioning.lock().await;
                if let Some(p) = self.silos.lock().ok().and_then(|m| m.get(tenant).cloned()) {
                    return Ok((p, "fief_silo.items".into()));
                }
                self.provision_locked(tenant, tier).await?;
                let db = self.silo_database(tenant)?;
                let pool = PgPoolOptions::new()
                    .max_connections(2)
                    .connect_with(self.runtime_options.clone().database(&db))
                    .await?;
                let mut silos = self
                    .silos
                    .lock()
                    .map_err(|_| StoreError::Corrupt("silo pool registry poisoned".into()))?;
                Ok((
                    silos.entry(tenant.clone()).or_insert(pool).clone(),
                    "fief_silo.items".into(),
                ))
            }
        }
    }

    /// The application's own tenant condition, on top of the policy.
    fn filter() -> &'static str {
        #[cfg(feature = "fault-injection")]
        if crate::faults::tenant_filter_dropped() {
            return "($1::text IS NOT NULL)";
        }
        "tenant_id = $1"
    }

    /// Opens a transaction with the tenant set for row-level security.
    async fn begin(
        pool: &PgPool,
        tenant: &TenantId,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT set_config('fief.tenant', $1, true)")
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    pub async fn put(
        &self,
        tenant: &TenantId,
        tier: Tier,
        table: &str,
        key: &str,
        sealed: Vec<u8>,
    ) -> Result<(i64, String)> {
        let (pool, t) = self.place(tenant, tier).await?;
        let mut tx = Self::begin(&pool, tenant).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO {t} (tenant_id, tbl, key, sealed, version) VALUES ($1, $2, $3, $4, 1)
             ON CONFLICT (tenant_id, tbl, key) DO UPDATE SET sealed = excluded.sealed,
                 version = {t}.version + 1, updated_at = now()
             RETURNING version, to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS updated_at"
        ))
        .bind(tenant.as_str())
        .bind(table)
        .bind(key)
        .bind(sealed)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((row.try_get("version")?, row.try_get("updated_at")?))
    }

    pub async fn select(
        &self,
        tenant: &TenantId,
        tier: Tier,
        table: &str,
        which: Selection<'_>,
    ) -> Result<Vec<PgRow>> {
        let (pool, t) = self.place(tenant, tier).await?;
        let mut tx = Self::begin(&pool, tenant).await?;
        let rows = sqlx::query(&format!(
            "SELECT key, sealed, version,
                    to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS updated_at
             FROM {t} WHERE {} AND tbl = $2 AND ($3::text IS NULL OR key = $3)
               AND left(key, length($4)) = $4 AND key > $5 ORDER BY key LIMIT $6",
            Self::filter()
        ))
        .bind(tenant.as_str())
        .bind(table)
        .bind(which.key)
        .bind(which.prefix)
        .bind(which.after)
        .bind(which.limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                Ok(PgRow {
                    key: r.try_get("key")?,
                    sealed: r.try_get("sealed")?,
                    version: r.try_get("version")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    pub async fn delete(
        &self,
        tenant: &TenantId,
        tier: Tier,
        table: &str,
        key: &str,
    ) -> Result<bool> {
        let (pool, t) = self.place(tenant, tier).await?;
        let mut tx = Self::begin(&pool, tenant).await?;
        let n = sqlx::query(&format!(
            "DELETE FROM {t} WHERE {} AND tbl = $2 AND key = $3",
            Self::filter()
        ))
        .bind(tenant.as_str())
        .bind(table)
        .bind(key)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Copies every item of `tenant` from one tier's placement to another's.
    pub async fn copy(&self, tenant: &TenantId, from: Tier, to: Tier) -> Result<()> {
        let (src, st) = self.place(tenant, from).await?;
        let (dst, dt) = self.place(tenant, to).await?;
        let mut tx = Self::begin(&src, tenant).await?;
        let rows = sqlx::query(&format!(
            "SELECT tbl, key, sealed, version, updated_at::text AS updated_at FROM {st} WHERE tenant_id = $1"
        ))
        .bind(tenant.as_str())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut tx = Self::begin(&dst, tenant).await?;
        for r in &rows {
            sqlx::query(&format!(
                "INSERT INTO {dt} (tenant_id, tbl, key, sealed, version, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6::timestamptz)
                 ON CONFLICT (tenant_id, tbl, key) DO UPDATE SET sealed = excluded.sealed,
                     version = excluded.version, updated_at = excluded.updated_at"
            ))
            .bind(tenant.as_str())
            .bind(r.try_get::<String, _>("tbl")?)
            .bind(r.try_get::<String, _>("key")?)
            .bind(r.try_get::<Vec<u8>, _>("sealed")?)
            .bind(r.try_get::<i64, _>("version")?)
            .bind(r.try_get::<String, _>("updated_at")?)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes what `tier` holds of `tenant`: its rows, schema or database.
    pub async fn drop_tenant(&self, tenant: &TenantId, tier: Tier) -> Result<()> {
        match tier {
            Tier::Pool => {
                let mut tx = Self::begin(&self.runtime, tenant).await?;
                sqlx::query("DELETE FROM fief_pool.items WHERE tenant_id = $1")
                    .bind(tenant.as_str())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Tier::Bridge => {
                if let Ok(mut b) = self.bridges.lock() {
                    b.remove(tenant);
                }
                sqlx::query(&format!(
                    "DROP SCHEMA IF EXISTS fief_t_{} CASCADE",
                    ident(tenant)
                ))
                .execute(&self.admin)
                .await?;
            }
            Tier::Silo => {
                let pool = self.silos.lock().ok().and_then(|mut m| m.remove(tenant));
                if let Some(pool) = pool {
                    pool.close().await;
                }
                let db = self.silo_database(tenant)?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                    .execute(&self.admin)
                    .await?;
            }
        }
        Ok(())
    }

    /// What the catalogs still hold of `tenant`: rows in the shared table
    /// (counted with the tenant set, as the forced policy binds the owner
    /// too), a schema, a database.
    pub async fn residue(&self, tenant: &TenantId) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let mut tx = Self::begin(&self.admin, tenant).await?;
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM fief_pool.items WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        if n > 0 {
            found.push(format!("{n} rows in fief_pool.items"));
        }
        let schema = format!("fief_t_{}", ident(tenant));
        let s: Option<String> =
            sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname = $1")
                .bind(&schema)
                .fetch_optional(&self.admin)
                .await?;
        found.extend(s.map(|s| format!("schema {s}")));
        let db = self.silo_database(tenant)?;
        let d: Option<String> =
            sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname = $1")
                .bind(&db)
                .fetch_optional(&self.admin)
                .await?;
        found.extend(d.map(|d| format!("database {d}")));
        Ok(found)
    }
}
