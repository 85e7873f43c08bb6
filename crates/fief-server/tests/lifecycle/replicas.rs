//! Replicas on one PostgreSQL keep their caches coherent: a change made on
//! one takes effect on the others within the stated bound (a notification:
//! well under 1 s; notifications off: the `change_poll_ms` timer).

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{self, TestServer};

/// Polls `check` on `on` until it holds; the time it took.
async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not in effect after {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn models_status(s: &TestServer, key: &str) -> StatusCode {
    s.send(s.data_req(key, Method::GET, "/api/v1/models"))
        .await
        .status
}

/// Puts a tenant policy that forbids listing models.
async fn forbid_listing(s: &TestServer, key: &str, id: &str) {
    let put = s
        .send(
            s.data_req(key, Method::PUT, &format!("/api/v1/policies/{id}"))
                .header("content-type", "text/plain")
                .body("forbid(principal, action == Fief::Action::\"ListModels\", resource);"),
        )
        .await;
    assert!(put.status.is_success(), "{}", put.text);
}

async fn coherent(r: &[TestServer], bound: Duration, shared_bucket: bool) {
    let (one, two, three) = (&r[0], &r[1], &r[2]);
    let key = one.tenant("acme", "pool").await;
    let other = one.tenant("globex", "bridge").await;
    // Warm every replica's caches: key, tenant, compiled policies.
    for s in r {
        assert_eq!(models_status(s, &key).await, StatusCode::OK);
        assert_eq!(models_status(s, &other).await, StatusCode::OK);
    }

    // A tenant policy added on one replica denies on the others.
    forbid_listing(one, &key, "no-listing").await;
    for s in [two, three] {
        let took = within(bound, async || {
            models_status(s, &key).await == StatusCode::FORBIDDEN
        })
        .await;
        eprintln!("policy change seen in {took:?}");
    }
    // And removed, allows again.
    let del = one
        .send(one.data_req(&key, Method::DELETE, "/api/v1/policies/no-listing"))
        .await;
    assert!(del.status.is_success(), "{}", del.text);
    for s in [two, three] {
        within(bound, async || {
            models_status(s, &key).await == StatusCode::OK
        })
        .await;
    }

    // A second key, revoked on replica 1, is refused on 2 and 3.
    let made = one
        .send(
            one.admin_req(Method::POST, "/admin/v1/tenants/acme/api-keys")
                .json(&json!({"name": "ci"})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let second = made.json()["api_key"].as_str().unwrap().to_owned();
    let id = made.json()["id"].as_str().unwrap().to_owned();
    for s in [two, three] {
        assert_eq!(models_status(s, &second).await, StatusCode::OK);
    }
    let revoked = one
        .send(one.admin_req(
            Method::DELETE,
            &format!("/admin/v1/tenants/acme/api-keys/{id}"),
        ))
        .await;
    assert!(revoked.status.is_success(), "{}", revoked.text);
    for s in [two, three] {
        let took = within(bound, async || {
            models_status(s, &second).await == StatusCode::UNAUTHORIZED
        })
        .await;
        eprintln!("key revocation seen in {took:?}");
    }
    assert_eq!(
        models_status(two, &key).await,
        StatusCode::OK,
        "only that key"
    );

    // A tier change on replica 1 moves where replicas 2 and 3 read and
    // write: a policy written on 3 after the move decides on 2.
    let tier = one
        .send(
            one.admin_req(Method::PATCH, "/admin/v1/tenants/globex")
                .json(&json!({"tier": "silo"})),
        )
        .await;
    assert!(tier.status.is_success(), "{}", tier.text);
    // Replicas learn of the move within the bound; a write racing it on
    // another replica inside that window is not yet fenced across
    // replicas (the move lock is per process).
    tokio::time::sleep(bound).await;
    forbid_listing(three, &other, "after-move").await;
    within(bound, async || {
        models_status(two, &other).await == StatusCode::FORBIDDEN
    })
    .await;

    // A model replaced on replica 1 is served replaced by 2 and 3; deleted
    // on 2, by neither 1 nor 3 (its bytes are in the shared bucket).
    if shared_bucket {
        let input = json!({"inputs": [[0.1, 0.2, 0.3, 0.4]]});
        let model = |seed| fief_serving::onnx_builder::Mlp::seeded(&[4, 8, 2], seed).to_onnx();
        assert_eq!(
            one.put_model(&key, "m", model(1)).await.status,
            StatusCode::CREATED
        );
        let first = one.invoke(&key, "shared", "m", &input).await.text;
        for s in [two, three] {
            within(bound, async || {
                s.invoke(&key, "shared", "m", &input).await.text == first
            })
            .await;
        }
        assert!(one.put_model(&key, "m", model(2)).await.status.is_success());
        let second = one.invoke(&key, "shared", "m", &input).await.text;
        assert_ne!(first, second);
        for s in [two, three] {
            let took = within(bound, async || {
                s.invoke(&key, "shared", "m", &input).await.text == second
            })
            .await;
            eprintln!("model replacement seen in {took:?}");
        }
        let del = two
            .send(two.data_req(&key, Method::DELETE, "/api/v1/models/m"))
            .await;
        assert!(del.status.is_success(), "{}", del.text);
        for s in [one, three] {
            let took = within(bound, async || {
                s.invoke(&key, "shared", "m", &input).await.status == StatusCode::NOT_FOUND
            })
            .await;
            eprintln!("model deletion seen in {took:?}");
        }
    }

    // Offboarding on replica 1: every replica refuses the tenant's key.
    let gone = one
        .send(one.admin_req(Method::DELETE, "/admin/v1/tenants/acme"))
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT, "{}", gone.text);
    for s in [two, three] {
        let took = within(bound, async || {
            models_status(s, &key).await == StatusCode::UNAUTHORIZED
        })
        .await;
        eprintln!("offboarding seen in {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_on_one_replica_takes_effect_on_the_others_within_a_second() {
    let bucket = common::test_bucket().await;
    let shared = bucket.is_some();
    let Some(r) = common::replicas(3, |c| {
        c.object_store = bucket.clone();
        // A long timer: only the notification can be this fast.
        if let Some(pg) = c.postgres.as_mut() {
            pg.change_poll_ms = 30_000;
        }
    })
    .await
    else {
        return;
    };
    coherent(&r, Duration::from_secs(1), shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_notifications_the_timer_bounds_staleness() {
    let bucket = common::test_bucket().await;
    let shared = bucket.is_some();
    let Some(r) = common::replicas(3, |c| {
        c.object_store = bucket.clone();
        if let Some(pg) = c.postgres.as_mut() {
            pg.notifications = false;
            pg.change_poll_ms = 300;
        }
    })
    .await
    else {
        return;
    };
    // The bound is the timer plus one read of the log and one request.
    coherent(&r, Duration::from_millis(600), shared).await;
}

async fn verify(s: &TestServer) -> serde_json::Value {
    let v = s
        .send(s.admin_req(Method::GET, "/admin/v1/audit/verify"))
        .await;
    assert_eq!(v.status, StatusCode::OK, "{}", v.text);
    v.json()
}

/// Three replicas append to one chain in PostgreSQL: each sees the others'
/// decisions, the runtime role can neither rewrite nor remove an entry, an
/// append that cannot be written fails the request, and the owner removing
/// the newest entries is reported against the last anchor.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_one_audit_chain_that_a_replica_cannot_rewrite() {
    let Some(r) = common::replicas(3, |_| {}).await else {
        return;
    };
    let key = r[0].tenant("acme", "pool").await;
    let mut ids = Vec::new();
    for s in &r {
        let got = s
            .send(s.data_req(&key, Method::GET, "/api/v1/models"))
            .await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.text);
        ids.push(got.headers["x-request-id"].to_str().unwrap().to_owned());
    }
    // Any replica's view holds every replica's decisions, in one order.
    let seen = r[2]
        .send(r[2].admin_req(Method::GET, "/admin/v1/audit?tenant=acme&limit=1000"))
        .await;
    let entries = seen.json()["entries"].as_array().unwrap().clone();
    for id in &ids {
        assert!(
            entries.iter().any(|e| e["request_id"] == id.as_str()),
            "{id} missing from {}",
            seen.text
        );
    }
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let v = verify(&r[1]).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["place"], "database");
    assert!(v["entries"].as_u64().unwrap() >= 6, "{v}");
    // Not one audit file beside the database.
    for s in &r {
        assert!(!s.dir.path().join("audit").exists());
    }

    // The runtime role appends and reads; it cannot change or remove.
    let pg = r[0].pg.clone().unwrap();
    let runtime = sqlx::PgPool::connect(&pg.config.url).await.unwrap();
    for sql in [
        "UPDATE fief_platform.audit_log SET body = body || ' ' WHERE seq = 1",
        "DELETE FROM fief_platform.audit_log WHERE seq = 1",
        "TRUNCATE fief_platform.audit_log",
    ] {
        let e = sqlx::query(sql).execute(&runtime).await.unwrap_err();
        assert!(e.to_string().contains("permission denied"), "{sql}: {e}");
    }
    runtime.close().await;

    // No entry, no decision: with appends refused the request is a 503.
    let owner = sqlx::PgPool::connect(&pg.admin_url).await.unwrap();
    let grant = |verb: &str| {
        format!(
            "{verb} INSERT ON fief_platform.audit_log {} \"{}\"",
            if verb == "GRANT" { "TO" } else { "FROM" },
            pg.role
        )
    };
    sqlx::query(&grant("REVOKE")).execute(&owner).await.unwrap();
    let refused = r[1]
        .send(r[1].data_req(&key, Method::GET, "/api/v1/models"))
        .await;
    sqlx::query(&grant("GRANT")).execute(&owner).await.unwrap();
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text
    );
    assert!(!refused.text.contains("\"data\""), "{}", refused.text);

    // Anchor the head, then the owner removes the newest entries: the rest
    // still chains, and verification reports the missing tail.
    let anchored = r[0]
        .send(r[0].admin_req(Method::POST, "/admin/v1/audit/anchor"))
        .await;
    assert_eq!(anchored.status, StatusCode::OK, "{}", anchored.text);
    let head = anchored.json()["anchor"]["seq"].as_i64().unwrap();
    let v = verify(&r[0]).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["anchor"]["seq"], head, "{v}");
    sqlx::query("DELETE FROM fief_platform.audit_log WHERE seq > $1")
        .bind(head - 3)
        .execute(&owner)
        .await
        .unwrap();
    owner.close().await;
    // (No [object_store] here: the anchor is in replica 1's data directory.)
    let v = verify(&r[0]).await;
    assert_eq!(v["ok"], false, "{v}");
    // Verifying is itself audited, so the log may have grown back past
    // the cut: either way the anchored entry is not what it was.
    let why = v["error"].as_str().unwrap();
    assert!(
        why.contains(&format!("entry {head}"))
            && (why.contains("removed") || why.contains("rewritten")),
        "{why}"
    );
}

/// Tier changes on one replica while another writes: every write the
/// writer's replica acknowledged is in the tenant's new place (the move
/// holds the tenant's lock in the database across the copy and the switch;
/// a write that finds the tier changed under it is a 503 to retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tier_change_on_one_replica_loses_no_write_acknowledged_by_another() {
    let Some(r) = common::replicas(2, |_| {}).await else {
        return;
    };
    let (mover, writer) = (&r[0], &r[1]);
    let key = mover.tenant("moving", "pool").await;
    // Enough rows that each copy takes a while.
    for i in 0..300 {
        let put = writer
            .send(
                writer
                    .data_req(
                        &key,
                        Method::PUT,
                        &format!("/api/v1/tables/t/items/seed-{i}"),
                    )
                    .json(&json!({"i": i})),
            )
            .await;
        assert!(put.status.is_success(), "{}", put.text);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let load = {
        let (http, url, key, stop, acked) = (
            writer.http.clone(),
            writer.data.clone(),
            key.clone(),
            stop.clone(),
            acked.clone(),
        );
        tokio::spawn(async move {
            let mut n = 0;
            let mut retried = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let item = format!("w-{n}");
                let status = http
                    .put(format!("{url}/api/v1/tables/t/items/{item}"))
                    .bearer_auth(&key)
                    .json(&json!({"n": n}))
                    .send()
                    .await
                    .unwrap()
                    .status();
                match status.as_u16() {
                    200 | 201 => acked.lock().unwrap().push(item),
                    503 => retried += 1,
                    other => panic!("{item}: {other}"),
                }
            }
            retried
        })
    };
    for tier in ["silo", "bridge", "pool", "silo"] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let moved = mover
            .send(
                mover
                    .admin_req(Method::PATCH, "/admin/v1/tenants/moving")
                    .json(&json!({ "tier": tier })),
            )
            .await;
        assert!(moved.status.is_success(), "to {tier}: {}", moved.text);
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let retried = load.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{} writes acknowledged across four moves, {retried} refused to retry",
        acked.len()
    );
    assert!(acked.len() > 20, "too few writes ran");
    for item in acked
        .iter()
        .chain(&(0..300).map(|i| format!("seed-{i}")).collect::<Vec<_>>())
    {
        let got = mover
            .send(mover.data_req(&key, Method::GET, &format!("/api/v1/tables/t/items/{item}")))
            .await;
        assert_eq!(
            got.status,
            StatusCode::OK,
            "acknowledged {item} lost in a move: {}",
            got.text
        );
    }
}
