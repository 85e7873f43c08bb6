//! Running the `fief` binary as users do.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The built `fief`, without the caller's FIEF_* settings.
pub fn fief() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fief"));
    for (k, _) in std::env::vars() {
        if k.starts_with("FIEF_") {
            c.env_remove(k);
        }
    }
    c
}

/// `fief ARGS` as the operator of the gateway at `admin`: what it printed
/// (stdout then stderr); it must succeed.
pub fn as_operator(admin: &str, token: &str, args: &[&str]) -> String {
    let out = fief()
        .args(args)
        .args(["--admin-url", admin, "--admin-token", token])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fief {args:?}: {text}");
    text
}

/// `fief serve` on ephemeral loopback ports over `data_dir`, as the README
/// starts it: (the process, data URL, admin URL, admin token).
pub fn serve(data_dir: &Path) -> (Child, String, String, String) {
    serve_with(data_dir, None, &[])
}

/// `fief serve` on ephemeral loopback ports over `data_dir`, not started.
pub fn serve_command(data_dir: &Path) -> Command {
    let mut command = fief();
    command.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--data-dir",
    ]);
    command.arg(data_dir);
    command
}

/// `serve` with a config file and environment variables.
pub fn serve_with(
    data_dir: &Path,
    config: Option<&Path>,
    env: &[(&str, &str)],
) -> (Child, String, String, String) {
    let mut command = serve_command(data_dir);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command.envs(env.iter().copied());
    let mut server = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "fief data plane on http://A  admin plane on http://B"
    let urls: Vec<&str> = line
        .split_whitespace()
        .filter(|w| w.starts_with("http://"))
        .collect();
    assert_eq!(urls.len(), 2, "{line}");
    // Empty when FIEF_ADMIN_TOKEN gave it (no token file is written then).
    let token = std::fs::read_to_string(data_dir.join("admin.token")).unwrap_or_default();
    (
        server,
        urls[0].to_owned(),
        urls[1].to_owned(),
        token.trim().to_owned(),
    )
}

/// Creates a tenant over the admin plane (default tier when `tier` is
/// `None`) and returns its first API key.
pub async fn create_tenant(
    http: &reqwest::Client,
    admin: &str,
    token: &str,
    id: &str,
    tier: Option<&str>,
) -> String {
    let mut body = serde_json::json!({ "id": id });
    if let Some(tier) = tier {
        body["tier"] = tier.into();
    }
    let r = http
        .post(format!("{admin}/admin/v1/tenants"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<serde_json::Value>().await.unwrap()["api_key"]
        .as_str()
        .unwrap()
        .to_owned()
}
