//! Private invocation logs at the edge. Each LLM call, embedding and ONNX
//! invocation appends a record to its tenant's own stream (written by a
//! group writer, committed before the answer leaves, in parallel with the
//! usage event); the tenant reads and deletes its records and sets its
//! settings and sink (`/api/v1/logs`, `/api/v1/log-settings`,
//! `/api/v1/log-sink`). The admin plane has no route here: the operator
//! sees usage (counts, money), never content. A sink worker exports each
//! tenant's records to its own webhook or bucket, in order, at least once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use fief_config::LogsConfig;
use fief_core::TenantId;
use fief_logs::deliver::Deliverer;
use fief_logs::sink::{self, Batch, SinkConfig};
use fief_logs::{Content, Entry, Policy, Settings, STREAM};
use fief_metering::{time, Kind};
use fief_policy::{Action, Resource};
use fief_store::{LogAppend, LogQuery, Principal, SinkLease, TenantScope};

use crate::error::{ApiError, ApiResult};
use crate::route_table::Routes;
use crate::routes::{ApiJson, ApiQuery};
use crate::state::{AppState, SharedState};

type Done = oneshot::Sender<Result<(), String>>;
type Job = (LogAppend, Entry, Done);

/// A tenant's compiled settings as cached: for which incarnation, since when.
type Cached = (LogAppend, Instant, Arc<Policy>);

/// Settings are cached this long per process: a change made on another
/// replica applies within it.
const SETTINGS_TTL: Duration = Duration::from_secs(30);

pub struct Logbook {
    queue: Option<mpsc::Sender<Job>>,
    pending: Mutex<Option<mpsc::Receiver<Job>>>,
    pub config: LogsConfig,
    policies: Mutex<HashMap<TenantId, Cached>>,
    deliverer: Deliverer,
    /// This process's name in sink leases.
    holder: String,
    lost: std::sync::atomic::AtomicU64,
}

impl Logbook {
    pub fn new(config: &LogsConfig) -> Result<Logbook, String> {
        let (queue, pending) = if config.enabled {
            let (tx, rx) = mpsc::channel(config.batch_max * 4);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        Ok(Logbook {
            queue,
            pending: Mutex::new(pending),
            config: config.clone(),
            policies: Mutex::new(HashMap::new()),
            deliverer: Deliverer::new(config.allow_insecure_sinks).map_err(|e| e.to_string())?,
            holder: uuid::Uuid::new_v4().to_string(),
            lost: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Prometheus text: records that could not be written (each also
    /// logged as an error).
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP fief_log_records_lost_total Private log records that could not be written (their answers went out).\n\
             # TYPE fief_log_records_lost_total counter\nfief_log_records_lost_total {}",
            self.lost.load(std::sync::atomic::Ordering::Relaxed)
        );
    }

    fn compile(&self, settings: Settings) -> Result<Policy, fief_logs::LogError> {
        Policy::new(
            settings,
            self.config.default_retention_days,
            self.config.max_retention_days,
        )
    }

    pub fn forget(&self, tenant: &TenantId) {
        if let Ok(mut p) = self.policies.lock() {
            p.remove(tenant);
        }
    }
}

/// The tenant's compiled settings, cached. A store that cannot be read
/// gives `None`: the record is then written without content, never with
/// content the tenant may have turned off.
async fn policy(state: &AppState, who: &LogAppend) -> Option<Arc<Policy>> {
    let book = &state.logs;
    if let Ok(cache) = book.policies.lock() {
        if let Some((w, at, p)) = cache.get(who.tenant()) {
            if w == who && at.elapsed() < SETTINGS_TTL {
                return Some(p.clone());
            }
        }
    }
    let stored = match state.store.log_config(who).await {
        Ok(c) => c.settings.map(|b| serde_json::from_slice::<Settings>(&b)),
        Err(e) => {
            tracing::error!(tenant = %who.tenant(), "log settings cannot be read: {e}");
            return None;
        }
    };
    let mut settings = match stored {
        None => Settings::default(),
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            tracing::error!(tenant = %who.tenant(), "stored log settings are corrupt: {e}");
            return None;
        }
    };
    // Settings accepted under a longer `logs.max_retention_days` than the
    // operator allows now keep the longest allowed.
    let max = book.config.max_retention_days;
    settings.retention_days = settings.retention_days.map(|d| d.min(max));
    let p = match book.compile(settings) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            tracing::error!(tenant = %who.tenant(), "stored log settings do not compile: {e}");
            return None;
        }
    };
    if let Ok(mut cache) = book.policies.lock() {
        cache.insert(
            who.tenant().clone(),
            (who.clone(), Instant::now(), p.clone()),
        );
    }
    Some(p)
}

