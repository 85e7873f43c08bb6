//! `fief verify-isolation`: an outside-in check of a live deployment, run
//! by the CLI and by the operator console (the gateway runs it against its
//! own listeners with the operator's token).
//!
//! It creates one probe tenant per tier, plants canary data in every
//! resource kind a tenant can own (a model with tags, a policy that permits
//! everything, a role with an external id, a session), then, for every
//! ordered pair of probe tenants and both kinds of tenant principal (API key,
//! role session), tries every action on every kind of the other tenant
//! through every addressing form. An attempt is a LEAK if the victim's
//! canary shows up in anything the attacker receives or the victim's data
//! changed; ALLOWED if it succeeded where it must be refused without reaching
//! the victim's data (a policy failure that storage contained); UNEXPECTED on
//! a 5xx. Any of the three fails the run. Probe tenants are removed at the
//! end, whatever happened.
//!
//! Foundation models belong to the deployment, not to a tenant: the probe
//! has the operator give two probe tenants one model each (allowlists), then
//! each calls the other's by every spelling and surface. A kind the
//! deployment does not offer (no embedder, no foundation-model upstream) is
//! reported as skipped with its reason; a skip does not fail the run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use fief_llm::wire::{SseData, SseSplitter};
use rand::RngCore;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

/// What an attempt must show.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A 4xx, and none of the victim's canaries.
    Denied,
    /// Any non-5xx answer about the caller's own data, without the victim's canaries.
    OwnOnly,
}

/// One request of the probe and how it was judged: `denied` (as it must
/// be), or `LEAK`, `ALLOWED`, `UNEXPECTED`.
#[derive(Debug, Serialize, Clone)]
pub struct Attempt {
    pub attacker: String,
    pub victim: String,
    pub principal: &'static str,
    pub kind: &'static str,
    pub action: &'static str,
    pub form: String,
    pub status: u16,
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

struct Probe {
    tenant: String,
    tier: &'static str,
    canary: String,
    key: String,
    session: String,
    model: String,
    policy: String,
    role: String,
    external_id: String,
    /// A knowledge base holding a document with the canary; no document
    /// when the knowledge-base kind is skipped (see `Http::kb_skipped`).
    kb: String,
    kb_document: Option<String>,
    /// A tenant table holding one item whose value is the canary.
    table: String,
}

struct Http {
    client: reqwest::Client,
    data: String,
    admin: String,
    admin_token: String,
    /// Why the knowledge-base kind is skipped, once the first probe found
    /// the deployment cannot embed.
    kb_skipped: OnceLock<String>,
    /// Some probe's canary document was embedded.
    kb_planted: AtomicBool,
}

/// A kind the deployment does not offer, and why.
#[derive(Debug, Serialize, Clone)]
pub struct Skip {
    pub kind: &'static str,
    pub reason: String,
}

const KB_SKIP_REASON: &str = "the embedder is not installed (scripts/setup-embedder.sh)";

struct Reply {
    status: StatusCode,
    /// Headers (one line), then the body.
    text: String,
}

impl Reply {
    fn body(&self) -> &str {
        self.text.split_once('\n').map(|(_, b)| b).unwrap_or("")
    }
    fn json(&self) -> Value {
        serde_json::from_str(self.body()).unwrap_or(Value::Null)
    }
    /// A 503 saying the deployment has no embedder (not a broken one).
    fn no_embedder(&self) -> bool {
        self.status == StatusCode::SERVICE_UNAVAILABLE
            && self.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("embedder"))
    }
}

impl Http {
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Reply, String> {
        let r = req
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = r.status();
        let headers = format!("{:?}", r.headers());
        let body = r.text().await.map_err(|e| format!("body: {e}"))?;
        Ok(Reply {
            status,
            text: format!("{headers}\n{body}"),
        })
    }
    fn data(&self, cred: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.data))
            .bearer_auth(cred)
    }
    fn admin(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(&self.admin_token)
    }
    async fn ok(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Value, String> {
        let r = self.send(req).await?;
        if !r.status.is_success() {
            return Err(format!("{what}: {} {}", r.status, r.text));
        }
        Ok(r.json())
    }
    /// [`Http::ok`] for a request that uses what the probe has just written
    /// (its own role): behind a balancer the replica that answers may not
    /// have heard of the write yet (replicas converge within
    /// `postgres.change_poll_ms`, 1 s by default), so a 403 is asked again
    /// for up to 5 s before it counts.
    async fn ok_converged(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<Value, String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let attempt = req
                .try_clone()
                .ok_or_else(|| format!("{what}: the request cannot be sent again"))?;
            let r = self.send(attempt).await?;
            if r.status == StatusCode::FORBIDDEN && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
            if !r.status.is_success() {
                return Err(format!("{what}: {} {}", r.status, r.text));
            }
            return Ok(r.json());
        }
    }
}

fn random_hex(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    hex::encode(raw)
}

/// Every character percent-encoded.
fn encode_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Where the probe goes: the deployment's two listeners and the operator's
/// token (the probe creates and removes its own tenants).
pub struct Target {
    pub data_url: String,
    pub admin_url: String,
    pub admin_token: String,
}

/// The probe tenants made for a run.
#[derive(Debug, Serialize, Clone)]
pub struct ProbeTenant {
    pub tenant: String,
    pub tier: &'static str,
}

/// What a run found. It passes only with no leak, nothing wrongly allowed,
/// no unexpected answer and every probe tenant removed; a skipped kind (one
/// the deployment does not offer) does not fail it.
#[derive(Debug, Serialize, Clone)]
pub struct Report {
    pub probe_tenants: Vec<ProbeTenant>,
    pub attempts: Vec<Attempt>,
    pub denied: usize,
    pub leaks: usize,
    pub allowed: usize,
    pub unexpected: usize,
    pub skipped: Vec<Skip>,
    /// Probe tenants that could not be removed, with why.
    pub cleanup_errors: Vec<String>,
}

/// One line of the matrix: every attempt of one attacker on one victim's
/// kind with one action, and the forms that broke (at most five).
#[derive(Debug, Serialize, Clone)]
pub struct Row {
    pub attacker: String,
    pub victim: String,
    pub kind: &'static str,
    pub action: &'static str,
    pub tries: usize,
    pub result: &'static str,
    pub broken: Vec<String>,
}

/// Requests of the probe that take longer than this are errors, so a run
/// always ends.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs the whole probe; an error only when the probe itself could not run
/// (the probe tenants are removed either way).
pub async fn run(target: &Target) -> Result<Report, String> {
    let http = Http {
        // A connection per request: no attempt can ride on, or be confused
        // by, a connection another attempt left behind.
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("http client: {e}"))?,
        data: target.data_url.trim_end_matches('/').to_owned(),
        admin: target.admin_url.trim_end_matches('/').to_owned(),
        admin_token: target.admin_token.clone(),
        kb_skipped: OnceLock::new(),
        kb_planted: AtomicBool::new(false),
    };
    let run_id = random_hex(3);
    let mut probes = Vec::new();
    // Lifecycle probes that were offboarded and created again.
    let mut reborn: Vec<String> = Vec::new();
    let mut skipped: Vec<Skip> = Vec::new();
    let outcome = async {
        for tier in ["silo", "bridge", "pool"] {
            probes.push(plant(&http, &run_id, tier).await?);
        }
        baseline(&http, &probes).await?;
        let mut attempts = Vec::new();
        for attacker in &probes {
            for victim in &probes {
                if attacker.tenant != victim.tenant {
                    attempts.extend(attack(&http, attacker, victim).await?);
                }
            }
        }
        match foundation_models(&http, &run_id, &probes).await? {
            Outcome::Ran(fm) => attempts.extend(fm),
            Outcome::Skipped(reason) => skipped.push(Skip { kind: FM, reason }),
        }
        for victim in &probes {
            attempts.extend(integrity(&http, victim).await?);
        }
        for tier in ["silo", "bridge", "pool"] {
            attempts.extend(lifecycle(&http, &run_id, tier, &probes, &mut reborn).await?);
        }
        Ok::<_, String>(attempts)
    }
    .await;
    // Remove the probes whatever happened.
    let mut cleanup_errors = Vec::new();
    for tenant in probes.iter().map(|p| &p.tenant).chain(&reborn) {
        let r = http
            .send(http.admin(Method::DELETE, &format!("/admin/v1/tenants/{tenant}")))
            .await;
        match r {
            Ok(r) if r.status == StatusCode::NO_CONTENT => {}
            Ok(r) => cleanup_errors.push(format!("{tenant}: {}", r.status)),
            Err(e) => cleanup_errors.push(format!("{tenant}: {e}")),
        }
    }
    let attempts = outcome.map_err(|e| format!("verify-isolation could not run: {e}"))?;
    if let Some(reason) = http.kb_skipped.get() {
        skipped.insert(
            0,
            Skip {
                kind: "knowledge-base",
                reason: reason.clone(),
            },
        );
    }
    let count = |r: &str| attempts.iter().filter(|a| a.result == r).count();
    Ok(Report {
        probe_tenants: probes
            .iter()
            .map(|p| ProbeTenant {
                tenant: p.tenant.clone(),
                tier: p.tier,
            })
            .collect(),
        denied: count("denied"),
        leaks: count("LEAK"),
        allowed: count("ALLOWED"),
        unexpected: count("UNEXPECTED"),
        attempts,
        skipped,
        cleanup_errors,
    })
}

