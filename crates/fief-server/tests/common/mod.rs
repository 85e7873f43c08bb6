//! A real gateway on loopback ports in a temporary directory, and helpers to
//! drive it over HTTP exactly as a client would.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cut;
pub mod idp;
pub mod kb;
pub mod pg;
pub mod sdk;

use std::net::SocketAddr;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use fief_config::Config;
use fief_serving::onnx_builder::Mlp;

pub struct TestServer {
    pub running: Option<fief_server::Running>,
    /// The throwaway PostgreSQL database every row is in, when the suite
    /// runs with `FIEF_TEST_STORE=postgres` (else SQLite under `dir`).
    pub pg: Option<std::sync::Arc<pg::TestPg>>,
    pub data: String,
    pub admin: String,
    pub data_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub admin_token: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    /// With `FIEF_TEST_REPLICAS`, the replicas after the first (which is
    /// `running`, in `dir`) and the balancers `data` and `admin` name.
    pub others: Vec<TestServer>,
    balancers: Vec<fief_llm_mock::relay::Balancer>,
}

/// `FIEF_TEST_REPLICAS=N` (with `FIEF_TEST_STORE=postgres` and an
/// S3-compatible server at `FIEF_TEST_S3_URL`): every gateway a suite
/// starts is N replicas of one deployment (one database, one bucket, one
/// Redis when `FIEF_TEST_REDIS_URL` names one, the same secrets) behind a
/// per-request round-robin balancer, so the suite runs through it
/// unchanged.
fn replicas_wanted() -> usize {
    std::env::var("FIEF_TEST_REPLICAS")
        .ok()
        .map_or(1, |n| n.parse().expect("FIEF_TEST_REPLICAS is a number"))
}

/// A new bucket on the test S3-compatible server (`FIEF_TEST_S3_URL`), as
/// `[object_store]`; `None` without one (refused under `CI=true`).
pub async fn test_bucket() -> Option<fief_config::ObjectStoreConfig> {
    let Ok(endpoint) = std::env::var("FIEF_TEST_S3_URL") else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "FIEF_TEST_S3_URL is not set (CI needs the S3 tests)"
        );
        return None;
    };
    let endpoint = endpoint.trim_end_matches('/').to_owned();
    let bucket = format!("fief-replicas-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let made = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success());
    // moto takes any credentials; every gateway of the process reads these.
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing-secret");
    Some(fief_config::ObjectStoreConfig {
        url: format!("s3://{bucket}/fief"),
        endpoint: Some(endpoint),
        region: "us-east-1".into(),
        allow_http: true,
        retry_timeout_ms: 1500,
    })
}

pub async fn spawn() -> TestServer {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
    spawn_in(tempfile::tempdir().unwrap(), tweak).await
}

/// A gateway over an existing data directory (e.g. to start with a cold cache).
pub async fn spawn_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> TestServer {
    spawn_secrets(dir, fief_server::Secrets::default(), tweak).await
}

/// A gateway given secrets (e.g. upstream keys) as `fief serve` reads them.
pub async fn spawn_secrets(
    dir: tempfile::TempDir,
    secrets: fief_server::Secrets,
    tweak: impl FnOnce(&mut Config),
) -> TestServer {
    let pg = match std::env::var("FIEF_TEST_STORE").as_deref() {
        Ok("postgres") => pg::database().await.map(std::sync::Arc::new),
        Ok("sqlite") | Err(_) => None,
        Ok(other) => panic!("FIEF_TEST_STORE={other}: expected sqlite or postgres"),
    };
    start_in(dir, pg, secrets, tweak).await
}

/// Replicas of one deployment on one throwaway PostgreSQL database (each
/// with its own data directory, the same master key and admin token);
/// `None` (skipped) without `FIEF_TEST_DATABASE_URL`.
pub async fn replicas(n: usize, tweak: impl Fn(&mut Config)) -> Option<Vec<TestServer>> {
    let pg = std::sync::Arc::new(pg::database().await?);
    let secrets = fief_server::Secrets {
        admin_token: Some(format!("adm-{:032x}", rand::random::<u128>())),
        master_key: Some(hex::encode(rand::random::<[u8; 32]>())),
        ..Default::default()
    };
    let mut out = Vec::new();
    for _ in 0..n {
        let dir = tempfile::tempdir().unwrap();
        out.push(start_in(dir, Some(pg.clone()), secrets.clone(), &tweak).await);
    }
    Some(out)
}

