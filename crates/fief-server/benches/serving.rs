//! Serving benchmark: cold load time and warm invocation overhead for a
//! ~1 MB model, and shared-endpoint throughput across 100 pool tenants.
//! Run with `cargo bench -p fief-server --bench serving`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use serde_json::json;
use tract_onnx::prelude::*;

use common::*;
use fief_config::Config;
use fief_serving::onnx_builder::Mlp;

const BIG: [usize; 4] = [64, 512, 448, 10];

async fn invoke(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    model: &str,
    body: &[u8],
) -> Duration {
    let t0 = Instant::now();
    let r = http
        .post(url)
        .bearer_auth(key)
        .header(fief_server::TARGET_MODEL_HEADER, model)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    t0.elapsed()
}

fn main() {
    let cold_models = env_or("BENCH_COLD_MODELS", 10);
    let warm_requests = env_or("BENCH_REQUESTS", 2000);
    let tenants = env_or("BENCH_TENANTS", 100);
    let concurrency = env_or("BENCH_CONCURRENCY", 8);
    let big = Mlp::seeded(&BIG, 1).to_onnx();
    let input: Vec<f32> = (0..BIG[0]).map(|i| (i as f32 * 0.37).sin()).collect();
    let body = serde_json::to_vec(&json!({"inputs": [input.clone()]})).unwrap();

    // tract alone on the same bytes: as many loads as the gateway's cold
    // loads below (each tenant's copy has its own weights), then runs.
    let load = |bytes: &[u8]| {
        tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap()
    };
    let copies: Vec<Vec<u8>> = (0..cold_models)
        .map(|i| Mlp::seeded(&BIG, i as u64).to_onnx())
        .collect();
    let t0 = Instant::now();
    for copy in &copies {
        std::hint::black_box(load(copy));
    }
    let tract_load = t0.elapsed() / cold_models.max(1) as u32;
    let plan = load(&big);
    let tensor = Tensor::from_shape(&[1, BIG[0]], &input).unwrap();
    let mut direct = Vec::new();
    let start = Instant::now();
    for _ in 0..warm_requests {
        let t = Instant::now();
        std::hint::black_box(plan.run(tvec!(tensor.clone().into())).unwrap());
        direct.push(t.elapsed());
    }
    let direct = stats(direct, start.elapsed());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let http = reqwest::Client::new();
        // Upload `cold_models` tenants' copies of the big model, then restart so all are cold.
        let server = fief_server::start(Config::ephemeral(dir.path()), fief_server::Secrets::default()).await.unwrap();
        let mut keys = Vec::new();
        for i in 0..cold_models {
            let key = create_tenant(&http, server.admin_addr, &server.admin_token, &format!("cold{i}")).await;
            put_model(&http, server.data_addr, &key, "big", Mlp::seeded(&BIG, i as u64).to_onnx()).await;
            keys.push(key);
        }
        server.shutdown().await.unwrap();
        let server = fief_server::start(Config::ephemeral(dir.path()), fief_server::Secrets::default()).await.unwrap();
        let url = format!("http://{}/endpoints/shared/invocations", server.data_addr);
        let start = Instant::now();
        let mut cold = Vec::new();
        for key in &keys {
            cold.push(invoke(&http, &url, key, "big", &body).await);
        }
        let cold = stats(cold, start.elapsed());
        let load_stats = server.state.cache.stats();

        let start = Instant::now();
        let mut warm = Vec::new();
        for _ in 0..warm_requests {
            warm.push(invoke(&http, &url, &keys[0], "big", &body).await);
        }
        let warm = stats(warm, start.elapsed());

        // Throughput across many pool tenants with small models of their own.
        let small_body = serde_json::to_vec(&json!({"inputs": [[0.5, -1.0, 2.0, 0.25]]})).unwrap();
        let mut small_keys = Vec::new();
        for i in 0..tenants {
            let key = create_tenant(&http, server.admin_addr, &server.admin_token, &format!("t{i:03}")).await;
            put_model(&http, server.data_addr, &key, "m", Mlp::seeded(&[4, 32, 3], 1000 + i as u64).to_onnx()).await;
            small_keys.push(key);
        }
        let per_task = warm_requests * 2 / concurrency;
        let start = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|c| {
                let (http, url, keys, body) = (http.clone(), url.clone(), small_keys.clone(), small_body.clone());
                tokio::spawn(async move {
                    let mut lat = Vec::with_capacity(per_task);
                    for i in 0..per_task {
                        let key = &keys[(i * 7 + c * 13) % keys.len()];
                        lat.push(invoke(&http, &url, key, "m", &body).await);
                    }
                    lat
                })
            })
            .collect();
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await.unwrap());
        }
        let spread = stats(lat, start.elapsed());
        server.shutdown().await.unwrap();

        println!("\nmodel: MLP {BIG:?}, {} bytes ONNX, batch 1", big.len());
        println!(
            "tract load+optimise alone: {cold_models} loads, {:.1} ms mean",
            tract_load.as_secs_f64() * 1e3
        );
        println!(
            "gateway cold loads: {} loads, {:.1} ms mean load time (read + decrypt + load + optimise)",
            load_stats.loads,
            load_stats.load_seconds * 1e3 / load_stats.loads.max(1) as f64
        );
        header();
        row("first request on a cold model", &cold);
        row("tract direct, warm, 1 thread", &direct);
        row("gateway, warm, c=1", &warm);
        row(&format!("gateway, {tenants} pool tenants, c={concurrency}"), &spread);
        println!(
            "warm invocation overhead (gateway p50 - tract p50): {:.0} µs",
            (warm.p50.as_secs_f64() - direct.p50.as_secs_f64()) * 1e6
        );
    });
}
