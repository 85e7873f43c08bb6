//! Role-session tokens: Ed25519-signed JWTs that carry the role, its tenant,
//! the source principal, the session name and tags. Keys are rotatable: the
//! newest signs, older ones verify until every token they signed has expired.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::{map_jwt_error, raw_header, IdentityError, TokenError};

/// fief's signing key ids start with this; it routes a token to this verifier.
pub const SIGNING_KID_PREFIX: &str = "sts-";
const ISSUER: &str = "fief-sts";
const AUDIENCE: &str = "fief";

/// What a session token says. Everything here was decided when the role was
/// assumed; nothing is taken from the request that presents it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    pub iss: String,
    pub aud: String,
    /// `frn:fief:session:<tenant>/<role>/<session_name>`.
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    pub tenant: String,
    /// The incarnation of `tenant` the session belongs to: a token of an
    /// offboarded tenant never works for a later one with the same id.
    pub tenant_incarnation: String,
    pub role: String,
    pub session_name: String,
    pub tags: BTreeMap<String, String>,
    pub source_tenant: String,
    pub source_incarnation: String,
    pub source_principal: String,
}

/// Who a session is for and who assumed it (tenant ids with their
/// incarnations), as the assume-role decision established.
#[derive(Debug, Clone)]
pub struct SessionSubject<'a> {
    pub tenant: &'a str,
    pub tenant_incarnation: &'a str,
    pub role: &'a str,
    pub session_name: &'a str,
    pub tags: BTreeMap<String, String>,
    pub source_tenant: &'a str,
    pub source_incarnation: &'a str,
    pub source_principal: &'a str,
}

impl SessionClaims {
    pub fn new(subject: SessionSubject<'_>, now: SystemTime, duration: Duration) -> Self {
        let SessionSubject {
            tenant,
            tenant_incarnation,
            role,
            session_name,
            tags,
            source_tenant,
            source_incarnation,
            source_principal,
        } = subject;
        let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut jti = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut jti);
        Self {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: format!("frn:fief:session:{tenant}/{role}/{session_name}"),
            iat,
            exp: iat + duration.as_secs(),
            jti: hex::encode(jti),
            tenant: tenant.into(),
            tenant_incarnation: tenant_incarnation.into(),
            role: role.into(),
            session_name: session_name.into(),
            tags,
            source_tenant: source_tenant.into(),
            source_incarnation: source_incarnation.into(),
            source_principal: source_principal.into(),
        }
    }
}