async fn start_in(
    dir: tempfile::TempDir,
    pg: Option<std::sync::Arc<pg::TestPg>>,
    secrets: fief_server::Secrets,
    tweak: impl FnOnce(&mut Config),
) -> TestServer {
    let mut config = Config::ephemeral(dir.path());
    config.postgres = pg.as_ref().map(|p| p.config.clone());
    tweak(&mut config);
    let n = replicas_wanted();
    if n > 1 {
        return behind_a_balancer(n, dir, pg, secrets, config).await;
    }
    let on_postgres = config.postgres.is_some();
    let running = fief_server::start(config, secrets).await.unwrap();
    assert_eq!(
        dir.path().join("fief.db").exists(),
        !on_postgres,
        "rows go to exactly one backend"
    );
    direct(running, dir, pg)
}

/// A client of one running gateway, addressed directly.
fn direct(
    running: fief_server::Running,
    dir: tempfile::TempDir,
    pg: Option<std::sync::Arc<pg::TestPg>>,
) -> TestServer {
    TestServer {
        data: format!("http://{}", running.data_addr),
        admin: format!("http://{}", running.admin_addr),
        data_addr: running.data_addr,
        admin_addr: running.admin_addr,
        admin_token: running.admin_token.clone(),
        http: reqwest::Client::new(),
        running: Some(running),
        pg,
        dir,
        others: Vec::new(),
        balancers: Vec::new(),
    }
}

/// `n` replicas of `config` (the first in `dir`), a balancer in front of
/// each plane.
async fn behind_a_balancer(
    n: usize,
    dir: tempfile::TempDir,
    pg: Option<std::sync::Arc<pg::TestPg>>,
    mut secrets: fief_server::Secrets,
    mut config: Config,
) -> TestServer {
    assert!(
        config.postgres.is_some(),
        "FIEF_TEST_REPLICAS needs FIEF_TEST_STORE=postgres"
    );
    // The deployment's quota counters in Redis, as replicas share them.
    if config.redis.is_none() {
        if let Ok(url) = std::env::var("FIEF_TEST_REDIS_URL") {
            config.redis = Some(fief_config::RedisConfig {
                url,
                timeout_ms: 500,
                connections: 4,
            });
        }
    }
    if config.object_store.is_none() {
        config.object_store = Some(test_bucket().await.expect(
            "FIEF_TEST_REPLICAS needs FIEF_TEST_S3_URL: replicas share model bytes in a bucket",
        ));
    }
    secrets
        .master_key
        .get_or_insert_with(|| hex::encode(rand::random::<[u8; 32]>()));
    secrets
        .admin_token
        .get_or_insert_with(|| format!("adm-{:032x}", rand::random::<u128>()));
    let mut replicas = Vec::new();
    for i in 0..n {
        let (d, mut c) = if i == 0 {
            (None, config.clone())
        } else {
            let d = tempfile::tempdir().unwrap();
            let mut c = config.clone();
            c.data_dir = d.path().to_path_buf();
            (Some(d), c)
        };
        c.postgres = config.postgres.clone();
        let running = fief_server::start(c, secrets.clone()).await.unwrap();
        replicas.push((d, running));
    }
    let lb = |addrs: Vec<SocketAddr>| async move {
        fief_llm_mock::relay::Balancer::start(addrs).await.unwrap()
    };
    let data_lb = lb(replicas.iter().map(|(_, r)| r.data_addr).collect()).await;
    let admin_lb = lb(replicas.iter().map(|(_, r)| r.admin_addr).collect()).await;
    let mut replicas = replicas.into_iter();
    let (_, first) = replicas.next().unwrap();
    let others = replicas
        .map(|(d, running)| direct(running, d.unwrap(), pg.clone()))
        .collect();
    TestServer {
        data: format!("http://{}", data_lb.addr),
        admin: format!("http://{}", admin_lb.addr),
        data_addr: data_lb.addr,
        admin_addr: admin_lb.addr,
        admin_token: first.admin_token.clone(),
        http: reqwest::Client::new(),
        running: Some(first),
        pg,
        dir,
        others,
        balancers: vec![data_lb, admin_lb],
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

impl TestServer {
    /// Stops this gateway and starts a new one over the same data directory.
    pub async fn restart(mut self, tweak: impl FnOnce(&mut Config)) -> TestServer {
        self.running.take().unwrap().shutdown().await.unwrap();
        start_in(
            self.dir,
            self.pg.take(),
            fief_server::Secrets::default(),
            tweak,
        )
        .await
    }

    /// One sample from the admin plane's Prometheus text.
    pub async fn metric(&self, line_prefix: &str) -> f64 {
        let r = self.send(self.admin_req(Method::GET, "/metrics")).await;
        assert_eq!(r.status, StatusCode::OK);
        r.text
            .lines()
            .find_map(|l| {
                l.strip_prefix(line_prefix)
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("no metric {line_prefix} in\n{}", r.text))
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let r = req.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        Resp {
            status,
            headers,
            text,
        }
    }

    pub fn admin_req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(&self.admin_token)
    }

    pub fn data_req(&self, key: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.data))
            .bearer_auth(key)
    }

    /// Creates a tenant and returns its first API key.
    pub async fn tenant(&self, id: &str, tier: &str) -> String {
        let r = self
            .send(
                self.admin_req(Method::POST, "/admin/v1/tenants")
                    .json(&json!({"id": id, "tier": tier})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json()["api_key"].as_str().unwrap().to_owned()
    }

    pub async fn put_model(&self, key: &str, name: &str, bytes: Vec<u8>) -> Resp {
        self.send(
            self.data_req(key, Method::PUT, &format!("/api/v1/models/{name}"))
                .header("content-type", "application/octet-stream")
                .body(bytes),
        )
        .await
    }

    pub async fn invoke(&self, key: &str, endpoint: &str, target: &str, body: &Value) -> Resp {
        self.send(
            self.data_req(
                key,
                Method::POST,
                &format!("/endpoints/{endpoint}/invocations"),
            )
            .header(fief_server::TARGET_MODEL_HEADER, target)
            .json(body),
        )
        .await
    }

    /// Sends bytes exactly as given (no client-side path normalisation) and
    /// returns the status code (0 if the server closed without answering)
    /// and the whole response text. The server must answer and close within
    /// 10 s: a hang fails the test, it never passes as a refusal.
    pub async fn raw(&self, addr: SocketAddr, request: &[u8]) -> (u16, String) {
        raw_within(addr, request, std::time::Duration::from_secs(10)).await
    }

    pub async fn healthy(&self) -> bool {
        self.send(self.http.get(format!("{}/healthz", self.data)))
            .await
            .status
            == StatusCode::OK
    }
}

/// A per-tenant model: same shape for everyone, different weights.
pub fn tenant_model(seed: u64) -> Mlp {
    Mlp::seeded(&[4, 8, 3], seed)
}

pub fn outputs(r: &Resp) -> Vec<Vec<f32>> {
    serde_json::from_value(r.json()["outputs"]["output"].clone())
        .unwrap_or_else(|_| panic!("no outputs in {}", r.text))
}

/// The largest difference between two batches of outputs of the same
/// shape. Panics when the shapes differ or a batch is empty, so an empty or
/// truncated answer can never pass as a close one.
pub fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(
        a.len(),
        b.len(),
        "batches of {} and {} rows",
        a.len(),
        b.len()
    );
    assert!(!a.is_empty(), "an empty batch");
    let mut worst = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(
            x.len(),
            y.len(),
            "rows of {} and {} values",
            x.len(),
            y.len()
        );
        assert!(!x.is_empty(), "an empty row");
        for (p, q) in x.iter().zip(y) {
            assert!(p.is_finite() && q.is_finite(), "{p} vs {q}");
            worst = worst.max((p - q).abs());
        }
    }
    worst
}

