//! Costs that must stay flat as tenants and history grow, on SQLite:
//!
//! 1. 10,000 tenants onboarded (9,000 pool, 900 bridge, 100 silo): the
//!    process's threads and resident memory once idle.
//! 2. Every silo tenant uploads a model and invokes it once (each starts
//!    its worker pool and opens its database file), then all go idle for
//!    the idle period: threads back where they were.
//! 3. The audit log grown to 1,000,000 entries: the gateway's start-up
//!    time, `/admin/v1/audit?tenant=X&limit=100`, and a full
//!    `fief audit verify`.
//!
//! `cargo bench -p fief-server --bench scale` (BENCH_TENANTS 10000,
//! BENCH_AUDIT_ENTRIES 1000000)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::json;

use fief_config::Config;
use fief_serving::onnx_builder::Mlp;

mod common;
use common::*;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::ephemeral(dir);
    c.models.silo_idle_secs = 5;
    // All 100 silo tenants' pools at once, in the burst below.
    c.models.max_silo_threads = 128;
    c
}

fn main() {
    let tenants = env_or("BENCH_TENANTS", 10_000);
    let entries = env_or("BENCH_AUDIT_ENTRIES", 1_000_000) as u64;
    // The gateway's runtime as `fief serve` has it (a worker per core); the
    // bench's own requests run on it too.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let baseline = threads();
    rt.block_on(async {
        let server = fief_server::start(config(dir.path()), fief_server::Secrets::default())
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let started = Instant::now();
        let mut silo_keys = Vec::new();
        for i in 0..tenants {
            let tier = if i % 100 == 0 {
                "silo"
            } else if i % 10 == 0 {
                "bridge"
            } else {
                "pool"
            };
            let key =
                create_tenant_in(&http, server.admin_addr, &server.admin_token, &format!("s{i:05}"), tier)
                    .await;
            if tier == "silo" {
                silo_keys.push((format!("s{i:05}"), key));
            }
        }
        let onboarded = started.elapsed();
        tokio::time::sleep(Duration::from_secs(12)).await; // the blocking pool's idle threads exit
        let idle = threads();
        println!(
            "{tenants} tenants ({} silo) onboarded in {onboarded:.1?}; idle: {idle} threads \
             (the bench process started with {baseline}), {:.0} MiB resident",
            silo_keys.len(),
            rss_mib()
        );
        let body = json!({"inputs": [[0.5, -1.0, 2.0, 0.25]]});
        for (i, (id, key)) in silo_keys.iter().enumerate() {
            put_model(&http, server.data_addr, key, "m", Mlp::seeded(&[4, 8, 3], i as u64).to_onnx()).await;
            let r = http
                .post(format!("http://{}/endpoints/{id}/invocations", server.data_addr))
                .bearer_auth(key)
                .header(fief_server::TARGET_MODEL_HEADER, "m")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        }
        let busy = threads();
        tokio::time::sleep(Duration::from_secs(16)).await; // the idle period, and the reaper's tick
        let after = threads();
        println!(
            "after every silo tenant invoked once: {busy} threads; idle again after {}s: {after} threads, {:.0} MiB resident",
            16,
            rss_mib()
        );
        server.shutdown().await.unwrap();
    });

    // The audit log grown to `entries`, as a long-running gateway writes it.
    let grown = rt.block_on(async {
        let log = fief_audit::AuditLog::open(dir.path(), fief_audit::Options::default()).unwrap();
        let have = fief_audit::verify_dir(dir.path()).unwrap().entries;
        let started = Instant::now();
        for i in have..entries {
            log.append(fief_audit::Event {
                kind: fief_audit::Kind::Authz,
                request_id: format!("req_{i:032x}"),
                principal: format!("api-key:{:016x}", i % 9973),
                // Half the tenants, so each queried one has over 100.
                tenant: Some(format!("s{:05}", i % (tenants as u64 / 2))),
                incarnation: Some("0123456789abcdef0123456789abcdef".into()),
                action: "InvokeModel".into(),
                resource: format!("frn:fief:model:s{:05}/m", i % tenants as u64),
                decision: if i % 7 == 0 {
                    fief_audit::Decision::Deny
                } else {
                    fief_audit::Decision::Allow
                },
                policies: vec!["tenant-default".into()],
                reason: None,
                source: None,
                usage: None,
            })
            .await
            .unwrap();
        }
        log.flush().unwrap();
        started.elapsed()
    });
    println!("audit log grown to {entries} entries in {grown:.1?}");
    rt.block_on(async {
        let t0 = Instant::now();
        let server = fief_server::start(config(dir.path()), fief_server::Secrets::default())
            .await
            .unwrap();
        let start_up = t0.elapsed();
        println!(
            "start-up with {entries} audit entries: {start_up:.2?} (verified at opening: {} entries after the last checkpoint)",
            server
                .state
                .audit
                .file()
                .map_or(0, |log| log.opened().verified_entries)
        );
        let http = reqwest::Client::new();
        let mut times = Vec::new();
        for t in 0..20 {
            let url = format!(
                "http://{}/admin/v1/audit?tenant=s{:05}&limit=100",
                server.admin_addr,
                (t * 487) % (tenants / 2)
            );
            let t0 = Instant::now();
            let r = http.get(&url).bearer_auth(&server.admin_token).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let v: serde_json::Value = r.json().await.unwrap();
            times.push(t0.elapsed());
            assert_eq!(v["entries"].as_array().unwrap().len(), 100);
        }
        times.sort();
        println!(
            "/admin/v1/audit?tenant=X&limit=100 over {entries} entries: p50 {:.1?}, max {:.1?} (20 tenants)",
            times[times.len() / 2],
            times[times.len() - 1]
        );
        server.shutdown().await.unwrap();
    });
    let t0 = Instant::now();
    let v = fief_audit::verify_dir(dir.path()).unwrap();
    println!(
        "full verification (fief audit verify): {} entries in {} segments, {:.1?}",
        v.entries,
        v.segments,
        t0.elapsed()
    );
}
