//! Tenant-written access control: policy documents, roles, role sessions
//! (STS) and `policies/explain`. No HTTP here.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use fief_core::{parse_name, validate_tags, ModelRef, RoleRef, Tags, TenantId};
use fief_policy::{Action, Resource, ResourceAttrs, RoleDocument, TagVerdict, Verdict};
use fief_store::{PolicyRecord, Principal, RoleInput, RoleRecord};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn caller_tenant(principal: &Principal) -> ApiResult<TenantId> {
    principal.tenant().cloned().ok_or(ApiError::AccessDenied)
}

// ---- policies -------------------------------------------------------------

fn policy_resource(principal: &Principal, id: &str) -> ApiResult<Resource> {
    Ok(Resource::Policy {
        tenant: caller_tenant(principal)?,
        id: parse_name("policy id", id)?,
    })
}

/// Validates against the schema, then stores; `true` if created.
pub async fn put_policy(
    state: &AppState,
    principal: &Principal,
    id: &str,
    text: &str,
) -> ApiResult<(PolicyRecord, bool)> {
    let resource = policy_resource(principal, id)?;
    let scope = state
        .authorize_scoped(principal, Action::PutPolicy, &resource)
        .await?;
    state
        .policy
        .validate_policy(id, text)
        .map_err(ApiError::InvalidPolicy)?;
    let created = state.store.put_policy(&scope, id, text).await?;
    state.policy.invalidate(scope.tenant());
    state
        .audit_change(
            principal,
            Action::PutPolicy,
            &resource,
            "policy written".into(),
        )
        .await?;
    let record = state
        .store
        .get_policy(&scope, id)
        .await?
        .ok_or_else(|| ApiError::Internal("policy vanished after writing".into()))?;
    Ok((record, created))
}

pub async fn get_policy(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> ApiResult<PolicyRecord> {
    let resource = policy_resource(principal, id)?;
    let scope = state
        .authorize_scoped(principal, Action::GetPolicy, &resource)
        .await?;
    state
        .store
        .get_policy(&scope, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("policy {id} not found")))
}

pub async fn delete_policy(state: &AppState, principal: &Principal, id: &str) -> ApiResult<()> {
    let resource = policy_resource(principal, id)?;
    let scope = state
        .authorize_scoped(principal, Action::DeletePolicy, &resource)
        .await?;
    if !state.store.delete_policy(&scope, id).await? {
        return Err(ApiError::NotFound(format!("policy {id} not found")));
    }
    state.policy.invalidate(scope.tenant());
    state
        .audit_change(
            principal,
            Action::DeletePolicy,
            &resource,
            "policy deleted".into(),
        )
        .await
}

pub async fn list_policies(
    state: &AppState,
    principal: &Principal,
) -> ApiResult<Vec<PolicyRecord>> {
    let resource = Resource::Tenant(caller_tenant(principal)?);
    let scope = state
        .authorize_scoped(principal, Action::ListPolicies, &resource)
        .await?;
    Ok(state.store.list_policies(&scope).await?)
}

// ---- roles ----------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRole {
    pub trust_policy: String,
    #[serde(default)]
    pub policies: Vec<String>,
    /// Required from principals of other tenants (the confused-deputy check).
    pub external_id: Option<String>,
    pub max_session_secs: Option<u64>,
}

fn role_resource(principal: &Principal, name: &str) -> ApiResult<Resource> {
    Ok(Resource::Role(RoleRef {
        owner: caller_tenant(principal)?,
        name: parse_name("role name", name)?,
    }))
}

pub async fn put_role(
    state: &AppState,
    principal: &Principal,
    name: &str,
    req: PutRole,
) -> ApiResult<(RoleRecord, bool)> {
    let resource = role_resource(principal, name)?;
    let scope = state
        .authorize_scoped(principal, Action::PutRole, &resource)
        .await?;
    if let Some(ext) = &req.external_id {
        if !(8..=256).contains(&ext.len()) || ext.chars().any(char::is_control) {
            return Err(ApiError::Validation(
                "external_id must be 8 to 256 characters without control characters".into(),
            ));
        }
    }
    let max = state.config.sts.max_session_secs;
    let max_session_secs = match req.max_session_secs {
        Some(s) if !(60..=max).contains(&s) => {
            return Err(ApiError::Validation(format!(
                "max_session_secs must be between 60 and {max}"
            )))
        }
        Some(s) => Some(i64::try_from(s).map_err(|e| ApiError::Validation(e.to_string()))?),
        None => None,
    };
    state
        .policy
        .validate_role(&RoleDocument {
            name: name.to_owned(),
            trust_policy: req.trust_policy.clone(),
            policies: req.policies.clone(),
            external_id: req.external_id.clone(),
        })
        .map_err(ApiError::InvalidPolicy)?;
    let input = RoleInput {
        trust_policy: req.trust_policy,
        policies: req.policies,
        external_id: req.external_id,
        max_session_secs,
    };
    let created = state.store.put_role(&scope, name, &input).await?;
    state.policy.invalidate(scope.tenant());
    state
        .audit_change(principal, Action::PutRole, &resource, "role written".into())
        .await?;
    let record = state
        .store
        .get_role(&scope, name)
        .await?
        .ok_or_else(|| ApiError::Internal("role vanished after writing".into()))?;
    Ok((record, created))
}

