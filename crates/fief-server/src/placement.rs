//! Compute placement by tier (DESIGN.md): a silo tenant's invocations run on
//! a worker pool of its own; bridge and pool tenants share the runtime's.
//! A silo tenant's pool is started on its first invocation and stopped once
//! it has been idle for `models.silo_idle_secs`, so a tenant costs no thread
//! while it sends nothing; all silo pools together hold at most
//! `models.max_silo_threads` threads. Placement follows the tenant's tier at
//! the moment of each request, so a tier change needs no restart and an
//! in-flight request finishes where it started.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fief_core::{TenantId, Tier};
use fief_serving::WorkerPool;

use crate::error::{ApiError, ApiResult};

struct Running {
    pool: Arc<WorkerPool>,
    last_used: Instant,
}

#[derive(Default)]
struct Pools {
    /// Tenants placed on pools of their own (the silo tier).
    silo: HashSet<TenantId>,
    running: HashMap<TenantId, Running>,
}

pub struct Placement {
    silo_threads: usize,
    max_threads: usize,
    idle: Duration,
    pools: Mutex<Pools>,
}

fn poisoned<T>(_: T) -> ApiError {
    ApiError::Internal("placement lock poisoned".into())
}

impl Placement {
    pub fn new(silo_threads: usize, max_threads: usize, idle: Duration) -> Self {
        Self {
            silo_threads,
            max_threads,
            idle,
            pools: Mutex::new(Pools::default()),
        }
    }

    /// Makes the tenant's placement match `tier` (no thread starts here).
    pub fn apply(&self, tenant: &TenantId, tier: Tier) -> ApiResult<()> {
        let mut pools = self.pools.lock().map_err(poisoned)?;
        if tier == Tier::Silo {
            pools.silo.insert(tenant.clone());
        } else {
            pools.silo.remove(tenant);
            pools.running.remove(tenant);
        }
        Ok(())
    }

    pub fn remove(&self, tenant: &TenantId) {
        if let Ok(mut pools) = self.pools.lock() {
            pools.silo.remove(tenant);
            pools.running.remove(tenant);
        }
    }

    /// The tenant's own pool, started if it is not running; `None` for a
    /// tenant on the shared pool. Fails (503) when starting it would exceed
    /// `models.max_silo_threads`.
    pub fn pool(&self, tenant: &TenantId) -> ApiResult<Option<Arc<WorkerPool>>> {
        let mut pools = self.pools.lock().map_err(poisoned)?;
        if !pools.silo.contains(tenant) {
            return Ok(None);
        }
        if let Some(r) = pools.running.get_mut(tenant) {
            r.last_used = Instant::now();
            return Ok(Some(r.pool.clone()));
        }
        let in_use: usize = pools.running.values().map(|r| r.pool.threads()).sum();
        if in_use + self.silo_threads > self.max_threads {
            return Err(ApiError::Unavailable(format!(
                "every silo worker thread is in use ({in_use} of models.max_silo_threads = {}); \
                 retry once another silo tenant's pool goes idle, or raise the limit",
                self.max_threads
            )));
        }
        let pool = WorkerPool::new(&format!("silo-{tenant}"), self.silo_threads).map_err(|e| {
            ApiError::Unavailable(format!("cannot start the silo worker pool: {e}"))
        })?;
        let pool = Arc::new(pool);
        pools.running.insert(
            tenant.clone(),
            Running {
                pool: pool.clone(),
                last_used: Instant::now(),
            },
        );
        Ok(Some(pool))
    }

    /// Stops pools idle for longer than the idle period and not running a
    /// job (a request holding the pool keeps it); returns how many.
    pub fn stop_idle(&self) -> usize {
        let Ok(mut pools) = self.pools.lock() else {
            return 0;
        };
        let before = pools.running.len();
        let idle = self.idle;
        pools
            .running
            .retain(|_, r| r.last_used.elapsed() < idle || Arc::strong_count(&r.pool) > 1);
        before - pools.running.len()
    }

    /// Threads of running silo pools.
    pub fn threads(&self) -> usize {
        self.pools
            .lock()
            .map(|p| p.running.values().map(|r| r.pool.threads()).sum())
            .unwrap_or(0)
    }

    pub fn idle_period(&self) -> Duration {
        self.idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_start_on_use_stop_when_idle_and_are_capped() {
        let p = Placement::new(2, 4, Duration::from_millis(50));
        let t = |s: &str| TenantId::parse(s).unwrap();
        for id in ["aa", "bb", "cc"] {
            p.apply(&t(id), Tier::Silo).unwrap();
        }
        p.apply(&t("dd"), Tier::Pool).unwrap();
        assert_eq!(p.threads(), 0, "no thread before a request");
        assert!(p.pool(&t("dd")).unwrap().is_none());
        let a = p.pool(&t("aa")).unwrap().unwrap();
        let _b = p.pool(&t("bb")).unwrap().unwrap();
        assert_eq!(p.threads(), 4);
        let e = p.pool(&t("cc")).err().unwrap().to_string();
        assert!(e.contains("max_silo_threads"), "{e}");
        std::thread::sleep(Duration::from_millis(80));
        drop(a);
        // bb's pool is still held by a request: it stays.
        assert_eq!(p.stop_idle(), 1);
        assert_eq!(p.threads(), 2);
        assert!(p.pool(&t("cc")).unwrap().is_some());
    }
}
