//! The model cache through HTTP: single-flight loads, the memory budget and
//! its LRU eviction, with every answer checked against the caller's own model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

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
