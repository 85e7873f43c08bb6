//! Distributed mode's cost and scaling, side by side in one run: a single
//! node on SQLite (the file audit log) against a single node on PostgreSQL
//! (the shared audit chain, the change follower), then one and three
//! replicas on one PostgreSQL behind the same round-robin HTTP balancer
//! (`fief_llm_mock::relay::Balancer`, per request). Load: the gate bench's
//! raw keep-alive connections from one thread; every gateway (and the
//! balancer) on one 2-worker runtime, as on the 2-core machine the numbers
//! in the README come from.
//!
//! `cargo bench -p fief-server --bench replicas` (needs
//! FIEF_TEST_DATABASE_URL and FIEF_TEST_S3_URL, as `scripts/test.sh` sets
//! them; BENCH_SECONDS per row, 3; BENCH_CONNECTIONS "1,8")
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use fief_config::Config;
use fief_llm_mock::relay::Balancer;
use fief_serving::onnx_builder::Mlp;
use serde_json::json;

mod common;
#[path = "../tests/common/pg.rs"]
#[allow(dead_code)]
mod pg;
use common::load::{load, request};
use common::*;

struct Setup {
    name: &'static str,
    data: SocketAddr,
    key: String,
}

fn main() {
    if std::env::var("FIEF_TEST_DATABASE_URL").is_err() {
        eprintln!("the replicas bench needs FIEF_TEST_DATABASE_URL (a PostgreSQL it may create databases in)");
        std::process::exit(2);
    }
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .init();
    // Replicas share model bytes only through a bucket.
    let Ok(s3) = std::env::var("FIEF_TEST_S3_URL") else {
        eprintln!("the replicas bench needs FIEF_TEST_S3_URL (an S3-compatible server, e.g. moto)");
        std::process::exit(2);
    };
    let s3 = s3.trim_end_matches('/').to_owned();
    let bucket = format!("fief-bench-{:06x}", rand::random::<u32>() & 0xff_ffff);
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing-secret");
    let seconds = env_or("BENCH_SECONDS", 3) as f64;
    let connections: Vec<usize> = std::env::var("BENCH_CONNECTIONS")
        .unwrap_or_else(|_| "1,8".into())
        .split(',')
        .map(|c| c.trim().parse().unwrap())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let secrets = fief_server::Secrets {
        admin_token: Some(format!("bench-{:032x}", rand::random::<u128>())),
        master_key: Some(hex::encode(rand::random::<[u8; 32]>())),
        ..Default::default()
    };
    let mut keep = Vec::new();
    let mut dirs = Vec::new();
    rt.block_on(async {
        let made = reqwest::Client::new()
            .put(format!("{s3}/{bucket}"))
            .send()
            .await
            .unwrap();
        assert!(made.status().is_success());
    });
    let mut start = |pg: Option<&pg::TestPg>| {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::ephemeral(dir.path());
        config.postgres = pg.map(|p| p.config.clone());
        // On PostgreSQL, model bytes in the bucket (as replicas need).
        config.object_store = pg.map(|_| fief_config::ObjectStoreConfig {
            url: format!("s3://{bucket}/bench"),
            endpoint: Some(s3.clone()),
            region: "us-east-1".into(),
            allow_http: true,
            retry_timeout_ms: 1500,
        });
        dirs.push(dir);
        rt.block_on(fief_server::start(config, secrets.clone()))
            .unwrap()
    };
    // Each setup gets its own tenant and model, created through it.
    let prepare = |rt: &tokio::runtime::Runtime, data: SocketAddr, admin: SocketAddr, id: &str| {
        rt.block_on(async {
            let http = reqwest::Client::new();
            let token = secrets.admin_token.clone().unwrap();
            let key = create_tenant(&http, admin, &token, id).await;
            put_model(
                &http,
                data,
                &key,
                "mlp",
                Mlp::seeded(&[4, 8, 3], 1).to_onnx(),
            )
            .await;
            key
        })
    };
    let sqlite = start(None);
    let one_pg = rt.block_on(pg::database()).unwrap();
    let single_pg = start(Some(&one_pg));
    let shared_pg = rt.block_on(pg::database()).unwrap();
    let replicas: Vec<_> = (0..3).map(|_| start(Some(&shared_pg))).collect();
    let _enter = rt.enter();
    let lb_one = rt
        .block_on(Balancer::start(vec![replicas[0].data_addr]))
        .unwrap();
    let lb_three = rt
        .block_on(Balancer::start(
            replicas.iter().map(|r| r.data_addr).collect(),
        ))
        .unwrap();
    let setups = vec![
        Setup {
            name: "1 node, SQLite",
            data: sqlite.data_addr,
            key: prepare(&rt, sqlite.data_addr, sqlite.admin_addr, "lite"),
        },
        Setup {
            name: "1 node, PostgreSQL",
            data: single_pg.data_addr,
            key: prepare(&rt, single_pg.data_addr, single_pg.admin_addr, "single"),
        },
        Setup {
            name: "balancer → 1 replica",
            data: lb_one.addr,
            key: prepare(&rt, replicas[0].data_addr, replicas[0].admin_addr, "one"),
        },
        Setup {
            name: "balancer → 3 replicas",
            data: lb_three.addr,
            key: prepare(&rt, replicas[1].data_addr, replicas[1].admin_addr, "three"),
        },
    ];
    let body = serde_json::to_vec(&json!({"inputs": [[0.5, -1.0, 2.0, 0.25]]})).unwrap();
    let requests = |key: &str| {
        let bearer = format!("Bearer {key}");
        [
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
        ]
    };
    // Warm-up: connections, caches, every replica's copy of the model.
    for s in &setups {
        for (_, req) in requests(&s.key) {
            load(s.data, &req, 3, 0.5);
        }
    }
    println!("{seconds} s per row; one load thread; every gateway and the balancer on one 2-worker runtime");
    print!("{:<24} {:<18}", "", "");
    for c in &connections {
        print!(" {:>11} {:>9}", format!("c={c}: rps"), "p50");
    }
    println!();
    // results[setup][request][connections]
    let mut results: Vec<Vec<Vec<Stats>>> = Vec::new();
    for s in &setups {
        let mut per_request = Vec::new();
        for (name, req) in requests(&s.key) {
            print!("{:<24} {name:<18}", s.name);
            let mut line = Vec::new();
            for c in &connections {
                let (st, _) = load(s.data, &req, *c, seconds);
                print!(" {:>11.0} {:>7.0}µs", st.rps, st.p50.as_secs_f64() * 1e6);
                line.push(st);
            }
            println!();
            per_request.push(line);
        }
        results.push(per_request);
    }
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    for (i, c) in connections.iter().enumerate() {
        for (r, name) in ["/me", "invocation"].iter().enumerate() {
            let (lite, pg, one, three) = (
                &results[0][r][i],
                &results[1][r][i],
                &results[2][r][i],
                &results[3][r][i],
            );
            println!(
                "c={c} {name}: PostgreSQL vs SQLite p50 {:+.0} µs; 3 replicas vs 1 behind the balancer: {:.2}x the rate, p50 {:+.0} µs",
                us(pg.p50) - us(lite.p50),
                three.rps / one.rps,
                us(three.p50) - us(one.p50),
            );
        }
    }
    keep.push(sqlite);
    keep.push(single_pg);
    keep.extend(replicas);
    drop(lb_one);
    drop(lb_three);
    for s in keep {
        let _ = rt.block_on(s.shutdown());
    }
    rt.block_on(one_pg.cleanup());
    rt.block_on(shared_pg.cleanup());
}
