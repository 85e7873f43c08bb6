//! Authentication (invariant 1): the tenant comes only from a verified
//! credential. Extractors for the two planes; each accepts only its own kind
//! of credential.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use fief_core::TenantId;
use fief_identity::{looks_like_jwt, token_kid, TokenError, SIGNING_KID_PREFIX};
use fief_policy::{Principal, Session};
use fief_store::{TenantStatus, KEY_PREFIX};

use crate::error::{ApiError, ApiResult};
use crate::island::Listener;
use crate::state::{AppState, SharedState};

/// The bearer token, if the request carries exactly one well-formed one.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or_else(|| {
        ApiError::Unauthenticated("missing Authorization: Bearer credential".into())
    })?;
    if values.next().is_some() {
        return Err(ApiError::Unauthenticated(
            "more than one Authorization header".into(),
        ));
    }
    let text = value
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("malformed Authorization header".into()))?;
    let token = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthenticated(
                "malformed Authorization header: expected `Bearer <credential>`".into(),
            )
        })?;
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
        let principal = authenticate(state, token).await?;
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

/// Turns a bearer credential into a principal: an API key, a fief session
/// token, or an OIDC JWT. Every tenant it names must exist and be active.
async fn authenticate(state: &AppState, token: &str) -> ApiResult<Principal> {
    if token.starts_with(KEY_PREFIX) {
        let key = state
            .store
            .authenticate_api_key(token)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                ApiError::Unauthenticated("invalid, revoked or unknown credential".into())
            })?;
        return Ok(Principal::ApiKey {
            key_id: key.id,
            tenant: key.tenant_id,
            role: key.role,
        });
    }
    if !looks_like_jwt(token) {
        return Err(ApiError::Unauthenticated(
            "invalid, revoked or unknown credential".into(),
        ));
    }
    let invalid = |e: TokenError| ApiError::Unauthenticated(format!("invalid token: {e}"));
    let is_session = token_kid(token).is_some_and(|k| k.starts_with(SIGNING_KID_PREFIX));
    if is_session {
        let claims = state.sessions.verify(token).map_err(invalid)?;
        let tenant = active_tenant(state, &claims.tenant).await?;
        // The session ends with the tenant that assumed it, too.
        let source_tenant = active_tenant(state, &claims.source_tenant).await?;
        return Ok(Principal::Session(Session {
            tenant,
            role: claims.role,
            session_name: claims.session_name,
            tags: claims.tags,
            source_tenant,
            source_principal: claims.source_principal,
        }));
    }
    let oidc = state
        .oidc
        .as_ref()
        .ok_or_else(|| invalid(TokenError::OidcDisabled))?;
    let user = oidc.verify(token).await.map_err(invalid)?;
    let tenant = active_tenant(state, &user.tenant).await?;
    Ok(Principal::User {
        subject: user.subject,
        tenant,
        tags: user.tags,
    })
}

/// The store could not answer during authentication: fail closed (503).
fn unavailable(e: fief_store::StoreError) -> ApiError {
    ApiError::Unavailable(format!("credential check failed: {e}"))
}

/// The tenant a verified token names, if it exists and is active.
async fn active_tenant(state: &AppState, claimed: &str) -> ApiResult<TenantId> {
    let no_tenant =
        || ApiError::Unauthenticated("invalid token: its tenant claim names no tenant".into());
    let id = TenantId::parse(claimed).map_err(|_| no_tenant())?;
    let record = state.store.get_tenant(&id).await.map_err(unavailable)?;
    match record {
        Some(t) if t.status == TenantStatus::Active => Ok(id),
        _ => Err(no_tenant()),
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
            Err(ApiError::Unauthenticated("invalid admin token".into()))
        }
    }
}