/// Whether `p`'s invocations of `kind` log their content, so a caller
/// builds it only when it is wanted.
pub async fn wants_content(state: &AppState, p: &Principal, kind: Kind) -> bool {
    if state.logs.queue.is_none() {
        return false;
    }
    let Some(who) = LogAppend::of(p) else {
        return false;
    };
    policy(state, &who)
        .await
        .is_some_and(|pol| pol.settings.content && (kind != Kind::Onnx || pol.settings.onnx_io))
}

/// What a record names in clear.
pub struct Meta {
    pub request_id: String,
    pub at_ms: i64,
    pub kind: Kind,
    pub model: String,
    pub principal: String,
}

/// Appends one record to `p`'s tenant's log and waits until it is
/// committed. A failure is logged and counted, not the caller's: the
/// answer (already billed) still goes.
pub async fn record(
    state: &AppState,
    p: &Principal,
    meta: Meta,
    usage: Value,
    content: Option<Content>,
) {
    let book = &state.logs;
    let (Some(queue), Some(who)) = (&book.queue, LogAppend::of(p)) else {
        return;
    };
    let body = match policy(state, &who).await {
        Some(pol) => pol.body(usage, content, book.config.max_record_bytes),
        None => fief_logs::usage_only(usage),
    };
    let entry = Entry {
        request_id: meta.request_id,
        at_ms: meta.at_ms,
        kind: meta.kind.name().to_owned(),
        model: meta.model,
        principal: meta.principal,
        body,
    };
    let (done, wait) = oneshot::channel();
    let result = match queue.send((who, entry, done)).await {
        Ok(()) => wait
            .await
            .unwrap_or_else(|_| Err("the log writer stopped".into())),
        Err(_) => Err("the log writer stopped".into()),
    };
    if let Err(e) = result {
        book.lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!("log record not written: {e}");
    }
}

/// Starts the group writer and the sink worker; both hold the state
/// weakly and end with the gateway.
pub fn spawn(state: &SharedState) {
    let rx = state.logs.pending.lock().ok().and_then(|mut p| p.take());
    if let Some(rx) = rx {
        tokio::spawn(writer(
            Arc::downgrade(state),
            rx,
            state.logs.config.batch_max,
        ));
        tokio::spawn(sink_worker(Arc::downgrade(state)));
    }
}

/// Whoever is queued when a write ends goes in the next transactions, one
/// per tenant.
async fn writer(state: std::sync::Weak<AppState>, mut rx: mpsc::Receiver<Job>, batch_max: usize) {
    let mut batch = Vec::with_capacity(batch_max);
    while rx.recv_many(&mut batch, batch_max).await > 0 {
        let mut by_tenant: Vec<(LogAppend, Vec<Entry>, Vec<Done>)> = Vec::new();
        for (who, entry, done) in batch.drain(..) {
            match by_tenant.iter_mut().find(|(w, _, _)| *w == who) {
                Some((_, entries, waiting)) => {
                    entries.push(entry);
                    waiting.push(done);
                }
                None => by_tenant.push((who, vec![entry], vec![done])),
            }
        }
        let Some(state) = state.upgrade() else {
            return;
        };
        for (who, entries, waiting) in by_tenant {
            let turn = state.meter.write_turn.lock().await;
            let result = state
                .store
                .append_logs(&who, STREAM, &entries)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            drop(turn);
            for done in waiting {
                let _ = done.send(result.clone());
            }
        }
    }
}

