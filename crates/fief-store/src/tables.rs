//! The tenant tables API's storage (conversation state, agent memory,
//! features): JSON items under (table, key), each sealed with the tenant's
//! data key and bound to (tenant, table, key). They live in the `items`
//! table of the tenant's place (see `placement.rs`). Keys stay in clear
//! (they are addresses, and prefix listing needs them); values never do.

use serde::Serialize;

use fief_core::TenantId;
use fief_crypto::SealContext;

use crate::db::{q, Row};
use crate::placement::tenant_filter;
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

/// When a write may happen (`If-Match` / `If-None-Match: *`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Always: create or replace.
    Any,
    /// Only if no item has the key.
    Absent,
    /// Only if the item is at this version.
    Version(i64),
}

fn context(tenant: &TenantId, table: &str, key: &str) -> SealContext {
    SealContext::new(tenant, "table-item", &format!("{table}\u{0}{key}"))
}

impl Store {
    pub async fn put_item(
        &self,
        scope: &TenantScope,
        table: &str,
        key: &str,
        value: &serde_json::Value,
        condition: Condition,
    ) -> Result<(Item, PutOutcome)> {
        let tenant = scope.tenant();
        let data_key = self.data_key(scope).await?;
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sealed = data_key.seal(&context(tenant, table, key), &bytes)?;
        let place = self.place(scope).await?;
        let updated_at = now();
        let t = place.t("items");
        // One statement each, so the condition and the write are atomic.
        let sql = match condition {
            Condition::Any => format!(
                "INSERT INTO {t} AS i (tenant_id, tbl, key, sealed, version, updated_at)
                 VALUES ($1, $2, $3, $4, 1, $5)
                 ON CONFLICT (tenant_id, tbl, key) DO UPDATE SET sealed = excluded.sealed,
                     version = i.version + 1, updated_at = excluded.updated_at
                 RETURNING version"
            ),
            Condition::Absent => format!(
                "INSERT INTO {t} (tenant_id, tbl, key, sealed, version, updated_at)
                 VALUES ($1, $2, $3, $4, 1, $5)
                 ON CONFLICT (tenant_id, tbl, key) DO NOTHING
                 RETURNING version"
            ),
            Condition::Version(_) => format!(
                "UPDATE {t} SET sealed = $4, version = version + 1, updated_at = $5
                 WHERE {} AND tbl = $2 AND key = $3 AND version = $6
                 RETURNING version",
                tenant_filter()
            ),
        };
        let mut query = q(sql)
            .bind(tenant.as_str())
            .bind(table)
            .bind(key)
            .bind(sealed)
            .bind(&updated_at);
        if let Condition::Version(v) = condition {
            query = query.bind(v);
        }
        let rows = place.fetch(tenant, query).await?;
        let version: i64 = match (rows.first(), condition) {
            (Some(row), _) => row.get("version")?,
            (None, Condition::Absent) => {
                return Err(StoreError::PreconditionFailed(format!(
                    "item {key} exists (If-None-Match: * asks that it does not)"
                )))
            }
            (None, Condition::Version(v)) => {
                return Err(StoreError::PreconditionFailed(format!(
                    "item {key} is not at version {v} (If-Match); read it again and retry"
                )))
            }
            (None, Condition::Any) => return Err(sqlx::Error::RowNotFound.into()),
        };
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
        Ok((item, outcome))
    }

    pub async fn get_item(
        &self,
        scope: &TenantScope,
        table: &str,
        key: &str,
    ) -> Result<Option<Item>> {
        let place = self.place(scope).await?;
        let rows = place
            .fetch(
                scope.tenant(),
                q(format!(
                    "SELECT key, sealed, version, updated_at FROM {} WHERE {} AND tbl = $2 AND key = $3",
                    place.t("items"),
                    tenant_filter()
                ))
                .bind(scope.tenant().as_str())
                .bind(table)
                .bind(key),
            )
            .await?;
        Ok(self.open_items(scope, table, &rows).await?.pop())
    }

