//! Quotas through the real HTTP API: budgets that concurrent first calls
//! cannot overspend, a stream cut at the budget, limits at every level,
//! Redis stopped under load (fail closed, then back by itself), and client
//! fields that change nothing. Counters in memory unless a test starts its
//! own Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fief_config::{Config, LlmModelEntry, RedisConfig, UpstreamConfig};
use fief_llm_mock::{MockOptions, MockUpstream};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use common::{spawn_secrets, Resp, TestServer};

fn upstream(mock: &MockUpstream) -> UpstreamConfig {
    UpstreamConfig {
        name: "pool".into(),
        url: mock.base_url(),
        api_key_env: None,
        models: vec![LlmModelEntry::Id("chat-small".into())],
        max_concurrency: 256,
        timeout_secs: 10,
        ca_file: None,
        tenants: Vec::new(),
        exclusive: false,
    }
}

async fn mock(options: MockOptions) -> MockUpstream {
    MockUpstream::start(MockOptions {
        name: "pool".into(),
        ..options
    })
    .await
    .unwrap()
}

async fn gateway(mock: &MockUpstream, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let up = upstream(mock);
    spawn_secrets(
        tempfile::tempdir().unwrap(),
        fief_server::Secrets {
            upstream_keys: BTreeMap::new(),
            ..Default::default()
        },
        |c| {
            c.llm.upstreams = vec![up];
            tweak(c);
        },
    )
    .await
}

async fn ready(s: &TestServer, base: &str) -> Resp {
    s.send(s.http.get(format!("{base}/readyz"))).await
}

async fn set_quotas(s: &TestServer, tenant: &str, quotas: Value) -> Resp {
    s.send(
        s.admin_req(Method::PATCH, &format!("/admin/v1/tenants/{tenant}"))
            .json(&json!({ "quotas": quotas })),
    )
    .await
}

fn chat(prompt: &str, max_tokens: u64, stream: bool) -> Value {
    json!({
        "model": "chat-small",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": stream,
    })
}

async fn call(s: &TestServer, key: &str, body: &Value) -> Resp {
    s.send(
        s.data_req(key, Method::POST, "/v1/chat/completions")
            .json(body),
    )
    .await
}

async fn quotas(s: &TestServer, key: &str) -> Value {
    let r = s.send(s.data_req(key, Method::GET, "/api/v1/quotas")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json()
}

fn level<'a>(q: &'a Value, name: &str) -> &'a Value {
    q["levels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["level"] == name)
        .unwrap_or_else(|| panic!("no level {name} in {q}"))
}

