//! Admin-plane operations: tenants, keys and the audit trail. The operator
//! manages tenants but never reads tenant content (invariant 6).

use serde::{Deserialize, Serialize};

use fief_audit::Entry;
use fief_core::{validate_tags, Tags, TenantId, Tier};
use fief_policy::{Action, Principal, Resource};
use fief_store::{ApiKeyRecord, TenantRecord};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub id: String,
    #[serde(default = "default_tier")]
    pub tier: Tier,
    #[serde(default)]
    pub tags: Tags,
}

fn default_tier() -> Tier {
    Tier::Pool
}

#[derive(Debug, Serialize)]
pub struct Created {
    pub tenant: TenantRecord,
    /// The secret, shown once.
    pub api_key: String,
    pub api_key_id: String,
}

#[derive(Debug, Serialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub record: ApiKeyRecord,
    pub api_key: String,
}

const OP: Principal = Principal::Operator;

fn tenant_id(raw: &str) -> ApiResult<TenantId> {
    Ok(TenantId::parse(raw)?)
}

pub async fn create(state: &AppState, req: CreateTenant) -> ApiResult<Created> {
    let id = tenant_id(&req.id)?;
    validate_tags(&req.tags)?;
    let resource = Resource::Tenant(id.clone());
    state
        .authorize(&OP, Action::CreateTenant, &resource)
        .await?;
    let (tenant, key) = state.store.create_tenant(&id, req.tier, &req.tags).await?;
    state.placement.apply(&id, req.tier)?;
    state.audit_admin(
        Action::CreateTenant,
        &resource,
        format!("created tier={} key={}", req.tier, key.record.id),
    )?;
    Ok(Created {
        tenant,
        api_key: key.token,
        api_key_id: key.record.id,
    })
}

pub async fn list(state: &AppState) -> ApiResult<Vec<TenantRecord>> {
    state
        .authorize(&OP, Action::ListTenants, &Resource::Platform)
        .await?;
    Ok(state.store.list_tenants().await?)
}

pub async fn get(state: &AppState, raw: &str) -> ApiResult<TenantRecord> {
    let id = tenant_id(raw)?;
    state
        .authorize(&OP, Action::GetTenant, &Resource::Tenant(id.clone()))
        .await?;
    state
        .store
        .get_tenant(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("tenant {id} not found")))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    pub tier: Option<Tier>,
    pub tags: Option<Tags>,
}

pub async fn update(state: &AppState, raw: &str, req: UpdateTenant) -> ApiResult<TenantRecord> {
    let id = tenant_id(raw)?;
    if req.tier.is_none() && req.tags.is_none() {
        return Err(ApiError::Validation(
            "nothing to update: give `tier` and/or `tags`".into(),
        ));
    }
    if let Some(tags) = &req.tags {
        validate_tags(tags)?;
    }
    let resource = Resource::Tenant(id.clone());
    state
        .authorize(&OP, Action::UpdateTenant, &resource)
        .await?;
    let before = state.store.get_tenant(&id).await?;
    let after = state
        .store
        .update_tenant(&id, req.tier, req.tags.as_ref())
        .await?;
    state.placement.apply(&id, after.tier)?;
    if before.as_ref().is_some_and(|b| b.tier != after.tier) {
        // Vectors reload into the new tier's placement on next use.
        state.knowledge.forget_tenant(&id)?;
    }
    let from = before.map_or("?", |t| t.tier.as_str());
    state.audit_admin(
        Action::UpdateTenant,
        &resource,
        format!(
            "tier {from} -> {}; tags set: {}",
            after.tier,
            req.tags.is_some()
        ),
    )?;
    Ok(after)
}

/// Offboarding: every row, object and cached model of the tenant goes, and
/// its data key is destroyed.
pub async fn delete(state: &AppState, raw: &str) -> ApiResult<()> {
    let id = tenant_id(raw)?;
    let resource = Resource::Tenant(id.clone());
    let scope = state
        .authorize_scoped(&OP, Action::DeleteTenant, &resource)
        .await?;
    state.store.offboard(scope).await?;
    state.knowledge.forget_tenant(&id)?;
    state.placement.remove(&id);
    state.cache.remove_tenant(&id);
    state.policy.invalidate(&id);
    state.audit_admin(
        Action::DeleteTenant,
        &resource,
        "offboarded; data key destroyed".into(),
    )
}

pub async fn create_key(
    state: &AppState,
    raw: &str,
    name: Option<String>,
    role: Option<String>,
) -> ApiResult<CreatedKey> {
    let id = tenant_id(raw)?;
    let name = name.unwrap_or_else(|| "unnamed".into());
    if name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::Validation(
            "key name must be at most 128 characters without control characters".into(),
        ));
    }
    let resource = Resource::Tenant(id.clone());
    state
        .authorize(&OP, Action::CreateApiKey, &resource)
        .await?;
    let role = role
        .map(|r| fief_core::parse_name("role name", &r))
        .transpose()?;
    let key = state
        .store
        .create_api_key(&id, &name, role.as_deref())
        .await?;
    let scoped = role
        .map(|r| format!(" scoped to role {r}"))
        .unwrap_or_default();
    state.audit_admin(
        Action::CreateApiKey,
        &resource,
        format!("key {} created{scoped}", key.record.id),
    )?;
    Ok(CreatedKey {
        record: key.record,
        api_key: key.token,
    })
}

pub async fn list_keys(state: &AppState, raw: &str) -> ApiResult<Vec<ApiKeyRecord>> {
    let id = tenant_id(raw)?;
    state
        .authorize(&OP, Action::ListApiKeys, &Resource::Tenant(id.clone()))
        .await?;
    if state.store.get_tenant(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("tenant {id} not found")));
    }
    Ok(state.store.list_api_keys(&id).await?)
}

pub async fn revoke_key(state: &AppState, raw: &str, key_id: &str) -> ApiResult<()> {
    let id = tenant_id(raw)?;
    let resource = Resource::Tenant(id.clone());
    state
        .authorize(&OP, Action::RevokeApiKey, &resource)
        .await?;
    if !state.store.revoke_api_key(&id, key_id).await? {
        return Err(ApiError::NotFound(format!(
            "no live key {key_id} for tenant {id}"
        )));
    }
    state.audit_admin(
        Action::RevokeApiKey,
        &resource,
        format!("key {key_id} revoked"),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub tenant: Option<String>,
    pub decision: Option<fief_audit::Decision>,
    pub limit: Option<usize>,
}

/// Audit entries, newest last. They hold who did what to which resource
/// name, never tenant content.
pub async fn audit(state: &AppState, q: AuditQuery) -> ApiResult<Vec<Entry>> {
    state
        .authorize(&OP, Action::ReadAudit, &Resource::Platform)
        .await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let path = state.audit.path().to_owned();
    let entries = tokio::task::spawn_blocking(move || {
        fief_audit::read_entries(&path, limit, |e| {
            q.tenant
                .as_deref()
                .is_none_or(|t| e.event.tenant.as_deref() == Some(t))
                && q.decision.is_none_or(|d| e.event.decision == d)
        })
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(entries)
}