    /// Deletes an item. Only a row whose value opens under the scope's key
    /// and context is deleted: on a shared table without row-level security
    /// (the SQLite pool tier), that is the layer under the tenant filter, so
    /// a filter bug cannot delete another tenant's item either.
    pub async fn delete_item(
        &self,
        scope: &TenantScope,
        table: &str,
        key: &str,
        condition: Condition,
    ) -> Result<bool> {
        let tenant = scope.tenant();
        let data_key = self.data_key(scope).await?;
        let place = self.place(scope).await?;
        let mut tx = place.begin_write(tenant).await?;
        let rows = q(format!(
            "SELECT tenant_id, sealed, version FROM {} WHERE {} AND tbl = $2 AND key = $3",
            place.t("items"),
            tenant_filter()
        ))
        .bind(tenant.as_str())
        .bind(table)
        .bind(key)
        .all(&mut tx)
        .await?;
        let mut deleted = 0;
        for row in &rows {
            let sealed: Vec<u8> = row.get("sealed")?;
            if data_key
                .open(&context(tenant, table, key), &sealed)
                .is_err()
            {
                self.count_rejected(1);
                continue;
            }
            let version: i64 = row.get("version")?;
            match condition {
                Condition::Version(v) if v != version => {
                    return Err(StoreError::PreconditionFailed(format!(
                        "item {key} is at version {version}, not {v} (If-Match)"
                    )))
                }
                Condition::Absent => {
                    return Err(StoreError::PreconditionFailed(format!(
                        "item {key} exists (If-None-Match: *)"
                    )))
                }
                _ => {}
            }
            let owner: String = row.get("tenant_id")?;
            deleted += q(format!(
                "DELETE FROM {} WHERE tenant_id = $1 AND tbl = $2 AND key = $3",
                place.t("items")
            ))
            .bind(owner)
            .bind(table)
            .bind(key)
            .exec(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(deleted > 0)
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
        let place = self.place(scope).await?;
        // `substr(key, 1, length(prefix)) = prefix` rather than LIKE: no
        // wildcard escaping, and the same on both backends.
        let rows = place
            .fetch(
                scope.tenant(),
                q(format!(
                    "SELECT key, sealed, version, updated_at FROM {} WHERE {} AND tbl = $2
                       AND substr(key, 1, length($3)) = $3 AND key > $4 ORDER BY key LIMIT $5",
                    place.t("items"),
                    tenant_filter()
                ))
                .bind(scope.tenant().as_str())
                .bind(table)
                .bind(prefix)
                .bind(after.unwrap_or(""))
                .bind(limit as i64 + 1),
            )
            .await?;
        let more = rows.len() > limit;
        let mut items = self
            .open_items(scope, table, &rows[..rows.len().min(limit)])
            .await?;
        items.truncate(limit);
        let next = if more {
            items.last().map(|i| i.key.clone())
        } else {
            None
        };
        Ok(ItemPage { items, next })
    }

    /// Table items that reached a read or delete of another tenant and failed
    /// to open under its key (only a bug or tampering gets a row there).
    pub fn items_rejected(&self) -> u64 {
        self.items_rejected
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn count_rejected(&self, n: u64) {
        self.items_rejected
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Opens rows under the scope's key and a context naming the scope's
    /// tenant: a row of anyone else's fails, is counted and left out.
    async fn open_items(
        &self,
        scope: &TenantScope,
        table: &str,
        rows: &[Row],
    ) -> Result<Vec<Item>> {
        let data_key = self.data_key(scope).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let key: String = row.get("key")?;
            let sealed: Vec<u8> = row.get("sealed")?;
            let Ok(bytes) = data_key.open(&context(scope.tenant(), table, &key), &sealed) else {
                self.count_rejected(1);
                continue;
            };
            out.push(Item {
                value: serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("table item: {e}")))?,
                key,
                version: row.get("version")?,
                updated_at: row.get("updated_at")?,
            });
        }
        Ok(out)
    }
}
