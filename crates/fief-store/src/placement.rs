//! Where a tenant's content lives, by tier (seed 002), on either backend.
//!
//! Tenant content is every row a tenant writes: models (metadata), policies,
//! roles, knowledge bases, documents, chunks, table items and log records.
//! The same eight tables exist in every placement, so every statement is written
//! once against a [`Place`]:
//!
//! | tier   | SQLite (embedded)                   | PostgreSQL                                 |
//! |--------|-------------------------------------|--------------------------------------------|
//! | pool   | shared tables in `fief.db`          | shared `fief_pool.*`, RLS enabled + FORCEd |
//! | bridge | tables `t_<tenant>_*` in `fief.db`  | a schema `fief_t_<tenant>` (same policy)   |
//! | silo   | a file `tenants/<id>/data.db`       | a database `<db>_t_<tenant>`               |
//!
//! Rows keep their `tenant_id` column everywhere, and every statement
//! filters by it: the application's condition sits on top of the database's
//! own boundary (table, schema, file, database, row-level security).
//!
//! PostgreSQL uses two roles: the *admin* URL (owner: migrations, schemas,
//! databases) and the *runtime* URL every request uses, which must be
//! NOSUPERUSER, NOBYPASSRLS and own none of the tables — checked at
//! start-up. In a transaction on a tenant's place the tenant is set with
//! `set_config('fief.tenant', $1, true)`; the policy reads it with
//! `current_setting('fief.tenant')` (no `missing_ok`: unset fails closed).
//! Platform tables (tenants, API keys, signing keys) live in
//! `fief_platform` and hold no tenant content.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::ConnectOptions;

use fief_core::{TenantId, Tier};

use crate::db::{q, Db, Kind, Tx};
use crate::{Result, StoreError};

/// The content tables and the columns a tier change copies, parents first.
/// (`kb_chunks.id` is not copied: the destination numbers its own rows,
/// and indexes are rebuilt after a move.)
pub(crate) const CONTENT: &[(&str, &[(&str, Kind)])] = &[
    (
        "knowledge_bases",
        &[
            ("tenant_id", Kind::Text),
            ("name", Kind::Text),
            ("created_at", Kind::Text),
        ],
    ),
    (
        "kb_documents",
        &[
            ("tenant_id", Kind::Text),
            ("kb", Kind::Text),
            ("id", Kind::Text),
            ("chunks", Kind::Int),
            ("bytes", Kind::Int),
            ("created_at", Kind::Text),
            ("updated_at", Kind::Text),
        ],
    ),
    (
        "kb_chunks",
        &[
            ("tenant_id", Kind::Text),
            ("kb", Kind::Text),
            ("document", Kind::Text),
            ("seq", Kind::Int),
            ("sealed_text", Kind::Blob),
            ("sealed_vector", Kind::Blob),
        ],
    ),
    (
        "models",
        &[
            ("tenant_id", Kind::Text),
            ("name", Kind::Text),
            ("version", Kind::Int),
            ("size_bytes", Kind::Int),
            ("sha256", Kind::Text),
            ("signature", Kind::Text),
            ("tags", Kind::Text),
            ("created_at", Kind::Text),
            ("updated_at", Kind::Text),
        ],
    ),
    (
        "policies",
        &[
            ("tenant_id", Kind::Text),
            ("id", Kind::Text),
            ("body", Kind::Text),
            ("created_at", Kind::Text),
            ("updated_at", Kind::Text),
        ],
    ),
    (
        "roles",
        &[
            ("tenant_id", Kind::Text),
            ("name", Kind::Text),
            ("trust_policy", Kind::Text),
            ("policies", Kind::Text),
            ("external_id", Kind::Text),
            ("max_session_secs", Kind::Int),
            ("created_at", Kind::Text),
            ("updated_at", Kind::Text),
        ],
    ),
    (
        "items",
        &[
            ("tenant_id", Kind::Text),
            ("tbl", Kind::Text),
            ("key", Kind::Text),
            ("sealed", Kind::Blob),
            ("version", Kind::Int),
            ("updated_at", Kind::Text),
        ],
    ),
    (
        "log_records",
        &[
            ("tenant_id", Kind::Text),
            ("stream", Kind::Text),
            ("seq", Kind::Int),
            ("at_ms", Kind::Int),
            ("request_id", Kind::Text),
            ("kind", Kind::Text),
            ("model", Kind::Text),
            ("principal", Kind::Text),
            ("sealed", Kind::Blob),
        ],
    ),
];

