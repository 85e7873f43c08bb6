//! Quotas at the edge (invariant 10): which levels a request must pass
//! (the tenant's settings over its tier's defaults, then its role's, then
//! its key's or user's lower limits), admission through fief-quota before
//! any work, the settlement once the work is done, and the tenant routes
//! `GET /api/v1/quotas` and `PUT`/`DELETE /api/v1/quotas/{subject}`.
//! Nothing a client sends takes part: levels come from the verified
//! principal and the operator's and tenant's stored settings only.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::Json;
use serde_json::{json, Map, Value};

use fief_config::{Config, LimitKind, Limits, OnStoreError, QuotaSettings, QuotasConfig};
use fief_core::Tier;
use fief_policy::{Action, PrincipalFacts, Resource};
use fief_quota::fair::FairGate;
use fief_quota::{month, Ask, Held, Level, Outcome, Quotas, RateInfo, Refusal, Settings, Window};
use fief_store::Principal;

use crate::auth::TenantCaller;
use crate::error::{ApiError, ApiResult};
use crate::request_id;
use crate::route_table::Routes;
use crate::routes::{ApiJson, ApiPath};
use crate::state::{AppState, SharedState};

pub fn routes() -> Routes {
    Routes::new()
        .get("/api/v1/quotas", status)
        .put("/api/v1/quotas/{subject}", put_subject)
        .delete("/api/v1/quotas/{subject}", delete_subject)
}

#[derive(Default)]
struct QuotaMetrics {
    throttled: [AtomicU64; 4],
    store_errors_denied: AtomicU64,
    store_errors_allowed: AtomicU64,
    settle_failures: AtomicU64,
    /// Queue wait in microseconds and grants, per fair queue (ONNX, LLM).
    waited_us: [AtomicU64; 2],
    grants: [AtomicU64; 2],
}

/// The fair queues, as metrics name them.
#[derive(Debug, Clone, Copy)]
pub enum Queue {
    SharedOnnx,
    Upstreams,
}

impl Queue {
    const ALL: [Queue; 2] = [Queue::SharedOnnx, Queue::Upstreams];
    fn name(self) -> &'static str {
        match self {
            Queue::SharedOnnx => "shared_onnx",
            Queue::Upstreams => "llm_upstreams",
        }
    }
}

fn kind_index(k: LimitKind) -> usize {
    match k {
        LimitKind::RequestsPerMinute => 0,
        LimitKind::TokensPerMinute => 1,
        LimitKind::ConcurrentRequests => 2,
        LimitKind::MonthlyTokenBudget => 3,
    }
}

pub struct QuotaGate {
    engine: Quotas,
    config: QuotasConfig,
    /// Slots of the shared ONNX pool (bridge and pool tenants).
    pub onnx: FairGate,
    metrics: QuotaMetrics,
    leases: AtomicU64,
}

/// What a request may spend.
#[derive(Debug, Clone, Copy)]
pub enum Cost {
    /// Counts against request rates and concurrency only.
    Request,
    /// A foundation-model call: its prompt estimate and the output it may
    /// produce; a stream may start with less than that (it is cut at what
    /// it was granted).
    Tokens {
        prompt: u64,
        output: u64,
        stream: bool,
    },
}

impl QuotaGate {
    /// Whether the counters are shared (in Redis).
    pub fn shared(&self) -> bool {
        self.engine.shared()
    }

    /// Readiness of the counters.
    pub async fn ping(&self) -> Result<(), String> {
        self.engine.ping().await.map_err(|e| e.to_string())
    }

    pub fn new(config: &Config) -> Result<Self, String> {
        let q = &config.quotas;
        let settings = Settings {
            request_burst_secs: q.request_burst_secs,
            token_burst_secs: q.token_burst_secs,
            lease: Duration::from_secs(q.lease_secs),
        };
        let engine = match &config.redis {
            Some(r) => Quotas::redis(r, settings).map_err(|e| e.to_string())?,
            None => Quotas::memory(settings),
        };
        let threads = match config.models.shared_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Ok(Self {
            engine,
            config: q.clone(),
            onnx: FairGate::new(threads, q.scheduling),
            metrics: QuotaMetrics::default(),
            leases: AtomicU64::new(0),
        })
    }

