//! The gate (invariant 3): the only place a [`TenantScope`] is made. A
//! decision is evaluated by the policy engine on the facts of an
//! authenticated [`Principal`]; an allow for a tenant principal grants a
//! scope of that principal's own tenant incarnation (never the addressed
//! one), and every tenant-data accessor of the store requires one.
//!
//! Outside this crate a scope cannot be built by hand:
//!
//! ```compile_fail,E0451
//! let tenant = fief_core::TenantId::parse("aa").unwrap();
//! let incarnation = fief_core::Incarnation::from_random([0; 16]);
//! let scope = fief_store::TenantScope { tenant, incarnation };
//! ```
//!
//! ```compile_fail,E0599
//! let tenant = fief_core::TenantId::parse("aa").unwrap();
//! let scope = fief_store::TenantScope::new(tenant);
//! ```
//!
//! nor can a decision that carries one:
//!
//! ```compile_fail,E0451
//! let d = fief_store::Decision { allowed: true, policies: vec![], reason: None, grant: todo!() };
//! ```
//!
//! The one legitimate path compiles: authenticate a credential, decide.
//!
//! ```no_run
//! # async fn f(store: &fief_store::Store, engine: &fief_policy::PolicyEngine, token: &str) {
//! let principal = store.authenticate(token).await.unwrap();
//! let tenant = principal.tenant().unwrap().clone();
//! let decision = fief_store::decide(
//!     engine,
//!     engine.loaded(&tenant, principal.incarnation().unwrap()).as_deref(),
//!     &principal,
//!     fief_policy::Action::ListModels,
//!     &fief_policy::Resource::Tenant(tenant),
//!     &fief_policy::ResourceAttrs::default(),
//! );
//! let scope: Option<fief_store::TenantScope> = decision.into_scope();
//! # }
//! ```

use fief_core::{Incarnation, RoleRef, Tags, TenantId};
use fief_policy::{
    Action, AssumeRoleVerdict, CompiledTenant, PolicyEngine, Resource, ResourceAttrs,
};

use crate::Principal;

/// Proof that the gate allowed access to one tenant incarnation's data.
/// Its fields are private and it has no public constructor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantScope {
    tenant: TenantId,
    incarnation: Incarnation,
}

impl TenantScope {
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }
    pub fn incarnation(&self) -> &Incarnation {
        &self.incarnation
    }

    /// The store's own access to one incarnation's content, for work that
    /// has no request (start-up upgrades, offboarding).
    pub(crate) fn internal(tenant: TenantId, incarnation: Incarnation) -> Self {
        Self {
            tenant,
            incarnation,
        }
    }
}

/// The operator's allowed `DeleteTenant`: it lets the store destroy one
/// tenant's data, and read none of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffboardScope {
    tenant: TenantId,
}

