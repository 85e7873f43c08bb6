//! Foundation-model surfaces: OpenAI's `/v1/chat/completions`,
//! `/v1/completions`, `/v1/models` and (for an upstream model)
//! `/v1/embeddings`, and Bedrock's Converse. Every call takes the one gate:
//! the credential (auth layer), the model resolved from any spelling, the
//! operator's allowlist and dedicated deployments, a Cedar decision under the
//! foundation-model guardrail (audited), then fief-llm. Nothing the client
//! sends decides tenancy, priority or the upstream `user`; upstream ids,
//! hosts and keys never reach the client. Each call's usage record goes to
//! the audit log (counts only) and to the metrics.

use std::collections::VecDeque;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use fief_llm::wire::{self, SseData, SseSplitter};
use fief_llm::{CallError, Counted, ModelId, Sent, Share, Usage};
use fief_policy::{Action, Resource};
use fief_store::Principal;

use crate::auth::TenantCaller;
use crate::error::{ApiError, ApiResult};
use crate::quota::{Admission, Cost};
use crate::request_id;
use crate::route_table::Routes;
use crate::routes::{ApiJson, ApiPath};
use crate::state::{AppState, SharedState};

pub fn routes() -> Routes {
    Routes::new()
        .post("/v1/chat/completions", chat)
        .post("/v1/completions", completions)
        .get("/v1/models", list)
        .post("/model/{model_id}/{operation}", converse)
}

/// The surfaces, as usage records name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Surface {
    Chat,
    Completions,
    Embeddings,
    Converse,
}

