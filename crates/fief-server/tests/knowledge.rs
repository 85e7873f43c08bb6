//! Knowledge bases end to end with the real all-MiniLM-L6-v2 weights, through
//! the HTTP API: tenants of every tier ingest the same topics, each document
//! carrying the tenant's canary; every query answers only the caller's own
//! chunks, a labelled query set finds its documents, deletion removes chunks
//! from search and from the database files, and `/v1/embeddings` matches the
//! reference vectors. `answer` checks retrieve-and-generate, `hybrid` the
//! keyword index and its fusion with the vectors.
//!
//! Needs `bash scripts/setup-embedder.sh` (the README's test command runs
//! it). Without the model the tests skip, except under `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "knowledge/answer.rs"]
mod answer;
mod common;
#[path = "knowledge/hybrid.rs"]
mod hybrid;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use common::kb::{canary, create_kb, doc_text, embedder_installed, put_doc, query, TOPICS};
use common::TestServer;

/// Asserts the answer holds no canary but the caller's own.
fn only_own(body: &str, own: &str, all: &[String], context: &str) {
    for c in all {
        if c != own {
            assert!(
                !body.contains(c.as_str()),
                "LEAK of {c} to {own} ({context}): {body}"
            );
        }
    }
}

/// Sealed chunk blobs of a pool tenant's documents, read straight from the
/// database.
async fn sealed_blobs(s: &TestServer, tenant: &str, doc: Option<&str>) -> Vec<Vec<u8>> {
    let rows: Vec<(Vec<u8>, Vec<u8>)> = if let Some(pg) = &s.pg {
        // A superuser: row-level security does not hide the rows from it.
        let pool = sqlx::PgPool::connect(&pg.admin_url).await.unwrap();
        let rows = sqlx::query_as(
            "SELECT sealed_text, sealed_vector FROM fief_pool.kb_chunks
             WHERE tenant_id = $1 AND ($2::text IS NULL OR document = $2)",
        )
        .bind(tenant)
        .bind(doc)
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        rows
    } else {
        let url = format!(
            "sqlite://{}?mode=ro",
            s.dir.path().join("fief.db").display()
        );
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let rows = sqlx::query_as(
            "SELECT sealed_text, sealed_vector FROM kb_chunks
             WHERE tenant_id = ? AND (? IS NULL OR document = ?)",
        )
        .bind(tenant)
        .bind(doc)
        .bind(doc)
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        rows
    };
    rows.into_iter().flat_map(|(a, b)| [a, b]).collect()
}

