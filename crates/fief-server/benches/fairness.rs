//! No noisy neighbour, measured. Two pool tenants share the shared ONNX
//! pool (one slot per core, the default) and one pooled upstream (8 slots,
//! 40-60 ms a call); tenant N sends ten times the load of tenant Q (ten
//! times the connections, each sending as soon as its answer came). For
//! each resource two rows: Q asking less than its share (1 connection
//! against N's 10), its latency alone and under N's load; and both
//! backlogged (8 against 80: more than either resource's slots, so Q always
//! has a request waiting), each tenant's share of the service. With the
//! scheduler on fair queueing and, in the same run, first come first
//! served. Then the cost of the admission check itself: in memory, and via
//! Redis (round trips counted).
//!
//! `cargo bench -p fief-server --bench fairness` (BENCH_SECONDS per row, 4;
//! BENCH_REDIS_URL, else FIEF_TEST_REDIS_URL, else redis://127.0.0.1:6379)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use fief_config::{Config, Limits, LlmModelEntry, RedisConfig, Scheduling, UpstreamConfig};
use fief_llm_mock::{MockOptions, MockUpstream};
use fief_quota::{Ask, Level, Outcome, Quotas, Settings};

mod common;
use common::load::{load, request};
use common::*;

fn main() {
    let seconds = env_or("BENCH_SECONDS", 4) as f64;
    let upstream_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // The upstream takes 40-60 ms a call and holds it: an I/O-bound
    // resource whose slots are the contended thing.
    let mock = upstream_rt
        .block_on(MockUpstream::start(MockOptions {
            name: "bench".into(),
            delay: Duration::from_millis(40),
            delay_jitter: Duration::from_millis(20),
            ..Default::default()
        }))
        .unwrap();
    println!(
        "Shared ONNX pool (one slot per core) and one pooled upstream (8 slots, 40-60 ms a call)."
    );
    println!("Latencies in µs; N always has ten times Q's connections.");
    for mode in [Scheduling::Fair, Scheduling::Fifo] {
        run(mode, &mock, seconds);
    }
    admission_cost();
}

struct Gateway {
    _rt: tokio::runtime::Runtime,
    _server: fief_server::Running,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    n: String,
    q: String,
}

fn gateway(mode: Scheduling, mock: &MockUpstream) -> Gateway {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::ephemeral(dir.path());
    config.quotas.scheduling = mode;
    config.llm.upstreams = vec![UpstreamConfig {
        name: "bench".into(),
        url: mock.base_url(),
        api_key_env: None,
        models: vec![LlmModelEntry::Id("m".into())],
        max_concurrency: 8,
        timeout_secs: 60,
        ca_file: None,
        tenants: Vec::new(),
        exclusive: false,
    }];
    let (server, n, q) = rt.block_on(async {
        let server = fief_server::start(config, fief_server::Secrets::default())
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let mut keys = Vec::new();
        for (i, t) in ["noisy", "quiet"].iter().enumerate() {
            let key = create_tenant(&http, server.admin_addr, &server.admin_token, t).await;
            // About a millisecond a run here.
            let onnx =
                fief_serving::onnx_builder::Mlp::seeded(&[256, 1024, 512, 8], i as u64).to_onnx();
            put_model(&http, server.data_addr, &key, "m", onnx).await;
            keys.push(key);
        }
        let q = keys.pop().unwrap();
        let n = keys.pop().unwrap();
        (server, n, q)
    });
    Gateway {
        addr: server.data_addr,
        _server: server,
        _rt: rt,
        _dir: dir,
        n,
        q,
    }
}

fn invocation(key: &str) -> Vec<u8> {
    let row: Vec<f32> = (0..256).map(|i| (i as f32 * 0.01).sin()).collect();
    let body = serde_json::to_vec(&json!({"inputs": [row]})).unwrap();
    let bearer = format!("Bearer {key}");
    request(
        "POST",
        "/endpoints/shared/invocations",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
            (fief_server::TARGET_MODEL_HEADER, "m"),
        ],
        &body,
    )
}