    pub fn scheduling(&self) -> fief_config::Scheduling {
        self.config.scheduling
    }

    /// The output tokens reserved for a call that names no `max_tokens`.
    pub fn default_max_tokens(&self) -> u64 {
        self.config.default_max_tokens
    }

    /// A tenant's settings over its tier's defaults.
    pub fn effective(&self, tier: Tier, own: Option<&QuotaSettings>) -> QuotaSettings {
        let tier = self.config.tier(tier);
        own.map_or(*tier, |o| o.or(tier))
    }

    /// The levels `p` must pass, tenant first (only those with a limit),
    /// and its tenant's weight in fair sharing.
    pub async fn levels(&self, state: &AppState, p: &Principal) -> ApiResult<(Vec<Level>, f64)> {
        let view = state
            .store
            .quota_view(p)
            .await
            .map_err(|e| ApiError::Unavailable(format!("tenant settings cannot be read: {e}")))?
            .ok_or(ApiError::AccessDenied)?;
        let tenant = self.effective(view.tier, view.quotas.as_ref());
        let mut levels = Vec::with_capacity(3);
        let mut push = |key: String, limits: Limits| {
            if !limits.is_empty() {
                levels.push(Level { key, limits });
            }
        };
        push("tenant".into(), tenant.limits());
        for subject in subjects(p) {
            if let Some(limits) = view.subjects.get(&subject) {
                push(subject, *limits);
            }
        }
        Ok((levels, tenant.weight()))
    }

    /// Admits `p`'s request or refuses it (429 with `Retry-After`; 503
    /// when the counters cannot be reached and a limit that applies says
    /// `deny`). Unlimited principals pass without touching the counters.
    pub async fn admit(
        &self,
        state: &SharedState,
        p: &Principal,
        cost: Cost,
    ) -> ApiResult<Admission> {
        let (levels, weight) = self.levels(state, p).await?;
        let mut admission = Admission {
            state: None,
            principal: None,
            held: None,
            rate: RateInfo::default(),
            granted: None,
            weight,
            settled: false,
        };
        let token_limited = levels.iter().any(|l| {
            l.limits.tokens_per_minute.is_some() || l.limits.monthly_token_budget.is_some()
        });
        let (tokens, min_tokens) = match cost {
            Cost::Tokens {
                prompt,
                output,
                stream,
            } if token_limited => {
                let worst = prompt.saturating_add(output).max(1);
                (worst, if stream { prompt + 1 } else { worst })
            }
            _ => (0, 0),
        };
        // Only the limits this request can meet: token limits do not
        // concern a request that spends no tokens.
        let applies = levels.iter().any(|l| {
            l.limits.requests_per_minute.is_some()
                || l.limits.concurrent_requests.is_some()
                || (tokens > 0 && token_limited)
        });
        if !applies {
            return Ok(admission);
        }
        let scope = scope_key(p);
        let lease = format!(
            "{}-{}",
            request_id::current(),
            self.leases.fetch_add(1, Ordering::Relaxed)
        );
        let month = month::current();
        let ask = Ask {
            scope: &scope,
            levels: &levels,
            tokens,
            min_tokens,
            month: &month,
            lease: &lease,
        };
        for _ in 0..3 {
            let outcome = match self.engine.admit(&ask).await {
                Ok(o) => o,
                Err(e) => return self.unreachable(&levels, tokens > 0, &e, admission),
            };
            match outcome {
                Outcome::Admitted(a) => {
                    admission.rate = a.rate;
                    admission.granted = (tokens > 0).then_some(a.tokens);
                    if a.held.holds_anything() {
                        admission.held = Some(a.held);
                        admission.state = Some(state.clone());
                        admission.principal = Some(p.clone());
                    }
                    return Ok(admission);
                }
                Outcome::Refused(r) => {
                    self.metrics.throttled[kind_index(r.kind)].fetch_add(1, Ordering::Relaxed);
                    return Err(refusal(&r, &levels, tokens));
                }
                Outcome::NeedsSeed(keys) => {
                    for key in keys {
                        let spent =
                            state
                                .store
                                .quota_spent(p, &key, &month)
                                .await
                                .map_err(|e| {
                                    ApiError::Unavailable(format!(
                                        "budget spend cannot be read: {e}"
                                    ))
                                })?;
                        if let Err(e) = self.engine.seed(&scope, &key, &month, spent).await {
                            return self.unreachable(&levels, true, &e, admission);
                        }
                    }
                }
            }
        }
        Err(ApiError::Unavailable(
            "the budget counters could not be seeded; retry".into(),
        ))
    }

