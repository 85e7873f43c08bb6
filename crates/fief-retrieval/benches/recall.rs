//! Vector search quality and speed.
//!
//! 1. recall@10 of the HNSW graph against exact search on BENCH_VECTORS
//!    (100,000) random unit vectors of BENCH_DIM (384, MiniLM's) dimensions
//!    in one partition, with `HnswParams::default()` (BENCH_M and
//!    BENCH_EF_CONSTRUCTION override it), for the default `ef_search` and a
//!    few other beam widths (BENCH_EF, comma-separated, adds more): recall,
//!    query latency p50/p99, build time. The requirement is recall@10 >=
//!    0.95 at the default `ef_search`; the bench exits non-zero if not.
//!    BENCH_QUERIES (200) queries, scored against exact search's top 10.
//!
//! Query latency with many tenants, placed as the gateway places them, is
//! `benches/tenants.rs`.
//!
//! `cargo bench -p fief-retrieval --bench recall`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use fief_retrieval::{random_unit_vectors, Exact, Hnsw, HnswParams};

/// The requirement: recall@10 against exact search at the default beam.
const TARGET_RECALL: f64 = 0.95;
const K: usize = 10;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let n = env("BENCH_VECTORS", 100_000);
    let dim = env("BENCH_DIM", 384);
    let queries = random_unit_vectors(env("BENCH_QUERIES", 200), dim, 2);
    let data = random_unit_vectors(n, dim, 1);

    let defaults = HnswParams::default();
    let params = HnswParams {
        m: env("BENCH_M", defaults.m),
        ef_construction: env("BENCH_EF_CONSTRUCTION", defaults.ef_construction),
        ..defaults
    };
    let overridden = params != defaults;

    let started = Instant::now();
    let mut graph = Hnsw::new(dim, params);
    for (i, v) in data.iter().enumerate() {
        graph.insert(i as u64, v).unwrap();
    }
    let build = started.elapsed();
    println!(
        "{n} random unit vectors, {dim} dims: HNSW (m={}, m0={}, ef_construction={}{}) \
         built in {build:.1?} ({:.0} inserts/s)",
        params.m,
        2 * params.m,
        params.ef_construction,
        if overridden { ", NOT the defaults" } else { "" },
        n as f64 / build.as_secs_f64()
    );

    let mut exact = Exact::new(dim);
    for (i, v) in data.iter().enumerate() {
        exact.insert(i as u64, v).unwrap();
    }
    let mut truth = Vec::new();
    let mut exact_times = Vec::new();
    for q in &queries {
        let t0 = Instant::now();
        truth.push(exact.search(q, K).unwrap());
        exact_times.push(t0.elapsed());
    }
    exact_times.sort();
    println!(
        "exact search:          p50 {:>9.2?}  p99 {:>9.2?}",
        pct(&exact_times, 0.5),
        pct(&exact_times, 0.99)
    );

    let mut efs = vec![
        64,
        128,
        256,
        512,
        768,
        params.ef_search,
        2 * params.ef_search,
    ];
    efs.extend(env_list("BENCH_EF"));
    efs.sort_unstable();
    efs.dedup();
    let mut at_default = None;
    for ef in efs {
        let mut found = 0;
        let mut times = Vec::new();
        for (q, t) in queries.iter().zip(&truth) {
            let t0 = Instant::now();
            let hits = graph.search(q, K, Some(ef)).unwrap();
            times.push(t0.elapsed());
            found += hits
                .iter()
                .filter(|h| t.iter().any(|x| x.id == h.id))
                .count();
        }
        times.sort();
        let recall = found as f64 / (K * queries.len()) as f64;
        let default = ef == params.ef_search;
        println!(
            "HNSW ef={ef:>4}: recall@{K} {recall:.3}  p50 {:>9.2?}  p99 {:>9.2?}{}",
            pct(&times, 0.5),
            pct(&times, 0.99),
            if default {
                "  <- default ef_search"
            } else {
                ""
            }
        );
        if default {
            at_default = Some(recall);
        }
    }
    // The default beam through the default entry point (`None`), which must
    // agree with the explicit run above.
    let via_default = queries
        .iter()
        .zip(&truth)
        .map(|(q, t)| {
            let hits = graph.search(q, K, None).unwrap();
            hits.iter()
                .filter(|h| t.iter().any(|x| x.id == h.id))
                .count()
        })
        .sum::<usize>() as f64
        / (K * queries.len()) as f64;
    assert_eq!(Some(via_default), at_default);
    let pass = via_default >= TARGET_RECALL;
    println!(
        "TARGET recall@{K} >= {TARGET_RECALL} at ef_search={} on {n} x {dim} ({} params): \
         {via_default:.3} {}",
        params.ef_search,
        if overridden { "overridden" } else { "default" },
        if pass { "PASS" } else { "FAIL" }
    );
    drop((graph, exact, data));

    if !pass {
        eprintln!("recall target not met at the default ef_search");
        std::process::exit(1);
    }
}