/// The content tables' DDL for one placement. `prefix` qualifies table
/// names (`fief_pool.`, `t_acme_`); `index_prefix` names indexes, which
/// PostgreSQL places in the table's schema and SQLite keeps file-wide.
fn content_ddl(pg: bool, prefix: &str, index_prefix: &str) -> Vec<String> {
    let (int, blob, strict) = if pg {
        ("bigint", "bytea", "")
    } else {
        ("INTEGER", "BLOB", " STRICT")
    };
    let serial = if pg {
        "bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    } else {
        // Never reused, so an index entry that outlives its chunk cannot
        // point at a newer one.
        "INTEGER PRIMARY KEY AUTOINCREMENT"
    };
    let p = prefix;
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {p}knowledge_bases (tenant_id TEXT NOT NULL, name TEXT NOT NULL,
             created_at TEXT NOT NULL, PRIMARY KEY (tenant_id, name)){strict}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {p}kb_documents (tenant_id TEXT NOT NULL, kb TEXT NOT NULL,
             id TEXT NOT NULL, chunks {int} NOT NULL, bytes {int} NOT NULL, created_at TEXT NOT NULL,
             updated_at TEXT NOT NULL, PRIMARY KEY (tenant_id, kb, id),
             FOREIGN KEY (tenant_id, kb) REFERENCES {p}knowledge_bases (tenant_id, name) ON DELETE CASCADE){strict}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {p}kb_chunks (id {serial}, tenant_id TEXT NOT NULL,
             kb TEXT NOT NULL, document TEXT NOT NULL, seq {int} NOT NULL,
             sealed_text {blob} NOT NULL, sealed_vector {blob} NOT NULL,
             FOREIGN KEY (tenant_id, kb, document) REFERENCES {p}kb_documents (tenant_id, kb, id)
                 ON DELETE CASCADE){strict}"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {index_prefix}kb_chunks_by_document
             ON {p}kb_chunks (tenant_id, kb, document)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {p}models (tenant_id TEXT NOT NULL, name TEXT NOT NULL,
             version {int} NOT NULL, size_bytes {int} NOT NULL, sha256 TEXT NOT NULL,
             signature TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '{{}}', created_at TEXT NOT NULL,
             updated_at TEXT NOT NULL, PRIMARY KEY (tenant_id, name)){strict}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {p}policies (tenant_id TEXT NOT NULL, id TEXT NOT NULL,
             body TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
             PRIMARY KEY (tenant_id, id)){strict}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {p}roles (tenant_id TEXT NOT NULL, name TEXT NOT NULL,
             trust_policy TEXT NOT NULL, policies TEXT NOT NULL, external_id TEXT,
             max_session_secs {int}, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
             PRIMARY KEY (tenant_id, name)){strict}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {p}items (tenant_id TEXT NOT NULL, tbl TEXT NOT NULL,
             key TEXT NOT NULL, sealed {blob} NOT NULL, version {int} NOT NULL,
             updated_at TEXT NOT NULL, PRIMARY KEY (tenant_id, tbl, key)){strict}"
        ),
        // Metadata in clear (what a query filters on); the record sealed,
        // bound to (tenant, stream, seq).
        format!(
            "CREATE TABLE IF NOT EXISTS {p}log_records (tenant_id TEXT NOT NULL, stream TEXT NOT NULL,
             seq {int} NOT NULL, at_ms {int} NOT NULL, request_id TEXT NOT NULL, kind TEXT NOT NULL,
             model TEXT NOT NULL, principal TEXT NOT NULL, sealed {blob} NOT NULL,
             PRIMARY KEY (tenant_id, stream, seq)){strict}"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {index_prefix}log_records_by_time
             ON {p}log_records (tenant_id, stream, at_ms)"
        ),
    ]
}

/// Per-tenant identifiers come from validated tenant ids (`[a-z0-9-]`),
/// with `-` mapped to `_`, so they need no quoting and stay distinct.
fn ident(tenant: &TenantId) -> String {
    tenant.as_str().replace('-', "_")
}

/// Where one tenant's content lives under one tier.
pub(crate) struct Place {
    pub db: Db,
    prefix: String,
    /// Set on the places the store hands to requests on PostgreSQL (never
    /// on placement's own: copies, drops, residue): every transaction
    /// takes the tenant's move lock shared in this database, then checks
    /// that the tenant still is `tier` and active, so a replica that has
    /// not yet heard of a move or an offboarding cannot write where the
    /// mover is copying from or dropping.
    pub fence: Option<Fence>,
}

#[derive(Clone)]
pub(crate) struct Fence {
    pub tier: Tier,
    /// The platform database, when it is not this place's (a silo's).
    pub platform: Option<Db>,
}

/// The advisory lock class of a tenant's move (the key is its id's hash).
const MOVE_LOCK: i32 = 4_607_737;

impl Place {
    /// The name of content table `table` here.
    pub fn t(&self, table: &str) -> String {
        format!("{}{table}", self.prefix)
    }

    /// A transaction on this place, with the tenant set for row-level
    /// security on PostgreSQL.
    pub async fn begin(&self, tenant: &TenantId) -> Result<Tx> {
        self.tenant_tx(self.db.begin().await?, tenant).await
    }

    /// [`begin`](Self::begin) for a transaction that reads before it writes
    /// (see `Db::begin_write`).
    pub async fn begin_write(&self, tenant: &TenantId) -> Result<Tx> {
        self.tenant_tx(self.db.begin_write().await?, tenant).await
    }

