//! Authorisation (invariant 2) and the tenant scope capability (invariant 3).
//!
//! Every request is decided by Cedar against the platform policies in
//! `platform.cedar`, under the strict schema in `schema.cedarschema`. Entities
//! are built here from facts the caller got from the store (a key's tenant) and
//! from the resource's address; nothing from a request body or header reaches
//! a principal attribute. An evaluation error is a deny (invariant 9).
//!
//! [`TenantScope`] has no public constructor: the only way to get one is an
//! allowed decision from [`PolicyEngine::authorize`], and every storage accessor
//! for tenant data requires one.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Policy, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};

use fief_core::{ModelRef, TenantId};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("platform schema does not parse: {0}")]
    Schema(String),
    #[error("platform policy {id} does not parse: {message}")]
    Parse { id: String, message: String },
    #[error("platform policies do not validate against the schema: {0}")]
    Invalid(String),
}

const SCHEMA: &str = include_str!("schema.cedarschema");
const PLATFORM_POLICIES: &str = include_str!("platform.cedar");

/// The id of the cross-tenant guardrail, as it appears in audit entries.
pub const GUARDRAIL_ID: &str = "platform-guardrail";

/// Who is asking. Built by the authentication layer from a verified credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    ApiKey { key_id: String, tenant: TenantId },
    Operator,
}

impl Principal {
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Principal::ApiKey { tenant, .. } => Some(tenant),
            Principal::Operator => None,
        }
    }
    /// Stable text for audit entries.
    pub fn audit_name(&self) -> String {
        match self {
            Principal::ApiKey { key_id, .. } => format!("api-key:{key_id}"),
            Principal::Operator => "operator".into(),
        }
    }
}

/// What is being touched, as addressed by the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Tenant(TenantId),
    Model(ModelRef),
    Endpoint(TenantId),
    SharedEndpoint,
    Platform,
}

impl Resource {
    /// The tenant that owns this resource, if any.
    pub fn owner(&self) -> Option<&TenantId> {
        match self {
            Resource::Tenant(t) | Resource::Endpoint(t) => Some(t),
            Resource::Model(m) => Some(&m.owner),
            Resource::SharedEndpoint | Resource::Platform => None,
        }
    }
    /// Stable text for audit entries (a fief resource name).
    pub fn frn(&self) -> String {
        match self {
            Resource::Tenant(t) => format!("frn:fief:tenant:{t}"),
            Resource::Model(m) => m.frn(),
            Resource::Endpoint(t) => format!("frn:fief:endpoint:{t}"),
            Resource::SharedEndpoint => "frn:fief:endpoint:shared".into(),
            Resource::Platform => "frn:fief:platform".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    InvokeEndpoint,
    InvokeSharedEndpoint,
    InvokeModel,
    PutModel,
    GetModel,
    DeleteModel,
    ListModels,
    GetIdentity,
    CreateTenant,
    GetTenant,
    UpdateTenant,
    DeleteTenant,
    CreateApiKey,
    ListApiKeys,
    RevokeApiKey,
    ListTenants,
    ReadAudit,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::InvokeEndpoint => "InvokeEndpoint",
            Action::InvokeSharedEndpoint => "InvokeSharedEndpoint",
            Action::InvokeModel => "InvokeModel",
            Action::PutModel => "PutModel",
            Action::GetModel => "GetModel",
            Action::DeleteModel => "DeleteModel",
            Action::ListModels => "ListModels",
            Action::GetIdentity => "GetIdentity",
            Action::CreateTenant => "CreateTenant",
            Action::GetTenant => "GetTenant",
            Action::UpdateTenant => "UpdateTenant",
            Action::DeleteTenant => "DeleteTenant",
            Action::CreateApiKey => "CreateApiKey",
            Action::ListApiKeys => "ListApiKeys",
            Action::RevokeApiKey => "RevokeApiKey",
            Action::ListTenants => "ListTenants",
            Action::ReadAudit => "ReadAudit",
        }
    }
}

/// Proof that the authorisation layer allowed access to one tenant's data.
/// Its fields are private and it has no public constructor (invariant 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantScope {
    tenant: TenantId,
}

impl TenantScope {
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }
}

/// The result of one authorisation, allow or deny, with what decided it.
#[derive(Debug, Clone)]
pub struct Decision {
    pub allowed: bool,
    /// Ids of the policies that determined the decision.
    pub policies: Vec<String>,
    /// Why a deny happened when no policy names it (default deny, errors).
    pub reason: Option<String>,
    scope: Option<TenantScope>,
}

impl Decision {
    /// The tenant scope an allow grants. For a tenant principal it is the
    /// principal's own tenant, never the addressed one, so storage stays
    /// confined to the caller even if a policy were wrong.
    pub fn scope(&self) -> Option<&TenantScope> {
        self.scope.as_ref()
    }
    pub fn into_scope(self) -> Option<TenantScope> {
        self.scope
    }
}

pub struct PolicyEngine {
    schema: Schema,
    policies: PolicySet,
    authorizer: Authorizer,
}

