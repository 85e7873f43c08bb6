//! The gate's cost against the HTTP floor, as `wrk -t1` measures it: one
//! load-generator thread with C keep-alive connections (raw HTTP/1.1, no
//! client library in the way) against a gateway on its own 2-worker runtime,
//! for three requests: `GET /healthz` (the HTTP floor, no gate), `GET
//! /api/v1/me` (credential, Cedar, audit) and an invocation of a 4→8→3 MLP
//! on the shared endpoint (two decisions, the model record, tract). Every
//! row of one run shares the machine state, so the ratios to the floor are
//! what to compare. Then the layers one at a time, in-process.
//!
//! `cargo bench -p fief-server --bench gate` (BENCH_SECONDS per row, 3;
//! BENCH_CONNECTIONS, "1,8"; BENCH_AUDIT_FSYNC always|batch|never, batch)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use fief_config::Config;
use fief_serving::onnx_builder::Mlp;

mod common;
use common::load::{load, request};
use common::*;

fn main() {
    let seconds = env_or("BENCH_SECONDS", 3) as f64;
    let connections: Vec<usize> = std::env::var("BENCH_CONNECTIONS")
        .unwrap_or_else(|_| "1,8".into())
        .split(',')
        .map(|c| c.trim().parse().unwrap())
        .collect();
    // The gateway, as `fief serve` runs it: a runtime with a worker per core.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::ephemeral(dir.path());
    let fsync = std::env::var("BENCH_AUDIT_FSYNC").unwrap_or_else(|_| "batch".into());
    config.audit.fsync = match fsync.as_str() {
        "always" => fief_config::AuditFsync::Always,
        "never" => fief_config::AuditFsync::Never,
        "batch" => fief_config::AuditFsync::Batch,
        other => panic!("BENCH_AUDIT_FSYNC must be always, batch or never, not {other}"),
    };
    let (server, key) = server_rt.block_on(async {
        let server = fief_server::start(config, fief_server::Secrets::default())
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let key = create_tenant(&http, server.admin_addr, &server.admin_token, "bench").await;
        put_model(
            &http,
            server.data_addr,
            &key,
            "mlp",
            Mlp::seeded(&[4, 8, 3], 1).to_onnx(),
        )
        .await;
        (server, key)
    });
    let addr = server.data_addr;
    let bearer = format!("Bearer {key}");
    let body = serde_json::to_vec(&json!({"inputs": [[0.5, -1.0, 2.0, 0.25]]})).unwrap();
    let rows = [
        ("GET /healthz", request("GET", "/healthz", &[], b"")),
        (
            "GET /api/v1/me",
            request("GET", "/api/v1/me", &[("Authorization", &bearer)], b""),
        ),
        (
            "POST invocations",
            request(
                "POST",
                "/endpoints/shared/invocations",
                &[
                    ("Authorization", &bearer),
                    ("X-Amzn-SageMaker-Target-Model", "mlp"),
                    ("Content-Type", "application/json"),
                ],
                &body,
            ),
        ),
    ];
    // Warm-up: connections, caches, the model.
    for (_, req) in &rows {
        load(addr, req, 2, 0.5);
    }
    println!("{seconds} s per row; one load thread; gateway on 2 workers; audit.fsync = {fsync}");
    print!("{:<20}", "");
    for c in &connections {
        print!(
            " {:>11} {:>9} {:>7}",
            format!("c={c}: rps"),
            "p50",
            "vs floor"
        );
    }
    println!();
    let mut results: Vec<Vec<Stats>> = Vec::new();
    for (name, req) in &rows {
        print!("{name:<20}");
        let mut line = Vec::new();
        for (i, c) in connections.iter().enumerate() {
            let (s, _) = load(addr, req, *c, seconds);
            let floor_rps = results.first().map_or(s.rps, |f: &Vec<Stats>| f[i].rps);
            print!(
                " {:>11.0} {:>7.0}µs {:>6.0}%",
                s.rps,
                s.p50.as_secs_f64() * 1e6,
                100.0 * s.rps / floor_rps
            );
            line.push(s);
        }
        println!();
        results.push(line);
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for (i, c) in connections.iter().enumerate() {
        let (floor, me, invoke) = (&results[0][i], &results[1][i], &results[2][i]);
        println!(
            "c={c}: added p50 over the floor: /me +{:.0} µs, invocation +{:.0} µs; rate vs floor: /me {:.0}%, invocation {:.0}%",
            us(me.p50) - us(floor.p50),
            us(invoke.p50) - us(floor.p50),
            100.0 * me.rps / floor.rps,
            100.0 * invoke.rps / floor.rps
        );
    }
    layers(&server_rt, &server.state, &key);
    let _ = server_rt.block_on(server.shutdown());
}

/// Median of `n` timed runs of `f`, in µs.
async fn median_us<F, Fut>(n: usize, mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        f().await;
        times.push(t0.elapsed());
    }
    times.sort();
    times[n / 2].as_secs_f64() * 1e6
}

