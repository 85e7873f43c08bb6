//! Authentication (invariant 1): a bearer credential in, a [`Principal`]
//! out, or a refusal. The only maker of tenant principals. Every credential
//! belongs to one tenant incarnation and works only while that incarnation
//! is active: an API key row carries it, a session token carries it in a
//! signed claim, and an OIDC token must have been issued after the current
//! incarnation was created (and, for a reused id, after the earlier one's
//! offboarding plus the allowed clock skew).

use std::time::{Duration, SystemTime};

use subtle::ConstantTimeEq;

use fief_core::{Incarnation, TenantId};
use fief_identity::{
    looks_like_jwt, token_kid, SessionClaims, SessionSigner, SessionSubject, TokenError,
    SIGNING_KID_PREFIX,
};
use fief_policy::{PrincipalFacts, SessionFacts};

use crate::api_keys::KEY_PREFIX;
use crate::gate::SessionGrant;
use crate::tenants::TenantStatus;
use crate::{Principal, Result, Store, StoreError};

/// Why a credential was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// 401: the credential is not valid here; the message says why without
    /// revealing anything about tenants.
    #[error("{0}")]
    Refused(String),
    /// 503: the check itself could not be made (fail closed).
    #[error("credential check failed: {0}")]
    Unavailable(String),
}

/// The kind of credential a bearer token looks like, for auditing refusals
/// (never a trust decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    ApiKey,
    SessionToken,
    Jwt,
    AdminToken,
    /// An `AWS4-HMAC-SHA256` signed request (an API key's SigV4 form).
    AwsSignature,
    Unrecognised,
}

impl CredentialKind {
    pub fn of(token: &str) -> Self {
        if token.starts_with(KEY_PREFIX) {
            CredentialKind::ApiKey
        } else if looks_like_jwt(token) {
            if token_kid(token).is_some_and(|k| k.starts_with(SIGNING_KID_PREFIX)) {
                CredentialKind::SessionToken
            } else {
                CredentialKind::Jwt
            }
        } else {
            CredentialKind::Unrecognised
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "api-key",
            CredentialKind::SessionToken => "session-token",
            CredentialKind::Jwt => "jwt",
            CredentialKind::AdminToken => "admin-token",
            CredentialKind::AwsSignature => "aws-sigv4",
            CredentialKind::Unrecognised => "unrecognised",
        }
    }
}

/// An API key's principal: its tenant incarnation, role and tags.
fn key_principal(key: crate::ApiKeyRecord) -> Principal {
    Principal::from_facts(PrincipalFacts::ApiKey {
        key_id: key.id,
        tenant: key.tenant_id,
        incarnation: key.incarnation,
        role: key.role,
        tags: key.tags,
    })
}

const INVALID: &str = "invalid, revoked or unknown credential";

fn unavailable(e: StoreError) -> AuthnError {
    AuthnError::Unavailable(e.to_string())
}

fn invalid_token(e: TokenError) -> AuthnError {
    AuthnError::Refused(format!("invalid token: {e}"))
}

fn no_tenant() -> AuthnError {
    AuthnError::Refused("invalid token: its tenant claim names no tenant".into())
}

impl Store {
    /// The principal of an AWS Signature V4 request whose form, date window
    /// and payload hash the edge has checked (`fief_sigv4::check`): the
    /// access key id names a live API key, and the signature verifies with
    /// the day's signing key derived from that key's sealed secret. The same
    /// principal as the key's bearer form.
    pub async fn authenticate_signed(
        &self,
        checked: &fief_sigv4::Checked,
    ) -> std::result::Result<Principal, AuthnError> {
        match self
            .authenticate_signed_key(checked)
            .await
            .map_err(unavailable)?
        {
            Ok(key) => Ok(key_principal(key)),
            Err(reason) => Err(AuthnError::Refused(format!(
                "invalid AWS signature: {reason}"
            ))),
        }
    }

