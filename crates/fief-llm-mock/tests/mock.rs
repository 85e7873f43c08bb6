#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use fief_llm_mock::{MockOptions, MockUpstream, Mode, TlsFiles};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn mock() -> MockUpstream {
    MockUpstream::start(MockOptions::default()).await.unwrap()
}

fn chat_body(extra: Value) -> Value {
    let mut body = json!({
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hello there world"}]},
        ],
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

async fn post(m: &MockUpstream, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", m.base_url()))
        .bearer_auth("sk-client")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
fn events(sse: &str) -> Vec<String> {
    sse.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

fn content(events: &[String]) -> Vec<String> {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| {
            let v: Value = serde_json::from_str(e).unwrap();
            let choice = v["choices"].get(0)?.clone();
            let text = choice["delta"]["content"]
                .as_str()
                .or(choice["text"].as_str())?;
            (!text.is_empty()).then(|| text.to_owned())
        })
        .collect()
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn chat_answer_usage_and_recording() {
    let m = mock().await;
    let v: Value = post(&m, "/chat/completions", &chat_body(json!({})))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-mock-"));
    assert_eq!(v["model"], "gpt-test");
    let choice = &v["choices"][0];
    assert_eq!(
        choice["message"]["content"],
        "mock answers gpt-test: hello there world"
    );
    assert_eq!(choice["finish_reason"], "stop");
    // 2 + 3 prompt words; 6 answer words.
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11})
    );

    let seen = m.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer sk-client"));
    assert!(seen[0]
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/json"));
    assert_eq!(seen[0].body["model"], "gpt-test");
    m.clear();
    assert!(m.requests().is_empty());
    m.stop().await;
}

#[tokio::test]
async fn streaming_matches_non_streaming() {
    let m = mock().await;
    let plain: Value = post(&m, "/chat/completions", &chat_body(json!({})))
        .await
        .json()
        .await
        .unwrap();
    let text = plain["choices"][0]["message"]["content"].as_str().unwrap();

    let resp = post(&m, "/chat/completions", &chat_body(json!({"stream": true}))).await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let ev = events(&resp.text().await.unwrap());
    let first: Value = serde_json::from_str(&ev[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(
        first["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let pieces = content(&ev);
    assert_eq!(pieces.len(), 4);
    assert_eq!(pieces.concat(), text);
    let last: Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(ev.last().unwrap(), "[DONE]");
    assert!(ev.iter().all(|e| !e.contains("usage")));

    let with_usage = json!({"stream": true, "stream_options": {"include_usage": true}});
    let ev = events(
        &post(&m, "/chat/completions", &chat_body(with_usage))
            .await
            .text()
            .await
            .unwrap(),
    );
    let usage: Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], plain["usage"]);
    assert_eq!(m.in_flight(), 0);
    assert_eq!(m.cancelled(), 0);
}

#[tokio::test]
async fn max_tokens_truncates() {
    let m = mock().await;
    let v: Value = post(
        &m,
        "/chat/completions",
        &chat_body(json!({"max_tokens": 3})),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "mock answers gpt-test:"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    let big: Value = post(
        &m,
        "/chat/completions",
        &chat_body(json!({"max_tokens": 6})),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(big["choices"][0]["finish_reason"], "stop");

    let ev = events(
        &post(
            &m,
            "/chat/completions",
            &chat_body(json!({"max_tokens": 3, "stream": true})),
        )
        .await
        .text()
        .await
        .unwrap(),
    );
    assert_eq!(content(&ev).concat(), "mock answers gpt-test:");
    assert!(ev[ev.len() - 2].contains(r#""finish_reason":"length""#));
}

#[tokio::test]
async fn completions_models_and_not_found() {
    let options = MockOptions {
        name: "up1".into(),
        models: vec!["m1".into()],
        ..Default::default()
    };
    let m = MockUpstream::start(options).await.unwrap();
    let body = json!({"model": "m", "prompt": ["say", "hi there"]});
    let v: Value = post(&m, "/completions", &body).await.json().await.unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "up1 completes m: say hi there");
    assert_eq!(v["choices"][0]["logprobs"], Value::Null);
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9})
    );

    let stream = json!({"model": "m", "prompt": "say hi", "stream": true});
    let ev = events(
        &post(&m, "/completions", &stream)
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(content(&ev).concat(), "up1 completes m: say hi");

    let models: Value = reqwest::get(format!("{}/models", m.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "m1");

    let missing = post(&m, "/nope", &json!({})).await;
    assert_eq!(missing.status(), 404);
    let err: Value = missing.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error");
    let bad = post(&m, "/chat/completions", &json!({"model": 1})).await;
    assert_eq!(bad.status(), 400);
    assert_eq!(m.requests().len(), 5);
}

#[tokio::test]
async fn embeddings_are_deterministic_unit_vectors() {
    let m = MockUpstream::start(MockOptions {
        embedding_dims: 16,
        ..Default::default()
    })
    .await
    .unwrap();
    let body = json!({"model": "e", "input": ["alpha beta", "gamma", "alpha beta"]});
    let v: Value = post(&m, "/embeddings", &body).await.json().await.unwrap();
    let vecs: Vec<Vec<f64>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(vecs.len(), 3);
    for e in &vecs {
        assert_eq!(e.len(), 16);
        let norm = e.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    assert_eq!(vecs[0], vecs[2]);
    assert_ne!(vecs[0], vecs[1]);
    assert_eq!(v["usage"], json!({"prompt_tokens": 5, "total_tokens": 5}));
    let again: Value = post(&m, "/embeddings", &json!({"model": "e", "input": "gamma"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["data"][0]["embedding"], v["data"][1]["embedding"]);
}

#[tokio::test]
async fn fail_and_rate_limit_modes() {
    let m = mock().await;
    m.set_mode(Mode::Fail);
    let resp = post(&m, "/chat/completions", &chat_body(json!({}))).await;
    assert_eq!(resp.status(), 500);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v,
        json!({"error": {"message": "internal upstream failure at http://10.9.8.7:8000 key=sk-upstream-secret", "type": "server_error"}})
    );
    m.set_mode(Mode::RateLimit);
    let resp = post(&m, "/embeddings", &json!({"model": "e", "input": "x"})).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    // Requests are recorded whatever the mode.
    assert_eq!(m.requests().len(), 2);
    m.set_mode(Mode::Normal);
    assert_eq!(
        post(&m, "/chat/completions", &chat_body(json!({})))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn hang_holds_until_the_client_gives_up() {
    let m = Arc::new(mock().await);
    m.set_mode(Mode::Hang);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let url = format!("{}/chat/completions", m.base_url());
    let request = tokio::spawn(client.post(url).json(&chat_body(json!({}))).send());
    let probe = m.clone();
    wait_until("the hung request", move || probe.in_flight() == 1).await;
    let err = request.await.unwrap().unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let probe = m.clone();
    wait_until("in_flight back to 0", move || probe.in_flight() == 0).await;
}

/// Sends a raw HTTP/1.1 request and returns everything read until EOF.
async fn raw_exchange(m: &MockUpstream, path: &str, body: &str) -> Vec<u8> {
    let mut tcp = tokio::net::TcpStream::connect(m.addr()).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut out))
        .await
        .unwrap();
    out
}

#[tokio::test]
async fn drop_closes_without_a_response() {
    let m = mock().await;
    m.set_mode(Mode::Drop);
    let body = chat_body(json!({})).to_string();
    assert_eq!(raw_exchange(&m, "/v1/chat/completions", &body).await, b"");
    let body = json!({"model": "e", "input": "x"}).to_string();
    assert_eq!(raw_exchange(&m, "/v1/embeddings", &body).await, b"");
    assert!(reqwest::Client::new()
        .post(format!("{}/chat/completions", m.base_url()))
        .json(&chat_body(json!({})))
        .send()
        .await
        .is_err());
    assert_eq!(m.in_flight(), 0);
}

#[tokio::test]
async fn broken_streams_end_before_done() {
    for mode in [Mode::FailAfterFirstChunk, Mode::Drop] {
        let m = mock().await;
        m.set_mode(mode);
        let resp = post(&m, "/chat/completions", &chat_body(json!({"stream": true}))).await;
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let mut seen = String::new();
        let mut failed = false;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => seen.push_str(std::str::from_utf8(&bytes).unwrap()),
                Err(_) => failed = true,
            }
        }
        assert!(failed, "{mode:?}: the stream should error");
        assert!(!seen.contains("[DONE]"));
        // Six answer words in four chunks: the first is one word.
        assert_eq!(content(&events(&seen)), vec!["mock "]);
        if mode == Mode::FailAfterFirstChunk {
            // The non-streaming variant fails outright.
            let plain = post(&m, "/chat/completions", &chat_body(json!({}))).await;
            assert_eq!(plain.status(), 500);
        }
        assert_eq!(m.cancelled(), 0);
    }
}

#[tokio::test]
async fn client_going_away_mid_stream_is_counted() {
    let options = MockOptions {
        chunks: 6,
        chunk_delay: Duration::from_millis(40),
        ..Default::default()
    };
    let m = Arc::new(MockUpstream::start(options).await.unwrap());
    let started = Instant::now();
    let resp = post(&m, "/chat/completions", &chat_body(json!({"stream": true}))).await;
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().starts_with("data: "));
    assert_eq!(m.in_flight(), 1);
    drop(body);
    let probe = m.clone();
    wait_until("the cancellation", move || {
        probe.cancelled() == 1 && probe.in_flight() == 0
    })
    .await;
    assert!(started.elapsed() < Duration::from_millis(200));
}

#[tokio::test]
async fn stop_closes_hung_connections() {
    let m = mock().await;
    m.set_mode(Mode::Hang);
    let url = format!("{}/chat/completions", m.base_url());
    let request = tokio::spawn(
        reqwest::Client::new()
            .post(url)
            .json(&chat_body(json!({})))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    m.stop().await;
    assert!(request.await.unwrap().is_err());
}

#[tokio::test]
async fn serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // `req -x509` marks the cert as a CA by default, which webpki
        // refuses as a server certificate.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the openssl CLI");
    assert!(status.success());
    let tls = TlsFiles {
        cert_pem: cert.clone(),
        key_pem: key,
    };
    let m = MockUpstream::start(MockOptions {
        tls: Some(tls),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        m.base_url(),
        format!("https://localhost:{}/v1", m.addr().port())
    );

    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(m.addr()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /v1/models HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let body = out.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(body).unwrap(),
        json!({"object": "list", "data": []})
    );
    m.stop().await;
}