pub async fn get_role(
    state: &AppState,
    principal: &Principal,
    name: &str,
) -> ApiResult<RoleRecord> {
    let resource = role_resource(principal, name)?;
    let scope = state
        .authorize_scoped(principal, Action::GetRole, &resource)
        .await?;
    state
        .store
        .get_role(&scope, name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("role {name} not found")))
}

pub async fn delete_role(state: &AppState, principal: &Principal, name: &str) -> ApiResult<()> {
    let resource = role_resource(principal, name)?;
    let scope = state
        .authorize_scoped(principal, Action::DeleteRole, &resource)
        .await?;
    if !state.store.delete_role(&scope, name).await? {
        return Err(ApiError::NotFound(format!("role {name} not found")));
    }
    // Its sessions and scoped keys lose every permission at once.
    state.policy.invalidate(scope.tenant());
    state
        .audit_change(
            principal,
            Action::DeleteRole,
            &resource,
            "role deleted".into(),
        )
        .await
}

pub async fn list_roles(state: &AppState, principal: &Principal) -> ApiResult<Vec<RoleRecord>> {
    let resource = Resource::Tenant(caller_tenant(principal)?);
    let scope = state
        .authorize_scoped(principal, Action::ListRoles, &resource)
        .await?;
    Ok(state.store.list_roles(&scope).await?)
}

// ---- STS ------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssumeRole {
    /// `name` (own tenant), `tenant/name` or `frn:fief:role:tenant/name`.
    pub role: String,
    pub session_name: String,
    #[serde(default)]
    pub tags: Tags,
    pub external_id: Option<String>,
    pub duration_seconds: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Credentials {
    pub token: String,
    pub expires_at: String,
    pub session: String,
}

fn check_session_name(name: &str) -> ApiResult<()> {
    let ok = (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_=,.@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Validation(
            "session_name must be 2 to 64 characters of a-z, A-Z, 0-9 and _=,.@-".into(),
        ))
    }
}

