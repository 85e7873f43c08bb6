//! The foundation-model gateway through the real HTTP API, against local
//! upstreams (`fief-llm-mock`): the official SDKs, cross-tenant refusal by
//! every spelling, dedicated capacity, retries and fallbacks, streams that
//! break, TLS to upstreams and to an identity provider, usage records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fief_config::{Config, LlmModelConfig, LlmModelEntry, UpstreamConfig};
use fief_llm_mock::{MockOptions, MockUpstream, Mode, TlsFiles};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use common::{sdk, spawn_secrets, Resp, TestServer};

const KEY_VAR: &str = "TEST_UPSTREAM_KEY";
const UPSTREAM_KEY: &str = "sk-upstream-secret-0123";

fn model(
    id: &str,
    alias: Option<&str>,
    tags: &[(&str, &str)],
    fallbacks: &[&str],
) -> LlmModelEntry {
    LlmModelEntry::Full(LlmModelConfig {
        id: id.into(),
        alias: alias.map(Into::into),
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        fallbacks: fallbacks.iter().map(|f| (*f).into()).collect(),
    })
}

fn upstream(name: &str, mock: &MockUpstream, models: Vec<LlmModelEntry>) -> UpstreamConfig {
    UpstreamConfig {
        name: name.into(),
        url: mock.base_url(),
        api_key_env: Some(KEY_VAR.into()),
        models,
        max_concurrency: 64,
        timeout_secs: 5,
        ca_file: None,
        tenants: Vec::new(),
        exclusive: false,
    }
}

async fn gateway(upstreams: Vec<UpstreamConfig>, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let secrets = fief_server::Secrets {
        upstream_keys: BTreeMap::from([(KEY_VAR.to_owned(), UPSTREAM_KEY.to_owned())]),
        ..Default::default()
    };
    spawn_secrets(tempfile::tempdir().unwrap(), secrets, |c| {
        c.llm.upstreams = upstreams;
        c.llm.cooldown_secs = 1;
        tweak(c);
    })
    .await
}

