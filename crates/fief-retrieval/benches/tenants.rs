//! Query latency with many tenants: BENCH_TENANTS (1,000) tenants with
//! BENCH_CHUNKS (1,000) chunks each, placed as the gateway places them (pool
//! tenants as partitions of one shared index, silo/bridge tenants in an index
//! of their own), 384-dimensional vectors. Each query picks a random tenant,
//! looks up its partition and searches it; every hit is checked to be the
//! tenant's own.
//!
//! `cargo bench -p fief-retrieval --bench tenants`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use fief_core::{Incarnation, TenantId};
use fief_retrieval::placement::{Indexes, Partition, Placement};
use fief_retrieval::{random_unit_vectors, HnswParams};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let tenants = env("BENCH_TENANTS", 1000);
    let chunks = env("BENCH_CHUNKS", 1000);
    let queries = env("BENCH_QUERIES", 5000);
    let dim = 384;
    let threshold = 2000; // the gateway's default knowledge.hnsw_threshold
    let ids: Vec<(TenantId, Incarnation)> = (0..tenants)
        .map(|t| {
            (
                TenantId::parse(&format!("t{t:05}")).unwrap(),
                Incarnation::from_random([1; 16]),
            )
        })
        .collect();
    for placement in [Placement::SharedPartition, Placement::Dedicated] {
        let indexes = Indexes::new();
        let started = Instant::now();
        for (t, tenant) in ids.iter().enumerate() {
            let mut p = Partition::new(dim, threshold, HnswParams::default());
            for (i, v) in random_unit_vectors(chunks, dim, t as u64)
                .iter()
                .enumerate()
            {
                p.insert((t * chunks + i) as u64, v).unwrap();
            }
            indexes.install(tenant, placement, "kb", p).unwrap();
        }
        let built = started.elapsed();
        let probes = random_unit_vectors(queries, dim, 1 << 40);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut times = Vec::with_capacity(queries);
        let mut kind = "";
        for q in &probes {
            let t = rng.gen_range(0..tenants);
            let t0 = Instant::now();
            let partition = indexes.get(&ids[t], placement, "kb").unwrap().unwrap();
            let guard = partition.read().unwrap();
            let hits = guard.search(q, 10).unwrap();
            times.push(t0.elapsed());
            kind = guard.index_kind();
            assert_eq!(hits.len(), 10.min(chunks));
            let own = (t * chunks) as u64..((t + 1) * chunks) as u64;
            assert!(
                hits.iter().all(|h| own.contains(&h.id)),
                "a hit outside the tenant's partition"
            );
        }
        times.sort();
        println!(
            "{tenants} tenants x {chunks} chunks, {placement:?} ({kind} per partition; loaded in {:.1?}): \
             top-10 query p50 {:.1?} p99 {:.1?} over {queries} queries",
            built,
            pct(&times, 0.5),
            pct(&times, 0.99)
        );
    }
}
