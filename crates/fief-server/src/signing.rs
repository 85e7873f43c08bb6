//! Session signing keys: loaded from the store at start-up (one is made on
//! first start), rotated by the operator. Retired keys are those no
//! unexpired session can have been signed with.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use fief_identity::SessionSigner;
use fief_policy::{Action, Principal, Resource};
use fief_store::Store;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::ServerError;

#[derive(Debug, Serialize)]
pub struct SigningKeyView {
    pub kid: String,
    pub created_at: String,
    /// The newest key signs; the others only verify.
    pub active: bool,
}

#[derive(Debug, Serialize)]
pub struct Rotated {
    pub kid: String,
    pub retired: Vec<String>,
}

fn parse_time(s: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339(s).map_err(|e| format!("bad key timestamp {s}: {e}"))
}

pub async fn load(store: &Store) -> Result<SessionSigner, ServerError> {
    let signer = SessionSigner::new();
    let mut keys = store.signing_keys().await?;
    if keys.is_empty() {
        let (kid, pkcs8) =
            SessionSigner::generate().map_err(|e| ServerError::Startup(e.to_string()))?;
        store.add_signing_key(&kid, &pkcs8).await?;
        keys = store.signing_keys().await?;
    }
    for (kid, pkcs8, created_at) in keys {
        let created = parse_time(&created_at).map_err(ServerError::Startup)?;
        signer
            .add_key(&kid, &pkcs8, created)
            .map_err(|e| ServerError::Startup(e.to_string()))?;
    }
    Ok(signer)
}

pub async fn list(state: &AppState) -> ApiResult<Vec<SigningKeyView>> {
    state
        .authorize(
            &Principal::Operator,
            Action::RotateSigningKey,
            &Resource::Platform,
        )
        .await?;
    let keys = state.store.signing_keys().await?;
    let newest = keys.last().map(|(kid, _, _)| kid.clone());
    Ok(keys
        .into_iter()
        .map(|(kid, _, created_at)| SigningKeyView {
            active: Some(&kid) == newest.as_ref(),
            kid,
            created_at,
        })
        .collect())
}

/// Adds a new signing key (it signs from now on) and retires keys whose
/// every token has expired.
pub async fn rotate(state: &AppState) -> ApiResult<Rotated> {
    let resource = Resource::Platform;
    state
        .authorize(&Principal::Operator, Action::RotateSigningKey, &resource)
        .await?;
    let (kid, pkcs8) = SessionSigner::generate().map_err(|e| ApiError::Internal(e.to_string()))?;
    state.store.add_signing_key(&kid, &pkcs8).await?;
    state
        .sessions
        .add_key(&kid, &pkcs8, SystemTime::now())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let max = Duration::from_secs(state.config.sts.max_session_secs);
    let retired = state.sessions.retirable(max, SystemTime::now());
    for old in &retired {
        state.store.remove_signing_key(old).await?;
        state.sessions.remove_key(old);
    }
    state.audit_admin(
        Action::RotateSigningKey,
        &resource,
        format!("signing key {kid} active; retired {retired:?}"),
    )?;
    Ok(Rotated { kid, retired })
}
