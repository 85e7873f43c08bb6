//! The tenant tables API's storage (conversation state, agent memory,
//! features): JSON items under (table, key), each sealed with the tenant's
//! data key and bound to (tenant, table, key). Placement follows the tier
//! (seed 002): pool tenants share one table with a tenant column; each
//! bridge tenant has a table of its own; each silo tenant has a database
//! file of its own. Keys stay in clear (they are addresses, and prefix
//! listing needs them); values never do.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};

use fief_core::{TenantId, Tier};
use fief_crypto::SealContext;

use crate::postgres::Selection;
use crate::{now, PutOutcome, Result, Store, StoreError, TenantScope};

/// One stored item, opened.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub key: String,
    pub value: serde_json::Value,
    pub version: i64,
    pub updated_at: String,
}

/// A page of a listing; `next` is the last key returned when more follow.
#[derive(Debug, Clone, Serialize)]
pub struct ItemPage {
    pub items: Vec<Item>,
    pub next: Option<String>,
}

fn context(tenant: &TenantId, table: &str, key: &str) -> SealContext {
    SealContext::new(tenant, "table-item", &format!("{table}\u{0}{key}"))
}

/// Where one tenant's items live, and the SQL that names them there.
struct Place {
    db: SqlitePool,
    /// Table name in `db`.
    table: String,
    /// True for the pool tier's shared table (rows carry `tenant_id`).
    shared: bool,
}

/// Per-tenant table names are derived from the validated tenant id
/// (`[a-z0-9-]`), with `-` mapped to `_`, so they need no quoting.
fn bridge_table(tenant: &TenantId) -> String {
    format!("items_{}", tenant.as_str().replace('-', "_"))
}

const SILO_TABLE: &str = "items";

/// Silo tenants' database files, opened on first use.
#[derive(Default)]
pub(crate) struct SiloFiles {
    pools: Mutex<HashMap<TenantId, SqlitePool>>,
    /// Bridge tables known to exist, so a request runs no DDL.
    bridges: Mutex<std::collections::HashSet<TenantId>>,
}

/// Columns of a tenant's own items table (bridge table, silo file).
const OWN_TABLE_COLUMNS: &str = "(
    tbl TEXT NOT NULL, key TEXT NOT NULL, sealed BLOB NOT NULL,
    version INTEGER NOT NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (tbl, key)) STRICT";

fn item_outcome(
    key: &str,
    value: &serde_json::Value,
    version: i64,
    updated_at: String,
) -> (Item, PutOutcome) {
    let item = Item {
        key: key.to_owned(),
        value: value.clone(),
        version,
        updated_at,
    };
    let outcome = if version == 1 {
        PutOutcome::Created
    } else {
        PutOutcome::Replaced
    };
    (item, outcome)
}

/// A stored row before opening: (key, sealed value, version, updated_at).
type Sealed = (String, Vec<u8>, i64, String);

fn sqlite_rows(rows: &[sqlx::sqlite::SqliteRow]) -> Result<Vec<Sealed>> {
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("key")?,
                r.try_get("sealed")?,
                r.try_get("version")?,
                r.try_get("updated_at")?,
            ))
        })
        .collect()
}

impl Store {
    fn silo_path(&self, tenant: &TenantId) -> PathBuf {
        self.data_dir
            .join("tenants")
            .join(tenant.as_str())
            .join("tables.db")
    }

