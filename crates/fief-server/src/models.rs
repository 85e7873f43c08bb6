//! Tenant model operations and invocation. No HTTP here: handlers in
//! `routes` extract, call these, and let `error` map the result.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use fief_core::{validate_tags, ModelRef, Tags, TenantId};
use fief_policy::{Action, Resource};
use fief_serving::{Inputs, LoadedModel, Outputs};
use fief_store::{ModelRecord, Principal, PutOutcome, TenantScope};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Serialize)]
pub struct ModelView {
    pub frn: String,
    #[serde(flatten)]
    pub record: ModelRecord,
}

fn view(tenant: &TenantId, record: ModelRecord) -> ModelView {
    let frn = ModelRef {
        owner: tenant.clone(),
        name: record.name.clone(),
    }
    .frn();
    ModelView { frn, record }
}

fn caller_tenant(principal: &Principal) -> ApiResult<&TenantId> {
    principal.tenant().ok_or(ApiError::AccessDenied)
}

/// Resolves a client-written model reference and authorises `action` on it.
/// Authorisation happens before any lookup, so the answer for another
/// tenant's model does not depend on whether it exists (invariant 7).
async fn authorize_model(
    state: &AppState,
    principal: &Principal,
    action: Action,
    raw: &str,
) -> ApiResult<(TenantScope, ModelRef)> {
    let model = ModelRef::parse(raw, caller_tenant(principal)?)?;
    let scope = state
        .authorize_scoped(principal, action, &Resource::Model(model.clone()))
        .await?;
    Ok((scope, model))
}

/// An uploaded model, as its content type says.
pub enum Upload {
    Onnx(Vec<u8>),
    /// A `.tar.gz` with `model.onnx` and an optional `model.json`.
    Package(Vec<u8>),
}

pub async fn put(
    state: &AppState,
    principal: &Principal,
    raw: &str,
    upload: Upload,
) -> ApiResult<(ModelView, PutOutcome)> {
    let (scope, model) = authorize_model(state, principal, Action::PutModel, raw).await?;
    let max_unpacked = state.config.models.max_model_bytes;
    let (loaded, bytes, took) = blocking(move || -> ApiResult<_> {
        let (onnx, manifest) = match upload {
            Upload::Onnx(bytes) => (bytes, None),
            Upload::Package(gz) => {
                let p = fief_serving::package::unpack(&gz, max_unpacked)?;
                (p.onnx, p.manifest)
            }
        };
        let started = std::time::Instant::now();
        let loaded = LoadedModel::load(&onnx)?;
        let took = started.elapsed();
        if let Some(m) = manifest {
            m.check(loaded.signature())?;
        }
        Ok((loaded, onnx, took))
    })
    .await??;
    let loaded = Arc::new(loaded);
    let (record, outcome) = state
        .store
        .put_model(&scope, &model.name, &bytes, loaded.signature())
        .await?;
    // Loaded once to validate it; keep it so the first invocation is warm.
    state
        .cache
        .insert_loaded(&scope, &record.name, record.version, loaded, took);
    Ok((view(scope.tenant(), record), outcome))
}

pub async fn get(state: &AppState, principal: &Principal, raw: &str) -> ApiResult<ModelView> {
    let (scope, model) = authorize_model(state, principal, Action::GetModel, raw).await?;
    get_record(state, &scope, &model).await
}

/// Replaces a model's tags (what attribute-based policies compare).
pub async fn set_tags(
    state: &AppState,
    principal: &Principal,
    raw: &str,
    tags: Tags,
) -> ApiResult<ModelView> {
    validate_tags(&tags)?;
    let (scope, model) = authorize_model(state, principal, Action::TagModel, raw).await?;
    if !state
        .store
        .set_model_tags(&scope, &model.name, &tags)
        .await?
    {
        return Err(not_found(&model));
    }
    get_record(state, &scope, &model).await
}

async fn get_record(
    state: &AppState,
    scope: &TenantScope,
    model: &ModelRef,
) -> ApiResult<ModelView> {
    let record = state
        .store
        .get_model(scope, &model.name)
        .await?
        .ok_or_else(|| not_found(model))?;
    Ok(view(scope.tenant(), record))
}

pub async fn delete(state: &AppState, principal: &Principal, raw: &str) -> ApiResult<()> {
    let (scope, model) = authorize_model(state, principal, Action::DeleteModel, raw).await?;
    if !state.store.delete_model(&scope, &model.name).await? {
        return Err(not_found(&model));
    }
    state.cache.remove_model(&scope, &model.name);
    Ok(())
}

pub async fn list(state: &AppState, principal: &Principal) -> ApiResult<Vec<ModelView>> {
    let tenant = caller_tenant(principal)?.clone();
    let scope = state
        .authorize_scoped(principal, Action::ListModels, &Resource::Tenant(tenant))
        .await?;
    let records = state.store.list_models(&scope).await?;
    Ok(records
        .into_iter()
        .map(|r| view(scope.tenant(), r))
        .collect())
}

