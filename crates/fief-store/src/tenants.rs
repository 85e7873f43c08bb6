//! Tenants: platform metadata, managed by the operator.

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use serde::Serialize;

use fief_core::{Tags, TenantId, Tier};
use fief_crypto::DataKey;

use crate::api_keys::{insert_key, NewApiKey};
use crate::db::{q, Db, Row};
use crate::{now, Result, Store, StoreError, TenantScope};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Active,
    /// Keys revoked, data being destroyed; a retry of the delete finishes it.
    Offboarding,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantRecord {
    pub id: TenantId,
    pub tier: Tier,
    pub tags: Tags,
    pub status: TenantStatus,
    pub created_at: String,
}

const COLUMNS: &str = "id, tier, tags, status, created_at";

fn from_row(row: &Row) -> Result<TenantRecord> {
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("tenant {what}: {e}"));
    let id: String = row.get("id")?;
    let tier: String = row.get("tier")?;
    let tags: String = row.get("tags")?;
    let status: String = row.get("status")?;
    Ok(TenantRecord {
        id: TenantId::parse(&id).map_err(|e| corrupt("id", &e))?,
        tier: tier.parse().map_err(|e| corrupt("tier", &e))?,
        tags: serde_json::from_str(&tags).map_err(|e| corrupt("tags", &e))?,
        status: if status == "active" {
            TenantStatus::Active
        } else {
            TenantStatus::Offboarding
        },
        created_at: row.get("created_at")?,
    })
}

impl Store {
    /// Creates a tenant, its data key and its first API key in one transaction.
    pub async fn create_tenant(
        &self,
        id: &TenantId,
        tier: Tier,
        tags: &Tags,
    ) -> Result<(TenantRecord, NewApiKey)> {
        let wrapped = DataKey::generate().wrap(&self.master, id)?;
        let created_at = now();
        let tags_json =
            serde_json::to_string(tags).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.platform.begin().await?;
        let inserted = q(
            "INSERT INTO tenants (id, tier, tags, status, wrapped_key, created_at)
             VALUES ($1, $2, $3, 'active', $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(tier.as_str())
        .bind(&tags_json)
        .bind(wrapped)
        .bind(&created_at)
        .exec(&mut tx)
        .await?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!("tenant {id}")));
        }
        let key = insert_key(&mut tx, id, "initial", None).await?;
        tx.commit().await?;
        let record = TenantRecord {
            id: id.clone(),
            tier,
            tags: tags.clone(),
            status: TenantStatus::Active,
            created_at,
        };
        Ok((record, key))
    }

    /// Changes a tenant's tier and/or tags. A tier change moves the tenant's
    /// content to the new tier's place: copied there before the switch,
    /// removed from the old one after it, so an interruption leaves a copy,
    /// never a loss. Objects and the key stay where they are.
    pub async fn update_tenant(
        &self,
        id: &TenantId,
        tier: Option<Tier>,
        tags: Option<&Tags>,
    ) -> Result<TenantRecord> {
        let tags_json = tags
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // No content operation of this tenant runs during the move.
        let _moving = self.move_lock(id)?.write_owned().await;
        let before = self.get_tenant(id).await?.map(|t| t.tier);
        let moving = match (before, tier) {
            (Some(from), Some(to)) if from != to => Some((from, to)),
            _ => None,
        };
        if let Some((from, to)) = moving {
            // A leftover copy from an interrupted move goes first.
            self.placement.drop_tenant(id, to).await?;
            self.placement.copy(id, from, to).await?;
        }
        let done = q(
            "UPDATE tenants SET tier = COALESCE($1, tier), tags = COALESCE($2, tags)
             WHERE id = $3 AND status = 'active'",
        )
        .bind(tier.map(Tier::as_str))
        .bind(tags_json)
        .bind(id.as_str())
        .exec(&self.platform)
        .await?;
        if done == 0 {
            return Err(StoreError::NotFound(format!("tenant {id}")));
        }
        if let Some((from, _)) = moving {
            self.placement.drop_tenant(id, from).await?;
        }
        self.get_tenant(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("tenant {id}")))
    }

    pub async fn list_tenants(&self) -> Result<Vec<TenantRecord>> {
        let rows = q(format!("SELECT {COLUMNS} FROM tenants ORDER BY id"))
            .all(&self.platform)
            .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn get_tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>> {
        let row = q(format!("SELECT {COLUMNS} FROM tenants WHERE id = $1"))
            .bind(id.as_str())
            .opt(&self.platform)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Offboarding: revokes every key, deletes every object, then every row,
    /// including the wrapped data key (so any copy of the tenant's bytes left
    /// anywhere can no longer be decrypted). Safe to retry after a failure.
    pub async fn offboard(&self, scope: TenantScope) -> Result<()> {
        let tenant = scope.tenant();
        let mut tx = self.platform.begin().await?;
        let marked = q("UPDATE tenants SET status = 'offboarding' WHERE id = $1")
            .bind(tenant.as_str())
            .exec(&mut tx)
            .await?;
        if marked == 0 {
            return Err(StoreError::NotFound(format!("tenant {tenant}")));
        }
        q("UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND revoked_at IS NULL")
            .bind(now())
            .bind(tenant.as_str())
            .exec(&mut tx)
            .await?;
        tx.commit().await?;
        self.forget_key(tenant);
        // Content wherever any tier would have put it.
        for tier in [Tier::Pool, Tier::Bridge, Tier::Silo] {
            self.placement.drop_tenant(tenant, tier).await?;
        }

        let prefix = ObjectPath::from(format!("tenants/{tenant}"));
        let objects: Vec<_> = self.objects.list(Some(&prefix)).try_collect().await?;
        for meta in objects {
            self.objects.delete(&meta.location).await?;
        }
        // Empty directories are not objects, but leave no trace of the tenant.
        let dir = self.objects_root.join("tenants").join(tenant.as_str());
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|source| StoreError::Io { path: dir, source })?;
        }

        // Last, the wrapped key: a retry can still find the tenant until here.
        let mut tx = self.platform.begin().await?;
        q("DELETE FROM api_keys WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .exec(&mut tx)
            .await?;
        q("DELETE FROM tenants WHERE id = $1")
            .bind(tenant.as_str())
            .exec(&mut tx)
            .await?;
        tx.commit().await?;
        if let Db::Sqlite(_) = self.platform {
            q("PRAGMA wal_checkpoint(TRUNCATE)")
                .exec(&self.platform)
                .await?;
        }
        Ok(())
    }

    /// Everything the store still holds for a tenant, named: platform rows,
    /// content in any tier's place (rows, tables, schema, file, database),
    /// objects. Empty after offboarding; operators and tests check it.
    pub async fn residue(&self, tenant: &TenantId) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for (table, column) in [("tenants", "id"), ("api_keys", "tenant_id")] {
            let n: i64 = q(format!(
                "SELECT COUNT(*) AS n FROM {table} WHERE {column} = $1"
            ))
            .bind(tenant.as_str())
            .one(&self.platform)
            .await?
            .get("n")?;
            if n > 0 {
                found.push(format!("{n} rows in {table}"));
            }
        }
        found.extend(self.placement.residue(tenant).await?);
        let prefix = ObjectPath::from(format!("tenants/{tenant}"));
        let objects: Vec<_> = self.objects.list(Some(&prefix)).try_collect().await?;
        found.extend(objects.iter().map(|o| format!("object {}", o.location)));
        Ok(found)
    }
}
