//! Admin-plane operations: tenants, keys and the audit trail. The operator
//! manages tenants but never reads tenant content (invariant 6).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use fief_core::{validate_tags, Tags, TenantId, Tier};
use fief_policy::{Action, Resource};
use fief_store::{ApiKeyRecord, Principal, TenantRecord};

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
    #[serde(flatten)]
    pub aws: AwsCredentials,
}

/// The same key in the form the AWS SDKs sign with (SigV4): its id as the
/// access key id, its secret part as the secret access key. Shown once.
#[derive(Debug, Serialize)]
pub struct AwsCredentials {
    pub aws_access_key_id: String,
    pub aws_secret_access_key: String,
}

impl AwsCredentials {
    fn of(key: &fief_store::NewApiKey) -> Self {
        Self {
            aws_access_key_id: key.record.id.clone(),
            aws_secret_access_key: key.aws_secret_access_key.clone(),
        }
    }
}

/// `POST /admin/v1/tenants/{id}/api-keys`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: Option<String>,
    /// Binds the key to a role of the tenant (a scoped key).
    pub role: Option<String>,
    /// Tags policies see on the key (`principal.getTag("Department")`),
    /// e.g. for a trust policy that lets it carry only its own tags into a
    /// session.
    #[serde(default)]
    pub tags: Tags,
}

#[derive(Debug, Serialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub record: ApiKeyRecord,
    pub api_key: String,
    #[serde(flatten)]
    pub aws: AwsCredentials,
}

fn tenant_id(raw: &str) -> ApiResult<TenantId> {
    Ok(TenantId::parse(raw)?)
}

pub async fn create(state: &AppState, op: &Principal, req: CreateTenant) -> ApiResult<Created> {
    let id = tenant_id(&req.id)?;
    validate_tags(&req.tags)?;
    let resource = Resource::Tenant(id.clone());
    state.authorize(op, Action::CreateTenant, &resource).await?;
    let (tenant, key) = state.store.create_tenant(&id, req.tier, &req.tags).await?;
    state.placement.apply(&id, req.tier)?;
    state
        .audit_change(
            op,
            Action::CreateTenant,
            &resource,
            format!(
                "created incarnation {} tier={} key={}",
                tenant.incarnation, req.tier, key.record.id
            ),
        )
        .await?;
    Ok(Created {
        aws: AwsCredentials::of(&key),
        tenant,
        api_key: key.token,
        api_key_id: key.record.id,
    })
}

pub async fn list(state: &AppState, op: &Principal) -> ApiResult<Vec<TenantRecord>> {
    state
        .authorize(op, Action::ListTenants, &Resource::Platform)
        .await?;
    Ok(state.store.list_tenants().await?)
}

pub async fn get(state: &AppState, op: &Principal, raw: &str) -> ApiResult<TenantRecord> {
    let id = tenant_id(raw)?;
    state
        .authorize(op, Action::GetTenant, &Resource::Tenant(id.clone()))
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
    /// The foundation models the tenant may use (names or `Key=Value`
    /// tags); `null` removes the allowlist.
    #[serde(default, deserialize_with = "present")]
    pub llm_models: Option<Option<Vec<String>>>,
    /// Limits and weight: each key given is set (a number) or removed
    /// (`null`, back to the tier's default); `null` removes them all.
    #[serde(default, deserialize_with = "present")]
    pub quotas: Option<serde_json::Value>,
    /// A silo tenant's own bucket for its objects; `null`: back to the
    /// shared one. Its objects move with it.
    #[serde(default, deserialize_with = "present")]
    pub bucket: Option<Option<String>>,
}

/// Tells a field set to `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

pub async fn update(
    state: &AppState,
    op: &Principal,
    raw: &str,
    req: UpdateTenant,
) -> ApiResult<TenantRecord> {
    let id = tenant_id(raw)?;
    if req.tier.is_none()
        && req.tags.is_none()
        && req.llm_models.is_none()
        && req.quotas.is_none()
        && req.bucket.is_none()
    {
        return Err(ApiError::Validation(
            "nothing to update: give `tier`, `tags`, `llm_models`, `quotas` and/or `bucket`".into(),
        ));
    }
    if let Some(Some(b)) = &req.bucket {
        if !fief_config::is_bucket_name(b) {
            return Err(ApiError::Validation(format!(
                "bucket {b:?} is not a bucket name: 3 to 63 of a-z, 0-9, '-' and '.'"
            )));
        }
    }
    if let Some(Some(models)) = &req.llm_models {
        state
            .llm
            .catalog
            .parse_allowlist(models)
            .map_err(ApiError::Validation)?;
    }
    if let Some(tags) = &req.tags {
        validate_tags(tags)?;
    }
    let resource = Resource::Tenant(id.clone());
    state.authorize(op, Action::UpdateTenant, &resource).await?;
    let before = state.store.get_tenant(&id).await?;
    let quotas = match &req.quotas {
        None => None,
        Some(patch) => Some(crate::quota::patch_settings(
            before.as_ref().and_then(|b| b.quotas.as_ref()),
            patch,
        )?),
    };
    // Back to the shared bucket before a tier change; into its own after.
    if let Some(None) = &req.bucket {
        state.store.set_tenant_bucket(&id, None).await?;
    }
    let mut after = state
        .store
        .update_tenant(
            &id,
            req.tier,
            req.tags.as_ref(),
            req.llm_models.as_ref().map(Option::as_deref),
        )
        .await?;
    if let Some(q) = &quotas {
        after = state.store.set_tenant_quotas(&id, q.as_ref()).await?;
    }
    if let Some(Some(b)) = &req.bucket {
        after = state.store.set_tenant_bucket(&id, Some(b)).await?;
    }
    state.placement.apply(&id, after.tier)?;
    if before.as_ref().is_some_and(|b| b.tier != after.tier) {
        // Vectors reload into the new tier's placement on next use.
        state.knowledge.forget_tenant(&id)?;
    }
    let from = before.map_or("?", |t| t.tier.as_str());
    state
        .audit_change(
            op,
            Action::UpdateTenant,
            &resource,
            format!(
                "tier {from} -> {}; tags set: {}; llm_models: {}; quotas: {}; bucket: {}",
                after.tier,
                req.tags.is_some(),
                match &req.llm_models {
                    None => "unchanged".to_owned(),
                    Some(None) => "removed".to_owned(),
                    Some(Some(m)) => format!("{m:?}"),
                },
                match &quotas {
                    None => "unchanged".to_owned(),
                    Some(q) => serde_json::to_string(q).unwrap_or_default(),
                },
                match &req.bucket {
                    None => "unchanged".to_owned(),
                    Some(None) => "the shared one".to_owned(),
                    Some(Some(b)) => b.clone(),
                }
            ),
        )
        .await?;
    Ok(after)
}