    /// The counters are unreachable: refuse if any limit that applies says
    /// `deny` (the default), else admit uncounted.
    fn unreachable(
        &self,
        levels: &[Level],
        spends: bool,
        e: &fief_quota::QuotaError,
        admission: Admission,
    ) -> ApiResult<Admission> {
        let deny = levels.iter().any(|l| {
            LimitKind::ALL.into_iter().any(|k| {
                let applies = match k {
                    LimitKind::TokensPerMinute | LimitKind::MonthlyTokenBudget => spends,
                    _ => true,
                };
                applies
                    && l.limits.get(k).is_some()
                    && self.config.on_store_error.get(k) == OnStoreError::Deny
            })
        });
        if deny {
            self.metrics
                .store_errors_denied
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("quota counters unreachable, limited request refused: {e}");
            return Err(ApiError::Unavailable(
                "the quota counters cannot be reached; requests subject to a limit are refused \
                 until they are back"
                    .into(),
            ));
        }
        self.metrics
            .store_errors_allowed
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!("quota counters unreachable, request admitted uncounted: {e}");
        Ok(admission)
    }

    async fn settle(&self, state: &AppState, p: &Principal, held: &Held, used: u64) {
        if let Err(e) = self.engine.settle(held, used).await {
            self.metrics.settle_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("quota settlement failed (its leases expire): {e}");
        }
        if used == 0 {
            return;
        }
        for level in held.budget_levels() {
            if let Err(e) = state
                .store
                .add_quota_spend(p, level, held.month(), used)
                .await
            {
                self.metrics.settle_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!("budget spend not persisted: {e}");
            }
        }
    }

