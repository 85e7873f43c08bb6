//! With the shared table's tenant condition removed by fault injection (the
//! application filter bug), a pool tenant still reads none of another pool
//! tenant's items: the seal binds each value to its tenant, and a row that
//! will not open under the caller's key is left out. Own binary: the switch
//! is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_tenant_filter_the_seal_still_holds() {
    let s = common::spawn().await;
    let victim = s.tenant("tf-victim", "pool").await;
    let attacker = s.tenant("tf-attacker", "pool").await;
    let secret = common::kb::canary("tf-victim");
    for (key, value) in [
        (&victim, json!({"secret": secret})),
        (&attacker, json!({"mine": true})),
    ] {
        let r = s
            .send(
                s.data_req(key, Method::PUT, "/api/v1/tables/memory/items/shared-key")
                    .json(&value),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let r = s
        .send(
            s.data_req(
                &victim,
                Method::PUT,
                "/api/v1/tables/memory/items/only-victim",
            )
            .json(&json!({"secret": secret})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    fief_knowledge::faults::drop_query_tenant_filter(true);
    let listing = s
        .send(s.data_req(&attacker, Method::GET, "/api/v1/tables/memory/items"))
        .await;
    let own = s
        .send(s.data_req(
            &attacker,
            Method::GET,
            "/api/v1/tables/memory/items/shared-key",
        ))
        .await;
    let other = s
        .send(s.data_req(
            &attacker,
            Method::GET,
            "/api/v1/tables/memory/items/only-victim",
        ))
        .await;
    fief_knowledge::faults::drop_query_tenant_filter(false);

    for r in [&listing, &own, &other] {
        assert!(!r.text.contains(&secret), "LEAK: {}", r.text);
    }
    // The unfiltered listing saw the victim's rows and dropped them.
    let items = listing.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{}", listing.text);
    assert_eq!(items[0]["value"]["mine"], true);
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.text);
}