    async fn tenant_tx(&self, mut tx: Tx, tenant: &TenantId) -> Result<Tx> {
        if matches!(self.db, Db::Pg(_)) {
            q("SELECT set_config('fief.tenant', $1, true)")
                .bind(tenant.as_str())
                .exec(&mut tx)
                .await?;
        }
        if let Some(fence) = &self.fence {
            q(format!(
                "SELECT pg_advisory_xact_lock_shared({MOVE_LOCK}, hashtext($1))"
            ))
            .bind(tenant.as_str())
            .exec(&mut tx)
            .await?;
            // A new statement, so a snapshot taken after the lock: a move
            // that held it has committed its tier by now.
            let check =
                q("SELECT tier FROM fief_platform.tenants WHERE id = $1 AND status = 'active'")
                    .bind(tenant.as_str());
            let row = match &fence.platform {
                Some(platform) => check.opt(platform).await?,
                None => check.opt(&mut tx).await?,
            };
            let Some(row) = row else {
                return Err(StoreError::TenantGone(tenant.to_string()));
            };
            let tier: String = row.get("tier")?;
            if tier != fence.tier.as_str() {
                return Err(StoreError::Moving(tenant.to_string()));
            }
        }
        Ok(tx)
    }

    /// Runs one statement in its own tenant transaction.
    pub async fn run(&self, tenant: &TenantId, stmt: crate::db::Q) -> Result<u64> {
        let mut tx = self.begin(tenant).await?;
        let n = stmt.exec(&mut tx).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Fetches rows in their own tenant transaction.
    pub async fn fetch(
        &self,
        tenant: &TenantId,
        stmt: crate::db::Q,
    ) -> Result<Vec<crate::db::Row>> {
        let mut tx = self.begin(tenant).await?;
        let rows = stmt.all(&mut tx).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Makes deleted rows leave the files at once. On SQLite,
    /// `secure_delete` zeroes freed pages and a checkpoint truncates the
    /// WAL. PostgreSQL keeps dead tuples until vacuum; what they hold is
    /// sealed, and offboarding destroys the key.
    pub async fn scrub(&self) -> Result<()> {
        if let Db::Sqlite(_) = self.db {
            q("PRAGMA wal_checkpoint(TRUNCATE)").exec(&self.db).await?;
        }
        Ok(())
    }
}

/// The application's tenant condition (`$1` is the scope's tenant) on the
/// reads of sealed content: table items and knowledge-base chunks. The
/// fault-injection build can drop it, to show that the layers under it
/// (row-level security, placement, the seal) still hold.
pub(crate) fn tenant_filter() -> &'static str {
    #[cfg(feature = "fault-injection")]
    if crate::faults::tenant_filter_dropped() {
        return "(CAST($1 AS TEXT) IS NOT NULL)";
    }
    "tenant_id = $1"
}

/// Either backend's placement.
pub(crate) enum Placement {
    Sqlite(SqlitePlacement),
    Pg(Box<PgPlacement>),
}

impl Placement {
    pub async fn place(&self, tenant: &TenantId, tier: Tier) -> Result<Place> {
        match self {
            Placement::Sqlite(s) => s.place(tenant, tier).await,
            Placement::Pg(p) => p.place(tenant, tier).await,
        }
    }

    /// Removes all `tier` holds of `tenant`: rows, tables, schema, file or
    /// database.
    pub async fn drop_tenant(&self, tenant: &TenantId, tier: Tier) -> Result<()> {
        match self {
            Placement::Sqlite(s) => s.drop_tenant(tenant, tier).await,
            Placement::Pg(p) => p.drop_tenant(tenant, tier).await,
        }
    }

    /// Forgets what this process knows of `tenant`'s places (a bridge
    /// schema provisioned, a silo database's pool): another replica may
    /// have dropped or moved them. The next use provisions again, which is
    /// idempotent. An embedded store has no other process.
    pub fn forget(&self, tenant: &TenantId) {
        let Placement::Pg(p) = self else {
            return;
        };
        if let Ok(mut b) = p.bridges.lock() {
            b.remove(tenant);
        }
        if let Ok(mut silos) = p.silos.lock() {
            silos.remove(tenant);
        }
    }

    /// Forgets every tenant's places.
    pub fn forget_all(&self) {
        let Placement::Pg(p) = self else {
            return;
        };
        if let Ok(mut b) = p.bridges.lock() {
            b.clear();
        }
        if let Ok(mut silos) = p.silos.lock() {
            silos.clear();
        }
    }

    /// What any placement still holds of `tenant`, named.
    pub async fn residue(&self, tenant: &TenantId) -> Result<Vec<String>> {
        match self {
            Placement::Sqlite(s) => s.residue(tenant).await,
            Placement::Pg(p) => p.residue(tenant).await,
        }
    }

