//! Three `fief serve` replicas behind a load balancer, on one PostgreSQL,
//! one Redis and one bucket, as the README's "Running more than one
//! replica" describes: `fief verify-isolation` through the balancer finds
//! no leak; a model replaced or deleted on one replica is served so (or not
//! at all) by the others within the coherence bound; and one replica killed
//! with SIGKILL under mixed load loses nothing it acknowledged, while
//! clients retrying through the balancer are all answered.

use std::net::SocketAddr;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fief_llm_mock::relay::Balancer;
use fief_llm_mock::{MockOptions, MockUpstream};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::common;
use super::pg;

const TOKEN: &str = "deployment-admin-token-0123456789";

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

fn addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().unwrap()
}

fn model(seed: u64) -> Vec<u8> {
    fief_serving::onnx_builder::Mlp::seeded(&[4, 8, 2], seed).to_onnx()
}

/// Sends what `build` makes, again after a refused connection, a reset or
/// a 502/503 (a replica going away), up to 10 s; the final answer.
async fn with_retries(
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<(StatusCode, String), String> {
    let start = Instant::now();
    loop {
        let last = match build().timeout(Duration::from_secs(10)).send().await {
            Ok(r) if !matches!(r.status().as_u16(), 502 | 503) => {
                let status = r.status();
                match r.text().await {
                    Ok(text) => return Ok((status, text)),
                    Err(e) => e.to_string(),
                }
            }
            Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => e.to_string(),
        };
        if start.elapsed() > Duration::from_secs(10) {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Api {
    http: reqwest::Client,
    key: String,
}

impl Api {
    fn put_model(&self, base: &str, name: &str, bytes: Vec<u8>) -> reqwest::RequestBuilder {
        self.http
            .put(format!("{base}/api/v1/models/{name}"))
            .bearer_auth(&self.key)
            .header("content-type", "application/octet-stream")
            .body(bytes)
    }

    fn invoke(&self, base: &str, name: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{base}/endpoints/shared/invocations"))
            .bearer_auth(&self.key)
            .header("x-amzn-sagemaker-target-model", name)
            .json(&json!({"inputs": [[0.1, 0.2, 0.3, 0.4]]}))
    }

    fn item(&self, method: Method, base: &str, item: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{base}/api/v1/tables/load/items/{item}"))
            .bearer_auth(&self.key)
    }
}

/// Polls until every replica in `on` answers `check`, within `limit`.
async fn on_every(
    on: &[&str],
    limit: Duration,
    check: impl Fn(&str) -> reqwest::RequestBuilder,
    want: impl Fn(StatusCode, &str) -> bool,
) -> Duration {
    let start = Instant::now();
    for base in on {
        loop {
            let r = check(base).send().await.unwrap();
            let (status, text) = (r.status(), r.text().await.unwrap());
            if want(status, &text) {
                break;
            }
            assert!(
                start.elapsed() < limit,
                "{base} still answers {status} {text} after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_behind_a_balancer_keep_isolation_coherence_and_acknowledged_writes() {
    let Some(db) = pg::database().await else {
        return;
    };
    let Some(redis) = super::replicas::redis_url() else {
        return;
    };
    let Some((endpoint, bucket)) = super::s3_bucket().await else {
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
             [object_store]\nurl = \"s3://{bucket}/fief\"\nendpoint = {endpoint:?}\nallow_http = true\n\n\
             [[llm.upstreams]]\nname = \"pool\"\nurl = {:?}\nmodels = [\"chat-small\"]\n",
            db.config.url,
            db.config.admin_url,
            upstream.base_url()
        ),
    )
    .unwrap();
    let master = "5".repeat(64);
    let env = [
        ("FIEF_MASTER_KEY", master.as_str()),
        ("FIEF_ADMIN_TOKEN", TOKEN),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing-secret"),
    ];
    let start = |n: usize| {
        let data_dir = dir.path().join(format!("replica{n}"));
        let (child, data, admin, _) = common::serve_with(&data_dir, Some(&config), &env);
        (Replica { child, data }, admin)
    };
    let mut replicas = Vec::new();
    let mut admins = Vec::new();
    for n in 0..3 {
        let (r, admin) = start(n);
        replicas.push(r);
        admins.push(admin);
    }
    let data_lb = Balancer::start(replicas.iter().map(|r| addr(&r.data)).collect())
        .await
        .unwrap();
    let admin_lb = Balancer::start(admins.iter().map(|a| addr(a)).collect())
        .await
        .unwrap();
    let (data, admin) = (
        format!("http://{}", data_lb.addr),
        format!("http://{}", admin_lb.addr),
    );

    // 1. The outside-in probe, through the balancer: every request of it
    // may land on another replica than the one before.
    let report = dir.path().join("report.json");
    let out = common::fief()
        .args([
            "verify-isolation",
            "--data-url",
            &data,
            "--admin-url",
            &admin,
            "--admin-token",
            TOKEN,
            "--json",
        ])
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["leaks"], 0, "{stdout}");
    assert_eq!(r["allowed"], 0, "{stdout}");
    assert_eq!(r["unexpected"], 0, "{stdout}");
    assert!(r["attempts"].as_array().unwrap().len() > 500);

    // 2. A model replaced on one replica is served replaced by the others;
    // deleted, by none (its bytes are in the bucket, shared).
    let http = reqwest::Client::new();
    let api = Api {
        key: common::create_tenant(&http, &admin, TOKEN, "coherent", Some("pool")).await,
        http: http.clone(),
    };
    let urls: Vec<&str> = replicas.iter().map(|r| r.data.as_str()).collect();
    let put = api.put_model(urls[0], "m", model(7)).send().await.unwrap();
    assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());
    let first = api
        .invoke(urls[0], "m")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(first.contains("outputs"), "{first}");
    on_every(
        &urls,
        Duration::from_secs(1),
        |b| api.invoke(b, "m"),
        |s, t| s == 200 && t == first,
    )
    .await;
    let put = api.put_model(urls[1], "m", model(8)).send().await.unwrap();
    assert!(put.status().is_success(), "{}", put.text().await.unwrap());
    let second = api
        .invoke(urls[1], "m")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_ne!(first, second);
    let took = on_every(
        &[urls[0], urls[2]],
        Duration::from_secs(1),
        |b| api.invoke(b, "m"),
        |s, t| s == 200 && t == second,
    )
    .await;
    eprintln!("replaced model served by the other replicas within {took:?}");
    let del = http
        .delete(format!("{}/api/v1/models/m", urls[2]))
        .bearer_auth(&api.key)
        .send()
        .await
        .unwrap();
    assert!(del.status().is_success(), "{}", del.status());
    let took = on_every(
        &[urls[0], urls[1]],
        Duration::from_secs(1),
        |b| api.invoke(b, "m"),
        |s, _| s == 404,
    )
    .await;
    eprintln!("deleted model refused by the other replicas within {took:?}");

    // 3. Mixed load through the balancer; replica 2 is killed (SIGKILL)
    // in the middle. Clients retry what a dying replica did not answer.
    let put = api.put_model(&data, "base", model(3)).send().await.unwrap();
    assert_eq!(put.status(), 201);
    let base_out = api
        .invoke(urls[0], "base")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let api = Arc::new(api);
    let stop = Arc::new(AtomicBool::new(false));
    let acked_items = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let acked_models = Arc::new(Mutex::new(Vec::<String>::new()));
    let invoked = Arc::new(Mutex::new(0u64));
    let mut load = Vec::new();
    for w in 0..6 {
        let (api, data, stop) = (api.clone(), data.clone(), stop.clone());
        let (items, models, invoked) = (acked_items.clone(), acked_models.clone(), invoked.clone());
        let base_out = base_out.clone();
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match w % 3 {
                    0 => {
                        let item = format!("w{w}-{n}");
                        let (status, text) = with_retries(|| {
                            api.item(Method::PUT, &data, &item).json(&json!({"n": n}))
                        })
                        .await
                        .unwrap();
                        assert!(status.is_success(), "{item}: {status} {text}");
                        items.lock().unwrap().push((item, n));
                    }
                    1 => {
                        let name = format!("up-{w}-{n}");
                        let (status, text) = with_retries(|| api.put_model(&data, &name, model(n)))
                            .await
                            .unwrap();
                        assert!(status.is_success(), "{name}: {status} {text}");
                        models.lock().unwrap().push(name);
                    }
                    _ => {
                        let (status, text) =
                            with_retries(|| api.invoke(&data, "base")).await.unwrap();
                        assert_eq!((status, &text), (StatusCode::OK, &base_out));
                        *invoked.lock().unwrap() += 1;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut killed = replicas.remove(2);
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    // A replica keeps nothing of its own: its data directory holds its lock.
    let held: Vec<_> = std::fs::read_dir(dir.path().join("replica2"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(held, ["fief.lock"], "a replica wrote state of its own");
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let items = acked_items.lock().unwrap().clone();
    let models = acked_models.lock().unwrap().clone();
    eprintln!(
        "under a SIGKILL: {} item writes, {} model uploads, {} invocations acknowledged",
        items.len(),
        models.len(),
        *invoked.lock().unwrap()
    );
    assert!(items.len() > 20 && models.len() > 5, "too little load ran");
    for (item, n) in &items {
        let (status, text) = with_retries(|| api.item(Method::GET, &data, item))
            .await
            .unwrap();
        assert_eq!(status, 200, "acknowledged {item} lost: {text}");
        assert!(text.contains(&format!("\"n\":{n}")), "{item}: {text}");
    }
    let (_, listed) = with_retries(|| {
        http.get(format!("{data}/api/v1/models"))
            .bearer_auth(&api.key)
    })
    .await
    .unwrap();
    for name in &models {
        assert!(
            listed.contains(&format!("\"{name}\"")),
            "acknowledged model {name} lost"
        );
    }

    // The shared chain verifies (every replica's decisions, the killed
    // one's included), and the killed replica, restarted, serves.
    // Anchored in the bucket first (objects created once, never replaced).
    let cli = |args: &[&str]| common::as_operator(&admin, TOKEN, args);
    for _ in 0..2 {
        let anchored = cli(&["audit", "anchor"]);
        assert!(anchored.contains("\"seq\""), "{anchored}");
    }
    let verified = cli(&["audit", "verify", "--server"]);
    assert!(
        verified.contains("audit log (database): OK") && verified.contains("matches the anchor"),
        "{verified}"
    );
    drop(killed);
    let (again, _) = start(2);
    let (status, text) = with_retries(|| api.invoke(&again.data, "base"))
        .await
        .unwrap();
    assert_eq!((status, text), (StatusCode::OK, base_out));
    let (item, _) = &items[0];
    let (status, _) = with_retries(|| api.item(Method::GET, &again.data, item))
        .await
        .unwrap();
    assert_eq!(status, 200);
    drop(again);
    drop(replicas);
    db.cleanup().await;
}
