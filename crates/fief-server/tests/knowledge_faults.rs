//! Defence in depth on the knowledge-base query path, with the real
//! embedder: with the query's tenant filter removed by fault injection
//! (a pool tenant's search walks the whole shared index and the chunk fetch
//! forgets its tenant condition), a pool tenant still receives none of
//! another tenant's chunks, because each chunk opens only under its own
//! tenant's key. Removing that last layer too makes the leak appear, so
//! the check is shown to be able to fail.
//!
//! Its own test binary: the switches are process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::json;

use common::kb::{canary, create_kb, embedder_installed, put_doc, query, TOPICS};
use fief_knowledge::faults;

const VOLCANO: &str = "Volcanoes erupt when magma rises through the crust; lava flows, ash clouds \
                       and pyroclastic flows follow the eruption.";
const ASK: &str = "what happens when a volcano erupts lava";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_bug_still_leaks_nothing_and_the_check_can_fail() {
    if !embedder_installed() {
        return;
    }
    let s = common::spawn().await;
    let victim = s.tenant("fault-victim", "pool").await;
    let attacker = s.tenant("fault-attacker", "pool").await;
    let silo = s.tenant("fault-silo", "silo").await;
    let secret = canary("fault-victim");
    for key in [&victim, &attacker, &silo] {
        create_kb(&s, key, "notes").await;
    }
    // Only the victim knows about volcanoes; everyone has the common topics.
    put_doc(
        &s,
        &victim,
        "notes",
        "volcano",
        json!({"text": format!("{VOLCANO} {secret}"), "metadata": {"canary": secret}}),
    )
    .await;
    for key in [&attacker, &silo] {
        for (id, text, _) in TOPICS {
            put_doc(&s, key, "notes", id, json!({"text": text})).await;
        }
    }
    let rejected = || async { s.metric("fief_kb_chunks_rejected_total").await };

    // Baseline: nothing of the victim's, nothing rejected.
    let r = query(&s, &attacker, "notes", ASK, 10).await;
    assert!(!r.text.contains(&secret), "{}", r.text);
    assert_eq!(rejected().await, 0.0);

    // The application filter is gone: the victim's chunk reaches the
    // attacker's query path and fails to open. Nothing leaks, the attacker
    // still gets its own answers, and the rejection is counted.
    faults::drop_query_tenant_filter(true);
    for (key, who) in [(&attacker, "pool attacker"), (&silo, "silo tenant")] {
        let r = query(&s, key, "notes", ASK, 10).await;
        assert_eq!(r.status, 200, "{who}: {}", r.text);
        assert!(!r.text.contains(&secret), "LEAK to the {who}: {}", r.text);
        assert!(
            !r.json()["results"].as_array().unwrap().is_empty(),
            "{who}: {}",
            r.text
        );
    }
    let after = rejected().await;
    assert!(
        after >= 1.0,
        "the fault did not route the victim's chunk to the query: {after}"
    );

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
