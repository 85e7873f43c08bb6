//! The model cache through HTTP: single-flight loads, the memory budget and
//! its LRU eviction, with every answer checked against the caller's own model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "serving/sagemaker.rs"]
mod sagemaker;

use reqwest::StatusCode;
use serde_json::json;

use common::*;

#[tokio::test]
async fn fifty_concurrent_first_requests_cause_one_load() {
    let s = spawn().await;
    let key = s.tenant("aa", "pool").await;
    let mlp = fief_serving::onnx_builder::Mlp::seeded(&[4, 128, 128, 3], 5);
    assert_eq!(
        s.put_model(&key, "m", mlp.to_onnx()).await.status,
        StatusCode::CREATED
    );
    // A new gateway over the same data: the model is on disk, not in memory.
    let s = s.restart(|_| {}).await;
    assert_eq!(s.metric("fief_model_loads_total ").await, 0.0);
    let row = vec![0.5f32, -1.0, 2.0, 0.25];
    let want = mlp.reference(std::slice::from_ref(&row));
    let body = json!({"inputs": [row]});
    let answers =
        futures::future::join_all((0..50).map(|_| s.invoke(&key, "shared", "m", &body))).await;
    for r in &answers {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(max_diff(&outputs(r), &want) < 1e-4);
    }
    assert_eq!(s.metric("fief_model_loads_total ").await, 1.0);
    assert_eq!(
        s.metric("fief_invocations_total{endpoint=\"shared\",outcome=\"ok\"} ")
            .await,
        50.0
    );
    // A warm invocation is a cache hit.
    let hits = s.metric("fief_model_cache_hits_total ").await;
    assert_eq!(
        s.invoke(&key, "shared", "m", &body).await.status,
        StatusCode::OK
    );
    assert_eq!(s.metric("fief_model_cache_hits_total ").await, hits + 1.0);
}

/// Many pool tenants, each with its own model, under a budget that holds a
/// fraction of them: every answer is the caller's own, residency never
/// exceeds the budget, and evictions are counted.
#[tokio::test]
async fn many_tenants_under_a_small_budget() {
    const TENANTS: usize = 1000;
    const BUDGET: usize = 10 * 1024 * 1024;
    let s = spawn_with(|c| c.models.cache_bytes = BUDGET).await;
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        let id = format!("t{i:04}");
        let key = s.tenant(&id, "pool").await;
        // ~45 KB each, so the budget holds about a quarter of them.
        let mlp = fief_serving::onnx_builder::Mlp::seeded(&[4, 100, 100, 3], i as u64);
        assert_eq!(
            s.put_model(&key, "m", mlp.to_onnx()).await.status,
            StatusCode::CREATED
        );
        tenants.push((key, mlp));
    }
    let row = vec![0.25f32, 0.5, -0.75, 1.0];
    let body = json!({"inputs": [row.clone()]});
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut max_resident = 0.0f64;
    for round in 0..1500 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let (key, mlp) = &tenants[(rng % TENANTS as u64) as usize];
        let r = s.invoke(key, "shared", "m", &body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(
            max_diff(&outputs(&r), &mlp.reference(std::slice::from_ref(&row))) < 1e-4,
            "round {round}: not the caller's model"
        );
        if round % 100 == 0 {
            max_resident = max_resident.max(s.metric("fief_model_resident_bytes ").await);
        }
    }
    max_resident = max_resident.max(s.metric("fief_model_resident_bytes ").await);
    assert!(
        max_resident <= BUDGET as f64,
        "resident {max_resident} > budget {BUDGET}"
    );
    assert!(
        max_resident > (BUDGET / 2) as f64,
        "the budget should be well used: {max_resident}"
    );
    assert!(s.metric("fief_model_evictions_total ").await > 0.0);
}

