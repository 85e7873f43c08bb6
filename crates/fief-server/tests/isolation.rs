//! Cross-tenant isolation through the real HTTP API: per-tenant models with
//! different weights act as canaries; any of B's outputs in A's responses is
//! a leak.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use reqwest::{Method, StatusCode};
use serde_json::json;

use common::*;

const ROW: [f32; 4] = [0.5, -1.0, 2.0, 0.25];

fn body() -> serde_json::Value {
    json!({"inputs": [ROW.to_vec()]})
}

/// What B's model answers for `ROW`: its appearance in anything A receives,
/// compared as numbers (`holds_outputs`), is a leak.
fn canary_outputs(mlp: &fief_serving::onnx_builder::Mlp) -> Vec<f32> {
    mlp.reference(&[ROW.to_vec()])[0].clone()
}

/// The leak check can fail: it finds a model's real answer in the
/// gateway's own response (f32 widened to f64 in JSON) and in other
/// formattings, and nothing in another model's answer. (The earlier check
/// compared f32 `Display` strings, which about half of the gateway's
/// numbers never match.) `max_diff` refuses an empty or truncated answer.
#[tokio::test]
async fn the_output_leak_check_finds_an_answer_in_any_form() {
    let s = spawn().await;
    let b = s.tenant("bb", "pool").await;
    let mlp = tenant_model(2);
    assert_eq!(
        s.put_model(&b, "m", mlp.to_onnx()).await.status,
        StatusCode::CREATED
    );
    let r = s.invoke(&b, "shared", "m", &body()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let want = canary_outputs(&mlp);
    assert!(holds_outputs(&r.text, &want), "{}", r.text);
    let as_f32_display: Vec<String> = want.iter().map(|v| format!("{v}")).collect();
    let missed = as_f32_display
        .iter()
        .filter(|c| !r.text.contains(c.as_str()))
        .count();
    eprintln!(
        "f32 Display strings absent from the real answer: {missed} of {}",
        want.len()
    );
    assert!(holds_outputs(&as_f32_display.join(", "), &want));
    assert!(holds_outputs(&format!("error: got {want:?} back"), &want));
    assert!(!holds_outputs(&r.text, &canary_outputs(&tenant_model(3))));
    assert!(!holds_outputs(r#"{"outputs": {"output": [[]]}}"#, &want));
    for truncated in [vec![], vec![vec![]], vec![want[..2].to_vec()]] {
        let caught = std::panic::catch_unwind(|| max_diff(&truncated, std::slice::from_ref(&want)));
        assert!(caught.is_err(), "max_diff accepted {truncated:?}");
    }
}

#[tokio::test]
async fn each_tenant_gets_its_own_models_real_output() {
    let s = spawn().await;
    let (pool, silo, bridge) = (
        s.tenant("pool-a", "pool").await,
        s.tenant("silo-b", "silo").await,
        s.tenant("bridge-c", "bridge").await,
    );
    for (key, endpoint, seed) in [
        (&pool, "shared", 1),
        (&silo, "silo-b", 2),
        (&bridge, "bridge-c", 3),
    ] {
        let mlp = tenant_model(seed);
        let r = s.put_model(key, "m", mlp.to_onnx()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let batch = vec![
            ROW.to_vec(),
            vec![1.0, 2.0, 3.0, 4.0],
            vec![-3.0, 0.0, 0.5, 9.0],
        ];
        let r = s
            .invoke(key, endpoint, "m", &json!({"inputs": batch}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(max_diff(&outputs(&r), &mlp.reference(&batch)) < 1e-4);
        // Named inputs work too, and so does an FRN naming the caller's own model.
        let own_frn = format!(
            "frn:fief:model:{}/m",
            if seed == 1 {
                "pool-a"
            } else if seed == 2 {
                "silo-b"
            } else {
                "bridge-c"
            }
        );
        let r = s
            .invoke(
                key,
                endpoint,
                &own_frn,
                &json!({"inputs": {"input": [ROW]}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert!(max_diff(&outputs(&r), &mlp.reference(&[ROW.to_vec()])) < 1e-4);
    }
    // Replacing a model answers 200 and serves the new weights at once.
    let newer = tenant_model(99);
    assert_eq!(
        s.put_model(&pool, "m", newer.to_onnx()).await.status,
        StatusCode::OK
    );
    let r = s.invoke(&pool, "shared", "m", &body()).await;
    assert!(max_diff(&outputs(&r), &newer.reference(&[ROW.to_vec()])) < 1e-4);
}

#[tokio::test]
async fn naming_another_tenants_model_is_denied_the_same_whether_or_not_it_exists() {
    let s = spawn().await;
    let a = s.tenant("aa", "pool").await;
    let b = s.tenant("bb", "silo").await;
    let a_model = tenant_model(10);
    let b_model = tenant_model(20);
    assert_eq!(
        s.put_model(&a, "m", a_model.to_onnx()).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        s.put_model(&b, "secret", b_model.to_onnx()).await.status,
        StatusCode::CREATED
    );
    let canary = canary_outputs(&b_model);

    // (endpoint, target) pairs naming b's model `secret`, and the same with a
    // model that does not exist; both must answer alike.
    let forms = |m: &str| {
        vec![
            ("shared".to_owned(), format!("bb/{m}")),
            ("shared".to_owned(), format!("frn:fief:model:bb/{m}")),
            ("bb".to_owned(), m.to_owned()),
            ("bb".to_owned(), format!("bb/{m}")),
            ("bb".to_owned(), format!("frn:fief:model:bb/{m}")),
            ("aa".to_owned(), format!("bb/{m}")),
            ("shared".to_owned(), format!("../bb/{m}")),
            ("shared".to_owned(), format!("bb/../aa/{m}")),
            ("shared".to_owned(), format!("BB/{m}")),
            ("shared".to_owned(), format!("bb/{m}/")),
            ("shared".to_owned(), format!("bb%2F{m}")),
            ("shared".to_owned(), format!("frn:fief:model:../bb/{m}")),
        ]
    };
    for ((endpoint, existing), (_, missing)) in
        forms("secret").into_iter().zip(forms("nothing-here"))
    {
        let r1 = s.invoke(&a, &endpoint, &existing, &body()).await;
        let r2 = s.invoke(&a, &endpoint, &missing, &body()).await;
        assert!(
            matches!(r1.status.as_u16(), 400 | 403 | 404),
            "{endpoint} {existing}: {}",
            r1.status
        );
        assert_eq!(
            (r1.status, r1.code()),
            (r2.status, r2.code()),
            "{endpoint} {existing} vs {missing}"
        );
        let strip = |t: &str| t.replace(&existing, "").replace(&missing, "");
        let (m1, m2) = (
            r1.json()["error"]["message"].to_string(),
            r2.json()["error"]["message"].to_string(),
        );
        assert_eq!(strip(&m1), strip(&m2), "messages differ: {m1} / {m2}");
        // Well-formed names of b's model (or b's endpoint) are 403; malformed ones may be 400.
        let well_formed =
            fief_core::ModelRef::parse(&existing, &fief_core::TenantId::parse("aa").unwrap())
                .is_ok();
        if endpoint == "bb" || (well_formed && existing.contains("bb/")) {
            assert_eq!(
                (r1.status, r1.code().as_str()),
                (StatusCode::FORBIDDEN, "AccessDenied"),
                "{endpoint} {existing}: {}",
                r1.text
            );
        }
        assert!(
            !holds_outputs(&r1.text, &canary) && !holds_outputs(&r2.text, &canary),
            "leak of b's output in {}",
            r1.text
        );
    }

    // The model routes: every form of b's model is refused, alike for a missing one.
    for path in ["bb%2Fsecret", "frn:fief:model:bb%2Fsecret"] {
        for method in [Method::GET, Method::DELETE] {
            let r = s
                .send(s.data_req(&a, method.clone(), &format!("/api/v1/models/{path}")))
                .await;
            let r_missing = s
                .send(s.data_req(
                    &a,
                    method.clone(),
                    &format!("/api/v1/models/{}", path.replace("secret", "nope")),
                ))
                .await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{method} {path}: {}",
                r.text
            );
            assert_eq!((r.status, r.code()), (r_missing.status, r_missing.code()));
        }
        let r = s.put_model(&a, path, a_model.to_onnx()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "PUT {path}");
    }
    // Listing shows only the caller's models.
    let r = s.send(s.data_req(&a, Method::GET, "/api/v1/models")).await;
    assert!(
        r.text.contains("\"m\"") && !r.text.contains("secret"),
        "{}",
        r.text
    );
    // b's model is intact and still b's.
    let r = s.invoke(&b, "bb", "secret", &body()).await;
    assert!(max_diff(&outputs(&r), &b_model.reference(&[ROW.to_vec()])) < 1e-4);
    // a naming its own missing model in its own namespace gets 404.
    let r = s.invoke(&a, "shared", "nothing-here", &body()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn credentials_are_checked_and_planes_are_separate() {
    let s = spawn().await;
    let a = s.tenant("aa", "pool").await;
    assert_eq!(
        s.put_model(&a, "m", tenant_model(1).to_onnx()).await.status,
        StatusCode::CREATED
    );
    let url = format!("{}/api/v1/models", s.data);

    let no_auth = s.send(s.http.get(&url)).await;
    assert_eq!(
        (no_auth.status, no_auth.code().as_str()),
        (StatusCode::UNAUTHORIZED, "Unauthenticated")
    );
    let bad_key = format!("fief_0000000000000000_{}", "0".repeat(64));
    let almost = format!("{}x", &a[..a.len() - 1]);
    for header in [
        "Basic abc",
        "Bearer",
        "Bearer ",
        "token",
        &format!("Bearer {bad_key}"),
        &format!("Bearer {almost}"),
        &format!("Bearer {}", s.admin_token),
    ] {
        let r = s
            .send(s.http.get(&url).header("authorization", header))
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{header}: {}", r.text);
    }
    // Two Authorization headers, even if one is valid, are refused.
    let r = s
        .send(
            s.http
                .get(&url)
                .header("authorization", format!("Bearer {a}"))
                .header("authorization", "Bearer x"),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A tenant key on the admin plane is refused.
    let r = s
        .send(
            s.http
                .get(format!("{}/admin/v1/tenants", s.admin))
                .bearer_auth(&a),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The admin plane is not served on the data listener and vice versa.
    let r = s
        .send(
            s.http
                .get(format!("{}/admin/v1/tenants", s.data))
                .bearer_auth(&s.admin_token),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = s
        .send(
            s.http
                .get(format!("{}/api/v1/models", s.admin))
                .bearer_auth(&a),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Revocation: a second key keeps working, the revoked one gets 401.
    let r = s
        .send(
            s.admin_req(Method::POST, "/admin/v1/tenants/aa/api-keys")
                .json(&json!({"name": "ci"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let second = r.json()["api_key"].as_str().unwrap().to_owned();
    let keys = s
        .send(s.admin_req(Method::GET, "/admin/v1/tenants/aa/api-keys"))
        .await
        .json();
    let first_id = keys["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "initial")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !keys.to_string().contains(&a[22..]),
        "a listing must not show secrets"
    );
    let r = s
        .send(s.admin_req(
            Method::DELETE,
            &format!("/admin/v1/tenants/aa/api-keys/{first_id}"),
        ))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        s.send(s.http.get(&url).bearer_auth(&a)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.send(s.http.get(&url).bearer_auth(&second)).await.status,
        StatusCode::OK
    );
    // Every response carries a request id, errors repeat it in the body.
    assert!(no_auth.headers.get("x-request-id").is_some());
    assert_eq!(
        no_auth.json()["error"]["request_id"].as_str(),
        no_auth
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
    );
}

#[tokio::test]
async fn offboarding_removes_rows_objects_and_key() {
    let s = spawn().await;
    let a = s.tenant("aa", "pool").await;
    let b = s.tenant("bb", "silo").await;
    for (key, seed) in [(&a, 1), (&b, 2)] {
        assert_eq!(
            s.put_model(key, "m", tenant_model(seed).to_onnx())
                .await
                .status,
            StatusCode::CREATED
        );
        assert_eq!(
            s.invoke(key, "shared", "m", &body()).await.status,
            StatusCode::OK
        );
    }
    let state = &s.running.as_ref().unwrap().state;
    let bb = fief_core::TenantId::parse("bb").unwrap();
    let before = state.store.residue(&bb).await.unwrap();
    assert!(
        before.iter().any(|r| r.starts_with("object ")),
        "{before:?}"
    );

    let r = s
        .send(s.admin_req(Method::DELETE, "/admin/v1/tenants/bb"))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        state.store.residue(&bb).await.unwrap(),
        Vec::<String>::new()
    );
    assert!(!s.dir.path().join("objects/tenants/bb").exists());
    assert_eq!(
        s.invoke(&b, "shared", "m", &body()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.send(s.admin_req(Method::GET, "/admin/v1/tenants/bb"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.send(s.admin_req(Method::DELETE, "/admin/v1/tenants/bb"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // The other tenant is untouched.
    assert_eq!(
        s.invoke(&a, "shared", "m", &body()).await.status,
        StatusCode::OK
    );
    // The id can be onboarded again, as a new tenant with nothing of the old one.
    let b2 = s.tenant("bb", "pool").await;
    assert_eq!(
        s.invoke(&b2, "shared", "m", &body()).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn model_bytes_at_rest_are_sealed_with_the_tenants_own_key() {
    let s = spawn().await;
    let a = s.tenant("aa", "pool").await;
    let b = s.tenant("bb", "pool").await;
    let onnx_a = tenant_model(1).to_onnx();
    let onnx_b = tenant_model(2).to_onnx();
    assert_eq!(
        s.put_model(&a, "m", onnx_a.clone()).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        s.put_model(&b, "m", onnx_b.clone()).await.status,
        StatusCode::CREATED
    );

    let state = &s.running.as_ref().unwrap().state;
    // Scopes come only from the gate, for a principal authenticated from
    // the tenant's own key, exactly as the server gets them.
    let keys = [("aa", a.clone()), ("bb", b.clone())];
    let scope = |t: &str, action| {
        let token = keys.iter().find(|(id, _)| *id == t).unwrap().1.clone();
        let tenant = fief_core::TenantId::parse(t).unwrap();
        async move {
            let principal = state.store.authenticate(&token).await.unwrap();
            state
                .decide(
                    &principal,
                    action,
                    &fief_policy::Resource::Tenant(tenant),
                    None,
                )
                .await
                .unwrap()
                .into_scope()
        }
    };
    // GetModel on a Tenant resource does not fit the schema: no scope.
    assert!(scope("aa", fief_policy::Action::GetModel).await.is_none());
    let list = fief_policy::Action::ListModels;
    let (sa, sb) = (
        scope("aa", list).await.unwrap(),
        scope("bb", list).await.unwrap(),
    );
    let rec_a = state
        .store
        .get_model(&sa, &fief_core::ModelName::parse("m").unwrap())
        .await
        .unwrap()
        .unwrap();
    let rec_b = state
        .store
        .get_model(&sb, &fief_core::ModelName::parse("m").unwrap())
        .await
        .unwrap()
        .unwrap();
    if !s.others.is_empty() {
        // Replicas keep model bytes in a bucket, not on this disk; there,
        // fief-cli's model_bytes_live_sealed_in_the_bucket checks them.
        eprintln!("SKIP: the bytes at rest are in the bucket with FIEF_TEST_REPLICAS");
        return;
    }
    let file_a = state.store.model_file(sa.tenant(), &rec_a);
    let on_disk = std::fs::read(&file_a).unwrap();
    assert_ne!(on_disk, onnx_a);
    // No 16-byte window of the plaintext (weights, graph) appears on disk.
    assert!(
        !onnx_a
            .windows(16)
            .any(|w| on_disk.windows(16).any(|d| d == w)),
        "plaintext found on disk"
    );
    // A's own key opens it; B's key does not, whatever name and version B claims.
    assert_eq!(
        state
            .store
            .open_model_bytes(&sa, &rec_a.name, rec_a.version, &on_disk)
            .await
            .unwrap(),
        onnx_a
    );
    assert!(state
        .store
        .open_model_bytes(&sb, &rec_a.name, rec_a.version, &on_disk)
        .await
        .is_err());
    assert!(state
        .store
        .open_model_bytes(&sb, &rec_b.name, rec_b.version, &on_disk)
        .await
        .is_err());

    // A storage bug that serves A's bytes as B's model: B gets an error, not A's answers.
    let file_b = state.store.model_file(sb.tenant(), &rec_b);
    std::fs::copy(&file_a, &file_b).unwrap();
    state.cache.remove_tenant(sb.tenant());
    let r = s.invoke(&b, "shared", "m", &body()).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text);
    assert!(!holds_outputs(&r.text, &canary_outputs(&tenant_model(1))));
}

#[tokio::test]
async fn every_decision_is_audited_and_the_chain_verifies() {
    let s = spawn().await;
    let a = s.tenant("aa", "pool").await;
    let _b = s.tenant("bb", "pool").await;
    assert_eq!(
        s.put_model(&a, "m", tenant_model(1).to_onnx()).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        s.invoke(&a, "shared", "bb/m", &body()).await.status,
        StatusCode::FORBIDDEN
    );
    let r = s
        .send(s.admin_req(Method::GET, "/admin/v1/audit?tenant=aa&limit=50"))
        .await;
    let entries = r.json()["entries"].as_array().unwrap().clone();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["decision"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(actions.contains(&("PutModel", "allow")), "{actions:?}");
    assert!(
        actions.contains(&("InvokeSharedEndpoint", "allow")),
        "{actions:?}"
    );
    let deny = entries.iter().find(|e| e["decision"] == "deny").unwrap();
    assert_eq!(deny["action"], "InvokeModel");
    assert_eq!(deny["resource"], "frn:fief:model:bb/m");
    assert_eq!(deny["policies"], json!(["platform-guardrail"]));
    // Admin changes are audited too.
    let r = s
        .send(s.admin_req(Method::GET, "/admin/v1/audit?limit=1000"))
        .await;
    assert!(r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "admin" && e["action"] == "CreateTenant"));
    // Verified where the server keeps it (files here, the chain in
    // PostgreSQL under FIEF_TEST_STORE=postgres).
    let v = s
        .send(s.admin_req(Method::GET, "/admin/v1/audit/verify"))
        .await;
    assert_eq!(v.json()["ok"], true, "{}", v.text);
    let n = v.json()["entries"].as_u64().unwrap();
    assert!(n >= 8, "{n}");
    if s.pg.is_none() {
        assert_eq!(fief_audit::verify_dir(s.dir.path()).unwrap().entries, n);
    }
}

#[tokio::test]
async fn tier_and_tags_change_without_losing_models() {
    let s = spawn().await;
    let a = s.tenant("aa", "pool").await;
    let mlp = tenant_model(7);
    assert_eq!(
        s.put_model(&a, "m", mlp.to_onnx()).await.status,
        StatusCode::CREATED
    );
    let r = s
        .send(
            s.admin_req(Method::PATCH, "/admin/v1/tenants/aa")
                .json(&json!({"tier": "silo", "tags": {"CostCenter": "cc-9"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["tenant"]["tier"], "silo");
    assert_eq!(r.json()["tenant"]["tags"]["CostCenter"], "cc-9");
    // Its models answer as before, on its own endpoint.
    let r = s.invoke(&a, "aa", "m", &body()).await;
    assert!(max_diff(&outputs(&r), &mlp.reference(&[ROW.to_vec()])) < 1e-4);
    for (path, patch, status) in [
        (
            "/admin/v1/tenants/aa",
            json!({"tier": "gold"}),
            StatusCode::BAD_REQUEST,
        ),
        ("/admin/v1/tenants/aa", json!({}), StatusCode::BAD_REQUEST),
        (
            "/admin/v1/tenants/aa",
            json!({"id": "bb"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/admin/v1/tenants/zz",
            json!({"tier": "pool"}),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let r = s.send(s.admin_req(Method::PATCH, path).json(&patch)).await;
        assert_eq!(r.status, status, "{patch}: {}", r.text);
    }
    // A tenant key cannot change its own tier.
    let r = s
        .send(
            s.http
                .patch(format!("{}/admin/v1/tenants/aa", s.admin))
                .bearer_auth(&a)
                .json(&json!({"tier": "pool"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

/// Every ordered pair of tenants across the three tiers: each answers with
/// its own model on its endpoints, and every cross-tenant form is 403 with
/// none of the other tenant's output.
#[tokio::test]
async fn cross_tenant_matrix_over_all_tiers() {
    let s = spawn().await;
    let ids = [
        "pool-a", "pool-b", "silo-a", "silo-b", "bridge-a", "bridge-b",
    ];
    let mut tenants = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let tier = id.split('-').next().unwrap();
        let key = s.tenant(id, tier).await;
        let mlp = tenant_model(100 + i as u64);
        assert_eq!(
            s.put_model(&key, "m", mlp.to_onnx()).await.status,
            StatusCode::CREATED
        );
        tenants.push((*id, key, mlp));
    }
    for (id, key, mlp) in &tenants {
        let own = if id.starts_with("pool") { "shared" } else { id };
        let r = s.invoke(key, own, "m", &body()).await;
        assert!(
            max_diff(&outputs(&r), &mlp.reference(&[ROW.to_vec()])) < 1e-4,
            "{id} on {own}"
        );
    }
    let mut denied = 0;
    for (a, a_key, _) in &tenants {
        for (b, _, b_mlp) in &tenants {
            if a == b {
                continue;
            }
            let canary = canary_outputs(b_mlp);
            for (endpoint, target) in [
                ("shared".to_owned(), format!("{b}/m")),
                ("shared".to_owned(), format!("frn:fief:model:{b}/m")),
                (b.to_string(), "m".to_owned()),
                (b.to_string(), format!("{b}/m")),
                (a.to_string(), format!("{b}/m")),
            ] {
                let r = s.invoke(a_key, &endpoint, &target, &body()).await;
                assert_eq!(
                    (r.status, r.code().as_str()),
                    (StatusCode::FORBIDDEN, "AccessDenied"),
                    "{a} -> {endpoint} {target}"
                );
                assert!(!holds_outputs(&r.text, &canary), "{a} saw {b}'s output");
                denied += 1;
            }
        }
    }
    assert_eq!(denied, 6 * 5 * 5);
}