struct SigningKey {
    kid: String,
    created: SystemTime,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

#[derive(Default)]
pub struct SessionSigner {
    /// Oldest first; the last one signs.
    keys: RwLock<Vec<SigningKey>>,
}

impl SessionSigner {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new Ed25519 key: (kid, PKCS#8 document) for the caller to store.
    pub fn generate() -> Result<(String, Vec<u8>), IdentityError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| IdentityError::SigningKey("key generation failed".into()))?;
        let mut id = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut id);
        Ok((
            format!("{SIGNING_KID_PREFIX}{}", hex::encode(id)),
            doc.as_ref().to_vec(),
        ))
    }

    /// Adds a stored key; the newest by `created` signs.
    pub fn add_key(
        &self,
        kid: &str,
        pkcs8: &[u8],
        created: SystemTime,
    ) -> Result<(), IdentityError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| {
            IdentityError::SigningKey(format!("{kid} is not an Ed25519 PKCS#8 key"))
        })?;
        let key = SigningKey {
            kid: kid.to_owned(),
            created,
            encoding: EncodingKey::from_ed_der(pkcs8),
            decoding: DecodingKey::from_ed_der(pair.public_key().as_ref()),
        };
        let mut keys = self
            .keys
            .write()
            .map_err(|_| IdentityError::SigningKey("key set lock poisoned".into()))?;
        keys.retain(|k| k.kid != kid);
        keys.push(key);
        keys.sort_by_key(|k| k.created);
        Ok(())
    }

    /// Key ids, oldest first.
    pub fn kids(&self) -> Vec<String> {
        self.keys
            .read()
            .map(|k| k.iter().map(|k| k.kid.clone()).collect())
            .unwrap_or_default()
    }

    /// Keys no live token can have been signed with: a key is retired once
    /// its successor has signed for longer than the longest session.
    pub fn retirable(&self, max_session: Duration, now: SystemTime) -> Vec<String> {
        let Ok(keys) = self.keys.read() else {
            return Vec::new();
        };
        keys.windows(2)
            .filter(|pair| pair[1].created + max_session < now)
            .map(|pair| pair[0].kid.clone())
            .collect()
    }

    pub fn remove_key(&self, kid: &str) {
        if let Ok(mut keys) = self.keys.write() {
            keys.retain(|k| k.kid != kid);
        }
    }

    pub fn issue(&self, claims: &SessionClaims) -> Result<String, IdentityError> {
        let keys = self
            .keys
            .read()
            .map_err(|_| IdentityError::Sign("key set lock poisoned".into()))?;
        let key = keys
            .last()
            .ok_or_else(|| IdentityError::Sign("no signing key".into()))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        encode(&header, claims, &key.encoding).map_err(|e| IdentityError::Sign(e.to_string()))
    }

    /// Verifies signature, issuer, audience and expiry. The algorithm is
    /// always EdDSA, whatever the header says.
    pub fn verify(&self, token: &str) -> Result<SessionClaims, TokenError> {
        let header = raw_header(token)?;
        let alg = header.alg.unwrap_or_default();
        if alg != "EdDSA" {
            return Err(TokenError::AlgorithmNotAllowed(alg));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Malformed("session token without kid".into()))?;
        let keys = self
            .keys
            .read()
            .map_err(|_| TokenError::KeysUnavailable("key set lock poisoned".into()))?;
        let key = keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| TokenError::UnknownKey(kid.chars().take(64).collect()))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        // fief's own clock signs and checks: no skew to allow for.
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        decode::<SessionClaims>(token, &key.decoding, &validation)
            .map(|d| d.claims)
            .map_err(map_jwt_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(duration: Duration) -> SessionClaims {
        SessionClaims::new(
            SessionSubject {
                tenant: "acme",
                tenant_incarnation: "0123456789abcdef0123456789abcdef",
                role: "analyst",
                session_name: "s1",
                tags: BTreeMap::from([("Department".into(), "Sales".into())]),
                source_tenant: "globex",
                source_incarnation: "fedcba9876543210fedcba9876543210",
                source_principal: "api-key:abc",
            },
            SystemTime::now(),
            duration,
        )
    }

    #[test]
    fn issue_verify_rotate() {
        let signer = SessionSigner::new();
        let (kid, pkcs8) = SessionSigner::generate().unwrap();
        let t0 = SystemTime::now() - Duration::from_secs(10_000);
        signer.add_key(&kid, &pkcs8, t0).unwrap();
        let c = claims(Duration::from_secs(60));
        let token = signer.issue(&c).unwrap();
        assert_eq!(signer.verify(&token).unwrap(), c);

        // Rotation: the new key signs, the old one still verifies.
        let (kid2, pkcs8_2) = SessionSigner::generate().unwrap();
        signer
            .add_key(&kid2, &pkcs8_2, t0 + Duration::from_secs(100))
            .unwrap();
        let token2 = signer.issue(&c).unwrap();
        assert_eq!(crate::token_kid(&token2).unwrap(), kid2);
        assert!(signer.verify(&token).is_ok());
        assert_eq!(
            signer.retirable(Duration::from_secs(3600), SystemTime::now()),
            vec![kid.clone()]
        );
        assert!(signer
            .retirable(Duration::from_secs(100_000), SystemTime::now())
            .is_empty());
        signer.remove_key(&kid);
        assert_eq!(
            signer.verify(&token).unwrap_err(),
            TokenError::UnknownKey(kid)
        );
    }

    #[test]
    fn tampering_and_expiry_are_refused() {
        let signer = SessionSigner::new();
        let (kid, pkcs8) = SessionSigner::generate().unwrap();
        signer.add_key(&kid, &pkcs8, SystemTime::now()).unwrap();
        let token = signer.issue(&claims(Duration::from_secs(60))).unwrap();
        // Swap the payload for one with another tenant: the signature fails.
        let mut other = claims(Duration::from_secs(60));
        other.tenant = "other".into();
        let forged_payload = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(&other).unwrap(),
        );
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(
            signer.verify(&forged).unwrap_err(),
            TokenError::BadSignature
        );

        let mut expired = claims(Duration::from_secs(60));
        expired.exp = expired.iat - 10;
        let token = signer.issue(&expired).unwrap();
        assert_eq!(signer.verify(&token).unwrap_err(), TokenError::Expired);
    }
}
