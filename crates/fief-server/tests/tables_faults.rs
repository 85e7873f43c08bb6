//! Defence in depth for the tenant tables. With the shared table's tenant
//! condition removed by fault injection (the application filter bug), a pool
//! tenant still reads, deletes and overwrites none of another's items: on
//! SQLite the seal binds each value to its tenant (a read or a delete uses
//! only rows that open under the caller's key, and the rejections are
//! counted, which proves the foreign rows did reach that step), and an
//! overwrite cannot cross because the row's key includes the tenant; on
//! PostgreSQL row-level security returns and deletes no foreign row at all,
//! and with RLS removed too the seal still holds. Bridge and silo tenants'
//! items are in tables and files of their own. PostgreSQL also refuses to
//! start with a runtime role RLS would not bind. Own binary: the switch is
//! process-wide, so the tests here run one at a time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use reqwest::{Method, StatusCode};
use serde_json::json;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn put(
    s: &common::TestServer,
    key: &str,
    path: &str,
    value: serde_json::Value,
) -> StatusCode {
    s.send(s.data_req(key, Method::PUT, path).json(&value))
        .await
        .status
}

/// The item at `path` as its owner reads it: (version, value).
async fn read(s: &common::TestServer, key: &str, path: &str) -> (u64, serde_json::Value) {
    let r = s.send(s.data_req(key, Method::GET, path)).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
    (
        r.json()["version"].as_u64().unwrap(),
        r.json()["value"].clone(),
    )
}

