//! Invocation latency through the gateway against calling tract directly on
//! the same model. Run with `cargo bench -p fief-server --bench invocation`;
//! BENCH_REQUESTS and BENCH_CONCURRENCY change the load.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tract_onnx::prelude::*;

use fief_config::Config;
use fief_serving::onnx_builder::Mlp;

mod common;
use common::*;

const WIDTHS: [usize; 4] = [64, 256, 256, 10];

fn main() {
    let requests = env_or("BENCH_REQUESTS", 4000);
    let concurrency = env_or("BENCH_CONCURRENCY", 8);
    let mlp = Mlp::seeded(&WIDTHS, 42);
    let onnx = mlp.to_onnx();
    let input: Vec<f32> = (0..WIDTHS[0]).map(|i| (i as f32 * 0.37).sin()).collect();

    // Direct: tract on the same bytes, no gateway.
    let plan = tract_onnx::onnx()
        .model_for_read(&mut onnx.as_slice())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let tensor = Tensor::from_shape(&[1, WIDTHS[0]], &input).unwrap();
    let direct = |n: usize, threads: usize| {
        let start = Instant::now();
        let lat: Vec<Duration> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        (0..n / threads)
                            .map(|_| {
                                let t0 = Instant::now();
                                let out = plan.run(tvec!(tensor.clone().into())).unwrap();
                                std::hint::black_box(out);
                                t0.elapsed()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        stats(lat, start.elapsed())
    };
    direct(200, 1); // warm-up

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (gw1, gwc) = rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::ephemeral(dir.path());
        let server = fief_server::start(config, fief_server::Secrets::default())
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let key = create_tenant(&http, server.admin_addr, &server.admin_token, "bench").await;
        put_model(&http, server.data_addr, &key, "mlp", onnx.clone()).await;
        let url = Arc::new(format!(
            "http://{}/endpoints/shared/invocations",
            server.data_addr
        ));
        let body = Arc::new(serde_json::to_vec(&json!({"inputs": [input.clone()]})).unwrap());
        let expected = mlp.reference(std::slice::from_ref(&input));

        let run = |n: usize, c: usize| {
            let (http, key, url, body, expected) = (
                http.clone(),
                key.clone(),
                url.clone(),
                body.clone(),
                expected.clone(),
            );
            async move {
                let start = Instant::now();
                let tasks: Vec<_> = (0..c)
                    .map(|_| {
                        let (http, key, url, body, expected) = (
                            http.clone(),
                            key.clone(),
                            url.clone(),
                            body.clone(),
                            expected.clone(),
                        );
                        tokio::spawn(async move {
                            let mut lat = Vec::with_capacity(n / c);
                            for i in 0..n / c {
                                let t0 = Instant::now();
                                let r = http
                                    .post(url.as_str())
                                    .bearer_auth(&key)
                                    .header(fief_server::TARGET_MODEL_HEADER, "mlp")
                                    .header("content-type", "application/json")
                                    .body(body.as_ref().clone())
                                    .send()
                                    .await
                                    .unwrap();
                                assert_eq!(r.status(), 200);
                                let v: serde_json::Value = r.json().await.unwrap();
                                lat.push(t0.elapsed());
                                if i == 0 {
                                    let got: Vec<Vec<f32>> =
                                        serde_json::from_value(v["outputs"]["output"].clone())
                                            .unwrap();
                                    let diff = got[0]
                                        .iter()
                                        .zip(&expected[0])
                                        .map(|(a, b)| (a - b).abs())
                                        .fold(0f32, f32::max);
                                    assert!(
                                        diff < 1e-3,
                                        "wrong answer through the gateway: {diff}"
                                    );
                                }
                            }
                            lat
                        })
                    })
                    .collect();
                let mut lat = Vec::new();
                for t in tasks {
                    lat.extend(t.await.unwrap());
                }
                stats(lat, start.elapsed())
            }
        };
        run(200, 1).await; // warm-up
        let one = run(requests, 1).await;
        let many = run(requests, concurrency).await;
        server.shutdown().await.unwrap();
        (one, many)
    });
    let d1 = direct(requests, 1);
    let dc = direct(requests, concurrency);

    println!(
        "\nmodel: MLP {WIDTHS:?} ({} bytes ONNX), batch 1, {requests} requests per row",
        onnx.len()
    );
    header();
    row("tract direct, 1 thread", &d1);
    row("gateway (HTTP+auth+audit), c=1", &gw1);
    row(&format!("tract direct, {concurrency} threads"), &dc);
    row(&format!("gateway, concurrency {concurrency}"), &gwc);
    println!(
        "gateway overhead at c=1: p50 +{:.0} µs",
        (gw1.p50.as_secs_f64() - d1.p50.as_secs_f64()) * 1e6
    );
}
