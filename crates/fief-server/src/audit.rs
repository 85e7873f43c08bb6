//! Where audit entries go: the file log in the data directory (one node),
//! or, on PostgreSQL, the one chain every replica appends to. Appends to
//! the database are group commits like the file log's: whoever is queued
//! when a transaction ends goes in the next one, and each caller waits for
//! its own commit (fail closed: no entry, no decision).

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use fief_audit::{Anchor, AuditError, AuditLog, Entry, Event, Query, Verified};
use fief_policy::{Action, Resource};
use fief_store::Principal;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::auth::Operator;
use crate::error::{ApiError, ApiResult};
use crate::route_table::Routes;
use crate::routes::ApiQuery;
use crate::state::{AppState, SharedState};

/// One append waiting for its commit.
type Job = (Event, oneshot::Sender<Result<u64, String>>);

/// Entries one database transaction appends at most.
const BATCH: usize = 512;

pub enum Audit {
    File(Box<AuditLog>),
    Database {
        queue: mpsc::Sender<Job>,
        /// Taken by [`spawn_writer`] once the state exists.
        pending: std::sync::Mutex<Option<mpsc::Receiver<Job>>>,
    },
}

impl Audit {
    pub fn database() -> Self {
        let (queue, rx) = mpsc::channel(BATCH * 4);
        Audit::Database {
            queue,
            pending: std::sync::Mutex::new(Some(rx)),
        }
    }

    /// Appends one event; its sequence number once it is durable.
    pub async fn append(&self, event: Event) -> Result<u64, AuditError> {
        match self {
            Audit::File(log) => log.append(event).await,
            Audit::Database { queue, .. } => {
                let (done, wait) = oneshot::channel();
                queue
                    .send((event, done))
                    .await
                    .map_err(|_| AuditError::Poisoned)?;
                match wait.await {
                    Ok(result) => result.map_err(AuditError::Store),
                    Err(_) => Err(AuditError::Poisoned),
                }
            }
        }
    }

    /// The file log, when entries go to files.
    pub fn file(&self) -> Option<&AuditLog> {
        match self {
            Audit::File(log) => Some(log),
            Audit::Database { .. } => None,
        }
    }

    /// Entries matching `query`, newest last, through the log's indexes.
    pub async fn query(
        state: &AppState,
        audit: Arc<Audit>,
        query: Query,
    ) -> Result<Vec<Entry>, String> {
        match &*audit {
            Audit::File(_) => tokio::task::spawn_blocking(move || match &*audit {
                Audit::File(log) => log.query(&query).map_err(|e| e.to_string()),
                Audit::Database { .. } => Ok(Vec::new()),
            })
            .await
            .map_err(|e| e.to_string())?,
            Audit::Database { .. } => state
                .store
                .audit_entries(&query)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Checks the whole chain; on the database also against the newest
    /// anchor (a removed tail is an error).
    pub async fn verify(state: &AppState) -> Result<(Verified, Option<Anchor>), AuditError> {
        match &*state.audit {
            Audit::File(log) => {
                let dir = log.dir().parent().map(std::path::Path::to_path_buf);
                let dir = dir.unwrap_or_default();
                tokio::task::spawn_blocking(move || fief_audit::verify_dir(&dir))
                    .await
                    .map_err(|e| AuditError::Store(e.to_string()))?
                    .map(|v| (v, None))
            }
            Audit::Database { .. } => state.store.verify_audit().await,
        }
    }
}

/// Starts the database writer (nothing for the file log).
pub fn spawn_writer(state: &SharedState) {
    let Audit::Database { pending, .. } = &*state.audit else {
        return;
    };
    if let Some(rx) = pending.lock().ok().and_then(|mut p| p.take()) {
        tokio::spawn(writer(Arc::downgrade(state), rx));
    }
}

async fn writer(state: std::sync::Weak<AppState>, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let (events, waiting): (Vec<Event>, Vec<_>) = batch.drain(..).unzip();
        let result = match state.upgrade() {
            Some(state) => state
                .store
                .append_audit(events)
                .await
                .map_err(|e| e.to_string()),
            None => Err("the gateway is stopping".to_owned()),
        };
        if let Err(e) = &result {
            tracing::error!("audit entries not written: {e}");
        }
        match result {
            Ok(entries) => {
                for (done, entry) in waiting.into_iter().zip(entries) {
                    let _ = done.send(Ok(entry.seq));
                }
            }
            Err(e) => {
                for done in waiting {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Anchors the head every `audit.anchor_secs` (a replica each; the same
/// head anchored twice is one anchor).
pub async fn anchor_periodically(state: SharedState, mut stop: tokio::sync::watch::Receiver<bool>) {
    if state.audit.file().is_some() {
        return;
    }
    let every = std::time::Duration::from_secs(state.config.audit.anchor_secs);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = state.store.anchor_audit().await {
                    tracing::warn!("audit anchor not written: {e}");
                }
            }
            _ = stop.changed() => return,
        }
    }
}

// ---- the operator's view ----------------------------------------------------

pub fn admin_routes() -> Routes {
    Routes::new()
        .get("/admin/v1/audit", list)
        .get("/admin/v1/audit/verify", verify)
        .post("/admin/v1/audit/anchor", anchor)
}

#[utoipa::path(
    get,
    path = "/admin/v1/audit",
    operation_id = "list_audit",
    tag = "audit",
    summary = "Audit entries, filtered",
    params(AuditQuery),
    responses((status = 200, description = "The entries", body = serde_json::Value))
)]
async fn list(
    State(state): State<SharedState>,
    Operator(op): Operator,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(json!({"entries": entries(&state, &op, q).await?})))
}

/// The whole chain checked where it is kept; a broken or truncated chain
/// is a 200 with `"ok": false` and the reason (the check itself worked).
#[utoipa::path(
    get,
    path = "/admin/v1/audit/verify",
    operation_id = "verify_audit",
    tag = "audit",
    summary = "Verifies the audit chain against its newest anchor",
    responses((status = 200, description = "The chain status", body = serde_json::Value))
)]
async fn verify(
    State(state): State<SharedState>,
    Operator(op): Operator,
) -> ApiResult<impl IntoResponse> {
    state
        .authorize(&op, Action::ReadAudit, &Resource::Platform)
        .await?;
    let started = std::time::Instant::now();
    let checked = Audit::verify(&state).await;
    let took_ms = started.elapsed().as_millis() as u64;
    let place = if state.audit.file().is_some() {
        "files"
    } else {
        "database"
    };
    Ok(Json(match checked {
        Ok((v, anchor)) => json!({
            "ok": true, "place": place, "entries": v.entries, "first_seq": v.first_seq,
            "head": v.last_hash, "anchor": anchor, "took_ms": took_ms,
        }),
        Err(AuditError::Store(e)) => {
            return Err(ApiError::Unavailable(format!(
                "the audit log cannot be read: {e}"
            )))
        }
        Err(e) => json!({"ok": false, "place": place, "error": e.to_string(), "took_ms": took_ms}),
    }))
}