impl Surface {
    fn name(self) -> &'static str {
        match self {
            Surface::Chat => "chat",
            Surface::Completions => "completions",
            Surface::Embeddings => "embeddings",
            Surface::Converse => "converse",
        }
    }
    fn path(self) -> &'static str {
        match self {
            Surface::Chat | Surface::Converse => "chat/completions",
            Surface::Completions => "completions",
            Surface::Embeddings => "embeddings",
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "foundation-models",
    summary = "Chat completions (OpenAI's shape; streamed with \"stream\": true)",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "The completion (or a text/event-stream)", body = serde_json::Value))
)]
async fn chat(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Response {
    openai(&state, &p, Surface::Chat, body, None)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

#[utoipa::path(
    post,
    path = "/v1/completions",
    tag = "foundation-models",
    summary = "Completions (OpenAI's shape)",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "The completion (or a text/event-stream)", body = serde_json::Value))
)]
async fn completions(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Response {
    openai(&state, &p, Surface::Completions, body, None)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `/v1/embeddings` naming an upstream model.
pub async fn embeddings(state: &SharedState, p: &Principal, body: Map<String, Value>) -> Response {
    openai(state, p, Surface::Embeddings, body, None)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Whether `/v1/embeddings` naming `model` goes to an upstream: whenever
/// foundation models are configured and the name is not the in-process
/// embedder's, so a name no upstream serves is refused like a forbidden one.
pub fn routes_embedding(state: &AppState, model: Option<&str>, local: &str) -> bool {
    match model {
        None => false,
        Some(m) => {
            !state.llm.catalog.is_empty()
                && m != local
                && m != format!("sentence-transformers/{local}")
        }
    }
}

/// `GET /v1/models`: only the models the caller may call.
#[utoipa::path(
    get,
    path = "/v1/models",
    operation_id = "list_foundation_models",
    tag = "foundation-models",
    summary = "The foundation models the caller may use",
    responses((status = 200, description = "The models", body = serde_json::Value))
)]
async fn list(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
) -> ApiResult<Json<Value>> {
    let tenant = p.tenant().cloned().ok_or(ApiError::AccessDenied)?;
    state
        .authorize(&p, Action::ListFoundationModels, &Resource::Tenant(tenant))
        .await?;
    let allow = allowlist(&state, &p).await?;
    let mut data = Vec::new();
    for (id, m) in state.llm.catalog.models() {
        // Decided, not acted on: listing calls nothing.
        let decision = state
            .decide(
                &p,
                Action::InvokeFoundationModel,
                &resource(&state, &p, id, allow.as_deref()),
                None,
            )
            .await?;
        if decision.allowed {
            data.push(json!({"id": m.name, "object": "model", "created": 0, "owned_by": "fief"}));
        }
    }
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn allowlist(state: &AppState, p: &Principal) -> ApiResult<Option<Vec<fief_llm::Allow>>> {
    let entries = state
        .store
        .llm_allowlist(p)
        .await
        .map_err(|e| ApiError::Unavailable(format!("tenant settings cannot be read: {e}")))?;
    Ok(entries.map(|e| state.llm.catalog.allowlist(&e)))
}

fn resource(
    state: &AppState,
    p: &Principal,
    model: ModelId,
    allow: Option<&[fief_llm::Allow]>,
) -> Resource {
    let catalog = &state.llm.catalog;
    let available_to = p
        .tenant()
        .filter(|t| catalog.available(model, t, allow))
        .cloned();
    Resource::FoundationModel {
        name: catalog.model(model).name.clone(),
        available_to,
    }
}

/// The models a call for `spelled` may use, in order: the one asked for,
/// then its fallbacks the caller may also use. The asked one is decided and
/// audited here; a name no upstream serves is denied (and audited) the same
/// as a forbidden one, so the answer tells nothing of what exists.
async fn authorize_models(
    state: &AppState,
    p: &Principal,
    spelled: &str,
) -> ApiResult<(Vec<ModelId>, Vec<Resource>)> {
    let catalog = &state.llm.catalog;
    let Some(model) = catalog.resolve(spelled) else {
        let name = fief_llm::catalog::fold(spelled).unwrap_or_else(|| "(invalid)".into());
        let unknown = Resource::FoundationModel {
            name: name.chars().take(128).collect(),
            available_to: None,
        };
        state
            .authorize(p, Action::InvokeFoundationModel, &unknown)
            .await?;
        return Err(ApiError::AccessDenied);
    };
    let allow = allowlist(state, p).await?;
    let asked = resource(state, p, model, allow.as_deref());
    state
        .authorize(p, Action::InvokeFoundationModel, &asked)
        .await?;
    let mut models = vec![model];
    let mut resources = vec![asked];
    for &f in &catalog.model(model).fallbacks {
        let r = resource(state, p, f, allow.as_deref());
        // Audited if it is used (see `audit_fallback`).
        if state
            .decide(p, Action::InvokeFoundationModel, &r, None)
            .await?
            .allowed
        {
            models.push(f);
            resources.push(r);
        }
    }
    Ok((models, resources))
}

/// A fallback answered: its decision is recorded before the answer goes out.
async fn audit_fallback(
    state: &AppState,
    p: &Principal,
    models: &[ModelId],
    resources: &[Resource],
    used: ModelId,
) -> ApiResult<()> {
    if let Some(i) = models.iter().position(|m| *m == used).filter(|i| *i > 0) {
        let decision = state
            .decide(p, Action::InvokeFoundationModel, &resources[i], None)
            .await?;
        state
            .audit_decision(
                p,
                Action::InvokeFoundationModel.name(),
                &resources[i],
                &decision,
            )
            .await?;
        if !decision.allowed {
            return Err(ApiError::AccessDenied);
        }
    }
    Ok(())
}

/// One call, ready to send.
struct Prepared {
    models: Vec<ModelId>,
    resources: Vec<Resource>,
    body: Map<String, Value>,
    stream: bool,
    client_usage: bool,
    prompt_estimate: u64,
    /// The client's `max_tokens` (or `max_completion_tokens`; the smaller).
    max_out: Option<u64>,
    /// Tokens a stream may reach before it is cut (the budget's rest).
    cap: Option<u64>,
    /// What the tenant's log records as the request, when not the body (a
    /// knowledge-base answer: the question and the chunks' ids, not the
    /// passages the prompt quotes).
    logged: Option<Value>,
}

async fn prepare(
    state: &AppState,
    p: &Principal,
    spelled: &str,
    mut body: Map<String, Value>,
) -> ApiResult<Prepared> {
    // Decided first: a refusal looks the same whatever else the body holds.
    let (models, resources) = authorize_models(state, p, spelled).await?;
    let max = state.llm.max_output_tokens;
    let mut max_out = None;
    for key in ["max_tokens", "max_completion_tokens"] {
        match body.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64() {
                Some(n) if (1..=max).contains(&n) => {
                    max_out = Some(max_out.map_or(n, |m: u64| m.min(n)));
                }
                _ => {
                    return Err(ApiError::Validation(format!(
                        "`{key}` must be a whole number between 1 and {max}"
                    )))
                }
            },
        }
    }
    if body
        .get("stream")
        .is_some_and(|s| !s.is_boolean() && !s.is_null())
    {
        return Err(ApiError::Validation(
            "`stream` must be true or false".into(),
        ));
    }
    let tenant = p.tenant().map(|t| t.as_str()).unwrap_or_default();
    let incarnation = p.incarnation().map(|i| i.as_str()).unwrap_or_default();
    let user = state.llm.user_id(tenant, incarnation, &p.audit_name());
    let stream = wire::is_stream(&body);
    let client_usage = wire::upstream_request(&mut body, "", &user);
    let prompt_estimate = wire::estimate_tokens(&wire::request_text(&body));
    Ok(Prepared {
        models,
        resources,
        body,
        stream,
        client_usage,
        prompt_estimate,
        max_out,
        cap: None,
        logged: None,
    })
}

fn model_field(body: &Map<String, Value>) -> ApiResult<String> {
    match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        _ => Err(ApiError::Validation(
            "`model` is required: the name of a model `GET /v1/models` lists".into(),
        )),
    }
}