/// Delivers every leased sink's next batch, over and over. A sink that
/// fails waits out its backoff; the others go on.
async fn sink_worker(state: std::sync::Weak<AppState>) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(state) = state.upgrade() else {
            return;
        };
        let leases = match state.store.lease_sinks(&state.logs.holder, 30_000).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("log sinks cannot be leased: {e}");
                continue;
            }
        };
        for lease in leases {
            if let Err(e) = deliver_next(&state, &lease).await {
                tracing::warn!(tenant = %lease.who.tenant(), "log sink: {e}");
            }
        }
    }
}

async fn deliver_next(state: &AppState, lease: &SinkLease) -> Result<(), String> {
    let book = &state.logs;
    let sink: SinkConfig = serde_json::from_slice(&lease.sink).map_err(|e| e.to_string())?;
    let latest = state
        .store
        .latest_log_seq(&lease.who, STREAM)
        .await
        .map_err(|e| e.to_string())?;
    let mut progress = sink::bound_backlog(lease.progress, latest, book.config.sink_backlog);
    let records = state
        .store
        .sink_records(
            &SinkLease {
                progress,
                ..lease.clone()
            },
            STREAM,
            book.config.sink_batch as i64,
        )
        .await
        .map_err(|e| e.to_string())?;
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        if progress != lease.progress {
            save(state, lease, progress, None, 0).await?;
        }
        return Ok(());
    };
    let batch = Batch {
        tenant: lease.who.tenant().as_str(),
        stream: STREAM,
        first_seq: first.seq,
        last_seq: last.seq,
        skipped: progress.skipped,
        records: &records,
    };
    match book.deliverer.deliver(&sink, &batch).await {
        Ok(()) => {
            progress.delivered = last.seq;
            save(state, lease, progress, None, 0).await
        }
        Err(e) => {
            let failures = u32::try_from(lease.failures).unwrap_or(u32::MAX);
            let wait = sink::backoff(failures);
            let next = crate::meter::now_ms() + wait.as_millis() as i64;
            save(state, lease, progress, Some(&e.to_string()), next).await?;
            Err(e.to_string())
        }
    }
}

async fn save(
    state: &AppState,
    lease: &SinkLease,
    progress: sink::Progress,
    error: Option<&str>,
    next_ms: i64,
) -> Result<(), String> {
    state
        .store
        .sink_progress(lease, &state.logs.holder, progress, error, next_ms)
        .await
        .map_err(|e| e.to_string())
}

/// Retention: each tenant's records older than its retention go.
pub async fn expire(state: &AppState) {
    let tenants = match state.store.log_tenants().await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("log retention: tenants cannot be listed: {e}");
            return;
        }
    };
    for who in tenants {
        let Some(pol) = policy(state, &who).await else {
            continue;
        };
        let before = crate::meter::now_ms() - i64::from(pol.retention_days) * 86_400_000;
        if let Err(e) = state.store.expire_logs(&who, STREAM, before).await {
            tracing::warn!(tenant = %who.tenant(), "log retention: {e}");
        }
    }
}

// ---- the tenant's routes ------------------------------------------------------

pub fn routes() -> Routes {
    Routes::new()
        .get("/api/v1/logs", read)
        .delete("/api/v1/logs", delete)
        .get("/api/v1/log-settings", get_settings)
        .put("/api/v1/log-settings", put_settings)
        .get("/api/v1/log-sink", get_sink)
        .put("/api/v1/log-sink", put_sink)
        .delete("/api/v1/log-sink", delete_sink)
}

async fn scope(state: &AppState, p: &Principal, action: Action) -> ApiResult<TenantScope> {
    if state.logs.queue.is_none() {
        return Err(ApiError::NotFound(
            "private logs are turned off in this deployment (logs.enabled)".into(),
        ));
    }
    let tenant = p.tenant().cloned().ok_or(ApiError::AccessDenied)?;
    state
        .authorize_scoped(p, action, &Resource::Tenant(tenant))
        .await
}

