//! Shared by the benchmarks: latency statistics and a gateway to drive.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod load;

use std::time::Duration;

use serde_json::{json, Value};

pub struct Stats {
    pub p50: Duration,
    pub p99: Duration,
    pub rps: f64,
}

pub fn stats(mut lat: Vec<Duration>, wall: Duration) -> Stats {
    lat.sort();
    let pick = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        p50: pick(0.50),
        p99: pick(0.99),
        rps: lat.len() as f64 / wall.as_secs_f64(),
    }
}

pub fn header() {
    println!(
        "{:<40} {:>10} {:>10} {:>10}",
        "", "p50 (µs)", "p99 (µs)", "req/s"
    );
}

pub fn row(name: &str, s: &Stats) {
    println!(
        "{name:<40} {:>10.1} {:>10.1} {:>10.0}",
        s.p50.as_secs_f64() * 1e6,
        s.p99.as_secs_f64() * 1e6,
        s.rps
    );
}

pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub async fn create_tenant(
    http: &reqwest::Client,
    admin: std::net::SocketAddr,
    token: &str,
    id: &str,
) -> String {
    create_tenant_in(http, admin, token, id, "pool").await
}

/// A tenant of `tier`; returns its first API key.
pub async fn create_tenant_in(
    http: &reqwest::Client,
    admin: std::net::SocketAddr,
    token: &str,
    id: &str,
    tier: &str,
) -> String {
    let created: Value = http
        .post(format!("http://{admin}/admin/v1/tenants"))
        .bearer_auth(token)
        .json(&json!({"id": id, "tier": tier}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["api_key"].as_str().unwrap().to_owned()
}

pub async fn put_model(
    http: &reqwest::Client,
    data: std::net::SocketAddr,
    key: &str,
    name: &str,
    onnx: Vec<u8>,
) {
    let put = http
        .put(format!("http://{data}/api/v1/models/{name}"))
        .bearer_auth(key)
        .header("content-type", "application/octet-stream")
        .body(onnx)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
}
