//! `verify-isolation` from the admin API (and so from the operator
//! console): the probe of `fief-verify`, run in the background against this
//! gateway's own listeners with the token of the operator who asked. The
//! probe is an outside client like any other: its requests take the same
//! path, are decided and audited like any other, and it creates and removes
//! its own probe tenants. The last finished run is kept in memory and in the
//! data directory (`verify-isolation.json`), so it outlives a restart; a run
//! cut short by a shutdown is lost, and its probe tenants stay (named
//! `probe-…`, removable with `DELETE /admin/v1/tenants/{id}`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use fief_policy::{Action, Resource};
use serde_json::{json, Value};

use crate::auth::{bearer, Operator};
use crate::error::{ApiError, ApiResult};
use crate::route_table::Routes;
use crate::state::SharedState;

const REPORT_FILE: &str = "verify-isolation.json";

/// The probe's target and what it last found.
pub struct Checks {
    data_url: String,
    admin_url: String,
    file: PathBuf,
    /// The run in progress, or the last one that finished (`null` before any).
    last: Mutex<Value>,
}

/// The URL a client on this host reaches a listener at: a wildcard address
/// is reached on loopback.
fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

impl Checks {
    /// Reads the last report the data directory holds; an unreadable one
    /// is named in the log and replaced by the next run.
    pub fn new(data_dir: &std::path::Path, data: SocketAddr, admin: SocketAddr) -> Self {
        let file = data_dir.join(REPORT_FILE);
        let last = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(
                    "{}: not a report ({e}); the next run replaces it",
                    file.display()
                );
                Value::Null
            }),
            Err(_) => Value::Null,
        };
        Self {
            data_url: local_url(data),
            admin_url: local_url(admin),
            file,
            last: Mutex::new(last),
        }
    }

    fn last(&self) -> Value {
        self.last.lock().map(|v| v.clone()).unwrap_or(Value::Null)
    }

    /// Marks a run as started, unless one is in progress.
    fn begin(&self, started_at: &str) -> ApiResult<Value> {
        let mut last = self
            .last
            .lock()
            .map_err(|_| ApiError::Internal("the report lock is poisoned".into()))?;
        if last["status"] == "running" {
            return Err(ApiError::Conflict(format!(
                "a verify-isolation run is in progress (started {})",
                last["started_at"].as_str().unwrap_or("?")
            )));
        }
        *last = json!({"status": "running", "started_at": started_at});
        Ok(last.clone())
    }

    fn finish(&self, run: Value) {
        if let Ok(bytes) = serde_json::to_vec_pretty(&run) {
            // Written aside then renamed: a crash leaves the old report or the new.
            let aside = self.file.with_extension("json.tmp");
            let written =
                std::fs::write(&aside, bytes).and_then(|()| std::fs::rename(&aside, &self.file));
            if let Err(e) = written {
                tracing::warn!(
                    "{}: {e}; the report is kept in memory only",
                    self.file.display()
                );
            }
        }
        if let Ok(mut last) = self.last.lock() {
            *last = run;
        }
    }
}

/// The report's shape for the API: counts, the probe tenants, skipped
/// kinds and one row per (attacker, victim, kind, action); every attempt
/// only where it failed (the CLI's `--json` has them all).
fn finished(report: &fief_verify::Report) -> Value {
    let failures: Vec<_> = report
        .attempts
        .iter()
        .filter(|a| a.result != "denied")
        .collect();
    json!({
        "status": if report.passed() { "passed" } else { "failed" },
        "summary": report.summary(),
        "failure": report.failure(),
        "attempts": report.attempts.len(),
        "denied": report.denied,
        "leaks": report.leaks,
        "allowed": report.allowed,
        "unexpected": report.unexpected,
        "probe_tenants": report.probe_tenants,
        "skipped": report.skipped,
        "cleanup_errors": report.cleanup_errors,
        "failures": failures,
        "rows": report.rows(),
    })
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

pub fn admin_routes() -> Routes {
    Routes::new()
        .post("/admin/v1/verify-isolation", start)
        .get("/admin/v1/verify-isolation", last)
}

/// Starts a run in the background; `GET` shows it running, then its report.
#[utoipa::path(
    post,
    path = "/admin/v1/verify-isolation",
    operation_id = "run_verify_isolation",
    tag = "verify-isolation",
    summary = "Starts verify-isolation against this gateway (409 while a run is in progress)",
    responses((status = 202, description = "Started", body = serde_json::Value))
)]
async fn start(
    State(state): State<SharedState>,
    Operator(op): Operator,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    state
        .authorize(&op, Action::VerifyIsolation, &Resource::Platform)
        .await?;
    // The operator's own token: authentication above accepted it.
    let token = bearer(&headers)?.to_owned();
    let started_at = now();
    let running = state.checks.begin(&started_at)?;
    let target = fief_verify::Target {
        data_url: state.checks.data_url.clone(),
        admin_url: state.checks.admin_url.clone(),
        admin_token: token,
    };
    let task_state = state.clone();
    tokio::spawn(async move {
        let clock = Instant::now();
        let outcome = fief_verify::run(&target).await;
        let mut run = match &outcome {
            Ok(report) => finished(report),
            Err(e) => json!({"status": "error", "error": e}),
        };
        run["started_at"] = json!(started_at);
        run["finished_at"] = json!(now());
        run["took_ms"] = json!(clock.elapsed().as_millis() as u64);
        match &outcome {
            Ok(r) => tracing::info!("verify-isolation: {}", r.summary()),
            Err(e) => tracing::warn!("verify-isolation: {e}"),
        }
        task_state.checks.finish(run);
    });
    Ok((StatusCode::ACCEPTED, Json(json!({ "run": running }))))
}

#[utoipa::path(
    get,
    path = "/admin/v1/verify-isolation",
    operation_id = "last_verify_isolation",
    tag = "verify-isolation",
    summary = "The run in progress, or the last finished run's report (null before any)",
    responses((status = 200, description = "The run", body = serde_json::Value))
)]
async fn last(
    State(state): State<SharedState>,
    Operator(op): Operator,
) -> ApiResult<impl IntoResponse> {
    state
        .authorize(&op, Action::VerifyIsolation, &Resource::Platform)
        .await?;
    Ok(Json(json!({ "run": state.checks.last() })))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn wildcard_listeners_are_reached_on_loopback() {
        assert_eq!(
            local_url("0.0.0.0:8081".parse().unwrap()),
            "http://127.0.0.1:8081"
        );
        assert_eq!(local_url("[::]:8081".parse().unwrap()), "http://[::1]:8081");
        assert_eq!(
            local_url("10.0.0.5:81".parse().unwrap()),
            "http://10.0.0.5:81"
        );
    }

    #[test]
    fn one_run_at_a_time_and_the_last_report_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let checks = Checks::new(dir.path(), addr, addr);
        assert_eq!(checks.last(), Value::Null);
        checks.begin("t0").unwrap();
        assert!(matches!(checks.begin("t1"), Err(ApiError::Conflict(_))));
        checks.finish(json!({"status": "passed", "started_at": "t0"}));
        checks.begin("t2").unwrap();
        let again = Checks::new(dir.path(), addr, addr);
        assert_eq!(again.last()["status"], "passed");
        std::fs::write(dir.path().join(REPORT_FILE), "not json").unwrap();
        assert_eq!(Checks::new(dir.path(), addr, addr).last(), Value::Null);
    }
}
