//! A tenant is an incarnation, not a name (invariant 11), over the real
//! HTTP API: every credential of an offboarded tenant is refused forever,
//! also once a new tenant with the same id exists and has written
//! resources of the same names; offboarding is a fence no request outlives;
//! a tenant that does not exist looks exactly like a foreign one. Each test
//! runs on SQLite, and again on PostgreSQL in `scripts/test.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "lifecycle/outage.rs"]
mod outage;
#[path = "lifecycle/replicas.rs"]
mod replicas;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use common::idp::{claims, now, spawn_with_idp_and, Idp};
use common::kb::embedder_installed;
use common::{tenant_model, Resp, TestServer};

const TIERS: [&str; 3] = ["pool", "bridge", "silo"];

fn input() -> Value {
    json!({"inputs": [[0.5, -1.0, 2.0, 0.25]]})
}

async fn ok(s: &TestServer, req: reqwest::RequestBuilder) -> Resp {
    let r = s.send(req).await;
    assert!(r.status.is_success(), "{}", r.text);
    r
}

/// A gateway trusting a local identity provider, with no clock skew so a
/// token is accepted from the second after its tenant's creation.
async fn gateway(idp: &Idp) -> TestServer {
    spawn_with_idp_and(idp, |c| {
        if let Some(o) = c.oidc.as_mut() {
            o.leeway_secs = 0;
        }
    })
    .await
}

/// An OIDC token for a user of `tenant`, issued `issued_after` seconds from now.
fn jwt(idp: &Idp, tenant: &str, issued_after: i64) -> String {
    let mut c = claims(tenant);
    c["iat"] = json!(now() + issued_after);
    idp.sign(&c)
}

