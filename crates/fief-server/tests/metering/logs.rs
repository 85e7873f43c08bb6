//! Private logs through the real HTTP API: a tenant reads back its own
//! prompts and answers (redacted as it asked); another tenant's every
//! credential reads none of them; no admin route and no metric carries
//! them; nothing under the data directory or in PostgreSQL holds them in
//! clear; sinks receive every record, in order, signed, across an outage;
//! offboarding shreds them and keeps the invoice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::common::{self, TestServer};
use super::{gateway_with, MockOptions, MockUpstream};

/// The upstream every test here chats with (it echoes the prompt).
async fn pool_upstream() -> MockUpstream {
    MockUpstream::start(MockOptions {
        name: "pool".into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// A canary no other tenant, route or file may ever show.
fn canary(tenant: &str) -> String {
    format!("zq-canary-{tenant}-{:08x}", rand::random::<u32>())
}

async fn chat(s: &TestServer, key: &str, prompt: &str, stream: bool) -> common::Resp {
    s.send(
        s.data_req(key, Method::POST, "/v1/chat/completions")
            .json(&json!({
                "model": "chat-small",
                "messages": [{"role": "user", "content": prompt}],
                "stream": stream,
            })),
    )
    .await
}

async fn logs(s: &TestServer, key: &str, query: &str) -> common::Resp {
    s.send(s.data_req(key, Method::GET, &format!("/api/v1/logs{query}")))
        .await
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Everything the gateway stores: every file under its data directory,
/// and every row PostgreSQL holds when it runs there.
async fn stored(s: &TestServer) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = walk(s.dir.path())
        .into_iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read(&p).unwrap_or_default(),
            )
        })
        .collect();
    if let Some(pg) = &s.pg {
        out.push(("pg_dump".into(), pg.dump().await.into_bytes()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenants_log_is_its_own_and_nobody_elses() {
    let mock = pool_upstream().await;
    let s = gateway_with(&mock, |_| {}).await;
    let a = s.tenant("logsa", "pool").await;
    let b = s.tenant("logsb", "silo").await;
    let secret_a = canary("a");
    let secret_b = canary("b");

    // A redacts its customers' ids and logs its ONNX inputs too.
    let r = s
        .send(
            s.data_req(&a, Method::PUT, "/api/v1/log-settings")
                .json(&json!({"onnx_io": true, "redact": [r"CUST-\d{6}"], "retention_days": 7})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["retention_days"], 7);
    let r = s
        .send(
            s.data_req(&a, Method::PUT, "/api/v1/log-settings")
                .json(&json!({"redact": ["("]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("redact[0]"), "{}", r.text);

    let prompt_a = format!("{secret_a} for CUST-123456");
    let answered = chat(&s, &a, &prompt_a, false).await;
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.text);
    let answer = answered.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let streamed = chat(&s, &a, &format!("{secret_a} streamed"), true).await;
    assert_eq!(streamed.status, StatusCode::OK, "{}", streamed.text);
    let up = s
        .put_model(&a, "m", common::tenant_model(1).to_onnx())
        .await;
    assert!(up.status.is_success(), "{}", up.text);
    let inv = s
        .invoke(
            &a,
            "shared",
            "m",
            &json!({"inputs": [[4.25, 2.0, 3.0, 1.0]]}),
        )
        .await;
    assert_eq!(inv.status, StatusCode::OK, "{}", inv.text);
    for prompt in [secret_b.clone(), format!("{secret_b} again")] {
        assert_eq!(chat(&s, &b, &prompt, false).await.status, StatusCode::OK);
    }

    // A reads back its prompts and answers, redacted as it asked.
    let r = logs(&s, &a, "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let records = r.json()["records"].as_array().unwrap().clone();
    assert_eq!(records.len(), 3, "{}", r.text);
    assert_eq!(records[0]["kind"], "llm");
    assert_eq!(records[0]["model"], "chat-small");
    assert_eq!(records[0]["seq"], 1);
    let first = records[0].to_string();
    assert!(first.contains(&secret_a), "{first}");
    // The mock echoes the prompt, so its answer is redacted too.
    assert!(
        first.contains(&answer.replace("CUST-123456", "[REDACTED]")),
        "{first}"
    );
    assert_eq!(records[0]["request"]["model"], "chat-small", "{first}");
    assert!(
        !first.contains("CUST-123456") && first.contains("[REDACTED]"),
        "{first}"
    );
    assert_eq!(
        records[0]["request_id"],
        answered.headers["x-request-id"].to_str().unwrap()
    );
    assert!(
        records[1].to_string().contains("streamed"),
        "{}",
        records[1]
    );
    assert!(records[1]["response"]["text"].is_string(), "{}", records[1]);
    assert_eq!(records[2]["kind"], "onnx");
    assert!(records[2].to_string().contains("4.25"), "{}", records[2]);
    // Filters and paging.
    let r = logs(&s, &a, "?model=m").await;
    assert_eq!(r.json()["records"].as_array().unwrap().len(), 1);
    let r = logs(&s, &a, "?limit=2").await;
    assert_eq!(r.json()["next"], 2);
    let r = logs(&s, &a, "?after=2").await;
    assert_eq!(r.json()["records"][0]["seq"], 3);
    for bad in ["?from=yesterday", "?limit=0", "?tenant=logsb"] {
        let r = logs(&s, &a, bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }

    // B's credentials, every form, read none of A's.
    let role = json!({
        "trust_policy": r#"permit (principal in Fief::Tenant::"logsb", action == Fief::Action::"AssumeRole", resource);"#,
        "policies": ["permit(principal, action, resource);"],
    });
    let r = s
        .send(
            s.data_req(&b, Method::PUT, "/api/v1/roles/reader")
                .json(&role),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = s
        .send(
            s.data_req(&b, Method::POST, "/api/v1/sts/assume-role")
                .json(&json!({"role": "reader", "session_name": "probe"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let b_session = r.json()["token"].as_str().unwrap().to_owned();
    let a_principal = records[0]["principal"].as_str().unwrap().to_owned();
    for cred in [&b, &b_session] {
        for q in [
            String::new(),
            format!("?principal={a_principal}"),
            "?model=m".into(),
            "?after=0&limit=1000".into(),
        ] {
            let r = logs(&s, cred, &q).await;
            assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.text);
            assert!(!r.text.contains(&secret_a), "B read A's log: {}", r.text);
            assert!(!r.text.contains("logsa"), "{}", r.text);
        }
    }
    let own = logs(&s, &b_session, "").await;
    assert_eq!(own.json()["records"].as_array().unwrap().len(), 2);
    assert!(own.text.contains(&secret_b));

    // A key whose tenant forbids it ReadLogs gets 403: the tenant decides
    // which of its principals read prompts.
    let r = s
        .send(
            s.admin_req(Method::POST, "/admin/v1/tenants/logsa/api-keys")
                .json(&json!({"name": "app"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let app = r.json()["api_key"].as_str().unwrap().to_owned();
    let app_id = app.split('_').nth(1).unwrap().to_owned();
    let forbid = format!(
        r#"forbid (principal == Fief::ApiKey::"{app_id}", action == Fief::Action::"ReadLogs", resource);"#
    );
    let r = s
        .send(
            s.data_req(&a, Method::PUT, "/api/v1/policies/no-logs-for-app")
                .header("content-type", "text/plain")
                .body(forbid),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(logs(&s, &app, "").await.status, StatusCode::FORBIDDEN);

    // The admin token: no route on the data plane, no content on its own.
    let r = logs(&s, &s.admin_token, "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let month = &records[0]["at"].as_str().unwrap()[..7];
    let mut swept = 0;
    for path in [
        "/admin/v1/tenants".to_owned(),
        "/admin/v1/tenants/logsa".into(),
        "/admin/v1/tenants/logsa/api-keys".into(),
        "/admin/v1/tenants/logsa/quotas".into(),
        "/admin/v1/audit".into(),
        "/admin/v1/audit?tenant=logsa".into(),
        "/admin/v1/audit/verify".into(),
        "/admin/v1/usage?group_by=tenant,model,principal,hour".into(),
        "/admin/v1/usage?format=csv&group_by=tenant,principal".into(),
        format!("/admin/v1/invoices/{month}"),
        format!("/admin/v1/invoices/{month}?format=csv"),
        "/admin/v1/logs".into(),
        "/admin/v1/tenants/logsa/logs".into(),
        "/metrics".into(),
    ] {
        let r = s.send(s.admin_req(Method::GET, &path)).await;
        assert!(
            !r.text.contains(&secret_a) && !r.text.contains(&answer),
            "{path} shows A's content: {}",
            r.text
        );
        if r.status.is_success() {
            swept += 1;
        }
    }
    assert!(swept >= 10, "the admin sweep reached too few routes");

    // Nothing under the data directory or in PostgreSQL holds it in clear;
    // the scan does read the stores (the model name is in clear).
    let everything = stored(&s).await;
    assert!(everything.iter().any(|(_, b)| contains(b, "chat-small")));
    for (name, bytes) in &everything {
        for needle in [&secret_a, &secret_b] {
            assert!(!contains(bytes, needle), "{needle} in clear in {name}");
        }
    }

    // Deleting before a time in the future empties A's log, not B's.
    let r = s
        .send(s.data_req(&a, Method::DELETE, "/api/v1/logs?before=2999-01-01"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["deleted"], 3);
    let r = s.send(s.data_req(&a, Method::DELETE, "/api/v1/logs")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(logs(&s, &a, "").await.json()["records"], json!([]));
    assert_eq!(
        logs(&s, &b, "").await.json()["records"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// What the test's webhook received: (signature header, body).
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver that can be taken down and brought back on its port.
struct Webhook {
    port: u16,
    received: Received,
    up: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Webhook {
    async fn start() -> Webhook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut w = Webhook {
            port,
            received: Arc::default(),
            up: Arc::new(AtomicBool::new(true)),
            task: None,
        };
        w.serve(listener);
        w
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let received = self.received.clone();
        let up = self.up.clone();
        let app = axum::Router::new().route(
            "/in",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let received = received.clone();
                    let up = up.clone();
                    async move {
                        // A connection kept alive from before the outage
                        // is refused too.
                        if !up.load(Ordering::SeqCst) {
                            return StatusCode::SERVICE_UNAVAILABLE;
                        }
                        let sig = headers
                            .get("x-fief-signature")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        received.lock().unwrap().push((sig, body.to_vec()));
                        StatusCode::NO_CONTENT
                    }
                },
            ),
        );
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    fn down(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.up.store(true, Ordering::SeqCst);
        self.serve(listener);
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/in", self.port)
    }
}

const SECRET: &str = "tenant-chosen-secret-0001";

fn hmac_hex(body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    format!("sha256={}", hex(ring::hmac::sign(&key, body).as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until the sink has delivered up to the tenant's latest record.
async fn drained(s: &TestServer, key: &str) -> Value {
    for _ in 0..240 {
        let r = s
            .send(s.data_req(key, Method::GET, "/api/v1/log-sink"))
            .await;
        let v = r.json();
        if v["pending"] == 0 && v["latest_seq"].as_i64() > Some(0) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the sink never caught up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_sink_gets_every_record_in_order_signed_across_an_outage() {
    let mock = pool_upstream().await;
    let s = gateway_with(&mock, |c| c.logs.allow_insecure_sinks = true).await;
    let a = s.tenant("sinka", "bridge").await;
    let mut hook = Webhook::start().await;
    let r = s
        .send(
            s.data_req(&a, Method::PUT, "/api/v1/log-sink")
                .json(&json!({"type": "webhook", "url": hook.url(), "secret": SECRET})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!r.text.contains(SECRET), "{}", r.text);
    assert_eq!(r.json()["sink"]["url"], hook.url());

    let mut sent = 0;
    for i in 0..20 {
        assert_eq!(
            chat(&s, &a, &format!("before {i}"), false).await.status,
            StatusCode::OK
        );
        sent += 1;
    }
    drained(&s, &a).await;
    // Down for 10 s while the tenant goes on: its requests are not held up.
    hook.down();
    let started = std::time::Instant::now();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(10) {
        let t = std::time::Instant::now();
        assert_eq!(
            chat(&s, &a, &format!("during {i}"), i % 3 == 0)
                .await
                .status,
            StatusCode::OK
        );
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a request waited on the sink"
        );
        sent += 1;
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let during = s
        .send(s.data_req(&a, Method::GET, "/api/v1/log-sink"))
        .await
        .json();
    assert!(during["pending"].as_i64().unwrap() > 0, "{during}");
    assert!(during["failures"].as_i64().unwrap() > 0, "{during}");
    assert!(during["last_error"].is_string(), "{during}");
    hook.up().await;
    for i in 0..20 {
        assert_eq!(
            chat(&s, &a, &format!("after {i}"), false).await.status,
            StatusCode::OK
        );
        sent += 1;
    }
    let state = drained(&s, &a).await;
    assert_eq!(state["latest_seq"], sent);
    assert_eq!(state["skipped"], 0);

    // Every delivery signed over its exact body; every record once at
    // least, in sequence order, none missing.
    let received = hook.received.lock().unwrap().clone();
    assert!(
        received.len() >= 2,
        "batched into {} deliveries",
        received.len()
    );
    let mut seqs = Vec::new();
    for (sig, body) in &received {
        assert_eq!(sig, &hmac_hex(body), "a delivery's signature is wrong");
        let batch: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(batch["tenant"], "sinka");
        for r in batch["records"].as_array().unwrap() {
            seqs.push(r["seq"].as_i64().unwrap());
            assert!(
                r["request"].to_string().contains("before")
                    || r["request"].to_string().contains("during")
                    || r["request"].to_string().contains("after")
            );
        }
    }
    let mut last = 0;
    for q in &seqs {
        assert!(*q <= last + 1, "out of order or a gap: {seqs:?}");
        last = last.max(*q);
    }
    assert_eq!(last, sent);

    // A bad sink is refused with the reason; removing it stops delivery.
    for (bad, needle) in [
        (
            json!({"type": "webhook", "url": hook.url(), "secret": "short"}),
            "secret",
        ),
        (
            json!({"type": "webhook", "url": "ftp://x", "secret": SECRET}),
            "https",
        ),
        (
            json!({"type": "s3", "bucket": "Bad_Bucket", "access_key_id": "a", "secret_access_key": "b"}),
            "bucket",
        ),
        (json!({"type": "smtp"}), "type"),
    ] {
        let r = s
            .send(s.data_req(&a, Method::PUT, "/api/v1/log-sink").json(&bad))
            .await;
        assert!(
            r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            r.text
        );
        assert!(r.text.contains(needle), "{bad}: {}", r.text);
    }
    let r = s
        .send(s.data_req(&a, Method::DELETE, "/api/v1/log-sink"))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = s
        .send(s.data_req(&a, Method::GET, "/api/v1/log-sink"))
        .await;
    assert_eq!(r.json()["sink"], Value::Null);
}

/// Without `logs.allow_insecure_sinks`, a tenant cannot point its sink at
/// the gateway's own network.
#[tokio::test]
async fn sinks_on_private_addresses_are_refused_by_default() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let s = gateway_with(&mock, |_| {}).await;
    let a = s.tenant("sinkb", "pool").await;
    for url in [
        "http://127.0.0.1:9/in",
        "https://169.254.169.254/latest",
        "https://localhost/x",
    ] {
        let r = s
            .send(
                s.data_req(&a, Method::PUT, "/api/v1/log-sink")
                    .json(&json!({"type": "webhook", "url": url, "secret": SECRET})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {}", r.text);
    }
}

/// A local S3-compatible server (`moto_server`, started by
/// `scripts/test.sh`) receives the records as objects under the tenant's
/// prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_s3_sink_gets_the_records_as_objects_under_the_tenants_prefix() {
    let Ok(endpoint) = std::env::var("FIEF_TEST_S3_URL") else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "FIEF_TEST_S3_URL is not set (CI needs the S3 tests)"
        );
        eprintln!("SKIP: FIEF_TEST_S3_URL is not set");
        return;
    };
    let endpoint = endpoint.trim_end_matches('/').to_owned();
    let bucket = format!("fief-logs-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let http = reqwest::Client::new();
    // moto accepts an unsigned create.
    let r = http
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    let mock = pool_upstream().await;
    let s = gateway_with(&mock, |c| c.logs.allow_insecure_sinks = true).await;
    let a = s.tenant("sinks3", "silo").await;
    let r = s
        .send(
            s.data_req(&a, Method::PUT, "/api/v1/log-sink")
                .json(&json!({
                    "type": "s3", "bucket": bucket, "prefix": "exports/", "endpoint": endpoint,
                    "access_key_id": "testing", "secret_access_key": "testing-secret",
                })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!r.text.contains("testing-secret"), "{}", r.text);
    let secret = canary("s3");
    for i in 0..12 {
        assert_eq!(
            chat(&s, &a, &format!("{secret} {i}"), false).await.status,
            StatusCode::OK
        );
    }
    drained(&s, &a).await;
    let list = http
        .get(format!(
            "{endpoint}/{bucket}?list-type=2&prefix=exports/sinks3/"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let keys: Vec<&str> = list
        .split("<Key>")
        .skip(1)
        .filter_map(|k| k.split("</Key>").next())
        .collect();
    assert!(!keys.is_empty(), "{list}");
    use object_store::ObjectStore;
    let bucket_store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_region("us-east-1")
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_access_key_id("testing")
        .with_secret_access_key("testing-secret")
        .build()
        .unwrap();
    let mut seqs = Vec::new();
    for key in &keys {
        assert!(key.starts_with("exports/sinks3/invocations/"), "{key}");
        // Objects are private: read back with the bucket's credentials.
        let bytes = bucket_store
            .get(&object_store::path::Path::from(*key))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let body = String::from_utf8(bytes.to_vec()).unwrap();
        for line in body.lines() {
            let r: Value = serde_json::from_str(line).unwrap();
            assert!(r["request"].to_string().contains(&secret));
            seqs.push(r["seq"].as_i64().unwrap());
        }
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs, (1..=12).collect::<Vec<i64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offboarding_shreds_the_log_and_its_sink_and_keeps_the_invoice() {
    let mock = pool_upstream().await;
    let s = gateway_with(&mock, |c| c.logs.allow_insecure_sinks = true).await;
    let a = s.tenant("gonea", "pool").await;
    let hook = Webhook::start().await;
    let r = s
        .send(
            s.data_req(&a, Method::PUT, "/api/v1/log-sink")
                .json(&json!({"type": "webhook", "url": hook.url(), "secret": SECRET})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let secret = canary("gone");
    for i in 0..5 {
        assert_eq!(
            chat(&s, &a, &format!("{secret} {i}"), false).await.status,
            StatusCode::OK
        );
    }
    let records = logs(&s, &a, "").await.json()["records"].clone();
    assert_eq!(records.as_array().unwrap().len(), 5);
    let month = records[0]["at"].as_str().unwrap()[..7].to_owned();

    // The sealed rows as they were, to try them again after.
    let db = s.dir.path().join("fief.db");
    let raw: Vec<(i64, Vec<u8>)> = if s.pg.is_none() {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let rows = sqlx::query_as("SELECT seq, sealed FROM log_records WHERE tenant_id = 'gonea'")
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows
    } else {
        Vec::new()
    };

    let r = s
        .send(s.admin_req(Method::DELETE, "/admin/v1/tenants/gonea"))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    // The wrapped key, the records and the sink's row are gone: nothing
    // the store holds is of the tenant.
    let state = &s.running.as_ref().unwrap().state;
    let residue = state
        .store
        .residue(&fief_core::TenantId::parse("gonea").unwrap())
        .await
        .unwrap();
    assert!(residue.is_empty(), "{residue:?}");
    for (name, bytes) in stored(&s).await {
        assert!(!contains(&bytes, &secret), "{secret} in clear in {name}");
    }
    // The old records, put back under a new tenant of the same id, do not
    // decrypt: their key went with the old incarnation.
    if !raw.is_empty() {
        let again = s.tenant("gonea", "pool").await;
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        for (seq, sealed) in &raw {
            sqlx::query(
                "INSERT INTO log_records (tenant_id, stream, seq, at_ms, request_id, kind, model,
                 principal, sealed) VALUES ('gonea', 'invocations', ?, 0, 'r', 'llm', 'chat-small', 'p', ?)",
            )
            .bind(seq)
            .bind(sealed)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
        let r = logs(&s, &again, "").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json()["records"], json!([]), "{}", r.text);
        assert!(!r.text.contains(&secret));
    }
    // The invoice still bills the five calls.
    let r = s
        .send(s.admin_req(Method::GET, &format!("/admin/v1/invoices/{month}")))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let invoice = r.json();
    let bill = invoice["bills"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "gonea")
        .unwrap_or_else(|| panic!("no bill for gonea: {invoice}"))
        .clone();
    let requests = bill["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "llm" && l["measure"] == "requests")
        .unwrap()["quantity"]
        .clone();
    assert_eq!(requests, 5, "{bill}");
}
