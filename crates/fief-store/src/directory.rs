//! The in-memory view of what every request reads: API keys by id, tenant
//! states, model records. Each entry is exact on this node: every operation
//! that changes a row invalidates its entry before it answers, and a load
//! that raced an invalidation is not kept (an epoch counts
//! invalidations; a load installs only if none happened since it read).
//! `invalidate` is the one hook another replica's change notification
//! needs to call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use zeroize::Zeroizing;

use fief_core::{Incarnation, ModelName, TenantId};

use crate::api_keys::ApiKeyRecord;
use crate::models::ModelRecord;
use crate::tenants::TenantState;

/// What changed, for invalidation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// One API key (revoked).
    Key(String),
    /// A tenant: its state, and every key and model of it.
    Tenant(TenantId),
    /// One model of a tenant incarnation.
    Model(TenantId, ModelName),
    /// Everything (a missed notification, a reconnect).
    All,
}

/// A key as authentication needs it: its record, its secret's hash and its
/// sealed secret (for SigV4; never opened here).
#[derive(Clone)]
pub(crate) struct CachedKey {
    pub record: ApiKeyRecord,
    pub secret_hash: Vec<u8>,
    pub secret_sealed: Option<Vec<u8>>,
}

/// A SigV4 signing key's scope: key id, day, region, service.
pub(crate) type SigningScope = (String, String, String, String);

/// At most this many derived signing keys are cached (a day's key per
/// access key, region and service; re-derived after a clear).
const SIGNING_KEYS_MAX: usize = 10_000;

#[derive(Default)]
pub(crate) struct Directory {
    epoch: AtomicU64,
    keys: RwLock<HashMap<String, CachedKey>>,
    tenants: RwLock<HashMap<TenantId, TenantState>>,
    models: RwLock<HashMap<(TenantId, Incarnation, ModelName), ModelRecord>>,
    /// Derived SigV4 signing keys (never the secrets they come from); used
    /// only after the key itself was found live.
    signing_keys: RwLock<HashMap<SigningScope, Zeroizing<[u8; 32]>>>,
}

impl Directory {
    /// Read before loading from the database; pass to `keep_*`.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    pub fn key(&self, id: &str) -> Option<CachedKey> {
        self.keys.read().ok()?.get(id).cloned()
    }

    pub fn tenant(&self, id: &TenantId) -> Option<TenantState> {
        self.tenants.read().ok()?.get(id).cloned()
    }

    pub fn model(
        &self,
        tenant: &TenantId,
        incarnation: &Incarnation,
        name: &ModelName,
    ) -> Option<ModelRecord> {
        self.models
            .read()
            .ok()?
            .get(&(tenant.clone(), incarnation.clone(), name.clone()))
            .cloned()
    }

    pub fn keep_key(&self, epoch: u64, id: &str, key: CachedKey) {
        if let Ok(mut keys) = self.keys.write() {
            if self.epoch() == epoch {
                keys.insert(id.to_owned(), key);
            }
        }
    }

    pub fn signing_key(&self, scope: &SigningScope) -> Option<Zeroizing<[u8; 32]>> {
        self.signing_keys.read().ok()?.get(scope).cloned()
    }

    pub fn keep_signing_key(&self, scope: SigningScope, key: Zeroizing<[u8; 32]>) {
        if let Ok(mut keys) = self.signing_keys.write() {
            if keys.len() >= SIGNING_KEYS_MAX {
                keys.clear();
            }
            keys.insert(scope, key);
        }
    }

    pub fn keep_tenant(&self, epoch: u64, id: &TenantId, state: TenantState) {
        if let Ok(mut tenants) = self.tenants.write() {
            if self.epoch() == epoch {
                tenants.insert(id.clone(), state);
            }
        }
    }

    pub fn keep_model(
        &self,
        epoch: u64,
        tenant: &TenantId,
        incarnation: &Incarnation,
        record: ModelRecord,
    ) {
        if let Ok(mut models) = self.models.write() {
            if self.epoch() == epoch {
                models.insert(
                    (tenant.clone(), incarnation.clone(), record.name.clone()),
                    record,
                );
            }
        }
    }

    /// Forgets what `change` touched. Called after the change is committed
    /// and before the operation answers, so the next request reads it anew.
    pub fn invalidate(&self, change: &Change) {
        // First the epoch: a load that read the old row cannot install it.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        match change {
            Change::Key(id) => {
                if let Ok(mut keys) = self.keys.write() {
                    keys.remove(id);
                }
                if let Ok(mut keys) = self.signing_keys.write() {
                    keys.retain(|scope, _| &scope.0 != id);
                }
            }
            Change::Tenant(t) => {
                if let Ok(mut tenants) = self.tenants.write() {
                    tenants.remove(t);
                }
                // Which cached signing keys are the tenant's is not kept:
                // drop them all (each is re-derived on its next use).
                if let Ok(mut keys) = self.signing_keys.write() {
                    keys.clear();
                }
                if let Ok(mut keys) = self.keys.write() {
                    keys.retain(|_, k| &k.record.tenant_id != t);
                }
                if let Ok(mut models) = self.models.write() {
                    models.retain(|(owner, _, _), _| owner != t);
                }
            }
            Change::Model(t, name) => {
                if let Ok(mut models) = self.models.write() {
                    models.retain(|(owner, _, n), _| !(owner == t && n == name));
                }
            }
            Change::All => {
                if let Ok(mut keys) = self.keys.write() {
                    keys.clear();
                }
                if let Ok(mut keys) = self.signing_keys.write() {
                    keys.clear();
                }
                if let Ok(mut tenants) = self.tenants.write() {
                    tenants.clear();
                }
                if let Ok(mut models) = self.models.write() {
                    models.clear();
                }
            }
        }
    }
}
