//! Authentication (invariant 1): the tenant comes only from a verified
//! credential. Extractors for the two planes; each accepts only its own kind
//! of credential.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use fief_policy::Principal;

use crate::error::ApiError;
use crate::island::Listener;
use crate::state::SharedState;

/// The bearer token, if the request carries exactly one well-formed one.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(ApiError::Unauthenticated(
        "missing Authorization: Bearer credential",
    ))?;
    if values.next().is_some() {
        return Err(ApiError::Unauthenticated(
            "more than one Authorization header",
        ));
    }
    let text = value
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("malformed Authorization header"))?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthenticated(
            "malformed Authorization header: expected `Bearer <credential>`",
        ))?;
    Ok(token)
}

/// A tenant principal on the data plane.
pub struct TenantCaller(pub Principal);

impl FromRequestParts<SharedState> for TenantCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        let key = state
            .store
            .authenticate_api_key(token)
            .await
            .map_err(|e| ApiError::Unavailable(format!("credential check failed: {e}")))?
            .ok_or(ApiError::Unauthenticated(
                "invalid, revoked or unknown credential",
            ))?;
        let principal = Principal::ApiKey {
            key_id: key.id,
            tenant: key.tenant_id,
        };
        // Network placement: a tenant is served only on listeners that admit it.
        let listener = parts
            .extensions
            .get::<Listener>()
            .cloned()
            .unwrap_or(Listener::Shared);
        if let Some(tenant) = principal.tenant() {
            if !listener.admits(tenant, &state.config) {
                state.audit_network_deny(&principal)?;
                return Err(ApiError::AccessDenied);
            }
        }
        Ok(TenantCaller(principal))
    }
}

/// The operator on the admin plane.
pub struct Operator;

impl FromRequestParts<SharedState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        if bool::from(token.as_bytes().ct_eq(state.admin_token.as_bytes())) {
            Ok(Operator)
        } else {
            Err(ApiError::Unauthenticated("invalid admin token"))
        }
    }
}
