//! `fief demo`: the isolation story end to end on an embedded server in a
//! temporary directory. Every step checks what it shows; any surprise makes
//! the demo fail with a non-zero exit.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use fief_config::{Config, LlmModelConfig, LlmModelEntry, UpstreamConfig};
use fief_llm_mock::{MockOptions, MockUpstream};
use fief_serving::onnx_builder::Mlp;

use crate::client::{Client, Plane};

type DemoResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn expect(ok: bool, what: &str) -> DemoResult {
    if ok {
        Ok(())
    } else {
        Err(format!("demo check failed: {what}").into())
    }
}

fn step(n: usize, text: &str) {
    crate::outln!("\n[{n}] {text}");
}

pub async fn run() -> DemoResult {
    let dir = tempfile::tempdir()?;
    // Two local OpenAI-compatible upstreams stand in for GPU servers: a
    // shared pool, and a deployment dedicated to hr.
    let pool = MockUpstream::start(MockOptions {
        name: "pool-gpu".into(),
        chunks: 6,
        // Slow enough to see the answer arrive piece by piece.
        chunk_delay: Duration::from_millis(120),
        models: vec!["llama-3.1-8b".into(), "llama-3.1-70b".into()],
        ..Default::default()
    })
    .await?;
    let dedicated = MockUpstream::start(MockOptions {
        name: "hr-dedicated".into(),
        models: vec!["hr-llama-ft".into()],
        ..Default::default()
    })
    .await?;
    // The demo ignores FIEF_* variables so it behaves the same everywhere.
    let mut config = Config::ephemeral(dir.path());
    config.llm.upstreams = demo_upstreams(&pool, &dedicated);
    // A burst of a whole minute's requests, so the quota scene's 3 a minute is 3 at once.
    config.quotas.request_burst_secs = 60;
    // One price list for everything, so the invoice scene has money on it.
    config.pricing = vec![fief_config::PriceEntry {
        effective: None,
        model: None,
        prompt_per_million: Some("0.50".into()),
        completion_per_million: Some("1.50".into()),
        embedding_per_million: None,
        compute_second: Some("0.0001".into()),
        gb_month: None,
        per_thousand_requests: Some("0.40".into()),
    }];
    let pool_key = format!(
        "sk-demo-{:016x}",
        rand::RngCore::next_u64(&mut rand::rngs::OsRng)
    );
    let mut secrets = fief_server::Secrets::default();
    // Handed over in-process, as `api_key_env` would read it from the environment.
    secrets
        .upstream_keys
        .insert(POOL_KEY_ENV.into(), pool_key.clone());
    let server = fief_server::start(config, secrets).await?;
    let data = format!("http://{}", server.data_addr);
    let admin = Client::new(
        &format!("http://{}", server.admin_addr),
        &server.admin_token,
        Plane::Admin,
    );

    crate::outln!("fief demo: an embedded gateway in {}", dir.path().display());
    crate::outln!(
        "  data plane  {data}\n  admin plane http://{}",
        server.admin_addr
    );

    step(
        1,
        "The operator onboards two tenants (admin plane, admin token)",
    );
    let mut keys = Vec::new();
    for (id, tier, cost_center) in [("hr", "silo", "cc-100"), ("sales", "pool", "cc-200")] {
        let (_, body) = admin
            .send(
                admin
                    .request(Method::POST, "/admin/v1/tenants")
                    .json(&json!({"id": id, "tier": tier, "tags": {"CostCenter": cost_center}})),
            )
            .await?;
        let key = body["api_key"]
            .as_str()
            .ok_or("no api_key in the answer")?
            .to_owned();
        crate::outln!(
            "  {id:<6} tier={tier:<5} key={}… (shown once, stored only as a hash)",
            &key[..21.min(key.len())]
        );
        keys.push(key);
    }
    let hr = Client::new(&data, &keys[0], Plane::Data);
    let sales = Client::new(&data, &keys[1], Plane::Data);

    step(
        2,
        "Each tenant uploads its own model (different weights; stored encrypted with its own key)",
    );
    let hr_model = Mlp::seeded(&[4, 8, 2], 100);
    let sales_model = Mlp::seeded(&[4, 8, 2], 200);
    for (client, name, mlp, who) in [
        (&hr, "attrition", &hr_model, "hr"),
        (&sales, "forecast", &sales_model, "sales"),
    ] {
        let bytes = mlp.to_onnx();
        let (status, _) = client
            .send(
                client
                    .request(Method::PUT, &format!("/api/v1/models/{name}"))
                    .header("content-type", "application/octet-stream")
                    .body(bytes.clone()),
            )
            .await?;
        expect(status == StatusCode::CREATED, "model upload answers 201")?;
        crate::outln!(
            "  {who:<6} PUT /api/v1/models/{name} -> {status} ({} bytes of ONNX)",
            bytes.len()
        );
    }

    step(
        3,
        "Each tenant invokes its own model; answers match a plain-math reference",
    );
    let row = vec![0.5f32, -1.0, 2.0, 0.25];
    let input = json!({"inputs": [row.clone()]});
    for (client, endpoint, model, mlp, who) in [
        (&hr, "hr", "attrition", &hr_model, "hr"),
        (&sales, "shared", "forecast", &sales_model, "sales"),
    ] {
        let (_, body) = client.send(invoke(client, endpoint, model, &input)).await?;
        let got: Vec<Vec<f32>> = serde_json::from_value(body["outputs"]["output"].clone())?;
        let want = mlp.reference(std::slice::from_ref(&row));
        let diff = got
            .iter()
            .flatten()
            .zip(want.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        expect(
            got.len() == 1 && diff < 1e-4,
            "the gateway's answer equals the reference",
        )?;
        crate::outln!("  {who:<6} POST /endpoints/{endpoint}/invocations ({model}) -> {got:?}  max |Δ| vs reference = {diff:.1e}");
    }
    // The same call signed as the AWS SDKs sign it: SigV4 with the key's id
    // as the access key id and its secret as the secret access key.
    let (key_id, secret) = keys[1]
        .strip_prefix("fief_")
        .and_then(|rest| rest.split_once('_'))
        .ok_or("a key reads fief_<id>_<secret>")?;
    let mut signed = invoke(&sales, "shared", "forecast", &input).build()?;
    let now = fief_sigv4::unix_now();
    fief_sigv4::sign_request(
        &mut signed,
        key_id,
        secret.as_bytes(),
        "us-east-1",
        "sagemaker",
        now,
    )?;
    let resp = reqwest::Client::new().execute(signed).await?;
    let status = resp.status();
    let body: Value = resp.json().await?;
    expect(
        status == StatusCode::OK && body["outputs"]["output"].is_array(),
        "a SigV4-signed invocation answers like the bearer one",
    )?;
    crate::outln!("  sales  the same call signed with AWS Signature V4 (key id {key_id} as the access key id) -> {status}");

    step(
        4,
        "sales tries to reach hr's model by every address it can think of",
    );
    let attempts = [
        ("shared", "hr/attrition"),
        ("shared", "frn:fief:model:hr/attrition"),
        ("hr", "attrition"),
        ("hr", "hr/attrition"),
        ("shared", "hr/does-not-exist"),
    ];
    for (endpoint, target) in attempts {
        let resp = invoke(&sales, endpoint, target, &input).send().await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        expect(
            status == StatusCode::FORBIDDEN && body["error"]["code"] == "AccessDenied",
            "cross-tenant access is 403 AccessDenied",
        )?;
        expect(!body.to_string().contains("outputs"), "no output leaks")?;
        let path = format!("/endpoints/{endpoint}/invocations");
        crate::outln!(
            "  POST {path:<28} target={target:<28} -> {status} {}",
            body["error"]["code"]
        );
    }
    crate::outln!("  (the same 403 whether or not the model exists: no existence oracle)");

    step(
        5,
        "The denial is in the hash-chained audit log (admin plane; names, never content)",
    );
    let (_, body) = admin
        .send(admin.request(
            Method::GET,
            "/admin/v1/audit?tenant=sales&decision=deny&limit=1",
        ))
        .await?;
    let entry = body["entries"]
        .get(0)
        .ok_or("no deny entry in the audit log")?;
    expect(
        entry["policies"] == json!(["platform-guardrail"]),
        "the guardrail decided the deny",
    )?;
    crate::outln!(
        "  #{} {} {} {} on {} -> {} by {}",
        entry["seq"],
        entry["ts"].as_str().unwrap_or(""),
        entry["principal"].as_str().unwrap_or(""),
        entry["action"].as_str().unwrap_or(""),
        entry["resource"].as_str().unwrap_or(""),
        entry["decision"].as_str().unwrap_or(""),
        entry["policies"]
    );
    let verified = fief_audit::verify_dir(dir.path())?;
    crate::outln!(
        "  fief audit verify: OK, {} entries chained",
        verified.entries
    );

    let refused = llm_scene(&admin, &hr, &sales, &pool, &dedicated, &pool_key).await?;
    quota_scene(&admin, &sales).await?;
    metering_scene(&admin, &hr, &sales).await?;

    step(
        10,
        "The operator offboards sales: rows, objects and data key are destroyed",
    );
    admin
        .send(admin.request(Method::DELETE, "/admin/v1/tenants/sales"))
        .await?;
    let status = sales
        .request(Method::GET, "/api/v1/models")
        .send()
        .await?
        .status();
    expect(
        status == StatusCode::UNAUTHORIZED,
        "an offboarded tenant's key is refused",
    )?;
    let residue = server
        .state
        .store
        .residue(&fief_core::TenantId::parse("sales")?)
        .await?;
    expect(residue.is_empty(), "nothing of sales remains")?;
    crate::outln!(
        "  sales' old key -> {status}; rows, tables and objects left: {}",
        residue.len()
    );
    let (_, body) = hr.send(invoke(&hr, "hr", "attrition", &input)).await?;
    expect(body["outputs"]["output"].is_array(), "hr keeps working")?;
    crate::outln!("  hr still answers: {}", body["outputs"]["output"]);

    server.shutdown().await?;
    pool.stop().await;
    dedicated.stop().await;
    crate::outln!("\nSummary: 2 tenants onboarded, 2 models served with exact answers, {} cross-tenant attempts denied and audited, 2 foundation models answered (one streamed) and {refused} cross-tenant model calls refused, 1 quota held, 2 tenants invoiced, their calls logged privately, 1 tenant offboarded without residue. OK", attempts.len());
    Ok(())
}

const POOL_KEY_ENV: &str = "DEMO_POOL_KEY";

async fn metering_scene(admin: &Client, hr: &Client, sales: &Client) -> DemoResult {
    step(
        9,
        "Metering and private logs: every answered request billed to its tenant and recorded in its own sealed log; the operator sees invoices, never prompts",
    );
    let (_, usage) = hr
        .send(hr.request(Method::GET, "/api/v1/usage?group_by=model"))
        .await?;
    let rows = usage["rows"].as_array().cloned().unwrap_or_default();
    expect(!rows.is_empty(), "hr's usage has rows")?;
    for r in &rows {
        crate::outln!(
            "  hr {:<6} {:<14} requests {:>3}  tokens {:>4} + {:<4} compute {} us",
            r["kind"].as_str().unwrap_or(""),
            r["model"].as_str().unwrap_or(""),
            r["requests"],
            r["prompt_tokens"],
            r["completion_tokens"],
            r["compute_us"]
        );
    }
    let month = usage["from"]
        .as_str()
        .unwrap_or("")
        .get(..7)
        .unwrap_or("")
        .to_owned();
    let (_, invoice) = admin
        .send(admin.request(Method::GET, &format!("/admin/v1/invoices/{month}")))
        .await?;
    let bills = invoice["bills"].as_array().cloned().unwrap_or_default();
    expect(bills.len() == 2, "an invoice for each tenant")?;
    for b in &bills {
        crate::outln!(
            "  invoice {month} {:<6} {} lines, total {} {}",
            b["name"].as_str().unwrap_or(""),
            b["lines"].as_array().map_or(0, Vec::len),
            b["total"].as_str().unwrap_or(""),
            invoice["currency"].as_str().unwrap_or("")
        );
    }
    let (_, log) = hr
        .send(hr.request(Method::GET, "/api/v1/logs?limit=1000"))
        .await?;
    let records = log["records"].as_array().cloned().unwrap_or_default();
    let chat = records
        .iter()
        .find(|r| r["kind"] == "llm")
        .ok_or("hr's log has its chat")?;
    crate::outln!(
        "  hr's log: {} records; #{} {} {}: asked {:?}, answered {:?}",
        records.len(),
        chat["seq"],
        chat["kind"].as_str().unwrap_or(""),
        chat["model"].as_str().unwrap_or(""),
        chat["request"]["messages"][0]["content"]
            .as_str()
            .unwrap_or(""),
        chat["response"]["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
    );
    let (_, theirs) = sales
        .send(sales.request(Method::GET, "/api/v1/logs?limit=1000"))
        .await?;
    let ids = |v: &Value| -> Vec<String> {
        v["records"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["request_id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let hr_ids = ids(&log);
    let sales_ids = ids(&theirs);
    expect(
        !sales_ids.is_empty() && sales_ids.iter().all(|i| !hr_ids.contains(i)),
        "sales' log holds its own calls, none of hr's",
    )?;
    let status = admin
        .request(Method::GET, "/admin/v1/logs")
        .send()
        .await?
        .status();
    expect(
        status == StatusCode::NOT_FOUND,
        "the operator has no log route",
    )?;
    crate::outln!(
        "  sales' log: {} records, none of hr's; the operator's GET /admin/v1/logs -> {status} (no such route)",
        sales_ids.len()
    );
    Ok(())
}

fn model(id: &str, alias: &str, size: Option<&str>) -> LlmModelEntry {
    LlmModelEntry::Full(LlmModelConfig {
        id: id.into(),
        alias: Some(alias.into()),
        tags: size
            .map(|s| BTreeMap::from([("Size".to_owned(), s.to_owned())]))
            .unwrap_or_default(),
        fallbacks: Vec::new(),
    })
}

/// `[[llm.upstreams]]`: the shared pool serving two models under aliases,
/// and hr's dedicated deployment of its fine-tuned model.
fn demo_upstreams(pool: &MockUpstream, dedicated: &MockUpstream) -> Vec<UpstreamConfig> {
    let upstream = |name: &str, url: String, models| UpstreamConfig {
        name: name.into(),
        url,
        api_key_env: None,
        models,
        max_concurrency: 8,
        timeout_secs: 30,
        ca_file: None,
        tenants: Vec::new(),
        exclusive: false,
    };
    let mut shared = upstream(
        "pool-gpu",
        pool.base_url(),
        vec![
            model("llama-3.1-8b", "chat-small", Some("small")),
            model("llama-3.1-70b", "chat-large", Some("large")),
        ],
    );
    shared.api_key_env = Some(POOL_KEY_ENV.into());
    let mut hr_only = upstream(
        "hr-dedicated",
        dedicated.base_url(),
        vec![model("hr-llama-ft", "hr-assistant", None)],
    );
    hr_only.tenants = vec!["hr".into()];
    hr_only.exclusive = true;
    vec![shared, hr_only]
}

/// Steps 6 and 7: foundation models. Returns how many cross-tenant model
/// calls were refused.
async fn llm_scene(
    admin: &Client,
    hr: &Client,
    sales: &Client,
    pool: &MockUpstream,
    dedicated: &MockUpstream,
    pool_key: &str,
) -> DemoResult<usize> {
    step(
        6,
        "Foundation models: the operator gives each tenant one (admin plane, PATCH llm_models)",
    );
    crate::outln!("  upstreams: pool-gpu (shared: chat-small, chat-large; key from {POOL_KEY_ENV}), hr-dedicated (exclusive to hr: hr-assistant)");
    for (id, allowed, client) in [("hr", "hr-assistant", hr), ("sales", "chat-small", sales)] {
        admin
            .send(
                admin
                    .request(Method::PATCH, &format!("/admin/v1/tenants/{id}"))
                    .json(&json!({ "llm_models": [allowed] })),
            )
            .await?;
        let (_, body) = client
            .send(client.request(Method::GET, "/v1/models"))
            .await?;
        let listed = crate::llm::model_ids(&body);
        expect(
            listed == [allowed],
            "a tenant lists exactly its allowed model",
        )?;
        crate::outln!("  {id:<6} llm_models=[{allowed:?}]  GET /v1/models -> {listed:?}");
    }

    step(
        7,
        "Each tenant chats with its model; other tenants' models are refused",
    );
    let ask = |model: &str, stream: bool| {
        json!({"model": model, "stream": stream,
               "messages": [{"role": "user", "content": "Summarise the Q3 pipeline"}]})
    };
    write!(std::io::stdout(), "  sales  chat-small, streamed: ")?;
    std::io::stdout().flush()?;
    let mut resp = sales
        .send_raw(
            sales
                .request(Method::POST, "/v1/chat/completions")
                .json(&ask("chat-small", true)),
        )
        .await?;
    let mut pieces = 0;
    let mut out = std::io::stdout();
    crate::llm::read_stream(&mut resp, |t| {
        // Each piece printed the moment it arrives, bracketed to show the chunks.
        pieces += 1;
        write!(out, "[{t}]")?;
        out.flush()
    })
    .await?;
    crate::outln!("  ({pieces} chunks)");
    let seen = pool
        .requests()
        .pop()
        .ok_or("the pool upstream got no request")?;
    let user = seen.body["user"].as_str().unwrap_or("");
    expect(
        seen.body["model"] == "llama-3.1-8b"
            && seen.authorization.as_deref() == Some(&format!("Bearer {pool_key}"))
            && user.starts_with("fief-"),
        "the pool got the upstream id, fief's key and an opaque user",
    )?;
    crate::outln!(
        "         pool-gpu received model=llama-3.1-8b, user={user} (opaque), Authorization: Bearer ${POOL_KEY_ENV}"
    );
    let before = pool.requests().len();
    let (_, answer) = hr
        .send(
            hr.request(Method::POST, "/v1/chat/completions")
                .json(&ask("hr-assistant", false)),
        )
        .await?;
    expect(
        answer["model"] == "hr-assistant"
            && dedicated.requests().len() == 1
            && pool.requests().len() == before,
        "hr's model is answered by its dedicated deployment only",
    )?;
    crate::outln!(
        "  hr     hr-assistant -> {:?}\n         (model={} in the answer; served by hr-dedicated, never the pool; the mock's text names the upstream id it got)",
        answer["choices"][0]["message"]["content"].as_str().unwrap_or(""),
        answer["model"]
    );

    let attempts = [
        (sales, "sales", "hr-assistant", "hr's dedicated model"),
        (sales, "sales", "chat-large", "served, not given to sales"),
        (sales, "sales", "no-such-model", "served nowhere"),
        (hr, "hr", "chat-small", "sales' model"),
    ];
    let mut bodies = Vec::new();
    for (client, who, model, what) in attempts {
        let resp = client
            .request(Method::POST, "/v1/chat/completions")
            .json(&ask(model, false))
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        let body: Value = serde_json::from_str(&text)?;
        expect(
            status == StatusCode::FORBIDDEN && body["error"]["code"] == "AccessDenied",
            "a model not given to the tenant is 403 AccessDenied",
        )?;
        let request_id = body["error"]["request_id"].as_str().unwrap_or("");
        bodies.push(text.replace(request_id, ""));
        let what = format!("({what})");
        crate::outln!(
            "  {who:<6} model={model:<14} {what:<28} -> {status} {}",
            body["error"]["code"]
        );
    }
    expect(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "every refusal is the same body",
    )?;
    crate::outln!("  (byte-identical bodies apart from request_id: no existence oracle)");

    // The stream's usage record is written once the stream has ended.
    let mut entry = None;
    for _ in 0..50 {
        let (_, body) = admin
            .send(admin.request(
                Method::GET,
                "/admin/v1/audit?tenant=sales&kind=usage&limit=1",
            ))
            .await?;
        if let Some(e) = body["entries"].get(0) {
            entry = Some(e.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let entry = entry.ok_or("no usage entry for sales in the audit log")?;
    let u = &entry["usage"];
    expect(
        u["model"] == "chat-small" && u["complete"] == true,
        "the usage entry records the streamed call",
    )?;
    crate::outln!(
        "  audit #{} usage {} {} {} via {}: {} prompt + {} completion = {} tokens (counted by: {}), {} ms, complete={}",
        entry["seq"],
        u["tenant"].as_str().unwrap_or(""),
        u["surface"].as_str().unwrap_or(""),
        u["model"].as_str().unwrap_or(""),
        u["upstream"].as_str().unwrap_or(""),
        u["prompt_tokens"],
        u["completion_tokens"],
        u["total_tokens"],
        u["counted"].as_str().unwrap_or(""),
        u["latency_ms"],
        u["complete"]
    );
    Ok(attempts.len())
}

/// Quotas: the operator limits sales; the limit holds, says when to retry,
/// and the tenant sees what remains.
async fn quota_scene(admin: &Client, sales: &Client) -> DemoResult {
    step(
        8,
        "Quotas: the operator limits sales to 3 chats a minute (burst 3) and 2,000 tokens a month",
    );
    admin
        .send(
            admin
                .request(Method::PATCH, "/admin/v1/tenants/sales")
                .json(&json!({"quotas": {"requests_per_minute": 3, "monthly_token_budget": 2000}})),
        )
        .await?;
    let chat = json!({"model": "chat-small", "max_tokens": 8,
                      "messages": [{"role": "user", "content": "one more forecast"}]});
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..4 {
        let r = sales
            .request(Method::POST, "/v1/chat/completions")
            .json(&chat)
            .send()
            .await?;
        statuses.push(r.status().as_u16());
        let remaining = r
            .headers()
            .get("x-ratelimit-remaining-requests")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = r.json().await?;
        last = Some((remaining, retry, body));
    }
    expect(
        statuses == [200, 200, 200, 429],
        "the fourth chat in the minute is throttled",
    )?;
    let (_, retry, body) = last.ok_or("no answer")?;
    crate::outln!(
        "  4 chats -> {statuses:?}; the last: {} (Retry-After: {} s) {}",
        body["error"]["code"].as_str().unwrap_or(""),
        retry.unwrap_or_default(),
        body["error"]["message"].as_str().unwrap_or("")
    );
    let (_, q) = sales
        .send(sales.request(Method::GET, "/api/v1/quotas"))
        .await?;
    let t = &q["levels"][0];
    expect(t["level"] == "tenant", "sales sees its own tenant level")?;
    crate::outln!(
        "  GET /api/v1/quotas: requests left {} (full again in {:.0} s), budget spent {} of 2000 this month",
        t["remaining"]["requests_per_minute"],
        t["reset_seconds"]["requests_per_minute"].as_f64().unwrap_or(0.0),
        t["spent_this_month"]
    );
    Ok(())
}

fn invoke(client: &Client, endpoint: &str, model: &str, body: &Value) -> reqwest::RequestBuilder {
    client
        .request(Method::POST, &format!("/endpoints/{endpoint}/invocations"))
        .header(fief_server::TARGET_MODEL_HEADER, model)
        .json(body)
}
