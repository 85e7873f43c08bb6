//! The tenant tables API through HTTP, for every tier of the embedded
//! backend (pool: a shared table with a tenant column; bridge: a table per
//! tenant; silo: a database file per tenant): items round-trip sealed,
//! listings page by prefix, other tenants' tables are unreachable in every
//! addressing form, concurrent requests never see each other's rows, a tier
//! change moves the items, and offboarding leaves nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use common::kb::canary;
use common::pg::TestPg;
use common::TestServer;

const TIERS: [(&str, &str); 4] = [
    ("tb-silo", "silo"),
    ("tb-bridge", "bridge"),
    ("tb-pool-a", "pool"),
    ("tb-pool-b", "pool"),
];

async fn put(s: &TestServer, key: &str, table: &str, item: &str, v: Value) -> common::Resp {
    s.send(
        s.data_req(
            key,
            Method::PUT,
            &format!("/api/v1/tables/{table}/items/{item}"),
        )
        .json(&v),
    )
    .await
}

async fn get(s: &TestServer, key: &str, table: &str, item: &str) -> common::Resp {
    s.send(s.data_req(
        key,
        Method::GET,
        &format!("/api/v1/tables/{table}/items/{item}"),
    ))
    .await
}

/// Where `tenant`'s items live, as the backend's catalogs say.
async fn catalog(s: &TestServer, pg: Option<&TestPg>, tenant: &str) -> Vec<String> {
    match pg {
        Some(pg) => pg.catalog(tenant).await,
        None => sqlite_catalog(s, tenant).await,
    }
}

/// What `catalog` shows for a tenant of `tier` holding `rows` items.
fn expected(pg: Option<&TestPg>, tier: &str, tenant: &str, rows: usize) -> Vec<String> {
    let ident = tenant.replace('-', "_");
    vec![match (pg, tier) {
        (_, "pool") => format!("{rows} shared rows"),
        (None, "bridge") => format!("t_{ident}_items"),
        (None, _) => "silo directory".to_owned(),
        (Some(_), "bridge") => format!("schema fief_t_{ident}"),
        (Some(pg), _) => format!("database {}_t_{ident}", pg.database),
    }]
}