/// Every number in `text` (a JSON body, or any text: numbers are found
/// wherever they are), as f64.
pub fn numbers_in(text: &str) -> Vec<f64> {
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Number(n) => out.extend(n.as_f64()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            Value::String(s) => out.extend(numbers_in(s)),
            _ => {}
        }
    }
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        let mut out = Vec::new();
        walk(&v, &mut out);
        return out;
    }
    text.split(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .filter_map(|t| t.parse::<f64>().ok())
        .collect()
}

/// Whether `text` holds a model's answer `expected` (every value, in order,
/// within 1e-5 relative), whatever its formatting: the leak check for
/// model outputs. Compared as numbers, so f32 printed through f64 (as the
/// gateway's JSON does) is found as surely as any other form.
pub fn holds_outputs(text: &str, expected: &[f32]) -> bool {
    assert!(!expected.is_empty());
    let found = numbers_in(text);
    let close = |a: f64, b: f32| (a - f64::from(b)).abs() <= 1e-5 * f64::from(b).abs().max(1e-3);
    found
        .windows(expected.len())
        .any(|w| w.iter().zip(expected).all(|(a, b)| close(*a, *b)))
}

/// [`TestServer::raw`] with its own limit: the peer must answer and close
/// within `limit`, or the test fails.
pub async fn raw_within(
    addr: SocketAddr,
    request: &[u8],
    limit: std::time::Duration,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A server that closes early may reset the rest of a large request.
    let _ = s.write_all(request).await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(limit, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    assert!(
        read.is_ok(),
        "the server neither answered nor closed within {limit:?} (got {:?})",
        text.chars().take(200).collect::<String>()
    );
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}