impl Report {
    pub fn passed(&self) -> bool {
        self.leaks + self.allowed + self.unexpected == 0 && self.cleanup_errors.is_empty()
    }

    /// Why the run failed, in one sentence; `None` when it passed.
    pub fn failure(&self) -> Option<String> {
        (!self.passed()).then(|| {
            let mut why = format!(
                "isolation verification FAILED: {} leak(s), {} wrongly allowed, {} unexpected answer(s)",
                self.leaks, self.allowed, self.unexpected
            );
            if !self.cleanup_errors.is_empty() {
                why.push_str(&format!(
                    "; probe tenants not removed: {}",
                    self.cleanup_errors.join(", ")
                ));
            }
            why
        })
    }

    /// One row per (attacker, victim, kind, action): denied, or the worst
    /// result (LEAK before the others) with the forms that broke.
    pub fn rows(&self) -> Vec<Row> {
        let mut rows: BTreeMap<(&str, &str, &str, &str), Row> = BTreeMap::new();
        for a in &self.attempts {
            let row = rows
                .entry((&a.attacker, &a.victim, a.kind, a.action))
                .or_insert_with(|| Row {
                    attacker: a.attacker.clone(),
                    victim: a.victim.clone(),
                    kind: a.kind,
                    action: a.action,
                    tries: 0,
                    result: "denied",
                    broken: Vec::new(),
                });
            row.tries += 1;
            if a.result != "denied" {
                if row.broken.len() < 5 {
                    row.broken
                        .push(format!("{} {} -> {}", a.principal, a.form, a.status));
                }
                if row.result != "LEAK" {
                    row.result = a.result;
                }
            }
        }
        rows.into_values().collect()
    }

    /// The matrix as text: a header, a line per row (and its broken forms),
    /// a line per skipped kind.
    pub fn matrix(&self) -> Vec<String> {
        let mut out = vec![format!(
            "{:<24} {:<24} {:<16} {:<15} {:>5}  result",
            "attacker", "victim", "kind", "action", "tries"
        )];
        for r in self.rows() {
            out.push(format!(
                "{:<24} {:<24} {:<16} {:<15} {:>5}  {}",
                r.attacker, r.victim, r.kind, r.action, r.tries, r.result
            ));
            out.extend(r.broken.iter().map(|b| format!("{:>28}{b}", "")));
        }
        for s in &self.skipped {
            out.push(format!(
                "{:<24} {:<24} {:<16} {:<15} {:>5}  skipped: {}",
                "(all)", "(all)", s.kind, "-", 0, s.reason
            ));
        }
        out
    }