impl PolicyEngine {
    /// Parses the schema and the platform policies and validates them strictly;
    /// start-up fails if they do not.
    pub fn new() -> Result<Self, PolicyError> {
        let (schema, _warnings) =
            Schema::from_cedarschema_str(SCHEMA).map_err(|e| PolicyError::Schema(e.to_string()))?;
        let mut policies = PolicySet::new();
        for block in policy_blocks(PLATFORM_POLICIES) {
            let id = block
                .lines()
                .find_map(|l| l.trim().strip_prefix("// id:"))
                .map(str::trim)
                .ok_or_else(|| PolicyError::Parse {
                    id: "?".into(),
                    message: "missing `// id:` line".into(),
                })?;
            let policy =
                Policy::parse(Some(PolicyId::new(id)), &block).map_err(|e| PolicyError::Parse {
                    id: id.into(),
                    message: e.to_string(),
                })?;
            policies.add(policy).map_err(|e| PolicyError::Parse {
                id: id.into(),
                message: e.to_string(),
            })?;
        }
        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !result.validation_passed() {
            let errors: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
            return Err(PolicyError::Invalid(errors.join("; ")));
        }
        Ok(Self {
            schema,
            policies,
            authorizer: Authorizer::new(),
        })
    }

    /// Decides one request. Never errors: anything that goes wrong while
    /// building or evaluating the request is a deny with a reason.
    pub fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
    ) -> Decision {
        match self.evaluate(principal, action, resource) {
            Ok((true, policies)) => {
                let scope = match (principal, action) {
                    (Principal::ApiKey { tenant, .. }, _) => Some(tenant.clone()),
                    // Offboarding is the one operator action that needs the
                    // tenant's data (to destroy it).
                    (Principal::Operator, Action::DeleteTenant) => resource.owner().cloned(),
                    (Principal::Operator, _) => None,
                };
                Decision {
                    allowed: true,
                    policies,
                    reason: None,
                    scope: scope.map(|tenant| TenantScope { tenant }),
                }
            }
            Ok((false, policies)) => {
                let reason = policies
                    .is_empty()
                    .then(|| "no policy permits this request".to_owned());
                Decision {
                    allowed: false,
                    policies,
                    reason,
                    scope: None,
                }
            }
            Err(reason) => Decision {
                allowed: false,
                policies: Vec::new(),
                reason: Some(reason),
                scope: None,
            },
        }
    }

    fn evaluate(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
    ) -> Result<(bool, Vec<String>), String> {
        let mut entities = Vec::new();
        let principal_uid = match principal {
            Principal::ApiKey { key_id, tenant } => {
                let tenant_uid = tenant_entity(tenant, &mut entities)?;
                let uid = uid("ApiKey", key_id)?;
                entities.push(entity(uid.clone(), [("tenant", tenant_uid)])?);
                uid
            }
            Principal::Operator => {
                let uid = uid("Operator", "operator")?;
                entities.push(Entity::new_no_attrs(uid.clone(), HashSet::new()));
                uid
            }
        };
        let resource_uid = match resource {
            Resource::Tenant(t) => tenant_entity(t, &mut entities)?,
            Resource::Model(m) => {
                let owner = tenant_entity(&m.owner, &mut entities)?;
                let uid = uid("Model", &format!("{}/{}", m.owner, m.name))?;
                entities.push(entity(uid.clone(), [("tenant", owner)])?);
                uid
            }
            Resource::Endpoint(t) => {
                let owner = tenant_entity(t, &mut entities)?;
                let uid = uid("Endpoint", t.as_str())?;
                entities.push(entity(uid.clone(), [("tenant", owner)])?);
                uid
            }
            Resource::SharedEndpoint => no_attrs("SharedEndpoint", "shared", &mut entities)?,
            Resource::Platform => no_attrs("Platform", "platform", &mut entities)?,
        };
        let action_uid = uid("Action", action.name())?;
        let request = Request::new(
            principal_uid,
            action_uid,
            resource_uid,
            Context::empty(),
            Some(&self.schema),
        )
        .map_err(|e| format!("request does not fit the schema: {e}"))?;
        let entities = Entities::from_entities(entities, Some(&self.schema))
            .map_err(|e| format!("entities do not fit the schema: {e}"))?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.policies, &entities);
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
        if !errors.is_empty() {
            // A policy that errs is skipped by Cedar; a skipped forbid could
            // turn into an allow, so any error denies.
            return Err(format!("policy evaluation error: {}", errors.join("; ")));
        }
        let policies = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        Ok((
            response.decision() == cedar_policy::Decision::Allow,
            policies,
        ))
    }
}

/// Splits the platform file at lines that hold only `// ---`.
fn policy_blocks(text: &str) -> Vec<String> {
    let mut blocks = vec![String::new()];
    for line in text.lines() {
        if line.trim() == "// ---" {
            blocks.push(String::new());
        } else if let Some(last) = blocks.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    blocks
}

fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    let name = EntityTypeName::from_str(&format!("Fief::{ty}")).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(name, EntityId::new(id)))
}