/// Offboarding, a fence no request outlives: the tenant is marked
/// offboarding (every credential refused from then on), its in-flight
/// requests are drained, then every row, object, cached model, index and
/// policy set of it goes, and its data key is destroyed. The answer comes
/// only after the residue check finds nothing left. A DELETE of an id with
/// no tenant but with data an earlier tenant left removes that data.
pub async fn delete(state: &AppState, op: &Principal, raw: &str) -> ApiResult<()> {
    let id = tenant_id(raw)?;
    let resource = Resource::Tenant(id.clone());
    let scope = state
        .authorize(op, Action::DeleteTenant, &resource)
        .await?
        .into_offboard()
        .ok_or_else(|| ApiError::Internal("DeleteTenant was allowed without a grant".into()))?;
    let incarnation = state.store.begin_offboarding(&scope).await?;
    match &incarnation {
        Some(inc) => {
            let limit = Duration::from_secs(state.config.request_timeout_secs + 5);
            if !state.activity.drain(&id, inc, limit).await {
                // Only a client that does not read its response gets here;
                // the store's fence still stops every write.
                tracing::warn!(tenant = %id, "offboarding: in-flight responses still unsent after {limit:?}");
            }
        }
        None if state.store.residue(&id).await?.is_empty() => {
            return Err(ApiError::NotFound(format!("tenant {id} not found")));
        }
        None => {}
    }
    state.store.finish_offboarding(scope).await?;
    state.knowledge.forget_tenant(&id)?;
    state.placement.remove(&id);
    state.cache.remove_tenant(&id);
    state.metrics.forget_tenant(id.as_str());
    state.policy.invalidate(&id);
    if let Some(inc) = &incarnation {
        state.quota.forget(&id, inc);
    }
    let left = state.store.residue(&id).await?;
    if !left.is_empty() {
        return Err(ApiError::Internal(format!(
            "offboarding of {id} left {}",
            left.join(", ")
        )));
    }
    let detail = match incarnation {
        Some(inc) => format!("offboarded incarnation {inc}; data key destroyed"),
        None => "removed data an earlier tenant left".to_owned(),
    };
    state
        .audit_change(op, Action::DeleteTenant, &resource, detail)
        .await
}

pub async fn create_key(
    state: &AppState,
    op: &Principal,
    raw: &str,
    req: CreateKey,
) -> ApiResult<CreatedKey> {
    let CreateKey { name, role, tags } = req;
    let id = tenant_id(raw)?;
    let name = name.unwrap_or_else(|| "unnamed".into());
    if name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::Validation(
            "key name must be at most 128 characters without control characters".into(),
        ));
    }
    validate_tags(&tags)?;
    let resource = Resource::Tenant(id.clone());
    state.authorize(op, Action::CreateApiKey, &resource).await?;
    let role = role
        .map(|r| fief_core::parse_name("role name", &r))
        .transpose()?;
    let key = state
        .store
        .create_api_key(&id, &name, role.as_deref(), &tags)
        .await?;
    let scoped = role
        .map(|r| format!(" scoped to role {r}"))
        .unwrap_or_default();
    state
        .audit_change(
            op,
            Action::CreateApiKey,
            &resource,
            format!("key {} created{scoped}", key.record.id),
        )
        .await?;
    Ok(CreatedKey {
        aws: AwsCredentials::of(&key),
        record: key.record,
        api_key: key.token,
    })
}

pub async fn list_keys(
    state: &AppState,
    op: &Principal,
    raw: &str,
) -> ApiResult<Vec<ApiKeyRecord>> {
    let id = tenant_id(raw)?;
    state
        .authorize(op, Action::ListApiKeys, &Resource::Tenant(id.clone()))
        .await?;
    if state.store.get_tenant(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("tenant {id} not found")));
    }
    Ok(state.store.list_api_keys(&id).await?)
}

pub async fn revoke_key(
    state: &AppState,
    op: &Principal,
    raw: &str,
    key_id: &str,
) -> ApiResult<()> {
    let id = tenant_id(raw)?;
    let resource = Resource::Tenant(id.clone());
    state.authorize(op, Action::RevokeApiKey, &resource).await?;
    if !state.store.revoke_api_key(&id, key_id).await? {
        return Err(ApiError::NotFound(format!(
            "no live key {key_id} for tenant {id}"
        )));
    }
    state
        .audit_change(
            op,
            Action::RevokeApiKey,
            &resource,
            format!("key {key_id} revoked"),
        )
        .await
}
