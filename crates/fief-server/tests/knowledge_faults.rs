//! Defence in depth on the knowledge-base query path, with the real
//! embedder: with the query's tenant filter removed by fault injection
//! (a pool tenant's search walks the whole shared index and the chunk fetch
//! forgets its tenant condition), a pool tenant still receives none of
//! another tenant's chunks, because each chunk opens only under its own
//! tenant's key. Removing that last layer too makes the leak appear, so
//! the check is shown to be able to fail.
//!
//! On PostgreSQL a layer more holds: forced row-level security returns no
//! foreign chunk row at all, so even with the seal also removed nothing
//! leaks; disabling RLS as well makes the leak appear.
//!
//! Its own test binary: the switches are process-wide, so the tests here
//! run one at a time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::json;

use common::kb::{canary, create_kb, embedder_installed, put_doc, query, TOPICS};
use common::TestServer;
use fief_knowledge::faults;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const VOLCANO: &str = "Volcanoes erupt when magma rises through the crust; lava flows, ash clouds \
                       and pyroclastic flows follow the eruption.";
const ASK: &str = "what happens when a volcano erupts lava";

/// A pool victim with a secret volcano document; a pool attacker with the
/// common topics. Returns (victim, attacker, secret).
async fn plant(s: &TestServer) -> (String, String, String) {
    let victim = s.tenant("fault-victim", "pool").await;
    let attacker = s.tenant("fault-attacker", "pool").await;
    let secret = canary("fault-victim");
    for key in [&victim, &attacker] {
        create_kb(s, key, "notes").await;
    }
    // Only the victim knows about volcanoes; everyone has the common topics.
    put_doc(
        s,
        &victim,
        "notes",
        "volcano",
        json!({"text": format!("{VOLCANO} {secret}"), "metadata": {"canary": secret}}),
    )
    .await;
    for (id, text, _) in TOPICS {
        put_doc(s, &attacker, "notes", id, json!({"text": text})).await;
    }
    (victim, attacker, secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_bug_still_leaks_nothing_and_the_check_can_fail() {
    let _serial = SERIAL.lock().await;
    if !embedder_installed() {
        return;
    }
    let s = common::spawn().await;
    let (victim, attacker, secret) = plant(&s).await;
    let rejected = || async { s.metric("fief_kb_chunks_rejected_total").await };

    // Baseline: nothing of the victim's, nothing rejected.
    let r = query(&s, &attacker, "notes", ASK, 10).await;
    assert!(!r.text.contains(&secret), "{}", r.text);
    assert_eq!(rejected().await, 0.0);

    // The application filter is gone: the victim's chunk reaches the
    // attacker's query path and fails to open. Nothing leaks, the attacker
    // still gets its own answers, and the rejection is counted.
    faults::drop_query_tenant_filter(true);
    let r = query(&s, &attacker, "notes", ASK, 10).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        !r.text.contains(&secret),
        "LEAK to the pool attacker: {}",
        r.text
    );
    assert!(
        !r.json()["results"].as_array().unwrap().is_empty(),
        "{}",
        r.text
    );
    let after = rejected().await;
    assert!(
        after >= 1.0,
        "the fault did not route the victim's chunk to the query: {after}"
    );
    // (A silo tenant is not tried here: this fault removes nothing on its
    // path. Its search walks its own index and its chunk fetch reads its own
    // file, which holds no other tenant's rows; `knowledge.rs` checks that
    // every tier gets only its own chunks, and `verify_isolation.rs` that
    // the verifier reports a leak when the storage scope is taken from the
    // address.)

    // Both layers gone: the leak appears, so the assertions above can fail.
    faults::open_chunks_with_their_own_key(true);
    let r = query(&s, &attacker, "notes", ASK, 10).await;
    faults::open_chunks_with_their_own_key(false);
    faults::drop_query_tenant_filter(false);
    assert!(
        r.text.contains(&secret),
        "with every layer removed the victim's chunk should have leaked: {}",
        r.text
    );

    // Switches off: back to normal, and the victim's own view is intact.
    let r = query(&s, &attacker, "notes", ASK, 10).await;
    assert!(!r.text.contains(&secret));
    let r = query(&s, &victim, "notes", ASK, 1).await;
    assert_eq!(r.json()["results"][0]["document_id"], "volcano");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_row_level_security_stops_the_chunk_before_the_seal() {
    let _serial = SERIAL.lock().await;
    if !embedder_installed() {
        return;
    }
    let Some(pg) = common::pg::database().await else {
        return;
    };
    let config = pg.config.clone();
    let s = common::spawn_with(move |c| c.postgres = Some(config)).await;
    let (victim, attacker, secret) = plant(&s).await;
    let rejected = || async { s.metric("fief_kb_chunks_rejected_total").await };

    // The application filter and the seal both gone: row-level security
    // still returns none of the victim's rows, so nothing even reaches the
    // seal (no rejection) and nothing leaks.
    faults::drop_query_tenant_filter(true);
    faults::open_chunks_with_their_own_key(true);
    let r = query(&s, &attacker, "notes", ASK, 10).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains(&secret), "LEAK past RLS: {}", r.text);
    assert!(!r.json()["results"].as_array().unwrap().is_empty());
    assert_eq!(rejected().await, 0.0, "a foreign row got past RLS");

    // RLS removed as well: now the leak appears, so the check can fail.
    let admin = sqlx::PgPool::connect(&pg.admin_url).await.unwrap();
    for s in [
        "ALTER TABLE fief_pool.kb_chunks NO FORCE ROW LEVEL SECURITY",
        "ALTER TABLE fief_pool.kb_chunks DISABLE ROW LEVEL SECURITY",
    ] {
        sqlx::query(s).execute(&admin).await.unwrap();
    }
    let r = query(&s, &attacker, "notes", ASK, 10).await;
    faults::open_chunks_with_their_own_key(false);
    faults::drop_query_tenant_filter(false);
    assert!(
        r.text.contains(&secret),
        "with every layer removed the victim's chunk should have leaked: {}",
        r.text
    );
    for s in [
        "ALTER TABLE fief_pool.kb_chunks ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE fief_pool.kb_chunks FORCE ROW LEVEL SECURITY",
    ] {
        sqlx::query(s).execute(&admin).await.unwrap();
    }
    admin.close().await;
    let r = query(&s, &victim, "notes", ASK, 1).await;
    assert_eq!(r.json()["results"][0]["document_id"], "volcano");
    drop(s);
    pg.cleanup().await;
}
