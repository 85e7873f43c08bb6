//! `fief demo`: the isolation story end to end on an embedded server in a
//! temporary directory. Every step checks what it shows; any surprise makes
//! the demo fail with a non-zero exit.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use fief_config::Config;
use fief_serving::onnx_builder::Mlp;

use crate::client::Client;

type DemoResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn expect(ok: bool, what: &str) -> DemoResult {
    if ok {
        Ok(())
    } else {
        Err(format!("demo check failed: {what}").into())
    }
}

fn step(n: usize, text: &str) {
    println!("\n[{n}] {text}");
}

pub async fn run() -> DemoResult {
    let dir = tempfile::tempdir()?;
    // The demo ignores FIEF_* variables so it behaves the same everywhere.
    let config = Config::ephemeral(dir.path());
    let server = fief_server::start(config, fief_server::Secrets::default()).await?;
    let data = format!("http://{}", server.data_addr);
    let admin = Client::new(
        &format!("http://{}", server.admin_addr),
        &server.admin_token,
    );

    println!("fief demo: an embedded gateway in {}", dir.path().display());
    println!(
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
        println!(
            "  {id:<6} tier={tier:<5} key={}… (shown once, stored only as a hash)",
            &key[..21.min(key.len())]
        );
        keys.push(key);
    }
    let hr = Client::new(&data, &keys[0]);
    let sales = Client::new(&data, &keys[1]);

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
        println!(
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
        println!("  {who:<6} POST /endpoints/{endpoint}/invocations ({model}) -> {got:?}  max |Δ| vs reference = {diff:.1e}");
    }

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
        println!(
            "  POST {path:<28} target={target:<28} -> {status} {}",
            body["error"]["code"]
        );
    }
    println!("  (the same 403 whether or not the model exists: no existence oracle)");

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
    println!(
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
    println!(
        "  fief audit verify: OK, {} entries chained",
        verified.entries
    );

    step(
        6,
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
    println!(
        "  sales' old key -> {status}; rows, tables and objects left: {}",
        residue.len()
    );
    let (_, body) = hr.send(invoke(&hr, "hr", "attrition", &input)).await?;
    expect(body["outputs"]["output"].is_array(), "hr keeps working")?;
    println!("  hr still answers: {}", body["outputs"]["output"]);

    server.shutdown().await?;
    println!("\nSummary: 2 tenants onboarded, 2 models served with exact answers, {} cross-tenant attempts denied and audited, 1 tenant offboarded without residue. OK", attempts.len());
    Ok(())
}

fn invoke(client: &Client, endpoint: &str, model: &str, body: &Value) -> reqwest::RequestBuilder {
    client
        .request(Method::POST, &format!("/endpoints/{endpoint}/invocations"))
        .header(fief_server::TARGET_MODEL_HEADER, model)
        .json(body)
}