    /// The closing line: counts, skipped kinds, whether the probes were removed.
    pub fn summary(&self) -> String {
        let skips = match self.skipped.len() {
            0 => String::new(),
            n => format!(
                "; {n} kind{} skipped ({})",
                if n == 1 { "" } else { "s" },
                self.skipped
                    .iter()
                    .map(|s| s.kind)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        format!(
            "{} attempts: {} denied, {} LEAK, {} ALLOWED, {} UNEXPECTED{skips}; probe tenants {}",
            self.attempts.len(),
            self.denied,
            self.leaks,
            self.allowed,
            self.unexpected,
            if self.cleanup_errors.is_empty() {
                "removed".to_owned()
            } else {
                format!("NOT all removed: {}", self.cleanup_errors.join(", "))
            }
        )
    }
}

/// The ids of a `/v1/models` answer.
pub fn model_ids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Creates a probe tenant and plants a canary in every kind it can own.
async fn plant(http: &Http, run_id: &str, tier: &'static str) -> Result<Probe, String> {
    plant_named(
        http,
        &format!("probe-{run_id}-{tier}"),
        tier,
        &random_hex(4),
    )
    .await
}

/// Creates probe tenant `tenant` and plants a fresh canary in every kind,
/// under names made from `nonce` (the same nonce gives the same names).
async fn plant_named(
    http: &Http,
    tenant: &str,
    tier: &'static str,
    nonce: &str,
) -> Result<Probe, String> {
    let tenant = tenant.to_owned();
    // The canary is secret content; names use a separate nonce, because an
    // error message may rightly echo a name the attacker itself sent.
    let canary = format!("cnry{}", random_hex(8));
    let body = http
        .ok(
            http.admin(Method::POST, "/admin/v1/tenants")
                .json(&json!({"id": tenant, "tier": tier, "tags": {"Canary": canary}})),
            "create probe tenant",
        )
        .await?;
    let key = body["api_key"].as_str().unwrap_or_default().to_owned();
    let model = format!("m-{nonce}");
    let seed = u64::from_str_radix(&canary[4..12], 16).unwrap_or(1);
    let onnx = fief_serving::onnx_builder::Mlp::seeded(&[4, 8, 2], seed).to_onnx();
    http.ok(
        http.data(&key, Method::PUT, &format!("/api/v1/models/{model}"))
            .header("content-type", "application/octet-stream")
            .body(onnx),
        "plant model",
    )
    .await?;
    http.ok(
        http.data(&key, Method::PUT, &format!("/api/v1/models/{model}/tags"))
            .json(&json!({"Canary": canary})),
        "tag model",
    )
    .await?;
    // A policy that permits everything: only the guardrail and the storage
    // scope stand between it and the other probes.
    let policy = format!("p-{nonce}");
    http.ok(
        http.data(&key, Method::PUT, &format!("/api/v1/policies/{policy}"))
            .header("content-type", "text/plain")
            .body(format!(
                "// {canary}\npermit (principal, action, resource);"
            )),
        "plant policy",
    )
    .await?;
    let role = format!("r-{nonce}");
    let external_id = format!("x-{nonce}-external");
    http.ok(
        http.data(&key, Method::PUT, &format!("/api/v1/roles/{role}"))
            .json(&json!({
                "trust_policy": format!("// {canary}\npermit (principal in Fief::Tenant::\"{tenant}\", action == Fief::Action::\"AssumeRole\", resource);"),
                "policies": [format!("// {canary}\npermit (principal, action, resource);")],
                "external_id": external_id,
            })),
        "plant role",
    )
    .await?;
    let s = http
        .ok_converged(
            http.data(&key, Method::POST, "/api/v1/sts/assume-role")
                .json(&json!({"role": role, "session_name": format!("s-{nonce}")})),
            "assume own role",
        )
        .await?;
    let kb = format!("kb-{nonce}");
    let kb_document = plant_knowledge(http, &key, &kb, nonce, &canary).await?;
    plant_log(http, &key, &canary, kb_document.is_some()).await?;
    let table = format!("t-{nonce}");
    http.ok(
        http.data(
            &key,
            Method::PUT,
            &format!("/api/v1/tables/{table}/items/item-{nonce}"),
        )
        .json(&json!({ "Canary": canary })),
        "plant table item",
    )
    .await?;
    // A lower limit for one of its roles, named with the canary: limits are
    // the tenant's own, listed only to it.
    http.ok(
        http.data(
            &key,
            Method::PUT,
            &format!("/api/v1/quotas/role:q-{canary}"),
        )
        .json(&json!({"requests_per_minute": 1_000_000})),
        "plant quota",
    )
    .await?;
    Ok(Probe {
        table,
        kb,
        kb_document,
        tenant,
        tier,
        session: s["token"].as_str().unwrap_or_default().to_owned(),
        canary,
        key,
        model,
        policy,
        role,
        external_id,
    })
}

/// The private log's canary: in the tenant's sealed settings (a redaction
/// pattern) and, when the deployment embeds, in a logged embedding input.
/// A deployment with private logs off (404) has none to plant.
async fn plant_log(http: &Http, key: &str, canary: &str, embeds: bool) -> Result<(), String> {
    let r = http
        .send(
            http.data(key, Method::PUT, "/api/v1/log-settings")
                .json(&json!({"redact": [format!("{canary}-never-logged")]})),
        )
        .await?;
    if r.status == StatusCode::NOT_FOUND {
        return Ok(());
    }
    if !r.status.is_success() {
        return Err(format!("plant log settings: {} {}", r.status, r.text));
    }
    if embeds {
        http.ok(
            http.data(key, Method::POST, "/v1/embeddings")
                .json(&json!({"input": format!("logged input {canary}")})),
            "plant a logged embedding",
        )
        .await?;
    }
    Ok(())
}

/// A knowledge base whose one document holds the canary; `None` once the
/// deployment turned out to have no embedder (the kind is then skipped:
/// without the canary in a document, a leak could not be seen).
async fn plant_knowledge(
    http: &Http,
    key: &str,
    kb: &str,
    nonce: &str,
    canary: &str,
) -> Result<Option<String>, String> {
    if http.kb_skipped.get().is_some() {
        return Ok(None);
    }
    let skip = || {
        if http.kb_planted.load(Ordering::Relaxed) {
            // Not a deployment without knowledge bases: a broken one.
            return Err("the embedder stopped working during the run".to_owned());
        }
        let _ = http.kb_skipped.set(KB_SKIP_REASON.to_owned());
        Ok(None)
    };
    let r = http
        .send(
            http.data(key, Method::POST, "/api/v1/knowledge-bases")
                .json(&json!({ "name": kb })),
        )
        .await?;
    if r.no_embedder() {
        return skip();
    }
    if !r.status.is_success() {
        return Err(format!("create knowledge base: {} {}", r.status, r.text));
    }
    let document = format!("d-{nonce}");
    let r = http
        .send(
            http.data(
                key,
                Method::PUT,
                &format!("/api/v1/knowledge-bases/{kb}/documents/{document}"),
            )
            .json(&json!({
                "text": format!("Volcano field notes: the secret reference is {canary}."),
                "metadata": {"Canary": canary},
            })),
        )
        .await?;
    if r.no_embedder() {
        return skip();
    }
    if r.status != StatusCode::CREATED {
        return Err(format!("plant knowledge document: {} {}", r.status, r.text));
    }
    http.kb_planted.store(true, Ordering::Relaxed);
    Ok(Some(document))
}

/// Each probe can use its own resources: a verifier that is refused
/// everything proves nothing.
async fn baseline(http: &Http, probes: &[Probe]) -> Result<(), String> {
    for p in probes {
        for cred in [&p.key, &p.session] {
            let r = http
                .send(http.data(cred, Method::GET, &format!("/api/v1/models/{}", p.model)))
                .await?;
            if r.status != StatusCode::OK || !r.text.contains(&p.canary) {
                return Err(format!(
                    "baseline: {} cannot read its own model ({})",
                    p.tenant, r.status
                ));
            }
            if p.kb_document.is_some() {
                let r = http
                    .send(
                        http.data(
                            cred,
                            Method::POST,
                            &format!("/api/v1/knowledge-bases/{}/query", p.kb),
                        )
                        .json(&json!({"query": "volcano field notes"})),
                    )
                    .await?;
                if r.status != StatusCode::OK || !r.text.contains(&p.canary) {
                    return Err(format!(
                        "baseline: {} cannot query its own knowledge base ({})",
                        p.tenant, r.status
                    ));
                }
            }
            let endpoint = if p.tier == "pool" {
                "shared"
            } else {
                &p.tenant
            };
            let r = http
                .send(invocation(
                    http,
                    cred,
                    endpoint,
                    &p.model,
                    json!({"inputs": [[0.1, 0.2, 0.3, 0.4]]}),
                ))
                .await?;
            if r.status != StatusCode::OK {
                return Err(format!(
                    "baseline: {} cannot invoke its own model ({}: {})",
                    p.tenant, r.status, r.text
                ));
            }
        }
    }
    Ok(())
}

/// `req` (built with the key as its bearer credential) signed instead with
/// the key's AWS pair: its id as the access key id, its secret as the
/// secret access key, as an AWS SDK would.
fn sigv4_signed(
    client: &reqwest::Client,
    req: reqwest::RequestBuilder,
    key: &str,
) -> Result<reqwest::RequestBuilder, String> {
    let (id, secret) = key
        .strip_prefix("fief_")
        .and_then(|rest| rest.split_once('_'))
        .ok_or("the probe key is not of the form fief_<id>_<secret>")?;
    let mut request = req.build().map_err(|e| format!("request: {e}"))?;
    let now = fief_sigv4::unix_now();
    fief_sigv4::sign_request(
        &mut request,
        id,
        secret.as_bytes(),
        "us-east-1",
        "sagemaker",
        now,
    )
    .map_err(|e| e.to_string())?;
    Ok(reqwest::RequestBuilder::from_parts(client.clone(), request))
}

fn invocation(
    http: &Http,
    cred: &str,
    endpoint: &str,
    target: &str,
    body: Value,
) -> reqwest::RequestBuilder {
    http.data(
        cred,
        Method::POST,
        &format!("/endpoints/{endpoint}/invocations"),
    )
    .header("x-amzn-sagemaker-target-model", target)
    .json(&body)
}

/// One attempt to make: a request and what it must show.
struct Try {
    kind: &'static str,
    action: &'static str,
    form: String,
    expect: Expect,
    req: reqwest::RequestBuilder,
}

async fn attack(http: &Http, a: &Probe, v: &Probe) -> Result<Vec<Attempt>, String> {
    let mut out = Vec::new();
    for (principal, cred) in [
        ("api-key", &a.key),
        ("session", &a.session),
        // The same key signing each request with AWS Signature V4.
        ("aws-sigv4", &a.key),
    ] {
        for t in tries(http, cred, a, v) {
            let req = if principal == "aws-sigv4" {
                sigv4_signed(&http.client, t.req, cred)?
            } else {
                t.req
            };
            let r = http.send(req).await?;
            let canary_seen = r.text.contains(&v.canary);
            let (result, detail) = if r.status.is_server_error() {
                ("UNEXPECTED", Some(format!("server error {}", r.status)))
            } else if canary_seen {
                (
                    "LEAK",
                    Some("the victim's canary is in the response".to_owned()),
                )
            } else if t.expect == Expect::Denied && r.status.is_success() {
                // Allowed, though nothing of the victim's came back: the
                // policy layer failed even if storage held.
                ("ALLOWED", Some(format!("succeeded with {}", r.status)))
            } else {
                ("denied", None)
            };
            out.push(Attempt {
                attacker: a.tenant.clone(),
                victim: v.tenant.clone(),
                principal,
                kind: t.kind,
                action: t.action,
                form: t.form,
                status: r.status.as_u16(),
                result,
                detail,
            });
        }
    }
    Ok(out)
}

/// What a kind's probe came to.
enum Outcome {
    Ran(Vec<Attempt>),
    Skipped(String),
}

const FM: &str = "foundation-model";

/// The foundation-model kind. Models belong to the deployment and the
/// operator decides who may call which, so the probe has the admin plane
/// give the first probe tenant (A) one model and the second (B) another, or
/// an empty allowlist when there is only one. Then: each lists only its own;
/// each calling the other's by every spelling and surface, or a name served
/// nowhere, gets the same 403 body (no existence oracle); and nothing a
/// client sends (`user`, `metadata`, tenant fields, headers) moves its call
/// anywhere else.
async fn foundation_models(http: &Http, run_id: &str, probes: &[Probe]) -> Result<Outcome, String> {
    let (Some(a), Some(b)) = (probes.first(), probes.get(1)) else {
        return Err("fewer than two probe tenants".into());
    };
    let mut listed = Vec::new();
    for p in [a, b] {
        let r = http
            .send(http.data(&p.key, Method::GET, "/v1/models"))
            .await?;
        if r.status == StatusCode::NOT_FOUND {
            return Ok(Outcome::Skipped(
                "the gateway has no foundation-model surface (GET /v1/models answers 404)".into(),
            ));
        }
        if r.status != StatusCode::OK {
            return Err(format!(
                "{} lists its foundation models: {} {}",
                p.tenant, r.status, r.text
            ));
        }
        listed.push(model_ids(&r.json()));
    }
    let Some(a_model) = listed[0].first().cloned() else {
        return Ok(Outcome::Skipped(
            "no foundation-model upstream is configured (or none is open to a new tenant)".into(),
        ));
    };
    let b_model = listed[1].iter().find(|m| **m != a_model).cloned();
    for (p, allow) in [
        (a, vec![a_model.clone()]),
        (b, b_model.iter().cloned().collect()),
    ] {
        http.ok(
            http.admin(Method::PATCH, &format!("/admin/v1/tenants/{}", p.tenant))
                .json(&json!({ "llm_models": allow })),
            "give a probe tenant its foundation-model allowlist",
        )
        .await?;
    }
    let nowhere = format!("fm-{run_id}-served-nowhere");
    let mut out = Vec::new();
    for (me, mine, other, theirs) in [
        (a, Some(&a_model), b, b_model.as_ref()),
        (b, b_model.as_ref(), a, Some(&a_model)),
    ] {
        for (principal, cred) in [("api-key", &me.key), ("session", &me.session)] {
            let who = Who {
                principal,
                cred,
                me,
                other,
            };
            out.extend(fm_listing(http, &who, mine).await?);
            out.extend(fm_cross(http, &who, theirs, &nowhere).await?);
            if let Some(m) = mine {
                out.extend(fm_own(http, &who, m).await?);
            }
        }
    }
    Ok(Outcome::Ran(out))
}

/// A probe tenant calling with one of its credentials; `other` is the
/// probe tenant the checks are about.
struct Who<'a> {
    principal: &'static str,
    cred: &'a str,
    me: &'a Probe,
    other: &'a Probe,
}

impl Who<'_> {
    fn attempt(&self, action: &'static str, form: String, r: &Reply) -> Attempt {
        Attempt {
            attacker: self.me.tenant.clone(),
            victim: self.other.tenant.clone(),
            principal: self.principal,
            kind: FM,
            action,
            form,
            status: r.status.as_u16(),
            result: "denied",
            detail: None,
        }
    }
}

