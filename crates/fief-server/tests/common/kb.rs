//! Knowledge-base helpers: a labelled topic set, canaries, and requests.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{Resp, TestServer};

/// Five topics every tenant writes about, and a question for each whose
/// expected top-1 document is the topic's.
pub const TOPICS: &[(&str, &str, &str)] = &[
    (
        "bread",
        "Baking sourdough bread: feed the starter the day before, mix flour, water and salt, \
         let the dough rise overnight, then bake it in a hot Dutch oven until the crust is deep brown.",
        "how do I make bread dough rise with a starter",
    ),
    (
        "eclipse",
        "A total solar eclipse happens when the Moon passes between the Sun and the Earth and \
         covers the Sun's disk; the sky darkens in the middle of the day and the corona appears.",
        "why does the sky go dark when the moon covers the sun",
    ),
    (
        "tax",
        "Filing an income tax return: collect your salary statements, deduct eligible expenses, \
         and submit the return to the tax office before the filing deadline to avoid penalties.",
        "deadline for submitting my income taxes",
    ),
    (
        "tomatoes",
        "Growing tomatoes in a vegetable garden: plant the seedlings in full sun, water them deeply \
         twice a week, and tie the vines to stakes or cages as they grow.",
        "how often should I water tomato plants",
    ),
    (
        "bicycle",
        "Fixing a flat bicycle tyre: take the wheel off, pull out the inner tube, find the hole, \
         patch the puncture and pump the tyre back up to the right pressure.",
        "repair a punctured bike tire",
    ),
];

/// True if the model is installed; under CI its absence fails the test.
pub fn embedder_installed() -> bool {
    let dir = fief_embed::default_dir().expect("an embedder directory");
    let ok = dir.join("model.onnx").is_file() && dir.join("vocab.txt").is_file();
    if !ok {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "the embedder is not installed in {} (run `bash scripts/setup-embedder.sh`)",
            dir.display()
        );
        eprintln!(
            "SKIP: embedder not installed in {}; run `bash scripts/setup-embedder.sh`",
            dir.display()
        );
    }
    ok
}

pub fn canary(tenant: &str) -> String {
    format!("CANARY-{tenant}-{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    nanos ^ std::process::id().rotate_left(16)
}

pub fn doc_text(topic: &str, canary: &str) -> String {
    format!("{topic} Reference code {canary}.")
}

pub async fn create_kb(s: &TestServer, key: &str, name: &str) {
    let r = s
        .send(
            s.data_req(key, Method::POST, "/api/v1/knowledge-bases")
                .json(&json!({ "name": name })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

pub async fn put_doc(s: &TestServer, key: &str, kb: &str, id: &str, body: Value) -> Value {
    let r = s
        .send(
            s.data_req(
                key,
                Method::PUT,
                &format!("/api/v1/knowledge-bases/{kb}/documents/{id}"),
            )
            .json(&body),
        )
        .await;
    assert!(
        r.status == StatusCode::CREATED || r.status == StatusCode::OK,
        "{}",
        r.text
    );
    r.json()
}

pub async fn query(s: &TestServer, key: &str, kb: &str, q: &str, top_k: usize) -> Resp {
    s.send(
        s.data_req(
            key,
            Method::POST,
            &format!("/api/v1/knowledge-bases/{kb}/query"),
        )
        .json(&json!({"query": q, "top_k": top_k})),
    )
    .await
}