/// Each layer of an invocation on its own, in-process (no HTTP): what the
/// gate's cost is made of.
fn layers(rt: &tokio::runtime::Runtime, state: &Arc<fief_server::AppState>, key: &str) {
    use fief_policy::{Action, Resource};
    let n = 20_000;
    rt.block_on(async {
        let principal = state.store.authenticate(key).await.unwrap();
        let tenant = principal.tenant().unwrap().clone();
        let model = fief_core::ModelRef {
            owner: tenant.clone(),
            name: fief_core::ModelName::parse("mlp").unwrap(),
        };
        let resource = Resource::Model(model.clone());
        let scope = state
            .decide(&principal, Action::InvokeModel, &resource, None)
            .await
            .unwrap()
            .into_scope()
            .unwrap();
        let record = state
            .store
            .get_model(&scope, &model.name)
            .await
            .unwrap()
            .unwrap();
        let loaded = state
            .cache
            .get(&scope, &model.name, record.version)
            .unwrap();
        let body = serde_json::to_vec(&json!({"inputs": [[0.5, -1.0, 2.0, 0.25]]})).unwrap();
        let inputs = fief_serving::Inputs::from_json(&json!([[0.5, -1.0, 2.0, 0.25]])).unwrap();
        let event = || fief_audit::Event {
            kind: fief_audit::Kind::Authz,
            request_id: "req_0123456789abcdef0123456789abcdef".into(),
            principal: principal.audit_name(),
            tenant: Some(tenant.to_string()),
            incarnation: principal.incarnation().map(ToString::to_string),
            action: "InvokeModel".into(),
            resource: resource.frn(),
            decision: fief_audit::Decision::Allow,
            policies: vec!["tenant-default".into()],
            reason: None,
            source: None,
            usage: None,
        };
        let rows = [
            (
                "credential (key lookup, hash, tenant state)",
                median_us(n, || async {
                    std::hint::black_box(state.store.authenticate(key).await.unwrap());
                })
                .await,
            ),
            (
                "decision (policy set, Cedar, scope)",
                median_us(n, || async {
                    std::hint::black_box(
                        state
                            .decide(&principal, Action::InvokeModel, &resource, None)
                            .await
                            .unwrap(),
                    );
                })
                .await,
            ),
            (
                "audit append (group commit)",
                median_us(n, || async {
                    std::hint::black_box(state.audit.append(event()).await.unwrap());
                })
                .await,
            ),
            (
                "store: model record",
                median_us(n, || async {
                    std::hint::black_box(state.store.get_model(&scope, &model.name).await.unwrap());
                })
                .await,
            ),
            (
                "loaded-model cache lookup",
                median_us(n, || async {
                    std::hint::black_box(state.cache.get(&scope, &model.name, record.version));
                })
                .await,
            ),
            (
                "run, inline (tract)",
                median_us(n, || async {
                    std::hint::black_box(loaded.run(&inputs).unwrap());
                })
                .await,
            ),
            (
                "run, via spawn_blocking",
                median_us(n, || async {
                    let (m, i) = (loaded.clone(), inputs.clone());
                    std::hint::black_box(
                        tokio::task::spawn_blocking(move || m.run(&i))
                            .await
                            .unwrap()
                            .unwrap(),
                    );
                })
                .await,
            ),
            (
                "parse body + encode answer",
                median_us(n, || async {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let i = fief_serving::Inputs::from_json(&v["inputs"]).unwrap();
                    std::hint::black_box(i);
                    let out = loaded.run(&inputs).unwrap();
                    std::hint::black_box(serde_json::to_vec(&json!({"outputs": out.0})).unwrap());
                })
                .await,
            ),
        ];
        println!("\nlayers of an invocation, in-process, median of {n}:");
        for (name, us) in rows {
            println!("  {name:<46} {us:>7.1} µs");
        }
    });
}
