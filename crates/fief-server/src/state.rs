//! Shared application state and the authorisation gate every data-plane and
//! admin operation passes through.

use std::sync::Arc;

use fief_audit::{AuditLog, Decision as AuditDecision, Event, Kind};
use fief_config::Config;
use fief_core::TenantId;
use fief_identity::{OidcVerifier, SessionSigner};
use fief_policy::{
    Action, Decision, PolicyEngine, Principal, Resource, ResourceAttrs, RoleDocument,
    TenantDocuments, TenantScope,
};
use fief_serving::ModelCache;
use fief_store::Store;

use crate::error::{ApiError, ApiResult};
use crate::request_id;

pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub policy: PolicyEngine,
    pub audit: AuditLog,
    pub cache: ModelCache,
    pub metrics: crate::metrics::Metrics,
    pub placement: crate::placement::Placement,
    pub admin_token: String,
    pub oidc: Option<OidcVerifier>,
    pub sessions: SessionSigner,
    pub knowledge: fief_knowledge::Knowledge,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    /// Decides and audits one request (invariants 2 and 8). A deny is
    /// `AccessDenied`; an audit write failure fails the request (invariant 9).
    pub async fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
    ) -> ApiResult<Decision> {
        let decision = self.decide(principal, action, resource, None).await?;
        self.audit_decision(principal, action.name(), resource, &decision)?;
        if decision.allowed {
            Ok(decision)
        } else {
            Err(ApiError::AccessDenied)
        }
    }

    /// Like [`authorize`](Self::authorize), for operations on tenant data: the
    /// allow must carry a tenant scope.
    pub async fn authorize_scoped(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
    ) -> ApiResult<TenantScope> {
        self.authorize(principal, action, resource)
            .await?
            .into_scope()
            .ok_or_else(|| {
                ApiError::Internal(format!(
                    "{} was allowed without a tenant scope",
                    action.name()
                ))
            })
    }

    /// Decides without auditing or enforcing (for `policies/explain`).
    /// `attrs` overrides the resource's stored attributes.
    pub async fn decide(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
        attrs: Option<ResourceAttrs>,
    ) -> ApiResult<Decision> {
        if let Some(tenant) = principal.tenant() {
            self.ensure_policies(tenant).await?;
        }
        let attrs = match attrs {
            Some(a) => a,
            None => self.resource_attrs(principal, resource).await?,
        };
        Ok(self
            .policy
            .authorize_with(principal, action, resource, &attrs))
    }

    /// Compiles and caches a tenant's policies if they are not loaded. A
    /// failure here fails the request closed (invariant 9).
    pub async fn ensure_policies(&self, tenant: &TenantId) -> ApiResult<()> {
        if self.policy.is_loaded(tenant) {
            return Ok(());
        }
        let generation = self.policy.generation(tenant);
        let stored = self
            .store
            .policy_documents(tenant)
            .await
            .map_err(|e| ApiError::Unavailable(format!("policies cannot be loaded: {e}")))?;
        let docs = TenantDocuments {
            policies: stored
                .policies
                .into_iter()
                .map(|p| (p.id, p.policy))
                .collect(),
            roles: stored
                .roles
                .into_iter()
                .map(|r| RoleDocument {
                    name: r.name,
                    trust_policy: r.trust_policy,
                    policies: r.policies,
                    external_id: r.external_id,
                })
                .collect(),
        };
        let compiled = self.policy.compile_tenant(&docs).map_err(|e| {
            ApiError::Internal(format!(
                "stored policies of tenant {tenant} do not compile: {e}"
            ))
        })?;
        self.policy.install(tenant, generation, compiled);
        Ok(())
    }

    /// Tags of the principal's own resource, read only when the tenant has
    /// written policies that could use them. Another tenant's resource is
    /// never looked up: the guardrail decides it from its address alone.
    async fn resource_attrs(
        &self,
        principal: &Principal,
        resource: &Resource,
    ) -> ApiResult<ResourceAttrs> {
        let Resource::Model(model) = resource else {
            return Ok(ResourceAttrs::default());
        };
        let Some(scope) = self.policy.attribute_scope(principal) else {
            return Ok(ResourceAttrs::default());
        };
        if scope.tenant() != &model.owner || !self.policy.has_documents(scope.tenant()) {
            return Ok(ResourceAttrs::default());
        }
        let tags = self
            .store
            .get_model(&scope, &model.name)
            .await
            .map_err(|e| ApiError::Unavailable(format!("resource tags cannot be read: {e}")))?
            .map(|m| m.tags)
            .unwrap_or_default();
        Ok(ResourceAttrs { tags })
    }

    /// Records one decision (made here or by the trust-policy path).
    pub fn audit_decision(
        &self,
        principal: &Principal,
        action: &str,
        resource: &Resource,
        decision: &Decision,
    ) -> ApiResult<()> {
        let verdict = if decision.allowed {
            AuditDecision::Allow
        } else {
            AuditDecision::Deny
        };
        self.record(
            Kind::Authz,
            principal,
            action,
            resource.frn(),
            verdict,
            decision.policies.clone(),
            decision.reason.clone(),
        )
        .map(|_| ())
        .map_err(|e| {
            tracing::error!("audit append failed: {e}");
            ApiError::Unavailable("the audit log is unavailable; no decision can be made".into())
        })
    }

    /// Records a credential refused because of the listener it came in on.
    pub fn audit_network_deny(&self, principal: &Principal) -> ApiResult<()> {
        self.record(
            Kind::Authz,
            principal,
            "Connect",
            "frn:fief:listener".to_owned(),
            AuditDecision::Deny,
            vec!["network-island".to_owned()],
            Some("this listener does not serve the tenant".to_owned()),
        )
        .map(|_| ())
        .map_err(|_| ApiError::Unavailable("the audit log is unavailable".into()))
    }

    /// Records a change after it happened: by the operator (admin plane) or
    /// by a tenant principal (its policies, roles and sessions).
    pub fn audit_change(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
        detail: String,
    ) -> ApiResult<()> {
        let kind = if principal.tenant().is_some() {
            Kind::Authz
        } else {
            Kind::Admin
        };
        self.record(
            kind,
            principal,
            action.name(),
            resource.frn(),
            AuditDecision::Allow,
            Vec::new(),
            Some(detail),
        )
        .map(|_| ())
        .map_err(|e| ApiError::Internal(format!("audit append failed after a change: {e}")))
    }

    /// Records an admin change after it happened.
    pub fn audit_admin(
        &self,
        action: Action,
        resource: &Resource,
        detail: String,
    ) -> ApiResult<()> {
        self.audit_change(&Principal::Operator, action, resource, detail)
    }

    /// Appends one audit event for `principal` in the current request.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        kind: Kind,
        principal: &Principal,
        action: &str,
        resource: String,
        decision: AuditDecision,
        policies: Vec<String>,
        reason: Option<String>,
    ) -> Result<u64, fief_audit::AuditError> {
        self.audit.append(Event {
            kind,
            request_id: request_id::current(),
            principal: principal.audit_name(),
            tenant: principal.tenant().map(ToString::to_string),
            action: action.to_owned(),
            resource,
            decision,
            policies,
            reason,
            source: principal.source(),
        })
    }
}
