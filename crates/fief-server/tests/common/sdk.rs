//! The official Python SDKs (openai, boto3) driven against a test gateway:
//! `scripts/test.sh` installs them; under `CI=true` a missing one fails.

/// Whether python3 can import `module` (a skip, said, outside CI).
pub fn python_has(module: &str) -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    if !ok && std::env::var("CI").as_deref() == Ok("true") {
        panic!("python3 cannot import {module}: scripts/test.sh installs it");
    }
    if !ok {
        eprintln!("SKIP: python3 cannot import {module} (scripts/test.sh installs it)");
    }
    ok
}

/// Runs `tests/sdk/<script>` off the runtime's thread (the gateway serves
/// it); it must exit 0 and print `sdk: ok`.
pub async fn run_python(script: &'static str, env: &[(&str, &str)]) {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    tokio::task::spawn_blocking(move || python(script, &env))
        .await
        .unwrap();
}

fn python(script: &str, env: &[(String, String)]) {
    let path = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    // The machine's own AWS settings never reach the script; only `env`.
    let out = std::process::Command::new("python3")
        .arg(&path)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_BEARER_TOKEN_BEDROCK")
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("OPENAI_LOG", "")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("sdk: ok"),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An API key's AWS form: (access key id, secret access key).
pub fn aws_pair(key: &str) -> (&str, &str) {
    key.strip_prefix("fief_")
        .and_then(|rest| rest.split_once('_'))
        .expect("an API key reads fief_<id>_<secret>")
}

/// `req` signed with AWS Signature V4 by `key`'s AWS pair, `age_secs` ago.
pub fn sigv4(
    client: &reqwest::Client,
    req: reqwest::RequestBuilder,
    key_id: &str,
    secret: &str,
    age_secs: i64,
) -> reqwest::RequestBuilder {
    let mut request = req.build().unwrap();
    let now = fief_sigv4::unix_now();
    fief_sigv4::sign_request(
        &mut request,
        key_id,
        secret.as_bytes(),
        "us-east-1",
        "sagemaker",
        now - age_secs,
    )
    .unwrap();
    reqwest::RequestBuilder::from_parts(client.clone(), request)
}
