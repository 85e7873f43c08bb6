//! Shared application state and the authorisation gate every data-plane and
//! admin operation passes through.

use std::sync::Arc;

use fief_audit::{AuditLog, Decision as AuditDecision, Event, Kind};
use fief_config::Config;
use fief_policy::{Action, Decision, PolicyEngine, Principal, Resource, TenantScope};
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
}

pub type SharedState = Arc<AppState>;

impl AppState {
    /// Decides and audits one request (invariants 2 and 8). A deny is
    /// `AccessDenied`; an audit write failure fails the request (invariant 9).
    pub fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
    ) -> ApiResult<Decision> {
        let decision = self.policy.authorize(principal, action, resource);
        let verdict = if decision.allowed {
            AuditDecision::Allow
        } else {
            AuditDecision::Deny
        };
        self.record(
            Kind::Authz,
            principal,
            action.name(),
            resource.frn(),
            verdict,
            decision.policies.clone(),
            decision.reason.clone(),
        )
        .map_err(|e| {
            tracing::error!("audit append failed: {e}");
            ApiError::Unavailable("the audit log is unavailable; no decision can be made".into())
        })?;
        if decision.allowed {
            Ok(decision)
        } else {
            Err(ApiError::AccessDenied)
        }
    }

    /// Like [`authorize`](Self::authorize), for operations on tenant data: the
    /// allow must carry a tenant scope.
    pub fn authorize_scoped(
        &self,
        principal: &Principal,
        action: Action,
        resource: &Resource,
    ) -> ApiResult<TenantScope> {
        self.authorize(principal, action, resource)?
            .into_scope()
            .ok_or_else(|| {
                ApiError::Internal(format!(
                    "{} was allowed without a tenant scope",
                    action.name()
                ))
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

    /// Records an admin change after it happened.
    pub fn audit_admin(
        &self,
        action: Action,
        resource: &Resource,
        detail: String,
    ) -> ApiResult<()> {
        self.record(
            Kind::Admin,
            &Principal::Operator,
            action.name(),
            resource.frn(),
            AuditDecision::Allow,
            Vec::new(),
            Some(detail),
        )
        .map(|_| ())
        .map_err(|e| ApiError::Internal(format!("audit append failed after an admin change: {e}")))
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
        })
    }
}