fn entity<const N: usize>(uid: EntityUid, attrs: [(&str, EntityUid); N]) -> Result<Entity, String> {
    let attrs: HashMap<String, RestrictedExpression> = attrs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), RestrictedExpression::new_entity_uid(v)))
        .collect();
    Entity::new(uid, attrs, HashSet::new()).map_err(|e| e.to_string())
}

fn no_attrs(ty: &str, id: &str, entities: &mut Vec<Entity>) -> Result<EntityUid, String> {
    let uid = uid(ty, id)?;
    entities.push(Entity::new_no_attrs(uid.clone(), HashSet::new()));
    Ok(uid)
}

/// Adds the tenant's entity once (a tenant's `tenant` is itself).
fn tenant_entity(t: &TenantId, entities: &mut Vec<Entity>) -> Result<EntityUid, String> {
    let uid = uid("Tenant", t.as_str())?;
    if !entities.iter().any(|e| e.uid() == uid) {
        entities.push(entity(uid.clone(), [("tenant", uid.clone())])?);
    }
    Ok(uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fief_core::ModelName;

    fn t(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }
    fn key(tenant: &str) -> Principal {
        Principal::ApiKey {
            key_id: format!("k-{tenant}"),
            tenant: t(tenant),
        }
    }
    fn model(owner: &str) -> Resource {
        Resource::Model(ModelRef {
            owner: t(owner),
            name: ModelName::parse("m").unwrap(),
        })
    }

    #[test]
    fn own_resources_are_allowed_with_scope_of_the_caller() {
        let engine = PolicyEngine::new().unwrap();
        for (action, resource) in [
            (Action::InvokeModel, model("aa")),
            (Action::PutModel, model("aa")),
            (Action::ListModels, Resource::Tenant(t("aa"))),
            (Action::InvokeEndpoint, Resource::Endpoint(t("aa"))),
            (Action::InvokeSharedEndpoint, Resource::SharedEndpoint),
        ] {
            let d = engine.authorize(&key("aa"), action, &resource);
            assert!(d.allowed, "{action:?}: {:?}", d.reason);
            assert_eq!(d.scope().unwrap().tenant(), &t("aa"));
        }
    }

    #[test]
    fn cross_tenant_is_denied_by_the_guardrail() {
        let engine = PolicyEngine::new().unwrap();
        for (action, resource) in [
            (Action::InvokeModel, model("bb")),
            (Action::GetModel, model("bb")),
            (Action::DeleteModel, model("bb")),
            (Action::ListModels, Resource::Tenant(t("bb"))),
            (Action::InvokeEndpoint, Resource::Endpoint(t("bb"))),
        ] {
            let d = engine.authorize(&key("aa"), action, &resource);
            assert!(!d.allowed && d.scope().is_none(), "{action:?}");
            assert_eq!(d.policies, vec![GUARDRAIL_ID.to_owned()]);
        }
    }

    #[test]
    fn planes_are_separate() {
        let engine = PolicyEngine::new().unwrap();
        // The operator has no data-plane action; a tenant key no admin action.
        let d = engine.authorize(&Principal::Operator, Action::InvokeModel, &model("aa"));
        assert!(!d.allowed && d.reason.unwrap().contains("schema"));
        let d = engine.authorize(&key("aa"), Action::DeleteTenant, &Resource::Tenant(t("aa")));
        assert!(!d.allowed);
        let d = engine.authorize(
            &Principal::Operator,
            Action::DeleteTenant,
            &Resource::Tenant(t("bb")),
        );
        assert!(d.allowed);
        assert_eq!(d.scope().unwrap().tenant(), &t("bb"));
        let d = engine.authorize(
            &Principal::Operator,
            Action::ListTenants,
            &Resource::Platform,
        );
        assert!(d.allowed && d.scope().is_none());
        // A type mismatch in the request is a deny, not an error path that allows.
        let d = engine.authorize(&key("aa"), Action::InvokeModel, &Resource::Tenant(t("aa")));
        assert!(!d.allowed);
    }

    /// Cedar skips a policy whose evaluation errs; for a forbid that would
    /// turn into an allow. The engine must deny instead (invariant 9).
    #[test]
    fn an_evaluation_error_is_a_deny() {
        let mut engine = PolicyEngine::new().unwrap();
        let own = model("aa");
        assert!(
            engine
                .authorize(&key("aa"), Action::InvokeModel, &own)
                .allowed
        );
        let erroring = Policy::parse(
            Some(PolicyId::new("erroring-forbid")),
            "forbid (principal, action, resource) when { 9223372036854775807 + 1 > 0 };",
        )
        .unwrap();
        engine.policies.add(erroring).unwrap();
        let d = engine.authorize(&key("aa"), Action::InvokeModel, &own);
        assert!(!d.allowed && d.scope().is_none());
        assert!(d.reason.unwrap().contains("evaluation error"));
    }
}
