//! The `fief` binary as users run it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
// Throwaway PostgreSQL databases, as the gateway's tests make them.
#[path = "../../fief-server/tests/common/pg.rs"]
#[allow(dead_code)]
mod pg;

use common::fief;

#[test]
fn demo_runs_to_the_end() {
    let out = fief().arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("403") && stdout.contains("Summary") && stdout.contains("OK"),
        "{stdout}"
    );
    // The foundation-model scene: a streamed answer, refusals, the usage entry.
    for line in [
        "sales  llm_models=[\"chat-small\"]  GET /v1/models -> [\"chat-small\"]",
        "(6 chunks)",
        "usage sales chat chat-small via pool-gpu",
        "4 chats -> [200, 200, 200, 429]; the last: Throttled",
    ] {
        assert!(stdout.contains(line), "{line}\n{stdout}");
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("sales  model=hr-assistant")
                && l.ends_with("-> 403 Forbidden \"AccessDenied\"")),
        "{stdout}"
    );
}

/// Writes a real audit log by driving a server, then tampers with it.
#[tokio::test]
async fn audit_verify_names_the_first_tampered_entry() {
    let dir = tempfile::tempdir().unwrap();
    let config = fief_config::Config::ephemeral(dir.path());
    let server = fief_server::start(config, fief_server::Secrets::default())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    for id in ["aa", "bb", "cc"] {
        let r = http
            .post(format!("http://{}/admin/v1/tenants", server.admin_addr))
            .bearer_auth(&server.admin_token)
            .json(&serde_json::json!({"id": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    server.shutdown().await.unwrap();

    let verify = || {
        fief()
            .args(["audit", "verify", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("OK, 6 entries"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let path = dir.path().join("audit/segment-000001.log");
    let original = std::fs::read(&path).unwrap();
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(
            original
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    // One byte inside entry 4: a digit of its timestamp.
    let pos = line_starts[3]
        + original[line_starts[3]..]
            .windows(5)
            .position(|w| w == b"\"ts\":")
            .unwrap()
        + 7;
    let mut tampered = original.clone();
    tampered[pos] = if tampered[pos] == b'1' { b'2' } else { b'1' };
    std::fs::write(&path, &tampered).unwrap();
    let out = verify();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("entry 4"), "{stderr}");

    std::fs::write(&path, &original).unwrap();
    assert!(verify().status.success());
}

#[test]
fn check_config_validates_and_rejects_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "data_dir = \"/tmp/x\"\nlisten = \"127.0.0.1:9080\"\n",
    )
    .unwrap();
    let out = fief()
        .args(["serve", "--check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("9080"));
    // The example config in the repository is valid as written.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fief.example.toml");
    let out = fief()
        .args(["serve", "--check-config", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listne = \"127.0.0.1:9080\"\n").unwrap();
    let out = fief()
        .args(["serve", "--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listne"));
    let out = fief()
        .args(["serve", "--check-config"])
        .env("FIEF_MAX_BODY_BYTES", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("FIEF_MAX_BODY_BYTES"));
}

#[test]
fn policy_validate_checks_files_offline() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies");
    for file in ["department.cedar", "trust-same-tenant.cedar"] {
        let out = fief()
            .args(["policy", "validate"])
            .arg(examples.join(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.cedar");
    std::fs::write(
        &bad,
        "permit (principal, action, resource)\n  when { resource.department == \"HR\" };\n",
    )
    .unwrap();
    let out = fief()
        .args(["policy", "validate"])
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("bad.cedar:2:"), "{stderr}");
    assert!(stderr.contains("department"), "{stderr}");
}

/// Two gateways on one data directory would interleave their audit appends
/// (a chain that no longer verifies) and disagree in their caches.
#[test]
fn a_second_serve_on_a_held_data_directory_exits_naming_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, _, _, _) = common::serve(dir.path());
    let out = common::serve_command(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("in use by process {}", first.id()))
            && stderr.contains("fief.lock"),
        "{stderr}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // Once the holder is gone, the directory serves again.
    let (mut again, _, _, _) = common::serve(dir.path());
    again.kill().unwrap();
    again.wait().unwrap();
}

/// A client of `bucket` on the test S3-compatible server (moto takes any
/// credentials).
fn bucket_client(endpoint: &str, bucket: &str) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_access_key_id("testing")
        .with_secret_access_key("testing-secret")
        .build()
        .unwrap()
}

/// The objects under `prefix` of `store`.
async fn listed(
    store: &object_store::aws::AmazonS3,
    prefix: &str,
) -> Vec<object_store::ObjectMeta> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    store
        .list(Some(&object_store::path::Path::from(prefix)))
        .try_collect()
        .await
        .unwrap()
}

/// A new bucket on `scripts/test.sh`'s S3-compatible server: (endpoint,
/// bucket), or `None` (a skip, refused under CI) without one.
async fn s3_bucket() -> Option<(String, String)> {
    let Ok(endpoint) = std::env::var("FIEF_TEST_S3_URL") else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "FIEF_TEST_S3_URL is not set (CI needs the S3 tests)"
        );
        eprintln!("SKIP: FIEF_TEST_S3_URL is not set");
        return None;
    };
    let endpoint = endpoint.trim_end_matches('/').to_owned();
    let bucket = format!("fief-models-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let r = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    Some((endpoint, bucket))
}

/// With `[object_store]`, model bytes go to the bucket (sealed, under
/// `tenants/{id}/` of the configured prefix), nothing to the data
/// directory's object files; a restarted gateway serves them from there, and
/// offboarding empties the tenant's prefix. The S3-compatible server is
/// `scripts/test.sh`'s (`FIEF_TEST_S3_URL`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_bytes_live_sealed_in_the_bucket_when_one_is_configured() {
    use object_store::ObjectStore;
    let Some((endpoint, bucket)) = s3_bucket().await else {
        return;
    };
    let http = reqwest::Client::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fief.toml");
    std::fs::write(
        &config,
        format!(
            "[object_store]\nurl = \"s3://{bucket}/prod\"\nendpoint = \"{endpoint}\"\nallow_http = true\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing-secret"),
    ];
    let (mut server, data_url, admin, token) = common::serve_with(&data, Some(&config), &env);
    let key = common::create_tenant(&http, &admin, &token, "bucketed", Some("pool")).await;
    let onnx = fief_serving::onnx_builder::Mlp::seeded(&[4, 8, 2], 7).to_onnx();
    let r = http
        .put(format!("{data_url}/api/v1/models/m"))
        .bearer_auth(&key)
        .header("content-type", "application/octet-stream")
        .body(onnx.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let invoke = |data_url: String| {
        http.post(format!("{data_url}/endpoints/shared/invocations"))
            .bearer_auth(&key)
            .header("x-amzn-sagemaker-target-model", "m")
            .json(&serde_json::json!({"inputs": [[0.1, 0.2, 0.3, 0.4]]}))
            .send()
    };
    let first = invoke(data_url.clone())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let bucket_store = bucket_client(&endpoint, &bucket);
    let objects = listed(&bucket_store, "prod/tenants/bucketed").await;
    assert_eq!(objects.len(), 1, "{objects:?}");
    let sealed = bucket_store
        .get(&objects[0].location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        !sealed.windows(32).any(|w| w == &onnx[..32]),
        "the model is in the bucket in clear"
    );
    let local: Vec<_> = walk(&data.join("objects"));
    assert!(
        local.is_empty(),
        "object files under the data directory: {local:?}"
    );

    // A restarted gateway serves the model from the bucket.
    server.kill().unwrap();
    server.wait().unwrap();
    let (mut again, data_url, admin, token) = common::serve_with(&data, Some(&config), &env);
    let second = invoke(data_url.clone())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(first, second);
    assert!(first.contains("outputs"), "{first}");

    // A silo tenant given a bucket of its own: its objects move there, out
    // of the shared one; it keeps serving; the bucket stays its own until
    // it is moved back, and offboarding empties it.
    let (_, own) = s3_bucket().await.unwrap();
    let own_store = bucket_client(&endpoint, &own);
    let vault = common::create_tenant(&http, &admin, &token, "vault", Some("silo")).await;
    let r = http
        .put(format!("{data_url}/api/v1/models/m"))
        .bearer_auth(&vault)
        .header("content-type", "application/octet-stream")
        .body(onnx.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let patch = |tenant: &str, body: serde_json::Value| {
        http.patch(format!("{admin}/admin/v1/tenants/{tenant}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let r = patch("vault", serde_json::json!({"bucket": own}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(listed(&own_store, "tenants/vault").await.len(), 1);
    assert!(listed(&bucket_store, "prod/tenants/vault").await.is_empty());
    let served = http
        .post(format!("{data_url}/endpoints/shared/invocations"))
        .bearer_auth(&vault)
        .header("x-amzn-sagemaker-target-model", "m")
        .json(&serde_json::json!({"inputs": [[0.1, 0.2, 0.3, 0.4]]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(served, first, "the same model, from its own bucket");
    for (tenant, body, status) in [
        ("bucketed", serde_json::json!({"bucket": own}), 409),
        ("vault", serde_json::json!({"tier": "pool"}), 409),
        ("vault", serde_json::json!({"bucket": "Not_A_Bucket"}), 400),
    ] {
        let r = patch(tenant, body.clone()).await.unwrap();
        assert_eq!(r.status(), status, "{body}: {}", r.text().await.unwrap());
    }
    let r = http
        .delete(format!("{admin}/admin/v1/tenants/vault"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        listed(&own_store, "tenants/vault").await.is_empty(),
        "offboarding left objects"
    );

    let r = http
        .delete(format!("{admin}/admin/v1/tenants/bucketed"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        listed(&bucket_store, "prod/tenants/bucketed")
            .await
            .is_empty(),
        "offboarding left objects"
    );
    again.kill().unwrap();
    again.wait().unwrap();

    // A bucket that cannot be listed stops start-up, naming it.
    let missing = dir.path().join("missing.toml");
    std::fs::write(
        &missing,
        format!("[object_store]\nurl = \"s3://no-such-bucket-{bucket}\"\nendpoint = \"{endpoint}\"\nallow_http = true\n"),
    )
    .unwrap();
    let out = common::serve_command(&dir.path().join("other"))
        .arg("--config")
        .arg(&missing)
        .envs(env)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("no-such-bucket-{bucket}")),
        "{stderr}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Every file fief writes under the data directory is its owner's only
/// (0600; directories 0700), whatever the umask it was started with.
#[tokio::test]
async fn every_file_under_the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, data_url, admin_url, token) = common::serve(&data);
    let http = reqwest::Client::new();
    for (id, tier) in [
        ("perm-pool", "pool"),
        ("perm-bridge", "bridge"),
        ("perm-silo", "silo"),
    ] {
        let key = common::create_tenant(&http, &admin_url, &token, id, Some(tier)).await;
        let onnx = fief_serving::onnx_builder::Mlp::seeded(&[4, 8, 3], 1).to_onnx();
        for (path, body, ct) in [
            ("/api/v1/models/m", onnx, "application/octet-stream"),
            (
                "/api/v1/tables/t/items/k",
                b"{\"v\": 1}".to_vec(),
                "application/json",
            ),
        ] {
            let r = http
                .put(format!("{data_url}{path}"))
                .bearer_auth(&key)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
        }
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let mut seen = 0;
    let mut stack = vec![data.clone()];
    while let Some(d) = stack.pop() {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", d.display());
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
                seen += 1;
            }
        }
    }
    // fief.db (+ WAL), a silo file, objects, keys, the token, the audit log, the lock.
    assert!(seen >= 8, "only {seen} files");
}

/// `kill -9` in the middle of a burst: every request that got its answer
/// has its audit entry (the default `batch` durability writes before
/// answering), the restarted gateway repairs an unfinished last line and
/// starts, and the whole chain verifies.
/// Sixteen clients send `request(http, client, n)` until the gateway is
/// killed with SIGKILL after `after_ms`, then it is started once more (so it
/// recovers its files) and stopped. Returns the ids of the requests answered
/// 2xx with their whole body; there must be more than 100.
async fn answered_until_killed(
    dir: &std::path::Path,
    server: &mut std::process::Child,
    after_ms: u64,
    request: impl Fn(&reqwest::Client, usize, usize) -> reqwest::RequestBuilder + Clone + Send + 'static,
) -> Vec<String> {
    let http = reqwest::Client::new();
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let (http, request) = (http.clone(), request.clone());
            tokio::spawn(async move {
                let mut answered = Vec::new();
                for n in 0.. {
                    let Ok(r) = request(&http, c, n).send().await else {
                        break;
                    };
                    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
                    if r.status().is_success() && r.bytes().await.is_ok() {
                        answered.push(id);
                    }
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(after_ms)).await;
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    let mut answered = Vec::new();
    for c in clients {
        answered.extend(c.await.unwrap());
    }
    assert!(
        answered.len() > 100,
        "only {} requests answered",
        answered.len()
    );
    let (mut again, _, _, _) = common::serve(dir);
    again.kill().unwrap();
    again.wait().unwrap();
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_gateway_loses_no_answered_audit_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, data, admin, token) = common::serve(dir.path());
    let http = reqwest::Client::new();
    let key = common::create_tenant(&http, &admin, &token, "burst", None).await;
    let answered = answered_until_killed(dir.path(), &mut server, 800, move |http, _, _| {
        http.get(format!("{data}/api/v1/me")).bearer_auth(&key)
    })
    .await;
    let out = fief()
        .args(["audit", "verify", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut logged = std::collections::HashSet::new();
    for entry in std::fs::read_dir(dir.path().join("audit")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                logged.insert(v["entry"]["request_id"].as_str().unwrap().to_owned());
            }
        }
    }
    let lost: Vec<&String> = answered.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} answered requests have no audit entry",
        lost.len(),
        answered.len()
    );
}

/// Usage events are committed before the answer: a gateway killed under
/// load has, after a restart, exactly one event for every request it
/// answered 2xx (none lost), and its hourly sums count each event once
/// (none doubled).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_gateway_loses_no_answered_usage_event_and_doubles_none() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, data, admin, token) = common::serve(dir.path());
    let http = reqwest::Client::new();
    let key = common::create_tenant(&http, &admin, &token, "billed", None).await;
    let answered = answered_until_killed(dir.path(), &mut server, 1500, move |http, c, n| {
        // Odd requests read the item the even one before wrote.
        let url = format!("{data}/api/v1/tables/t/items/k{c}-{}", n - n % 2);
        if n % 2 == 0 {
            http.put(&url)
                .bearer_auth(&key)
                .json(&serde_json::json!({"n": n}))
        } else {
            http.get(&url).bearer_auth(&key)
        }
    })
    .await;
    // The restart recovered the database; the events are read as stored.
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("fief.db").display()
    ))
    .await
    .unwrap();
    let events: Vec<String> =
        sqlx::query_scalar("SELECT request_id FROM usage_events WHERE tenant_id = 'billed'")
            .fetch_all(&db)
            .await
            .unwrap();
    let summed: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(requests), 0) AS INTEGER) FROM usage_hourly WHERE tenant_id = 'billed'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    db.close().await;
    let stored: std::collections::HashSet<&String> = events.iter().collect();
    assert_eq!(stored.len(), events.len(), "a request id has two events");
    let lost: Vec<&String> = answered.iter().filter(|id| !stored.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} answered requests have no usage event",
        lost.len(),
        answered.len()
    );
    // Requests answered as the kill landed may have an event their client
    // never saw; never more than were in flight.
    assert!(
        events.len() <= answered.len() + 16,
        "{} events for {} answers",
        events.len(),
        answered.len()
    );
    assert_eq!(
        summed,
        events.len() as i64,
        "the hourly sums count an event twice"
    );
}

/// `fief chat` and `fief llm models` against an in-process gateway whose
/// foundation models are served by a mock upstream.
mod llm {
    use std::process::{Output, Stdio};
    use std::time::{Duration, Instant};

    use fief_config::{LlmModelConfig, LlmModelEntry, UpstreamConfig};
    use fief_llm_mock::{MockOptions, MockUpstream, Mode};
    use serde_json::json;

    use super::fief;

    fn model(id: &str, alias: &str) -> LlmModelEntry {
        LlmModelEntry::Full(LlmModelConfig {
            id: id.into(),
            alias: Some(alias.into()),
            tags: Default::default(),
            fallbacks: Vec::new(),
        })
    }

    /// Runs `fief ARGS` as tenant `key` of the gateway at `data`.
    async fn run(data: &str, key: &str, args: &[&str]) -> Output {
        let mut c = fief();
        c.args(args)
            .env("FIEF_DATA_URL", data)
            .env("FIEF_API_KEY", key);
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    /// `fief serve` with one mock upstream whose streams take `chunks` ×
    /// `chunk_delay`, and `shutdown_grace_secs = grace`.
    async fn streaming_gateway(
        dir: &std::path::Path,
        chunk_delay: Duration,
        grace: u64,
    ) -> (std::process::Child, String, String, MockUpstream) {
        let upstream = MockUpstream::start(MockOptions {
            name: "pool".into(),
            chunks: 10,
            chunk_delay,
            ..Default::default()
        })
        .await
        .unwrap();
        let config = dir.join("fief.toml");
        std::fs::write(
            &config,
            format!(
                "shutdown_grace_secs = {grace}\n\n[[llm.upstreams]]\nname = \"pool\"\nurl = {:?}\n\
                 models = [\"chat-small\"]\n",
                upstream.base_url()
            ),
        )
        .unwrap();
        let data_dir = dir.join("data");
        let (child, data, admin, token) = super::common::serve_with(&data_dir, Some(&config), &[]);
        let key =
            super::common::create_tenant(&reqwest::Client::new(), &admin, &token, "acme", None)
                .await;
        (child, data, key, upstream)
    }

    fn terminate(child: &std::process::Child) {
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    }

    async fn exit_within(child: &mut std::process::Child, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "fief serve exited with {status}");
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "still running {limit:?} after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stream(data: &str, key: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .post(format!("{data}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": "chat-small", "stream": true,
                          "messages": [{"role": "user", "content": "hi"}]}))
    }

    /// SIGTERM closes the listeners at once, lets a stream in flight finish,
    /// and exits 0; a stream longer than `shutdown_grace_secs` is cut there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigterm_drains_streams_in_flight_within_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        // 10 chunks 150 ms apart: 1.5 s of stream, 30 s of grace.
        let (mut child, data, key, _up) =
            streaming_gateway(dir.path(), Duration::from_millis(150), 30).await;
        let started = stream(&data, &key).send().await.unwrap();
        assert_eq!(started.status(), 200);
        terminate(&child);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let refused = reqwest::Client::new()
            .get(format!("{data}/healthz"))
            .send()
            .await;
        assert!(
            refused.is_err(),
            "a new connection was accepted after SIGTERM"
        );
        let body = started.text().await.unwrap();
        assert!(
            body.contains("[DONE]"),
            "the stream in flight was cut: {body}"
        );
        let took = exit_within(&mut child, Duration::from_secs(10)).await;
        eprintln!("exited {took:?} after the stream ended");

        // 10 chunks 1 s apart, 1 s of grace: the process does not wait 10 s.
        let dir = tempfile::tempdir().unwrap();
        let (mut child, data, key, _up) =
            streaming_gateway(dir.path(), Duration::from_secs(1), 1).await;
        let started = stream(&data, &key).send().await.unwrap();
        assert_eq!(started.status(), 200);
        terminate(&child);
        let took = exit_within(&mut child, Duration::from_secs(4)).await;
        eprintln!("a 10 s stream, 1 s of grace: exited after {took:?}");
        assert!(started.text().await.map_or(true, |b| !b.contains("[DONE]")));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chat_streams_lists_models_and_fails_on_a_cut_stream() {
        let upstream = MockUpstream::start(MockOptions {
            name: "pool".into(),
            chunks: 4,
            // Long enough to tell a streamed answer from a buffered one.
            chunk_delay: Duration::from_millis(300),
            ..Default::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = fief_config::Config::ephemeral(dir.path());
        config.llm.upstreams = vec![UpstreamConfig {
            name: "pool".into(),
            url: upstream.base_url(),
            api_key_env: Some("CLI_POOL_KEY".into()),
            models: vec![
                model("llama-3.1-8b", "chat-small"),
                model("llama-3.1-70b", "chat-large"),
            ],
            max_concurrency: 8,
            timeout_secs: 30,
            ca_file: None,
            tenants: Vec::new(),
            exclusive: false,
        }];
        let mut secrets = fief_server::Secrets::default();
        secrets
            .upstream_keys
            .insert("CLI_POOL_KEY".into(), "sk-cli".into());
        let server = fief_server::start(config, secrets).await.unwrap();
        let data = format!("http://{}", server.data_addr);
        let admin = format!("http://{}", server.admin_addr);
        let http = reqwest::Client::new();
        let key =
            crate::common::create_tenant(&http, &admin, &server.admin_token, "acme", None).await;

        // Every model, one per line; then only the one the operator allows.
        let out = run(&data, &key, &["llm", "models"]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mut listed: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
        listed.sort();
        assert_eq!(listed, ["chat-large", "chat-small"]);
        let r = http
            .patch(format!("{admin}/admin/v1/tenants/acme"))
            .bearer_auth(&server.admin_token)
            .json(&json!({"llm_models": ["chat-small"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let out = run(&data, &key, &["llm", "models"]).await;
        assert_eq!(text(&out.stdout), "chat-small\n");
        let out = run(&data, &key, &["llm", "models", "--json"]).await;
        let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(body["data"][0]["id"], "chat-small", "{body}");

        // Streamed: the first words are on stdout well before the last.
        let mut child = fief()
            .args(["chat", "chat-small", "hello there"])
            .env("FIEF_DATA_URL", &data)
            .env("FIEF_API_KEY", &key)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (printed, first, last, status) = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut printed = Vec::new();
            let mut first = None;
            let mut buf = [0u8; 256];
            loop {
                let n = stdout.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                first.get_or_insert_with(Instant::now);
                printed.extend_from_slice(&buf[..n]);
            }
            let last = Instant::now();
            (printed, first.unwrap(), last, child.wait().unwrap())
        })
        .await
        .unwrap();
        assert!(status.success());
        assert_eq!(text(&printed), "pool answers llama-3.1-8b: hello there\n");
        assert!(
            last - first >= Duration::from_millis(500),
            "the answer arrived at once ({:?}): not streamed",
            last - first
        );
        let sent = upstream.requests().pop().unwrap();
        assert_eq!(sent.body["stream"], true);
        assert_eq!(
            sent.body["messages"],
            json!([{"role": "user", "content": "hello there"}])
        );

        // Whole, with a system message and a token limit.
        let out = run(
            &data,
            &key,
            &[
                "chat",
                "chat-small",
                "hello there",
                "--system",
                "be brief",
                "--max-tokens",
                "2",
                "--no-stream",
            ],
        )
        .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "pool answers\n");
        let sent = upstream.requests().pop().unwrap();
        assert_eq!(sent.body["stream"], false);
        assert_eq!(sent.body["max_tokens"], 2);
        assert_eq!(
            sent.body["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );

        // A model the tenant is not given: the gateway's refusal, non-zero.
        let out = run(&data, &key, &["chat", "chat-large", "hi"]).await;
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("AccessDenied: access denied (HTTP 403, request id req_"),
            "{}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());

        // The upstream cuts the stream after one chunk: the gateway ends it
        // with an error event, and the CLI exits non-zero without the final
        // newline of a whole answer.
        upstream.set_mode(Mode::FailAfterFirstChunk);
        let out = run(&data, &key, &["chat", "chat-small", "hello there"]).await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(!out.status.success(), "{stdout}");
        assert!(stderr.contains("stream_interrupted"), "{stderr}");
        assert!(
            stdout.starts_with("pool ") && !stdout.ends_with('\n'),
            "{stdout:?}"
        );
        // Straight from the upstream (no gateway to send the error event):
        // the connection is cut, which must fail the same way.
        let bare = upstream.base_url().trim_end_matches("/v1").to_owned();
        let out = run(&bare, "unused", &["chat", "llama-3.1-8b", "hello there"]).await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(!out.status.success(), "{stdout}");
        assert!(
            stderr.contains("mid-answer") || stderr.contains("cut short"),
            "{stderr}"
        );
        assert!(!stdout.ends_with('\n'), "{stdout:?}");

        server.shutdown().await.unwrap();
        upstream.stop().await;
    }
}

/// `fief quota`: the operator's settings of a tenant, a tenant's lower
/// limits for its own subjects, and the levels it sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_get_and_set_as_operator_and_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let server = fief_server::start(
        fief_config::Config::ephemeral(dir.path()),
        fief_server::Secrets::default(),
    )
    .await
    .unwrap();
    let data = format!("http://{}", server.data_addr);
    let admin = format!("http://{}", server.admin_addr);
    let http = reqwest::Client::new();
    let key = common::create_tenant(&http, &admin, &server.admin_token, "acme", None).await;
    let run = |args: Vec<&'static str>| {
        let mut c = fief();
        c.args(args)
            .env("FIEF_DATA_URL", &data)
            .env("FIEF_API_KEY", &key)
            .env("FIEF_ADMIN_URL", &admin)
            .env("FIEF_ADMIN_TOKEN", &server.admin_token);
        async move {
            let out = tokio::task::spawn_blocking(move || c.output().unwrap())
                .await
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            (out.status.success(), stdout, stderr)
        }
    };
    let (ok, out, err) = run(vec![
        "quota",
        "set",
        "--tenant",
        "acme",
        "--requests-per-minute",
        "100",
        "--weight",
        "2",
    ])
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("\"requests_per_minute\": 100"), "{out}");
    let (ok, out, _) = run(vec!["quota", "get", "--tenant", "acme"]).await;
    assert!(ok && out.contains("effective_quotas"), "{out}");
    // Above the tenant's own: refused with the reason; at or below: stored.
    let (ok, _, err) = run(vec![
        "quota",
        "set",
        "role:analyst",
        "--requests-per-minute",
        "101",
    ])
    .await;
    assert!(!ok && err.contains("only lower"), "{err}");
    let (ok, _, err) = run(vec![
        "quota",
        "set",
        "role:analyst",
        "--requests-per-minute",
        "10",
    ])
    .await;
    assert!(ok, "{err}");
    let (ok, out, _) = run(vec!["quota", "get"]).await;
    assert!(
        ok && out.contains("role:analyst") && out.contains("\"weight\": 2"),
        "{out}"
    );
    let (ok, _, err) = run(vec![
        "quota",
        "set",
        "role:analyst",
        "--requests-per-minute",
        "ten",
    ])
    .await;
    assert!(!ok && err.contains("whole number"), "{err}");
    let (ok, out, err) = run(vec!["quota", "rm", "role:analyst"]).await;
    assert!(ok && out.contains("removed"), "{err}");
    let (ok, _, err) = run(vec![
        "quota",
        "set",
        "--tenant",
        "acme",
        "--requests-per-minute",
        "none",
    ])
    .await;
    assert!(ok, "{err}");
    server.shutdown().await.unwrap();
}

/// Three `fief serve` processes sharing one PostgreSQL and one Redis, behind
/// a round-robin client: a tenant's limits hold across all of them, for
/// requests and for the tokens of streamed calls.
#[path = "cli/deployment.rs"]
mod deployment;

mod replicas {
    use std::process::Child;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use fief_llm_mock::{MockOptions, MockUpstream};
    use serde_json::{json, Value};

    use super::pg;

    struct Replica {
        child: Child,
        data: String,
    }

    impl Drop for Replica {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    pub(super) fn redis_url() -> Option<String> {
        let url = std::env::var("FIEF_TEST_REDIS_URL").ok();
        if url.is_none() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "FIEF_TEST_REDIS_URL"
            );
            eprintln!("SKIP: FIEF_TEST_REDIS_URL is not set");
        }
        url
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn three_replicas_share_one_count_of_requests_and_streamed_tokens() {
        let Some(db) = pg::database().await else {
            return;
        };
        let Some(redis) = redis_url() else {
            return;
        };
        let upstream = MockUpstream::start(MockOptions {
            name: "pool".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("fief.toml");
        std::fs::write(
            &config,
            format!(
                "[postgres]\nurl = {:?}\nadmin_url = {:?}\n\n[redis]\nurl = {redis:?}\n\n\
                 [quotas]\nrequest_burst_secs = 6\ntoken_burst_secs = 6\n\n\
                 [[llm.upstreams]]\nname = \"pool\"\nurl = {:?}\nmodels = [\"chat-small\"]\n\
                 max_concurrency = 256\n",
                db.config.url,
                db.config.admin_url,
                upstream.base_url()
            ),
        )
        .unwrap();
        let master = "7".repeat(64);
        let token = "replicas-admin-token-0123456789";
        let mut replicas = Vec::new();
        let mut admin = String::new();
        // One after another: each start migrates and grants on the shared database.
        for n in 0..3 {
            let data_dir = dir.path().join(format!("replica{n}"));
            std::fs::create_dir(&data_dir).unwrap();
            let (child, data, admin_url, _) = super::common::serve_with(
                &data_dir,
                Some(&config),
                &[("FIEF_MASTER_KEY", &master), ("FIEF_ADMIN_TOKEN", token)],
            );
            if n == 0 {
                admin = admin_url;
            }
            replicas.push(Replica { child, data });
        }
        let http = reqwest::Client::new();
        let rpm_key = super::common::create_tenant(&http, &admin, token, "rpm", None).await;
        let tpm_key = super::common::create_tenant(&http, &admin, token, "tpm", None).await;
        for (tenant, quotas) in [
            ("rpm", json!({"requests_per_minute": 600})),
            ("tpm", json!({"tokens_per_minute": 3000})),
        ] {
            let r = http
                .patch(format!("{admin}/admin/v1/tenants/{tenant}"))
                .bearer_auth(token)
                .json(&json!({ "quotas": quotas }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        }
        let urls: Arc<Vec<String>> = Arc::new(replicas.iter().map(|r| r.data.clone()).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let tokens = Arc::new(AtomicU64::new(0));
        let turn = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::new();
        let started = Instant::now();
        for c in 0..12 {
            let (http, urls, stop, turn) = (http.clone(), urls.clone(), stop.clone(), turn.clone());
            let streamed = c % 2 == 1;
            let key = if streamed {
                tpm_key.clone()
            } else {
                rpm_key.clone()
            };
            let counter = if streamed {
                tokens.clone()
            } else {
                requests.clone()
            };
            clients.push(tokio::spawn(async move {
                let body = json!({
                    "model": "chat-small",
                    "messages": [{"role": "user", "content": "hello"}],
                    "max_tokens": 10,
                    "stream": streamed,
                    "stream_options": {"include_usage": true},
                });
                while !stop.load(Ordering::Relaxed) {
                    let i = turn.fetch_add(1, Ordering::Relaxed) as usize % urls.len();
                    let r = http
                        .post(format!("{}/v1/chat/completions", urls[i]))
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap();
                    match (status, streamed) {
                        (200, false) => {
                            counter.fetch_add(1, Ordering::Relaxed);
                        }
                        (200, true) => {
                            let used: u64 = text
                                .split("\n\n")
                                .filter_map(|e| e.strip_prefix("data: "))
                                .filter_map(|e| serde_json::from_str::<Value>(e).ok())
                                .filter_map(|v| v["usage"]["total_tokens"].as_u64())
                                .sum();
                            assert!(used > 0, "{text}");
                            counter.fetch_add(used, Ordering::Relaxed);
                        }
                        (429, _) => {}
                        other => panic!("{other:?}: {text}"),
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        // 600 a minute for the run, plus the burst of 6 s (60).
        let expected = 600.0 * secs / 60.0 + 60.0;
        let got = requests.load(Ordering::Relaxed) as f64;
        eprintln!("requests: {got} admitted in {secs:.1} s, expected {expected:.0}");
        assert!(
            (got - expected).abs() <= expected * 0.05,
            "{got} requests admitted across 3 replicas in {secs:.1} s, expected {expected:.0} ± 5%"
        );
        // 3000 tokens a minute, plus 6 s worth (300).
        let expected = 3000.0 * secs / 60.0 + 300.0;
        let got = tokens.load(Ordering::Relaxed) as f64;
        eprintln!("streamed tokens: {got} admitted in {secs:.1} s, expected {expected:.0}");
        assert!(
            (got - expected).abs() <= expected * 0.05,
            "{got} streamed tokens admitted across 3 replicas in {secs:.1} s, expected {expected:.0} ± 5%"
        );
        // Every replica's decisions are in one chain in the database, which
        // the CLI has verified there (anchored first, so against the anchor).
        let cli = |args: &[&str]| super::common::as_operator(&admin, token, args);
        let anchored = cli(&["audit", "anchor"]);
        assert!(anchored.contains("\"seq\""), "{anchored}");
        let verified = cli(&["audit", "verify", "--server"]);
        assert!(
            verified.contains("audit log (database): OK")
                && verified.contains("matches the anchor"),
            "{verified}"
        );
        drop(replicas);
        db.cleanup().await;
    }
}

#[path = "cli/readme.rs"]
mod readme;

#[path = "cli/front_door.rs"]
mod front_door;