/// Checkpoints the head now (the shared log only; the file log checkpoints
/// each segment it closes).
#[utoipa::path(
    post,
    path = "/admin/v1/audit/anchor",
    operation_id = "anchor_audit",
    tag = "audit",
    summary = "Writes an anchor of the chain to the object store",
    responses((status = 200, description = "The anchor", body = serde_json::Value))
)]
async fn anchor(
    State(state): State<SharedState>,
    Operator(op): Operator,
) -> ApiResult<impl IntoResponse> {
    let resource = Resource::Platform;
    state.authorize(&op, Action::ReadAudit, &resource).await?;
    if state.audit.file().is_some() {
        return Err(ApiError::Validation(
            "anchors are kept for the shared audit log on PostgreSQL; this node's file log \
             checkpoints each segment it closes"
                .into(),
        ));
    }
    let anchor = state.store.anchor_audit().await?;
    Ok(Json(json!({ "anchor": anchor })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub tenant: Option<String>,
    #[param(value_type = Option<String>)]
    pub decision: Option<fief_audit::Decision>,
    #[param(value_type = Option<String>)]
    pub kind: Option<fief_audit::Kind>,
    /// RFC 3339: entries at or after this time...
    pub since: Option<String>,
    /// ...and before this one.
    pub until: Option<String>,
    pub limit: Option<usize>,
}

fn time_ms(what: &str, raw: &Option<String>) -> ApiResult<Option<i64>> {
    raw.as_deref()
        .map(|t| {
            humantime::parse_rfc3339_weak(t)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .ok_or_else(|| {
                    ApiError::Validation(format!(
                        "{what} must be an RFC 3339 time such as 2026-12-01T10:00:00Z"
                    ))
                })
        })
        .transpose()
}

/// Audit entries, newest last, found through the log's index (tenant,
/// decision, kind, time). They hold who did what to which resource name,
/// never tenant content.
pub async fn entries(state: &AppState, op: &Principal, q: AuditQuery) -> ApiResult<Vec<Entry>> {
    state
        .authorize(op, Action::ReadAudit, &Resource::Platform)
        .await?;
    let query = fief_audit::Query {
        tenant: q.tenant,
        decision: q.decision,
        kind: q.kind,
        since_ms: time_ms("since", &q.since)?,
        until_ms: time_ms("until", &q.until)?,
        limit: q.limit.unwrap_or(100).clamp(1, 10_000),
    };
    Audit::query(state, state.audit.clone(), query)
        .await
        .map_err(|e| ApiError::Unavailable(format!("the audit log cannot be read: {e}")))
}
