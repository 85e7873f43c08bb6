//! Tenant-written policy documents and roles, and the platform's session
//! signing keys.
//!
//! Writes take a [`TenantScope`]. [`Store::policy_documents`] is a platform
//! accessor: the authorisation layer reads a tenant's documents to compile
//! them before it can decide anything for that tenant, as authentication
//! reads key hashes before it knows who is calling.

use serde::Serialize;

use fief_core::{Incarnation, ModelRef, Tags, TenantId};

use crate::db::{q, Row, Q};
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

fn policy_from_row(row: &Row) -> Result<PolicyRecord> {
    Ok(PolicyRecord {
        id: row.get("id")?,
        policy: row.get("body")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

fn role_from_row(row: &Row) -> Result<RoleRecord> {
    let policies: String = row.get("policies")?;
    Ok(RoleRecord {
        name: row.get("name")?,
        trust_policy: row.get("trust_policy")?,
        policies: serde_json::from_str(&policies)
            .map_err(|e| StoreError::Corrupt(format!("role policies: {e}")))?,
        external_id: row.get("external_id")?,
        max_session_secs: row.get("max_session_secs")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

const ROLE_COLUMNS: &str =
    "name, trust_policy, policies, external_id, max_session_secs, created_at, updated_at";

impl Store {
    /// Runs a statement on `tenant`'s place, with the tenant bound as `$1`;
    /// `{t}` in `sql` names `table` there.
    async fn on_place(
        &self,
        tenant: &TenantId,
        incarnation: Option<&Incarnation>,
        table: &str,
        sql: &str,
        bind: impl FnOnce(Q) -> Q,
    ) -> Result<Vec<Row>> {
        let place = self.place_of(tenant, incarnation).await?;
        let sql = sql.replace("{t}", &place.t(table));
        place
            .fetch(tenant, bind(q(sql).bind(tenant.as_str())))
            .await
    }

    /// Creates or replaces a policy document; `true` if it was created.
    pub async fn put_policy(&self, scope: &TenantScope, id: &str, body: &str) -> Result<bool> {
        let existed = self.get_policy(scope, id).await?.is_some();
        self.on_place(
            scope.tenant(),
            Some(scope.incarnation()),
            "policies",
            "INSERT INTO {t} (tenant_id, id, body, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (tenant_id, id) DO UPDATE SET body = excluded.body,
                     updated_at = excluded.updated_at",
            |q| q.bind(id).bind(body).bind(now()),
        )
        .await?;
        self.announced(scope.tenant(), "policies", id).await;
        Ok(!existed)
    }

    pub async fn get_policy(&self, scope: &TenantScope, id: &str) -> Result<Option<PolicyRecord>> {
        let rows = self
            .on_place(
                scope.tenant(),
                Some(scope.incarnation()),
                "policies",
                "SELECT id, body, created_at, updated_at FROM {t} WHERE tenant_id = $1 AND id = $2",
                |q| q.bind(id),
            )
            .await?;
        rows.first().map(policy_from_row).transpose()
    }

    pub async fn list_policies(&self, scope: &TenantScope) -> Result<Vec<PolicyRecord>> {
        self.policies_of(scope.tenant(), scope.incarnation()).await
    }

    async fn policies_of(
        &self,
        tenant: &TenantId,
        incarnation: &Incarnation,
    ) -> Result<Vec<PolicyRecord>> {
        self.on_place(
            tenant,
            Some(incarnation),
            "policies",
            "SELECT id, body, created_at, updated_at FROM {t} WHERE tenant_id = $1 ORDER BY id",
            |q| q,
        )
        .await?
        .iter()
        .map(policy_from_row)
        .collect()
    }

    pub async fn delete_policy(&self, scope: &TenantScope, id: &str) -> Result<bool> {
        let rows = self
            .on_place(
                scope.tenant(),
                Some(scope.incarnation()),
                "policies",
                "DELETE FROM {t} WHERE tenant_id = $1 AND id = $2 RETURNING id",
                |q| q.bind(id),
            )
            .await?;
        self.announced(scope.tenant(), "policies", id).await;
        Ok(!rows.is_empty())
    }

    /// Creates or replaces a role; `true` if it was created.
    pub async fn put_role(
        &self,
        scope: &TenantScope,
        name: &str,
        role: &RoleInput,
    ) -> Result<bool> {
        let policies = serde_json::to_string(&role.policies)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let existed = self.get_role(scope, name).await?.is_some();
        self.on_place(
            scope.tenant(),
            Some(scope.incarnation()),
            "roles",
            "INSERT INTO {t} (tenant_id, name, trust_policy, policies, external_id,
                     max_session_secs, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
                 ON CONFLICT (tenant_id, name) DO UPDATE SET trust_policy = excluded.trust_policy,
                   policies = excluded.policies, external_id = excluded.external_id,
                   max_session_secs = excluded.max_session_secs, updated_at = excluded.updated_at",
            |q| {
                q.bind(name)
                    .bind(&role.trust_policy)
                    .bind(policies)
                    .bind(role.external_id.clone())
                    .bind(role.max_session_secs)
                    .bind(now())
            },
        )
        .await?;
        self.announced(scope.tenant(), "roles", name).await;
        Ok(!existed)
    }

    pub async fn get_role(&self, scope: &TenantScope, name: &str) -> Result<Option<RoleRecord>> {
        self.role_of(scope.tenant(), scope.incarnation(), name)
            .await
    }

    /// The role an allowed assume-role granted (the session's duration
    /// limit lives here).
    pub async fn assumable_role(&self, grant: &crate::SessionGrant) -> Result<Option<RoleRecord>> {
        self.role_of(
            &grant.role.owner,
            &grant.owner_incarnation,
            &grant.role.name,
        )
        .await
    }

    pub(crate) async fn role_of(
        &self,
        tenant: &TenantId,
        incarnation: &Incarnation,
        name: &str,
    ) -> Result<Option<RoleRecord>> {
        let rows = self
            .on_place(
                tenant,
                Some(incarnation),
                "roles",
                &format!("SELECT {ROLE_COLUMNS} FROM {{t}} WHERE tenant_id = $1 AND name = $2"),
                |q| q.bind(name),
            )
            .await?;
        rows.first().map(role_from_row).transpose()
    }

    pub async fn list_roles(&self, scope: &TenantScope) -> Result<Vec<RoleRecord>> {
        self.roles_of(scope.tenant(), scope.incarnation()).await
    }

    async fn roles_of(
        &self,
        tenant: &TenantId,
        incarnation: &Incarnation,
    ) -> Result<Vec<RoleRecord>> {
        self.on_place(
            tenant,
            Some(incarnation),
            "roles",
            &format!("SELECT {ROLE_COLUMNS} FROM {{t}} WHERE tenant_id = $1 ORDER BY name"),
            |q| q,
        )
        .await?
        .iter()
        .map(role_from_row)
        .collect()
    }

    pub async fn delete_role(&self, scope: &TenantScope, name: &str) -> Result<bool> {
        let rows = self
            .on_place(
                scope.tenant(),
                Some(scope.incarnation()),
                "roles",
                "DELETE FROM {t} WHERE tenant_id = $1 AND name = $2 RETURNING name",
                |q| q.bind(name),
            )
            .await?;
        self.announced(scope.tenant(), "roles", name).await;
        Ok(!rows.is_empty())
    }

    /// Platform accessor: a tenant incarnation's documents, for the
    /// authorisation layer (it compiles them before it can decide anything
    /// for that tenant). Another incarnation's are never returned.
    pub async fn policy_documents(
        &self,
        tenant: &TenantId,
        incarnation: &Incarnation,
    ) -> Result<PolicyDocuments> {
        Ok(PolicyDocuments {
            policies: self.policies_of(tenant, incarnation).await?,
            roles: self.roles_of(tenant, incarnation).await?,
        })
    }

    /// The tags of the principal's own model, for attribute-based
    /// decisions before the decision is made. A model of any other tenant
    /// is never looked up (its address alone decides: the guardrail).
    pub async fn own_model_tags(
        &self,
        principal: &crate::Principal,
        model: &ModelRef,
    ) -> Result<Tags> {
        let (Some(tenant), Some(incarnation)) = (principal.tenant(), principal.incarnation())
        else {
            return Ok(Tags::new());
        };
        if tenant != &model.owner {
            return Ok(Tags::new());
        }
        let scope = TenantScope::internal(tenant.clone(), incarnation.clone());
        Ok(self
            .get_model(&scope, &model.name)
            .await?
            .map(|m| m.tags)
            .unwrap_or_default())
    }

    // ---- session signing keys (platform) ----------------------------------

    /// Stores a signing key, sealed under the master key.
    pub(crate) async fn add_signing_key(&self, kid: &str, pkcs8: &[u8]) -> Result<()> {
        let sealed = self
            .master
            .seal_platform_secret(&signing_key_purpose(kid), pkcs8)?;
        q("INSERT INTO signing_keys (kid, sealed, created_at) VALUES ($1, $2, $3)")
            .bind(kid)
            .bind(sealed)
            .bind(now())
            .exec(&self.platform)
            .await?;
        Ok(())
    }

    /// Every signing key, oldest first: (kid, PKCS#8, created_at).
    pub(crate) async fn signing_keys(&self) -> Result<Vec<(String, Vec<u8>, String)>> {
        let rows = q("SELECT kid, sealed, created_at FROM signing_keys ORDER BY created_at, kid")
            .all(&self.platform)
            .await?;
        rows.iter()
            .map(|row| {
                let kid: String = row.get("kid")?;
                let sealed: Vec<u8> = row.get("sealed")?;
                let pkcs8 = self
                    .master
                    .open_platform_secret(&signing_key_purpose(&kid), &sealed)
                    .map_err(|_| {
                        StoreError::Config(format!(
                            "session signing key {kid} does not open under this master key: \
                             every gateway on one database needs the same master key \
                             (FIEF_MASTER_KEY, or the data directory's master.key)"
                        ))
                    })?;
                Ok((kid, pkcs8, row.get("created_at")?))
            })
            .collect()
    }

    /// Removes a retired signing key.
    pub(crate) async fn remove_signing_key(&self, kid: &str) -> Result<()> {
        q("DELETE FROM signing_keys WHERE kid = $1")
            .bind(kid)
            .exec(&self.platform)
            .await?;
        Ok(())
    }
}

fn signing_key_purpose(kid: &str) -> String {
    format!("session-signing-key:{kid}")
}