fn instant_ms(field: &str, v: Option<&str>, default: i64) -> ApiResult<i64> {
    match v {
        None => Ok(default),
        Some(s) => time::parse_instant(s)
            .map(|secs| secs * 1000)
            .map_err(|e| ApiError::Validation(format!("`{field}`: {e}"))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub model: Option<String>,
    pub principal: Option<String>,
    /// Records after this sequence number (the previous page's `next`).
    pub after: Option<i64>,
    pub limit: Option<i64>,
}

/// `GET /api/v1/logs`: the caller's tenant's records, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/logs",
    operation_id = "read_logs",
    tag = "logs",
    summary = "The tenant's private log, oldest first",
    params(LogsQuery),
    responses((status = 200, description = "A page of records", body = serde_json::Value))
)]
async fn read(
    State(state): State<SharedState>,
    crate::auth::TenantCaller(p): crate::auth::TenantCaller,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> ApiResult<Json<Value>> {
    let scope = scope(&state, &p, Action::ReadLogs).await?;
    for (field, v) in [("model", &q.model), ("principal", &q.principal)] {
        // A name is printable (PostgreSQL also refuses a NUL in text).
        if v.as_ref()
            .is_some_and(|v| v.is_empty() || v.len() > 512 || v.chars().any(char::is_control))
        {
            return Err(ApiError::Validation(format!(
                "`{field}` must be 1 to 512 printable characters"
            )));
        }
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Validation(
            "limit must be between 1 and 1000".into(),
        ));
    }
    let query = LogQuery {
        after: q.after.unwrap_or(0).max(0),
        from_ms: instant_ms("from", q.from.as_deref(), 0)?,
        to_ms: instant_ms("to", q.to.as_deref(), i64::MAX)?,
        model: q.model,
        principal: q.principal,
        limit,
    };
    let records = state.store.read_logs(&scope, STREAM, &query).await?;
    let next = (records.len() as i64 == limit)
        .then(|| records.last().map(|r| r.seq))
        .flatten();
    Ok(Json(
        json!({"stream": STREAM, "records": records, "next": next}),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    pub before: Option<String>,
}

/// `DELETE /api/v1/logs?before=`: records older than `before` go.
#[utoipa::path(
    delete,
    path = "/api/v1/logs",
    operation_id = "delete_logs",
    tag = "logs",
    summary = "Deletes records older than a time",
    params(DeleteQuery),
    responses((status = 200, description = "How many were deleted", body = serde_json::Value))
)]
async fn delete(
    State(state): State<SharedState>,
    crate::auth::TenantCaller(p): crate::auth::TenantCaller,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<Json<Value>> {
    let scope = scope(&state, &p, Action::DeleteLogs).await?;
    let Some(before) = q.before.as_deref() else {
        return Err(ApiError::Validation(
            "`before` is required (YYYY-MM-DD or RFC 3339): records older than it are deleted"
                .into(),
        ));
    };
    let before = instant_ms("before", Some(before), 0)?;
    let deleted = state.store.delete_logs(&scope, STREAM, before).await?;
    Ok(Json(json!({"deleted": deleted})))
}

async fn current_settings(state: &AppState, scope: &TenantScope) -> ApiResult<Settings> {
    let config = state.store.log_config(&LogAppend::of_scope(scope)).await?;
    match config.settings {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Internal(format!("stored log settings: {e}"))),
        None => Ok(Settings::default()),
    }
}

