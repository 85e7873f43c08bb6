//! fief in front of a local OpenAI-compatible upstream (`fief-llm-mock`)
//! against the same upstream called directly, non-streaming and streaming,
//! at two concurrencies, with client, gateway and upstream sharing this
//! machine. The gateway's path is the whole gate: credential, Cedar (with
//! the foundation-model guardrail), audit, request rewriting, routing, the
//! usage record (audited) and metrics. Rows of one run share the machine
//! state, so compare within a run.
//!
//! `cargo bench -p fief-server --bench llm` (BENCH_SECONDS per row, 3;
//! BENCH_CONNECTIONS, "1,32"; BENCH_CHUNKS streamed pieces per answer, 4)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use fief_config::{Config, LlmModelEntry, UpstreamConfig};
use fief_llm_mock::{MockOptions, MockUpstream};

mod common;
use common::load::{load, request};
use common::*;

fn main() {
    let seconds = env_or("BENCH_SECONDS", 3) as f64;
    let connections: Vec<usize> = std::env::var("BENCH_CONNECTIONS")
        .unwrap_or_else(|_| "1,32".into())
        .split(',')
        .map(|c| c.trim().parse().unwrap())
        .collect();
    // The upstream and the gateway each on a runtime with a worker per core,
    // as two separate servers would run.
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
            chunks: env_or("BENCH_CHUNKS", 4),
            ..Default::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::ephemeral(dir.path());
    config.llm.upstreams = vec![UpstreamConfig {
        name: "bench".into(),
        url: mock.base_url(),
        api_key_env: Some("BENCH_UPSTREAM_KEY".into()),
        models: vec![LlmModelEntry::Id("m".into())],
        max_concurrency: 256,
        timeout_secs: 30,
        ca_file: None,
        tenants: Vec::new(),
        exclusive: false,
    }];
    let secrets = fief_server::Secrets {
        upstream_keys: BTreeMap::from([("BENCH_UPSTREAM_KEY".into(), "sk-bench".into())]),
        ..Default::default()
    };
    let (server, key) = server_rt.block_on(async {
        let server = fief_server::start(config, secrets).await.unwrap();
        let http = reqwest::Client::new();
        let key = create_tenant(&http, server.admin_addr, &server.admin_token, "bench").await;
        (server, key)
    });
    let bearer = format!("Bearer {key}");
    let body = |stream: bool| {
        serde_json::to_vec(&json!({
            "model": "m", "max_tokens": 16, "stream": stream,
            "messages": [{"role": "user", "content": "hello from the benchmark"}],
        }))
        .unwrap()
    };
    let call = |auth: &str, stream: bool| {
        let mut headers = vec![("Content-Type", "application/json")];
        if !auth.is_empty() {
            headers.push(("Authorization", auth));
        }
        request("POST", "/v1/chat/completions", &headers, &body(stream))
    };
    let rows = [
        (
            "upstream direct",
            mock.addr(),
            call("Bearer sk-bench", false),
        ),
        ("through fief", server.data_addr, call(&bearer, false)),
        (
            "upstream direct, stream",
            mock.addr(),
            call("Bearer sk-bench", true),
        ),
        (
            "through fief, stream",
            server.data_addr,
            call(&bearer, true),
        ),
    ];
    for (_, addr, req) in &rows {
        load(*addr, req, 4, 0.5);
    }
    println!(
        "{seconds} s per row; one load thread; gateway and upstream on 2 workers each; {} streamed chunks",
        env_or("BENCH_CHUNKS", 4)
    );
    println!(
        "{:<34} {:>9} {:>10} {:>10} {:>12}",
        "", "req/s", "p50 (µs)", "p99 (µs)", "TTFT p50"
    );
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut summary = Vec::new();
    for c in &connections {
        let mut results = Vec::new();
        for (name, addr, req) in &rows {
            let (s, ttft) = load(*addr, req, *c, seconds);
            println!(
                "{:<34} {:>9.0} {:>10.1} {:>10.1} {:>12}",
                format!("{name}, c={c}"),
                s.rps,
                us(s.p50),
                us(s.p99),
                ttft.as_ref()
                    .map_or("-".into(), |t| format!("{:.1} µs", us(t.p50)))
            );
            results.push((s, ttft));
        }
        let added = |i: usize, j: usize| {
            (
                us(results[j].0.p50) - us(results[i].0.p50),
                us(results[j].0.p99) - us(results[i].0.p99),
            )
        };
        let (p50, p99) = added(0, 1);
        let (sp50, sp99) = added(2, 3);
        let ttft = match (&results[2].1, &results[3].1) {
            (Some(a), Some(b)) => format!("{:+.0} µs", us(b.p50) - us(a.p50)),
            _ => "-".into(),
        };
        summary.push(format!(
            "c={c}: added by fief p50 {p50:+.0} µs, p99 {p99:+.0} µs; streaming p50 {sp50:+.0} µs, p99 {sp99:+.0} µs, time to first token {ttft}; fief {:.0} req/s ({:.0}% of direct), streaming {:.0} req/s",
            results[1].0.rps,
            100.0 * results[1].0.rps / results[0].0.rps,
            results[3].0.rps,
        ));
    }
    for line in summary {
        println!("{line}");
    }
    let _ = server_rt.block_on(server.shutdown());
    upstream_rt.block_on(mock.stop());
}
