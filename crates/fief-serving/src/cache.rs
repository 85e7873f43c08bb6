//! Loaded models, keyed by (tenant, model, version) and bounded by a byte
//! budget with least-recently-used eviction. Lookups require the caller's
//! [`TenantScope`], so a cache entry of one tenant cannot be reached with
//! another tenant's scope.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fief_core::{ModelName, TenantId};
use fief_policy::TenantScope;

use crate::LoadedModel;

type Key = (TenantId, ModelName, i64);

struct Entry {
    model: Arc<LoadedModel>,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    clock: u64,
    bytes: usize,
}

pub struct ModelCache {
    inner: Mutex<Inner>,
    budget_bytes: usize,
}

impl ModelCache {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            budget_bytes,
        }
    }

    pub fn get(
        &self,
        scope: &TenantScope,
        name: &ModelName,
        version: i64,
    ) -> Option<Arc<LoadedModel>> {
        let mut inner = self.inner.lock().ok()?;
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner
            .entries
            .get_mut(&(scope.tenant().clone(), name.clone(), version))?;
        entry.last_used = now;
        Some(entry.model.clone())
    }

    /// Caches a model, evicting the least recently used ones to stay within
    /// budget. A model larger than the whole budget is served but not kept.
    pub fn insert(
        &self,
        scope: &TenantScope,
        name: &ModelName,
        version: i64,
        model: Arc<LoadedModel>,
    ) {
        let cost = model.source_bytes();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if cost > self.budget_bytes {
            return;
        }
        // Older versions of this model are never asked for again.
        inner.remove_where(|(t, n, _)| t == scope.tenant() && n == name);
        while inner.bytes + cost > self.budget_bytes {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            inner.remove_where(|k| *k == oldest);
        }
        inner.clock += 1;
        let last_used = inner.clock;
        inner.bytes += cost;
        inner.entries.insert(
            (scope.tenant().clone(), name.clone(), version),
            Entry { model, last_used },
        );
    }

    pub fn remove_model(&self, scope: &TenantScope, name: &ModelName) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.remove_where(|(t, n, _)| t == scope.tenant() && n == name);
        }
    }

    pub fn remove_tenant(&self, tenant: &TenantId) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.remove_where(|(t, _, _)| t == tenant);
        }
    }

    /// (entries, bytes) currently resident.
    pub fn usage(&self) -> (usize, usize) {
        self.inner
            .lock()
            .map(|i| (i.entries.len(), i.bytes))
            .unwrap_or((0, 0))
    }
}

impl Inner {
    fn remove_where(&mut self, pred: impl Fn(&Key) -> bool) {
        let mut freed = 0;
        self.entries.retain(|k, e| {
            let keep = !pred(k);
            if !keep {
                freed += e.model.source_bytes();
            }
            keep
        });
        self.bytes -= freed;
    }
}