    async fn silo_pool(&self, tenant: &TenantId) -> Result<SqlitePool> {
        if let Some(p) = self
            .silo_files
            .pools
            .lock()
            .ok()
            .and_then(|m| m.get(tenant).cloned())
        {
            return Ok(p);
        }
        let path = self.silo_path(tenant);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .pragma("secure_delete", "ON")
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {SILO_TABLE} {OWN_TABLE_COLUMNS}"
        ))
        .execute(&pool)
        .await?;
        let mut pools = self
            .silo_files
            .pools
            .lock()
            .map_err(|_| StoreError::Corrupt("silo file registry poisoned".into()))?;
        Ok(pools.entry(tenant.clone()).or_insert(pool).clone())
    }

    async fn tier_of(&self, tenant: &TenantId) -> Result<Tier> {
        self.get_tenant(tenant)
            .await?
            .map(|t| t.tier)
            .ok_or_else(|| StoreError::NotFound(format!("tenant {tenant}")))
    }

    async fn place(&self, tenant: &TenantId, tier: Tier) -> Result<Place> {
        Ok(match tier {
            Tier::Pool => Place {
                db: self.db.clone(),
                table: "table_items".into(),
                shared: true,
            },
            Tier::Bridge => {
                let table = bridge_table(tenant);
                let known = self
                    .silo_files
                    .bridges
                    .lock()
                    .is_ok_and(|b| b.contains(tenant));
                if !known {
                    sqlx::query(&format!(
                        "CREATE TABLE IF NOT EXISTS {table} {OWN_TABLE_COLUMNS}"
                    ))
                    .execute(&self.db)
                    .await?;
                    if let Ok(mut b) = self.silo_files.bridges.lock() {
                        b.insert(tenant.clone());
                    }
                }
                Place {
                    db: self.db.clone(),
                    table,
                    shared: false,
                }
            }
            Tier::Silo => Place {
                db: self.silo_pool(tenant).await?,
                table: SILO_TABLE.into(),
                shared: false,
            },
        })
    }

    /// The `WHERE` prefix that confines a statement to the scope's tenant:
    /// the tenant column in the shared table, nothing where the table or
    /// file is the tenant's own. Binds the tenant first when it applies.
    fn tenant_filter(place: &Place) -> &'static str {
        #[cfg(feature = "fault-injection")]
        if place.shared && crate::faults::tenant_filter_dropped() {
            return "(? IS NOT NULL) AND";
        }
        if place.shared {
            "tenant_id = ? AND"
        } else {
            ""
        }
    }

    fn bind_tenant<'q>(
        place: &Place,
        q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        tenant: &'q TenantId,
    ) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
        if place.shared {
            q.bind(tenant.as_str())
        } else {
            q
        }
    }

    pub async fn put_item(
        &self,
        scope: &TenantScope,
        table: &str,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<(Item, PutOutcome)> {
        let tenant = scope.tenant();
        let data_key = self.data_key(scope).await?;
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sealed = data_key.seal(&context(tenant, table, key), &bytes)?;
        let tier = self.tier_of(tenant).await?;
        if let Some(pg) = &self.pg {
            let (version, updated_at) = pg.put(tenant, tier, table, key, sealed).await?;
            return Ok(item_outcome(key, value, version, updated_at));
        }
        let place = self.place(tenant, tier).await?;
        let updated_at = now();
        let (columns, values) = if place.shared {
            ("tenant_id, ", "?, ")
        } else {
            ("", "")
        };
        let sql = format!(
            "INSERT INTO {t} ({columns}tbl, key, sealed, version, updated_at)
             VALUES ({values}?, ?, ?, 1, ?)
             ON CONFLICT DO UPDATE SET sealed = excluded.sealed,
                 version = {t}.version + 1, updated_at = excluded.updated_at
             RETURNING version",
            t = place.table
        );
        let q = Self::bind_tenant(&place, sqlx::query(&sql), tenant)
            .bind(table)
            .bind(key)
            .bind(sealed)
            .bind(&updated_at);
        let version: i64 = q.fetch_one(&place.db).await?.try_get("version")?;
        Ok(item_outcome(key, value, version, updated_at))
    }

    pub async fn get_item(
        &self,
        scope: &TenantScope,
        table: &str,
        key: &str,
    ) -> Result<Option<Item>> {
        let tenant = scope.tenant();
        let tier = self.tier_of(tenant).await?;
        if let Some(pg) = &self.pg {
            let rows = pg
                .select(
                    tenant,
                    tier,
                    table,
                    Selection {
                        key: Some(key),
                        prefix: "",
                        after: "",
                        limit: 2,
                    },
                )
                .await?;
            let rows = rows
                .into_iter()
                .map(|r| (r.key, r.sealed, r.version, r.updated_at));
            return Ok(self.open_items(scope, table, rows.collect()).await?.pop());
        }
        let place = self.place(tenant, tier).await?;
        let sql = format!(
            "SELECT key, sealed, version, updated_at FROM {} WHERE {} tbl = ? AND key = ?",
            place.table,
            Self::tenant_filter(&place)
        );
        let q = Self::bind_tenant(&place, sqlx::query(&sql), tenant)
            .bind(table)
            .bind(key);
        let rows = q.fetch_all(&place.db).await?;
        let mut items = self.open_items(scope, table, sqlite_rows(&rows)?).await?;
        Ok(items.pop())
    }

    pub async fn delete_item(&self, scope: &TenantScope, table: &str, key: &str) -> Result<bool> {
        let tenant = scope.tenant();
        let tier = self.tier_of(tenant).await?;
        if let Some(pg) = &self.pg {
            return pg.delete(tenant, tier, table, key).await;
        }
        let place = self.place(tenant, tier).await?;
        let sql = format!(
            "DELETE FROM {} WHERE {} tbl = ? AND key = ?",
            place.table,
            Self::tenant_filter(&place)
        );
        let q = Self::bind_tenant(&place, sqlx::query(&sql), tenant)
            .bind(table)
            .bind(key);
        Ok(q.execute(&place.db).await?.rows_affected() > 0)
    }

    /// Items of `table` whose key starts with `prefix`, in key order, after
    /// `after` (the previous page's last key).
    pub async fn list_items(
        &self,
        scope: &TenantScope,
        table: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ItemPage> {
        let tenant = scope.tenant();
        let tier = self.tier_of(tenant).await?;
        let rows: Vec<Sealed> = if let Some(pg) = &self.pg {
            pg.select(
                tenant,
                tier,
                table,
                Selection {
                    key: None,
                    prefix,
                    after: after.unwrap_or(""),
                    limit: limit as i64 + 1,
                },
            )
            .await?
            .into_iter()
            .map(|r| (r.key, r.sealed, r.version, r.updated_at))
            .collect()
        } else {
            self.sqlite_list(tenant, tier, table, prefix, after, limit)
                .await?
        };
        let more = rows.len() > limit;
        let mut items = self
            .open_items(scope, table, rows.into_iter().take(limit).collect())
            .await?;
        items.truncate(limit);
        let next = if more {
            items.last().map(|i| i.key.clone())
        } else {
            None
        };
        Ok(ItemPage { items, next })
    }

    async fn sqlite_list(
        &self,
        tenant: &TenantId,
        tier: Tier,
        table: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Sealed>> {
        let place = self.place(tenant, tier).await?;
        // `substr(key, 1, n) = prefix` rather than LIKE: no wildcard escaping.
        let sql = format!(
            "SELECT key, sealed, version, updated_at FROM {} WHERE {} tbl = ?
               AND substr(key, 1, ?) = ? AND key > ? ORDER BY key LIMIT ?",
            place.table,
            Self::tenant_filter(&place)
        );
        let q = Self::bind_tenant(&place, sqlx::query(&sql), tenant)
            .bind(table)
            .bind(prefix.chars().count() as i64)
            .bind(prefix)
            .bind(after.unwrap_or(""))
            .bind(limit as i64 + 1);
        sqlite_rows(&q.fetch_all(&place.db).await?)
    }

    /// Opens rows under the scope's key and a context naming the scope's
    /// tenant: a row of anyone else's fails and is left out.
    async fn open_items(
        &self,
        scope: &TenantScope,
        table: &str,
        rows: Vec<Sealed>,
    ) -> Result<Vec<Item>> {
        let data_key = self.data_key(scope).await?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, sealed, version, updated_at) in rows {
            let Ok(bytes) = data_key.open(&context(scope.tenant(), table, &key), &sealed) else {
                continue;
            };
            out.push(Item {
                value: serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("table item: {e}")))?,
                key,
                version,
                updated_at,
            });
        }
        Ok(out)
    }

    /// Copies a tenant's items to where `to` places them (first half of a
    /// tier change; `drop_items(from)` is the second, after the tier is
    /// switched). Sealed values move as they are: the seal binds tenant,
    /// table and key, not the placement. An interruption leaves a copy, not
    /// a loss.
    pub(crate) async fn copy_items(&self, tenant: &TenantId, from: Tier, to: Tier) -> Result<()> {
        if let Some(pg) = &self.pg {
            return pg.copy(tenant, from, to).await;
        }
        let src = self.place(tenant, from).await?;
        let dst = self.place(tenant, to).await?;
        let select = format!(
            "SELECT tbl, key, sealed, version, updated_at FROM {} WHERE {} 1 = 1",
            src.table,
            if src.shared { "tenant_id = ? AND" } else { "" }
        );
        let rows = Self::bind_tenant(&src, sqlx::query(&select), tenant)
            .fetch_all(&src.db)
            .await?;
        let (columns, values) = if dst.shared {
            ("tenant_id, ", "?, ")
        } else {
            ("", "")
        };
        let insert = format!(
            "INSERT OR REPLACE INTO {} ({columns}tbl, key, sealed, version, updated_at)
             VALUES ({values}?, ?, ?, ?, ?)",
            dst.table
        );
        let mut tx = dst.db.begin().await?;
        for r in &rows {
            Self::bind_tenant(&dst, sqlx::query(&insert), tenant)
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

    /// Removes every item a tenant has where `tier` places them: the rows of
    /// the shared table, the bridge table, or the silo file.
    pub(crate) async fn drop_items(&self, tenant: &TenantId, tier: Tier) -> Result<()> {
        if let Some(pg) = &self.pg {
            return pg.drop_tenant(tenant, tier).await;
        }
        match tier {
            Tier::Pool => {
                sqlx::query("DELETE FROM table_items WHERE tenant_id = ?")
                    .bind(tenant.as_str())
                    .execute(&self.db)
                    .await?;
            }
            Tier::Bridge => {
                if let Ok(mut b) = self.silo_files.bridges.lock() {
                    b.remove(tenant);
                }
                sqlx::query(&format!("DROP TABLE IF EXISTS {}", bridge_table(tenant)))
                    .execute(&self.db)
                    .await?;
            }
            Tier::Silo => {
                let pool = self
                    .silo_files
                    .pools
                    .lock()
                    .ok()
                    .and_then(|mut m| m.remove(tenant));
                if let Some(pool) = pool {
                    pool.close().await;
                }
                let path = self.silo_path(tenant);
                for p in [
                    path.clone(),
                    path.with_extension("db-wal"),
                    path.with_extension("db-shm"),
                ] {
                    match std::fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => return Err(StoreError::Io { path: p, source }),
                    }
                }
                if let Some(dir) = path.parent() {
                    // Only if empty: nothing else of the tenant's is lost.
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
        self.scrub().await
    }

    /// What remains of a tenant's items anywhere (for offboarding checks):
    /// shared rows, a bridge table, a silo file.
    pub async fn table_residue(&self, tenant: &TenantId) -> Result<Vec<String>> {
        if let Some(pg) = &self.pg {
            return pg.residue(tenant).await;
        }
        let mut found = Vec::new();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM table_items WHERE tenant_id = ?")
            .bind(tenant.as_str())
            .fetch_one(&self.db)
            .await?;
        if n > 0 {
            found.push(format!("{n} rows in table_items"));
        }
        let t: Option<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?")
                .bind(bridge_table(tenant))
                .fetch_optional(&self.db)
                .await?;
        if let Some(t) = t {
            found.push(format!("table {t}"));
        }
        if self.silo_path(tenant).exists() {
            found.push(self.silo_path(tenant).display().to_string());
        }
        Ok(found)
    }
}
