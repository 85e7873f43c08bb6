//! Tenant tables API through the gateway (HTTP, authentication, Cedar,
//! audit, sealing): item put and get latency at concurrency 1 and
//! throughput at BENCH_CONCURRENCY (8), per tier, on SQLite and, when
//! FIEF_TEST_DATABASE_URL names a PostgreSQL superuser URL, on PostgreSQL
//! (a fresh database and a NOBYPASSRLS runtime role, dropped afterwards).
//!
//! `FIEF_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench -p fief-server --bench tables`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use fief_config::{Config, PostgresConfig};

mod common;
use common::*;

/// `n` requests over `c` concurrent clients; `put` or `get`.
async fn run(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    put: bool,
    n: usize,
    c: usize,
) -> Stats {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..c {
        let (http, base, key) = (http.clone(), base.to_owned(), key.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n / c);
            for i in 0..n / c {
                let url = format!("{base}/api/v1/tables/bench/items/item-{}", (w * 7919 + i) % 500);
                let t0 = Instant::now();
                let r = if put {
                    http.put(&url)
                        .bearer_auth(&key)
                        .json(&json!({"turn": i, "text": "the quick brown fox jumps over the lazy dog"}))
                        .send()
                        .await
                        .unwrap()
                } else {
                    http.get(&url).bearer_auth(&key).send().await.unwrap()
                };
                assert!(r.status().is_success(), "{}", r.status());
                let _ = r.bytes().await.unwrap();
                lat.push(t0.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    stats(lat, start.elapsed())
}

async fn postgres() -> Option<(PostgresConfig, String, String)> {
    let base = std::env::var("FIEF_TEST_DATABASE_URL").ok()?;
    let suffix = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let (db, role) = (
        format!("fief_bench_{suffix}"),
        format!("fief_bench_rt_{suffix}"),
    );
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let (head, _) = base.rsplit_once('/').unwrap();
    let admin_url = format!("{head}/{db}");
    let (scheme, rest) = admin_url.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let url = format!("{scheme}://{role}@{host}");
    Some((PostgresConfig::new(url, admin_url), db, role))
}

async fn drop_postgres(db: &str, role: &str) {
    let base = std::env::var("FIEF_TEST_DATABASE_URL").unwrap();
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    let dbs: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
            .bind(format!("{db}%"))
            .fetch_all(&admin)
            .await
            .unwrap();
    for d in dbs {
        let _ = sqlx::query(&format!("DROP DATABASE {d} WITH (FORCE)"))
            .execute(&admin)
            .await;
    }
    let _ = sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&admin)
        .await;
}

fn main() {
    let n = env_or("BENCH_REQUESTS", 2000);
    let c = env_or("BENCH_CONCURRENCY", 8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pg = postgres().await;
        let mut backends = vec![("sqlite", None)];
        if let Some((config, _, _)) = &pg {
            backends.push(("postgres", Some(config.clone())));
        } else {
            println!("(FIEF_TEST_DATABASE_URL not set: SQLite only)");
        }
        header();
        for (backend, pg_config) in backends {
            let dir = tempfile::tempdir().unwrap();
            let mut config = Config::ephemeral(dir.path());
            config.postgres = pg_config;
            let server = fief_server::start(config, fief_server::Secrets::default())
                .await
                .unwrap();
            let data = format!("http://{}", server.data_addr);
            let http = reqwest::Client::new();
            for tier in ["pool", "bridge", "silo"] {
                let key = create_tenant_in(
                    &http,
                    server.admin_addr,
                    &server.admin_token,
                    &format!("bench-{tier}"),
                    tier,
                )
                .await;
                let key = Arc::new(key);
                run(&http, &data, &key, true, 500, 1).await; // warm-up: every item exists
                for (op, put) in [("put", true), ("get", false)] {
                    row(
                        &format!("{backend} {tier} {op}, c=1"),
                        &run(&http, &data, &key, put, n, 1).await,
                    );
                    row(
                        &format!("{backend} {tier} {op}, c={c}"),
                        &run(&http, &data, &key, put, n, c).await,
                    );
                }
            }
            server.shutdown().await.unwrap();
        }
        if let Some((_, db, role)) = pg {
            drop_postgres(&db, &role).await;
        }
    });
}
