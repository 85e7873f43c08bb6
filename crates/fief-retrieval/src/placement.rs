//! Index placement by tier. Silo and bridge tenants each get their own
//! index (a [`TenantIndex`] holding one partition per knowledge base); pool
//! tenants share one index, partitioned inside by (tenant, knowledge base).
//! Every search names its partition, so a pool tenant's search only ever
//! walks its own vectors: there is no global graph filtered afterwards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use fief_core::{Incarnation, TenantId, Tier};

use crate::keyword::Keyword;
use crate::{Exact, Hit, Hnsw, HnswParams, RetrievalError};

/// Where a tenant's vectors live, by tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Its own index (silo, bridge).
    Dedicated,
    /// A partition of the pool tier's shared index.
    SharedPartition,
}

impl Placement {
    pub fn for_tier(tier: Tier) -> Self {
        match tier {
            Tier::Silo | Tier::Bridge => Placement::Dedicated,
            Tier::Pool => Placement::SharedPartition,
        }
    }
}

#[derive(Debug)]
enum Kind {
    Exact(Exact),
    Hnsw(Box<Hnsw>),
}

/// One knowledge base's vectors: exact search while small, an HNSW graph
/// from `threshold` vectors on (exact is faster and perfect when small);
/// and, given a key, its chunks' keyword index.
#[derive(Debug)]
pub struct Partition {
    kind: Kind,
    dim: usize,
    threshold: usize,
    params: HnswParams,
    keyword: Option<Keyword>,
}

impl Partition {
    pub fn new(dim: usize, threshold: usize, params: HnswParams) -> Self {
        Self {
            kind: Kind::Exact(Exact::new(dim)),
            dim,
            threshold,
            params,
            keyword: None,
        }
    }

    /// With a keyword index whose terms are hashed under `key`.
    pub fn with_keywords(mut self, key: &[u8; 32]) -> Self {
        self.keyword = Some(Keyword::new(key));
        self
    }

    /// Indexes chunk `id`'s text for keyword search (without a keyword
    /// index, nothing).
    pub fn index_text(&mut self, id: u64, text: &str) {
        if let Some(k) = &mut self.keyword {
            k.insert(id, text);
        }
    }

    /// The best `k` chunks for `query` by BM25 (none without a keyword index).
    pub fn search_keyword(&self, query: &str, k: usize) -> Vec<Hit> {
        self.keyword
            .as_ref()
            .map_or_else(Vec::new, |kw| kw.search(query, k))
    }

    pub fn len(&self) -> usize {
        match &self.kind {
            Kind::Exact(e) => e.len(),
            Kind::Hnsw(h) => h.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// "exact" or "hnsw", for the API and the benchmark.
    pub fn index_kind(&self) -> &'static str {
        match &self.kind {
            Kind::Exact(_) => "exact",
            Kind::Hnsw(_) => "hnsw",
        }
    }

    pub fn insert(&mut self, id: u64, v: &[f32]) -> Result<(), RetrievalError> {
        match &mut self.kind {
            Kind::Exact(e) => {
                e.insert(id, v)?;
                if e.len() >= self.threshold {
                    let mut graph = Hnsw::new(self.dim, self.params);
                    for (id, v) in e.entries() {
                        graph.insert(id, v)?;
                    }
                    self.kind = Kind::Hnsw(Box::new(graph));
                }
                Ok(())
            }
            Kind::Hnsw(h) => h.insert(id, v),
        }
    }

    pub fn remove(&mut self, id: u64) -> usize {
        if let Some(k) = &mut self.keyword {
            k.remove(id);
        }
        match &mut self.kind {
            Kind::Exact(e) => e.remove(id),
            Kind::Hnsw(h) => {
                let removed = h.remove(id);
                // Tombstones slow the walk; rebuild once a quarter are dead.
                if removed > 0 && h.nodes() > 0 && h.len() * 4 < h.nodes() * 3 {
                    if let Ok(fresh) = h.compacted() {
                        **h = fresh;
                    }
                }
                removed
            }
        }
    }

    pub fn search(&self, query: &[f32], k: usize) -> Result<Vec<Hit>, RetrievalError> {
        match &self.kind {
            Kind::Exact(e) => e.search(query, k),
            Kind::Hnsw(h) => h.search(query, k, None),
        }
    }
}

pub type SharedPartitionRef = Arc<RwLock<Partition>>;

/// A silo or bridge tenant's own index.
#[derive(Debug, Default)]
pub struct TenantIndex {
    partitions: Mutex<HashMap<String, SharedPartitionRef>>,
}

/// A tenant incarnation: indexes of an offboarded tenant are never found
/// by a later tenant with the same id.
pub type Owner = (TenantId, Incarnation);

/// Every loaded index of the process.
#[derive(Debug, Default)]
pub struct Indexes {
    /// The pool tier's one index, partitioned by (tenant, knowledge base).
    shared: Mutex<HashMap<(Owner, String), SharedPartitionRef>>,
    dedicated: Mutex<HashMap<Owner, Arc<TenantIndex>>>,
}

fn poisoned<T>(_: T) -> RetrievalError {
    RetrievalError::Poisoned
}

impl Indexes {
    pub fn new() -> Self {
        Self::default()
    }

    /// The loaded partition of `kb`, if any, where `placement` puts it.
    pub fn get(
        &self,
        tenant: &Owner,
        placement: Placement,
        kb: &str,
    ) -> Result<Option<SharedPartitionRef>, RetrievalError> {
        Ok(match placement {
            Placement::SharedPartition => self
                .shared
                .lock()
                .map_err(poisoned)?
                .get(&(tenant.clone(), kb.to_owned()))
                .cloned(),
            Placement::Dedicated => {
                let index = self
                    .dedicated
                    .lock()
                    .map_err(poisoned)?
                    .get(tenant)
                    .cloned();
                match index {
                    Some(index) => index.partitions.lock().map_err(poisoned)?.get(kb).cloned(),
                    None => None,
                }
            }
        })
    }

