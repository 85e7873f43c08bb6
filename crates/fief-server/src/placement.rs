//! Compute placement by tier (DESIGN.md): a silo tenant's invocations run on
//! its own worker pool, provisioned at onboarding (or start-up, or promotion)
//! and torn down at offboarding (or demotion); bridge and pool tenants share
//! the runtime's blocking pool. Placement follows the tenant's tier at the
//! moment of each request, so a tier change needs no restart and an in-flight
//! request finishes where it started.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use fief_core::{TenantId, Tier};
use fief_serving::WorkerPool;

use crate::error::{ApiError, ApiResult};

pub struct Placement {
    silo_threads: usize,
    pools: RwLock<HashMap<TenantId, Arc<WorkerPool>>>,
}

impl Placement {
    pub fn new(silo_threads: usize) -> Self {
        Self {
            silo_threads,
            pools: RwLock::new(HashMap::new()),
        }
    }

    /// Makes the tenant's placement match `tier`.
    pub fn apply(&self, tenant: &TenantId, tier: Tier) -> ApiResult<()> {
        let mut pools = self
            .pools
            .write()
            .map_err(|_| ApiError::Internal("placement lock poisoned".into()))?;
        match tier {
            Tier::Silo if !pools.contains_key(tenant) => {
                let pool =
                    WorkerPool::new(&format!("silo-{tenant}"), self.silo_threads).map_err(|e| {
                        ApiError::Unavailable(format!("cannot provision the silo worker pool: {e}"))
                    })?;
                pools.insert(tenant.clone(), Arc::new(pool));
            }
            Tier::Silo => {}
            Tier::Bridge | Tier::Pool => {
                pools.remove(tenant);
            }
        }
        Ok(())
    }

    pub fn remove(&self, tenant: &TenantId) {
        if let Ok(mut pools) = self.pools.write() {
            pools.remove(tenant);
        }
    }

    /// The tenant's dedicated pool, if it has one.
    pub fn pool(&self, tenant: &TenantId) -> Option<Arc<WorkerPool>> {
        self.pools.read().ok().and_then(|p| p.get(tenant).cloned())
    }
}