async fn sqlite_catalog(s: &TestServer, tenant: &str) -> Vec<String> {
    let url = format!(
        "sqlite://{}?mode=ro",
        s.dir.path().join("fief.db").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mut found: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(format!("t_{}_items", tenant.replace('-', "_")))
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut rows = 0i64;
    for table in common::pg::CONTENT_TABLES {
        let n: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE tenant_id = ?"))
                .bind(tenant)
                .fetch_one(&pool)
                .await
                .unwrap();
        rows += n;
    }
    if rows > 0 {
        found.push(format!("{rows} shared rows"));
    }
    pool.close().await;
    if s.dir.path().join("tenants").join(tenant).exists() {
        found.push("silo directory".into());
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_per_tier_stay_with_their_tenant_on_sqlite() {
    items_suite(common::spawn().await, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_per_tier_stay_with_their_tenant_on_postgres() {
    let Some(pg) = common::pg::database().await else {
        return;
    };
    let config = pg.config.clone();
    let s = common::spawn_with(move |c| c.postgres = Some(config)).await;
    items_suite(s, Some(&pg)).await;
    pg.cleanup().await;
}

async fn items_suite(s: TestServer, pg: Option<&TestPg>) {
    let mut keys = Vec::new();
    let canaries: Vec<String> = TIERS.iter().map(|(t, _)| canary(t)).collect();
    for ((tenant, tier), c) in TIERS.iter().zip(&canaries) {
        let key = s.tenant(tenant, tier).await;
        // Same table and item names everywhere.
        for i in 0..5 {
            let r = put(
                &s,
                &key,
                "memory",
                &format!("session%2F{i}"),
                json!({"turns": [c, i], "who": tenant}),
            )
            .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        }
        keys.push(key);
    }
    // Where the items live follows the tier.
    for (tenant, tier) in TIERS {
        assert_eq!(
            catalog(&s, pg, tenant).await,
            expected(pg, tier, tenant, 5),
            "{tenant}"
        );
    }

    for ((tenant, _), (key, own)) in TIERS.iter().zip(keys.iter().zip(&canaries)) {
        let r = get(&s, key, "memory", "session%2F3").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json()["value"]["turns"][0], own.as_str(), "{tenant}");
        assert_eq!(r.json()["key"], "session/3");
        // Replacing bumps the version.
        let r = put(
            &s,
            key,
            "memory",
            "session%2F3",
            json!({"turns": [own, 3, "again"]}),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json()["version"], 2);
        // Listing by prefix, two pages.
        let r = s
            .send(s.data_req(
                key,
                Method::GET,
                "/api/v1/tables/memory/items?prefix=session/&limit=3",
            ))
            .await;
        let page = r.json();
        assert_eq!(page["items"].as_array().unwrap().len(), 3, "{}", r.text);
        let cursor = page["next_cursor"].as_str().unwrap().to_owned();
        let r = s
            .send(s.data_req(
                key,
                Method::GET,
                &format!(
                    "/api/v1/tables/memory/items?prefix=session/&limit=3&cursor={}",
                    cursor.replace('/', "%2F")
                ),
            ))
            .await;
        assert_eq!(r.json()["items"].as_array().unwrap().len(), 2, "{}", r.text);
        assert!(r.json()["next_cursor"].is_null());
        for c in &canaries {
            if c != own {
                assert!(!r.text.contains(c.as_str()), "LEAK of {c} to {tenant}");
            }
        }
    }

    // Every other tenant's table, in every addressing form: 403, the same
    // whether or not it exists, and nothing of the victim's in the answer.
    let attacker = &keys[2];
    for target in [
        "tb-pool-b%2Fmemory",
        "frn:fief:table:tb-pool-b%2Fmemory",
        "tb-silo%2Fmemory",
        "tb-bridge%2Fmemory",
        "tb-pool-b%2Fabsent",
        "TB-POOL-B%2Fmemory",
    ] {
        for (method, path, body) in [
            (
                Method::GET,
                format!("/api/v1/tables/{target}/items/session%2F1"),
                None,
            ),
            (Method::GET, format!("/api/v1/tables/{target}/items"), None),
            (
                Method::PUT,
                format!("/api/v1/tables/{target}/items/planted"),
                Some(json!(1)),
            ),
            (
                Method::DELETE,
                format!("/api/v1/tables/{target}/items/session%2F1"),
                None,
            ),
        ] {
            let mut req = s.data_req(attacker, method.clone(), &path);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let r = s.send(req).await;
            assert!(
                r.status == StatusCode::FORBIDDEN || r.status == StatusCode::BAD_REQUEST,
                "{method} {path}: {} {}",
                r.status,
                r.text
            );
            for c in &canaries[..2]
                .iter()
                .chain(&canaries[3..])
                .cloned()
                .collect::<Vec<_>>()
            {
                assert!(!r.text.contains(c.as_str()), "LEAK via {method} {path}");
            }
        }
    }
    let r = s
        .send(s.data_req(&keys[3], Method::GET, "/api/v1/tables/memory/items"))
        .await;
    assert_eq!(
        r.json()["items"].as_array().unwrap().len(),
        5,
        "victim intact: {}",
        r.text
    );

    // Values are sealed at rest: no canary in clear (nor as the hex of a
    // bytea) in any database file, or on PostgreSQL in anything the
    // databases hold. Item keys are stored in clear, so finding them shows
    // the scan reads the data.
    let stored: Vec<(String, Vec<u8>)> = match pg {
        Some(pg) => vec![("pg_dump".into(), pg.dump().await.into_bytes())],
        None => walk(s.dir.path())
            .into_iter()
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect(),
    };
    let found =
        |bytes: &[u8], needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(
        stored.iter().any(|(_, b)| found(b, "session/3")),
        "the scan does not see the stored rows"
    );
    for (place, bytes) in &stored {
        for c in &canaries {
            let hex: String = c.bytes().map(|b| format!("{b:02x}")).collect();
            assert!(
                !found(bytes, c) && !found(bytes, &hex),
                "canary {c} in clear in {place}"
            );
        }
    }

    // A tier change moves the items, pool -> bridge -> silo -> pool.
    for tier in ["bridge", "silo", "pool"] {
        let r = s
            .send(
                s.admin_req(Method::PATCH, "/admin/v1/tenants/tb-pool-a")
                    .json(&json!({"tier": tier})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = get(&s, &keys[2], "memory", "session%2F4").await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "after moving to {tier}: {}",
            r.text
        );
        assert_eq!(r.json()["value"]["turns"][0], canaries[2].as_str());
        assert_eq!(
            catalog(&s, pg, "tb-pool-a").await,
            expected(pg, tier, "tb-pool-a", 5),
            "after moving to {tier}"
        );
    }

    // Offboarding: no row, table or file of the tenant remains.
    for (tenant, _) in TIERS {
        let r = s
            .send(s.admin_req(Method::DELETE, &format!("/admin/v1/tenants/{tenant}")))
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        let left = catalog(&s, pg, tenant).await;
        assert!(left.is_empty(), "{tenant}: {left:?}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.to_string_lossy().contains(".db") {
            out.push(p);
        }
    }
    out
}

/// Thousands of interleaved, concurrent requests of four tenants (every
/// tier) over the same table and key names: every answer is the caller's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_see_another_tenants_rows_on_sqlite() {
    concurrency_suite(common::spawn().await).await;
}

/// Over PostgreSQL the runtime pool has 8 connections, each reused by every
/// tenant in turn: the tenant set per transaction must never linger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_see_another_tenants_rows_on_postgres() {
    let Some(pg) = common::pg::database().await else {
        return;
    };
    let config = pg.config.clone();
    concurrency_suite(common::spawn_with(move |c| c.postgres = Some(config)).await).await;
    pg.cleanup().await;
}

async fn concurrency_suite(s: TestServer) {
    let mut tenants = Vec::new();
    for (tenant, tier) in TIERS {
        let id = format!("{tenant}-c");
        let key = s.tenant(&id, tier).await;
        tenants.push((key, canary(&id)));
    }
    let s = std::sync::Arc::new(s);
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..500 {
        for (i, (key, own)) in tenants.iter().enumerate() {
            let (s, key, own) = (s.clone(), key.clone(), own.clone());
            let item = format!("k{}", round % 7);
            tasks.spawn(async move {
                let r = put(
                    &s,
                    &key,
                    "state",
                    &item,
                    json!({"owner": own, "round": round}),
                )
                .await;
                assert!(r.status.is_success(), "{}", r.text);
                let r = get(&s, &key, "state", &item).await;
                assert_eq!(r.status, StatusCode::OK, "{}", r.text);
                assert_eq!(
                    r.json()["value"]["owner"],
                    own.as_str(),
                    "tenant {i} saw another's row"
                );
                if round % 50 == 0 {
                    let r = s
                        .send(s.data_req(&key, Method::GET, "/api/v1/tables/state/items"))
                        .await;
                    let items = r.json()["items"].as_array().unwrap().clone();
                    // Its own item, just written, is there: an empty
                    // listing would pass the loop below without a check.
                    assert!(
                        items.iter().any(|v| v["key"] == item.as_str()),
                        "tenant {i}'s listing lacks its own {item}: {}",
                        r.text
                    );
                    for v in items {
                        assert_eq!(v["value"]["owner"], own.as_str());
                    }
                }
            });
            while tasks.len() >= 32 {
                tasks.join_next().await.unwrap().unwrap();
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

/// Items written by the first build (a bridge tenant's in `items_<tenant>`,
/// a silo tenant's in `tenants/<id>/tables.db`, neither with a tenant
/// column) are moved into the tenant's place at start-up, not left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_of_the_first_layout_move_into_place_at_start_up() {
    let s = common::spawn_with(|c| c.postgres = None).await;
    let bridge = s.tenant("up-bridge", "bridge").await;
    let silo = s.tenant("up-silo", "silo").await;
    for key in [&bridge, &silo] {
        let r = put(&s, key, "memory", "old", json!({"kept": true})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let dir = s.dir.path().to_owned();
    let s = {
        let mut s = s;
        s.running.take().unwrap().shutdown().await.unwrap();
        // Rewrite both items into the first layout.
        let old_columns = "(tbl TEXT NOT NULL, key TEXT NOT NULL, sealed BLOB NOT NULL,
            version INTEGER NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (tbl, key)) STRICT";
        let main =
            sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("fief.db").display()))
                .await
                .unwrap();
        for s in [
            format!("CREATE TABLE items_up_bridge {old_columns}"),
            "INSERT INTO items_up_bridge SELECT tbl, key, sealed, version, updated_at FROM t_up_bridge_items".into(),
            "DELETE FROM t_up_bridge_items".into(),
        ] {
            sqlx::query(&s).execute(&main).await.unwrap();
        }
        main.close().await;
        let silo_dir = dir.join("tenants/up-silo");
        // One connection: ATTACH holds for the connection that ran it.
        let mut new = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
            "sqlite://{}?mode=rwc",
            silo_dir.join("data.db").display()
        ))
        .await
        .unwrap();
        sqlx::query(&format!(
            "ATTACH DATABASE '{}' AS old",
            silo_dir.join("tables.db").display()
        ))
        .execute(&mut new)
        .await
        .unwrap();
        for s in [
            format!("CREATE TABLE old.items {old_columns}"),
            "INSERT INTO old.items SELECT tbl, key, sealed, version, updated_at FROM main.items"
                .into(),
            "DELETE FROM main.items".into(),
        ] {
            sqlx::query(&s).execute(&mut new).await.unwrap();
        }
        sqlx::Connection::close(new).await.unwrap();
        common::spawn_in(s.dir, |c| c.postgres = None).await
    };
    for key in [&bridge, &silo] {
        let r = get(&s, key, "memory", "old").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json()["value"]["kept"], true);
    }
    assert!(!dir.join("tenants/up-silo/tables.db").exists());
    let main = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("fief.db").display()))
        .await
        .unwrap();
    let left: Option<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE name = 'items_up_bridge'")
            .fetch_optional(&main)
            .await
            .unwrap();
    assert_eq!(left, None);
}