/// How many of `blobs` are still stored. On SQLite: found (by a 48-byte
/// window) anywhere in the database files, free pages and WAL included. On
/// PostgreSQL: in a live row (dead tuples wait for vacuum; they are sealed,
/// and offboarding destroys the key).
async fn on_disk(s: &TestServer, blobs: &[Vec<u8>]) -> usize {
    if let Some(pg) = &s.pg {
        let pool = sqlx::PgPool::connect(&pg.admin_url).await.unwrap();
        let mut n = 0;
        for b in blobs {
            let found: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM fief_pool.kb_chunks WHERE sealed_text = $1 OR sealed_vector = $1",
            )
            .bind(b)
            .fetch_optional(&pool)
            .await
            .unwrap();
            n += usize::from(found.is_some());
        }
        pool.close().await;
        return n;
    }
    let mut files = Vec::new();
    for name in ["fief.db", "fief.db-wal"] {
        if let Ok(bytes) = std::fs::read(s.dir.path().join(name)) {
            files.push(bytes);
        }
    }
    blobs
        .iter()
        .filter(|b| {
            let needle = &b[b.len() / 2 - 24..b.len() / 2 + 24];
            files
                .iter()
                .any(|f| f.windows(needle.len()).any(|w| w == needle))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tier_gets_only_its_own_chunks_and_the_right_documents() {
    if !embedder_installed() {
        return;
    }
    let s = common::spawn().await;
    let tenants = [
        ("kb-silo", "silo"),
        ("kb-bridge", "bridge"),
        ("kb-pool-a", "pool"),
        ("kb-pool-b", "pool"),
    ];
    let mut keys = Vec::new();
    let canaries: Vec<String> = tenants.iter().map(|(t, _)| canary(t)).collect();
    for ((tenant, tier), canary) in tenants.iter().zip(&canaries) {
        let key = s.tenant(tenant, tier).await;
        // The same knowledge-base name everywhere: names are per tenant.
        create_kb(&s, &key, "notes").await;
        for (id, text, _) in TOPICS {
            let body = json!({"text": doc_text(text, canary), "metadata": {"topic": id, "canary": canary}});
            let written = put_doc(&s, &key, "notes", id, body).await;
            assert_eq!(written["chunks"], 1, "{written}");
        }
        keys.push(key);
    }

    // Placement follows the tier.
    for ((_, tier), key) in tenants.iter().zip(&keys) {
        let r = s
            .send(s.data_req(key, Method::GET, "/api/v1/knowledge-bases/notes"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let want = if *tier == "pool" {
            "shared-partition"
        } else {
            "dedicated"
        };
        assert_eq!(r.json()["placement"], want, "{}", r.text);
        assert_eq!(r.json()["documents"], TOPICS.len(), "{}", r.text);
        assert_eq!(r.json()["index"], "exact");
    }

    // Every labelled question, from every tenant: its own document first,
    // nothing of anyone else's anywhere in the answer.
    let mut correct = 0;
    for ((tenant, _), (key, own)) in tenants.iter().zip(keys.iter().zip(&canaries)) {
        for (expected, _, question) in TOPICS {
            let r = query(&s, key, "notes", question, 10).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            only_own(&r.text, own, &canaries, question);
            let results = r.json()["results"].as_array().unwrap().clone();
            assert_eq!(results.len(), TOPICS.len(), "{}", r.text);
            for hit in &results {
                assert!(hit["text"].as_str().unwrap().contains(own.as_str()));
                assert_eq!(hit["metadata"]["canary"], own.as_str());
            }
            let scores: Vec<f64> = results
                .iter()
                .map(|h| h["score"].as_f64().unwrap())
                .collect();
            assert!(
                scores.windows(2).all(|w| w[0] >= w[1]),
                "ranked: {scores:?}"
            );
            if results[0]["document_id"] == *expected {
                correct += 1;
            } else {
                eprintln!(
                    "{tenant}: `{question}` -> {} (want {expected})",
                    results[0]["document_id"]
                );
            }
        }
    }
    assert_eq!(correct, tenants.len() * TOPICS.len(), "labelled top-1");

    // A filter narrows by metadata, and may never name a tenant.
    let r = s
        .send(
            s.data_req(
                &keys[2],
                Method::POST,
                "/api/v1/knowledge-bases/notes/query",
            )
            .json(&json!({"query": "garden", "top_k": 3, "filter": {"topic": ["tax", "bicycle"]}})),
        )
        .await;
    let body = r.json();
    let docs: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["document_id"].as_str().unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{}", r.text);
    assert!(docs.iter().all(|d| ["tax", "bicycle"].contains(d)));
    // Operators and combinations narrow the same way.
    let filtered = |filter: Value| {
        let s = &s;
        let key = keys[2].clone();
        async move {
            let r = s
                .send(
                    s.data_req(&key, Method::POST, "/api/v1/knowledge-bases/notes/query")
                        .json(&json!({"query": "garden", "top_k": 10, "filter": filter})),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{filter}: {}", r.text);
            let mut docs: Vec<String> = r.json()["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["document_id"].as_str().unwrap().to_owned())
                .collect();
            docs.sort();
            docs
        }
    };
    assert_eq!(
        filtered(json!({"topic": {"in": ["tax", "bicycle"]}})).await,
        ["bicycle", "tax"]
    );
    assert_eq!(
        filtered(json!({"or": [{"topic": "tax"}, {"topic": {"starts_with": "bic"}}]})).await,
        ["bicycle", "tax"]
    );
    let others =
        filtered(json!({"topic": {"not_in": ["tax"]}, "canary": {"contains": "kb-pool-a"}})).await;
    assert_eq!(others.len(), TOPICS.len() - 1, "{others:?}");
    assert!(!others.contains(&"tax".to_owned()));
    assert_eq!(
        filtered(json!({"and": [{"topic": "tax"}, {"topic": {"ne": "tax"}}]})).await,
        Vec::<String>::new()
    );
    for (filter, needle) in [
        (
            json!({"or": [{"topic": "tax"}, {"tenant": "kb-pool-b"}]}),
            "names a tenant",
        ),
        (
            json!({"topic": {"equals": "tax"}}),
            "unknown operator `equals`",
        ),
        (json!({"topic": {"gt": [1]}}), "number or a string"),
    ] {
        let r = s
            .send(
                s.data_req(
                    &keys[2],
                    Method::POST,
                    "/api/v1/knowledge-bases/notes/query",
                )
                .json(&json!({"query": "bread", "filter": filter})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{filter}: {}", r.text);
        assert!(r.text.contains(needle), "{filter}: {}", r.text);
    }
    for key in ["tenant", "tenant_id", "TenantId", "_tenant"] {
        let r = s
            .send(
                s.data_req(
                    &keys[2],
                    Method::POST,
                    "/api/v1/knowledge-bases/notes/query",
                )
                .json(&json!({"query": "bread", "filter": {key: "kb-pool-b"}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{key}: {}", r.text);
        assert!(r.text.contains("names a tenant"), "{}", r.text);
    }

    // Addressing another tenant's knowledge base: the same 403 whether it
    // exists or not, for every operation.
    for target in [
        "kb-pool-b/notes",
        "frn:fief:knowledge-base:kb-pool-b/notes",
        "kb-pool-b%2Fnotes",
        "kb-silo/notes",
        "kb-pool-b/absent",
    ] {
        for (method, suffix, body) in [
            (Method::GET, "", None),
            (Method::DELETE, "", None),
            (Method::GET, "/documents", None),
            (Method::POST, "/query", Some(json!({"query": "bread"}))),
            (
                Method::PUT,
                "/documents/x",
                Some(json!({"text": "planted"})),
            ),
            (Method::DELETE, "/documents/bread", None),
        ] {
            let mut req = s.data_req(
                &keys[2],
                method.clone(),
                &format!("/api/v1/knowledge-bases/{target}{suffix}"),
            );
            if let Some(b) = body {
                req = req.json(&b);
            }
            let r = s.send(req).await;
            // `tenant/name` with a raw slash is another route shape; both
            // are refusals that reveal nothing.
            assert!(
                r.status == StatusCode::FORBIDDEN || r.status == StatusCode::NOT_FOUND,
                "{method} {target}{suffix}: {} {}",
                r.status,
                r.text
            );
            only_own(&r.text, &canaries[2], &canaries, target);
        }
    }
    let before = s
        .send(s.data_req(&keys[3], Method::GET, "/api/v1/knowledge-bases/notes"))
        .await
        .json();
    assert_eq!(before["documents"], TOPICS.len(), "victim untouched");

    // Deleting a document: gone from search at once and from the files.
    let blobs = sealed_blobs(&s, "kb-pool-a", Some("tax")).await;
    assert_eq!(blobs.len(), 2);
    assert_eq!(on_disk(&s, &blobs).await, 2, "the check sees live chunks");
    let r = s
        .send(s.data_req(
            &keys[2],
            Method::DELETE,
            "/api/v1/knowledge-bases/notes/documents/tax",
        ))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = query(
        &s,
        &keys[2],
        "notes",
        "deadline for submitting my income taxes",
        10,
    )
    .await;
    assert!(r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["document_id"] != "tax"));
    assert_eq!(
        r.json()["results"].as_array().unwrap().len(),
        TOPICS.len() - 1
    );
    assert_eq!(
        on_disk(&s, &blobs).await,
        0,
        "deleted chunks remain in the database files"
    );
    // The other pool tenant's copy of the same topic is untouched.
    let r = query(
        &s,
        &keys[3],
        "notes",
        "deadline for submitting my income taxes",
        1,
    )
    .await;
    assert_eq!(r.json()["results"][0]["document_id"], "tax");

    // Offboarding a tenant: its chunks leave search and disk.
    let blobs = sealed_blobs(&s, "kb-pool-b", None).await;
    assert_eq!(blobs.len(), 2 * TOPICS.len());
    let r = s
        .send(s.admin_req(Method::DELETE, "/admin/v1/tenants/kb-pool-b"))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        on_disk(&s, &blobs).await,
        0,
        "an offboarded tenant's chunks remain on disk"
    );
    let r = query(&s, &keys[3], "notes", "bread", 1).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = query(
        &s,
        &keys[2],
        "notes",
        "how do I make bread dough rise with a starter",
        1,
    )
    .await;
    assert_eq!(r.json()["results"][0]["document_id"], "bread");

    // A tier change moves the vectors to the new placement; answers stay.
    let r = s
        .send(
            s.admin_req(Method::PATCH, "/admin/v1/tenants/kb-pool-a")
                .json(&json!({"tier": "silo"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = s
        .send(s.data_req(&keys[2], Method::GET, "/api/v1/knowledge-bases/notes"))
        .await;
    assert_eq!(r.json()["placement"], "dedicated", "{}", r.text);
    let r = query(&s, &keys[2], "notes", "repair a punctured bike tire", 1).await;
    assert_eq!(
        r.json()["results"][0]["document_id"],
        "bicycle",
        "{}",
        r.text
    );

    // Nothing of any tenant's canary reached another tenant's audit entries.
    let audit = s
        .send(s.admin_req(Method::GET, "/admin/v1/audit?limit=10000"))
        .await;
    for c in &canaries {
        assert!(
            !audit.text.contains(c.as_str()),
            "canary {c} in the audit log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_documents_are_chunked_with_overlap_and_survive_a_restart() {
    if !embedder_installed() {
        return;
    }
    let s = common::spawn().await;
    let key = s.tenant("kb-long", "bridge").await;
    create_kb(&s, &key, "manual").await;
    // ~900 words: several chunks of at most 200 word pieces.
    let mut text = String::new();
    for i in 0..60 {
        text.push_str(&format!(
            "Section {i} of the maintenance manual explains routine inspection of pumps and valves. "
        ));
    }
    text.push_str("The emergency shutdown lever is painted red and sits behind the blue door. ");
    let written = put_doc(&s, &key, "manual", "guide%2Fops.md", json!({"text": text})).await;
    let chunks = written["chunks"].as_u64().unwrap();
    assert!(chunks >= 4, "{written}");
    let ask = "where is the emergency shutdown lever";
    let r = query(&s, &key, "manual", ask, 1).await;
    assert!(
        r.json()["results"][0]["text"]
            .as_str()
            .unwrap()
            .contains("red"),
        "{}",
        r.text
    );

    // Vectors are rebuilt from the sealed store after a restart.
    let s = s.restart(|_| {}).await;
    let r = query(&s, &key, "manual", ask, 1).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.json()["results"][0]["text"]
            .as_str()
            .unwrap()
            .contains("red"),
        "{}",
        r.text
    );
    let docs = s
        .send(s.data_req(
            &key,
            Method::GET,
            "/api/v1/knowledge-bases/manual/documents",
        ))
        .await;
    assert_eq!(
        docs.json()["documents"][0]["id"],
        "guide/ops.md",
        "{}",
        docs.text
    );
    assert_eq!(docs.json()["documents"][0]["chunks"], chunks);

    // Bad input is refused with a clear message.
    for (body, needle) in [
        (json!({"text": "   "}), "must not be empty"),
        (
            json!({"text": "x", "metadata": {"tenant": "other"}}),
            "names a tenant",
        ),
        (
            json!({"text": "x", "metadata": {"a": {"b": 1}}}),
            "must be a string",
        ),
        (
            json!({"text": "x", "extra": 1}),
            "`extra` is not a field here",
        ),
    ] {
        let r = s
            .send(
                s.data_req(
                    &key,
                    Method::PUT,
                    "/api/v1/knowledge-bases/manual/documents/bad",
                )
                .json(&body),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert!(r.text.contains(needle), "{body}: {}", r.text);
    }
    let r = s
        .send(
            s.data_req(
                &key,
                Method::PUT,
                "/api/v1/knowledge-bases/manual/documents/..%2Fescape",
            )
            .json(&json!({"text": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = s
        .send(
            s.data_req(
                &key,
                Method::PUT,
                "/api/v1/knowledge-bases/absent/documents/a",
            )
            .json(&json!({"text": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = s
        .send(
            s.data_req(&key, Method::POST, "/api/v1/knowledge-bases/manual/query")
                .json(&json!({"query": "x", "top_k": 0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

#[derive(serde::Deserialize)]
struct Fixture {
    sentences: Vec<FixtureSentence>,
}

#[derive(serde::Deserialize)]
struct FixtureSentence {
    text: String,
    embedding: Vec<f32>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_endpoint_matches_the_reference_vectors() {
    if !embedder_installed() {
        return;
    }
    let fixture: Fixture = serde_json::from_str(include_str!(
        "../../fief-embed/tests/fixtures/minilm_reference.json"
    ))
    .unwrap();
    let s = common::spawn().await;
    let key = s.tenant("emb", "pool").await;
    let texts: Vec<&str> = fixture
        .sentences
        .iter()
        .take(8)
        .map(|x| x.text.as_str())
        .collect();
    let r = s
        .send(
            s.data_req(&key, Method::POST, "/v1/embeddings")
                .json(&json!({"model": "all-MiniLM-L6-v2", "input": texts})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let body = r.json();
    assert_eq!(body["object"], "list");
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), texts.len());
    for (item, reference) in data.iter().zip(&fixture.sentences) {
        let got: Vec<f32> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got.len(), 384);
        let cos: f32 = got
            .iter()
            .zip(&reference.embedding)
            .map(|(a, b)| a * b)
            .sum::<f32>()
            / (got.iter().map(|a| a * a).sum::<f32>().sqrt()
                * reference
                    .embedding
                    .iter()
                    .map(|a| a * a)
                    .sum::<f32>()
                    .sqrt());
        assert!(cos >= 0.999, "`{}`: cosine {cos}", reference.text);
    }
    // A single string works too; a model we do not serve is a clear 400.
    let r = s
        .send(
            s.data_req(&key, Method::POST, "/v1/embeddings")
                .json(&json!({"input": "hello"})),
        )
        .await;
    assert_eq!(r.json()["data"][0]["index"], 0, "{}", r.text);
    let r = s
        .send(
            s.data_req(&key, Method::POST, "/v1/embeddings")
                .json(&json!({"model": "text-embedding-3-large", "input": "hello"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("all-MiniLM-L6-v2"), "{}", r.text);
    let r = s
        .send(
            s.data_req(&key, Method::POST, "/v1/embeddings")
                .json(&json!({"input": []})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    // Without a credential: 401.
    let r = s
        .send(
            s.http
                .post(format!("{}/v1/embeddings", s.data))
                .json(&json!({"input": "x"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