pub(crate) async fn openai(
    state: &SharedState,
    p: &Principal,
    surface: Surface,
    body: Map<String, Value>,
    logged: Option<Value>,
) -> ApiResult<Response> {
    let spelled = model_field(&body)?;
    let mut call = prepare(state, p, &spelled, body).await?;
    call.logged = logged;
    if surface == Surface::Embeddings && call.stream {
        return Err(ApiError::Validation("embeddings cannot stream".into()));
    }
    let mut admission = admit(state, p, surface, &mut call).await?;
    let sent = send(state, p, &call, surface, &admission).await?;
    if call.stream {
        let encoder = Encoder::OpenAi {
            client_usage: call.client_usage,
        };
        return Ok(relay(
            state.clone(),
            p,
            surface,
            call,
            sent,
            encoder,
            admission,
        ));
    }
    let (answer, usage) = finish_whole(state, p, surface, &call, sent).await?;
    admission.settle(usage.total_tokens);
    let content = content(state, p, &call, &usage.model, || {
        if surface == Surface::Embeddings {
            fief_logs::summarize_embeddings(&answer)
        } else {
            answer.clone()
        }
    })
    .await;
    // Billed before the answer leaves: an answered call is never unbilled.
    crate::meter::bill_llm(state, p, &usage, content).await?;
    record_after(state, usage);
    let mut response = Json(answer).into_response();
    admission.headers(response.headers_mut());
    Ok(response)
}

/// Admission under the caller's quotas before anything is sent: the worst
/// case (prompt estimate + `max_tokens`, or `quotas.default_max_tokens`)
/// is reserved. When a token limit applies, the upstream is told the most
/// it may produce, and a stream granted only what the budget has left is
/// cut there.
async fn admit(
    state: &SharedState,
    p: &Principal,
    surface: Surface,
    call: &mut Prepared,
) -> ApiResult<Admission> {
    let embeddings = surface == Surface::Embeddings;
    let default = state
        .quota
        .default_max_tokens()
        .min(state.llm.max_output_tokens);
    let output = if embeddings {
        0
    } else {
        call.max_out.unwrap_or(default)
    };
    let cost = Cost::Tokens {
        prompt: call.prompt_estimate,
        output,
        stream: call.stream,
    };
    let admission = state.quota.admit(state, p, cost).await?;
    if let (Some(granted), false) = (admission.granted, embeddings) {
        let room = granted.saturating_sub(call.prompt_estimate).max(1);
        match call.max_out {
            None => {
                call.body.insert("max_tokens".into(), room.into());
            }
            // Every spelling the client used, so no upstream reads a larger one.
            Some(m) if room < m => {
                for key in ["max_tokens", "max_completion_tokens"] {
                    if call.body.get(key).is_some_and(|v| !v.is_null()) {
                        call.body.insert(key.into(), room.into());
                    }
                }
            }
            Some(_) => {}
        }
        if granted < call.prompt_estimate + output {
            call.cap = Some(granted);
        }
    }
    Ok(admission)
}

