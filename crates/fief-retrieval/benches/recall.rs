//! Vector search quality and speed.
//!
//! 1. recall@10 of the HNSW graph against exact search on BENCH_VECTORS
//!    (100,000) random unit vectors of BENCH_DIM (384, MiniLM's) dimensions
//!    in one partition, for several beam widths, with query latency.
//! 2. Query latency across BENCH_TENANTS (1,000) partitions of BENCH_CHUNKS
//!    (1,000) vectors each: a query touches its own partition only.
//!
//! `cargo bench -p fief-retrieval --bench recall`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use fief_retrieval::{random_unit_vectors, Exact, Hnsw, HnswParams};

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
    let n = env("BENCH_VECTORS", 100_000);
    let dim = env("BENCH_DIM", 384);
    let queries = random_unit_vectors(200, dim, 2);
    let data = random_unit_vectors(n, dim, 1);

    let mut exact = Exact::new(dim);
    let started = Instant::now();
    let mut graph = Hnsw::new(dim, HnswParams::default());
    for (i, v) in data.iter().enumerate() {
        graph.insert(i as u64, v).unwrap();
        exact.insert(i as u64, v).unwrap();
    }
    println!(
        "{n} random unit vectors, {dim} dims: HNSW (m=16, ef_construction=200) built in {:.1?}",
        started.elapsed()
    );
    let mut truth = Vec::new();
    let mut exact_times = Vec::new();
    for q in &queries {
        let t0 = Instant::now();
        truth.push(exact.search(q, 10).unwrap());
        exact_times.push(t0.elapsed());
    }
    exact_times.sort();
    println!(
        "exact search: p50 {:.2?} p99 {:.2?}",
        pct(&exact_times, 0.5),
        pct(&exact_times, 0.99)
    );
    for ef in [64, 128, 256, 512] {
        let mut found = 0;
        let mut times = Vec::new();
        for (q, t) in queries.iter().zip(&truth) {
            let t0 = Instant::now();
            let hits = graph.search(q, 10, Some(ef)).unwrap();
            times.push(t0.elapsed());
            found += hits
                .iter()
                .filter(|h| t.iter().any(|x| x.id == h.id))
                .count();
        }
        times.sort();
        println!(
            "HNSW ef={ef:>3}: recall@10 {:.3}  p50 {:.2?} p99 {:.2?}",
            found as f64 / (10 * queries.len()) as f64,
            pct(&times, 0.5),
            pct(&times, 0.99)
        );
    }
    drop((graph, exact, data));

    let tenants = env("BENCH_TENANTS", 1_000);
    let chunks = env("BENCH_CHUNKS", 1_000);
    let started = Instant::now();
    let partitions: Vec<Exact> = (0..tenants)
        .map(|t| {
            let mut p = Exact::new(dim);
            for (i, v) in random_unit_vectors(chunks, dim, 100 + t as u64)
                .iter()
                .enumerate()
            {
                p.insert(i as u64, v).unwrap();
            }
            p
        })
        .collect();
    println!(
        "\n{tenants} partitions x {chunks} vectors built in {:.1?}",
        started.elapsed()
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut times = Vec::new();
    for q in queries.iter().cycle().take(2_000) {
        let t = rng.gen_range(0..tenants);
        let t0 = Instant::now();
        let hits = partitions[t].search(q, 10).unwrap();
        times.push(t0.elapsed());
        assert_eq!(hits.len(), 10.min(chunks));
    }
    times.sort();
    println!(
        "query in one tenant's partition (exact, top 10): p50 {:.2?} p99 {:.2?}",
        pct(&times, 0.5),
        pct(&times, 0.99)
    );
}