    /// Copies every content row of `tenant` from one tier's place to
    /// another's. Sealed values move as they are: seals bind tenant and
    /// address, not placement.
    pub async fn copy(&self, tenant: &TenantId, from: Tier, to: Tier) -> Result<Tx> {
        let src = self.place(tenant, from).await?;
        let dst = self.place(tenant, to).await?;
        let mut read = src.begin(tenant).await?;
        if matches!(src.db, Db::Pg(_)) {
            // Every replica's requests wait here, and after the switch find
            // the tier changed (see `Place::fence`).
            q(format!(
                "SELECT pg_advisory_xact_lock({MOVE_LOCK}, hashtext($1))"
            ))
            .bind(tenant.as_str())
            .exec(&mut read)
            .await?;
        }
        let mut write = dst.begin(tenant).await?;
        for (table, columns) in CONTENT {
            let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
            let rows = q(format!(
                "SELECT {} FROM {} WHERE tenant_id = $1",
                names.join(", "),
                src.t(table)
            ))
            .bind(tenant.as_str())
            .all(&mut read)
            .await?;
            let params: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
            let insert = format!(
                "INSERT INTO {} ({}) VALUES ({})",
                dst.t(table),
                names.join(", "),
                params.join(", ")
            );
            for row in &rows {
                let mut stmt = q(insert.clone());
                for (c, kind) in columns.iter() {
                    stmt = stmt.bind_arg(row.arg(c, *kind)?);
                }
                stmt.exec(&mut write).await?;
            }
        }
        write.commit().await?;
        // Held by the caller until the tier has switched.
        Ok(read)
    }
}

// ---- SQLite ---------------------------------------------------------------

pub(crate) struct SqlitePlacement {
    main: Db,
    data_dir: PathBuf,
    /// A silo file's connections (each a thread) close after this long unused.
    silo_idle: std::time::Duration,
    silos: Mutex<HashMap<TenantId, Db>>,
    /// Bridge tables known to exist, so a request runs no DDL.
    bridges: Mutex<HashSet<TenantId>>,
}

/// A SQLite database file with fief's pragmas: WAL, and deleted content
/// zeroed on disk rather than left in free pages.
pub(crate) async fn sqlite_file(path: &Path, connections: u32) -> Result<Db> {
    sqlite_file_idle(path, connections, std::time::Duration::from_secs(600)).await
}

/// [`sqlite_file`] whose connections close after `idle` unused.
async fn sqlite_file_idle(path: &Path, connections: u32, idle: std::time::Duration) -> Result<Db> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .foreign_keys(true)
        .pragma("secure_delete", "ON")
        .busy_timeout(std::time::Duration::from_secs(5));
    Ok(Db::Sqlite(
        SqlitePoolOptions::new()
            .max_connections(connections)
            .min_connections(0)
            .idle_timeout(idle)
            .connect_with(options)
            .await?,
    ))
}

/// Removes a SQLite database file with its WAL and shared-memory files.
fn remove_sqlite_file(path: &Path) -> Result<()> {
    for p in [
        path.to_owned(),
        path.with_extension("db-wal"),
        path.with_extension("db-shm"),
    ] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::Io { path: p, source }),
        }
    }
    Ok(())
}

fn bridge_prefix(tenant: &TenantId) -> String {
    format!("t_{}_", ident(tenant))
}

impl SqlitePlacement {
    pub fn new(main: Db, data_dir: &Path, silo_idle: std::time::Duration) -> Self {
        Self {
            main,
            data_dir: data_dir.to_owned(),
            silo_idle,
            silos: Mutex::new(HashMap::new()),
            bridges: Mutex::new(HashSet::new()),
        }
    }

    /// Moves table items written by the first build, which kept a bridge
    /// tenant's items in `items_<tenant>` and a silo tenant's in
    /// `tenants/<id>/tables.db` (neither with a tenant column), into the
    /// tenant's place. Runs at start-up; nothing to do after the first time.
    pub async fn upgrade_legacy_items(&self) -> Result<()> {
        let legacy = q("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'items\\_%' ESCAPE '\\'")
            .all(&self.main)
            .await?;
        for row in legacy {
            let table: String = row.get("name")?;
            let Some(tenant) = table
                .strip_prefix("items_")
                .and_then(|t| TenantId::parse(&t.replace('_', "-")).ok())
            else {
                continue;
            };
            let place = self.place(&tenant, Tier::Bridge).await?;
            let mut tx = place.begin(&tenant).await?;
            q(format!(
                "INSERT OR IGNORE INTO {} (tenant_id, tbl, key, sealed, version, updated_at)
                 SELECT $1, tbl, key, sealed, version, updated_at FROM {table}",
                place.t("items")
            ))
            .bind(tenant.as_str())
            .exec(&mut tx)
            .await?;
            q(format!("DROP TABLE {table}")).exec(&mut tx).await?;
            tx.commit().await?;
        }
        let tenants = self.data_dir.join("tenants");
        let Ok(dirs) = std::fs::read_dir(&tenants) else {
            return Ok(());
        };
        for dir in dirs.flatten() {
            let old = dir.path().join("tables.db");
            let name = dir.file_name();
            let Some(tenant) = name.to_str().and_then(|n| TenantId::parse(n).ok()) else {
                continue;
            };
            if !old.is_file() {
                continue;
            }
            let from = sqlite_file(&old, 1).await?;
            let rows = q("SELECT tbl, key, sealed, version, updated_at FROM items")
                .all(&from)
                .await?;
            from.close().await;
            let place = self.place(&tenant, Tier::Silo).await?;
            let mut tx = place.begin(&tenant).await?;
            for r in &rows {
                q(format!(
                    "INSERT OR IGNORE INTO {} (tenant_id, tbl, key, sealed, version, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    place.t("items")
                ))
                .bind(tenant.as_str())
                .bind_arg(r.arg("tbl", Kind::Text)?)
                .bind_arg(r.arg("key", Kind::Text)?)
                .bind_arg(r.arg("sealed", Kind::Blob)?)
                .bind_arg(r.arg("version", Kind::Int)?)
                .bind_arg(r.arg("updated_at", Kind::Text)?)
                .exec(&mut tx)
                .await?;
            }
            tx.commit().await?;
            remove_sqlite_file(&old)?;
        }
        Ok(())
    }

