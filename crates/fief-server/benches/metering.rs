//! What metering and private logging cost on the foundation-model path:
//! the same gateway build, non-streamed chat calls at concurrency 8 to a
//! local upstream (`fief-llm-mock`), with usage events and private logs
//! off, each alone, and both on (every call's usage event and its sealed
//! log record committed before the answer). TMPDIR on a tmpfs shows what
//! the commits' fsyncs cost. Rows alternate over
//! several rounds in one run, so machine noise falls on every row alike.
//!
//! `cargo bench -p fief-server --bench metering` (BENCH_SECONDS per row, 3;
//! BENCH_ROUNDS, 3; BENCH_CONNECTIONS, 8; BENCH_UPSTREAM_MS, the upstream's
//! answer time, 0)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;

use fief_config::{Config, LlmModelEntry, UpstreamConfig};
use fief_llm_mock::{MockOptions, MockUpstream};

mod common;
use common::load::{load, request};
use common::*;

fn main() {
    let seconds = env_or("BENCH_SECONDS", 3) as f64;
    let rounds = env_or("BENCH_ROUNDS", 3);
    let c = env_or("BENCH_CONNECTIONS", 8);
    // The upstream's answer time (a real model takes hundreds of ms).
    let upstream_ms = env_or("BENCH_UPSTREAM_MS", 0);
    let upstream_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mock = upstream_rt
        .block_on(MockUpstream::start(MockOptions {
            name: "bench".into(),
            delay: std::time::Duration::from_millis(upstream_ms as u64),
            ..Default::default()
        }))
        .unwrap();
    let variants = [
        ("off", false, false),
        ("usage events", true, false),
        ("private logs", false, true),
        ("usage + private logs", true, true),
    ];
    let mut dirs = Vec::new();
    let mut targets = Vec::new();
    for (name, metering, logs) in variants {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::ephemeral(dir.path());
        config.metering.enabled = metering;
        config.logs.enabled = logs;
        config.llm.upstreams = vec![UpstreamConfig {
            name: "bench".into(),
            url: mock.base_url(),
            api_key_env: None,
            models: vec![LlmModelEntry::Id("m".into())],
            max_concurrency: 256,
            timeout_secs: 30,
            ca_file: None,
            tenants: Vec::new(),
            exclusive: false,
        }];
        let (server, key) = server_rt.block_on(async {
            let server = fief_server::start(config, Default::default())
                .await
                .unwrap();
            let http = reqwest::Client::new();
            let key = create_tenant(&http, server.admin_addr, &server.admin_token, "bench").await;
            (server, key)
        });
        let body = serde_json::to_vec(&json!({
            "model": "m", "max_tokens": 16,
            "messages": [{"role": "user", "content": "hello from the benchmark"}],
        }))
        .unwrap();
        let bearer = format!("Bearer {key}");
        let req = request(
            "POST",
            "/v1/chat/completions",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &bearer),
            ],
            &body,
        );
        load(server.data_addr, &req, 4, 0.5);
        targets.push((name, server.data_addr, req));
        dirs.push((dir, server));
    }
    println!("{seconds} s per row, {rounds} rounds, c={c}, upstream answers in {upstream_ms} ms; gateway and upstream on 2 workers each; SQLite store");
    println!(
        "{:<34} {:>9} {:>10} {:>10}",
        "", "req/s", "p50 (µs)", "p99 (µs)"
    );
    let mut totals = vec![0.0f64; targets.len()];
    for round in 1..=rounds {
        for (i, (name, addr, req)) in targets.iter().enumerate() {
            let (s, _) = load(*addr, req, c, seconds);
            totals[i] += s.rps;
            println!(
                "{:<34} {:>9.0} {:>10.1} {:>10.1}",
                format!("{name}, round {round}"),
                s.rps,
                s.p50.as_secs_f64() * 1e6,
                s.p99.as_secs_f64() * 1e6,
            );
        }
    }
    let mean: Vec<f64> = totals.iter().map(|t| t / rounds as f64).collect();
    for (i, (name, _, _)) in targets.iter().enumerate() {
        println!(
            "{name}: {:.0} req/s on average, {:+.1}% against off",
            mean[i],
            100.0 * (mean[i] / mean[0] - 1.0)
        );
    }
    drop(dirs);
}
