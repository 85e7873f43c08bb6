//! Tenant models: a metadata row plus the sealed bytes in the object store.
//! Every accessor takes a [`TenantScope`] and filters by its tenant.

use object_store::path::Path as ObjectPath;
use object_store::PutPayload;
use serde::Serialize;
use sha2::{Digest, Sha256};

use fief_core::{ModelName, ModelSignature, Tags, TenantId};
use fief_crypto::SealContext;

use crate::db::{q, Row};
use crate::placement::Place;
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

fn from_row(row: &Row) -> Result<ModelRecord> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("model row: {e}"));
    let name: String = row.get("name")?;
    let signature: String = row.get("signature")?;
    let tags: String = row.get("tags")?;
    Ok(ModelRecord {
        name: ModelName::parse(&name).map_err(|e| corrupt(&e))?,
        version: row.get("version")?,
        size_bytes: row.get("size_bytes")?,
        sha256: row.get("sha256")?,
        signature: serde_json::from_str(&signature).map_err(|e| corrupt(&e))?,
        tags: serde_json::from_str(&tags).map_err(|e| corrupt(&e))?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

const COLUMNS: &str = "name, version, size_bytes, sha256, signature, tags, created_at, updated_at";

/// The model row on an already-held place.
async fn select_model(
    place: &Place,
    tenant: &TenantId,
    name: &ModelName,
) -> Result<Option<ModelRecord>> {
    let rows = place
        .fetch(
            tenant,
            q(format!(
                "SELECT {COLUMNS} FROM {} WHERE tenant_id = $1 AND name = $2",
                place.t("models")
            ))
            .bind(tenant.as_str())
            .bind(name.as_str()),
        )
        .await?;
    rows.first().map(from_row).transpose()
}

impl Store {
    /// Stores (or replaces) a model the serving layer has already loaded
    /// once. The whole write (bytes, then row) holds the tenant's place, so
    /// it finishes before an offboarding or a tier change starts.
    pub async fn put_model(
        &self,
        scope: &TenantScope,
        name: &ModelName,
        bytes: &[u8],
        signature: &ModelSignature,
    ) -> Result<(ModelRecord, PutOutcome)> {
        let tenant = scope.tenant();
        let place = self.place(scope).await?;
        let key = self.data_key(scope).await?;
        let previous = select_model(&place, tenant, name).await?;
        let version = previous.as_ref().map_or(1, |p| p.version + 1);
        let sealed = key.seal(&seal_context(tenant, name, version), bytes)?;
        let path = object_path(tenant, name, version);
        let objects = self.objects_of(tenant).await?;
        objects.put(&path, PutPayload::from(sealed)).await?;

        let now = now();
        let sha256 = hex::encode(Sha256::digest(bytes));
        let signature_json =
            serde_json::to_string(signature).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let size = i64::try_from(bytes.len()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // The version guard turns a concurrent replacement into a conflict
        // instead of a lost update.
        let upsert = format!(
            "INSERT INTO {} AS m (tenant_id, name, version, size_bytes, sha256, signature,
                 created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
             ON CONFLICT (tenant_id, name) DO UPDATE SET
               version = excluded.version, size_bytes = excluded.size_bytes,
               sha256 = excluded.sha256, signature = excluded.signature,
               updated_at = excluded.updated_at
             WHERE m.version = $3 - 1",
            place.t("models")
        );
        let written = place
            .run(
                tenant,
                q(upsert)
                    .bind(tenant.as_str())
                    .bind(name.as_str())
                    .bind(version)
                    .bind(size)
                    .bind(&sha256)
                    .bind(&signature_json)
                    .bind(&now),
            )
            .await;
        match written {
            Ok(1) => {}
            other => {
                // Do not leave an orphaned object behind.
                let _ = objects.delete(&path).await;
                other?;
                return Err(StoreError::Conflict(format!(
                    "a concurrent upload of model {name}"
                )));
            }
        }
        if let Some(p) = &previous {
            // The old version's bytes are no longer referenced.
            let _ = objects.delete(&object_path(tenant, name, p.version)).await;
        }
        self.model_changed(tenant, name).await;
        let record = select_model(&place, tenant, name)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("model {name}")))?;
        let outcome = if previous.is_some() {
            PutOutcome::Replaced
        } else {
            PutOutcome::Created
        };
        Ok((record, outcome))
    }

    /// The model's record: from the directory (the scope's incarnation
    /// still checked live), or its place.
    pub async fn get_model(
        &self,
        scope: &TenantScope,
        name: &ModelName,
    ) -> Result<Option<ModelRecord>> {
        let (tenant, incarnation) = (scope.tenant(), scope.incarnation());
        if let Some(record) = self.directory.model(tenant, incarnation, name) {
            self.check_live(scope).await?;
            return Ok(Some(record));
        }
        let epoch = self.directory.epoch();
        let place = self.place(scope).await?;
        let record = select_model(&place, tenant, name).await?;
        if let Some(r) = &record {
            self.directory
                .keep_model(epoch, tenant, incarnation, r.clone());
        }
        Ok(record)
    }

    async fn model_changed(&self, tenant: &TenantId, name: &ModelName) {
        self.directory
            .invalidate(&crate::Change::Model(tenant.clone(), name.clone()));
        self.announced(tenant, "models", name.as_str()).await;
    }

    pub async fn list_models(&self, scope: &TenantScope) -> Result<Vec<ModelRecord>> {
        let place = self.place(scope).await?;
        let rows = place
            .fetch(
                scope.tenant(),
                q(format!(
                    "SELECT {COLUMNS} FROM {} WHERE tenant_id = $1 ORDER BY name",
                    place.t("models")
                ))
                .bind(scope.tenant().as_str()),
            )
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
        let place = self.place(scope).await?;
        let done = place
            .run(
                scope.tenant(),
                q(format!(
                    "UPDATE {} SET tags = $2, updated_at = $3 WHERE tenant_id = $1 AND name = $4",
                    place.t("models")
                ))
                .bind(scope.tenant().as_str())
                .bind(json)
                .bind(now())
                .bind(name.as_str()),
            )
            .await?;
        self.model_changed(scope.tenant(), name).await;
        Ok(done == 1)
    }

    /// Deletes a model; `false` if the tenant has no such model.
    pub async fn delete_model(&self, scope: &TenantScope, name: &ModelName) -> Result<bool> {
        let place = self.place(scope).await?;
        let Some(record) = select_model(&place, scope.tenant(), name).await? else {
            return Ok(false);
        };
        let done = place
            .run(
                scope.tenant(),
                q(format!(
                    "DELETE FROM {} WHERE tenant_id = $1 AND name = $2 AND version = $3",
                    place.t("models")
                ))
                .bind(scope.tenant().as_str())
                .bind(name.as_str())
                .bind(record.version),
            )
            .await?;
        self.model_changed(scope.tenant(), name).await;
        if done == 1 {
            self.objects_of(scope.tenant())
                .await?
                .delete(&object_path(scope.tenant(), name, record.version))
                .await?;
        }
        Ok(done == 1)
    }

    /// Reads and decrypts a model's bytes.
    pub async fn read_model_bytes(
        &self,
        scope: &TenantScope,
        record: &ModelRecord,
    ) -> Result<Vec<u8>> {
        self.check_live(scope).await?;
        let path = object_path(scope.tenant(), &record.name, record.version);
        let objects = self.objects_of(scope.tenant()).await?;
        let sealed = objects.get(&path).await?.bytes().await?;
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