    /// Records how long a request queued for a fair-shared slot.
    pub fn waited(&self, queue: Queue, d: Duration) {
        let i = queue as usize;
        self.metrics.waited_us[i].fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.metrics.grants[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn forget(&self, tenant: &fief_core::TenantId, incarnation: &fief_core::Incarnation) {
        self.engine.forget(&format!("{tenant}.{incarnation}"));
    }

    /// Admission calls and Redis round trips so far.
    pub fn counts(&self) -> (u64, u64) {
        self.engine.counts()
    }

    pub fn render(&self, out: &mut String) {
        let m = &self.metrics;
        counters(
            out,
            "fief_quota_throttled_total",
            "Requests refused by a quota, by limit kind.",
            LimitKind::ALL.iter().map(|k| {
                let n = m.throttled[kind_index(*k)].load(Ordering::Relaxed);
                (format!("limit=\"{}\"", k.name()), n.to_string())
            }),
        );
        counters(
            out,
            "fief_quota_store_errors_total",
            "Admissions that found the counters unreachable, by what was done.",
            [
                ("denied", &m.store_errors_denied),
                ("allowed", &m.store_errors_allowed),
            ]
            .into_iter()
            .map(|(o, n)| {
                (
                    format!("outcome=\"{o}\""),
                    n.load(Ordering::Relaxed).to_string(),
                )
            }),
        );
        counters(
            out,
            "fief_quota_settle_failures_total",
            "Settlements or spend writes that failed.",
            std::iter::once((
                String::new(),
                m.settle_failures.load(Ordering::Relaxed).to_string(),
            )),
        );
        counters(
            out,
            "fief_fair_queue_wait_seconds_total",
            "Time requests queued for a fair-shared slot.",
            Queue::ALL.iter().map(|q| {
                let us = m.waited_us[*q as usize].load(Ordering::Relaxed);
                (
                    format!("queue=\"{}\"", q.name()),
                    (us as f64 / 1e6).to_string(),
                )
            }),
        );
        counters(
            out,
            "fief_fair_queue_grants_total",
            "Slots handed out by a fair queue.",
            Queue::ALL.iter().map(|q| {
                let n = m.grants[*q as usize].load(Ordering::Relaxed);
                (format!("queue=\"{}\"", q.name()), n.to_string())
            }),
        );
        let (running, waiting) = self.onnx.load();
        let _ = writeln!(
            out,
            "# HELP fief_shared_pool_slots Slots of the shared ONNX pool.\n\
             # TYPE fief_shared_pool_slots gauge\nfief_shared_pool_slots {}\n\
             # HELP fief_shared_pool_running Invocations holding a shared-pool slot.\n\
             # TYPE fief_shared_pool_running gauge\nfief_shared_pool_running {running}\n\
             # HELP fief_shared_pool_waiting Invocations queued for a shared-pool slot.\n\
             # TYPE fief_shared_pool_waiting gauge\nfief_shared_pool_waiting {waiting}",
            self.onnx.slots(),
        );
    }
}

/// One counter family in Prometheus text: its help, then a sample per
/// label set (`""` for none).
fn counters(
    out: &mut String,
    name: &str,
    help: &str,
    rows: impl Iterator<Item = (String, String)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (labels, value) in rows {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// The subject names of `p` below its tenant: its role, then its key or user.
fn subjects(p: &Principal) -> Vec<String> {
    match p.facts() {
        PrincipalFacts::ApiKey { key_id, role, .. } => {
            let mut out: Vec<String> = role.iter().map(|r| format!("role:{r}")).collect();
            out.push(format!("api-key:{key_id}"));
            out
        }
        PrincipalFacts::User { subject, .. } => vec![format!("user:{subject}")],
        PrincipalFacts::Session(s) => vec![format!("role:{}", s.role)],
        PrincipalFacts::Operator => Vec::new(),
    }
}

fn scope_key(p: &Principal) -> String {
    let tenant = p.tenant().map(|t| t.as_str()).unwrap_or_default();
    let inc = p.incarnation().map(|i| i.as_str()).unwrap_or_default();
    format!("{tenant}.{inc}")
}

fn describe(level: &str) -> String {
    match level.split_once(':') {
        None => "the tenant's".into(),
        Some(("role", r)) => format!("role {r}'s"),
        Some(("api-key", _)) => "this key's".into(),
        Some(("user", _)) => "this user's".into(),
        Some(_) => format!("{level}'s"),
    }
}

fn refusal(r: &Refusal, levels: &[Level], tokens: u64) -> ApiError {
    let whose = levels
        .get(r.level)
        .map_or_else(|| "a".to_owned(), |l| describe(&l.key));
    let kind = r.kind.name();
    if r.too_large {
        return ApiError::Validation(format!(
            "this call reserves {tokens} tokens (prompt estimate + max_tokens), more than \
             {whose} {kind} ({}) can ever admit at once; lower max_tokens",
            r.limit
        ));
    }
    let (retry, when) = match r.wait {
        Some(w) => {
            let secs = w.as_secs_f64().ceil().max(1.0) as u64;
            (secs, format!("retry after {secs} s"))
        }
        None => {
            let secs = month::until_next(SystemTime::now()).as_secs();
            (secs, "it refills when the next month starts (UTC)".into())
        }
    };
    ApiError::Throttled {
        message: format!("{whose} {kind} limit ({}) is reached; {when}", r.limit),
        retry_after: retry,
    }
}

/// What an admitted request holds. Settle it with the tokens it used (what
/// the client received). Dropped unsettled (an error before any answer, a
/// client gone before it), it releases everything and charges nothing:
/// nothing was delivered.
pub struct Admission {
    state: Option<SharedState>,
    principal: Option<Principal>,
    held: Option<Held>,
    pub rate: RateInfo,
    /// Tokens granted when a token limit applies: the cap of the answer.
    pub granted: Option<u64>,
    /// The tenant's weight in fair sharing.
    pub weight: f64,
    settled: bool,
}

impl Admission {
    pub fn settle(&mut self, used: u64) {
        if self.settled {
            return;
        }
        self.settled = true;
        let (Some(state), Some(p), Some(held)) =
            (self.state.take(), self.principal.take(), self.held.take())
        else {
            return;
        };
        // Always inside the runtime (a request or its response body); the
        // check keeps a drop elsewhere from panicking.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                state.quota.settle(&state, &p, &held, used).await;
            });
        }
    }

    /// OpenAI's `x-ratelimit-*` headers for the tightest level.
    pub fn headers(&self, headers: &mut HeaderMap) {
        RateHeaders(self.rate.clone()).headers(headers);
    }
}

/// The `x-ratelimit-*` headers of an admission.
pub struct RateHeaders(pub RateInfo);

impl RateHeaders {
    pub fn headers(&self, headers: &mut HeaderMap) {
        let mut set = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        };
        let mut window = |what: &str, w: Option<Window>| {
            if let Some(w) = w {
                let names: [&'static str; 3] = match what {
                    "requests" => [
                        "x-ratelimit-limit-requests",
                        "x-ratelimit-remaining-requests",
                        "x-ratelimit-reset-requests",
                    ],
                    _ => [
                        "x-ratelimit-limit-tokens",
                        "x-ratelimit-remaining-tokens",
                        "x-ratelimit-reset-tokens",
                    ],
                };
                set(names[0], w.limit.to_string());
                set(names[1], w.remaining.to_string());
                set(names[2], reset_text(w.reset));
            }
        };
        window("requests", self.0.requests);
        window("tokens", self.0.tokens);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.settle(0);
    }
}