/// With the filter gone, `attacker` deletes and overwrites the item names
/// `victims` hold; afterwards every victim's item is exactly as it was.
async fn writes_stay_home(
    s: &common::TestServer,
    attacker: &str,
    victims: &[(&str, &str)],
    secret: &str,
) {
    fief_store::faults::drop_tenant_filter(true);
    let mut answers = Vec::new();
    for (_, path) in victims {
        let del = s.send(s.data_req(attacker, Method::DELETE, path)).await;
        let over = put(s, attacker, path, json!({"overwritten": true})).await;
        let del_again = s.send(s.data_req(attacker, Method::DELETE, path)).await;
        answers.push((path.to_string(), del.status, over, del_again.status));
    }
    fief_store::faults::drop_tenant_filter(false);
    for (path, del, over, del_again) in answers {
        // Its own namespace: nothing to delete, then its own new item, deleted.
        assert_eq!(
            (del, over, del_again),
            (
                StatusCode::NOT_FOUND,
                StatusCode::CREATED,
                StatusCode::NO_CONTENT
            ),
            "{path}"
        );
    }
    for (key, path) in victims {
        let (version, value) = read(s, key, path).await;
        assert_eq!(version, 1, "{path} was rewritten");
        assert_eq!(value["secret"], secret, "{path} was rewritten");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_tenant_filter_the_seal_still_holds() {
    let _serial = SERIAL.lock().await;
    let s = common::spawn().await;
    let victim = s.tenant("tf-victim", "pool").await;
    let attacker = s.tenant("tf-attacker", "pool").await;
    let secret = common::kb::canary("tf-victim");
    for (key, value) in [
        (&victim, json!({"secret": secret})),
        (&attacker, json!({"mine": true})),
    ] {
        let path = "/api/v1/tables/memory/items/shared-key";
        assert_eq!(put(&s, key, path, value).await, StatusCode::CREATED);
    }
    let only_victim = "/api/v1/tables/memory/items/only-victim";
    assert_eq!(
        put(&s, &victim, only_victim, json!({"secret": secret})).await,
        StatusCode::CREATED
    );
    let rejected = || async { s.metric("fief_items_rejected_total").await };
    assert_eq!(rejected().await, 0.0);

    fief_store::faults::drop_tenant_filter(true);
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
        .send(s.data_req(&attacker, Method::GET, only_victim))
        .await;
    fief_store::faults::drop_tenant_filter(false);

    for r in [&listing, &own, &other] {
        assert!(!r.text.contains(&secret), "LEAK: {}", r.text);
    }
    // The unfiltered listing saw the victim's rows and dropped them.
    let items = listing.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{}", listing.text);
    assert_eq!(items[0]["value"]["mine"], true);
    assert_eq!(own.json()["value"]["mine"], true, "{}", own.text);
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.text);
    // ...and it is the seal that stopped them: the victim's rows reached it.
    let after_reads = rejected().await;
    assert!(after_reads >= 3.0, "rows rejected: {after_reads}");

    // Writes: the attacker's delete of a name both hold removes its own item
    // only; the victim's survives, on the pool tier and in a bridge table
    // and a silo file of its own.
    fief_store::faults::drop_tenant_filter(true);
    let r = s
        .send(s.data_req(
            &attacker,
            Method::DELETE,
            "/api/v1/tables/memory/items/shared-key",
        ))
        .await;
    fief_store::faults::drop_tenant_filter(false);
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(
        rejected().await > after_reads,
        "the delete did not meet the victim's row"
    );
    let bridge = s.tenant("tf-bridge", "bridge").await;
    let silo = s.tenant("tf-silo", "silo").await;
    let mut victims = vec![
        (victim.as_str(), "/api/v1/tables/memory/items/shared-key"),
        (victim.as_str(), only_victim),
    ];
    for key in [&bridge, &silo] {
        let path = "/api/v1/tables/memory/items/tiered";
        assert_eq!(
            put(&s, key, path, json!({"secret": secret})).await,
            StatusCode::CREATED
        );
        victims.push((key.as_str(), path));
    }
    writes_stay_home(&s, &attacker, &victims, &secret).await;
}

async fn count_as_runtime(url: &str, tenant: Option<&str>) -> Result<i64, String> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    if let Some(t) = tenant {
        sqlx::query("SELECT set_config('fief.tenant', $1, true)")
            .bind(t)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    // The application's query with its tenant condition forgotten.
    let n = sqlx::query_scalar("SELECT count(*) FROM fief_pool.items")
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| e.to_string());
    drop(tx);
    pool.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_row_level_security_holds_without_the_application_filter() {
    let _serial = SERIAL.lock().await;
    let Some(pg) = common::pg::database().await else {
        return;
    };
    let config = pg.config.clone();
    let s = common::spawn_with(move |c| c.postgres = Some(config)).await;
    let victim = s.tenant("rls-victim", "pool").await;
    let attacker = s.tenant("rls-attacker", "pool").await;
    let silo_a = s.tenant("rls-silo-a", "silo").await;
    let silo_b = s.tenant("rls-silo-b", "silo").await;
    let secret = common::kb::canary("rls-victim");
    for i in 0..3 {
        let r = s
            .send(
                s.data_req(
                    &victim,
                    Method::PUT,
                    &format!("/api/v1/tables/memory/items/v{i}"),
                )
                .json(&json!({"secret": secret})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    for key in [&attacker, &silo_a, &silo_b] {
        let r = s
            .send(
                s.data_req(key, Method::PUT, "/api/v1/tables/memory/items/mine")
                    .json(&json!({"mine": true})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }

    // Through the API, with the application filter gone: nothing foreign.
    fief_store::faults::drop_tenant_filter(true);
    let listing = s
        .send(s.data_req(&attacker, Method::GET, "/api/v1/tables/memory/items"))
        .await;
    let silo_listing = s
        .send(s.data_req(&silo_a, Method::GET, "/api/v1/tables/memory/items"))
        .await;
    fief_store::faults::drop_tenant_filter(false);
    assert_eq!(
        listing.json()["items"].as_array().unwrap().len(),
        1,
        "{}",
        listing.text
    );
    assert!(!listing.text.contains(&secret));
    assert_eq!(
        silo_listing.json()["items"].as_array().unwrap().len(),
        1,
        "{}",
        silo_listing.text
    );

    // Deletes and overwrites with the filter gone: row-level security hides
    // the victim's rows from the attacker's statements.
    let victims: Vec<(&str, String)> = (0..3)
        .map(|i| (victim.as_str(), format!("/api/v1/tables/memory/items/v{i}")))
        .collect();
    let victim_paths: Vec<(&str, &str)> = victims.iter().map(|(k, p)| (*k, p.as_str())).collect();
    writes_stay_home(&s, &attacker, &victim_paths, &secret).await;
    assert_eq!(
        s.metric("fief_items_rejected_total").await,
        0.0,
        "a row got past RLS"
    );

    // In the database itself: the runtime role's unfiltered query sees the
    // attacker's row only, and with no tenant set it fails outright.
    let url = &pg.config.url;
    assert_eq!(count_as_runtime(url, Some("rls-attacker")).await, Ok(1));
    assert_eq!(count_as_runtime(url, Some("rls-victim")).await, Ok(3));
    let unset = count_as_runtime(url, None).await;
    assert!(
        unset.as_ref().is_err_and(|e| e.contains("fief.tenant")),
        "{unset:?}"
    );

    // A silo tenant's connection cannot reach another silo's database.
    let silo_a_url = format!("{}_t_rls_silo_a", url);
    let pool = sqlx::PgPool::connect(&silo_a_url).await.unwrap();
    let other = sqlx::query(&format!(
        "SELECT count(*) FROM {}_t_rls_silo_b.fief_silo.items",
        pg.database
    ))
    .fetch_one(&pool)
    .await;
    let err = other.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        err.contains("cross-database references are not implemented"),
        "{err}"
    );
    pool.close().await;

    // Remove row-level security too: the same query now sees the victim's
    // rows (so the checks above can fail), and through the API the seal is
    // what still stands.
    let admin = sqlx::PgPool::connect(&pg.admin_url).await.unwrap();
    sqlx::query("ALTER TABLE fief_pool.items NO FORCE ROW LEVEL SECURITY")
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE fief_pool.items DISABLE ROW LEVEL SECURITY")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    assert_eq!(count_as_runtime(url, Some("rls-attacker")).await, Ok(4));
    fief_store::faults::drop_tenant_filter(true);
    let listing = s
        .send(s.data_req(&attacker, Method::GET, "/api/v1/tables/memory/items"))
        .await;
    fief_store::faults::drop_tenant_filter(false);
    assert!(!listing.text.contains(&secret), "LEAK: {}", listing.text);
    assert_eq!(
        listing.json()["items"].as_array().unwrap().len(),
        1,
        "{}",
        listing.text
    );
    // ...and the seal is what keeps the victim's rows from deletes.
    writes_stay_home(&s, &attacker, &victim_paths, &secret).await;
    assert!(s.metric("fief_items_rejected_total").await >= 3.0);
    drop(s);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_runtime_role_that_rls_would_not_bind() {
    let _serial = SERIAL.lock().await;
    let Some(pg) = common::pg::database().await else {
        return;
    };
    let admin = sqlx::PgPool::connect(&pg.admin_url).await.unwrap();
    let bypass = format!("{}_bypass", pg.role);
    let owner = format!("{}_owner", pg.role);
    for s in [
        format!("CREATE ROLE {bypass} LOGIN NOSUPERUSER BYPASSRLS"),
        format!("CREATE ROLE {owner} LOGIN NOSUPERUSER NOBYPASSRLS"),
        format!("GRANT CREATE ON DATABASE {} TO {owner}", pg.database),
    ] {
        sqlx::query(&s).execute(&admin).await.unwrap();
    }
    admin.close().await;
    let as_role = |role: &str| pg.config.url.replace(&pg.role, role);
    let superuser = pg.admin_url.clone();
    for (url, admin_url, needle) in [
        // The owner migrates, so it owns the tables it would run as.
        (as_role(&owner), as_role(&owner), "fief_pool.items"),
        (as_role(&bypass), pg.admin_url.clone(), "has BYPASSRLS"),
        (superuser.clone(), superuser.clone(), "is a superuser"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = fief_config::Config::ephemeral(dir.path());
        config.postgres = Some(fief_config::PostgresConfig::new(url, admin_url));
        let refused = fief_server::start(config, fief_server::Secrets::default()).await;
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("refusing to serve") && message.contains(needle),
            "{needle}: {message}"
        );
    }
    let admin = sqlx::PgPool::connect(&pg.admin_url).await.unwrap();
    for s in [
        "DROP SCHEMA IF EXISTS fief_pool CASCADE".to_owned(),
        "DROP SCHEMA IF EXISTS fief_platform CASCADE".to_owned(),
        format!("DROP OWNED BY {owner}"),
        format!("DROP OWNED BY {bypass}"),
        format!("DROP ROLE {owner}"),
        format!("DROP ROLE {bypass}"),
    ] {
        let _ = sqlx::query(&s).execute(&admin).await;
    }
    admin.close().await;
    pg.cleanup().await;
}

/// Invariant 9: a decision whose audit entry cannot be written is void.
/// With every append failing, requests answer 503 and nothing they asked
/// for happens; once appends work again, so does everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_audit_entry_no_request_acts() {
    let _serial = SERIAL.lock().await;
    let s = common::spawn().await;
    let key = s.tenant("audit-fail", "pool").await;
    let item = "/api/v1/tables/memory/items/k";
    let onnx = common::tenant_model(1).to_onnx();
    fief_audit::faults::fail_appends(true);
    let writes = [
        s.send(s.data_req(&key, Method::PUT, item).json(&json!({"v": 1})))
            .await,
        s.put_model(&key, "m", onnx.clone()).await,
        s.send(
            s.data_req(&key, Method::PUT, "/api/v1/policies/p")
                .header("content-type", "text/plain")
                .body("forbid (principal, action, resource);"),
        )
        .await,
        s.send(
            s.admin_req(Method::POST, "/admin/v1/tenants")
                .json(&json!({"id": "audit-fail-2"})),
        )
        .await,
        s.send(s.admin_req(Method::DELETE, "/admin/v1/tenants/audit-fail"))
            .await,
    ];
    fief_audit::faults::fail_appends(false);
    for r in &writes {
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
        assert_eq!(r.code(), "Unavailable");
    }
    // Nothing happened: no item, model, policy or tenant, and the tenant lives.
    for path in [item, "/api/v1/models/m", "/api/v1/policies/p"] {
        let r = s.send(s.data_req(&key, Method::GET, path)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text);
    }
    let r = s
        .send(s.admin_req(Method::GET, "/admin/v1/tenants/audit-fail-2"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Appends work again: so do requests (the check can fail the other way).
    assert_eq!(
        s.send(s.data_req(&key, Method::PUT, item).json(&json!({"v": 1})))
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        s.put_model(&key, "m", onnx).await.status,
        StatusCode::CREATED
    );
}
