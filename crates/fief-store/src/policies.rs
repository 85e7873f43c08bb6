//! Tenant-written policy documents and roles, and the platform's session
//! signing keys.
//!
//! Writes take a [`TenantScope`]. [`Store::policy_documents`] is a platform
//! accessor: the authorisation layer reads a tenant's documents to compile
//! them before it can decide anything for that tenant, as authentication
//! reads key hashes before it knows who is calling.

use serde::Serialize;
use sqlx::Row;

use fief_core::TenantId;

use crate::{now, Result, Store, StoreError, TenantScope};

#[derive(Debug, Clone, Serialize)]
pub struct PolicyRecord {
    pub id: String,
    pub policy: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoleRecord {
    pub name: String,
    pub trust_policy: String,
    pub policies: Vec<String>,
    pub external_id: Option<String>,
    /// Longest session this role grants; the platform maximum applies too.
    pub max_session_secs: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
}

/// A role as written by `PUT /roles/{name}` (validated by the caller).
#[derive(Debug, Clone)]
pub struct RoleInput {
    pub trust_policy: String,
    pub policies: Vec<String>,
    pub external_id: Option<String>,
    pub max_session_secs: Option<i64>,
}

/// Everything one tenant wrote, for compiling its policy set.
#[derive(Debug, Clone, Default)]
pub struct PolicyDocuments {
    pub policies: Vec<PolicyRecord>,
    pub roles: Vec<RoleRecord>,
}

fn policy_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<PolicyRecord> {
    Ok(PolicyRecord {
        id: row.try_get("id")?,
        policy: row.try_get("body")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn role_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<RoleRecord> {
    let policies: String = row.try_get("policies")?;
    Ok(RoleRecord {
        name: row.try_get("name")?,
        trust_policy: row.try_get("trust_policy")?,
        policies: serde_json::from_str(&policies)
            .map_err(|e| StoreError::Corrupt(format!("role policies: {e}")))?,
        external_id: row.try_get("external_id")?,
        max_session_secs: row.try_get("max_session_secs")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

const ROLE_COLUMNS: &str =
    "name, trust_policy, policies, external_id, max_session_secs, created_at, updated_at";

impl Store {
    /// Creates or replaces a policy document; `true` if it was created.
    pub async fn put_policy(&self, scope: &TenantScope, id: &str, body: &str) -> Result<bool> {
        let now = now();
        let existed = self.get_policy(scope, id).await?.is_some();
        sqlx::query(
            "INSERT INTO policies (tenant_id, id, body, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (tenant_id, id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
        )
        .bind(scope.tenant().as_str())
        .bind(id)
        .bind(body)
        .bind(&now)
        .execute(&self.db)
        .await?;
        Ok(!existed)
    }

    pub async fn get_policy(&self, scope: &TenantScope, id: &str) -> Result<Option<PolicyRecord>> {
        let row = sqlx::query(
            "SELECT id, body, created_at, updated_at FROM policies WHERE tenant_id = ? AND id = ?",
        )
        .bind(scope.tenant().as_str())
        .bind(id)
        .fetch_optional(&self.db)
        .await?;
        row.as_ref().map(policy_from_row).transpose()
    }

    pub async fn list_policies(&self, scope: &TenantScope) -> Result<Vec<PolicyRecord>> {
        self.policies_of(scope.tenant()).await
    }

    async fn policies_of(&self, tenant: &TenantId) -> Result<Vec<PolicyRecord>> {
        let rows = sqlx::query(
            "SELECT id, body, created_at, updated_at FROM policies WHERE tenant_id = ? ORDER BY id",
        )
        .bind(tenant.as_str())
        .fetch_all(&self.db)
        .await?;
        rows.iter().map(policy_from_row).collect()
    }

    pub async fn delete_policy(&self, scope: &TenantScope, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM policies WHERE tenant_id = ? AND id = ?")
            .bind(scope.tenant().as_str())
            .bind(id)
            .execute(&self.db)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Creates or replaces a role; `true` if it was created.
    pub async fn put_role(
        &self,
        scope: &TenantScope,
        name: &str,
        role: &RoleInput,
    ) -> Result<bool> {
        let now = now();
        let existed = self.get_role(scope, name).await?.is_some();
        let policies = serde_json::to_string(&role.policies)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO roles (tenant_id, name, trust_policy, policies, external_id, max_session_secs, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
             ON CONFLICT (tenant_id, name) DO UPDATE SET trust_policy = excluded.trust_policy,
               policies = excluded.policies, external_id = excluded.external_id,
               max_session_secs = excluded.max_session_secs, updated_at = excluded.updated_at",
        )
        .bind(scope.tenant().as_str())
        .bind(name)
        .bind(&role.trust_policy)
        .bind(policies)
        .bind(&role.external_id)
        .bind(role.max_session_secs)
        .bind(&now)
        .execute(&self.db)
        .await?;
        Ok(!existed)
    }

    pub async fn get_role(&self, scope: &TenantScope, name: &str) -> Result<Option<RoleRecord>> {
        self.role_of(scope.tenant(), name).await
    }

    /// A role of any tenant, for issuing a session after its trust policy
    /// allowed the assumption (the session's duration limit lives here).
    pub async fn assumable_role(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<RoleRecord>> {
        self.role_of(tenant, name).await
    }

    async fn role_of(&self, tenant: &TenantId, name: &str) -> Result<Option<RoleRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {ROLE_COLUMNS} FROM roles WHERE tenant_id = ? AND name = ?"
        ))
        .bind(tenant.as_str())
        .bind(name)
        .fetch_optional(&self.db)
        .await?;
        row.as_ref().map(role_from_row).transpose()
    }

    pub async fn list_roles(&self, scope: &TenantScope) -> Result<Vec<RoleRecord>> {
        self.roles_of(scope.tenant()).await
    }

    async fn roles_of(&self, tenant: &TenantId) -> Result<Vec<RoleRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {ROLE_COLUMNS} FROM roles WHERE tenant_id = ? ORDER BY name"
        ))
        .bind(tenant.as_str())
        .fetch_all(&self.db)
        .await?;
        rows.iter().map(role_from_row).collect()
    }

    pub async fn delete_role(&self, scope: &TenantScope, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM roles WHERE tenant_id = ? AND name = ?")
            .bind(scope.tenant().as_str())
            .bind(name)
            .execute(&self.db)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Platform accessor: a tenant's documents, for the authorisation layer.
    pub async fn policy_documents(&self, tenant: &TenantId) -> Result<PolicyDocuments> {
        Ok(PolicyDocuments {
            policies: self.policies_of(tenant).await?,
            roles: self.roles_of(tenant).await?,
        })
    }

    // ---- session signing keys (platform) ----------------------------------

    /// Stores a signing key, sealed under the master key.
    pub async fn add_signing_key(&self, kid: &str, pkcs8: &[u8]) -> Result<()> {
        let sealed = self
            .master
            .seal_platform_secret(&signing_key_purpose(kid), pkcs8)?;
        sqlx::query("INSERT INTO signing_keys (kid, sealed, created_at) VALUES (?, ?, ?)")
            .bind(kid)
            .bind(sealed)
            .bind(now())
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// Every signing key, oldest first: (kid, PKCS#8, created_at).
    pub async fn signing_keys(&self) -> Result<Vec<(String, Vec<u8>, String)>> {
        let rows = sqlx::query(
            "SELECT kid, sealed, created_at FROM signing_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.db)
        .await?;
        rows.iter()
            .map(|row| {
                let kid: String = row.try_get("kid")?;
                let sealed: Vec<u8> = row.try_get("sealed")?;
                let pkcs8 = self
                    .master
                    .open_platform_secret(&signing_key_purpose(&kid), &sealed)?;
                Ok((kid, pkcs8, row.try_get("created_at")?))
            })
            .collect()
    }

    /// Removes a retired signing key.
    pub async fn remove_signing_key(&self, kid: &str) -> Result<()> {
        sqlx::query("DELETE FROM signing_keys WHERE kid = ?")
            .bind(kid)
            .execute(&self.db)
            .await?;
        Ok(())
    }
}

fn signing_key_purpose(kid: &str) -> String {
    format!("session-signing-key:{kid}")
}