    fn silo_path(&self, tenant: &TenantId) -> PathBuf {
        self.data_dir
            .join("tenants")
            .join(tenant.as_str())
            .join("data.db")
    }

    async fn place(&self, tenant: &TenantId, tier: Tier) -> Result<Place> {
        match tier {
            Tier::Pool => Ok(Place {
                fence: None,
                db: self.main.clone(),
                prefix: String::new(),
            }),
            Tier::Bridge => {
                let prefix = bridge_prefix(tenant);
                if !self.bridges.lock().is_ok_and(|b| b.contains(tenant)) {
                    for s in content_ddl(false, &prefix, &prefix) {
                        q(s).exec(&self.main).await?;
                    }
                    if let Ok(mut b) = self.bridges.lock() {
                        b.insert(tenant.clone());
                    }
                }
                Ok(Place {
                    fence: None,
                    db: self.main.clone(),
                    prefix,
                })
            }
            Tier::Silo => {
                if let Some(db) = self.silos.lock().ok().and_then(|m| m.get(tenant).cloned()) {
                    return Ok(Place {
                        fence: None,
                        db,
                        prefix: String::new(),
                    });
                }
                let path = self.silo_path(tenant);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                        path: dir.to_owned(),
                        source,
                    })?;
                }
                let db = sqlite_file_idle(&path, 4, self.silo_idle).await?;
                for s in content_ddl(false, "", "") {
                    q(s).exec(&db).await?;
                }
                let mut silos = self
                    .silos
                    .lock()
                    .map_err(|_| StoreError::Corrupt("silo file registry poisoned".into()))?;
                Ok(Place {
                    fence: None,
                    db: silos.entry(tenant.clone()).or_insert(db).clone(),
                    prefix: String::new(),
                })
            }
        }
    }

    async fn drop_tenant(&self, tenant: &TenantId, tier: Tier) -> Result<()> {
        match tier {
            Tier::Pool => {
                for (table, _) in CONTENT.iter().rev() {
                    q(format!("DELETE FROM {table} WHERE tenant_id = $1"))
                        .bind(tenant.as_str())
                        .exec(&self.main)
                        .await?;
                }
            }
            Tier::Bridge => {
                if let Ok(mut b) = self.bridges.lock() {
                    b.remove(tenant);
                }
                let prefix = bridge_prefix(tenant);
                for (table, _) in CONTENT.iter().rev() {
                    q(format!("DROP TABLE IF EXISTS {prefix}{table}"))
                        .exec(&self.main)
                        .await?;
                }
            }
            Tier::Silo => {
                let db = self.silos.lock().ok().and_then(|mut m| m.remove(tenant));
                if let Some(db) = db {
                    db.close().await;
                }
                let path = self.silo_path(tenant);
                remove_sqlite_file(&path)?;
                if let Some(dir) = path.parent() {
                    // Only if empty: nothing else of the tenant's is lost.
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
        q("PRAGMA wal_checkpoint(TRUNCATE)")
            .exec(&self.main)
            .await?;
        Ok(())
    }

    async fn residue(&self, tenant: &TenantId) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for (table, _) in CONTENT {
            let n: i64 = q(format!(
                "SELECT COUNT(*) AS n FROM {table} WHERE tenant_id = $1"
            ))
            .bind(tenant.as_str())
            .one(&self.main)
            .await?
            .get("n")?;
            if n > 0 {
                found.push(format!("{n} rows in {table}"));
            }
        }
        let prefix = bridge_prefix(tenant);
        for (table, _) in CONTENT {
            let t = q("SELECT name FROM sqlite_master WHERE name = $1")
                .bind(format!("{prefix}{table}"))
                .opt(&self.main)
                .await?;
            if t.is_some() {
                found.push(format!("table {prefix}{table}"));
            }
        }
        if self.silo_path(tenant).exists() {
            found.push(self.silo_path(tenant).display().to_string());
        }
        Ok(found)
    }
}

// ---- PostgreSQL -----------------------------------------------------------

pub(crate) struct PgPlacement {
    pub(crate) admin: PgPool,
    /// The runtime role's pool; its search path is `fief_platform`.
    pub runtime: Db,
    admin_options: PgConnectOptions,
    runtime_options: PgConnectOptions,
    runtime_role: String,
    database: String,
    /// This process's `fief.origin` (see `0007_changes.sql`).
    pub(crate) origin: String,
    silos: Mutex<HashMap<TenantId, Db>>,
    /// Bridge schemas known to exist. Provisioning is DDL, serialised by
    /// `provisioning` (concurrent GRANT/ALTER on one table conflict).
    bridges: Mutex<HashSet<TenantId>>,
    provisioning: tokio::sync::Mutex<()>,
    /// A silo database's connections close after this long unused.
    silo_idle: std::time::Duration,
    /// How long a statement waits for a connection (`acquire_timeout_ms`).
    acquire: std::time::Duration,
}

/// Statements that put a content table under the tenant policy and let the
/// runtime role use it (and nothing else). Idempotent without ever dropping
/// the policy: a table with forced RLS and no policy refuses every row, and
/// requests may be running.
fn secure(schema: &str, name: &str, runtime: &str) -> Vec<String> {
    let table = format!("{schema}.{name}");
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

/// The content tables whose rows replicas cache (or index), with the
/// columns naming the tenant and the changed thing.
pub(crate) const NOTED: [(&str, &str, &str); 5] = [
    ("models", "tenant_id", "name"),
    ("policies", "tenant_id", "id"),
    ("roles", "tenant_id", "name"),
    ("knowledge_bases", "tenant_id", "name"),
    ("kb_documents", "tenant_id", "kb"),
];

/// A schema of content tables, every one under the policy.
fn content_schema(schema: &str, runtime: &str) -> Vec<String> {
    let mut s = vec![
        format!("CREATE SCHEMA IF NOT EXISTS {schema}"),
        format!("GRANT USAGE ON SCHEMA {schema} TO \"{runtime}\""),
    ];
    s.extend(content_ddl(true, &format!("{schema}."), ""));
    for (table, _) in CONTENT {
        s.extend(secure(schema, table, runtime));
    }
    // Changes other replicas cache are announced in their own transaction
    // (`migrations-postgres/0007_changes.sql`). A silo database cannot
    // reach the platform's change log: its changes are announced by the
    // store after they commit (`Store::announce`).
    if schema != "fief_silo" {
        for (table, tenant, subject) in NOTED {
            s.push(format!(
                "CREATE OR REPLACE TRIGGER fief_change AFTER INSERT OR UPDATE OR DELETE ON \
                 {schema}.{table} FOR EACH ROW EXECUTE FUNCTION \
                 fief_platform.note_change('{tenant}', '{subject}')"
            ));
        }
    }
    // The chunk ids' sequence, for inserts by the runtime role.
    s.push(format!(
        "GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO \"{runtime}\""
    ));
    // Items written by the first PostgreSQL build kept `updated_at` as a
    // timestamptz; every placement now stores the same RFC 3339 text.
    s.push(format!(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM information_schema.columns \
         WHERE table_schema = '{schema}' AND table_name = 'items' AND column_name = 'updated_at' \
         AND data_type <> 'text') THEN \
         ALTER TABLE {schema}.items ALTER COLUMN updated_at DROP DEFAULT; \
         ALTER TABLE {schema}.items ALTER COLUMN updated_at TYPE text USING \
         to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'); END IF; END $$"
    ));
    s
}

/// Runs DDL in one transaction under an advisory lock, so replicas that
/// start (or provision a tenant's place) at once take turns instead of
/// failing on each other's catalog rows.
async fn run_all(db: &PgPool, statements: Vec<String>) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(4607736914032211970)")
        .execute(&mut *tx)
        .await?;
    for s in statements {
        sqlx::query(&s).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

impl PgPlacement {
    /// Connects both roles, migrates with the admin role, and refuses a
    /// runtime role that could bypass row-level security.
    pub async fn open(
        config: &fief_config::PostgresConfig,
        silo_idle: std::time::Duration,
    ) -> Result<Self> {
        let (url, admin_url) = (config.url.as_str(), config.admin_url.as_str());
        // A request waits this long for a connection, then fails closed
        // (503) instead of hanging while the database is away.
        let acquire = std::time::Duration::from_millis(config.acquire_timeout_ms);
        let parse = |u: &str, which: &str| {
            u.parse::<PgConnectOptions>()
                .map_err(|e| StoreError::Config(format!("postgres {which} URL is not valid: {e}")))
        };
        // Every connection names this process in `fief.origin`, so the
        // change log tells this replica's own changes from the others'.
        let origin = {
            use rand::RngCore;
            let mut raw = [0u8; 12];
            rand::rngs::OsRng.fill_bytes(&mut raw);
            hex::encode(raw)
        };
        let runtime_options = parse(url, "runtime")?
            .options([("search_path", "fief_platform"), ("fief.origin", &origin)])
            .disable_statement_logging();
        let admin_options = parse(admin_url, "admin")?
            .options([("fief.origin", &origin)])
            .disable_statement_logging();
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(acquire.max(std::time::Duration::from_secs(5)))
            .connect_with(admin_options.clone())
            .await?;
        // The migrations' own bookkeeping goes in fief's schema too: an
        // admin role need not be allowed to create tables in `public`.
        run_all(
            &admin,
            vec!["CREATE SCHEMA IF NOT EXISTS fief_platform".into()],
        )
        .await?;
        let migrating = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(
                admin_options
                    .clone()
                    .options([("search_path", "fief_platform")]),
            )
            .await?;
        let migrated = sqlx::migrate!("./migrations-postgres")
            .run(&migrating)
            .await;
        migrating.close().await;
        migrated?;
        let runtime = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(acquire)
            .connect_with(runtime_options.clone())
            .await?;
        let (runtime_role, database): (String, String) =
            sqlx::query_as("SELECT current_user::text, current_database()::text")
                .fetch_one(&runtime)
                .await?;
        let this = Self {
            admin,
            runtime: Db::Pg(runtime),
            admin_options,
            runtime_options,
            runtime_role,
            database,
            origin,
            silos: Mutex::new(HashMap::new()),
            bridges: Mutex::new(HashSet::new()),
            provisioning: tokio::sync::Mutex::new(()),
            silo_idle,
            acquire,
        };
        let role = &this.runtime_role;
        let mut statements = vec![
            format!("GRANT USAGE ON SCHEMA fief_platform TO \"{role}\""),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON fief_platform.tenants,
                 fief_platform.api_keys, fief_platform.signing_keys,
                 fief_platform.offboarded_tenants, fief_platform.quota_limits,
                 fief_platform.quota_spend, fief_platform.usage_events,
                 fief_platform.usage_hourly, fief_platform.log_config TO \"{role}\""
            ),
            format!("GRANT SELECT ON fief_platform.changes TO \"{role}\""),
            // Append and read only: a replica cannot rewrite the chain.
            format!("GRANT SELECT, INSERT ON fief_platform.audit_log TO \"{role}\""),
        ];
        statements.extend(content_schema("fief_pool", role));
        {
            let _one_at_a_time = this.provisioning.lock().await;
            run_all(&this.admin, statements).await?;
        }
        this.check_runtime_role().await?;
        Ok(this)
    }

    /// Refuses to serve with a role that row-level security would not bind.
    async fn check_runtime_role(&self) -> Result<()> {
        let runtime = &self.runtime;
        let row = q("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .one(runtime)
            .await?;
        let (superuser, bypass): (bool, bool) = (row.get("rolsuper")?, row.get("rolbypassrls")?);
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
        let owned: Vec<String> = q("SELECT schemaname || '.' || tablename AS t FROM pg_tables
             WHERE tableowner = current_user AND (schemaname IN ('fief_pool', 'fief_platform')
                OR schemaname LIKE 'fief\\_t\\_%') ORDER BY 1")
        .all(runtime)
        .await?
        .iter()
        .map(|r| r.get("t"))
        .collect::<Result<_>>()?;
        if !owned.is_empty() {
            return refuse(format!("owns {}", owned.join(", ")));
        }
        let unforced: Vec<String> = q("SELECT c.relname::text AS t FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'fief_pool' AND c.relkind = 'r'
               AND NOT (c.relrowsecurity AND c.relforcerowsecurity)")
        .all(runtime)
        .await?
        .iter()
        .map(|r| r.get("t"))
        .collect::<Result<_>>()?;
        if !unforced.is_empty() {
            return refuse(format!(
                "would use fief_pool.{} without forced row-level security",
                unforced.join(", fief_pool.")
            ));
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

    async fn provision_silo(&self, db: &str) -> Result<()> {
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(db)
                .fetch_optional(&self.admin)
                .await?;
        if exists.is_none() {
            let created = sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&self.admin)
                .await;
            match created {
                // Another replica created it first (CREATE DATABASE cannot
                // run under the advisory lock's transaction).
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
                other => {
                    other?;
                }
            }
        }
        let role = &self.runtime_role;
        run_all(
            &self.admin,
            vec![
                format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"),
                format!("GRANT CONNECT ON DATABASE {db} TO \"{role}\""),
            ],
        )
        .await?;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(self.admin_options.clone().database(db))
            .await?;
        let done = run_all(&admin, content_schema("fief_silo", role)).await;
        admin.close().await;
        done
    }

    async fn place(&self, tenant: &TenantId, tier: Tier) -> Result<Place> {
        match tier {
            Tier::Pool => Ok(Place {
                fence: None,
                db: self.runtime.clone(),
                prefix: "fief_pool.".into(),
            }),
            Tier::Bridge => {
                let schema = format!("fief_t_{}", ident(tenant));
                if !self.bridges.lock().is_ok_and(|b| b.contains(tenant)) {
                    let _one_at_a_time = self.provisioning.lock().await;
                    run_all(&self.admin, content_schema(&schema, &self.runtime_role)).await?;
                    if let Ok(mut b) = self.bridges.lock() {
                        b.insert(tenant.clone());
                    }
                }
                Ok(Place {
                    fence: None,
                    db: self.runtime.clone(),
                    prefix: format!("{schema}."),
                })
            }
            Tier::Silo => {
                let cached = || self.silos.lock().ok().and_then(|m| m.get(tenant).cloned());
                let silo = |db| Place {
                    fence: None,
                    db,
                    prefix: "fief_silo.".into(),
                };
                if let Some(db) = cached() {
                    return Ok(silo(db));
                }
                let _one_at_a_time = self.provisioning.lock().await;
                if let Some(db) = cached() {
                    return Ok(silo(db));
                }
                let name = self.silo_database(tenant)?;
                self.provision_silo(&name).await?;
                let pool = PgPoolOptions::new()
                    .max_connections(2)
                    .min_connections(0)
                    .idle_timeout(self.silo_idle)
                    .acquire_timeout(self.acquire)
                    .connect_with(self.runtime_options.clone().database(&name))
                    .await?;
                let mut silos = self
                    .silos
                    .lock()
                    .map_err(|_| StoreError::Corrupt("silo pool registry poisoned".into()))?;
                Ok(silo(
                    silos.entry(tenant.clone()).or_insert(Db::Pg(pool)).clone(),
                ))
            }
        }
    }

    async fn drop_tenant(&self, tenant: &TenantId, tier: Tier) -> Result<()> {
        match tier {
            Tier::Pool => {
                let place = self.place(tenant, tier).await?;
                let mut tx = place.begin(tenant).await?;
                for (table, _) in CONTENT.iter().rev() {
                    q(format!(
                        "DELETE FROM {} WHERE tenant_id = $1",
                        place.t(table)
                    ))
                    .bind(tenant.as_str())
                    .exec(&mut tx)
                    .await?;
                }
                tx.commit().await?;
            }
            Tier::Bridge => {
                if let Ok(mut b) = self.bridges.lock() {
                    b.remove(tenant);
                }
                let _one_at_a_time = self.provisioning.lock().await;
                sqlx::query(&format!(
                    "DROP SCHEMA IF EXISTS fief_t_{} CASCADE",
                    ident(tenant)
                ))
                .execute(&self.admin)
                .await?;
            }
            Tier::Silo => {
                let _one_at_a_time = self.provisioning.lock().await;
                let db = self.silos.lock().ok().and_then(|mut m| m.remove(tenant));
                if let Some(db) = db {
                    db.close().await;
                }
                let name = self.silo_database(tenant)?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&self.admin)
                    .await?;
            }
        }
        Ok(())
    }

    /// What the catalogs still hold of `tenant`: rows in the shared tables
    /// (counted with the tenant set, as the forced policy binds the owner
    /// too), a schema, a database.
    async fn residue(&self, tenant: &TenantId) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let admin = Place {
            fence: None,
            db: Db::Pg(self.admin.clone()),
            prefix: "fief_pool.".into(),
        };
        let mut tx = admin.begin(tenant).await?;
        for (table, _) in CONTENT {
            let n: i64 = q(format!(
                "SELECT count(*) AS n FROM {} WHERE tenant_id = $1",
                admin.t(table)
            ))
            .bind(tenant.as_str())
            .one(&mut tx)
            .await?
            .get("n")?;
            if n > 0 {
                found.push(format!("{n} rows in fief_pool.{table}"));
            }
        }
        tx.commit().await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy on tier change reads `CONTENT`'s column lists; a column the
    /// DDL gains and `CONTENT` lacks would silently not move.
    #[tokio::test]
    async fn content_lists_every_column_of_the_ddl() {
        let Ok(db) = sqlx::SqlitePool::connect("sqlite::memory:").await else {
            panic!("in-memory SQLite");
        };
        let db = Db::Sqlite(db);
        for s in content_ddl(false, "", "") {
            assert!(q(s).exec(&db).await.is_ok());
        }
        for (table, columns) in CONTENT {
            let mut listed: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
            if *table == "kb_chunks" {
                listed.push("id");
            }
            listed.sort_unstable();
            let Ok(rows) = q(format!("SELECT name FROM pragma_table_info('{table}')"))
                .all(&db)
                .await
            else {
                panic!("{table}: table_info");
            };
            let mut actual: Vec<String> = rows
                .iter()
                .map(|r| r.get::<String>("name").unwrap_or_default())
                .collect();
            actual.sort_unstable();
            assert_eq!(actual, listed, "{table}");
        }
    }
}
