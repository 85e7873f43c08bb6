//! Network islands: listeners that serve only some tenants (seed 000). The
//! listener a request came in on travels with it as a request extension, so
//! authentication can refuse a credential of a tenant that does not belong
//! there, and the island gate can refuse a foreign endpoint before any
//! credential is even looked at.

use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use fief_config::IslandConfig;
use fief_core::TenantId;

use crate::error::ApiError;

#[derive(Debug, Clone)]
pub enum Listener {
    Shared,
    Island(Arc<IslandConfig>),
}

impl Listener {
    /// For audit entries: `data` (the shared listener) or `island`.
    pub fn name(&self) -> &'static str {
        match self {
            Listener::Shared => "data",
            Listener::Island(_) => "island",
        }
    }

    /// May `tenant` be served on this listener?
    pub fn admits(&self, tenant: &TenantId, config: &fief_config::Config) -> bool {
        match self {
            Listener::Island(island) => island.tenants.contains(tenant),
            Listener::Shared => !config.island_only(tenant),
        }
    }
}

/// Tags the request with its listener; on an island, refuses endpoints of
/// tenants that are not on it, before authentication.
pub async fn gate(listener: Listener, mut req: Request, next: Next) -> Response {
    if let Listener::Island(island) = &listener {
        let endpoint = req
            .uri()
            .path()
            .strip_prefix("/endpoints/")
            .and_then(|rest| rest.split('/').next());
        if let Some(endpoint) = endpoint {
            let ours = TenantId::parse(endpoint).is_ok_and(|t| island.tenants.contains(&t));
            if !ours {
                return ApiError::AccessDenied.into_response();
            }
        }
    }
    req.extensions_mut().insert(listener);
    next.run(req).await
}