/// `POST /endpoints/{endpoint}/invocations`: the endpoint, then the model,
/// are authorised; only then is anything looked up.
pub async fn invoke(
    state: &Arc<AppState>,
    principal: &Principal,
    endpoint: &str,
    target: Option<&str>,
    body: &[u8],
) -> ApiResult<Outputs> {
    let caller = caller_tenant(principal)?;
    let endpoint_resource = if endpoint == "shared" {
        (Action::InvokeSharedEndpoint, Resource::SharedEndpoint)
    } else {
        (
            Action::InvokeEndpoint,
            Resource::Endpoint(TenantId::parse(endpoint)?),
        )
    };
    let target = target.ok_or_else(|| {
        ApiError::Validation(
            "missing header X-Amzn-SageMaker-Target-Model naming the model to run".into(),
        )
    })?;
    let model = ModelRef::parse(target, caller)?;
    state
        .authorize(principal, endpoint_resource.0, &endpoint_resource.1)
        .await?;
    // Timed only once the endpoint is authorised, so its label is bounded.
    let started = std::time::Instant::now();
    let result = invoke_model(state, principal, &model, body).await;
    state
        .metrics
        .invocation(endpoint, result.is_ok(), started.elapsed());
    let (outputs, run) = result?;
    let quantities = fief_metering::Quantities {
        compute_us: run.as_micros() as u64,
        bytes_in: body.len() as u64,
        ..Default::default()
    };
    let kind = fief_metering::Kind::Onnx;
    // Inputs and outputs are logged only when the tenant turned that on.
    let content = crate::logs::wants_content(state, principal, kind)
        .await
        .then(|| fief_logs::Content {
            request: serde_json::from_slice(body)
                .unwrap_or_else(|_| serde_json::json!({ "bytes": body.len() })),
            response: serde_json::Value::Object(outputs.0.clone()),
        });
    crate::meter::bill_and_log(
        state,
        principal,
        kind,
        model.name.as_str(),
        quantities,
        content,
    )
    .await?;
    Ok(outputs)
}

async fn invoke_model(
    state: &Arc<AppState>,
    principal: &Principal,
    model: &ModelRef,
    body: &[u8],
) -> ApiResult<(Outputs, std::time::Duration)> {
    let scope = state
        .authorize_scoped(
            principal,
            Action::InvokeModel,
            &Resource::Model(model.clone()),
        )
        .await?;
    let inputs = parse_invocation(body)?;
    let admission = state
        .quota
        .admit(state, principal, crate::quota::Cost::Request)
        .await?;

    let record = state
        .store
        .get_model(&scope, &model.name)
        .await?
        .ok_or_else(|| not_found(model))?;
    let loaded = match state.cache.get(&scope, &record.name, record.version) {
        Some(m) => m,
        None => load_within_deadline(state, scope.clone(), record).await?,
    };
    // Placement by tier: a silo tenant's own threads, or the shared pool.
    if let Some(pool) = state.placement.pool(scope.tenant())? {
        state.metrics.job(pool.name());
        let started = std::time::Instant::now();
        let outputs = pool
            .run(move || loaded.run(&inputs))
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))??;
        return Ok((outputs, started.elapsed()));
    }
    // The shared pool's slots go to tenants by fair queueing, each run
    // charged its measured time.
    let expected = loaded.expected_micros(&inputs);
    let mut slot = state
        .quota
        .onnx
        .acquire(
            scope.tenant().as_str(),
            admission.weight,
            expected.unwrap_or(1000.0),
        )
        .await;
    state
        .quota
        .waited(crate::quota::Queue::SharedOnnx, slot.waited());
    state.metrics.job("shared");
    let started = std::time::Instant::now();
    // A run known to take microseconds costs less than the hop to a
    // blocking thread: it runs here. Anything slower, or not yet measured,
    // runs on the blocking pool so no request holds an async worker long.
    let outputs = if expected.is_some_and(|us| us <= INLINE_RUN_MICROS) {
        loaded.run(&inputs)?
    } else {
        blocking(move || loaded.run(&inputs)).await??
    };
    let run = started.elapsed();
    slot.served(run.as_micros() as f64);
    Ok((outputs, run))
}

/// Longest expected run that is not worth moving to a blocking thread.
const INLINE_RUN_MICROS: f64 = 50.0;

/// Loads a cold model in a task of its own. If the load outlasts the
/// deadline the caller gets a retryable 503 ModelNotReady, and the load goes
/// on in the background, so the retry finds the model warm.
async fn load_within_deadline(
    state: &Arc<AppState>,
    scope: TenantScope,
    record: ModelRecord,
) -> ApiResult<Arc<LoadedModel>> {
    let deadline = std::time::Duration::from_millis(state.config.models.load_deadline_ms);
    let state = state.clone();
    let task = tokio::spawn(async move {
        state
            .cache
            .get_or_load(&scope, &record.name, record.version, || async {
                let bytes = state.store.read_model_bytes(&scope, &record).await?;
                blocking(move || LoadedModel::load(&bytes))
                    .await?
                    .map_err(|e| {
                        // It loaded when it was uploaded; failing now means the stored bytes changed.
                        ApiError::Internal(format!("stored model no longer loads: {e}"))
                    })
            })
            .await
    });
    match tokio::time::timeout(deadline, task).await {
        Ok(joined) => {
            joined.map_err(|e| ApiError::Internal(format!("model load task failed: {e}")))?
        }
        Err(_) => Err(ApiError::ModelNotReady),
    }
}

fn parse_invocation(body: &[u8]) -> ApiResult<Inputs> {
    if body.is_empty() {
        return Err(ApiError::Validation(
            "empty body: expected JSON {\"inputs\": ...}".into(),
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::Validation(format!("body is not valid JSON: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(ApiError::Validation(
            "body must be a JSON object {\"inputs\": ...}".into(),
        ));
    };
    let inputs = map
        .remove("inputs")
        .ok_or_else(|| ApiError::Validation("body has no `inputs` field".into()))?;
    if let Some(extra) = map.keys().next() {
        return Err(ApiError::Validation(format!(
            "unknown field `{extra}` (only `inputs` is accepted)"
        )));
    }
    Ok(Inputs::from_json(&inputs)?)
}

fn not_found(model: &ModelRef) -> ApiError {
    ApiError::NotFound(format!("model {} not found", model.name))
}

/// Runs CPU-bound model work off the async executor.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("worker failed: {e}")))
}
