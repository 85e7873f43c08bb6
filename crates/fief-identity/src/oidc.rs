//! OIDC JWT verification: keys from a JWKS file or URL (cached, refreshed on
//! an unknown `kid` at a bounded rate), algorithms pinned by configuration,
//! `iss`/`aud`/`exp`/`nbf` checked with a bounded clock skew.

use std::str::FromStr;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};

use fief_config::OidcConfig;
use fief_core::Tags;

use crate::{map_jwt_error, raw_header, IdentityError, TokenError};

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Who a verified token says the caller is. The tenant is still only a
/// claim until the caller checks that such a tenant exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUser {
    pub tenant: String,
    pub subject: String,
    pub tags: Tags,
    /// `iat`, seconds since the epoch. Required: a token issued before its
    /// tenant's current incarnation existed belongs to an earlier one.
    pub issued_at: u64,
}

struct KeyCache {
    keys: Vec<Jwk>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
}

pub struct OidcVerifier {
    config: OidcConfig,
    algorithms: Vec<Algorithm>,
    cache: RwLock<KeyCache>,
    /// One refresh at a time; others wait and then use its result.
    refreshing: Mutex<()>,
    http: reqwest::Client,
}

impl OidcVerifier {
    /// Loads the key set. A missing or broken file is a start-up error; an
    /// unreachable URL is logged and retried on use, so an identity provider
    /// outage does not stop API-key callers.
    pub async fn new(config: OidcConfig) -> Result<Self, IdentityError> {
        let algorithms = config
            .algorithms
            .iter()
            .map(|a| {
                Algorithm::from_str(a).map_err(|_| IdentityError::Jwks {
                    source_name: "config".into(),
                    message: format!("unknown algorithm {a}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let http = fief_http::client(config.ca_file.as_deref(), Duration::from_secs(5)).map_err(
            |message| IdentityError::Jwks {
                source_name: "http client".into(),
                message,
            },
        )?;
        let verifier = Self {
            config,
            algorithms,
            cache: RwLock::new(KeyCache {
                keys: Vec::new(),
                fetched_at: None,
                attempted_at: None,
            }),
            refreshing: Mutex::new(()),
            http,
        };
        match verifier.refresh().await {
            Ok(()) => {}
            Err(message) if verifier.config.jwks_url.is_some() => {
                tracing::warn!("OIDC key set not loaded yet (will retry on use): {message}");
            }
            Err(message) => {
                return Err(IdentityError::Jwks {
                    source_name: verifier.source_name(),
                    message,
                })
            }
        }
        Ok(verifier)
    }

    fn source_name(&self) -> String {
        match (&self.config.jwks_file, &self.config.jwks_url) {
            (Some(f), _) => f.display().to_string(),
            (_, Some(u)) => u.clone(),
            _ => "(none)".into(),
        }
    }

    /// The allowed clock skew, in seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.config.leeway_secs
    }

    pub async fn verify(&self, token: &str) -> Result<VerifiedUser, TokenError> {
        let header = raw_header(token)?;
        let alg_name = header.alg.unwrap_or_default();
        let alg = self
            .config
            .algorithms
            .iter()
            .position(|a| *a == alg_name)
            .and_then(|i| self.algorithms.get(i).copied())
            .ok_or_else(|| TokenError::AlgorithmNotAllowed(alg_name.clone()))?;
        let jwk = self.key_for(header.kid.as_deref()).await?;
        if let Some(key_alg) = jwk.common.key_algorithm {
            if format!("{key_alg:?}") != alg_name {
                return Err(TokenError::AlgorithmNotAllowed(format!(
                    "{alg_name} (the key is for {key_alg:?})"
                )));
            }
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| {
            TokenError::KeysUnavailable(format!("the token's key is unusable: {e}"))
        })?;
        let mut validation = Validation::new(alg);
        validation.leeway = self.config.leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&self.config.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = decode::<Map<String, Value>>(token, &key, &validation).map_err(map_jwt_error)?;
        let claims = data.claims;
        let string_claim = |name: &str| match claims.get(name) {
            None | Some(Value::Null) => Err(TokenError::MissingClaim(name.to_owned())),
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(_) => Err(TokenError::InvalidClaim(
                name.to_owned(),
                "expected a non-empty string".into(),
            )),
        };
        let subject = string_claim("sub")?;
        let tenant = string_claim(&self.config.tenant_claim)?;
        let issued_at = match claims.get("iat") {
            None | Some(Value::Null) => return Err(TokenError::MissingClaim("iat".into())),
            Some(v) => v.as_u64().ok_or_else(|| {
                TokenError::InvalidClaim("iat".into(), "expected seconds since the epoch".into())
            })?,
        };
        let tags = match &self.config.tags_claim {
            None => Tags::new(),
            Some(name) => match claims.get(name) {
                None | Some(Value::Null) => Tags::new(),
                Some(v) => {
                    let tags: Tags = serde_json::from_value(v.clone()).map_err(|_| {
                        TokenError::InvalidClaim(
                            name.clone(),
                            "expected an object of string values".into(),
                        )
                    })?;
                    fief_core::validate_tags(&tags)
                        .map_err(|e| TokenError::InvalidClaim(name.clone(), e.to_string()))?;
                    tags
                }
            },
        };
        Ok(VerifiedUser {
            tenant,
            subject,
            tags,
            issued_at,
        })
    }

    /// The signing key for `kid`, refreshing the set when it is stale or the
    /// kid is unknown (at most once per `jwks_min_refresh_secs`).
    async fn key_for(&self, kid: Option<&str>) -> Result<Jwk, TokenError> {
        let stale = {
            let cache = self.cache.read().await;
            cache
                .fetched_at
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(self.config.jwks_cache_secs))
        };
        if stale {
            self.refresh_rate_limited().await;
        }
        if let Some(k) = self.find(kid).await? {
            return Ok(k);
        }
        self.refresh_rate_limited().await;
        self.find(kid).await?.ok_or_else(|| {
            TokenError::UnknownKey(kid.unwrap_or("(none)").chars().take(64).collect())
        })
    }

    async fn find(&self, kid: Option<&str>) -> Result<Option<Jwk>, TokenError> {
        let cache = self.cache.read().await;
        match kid {
            Some(kid) => Ok(cache
                .keys
                .iter()
                .find(|k| k.common.key_id.as_deref() == Some(kid))
                .cloned()),
            None => match cache.keys.as_slice() {
                [] => Ok(None),
                [only] => Ok(Some(only.clone())),
                _ => Err(TokenError::Malformed(
                    "the token has no kid and the provider has several keys".into(),
                )),
            },
        }
    }

    async fn refresh_rate_limited(&self) {
        let _one = self.refreshing.lock().await;
        let min = Duration::from_secs(self.config.jwks_min_refresh_secs);
        let recent = {
            let cache = self.cache.read().await;
            cache.attempted_at.is_some_and(|t| t.elapsed() < min)
        };
        if !recent {
            if let Err(e) = self.refresh().await {
                tracing::warn!("OIDC key set refresh failed (keeping the old keys): {e}");
            }
        }
    }

    async fn refresh(&self) -> Result<(), String> {
        self.cache.write().await.attempted_at = Some(Instant::now());
        let bytes = self.fetch().await?;
        let keys = parse_jwks(&bytes)?;
        let mut cache = self.cache.write().await;
        cache.keys = keys;
        cache.fetched_at = Some(Instant::now());
        Ok(())
    }

    async fn fetch(&self) -> Result<Vec<u8>, String> {
        if let Some(path) = &self.config.jwks_file {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if bytes.len() > MAX_JWKS_BYTES {
                return Err("key set is larger than 1 MiB".into());
            }
            return Ok(bytes);
        }
        let url = self.config.jwks_url.as_deref().unwrap_or_default();
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", fief_http::describe(&e)))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: status {}", response.status()));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if bytes.len() > MAX_JWKS_BYTES {
            return Err("key set is larger than 1 MiB".into());
        }
        Ok(bytes.to_vec())
    }
}

/// Parses a key set, keeping the signature keys it can use. A key of a type
/// this build does not know is skipped with a warning, not fatal to the rest.
pub fn parse_jwks(bytes: &[u8]) -> Result<Vec<Jwk>, String> {
    #[derive(serde::Deserialize)]
    struct Raw {
        keys: Vec<Value>,
    }
    let raw: Raw =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for value in raw.keys {
        match serde_json::from_value::<Jwk>(value) {
            Ok(k) if matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption)) => {}
            Ok(k) => keys.push(k),
            Err(e) => tracing::warn!("skipping a JWKS key this gateway cannot use: {e}"),
        }
    }
    if keys.is_empty() {
        return Err("the key set holds no usable signature key".into());
    }
    Ok(keys)
}