fn judged(mut a: Attempt, verdict: Result<(), (&'static str, String)>) -> Attempt {
    if let Err((result, detail)) = verdict {
        a.result = result;
        a.detail = Some(detail);
    }
    a
}

/// At most `n` characters of a body, for details.
fn clip(s: &str, n: usize) -> String {
    let mut c: String = s.chars().take(n).collect();
    if c.len() < s.len() {
        c.push('…');
    }
    c
}

/// `GET /v1/models` lists the caller's own model and nothing else.
async fn fm_listing(
    http: &Http,
    w: &Who<'_>,
    mine: Option<&String>,
) -> Result<Vec<Attempt>, String> {
    let mut out = Vec::new();
    for (form, header) in [
        ("GET /v1/models", None),
        (
            "GET /v1/models, header x-tenant-id naming the other",
            Some(&w.other.tenant),
        ),
    ] {
        let mut req = http.data(w.cred, Method::GET, "/v1/models");
        if let Some(t) = header {
            req = req.header("x-tenant-id", t.as_str());
        }
        let r = http.send(req).await?;
        let ids = model_ids(&r.json());
        let foreign: Vec<&String> = ids.iter().filter(|m| Some(*m) != mine).collect();
        let verdict = if r.text.contains(&w.other.canary) {
            Err((
                "LEAK",
                "the other tenant's canary is in the response".to_owned(),
            ))
        } else if r.status != StatusCode::OK {
            Err((
                "UNEXPECTED",
                format!("listing answered {}: {}", r.status, clip(r.body(), 300)),
            ))
        } else if !foreign.is_empty() {
            Err((
                "LEAK",
                format!("lists models its allowlist leaves out: {foreign:?}"),
            ))
        } else if mine.is_some_and(|m| !ids.contains(m)) {
            Err(("UNEXPECTED", "its own model is not listed".to_owned()))
        } else {
            Ok(())
        };
        out.push(judged(w.attempt("list", form.into(), &r), verdict));
    }
    Ok(out)
}

/// Every byte not unreserved in a URL path, percent-encoded.
fn path_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

const URL_ENCODED: &str = "percent-encoded in the URL";

/// The other tenant's model (if it has one) by every spelling, and a name
/// served nowhere, on every surface: each must be the same 403 body as the
/// name served nowhere, apart from its request id.
async fn fm_cross(
    http: &Http,
    w: &Who<'_>,
    theirs: Option<&String>,
    nowhere: &str,
) -> Result<Vec<Attempt>, String> {
    // (form, the name as spelled, the Converse path segment)
    let mut forms = vec![(
        "a name served nowhere".to_owned(),
        nowhere.to_owned(),
        path_escape(nowhere),
    )];
    if let Some(m) = theirs {
        let spelled = [
            ("exact name", m.clone()),
            ("upper case", m.to_uppercase()),
            ("percent-encoded", encode_all(m)),
            ("tenant/name", format!("{}/{m}", w.other.tenant)),
            ("frn", format!("frn:fief:foundation-model:{m}")),
        ];
        for (form, name) in spelled {
            forms.push((form.to_owned(), name.clone(), path_escape(&name)));
        }
        // Encoded once in the URL only: the router decodes it to the name
        // (in a body this is the exact name again, so Converse only).
        forms.push((URL_ENCODED.to_owned(), m.clone(), encode_all(m)));
    }
    let mut out = Vec::new();
    for action in ["chat", "completions", "converse", "converse-stream"] {
        let mut reference: Option<String> = None;
        for (form, name, segment) in &forms {
            if form == URL_ENCODED && !action.starts_with("converse") {
                continue;
            }
            let req = match action {
                "chat" => http
                    .data(w.cred, Method::POST, "/v1/chat/completions")
                    .json(&json!({"model": name, "max_tokens": 8,
                        "messages": [{"role": "user", "content": "ping"}]})),
                "completions" => http
                    .data(w.cred, Method::POST, "/v1/completions")
                    .json(&json!({"model": name, "max_tokens": 8, "prompt": "ping"})),
                _ => http
                    .data(w.cred, Method::POST, &format!("/model/{segment}/{action}"))
                    .json(
                        &json!({"messages": [{"role": "user", "content": [{"text": "ping"}]}],
                        "inferenceConfig": {"maxTokens": 8}}),
                    ),
            };
            let r = http.send(req).await?;
            let verdict = match refusal(&r, action.starts_with("converse")) {
                _ if r.text.contains(&w.other.canary) => Err((
                    "LEAK",
                    "the other tenant's canary is in the response".to_owned(),
                )),
                Err(e) => Err(("LEAK", e)),
                Ok(body) => match &reference {
                    Some(want) if *want != body => Err((
                        "LEAK",
                        format!(
                            "the refusal differs from that of a name served nowhere \
                             (an existence oracle): {} vs {}",
                            clip(&body, 300),
                            clip(want, 300)
                        ),
                    )),
                    Some(_) => Ok(()),
                    None => {
                        reference = Some(body);
                        Ok(())
                    }
                },
            };
            let place = if action.starts_with("converse") {
                "in the path"
            } else {
                "in the body"
            };
            let form = if form == URL_ENCODED {
                form.clone()
            } else {
                format!("{form} {place}")
            };
            out.push(judged(w.attempt(action, form, &r), verdict));
        }
    }
    Ok(out)
}

/// A 403 AccessDenied body with its request id blanked, or what it was instead.
fn refusal(r: &Reply, bedrock: bool) -> Result<String, String> {
    let v = r.json();
    let denied = if bedrock {
        v["__type"] == "AccessDeniedException"
    } else {
        v["error"]["code"] == "AccessDenied"
    };
    if r.status != StatusCode::FORBIDDEN || !denied {
        return Err(format!(
            "answered {} instead of 403 AccessDenied: {}",
            r.status,
            clip(r.body(), 300)
        ));
    }
    let body = r.body();
    Ok(match v["error"]["request_id"].as_str() {
        Some(id) if !id.is_empty() => body.replace(id, ""),
        _ => body.to_owned(),
    })
}

/// The caller's own model answers, whole and streamed, and names itself as
/// the model the caller asked for (never an upstream id) even when the
/// request claims the other tenant every way a client could.
async fn fm_own(http: &Http, w: &Who<'_>, mine: &str) -> Result<Vec<Attempt>, String> {
    let other = w.other.tenant.as_str();
    let plain = json!({"model": mine, "max_tokens": 8,
        "messages": [{"role": "user", "content": "ping"}]});
    let mut claims = plain.clone();
    for (k, v) in [
        ("user", json!(format!("{other}-admin"))),
        ("metadata", json!({ "tenant": other })),
        ("tenant", json!(other)),
        ("tenant_id", json!(other)),
        ("priority", json!("high")),
    ] {
        claims[k] = v;
    }
    let mut streamed = claims.clone();
    streamed["stream"] = json!(true);
    let mut out = Vec::new();
    for (action, form, body) in [
        ("own model", "whole answer", plain),
        (
            "claims",
            "user, metadata, tenant fields and headers naming the other",
            claims,
        ),
        ("claims", "the same, streamed", streamed),
    ] {
        let stream = body["stream"] == json!(true);
        let mut req = http.data(w.cred, Method::POST, "/v1/chat/completions");
        if action == "claims" {
            req = req
                .header("x-tenant-id", other)
                .header("x-fief-tenant", other);
        }
        let r = http.send(req.json(&body)).await?;
        let verdict = if r.text.contains(&w.other.canary) {
            Err((
                "LEAK",
                "the other tenant's canary is in the response".to_owned(),
            ))
        } else if r.status != StatusCode::OK {
            Err((
                "UNEXPECTED",
                format!(
                    "its own model answered {}: {}",
                    r.status,
                    clip(r.body(), 300)
                ),
            ))
        } else {
            answer_models(r.body(), stream).and_then(|models| {
                match models.iter().find(|m| m.as_str() != mine) {
                    Some(m) => Err((
                        "LEAK",
                        format!("the answer names model {m:?}, not the {mine:?} asked for"),
                    )),
                    None if models.is_empty() => {
                        Err(("UNEXPECTED", "the answer names no model".to_owned()))
                    }
                    None => Ok(()),
                }
            })
        };
        out.push(judged(w.attempt(action, form.into(), &r), verdict));
    }
    Ok(out)
}

/// The `model` of a whole answer, or of every chunk of a streamed one (which
/// must end with `[DONE]`, not an error).
fn answer_models(body: &str, stream: bool) -> Result<Vec<String>, (&'static str, String)> {
    let model = |v: &Value| v["model"].as_str().map(str::to_owned);
    if !stream {
        let v: Value = serde_json::from_str(body)
            .map_err(|_| ("UNEXPECTED", format!("not JSON: {}", clip(body, 300))))?;
        return Ok(model(&v).into_iter().collect());
    }
    let mut models = Vec::new();
    for event in SseSplitter::default().push(body.as_bytes()) {
        let data = match event {
            SseData::Done => return Ok(models),
            SseData::Json(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        };
        let v: Value = serde_json::from_str(&data).map_err(|_| {
            (
                "UNEXPECTED",
                format!("an event is not JSON: {}", clip(&data, 300)),
            )
        })?;
        if v.get("error").is_some() {
            return Err((
                "UNEXPECTED",
                format!("the stream ended with an error: {}", clip(&data, 300)),
            ));
        }
        models.extend(model(&v));
    }
    Err(("UNEXPECTED", "the stream ended without [DONE]".to_owned()))
}

/// Every action on every kind of `v`'s, through every addressing form.
fn tries(http: &Http, cred: &str, a: &Probe, v: &Probe) -> Vec<Try> {
    let mut t = Vec::new();
    let input = json!({"inputs": [[0.1, 0.2, 0.3, 0.4]]});
    let own_endpoint = if a.tier == "pool" {
        "shared".to_owned()
    } else {
        a.tenant.clone()
    };
    let upper = v.tenant.to_uppercase();
    let qualified = format!("{}/{}", v.tenant, v.model);

    // Models, addressed in the path.
    let path_forms = vec![
        ("tenant/name", format!("{}%2F{}", v.tenant, v.model)),
        ("frn", format!("frn:fief:model:{}%2F{}", v.tenant, v.model)),
        ("percent-encoded", encode_all(&qualified)),
        ("case variant", format!("{upper}%2F{}", v.model)),
        (
            "FRN case variant",
            format!("FRN:FIEF:MODEL:{}%2F{}", v.tenant, v.model),
        ),
        ("trailing slash", format!("{}%2F{}/", v.tenant, v.model)),
        ("path traversal", format!("..%2F{}%2F{}", v.tenant, v.model)),
        ("dot segments", format!("{}%2F.%2F{}", v.tenant, v.model)),
    ];
    let onnx = fief_serving::onnx_builder::Mlp::seeded(&[4, 8, 2], 99).to_onnx();
    for (form, p) in &path_forms {
        let path = format!("/api/v1/models/{p}");
        let denied = |kind, action, req| Try {
            kind,
            action,
            form: (*form).to_owned(),
            expect: Expect::Denied,
            req,
        };
        t.push(denied("model", "get", http.data(cred, Method::GET, &path)));
        t.push(denied(
            "model",
            "delete",
            http.data(cred, Method::DELETE, &path),
        ));
        t.push(denied(
            "model",
            "put",
            http.data(cred, Method::PUT, &path)
                .header("content-type", "application/octet-stream")
                .body(onnx.clone()),
        ));
        t.push(denied(
            "model",
            "tag",
            http.data(cred, Method::PUT, &format!("/api/v1/models/{p}/tags"))
                .json(&json!({"Canary": "overwritten"})),
        ));
    }
    // Models, addressed in the target header, on every endpoint.
    let header_forms = vec![
        ("tenant/name", qualified.clone()),
        ("frn", format!("frn:fief:model:{qualified}")),
        ("case variant", format!("{upper}/{}", v.model)),
        ("path traversal", format!("../{qualified}")),
        ("leading slash", format!("/{qualified}")),
        ("percent-encoded", encode_all(&qualified)),
    ];
    for endpoint in ["shared".to_owned(), v.tenant.clone(), own_endpoint.clone()] {
        for (form, target) in &header_forms {
            t.push(Try {
                kind: "model",
                action: "invoke",
                form: format!("header {form} via /endpoints/{endpoint}"),
                expect: Expect::Denied,
                req: invocation(http, cred, &endpoint, target, input.clone()),
            });
        }
    }
    // The model named in a body field instead of the header.
    let mut with_model = input.clone();
    with_model["model"] = json!(qualified);
    t.push(Try {
        kind: "model",
        action: "invoke",
        form: "body field".into(),
        expect: Expect::Denied,
        req: http
            .data(
                cred,
                Method::POST,
                &format!("/endpoints/{own_endpoint}/invocations"),
            )
            .json(&with_model),
    });
    // The victim's endpoint with the attacker's own model.
    for (form, endpoint) in [
        ("endpoint path", v.tenant.clone()),
        ("case variant", upper.clone()),
        ("percent-encoded", encode_all(&v.tenant)),
    ] {
        t.push(Try {
            kind: "endpoint",
            action: "invoke",
            form: form.into(),
            expect: Expect::Denied,
            req: invocation(http, cred, &endpoint, &a.model, input.clone()),
        });
    }
    // Policies and roles live in the caller's namespace; naming another
    // tenant's must not reach it.
    for (kind, collection, name) in [
        ("policy", "policies", &v.policy),
        ("role", "roles", &v.role),
    ] {
        for (form, p) in [
            ("tenant/name", format!("{}%2F{name}", v.tenant)),
            ("frn", format!("frn:fief:{kind}:{}%2F{name}", v.tenant)),
            ("bare name", name.clone()),
        ] {
            let path = format!("/api/v1/{collection}/{p}");
            t.push(Try {
                kind,
                action: "get",
                form: form.into(),
                expect: Expect::Denied,
                req: http.data(cred, Method::GET, &path),
            });
            t.push(Try {
                kind,
                action: "delete",
                form: form.into(),
                expect: Expect::Denied,
                req: http.data(cred, Method::DELETE, &path),
            });
            // A write under a bare name lands in the caller's own namespace,
            // so only the cross-tenant forms are tried.
            if form != "bare name" {
                let req = if kind == "policy" {
                    http.data(cred, Method::PUT, &path)
                        .header("content-type", "text/plain")
                        .body("permit (principal, action, resource);")
                } else {
                    http.data(cred, Method::PUT, &path)
                        .json(&json!({"trust_policy": "permit (principal, action, resource);"}))
                };
                t.push(Try {
                    kind,
                    action: "put",
                    form: form.into(),
                    expect: Expect::Denied,
                    req,
                });
            }
        }
        let explain = json!({"action": if kind == "policy" { "GetPolicy" } else { "GetRole" },
                             "resource": format!("frn:fief:{kind}:{}/{name}", v.tenant)});
        t.push(Try {
            kind,
            action: "explain",
            form: "frn".into(),
            expect: Expect::OwnOnly,
            req: http
                .data(cred, Method::POST, "/api/v1/policies/explain")
                .json(&explain),
        });
    }
    // Sessions: assume the victim's role, with its real external id.
    for (form, role) in [
        ("tenant/name", format!("{}/{}", v.tenant, v.role)),
        ("frn", format!("frn:fief:role:{}/{}", v.tenant, v.role)),
        ("case variant", format!("{upper}/{}", v.role)),
    ] {
        t.push(Try {
            kind: "session",
            action: "assume-role",
            form: form.into(),
            expect: Expect::Denied,
            req: http
                .data(cred, Method::POST, "/api/v1/sts/assume-role")
                .json(
                    &json!({"role": role, "session_name": "verify", "external_id": v.external_id}),
                ),
        });
    }
    // Listings with the victim named in headers and queries: the caller's own data only.
    for (form, name, value) in [
        ("header", "x-fief-tenant", v.tenant.as_str()),
        ("header", "x-tenant-id", v.tenant.as_str()),
    ] {
        for path in [
            "/api/v1/models",
            "/api/v1/policies",
            "/api/v1/roles",
            "/api/v1/me",
        ] {
            t.push(Try {
                kind: "tenant",
                action: "list",
                form: format!("{form} {name} on {path}"),
                expect: Expect::OwnOnly,
                req: http.data(cred, Method::GET, path).header(name, value),
            });
        }
    }
    for path in [
        format!("/api/v1/models?tenant={}", v.tenant),
        format!("/api/v1/models?owner={}", v.tenant),
    ] {
        t.push(Try {
            kind: "tenant",
            action: "list",
            form: format!("query {path}"),
            expect: Expect::OwnOnly,
            req: http.data(cred, Method::GET, &path),
        });
    }
    // Knowledge bases (unless the kind is skipped: no canary document).
    if a.kb_document.is_some() && v.kb_document.is_some() {
        knowledge_tries(&mut t, http, cred, a, v);
    }
    // Tenant tables, addressed in the path, every operation.
    for (form, p) in [
        ("tenant/name", format!("{}%2F{}", v.tenant, v.table)),
        ("frn", format!("frn:fief:table:{}%2F{}", v.tenant, v.table)),
        (
            "percent-encoded",
            encode_all(&format!("{}/{}", v.tenant, v.table)),
        ),
        ("case variant", format!("{upper}%2F{}", v.table)),
    ] {
        let item = format!("/api/v1/tables/{p}/items/item-{}", &v.table[2..]);
        for (action, req) in [
            ("get item", http.data(cred, Method::GET, &item)),
            (
                "list",
                http.data(cred, Method::GET, &format!("/api/v1/tables/{p}/items")),
            ),
            (
                "put item",
                http.data(cred, Method::PUT, &item)
                    .json(&json!("overwritten")),
            ),
            ("delete item", http.data(cred, Method::DELETE, &item)),
        ] {
            t.push(Try {
                kind: "table",
                action,
                form: form.to_owned(),
                expect: Expect::Denied,
                req,
            });
        }
    }
    // The attacker's own table under the victim's names: its own, or nothing.
    t.push(Try {
        kind: "table",
        action: "get item",
        form: "own table, the victim's table and item names".into(),
        expect: Expect::OwnOnly,
        req: http.data(
            cred,
            Method::GET,
            &format!("/api/v1/tables/{}/items/item-{}", v.table, &v.table[2..]),
        ),
    });
    // Quotas: the caller's own levels and subjects only; another tenant's
    // addressed by name is not a subject of the caller's.
    t.push(Try {
        kind: "quota",
        action: "list",
        form: "own listing".into(),
        expect: Expect::OwnOnly,
        req: http.data(cred, Method::GET, "/api/v1/quotas"),
    });
    for (form, subject) in [
        ("tenant/subject", format!("{}%2Frole:q-x", v.tenant)),
        ("frn", format!("frn:fief:role:{}%2Fq-x", v.tenant)),
    ] {
        let path = format!("/api/v1/quotas/{subject}");
        t.push(Try {
            kind: "quota",
            action: "put",
            form: form.into(),
            expect: Expect::Denied,
            req: http
                .data(cred, Method::PUT, &path)
                .json(&json!({"requests_per_minute": 1})),
        });
        t.push(Try {
            kind: "quota",
            action: "delete",
            form: form.into(),
            expect: Expect::Denied,
            req: http.data(cred, Method::DELETE, &path),
        });
    }
    // Usage: the caller's own only; naming the victim is refused, and the
    // operator's views and invoices are not reachable with a tenant credential.
    t.push(Try {
        kind: "usage",
        action: "read",
        form: "own usage".into(),
        expect: Expect::OwnOnly,
        req: http.data(cred, Method::GET, "/api/v1/usage?group_by=model,principal"),
    });
    t.push(Try {
        kind: "usage",
        action: "read",
        form: "?tenant= the victim".into(),
        expect: Expect::Denied,
        req: http.data(
            cred,
            Method::GET,
            &format!("/api/v1/usage?tenant={}", v.tenant),
        ),
    });
    for path in [
        "/admin/v1/usage".to_owned(),
        format!("/admin/v1/invoices/{}", current_month()),
    ] {
        t.push(Try {
            kind: "usage",
            action: "read",
            form: format!("admin listener {path}, tenant credential"),
            expect: Expect::Denied,
            req: http
                .client
                .get(format!("{}{path}", http.admin))
                .bearer_auth(cred),
        });
    }
    // Private logs: the caller's own records, settings and sink only;
    // naming the victim is refused; no admin route serves them.
    for path in [
        "/api/v1/logs?limit=1000".to_owned(),
        format!("/api/v1/logs?model={}", v.model),
        "/api/v1/log-settings".to_owned(),
        "/api/v1/log-sink".to_owned(),
    ] {
        t.push(Try {
            kind: "private-log",
            action: "read",
            form: format!("own {path}"),
            expect: Expect::OwnOnly,
            req: http.data(cred, Method::GET, &path),
        });
    }
    t.push(Try {
        kind: "private-log",
        action: "read",
        form: "?tenant= the victim".into(),
        expect: Expect::Denied,
        req: http.data(
            cred,
            Method::GET,
            &format!("/api/v1/logs?tenant={}", v.tenant),
        ),
    });
    t.push(Try {
        kind: "private-log",
        action: "read",
        form: "admin listener, tenant credential".into(),
        expect: Expect::Denied,
        req: http
            .client
            .get(format!("{}/api/v1/logs", http.admin))
            .bearer_auth(cred),
    });
    // Logs: the audit trail is the operator's, on the admin listener only.
    let audit = format!("/admin/v1/audit?tenant={}", v.tenant);
    t.push(Try {
        kind: "logs",
        action: "read",
        form: "data listener".into(),
        expect: Expect::Denied,
        req: http.data(cred, Method::GET, &audit),
    });
    t.push(Try {
        kind: "logs",
        action: "read",
        form: "admin listener, tenant credential".into(),
        expect: Expect::Denied,
        req: http
            .client
            .get(format!("{}{audit}", http.admin))
            .bearer_auth(cred),
    });
    // The chain's verification and its anchor are the operator's too.
    for (method, path) in [
        (Method::GET, "/admin/v1/audit/verify"),
        (Method::POST, "/admin/v1/audit/anchor"),
    ] {
        t.push(Try {
            kind: "logs",
            action: if method == Method::GET {
                "read"
            } else {
                "write"
            },
            form: format!("admin listener {path}, tenant credential"),
            expect: Expect::Denied,
            req: http
                .client
                .request(method, format!("{}{path}", http.admin))
                .bearer_auth(cred),
        });
    }
    t
}

/// Every action on `v`'s knowledge base through every addressing form, and
/// `a`'s own base asked for `v`'s content.
fn knowledge_tries(t: &mut Vec<Try>, http: &Http, cred: &str, a: &Probe, v: &Probe) {
    let upper = v.tenant.to_uppercase();
    // Knowledge bases, addressed in the path, every operation.
    let kb_forms = [
        ("tenant/name", format!("{}%2F{}", v.tenant, v.kb)),
        (
            "frn",
            format!("frn:fief:knowledge-base:{}%2F{}", v.tenant, v.kb),
        ),
        (
            "percent-encoded",
            encode_all(&format!("{}/{}", v.tenant, v.kb)),
        ),
        ("case variant", format!("{upper}%2F{}", v.kb)),
        ("path traversal", format!("..%2F{}%2F{}", v.tenant, v.kb)),
    ];
    // Bedrock agent-runtime's shapes: the base in the path, and in the body
    // (before the tries below, whose last one deletes the base when a
    // layer is off).
    let named = [
        ("tenant/name", format!("{}/{}", v.tenant, v.kb)),
        (
            "frn",
            format!("frn:fief:knowledge-base:{}/{}", v.tenant, v.kb),
        ),
        ("case variant", format!("{upper}/{}", v.kb)),
    ];
    for (form, p) in &kb_forms {
        t.push(Try {
            kind: "knowledge-base",
            action: "bedrock retrieve",
            form: (*form).to_owned(),
            expect: Expect::Denied,
            req: http
                .data(cred, Method::POST, &format!("/knowledgebases/{p}/retrieve"))
                .json(&json!({"retrievalQuery": {"text": "volcano field notes secret reference"}})),
        });
    }
    for (form, id) in &named {
        t.push(Try {
            kind: "knowledge-base",
            action: "bedrock retrieve-and-generate",
            form: (*form).to_owned(),
            expect: Expect::Denied,
            req: http
                .data(cred, Method::POST, "/retrieveAndGenerate")
                .json(&json!({
                    "input": {"text": "volcano field notes secret reference"},
                    "retrieveAndGenerateConfiguration": {"type": "KNOWLEDGE_BASE",
                        "knowledgeBaseConfiguration": {"knowledgeBaseId": id, "modelArn": "any"}},
                })),
        });
    }
    let doc = v.kb_document.clone().unwrap_or_else(|| "d".into());
    for (form, p) in &kb_forms {
        let base = format!("/api/v1/knowledge-bases/{p}");
        for (action, method, suffix, body) in [
            ("get", Method::GET, String::new(), None),
            ("list documents", Method::GET, "/documents".to_owned(), None),
            (
                "query",
                Method::POST,
                "/query".to_owned(),
                Some(json!({"query": "volcano field notes secret reference"})),
            ),
            (
                "put document",
                Method::PUT,
                format!("/documents/{doc}"),
                Some(json!({"text": "overwritten by another tenant"})),
            ),
            (
                "delete document",
                Method::DELETE,
                format!("/documents/{doc}"),
                None,
            ),
            (
                "answer",
                Method::POST,
                "/answer".to_owned(),
                Some(json!({"query": "volcano field notes secret reference", "model": "any"})),
            ),
            ("delete", Method::DELETE, String::new(), None),
        ] {
            let mut req = http.data(cred, method, &format!("{base}{suffix}"));
            if let Some(b) = body {
                req = req.json(&b);
            }
            t.push(Try {
                kind: "knowledge-base",
                action,
                form: (*form).to_owned(),
                expect: Expect::Denied,
                req,
            });
        }
    }
    // The attacker's own knowledge base, asked for the victim's content.
    let own_query = format!("/api/v1/knowledge-bases/{}/query", a.kb);
    t.push(Try {
        kind: "knowledge-base",
        action: "query",
        form: "own base, the victim's text as query".into(),
        expect: Expect::OwnOnly,
        req: http
            .data(cred, Method::POST, &own_query)
            .json(&json!({"query": format!("Volcano field notes: the secret reference is {}", v.canary), "top_k": 100})),
    });
    for key in ["tenant", "tenant_id", "TenantId"] {
        t.push(Try {
            kind: "knowledge-base",
            action: "query",
            form: format!("own base, filter naming the victim as `{key}`"),
            expect: Expect::Denied,
            req: http
                .data(cred, Method::POST, &own_query)
                .json(&json!({"query": "volcano", "filter": {key: v.tenant}})),
        });
    }
    t.push(Try {
        kind: "knowledge-base",
        action: "query",
        form: "own base, the victim named inside an `or` filter".into(),
        expect: Expect::Denied,
        req: http.data(cred, Method::POST, &own_query).json(
            &json!({"query": "volcano", "filter": {"or": [{"topic": "x"}, {"tenant_id": {"in": [v.tenant]}}]}}),
        ),
    });
    t.push(Try {
        kind: "knowledge-base",
        action: "list",
        form: "header x-fief-tenant".into(),
        expect: Expect::OwnOnly,
        req: http
            .data(cred, Method::GET, "/api/v1/knowledge-bases")
            .header("x-fief-tenant", v.tenant.as_str()),
    });
}

/// The victim's canary data is exactly as planted, in every kind: refused
/// writes must not have happened anyway.
async fn integrity(http: &Http, v: &Probe) -> Result<Vec<Attempt>, String> {
    let mut out = vec![
        unchanged(
            http,
            v,
            ("model", "victim reads its canary model", "model"),
            &format!("/api/v1/models/{}", v.model),
            |m| m["version"] == json!(1) && m["tags"]["Canary"] == json!(v.canary),
        )
        .await?,
        unchanged(
            http,
            v,
            ("table", "victim reads its canary item", "item"),
            &format!("/api/v1/tables/{}/items/item-{}", v.table, &v.table[2..]),
            |i| i["version"] == json!(1) && i["value"]["Canary"] == json!(v.canary),
        )
        .await?,
        unchanged(
            http,
            v,
            ("quota", "victim lists its role's limit", "quota"),
            "/api/v1/quotas",
            |q| {
                q["subjects"]
                    == json!([{"subject": format!("role:q-{}", v.canary),
                               "limits": {"requests_per_minute": 1_000_000}}])
            },
        )
        .await?,
    ];
    if let Some(doc) = &v.kb_document {
        out.push(
            unchanged(
                http,
                v,
                ("knowledge-base", "victim lists its documents", "documents"),
                &format!("/api/v1/knowledge-bases/{}/documents", v.kb),
                |d| {
                    let have: Vec<&str> = d["documents"]
                        .as_array()
                        .map(|d| d.iter().filter_map(|x| x["id"].as_str()).collect())
                        .unwrap_or_default();
                    have == [doc.as_str()]
                },
            )
            .await?,
        );
    }
    Ok(out)
}

/// One integrity check: the victim GETs `path` and `intact` judges the body.
async fn unchanged(
    http: &Http,
    v: &Probe,
    (kind, form, what): (&'static str, &str, &str),
    path: &str,
    intact: impl Fn(&Value) -> bool,
) -> Result<Attempt, String> {
    let r = http.send(http.data(&v.key, Method::GET, path)).await?;
    let body = r.text.split_once('\n').map(|(_, b)| b).unwrap_or("");
    let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let intact = r.status == StatusCode::OK && intact(&value);
    Ok(Attempt {
        attacker: "(all)".into(),
        victim: v.tenant.clone(),
        principal: "-",
        kind,
        action: "integrity",
        form: form.into(),
        status: r.status.as_u16(),
        result: if intact { "denied" } else { "LEAK" },
        detail: (!intact).then(|| format!("the victim's {what} changed or vanished: {body}")),
    })
}

/// The lifecycle probe of one tier: a tenant whose every kind of
/// credential (API key, scoped key, role session, a session another tenant
/// assumed) is recorded, then offboarded and created again with the same id,
/// writing resources of the same names. Every old credential, on every
/// route, must be refused, and the new tenant's canary must appear nowhere.
async fn lifecycle(
    http: &Http,
    run_id: &str,
    tier: &'static str,
    probes: &[Probe],
    reborn: &mut Vec<String>,
) -> Result<Vec<Attempt>, String> {
    let id = format!("probe-{run_id}-life-{tier}");
    let first = plant_named(http, &id, tier, &format!("life{tier}")).await?;
    // Its role trusts another probe too, which assumes it with the external id.
    let peer = probes.first().ok_or("no probe tenants")?;
    http.ok(
        http.data(&first.key, Method::PUT, &format!("/api/v1/roles/{}-x", first.role))
            .json(&json!({
                "trust_policy": format!("permit (principal in Fief::Tenant::\"{}\", action == Fief::Action::\"AssumeRole\", resource);", peer.tenant),
                "policies": ["permit (principal, action, resource);"],
                "external_id": first.external_id,
            })),
        "plant cross-tenant role",
    )
    .await?;
    let assumed = http
        .ok_converged(
            http.data(&peer.key, Method::POST, "/api/v1/sts/assume-role")
                .json(&json!({
                    "role": format!("{id}/{}-x", first.role),
                    "session_name": "verify-life",
                    "external_id": first.external_id,
                })),
            "assume the lifecycle probe's role from another tenant",
        )
        .await?;
    let scoped = http
        .ok(
            http.admin(Method::POST, &format!("/admin/v1/tenants/{id}/api-keys"))
                .json(&json!({"name": "verify-scoped", "role": first.role})),
            "create scoped key",
        )
        .await?;
    let old: Vec<(&'static str, String)> = vec![
        ("api-key", first.key.clone()),
        (
            "scoped-key",
            scoped["api_key"].as_str().unwrap_or_default().to_owned(),
        ),
        ("session", first.session.clone()),
        (
            "cross-tenant session",
            assumed["token"].as_str().unwrap_or_default().to_owned(),
        ),
    ];
    let r = http
        .send(http.admin(Method::DELETE, &format!("/admin/v1/tenants/{id}")))
        .await?;
    if r.status != StatusCode::NO_CONTENT {
        return Err(format!(
            "offboard lifecycle probe {id}: {} {}",
            r.status, r.text
        ));
    }
    // The same id, the same names, new content.
    let second = plant_named(http, &id, tier, &format!("life{tier}")).await?;
    reborn.push(id.clone());
    let endpoint = if tier == "pool" {
        "shared".to_owned()
    } else {
        id.clone()
    };
    let item = format!(
        "/api/v1/tables/{}/items/item-{}",
        second.table,
        &second.table[2..]
    );
    let mut out = Vec::new();
    for (principal, cred) in &old {
        let mut routes: Vec<(&'static str, &'static str, reqwest::RequestBuilder)> = vec![
            (
                "tenant",
                "whoami",
                http.data(cred, Method::GET, "/api/v1/me"),
            ),
            (
                "model",
                "list",
                http.data(cred, Method::GET, "/api/v1/models"),
            ),
            (
                "model",
                "get",
                http.data(
                    cred,
                    Method::GET,
                    &format!("/api/v1/models/{}", second.model),
                ),
            ),
            (
                "model",
                "invoke",
                invocation(
                    http,
                    cred,
                    &endpoint,
                    &second.model,
                    json!({"inputs": [[0.1, 0.2, 0.3, 0.4]]}),
                ),
            ),
            (
                "policy",
                "get",
                http.data(
                    cred,
                    Method::GET,
                    &format!("/api/v1/policies/{}", second.policy),
                ),
            ),
            (
                "role",
                "get",
                http.data(cred, Method::GET, &format!("/api/v1/roles/{}", second.role)),
            ),
            (
                "session",
                "assume-role",
                http.data(cred, Method::POST, "/api/v1/sts/assume-role")
                    .json(&json!({"role": second.role, "session_name": "replay"})),
            ),
            ("table", "get item", http.data(cred, Method::GET, &item)),
            (
                "table",
                "put item",
                http.data(cred, Method::PUT, &item)
                    .json(&json!("overwritten")),
            ),
        ];
        if second.kb_document.is_some() {
            routes.push((
                "knowledge-base",
                "query",
                http.data(
                    cred,
                    Method::POST,
                    &format!("/api/v1/knowledge-bases/{}/query", second.kb),
                )
                .json(&json!({"query": "volcano field notes secret reference"})),
            ));
        }
        for (kind, action, req) in routes {
            let r = http.send(req).await?;
            let (result, detail) = if r.status.is_server_error() {
                ("UNEXPECTED", Some(format!("server error {}", r.status)))
            } else if r.text.contains(&second.canary) {
                (
                    "LEAK",
                    Some("the new tenant's canary reached an old credential".to_owned()),
                )
            } else if r.status != StatusCode::UNAUTHORIZED {
                (
                    "ALLOWED",
                    Some(format!(
                        "an offboarded tenant's credential got {}",
                        r.status
                    )),
                )
            } else {
                ("denied", None)
            };
            out.push(Attempt {
                attacker: format!("{id} (offboarded)"),
                victim: format!("{id} (re-created)"),
                principal,
                kind,
                action,
                form: "old credential".into(),
                status: r.status.as_u16(),
                result,
                detail,
            });
        }
    }
    out.extend(integrity(http, &second).await?);
    Ok(out)
}

/// (attacker, victim, kind, action)
/// `YYYY-MM` now (UTC).
fn current_month() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    let (y, m, _) = fief_core::civil::from_days(days);
    format!("{y:04}-{m:02}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            text: format!("{{}}\n{body}"),
        }
    }

    #[test]
    fn refusals_compare_without_their_request_id() {
        let a = reply(
            403,
            r#"{"error":{"code":"AccessDenied","message":"access denied","request_id":"r-1"}}"#,
        );
        let b = reply(
            403,
            r#"{"error":{"code":"AccessDenied","message":"access denied","request_id":"r-22"}}"#,
        );
        assert_eq!(refusal(&a, false).unwrap(), refusal(&b, false).unwrap());
        // A message naming the model is a different body: an oracle.
        let c = reply(
            403,
            r#"{"error":{"code":"AccessDenied","message":"no model m","request_id":"r-3"}}"#,
        );
        assert_ne!(refusal(&a, false).unwrap(), refusal(&c, false).unwrap());
        assert!(refusal(&reply(404, r#"{"error":{"code":"NotFound"}}"#), false).is_err());
        assert!(refusal(&reply(200, "{}"), false).is_err());
        let bedrock = reply(
            403,
            r#"{"__type":"AccessDeniedException","message":"access denied"}"#,
        );
        assert!(refusal(&bedrock, true).is_ok());
        assert!(refusal(&bedrock, false).is_err());
    }

    #[test]
    fn streamed_answers_name_every_chunk_model_and_must_end() {
        let ok = "data: {\"model\":\"m\"}\n\ndata: {\"model\":\"m\"}\n\ndata: [DONE]\n\n";
        assert_eq!(answer_models(ok, true).unwrap(), ["m", "m"]);
        let cut = "data: {\"model\":\"m\"}\n\n";
        assert_eq!(answer_models(cut, true).unwrap_err().0, "UNEXPECTED");
        let broke = "data: {\"model\":\"m\"}\n\ndata: {\"error\":{}}\n\n";
        assert!(answer_models(broke, true).unwrap_err().1.contains("error"));
        assert_eq!(answer_models(r#"{"model":"x"}"#, false).unwrap(), ["x"]);
    }

    #[test]
    fn path_segments_escape_slashes_and_percent_signs() {
        assert_eq!(path_escape("org/Big-1.5"), "org%2FBig-1.5");
        assert_eq!(path_escape("%6D"), "%256D");
    }
}