/// Promotion from pool to silo under a steady request stream: no request
/// fails, every answer is the tenant's own, and afterwards its model runs on
/// its dedicated worker pool.
#[tokio::test]
async fn promotion_to_silo_under_load_fails_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let s = Arc::new(spawn().await);
    let key = s.tenant("aa", "pool").await;
    let mlp = fief_serving::onnx_builder::Mlp::seeded(&[4, 64, 3], 8);
    assert_eq!(
        s.put_model(&key, "m", mlp.to_onnx()).await.status,
        StatusCode::CREATED
    );
    let row = vec![1.0f32, 0.5, -0.5, 2.0];
    let want = mlp.reference(std::slice::from_ref(&row));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let streams: Vec<_> = (0..4)
        .map(|_| {
            let (s, key, stop, done, want) = (
                s.clone(),
                key.clone(),
                stop.clone(),
                done.clone(),
                want.clone(),
            );
            let body = json!({"inputs": [row.clone()]});
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) && n < 2000 {
                    let r = s.invoke(&key, "shared", "m", &body).await;
                    assert_eq!(
                        r.status,
                        StatusCode::OK,
                        "request failed during promotion: {}",
                        r.text
                    );
                    assert!(max_diff(&outputs(&r), &want) < 1e-4);
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                n
            })
        })
        .collect();
    while done.load(Ordering::Relaxed) < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let r = s
        .send(
            s.admin_req(reqwest::Method::PATCH, "/admin/v1/tenants/aa")
                .json(&json!({"tier": "silo"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let promoted_at = done.load(Ordering::Relaxed);
    while done.load(Ordering::Relaxed) < promoted_at + 100 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for t in streams {
        total += t.await.unwrap();
    }
    assert!(total >= 200);
    let silo_runs = s
        .metric("fief_worker_pool_jobs_total{pool=\"silo-aa\"} ")
        .await;
    assert!(
        silo_runs >= 90.0,
        "after promotion the model runs on its own pool: {silo_runs}"
    );
    // From now on every run is on the dedicated pool, on either endpoint.
    let shared_before = s
        .metric("fief_worker_pool_jobs_total{pool=\"shared\"} ")
        .await;
    for endpoint in ["shared", "aa"] {
        for _ in 0..5 {
            let r = s
                .invoke(&key, endpoint, "m", &json!({"inputs": [row.clone()]}))
                .await;
            assert!(max_diff(&outputs(&r), &want) < 1e-4);
        }
    }
    assert_eq!(
        s.metric("fief_worker_pool_jobs_total{pool=\"silo-aa\"} ")
            .await,
        silo_runs + 10.0
    );
    assert_eq!(
        s.metric("fief_worker_pool_jobs_total{pool=\"shared\"} ")
            .await,
        shared_before
    );
}

fn targz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in files {
        // Names are written raw, so hostile ones (`../x`) reach the server as is.
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        tar.append(&header, *bytes).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

async fn put_package(s: &TestServer, key: &str, name: &str, gz: Vec<u8>) -> Resp {
    s.send(
        s.data_req(key, reqwest::Method::PUT, &format!("/api/v1/models/{name}"))
            .header("content-type", "application/gzip")
            .body(gz),
    )
    .await
}

#[tokio::test]
async fn tar_gz_packages_are_served_and_bad_ones_refused() {
    let s = spawn_with(|c| c.models.max_model_bytes = 1024 * 1024).await;
    let key = s.tenant("aa", "pool").await;
    let mlp = fief_serving::onnx_builder::Mlp::seeded(&[4, 8, 3], 4);
    let onnx = mlp.to_onnx();
    let manifest = br#"{"inputs": ["input"], "outputs": ["output"], "description": "churn"}"#;
    let r = put_package(
        &s,
        &key,
        "pkg",
        targz(&[("model.onnx", &onnx), ("model.json", manifest)]),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let row = vec![0.1f32, 0.2, 0.3, 0.4];
    let r = s
        .invoke(&key, "shared", "pkg", &json!({"inputs": [row.clone()]}))
        .await;
    assert!(max_diff(&outputs(&r), &mlp.reference(std::slice::from_ref(&row))) < 1e-4);
    // Without a manifest is fine too.
    assert_eq!(
        put_package(&s, &key, "bare", targz(&[("./model.onnx", &onnx)]))
            .await
            .status,
        StatusCode::CREATED
    );

    let zeros = vec![0u8; 10 * 1024 * 1024];
    for (what, gz) in [
        (
            "wrong manifest",
            targz(&[
                ("model.onnx", &onnx),
                ("model.json", br#"{"inputs": ["pixels"]}"#),
            ]),
        ),
        ("no model", targz(&[("model.json", manifest)])),
        (
            "extra file",
            targz(&[("model.onnx", &onnx), ("../../etc/passwd", b"x")]),
        ),
        ("garbage onnx", targz(&[("model.onnx", b"nope")])),
        ("decompression bomb", targz(&[("model.onnx", &zeros)])),
        ("not gzip", onnx.clone()),
    ] {
        let r = put_package(&s, &key, "bad", gz).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text);
    }
    assert_eq!(
        s.send(s.data_req(&key, reqwest::Method::GET, "/api/v1/models/bad"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

/// A cold load slower than the deadline answers a retryable 503
/// ModelNotReady; the load finishes in the background and the retry is warm.
#[tokio::test]
async fn a_slow_cold_load_is_model_not_ready_then_warm() {
    let s = spawn().await;
    let key = s.tenant("aa", "pool").await;
    // Large enough (~9 MB) that its load cannot finish before the deadline
    // is first checked, even on a loaded machine (a 1 MB model sometimes did).
    let mlp = fief_serving::onnx_builder::Mlp::seeded(&[64, 1536, 1536, 10], 6);
    assert_eq!(
        s.put_model(&key, "big", mlp.to_onnx()).await.status,
        StatusCode::CREATED
    );
    let s = s.restart(|c| c.models.load_deadline_ms = 1).await;
    let row: Vec<f32> = (0..64).map(|i| i as f32 / 64.0).collect();
    let body = json!({"inputs": [row.clone()]});
    let r = s.invoke(&key, "shared", "big", &body).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "ModelNotReady"),
        "{}",
        r.text
    );
    assert_eq!(
        r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let mut answered = None;
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        let r = s.invoke(&key, "shared", "big", &body).await;
        if r.status == StatusCode::OK {
            answered = Some(r);
            break;
        }
        assert_eq!(r.code(), "ModelNotReady");
    }
    let r = answered.expect("the background load never finished");
    assert!(max_diff(&outputs(&r), &mlp.reference(std::slice::from_ref(&row))) < 1e-3);
    assert_eq!(s.metric("fief_model_loads_total ").await, 1.0);
}

/// An upload loads its model (to check it) and keeps it resident: that is
/// a load, without a cache miss; the first invocation is then a hit.
#[tokio::test]
async fn uploads_count_as_loads_and_invocations_hit() {
    let s = spawn().await;
    let key = s.tenant("aa", "pool").await;
    for (i, name) in ["m1", "m2", "m3"].iter().enumerate() {
        let mlp = fief_serving::onnx_builder::Mlp::seeded(&[4, 8, 2], i as u64);
        assert_eq!(
            s.put_model(&key, name, mlp.to_onnx()).await.status,
            StatusCode::CREATED
        );
    }
    assert_eq!(s.metric("fief_model_resident_models ").await, 3.0);
    assert_eq!(s.metric("fief_model_loads_total ").await, 3.0);
    assert!(s.metric("fief_model_load_seconds_total ").await > 0.0);
    assert_eq!(s.metric("fief_model_cache_misses_total ").await, 0.0);
    let body = json!({"inputs": [[0.5, -1.0, 2.0, 0.25]]});
    assert_eq!(
        s.invoke(&key, "shared", "m1", &body).await.status,
        StatusCode::OK
    );
    assert_eq!(s.metric("fief_model_cache_hits_total ").await, 1.0);
    assert_eq!(s.metric("fief_model_loads_total ").await, 3.0);
}

/// An offboarded tenant's endpoint and silo-pool series are gone from
/// /metrics; another tenant's stay.
#[tokio::test]
async fn an_offboarded_tenants_metric_labels_are_dropped() {
    let s = spawn().await;
    let body = json!({"inputs": [[0.5, -1.0, 2.0, 0.25]]});
    let mut keys = Vec::new();
    for id in ["gone", "kept"] {
        let key = s.tenant(id, "silo").await;
        let mlp = fief_serving::onnx_builder::Mlp::seeded(&[4, 8, 2], 1);
        assert_eq!(
            s.put_model(&key, "m", mlp.to_onnx()).await.status,
            StatusCode::CREATED
        );
        assert_eq!(s.invoke(&key, id, "m", &body).await.status, StatusCode::OK);
        keys.push(key);
    }
    let text = || async {
        s.send(s.admin_req(reqwest::Method::GET, "/metrics"))
            .await
            .text
    };
    let before = text().await;
    assert!(
        before.contains("endpoint=\"gone\"") && before.contains("silo-gone"),
        "{before}"
    );
    let r = s
        .send(s.admin_req(reqwest::Method::DELETE, "/admin/v1/tenants/gone"))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let after = text().await;
    assert!(
        !after.contains("\"gone\"") && !after.contains("silo-gone"),
        "{after}"
    );
    assert!(
        after.contains("endpoint=\"kept\"") && after.contains("silo-kept"),
        "{after}"
    );
}