/// Sends, then checks the fallback's decision was recorded.
async fn send(
    state: &AppState,
    p: &Principal,
    call: &Prepared,
    surface: Surface,
    admission: &Admission,
) -> ApiResult<Sent> {
    let tenant = p.tenant().ok_or(ApiError::AccessDenied)?;
    let path = surface.path();
    let share = Share {
        weight: admission.weight,
        estimate: call.prompt_estimate as f64,
    };
    let sent = state
        .llm
        .send(&call.models, tenant, share, path, &call.body, call.stream)
        .await
        .map_err(upstream_error)?;
    state
        .quota
        .waited(crate::quota::Queue::Upstreams, sent.queued());
    audit_fallback(state, p, &call.models, &call.resources, sent.model).await?;
    if !(200..300).contains(&sent.status) {
        return Err(client_error(state, sent).await);
    }
    Ok(sent)
}

fn upstream_error(e: CallError) -> ApiError {
    match e {
        CallError::RateLimited => ApiError::RateLimited(e.to_string()),
        CallError::Timeout => ApiError::UpstreamTimeout(e.to_string()),
        CallError::Failed(_) | CallError::Resting => ApiError::Upstream(e.to_string()),
    }
}

/// An upstream's 4xx: the request was the client's fault; its message is
/// passed on scrubbed.
async fn client_error(state: &AppState, sent: Sent) -> ApiError {
    let status = sent.status;
    let upstream = sent.upstream;
    let body = sent.response.bytes().await.unwrap_or_default();
    let message = wire::error_message(&body)
        .map(|m| state.llm.scrub(upstream, &m))
        .unwrap_or_else(|| format!("the model's upstream refused the request ({status})"));
    match status {
        401 | 403 => ApiError::Upstream("the model's upstream refused fief's credential".into()),
        404 => ApiError::Upstream("the model's upstream does not serve it".into()),
        413 => ApiError::Validation(format!("the request is too large for the model: {message}")),
        _ => ApiError::Validation(message),
    }
}

/// Reads a whole (non-streamed) answer and makes its usage record.
async fn finish_whole(
    state: &AppState,
    p: &Principal,
    surface: Surface,
    call: &Prepared,
    mut sent: Sent,
) -> ApiResult<(Value, Usage)> {
    let upstream = sent.upstream;
    let model = sent.model;
    let retries = sent.retries;
    let started = sent.started;
    let bytes = sent.body().await.map_err(|_| {
        state.llm.broke(upstream);
        ApiError::Upstream("the model's upstream answer broke off".into())
    })?;
    let mut answer: Value = serde_json::from_slice(&bytes).map_err(|_| {
        state.llm.broke(upstream);
        ApiError::Upstream("the model's upstream sent an answer that is not JSON".into())
    })?;
    let name = state.llm.catalog.model(model).name.clone();
    wire::rename_model(&mut answer, &name);
    let (prompt, completion, counted) = match wire::reported_usage(&answer) {
        Some((p, c)) => (p, c, Counted::Upstream),
        None => (
            call.prompt_estimate,
            wire::estimate_tokens(&wire::answer_text(&answer)),
            Counted::Estimate,
        ),
    };
    sent.served(prompt, completion);
    if counted == Counted::Estimate {
        // The client sees what it is billed, estimated or not.
        if let Some(o) = answer.as_object_mut() {
            o.insert(
                "usage".into(),
                json!({"prompt_tokens": prompt, "completion_tokens": completion,
                       "total_tokens": prompt + completion}),
            );
        }
    }
    let usage = usage_record(
        state,
        p,
        surface,
        call,
        UsageParts {
            model,
            upstream,
            retries,
            prompt,
            completion,
            counted,
            started,
            ttft: None,
            complete: true,
        },
    );
    Ok((answer, usage))
}

