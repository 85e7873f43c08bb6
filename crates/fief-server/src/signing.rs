//! Session signing keys: kept by the store (loaded at start-up, one made on
//! first start), listed and rotated by the operator. Retired keys are those
//! no unexpired session can have been signed with.

use std::time::Duration;

use serde::Serialize;

use fief_policy::{Action, Resource};
use fief_store::Principal;

use crate::error::ApiResult;
use crate::state::AppState;

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

pub async fn list(state: &AppState, op: &Principal) -> ApiResult<Vec<SigningKeyView>> {
    state
        .authorize(op, Action::RotateSigningKey, &Resource::Platform)
        .await?;
    let keys = state.store.signing_key_list().await?;
    let newest = keys.last().map(|(kid, _)| kid.clone());
    Ok(keys
        .into_iter()
        .map(|(kid, created_at)| SigningKeyView {
            active: Some(&kid) == newest.as_ref(),
            kid,
            created_at,
        })
        .collect())
}

/// Adds a new signing key (it signs from now on) and retires keys whose
/// every token has expired.
pub async fn rotate(state: &AppState, op: &Principal) -> ApiResult<Rotated> {
    let resource = Resource::Platform;
    state
        .authorize(op, Action::RotateSigningKey, &resource)
        .await?;
    let max = Duration::from_secs(state.config.sts.max_session_secs);
    let (kid, retired) = state.store.rotate_signing_key(max).await?;
    state
        .audit_change(
            op,
            Action::RotateSigningKey,
            &resource,
            format!("signing key {kid} active; retired {retired:?}"),
        )
        .await?;
    Ok(Rotated { kid, retired })
}