fn chat(key: &str) -> Vec<u8> {
    let body = serde_json::to_vec(&json!({
        "model": "m", "max_tokens": 16,
        "messages": [{"role": "user", "content": "hello from the benchmark"}],
    }))
    .unwrap();
    let bearer = format!("Bearer {key}");
    request(
        "POST",
        "/v1/chat/completions",
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
}

/// Q with `quiet` connections and N with ten times as many, together.
fn together(addr: SocketAddr, q: &[u8], n: &[u8], quiet: usize, seconds: f64) -> (Stats, Stats) {
    std::thread::scope(|s| {
        let noisy = s.spawn(|| load(addr, n, quiet * 10, seconds).0);
        let q = load(addr, q, quiet, seconds).0;
        (q, noisy.join().unwrap())
    })
}

/// Q's latency alone and under N (Q below its share), then the shares of
/// service with both backlogged.
fn contend(name: &str, addr: SocketAddr, q: &[u8], n: &[u8], seconds: f64) {
    // Warm up (model loads, connections, run-time estimates).
    let _ = load(addr, q, 1, 0.5);
    let _ = load(addr, n, 1, 0.5);
    let (alone, _) = load(addr, q, 1, seconds);
    let (under, _) = together(addr, q, n, 1, seconds);
    println!(
        "{name:<30} Q (1 conn) alone p50 {:>7.0} p99 {:>7.0} | under N (10) p50 {:>7.0} p99 {:>7.0} = {:.2}x alone",
        alone.p50.as_secs_f64() * 1e6,
        alone.p99.as_secs_f64() * 1e6,
        under.p50.as_secs_f64() * 1e6,
        under.p99.as_secs_f64() * 1e6,
        under.p99.as_secs_f64() / alone.p99.as_secs_f64(),
    );
    let (q, n) = together(addr, q, n, 8, seconds);
    let share = q.rps / (q.rps + n.rps);
    println!(
        "{:<30} both backlogged, Q 8 conns, N 80: share of service Q {:>4.1}% N {:>4.1}% (weights 1:1)",
        "",
        share * 100.0,
        (1.0 - share) * 100.0,
    );
}

fn run(mode: Scheduling, mock: &MockUpstream, seconds: f64) {
    let g = gateway(mode, mock);
    let label = match mode {
        Scheduling::Fair => "fair",
        Scheduling::Fifo => "fifo",
    };
    contend(
        &format!("{label}: shared ONNX pool"),
        g.addr,
        &invocation(&g.q),
        &invocation(&g.n),
        seconds,
    );
    contend(
        &format!("{label}: pooled upstream"),
        g.addr,
        &chat(&g.q),
        &chat(&g.n),
        seconds,
    );
}

/// Every level and kind a request can meet: a tenant with all four limits
/// and a key with a lower rate.
fn levels() -> Vec<Level> {
    vec![
        Level {
            key: "tenant".into(),
            limits: Limits {
                requests_per_minute: Some(1_000_000_000),
                tokens_per_minute: Some(1_000_000_000),
                concurrent_requests: Some(1_000_000),
                monthly_token_budget: Some(1_000_000_000_000),
            },
        },
        Level {
            key: "api-key:bench".into(),
            limits: Limits {
                requests_per_minute: Some(500_000_000),
                ..Limits::default()
            },
        },
    ]
}

fn admission_cost() {
    let settings = Settings {
        request_burst_secs: 6,
        token_burst_secs: 60,
        lease: Duration::from_secs(60),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = std::env::var("BENCH_REDIS_URL")
        .or_else(|_| std::env::var("FIEF_TEST_REDIS_URL"))
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = RedisConfig {
        url: url.clone(),
        timeout_ms: 1000,
        connections: 1,
    };
    println!();
    println!("Admission check (2 levels, 5 limits, a 100-token reservation), then its settlement:");
    for (name, q, n) in [
        ("in memory", Quotas::memory(settings), 200_000),
        ("via Redis", Quotas::redis(&redis, settings).unwrap(), 5_000),
    ] {
        let levels = levels();
        let scope = format!("bench.{}", std::process::id());
        let month = fief_quota::month::current();
        let result = rt.block_on(async {
            let ask = |lease: &'static str| Ask {
                scope: &scope,
                levels: &levels,
                tokens: 100,
                min_tokens: 100,
                month: &month,
                lease,
            };
            // Seeding and script loading are one-offs.
            loop {
                match q.admit(&ask("warm")).await {
                    Ok(Outcome::NeedsSeed(keys)) => {
                        for k in keys {
                            q.seed(&scope, &k, &month, 0).await.unwrap();
                        }
                    }
                    Ok(Outcome::Admitted(a)) => {
                        q.settle(&a.held, 100).await.unwrap();
                        break Ok(());
                    }
                    Ok(other) => panic!("{other:?}"),
                    Err(e) => break Err(e),
                }
            }?;
            let mut admit = Vec::with_capacity(n);
            let mut settle = Vec::with_capacity(n);
            let mut trips = 0;
            for _ in 0..n {
                let (_, before) = q.counts();
                let t0 = Instant::now();
                let Outcome::Admitted(a) = q.admit(&ask("l")).await.unwrap() else {
                    panic!("refused")
                };
                let t1 = Instant::now();
                trips += q.counts().1 - before;
                q.settle(&a.held, 60).await.unwrap();
                admit.push(t1 - t0);
                settle.push(t1.elapsed());
            }
            Ok::<_, fief_quota::QuotaError>((admit, settle, trips))
        });
        match result {
            Ok((admit, settle, trips)) => {
                let a = stats(admit, Duration::from_secs(1));
                let s = stats(settle, Duration::from_secs(1));
                println!(
                    "{name:<12} admit p50 {:>7.2} µs p99 {:>7.2} µs | settle p50 {:>7.2} µs | Redis round trips per admission: {:.2}",
                    a.p50.as_secs_f64() * 1e6,
                    a.p99.as_secs_f64() * 1e6,
                    s.p50.as_secs_f64() * 1e6,
                    trips as f64 / n as f64,
                );
            }
            Err(e) => println!("{name:<12} skipped: {e} (set BENCH_REDIS_URL)"),
        }
    }
}
