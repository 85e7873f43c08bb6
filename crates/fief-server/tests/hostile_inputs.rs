//! Bad uploads, bad names and oversized bodies: each gets a clear 4xx in the
//! JSON error shape, never a 5xx, and the server keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use reqwest::StatusCode;
use serde_json::json;

use common::*;

#[tokio::test]
async fn bad_model_uploads_are_clear_4xx() {
    let s = spawn().await;
    let a = s.tenant("aa", "pool").await;
    let good = tenant_model(1).to_onnx();
    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    let mut flipped = good.clone();
    for i in (0..flipped.len()).step_by(7) {
        flipped[i] ^= 0x5a;
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", b"this is not an onnx model at all".to_vec()),
        (
            "random bytes",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        ("truncated", truncated),
        ("bit-flipped", flipped),
        ("json", br#"{"inputs": [[1,2,3]]}"#.to_vec()),
    ];
    for (what, bytes) in cases {
        let r = s.put_model(&a, "m", bytes).await;
        assert!(
            r.status.is_client_error(),
            "{what}: {} {}",
            r.status,
            r.text
        );
        assert_eq!(r.code(), "ValidationError", "{what}: {}", r.text);
    }
    // Wrong content type.
    let r = s
        .send(
            s.data_req(&a, reqwest::Method::PUT, "/api/v1/models/m")
                .header("content-type", "text/plain")
                .body(good.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Nothing was stored by the failures.
    let r = s
        .send(s.data_req(&a, reqwest::Method::GET, "/api/v1/models/m"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(s.healthy().await);
}

#[tokio::test]
async fn a_100_mb_body_is_refused_with_413() {
    let s = spawn().await;
    let a = s.tenant("aa", "pool").await;
    let big = vec![0u8; 100 * 1024 * 1024];
    let r = s.put_model(&a, "m", big.clone()).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"),
        "{}",
        r.text
    );
    let r = s
        .send(
            s.data_req(&a, reqwest::Method::POST, "/endpoints/shared/invocations")
                .header(fief_server::TARGET_MODEL_HEADER, "m")
                .body(big),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // A body without a declared length that grows past the limit is cut off too.
    let chunks =
        futures::stream::iter((0..40).map(|_| Ok::<_, std::io::Error>(vec![b'1'; 1024 * 1024])));
    let r = s
        .send(
            s.data_req(&a, reqwest::Method::PUT, "/api/v1/models/m")
                .header("content-type", "application/octet-stream")
                .body(reqwest::Body::wrap_stream(chunks)),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    assert!(s.healthy().await);
}

#[tokio::test]
async fn hostile_model_names_are_4xx_on_every_route() {
    let s = spawn().await;
    let a = s.tenant("aa", "pool").await;
    let _b = s.tenant("bb", "pool").await;
    let onnx = tenant_model(1).to_onnx();
    let long = "a".repeat(300);
    let names = [
        "..",
        "%2e%2e",
        "%2E%2E",
        "..%2Fbb%2Fm",
        "%2e%2e%2fbb%2fm",
        "a%00b",
        "%00",
        &long,
        "a%2Fb%2Fc",
        "bb%2F..%2Fm",
        "%C3%A9",
        "%FF",
    ];
    for name in names {
        for (method, path) in [
            ("GET", format!("/api/v1/models/{name}")),
            ("DELETE", format!("/api/v1/models/{name}")),
            ("PUT", format!("/api/v1/models/{name}")),
        ] {
            // Raw HTTP, so no client normalises the path on the way.
            let body: &[u8] = if method == "PUT" { &onnx } else { b"" };
            let mut req = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            req.extend_from_slice(body);
            let (status, text) = s.raw(s.data_addr, &req).await;
            assert!(
                (400..500).contains(&status),
                "{method} {path}: {status}\n{text}"
            );
            assert!(
                text.contains("\"error\""),
                "{method} {path}: not the JSON error shape\n{text}"
            );
        }
    }
    // Header-borne names: traversal, NUL-free control bytes, 300 characters.
    for target in ["..", "../bb/m", "./m", "m/..", &long, "a\tb", "bb/m/x", ""] {
        let r = s
            .invoke(&a, "shared", target, &json!({"inputs": [[1, 2, 3, 4]]}))
            .await;
        assert!(r.status.is_client_error(), "{target:?}: {}", r.status);
    }
    // A NUL byte cannot travel in a header; raw HTTP shows the server still answers 4xx.
    let mut req = format!("POST /endpoints/shared/invocations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {a}\r\nX-Amzn-SageMaker-Target-Model: a").into_bytes();
    req.extend_from_slice(b"\0b\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
    let (status, _) = s.raw(s.data_addr, &req).await;
    assert!((400..500).contains(&status), "NUL in header: {status}");
    // Nothing got stored under any of those names.
    let r = s
        .send(s.data_req(&a, reqwest::Method::GET, "/api/v1/models"))
        .await;
    assert_eq!(r.json()["models"], json!([]), "{}", r.text);
    assert!(s.healthy().await);
    assert_eq!(
        s.put_model(&a, "fine", onnx).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn bad_invocation_bodies_are_4xx() {
    let s = spawn().await;
    let a = s.tenant("aa", "pool").await;
    assert_eq!(
        s.put_model(&a, "m", tenant_model(1).to_onnx()).await.status,
        StatusCode::CREATED
    );
    for body in [
        json!({}),
        json!({"inputs": "x"}),
        json!({"inputs": [[1, 2, 3]]}),
        json!({"inputs": [[1, 2], [3]]}),
        json!({"inputs": {"nope": [[1, 2, 3, 4]]}}),
        json!({"inputs": [[1, 2, 3, 4]], "extra": 1}),
        json!([1, 2]),
    ] {
        let r = s.invoke(&a, "shared", "m", &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
    }
    let r = s
        .send(
            s.data_req(&a, reqwest::Method::POST, "/endpoints/shared/invocations")
                .header(fief_server::TARGET_MODEL_HEADER, "m")
                .body("{not json"),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = s
        .send(
            s.data_req(&a, reqwest::Method::POST, "/endpoints/shared/invocations")
                .json(&json!({"inputs": [[1, 2, 3, 4]]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "missing target header");
    let r = s
        .send(s.data_req(&a, reqwest::Method::GET, "/endpoints/shared/invocations"))
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed")
    );
    let r = s
        .send(s.data_req(&a, reqwest::Method::GET, "/no/such/route"))
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "NotFound")
    );
    assert!(s.healthy().await);
}
