//! Metering through the real HTTP API: a scripted mix of billable requests
//! from three tenants with different cost centres, and the operator's
//! invoice compared with the test's own computation from what each client
//! was answered (tokens, counts, money to the cent); each tenant's usage
//! view shows only its own. `logs` checks the private invocation logs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "metering/logs.rs"]
mod logs;

use fief_config::{LlmModelEntry, PriceEntry, UpstreamConfig};
use fief_llm_mock::{MockOptions, MockUpstream};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use common::{spawn_secrets, TestServer};

fn price(model: Option<&str>) -> PriceEntry {
    PriceEntry {
        effective: None,
        model: model.map(Into::into),
        prompt_per_million: None,
        completion_per_million: None,
        embedding_per_million: None,
        compute_second: None,
        gb_month: None,
        per_thousand_requests: None,
    }
}

const TIERS: [&str; 3] = ["pool", "bridge", "silo"];
const PROMPT_MICROS: u128 = 3_100_000; // 3.10 per million
const COMPLETION_MICROS: u128 = 15_700_000; // 15.70 per million
const REQUEST_MICROS: u128 = 430_000; // 0.43 per thousand
const ONNX_REQUEST_MICROS: u128 = 2_170_000; // 2.17 per thousand, model "m"
const EMBEDDING_MICROS: u128 = 270_000; // 0.27 per million, every other model
const GB_MONTH_MICROS: u128 = 23_000; // 0.023 per GB-month

async fn gateway(mock: &MockUpstream) -> TestServer {
    gateway_with(mock, |_| {}).await
}

async fn gateway_with(
    mock: &MockUpstream,
    tweak: impl FnOnce(&mut fief_config::Config),
) -> TestServer {
    let up = UpstreamConfig {
        name: "pool".into(),
        url: mock.base_url(),
        api_key_env: None,
        models: vec![LlmModelEntry::Id("chat-small".into())],
        max_concurrency: 64,
        timeout_secs: 10,
        ca_file: None,
        tenants: Vec::new(),
        exclusive: false,
    };
    spawn_secrets(tempfile::tempdir().unwrap(), Default::default(), |c| {
        c.llm.upstreams = vec![up];
        c.pricing = vec![
            PriceEntry {
                prompt_per_million: Some("3.10".into()),
                completion_per_million: Some("15.70".into()),
                ..price(Some("chat-small"))
            },
            PriceEntry {
                per_thousand_requests: Some("2.17".into()),
                ..price(Some("m"))
            },
            PriceEntry {
                per_thousand_requests: Some("0.43".into()),
                embedding_per_million: Some("0.27".into()),
                gb_month: Some("0.023".into()),
                ..price(None)
            },
        ];
        tweak(c);
    })
    .await
}

fn cents(quantity: u128, micros: u128, divisor: u128) -> u64 {
    let den = divisor * 10_000;
    ((quantity * micros + den / 2) / den) as u64
}

/// What a tenant's clients were answered, as the test counts it.
#[derive(Default, Debug)]
struct Log {
    chats: u128,
    prompt: u128,
    completion: u128,
    invocations: u128,
    table_ops: u128,
    embeddings: u128,
    embedding_tokens: u128,
    ingests: u128,
    ingest_tokens: u128,
    queries: u128,
    /// The storage lines' cents (their quantities checked apart).
    storage_cents: u64,
}

impl Log {
    /// Lines as the invoice rounds them: each (kind, model, measure) once.
    fn lines(&self) -> Vec<u64> {
        vec![
            cents(self.chats, REQUEST_MICROS, 1_000),
            cents(self.prompt, PROMPT_MICROS, 1_000_000),
            cents(self.completion, COMPLETION_MICROS, 1_000_000),
            cents(self.invocations, ONNX_REQUEST_MICROS, 1_000),
            cents(self.table_ops, REQUEST_MICROS, 1_000),
            cents(self.embeddings, REQUEST_MICROS, 1_000),
            cents(self.embedding_tokens, EMBEDDING_MICROS, 1_000_000),
            cents(self.ingests, REQUEST_MICROS, 1_000),
            cents(self.ingest_tokens, EMBEDDING_MICROS, 1_000_000),
            cents(self.queries, REQUEST_MICROS, 1_000),
            self.storage_cents,
        ]
    }
    fn total(&self) -> u64 {
        self.lines().iter().sum()
    }
}

