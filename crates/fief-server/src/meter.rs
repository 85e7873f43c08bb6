//! Metering at the edge: each billable request's usage event, written by a
//! group writer (one transaction for everything queued) before its answer
//! leaves, so a killed gateway loses no answered request's event; and the
//! usage and invoice views: `GET /api/v1/usage` (the caller's own tenant),
//! `GET /admin/v1/usage` and `GET /admin/v1/invoices/{month}` (counts and
//! money, never content). The arithmetic is `fief-metering`'s.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use fief_metering::invoice;
use fief_metering::pricing::PriceBook;
use fief_metering::usage::{self, GroupBy};
use fief_metering::{time, Kind, Quantities, UsageEvent};
use fief_policy::{Action, Resource};
use fief_store::{Principal, UsageFilter};

use crate::auth::{Operator, TenantCaller};
use crate::error::{ApiError, ApiResult};
use crate::logs;
use crate::request_id;
use crate::route_table::Routes;
use crate::routes::{ApiPath, ApiQuery};
use crate::state::{AppState, SharedState};

type Job = (UsageEvent, oneshot::Sender<Result<(), String>>);

pub struct Meter {
    queue: Option<mpsc::Sender<Job>>,
    /// Taken by [`spawn_writer`] once the state exists.
    pending: std::sync::Mutex<Option<mpsc::Receiver<Job>>>,
    batch_max: usize,
    pub book: PriceBook,
    currency: String,
    /// Taken by this writer and the private log's around each batch: on
    /// SQLite two writers at once make one wait in the busy handler's
    /// sleeps (a millisecond and more), where taking turns costs nothing.
    pub write_turn: tokio::sync::Mutex<()>,
}

impl Meter {
    pub fn new(config: &fief_config::Config) -> Result<Meter, String> {
        let book = PriceBook::new(&config.pricing).map_err(|e| e.to_string())?;
        let batch_max = config.metering.batch_max;
        let (queue, pending) = if config.metering.enabled {
            let (tx, rx) = mpsc::channel(batch_max * 4);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        Ok(Meter {
            queue,
            pending: std::sync::Mutex::new(pending),
            batch_max,
            book,
            currency: config.metering.currency.clone(),
            write_turn: tokio::sync::Mutex::new(()),
        })
    }

    /// Writes one event and waits until it is committed. A failure is a
    /// 503: the caller answers nothing it could not bill.
    pub async fn record(&self, event: UsageEvent) -> ApiResult<()> {
        let Some(queue) = &self.queue else {
            return Ok(());
        };
        let (done, wait) = oneshot::channel();
        let lost = || ApiError::Unavailable("usage cannot be recorded; nothing was billed".into());
        queue.send((event, done)).await.map_err(|_| lost())?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::error!("usage events not written: {e}");
                Err(lost())
            }
            Err(_) => Err(lost()),
        }
    }
}

/// Starts the group writer. It holds the state weakly, so it ends when the
/// gateway is dropped (the queue's sender goes with it).
pub fn spawn_writer(state: &SharedState) {
    let rx = state.meter.pending.lock().ok().and_then(|mut p| p.take());
    if let Some(rx) = rx {
        tokio::spawn(writer(
            std::sync::Arc::downgrade(state),
            rx,
            state.meter.batch_max,
        ));
    }
}

/// Whoever is queued when a write ends goes in the next transaction.
async fn writer(state: std::sync::Weak<AppState>, mut rx: mpsc::Receiver<Job>, batch_max: usize) {
    let mut batch = Vec::with_capacity(batch_max);
    while rx.recv_many(&mut batch, batch_max).await > 0 {
        let (events, waiting): (Vec<UsageEvent>, Vec<_>) = batch.drain(..).unzip();
        let result = match state.upgrade() {
            Some(state) => write(&state, &events).await,
            None => Err("the gateway is stopping".to_owned()),
        };
        for done in waiting {
            let _ = done.send(result.clone());
        }
    }
}

