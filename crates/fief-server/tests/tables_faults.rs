//! Defence in depth for the tenant tables. With the shared table's tenant
//! condition removed by fault injection (the application filter bug), a pool
//! tenant still reads none of another's items: on SQLite the seal binds each
//! value to its tenant; on PostgreSQL row-level security returns no foreign
//! row at all, and with RLS removed too the seal still holds. PostgreSQL
//! also refuses to start with a runtime role RLS would not bind. Own binary:
//! the switch is process-wide, so the tests here run one at a time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use reqwest::{Method, StatusCode};
use serde_json::json;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
        .send(s.data_req(
            &attacker,
            Method::GET,
            "/api/v1/tables/memory/items/only-victim",
        ))
        .await;
    fief_store::faults::drop_tenant_filter(false);

    for r in [&listing, &own, &other] {
        assert!(!r.text.contains(&secret), "LEAK: {}", r.text);
    }
    // The unfiltered listing saw the victim's rows and dropped them.
    let items = listing.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{}", listing.text);
    assert_eq!(items[0]["value"]["mine"], true);
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.text);
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
        config.postgres = Some(fief_config::PostgresConfig { url, admin_url });
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
