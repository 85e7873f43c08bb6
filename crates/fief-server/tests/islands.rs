//! Network islands: dedicated listeners for silo tenants.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use reqwest::{Method, StatusCode};
use serde_json::json;

use common::*;

#[tokio::test]
async fn islands_serve_only_their_tenants() {
    let island = |tenants: &[&str], exclusive| fief_config::IslandConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tenants: tenants
            .iter()
            .map(|t| fief_core::TenantId::parse(t).unwrap())
            .collect(),
        exclusive,
    };
    let s = spawn_with(|c| c.islands = vec![island(&["hr"], true), island(&["eng"], false)]).await;
    let islands = s.running.as_ref().unwrap().island_addrs.clone();
    let (hr_island, eng_island) = (
        format!("http://{}", islands[0]),
        format!("http://{}", islands[1]),
    );
    let hr = s.tenant("hr", "silo").await;
    let eng = s.tenant("eng", "silo").await;
    let pool = s.tenant("pa", "pool").await;
    let body = json!({"inputs": [[0.5, -1.0, 2.0, 0.25]]});
    for (key, seed) in [(&hr, 1), (&eng, 2), (&pool, 3)] {
        let r = s.put_model(key, "m", tenant_model(seed).to_onnx()).await;
        // hr is island-only: it cannot even upload on the shared listener.
        let expected = if seed == 1 {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::CREATED
        };
        assert_eq!(r.status, expected, "{}", r.text);
    }
    let on = |base: &str, key: &str, method: Method, path: &str| {
        s.http
            .request(method, format!("{base}{path}"))
            .bearer_auth(key)
    };
    // hr works on its island only.
    let r = s
        .send(
            on(&hr_island, &hr, Method::PUT, "/api/v1/models/m")
                .header("content-type", "application/octet-stream")
                .body(tenant_model(1).to_onnx()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = s
        .send(
            on(&hr_island, &hr, Method::POST, "/endpoints/hr/invocations")
                .header(fief_server::TARGET_MODEL_HEADER, "m")
                .json(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        max_diff(
            &outputs(&r),
            &tenant_model(1).reference(&[vec![0.5, -1.0, 2.0, 0.25]])
        ) < 1e-4
    );
    let r = s.invoke(&hr, "hr", "m", &body).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "island-only tenant on the shared listener"
    );

    // A pool tenant's request on hr's island: refused before authentication
    // (no credential at all still gets 403, not 401) ...
    for endpoint in ["shared", "pa", "eng", "nobody"] {
        let r = s
            .send(
                s.http
                    .post(format!("{hr_island}/endpoints/{endpoint}/invocations"))
                    .header(fief_server::TARGET_MODEL_HEADER, "m")
                    .json(&body),
            )
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::FORBIDDEN, "AccessDenied"),
            "{endpoint}"
        );
    }
    // ... and with its own credential on any other route, after it.
    let r = s
        .send(on(&hr_island, &pool, Method::GET, "/api/v1/models"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = s
        .send(on(&hr_island, &eng, Method::GET, "/api/v1/models"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "another island's tenant");
    // A non-exclusive island tenant works on both listeners.
    let r = s
        .send(
            on(
                &eng_island,
                &eng,
                Method::POST,
                "/endpoints/eng/invocations",
            )
            .header(fief_server::TARGET_MODEL_HEADER, "m")
            .json(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        s.invoke(&eng, "eng", "m", &body).await.status,
        StatusCode::OK
    );
    assert_eq!(
        s.invoke(&pool, "shared", "m", &body).await.status,
        StatusCode::OK
    );
    // Refusals by listener are audited.
    let r = s
        .send(s.admin_req(Method::GET, "/admin/v1/audit?decision=deny&limit=100"))
        .await;
    assert!(r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["policies"] == json!(["network-island"])));
}