    /// Installs a freshly loaded partition unless another load won the race;
    /// returns the one in place.
    pub fn install(
        &self,
        tenant: &Owner,
        placement: Placement,
        kb: &str,
        partition: Partition,
    ) -> Result<SharedPartitionRef, RetrievalError> {
        let fresh = Arc::new(RwLock::new(partition));
        Ok(match placement {
            Placement::SharedPartition => self
                .shared
                .lock()
                .map_err(poisoned)?
                .entry((tenant.clone(), kb.to_owned()))
                .or_insert(fresh)
                .clone(),
            Placement::Dedicated => {
                let index = self
                    .dedicated
                    .lock()
                    .map_err(poisoned)?
                    .entry(tenant.clone())
                    .or_default()
                    .clone();
                let mut partitions = index.partitions.lock().map_err(poisoned)?;
                partitions.entry(kb.to_owned()).or_insert(fresh).clone()
            }
        })
    }

    /// Forgets a knowledge base's partition wherever it is.
    pub fn drop_knowledge_base(&self, tenant: &Owner, kb: &str) -> Result<(), RetrievalError> {
        self.shared
            .lock()
            .map_err(poisoned)?
            .remove(&(tenant.clone(), kb.to_owned()));
        if let Some(index) = self.dedicated.lock().map_err(poisoned)?.get(tenant) {
            index.partitions.lock().map_err(poisoned)?.remove(kb);
        }
        Ok(())
    }

    /// Forgets everything of a tenant id, every incarnation (offboarding,
    /// or a tier change: the next request reloads its vectors into the new
    /// placement).
    pub fn drop_tenant(&self, tenant: &TenantId) -> Result<(), RetrievalError> {
        self.shared
            .lock()
            .map_err(poisoned)?
            .retain(|((t, _), _), _| t != tenant);
        self.dedicated
            .lock()
            .map_err(poisoned)?
            .retain(|(t, _), _| t != tenant);
        Ok(())
    }

    /// Loaded partitions per placement: (dedicated indexes, shared partitions).
    pub fn counts(&self) -> (usize, usize) {
        let dedicated = self.dedicated.lock().map_or(0, |d| d.len());
        let shared = self.shared.lock().map_or(0, |s| s.len());
        (dedicated, shared)
    }

    /// FAULT INJECTION ONLY: a search of the shared index that forgets its
    /// partition key, i.e. the query bug defence in depth must survive.
    #[cfg(feature = "fault-injection")]
    pub fn search_shared_unpartitioned(
        &self,
        query: &[f32],
        k: usize,
    ) -> Result<Vec<Hit>, RetrievalError> {
        let parts: Vec<SharedPartitionRef> = self
            .shared
            .lock()
            .map_err(poisoned)?
            .values()
            .cloned()
            .collect();
        let mut hits = Vec::new();
        for p in parts {
            hits.extend(p.read().map_err(poisoned)?.search(query, k)?);
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(k);
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random_unit_vectors;

    fn t(s: &str) -> Owner {
        (
            TenantId::parse(s).unwrap(),
            Incarnation::from_random([1; 16]),
        )
    }

    #[test]
    fn partitions_are_placed_by_tier_and_kept_apart() {
        let idx = Indexes::new();
        let vs = random_unit_vectors(20, 8, 3);
        for (i, tenant) in ["aa", "bb"].iter().enumerate() {
            let mut p = Partition::new(8, 1000, HnswParams::default());
            for (j, v) in vs.iter().enumerate().skip(i * 10).take(10) {
                p.insert(j as u64, v).unwrap();
            }
            idx.install(&t(tenant), Placement::SharedPartition, "kb", p)
                .unwrap();
        }
        let aa = idx
            .get(&t("aa"), Placement::SharedPartition, "kb")
            .unwrap()
            .unwrap();
        // aa searching for one of bb's vectors finds only its own ids.
        let hits = aa.read().unwrap().search(&vs[15], 10).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| h.id < 10));
        // Dedicated placement is a different index altogether.
        assert!(idx
            .get(&t("aa"), Placement::Dedicated, "kb")
            .unwrap()
            .is_none());
        // Another incarnation of aa finds nothing of this one's.
        let later = (t("aa").0, Incarnation::from_random([2; 16]));
        assert!(idx
            .get(&later, Placement::SharedPartition, "kb")
            .unwrap()
            .is_none());
        idx.drop_tenant(&t("aa").0).unwrap();
        assert!(idx
            .get(&t("aa"), Placement::SharedPartition, "kb")
            .unwrap()
            .is_none());
        assert!(idx
            .get(&t("bb"), Placement::SharedPartition, "kb")
            .unwrap()
            .is_some());
    }

    #[test]
    fn a_partition_switches_to_hnsw_at_the_threshold_and_still_removes() {
        let vs = random_unit_vectors(300, 16, 4);
        let mut p = Partition::new(16, 100, HnswParams::default());
        for (i, v) in vs.iter().enumerate() {
            p.insert(i as u64, v).unwrap();
            assert_eq!(p.index_kind(), if i + 1 < 100 { "exact" } else { "hnsw" });
        }
        assert_eq!(p.search(&vs[7], 1).unwrap()[0].id, 7);
        assert_eq!(p.remove(7), 1);
        assert!(p.search(&vs[7], 10).unwrap().iter().all(|h| h.id != 7));
        assert_eq!(p.len(), 299);
    }
}
