//! Identities beyond API keys (invariant 1): JWTs from an OIDC identity
//! provider and fief's own short-lived role-session tokens.
//!
//! Both are JWTs. Which verifier a token goes to is chosen by its header's
//! `kid` (fief signing keys are named `sts-…`); that choice is not a trust
//! decision, because each verifier accepts only signatures by its own keys
//! and only its own pinned algorithms, never the one the header asks for.

mod oidc;
mod session;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

pub use oidc::{parse_jwks, OidcVerifier, VerifiedUser};
pub use session::{SessionClaims, SessionSigner, SessionSubject, SIGNING_KID_PREFIX};

/// Why a token was refused; each message is specific, and none reveals key
/// material or anything about tenants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("unsigned tokens (alg \"none\") are not accepted")]
    AlgorithmNone,
    #[error("token algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    #[error("token signed by an unknown key (kid {0})")]
    UnknownKey(String),
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("token issuer is not the configured issuer")]
    WrongIssuer,
    #[error("token audience does not include this gateway")]
    WrongAudience,
    #[error("token has no `{0}` claim")]
    MissingClaim(String),
    #[error("token claim `{0}` is invalid: {1}")]
    InvalidClaim(String, String),
    #[error("JWT bearer tokens are not enabled on this gateway")]
    OidcDisabled,
    #[error("the identity provider's keys are unavailable: {0}")]
    KeysUnavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("JWKS {source_name}: {message}")]
    Jwks {
        source_name: String,
        message: String,
    },
    #[error("signing key: {0}")]
    SigningKey(String),
    #[error("cannot sign a session token: {0}")]
    Sign(String),
}

/// Whether a bearer credential has the shape of a JWT (three base64url parts).
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| !p.is_empty())
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The fields of a JWT header we read before choosing a verifier. Parsed by
/// hand so that `alg: none` and unknown algorithms get a precise answer.
#[derive(Debug, Deserialize)]
pub(crate) struct RawHeader {
    pub alg: Option<String>,
    pub kid: Option<String>,
}

pub(crate) fn raw_header(token: &str) -> Result<RawHeader, TokenError> {
    let first = token
        .split('.')
        .next()
        .ok_or_else(|| TokenError::Malformed("no header".into()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(first)
        .map_err(|_| TokenError::Malformed("header is not base64url".into()))?;
    let header: RawHeader = serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Malformed("header is not a JSON object".into()))?;
    match header.alg.as_deref() {
        None => Err(TokenError::Malformed("header has no alg".into())),
        Some(a) if a.eq_ignore_ascii_case("none") => Err(TokenError::AlgorithmNone),
        Some(_) => Ok(header),
    }
}

/// The kid of a token's header, if it parses; used to route the token.
pub fn token_kid(token: &str) -> Option<String> {
    raw_header(token).ok().and_then(|h| h.kid)
}

/// Maps jsonwebtoken's errors to ours.
pub(crate) fn map_jwt_error(e: jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => TokenError::BadSignature,
        K::ExpiredSignature => TokenError::Expired,
        K::ImmatureSignature => TokenError::NotYetValid,
        K::InvalidIssuer => TokenError::WrongIssuer,
        K::InvalidAudience => TokenError::WrongAudience,
        K::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::MissingAlgorithm => {
            TokenError::AlgorithmNotAllowed("(does not match the key)".into())
        }
        K::Json(e) => TokenError::Malformed(format!("claims: {e}")),
        K::Base64(_) | K::Utf8(_) | K::InvalidToken => {
            TokenError::Malformed("not a signed JWT".into())
        }
        _ => TokenError::BadSignature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("a.b.c"));
        assert!(looks_like_jwt("a.b."));
        assert!(!looks_like_jwt("fief_x_y"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a=.b.c"));
    }

    #[test]
    fn alg_none_is_named() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(
            raw_header(&format!("{header}.e30.")).unwrap_err(),
            TokenError::AlgorithmNone
        );
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"NONE"}"#);
        assert_eq!(
            raw_header(&format!("{header}.e30.")).unwrap_err(),
            TokenError::AlgorithmNone
        );
    }
}
