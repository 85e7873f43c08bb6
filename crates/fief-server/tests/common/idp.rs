//! A local OIDC identity provider for tests: an Ed25519 key pair, its JWKS,
//! and tokens it signs.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

use fief_config::{Config, OidcConfig};

use super::TestServer;

pub const ISSUER: &str = "https://idp.test";
pub const AUDIENCE: &str = "fief-gateway";

/// A local identity provider: an Ed25519 key pair and its JWKS entry.
pub struct Idp {
    pub kid: String,
    pub pkcs8: Vec<u8>,
    pub public: Vec<u8>,
}

impl Idp {
    pub fn new(kid: &str) -> Self {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        Self {
            kid: kid.into(),
            pkcs8: doc.as_ref().to_vec(),
            public: pair.public_key().as_ref().to_vec(),
        }
    }
    pub fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&self.public),
               "kid": self.kid, "alg": "EdDSA", "use": "sig"})
    }
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &EncodingKey::from_ed_der(&self.pkcs8)).unwrap()
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn claims(tenant: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now() + 300,
           "iat": now(), "fief_tenant": tenant})
}

pub fn oidc_config(jwks_file: Option<std::path::PathBuf>, jwks_url: Option<String>) -> OidcConfig {
    OidcConfig {
        issuer: ISSUER.into(),
        audiences: vec![AUDIENCE.into()],
        jwks_file,
        jwks_url,
        algorithms: vec!["EdDSA".into()],
        tenant_claim: "fief_tenant".into(),
        tags_claim: Some("fief_tags".into()),
        leeway_secs: 30,
        jwks_cache_secs: 300,
        jwks_min_refresh_secs: 0,
        ca_file: None,
    }
}

pub async fn spawn_with_idp(idp: &Idp) -> TestServer {
    spawn_with_idp_and(idp, |_| {}).await
}

/// A gateway trusting `idp`, with more configuration.
pub async fn spawn_with_idp_and(idp: &Idp, tweak: impl FnOnce(&mut Config)) -> TestServer {
    // The key set lives beside the server's data for as long as the test runs.
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [idp.jwk()]}).to_string()).unwrap();
    super::spawn_in(dir, |c| {
        c.oidc = Some(oidc_config(Some(jwks.clone()), None));
        tweak(c);
    })
    .await
}