/// One batch, tried again after a conflict with another replica's write
/// (a repeat is harmless: events are idempotent by request id).
async fn write(state: &AppState, events: &[UsageEvent]) -> Result<(), String> {
    let mut tries = 0;
    loop {
        let turn = state.meter.write_turn.lock().await;
        let written = state.store.record_usage(events).await;
        drop(turn);
        match written {
            Ok(_) => return Ok(()),
            Err(e) if tries < 4 => {
                tries += 1;
                tracing::warn!(
                    "usage batch of {} not written, trying again: {e}",
                    events.len()
                );
                tokio::time::sleep(std::time::Duration::from_millis(5 << tries)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The event of the current request by `p`: its tenant's tags as they are now.
async fn event(
    state: &AppState,
    p: &Principal,
    kind: Kind,
    model: &str,
    quantities: Quantities,
) -> ApiResult<UsageEvent> {
    let tags = tags(state, p).await?;
    Ok(UsageEvent {
        request_id: request_id::current(),
        tenant: p.tenant().map(ToString::to_string).unwrap_or_default(),
        incarnation: p.incarnation().map(ToString::to_string).unwrap_or_default(),
        principal: p.audit_name(),
        source: p.source(),
        tags,
        at_ms: now_ms(),
        kind,
        model: model.to_owned(),
        quantities: Quantities {
            requests: 1,
            duration_us: request_id::elapsed_us(),
            ..quantities
        },
    })
}

/// Records one request's usage before it is answered.
pub async fn bill(
    state: &AppState,
    p: &Principal,
    kind: Kind,
    model: &str,
    quantities: Quantities,
) -> ApiResult<()> {
    let e = event(state, p, kind, model, quantities).await?;
    state.meter.record(e).await
}

/// [`bill`], and the invocation's record in the tenant's private log,
/// written side by side.
pub async fn bill_and_log(
    state: &AppState,
    p: &Principal,
    kind: Kind,
    model: &str,
    quantities: Quantities,
    content: Option<fief_logs::Content>,
) -> ApiResult<()> {
    let e = event(state, p, kind, model, quantities).await?;
    let usage = serde_json::to_value(e.quantities).unwrap_or_default();
    record_with_log(state, p, e, usage, content).await
}

/// Writes a usage event and the log record of the same request side by
/// side; the answer waits for both, its status for the event alone.
async fn record_with_log(
    state: &AppState,
    p: &Principal,
    event: UsageEvent,
    usage: Value,
    content: Option<fief_logs::Content>,
) -> ApiResult<()> {
    let meta = logs::Meta {
        request_id: event.request_id.clone(),
        at_ms: event.at_ms,
        kind: event.kind,
        model: event.model.clone(),
        principal: event.principal.clone(),
    };
    let (billed, ()) = tokio::join!(
        state.meter.record(event),
        logs::record(state, p, meta, usage, content)
    );
    billed
}

async fn tags(state: &AppState, p: &Principal) -> ApiResult<fief_core::Tags> {
    state
        .store
        .tenant_tags(p)
        .await
        .map_err(|e| ApiError::Unavailable(format!("tenant tags cannot be read: {e}")))
}

/// Records a foundation-model call's usage record as its usage event
/// (its own request id: a stream ends outside the request's task), and
/// the call in the tenant's private log.
pub async fn bill_llm(
    state: &AppState,
    p: &Principal,
    usage: &fief_llm::Usage,
    content: Option<fief_logs::Content>,
) -> ApiResult<()> {
    let tags = tags(state, p).await?;
    let shown = json!({
        "surface": usage.surface, "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens, "total_tokens": usage.total_tokens,
        "counted": usage.counted, "latency_ms": usage.latency_ms, "ttft_ms": usage.ttft_ms,
        "status": usage.status, "complete": usage.complete, "retries": usage.retries,
        "fallback_from": usage.fallback_from,
    });
    record_with_log(state, p, llm_event(usage, tags), shown, content).await
}

fn llm_event(usage: &fief_llm::Usage, tags: fief_core::Tags) -> UsageEvent {
    UsageEvent {
        request_id: usage.request_id.clone(),
        tenant: usage.tenant.clone(),
        incarnation: usage.incarnation.clone(),
        principal: usage.principal.clone(),
        source: usage.source.clone(),
        tags,
        at_ms: now_ms(),
        kind: Kind::Llm,
        model: usage.model.clone(),
        quantities: Quantities {
            requests: 1,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            duration_us: usage.latency_ms.saturating_mul(1000),
            ..Quantities::default()
        },
    }
}

/// Samples what every tenant holds (models, knowledge, items, logs) as the
/// day's storage usage, in byte-days. Run hourly: a tenant's sample of a
/// kind of content for a day is one event (request id
/// `storage:{YYYY-MM-DD}:{what}`), so later runs that day count nothing
/// again.
pub async fn sample_storage(state: &AppState) -> Result<(), String> {
    if state.meter.queue.is_none() {
        return Ok(());
    }
    let now = now_ms();
    let day = time::day_of_hour(now.div_euclid(3_600_000));
    let held = state
        .store
        .storage_held()
        .await
        .map_err(|e| e.to_string())?;
    let mut events = Vec::new();
    for h in held {
        for (what, bytes) in h.bytes.into_iter().filter(|(_, b)| *b > 0) {
            events.push(UsageEvent {
                request_id: format!("storage:{day}:{what}"),
                tenant: h.tenant.to_string(),
                incarnation: h.incarnation.to_string(),
                principal: "fief:storage-sample".into(),
                source: None,
                tags: h.tags.clone(),
                at_ms: now,
                kind: Kind::Storage,
                model: what.into(),
                quantities: Quantities {
                    byte_days: bytes,
                    ..Quantities::default()
                },
            });
        }
    }
    if events.is_empty() {
        return Ok(());
    }
    write(state, &events).await
}

// ---- views --------------------------------------------------------------------

pub fn routes() -> Routes {
    Routes::new().get("/api/v1/usage", own_usage)
}

pub fn admin_routes() -> Routes {
    Routes::new()
        .get("/admin/v1/usage", all_usage)
        .get("/admin/v1/invoices/{month}", invoice)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// `YYYY-MM-DD` or RFC 3339; default: the start of this month.
    pub from: Option<String>,
    /// Exclusive; default: now.
    pub to: Option<String>,
    pub group_by: Option<String>,
    /// Admin only: one tenant.
    pub tenant: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvoiceQuery {
    pub group_by_tag: Option<String>,
    pub format: Option<String>,
}

fn csv_wanted(format: Option<&str>) -> ApiResult<bool> {
    match format {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(f) => Err(ApiError::Validation(format!(
            "format is json or csv, not {f:?}"
        ))),
    }
}

fn csv_response(body: String) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    r
}

/// The hour range [from, to) of a query: hours containing `from` up to
/// the hour containing `to` (exclusive of a `to` on the hour).
/// The longest range a minute view reads raw events for.
const MINUTE_VIEW_MAX_SECS: i64 = 7 * 86_400;

/// [from, to) in Unix seconds.
fn range(q: &UsageQuery) -> ApiResult<(i64, i64)> {
    let bad = |e: fief_metering::MeteringError| ApiError::Validation(e.to_string());
    let now = now_ms() / 1000;
    let from = match &q.from {
        Some(f) => time::parse_instant(f).map_err(bad)?,
        None => {
            time::month_hours(&time::month_of_hour(now / 3600))
                .map_err(bad)?
                .0
                * 3600
        }
    };
    let to = match &q.to {
        Some(t) => time::parse_instant(t).map_err(bad)?,
        None => now + 1,
    };
    if to <= from {
        return Err(ApiError::Validation("`to` must be after `from`".into()));
    }
    Ok((from, to))
}

async fn view(
    state: &AppState,
    q: &UsageQuery,
    tenant: Option<String>,
    allowed: &[GroupBy],
) -> ApiResult<Response> {
    let csv = csv_wanted(q.format.as_deref())?;
    let group_by = GroupBy::parse_list(q.group_by.as_deref().unwrap_or(""), allowed)
        .map_err(|e| ApiError::Validation(e.to_string()))?;
    let (from, to) = range(q)?;
    let (from_hour, to_hour) = (from.div_euclid(3600), (to + 3599).div_euclid(3600));
    let rows = if group_by.contains(&GroupBy::Minute) {
        // Minutes come from the raw events: a bounded range only.
        if to - from > MINUTE_VIEW_MAX_SECS {
            return Err(ApiError::Validation(format!(
                "group_by=minute covers at most {} days: narrow `from`/`to`",
                MINUTE_VIEW_MAX_SECS / 86_400
            )));
        }
        state
            .store
            .usage_minutes(tenant.as_deref(), from * 1000, to * 1000)
            .await?
    } else {
        state
            .store
            .usage_aggregates(&UsageFilter {
                tenant,
                from_hour,
                to_hour,
            })
            .await?
    };
    let summary = usage::summarize(&rows, &group_by);
    if csv {
        return Ok(csv_response(usage::csv(&summary, &group_by)));
    }
    Ok(Json(json!({
        "from": time::hour_label(from_hour),
        "to": time::hour_label(to_hour),
        "group_by": group_by.iter().map(|g| g.name()).collect::<Vec<_>>(),
        "rows": summary,
    }))
    .into_response())
}

/// `GET /api/v1/usage`: the caller's own tenant only, whatever it asks.
#[utoipa::path(
    get,
    path = "/api/v1/usage",
    tag = "usage",
    summary = "The tenant's own usage",
    params(UsageQuery),
    responses((status = 200, description = "Usage rows (or CSV with format=csv)", body = serde_json::Value))
)]
async fn own_usage(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Response> {
    let tenant = p.tenant().cloned().ok_or(ApiError::AccessDenied)?;
    let scope = state
        .authorize_scoped(&p, Action::GetUsage, &Resource::Tenant(tenant))
        .await?;
    if q.tenant.is_some() {
        return Err(ApiError::Validation(
            "`tenant` is not a parameter here: this is the caller's own usage".into(),
        ));
    }
    let allowed = [
        GroupBy::Model,
        GroupBy::Principal,
        GroupBy::Day,
        GroupBy::Hour,
        GroupBy::Minute,
    ];
    view(&state, &q, Some(scope.tenant().to_string()), &allowed).await
}

/// `GET /admin/v1/usage`: every tenant's aggregates.
#[utoipa::path(
    get,
    path = "/admin/v1/usage",
    tag = "usage",
    summary = "Every tenant's usage (counts and money, never content)",
    params(UsageQuery),
    responses((status = 200, description = "Usage rows (or CSV with format=csv)", body = serde_json::Value))
)]
async fn all_usage(
    State(state): State<SharedState>,
    Operator(op): Operator,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Response> {
    state
        .authorize(&op, Action::ReadUsage, &Resource::Platform)
        .await?;
    let tenant = q
        .tenant
        .as_deref()
        .map(fief_core::TenantId::parse)
        .transpose()?
        .map(|t| t.to_string());
    let allowed = [
        GroupBy::Tenant,
        GroupBy::Model,
        GroupBy::Principal,
        GroupBy::Day,
        GroupBy::Hour,
        GroupBy::Minute,
    ];
    view(&state, &q, tenant, &allowed).await
}

/// `GET /admin/v1/invoices/{YYYY-MM}`: per tenant, or per value of a tag.
#[utoipa::path(
    get,
    path = "/admin/v1/invoices/{month}",
    tag = "usage",
    summary = "A month's invoice per tenant",
    params(InvoiceQuery),
    responses((status = 200, description = "The invoice (or CSV with format=csv)", body = serde_json::Value))
)]
async fn invoice(
    State(state): State<SharedState>,
    Operator(op): Operator,
    ApiPath(month): ApiPath<String>,
    ApiQuery(q): ApiQuery<InvoiceQuery>,
) -> ApiResult<Response> {
    state
        .authorize(&op, Action::ReadUsage, &Resource::Platform)
        .await?;
    let csv = csv_wanted(q.format.as_deref())?;
    let (from_hour, to_hour) =
        time::month_hours(&month).map_err(|e| ApiError::Validation(e.to_string()))?;
    if let Some(tag) = &q.group_by_tag {
        if tag.is_empty() || tag.len() > 128 {
            return Err(ApiError::Validation(
                "group_by_tag names a tag key (1 to 128 characters)".into(),
            ));
        }
    }
    let rows = state
        .store
        .usage_aggregates(&UsageFilter {
            tenant: None,
            from_hour,
            to_hour,
        })
        .await?;
    let meter = &state.meter;
    let inv = invoice::build(
        &rows,
        &meter.book,
        &month,
        &meter.currency,
        q.group_by_tag.as_deref(),
    );
    if csv {
        return Ok(csv_response(invoice::csv(&inv)));
    }
    Ok(Json(inv).into_response())
}