/// A reset time as OpenAI writes it: `20ms`, `1.5s`, `6m0s`.
fn reset_text(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = format!("{:.3}", ms as f64 / 1000.0);
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

// ---- the tenant API -----------------------------------------------------------

fn limits_json(l: &Limits) -> Value {
    serde_json::to_value(l).unwrap_or_else(|_| json!({}))
}

/// `GET /api/v1/quotas`: the caller's levels, their limits and what
/// remains, and the lower limits its tenant set for roles, keys and users.
#[utoipa::path(
    get,
    path = "/api/v1/quotas",
    operation_id = "get_quotas",
    tag = "quotas",
    summary = "The tenant's quotas and what is used of them",
    responses((status = 200, description = "The quotas", body = serde_json::Value))
)]
async fn status(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
) -> ApiResult<Json<Value>> {
    let tenant = p.tenant().cloned().ok_or(ApiError::AccessDenied)?;
    let scope = state
        .authorize_scoped(&p, Action::GetQuotas, &Resource::Tenant(tenant.clone()))
        .await?;
    let (levels, weight) = state.quota.levels(&state, &p).await?;
    let month = month::current();
    let counters = state
        .quota
        .engine
        .status(&scope_key(&p), &levels, &month)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let mut out = Vec::new();
    for (l, st) in levels.iter().zip(counters) {
        let mut remaining = Map::new();
        let mut reset = Map::new();
        if let Some(w) = st.requests {
            remaining.insert("requests_per_minute".into(), w.remaining.into());
            reset.insert("requests_per_minute".into(), w.reset.as_secs_f64().into());
        }
        if let Some(w) = st.tokens {
            remaining.insert("tokens_per_minute".into(), w.remaining.into());
            reset.insert("tokens_per_minute".into(), w.reset.as_secs_f64().into());
        }
        if let Some(c) = l.limits.concurrent_requests {
            remaining.insert(
                "concurrent_requests".into(),
                c.saturating_sub(st.concurrent_in_use).into(),
            );
        }
        let mut level = json!({
            "level": l.key,
            "limits": limits_json(&l.limits),
        });
        if let Some(budget) = l.limits.monthly_token_budget {
            let (spent, reserved) = match st.budget {
                Some(b) => b,
                None => (state.store.quota_spent(&p, &l.key, &month).await?, 0),
            };
            remaining.insert(
                "monthly_token_budget".into(),
                budget.saturating_sub(spent + reserved).into(),
            );
            level["spent_this_month"] = spent.into();
            level["reserved"] = reserved.into();
        }
        level["remaining"] = Value::Object(remaining);
        level["reset_seconds"] = Value::Object(reset);
        out.push(level);
    }
    let subjects: Vec<Value> = state
        .store
        .subject_quotas(&scope)
        .await?
        .into_iter()
        .map(|(s, l)| json!({"subject": s, "limits": limits_json(&l)}))
        .collect();
    Ok(Json(json!({
        "tenant": tenant,
        "month": month,
        "weight": weight,
        "levels": out,
        "subjects": subjects,
    })))
}