/// Writes the same-named resource of every kind, holding `canary`; its role
/// `r` trusts its own tenant, and the tenants `trusted` with an external id.
async fn write_resources(
    s: &TestServer,
    key: &str,
    canary: &str,
    seed: u64,
    kb: bool,
    trusted: &[&str],
) {
    let r = s.put_model(key, "m", tenant_model(seed).to_onnx()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    ok(
        s,
        s.data_req(key, Method::PUT, "/api/v1/models/m/tags")
            .json(&json!({"Canary": canary})),
    )
    .await;
    ok(
        s,
        s.data_req(key, Method::PUT, "/api/v1/policies/p")
            .header("content-type", "text/plain")
            .body(format!(
                "// {canary}\npermit (principal, action == Fief::Action::\"GetModel\", resource);"
            )),
    )
    .await;
    let mut trust = format!(
        "// {canary}\npermit (principal, action == Fief::Action::\"AssumeRole\", resource) \
         when {{ principal.tenant == resource.tenant }};"
    );
    for t in trusted {
        trust.push_str(&format!(
            "\npermit (principal in Fief::Tenant::\"{t}\", action == Fief::Action::\"AssumeRole\", resource);"
        ));
    }
    ok(
        s,
        s.data_req(key, Method::PUT, "/api/v1/roles/r").json(&json!({
            "trust_policy": trust,
            "policies": ["permit (principal, action in Fief::Action::\"TenantResource\", resource);"],
            "external_id": "ext-lifecycle-1",
        })),
    )
    .await;
    ok(
        s,
        s.data_req(key, Method::PUT, "/api/v1/tables/t/items/k")
            .json(&json!({"canary": canary})),
    )
    .await;
    if kb {
        common::kb::create_kb(s, key, "kb").await;
        common::kb::put_doc(
            s,
            key,
            "kb",
            "d",
            json!({"text": format!("notes {canary}")}),
        )
        .await;
    }
}

/// Every credential kind of one tenant `id`.
struct Credentials {
    key: String,
    scoped: String,
    session: String,
    /// A session of `id`'s role, assumed by tenant `peer`.
    assumed_by_peer: String,
    /// A session of `peer`'s role, assumed by `id`'s key.
    assumed_of_peer: String,
    jwt: String,
}

impl Credentials {
    fn all(&self) -> [(&'static str, &str); 6] {
        [
            ("api key", &self.key),
            ("scoped key", &self.scoped),
            ("role session", &self.session),
            ("session assumed by another tenant", &self.assumed_by_peer),
            ("session of another tenant's role", &self.assumed_of_peer),
            ("OIDC user", &self.jwt),
        ]
    }
}

async fn assume(s: &TestServer, key: &str, role: &str, ext: Option<&str>) -> String {
    let mut body = json!({"role": role, "session_name": "lifecycle"});
    if let Some(e) = ext {
        body["external_id"] = json!(e);
    }
    let r = s
        .send(
            s.data_req(key, Method::POST, "/api/v1/sts/assume-role")
                .json(&body),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{role}: {}", r.text);
    r.json()["token"].as_str().unwrap().to_owned()
}

async fn credentials(s: &TestServer, idp: &Idp, id: &str, key: &str, peer: &str) -> Credentials {
    let r = ok(
        s,
        s.admin_req(Method::POST, &format!("/admin/v1/tenants/{id}/api-keys"))
            .json(&json!({"name": "scoped", "role": "r"})),
    )
    .await;
    Credentials {
        key: key.to_owned(),
        scoped: r.json()["api_key"].as_str().unwrap().to_owned(),
        session: assume(s, key, "r", None).await,
        assumed_by_peer: assume(s, peer, &format!("{id}/r"), Some("ext-lifecycle-1")).await,
        assumed_of_peer: assume(s, key, "peer/r", Some("ext-lifecycle-1")).await,
        jwt: jwt(idp, id, 0),
    }
}

/// Every route a credential could read or write the tenant's resources by.
fn routes(id: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, "/api/v1/me".into(), None),
        (Method::GET, "/api/v1/models".into(), None),
        (Method::GET, "/api/v1/models/m".into(), None),
        (Method::GET, "/api/v1/policies".into(), None),
        (Method::GET, "/api/v1/policies/p".into(), None),
        (Method::GET, "/api/v1/roles/r".into(), None),
        (Method::GET, "/api/v1/tables/t/items/k".into(), None),
        (Method::GET, "/api/v1/tables/t/items".into(), None),
        (
            Method::PUT,
            "/api/v1/tables/t/items/k".into(),
            Some(json!({"overwritten": true})),
        ),
        (Method::GET, "/api/v1/knowledge-bases".into(), None),
        (
            Method::POST,
            "/api/v1/knowledge-bases/kb/query".into(),
            Some(json!({"query": "notes"})),
        ),
        (
            Method::POST,
            format!("/endpoints/{id}/invocations"),
            Some(input()),
        ),
        (
            Method::POST,
            "/endpoints/shared/invocations".into(),
            Some(input()),
        ),
        (Method::DELETE, "/api/v1/models/m".into(), None),
    ]
}

async fn call(
    s: &TestServer,
    cred: &str,
    method: Method,
    path: &str,
    body: &Option<Value>,
) -> Resp {
    let mut req = s
        .data_req(cred, method, path)
        .header(fief_server::TARGET_MODEL_HEADER, "m");
    if let Some(b) = body {
        req = req.json(b);
    }
    s.send(req).await
}

/// Every old credential, on every route: 401, and no trace of `canary`.
async fn refused_everywhere(s: &TestServer, id: &str, old: &Credentials, canary: &str) {
    for (kind, cred) in old.all() {
        for (method, path, body) in routes(id) {
            let r = call(s, cred, method.clone(), &path, &body).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{kind} of the offboarded {id}: {method} {path}: {}",
                r.text
            );
            assert!(!r.text.contains(canary), "{kind}: {path} leaked {canary}");
        }
    }
}