async fn mock(name: &str) -> MockUpstream {
    MockUpstream::start(MockOptions {
        name: name.into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The usage entry of the call that answered `r` (written just after the
/// answer, so it may take a moment).
async fn usage_of(s: &TestServer, tenant: &str, r: &Resp) -> Value {
    let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let audit = s
            .send(s.admin_req(
                Method::GET,
                &format!("/admin/v1/audit?tenant={tenant}&kind=usage&limit=20"),
            ))
            .await;
        let found = audit.json()["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["request_id"] == id.as_str())
            .cloned();
        if let Some(entry) = found {
            return entry;
        }
        assert!(
            Instant::now() < deadline,
            "no usage entry for {id}: {}",
            audit.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn chat(s: &TestServer, key: &str, body: Value) -> Resp {
    s.send(
        s.data_req(key, Method::POST, "/v1/chat/completions")
            .json(&body),
    )
    .await
}

fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

async fn allow(s: &TestServer, tenant: &str, models: Value) {
    let r = s
        .send(
            s.admin_req(Method::PATCH, &format!("/admin/v1/tenants/{tenant}"))
                .json(&json!({ "llm_models": models })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

async fn listed(s: &TestServer, key: &str) -> Vec<String> {
    let r = s.send(s.data_req(key, Method::GET, "/v1/models")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The error body without its request id: identical for every refusal.
fn refusal(r: &Resp) -> Value {
    let mut v = r.json();
    v["error"]["request_id"] = Value::Null;
    v
}

#[tokio::test]
async fn the_official_sdks_work_against_fief() {
    let mock = mock("pool").await;
    let s = gateway(
        vec![upstream(
            "pool",
            &mock,
            vec![
                model("org/Chat-1", Some("chat"), &[], &[]),
                model("other", None, &[], &[]),
                model("embed-1", None, &[], &[]),
            ],
        )],
        |_| {},
    )
    .await;
    let key = s.tenant("acme", "pool").await;
    allow(&s, "acme", json!(["chat", "embed-1"])).await;
    let env = [
        ("FIEF_URL", s.data.as_str()),
        ("FIEF_KEY", key.as_str()),
        ("AWS_BEARER_TOKEN_BEDROCK", key.as_str()),
        ("MODEL", "chat"),
        ("EMBED_MODEL", "embed-1"),
        ("FORBIDDEN", "other"),
    ];
    if sdk::python_has("openai") {
        sdk::run_python("openai_client.py", &env).await;
    }
    if sdk::python_has("boto3") {
        sdk::run_python("bedrock_client.py", &env).await;
        // The same client signing with AWS Signature V4: the key's id and
        // secret as the access key pair, no bearer token.
        let (id, secret) = sdk::aws_pair(&key);
        let mut signed: Vec<(&str, &str)> = env
            .iter()
            .copied()
            .filter(|(k, _)| *k != "AWS_BEARER_TOKEN_BEDROCK")
            .collect();
        signed.extend([("AWS_ACCESS_KEY_ID", id), ("AWS_SECRET_ACCESS_KEY", secret)]);
        sdk::run_python("bedrock_client.py", &signed).await;
    }
    // The upstream saw fief's key and its own model id, never the tenant's key.
    let seen = mock.requests();
    assert!(!seen.is_empty());
    for r in seen.iter().filter(|r| r.path != "/v1/models") {
        assert_eq!(
            r.authorization.as_deref(),
            Some(&*format!("Bearer {UPSTREAM_KEY}"))
        );
        assert!(!r.headers.iter().any(|(_, v)| v.contains(&key)));
    }
}

#[tokio::test]
async fn a_tenant_reaches_no_model_it_is_not_given_by_any_spelling() {
    let pool = mock("pool").await;
    let dedicated = mock("dedicated").await;
    let mut own = upstream(
        "acme-dedicated",
        &dedicated,
        vec![model("acme/Tuned-7b", Some("acme-tuned"), &[], &[])],
    );
    own.tenants = vec!["acme".into()];
    own.exclusive = true;
    let s = gateway(
        vec![
            upstream(
                "pool",
                &pool,
                vec![
                    model("org/Small-1", Some("small"), &[("Size", "small")], &[]),
                    model("org/Large-1", Some("large"), &[("Size", "large")], &[]),
                ],
            ),
            own,
        ],
        |_| {},
    )
    .await;
    let acme = s.tenant("acme", "silo").await;
    let globex = s.tenant("globex", "pool").await;
    allow(&s, "globex", json!(["Size=small"])).await;

    assert_eq!(listed(&s, &acme).await, ["small", "large", "acme-tuned"]);
    assert_eq!(listed(&s, &globex).await, ["small"]);
    assert_eq!(
        chat(&s, &globex, ask("small", "hi")).await.status,
        StatusCode::OK
    );

    let absent = chat(&s, &globex, ask("no-such-model", "hi")).await;
    assert_eq!(absent.status, StatusCode::FORBIDDEN, "{}", absent.text);
    assert_eq!(absent.json()["error"]["type"], "permission_error");
    for name in [
        "large",
        "LARGE",
        "org/Large-1",
        "ORG/LARGE-1",
        "org%2FLarge-1",
        "%6c%61%72%67%65",
        "globex/large",
        "acme/large",
        "acme-tuned",
        "Acme-Tuned",
        "acme/Tuned-7b",
        "acme%2Ftuned-7b",
        "acme/acme-tuned",
    ] {
        let r = chat(&s, &globex, ask(name, "hi")).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{name}: {}", r.text);
        assert_eq!(refusal(&r), refusal(&absent), "{name}: an oracle");
        let c = s
            .send(
                s.data_req(
                    &globex,
                    Method::POST,
                    &format!(
                        "/model/{}/converse",
                        name.replace('%', "%25").replace('/', "%2F")
                    ),
                )
                .json(&json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]})),
            )
            .await;
        assert_eq!(
            c.status,
            StatusCode::FORBIDDEN,
            "converse {name}: {}",
            c.text
        );
    }
    // The operator can take a model away again, and give everything back.
    allow(&s, "globex", json!([])).await;
    assert!(listed(&s, &globex).await.is_empty());
    allow(&s, "globex", Value::Null).await;
    assert_eq!(listed(&s, &globex).await, ["small", "large"]);
    // A tenant policy narrows further per principal.
    let r = s
        .send(
            s.data_req(&globex, Method::PUT, "/api/v1/policies/no-large")
                .header("content-type", "text/plain")
                .body(r#"forbid (principal, action == Fief::Action::"InvokeFoundationModel", resource) when { resource.hasTag("Size") && resource.getTag("Size") == "large" };"#),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    assert_eq!(
        chat(&s, &globex, ask("large", "hi")).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(listed(&s, &globex).await, ["small"]);
    // An allowlist naming nothing is refused, not stored.
    let r = s
        .send(
            s.admin_req(Method::PATCH, "/admin/v1/tenants/globex")
                .json(&json!({"llm_models": ["smal"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    // No dedicated-model request went to the pool, nor the reverse.
    assert!(dedicated
        .requests()
        .iter()
        .all(|r| r.body["model"] == "acme/Tuned-7b"));
    // Every refusal was audited.
    let audit = s
        .send(s.admin_req(
            Method::GET,
            "/admin/v1/audit?tenant=globex&decision=deny&limit=1000",
        ))
        .await;
    assert!(
        audit.json()["entries"].as_array().unwrap().len() >= 27,
        "{}",
        audit.text
    );
}

#[tokio::test]
async fn nothing_a_client_sends_decides_who_it_is_upstream() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let s = gateway(
        vec![upstream("pool", &mock, vec![model("m", None, &[], &[])])],
        |_| {},
    )
    .await;
    let acme = s.tenant("acme", "pool").await;
    let globex = s.tenant("globex", "pool").await;
    for key in [&acme, &globex] {
        let mut body = ask("m", "hi");
        body["user"] = json!("victim-user");
        body["metadata"] = json!({"tenant": "victim"});
        body["tenant"] = json!("victim");
        body["priority"] = json!(-100);
        body["x-tenant-id"] = json!("victim");
        let r = s
            .send(
                s.data_req(key, Method::POST, "/v1/chat/completions")
                    .header("x-tenant-id", "victim")
                    .header("x-fief-tenant", "victim")
                    .json(&body),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let seen = mock.requests();
    let users: Vec<&str> = seen
        .iter()
        .map(|r| r.body["user"].as_str().unwrap())
        .collect();
    assert_eq!(users.len(), 2);
    assert_ne!(
        users[0], users[1],
        "each tenant's principal has its own opaque id"
    );
    for r in &seen {
        let text = r.body.to_string() + &format!("{:?}", r.headers);
        for leak in ["victim", "acme", "globex", "priority", "metadata"] {
            assert!(!text.contains(leak), "{leak} reached the upstream: {text}");
        }
        assert!(r.body["user"].as_str().unwrap().starts_with("fief-"));
    }
}

#[tokio::test]
async fn a_dedicated_deployment_keeps_its_latency_while_the_pool_is_saturated() {
    let pool = MockUpstream::start(MockOptions {
        name: "pool".into(),
        delay: Duration::from_millis(1500),
        ..Default::default()
    })
    .await
    .unwrap();
    let dedicated = mock("dedicated").await;
    let mut shared = upstream("pool", &pool, vec![model("m", None, &[], &[])]);
    shared.max_concurrency = 2;
    let mut own = upstream(
        "acme-dedicated",
        &dedicated,
        vec![model("m", None, &[], &[])],
    );
    own.tenants = vec!["acme".into()];
    own.exclusive = true;
    let s = std::sync::Arc::new(gateway(vec![shared, own], |_| {}).await);
    let acme = s.tenant("acme", "silo").await;
    let noisy = s.tenant("noisy", "pool").await;
    // Its normal latency first (and its policies and silo connections warm).
    let mut normal = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(
            chat(&s, &acme, ask("m", "warm")).await.status,
            StatusCode::OK
        );
        normal = normal.max(t.elapsed());
    }
    // The noisy tenant takes both pool slots and queues more.
    let mut hogs = Vec::new();
    for _ in 0..6 {
        let (s, key) = (s.clone(), noisy.clone());
        hogs.push(tokio::spawn(async move {
            chat(&s, &key, ask("m", "hog")).await.status
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(pool.in_flight(), 2, "the pool upstream is saturated");
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let r = chat(&s, &acme, ask("m", "mine")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("dedicated"));
        worst = worst.max(t.elapsed());
    }
    // Far below the pool's 1.5 s: it never waited for a pool slot.
    assert!(
        worst < normal.max(Duration::from_millis(100)) * 3 && worst < Duration::from_millis(750),
        "dedicated request took {worst:?} behind the pool (normally {normal:?})"
    );
    // Meanwhile another pool tenant waits behind the noisy one.
    let t = Instant::now();
    let other = s.tenant("other", "pool").await;
    assert_eq!(
        chat(&s, &other, ask("m", "wait")).await.status,
        StatusCode::OK
    );
    assert!(t.elapsed() > Duration::from_millis(1000));
    for h in hogs {
        assert_eq!(h.await.unwrap(), StatusCode::OK);
    }
}

#[tokio::test]
async fn failures_are_retried_elsewhere_and_fallbacks_answer() {
    let good = mock("good").await;
    let bad = mock("bad").await;
    bad.set_mode(Mode::Fail);
    let small = mock("small-host").await;
    let s = gateway(
        vec![
            upstream("a", &good, vec![model("m", None, &[], &["small"])]),
            upstream("b", &bad, vec![model("m", None, &[], &["small"])]),
            upstream("c", &small, vec![model("small", None, &[], &[])]),
        ],
        |_| {},
    )
    .await;
    let key = s.tenant("acme", "pool").await;
    for i in 0..200 {
        let r = chat(&s, &key, ask("m", &format!("call {i}"))).await;
        assert_eq!(r.status, StatusCode::OK, "call {i}: {}", r.text);
        assert!(!r.text.contains("10.9.8.7") && !r.text.contains("sk-upstream"));
    }
    assert!(
        !bad.requests().is_empty(),
        "the failing deployment was tried"
    );
    assert!(s.metric("fief_llm_retries_total{upstream=\"a\"}").await >= 1.0);

    // Every deployment of m down: its fallback answers, and says so in usage.
    good.set_mode(Mode::Fail);
    let r = chat(&s, &key, ask("m", "fallback please")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["model"], "small");
    assert!(r.text.contains("small-host answers"), "{}", r.text);
    let entry = usage_of(&s, "acme", &r).await;
    assert_eq!(entry["usage"]["fallback_from"], "m", "{entry}");
    assert_eq!(entry["usage"]["model"], "small");

    // Everything down, fallback too: a clear 502, scrubbed.
    small.set_mode(Mode::Fail);
    let r = chat(&s, &key, ask("m", "nothing")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(r.json()["error"]["type"], "upstream_error");
    for leak in ["10.9.8.7", "sk-upstream", "127.0.0.1", "http://"] {
        assert!(!r.text.contains(leak), "{leak} in {}", r.text);
    }
    // 429s come back as 429 once retries are spent.
    for m in [&good, &bad, &small] {
        m.set_mode(Mode::RateLimit);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = chat(&s, &key, ask("m", "busy")).await;
    assert!(
        r.status == StatusCode::TOO_MANY_REQUESTS || r.status == StatusCode::BAD_GATEWAY,
        "{}",
        r.text
    );
}

/// Reads an SSE answer's `data:` payloads.
fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn streams_pass_through_and_never_end_silently() {
    let mock = MockUpstream::start(MockOptions {
        chunks: 6,
        ..Default::default()
    })
    .await
    .unwrap();
    let s = gateway(
        vec![upstream(
            "pool",
            &mock,
            vec![model("org/M", Some("m"), &[], &[])],
        )],
        |_| {},
    )
    .await;
    let key = s.tenant("acme", "pool").await;
    let mut body = ask("m", "stream this please");
    body["stream"] = json!(true);
    let r = chat(&s, &key, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let ev = events(&r.text);
    assert_eq!(ev.last().unwrap(), "[DONE]");
    assert!(
        ev.iter().all(|e| !e.contains("\"usage\"")),
        "usage only when asked: {ev:?}"
    );
    for e in ev.iter().filter(|e| *e != "[DONE]") {
        let chunk: Value = serde_json::from_str(e).unwrap();
        assert_eq!(chunk["model"], "m", "the upstream id stays hidden: {e}");
    }
    // The upstream was asked for usage all the same, and it was recorded.
    assert_eq!(
        mock.requests()[0].body["stream_options"]["include_usage"],
        true
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        s.metric("fief_llm_tokens_total{model=\"m\",kind=\"completion\"}")
            .await
            > 0.0
    );

    // A failure after the first byte: an error event, no [DONE], no retry.
    mock.clear();
    mock.set_mode(Mode::FailAfterFirstChunk);
    let r = chat(&s, &key, body.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    let ev = events(&r.text);
    assert!(ev.last().unwrap().contains("\"error\""), "{ev:?}");
    assert!(!ev.iter().any(|e| e == "[DONE]"));
    assert_eq!(
        mock.requests().len(),
        1,
        "output is never duplicated by a retry"
    );

    // A client that goes away cancels the upstream request.
    mock.set_mode(Mode::Normal);
    let slow = MockUpstream::start(MockOptions {
        chunks: 20,
        chunk_delay: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let s2 = gateway(
        vec![upstream("slow", &slow, vec![model("m", None, &[], &[])])],
        |_| {},
    )
    .await;
    let key2 = s2.tenant("acme", "pool").await;
    let mut resp = s2
        .data_req(&key2, Method::POST, "/v1/chat/completions")
        .json(&body)
        .send()
        .await
        .unwrap();
    let first = resp.chunk().await.unwrap();
    assert!(first.is_some());
    drop(resp);
    let deadline = Instant::now() + Duration::from_secs(3);
    while slow.cancelled() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(slow.cancelled(), 1, "the upstream request was cancelled");
    // ...and its usage is recorded as incomplete.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let usage = s2
        .send(s2.admin_req(
            Method::GET,
            "/admin/v1/audit?tenant=acme&kind=usage&limit=1",
        ))
        .await;
    assert_eq!(
        usage.json()["entries"][0]["usage"]["complete"],
        false,
        "{}",
        usage.text
    );
}

/// A CA and a server certificate for `localhost` it signed, by the openssl CLI.
fn tls_files(dir: &std::path::Path) -> (std::path::PathBuf, TlsFiles) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=fief test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        TlsFiles {
            cert_pem: dir.join("server.pem"),
            key_pem: dir.join("server.key"),
        },
    )
}

#[tokio::test]
async fn tls_to_upstreams_and_to_the_identity_provider() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, files) = tls_files(certs.path());
    let idp = common::idp::Idp::new("tls-key");
    let jwks = json!({"keys": [idp.jwk()]}).to_string();
    let mock = MockUpstream::start(MockOptions {
        tls: Some(files),
        files: vec![("/jwks.json".into(), jwks)],
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(mock.base_url().starts_with("https://"));
    let mut trusted = upstream("tls", &mock, vec![model("m", None, &[], &[])]);
    trusted.ca_file = Some(ca.clone());
    let untrusted = {
        let mut u = upstream("untrusted", &mock, vec![model("n", None, &[], &[])]);
        u.ca_file = None;
        u
    };
    let jwks_url = format!("https://localhost:{}/jwks.json", mock.addr().port());
    let s = gateway(vec![trusted, untrusted], |c| {
        let mut oidc = common::idp::oidc_config(None, Some(jwks_url));
        oidc.ca_file = Some(ca.clone());
        c.oidc = Some(oidc);
    })
    .await;
    let key = s.tenant("acme", "pool").await;
    let r = chat(&s, &key, ask("m", "over tls")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = chat(&s, &key, ask("n", "untrusted")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert!(r.text.contains("certificate is not trusted"), "{}", r.text);
    // OIDC: a token verifies against keys fetched over https.
    let token = idp.sign(&common::idp::claims("acme"));
    let me = s.send(s.data_req(&token, Method::GET, "/api/v1/me")).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
}

#[tokio::test]
async fn usage_is_audited_as_counts_and_an_upstream_embedding_model_is_a_foundation_model() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let s = gateway(
        vec![upstream(
            "pool",
            &mock,
            vec![model("m", None, &[], &[]), model("embed", None, &[], &[])],
        )],
        |_| {},
    )
    .await;
    let key = s.tenant("acme", "pool").await;
    let r = chat(&s, &key, ask("m", "secret canary words")).await;
    assert_eq!(r.status, StatusCode::OK);
    let usage = r.json()["usage"].clone();
    let entry = &usage_of(&s, "acme", &r).await;
    assert_eq!(entry["usage"]["prompt_tokens"], usage["prompt_tokens"]);
    assert_eq!(
        entry["usage"]["completion_tokens"],
        usage["completion_tokens"]
    );
    assert_eq!(entry["usage"]["counted"], "upstream");
    assert_eq!(entry["usage"]["upstream"], "pool");
    let audit = s
        .send(s.admin_req(Method::GET, "/admin/v1/audit?tenant=acme&limit=1000"))
        .await;
    assert!(audit.text.contains("usage"), "{}", audit.text);
    assert!(
        !audit.text.contains("canary"),
        "content never reaches the audit log"
    );
    let e = s
        .send(
            s.data_req(&key, Method::POST, "/v1/embeddings")
                .json(&json!({"model": "embed", "input": ["a", "b"]})),
        )
        .await;
    assert_eq!(e.status, StatusCode::OK, "{}", e.text);
    assert_eq!(e.json()["data"].as_array().unwrap().len(), 2);
    let e = s
        .send(
            s.data_req(&key, Method::POST, "/v1/embeddings")
                .json(&json!({"model": "nope", "input": "a"})),
        )
        .await;
    assert_eq!(e.status, StatusCode::FORBIDDEN, "{}", e.text);
    let bad = chat(
        &s,
        &key,
        json!({"model": "m", "messages": [], "max_tokens": 0}),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let bad = chat(&s, &key, json!({"messages": []})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text.contains("`model` is required"));
}