struct UsageParts {
    model: ModelId,
    upstream: fief_llm::UpstreamId,
    retries: u32,
    prompt: u64,
    completion: u64,
    counted: Counted,
    started: Instant,
    ttft: Option<u64>,
    complete: bool,
}

fn usage_record(
    state: &AppState,
    p: &Principal,
    surface: Surface,
    call: &Prepared,
    u: UsageParts,
) -> Usage {
    let catalog = &state.llm.catalog;
    Usage {
        request_id: request_id::current(),
        tenant: p.tenant().map(|t| t.to_string()).unwrap_or_default(),
        incarnation: p.incarnation().map(|i| i.to_string()).unwrap_or_default(),
        principal: p.audit_name(),
        source: p.source(),
        surface: surface.name().into(),
        model: catalog.model(u.model).name.clone(),
        upstream: state.llm.upstream_name(u.upstream).to_owned(),
        prompt_tokens: u.prompt,
        completion_tokens: u.completion,
        total_tokens: u.prompt + u.completion,
        counted: u.counted,
        latency_ms: u.started.elapsed().as_millis() as u64,
        ttft_ms: u.ttft,
        status: 200,
        complete: u.complete,
        retries: u.retries,
        fallback_from: (u.model != call.models[0])
            .then(|| catalog.model(call.models[0]).name.clone()),
    }
}

/// The call's request and answer for the tenant's private log, built only
/// when its settings log content.
async fn content(
    state: &AppState,
    p: &Principal,
    call: &Prepared,
    model: &str,
    answer: impl FnOnce() -> Value,
) -> Option<fief_logs::Content> {
    crate::logs::wants_content(state, p, fief_metering::Kind::Llm)
        .await
        .then(|| fief_logs::Content {
            request: call
                .logged
                .clone()
                .unwrap_or_else(|| logged_request(call.body.clone(), model)),
            response: answer(),
        })
}

/// The request as the tenant sent it: the model by the name it used (the
/// upstream body's is filled in per deployment), without the `user` fief
/// put there.
fn logged_request(mut body: Map<String, Value>, model: &str) -> Value {
    body.insert("model".into(), Value::String(model.to_owned()));
    body.remove("user");
    Value::Object(body)
}

/// Records a usage record: metrics, and an audit entry (counts only),
/// written next to the answer rather than before it (the decision that
/// allowed the call was audited before anything was sent).
fn record_after(state: &SharedState, usage: Usage) {
    if let Some(model) = state.llm.catalog.resolve(&usage.model) {
        state.llm.metrics.record(model, &usage);
    }
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = state.audit_usage(&usage).await {
            tracing::error!(request_id = %usage.request_id, "usage record not written: {e}");
        }
    });
}

// ---- streams ----------------------------------------------------------------

/// How relayed chunks are written for the client.
enum Encoder {
    OpenAi { client_usage: bool },
    Bedrock(Box<fief_bedrock::StreamTranslator>),
}