    /// Turns a data-plane bearer credential into a principal: an API key, a
    /// fief session token, or an OIDC JWT. Every tenant it names must be
    /// active in the incarnation the credential belongs to.
    pub async fn authenticate(&self, token: &str) -> std::result::Result<Principal, AuthnError> {
        match CredentialKind::of(token) {
            CredentialKind::ApiKey => {
                let key = self
                    .authenticate_api_key(token)
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| AuthnError::Refused(INVALID.into()))?;
                Ok(key_principal(key))
            }
            CredentialKind::SessionToken => {
                let claims = self.sessions.verify(token).map_err(invalid_token)?;
                let tenant = self
                    .claimed(&claims.tenant, Some(&claims.tenant_incarnation))
                    .await?;
                // The session ends with the tenant that assumed it, too.
                self.claimed(&claims.source_tenant, Some(&claims.source_incarnation))
                    .await?;
                let source_tenant =
                    TenantId::parse(&claims.source_tenant).map_err(|_| no_tenant())?;
                Ok(Principal::from_facts(PrincipalFacts::Session(
                    SessionFacts {
                        tenant: tenant.0,
                        incarnation: tenant.1,
                        role: claims.role,
                        session_name: claims.session_name,
                        tags: claims.tags,
                        source_tenant,
                        source_principal: claims.source_principal,
                    },
                )))
            }
            CredentialKind::Jwt => {
                let oidc = self
                    .oidc
                    .as_ref()
                    .ok_or_else(|| invalid_token(TokenError::OidcDisabled))?;
                let user = oidc.verify(token).await.map_err(invalid_token)?;
                let id = TenantId::parse(&user.tenant).map_err(|_| no_tenant())?;
                let state = self
                    .tenant_state(&id)
                    .await
                    .map_err(unavailable)?
                    .filter(|s| s.status == TenantStatus::Active)
                    .ok_or_else(no_tenant)?;
                // A token issued before this incarnation existed was issued
                // for an earlier tenant with the same id.
                let mut not_before = state.created_ms.div_euclid(1000);
                if let Some(reused) = state.reused_after_ms {
                    let skew = i64::try_from(oidc.leeway_secs()).unwrap_or(i64::MAX);
                    not_before = not_before.max(reused.div_euclid(1000).saturating_add(skew) + 1);
                }
                if i64::try_from(user.issued_at).unwrap_or(i64::MAX) < not_before {
                    return Err(AuthnError::Refused(
                        "invalid token: it was issued before its tenant's current incarnation \
                         was created; sign in again"
                            .into(),
                    ));
                }
                Ok(Principal::from_facts(PrincipalFacts::User {
                    subject: user.subject,
                    tenant: id,
                    incarnation: state.incarnation,
                    tags: user.tags,
                }))
            }
            CredentialKind::AdminToken
            | CredentialKind::AwsSignature
            | CredentialKind::Unrecognised => Err(AuthnError::Refused(INVALID.into())),
        }
    }

    /// The admin plane's credential: the operator, or a refusal.
    pub fn authenticate_operator(&self, token: &str) -> std::result::Result<Principal, AuthnError> {
        if bool::from(token.as_bytes().ct_eq(self.admin_token.as_bytes())) {
            Ok(Principal::from_facts(PrincipalFacts::Operator))
        } else {
            Err(AuthnError::Refused("invalid admin token".into()))
        }
    }

    /// The active incarnation a verified claim names: the tenant must be
    /// active, and, when the claim carries an incarnation, in that one.
    async fn claimed(
        &self,
        tenant: &str,
        incarnation: Option<&str>,
    ) -> std::result::Result<(TenantId, Incarnation), AuthnError> {
        let id = TenantId::parse(tenant).map_err(|_| no_tenant())?;
        let state = self
            .tenant_state(&id)
            .await
            .map_err(unavailable)?
            .ok_or_else(no_tenant)?;
        let same = incarnation.is_none_or(|i| i == state.incarnation.as_str());
        if state.status != TenantStatus::Active || !same {
            return Err(no_tenant());
        }
        Ok((id, state.incarnation))
    }

    /// The current incarnation of an active tenant, if there is one. For
    /// deciding on another tenant's role after the guardrail let it try.
    pub async fn active_incarnation(&self, tenant: &TenantId) -> Result<Option<Incarnation>> {
        Ok(self
            .tenant_state(tenant)
            .await?
            .filter(|s| s.status == TenantStatus::Active)
            .map(|s| s.incarnation))
    }

    // ---- role sessions ------------------------------------------------------

    /// Issues the session an allowed assume-role granted, if the role's
    /// tenant is still the incarnation the decision was made for.
    pub async fn issue_session(
        &self,
        grant: &SessionGrant,
        session_name: &str,
        duration: Duration,
    ) -> Result<(String, SessionClaims)> {
        let owner = &grant.role.owner;
        let live = self.tenant_state(owner).await?.is_some_and(|s| {
            s.status == TenantStatus::Active && s.incarnation == grant.owner_incarnation
        });
        if !live {
            return Err(StoreError::TenantGone(owner.to_string()));
        }
        let claims = SessionClaims::new(
            SessionSubject {
                tenant: owner.as_str(),
                tenant_incarnation: grant.owner_incarnation.as_str(),
                role: &grant.role.name,
                session_name,
                tags: grant.tags.clone(),
                source_tenant: grant.source_tenant.as_str(),
                source_incarnation: grant.source_incarnation.as_str(),
                source_principal: &grant.source_principal,
            },
            SystemTime::now(),
            duration,
        );
        let token = self
            .sessions
            .issue(&claims)
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok((token, claims))
    }

    /// Loads the session signing keys (making the first one on first start).
    pub(crate) async fn load_signing_keys(&self) -> Result<()> {
        if self.signing_keys().await?.is_empty() {
            let (kid, pkcs8) =
                SessionSigner::generate().map_err(|e| StoreError::Config(e.to_string()))?;
            self.add_signing_key(&kid, &pkcs8).await?;
        }
        self.reload_signing_keys().await
    }

    /// Session signing keys, oldest first: (kid, created_at). The newest signs.
    pub async fn signing_key_list(&self) -> Result<Vec<(String, String)>> {
        Ok(self
            .signing_keys()
            .await?
            .into_iter()
            .map(|(kid, _, created)| (kid, created))
            .collect())
    }

    /// Adds a new signing key (it signs from now on) and retires keys no
    /// unexpired session can have been signed with. Returns (new kid, retired).
    pub async fn rotate_signing_key(&self, max_session: Duration) -> Result<(String, Vec<String>)> {
        let (kid, pkcs8) =
            SessionSigner::generate().map_err(|e| StoreError::Config(e.to_string()))?;
        self.add_signing_key(&kid, &pkcs8).await?;
        self.sessions
            .add_key(&kid, &pkcs8, SystemTime::now())
            .map_err(|e| StoreError::Config(e.to_string()))?;
        let retired = self.sessions.retirable(max_session, SystemTime::now());
        for old in &retired {
            self.remove_signing_key(old).await?;
            self.sessions.remove_key(old);
        }
        Ok((kid, retired))
    }
}

/// Milliseconds since the epoch, for incarnation times.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