fn settings_view(state: &AppState, s: Settings) -> Value {
    let retention = s
        .retention_days
        .unwrap_or(state.logs.config.default_retention_days);
    json!({
        "content": s.content, "onnx_io": s.onnx_io, "retention_days": retention,
        "redact": s.redact,
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/log-settings",
    tag = "logs",
    summary = "The private log's settings",
    responses((status = 200, description = "The settings", body = serde_json::Value))
)]
async fn get_settings(
    State(state): State<SharedState>,
    crate::auth::TenantCaller(p): crate::auth::TenantCaller,
) -> ApiResult<Json<Value>> {
    let scope = scope(&state, &p, Action::ConfigureLogs).await?;
    let s = current_settings(&state, &scope).await?;
    Ok(Json(settings_view(&state, s)))
}

/// `PUT /api/v1/log-settings`: the whole settings object; fields left out
/// take their defaults.
#[utoipa::path(
    put,
    path = "/api/v1/log-settings",
    tag = "logs",
    summary = "Sets the private log's settings",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "The settings", body = serde_json::Value))
)]
async fn put_settings(
    State(state): State<SharedState>,
    crate::auth::TenantCaller(p): crate::auth::TenantCaller,
    ApiJson(s): ApiJson<Settings>,
) -> ApiResult<Json<Value>> {
    let scope = scope(&state, &p, Action::ConfigureLogs).await?;
    state
        .logs
        .compile(s.clone())
        .map_err(|e| ApiError::Validation(e.to_string()))?;
    let bytes = serde_json::to_vec(&s).map_err(|e| ApiError::Internal(e.to_string()))?;
    state.store.put_log_settings(&scope, Some(&bytes)).await?;
    state.logs.forget(scope.tenant());
    Ok(Json(settings_view(&state, s)))
}

async fn sink_view(state: &AppState, scope: &TenantScope) -> ApiResult<Value> {
    let who = LogAppend::of_scope(scope);
    let config = state.store.log_config(&who).await?;
    let latest = state.store.latest_log_seq(&who, STREAM).await?;
    let Some(bytes) = config.sink else {
        return Ok(json!({"sink": null, "latest_seq": latest}));
    };
    let sink: SinkConfig = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Internal(format!("stored sink: {e}")))?;
    Ok(json!({
        "sink": sink.public(),
        "latest_seq": latest,
        "delivered_seq": config.progress.delivered,
        "pending": (latest - config.progress.delivered).max(0),
        "skipped": config.progress.skipped,
        "failures": config.failures,
        "last_error": config.last_error,
        "last_delivery_ms": config.last_delivery_ms,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/log-sink",
    tag = "logs",
    summary = "The tenant's log sink (its own bucket)",
    responses((status = 200, description = "The sink", body = serde_json::Value))
)]
async fn get_sink(
    State(state): State<SharedState>,
    crate::auth::TenantCaller(p): crate::auth::TenantCaller,
) -> ApiResult<Json<Value>> {
    let scope = scope(&state, &p, Action::ConfigureLogs).await?;
    Ok(Json(sink_view(&state, &scope).await?))
}

/// `PUT /api/v1/log-sink`: a webhook or bucket of the tenant's own; it
/// receives the records written from now on.
#[utoipa::path(
    put,
    path = "/api/v1/log-sink",
    tag = "logs",
    summary = "Sets the tenant's log sink",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "The sink", body = serde_json::Value))
)]
async fn put_sink(
    State(state): State<SharedState>,
    crate::auth::TenantCaller(p): crate::auth::TenantCaller,
    ApiJson(sink): ApiJson<SinkConfig>,
) -> ApiResult<Json<Value>> {
    let scope = scope(&state, &p, Action::ConfigureLogs).await?;
    sink.validate(state.logs.config.allow_insecure_sinks)
        .map_err(|e| ApiError::Validation(e.to_string()))?;
    let bytes = serde_json::to_vec(&sink).map_err(|e| ApiError::Internal(e.to_string()))?;
    state
        .store
        .put_log_sink(&scope, STREAM, Some(&bytes))
        .await?;
    Ok(Json(sink_view(&state, &scope).await?))
}

#[utoipa::path(
    delete,
    path = "/api/v1/log-sink",
    tag = "logs",
    summary = "Removes the tenant's log sink",
    responses((status = 204, description = "Removed"))
)]
async fn delete_sink(
    State(state): State<SharedState>,
    crate::auth::TenantCaller(p): crate::auth::TenantCaller,
) -> ApiResult<axum::http::StatusCode> {
    let scope = scope(&state, &p, Action::ConfigureLogs).await?;
    state.store.put_log_sink(&scope, STREAM, None).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
