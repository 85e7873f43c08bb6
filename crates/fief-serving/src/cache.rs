//! Loaded models, keyed by (tenant incarnation, model, version) and bounded by a byte
//! budget with least-recently-used eviction. Lookups require the caller's
//! [`TenantScope`], so a cache entry of one tenant cannot be reached with
//! another tenant's scope.
//!
//! Loads are single-flight (concurrent first requests for one model share one
//! load) and capped (at most `max_concurrent_loads` run at once), so a burst
//! of cold models cannot take every core.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OnceCell, Semaphore};

use fief_core::{Incarnation, ModelName, TenantId};
use fief_store::TenantScope;

use crate::LoadedModel;

/// (tenant, its incarnation, model, version): a model of an offboarded
/// tenant is never served to a later tenant with the same id, whose
/// versions start at 1 again.
type Key = (TenantId, Incarnation, ModelName, i64);

fn key(scope: &TenantScope, name: &ModelName, version: i64) -> Key {
    (
        scope.tenant().clone(),
        scope.incarnation().clone(),
        name.clone(),
        version,
    )
}

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

/// Counters for the metrics endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub loads: u64,
    pub load_failures: u64,
    pub load_seconds: f64,
    pub evictions: u64,
    pub entries: usize,
    pub resident_bytes: usize,
    pub budget_bytes: usize,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    loads: AtomicU64,
    load_failures: AtomicU64,
    load_micros: AtomicU64,
    evictions: AtomicU64,
}

pub struct ModelCache {
    inner: Mutex<Inner>,
    inflight: Mutex<HashMap<Key, Arc<OnceCell<Arc<LoadedModel>>>>>,
    loads: Semaphore,
    budget_bytes: usize,
    counters: Counters,
}

impl ModelCache {
    pub fn new(budget_bytes: usize, max_concurrent_loads: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            inflight: Mutex::new(HashMap::new()),
            loads: Semaphore::new(max_concurrent_loads.max(1)),
            budget_bytes,
            counters: Counters::default(),
        }
    }

    /// A resident model; counts as a cache hit when found.
    pub fn get(
        &self,
        scope: &TenantScope,
        name: &ModelName,
        version: i64,
    ) -> Option<Arc<LoadedModel>> {
        let found = self.lookup(scope, name, version);
        if found.is_some() {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    fn lookup(
        &self,
        scope: &TenantScope,
        name: &ModelName,
        version: i64,
    ) -> Option<Arc<LoadedModel>> {
        let mut inner = self.inner.lock().ok()?;
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.entries.get_mut(&key(scope, name, version))?;
        entry.last_used = now;
        Some(entry.model.clone())
    }

    /// The cached model, or the result of `load`, run once however many
    /// callers ask for the same cold model at the same time.
    pub async fn get_or_load<E, F, Fut>(
        &self,
        scope: &TenantScope,
        name: &ModelName,
        version: i64,
        load: F,
    ) -> Result<Arc<LoadedModel>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<LoadedModel, E>>,
    {
        if let Some(m) = self.get(scope, name, version) {
            return Ok(m);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let key = key(scope, name, version);
        let cell = match self.inflight.lock() {
            Ok(mut inflight) => inflight.entry(key.clone()).or_default().clone(),
            // A poisoned map only loses the sharing, not correctness.
            Err(_) => Arc::new(OnceCell::new()),
        };
        let result = cell
            .get_or_try_init(|| async {
                // A caller that waited here may find the model already cached.
                if let Some(m) = self.lookup(scope, name, version) {
                    return Ok(m);
                }
                let _permit = self.loads.acquire().await;
                let started = Instant::now();
                match load().await {
                    Ok(model) => {
                        let model = Arc::new(model);
                        self.insert_loaded(scope, name, version, model.clone(), started.elapsed());
                        Ok(model)
                    }
                    Err(e) => {
                        self.add_load_time(started.elapsed());
                        self.counters.load_failures.fetch_add(1, Ordering::Relaxed);
                        Err(e)
                    }
                }
            })
            .await
            .cloned();
        if let Ok(mut inflight) = self.inflight.lock() {
            if inflight.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                inflight.remove(&key);
            }
        }
        result
    }

    fn add_load_time(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.counters
            .load_micros
            .fetch_add(micros, Ordering::Relaxed);
    }

    /// Caches a model this process just loaded (a cold invocation, or an
    /// upload checked by loading it), counted as a load.
    pub fn insert_loaded(
        &self,
        scope: &TenantScope,
        name: &ModelName,
        version: i64,
        model: Arc<LoadedModel>,
        took: Duration,
    ) {
        self.add_load_time(took);
        self.counters.loads.fetch_add(1, Ordering::Relaxed);
        self.insert(scope, name, version, model);
    }

    /// Caches a model, evicting the least recently used ones to stay within
    /// budget. A model larger than the whole budget is served but not kept.
    fn insert(&self, scope: &TenantScope, name: &ModelName, version: i64, model: Arc<LoadedModel>) {
        let cost = model.source_bytes();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if cost > self.budget_bytes {
            return;
        }
        // Older versions of this model are never asked for again.
        inner.remove_where(|(t, i, n, _)| {
            t == scope.tenant() && i == scope.incarnation() && n == name
        });
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
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        }
        inner.clock += 1;
        let last_used = inner.clock;
        inner.bytes += cost;
        inner
            .entries
            .insert(key(scope, name, version), Entry { model, last_used });
    }

    pub fn remove_model(&self, scope: &TenantScope, name: &ModelName) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.remove_where(|(t, i, n, _)| {
                t == scope.tenant() && i == scope.incarnation() && n == name
            });
        }
    }

    /// Drops every version of a model of the tenant id, whatever its
    /// incarnation (another replica replaced or deleted it: a version
    /// number may come again after a delete).
    pub fn remove_model_of(&self, tenant: &TenantId, name: &ModelName) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.remove_where(|(t, _, n, _)| t == tenant && n == name);
        }
    }

    /// Drops every model of the tenant id, whatever its incarnation.
    pub fn remove_tenant(&self, tenant: &TenantId) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.remove_where(|(t, _, _, _)| t == tenant);
        }
    }

    pub fn stats(&self) -> CacheStats {
        let (entries, resident_bytes) = self
            .inner
            .lock()
            .map(|i| (i.entries.len(), i.bytes))
            .unwrap_or((0, 0));
        let c = &self.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            loads: c.loads.load(Ordering::Relaxed),
            load_failures: c.load_failures.load(Ordering::Relaxed),
            load_seconds: c.load_micros.load(Ordering::Relaxed) as f64 / 1e6,
            evictions: c.evictions.load(Ordering::Relaxed),
            entries,
            resident_bytes,
            budget_bytes: self.budget_bytes,
        }
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