/// A data directory with an embedded store does not silently start empty
/// on PostgreSQL: its rows would vanish from view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_data_directory_with_an_embedded_store() {
    let Some(pg) = common::pg::database().await else {
        return;
    };
    let mut s = common::spawn_with(|c| c.postgres = None).await;
    s.tenant("kept", "pool").await;
    s.running.take().unwrap().shutdown().await.unwrap();
    let mut config = fief_config::Config::ephemeral(s.dir.path());
    config.postgres = Some(pg.config.clone());
    let refused = fief_server::start(config, fief_server::Secrets::default()).await;
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("holds an embedded (SQLite) store"),
        "{message}"
    );
    pg.cleanup().await;
}

/// Writes racing a tier change are neither lost nor refused: the move waits
/// for running operations, and operations wait for the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_a_tier_change_are_kept() {
    let s = std::sync::Arc::new(common::spawn().await);
    let key = s.tenant("tb-moving", "pool").await;
    let mut writes = Vec::new();
    for i in 0..200 {
        let (s, key) = (s.clone(), key.clone());
        writes.push(tokio::spawn(async move {
            let r = put(&s, &key, "memory", &format!("k{i:03}"), json!({"i": i})).await;
            assert_eq!(r.status, StatusCode::CREATED, "k{i:03}: {}", r.text);
        }));
    }
    for tier in ["silo", "bridge", "pool"] {
        let r = s
            .send(
                s.admin_req(Method::PATCH, "/admin/v1/tenants/tb-moving")
                    .json(&json!({ "tier": tier })),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    for w in writes {
        w.await.unwrap();
    }
    for i in 0..200 {
        let r = get(&s, &key, "memory", &format!("k{i:03}")).await;
        assert_eq!(r.status, StatusCode::OK, "k{i:03} lost: {}", r.text);
        assert_eq!(r.json()["value"]["i"], i);
    }
}

/// `If-Match` / `If-None-Match: *` make a write a compare-and-set, in every
/// tier: two writers holding the same version, one wins and the other gets
/// 412; a create-only write over an existing item is 412; a conditional
/// delete at a stale version is 412 and deletes nothing. Another tenant's
/// item of the same name is never the one compared.
async fn conditional_suite(s: TestServer) {
    let mut keys = Vec::new();
    for (tenant, tier) in TIERS {
        keys.push(s.tenant(tenant, tier).await);
    }
    let with = |key: &str, method: Method, header: (&str, &str)| {
        s.data_req(key, method, "/api/v1/tables/state/items/agent")
            .header(header.0, header.1)
    };
    for (i, key) in keys.iter().enumerate() {
        let r = s
            .send(with(key, Method::PUT, ("if-none-match", "*")).json(&json!({"turn": 0})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.headers["etag"], "\"1\"");
        let r = s
            .send(with(key, Method::PUT, ("if-none-match", "*")).json(&json!({"turn": 9})))
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::PRECONDITION_FAILED, "PreconditionFailed"),
            "{}",
            r.text
        );
        // Two writers read version 1; the first wins, the second is refused.
        let first = s
            .send(with(key, Method::PUT, ("if-match", "\"1\"")).json(&json!({"turn": 1})))
            .await;
        assert_eq!(first.status, StatusCode::OK, "{}", first.text);
        assert_eq!(first.headers["etag"], "\"2\"");
        let second = s
            .send(with(key, Method::PUT, ("if-match", "\"1\"")).json(&json!({"turn": 100})))
            .await;
        assert_eq!(
            second.status,
            StatusCode::PRECONDITION_FAILED,
            "{}",
            second.text
        );
        let r = s.send(with(key, Method::DELETE, ("if-match", "1"))).await;
        assert_eq!(r.status, StatusCode::PRECONDITION_FAILED, "{}", r.text);
        let r = get(&s, key, "state", "agent").await;
        assert_eq!(
            r.json()["value"],
            json!({"turn": 1}),
            "{}: {}",
            TIERS[i].0,
            r.text
        );
        assert_eq!(r.headers["etag"], "\"2\"");
        // An If-Match naming no version is a 400 that says what it takes.
        let r = s
            .send(with(key, Method::PUT, ("if-match", "latest")).json(&json!(1)))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert!(
            r.text.contains("If-Match takes an item's version"),
            "{}",
            r.text
        );
    }
    // Each tenant's item moved on its own: all at version 2, none deleted.
    for key in &keys {
        let r = s
            .send(with(key, Method::DELETE, ("if-match", "\"2\"")))
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_compare_and_set_in_every_tier_on_sqlite() {
    conditional_suite(common::spawn().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_compare_and_set_in_every_tier_on_postgres() {
    let Some(pg) = common::pg::database().await else {
        return;
    };
    let config = pg.config.clone();
    conditional_suite(common::spawn_with(move |c| c.postgres = Some(config)).await).await;
    pg.cleanup().await;
}