/// Credentials of every kind, of a tenant of each tier, are refused after
/// its offboarding, and stay refused once a tenant with the same id exists
/// again and has written resources of the same names.
#[tokio::test]
async fn a_credential_of_an_offboarded_tenant_is_refused_forever() {
    let idp = Idp::new("lifecycle");
    let s = gateway(&idp).await;
    let kb = embedder_installed();
    let peer = s.tenant("peer", "pool").await;
    write_resources(
        &s,
        &peer,
        "peer-canary",
        9,
        false,
        &["lc-pool", "lc-bridge", "lc-silo"],
    )
    .await;
    for tier in TIERS {
        let id = format!("lc-{tier}");
        let key = s.tenant(&id, tier).await;
        write_resources(&s, &key, &format!("first-{tier}"), 1, kb, &["peer"]).await;
        let old = credentials(&s, &idp, &id, &key, &peer).await;
        for (kind, cred) in old.all() {
            let r = call(&s, cred, Method::GET, "/api/v1/me", &None).await;
            assert_eq!(r.status, StatusCode::OK, "{kind}: {}", r.text);
        }

        let r = s
            .send(s.admin_req(Method::DELETE, &format!("/admin/v1/tenants/{id}")))
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        refused_everywhere(&s, &id, &old, "first").await;

        // A new sign-up takes the id and writes the same names.
        let new_key = s.tenant(&id, tier).await;
        let canary = format!("second-{tier}");
        write_resources(&s, &new_key, &canary, 2, kb, &["peer"]).await;
        refused_everywhere(&s, &id, &old, &canary).await;

        // The new tenant's own credentials work, and see only its own data.
        let fresh = jwt(&idp, &id, 2);
        for cred in [&new_key, &fresh] {
            let r = call(&s, cred, Method::GET, "/api/v1/tables/t/items/k", &None).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            assert_eq!(r.json()["value"]["canary"], canary);
        }
        let r = s.invoke(&new_key, "shared", "m", &input()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(
            r.json()["outputs"],
            s.invoke(&new_key, &id, "m", &input()).await.json()["outputs"]
        );
        // An OIDC token issued before the re-creation belongs to the old tenant.
        let before = jwt(&idp, &id, -5);
        let r = call(&s, &before, Method::GET, "/api/v1/me", &None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    }
}

/// What one writer saw: when each answer arrived and its status.
type Answers = Vec<(Instant, StatusCode)>;

/// One writer: the same kind of write, again and again, until the tenant's
/// credential is refused.
async fn writer(
    s: Arc<TestServer>,
    key: String,
    kind: usize,
    n: usize,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
) -> Answers {
    let mut seen = Vec::new();
    for i in 0.. {
        let req = match kind {
            0 => s
                .data_req(&key, Method::PUT, &format!("/api/v1/models/w{n}"))
                .header("content-type", "application/octet-stream")
                .body(tenant_model(i as u64).to_onnx()),
            1 => s
                .data_req(&key, Method::PUT, &format!("/api/v1/policies/w{n}-{i}"))
                .header("content-type", "text/plain")
                .body("permit (principal, action == Fief::Action::\"GetModel\", resource);"),
            2 => s
                .data_req(&key, Method::PUT, &format!("/api/v1/roles/w{n}-{i}"))
                .json(&json!({"trust_policy": "permit (principal, action == Fief::Action::\"AssumeRole\", resource) when { principal.tenant == resource.tenant };"})),
            3 => s
                .data_req(
                    &key,
                    Method::PUT,
                    &format!("/api/v1/knowledge-bases/kb/documents/w{n}-{i}"),
                )
                .json(&json!({"text": format!("written by writer {n}, step {i}")})),
            _ => s
                .data_req(&key, Method::PUT, &format!("/api/v1/tables/t/items/w{n}-{i}"))
                .json(&json!({"writer": n, "step": i})),
        };
        let r = s.send(req).await;
        seen.push((Instant::now(), r.status));
        if r.status == StatusCode::UNAUTHORIZED {
            break;
        }
        if r.status.is_success() {
            accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        assert!(
            r.status.is_success(),
            "writer {n} (kind {kind}) step {i}: {} {}",
            r.status,
            r.text
        );
    }
    seen
}

/// Offboarding is a fence: 24 writers over every content kind race the
/// DELETE of their tenant; after the 204 nothing of the tenant is left, no
/// write answered 2xx after the 204, and the id re-created starts empty and
/// fully works. Every tier, ten times each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offboarding_is_a_fence_no_request_outlives() {
    let s = Arc::new(common::spawn().await);
    let kb = embedder_installed();
    // Models, policies, roles, documents (with the embedder) and items.
    let kinds: Vec<usize> = if kb {
        vec![0, 1, 2, 3, 4]
    } else {
        vec![0, 1, 2, 4]
    };
    let state = s.running.as_ref().unwrap().state.clone();
    for tier in TIERS {
        for round in 0..10 {
            let id = format!("race-{tier}");
            let key = s.tenant(&id, tier).await;
            if kb {
                common::kb::create_kb(&s, &key, "kb").await;
            }
            let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let writers: Vec<_> = (0..24)
                .map(|n| {
                    let (s, key, accepted) = (s.clone(), key.clone(), accepted.clone());
                    tokio::spawn(writer(s, key, kinds[n % kinds.len()], n, accepted))
                })
                .collect();
            // Let the writers get some writes in before the offboarding (on a
            // loaded machine that can take longer than any fixed sleep).
            let deadline = Instant::now() + Duration::from_secs(20);
            while accepted.load(std::sync::atomic::Ordering::Relaxed) < 24
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(20 * round)).await;
            let r = s
                .send(s.admin_req(Method::DELETE, &format!("/admin/v1/tenants/{id}")))
                .await;
            let offboarded = Instant::now();
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
            let residue = state
                .store
                .residue(&fief_core::TenantId::parse(&id).unwrap())
                .await
                .unwrap();
            assert!(residue.is_empty(), "{tier} round {round}: left {residue:?}");
            let mut accepted = 0;
            for w in writers {
                for (at, status) in w.await.unwrap() {
                    if status.is_success() {
                        accepted += 1;
                        assert!(
                            at <= offboarded,
                            "{tier} round {round}: a write answered {status} after the 204"
                        );
                    }
                }
            }
            assert!(accepted > 0, "the writers never got to write");

            // The id re-created is empty, and works.
            let key = s.tenant(&id, tier).await;
            for (path, field) in [
                ("/api/v1/models", "models"),
                ("/api/v1/policies", "policies"),
                ("/api/v1/roles", "roles"),
                ("/api/v1/knowledge-bases", "knowledge_bases"),
                ("/api/v1/tables/t/items", "items"),
            ] {
                let r = ok(&s, s.data_req(&key, Method::GET, path)).await;
                assert_eq!(r.json()[field], json!([]), "{tier} round {round}: {path}");
            }
            write_resources(&s, &key, "fresh", 3, kb, &[]).await;
            let r = s.invoke(&key, "shared", "m", &input()).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            let r = s
                .send(s.admin_req(Method::DELETE, &format!("/admin/v1/tenants/{id}")))
                .await;
            assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        }
    }
}

/// No existence oracle: for every data-plane route that names another
/// tenant, an existing foreign tenant and one that does not exist get the
/// same status and error code, and every attempt is audited.
#[tokio::test]
async fn a_missing_tenant_looks_like_a_foreign_one() {
    let s = common::spawn().await;
    let attacker = s.tenant("attacker", "pool").await;
    let victim = s.tenant("victim", "bridge").await;
    write_resources(&s, &victim, "victim-canary", 4, embedder_installed(), &[]).await;
    let forms = |t: &str| -> Vec<(Method, String, Option<Value>, Option<&'static str>)> {
        vec![
            (Method::GET, format!("/api/v1/models/{t}%2Fm"), None, None),
            (
                Method::GET,
                format!("/api/v1/models/frn:fief:model:{t}%2Fm"),
                None,
                None,
            ),
            (
                Method::DELETE,
                format!("/api/v1/models/{t}%2Fm"),
                None,
                None,
            ),
            (
                Method::PUT,
                format!("/api/v1/models/{t}%2Fm/tags"),
                Some(json!({"a": "b"})),
                None,
            ),
            (
                Method::POST,
                format!("/endpoints/{t}/invocations"),
                Some(input()),
                Some("m"),
            ),
            (
                Method::POST,
                "/endpoints/shared/invocations".into(),
                Some(input()),
                Some("T/m"),
            ),
            (
                Method::POST,
                "/api/v1/sts/assume-role".into(),
                Some(json!({"role": format!("{t}/r"), "session_name": "probe"})),
                None,
            ),
            (
                Method::POST,
                "/api/v1/sts/assume-role".into(),
                Some(
                    json!({"role": format!("frn:fief:role:{t}/r"), "session_name": "probe",
                            "external_id": "ext-lifecycle-1"}),
                ),
                None,
            ),
            (
                Method::POST,
                "/api/v1/sts/assume-role".into(),
                Some(
                    json!({"role": format!("{t}/nosuchrole"), "session_name": "probe",
                            "external_id": "guessed-external-id"}),
                ),
                None,
            ),
            (
                Method::POST,
                "/api/v1/policies/explain".into(),
                Some(json!({"action": "GetModel", "resource": format!("frn:fief:model:{t}/m")})),
                None,
            ),
            (
                Method::GET,
                format!("/api/v1/knowledge-bases/{t}%2Fkb"),
                None,
                None,
            ),
            (
                Method::DELETE,
                format!("/api/v1/knowledge-bases/{t}%2Fkb"),
                None,
                None,
            ),
            (
                Method::POST,
                format!("/api/v1/knowledge-bases/{t}%2Fkb/query"),
                Some(json!({"query": "notes"})),
                None,
            ),
            (
                Method::PUT,
                format!("/api/v1/knowledge-bases/{t}%2Fkb/documents/d"),
                Some(json!({"text": "x"})),
                None,
            ),
            (
                Method::GET,
                format!("/api/v1/tables/{t}%2Ft/items/k"),
                None,
                None,
            ),
            (
                Method::GET,
                format!("/api/v1/tables/{t}%2Ft/items"),
                None,
                None,
            ),
            (
                Method::PUT,
                format!("/api/v1/tables/{t}%2Ft/items/k"),
                Some(json!({"x": 1})),
                None,
            ),
            (
                Method::DELETE,
                format!("/api/v1/tables/{t}%2Ft/items/k"),
                None,
                None,
            ),
        ]
    };
    let mut request_ids = Vec::new();
    for (existing, missing) in forms("victim").into_iter().zip(forms("nosuchtenant")) {
        let mut answers = Vec::new();
        for (method, path, body, target, tenant) in [
            (existing.0, existing.1, existing.2, existing.3, "victim"),
            (missing.0, missing.1, missing.2, missing.3, "nosuchtenant"),
        ] {
            let mut req = s.data_req(&attacker, method.clone(), &path);
            if let Some(t) = target {
                req = req.header(fief_server::TARGET_MODEL_HEADER, t.replace('T', tenant));
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            let r = s.send(req).await;
            assert!(!r.text.contains("victim-canary"), "{path}: {}", r.text);
            request_ids.push((
                format!("{method} {path}"),
                r.headers["x-request-id"].to_str().unwrap().to_owned(),
            ));
            answers.push((r.status, r.code(), r.json()["decision"].clone(), path));
        }
        let (a, b) = (&answers[0], &answers[1]);
        assert_eq!(
            (a.0, &a.1, &a.2),
            (b.0, &b.1, &b.2),
            "{} vs {}: an oracle",
            a.3,
            b.3
        );
        assert!(
            a.0 == StatusCode::FORBIDDEN || a.2 == json!("Deny"),
            "{}: {:?}",
            a.3,
            a.0
        );
    }
    let r = ok(
        &s,
        s.admin_req(Method::GET, "/admin/v1/audit?tenant=attacker&limit=10000"),
    )
    .await;
    let audited: Vec<String> = r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["request_id"].as_str().unwrap().to_owned())
        .collect();
    for (attempt, id) in &request_ids {
        assert!(audited.contains(id), "{attempt} ({id}) was not audited");
    }
}

/// An id can be created again only once nothing of its earlier tenant is
/// left: an offboarding that stopped half-way is a 409 until the DELETE is
/// repeated, and so is content an earlier tenant left behind (which the
/// DELETE of the id then removes).
#[tokio::test]
async fn an_id_is_reused_only_when_nothing_of_it_is_left() {
    let s = common::spawn().await;
    let key = s.tenant("halfway", "bridge").await;
    write_resources(&s, &key, "halfway-canary", 5, false, &[]).await;
    let state = s.running.as_ref().unwrap().state.clone();
    // The first half of an offboarding, as if the process died after it.
    let op = state.store.authenticate_operator(&s.admin_token).unwrap();
    let grant = state
        .decide(
            &op,
            fief_policy::Action::DeleteTenant,
            &fief_policy::Resource::Tenant(fief_core::TenantId::parse("halfway").unwrap()),
            None,
        )
        .await
        .unwrap()
        .into_offboard()
        .unwrap();
    state
        .store
        .begin_offboarding(&grant)
        .await
        .unwrap()
        .unwrap();
    let r = s.send(s.data_req(&key, Method::GET, "/api/v1/me")).await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "refused from the first half on"
    );
    let create = || {
        s.admin_req(Method::POST, "/admin/v1/tenants")
            .json(&json!({"id": "halfway", "tier": "pool"}))
    };
    let r = s.send(create()).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("being offboarded"), "{}", r.text);
    let delete = || s.admin_req(Method::DELETE, "/admin/v1/tenants/halfway");
    assert_eq!(s.send(delete()).await.status, StatusCode::NO_CONTENT);

    // Data an earlier tenant left (here: an object nobody removed).
    let stray = s.dir.path().join("objects/tenants/halfway/models/m");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("v9.sealed"), b"left behind").unwrap();
    let r = s.send(create()).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("still holds data"), "{}", r.text);
    assert_eq!(s.send(delete()).await.status, StatusCode::NO_CONTENT);
    assert_eq!(s.send(create()).await.status, StatusCode::CREATED);
    // With nothing left and no tenant, there is nothing to delete.
    assert_eq!(s.send(delete()).await.status, StatusCode::NO_CONTENT);
    assert_eq!(s.send(delete()).await.status, StatusCode::NOT_FOUND);
}