/// A subject a tenant may limit: `role:NAME`, `api-key:ID` or `user:SUBJECT`.
fn subject(raw: &str) -> ApiResult<String> {
    let bad = || {
        ApiError::Validation(format!(
            "{raw:?} is not a subject: use role:NAME, api-key:ID or user:SUBJECT"
        ))
    };
    let (kind, name) = raw.split_once(':').ok_or_else(bad)?;
    if !matches!(kind, "role" | "api-key" | "user")
        || name.is_empty()
        || name.len() > 256
        || name.chars().any(char::is_control)
    {
        return Err(bad());
    }
    Ok(raw.to_owned())
}

/// `PUT /api/v1/quotas/{subject}`: lower limits for one of the tenant's
/// own roles, keys or users; never above the tenant's own.
#[utoipa::path(
    put,
    path = "/api/v1/quotas/{subject}",
    operation_id = "put_quota",
    tag = "quotas",
    summary = "Sets the limits of a key, role or principal of the tenant",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "The limits", body = serde_json::Value))
)]
async fn put_subject(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(raw): ApiPath<String>,
    ApiJson(limits): ApiJson<Limits>,
) -> ApiResult<Json<Value>> {
    let tenant = p.tenant().cloned().ok_or(ApiError::AccessDenied)?;
    let resource = Resource::Tenant(tenant);
    let scope = state
        .authorize_scoped(&p, Action::SetQuota, &resource)
        .await?;
    let subject = subject(&raw)?;
    if limits.is_empty() {
        return Err(ApiError::Validation(
            "give at least one limit (requests_per_minute, tokens_per_minute, \
             concurrent_requests, monthly_token_budget); DELETE removes a subject's limits"
                .into(),
        ));
    }
    fief_config::check_limits(&limits).map_err(ApiError::Validation)?;
    let view = state
        .store
        .quota_view(&p)
        .await?
        .ok_or(ApiError::AccessDenied)?;
    let own = state.quota.effective(view.tier, view.quotas.as_ref());
    if let Some((kind, mine, cap)) = limits.above(&own.limits()) {
        return Err(ApiError::Validation(format!(
            "{} {mine} is above the tenant's own limit of {cap}: a tenant may only lower its limits",
            kind.name()
        )));
    }
    state
        .store
        .put_subject_quota(&scope, &subject, &limits)
        .await?;
    let detail = format!("limits of {subject} set: {}", limits_json(&limits));
    state
        .audit_change(&p, Action::SetQuota, &resource, detail)
        .await?;
    Ok(Json(
        json!({"subject": subject, "limits": limits_json(&limits)}),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/v1/quotas/{subject}",
    operation_id = "delete_quota",
    tag = "quotas",
    summary = "Removes a subject's limits",
    responses((status = 204, description = "Removed"))
)]
async fn delete_subject(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let tenant = p.tenant().cloned().ok_or(ApiError::AccessDenied)?;
    let resource = Resource::Tenant(tenant);
    let scope = state
        .authorize_scoped(&p, Action::SetQuota, &resource)
        .await?;
    let subject = subject(&raw)?;
    if state.store.delete_subject_quota(&scope, &subject).await? {
        let detail = format!("limits of {subject} removed");
        state
            .audit_change(&p, Action::SetQuota, &resource, detail)
            .await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no limits for {subject}")))
    }
}

/// Applies an admin `PATCH` of `quotas`: `null` removes every setting of
/// the tenant's own; an object sets each key given (a value) or removes it
/// (`null`), leaving the others.
pub fn patch_settings(
    before: Option<&QuotaSettings>,
    patch: &Value,
) -> ApiResult<Option<QuotaSettings>> {
    let Value::Object(map) = patch else {
        if patch.is_null() {
            return Ok(None);
        }
        return Err(ApiError::Validation(
            "`quotas` must be an object of limits, or null".into(),
        ));
    };
    let mut out = before.copied().unwrap_or_default();
    for (key, value) in map {
        if key == "weight" {
            out.weight = match value {
                Value::Null => None,
                v => Some(v.as_f64().ok_or_else(|| {
                    ApiError::Validation("`quotas.weight` must be a number".into())
                })?),
            };
            continue;
        }
        let kind = LimitKind::ALL
            .into_iter()
            .find(|k| k.name() == key)
            .ok_or_else(|| {
                ApiError::Validation(format!(
                    "unknown quota `{key}`: use requests_per_minute, tokens_per_minute, \
                     concurrent_requests, monthly_token_budget or weight"
                ))
            })?;
        let v = match value {
            Value::Null => None,
            v => Some(v.as_u64().ok_or_else(|| {
                ApiError::Validation(format!("`quotas.{key}` must be a whole number or null"))
            })?),
        };
        let mut limits = out.limits();
        limits.set(kind, v);
        out = QuotaSettings::new(limits, out.weight);
    }
    out.validate()
        .map_err(|m| ApiError::Validation(format!("quotas: {m}")))?;
    Ok((out != QuotaSettings::default()).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_sets_and_removes_each_key_given() {
        let before = QuotaSettings {
            requests_per_minute: Some(10),
            tokens_per_minute: Some(100),
            ..QuotaSettings::default()
        };
        let after = patch_settings(
            Some(&before),
            &json!({"requests_per_minute": 20, "tokens_per_minute": null, "weight": 2}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(after.requests_per_minute, Some(20));
        assert_eq!(after.tokens_per_minute, None);
        assert_eq!(after.weight, Some(2.0));
        assert_eq!(patch_settings(Some(&before), &Value::Null).unwrap(), None);
        assert!(patch_settings(None, &json!({"rpm": 1})).is_err());
        assert!(patch_settings(None, &json!({"requests_per_minute": 0})).is_err());
        assert!(patch_settings(None, &json!({"requests_per_minute": -1})).is_err());
    }

    #[test]
    fn resets_read_like_openais() {
        assert_eq!(reset_text(Duration::from_millis(20)), "20ms");
        assert_eq!(reset_text(Duration::from_millis(1500)), "1.5s");
        assert_eq!(reset_text(Duration::from_secs(1)), "1s");
        assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
    }
}
