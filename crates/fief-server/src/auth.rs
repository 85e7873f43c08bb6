//! Authentication at the HTTP edge (invariant 1): the bearer credential
//! goes to `fief_store::Store::authenticate`, the only maker of tenant
//! principals. On the data plane a middleware does it once per request,
//! checks the listener admits the tenant, and holds the request's share of
//! the tenant incarnation's activity until the response is sent (the
//! offboarding fence, `fence.rs`). Refused credentials are counted for the
//! audit log (`authfail.rs`).

use std::net::SocketAddr;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use fief_store::{AuthnError, CredentialKind, Principal};

use crate::error::ApiError;
use crate::fence::Held;
use crate::island::Listener;
use crate::state::SharedState;

/// The client's address, set per connection by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The request's one `Authorization` value.
fn authorization(headers: &HeaderMap) -> Result<&str, ApiError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or_else(|| {
        ApiError::Unauthenticated("missing Authorization: Bearer credential".into())
    })?;
    if values.next().is_some() {
        return Err(ApiError::Unauthenticated(
            "more than one Authorization header".into(),
        ));
    }
    value
        .to_str()
        .map_err(|_| ApiError::Unauthenticated("malformed Authorization header".into()))
}

/// The bearer token, if the request carries exactly one well-formed one.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let text = authorization(headers)?;
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

fn peer(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    extensions.get::<Peer>().map(|p| p.0)
}

impl From<AuthnError> for ApiError {
    fn from(e: AuthnError) -> Self {
        match e {
            AuthnError::Refused(m) => ApiError::Unauthenticated(m),
            AuthnError::Unavailable(m) => {
                ApiError::Unavailable(format!("credential check failed: {m}"))
            }
        }
    }
}

/// The data plane's authentication layer (on every route but health).
pub async fn tenant_layer(
    State(state): State<SharedState>,
    mut req: Request,
    next: Next,
) -> Response {
    let listener = req
        .extensions()
        .get::<Listener>()
        .cloned()
        .unwrap_or(Listener::Shared);
    let source = peer(req.extensions());
    let plane = listener.name();
    let (kind, authenticated) = if signed_with_sigv4(req.headers()) {
        let (signed, result) = authenticate_signed(&state, req).await;
        req = signed;
        (CredentialKind::AwsSignature, result)
    } else {
        authenticate(&state, req.headers()).await
    };
    let principal = match authenticated {
        Ok(p) => p,
        Err(e) => {
            if matches!(e, ApiError::Unauthenticated(_)) {
                state
                    .auth_failures
                    .record(plane, kind, source, &e.to_string());
            }
            return e.into_response();
        }
    };
    let (Some(tenant), Some(incarnation)) = (principal.tenant(), principal.incarnation()) else {
        return ApiError::AccessDenied.into_response();
    };
    // Network placement: a tenant is served only on listeners that admit it.
    if !listener.admits(tenant, &state.config) {
        return match state.audit_network_deny(&principal).await {
            Ok(()) => ApiError::AccessDenied.into_response(),
            Err(e) => e.into_response(),
        };
    }
    let Some(share) = state.activity.enter(tenant, incarnation).await else {
        let e = ApiError::Unauthenticated("invalid, revoked or unknown credential".into());
        state
            .auth_failures
            .record(plane, kind, source, &e.to_string());
        return e.into_response();
    };
    req.extensions_mut().insert(principal);
    next.run(req).await.map(|body| Held::body(body, share))
}

/// The principal of the request's bearer credential, with the kind of
/// credential it looked like (for auditing a refusal).
async fn authenticate(
    state: &SharedState,
    headers: &HeaderMap,
) -> (CredentialKind, Result<Principal, ApiError>) {
    let token = match bearer(headers) {
        Ok(t) => t,
        Err(e) => return (CredentialKind::Unrecognised, Err(e)),
    };
    let kind = CredentialKind::of(token);
    (
        kind,
        state.store.authenticate(token).await.map_err(Into::into),
    )
}

/// Whether the request claims AWS Signature V4 (then it must verify; it
/// never falls back to another credential form).
fn signed_with_sigv4(headers: &HeaderMap) -> bool {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(fief_sigv4::is_sigv4)
}

/// Checks a SigV4-signed request: the body is read (within the body limit)
/// for its hash, the signature rebuilt from the request as received, and the
/// request handed back with the same body for the handler.
async fn authenticate_signed(
    state: &SharedState,
    req: Request,
) -> (Request, Result<Principal, ApiError>) {
    use futures::StreamExt;
    let (parts, body) = req.into_parts();
    let limit = state.config.max_body_bytes;
    let mut bytes = Vec::new();
    let mut stream = body.into_data_stream();
    let mut read = Ok(());
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) if bytes.len() + c.len() > limit => {
                read = Err(ApiError::PayloadTooLarge(limit));
                break;
            }
            Ok(c) => bytes.extend_from_slice(&c),
            Err(e) => {
                read = Err(ApiError::Validation(format!(
                    "could not read the request body: {e}"
                )));
                break;
            }
        }
    }
    let result = match read {
        Ok(()) => verify_signed(state, &parts, &bytes).await,
        Err(e) => Err(e),
    };
    (
        Request::from_parts(parts, axum::body::Body::from(bytes)),
        result,
    )
}

async fn verify_signed(
    state: &SharedState,
    parts: &Parts,
    body: &[u8],
) -> Result<Principal, ApiError> {
    use sha2::{Digest, Sha256};
    let refused = |e: fief_sigv4::SigV4Error| {
        ApiError::Unauthenticated(format!("invalid AWS signature: {e}"))
    };
    let authorization = authorization(&parts.headers)?;
    if parts.headers.contains_key("x-amz-security-token") {
        return Err(ApiError::Unauthenticated(
            "invalid AWS signature: a security token is not accepted; sign with an API key's id and secret".into(),
        ));
    }
    let headers: Vec<(&str, &str)> = parts
        .headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect();
    let request = fief_sigv4::Request {
        method: parts.method.as_str(),
        raw_path: parts.uri.path(),
        raw_query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        body_sha256: Sha256::digest(body).into(),
    };
    let checked =
        fief_sigv4::check(&request, authorization, fief_sigv4::unix_now()).map_err(refused)?;
    Ok(state.store.authenticate_signed(&checked).await?)
}

/// A tenant principal on the data plane, authenticated by [`tenant_layer`].
pub struct TenantCaller(pub Principal);

impl FromRequestParts<SharedState> for TenantCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(TenantCaller)
            // Only a route without the layer gets here: never serve it.
            .ok_or_else(|| ApiError::Internal("route reached without authentication".into()))
    }
}

/// The operator on the admin plane.
pub struct Operator(pub Principal);

impl FromRequestParts<SharedState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let source = peer(&parts.extensions);
        let refused = |e: ApiError| {
            state
                .auth_failures
                .record("admin", CredentialKind::AdminToken, source, &e.to_string());
            e
        };
        let token = bearer(&parts.headers).map_err(refused)?;
        state
            .store
            .authenticate_operator(token)
            .map(Operator)
            .map_err(|e| refused(e.into()))
    }
}
