//! The SageMaker runtime drop-in: AWS Signature V4 with a fief key's id and
//! secret, checked with the official boto3 client and with requests signed
//! here (for the refusals' reasons).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

const INPUT: &str = r#"{"inputs": [[0.5, -1.0, 2.0, 0.25]]}"#;

async fn two_tenants_with_a_model(s: &TestServer) -> (String, String) {
    let aa = s.tenant("aa", "pool").await;
    let bb = s.tenant("bb", "pool").await;
    for (i, key) in [&aa, &bb].iter().enumerate() {
        let mlp = fief_serving::onnx_builder::Mlp::seeded(&[4, 8, 2], i as u64);
        assert_eq!(
            s.put_model(key, "m", mlp.to_onnx()).await.status,
            StatusCode::CREATED
        );
    }
    (aa, bb)
}

#[tokio::test]
async fn boto3_sagemaker_runtime_invokes_with_the_keys_aws_pair() {
    let s = spawn().await;
    let (aa, _bb) = two_tenants_with_a_model(&s).await;
    let input: Value = serde_json::from_str(INPUT).unwrap();
    let expected = s.invoke(&aa, "shared", "m", &input).await;
    assert_eq!(expected.status, StatusCode::OK, "{}", expected.text);

    // A key made by the admin API carries the same pair in AWS form.
    let made = s
        .send(
            s.admin_req(Method::POST, "/admin/v1/tenants/aa/api-keys")
                .json(&json!({"name": "sdk"})),
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let made = made.json();
    let token = made["api_key"].as_str().unwrap();
    let (id, secret) = sdk::aws_pair(token);
    assert_eq!(made["aws_access_key_id"], id);
    assert_eq!(made["aws_secret_access_key"], secret);

    if !sdk::python_has("boto3") {
        return;
    }
    sdk::run_python(
        "sagemaker_client.py",
        &[
            ("FIEF_URL", s.data.as_str()),
            ("ACCESS_KEY", id),
            ("SECRET_KEY", secret),
            ("ENDPOINT", "aa"),
            ("MODEL", "m"),
            ("INPUT", INPUT),
            ("EXPECTED", expected.text.as_str()),
            ("OTHER_ENDPOINT", "bb"),
            ("OTHER_MODEL", "frn:fief:model:bb/m"),
        ],
    )
    .await;
}

/// A request to `path` signed with (`id`, `secret`) at `age_secs` ago.
fn signed(
    s: &TestServer,
    path: &str,
    target: &str,
    body: &str,
    id: &str,
    secret: &str,
    age_secs: i64,
) -> reqwest::RequestBuilder {
    let req = s
        .http
        .post(format!("{}{path}", s.data))
        .header("content-type", "application/json")
        .header("x-amzn-sagemaker-target-model", target)
        .body(body.to_owned());
    sdk::sigv4(&s.http, req, id, secret, age_secs)
}

#[tokio::test]
async fn signed_requests_are_refused_with_the_reason() {
    let s = spawn().await;
    let (aa, _bb) = two_tenants_with_a_model(&s).await;
    let (id, secret) = sdk::aws_pair(&aa);
    let path = "/endpoints/shared/invocations";

    let good = s.send(signed(&s, path, "m", INPUT, id, secret, 0)).await;
    assert_eq!(good.status, StatusCode::OK, "{}", good.text);
    // Another tenant's endpoint and model: the same 403 as with the bearer key.
    let other = s
        .send(signed(
            &s,
            "/endpoints/bb/invocations",
            "m",
            INPUT,
            id,
            secret,
            0,
        ))
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "{}", other.text);
    let other = s
        .send(signed(
            &s,
            path,
            "frn:fief:model:bb/m",
            INPUT,
            id,
            secret,
            0,
        ))
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "{}", other.text);

    let wrong_secret = "0".repeat(64);
    for (what, request, reason) in [
        (
            "wrong secret",
            signed(&s, path, "m", INPUT, id, &wrong_secret, 0),
            "signature does not match",
        ),
        (
            "20 minutes old",
            signed(&s, path, "m", INPUT, id, secret, 20 * 60),
            "replayed",
        ),
        (
            "unknown key id",
            signed(&s, path, "m", INPUT, "0123456789abcdef", secret, 0),
            "unknown or revoked access key id",
        ),
        (
            "the bearer token as the id",
            signed(&s, path, "m", INPUT, &aa, secret, 0),
            "unknown or revoked access key id",
        ),
    ] {
        let r = s.send(request).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text);
        assert!(r.text.contains(reason), "{what}: {}", r.text);
    }

    // The body changed after signing.
    let mut altered = signed(&s, path, "m", INPUT, id, secret, 0).build().unwrap();
    *altered.body_mut() = Some(INPUT.replace("0.5", "9.5").into());
    let r = s.http.execute(altered).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A signed request never falls back to a bearer credential it also names.
    let r = s
        .send(signed(&s, path, "m", INPUT, id, &wrong_secret, 0).bearer_auth(&aa))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);

    // A revoked key's signature stops working with its bearer form.
    let keys = s
        .send(s.admin_req(Method::GET, "/admin/v1/tenants/aa/api-keys"))
        .await
        .json();
    assert_eq!(keys["api_keys"][0]["id"], id);
    let revoked = s
        .send(s.admin_req(
            Method::DELETE,
            &format!("/admin/v1/tenants/aa/api-keys/{id}"),
        ))
        .await;
    assert!(revoked.status.is_success(), "{}", revoked.text);
    let r = s.send(signed(&s, path, "m", INPUT, id, secret, 0)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert!(
        r.text.contains("unknown or revoked access key id"),
        "{}",
        r.text
    );
}
