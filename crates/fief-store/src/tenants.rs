//! Tenants: platform metadata, managed by the operator.

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use serde::Serialize;
use sqlx::Row;

use fief_core::{Tags, TenantId, Tier};
use fief_crypto::DataKey;

use crate::api_keys::{insert_key, NewApiKey};
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

fn from_row(row: &sqlx::sqlite::SqliteRow) -> Result<TenantRecord> {
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("tenant {what}: {e}"));
    let id: String = row.try_get("id")?;
    let tier: String = row.try_get("tier")?;
    let tags: String = row.try_get("tags")?;
    let status: String = row.try_get("status")?;
    Ok(TenantRecord {
        id: TenantId::parse(&id).map_err(|e| corrupt("id", &e))?,
        tier: tier.parse().map_err(|e| corrupt("tier", &e))?,
        tags: serde_json::from_str(&tags).map_err(|e| corrupt("tags", &e))?,
        status: if status == "active" {
            TenantStatus::Active
        } else {
            TenantStatus::Offboarding
        },
        created_at: row.try_get("created_at")?,
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
        let mut tx = self.db.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, tier, tags, status, wrapped_key, created_at)
             VALUES (?, ?, ?, 'active', ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(tier.as_str())
        .bind(&tags_json)
        .bind(&wrapped)
        .bind(&created_at)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
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

    /// Changes a tenant's tier and/or tags. Placement follows the tier; the
    /// tenant's data (rows, objects, key) is not touched, so nothing is lost.
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
        // A tier change moves the tenant's table items: copied to the new
        // placement before the switch, removed from the old one after it.
        let before = self.get_tenant(id).await?.map(|t| t.tier);
        let moving = match (before, tier) {
            (Some(from), Some(to)) if from != to => Some((from, to)),
            _ => None,
        };
        if let Some((from, to)) = moving {
            self.copy_items(id, from, to).await?;
        }
        let done = sqlx::query(
            "UPDATE tenants SET tier = COALESCE(?, tier), tags = COALESCE(?, tags)
             WHERE id = ? AND status = 'active'",
        )
        .bind(tier.map(Tier::as_str))
        .bind(tags_json)
        .bind(id.as_str())
        .execute(&self.db)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("tenant {id}")));
        }
        if let Some((from, _)) = moving {
            self.drop_items(id, from).await?;
        }
        self.get_tenant(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("tenant {id}")))
    }

    pub async fn list_tenants(&self) -> Result<Vec<TenantRecord>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM tenants ORDER BY id"))
            .fetch_all(&self.db)
            .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn get_tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tenants WHERE id = ?"))
            .bind(id.as_str())
            .fetch_optional(&self.db)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Offboarding: revokes every key, deletes every object, then every row,
    /// including the wrapped data key (so any copy of the tenant's bytes left
    /// anywhere can no longer be decrypted). Safe to retry after a failure.
    pub async fn offboard(&self, scope: TenantScope) -> Result<()> {
        let tenant = scope.tenant();
        let mut tx = self.db.begin().await?;
        let marked = sqlx::query("UPDATE tenants SET status = 'offboarding' WHERE id = ?")
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        if marked.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("tenant {tenant}")));
        }
        sqlx::query(
            "UPDATE api_keys SET revoked_at = ? WHERE tenant_id = ? AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.forget_key(tenant);
        // Table items wherever any tier would have put them.
        for tier in [Tier::Pool, Tier::Bridge, Tier::Silo] {
            self.drop_items(tenant, tier).await?;
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

        let mut tx = self.db.begin().await?;
        for table in [
            "kb_chunks",
            "kb_documents",
            "knowledge_bases",
            "models",
            "policies",
            "roles",
            "api_keys",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = ?"))
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM tenants WHERE id = ?")
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.scrub().await?;
        Ok(())
    }

    /// Counts what the store still holds for a tenant: (rows, objects). Used
    /// by tests and by operators to check that offboarding left nothing.
    pub async fn residue(&self, tenant: &TenantId) -> Result<(i64, usize)> {
        let mut rows = 0i64;
        for (table, column) in [
            ("tenants", "id"),
            ("api_keys", "tenant_id"),
            ("models", "tenant_id"),
            ("policies", "tenant_id"),
            ("roles", "tenant_id"),
            ("knowledge_bases", "tenant_id"),
            ("kb_documents", "tenant_id"),
            ("kb_chunks", "tenant_id"),
        ] {
            let n: i64 = sqlx::query(&format!(
                "SELECT COUNT(*) AS n FROM {table} WHERE {column} = ?"
            ))
            .bind(tenant.as_str())
            .fetch_one(&self.db)
            .await?
            .try_get("n")?;
            rows += n;
        }
        let prefix = ObjectPath::from(format!("tenants/{tenant}"));
        let objects: Vec<_> = self.objects.list(Some(&prefix)).try_collect().await?;
        Ok((rows, objects.len()))
    }
}
