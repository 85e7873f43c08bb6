//! Shared application state and the authorisation gate every data-plane and
//! admin operation passes through.

use std::sync::Arc;

use fief_audit::{Decision as AuditDecision, Event, Kind};
use fief_config::Config;
use fief_core::{Incarnation, TenantId};
use fief_policy::{
    Action, CompiledTenant, PolicyEngine, Resource, ResourceAttrs, RoleDocument, TenantDocuments,
};
use fief_serving::ModelCache;
use fief_store::{Decision, Principal, Store, TenantScope};

use crate::error::{ApiError, ApiResult};
use crate::request_id;

pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub policy: PolicyEngine,
    /// The audit log: files here, or the chain in PostgreSQL.
    pub audit: Arc<crate::audit::Audit>,
    pub cache: ModelCache,
    pub metrics: crate::metrics::Metrics,
    pub placement: crate::placement::Placement,
    pub knowledge: fief_knowledge::Knowledge,
    /// In-flight requests per tenant incarnation (the offboarding fence).
    pub activity: crate::fence::Activity,
    /// Refused credentials, audited once per window.
    pub auth_failures: crate::authfail::AuthFailures,
    /// Foundation-model upstreams (empty when none are configured).
    pub llm: fief_llm::Llm,
    /// Quotas, rate limits, budgets and the shared pool's fair queue.
    pub quota: crate::quota::QuotaGate,
    /// Usage events (the group writer) and prices.
    pub meter: crate::meter::Meter,
    /// Private invocation logs (the group writer, settings, sinks).
    pub logs: crate::logs::Logbook,
    /// How far this replica has applied the change log (PostgreSQL).
    pub coherence: crate::coherence::Coherence,
    /// verify-isolation runs from the admin API, and the last report.
    pub checks: crate::verify::Checks,
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
        self.audit_decision(principal, action.name(), resource, &decision)
            .await?;
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
        let policies = match (principal.tenant(), principal.incarnation()) {
            (Some(tenant), Some(incarnation)) => {
                Some(self.ensure_policies(tenant, incarnation).await?)
            }
            _ => None,
        };
        let attrs = match attrs {
            Some(a) => a,
            None => {
                self.resource_attrs(principal, policies.as_deref(), resource)
                    .await?
            }
        };
        Ok(fief_store::decide(
            &self.policy,
            policies.as_deref(),
            principal,
            action,
            resource,
            &attrs,
        ))
    }

    /// Compiles and caches a tenant incarnation's policies if they are not
    /// loaded. A failure here fails the request closed (invariant 9); a
    /// tenant that is gone is reported as such, so a caller can answer it
    /// like any other absent tenant.
    pub async fn ensure_policies(
        &self,
        tenant: &TenantId,
        incarnation: &Incarnation,
    ) -> ApiResult<Arc<CompiledTenant>> {
        if let Some(compiled) = self.policy.loaded(tenant, incarnation) {
            return Ok(compiled);
        }
        let generation = self.policy.generation(tenant);
        let stored = self
            .store
            .policy_documents(tenant, incarnation)
            .await
            .map_err(|e| unavailable("policies cannot be loaded", e))?;
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
        Ok(self
            .policy
            .install(tenant, incarnation, generation, compiled))
    }

    /// Tags of the principal's own resource, read only when the tenant has
    /// written policies that could use them. Another tenant's resource is
    /// never looked up: the guardrail decides it from its address alone.
    async fn resource_attrs(
        &self,
        principal: &Principal,
        policies: Option<&CompiledTenant>,
        resource: &Resource,
    ) -> ApiResult<ResourceAttrs> {
        if let Resource::FoundationModel { name, .. } = resource {
            // Platform resources: their tags are config, the same for every tenant.
            let tags = self
                .llm
                .catalog
                .resolve(name)
                .map(|m| self.llm.catalog.model(m).tags.clone())
                .unwrap_or_default();
            return Ok(ResourceAttrs { tags });
        }
        let Resource::Model(model) = resource else {
            return Ok(ResourceAttrs::default());
        };
        let wrote_any = policies.is_some_and(CompiledTenant::has_documents);
        if principal.tenant() != Some(&model.owner) || !wrote_any {
            return Ok(ResourceAttrs::default());
        }
        let tags = self
            .store
            .own_model_tags(principal, model)
            .await
            .map_err(|e| unavailable("resource tags cannot be read", e))?;
        Ok(ResourceAttrs { tags })
    }

    /// Records one decision made here.
    pub async fn audit_decision(
        &self,
        principal: &Principal,
        action: &str,
        resource: &Resource,
        decision: &Decision,
    ) -> ApiResult<()> {
        self.audit_outcome(
            principal,
            action,
            resource,
            decision.allowed,
            &decision.policies,
            &decision.reason,
        )
        .await
    }

    /// Records one verdict of the trust-policy path.
    pub async fn audit_verdict(
        &self,
        principal: &Principal,
        action: &str,
        resource: &Resource,
        verdict: &fief_policy::Verdict,
    ) -> ApiResult<()> {
        self.audit_outcome(
            principal,
            action,
            resource,
            verdict.allowed,
            &verdict.policies,
            &verdict.reason,
        )
        .await
    }

    async fn audit_outcome(
        &self,
        principal: &Principal,
        action: &str,
        resource: &Resource,
        allowed: bool,
        policies: &[String],
        reason: &Option<String>,
    ) -> ApiResult<()> {
        let verdict = if allowed {
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
            policies.to_vec(),
            reason.clone(),
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            tracing::error!("audit append failed: {e}");
            ApiError::Unavailable("the audit log is unavailable; no decision can be made".into())
        })
    }

    /// Records a credential refused because of the listener it came in on.
    pub async fn audit_network_deny(&self, principal: &Principal) -> ApiResult<()> {
        self.record(
            Kind::Authz,
            principal,
            "Connect",
            "frn:fief:listener".to_owned(),
            AuditDecision::Deny,
            vec!["network-island".to_owned()],
            Some("this listener does not serve the tenant".to_owned()),
        )
        .await
        .map(|_| ())
        .map_err(|_| ApiError::Unavailable("the audit log is unavailable".into()))
    }

    /// Records a change after it happened: by the operator (admin plane) or
    /// by a tenant principal (its policies, roles and sessions).
    pub async fn audit_change(
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
        .await
        .map(|_| ())
        .map_err(|e| ApiError::Internal(format!("audit append failed after a change: {e}")))
    }

    /// Records what an allowed foundation-model call consumed (counts and
    /// names only). A failure is the caller's to report.
    pub async fn audit_usage(&self, usage: &fief_llm::Usage) -> ApiResult<()> {
        let record = serde_json::to_value(usage)
            .map_err(|e| ApiError::Internal(format!("usage record: {e}")))?;
        self.audit
            .append(Event {
                kind: Kind::Usage,
                request_id: usage.request_id.clone(),
                principal: usage.principal.clone(),
                tenant: Some(usage.tenant.clone()),
                incarnation: Some(usage.incarnation.clone()),
                action: Action::InvokeFoundationModel.name().to_owned(),
                resource: format!("frn:fief:foundation-model:{}", usage.model),
                decision: AuditDecision::Allow,
                policies: Vec::new(),
                reason: None,
                source: usage.source.clone(),
                usage: Some(record),
            })
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::error!("audit append failed: {e}");
                ApiError::Unavailable("the audit log is unavailable".into())
            })
    }

    /// Appends one audit event for `principal` in the current request.
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        kind: Kind,
        principal: &Principal,
        action: &str,
        resource: String,
        decision: AuditDecision,
        policies: Vec<String>,
        reason: Option<String>,
    ) -> Result<u64, fief_audit::AuditError> {
        self.audit
            .append(Event {
                kind,
                request_id: request_id::current(),
                principal: principal.audit_name(),
                tenant: principal.tenant().map(ToString::to_string),
                incarnation: principal.incarnation().map(ToString::to_string),
                action: action.to_owned(),
                resource,
                decision,
                policies,
                reason,
                source: principal.source(),
                usage: None,
            })
            .await
    }

    /// Records the session an assume-role issued, as that session (so the
    /// role's tenant sees who assumed its role).
    pub async fn audit_session_issued(
        &self,
        claims: &fief_identity::SessionClaims,
        resource: &Resource,
        detail: String,
    ) -> ApiResult<()> {
        self.audit
            .append(Event {
                kind: Kind::Authz,
                request_id: request_id::current(),
                principal: format!(
                    "session:{}/{}/{}",
                    claims.tenant, claims.role, claims.session_name
                ),
                tenant: Some(claims.tenant.clone()),
                incarnation: Some(claims.tenant_incarnation.clone()),
                action: Action::AssumeRole.name().to_owned(),
                resource: resource.frn(),
                decision: AuditDecision::Allow,
                policies: Vec::new(),
                reason: Some(detail),
                source: Some(format!(
                    "{} ({})",
                    claims.source_principal, claims.source_tenant
                )),
                usage: None,
            })
            .await
            .map(|_| ())
            .map_err(|e| ApiError::Internal(format!("audit append failed after a change: {e}")))
    }

    /// Records what start-up did to the audit log itself (a repair).
    pub async fn audit_start_up(&self, detail: String) -> Result<(), fief_audit::AuditError> {
        self.audit
            .append(Event {
                kind: Kind::Admin,
                request_id: "start-up".into(),
                principal: "fief".into(),
                tenant: None,
                incarnation: None,
                action: "OpenAuditLog".into(),
                resource: "frn:fief:platform".into(),
                decision: AuditDecision::Allow,
                policies: Vec::new(),
                reason: Some(detail),
                source: None,
                usage: None,
            })
            .await
            .map(|_| ())
    }

    /// Writes the window's refused credentials to the audit log, one entry
    /// per (listener, credential kind, source). Called once per window.
    pub async fn flush_auth_failures(&self) {
        let window = self.config.audit.auth_failure_window_secs;
        for (key, count) in self.auth_failures.take() {
            let appended = self
                .audit
                .append(Event {
                    kind: Kind::Authn,
                    request_id: "none".into(),
                    principal: format!("anonymous:{}", key.kind.as_str()),
                    tenant: None,
                    incarnation: None,
                    action: "Authenticate".into(),
                    resource: format!("frn:fief:listener:{}", key.listener),
                    decision: AuditDecision::Deny,
                    policies: Vec::new(),
                    reason: Some(format!(
                        "{} refused {} credential(s) from {} in {window}s; last: {}",
                        count.refused,
                        key.kind.as_str(),
                        key.source,
                        count.reason
                    )),
                    source: Some(key.source),
                    usage: None,
                })
                .await;
            if let Err(e) = appended {
                tracing::error!("audit append of refused credentials failed: {e}");
            }
        }
    }
}

/// A store failure while deciding fails the request closed (503), except
/// that a tenant gone since authentication is answered like any credential
/// of a tenant that no longer exists.
fn unavailable(what: &str, e: fief_store::StoreError) -> ApiError {
    match e {
        fief_store::StoreError::TenantGone(_) => ApiError::from(e),
        e => ApiError::Unavailable(format!("{what}: {e}")),
    }
}