/// Issues a session token when the role's trust policy allows the caller,
/// and every requested session tag (`TagSession`). The token's permissions
/// are the role's, in the role's tenant incarnation. Another tenant's role
/// is looked up only once the caller presented an external id (the
/// guardrail needs nothing else to refuse it), and a role of a tenant that
/// does not exist gets the same answer, and an audit entry, as a foreign
/// role the caller may not assume (invariants 7 and 8).
pub async fn assume_role(
    state: &AppState,
    principal: &Principal,
    req: AssumeRole,
) -> ApiResult<Credentials> {
    let source = caller_tenant(principal)?;
    check_session_name(&req.session_name)?;
    validate_tags(&req.tags)?;
    let role = RoleRef::parse(&req.role, &source)?;
    let sts = &state.config.sts;
    let requested = req.duration_seconds.unwrap_or(sts.default_session_secs);
    if !(60..=sts.max_session_secs).contains(&requested) {
        return Err(ApiError::Validation(format!(
            "duration_seconds must be between 60 and {}",
            sts.max_session_secs
        )));
    }
    let resource = Resource::Role(role.clone());
    let owner = if role.owner == source {
        principal.incarnation().cloned()
    } else if req.external_id.is_none() {
        let refused = Verdict {
            allowed: false,
            policies: vec![fief_policy::ASSUME_ROLE_GUARDRAIL_ID.to_owned()],
            reason: Some("another tenant's role needs its external id".into()),
        };
        state
            .audit_verdict(principal, Action::AssumeRole.name(), &resource, &refused)
            .await?;
        return Err(ApiError::AccessDenied);
    } else {
        state.store.active_incarnation(&role.owner).await?
    };
    let decision = match owner {
        Some(inc) => match state.ensure_policies(&role.owner, &inc).await {
            Ok(policies) => Some(fief_store::decide_assume_role(
                &state.policy,
                &policies,
                principal,
                &role,
                &inc,
                req.external_id.as_deref(),
                &req.tags,
            )),
            // The tenant went away since the lookup: as if it never was.
            Err(ApiError::Unauthenticated(_)) => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    let Some(decision) = decision else {
        let refused = Verdict::deny(fief_policy::NO_SUCH_ROLE);
        state
            .audit_verdict(principal, Action::AssumeRole.name(), &resource, &refused)
            .await?;
        return Err(ApiError::AccessDenied);
    };
    state
        .audit_verdict(
            principal,
            Action::AssumeRole.name(),
            &resource,
            &decision.verdict.verdict,
        )
        .await?;
    let grant = decision.into_grant().ok_or(ApiError::AccessDenied)?;
    // Allowed, so the role exists; its own limit applies as well.
    let record = state
        .store
        .assumable_role(&grant)
        .await?
        .ok_or(ApiError::AccessDenied)?;
    if let Some(limit) = record.max_session_secs {
        if i64::try_from(requested).unwrap_or(i64::MAX) > limit {
            return Err(ApiError::Validation(format!(
                "duration_seconds must be at most {limit} for this role"
            )));
        }
    }
    let (token, claims) = state
        .store
        .issue_session(&grant, &req.session_name, Duration::from_secs(requested))
        .await?;
    let expires_at =
        humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(claims.exp))
            .to_string();
    // Recorded as the new session, so the role's tenant sees who assumed
    // its role (the decision above is recorded under the caller's tenant).
    state
        .audit_session_issued(
            &claims,
            &resource,
            format!(
                "session issued until {expires_at}; tags: {}",
                grant.tags().keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
        .await?;
    Ok(Credentials {
        token,
        expires_at,
        session: claims.sub,
    })
}

// ---- explain --------------------------------------------------------------

/// Who to explain a decision for; always a principal of the caller's tenant.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainPrincipal {
    /// A key of the caller's tenant, by id.
    pub api_key: Option<String>,
    /// A session of this role of the caller's tenant.
    pub role: Option<String>,
    /// A signed-in user, by subject.
    pub user: Option<String>,
    #[serde(default)]
    pub tags: Tags,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Explain {
    /// Absent: the caller itself.
    pub principal: Option<ExplainPrincipal>,
    pub action: String,
    /// A fief resource name (`frn:fief:model:acme/m`, …) or a model name.
    pub resource: String,
    /// Resource tags to assume instead of the stored ones.
    pub resource_tags: Option<Tags>,
    /// For `AssumeRole` of one of this tenant's roles: the session tags to
    /// ask for (each decided by the trust policy's `TagSession`).
    pub session_tags: Option<Tags>,
}

#[derive(Debug, Serialize)]
pub struct TagDecision {
    pub key: String,
    pub value: String,
    pub decision: &'static str,
    pub policies: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub decision: &'static str,
    pub policies: Vec<String>,
    pub reason: Option<String>,
    pub principal: String,
    pub action: &'static str,
    pub resource: String,
    /// `AssumeRole` only: each requested session tag's decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_tags: Option<Vec<TagDecision>>,
}

fn allow_or_deny(allowed: bool) -> &'static str {
    if allowed {
        "Allow"
    } else {
        "Deny"
    }
}

pub async fn explain(
    state: &AppState,
    principal: &Principal,
    req: Explain,
) -> ApiResult<Explanation> {
    let tenant = caller_tenant(principal)?;
    state
        .authorize(
            principal,
            Action::ExplainPolicy,
            &Resource::Tenant(tenant.clone()),
        )
        .await?;
    let action: Action = req.action.parse().map_err(ApiError::Validation)?;
    if action == Action::TagSession {
        return Err(ApiError::Validation(
            "TagSession is decided per tag within AssumeRole: explain AssumeRole with \
             `session_tags`"
                .into(),
        ));
    }
    let subject = explained_principal(state, principal, req.principal).await?;
    let resource = parse_resource(&req.resource, &tenant)?;
    if let Some(tags) = &req.resource_tags {
        validate_tags(tags)?;
    }
    if action == Action::AssumeRole {
        return explain_assume_role(state, &subject, resource, req.session_tags).await;
    }
    if req.session_tags.is_some() {
        return Err(ApiError::Validation(
            "session_tags apply only to AssumeRole".into(),
        ));
    }
    let attrs = req.resource_tags.map(|tags| ResourceAttrs { tags });
    let decision = state.decide(&subject, action, &resource, attrs).await?;
    Ok(Explanation {
        decision: allow_or_deny(decision.allowed),
        policies: decision.policies,
        reason: decision.reason,
        principal: subject.audit_name(),
        action: action.name(),
        resource: resource.frn(),
        session_tags: None,
    })
}

/// The trust decision on one of the caller's own tenant's roles, with each
/// requested session tag's decision.
async fn explain_assume_role(
    state: &AppState,
    subject: &Principal,
    resource: Resource,
    tags: Option<Tags>,
) -> ApiResult<Explanation> {
    let own = subject.tenant().zip(subject.incarnation());
    let (Resource::Role(role), Some((tenant, incarnation))) = (&resource, own) else {
        return Err(ApiError::Validation(
            "AssumeRole is explained for a role of this tenant: frn:fief:role:<tenant>/<name>"
                .into(),
        ));
    };
    if &role.owner != tenant {
        return Err(ApiError::Validation(
            "only this tenant's own roles can be explained".into(),
        ));
    }
    let tags = tags.unwrap_or_default();
    validate_tags(&tags)?;
    let policies = state.ensure_policies(tenant, incarnation).await?;
    let decision = fief_store::decide_assume_role(
        &state.policy,
        &policies,
        subject,
        role,
        incarnation,
        None,
        &tags,
    );
    let v = decision.verdict;
    Ok(Explanation {
        decision: allow_or_deny(v.verdict.allowed),
        policies: v.verdict.policies,
        reason: v.verdict.reason,
        principal: subject.audit_name(),
        action: Action::AssumeRole.name(),
        resource: resource.frn(),
        session_tags: Some(v.tags.into_iter().map(tag_decision).collect()),
    })
}

fn tag_decision(t: TagVerdict) -> TagDecision {
    TagDecision {
        decision: allow_or_deny(t.allowed),
        key: t.key,
        value: t.value,
        policies: t.policies,
    }
}

/// The principal to explain for: the caller, or one of its own tenant's
/// (which grants nothing: a hypothetical principal gets no scope).
async fn explained_principal(
    state: &AppState,
    caller: &Principal,
    described: Option<ExplainPrincipal>,
) -> ApiResult<Principal> {
    let Some(p) = described else {
        return Ok(caller.clone());
    };
    validate_tags(&p.tags)?;
    let described = match (p.api_key, p.role, p.user) {
        (Some(key_id), None, None) => state
            .store
            .hypothetical_key(caller, &key_id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("api key {key_id} not found")))?,
        (None, Some(role), None) => caller
            .hypothetical_session(&parse_name("role name", &role)?, p.tags)
            .ok_or(ApiError::AccessDenied)?,
        (None, None, Some(subject)) => caller
            .hypothetical_user(&subject, p.tags)
            .ok_or(ApiError::AccessDenied)?,
        _ => {
            return Err(ApiError::Validation(
                "principal must name exactly one of api_key, role and user".into(),
            ))
        }
    };
    Ok(described)
}

/// A resource named by its fief resource name, or a bare model reference.
fn parse_resource(raw: &str, caller: &TenantId) -> ApiResult<Resource> {
    let bad = || {
        ApiError::Validation(format!(
            "unknown resource `{raw}`: expected frn:fief:(model|role|policy):<tenant>/<name>, frn:fief:(tenant|endpoint):<tenant>, frn:fief:endpoint:shared or a model name"
        ))
    };
    if let Some(rest) = raw.strip_prefix("frn:fief:") {
        let (kind, id) = rest.split_once(':').ok_or_else(bad)?;
        return Ok(match kind {
            "model" => Resource::Model(ModelRef::parse(raw, caller)?),
            "role" => Resource::Role(RoleRef::parse(raw, caller)?),
            "tenant" => Resource::Tenant(TenantId::parse(id)?),
            "endpoint" if id == "shared" => Resource::SharedEndpoint,
            "endpoint" => Resource::Endpoint(TenantId::parse(id)?),
            "policy" => {
                let (t, name) = id.split_once('/').ok_or_else(bad)?;
                Resource::Policy {
                    tenant: TenantId::parse(t)?,
                    id: parse_name("policy id", name)?,
                }
            }
            _ => return Err(bad()),
        });
    }
    Ok(Resource::Model(ModelRef::parse(raw, caller)?))
}
