//! Tenant models: a metadata row plus the sealed bytes in the object store.
//! Every accessor takes a [`TenantScope`] and filters by its tenant.

use object_store::path::Path as ObjectPath;
use object_store::PutPayload;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use fief_core::{ModelName, ModelSignature, Tags, TenantId};
use fief_crypto::SealContext;

use crate::{now, Result, Store, StoreError, TenantScope};

#[derive(Debug, Clone, Serialize)]
pub struct ModelRecord {
    pub name: ModelName,
    /// Increases on every replacement; part of the object key and the cache key.
    pub version: i64,
    pub size_bytes: i64,
    pub sha256: String,
    pub signature: ModelSignature,
    /// Tags for attribute-based policies (`resource.getTag("Department")`).
    pub tags: Tags,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Created,
    Replaced,
}

fn object_path(tenant: &TenantId, name: &ModelName, version: i64) -> ObjectPath {
    ObjectPath::from(format!("tenants/{tenant}/models/{name}/v{version}.sealed"))
}

fn seal_context(tenant: &TenantId, name: &ModelName, version: i64) -> SealContext {
    SealContext::new(tenant, "model", &format!("{name}@v{version}"))
}

fn from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ModelRecord> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("model row: {e}"));
    let name: String = row.try_get("name")?;
    let signature: String = row.try_get("signature")?;
    let tags: String = row.try_get("tags")?;
    Ok(ModelRecord {
        name: ModelName::parse(&name).map_err(|e| corrupt(&e))?,
        version: row.try_get("version")?,
        size_bytes: row.try_get("size_bytes")?,
        sha256: row.try_get("sha256")?,
        signature: serde_json::from_str(&signature).map_err(|e| corrupt(&e))?,
        tags: serde_json::from_str(&tags).map_err(|e| corrupt(&e))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const COLUMNS: &str = "name, version, size_bytes, sha256, signature, tags, created_at, updated_at";

impl Store {
    /// Stores (or replaces) a model the serving layer has already loaded once.
    pub async fn put_model(
        &self,
        scope: &TenantScope,
        name: &ModelName,
        bytes: &[u8],
        signature: &ModelSignature,
    ) -> Result<(ModelRecord, PutOutcome)> {
        let tenant = scope.tenant();
        let key = self.data_key(scope).await?;
        let previous = self.get_model(scope, name).await?;
        let version = previous.as_ref().map_or(1, |p| p.version + 1);
        let sealed = key.seal(&seal_context(tenant, name, version), bytes)?;
        let path = object_path(tenant, name, version);
        self.objects.put(&path, PutPayload::from(sealed)).await?;

        let now = now();
        let sha256 = hex::encode(Sha256::digest(bytes));
        let signature_json =
            serde_json::to_string(signature).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let size = i64::try_from(bytes.len()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // The version guard turns a concurrent replacement into a conflict
        // instead of a lost update.
        let written = sqlx::query(
            "INSERT INTO models (tenant_id, name, version, size_bytes, sha256, signature, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
             ON CONFLICT (tenant_id, name) DO UPDATE SET
               version = excluded.version, size_bytes = excluded.size_bytes, sha256 = excluded.sha256,
               signature = excluded.signature, updated_at = excluded.updated_at
             WHERE models.version = ?3 - 1",
        )
        .bind(tenant.as_str())
        .bind(name.as_str())
        .bind(version)
        .bind(size)
        .bind(&sha256)
        .bind(&signature_json)
        .bind(&now)
        .execute(&self.db)
        .await;
        match written {
            Ok(done) if done.rows_affected() == 1 => {}
            other => {
                // Do not leave an orphaned object behind.
                let _ = self.objects.delete(&path).await;
                other?;
                return Err(StoreError::Conflict(format!(
                    "a concurrent upload of model {name}"
                )));
            }
        }
        if let Some(p) = &previous {
            // The old version's bytes are no longer referenced.
            let _ = self
                .objects
                .delete(&object_path(tenant, name, p.version))
                .await;
        }
        let record = self
            .get_model(scope, name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("model {name}")))?;
        let outcome = if previous.is_some() {
            PutOutcome::Replaced
        } else {
            PutOutcome::Created
        };
        Ok((record, outcome))
    }

    pub async fn get_model(
        &self,
        scope: &TenantScope,
        name: &ModelName,
    ) -> Result<Option<ModelRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM models WHERE tenant_id = ? AND name = ?"
        ))
        .bind(scope.tenant().as_str())
        .bind(name.as_str())
        .fetch_optional(&self.db)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    pub async fn list_models(&self, scope: &TenantScope) -> Result<Vec<ModelRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM models WHERE tenant_id = ? ORDER BY name"
        ))
        .bind(scope.tenant().as_str())
        .fetch_all(&self.db)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Replaces a model's tags; `false` if the tenant has no such model.
    pub async fn set_model_tags(
        &self,
        scope: &TenantScope,
        name: &ModelName,
        tags: &Tags,
    ) -> Result<bool> {
        let json = serde_json::to_string(tags).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let done = sqlx::query(
            "UPDATE models SET tags = ?, updated_at = ? WHERE tenant_id = ? AND name = ?",
        )
        .bind(json)
        .bind(now())
        .bind(scope.tenant().as_str())
        .bind(name.as_str())
        .execute(&self.db)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a model; `false` if the tenant has no such model.
    pub async fn delete_model(&self, scope: &TenantScope, name: &ModelName) -> Result<bool> {
        let Some(record) = self.get_model(scope, name).await? else {
            return Ok(false);
        };
        let done =
            sqlx::query("DELETE FROM models WHERE tenant_id = ? AND name = ? AND version = ?")
                .bind(scope.tenant().as_str())
                .bind(name.as_str())
                .bind(record.version)
                .execute(&self.db)
                .await?;
        if done.rows_affected() == 1 {
            self.objects
                .delete(&object_path(scope.tenant(), name, record.version))
                .await?;
        }
        Ok(done.rows_affected() == 1)
    }

    /// Reads and decrypts a model's bytes.
    pub async fn read_model_bytes(
        &self,
        scope: &TenantScope,
        record: &ModelRecord,
    ) -> Result<Vec<u8>> {
        let path = object_path(scope.tenant(), &record.name, record.version);
        let sealed = self.objects.get(&path).await?.bytes().await?;
        self.open_model_bytes(scope, &record.name, record.version, &sealed)
            .await
    }

    /// Decrypts sealed model bytes as the scope's tenant. Bytes that belong to
    /// another tenant or another model fail here, whatever path they came by.
    pub async fn open_model_bytes(
        &self,
        scope: &TenantScope,
        name: &ModelName,
        version: i64,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let key = self.data_key(scope).await?;
        Ok(key.open(&seal_context(scope.tenant(), name, version), sealed)?)
    }

    /// Where a model's sealed bytes live on disk (embedded backend only);
    /// lets tests and operators check that nothing there is plaintext.
    pub fn model_file(&self, tenant: &TenantId, record: &ModelRecord) -> std::path::PathBuf {
        self.objects_root
            .join(object_path(tenant, &record.name, record.version).as_ref())
    }
}