fn line<'a>(bill: &'a Value, kind: &str, measure: &str) -> &'a Value {
    bill["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == kind && l["measure"] == measure)
        .unwrap_or_else(|| panic!("no {kind} {measure} line in {bill}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invoices_equal_the_clients_own_count_per_tenant_and_cost_centre() {
    let mock = MockUpstream::start(MockOptions {
        name: "pool".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let s = gateway(&mock).await;
    let tenants = [("qxone", "cc-1"), ("qxtwo", "cc-2"), ("qxtri", "cc-1")];
    let mut keys = Vec::new();
    for (i, (id, cc)) in tenants.iter().enumerate() {
        let r = s
            .send(
                s.admin_req(Method::POST, "/admin/v1/tenants")
                    .json(&json!({"id": id, "tier": TIERS[i], "tags": {"CostCenter": cc}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let key = r.json()["api_key"].as_str().unwrap().to_owned();
        let up = s
            .put_model(&key, "m", common::tenant_model(i as u64).to_onnx())
            .await;
        assert!(up.status.is_success(), "{}", up.text);
        keys.push(key);
    }
    // Embeddings and knowledge bases need the embedder (installed by
    // scripts/test.sh; required under CI).
    let embeds = common::kb::embedder_installed();
    let mut logs: Vec<Log> = (0..3).map(|_| Log::default()).collect();
    if embeds {
        for (i, key) in keys.iter().enumerate() {
            common::kb::create_kb(&s, key, "kb").await;
            for (topic, text, _) in common::kb::TOPICS.iter().take(2) {
                let view = common::kb::put_doc(&s, key, "kb", topic, json!({"text": text})).await;
                logs[i].ingests += 1;
                logs[i].ingest_tokens += view["tokens"].as_u64().unwrap() as u128;
            }
        }
    }

    // 1,000 requests: chats of varied length, invocations, table writes
    // and listings, embeddings and knowledge-base queries, interleaved over
    // the three tenants, eight at a time.
    let mut jobs = Vec::new();
    for n in 0..1000usize {
        let t = n % 3;
        let key = keys[t].clone();
        let s = &s;
        let op = match n % 7 {
            5 | 6 if !embeds => 3,
            op => op,
        };
        jobs.push(async move {
            let r = match op {
                0 | 1 => {
                    let prompt = format!("question {n}: {}", "why ".repeat(n % 37));
                    s.send(
                        s.data_req(&key, Method::POST, "/v1/chat/completions")
                            .json(&json!({
                                "model": "chat-small",
                                "messages": [{"role": "user", "content": prompt}],
                                "max_tokens": 16 + n % 50,
                            })),
                    )
                    .await
                }
                2 => {
                    s.invoke(
                        &key,
                        "shared",
                        "m",
                        &json!({"inputs": [[1.0, 2.0, 3.0, 4.0]]}),
                    )
                    .await
                }
                3 => {
                    s.send(
                        s.data_req(&key, Method::PUT, &format!("/api/v1/tables/t/items/k{n}"))
                            .json(&json!({"n": n})),
                    )
                    .await
                }
                4 => {
                    s.send(s.data_req(&key, Method::GET, "/api/v1/tables/t/items?limit=5"))
                        .await
                }
                5 => {
                    s.send(s.data_req(&key, Method::POST, "/v1/embeddings").json(
                        &json!({"input": format!("embedding {n}: {}", "word ".repeat(n % 23))}),
                    ))
                    .await
                }
                _ => common::kb::query(s, &key, "kb", "how do I bake bread", 3).await,
            };
            (t, op, r)
        });
    }
    use futures::StreamExt;
    let results: Vec<_> = futures::stream::iter(jobs)
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(results.len(), 1000);
    for (t, op, r) in results {
        assert!(r.status.is_success(), "op {op}: {} {}", r.status, r.text);
        let log = &mut logs[t];
        match op {
            0 | 1 => {
                let u = &r.json()["usage"];
                log.chats += 1;
                log.prompt += u["prompt_tokens"].as_u64().unwrap() as u128;
                log.completion += u["completion_tokens"].as_u64().unwrap() as u128;
            }
            2 => log.invocations += 1,
            3 | 4 => log.table_ops += 1,
            5 => {
                log.embeddings += 1;
                log.embedding_tokens +=
                    r.json()["usage"]["prompt_tokens"].as_u64().unwrap() as u128;
            }
            _ => log.queries += 1,
        }
    }

    let month = {
        let r = s
            .send(s.data_req(&keys[0], Method::GET, "/api/v1/usage"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json()["from"].as_str().unwrap()[..7].to_owned()
    };
    // The day's storage sample, taken twice: the second counts nothing.
    let state = &s.running.as_ref().unwrap().state;
    fief_server::sample_storage(state).await.unwrap();
    fief_server::sample_storage(state).await.unwrap();
    let r = s
        .send(s.admin_req(Method::GET, &format!("/admin/v1/invoices/{month}")))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let invoice = r.json();
    let bills = invoice["bills"].as_array().unwrap();
    assert_eq!(bills.len(), 3, "{invoice}");
    let (year, mon): (i32, u32) = (month[..4].parse().unwrap(), month[5..].parse().unwrap());
    let days = match mon {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    for (i, (id, _)) in tenants.iter().enumerate() {
        let bill = bills.iter().find(|b| b["name"] == *id).unwrap();
        let storage: Vec<&Value> = bill["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["kind"] == "storage")
            .collect();
        // One day of the model's bytes (the other kinds are sealed sizes,
        // which only the store knows): each line rounded by the one rule.
        let model_bytes = common::tenant_model(i as u64).to_onnx().len() as u64;
        let models = storage.iter().find(|l| l["model"] == "models").unwrap();
        assert_eq!(
            models["quantity"].as_u64().unwrap(),
            model_bytes,
            "{id}: {bill}"
        );
        assert!(
            storage.iter().any(|l| l["model"] == "items"),
            "{id}: {bill}"
        );
        assert!(storage.iter().any(|l| l["model"] == "logs"), "{id}: {bill}");
        for l in storage {
            let q = l["quantity"].as_u64().unwrap() as u128;
            let c = cents(q, GB_MONTH_MICROS, 1_000_000_000 * days);
            assert_eq!(l["amount_cents"].as_u64().unwrap(), c, "{l}");
            logs[i].storage_cents += c;
        }
    }
    let mut grand = 0;
    for (i, (id, _)) in tenants.iter().enumerate() {
        let bill = bills.iter().find(|b| b["name"] == *id).unwrap();
        let log = &logs[i];
        let q = |kind, measure| line(bill, kind, measure)["quantity"].as_u64().unwrap() as u128;
        assert_eq!(q("llm", "requests"), log.chats, "{id}");
        assert_eq!(q("llm", "prompt_tokens"), log.prompt, "{id}");
        assert_eq!(q("llm", "completion_tokens"), log.completion, "{id}");
        assert_eq!(q("onnx", "requests"), log.invocations, "{id}");
        assert_eq!(q("table", "requests"), log.table_ops, "{id}");
        if embeds {
            assert_eq!(q("embedding", "requests"), log.embeddings, "{id}");
            assert_eq!(
                q("embedding", "embedding_tokens"),
                log.embedding_tokens,
                "{id}"
            );
            assert_eq!(q("kb_ingest", "requests"), log.ingests, "{id}");
            assert_eq!(
                q("kb_ingest", "embedding_tokens"),
                log.ingest_tokens,
                "{id}"
            );
            assert_eq!(q("kb_query", "requests"), log.queries, "{id}");
        }
        assert_eq!(
            bill["total_cents"].as_u64().unwrap(),
            log.total(),
            "{id}: {bill}"
        );
        assert_eq!(
            bill["total"],
            format!("{}.{:02}", log.total() / 100, log.total() % 100)
        );
        grand += log.total();
    }
    assert_eq!(invoice["total_cents"].as_u64().unwrap(), grand);

    // By cost centre: qxone and qxtri share cc-1.
    let r = s
        .send(s.admin_req(
            Method::GET,
            &format!("/admin/v1/invoices/{month}?group_by_tag=CostCenter"),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let by_tag = r.json();
    let group = |name: &str| {
        by_tag["bills"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("no group {name} in {by_tag}"))
            .clone()
    };
    assert_eq!(
        group("cc-1")["total_cents"].as_u64().unwrap(),
        logs[0].total() + logs[2].total()
    );
    assert_eq!(group("cc-1")["tenants"], json!(["qxone", "qxtri"]));
    assert_eq!(
        group("cc-2")["total_cents"].as_u64().unwrap(),
        logs[1].total()
    );
    let csv = s
        .send(s.admin_req(
            Method::GET,
            &format!("/admin/v1/invoices/{month}?group_by_tag=CostCenter&format=csv"),
        ))
        .await;
    assert!(
        csv.text.starts_with("group,kind,model,measure,"),
        "{}",
        csv.text
    );
    assert!(
        csv.text.contains("\ncc-2,llm,chat-small,prompt_tokens,"),
        "{}",
        csv.text
    );

    // Each tenant's own view: only its own counts, whatever it asks.
    for (i, key) in keys.iter().enumerate() {
        let r = s
            .send(s.data_req(key, Method::GET, "/api/v1/usage?group_by=model,principal"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let rows = r.json()["rows"].as_array().unwrap().clone();
        let llm: Vec<_> = rows.iter().filter(|r| r["kind"] == "llm").collect();
        assert_eq!(llm.len(), 1, "{rows:?}");
        assert_eq!(
            llm[0]["prompt_tokens"].as_u64().unwrap() as u128,
            logs[i].prompt
        );
        assert_eq!(llm[0]["requests"].as_u64().unwrap() as u128, logs[i].chats);
        for row in &rows {
            assert!(row.get("tenant").is_none(), "{row}");
        }
        for (j, (other, _)) in tenants.iter().enumerate() {
            if j != i {
                assert!(
                    !r.text.contains(other),
                    "{} sees {other}: {}",
                    tenants[i].0,
                    r.text
                );
            }
        }
        let refused = s
            .send(s.data_req(key, Method::GET, "/api/v1/usage?tenant=qxone"))
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
        // The admin views are not on the data plane.
        let admin = s
            .send(s.data_req(key, Method::GET, &format!("/admin/v1/invoices/{month}")))
            .await;
        assert_eq!(admin.status, StatusCode::NOT_FOUND);
    }
    // The admin token gets nothing on the data plane's usage route.
    let r = s
        .send(s.data_req(&s.admin_token, Method::GET, "/api/v1/usage"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);

    // The operator's usage by tenant matches too.
    let r = s
        .send(s.admin_req(Method::GET, "/admin/v1/usage?group_by=tenant"))
        .await;
    let rows = r.json()["rows"].as_array().unwrap().clone();
    for (i, (id, _)) in tenants.iter().enumerate() {
        let llm = rows
            .iter()
            .find(|r| r["tenant"] == *id && r["kind"] == "llm")
            .unwrap();
        assert_eq!(
            llm["completion_tokens"].as_u64().unwrap() as u128,
            logs[i].completion
        );
    }
}

#[tokio::test]
async fn bad_usage_queries_are_refused_with_the_fix() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let s = gateway(&mock).await;
    let key = s.tenant("qa", "pool").await;
    for (path, needle) in [
        ("/api/v1/usage?from=yesterday", "YYYY-MM-DD"),
        ("/api/v1/usage?group_by=tenant", "group_by takes"),
        ("/api/v1/usage?from=2026-12-02&to=2026-12-01", "after"),
        ("/api/v1/usage?format=xml", "json or csv"),
    ] {
        let r = s.send(s.data_req(&key, Method::GET, path)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text);
        assert!(r.text.contains(needle), "{path}: {}", r.text);
    }
    let r = s
        .send(s.admin_req(Method::GET, "/admin/v1/invoices/2026-13"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

/// Each usage event carries the request's time from arrival to answer (a
/// foundation-model call: to its last byte), which the consoles' latency
/// chart shows per minute: at least the upstream's own delay, at least the
/// ONNX run, and no more than the client waited.
#[tokio::test]
async fn each_request_is_metered_with_its_duration() {
    let mock = MockUpstream::start(MockOptions {
        delay: std::time::Duration::from_millis(150),
        chunk_delay: std::time::Duration::from_millis(20),
        ..Default::default()
    })
    .await
    .unwrap();
    let s = gateway(&mock).await;
    let key = s.tenant("qd", "pool").await;
    let up = s
        .put_model(&key, "m", common::tenant_model(1).to_onnx())
        .await;
    assert!(up.status.is_success(), "{}", up.text);
    let clock = std::time::Instant::now();
    for stream in [false, true] {
        let r = s
            .send(
                s.data_req(&key, Method::POST, "/v1/chat/completions")
                    .json(&json!({
                        "model": "chat-small", "stream": stream,
                        "messages": [{"role": "user", "content": "hello"}],
                    })),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let r = s
        .invoke(
            &key,
            "shared",
            "m",
            &json!({"inputs": [[0.5, -1.0, 2.0, 0.25]]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let waited_us = clock.elapsed().as_micros() as u64;
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    let (y, m, d) = fief_core::civil::from_days(days as i64 - 1);
    let path = format!("/api/v1/usage?group_by=minute&from={y:04}-{m:02}-{d:02}");
    let r = s.send(s.data_req(&key, Method::GET, &path)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rows = r.json()["rows"].as_array().unwrap().clone();
    let sum = |kind: &str, field: &str| -> u64 {
        rows.iter()
            .filter(|r| r["kind"] == kind)
            .map(|r| r[field].as_u64().unwrap())
            .sum()
    };
    assert_eq!(sum("llm", "requests"), 2, "{rows:?}");
    // Two calls, each delayed 150 ms; the stream's four chunks 20 ms apart.
    let llm = sum("llm", "duration_us");
    assert!(
        llm >= 300_000 + 60_000 && llm <= waited_us,
        "{llm} of {waited_us}: {rows:?}"
    );
    let onnx = sum("onnx", "duration_us");
    assert!(
        onnx > 0 && onnx >= sum("onnx", "compute_us") && onnx <= waited_us,
        "{rows:?}"
    );
}