/// The budget's spend once every settlement has landed.
async fn settled_spend(s: &TestServer, key: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let q = quotas(s, key).await;
        let t = level(&q, "tenant");
        if t["reserved"] == 0 || Instant::now() > deadline {
            return t["spent_this_month"].as_u64().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// fief's own estimate of a text's tokens (four bytes a token), which the
/// reservation and a cut stream's usage are counted in.
fn estimate(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_for_ten_calls_admits_ten_of_fifty_concurrent_calls_every_time() {
    // Each call is still running when the last of the fifty arrives.
    let up = mock(MockOptions {
        delay: Duration::from_millis(400),
        ..Default::default()
    })
    .await;
    let s = gateway(&up, |_| {}).await;
    let body = chat("how much is left", 20, false);
    // What one call reserves (its prompt estimate + max_tokens), read off
    // the token headers of a tenant with a token rate of a full minute's burst.
    let probe_key = s.tenant("probe", "pool").await;
    set_quotas(&s, "probe", json!({"tokens_per_minute": 60_000})).await;
    let r = call(&s, &probe_key, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let remaining: u64 = r.headers["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let reservation = 60_000 - remaining;
    assert!(reservation > 20, "{reservation}");
    for round in 0..20 {
        let tenant = format!("budget{round}");
        let key = s.tenant(&tenant, "pool").await;
        let budget = 10 * reservation;
        let r = set_quotas(&s, &tenant, json!({"monthly_token_budget": budget})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let calls: Vec<_> = (0..50)
            .map(|_| {
                let (http, url, key, body) = (
                    s.http.clone(),
                    format!("{}/v1/chat/completions", s.data),
                    key.clone(),
                    body.clone(),
                );
                tokio::spawn(async move {
                    let r = http
                        .post(url)
                        .bearer_auth(key)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let status = r.status();
                    let retry = r.headers().get("retry-after").is_some();
                    let text = r.text().await.unwrap();
                    (status, retry, text)
                })
            })
            .collect();
        let mut admitted = 0;
        for c in calls {
            let (status, retry, text) = c.await.unwrap();
            match status {
                StatusCode::OK => admitted += 1,
                StatusCode::TOO_MANY_REQUESTS => {
                    assert!(retry, "a 429 says when to retry");
                    assert!(
                        text.contains("Throttled") && text.contains("monthly_token_budget"),
                        "{text}"
                    );
                }
                other => panic!("round {round}: {other}: {text}"),
            }
        }
        assert!(
            admitted <= 10,
            "round {round}: {admitted} calls admitted on a budget for 10"
        );
        assert!(admitted >= 1, "round {round}: nothing admitted");
        let spent = settled_spend(&s, &key).await;
        assert!(spent <= budget, "round {round}: spent {spent} of {budget}");
        assert!(
            spent > 0,
            "round {round}: the answered calls were not charged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_cut_at_the_budget_and_the_tenant_is_charged_what_it_received() {
    let up = mock(MockOptions {
        chunks: 30,
        ..Default::default()
    })
    .await;
    let s = gateway(&up, |_| {}).await;
    let key = s.tenant("capped", "pool").await;
    let prompt: String = (0..150).map(|i| format!("w{i:03} ")).collect();
    let budget = estimate("user") + estimate(&prompt) + 60;
    set_quotas(&s, "capped", json!({"monthly_token_budget": budget})).await;

    let r = call(&s, &key, &chat(&prompt, 1000, true)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mut received = String::new();
    let mut cut = None;
    for event in r
        .text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
    {
        let v: Value = match serde_json::from_str(event) {
            Ok(v) => v,
            Err(_) => {
                assert_ne!(event, "[DONE]", "a cut stream does not end as complete");
                continue;
            }
        };
        if v.get("error").is_some() {
            cut = Some(v);
            break;
        }
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            received.push_str(t);
        }
    }
    let cut = cut.unwrap_or_else(|| panic!("no error event: {}", r.text));
    assert_eq!(cut["error"]["code"], "budget_exhausted", "{cut}");
    assert!(!received.is_empty(), "the stream ran until the cap");
    let total = cut["usage"]["total_tokens"].as_u64().unwrap();
    assert_eq!(cut["usage"]["completion_tokens"], estimate(&received));
    assert!(total <= budget, "{total} > {budget}");
    assert_eq!(
        settled_spend(&s, &key).await,
        total,
        "charged what it received"
    );

    // What is left is less than a prompt: refused, saying why.
    let r = call(&s, &key, &chat(&prompt, 10, true)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert!(r.text.contains("next month"), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_level_applies_and_a_tenant_can_only_lower_its_limits() {
    let up = mock(MockOptions::default()).await;
    let s = gateway(&up, |c| c.quotas.request_burst_secs = 60).await;
    let key = s.tenant("levels", "pool").await;
    let other = s.tenant("bystander", "pool").await;
    assert_eq!(
        set_quotas(
            &s,
            "levels",
            json!({"requests_per_minute": 20, "concurrent_requests": 8})
        )
        .await
        .status,
        StatusCode::OK
    );
    // The operator sees the tenant's own settings and the effective limits.
    let t = s
        .send(s.admin_req(Method::GET, "/admin/v1/tenants/levels"))
        .await
        .json();
    assert_eq!(t["tenant"]["quotas"]["requests_per_minute"], 20);
    assert_eq!(t["effective_quotas"]["concurrent_requests"], 8);

    let me = s
        .send(s.data_req(&key, Method::GET, "/api/v1/me"))
        .await
        .json();
    let key_id = me["principal"]
        .as_str()
        .and_then(|p| p.strip_prefix("api-key:"))
        .unwrap_or_else(|| panic!("{me}"))
        .to_owned();
    let subject = format!("api-key:{key_id}");
    // Above the tenant's own limit: refused.
    let r = s
        .send(
            s.data_req(&key, Method::PUT, &format!("/api/v1/quotas/{subject}"))
                .json(&json!({"requests_per_minute": 21})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("only lower"), "{}", r.text);
    for bad in ["key:x", "role:", "tenant"] {
        let r = s
            .send(
                s.data_req(&key, Method::PUT, &format!("/api/v1/quotas/{bad}"))
                    .json(&json!({"requests_per_minute": 1})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
    }
    let r = s
        .send(
            s.data_req(&key, Method::PUT, &format!("/api/v1/quotas/{subject}"))
                .json(&json!({"requests_per_minute": 3})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // The key's own limit binds first: 3 calls, then 429 with the headers of the tightest level.
    let body = chat("hello", 5, false);
    for n in 0..3 {
        let r = call(&s, &key, &body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.headers["x-ratelimit-limit-requests"], "3");
        assert_eq!(
            r.headers["x-ratelimit-remaining-requests"],
            (2 - n).to_string().as_str()
        );
        assert!(r.headers.contains_key("x-ratelimit-reset-requests"));
    }
    let r = call(&s, &key, &body).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert!(
        r.text.contains("this key's requests_per_minute"),
        "{}",
        r.text
    );
    assert!(
        r.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let q = quotas(&s, &key).await;
    assert_eq!(level(&q, &subject)["remaining"]["requests_per_minute"], 0);
    assert_eq!(level(&q, "tenant")["remaining"]["requests_per_minute"], 17);
    assert_eq!(q["subjects"][0]["subject"], subject.as_str());
    // Another tenant's limits are its own, and it sees none of these.
    let q = quotas(&s, &other).await;
    assert_eq!(q["levels"], json!([]), "{q}");
    assert_eq!(q["subjects"], json!([]), "{q}");
    let r = call(&s, &other, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(!r.headers.contains_key("x-ratelimit-limit-requests"));
    // Removing the key's limit leaves the tenant's.
    let r = s
        .send(s.data_req(&key, Method::DELETE, &format!("/api/v1/quotas/{subject}")))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = call(&s, &key, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers["x-ratelimit-limit-requests"], "20");
    // `null` removes one setting; the tier's default (none) applies again.
    let r = set_quotas(&s, "levels", json!({"requests_per_minute": null})).await;
    assert_eq!(
        r.json()["tenant"]["quotas"]["requests_per_minute"],
        Value::Null
    );
    let bad = set_quotas(&s, "levels", json!({"requests_per_minute": 0})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    let bad = set_quotas(&s, "levels", json!({"rpm": 5})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_is_counted_per_tenant_and_onnx_and_embeddings_count_too() {
    let up = mock(MockOptions {
        delay: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let s = gateway(&up, |_| {}).await;
    let key = s.tenant("narrow", "pool").await;
    set_quotas(&s, "narrow", json!({"concurrent_requests": 2})).await;
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let (http, url, key) = (
                s.http.clone(),
                format!("{}/v1/chat/completions", s.data),
                key.clone(),
            );
            tokio::spawn(async move {
                http.post(url)
                    .bearer_auth(key)
                    .json(&chat("hi", 5, false))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut ok = 0;
    for c in calls {
        match c.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}"),
        }
    }
    assert_eq!(ok, 2, "two at once");
    // Model invocations count against the same requests-per-minute limit.
    let model = common::tenant_model(7);
    assert_eq!(
        s.put_model(&key, "m", model.to_onnx()).await.status,
        StatusCode::CREATED
    );
    set_quotas(
        &s,
        "narrow",
        json!({"requests_per_minute": 2, "concurrent_requests": null}),
    )
    .await;
    let input = json!({"inputs": [[0.1, 0.2, 0.3, 0.4]]});
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(s.invoke(&key, "shared", "m", &input).await.status.as_u16());
    }
    assert_eq!(
        statuses,
        vec![200, 429, 429],
        "burst of one at 2 per minute"
    );
}

/// `redis-server` on a free port, started and stopped by the test.
struct Redis {
    child: Option<Child>,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child: Some(child) }
    }
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_under_load_fails_limited_requests_closed_and_service_resumes() {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "redis-server is needed in CI"
        );
        eprintln!("SKIP: no redis-server");
        return;
    }
    let port = free_port();
    let mut redis = Redis::start(port);
    let up = mock(MockOptions::default()).await;
    let s = gateway(&up, |c| {
        c.redis = Some(RedisConfig {
            url: format!("redis://127.0.0.1:{port}"),
            timeout_ms: 200,
            connections: 4,
        });
    })
    .await;
    let limited = s.tenant("limited", "pool").await;
    let free = s.tenant("free", "pool").await;
    set_quotas(
        &s,
        "limited",
        json!({"requests_per_minute": 1_000_000, "monthly_token_budget": 10_000_000}),
    )
    .await;
    let body = chat("ping", 5, false);
    assert_eq!(call(&s, &limited, &body).await.status, StatusCode::OK);

    // Load from both tenants throughout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // (sent, answered, who, status)
    let log = std::sync::Arc::new(std::sync::Mutex::new(
        Vec::<(Instant, Instant, &str, u16)>::new(),
    ));
    let mut load = Vec::new();
    for (who, key) in [("limited", limited.clone()), ("free", free.clone())] {
        for _ in 0..2 {
            let (http, url, key, body, stop, log) = (
                s.http.clone(),
                format!("{}/v1/chat/completions", s.data),
                key.clone(),
                body.clone(),
                stop.clone(),
                log.clone(),
            );
            load.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sent = Instant::now();
                    let status = http
                        .post(&url)
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    log.lock()
                        .unwrap()
                        .push((sent, Instant::now(), who, status));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = ready(&s, &s.admin).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["checks"]["redis"], "ok", "{}", r.text);
    redis.stop();
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Not ready, naming what is away (and what is not).
    let r = ready(&s, &s.admin).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_ne!(r.json()["checks"]["redis"], "ok", "{}", r.text);
    assert_eq!(r.json()["checks"]["database"], "ok", "{}", r.text);
    assert_eq!(r.json()["checks"]["object_store"], "ok", "{}", r.text);
    let restarting = Instant::now();
    let mut redis = Redis::start(port);
    let back = Instant::now();
    // Within 5 s of Redis returning, the limited tenant is served again.
    let deadline = back + Duration::from_secs(5);
    let recovered = loop {
        let r = call(&s, &limited, &body).await;
        if r.status == StatusCode::OK {
            break Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "not served 5 s after redis returned: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ready(&s, &s.admin).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let log = log.lock().unwrap().clone();
    let during = |who: &str| -> Vec<u16> {
        log.iter()
            // Sent after Redis was gone and answered before it was started
            // again (one still waiting for Redis then may be admitted by
            // the restarted one, counted).
            .filter(|(t, done, w, _)| *w == who && *t > stopped && *done < restarting)
            .map(|(_, _, _, s)| *s)
            .collect()
    };
    let limited_down = during("limited");
    assert!(!limited_down.is_empty());
    assert!(
        limited_down.iter().all(|s| *s == 503),
        "a limited request was admitted uncounted: {limited_down:?}"
    );
    let free_down = during("free");
    assert!(
        free_down.len() > 10 && free_down.iter().all(|s| *s == 200),
        "{free_down:?}"
    );
    let after: Vec<u16> = log
        .iter()
        .filter(|(t, _, w, _)| *w == "limited" && *t > recovered)
        .map(|(_, _, _, s)| *s)
        .collect();
    assert!(
        !after.is_empty() && after.iter().all(|s| *s == 200),
        "{after:?}"
    );
    assert!(
        s.metric("fief_quota_store_errors_total{outcome=\"denied\"}")
            .await
            > 0.0
    );
    redis.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_client_sends_changes_which_limits_apply() {
    let up = mock(MockOptions::default()).await;
    let s = gateway(&up, |c| c.quotas.request_burst_secs = 60).await;
    let key = s.tenant("spoofer", "pool").await;
    let _rich = s.tenant("rich", "pool").await;
    set_quotas(&s, "spoofer", json!({"requests_per_minute": 4})).await;
    set_quotas(&s, "rich", json!({"requests_per_minute": 1000})).await;
    let spoofs = [
        json!({"priority": "high", "service_tier": "priority"}),
        json!({"user": "rich", "tenant": "rich", "tenant_id": "rich"}),
        json!({"metadata": {"tenant": "rich", "priority": 0}}),
        json!({"x-ratelimit-remaining-requests": 1000}),
    ];
    for (n, extra) in spoofs.iter().enumerate() {
        let mut body = chat("hello", 5, false);
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = s
            .send(
                s.data_req(&key, Method::POST, "/v1/chat/completions")
                    .header("x-ratelimit-remaining-requests", "1000")
                    .header("x-ratelimit-limit-requests", "1000")
                    .header("x-tenant-id", "rich")
                    .header("x-fief-tenant", "rich")
                    .header("priority", "u=0")
                    .json(&body),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{n}: {}", r.text);
        assert_eq!(r.headers["x-ratelimit-limit-requests"], "4");
        assert_eq!(
            r.headers["x-ratelimit-remaining-requests"],
            (3 - n).to_string().as_str()
        );
    }
    let r = s
        .send(
            s.data_req(&key, Method::POST, "/v1/chat/completions")
                .header("x-tenant-id", "rich")
                .json(
                    &json!({"model": "chat-small", "messages": [{"role": "user", "content": "x"}],
                              "user": "rich", "priority": 0}),
                ),
        )
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    // The upstream saw neither the client's priority nor its tenant claims.
    for req in up.requests() {
        let body = &req.body;
        for field in [
            "priority",
            "service_tier",
            "tenant",
            "tenant_id",
            "metadata",
        ] {
            assert!(
                body.get(field).is_none(),
                "{field} reached the upstream: {body}"
            );
        }
        assert_ne!(body["user"], "rich");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_reset_the_month() {
    let up = mock(MockOptions::default()).await;
    let s = gateway(&up, |_| {}).await;
    let key = s.tenant("durable", "pool").await;
    set_quotas(&s, "durable", json!({"monthly_token_budget": 1000})).await;
    for _ in 0..3 {
        assert_eq!(
            call(&s, &key, &chat("remember me", 5, false)).await.status,
            StatusCode::OK
        );
    }
    let spent = settled_spend(&s, &key).await;
    assert!(spent > 0);
    let upstreams = vec![upstream(&up)];
    let s = s.restart(|c| c.llm.upstreams = upstreams).await;
    let q = quotas(&s, &key).await;
    assert_eq!(level(&q, "tenant")["spent_this_month"], spent, "{q}");
    assert_eq!(
        call(&s, &key, &chat("still counted", 5, false))
            .await
            .status,
        StatusCode::OK
    );
    assert!(settled_spend(&s, &key).await > spent);
}
