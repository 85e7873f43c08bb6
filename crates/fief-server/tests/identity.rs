//! Identity and tenant-written policy over the real HTTP API: OIDC JWTs,
//! tenant policies with tags, roles, cross-tenant role assumption with an
//! external id, scoped keys and `policies/explain`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use common::idp::{claims, now, oidc_config, spawn_with_idp, Idp};
use common::{spawn_with, tenant_model, Resp, TestServer};

async fn me(s: &TestServer, token: &str) -> Resp {
    s.send(s.data_req(token, Method::GET, "/api/v1/me")).await
}

fn hs256(token_header: &Value, claims: &Value, secret: &[u8]) -> String {
    let h = URL_SAFE_NO_PAD.encode(token_header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let sig = ring::hmac::sign(&key, format!("{h}.{c}").as_bytes());
    format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

#[tokio::test]
async fn jwt_bearer_tokens_are_checked_one_by_one() {
    let idp = Idp::new("idp-1");
    let s = spawn_with_idp(&idp).await;
    s.tenant("acme", "pool").await;

    let r = me(&s, &idp.sign(&claims("acme"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["tenant"], "acme");
    assert_eq!(r.json()["principal"], "user:acme/alice");

    let impostor = Idp::new("idp-1");
    let mut expired = claims("acme");
    expired["exp"] = json!(now() - 120);
    let mut early = claims("acme");
    early["nbf"] = json!(now() + 600);
    let mut wrong_iss = claims("acme");
    wrong_iss["iss"] = json!("https://evil.test");
    let mut wrong_aud = claims("acme");
    wrong_aud["aud"] = json!("someone-else");
    let mut no_tenant = claims("acme");
    no_tenant.as_object_mut().unwrap().remove("fief_tenant");
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims("acme").to_string())
    );
    // HS256 "signed" with the provider's public key: the classic confusion.
    let confused = hs256(
        &json!({"alg": "HS256", "typ": "JWT", "kid": "idp-1"}),
        &claims("acme"),
        &idp.public,
    );
    let cases = [
        (
            "wrong signature",
            impostor.sign(&claims("acme")),
            "signature is invalid",
        ),
        ("alg none", unsigned, "alg \"none\""),
        (
            "HS256 with the public key",
            confused,
            "algorithm HS256 is not allowed",
        ),
        ("expired", idp.sign(&expired), "expired"),
        ("not yet valid", idp.sign(&early), "not valid yet"),
        ("wrong iss", idp.sign(&wrong_iss), "issuer"),
        ("wrong aud", idp.sign(&wrong_aud), "audience"),
        (
            "no tenant claim",
            idp.sign(&no_tenant),
            "no `fief_tenant` claim",
        ),
        (
            "unknown tenant",
            idp.sign(&claims("nosuch")),
            "names no tenant",
        ),
        (
            "malformed tenant",
            idp.sign(&claims("../acme")),
            "names no tenant",
        ),
    ];
    for (what, token, message) in cases {
        let r = me(&s, &token).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text);
        assert_eq!(r.code(), "Unauthenticated", "{what}");
        let text = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(text.contains(message), "{what}: {text}");
    }
    // An offboarded tenant's tokens stop working.
    let r = s
        .send(s.admin_req(Method::DELETE, "/admin/v1/tenants/acme"))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = me(&s, &idp.sign(&claims("acme"))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

/// Keys from a URL; an unknown kid triggers a refetch, so a rotation at
/// the provider is picked up without a restart.
#[tokio::test]
async fn jwks_url_is_refreshed_on_an_unknown_kid() {
    let first = Idp::new("idp-1");
    let second = Idp::new("idp-2");
    let served = Arc::new(Mutex::new(json!({"keys": [first.jwk()]}).to_string()));
    let body = served.clone();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let body = body.clone();
            async move { body.lock().unwrap().clone() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let s = spawn_with(|c| c.oidc = Some(oidc_config(None, Some(url)))).await;
    s.tenant("acme", "pool").await;
    assert_eq!(
        me(&s, &first.sign(&claims("acme"))).await.status,
        StatusCode::OK
    );
    let r = me(&s, &second.sign(&claims("acme"))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text.contains("unknown key"), "{}", r.text);
    *served.lock().unwrap() = json!({"keys": [first.jwk(), second.jwk()]}).to_string();
    assert_eq!(
        me(&s, &second.sign(&claims("acme"))).await.status,
        StatusCode::OK
    );
}

// ---- helpers for policies, roles and sessions -------------------------------

async fn put_policy(s: &TestServer, key: &str, id: &str, text: &str) -> Resp {
    s.send(
        s.data_req(key, Method::PUT, &format!("/api/v1/policies/{id}"))
            .header("content-type", "text/plain")
            .body(text.to_owned()),
    )
    .await
}

async fn put_role(s: &TestServer, key: &str, name: &str, role: Value) -> Resp {
    s.send(
        s.data_req(key, Method::PUT, &format!("/api/v1/roles/{name}"))
            .json(&role),
    )
    .await
}

async fn assume(s: &TestServer, key: &str, body: Value) -> Resp {
    s.send(
        s.data_req(key, Method::POST, "/api/v1/sts/assume-role")
            .json(&body),
    )
    .await
}

async fn session(s: &TestServer, key: &str, body: Value) -> String {
    let r = assume(s, key, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json()["token"].as_str().unwrap().to_owned()
}

async fn tag(s: &TestServer, key: &str, model: &str, tags: Value) {
    let r = s
        .send(
            s.data_req(key, Method::PUT, &format!("/api/v1/models/{model}/tags"))
                .json(&tags),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

async fn explain(s: &TestServer, key: &str, body: Value) -> Value {
    let r = s
        .send(
            s.data_req(key, Method::POST, "/api/v1/policies/explain")
                .json(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json()
}

/// Whether `v` holds the field `key` with the string `value` anywhere.
fn json_has(v: &Value, key: &str, value: &str) -> bool {
    match v {
        Value::Object(o) => o
            .iter()
            .any(|(k, x)| (k == key && x == value) || json_has(x, key, value)),
        Value::Array(a) => a.iter().any(|x| json_has(x, key, value)),
        _ => false,
    }
}

/// A new key of `tenant` with `tags`, as the operator makes one.
async fn tagged_key(s: &TestServer, tenant: &str, tags: Value) -> String {
    let r = s
        .send(
            s.admin_req(
                Method::POST,
                &format!("/admin/v1/tenants/{tenant}/api-keys"),
            )
            .json(&json!({"name": "tagged", "tags": tags})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json()["tags"], tags);
    r.json()["api_key"].as_str().unwrap().to_owned()
}

/// The id part of a key (`fief_<id>_<secret>`).
fn key_id(key: &str) -> String {
    key.split('_').nth(1).unwrap().to_owned()
}

fn input() -> Value {
    json!({"inputs": {"input": [[0.1, 0.2, 0.3, 0.4]]}})
}

const DEPARTMENT_POLICY: &str = r#"// Sessions may use models of their own department only.
permit (principal is Fief::Session, action in Fief::Action::"TenantResource", resource is Fief::Model)
when {
  principal.hasTag("Department") && resource.hasTag("Department") &&
  principal.getTag("Department") == resource.getTag("Department")
};"#;

#[tokio::test]
async fn department_tags_decide_inside_a_tenant() {
    let s = spawn_with(|_| {}).await;
    let key = s.tenant("acme", "pool").await;
    for (name, seed, dept) in [("hr-report", 1, "HR"), ("sales-forecast", 2, "Sales")] {
        let r = s.put_model(&key, name, tenant_model(seed).to_onnx()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        tag(&s, &key, name, json!({"Department": dept})).await;
    }
    let r = put_policy(&s, &key, "department", DEPARTMENT_POLICY).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Without a TagSession permit, the trust policy accepts no tags at all:
    // department.cedar cannot be satisfied by a tag the caller chose.
    let assume_only = r#"permit (principal in Fief::Tenant::"acme", action == Fief::Action::"AssumeRole", resource);"#;
    let r = put_role(&s, &key, "analyst", json!({"trust_policy": assume_only})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    for dept in ["Sales", "HR"] {
        let r = assume(
            &s,
            &key,
            json!({"role": "analyst", "session_name": "self-chosen", "tags": {"Department": dept}}),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    }
    let untagged = session(
        &s,
        &key,
        json!({"role": "analyst", "session_name": "plain"}),
    )
    .await;
    let r = s
        .invoke(&untagged, "shared", "sales-forecast", &input())
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);

    // The example trust policy lets a caller carry its own verified tag
    // (here: the tag the operator gave its key), and nothing else.
    let trust = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/policies/trust-same-tenant.cedar"
    ))
    .unwrap();
    let r = put_role(&s, &key, "analyst", json!({"trust_policy": trust})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let sales_key = tagged_key(&s, "acme", json!({"Department": "Sales"})).await;
    let hr_key = tagged_key(&s, "acme", json!({"Department": "HR"})).await;
    for (caller, asked) in [
        (&sales_key, json!({"Department": "HR"})),
        (&hr_key, json!({"Department": "Sales"})),
        (
            &sales_key,
            json!({"Department": "Sales", "Clearance": "high"}),
        ),
        (&key, json!({"Department": "Sales"})),
    ] {
        let r = assume(
            &s,
            caller,
            json!({"role": "analyst", "session_name": "claim", "tags": asked}),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{asked}: {}", r.text);
    }
    let sales = session(
        &s,
        &sales_key,
        json!({"role": "analyst", "session_name": "sales-1", "tags": {"Department": "Sales"}}),
    )
    .await;
    let hr = session(
        &s,
        &hr_key,
        json!({"role": "analyst", "session_name": "hr-1", "tags": {"Department": "HR"}}),
    )
    .await;
    // Explain shows each tag's decision.
    let e = explain(
        &s,
        &key,
        json!({"principal": {"api_key": key_id(&sales_key)}, "action": "AssumeRole",
               "resource": "frn:fief:role:acme/analyst",
               "session_tags": {"Department": "HR"}}),
    )
    .await;
    assert_eq!(e["decision"], "Deny", "{e}");
    assert_eq!(e["session_tags"][0]["decision"], "Deny", "{e}");
    let e = explain(
        &s,
        &key,
        json!({"principal": {"api_key": key_id(&sales_key)}, "action": "AssumeRole",
               "resource": "frn:fief:role:acme/analyst",
               "session_tags": {"Department": "Sales"}}),
    )
    .await;
    assert_eq!(e["decision"], "Allow", "{e}");
    assert_eq!(e["session_tags"][0]["decision"], "Allow", "{e}");
    assert_eq!(
        e["session_tags"][0]["policies"],
        json!(["role/analyst/trust#2"])
    );
    for (token, own, other) in [
        (&sales, "sales-forecast", "hr-report"),
        (&hr, "hr-report", "sales-forecast"),
    ] {
        let r = s.invoke(token, "shared", own, &input()).await;
        assert_eq!(r.status, StatusCode::OK, "{own}: {}", r.text);
        let r = s.invoke(token, "shared", other, &input()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{other}: {}", r.text);
        let r = s
            .send(s.data_req(token, Method::GET, &format!("/api/v1/models/{other}")))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        // Nothing grants sessions policy management or listing.
        let r = put_policy(
            &s,
            token,
            "escalate",
            "permit(principal, action, resource);",
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    // A session cannot assume a role again (its token cannot be extended).
    let r = assume(
        &s,
        &sales,
        json!({"role": "analyst", "session_name": "again"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Durations beyond the maximum are refused.
    let r = assume(
        &s,
        &key,
        json!({"role": "analyst", "session_name": "long", "duration_seconds": 999_999}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Explain: an allow names the tenant's policy; denies name theirs.
    let forbid = r#"forbid (principal, action == Fief::Action::"DeleteModel", resource is Fief::Model)
when { resource.hasTag("Department") && resource.getTag("Department") == "HR" };"#;
    assert_eq!(
        put_policy(&s, &key, "protect-hr", forbid).await.status,
        StatusCode::CREATED
    );
    let e = explain(
        &s,
        &key,
        json!({"principal": {"role": "analyst", "tags": {"Department": "Sales"}},
               "action": "InvokeModel", "resource": "frn:fief:model:acme/sales-forecast"}),
    )
    .await;
    assert_eq!(e["decision"], "Allow");
    assert_eq!(e["policies"], json!(["policy/department"]));
    let e = explain(
        &s,
        &key,
        json!({"action": "DeleteModel", "resource": "hr-report"}),
    )
    .await;
    assert_eq!(e["decision"], "Deny");
    assert_eq!(e["policies"], json!(["policy/protect-hr"]));
    let e = explain(
        &s,
        &key,
        json!({"action": "GetModel", "resource": "frn:fief:model:other/m"}),
    )
    .await;
    assert_eq!(e["decision"], "Deny");
    assert_eq!(e["policies"], json!(["platform-guardrail"]));
    let e = explain(
        &s,
        &key,
        json!({"principal": {"role": "analyst", "tags": {"Department": "Sales"}},
               "action": "InvokeModel", "resource": "hr-report"}),
    )
    .await;
    assert_eq!(e["decision"], "Deny");
    assert_eq!(e["policies"], json!([]));
    // And the real delete is refused by the tenant's forbid.
    let r = s
        .send(s.data_req(&key, Method::DELETE, "/api/v1/models/hr-report"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Deleting the role ends its sessions' permissions at once.
    let r = s
        .send(s.data_req(&key, Method::DELETE, "/api/v1/roles/analyst"))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = s.invoke(&sales, "shared", "sales-forecast", &input()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn policies_are_validated_with_line_and_column() {
    let s = spawn_with(|_| {}).await;
    let key = s.tenant("acme", "pool").await;
    let r = put_policy(
        &s,
        &key,
        "bad",
        "permit (principal, action, resource)\n  when { resource.department == \"HR\" };",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.code(), "InvalidPolicy");
    let details = &r.json()["error"]["details"];
    assert_eq!(details[0]["line"], 2, "{}", r.text);
    assert!(details[0]["column"].as_u64().unwrap() > 1);
    let r = put_policy(&s, &key, "bad", "permit (principal, action, resource").await;
    assert_eq!(r.code(), "InvalidPolicy", "{}", r.text);
    // Nothing was stored.
    let r = s
        .send(s.data_req(&key, Method::GET, "/api/v1/policies/bad"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // A role's errors say which part.
    let r = put_role(
        &s,
        &key,
        "r",
        json!({"trust_policy": "permit(principal, action, resource);", "policies": ["permit(principal, action, nope);"]}),
    )
    .await;
    assert_eq!(r.code(), "InvalidPolicy", "{}", r.text);
    assert!(r.text.contains("policies[0]"), "{}", r.text);
    // JSON bodies work too, and list/get return what was stored.
    let r = s
        .send(
            s.data_req(&key, Method::PUT, "/api/v1/policies/ok")
                .json(&json!({"policy": "permit(principal, action, resource);"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = s
        .send(s.data_req(&key, Method::GET, "/api/v1/policies"))
        .await;
    assert_eq!(r.json()["policies"][0]["id"], "ok");
}

#[tokio::test]
async fn cross_tenant_role_assumption_needs_trust_and_external_id() {
    let s = spawn_with(|_| {}).await;
    let acme = s.tenant("acme", "bridge").await;
    let globex = s.tenant("globex", "pool").await;
    let initech = s.tenant("initech", "pool").await;
    let r = s
        .put_model(&acme, "ledger", tenant_model(7).to_onnx())
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = s.put_model(&globex, "own", tenant_model(8).to_onnx()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = put_role(
        &s,
        &acme,
        "auditor",
        json!({
            "trust_policy": r#"permit (principal in Fief::Tenant::"globex", action == Fief::Action::"AssumeRole", resource);"#,
            "policies": [r#"permit (principal, action == Fief::Action::"ListModels", resource);"#],
            "external_id": "ext-globex-7c1f",
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    let ask = |ext: Option<&str>| {
        let mut body = json!({"role": "frn:fief:role:acme/auditor", "session_name": "audit-2026"});
        if let Some(e) = ext {
            body["external_id"] = json!(e);
        }
        body
    };
    for ext in [None, Some("wrong"), Some("ext-globex-7c1")] {
        let r = assume(&s, &globex, ask(ext)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{ext:?}: {}", r.text);
        assert_eq!(r.code(), "AccessDenied");
    }
    // The right external id from a tenant the trust policy does not name.
    let r = assume(&s, &initech, ask(Some("ext-globex-7c1f"))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // An unknown role answers the same.
    let r = assume(
        &s,
        &globex,
        json!({"role": "acme/nosuch", "session_name": "x1", "external_id": "ext-globex-7c1f"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let r = assume(&s, &globex, ask(Some("ext-globex-7c1f"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert!(r.json()["expires_at"].is_string());

    // The session acts in acme, with the role's permissions only.
    let r = me(&s, &token).await;
    assert_eq!(r.json()["tenant"], "acme");
    let r = s
        .send(s.data_req(&token, Method::GET, "/api/v1/models"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["models"][0]["name"], "ledger");
    let r = s.invoke(&token, "acme", "ledger", &input()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Nor can it reach its source tenant's resources.
    let r = s
        .send(s.data_req(&token, Method::GET, "/api/v1/models/globex%2Fown"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Audit entries of the session name who assumed it.
    let r = s
        .send(s.admin_req(Method::GET, "/admin/v1/audit?tenant=acme&limit=1000"))
        .await;
    let entries = r.json()["entries"].as_array().unwrap().clone();
    let session_entries: Vec<&Value> = entries
        .iter()
        .filter(|e| e["principal"] == "session:acme/auditor/audit-2026")
        .collect();
    assert!(session_entries.len() >= 3, "{entries:?}");
    for e in session_entries {
        let source = e["source"].as_str().unwrap();
        assert!(
            source.starts_with("api-key:") && source.ends_with("(globex)"),
            "{source}"
        );
    }
    // The issuance is in acme's trail; the decision, with the trust policy
    // that allowed it, in globex's.
    assert!(entries.iter().any(
        |e| e["action"] == "AssumeRole" && e["principal"] == "session:acme/auditor/audit-2026"
    ));
    let r = s
        .send(s.admin_req(Method::GET, "/admin/v1/audit?tenant=globex&limit=1000"))
        .await;
    let entries = r.json()["entries"].as_array().unwrap().clone();
    assert!(entries.iter().any(|e| e["action"] == "AssumeRole"
        && e["decision"] == "allow"
        && e["policies"] == json!(["role/auditor/trust"])));
    assert!(entries.iter().any(|e| e["action"] == "AssumeRole"
        && e["decision"] == "deny"
        && e["policies"] == json!(["assume-role-guardrail"])));
}

/// A tenant that writes `permit(principal, action, resource);` everywhere it
/// can (tenant policy, role policy, trust policy) still reaches nothing of
/// another tenant, over every resource kind, and sees none of its canaries.
#[tokio::test]
async fn tenant_permit_all_opens_no_cross_tenant_access() {
    const OPEN: &str = "permit (principal, action, resource);";
    let s = spawn_with(|_| {}).await;
    let aa = s.tenant("aa", "bridge").await;
    let bb = s.tenant("bb", "pool").await;
    // bb's canaries in every kind: a model, a policy, a role.
    let r = s
        .put_model(&bb, "canary-model-bb", tenant_model(3).to_onnx())
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    tag(
        &s,
        &bb,
        "canary-model-bb",
        json!({"Secret": "canary-tag-bb"}),
    )
    .await;
    // Content canaries are tokens no request of aa's ever carries, so
    // finding one anywhere aa looks is a leak, however it is encoded.
    let bb_policy = "// secret-policy-text-bb\npermit (principal, action, resource);";
    assert_eq!(
        put_policy(&s, &bb, "canary-policy-bb", bb_policy)
            .await
            .status,
        StatusCode::CREATED
    );
    let r = put_role(
        &s,
        &bb,
        "canary-role-bb",
        json!({"trust_policy": r#"permit (principal in Fief::Tenant::"bb", action == Fief::Action::"AssumeRole", resource); // secret-trust-text-bb"#,
               "policies": [OPEN], "external_id": "canary-ext-bb"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);

    // aa opens everything it can.
    assert_eq!(
        put_policy(&s, &aa, "open", OPEN).await.status,
        StatusCode::CREATED
    );
    let r = put_role(
        &s,
        &aa,
        "open",
        json!({"trust_policy": OPEN, "policies": [OPEN], "external_id": "open-external-id"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = s
        .send(
            s.admin_req(Method::POST, "/admin/v1/tenants/aa/api-keys")
                .json(&json!({"name": "scoped", "role": "open"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let scoped = r.json()["api_key"].as_str().unwrap().to_owned();
    let sess = session(&s, &aa, json!({"role": "open", "session_name": "s-open"})).await;

    // bb cannot assume aa's wide-open role: the trust policy names no tenant.
    let r = assume(
        &s,
        &bb,
        json!({"role": "aa/open", "session_name": "x1", "external_id": "open-external-id"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let model = tenant_model(4).to_onnx();
    for (who, cred) in [("key", &aa), ("scoped key", &scoped), ("session", &sess)] {
        let mut responses: Vec<Resp> = Vec::new();
        for name in [
            "bb/canary-model-bb",
            "frn:fief:model:bb/canary-model-bb",
            "bb%2Fcanary-model-bb",
        ] {
            for method in [Method::GET, Method::DELETE] {
                responses.push(
                    s.send(s.data_req(cred, method, &format!("/api/v1/models/{name}")))
                        .await,
                );
            }
            responses.push(
                s.send(
                    s.data_req(cred, Method::PUT, &format!("/api/v1/models/{name}"))
                        .header("content-type", "application/octet-stream")
                        .body(model.clone()),
                )
                .await,
            );
            responses.push(
                s.send(
                    s.data_req(cred, Method::PUT, &format!("/api/v1/models/{name}/tags"))
                        .json(&json!({"Secret": "x"})),
                )
                .await,
            );
            responses.push(s.invoke(cred, "shared", name, &input()).await);
            responses.push(s.invoke(cred, "bb", name, &input()).await);
        }
        for denied in &responses {
            assert!(
                matches!(
                    denied.status,
                    StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST
                ),
                "{who}: {} {}",
                denied.status,
                denied.text
            );
            assert_ne!(denied.status, StatusCode::OK);
        }
        // Policies and roles are addressed in the caller's own namespace only:
        // bb's names resolve to aa's (absent) documents.
        for path in [
            "/api/v1/policies/canary-policy-bb",
            "/api/v1/roles/canary-role-bb",
        ] {
            let r = s.send(s.data_req(cred, Method::GET, path)).await;
            assert!(
                matches!(r.status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN),
                "{who} {path}: {}",
                r.text
            );
            responses.push(r);
        }
        for path in [
            "/api/v1/models",
            "/api/v1/policies",
            "/api/v1/roles",
            "/api/v1/me",
        ] {
            responses.push(s.send(s.data_req(cred, Method::GET, path)).await);
        }
        let r = assume(&s, cred, json!({"role": "bb/canary-role-bb", "session_name": "x1", "external_id": "canary-ext-bb"})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{who}: {}", r.text);
        responses.push(r);
        for body in [
            json!({"action": "GetModel", "resource": "frn:fief:model:bb/canary-model-bb"}),
            json!({"action": "GetPolicy", "resource": "frn:fief:policy:bb/canary-policy-bb"}),
            json!({"action": "GetRole", "resource": "frn:fief:role:bb/canary-role-bb"}),
            json!({"action": "InvokeEndpoint", "resource": "frn:fief:endpoint:bb"}),
            json!({"action": "ListModels", "resource": "frn:fief:tenant:bb"}),
        ] {
            let r = s
                .send(
                    s.data_req(cred, Method::POST, "/api/v1/policies/explain")
                        .json(&body),
                )
                .await;
            if r.status == StatusCode::OK {
                assert_eq!(r.json()["decision"], "Deny", "{who} {body}");
                assert_eq!(
                    r.json()["policies"],
                    json!(["platform-guardrail"]),
                    "{who} {body}"
                );
            }
            responses.push(r);
        }
        for r in &responses {
            let all = format!("{:?} {}", r.headers, r.text);
            for canary in [
                "canary-tag-bb",
                "secret-policy-text-bb",
                "secret-trust-text-bb",
            ] {
                assert!(!all.contains(canary), "{who}: leaked {canary} in {all}");
            }
            // aa sends bb's external id itself; only a role record of bb's
            // would hold it as a stored field.
            let stored = serde_json::from_str::<Value>(&r.text).ok();
            assert!(
                !stored.is_some_and(|v| json_has(&v, "external_id", "canary-ext-bb")),
                "{who}: bb's role record in {all}"
            );
        }
    }
    // The checks can fire: bb's own reads hold every canary.
    let r = s
        .send(s.data_req(&bb, Method::GET, "/api/v1/policies/canary-policy-bb"))
        .await;
    assert!(r.text.contains("secret-policy-text-bb"), "{}", r.text);
    let r = s
        .send(s.data_req(&bb, Method::GET, "/api/v1/roles/canary-role-bb"))
        .await;
    assert!(r.text.contains("secret-trust-text-bb"), "{}", r.text);
    assert!(
        json_has(&r.json(), "external_id", "canary-ext-bb"),
        "{}",
        r.text
    );
    // bb's resources are untouched and bb still uses them.
    let r = s.invoke(&bb, "shared", "canary-model-bb", &input()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = s
        .send(s.data_req(&bb, Method::GET, "/api/v1/models/canary-model-bb"))
        .await;
    assert_eq!(r.json()["tags"]["Secret"], "canary-tag-bb");
    // And aa's open policies do not open aa to bb either.
    let r = s
        .put_model(&aa, "aa-model", tenant_model(5).to_onnx())
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = s
        .send(s.data_req(&bb, Method::GET, "/api/v1/models/aa%2Faa-model"))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = s.invoke(&bb, "aa", "aa/aa-model", &input()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

/// Refused credentials are audited, aggregated per credential kind and
/// source per window, so a flood adds a bounded number of entries.
#[tokio::test]
async fn refused_credentials_are_audited_in_aggregate() {
    let idp = Idp::new("idp-agg");
    let s = common::idp::spawn_with_idp_and(&idp, |c| c.audit.auth_failure_window_secs = 1).await;
    s.tenant("acme", "pool").await;
    let bad_key = format!("fief_{}_{}", "0".repeat(16), "0".repeat(64));
    for _ in 0..30 {
        assert_eq!(me(&s, &bad_key).await.status, StatusCode::UNAUTHORIZED);
    }
    let mut expired = claims("acme");
    expired["exp"] = json!(now() - 600);
    for _ in 0..20 {
        assert_eq!(
            me(&s, &idp.sign(&expired)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    for _ in 0..10 {
        let r = s
            .send(
                s.http
                    .get(format!("{}/admin/v1/tenants", s.admin))
                    .bearer_auth("not-the-admin-token"),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let r = s
        .send(s.admin_req(Method::GET, "/admin/v1/audit?decision=deny&limit=10000"))
        .await;
    let entries: Vec<Value> = r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "authn")
        .cloned()
        .collect();
    let count = |principal: &str| -> u64 {
        entries
            .iter()
            .filter(|e| e["principal"] == principal)
            .map(|e| {
                assert_eq!(e["source"], "127.0.0.1", "{e}");
                let reason = e["reason"].as_str().unwrap();
                reason.split(' ').next().unwrap().parse::<u64>().unwrap()
            })
            .sum()
    };
    assert_eq!(count("anonymous:api-key"), 30, "{entries:?}");
    assert_eq!(count("anonymous:jwt"), 20, "{entries:?}");
    assert_eq!(count("anonymous:admin-token"), 10, "{entries:?}");
    // One entry per kind and source per window, not one per refusal.
    assert!(entries.len() <= 9, "{} entries", entries.len());
}
