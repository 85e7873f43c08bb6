//! The hostile-input catalogue: oversized bodies and headers, invalid UTF-8,
//! deeply nested JSON, wrong content types, slowly trickled headers and
//! bodies, duplicated credentials and hostile tokens. Each gets a clear 4xx
//! (or, for a client too slow to finish, a timeout) and the server stays
//! healthy; run in rounds, the process's memory stays bounded.
//!
//! Its own test binary so the memory reading is this catalogue's alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;

/// Resident set size of this process (the server runs in it), in MiB. An
/// unreadable or unparsable value fails the test: a memory bound that reads
/// 0 could never fail.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages in /proc/self/statm");
    let mib = pages * 4096.0 / (1024.0 * 1024.0);
    assert!(mib > 1.0, "resident set of {mib} MiB cannot be right");
    mib
}

/// The status line of a raw exchange, or 0 if the server closed without one.
fn status_of(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// One pass over the catalogue; every answer checked.
async fn round(s: &TestServer, key: &str) {
    let addr = s.data_addr;
    // Every raw exchange closes, so reading it to the end does not wait.
    let host = format!("Host: {addr}\r\nConnection: close\r\n");

    // Oversized header: refused (431) or the connection closed, never served.
    let big = "a".repeat(1024 * 1024);
    let (status, _) = s
        .raw(
            addr,
            format!("GET /api/v1/me HTTP/1.1\r\n{host}X-Big: {big}\r\n\r\n").as_bytes(),
        )
        .await;
    assert!(
        matches!(status, 431 | 400 | 0),
        "oversized header: {status}"
    );
    // Thousands of headers.
    let many: String = (0..5000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, _) = s
        .raw(
            addr,
            format!("GET /api/v1/me HTTP/1.1\r\n{host}{many}\r\n").as_bytes(),
        )
        .await;
    assert!(matches!(status, 431 | 400 | 0), "many headers: {status}");

    // Oversized body, declared: 413 before it is read.
    let (status, _) = s
        .raw(
            addr,
            format!("PUT /api/v1/models/m HTTP/1.1\r\n{host}Authorization: Bearer {key}\r\nContent-Type: application/octet-stream\r\nContent-Length: 999999999999\r\n\r\n").as_bytes(),
        )
        .await;
    assert_eq!(status, 413, "declared oversized body");

    // Invalid UTF-8: in a JSON body, in a header, in the path.
    let r = s
        .send(
            s.data_req(key, Method::POST, "/endpoints/shared/invocations")
                .header(fief_server::TARGET_MODEL_HEADER, "m")
                .header("content-type", "application/json")
                .body(vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}']),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let (status, _) = s
        .raw(
            addr,
            [
                b"GET /api/v1/me HTTP/1.1\r\n".as_slice(),
                host.as_bytes(),
                b"Authorization: Bearer \xff\xfe\xfd\r\n\r\n",
            ]
            .concat()
            .as_slice(),
        )
        .await;
    assert_eq!(status, 401, "invalid UTF-8 credential");
    let r = s
        .send(s.data_req(key, Method::GET, "/api/v1/models/%FF%FE"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = s
        .send(
            s.data_req(key, Method::PUT, "/api/v1/policies/p")
                .header("content-type", "text/plain")
                .body(vec![0xffu8, 0xfe, 0x00]),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    // Deeply nested JSON, in every JSON body: a 400, no stack overflow.
    let deep = format!("{}1{}", "[".repeat(200_000), "]".repeat(200_000));
    for (method, path) in [
        (Method::POST, "/endpoints/shared/invocations"),
        (Method::POST, "/api/v1/sts/assume-role"),
        (Method::POST, "/api/v1/policies/explain"),
        (Method::PUT, "/api/v1/roles/r"),
        (Method::PUT, "/api/v1/models/m/tags"),
        (Method::POST, "/v1/chat/completions"),
        (Method::POST, "/v1/completions"),
        (Method::POST, "/v1/embeddings"),
        (Method::POST, "/model/m/converse"),
        (Method::POST, "/model/m/converse-stream"),
        (Method::PUT, "/api/v1/quotas/role:r"),
        (Method::POST, "/api/v1/knowledge-bases/kb/query"),
        (Method::POST, "/api/v1/knowledge-bases/kb/answer"),
        (Method::POST, "/knowledgebases/kb/retrieve"),
        (Method::POST, "/retrieveAndGenerate"),
    ] {
        let r = s
            .send(
                s.data_req(key, method, path)
                    .header(fief_server::TARGET_MODEL_HEADER, "m")
                    .header("content-type", "application/json")
                    .body(format!("{{\"inputs\": {deep}}}")),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text);
    }
    let r = s
        .send(
            s.admin_req(Method::POST, "/admin/v1/tenants")
                .header("content-type", "application/json")
                .body(deep.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Deep Cedar nesting in a policy: refused with a message, not a crash.
    let nested = format!(
        "permit (principal, action, resource) when {{ {}true{} }};",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    let r = s
        .send(
            s.data_req(key, Method::PUT, "/api/v1/policies/deep")
                .header("content-type", "text/plain")
                .body(nested),
        )
        .await;
    assert!(r.status.is_client_error(), "{}: {}", r.status, r.text);

    // Wrong content types.
    for (method, path, ct) in [
        (Method::POST, "/endpoints/shared/invocations", "text/plain"),
        (Method::PUT, "/api/v1/models/m", "application/json"),
        (Method::PUT, "/api/v1/policies/p", "image/png"),
        (Method::POST, "/api/v1/sts/assume-role", "application/xml"),
        (Method::POST, "/v1/chat/completions", "text/plain"),
        (
            Method::POST,
            "/model/m/converse",
            "application/x-www-form-urlencoded",
        ),
    ] {
        let r = s
            .send(
                s.data_req(key, method, path)
                    .header(fief_server::TARGET_MODEL_HEADER, "m")
                    .header("content-type", ct)
                    .body("{}"),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{path} {ct}: {}",
            r.text
        );
    }

    // Hostile foundation-model requests: refused as 4xx, never served, never 5xx.
    let huge = "m".repeat(100_000);
    for body in [
        json!({"model": huge, "messages": [{"role": "user", "content": "x"}]}),
        json!({"model": "m\u{0}x", "messages": []}),
        json!({"model": "%00%ff", "messages": []}),
        json!({"model": 7, "messages": []}),
        json!({"model": ["m"], "messages": []}),
        json!({"messages": [{"role": "user", "content": "x"}]}),
        json!({"model": "m", "messages": [], "max_tokens": -1, "stream": "yes"}),
    ] {
        let r = s
            .send(
                s.data_req(key, Method::POST, "/v1/chat/completions")
                    .json(&body),
            )
            .await;
        assert!(
            matches!(r.status.as_u16(), 400 | 403),
            "{body:.60}: {} {}",
            r.status,
            r.text
        );
    }
    let r = s
        .send(
            s.data_req(
                key,
                Method::POST,
                &format!("/model/{}/converse", "%FF".repeat(3)),
            )
            .json(&json!({"messages": [{"role": "user", "content": [{"text": "x"}]}]})),
        )
        .await;
    assert!(matches!(r.status.as_u16(), 400 | 403), "{}", r.text);

    // Hostile usage queries: 400 with the fix, never 5xx, never another's.
    let long_from = format!("/api/v1/usage?from={}", "9".repeat(10_000));
    for path in [
        "/api/v1/usage?from=2026-02-30",
        "/api/v1/usage?from=-1",
        "/api/v1/usage?to=2026-12-01T24:00:00Z",
        "/api/v1/usage?from=9999-12-31&to=0001-01-01",
        "/api/v1/usage?group_by=tenant",
        "/api/v1/usage?group_by=model%00",
        "/api/v1/usage?tenant=other",
        "/api/v1/usage?format=csv%0d%0aX-Injected:1",
        "/api/v1/usage?unknown=1",
        long_from.as_str(),
    ] {
        let r = s.send(s.data_req(key, Method::GET, path)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path:.60}: {}", r.text);
    }

    // Hostile log queries, settings and sinks: 400 with the reason, never
    // 5xx, nothing stored.
    let long_model = format!("/api/v1/logs?model={}", "m".repeat(10_000));
    for path in [
        "/api/v1/logs?from=2026-02-30",
        "/api/v1/logs?after=-5&limit=100000",
        "/api/v1/logs?limit=-1",
        "/api/v1/logs?tenant=other",
        "/api/v1/logs?principal=%27%20OR%20%271%27%3D%271",
        "/api/v1/logs?principal=%00%27%3B--",
        "/api/v1/logs?model=%1b%5b2J",
        long_model.as_str(),
    ] {
        let r = s.send(s.data_req(key, Method::GET, path)).await;
        assert!(
            matches!(r.status.as_u16(), 200 | 400),
            "{path:.60}: {} {}",
            r.status,
            r.text
        );
        if r.status == StatusCode::OK {
            assert_eq!(r.json()["records"], json!([]), "{path:.60}: {}", r.text);
        }
    }
    let r = s
        .send(s.data_req(key, Method::DELETE, "/api/v1/logs?before=%FF"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let catastrophic = "(a+)+".repeat(1000);
    for body in [
        json!({"redact": [catastrophic]}),
        json!({"redact": vec!["x"; 100]}),
        json!({"retention_days": 0}),
        json!({"retention_days": 1e300}),
        json!({"content": "yes"}),
        json!({"unknown": true}),
    ] {
        let r = s
            .send(
                s.data_req(key, Method::PUT, "/api/v1/log-settings")
                    .json(&body),
            )
            .await;
        assert!(
            matches!(r.status.as_u16(), 400 | 422),
            "{body:.60}: {} {}",
            r.status,
            r.text
        );
    }
    for body in [
        json!({"type": "webhook", "url": "http://169.254.169.254/latest/meta-data", "secret": "0123456789abcdef"}),
        json!({"type": "webhook", "url": "https://[::ffff:127.0.0.1]/x", "secret": "0123456789abcdef"}),
        json!({"type": "webhook", "url": "file:///etc/passwd", "secret": "0123456789abcdef"}),
        json!({"type": "s3", "bucket": "b/../../x", "access_key_id": "a", "secret_access_key": "b"}),
        json!({"type": "s3", "bucket": "good-bucket", "prefix": "../up", "access_key_id": "a", "secret_access_key": "b"}),
        json!({"type": "s3", "bucket": "good-bucket", "endpoint": "http://10.0.0.1:9000", "access_key_id": "a", "secret_access_key": "b"}),
    ] {
        let r = s
            .send(s.data_req(key, Method::PUT, "/api/v1/log-sink").json(&body))
            .await;
        assert!(
            matches!(r.status.as_u16(), 400 | 422),
            "{body:.60}: {} {}",
            r.status,
            r.text
        );
    }
    let r = s
        .send(s.data_req(key, Method::GET, "/api/v1/log-sink"))
        .await;
    assert_eq!(r.json()["sink"], serde_json::Value::Null, "{}", r.text);

    // Hostile quota settings: refused as 400, never stored, never 5xx.
    let long = format!("role:{}", "r".repeat(10_000));
    for (path, body) in [
        ("/api/v1/quotas/role:r", json!({"requests_per_minute": -1})),
        ("/api/v1/quotas/role:r", json!({"requests_per_minute": 0})),
        (
            "/api/v1/quotas/role:r",
            json!({"requests_per_minute": 1e300}),
        ),
        (
            "/api/v1/quotas/role:r",
            json!({"requests_per_minute": u64::MAX}),
        ),
        (
            "/api/v1/quotas/role:r",
            json!({"requests_per_minute": "10"}),
        ),
        ("/api/v1/quotas/role:r", json!({"weight": 1000})),
        (
            "/api/v1/quotas/role:r",
            json!({"tenant": "other", "requests_per_minute": 1}),
        ),
        ("/api/v1/quotas/role:r", json!({})),
        ("/api/v1/quotas/role%00x", json!({"requests_per_minute": 1})),
        ("/api/v1/quotas/tenant", json!({"requests_per_minute": 1})),
        (
            "/api/v1/quotas/..%2Fadmin",
            json!({"requests_per_minute": 1}),
        ),
        (long.as_str(), json!({"requests_per_minute": 1})),
    ] {
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/api/v1/quotas/{path}")
        };
        let r = s
            .send(s.data_req(key, Method::PUT, &path).json(&body))
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{path:.60} {body}: {}",
            r.text
        );
    }
    // Hostile knowledge-base questions: filters too deep, too wide, of
    // unknown operators or naming a tenant; answers without a model; Bedrock
    // shapes fief does not implement. Each a 400 before any search.
    // Built as text: a Value that deep would overflow this test's own stack.
    let deep_filter = format!(
        "{{\"query\": \"q\", \"filter\": {}{{\"a\": 1}}{}}}",
        "{\"and\": [".repeat(2_000),
        "]}".repeat(2_000)
    );
    let r = s
        .send(
            s.data_req(key, Method::POST, "/api/v1/knowledge-bases/kb/query")
                .header("content-type", "application/json")
                .body(deep_filter),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "deep filter: {}", r.text);
    let mut deepish = json!({"a": 1});
    for _ in 0..20 {
        deepish = json!({ "and": [deepish] });
    }
    let wide: serde_json::Map<String, serde_json::Value> =
        (0..5_000).map(|i| (format!("k{i}"), json!(i))).collect();
    let huge = "q".repeat(100_000);
    for (path, body) in [
        (
            "/api/v1/knowledge-bases/kb/query",
            json!({"query": "q", "filter": deepish}),
        ),
        (
            "/api/v1/knowledge-bases/kb/query",
            json!({"query": "q", "filter": wide}),
        ),
        (
            "/api/v1/knowledge-bases/kb/query",
            json!({"query": "q", "filter": {"a": {"regex": ".*"}}}),
        ),
        (
            "/api/v1/knowledge-bases/kb/query",
            json!({"query": "q", "filter": {"or": [{"a": 1}, {"tenant": "bb"}]}}),
        ),
        (
            "/api/v1/knowledge-bases/kb/query",
            json!({"query": "q", "filter": {"a": {"in": (0..1000).collect::<Vec<_>>()}}}),
        ),
        ("/api/v1/knowledge-bases/kb/query", json!({"query": huge})),
        (
            "/api/v1/knowledge-bases/kb/answer",
            json!({"query": "q", "model": ""}),
        ),
        (
            "/api/v1/knowledge-bases/kb/answer",
            json!({"query": "q", "model": "m", "tenant": "bb"}),
        ),
        (
            "/api/v1/knowledge-bases/kb/answer",
            json!({"query": "q", "model": "m", "top_k": 100_000}),
        ),
        (
            "/knowledgebases/kb/retrieve",
            json!({"retrievalQuery": {"text": ""}}),
        ),
        (
            "/knowledgebases/kb/retrieve",
            json!({"retrievalQuery": {"text": "q"}, "nextToken": "x"}),
        ),
        (
            "/knowledgebases/kb/retrieve",
            json!({"retrievalQuery": {"text": "q"}, "retrievalConfiguration": {"vectorSearchConfiguration": {"filter": {"equals": {"key": "tenant", "value": "bb"}}}}}),
        ),
        (
            "/retrieveAndGenerate",
            json!({"input": {"text": "q"}, "retrieveAndGenerateConfiguration": {"type": "EXTERNAL_SOURCES"}}),
        ),
        (
            "/retrieveAndGenerate",
            json!({"input": {"text": "q"}, "sessionId": "another-session"}),
        ),
    ] {
        let r = s
            .send(s.data_req(key, Method::POST, path).json(&body))
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{path} {body:.80}: {}",
            r.text
        );
    }

    for quotas in [
        json!({"requests_per_minute": -5}),
        json!({"weight": 0}),
        json!({"weight": "heavy"}),
        json!({"monthly_token_budget": 1e30}),
        json!([1, 2]),
        json!("lots"),
    ] {
        let r = s
            .send(
                s.admin_req(Method::PATCH, "/admin/v1/tenants/aa")
                    .json(&json!({ "quotas": quotas })),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{quotas}: {}", r.text);
    }
    let r = s.send(s.data_req(key, Method::GET, "/api/v1/quotas")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json()["subjects"],
        json!([]),
        "nothing hostile was stored"
    );

    // Duplicated credentials: refused, whichever comes first.
    let (status, text) = s
        .raw(
            addr,
            format!("GET /api/v1/me HTTP/1.1\r\n{host}Authorization: Bearer {key}\r\nAuthorization: Bearer {key}\r\n\r\n").as_bytes(),
        )
        .await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("more than one Authorization header"));

    // Hostile bearer tokens: all 401, none 5xx.
    for token in [
        "a.b.c".to_owned(),
        "..".to_owned(),
        format!("{}.{}.", "eyJ".repeat(5000), "e30"),
        "eyJhbGciOiJub25lIn0.e30.".to_owned(),
        "eyJhbGciOiJFZERTQSIsImtpZCI6InN0cy0wMDAwMDAwMDAwMDAwMDAwIn0.e30.AAAA".to_owned(),
        format!("fief_{}_{}", "0".repeat(16), "0".repeat(64)),
    ] {
        let r = s.send(s.data_req(&token, Method::GET, "/api/v1/me")).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{token:.40}: {}",
            r.text
        );
    }

    // The console serves its own built files only: traversal, the other
    // console's page and source paths are 404, on both listeners.
    for (base, addr) in [(&s.data, s.data_addr), (&s.admin, s.admin_addr)] {
        for path in [
            "/console/..%2F..%2FCargo.toml",
            "/console/assets/..%2F..%2Fsrc%2Flib.rs",
            "/console/operator.html",
            "/console/tenant.html",
            "/console/web/src/common.ts",
            "/console/assets/%00",
        ] {
            let r = s.send(s.http.get(format!("{base}{path}"))).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{base}{path}: {}", r.text);
        }
        let (status, text) = s
            .raw(
                addr,
                format!("GET /console/assets/../../Cargo.toml HTTP/1.1\r\n{host}\r\n").as_bytes(),
            )
            .await;
        assert!(matches!(status, 400 | 404), "raw traversal: {text:.200}");
        assert!(!text.contains("[package]"), "raw traversal: {text:.200}");
    }

    // Hostile AWS signatures: all 401 with the reason, none 5xx, and never
    // a fall-back to another credential.
    let (id, _) = sdk::aws_pair(key);
    let scope = format!("{id}/20260101/us-east-1/sagemaker/aws4_request");
    let sig = "0".repeat(64);
    for (auth, date) in [
        ("AWS4-HMAC-SHA256 ".to_owned(), "20260101T000000Z"),
        (format!("AWS4-HMAC-SHA256 Credential={scope}"), "20260101T000000Z"),
        (format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;x-amz-date, Signature={sig}"), "20260101T000000Z"),
        (format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;x-amz-date, Signature={sig}"), "not-a-date"),
        (format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature={sig}"), "20260101T000000Z"),
        (format!("AWS4-HMAC-SHA256 Credential={}/20260101/r/s/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}", "A".repeat(5000)), "20260101T000000Z"),
        (format!("AWS4-HMAC-SHA256 Credential=../../{scope}, SignedHeaders=host;x-amz-date, Signature={sig}"), "20260101T000000Z"),
        (format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders={}, Signature={sig}", "x;".repeat(3000)), "20260101T000000Z"),
    ] {
        let r = s
            .send(
                s.http
                    .post(format!("{}/endpoints/shared/invocations", s.data))
                    .header("authorization", &auth)
                    .header("x-amz-date", date)
                    .header("x-amzn-sagemaker-target-model", "m")
                    .header("content-type", "application/json")
                    .body("{}"),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:.80}: {}", r.text);
        assert!(r.text.contains("AWS"), "{auth:.80}: {}", r.text);
    }
    assert!(s.healthy().await);
}

#[tokio::test]
async fn the_catalogue_gets_clear_4xx_and_memory_stays_bounded() {
    let s = spawn().await;
    let key = s.tenant("aa", "pool").await;
    let r = s.put_model(&key, "m", tenant_model(1).to_onnx()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Warm up allocator pools, then measure growth over many rounds.
    for _ in 0..3 {
        round(&s, &key).await;
    }
    let before = rss_mib();
    for _ in 0..15 {
        round(&s, &key).await;
    }
    let after = rss_mib();
    println!("RSS {before:.1} MiB -> {after:.1} MiB over 15 rounds");
    assert!(
        after - before < 64.0,
        "memory grew {before:.1} -> {after:.1} MiB"
    );
    // And the server still does real work.
    let r = s
        .invoke(
            &key,
            "shared",
            "m",
            &json!({"inputs": [[0.1, 0.2, 0.3, 0.4]]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

/// A client that trickles its headers is disconnected after
/// `header_read_timeout_secs`; one that trickles its body gets a 503 after
/// `request_timeout_secs`. Either way the server keeps serving others.
#[tokio::test]
async fn slow_headers_and_bodies_are_cut_off() {
    let s = spawn_with(|c| {
        c.header_read_timeout_secs = 1;
        c.request_timeout_secs = 2;
    })
    .await;
    let key = s.tenant("aa", "pool").await;

    let started = Instant::now();
    let mut conn = tokio::net::TcpStream::connect(s.data_addr).await.unwrap();
    conn.write_all(b"GET /api/v1/me HTTP/1.1\r\n")
        .await
        .unwrap();
    let mut closed = false;
    for i in 0..40 {
        // One header line every 250 ms: never finishing.
        if conn
            .write_all(format!("X-Slow-{i}: x\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(250), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {
                closed = true; // an error status (408) then close
                break;
            }
            Err(_) => {}
        }
    }
    assert!(closed, "a slow-header client was still connected");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(s.healthy().await);

    let started = Instant::now();
    let mut conn = tokio::net::TcpStream::connect(s.data_addr).await.unwrap();
    conn.write_all(
        format!("PUT /api/v1/models/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    for _ in 0..40 {
        if conn.write_all(b"x").await.is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(250), conn.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Ok(_) => break,
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(status_of(&text), 503, "{text}");
    assert!(text.contains("longer than 2s"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(s.healthy().await);
}

/// The catalogue's raw exchanges cannot pass on a hang: a peer that takes
/// the request and never answers fails the check.
#[tokio::test]
#[should_panic(expected = "neither answered nor closed")]
async fn a_server_that_hangs_fails_the_raw_check() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        drop(socket);
    });
    raw_within(
        addr,
        b"GET / HTTP/1.1\r\n\r\n",
        std::time::Duration::from_millis(300),
    )
    .await;
}