impl OffboardScope {
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Grant {
    None,
    Tenant(TenantScope),
    Offboard(TenantId),
}

/// One decision, allow or deny, with what decided it and what it grants.
#[derive(Debug, Clone)]
pub struct Decision {
    pub allowed: bool,
    /// Ids of the policies that determined the decision.
    pub policies: Vec<String>,
    /// Why a deny happened when no policy names it (default deny, errors).
    pub reason: Option<String>,
    grant: Grant,
}

impl Decision {
    /// The tenant scope an allow grants: the principal's own tenant.
    pub fn scope(&self) -> Option<&TenantScope> {
        match &self.grant {
            Grant::Tenant(s) => Some(s),
            _ => None,
        }
    }
    pub fn into_scope(self) -> Option<TenantScope> {
        match self.grant {
            Grant::Tenant(s) => Some(s),
            _ => None,
        }
    }
    /// What the operator's allowed `DeleteTenant` grants.
    pub fn into_offboard(self) -> Option<OffboardScope> {
        match self.grant {
            Grant::Offboard(tenant) => Some(OffboardScope { tenant }),
            _ => None,
        }
    }
}

/// Decides one request for an authenticated principal, with its tenant's
/// compiled policies (`None` for the operator; for a tenant principal a
/// deny). Never errors: the engine turns every failure into a deny.
pub fn decide(
    engine: &PolicyEngine,
    policies: Option<&CompiledTenant>,
    principal: &Principal,
    action: Action,
    resource: &Resource,
    attrs: &ResourceAttrs,
) -> Decision {
    let verdict = engine.authorize_in(policies, principal.facts(), action, resource, attrs);
    let grant = if !verdict.allowed || principal.is_hypothetical() {
        Grant::None
    } else if principal.is_operator() {
        // Offboarding is the one operator action that needs a tenant's
        // data (to destroy it).
        match (action, resource) {
            (Action::DeleteTenant, Resource::Tenant(t)) => Grant::Offboard(t.clone()),
            _ => Grant::None,
        }
    } else {
        tenant_grant(principal, resource)
    };
    Decision {
        allowed: verdict.allowed,
        policies: verdict.policies,
        reason: verdict.reason,
        grant,
    }
}

/// A tenant principal's scope is its own tenant incarnation, whatever the
/// request addressed.
fn tenant_grant(principal: &Principal, resource: &Resource) -> Grant {
    let (Some(tenant), Some(incarnation)) = (principal.tenant(), principal.incarnation()) else {
        return Grant::None;
    };
    #[cfg(feature = "fault-injection")]
    if crate::faults::scope_from_address() {
        if let Some(owner) = resource.owner() {
            return Grant::Tenant(TenantScope::internal(owner.clone(), incarnation.clone()));
        }
    }
    let _ = resource;
    Grant::Tenant(TenantScope::internal(tenant.clone(), incarnation.clone()))
}

/// What an allowed assume-role lets the store issue: a session of `role`
/// for `tags`, assumed by `source`.
#[derive(Debug, Clone)]
pub struct SessionGrant {
    pub(crate) role: RoleRef,
    pub(crate) owner_incarnation: Incarnation,
    pub(crate) tags: Tags,
    pub(crate) source_tenant: TenantId,
    pub(crate) source_incarnation: Incarnation,
    pub(crate) source_principal: String,
}

impl SessionGrant {
    pub fn role(&self) -> &RoleRef {
        &self.role
    }
    pub fn tags(&self) -> &Tags {
        &self.tags
    }
}

/// The decision on an assume-role request and, on an allow, the grant.
#[derive(Debug, Clone)]
pub struct AssumeRoleDecision {
    pub verdict: AssumeRoleVerdict,
    grant: Option<SessionGrant>,
}

impl AssumeRoleDecision {
    pub fn into_grant(self) -> Option<SessionGrant> {
        self.grant
    }
}

/// Decides whether `principal` may assume `role` of the tenant incarnation
/// `owner`, whose compiled policies are `policies`, with session `tags`
/// (see `PolicyEngine::authorize_assume_role`).
pub fn decide_assume_role(
    engine: &PolicyEngine,
    policies: &CompiledTenant,
    principal: &Principal,
    role: &RoleRef,
    owner: &Incarnation,
    external_id: Option<&str>,
    tags: &Tags,
) -> AssumeRoleDecision {
    let verdict =
        engine.authorize_assume_role_in(Some(policies), principal.facts(), role, external_id, tags);
    let grant = match (principal.tenant(), principal.incarnation()) {
        (Some(tenant), Some(incarnation))
            if verdict.verdict.allowed && !principal.is_hypothetical() =>
        {
            Some(SessionGrant {
                role: role.clone(),
                owner_incarnation: owner.clone(),
                tags: tags.clone(),
                source_tenant: tenant.clone(),
                source_incarnation: incarnation.clone(),
                source_principal: principal.audit_name(),
            })
        }
        _ => None,
    };
    AssumeRoleDecision { verdict, grant }
}