impl Encoder {
    fn chunk(&mut self, chunk: &Value) -> Vec<Bytes> {
        match self {
            Encoder::OpenAi { client_usage } => {
                let usage_only = chunk
                    .get("choices")
                    .and_then(Value::as_array)
                    .is_some_and(Vec::is_empty)
                    && chunk.get("usage").is_some_and(|u| !u.is_null());
                if usage_only && !*client_usage {
                    return Vec::new();
                }
                let mut chunk = chunk.clone();
                if !*client_usage {
                    if let Some(o) = chunk.as_object_mut() {
                        o.remove("usage");
                    }
                }
                vec![Bytes::from(wire::sse_event(&chunk))]
            }
            Encoder::Bedrock(t) => t.push(chunk).into_iter().map(Bytes::from).collect(),
        }
    }
    fn done(&mut self, latency_ms: u64) -> Vec<Bytes> {
        match self {
            Encoder::OpenAi { .. } => vec![Bytes::from_static(wire::SSE_DONE)],
            Encoder::Bedrock(t) => t.finish(latency_ms).into_iter().map(Bytes::from).collect(),
        }
    }
    /// Ends a stream the caller's budget cut: an error the client's SDK
    /// raises, with the usage charged (what the client received).
    fn budget(&mut self, message: &str, prompt: u64, completion: u64) -> Vec<Bytes> {
        match self {
            Encoder::OpenAi { .. } => vec![Bytes::from(wire::sse_event(&json!({
                "error": {
                    "message": message, "type": "rate_limit_error", "code": "budget_exhausted",
                    "request_id": request_id::current(),
                },
                "usage": {
                    "prompt_tokens": prompt, "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            })))],
            Encoder::Bedrock(_) => vec![Bytes::from(fief_bedrock::exception_frame(
                "throttlingException",
                message,
            ))],
        }
    }
    /// Ends a stream that broke: an error the client's SDK raises, never a
    /// silent truncation.
    fn error(&mut self, message: &str) -> Vec<Bytes> {
        match self {
            Encoder::OpenAi { .. } => vec![Bytes::from(wire::sse_event(&json!({"error": {
                "message": message, "type": "upstream_error", "code": "stream_interrupted",
                "request_id": request_id::current(),
            }})))],
            Encoder::Bedrock(_) => vec![Bytes::from(fief_bedrock::exception_frame(
                "modelStreamErrorException",
                message,
            ))],
        }
    }
    fn content_type(&self) -> &'static str {
        match self {
            Encoder::OpenAi { .. } => "text/event-stream",
            Encoder::Bedrock(_) => fief_bedrock::EVENT_STREAM_CONTENT_TYPE,
        }
    }
}

/// A stream being relayed. Dropping it (the client went away) drops the
/// upstream response, which cancels the upstream request; its usage is
/// recorded either way.
struct Relay {
    state: SharedState,
    principal: Principal,
    surface: Surface,
    call: Prepared,
    sent: Option<Sent>,
    encoder: Encoder,
    splitter: SseSplitter,
    out: VecDeque<Bytes>,
    first: Option<Bytes>,
    reported: Option<(u64, u64)>,
    completion_bytes: String,
    ttft: Option<u64>,
    ended: bool,
    complete: bool,
    /// Ended by the caller's budget (then usage is what was relayed).
    budget_cut: bool,
    recorded: bool,
    request_id: String,
    parts: (ModelId, fief_llm::UpstreamId, u32, Instant),
    admission: Admission,
}

fn relay(
    state: SharedState,
    p: &Principal,
    surface: Surface,
    call: Prepared,
    mut sent: Sent,
    encoder: Encoder,
    admission: Admission,
) -> Response {
    let content_type = encoder.content_type();
    let rate_headers = crate::quota::RateHeaders(admission.rate.clone());
    let parts = (sent.model, sent.upstream, sent.retries, sent.started);
    let first = sent.first.take();
    let relay = Relay {
        state,
        principal: p.clone(),
        surface,
        call,
        sent: Some(sent),
        encoder,
        splitter: SseSplitter::default(),
        out: VecDeque::new(),
        first,
        reported: None,
        completion_bytes: String::new(),
        ttft: None,
        ended: false,
        complete: false,
        budget_cut: false,
        recorded: false,
        request_id: request_id::current(),
        parts,
        admission,
    };
    let stream = futures::stream::unfold(relay, |mut r| async move {
        loop {
            // Billed before the last frames leave: a client that saw the
            // end of its answer has its usage event.
            if r.ended && !r.recorded {
                if let Some(usage) = r.finish() {
                    let text = std::mem::take(&mut r.completion_bytes);
                    let content = content(
                        &r.state,
                        &r.principal,
                        &r.call,
                        &usage.model,
                        || json!({ "text": text }),
                    )
                    .await;
                    if let Err(e) =
                        crate::meter::bill_llm(&r.state, &r.principal, &usage, content).await
                    {
                        tracing::error!(request_id = %usage.request_id, "stream not billed: {e:?}");
                    }
                    record_after(&r.state, usage);
                }
            }
            if let Some(b) = r.out.pop_front() {
                return Some((Ok::<_, std::io::Error>(b), r));
            }
            if r.ended {
                return None;
            }
            r.step().await;
        }
    });
    let mut response = axum::body::Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    rate_headers.headers(headers);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

impl Relay {
    /// Reads the next upstream bytes and queues what they complete.
    async fn step(&mut self) {
        let next = match self.first.take() {
            Some(b) => Ok(Some(b)),
            None => match self.sent.as_mut() {
                Some(s) => s.response.chunk().await,
                None => Ok(None),
            },
        };
        match next {
            Ok(Some(bytes)) => {
                for event in self.splitter.push(&bytes) {
                    self.event(event);
                    if self.ended {
                        break;
                    }
                }
            }
            Ok(None) => {
                // The upstream ended without `[DONE]`: cut short.
                self.broke("the model's upstream ended the answer early");
            }
            Err(_) => self.broke("the model's upstream connection broke mid-answer"),
        }
    }

    fn event(&mut self, event: SseData) {
        match event {
            SseData::Done => {
                let latency = self.parts.3.elapsed().as_millis() as u64;
                let frames = self.encoder.done(latency);
                self.out.extend(frames);
                self.ended = true;
                self.complete = true;
            }
            SseData::Json(raw) => {
                let Ok(mut chunk) = serde_json::from_slice::<Value>(&raw) else {
                    self.broke("the model's upstream sent a chunk that is not JSON");
                    return;
                };
                if let Some(message) = chunk.get("error").map(|e| {
                    e.get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("the model's upstream failed mid-answer")
                        .to_owned()
                }) {
                    let message = self.state.llm.scrub(self.parts.1, &message);
                    self.broke(&message);
                    return;
                }
                if let Some(u) = wire::reported_usage(&chunk) {
                    self.reported = Some(u);
                }
                let text = wire::answer_text(&chunk);
                if let Some(cap) = self.call.cap {
                    let after = self.call.prompt_estimate
                        + wire::estimate_tokens(&format!("{}{text}", self.completion_bytes));
                    if !text.is_empty() && after > cap {
                        self.cut(cap);
                        return;
                    }
                }
                if !text.is_empty() && self.ttft.is_none() {
                    self.ttft = Some(self.parts.3.elapsed().as_millis() as u64);
                }
                self.completion_bytes.push_str(&text);
                let name = &self.state.llm.catalog.model(self.parts.0).name;
                wire::rename_model(&mut chunk, name);
                let frames = self.encoder.chunk(&chunk);
                self.out.extend(frames);
            }
        }
    }

    /// The next chunk would take the caller past what its budget has left:
    /// the stream ends here, the upstream request is cancelled.
    fn cut(&mut self, cap: u64) {
        let prompt = self.call.prompt_estimate;
        let completion = wire::estimate_tokens(&self.completion_bytes);
        let message = format!(
            "the monthly token budget is reached: this answer was cut at the {cap} tokens it had \
             left (prompt {prompt} + completion {completion}, estimated)"
        );
        let frames = self.encoder.budget(&message, prompt, completion);
        self.out.extend(frames);
        self.ended = true;
        self.budget_cut = true;
        self.sent = None;
    }

    fn broke(&mut self, message: &str) {
        self.state.llm.broke(self.parts.1);
        let frames = self.encoder.error(message);
        self.out.extend(frames);
        self.ended = true;
        self.sent = None;
    }

    /// Makes the usage record once (at the end, or when dropped early).
    fn finish(&mut self) -> Option<Usage> {
        if self.recorded {
            return None;
        }
        self.recorded = true;
        let reported = self.reported.filter(|_| !self.budget_cut);
        let (prompt, completion, counted) = match reported {
            Some((p, c)) => (p, c, Counted::Upstream),
            None => (
                self.call.prompt_estimate,
                wire::estimate_tokens(&self.completion_bytes),
                Counted::Estimate,
            ),
        };
        if let Some(sent) = self.sent.as_mut() {
            sent.served(prompt, completion);
        }
        self.sent = None;
        self.admission.settle(prompt + completion);
        let (model, upstream, retries, started) = self.parts;
        let mut usage = usage_record(
            &self.state,
            &self.principal,
            self.surface,
            &self.call,
            UsageParts {
                model,
                upstream,
                retries,
                prompt,
                completion,
                counted,
                started,
                ttft: self.ttft,
                complete: self.complete,
            },
        );
        usage.request_id = self.request_id.clone();
        Some(usage)
    }
}

impl Drop for Relay {
    /// The client went away mid-stream: what it received is still billed.
    fn drop(&mut self) {
        if let Some(usage) = self.finish() {
            let state = self.state.clone();
            let p = self.principal.clone();
            let request = match self.call.logged.take() {
                Some(logged) => logged,
                None => logged_request(std::mem::take(&mut self.call.body), &usage.model),
            };
            let text = std::mem::take(&mut self.completion_bytes);
            tokio::spawn(async move {
                let content = crate::logs::wants_content(&state, &p, fief_metering::Kind::Llm)
                    .await
                    .then(|| fief_logs::Content {
                        request,
                        response: json!({ "text": text, "client_disconnected": true }),
                    });
                if let Err(e) = crate::meter::bill_llm(&state, &p, &usage, content).await {
                    tracing::error!(request_id = %usage.request_id, "stream not billed: {e:?}");
                }
                record_after(&state, usage);
            });
        }
    }
}

// ---- Bedrock Converse ---------------------------------------------------------

/// `POST /model/{id}/converse` and `/model/{id}/converse-stream`.
#[utoipa::path(
    post,
    path = "/model/{model_id}/{operation}",
    tag = "foundation-models",
    summary = "Bedrock's Converse (operation converse) and ConverseStream (converse-stream)",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "The answer (or an application/vnd.amazon.eventstream)", body = serde_json::Value))
)]
async fn converse(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath((model_id, operation)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<Value>,
) -> Response {
    let stream = match operation.as_str() {
        "converse" => false,
        "converse-stream" => true,
        _ => return ApiError::NotFound("no such route".into()).into_bedrock_response(),
    };
    converse_call(&state, &p, &model_id, &body, stream)
        .await
        .unwrap_or_else(ApiError::into_bedrock_response)
}

async fn converse_call(
    state: &SharedState,
    p: &Principal,
    model_id: &str,
    body: &Value,
    stream: bool,
) -> ApiResult<Response> {
    let chat = fief_bedrock::chat_request(body, model_id, stream)
        .map_err(|e| ApiError::Validation(e.to_string()))?;
    let Value::Object(chat) = chat else {
        return Err(ApiError::Internal(
            "converse request did not map to an object".into(),
        ));
    };
    let mut call = prepare(state, p, model_id, chat).await?;
    let mut admission = admit(state, p, Surface::Converse, &mut call).await?;
    let sent = send(state, p, &call, Surface::Converse, &admission).await?;
    if stream {
        let encoder = Encoder::Bedrock(Box::new(fief_bedrock::StreamTranslator::new()));
        return Ok(relay(
            state.clone(),
            p,
            Surface::Converse,
            call,
            sent,
            encoder,
            admission,
        ));
    }
    let (answer, usage) = finish_whole(state, p, Surface::Converse, &call, sent).await?;
    admission.settle(usage.total_tokens);
    let latency = usage.latency_ms;
    let content = content(state, p, &call, &usage.model, || answer.clone()).await;
    // Billed before the answer leaves: an answered call is never unbilled.
    crate::meter::bill_llm(state, p, &usage, content).await?;
    record_after(state, usage);
    let converse = fief_bedrock::converse_response(&answer, latency)
        .map_err(|e| ApiError::Upstream(format!("the model's answer cannot be converted: {e}")))?;
    let mut response = (StatusCode::OK, Json(converse)).into_response();
    admission.headers(response.headers_mut());
    Ok(response)
}
