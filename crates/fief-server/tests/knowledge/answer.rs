//! Retrieve and generate through the HTTP API, against a local upstream that
//! answers from the prompt it was given (fief-llm-mock repeats the last user
//! message): each tenant's answers cite its own documents, carry its own
//! canary and nobody else's, and what the upstream received never held
//! another tenant's canary; the call is metered and limited like any LLM
//! call; another tenant's base is refused before anything is sent.

use fief_config::{LlmModelEntry, UpstreamConfig};
use fief_llm_mock::{MockOptions, MockUpstream};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::kb::{canary, create_kb, doc_text, embedder_installed, put_doc, TOPICS};
use crate::common::{self, TestServer};

async fn gateway(mock: &MockUpstream) -> TestServer {
    let up = UpstreamConfig {
        name: "pool".into(),
        url: mock.base_url(),
        api_key_env: None,
        models: vec![LlmModelEntry::Id("chat-small".into())],
        max_concurrency: 16,
        timeout_secs: 10,
        ca_file: None,
        tenants: Vec::new(),
        exclusive: false,
    };
    common::spawn_with(|c| c.llm.upstreams = vec![up]).await
}

async fn ask(s: &TestServer, key: &str, kb: &str, body: Value) -> common::Resp {
    s.send(
        s.data_req(
            key,
            Method::POST,
            &format!("/api/v1/knowledge-bases/{kb}/answer"),
        )
        .json(&body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_cite_the_callers_own_documents_and_no_other_tenant_reaches_the_prompt() {
    if !embedder_installed() {
        return;
    }
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let s = gateway(&mock).await;
    let tenants = [
        ("rag-silo", "silo"),
        ("rag-pool-a", "pool"),
        ("rag-pool-b", "pool"),
    ];
    let canaries: Vec<String> = tenants.iter().map(|(t, _)| canary(t)).collect();
    let mut keys = Vec::new();
    for ((tenant, tier), canary) in tenants.iter().zip(&canaries) {
        let key = s.tenant(tenant, tier).await;
        create_kb(&s, &key, "notes").await;
        for (id, text, _) in TOPICS {
            let doc = json!({"text": doc_text(text, canary), "metadata": {"topic": id}});
            put_doc(&s, &key, "notes", id, doc).await;
        }
        keys.push(key);
    }

    for (i, key) in keys.iter().enumerate() {
        for (expected, _, question) in TOPICS {
            let before = mock.requests().len();
            let r = ask(
                &s,
                key,
                "notes",
                json!({"query": question, "model": "chat-small", "top_k": 2}),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            let v = r.json();
            let cited = v["citations"].as_array().unwrap();
            assert_eq!(cited.len(), 2, "{}", r.text);
            assert_eq!(cited[0]["document_id"], *expected, "{question}: {}", r.text);
            for c in cited {
                assert!(
                    c["text"].as_str().unwrap().contains(&canaries[i]),
                    "{}",
                    r.text
                );
                assert!(c["score"].as_f64().is_some() && c["chunk"].as_i64().is_some());
            }
            // The answer comes from the prompt: the passages, then the question.
            let answer = v["answer"].as_str().unwrap();
            assert!(
                answer.contains(&canaries[i]) && answer.contains(question),
                "{answer}"
            );
            assert_eq!(v["model"], "chat-small");
            assert!(
                v["usage"]["total_tokens"].as_u64().unwrap() > 0,
                "{}",
                r.text
            );
            let seen = mock.requests();
            assert_eq!(seen.len(), before + 1, "one upstream call per answer");
            let prompt = seen[before].body.to_string();
            assert!(prompt.contains(&canaries[i]), "{prompt}");
            for (j, other) in canaries.iter().enumerate() {
                if j != i {
                    assert!(!r.text.contains(other.as_str()), "{}", r.text);
                    assert!(!prompt.contains(other.as_str()), "{prompt}");
                }
            }
        }
    }

    // Streamed: the citations first, then the model's chunks, then [DONE].
    let r = s
        .send(
            s.data_req(
                &keys[1],
                Method::POST,
                "/api/v1/knowledge-bases/notes/answer",
            )
            .json(&json!({"query": TOPICS[2].2, "model": "chat-small", "stream": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // keys[1]'s answers (one LLM call each) and searches so far.
    let (mut answers, mut searches) = (TOPICS.len() + 1, TOPICS.len() + 1);
    let events: Vec<&str> = r
        .text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    let first: Value = serde_json::from_str(events[0]).unwrap();
    assert_eq!(first["object"], "knowledge_base.citations", "{}", r.text);
    assert_eq!(first["citations"][0]["document_id"], TOPICS[2].0);
    assert_eq!(events.last(), Some(&"[DONE]"), "{}", r.text);
    let streamed: String = events[1..events.len() - 1]
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(e).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert!(streamed.contains(&canaries[1]), "{streamed}");
    assert!(!canaries
        .iter()
        .enumerate()
        .any(|(j, c)| j != 1 && r.text.contains(c.as_str())));

    // boto3's bedrock-agent-runtime, signing with the key's AWS pair.
    if common::sdk::python_has("boto3") {
        let (id, secret) = common::sdk::aws_pair(&keys[1]);
        let env = [
            ("FIEF_URL", s.data.as_str()),
            ("AWS_ACCESS_KEY_ID", id),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("KB", "notes"),
            ("QUESTION", TOPICS[3].2),
            ("EXPECTED", TOPICS[3].0),
            ("CANARY", canaries[1].as_str()),
            ("OTHER_KB", "frn:fief:knowledge-base:rag-pool-b/notes"),
            ("OTHER_CANARY", canaries[2].as_str()),
            ("MODEL", "chat-small"),
        ];
        common::sdk::run_python("bedrock_agent_client.py", &env).await;
        // Two retrieves and one retrieve-and-generate of its own base.
        answers += 1;
        searches += 3;
    }

    // Another tenant's base, by every spelling: refused, nothing sent.
    let before = mock.requests().len();
    for target in [
        "rag-pool-b%2Fnotes",
        "frn:fief:knowledge-base:rag-pool-b%2Fnotes",
        "rag-silo%2Fnotes",
        "rag-pool-b%2Fabsent",
    ] {
        let r = ask(
            &s,
            &keys[1],
            target,
            json!({"query": "bread", "model": "chat-small"}),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{target}: {}", r.text);
    }
    // A filter naming a tenant, a model missing, a model nobody serves.
    for (body, want) in [
        (
            json!({"query": "bread", "model": "chat-small", "filter": {"tenant": "rag-pool-b"}}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"query": "bread"}), StatusCode::BAD_REQUEST),
        (
            json!({"query": "bread", "model": "gpt-nowhere"}),
            StatusCode::FORBIDDEN,
        ),
    ] {
        let r = ask(&s, &keys[1], "notes", body.clone()).await;
        assert_eq!(r.status, want, "{body}: {}", r.text);
    }
    assert_eq!(mock.requests().len(), before, "nothing was sent upstream");

    // Metered like any LLM call: one LLM request per answer, beside the queries.
    let usage = s
        .send(s.data_req(&keys[1], Method::GET, "/api/v1/usage?group_by=model"))
        .await
        .json();
    let rows = usage["rows"].as_array().unwrap();
    let sum = |kind: &str| -> u64 {
        rows.iter()
            .filter(|r| r["kind"] == kind)
            .map(|r| r["requests"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(sum("llm"), answers as u64, "{usage}");
    assert!(sum("kb_query") >= searches as u64, "{usage}");

    // Its private log records each answer's question and the ids of the
    // chunks it was given, not the passages (they stay in the base).
    let logs = s
        .send(s.data_req(&keys[1], Method::GET, "/api/v1/logs?limit=1000"))
        .await;
    assert_eq!(logs.status, StatusCode::OK, "{}", logs.text);
    let logs = logs.json();
    let answered: Vec<&Value> = logs["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "llm")
        .collect();
    assert_eq!(answered.len(), answers, "{logs}");
    for r in answered {
        let request = &r["request"];
        assert_eq!(request["knowledge_base"], "notes", "{r}");
        assert!(!request["chunks"].as_array().unwrap().is_empty(), "{r}");
        assert!(request["chunks"][0]["document_id"].is_string(), "{r}");
        assert!(
            !request.to_string().contains(&canaries[1]),
            "the passages are not logged: {r}"
        );
        assert!(request.get("messages").is_none(), "{r}");
    }

    // Limited like any LLM call: a token rate the prompt alone exceeds is
    // refused by the quota gate before anything is sent.
    let r = s
        .send(
            s.admin_req(Method::PATCH, "/admin/v1/tenants/rag-pool-a")
                .json(&json!({"quotas": {"tokens_per_minute": 10}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let before = mock.requests().len();
    let r = ask(
        &s,
        &keys[1],
        "notes",
        json!({"query": TOPICS[0].2, "model": "chat-small"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("tokens_per_minute (10)"), "{}", r.text);
    assert_eq!(mock.requests().len(), before);
    // A monthly budget: admitted while the worst case fits, then 429 with
    // nothing sent.
    let r = s
        .send(
            s.admin_req(Method::PATCH, "/admin/v1/tenants/rag-silo")
                .json(&json!({"quotas": {"monthly_token_budget": 600}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let body = json!({"query": TOPICS[0].2, "model": "chat-small", "max_tokens": 10});
    let r = ask(&s, &keys[0], "notes", body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let before = mock.requests().len();
    let r = ask(&s, &keys[0], "notes", body).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert_eq!(mock.requests().len(), before);
    mock.stop().await;
}