/// Every change takes effect for the very next request, with the in-memory
/// directory and remembered decisions in the way: while 8 clients hammer,
/// a key is revoked, a model deleted, a policy changed and a tenant
/// offboarded; no request that started after a change's answer arrived
/// succeeds with the old state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_is_seen_by_the_very_next_request() {
    let s = Arc::new(common::spawn().await);
    let key = s.tenant("exact", "pool").await;
    let doomed = s.tenant("exact-doomed", "pool").await;
    for k in [&key, &doomed] {
        let r = s.put_model(k, "m", tenant_model(1).to_onnx()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    assert_eq!(
        s.put_model(&key, "gone", tenant_model(2).to_onnx())
            .await
            .status,
        StatusCode::CREATED
    );
    let r = ok(
        &s,
        s.admin_req(Method::POST, "/admin/v1/tenants/exact/api-keys")
            .json(&json!({"name": "to-revoke"})),
    )
    .await;
    let (revoked, revoked_id) = (
        r.json()["api_key"].as_str().unwrap().to_owned(),
        r.json()["id"].as_str().unwrap().to_owned(),
    );
    // What each client keeps asking, and when each answer came.
    #[derive(Clone, Copy, Debug)]
    enum Ask {
        WithRevokedKey,
        DeletedModel,
        ModelUnderNewForbid,
        OffboardedTenant,
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (s, stop) = (s.clone(), stop.clone());
            let (key, revoked, doomed) = (key.clone(), revoked.clone(), doomed.clone());
            tokio::spawn(async move {
                let ask = [
                    Ask::WithRevokedKey,
                    Ask::DeletedModel,
                    Ask::ModelUnderNewForbid,
                    Ask::OffboardedTenant,
                ][i % 4];
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = Instant::now();
                    let r = match ask {
                        Ask::WithRevokedKey => s.invoke(&revoked, "shared", "m", &input()).await,
                        Ask::DeletedModel => s.invoke(&key, "shared", "gone", &input()).await,
                        Ask::ModelUnderNewForbid => s.invoke(&key, "shared", "m", &input()).await,
                        Ask::OffboardedTenant => s.invoke(&doomed, "shared", "m", &input()).await,
                    };
                    seen.push((ask, started, Instant::now(), r.status));
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let done = |r: &Resp| {
        assert!(r.status.is_success(), "{}", r.text);
        Instant::now()
    };
    let revoked_at = done(
        &s.send(s.admin_req(
            Method::DELETE,
            &format!("/admin/v1/tenants/exact/api-keys/{revoked_id}"),
        ))
        .await,
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let deleted_at = done(
        &s.send(s.data_req(&key, Method::DELETE, "/api/v1/models/gone"))
            .await,
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let forbid_sent = Instant::now();
    let forbidden_at = done(
        &s.send(
            s.data_req(&key, Method::PUT, "/api/v1/policies/no-invoke")
                .header("content-type", "text/plain")
                .body("forbid (principal, action == Fief::Action::\"InvokeModel\", resource);"),
        )
        .await,
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let offboarded_at = done(
        &s.send(s.admin_req(Method::DELETE, "/admin/v1/tenants/exact-doomed"))
            .await,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut before = 0;
    let mut after = 0;
    for c in clients {
        for (ask, started, ended, status) in c.await.unwrap() {
            let (changed_at, refused) = match ask {
                Ask::WithRevokedKey => (revoked_at, StatusCode::UNAUTHORIZED),
                Ask::DeletedModel => (deleted_at, StatusCode::NOT_FOUND),
                Ask::ModelUnderNewForbid => (forbidden_at, StatusCode::FORBIDDEN),
                Ask::OffboardedTenant => (offboarded_at, StatusCode::UNAUTHORIZED),
            };
            if started > changed_at {
                after += 1;
                assert!(
                    !status.is_success(),
                    "{ask:?} started after the change: {status}"
                );
                // Answered before the forbid was asked for, each is refused
                // for its own change (one that started earlier but was
                // decided after the forbid took effect may meet the forbid).
                if ended < forbid_sent || matches!(ask, Ask::WithRevokedKey | Ask::OffboardedTenant)
                {
                    assert_eq!(status, refused, "{ask:?} started after the change");
                }
            } else if status == StatusCode::OK {
                before += 1;
            }
        }
    }
    assert!(
        before > 0 && after > 0,
        "{before} served before, {after} tried after"
    );
}
