//! HTTP surface: routers for both planes, thin handlers and extractors whose
//! rejections use the JSON error shape.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use fief_store::PutOutcome;

use crate::auth::{Operator, TenantCaller};
use crate::error::{ApiError, ApiResult};
use crate::island::{self, Listener};
use crate::route_table::Routes;
use crate::state::SharedState;
use crate::{access, knowledge, models, request_id, tables, tenants};

pub const TARGET_MODEL_HEADER: &str = "x-amzn-sagemaker-target-model";

/// The tenant API's routes (every one behind the credential layer).
pub fn data_routes() -> Routes {
    Routes::new()
        .get("/api/v1/me", me)
        .get("/api/v1/models", list_models)
        .get("/api/v1/models/{name}", get_model)
        .put("/api/v1/models/{name}", put_model)
        .delete("/api/v1/models/{name}", delete_model)
        .put("/api/v1/models/{name}/tags", put_model_tags)
        .get("/api/v1/policies", list_policies)
        .post("/api/v1/policies/explain", explain)
        .get("/api/v1/policies/{id}", get_policy)
        .put("/api/v1/policies/{id}", put_policy)
        .delete("/api/v1/policies/{id}", delete_policy)
        .get("/api/v1/roles", list_roles)
        .get("/api/v1/roles/{name}", get_role)
        .put("/api/v1/roles/{name}", put_role)
        .delete("/api/v1/roles/{name}", delete_role)
        .post("/api/v1/sts/assume-role", assume_role)
        .get("/api/v1/knowledge-bases", list_knowledge_bases)
        .post("/api/v1/knowledge-bases", create_knowledge_base)
        .get("/api/v1/knowledge-bases/{kb}", get_knowledge_base)
        .delete("/api/v1/knowledge-bases/{kb}", delete_knowledge_base)
        .get("/api/v1/knowledge-bases/{kb}/documents", list_documents)
        .put("/api/v1/knowledge-bases/{kb}/documents/{id}", put_document)
        .delete(
            "/api/v1/knowledge-bases/{kb}/documents/{id}",
            delete_document,
        )
        .post("/api/v1/knowledge-bases/{kb}/query", query_knowledge_base)
        .post("/v1/embeddings", embeddings)
        .get("/api/v1/tables/{table}/items", list_items)
        .get("/api/v1/tables/{table}/items/{key}", get_item)
        .put("/api/v1/tables/{table}/items/{key}", put_item)
        .delete("/api/v1/tables/{table}/items/{key}", delete_item)
        .post("/endpoints/{endpoint}/invocations", invoke)
        .merge(crate::llm::routes())
        .merge(crate::quota::routes())
        .merge(crate::meter::routes())
        .merge(crate::logs::routes())
        .merge(crate::answer::routes())
}

/// The operator API's routes (each handler takes the [`Operator`]).
pub fn admin_routes() -> Routes {
    Routes::new()
        .get("/admin/v1/tenants", list_tenants)
        .post("/admin/v1/tenants", create_tenant)
        .get("/admin/v1/tenants/{id}", get_tenant)
        .patch("/admin/v1/tenants/{id}", update_tenant)
        .delete("/admin/v1/tenants/{id}", delete_tenant)
        .get("/admin/v1/tenants/{id}/api-keys", list_keys)
        .post("/admin/v1/tenants/{id}/api-keys", create_key)
        .delete("/admin/v1/tenants/{id}/api-keys/{key_id}", revoke_key)
        .get("/admin/v1/sts/signing-keys", list_signing_keys)
        .post("/admin/v1/sts/signing-keys", rotate_signing_key)
        .get("/metrics", metrics)
        .merge(crate::meter::admin_routes())
        .merge(crate::audit::admin_routes())
        .merge(crate::verify::admin_routes())
}

/// Routes both listeners serve without a credential: health, the OpenAPI
/// document and the console.
/// Each handler that differs by listener reads the [`Plane`] extension.
pub fn open_routes(plane: Plane) -> Routes {
    Routes::new()
        .get("/healthz", healthz)
        .get("/readyz", readyz)
        .get("/openapi.json", crate::openapi::served)
        .merge(crate::console::routes())
        .with_extension(plane)
}

/// Which listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    Data,
    Admin,
}

/// The tenant-facing listener (shared, or an island).
pub fn data_router(state: SharedState, listener: Listener) -> Router {
    let api = data_routes()
        .into_router()
        // Every route but the open ones authenticates first (it runs after
        // the island gate, which tags the request with its listener).
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::tenant_layer,
        ))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            island::gate(listener.clone(), req, next)
        }));
    finish(api, Plane::Data, state)
}

/// The operator's listener.
pub fn admin_router(state: SharedState) -> Router {
    finish(admin_routes().into_router(), Plane::Admin, state)
}

/// Layers both planes share: health, fallbacks, body limit, timeout and the
/// request id (outermost, so every response carries it).
fn finish(api: Router<SharedState>, plane: Plane, state: SharedState) -> Router {
    let limit = state.config.max_body_bytes;
    let timeout = Duration::from_secs(state.config.request_timeout_secs);
    api.merge(open_routes(plane).into_router())
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            reject_oversized(req, next, limit)
        }))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            with_timeout(req, next, timeout)
        }))
        .layer(middleware::from_fn(request_id::middleware))
        .with_state(state)
}

/// Refuses a declared oversized body before reading any of it.
async fn reject_oversized(req: Request, next: Next, limit: usize) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => ApiError::PayloadTooLarge(limit).into_response(),
        _ => next.run(req).await,
    }
}

async fn with_timeout(req: Request, next: Next, timeout: Duration) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::Unavailable(format!("request took longer than {}s", timeout.as_secs()))
            .into_response(),
    }
}

// ---- extractors -----------------------------------------------------------

/// A raw body whose rejections are API errors (413 above the limit).
pub struct Body(pub Bytes);

impl FromRequest<SharedState> for Body {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &SharedState) -> Result<Self, ApiError> {
        let limit = state.config.max_body_bytes;
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|e| body_error(e, limit))
    }
}

fn body_error(e: BytesRejection, limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(limit)
    } else {
        ApiError::Validation(format!(
            "could not read the request body: {}",
            e.body_text()
        ))
    }
}

/// A JSON body with API-shaped errors.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<SharedState> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &SharedState) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        let Body(bytes) = Body::from_request(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A body that is not JSON says where it broke; one of the wrong shape
/// says which field and what it takes, in words (never serde's).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(shape_error)?;
    de.end().map_err(syntax_error)?;
    Ok(value)
}

/// [`parse_json`] for a body already read as JSON.
pub fn parse_value<T: DeserializeOwned>(value: serde_json::Value) -> ApiResult<T> {
    serde_path_to_error::deserialize(value).map_err(shape_error)
}

fn shape_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if !inner.is_data() {
        return syntax_error(inner);
    }
    let raw = inner.to_string();
    let raw = raw
        .strip_suffix(&format!(
            " at line {} column {}",
            inner.line(),
            inner.column()
        ))
        .unwrap_or(&raw);
    ApiError::Validation(fief_core::words::serde_message(Some(&path), raw))
}

fn syntax_error(e: serde_json::Error) -> ApiError {
    ApiError::Validation(format!(
        "the body is not valid JSON (line {}, column {}): {}",
        e.line(),
        e.column(),
        match e.classify() {
            serde_json::error::Category::Eof => "it ends too early",
            _ => "check the quoting and commas there",
        }
    ))
}

/// Path parameters with API-shaped errors.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError::Validation(format!("invalid path: {}", e.body_text())))
    }
}

/// Query parameters with API-shaped errors.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                ApiError::Validation(format!(
                    "query parameter {}",
                    fief_core::words::serde_message(Some(&path), &e.into_inner().to_string())
                ))
            })
    }
}

fn content_type(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::Validation(
            "more than one Content-Type header".into(),
        ));
    }
    first
        .map(|v| {
            v.to_str()
                .map(|s| {
                    s.split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase()
                })
                .map_err(|_| ApiError::Validation("malformed Content-Type header".into()))
        })
        .transpose()
}

fn require_json(headers: &HeaderMap) -> ApiResult<()> {
    match content_type(headers)?.as_deref() {
        None | Some("application/json") => Ok(()),
        Some(other) => Err(ApiError::UnsupportedMediaType(format!(
            "expected application/json, got {other}"
        ))),
    }
}

fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> ApiResult<Option<&'a str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::Validation(format!("more than one {name} header")));
    }
    first
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::Validation(format!("header {name} is not valid text")))
        })
        .transpose()
}

// ---- shared ---------------------------------------------------------------

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    summary = "Liveness",
    responses((status = 200, description = "Alive", body = serde_json::Value))
)]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when everything a request may need answers: the database, Redis
/// (when quotas count there) and the object store, each within 2 s. The
/// answer names each check, so a load balancer's log says what is away.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    summary = "Readiness: the database, Redis and the object store",
    responses((status = 200, description = "Ready", body = serde_json::Value), (status = 503, description = "Not ready: the checks say what is away", body = serde_json::Value))
)]
async fn readyz(State(state): State<SharedState>) -> Response {
    // The answer says what is away; why (host names, driver messages) goes
    // to the log only: readiness is asked without a credential.
    async fn check(
        what: &str,
        f: impl std::future::Future<Output = Result<(), String>>,
    ) -> serde_json::Value {
        match tokio::time::timeout(Duration::from_secs(2), f).await {
            Ok(Ok(())) => json!("ok"),
            Ok(Err(e)) => {
                tracing::warn!("not ready: {what}: {e}");
                json!("unavailable")
            }
            Err(_) => {
                tracing::warn!("not ready: {what} did not answer within 2 s");
                json!("no answer within 2 s")
            }
        }
    }
    let store = &state.store;
    let (database, objects, redis) = tokio::join!(
        check("database", async {
            store.ping().await.map_err(|e| e.to_string())
        }),
        check("object store", async {
            store.ping_objects().await.map_err(|e| e.to_string())
        }),
        async {
            if state.quota.shared() {
                check("redis", state.quota.ping()).await
            } else {
                json!("not configured")
            }
        },
    );
    let ready = [&database, &objects, &redis]
        .iter()
        .all(|c| *c == "ok" || *c == "not configured");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": {"database": database, "object_store": objects, "redis": redis},
    });
    (status, Json(body)).into_response()
}

// ---- data plane -----------------------------------------------------------

#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "identity",
    summary = "The caller: tenant, principal and its source",
    responses((status = 200, description = "The caller", body = serde_json::Value))
)]
async fn me(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
) -> ApiResult<Json<serde_json::Value>> {
    let tenant = p.tenant().cloned().ok_or(ApiError::AccessDenied)?;
    state
        .authorize(
            &p,
            fief_policy::Action::GetIdentity,
            &fief_policy::Resource::Tenant(tenant.clone()),
        )
        .await?;
    Ok(Json(
        json!({"tenant": tenant, "principal": p.audit_name(), "source": p.source()}),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/models",
    tag = "models",
    summary = "The tenant's models",
    responses((status = 200, description = "The tenant's models", body = serde_json::Value))
)]
async fn list_models(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(json!({"models": models::list(&state, &p).await?})))
}

#[utoipa::path(
    get,
    path = "/api/v1/models/{name}",
    tag = "models",
    summary = "A model",
    responses((status = 200, description = "The model", body = serde_json::Value))
)]
async fn get_model(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(models::get(&state, &p, &name).await?))
}

#[utoipa::path(
    put,
    path = "/api/v1/models/{name}",
    tag = "models",
    summary = "Uploads a model: raw ONNX or a .tar.gz package",
    request_body(content = crate::openapi::Binary, description = "application/octet-stream (raw ONNX) or application/gzip (a package with model.json)", content_type = "application/octet-stream"),
    responses((status = 200, description = "Replaced", body = serde_json::Value), (status = 201, description = "Created", body = serde_json::Value))
)]
async fn put_model(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<impl IntoResponse> {
    let upload = match content_type(&headers)?.as_deref() {
        None | Some("application/octet-stream") => models::Upload::Onnx(body.to_vec()),
        Some("application/gzip" | "application/x-gzip") => models::Upload::Package(body.to_vec()),
        Some(other) => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "expected application/octet-stream (raw ONNX) or application/gzip (.tar.gz package), got {other}"
            )))
        }
    };
    let (view, outcome) = models::put(&state, &p, &name, upload).await?;
    let status = if outcome == PutOutcome::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/models/{name}",
    tag = "models",
    summary = "Deletes a model",
    responses((status = 204, description = "Deleted"))
)]
async fn delete_model(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    models::delete(&state, &p, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/v1/knowledge-bases",
    tag = "knowledge-bases",
    summary = "The tenant's knowledge bases",
    responses((status = 200, description = "The knowledge bases", body = serde_json::Value))
)]
async fn list_knowledge_bases(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        json!({"knowledge_bases": knowledge::list(&state, &p).await?}),
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/knowledge-bases",
    tag = "knowledge-bases",
    summary = "Creates a knowledge base",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 201, description = "Created", body = serde_json::Value))
)]
async fn create_knowledge_base(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiJson(req): ApiJson<knowledge::CreateKb>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(knowledge::create(&state, &p, req).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/knowledge-bases/{kb}",
    tag = "knowledge-bases",
    summary = "A knowledge base",
    responses((status = 200, description = "The knowledge base", body = serde_json::Value))
)]
async fn get_knowledge_base(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(kb): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(knowledge::get(&state, &p, &kb).await?))
}

#[utoipa::path(
    delete,
    path = "/api/v1/knowledge-bases/{kb}",
    tag = "knowledge-bases",
    summary = "Deletes a knowledge base and its documents",
    responses((status = 204, description = "Deleted"))
)]
async fn delete_knowledge_base(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(kb): ApiPath<String>,
) -> ApiResult<StatusCode> {
    knowledge::delete(&state, &p, &kb).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/v1/knowledge-bases/{kb}/documents",
    tag = "knowledge-bases",
    summary = "A knowledge base's documents",
    responses((status = 200, description = "The documents", body = serde_json::Value))
)]
async fn list_documents(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(kb): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        json!({"documents": knowledge::list_documents(&state, &p, &kb).await?}),
    ))
}

#[utoipa::path(
    put,
    path = "/api/v1/knowledge-bases/{kb}/documents/{id}",
    tag = "knowledge-bases",
    summary = "Writes a document: chunked, embedded and sealed",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "Replaced", body = serde_json::Value), (status = 201, description = "Created", body = serde_json::Value))
)]
async fn put_document(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath((kb, id)): ApiPath<(String, String)>,
    ApiJson(input): ApiJson<fief_knowledge::DocumentInput>,
) -> ApiResult<impl IntoResponse> {
    let view = knowledge::put_document(&state, &p, &kb, &id, input).await?;
    let status = if view.outcome == PutOutcome::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/knowledge-bases/{kb}/documents/{id}",
    tag = "knowledge-bases",
    summary = "Deletes a document",
    responses((status = 204, description = "Deleted"))
)]
async fn delete_document(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath((kb, id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    knowledge::delete_document(&state, &p, &kb, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/v1/knowledge-bases/{kb}/query",
    tag = "knowledge-bases",
    summary = "Searches a knowledge base",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "The nearest chunks", body = serde_json::Value))
)]
async fn query_knowledge_base(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(kb): ApiPath<String>,
    ApiJson(input): ApiJson<fief_knowledge::QueryInput>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        json!({"results": knowledge::query(&state, &p, &kb, input).await?}),
    ))
}

fn item_condition(headers: &HeaderMap) -> ApiResult<fief_store::Condition> {
    let text = |name: header::HeaderName| {
        headers
            .get(&name)
            .map(|v| {
                v.to_str()
                    .map_err(|_| ApiError::Validation(format!("malformed {name} header")))
            })
            .transpose()
    };
    tables::condition(text(header::IF_MATCH)?, text(header::IF_NONE_MATCH)?)
}

#[utoipa::path(
    put,
    path = "/api/v1/tables/{table}/items/{key}",
    tag = "tables",
    summary = "Writes an item; If-Match / If-None-Match make it conditional",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "Replaced", body = serde_json::Value), (status = 201, description = "Created", body = serde_json::Value))
)]
async fn put_item(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath((table, key)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiJson(value): ApiJson<serde_json::Value>,
) -> ApiResult<impl IntoResponse> {
    let condition = item_condition(&headers)?;
    let (item, outcome) = tables::put(&state, &p, &table, &key, value, condition).await?;
    let status = if outcome == PutOutcome::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, [(header::ETAG, tables::etag(&item))], Json(item)))
}

#[utoipa::path(
    get,
    path = "/api/v1/tables/{table}/items/{key}",
    tag = "tables",
    summary = "An item (its ETag is its version)",
    responses((status = 200, description = "The item", body = serde_json::Value))
)]
async fn get_item(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath((table, key)): ApiPath<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let item = tables::get(&state, &p, &table, &key).await?;
    Ok(([(header::ETAG, tables::etag(&item))], Json(item)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/tables/{table}/items/{key}",
    tag = "tables",
    summary = "Deletes an item; If-Match makes it conditional",
    responses((status = 204, description = "Deleted"))
)]
async fn delete_item(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath((table, key)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let condition = item_condition(&headers)?;
    tables::delete(&state, &p, &table, &key, condition).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/v1/tables/{table}/items",
    tag = "tables",
    summary = "A table's items, a page at a time",
    params(crate::tables::ListQuery),
    responses((status = 200, description = "A page of items", body = serde_json::Value))
)]
async fn list_items(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(table): ApiPath<String>,
    ApiQuery(q): ApiQuery<tables::ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let page = tables::list(&state, &p, &table, q).await?;
    Ok(Json(json!({"items": page.items, "next_cursor": page.next})))
}

/// The in-process embedder, or an upstream model when one is named.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "foundation-models",
    summary = "Embeddings (OpenAI's shape)",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "The embeddings", body = serde_json::Value))
)]
async fn embeddings(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiJson(body): ApiJson<serde_json::Map<String, serde_json::Value>>,
) -> ApiResult<Response> {
    let model = body.get("model").and_then(|m| m.as_str());
    if crate::llm::routes_embedding(&state, model, state.knowledge.embedder().model_name()) {
        return Ok(crate::llm::embeddings(&state, &p, body).await);
    }
    let req: knowledge::EmbeddingsRequest = parse_value(serde_json::Value::Object(body))?;
    Ok(Json(knowledge::embeddings(&state, &p, req).await?).into_response())
}

#[utoipa::path(
    post,
    path = "/endpoints/{endpoint}/invocations",
    tag = "models",
    summary = "Runs a model (SageMaker's InvokeEndpoint shape; the model in X-Amzn-SageMaker-Target-Model)",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "The outputs", body = serde_json::Value))
)]
async fn invoke(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(endpoint): ApiPath<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<impl IntoResponse> {
    require_json(&headers)?;
    let target = single_header(&headers, TARGET_MODEL_HEADER)?;
    let outputs = models::invoke(&state, &p, &endpoint, target, &body).await?;
    Ok(Json(json!({"outputs": outputs.0})))
}

#[utoipa::path(
    put,
    path = "/api/v1/models/{name}/tags",
    tag = "models",
    summary = "Sets a model's tags",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "The model with its tags", body = serde_json::Value))
)]
async fn put_model_tags(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(name): ApiPath<String>,
    ApiJson(tags): ApiJson<fief_core::Tags>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(models::set_tags(&state, &p, &name, tags).await?))
}

/// A policy document: Cedar text as the body (`text/plain` or no content
/// type), or JSON `{"policy": "<cedar>"}`.
fn policy_text(headers: &HeaderMap, body: &[u8]) -> ApiResult<String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PolicyBody {
        policy: String,
    }
    match content_type(headers)?.as_deref() {
        Some("application/json") => Ok(parse_json::<PolicyBody>(body)?.policy),
        None | Some("text/plain" | "application/cedar") => String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::Validation("policy text is not valid UTF-8".into())),
        Some(other) => Err(ApiError::UnsupportedMediaType(format!(
            "expected text/plain (Cedar) or application/json, got {other}"
        ))),
    }
}

#[utoipa::path(
    put,
    path = "/api/v1/policies/{id}",
    tag = "policies",
    summary = "Writes a policy: Cedar text, or JSON {\"policy\"}",
    request_body(content = String, description = "Cedar text (text/plain) or JSON {\"policy\": \"<cedar>\"}", content_type = "text/plain"),
    responses((status = 200, description = "Replaced", body = serde_json::Value), (status = 201, description = "Created", body = serde_json::Value))
)]
async fn put_policy(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<impl IntoResponse> {
    let text = policy_text(&headers, &body)?;
    let (record, created) = access::put_policy(&state, &p, &id, &text).await?;
    Ok((created_or_ok(created), Json(json!({"policy": record}))))
}

fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/policies/{id}",
    tag = "policies",
    summary = "A policy",
    responses((status = 200, description = "The policy", body = serde_json::Value))
)]
async fn get_policy(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        json!({"policy": access::get_policy(&state, &p, &id).await?}),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/v1/policies/{id}",
    tag = "policies",
    summary = "Deletes a policy",
    responses((status = 204, description = "Deleted"))
)]
async fn delete_policy(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    access::delete_policy(&state, &p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/v1/policies",
    tag = "policies",
    summary = "The tenant's Cedar policies",
    responses((status = 200, description = "The policies", body = serde_json::Value))
)]
async fn list_policies(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        json!({"policies": access::list_policies(&state, &p).await?}),
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/policies/explain",
    tag = "policies",
    summary = "Explains a decision: which policies permit or forbid",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "The decision and its reasons", body = serde_json::Value))
)]
async fn explain(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiJson(req): ApiJson<access::Explain>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(access::explain(&state, &p, req).await?))
}

#[utoipa::path(
    put,
    path = "/api/v1/roles/{name}",
    tag = "roles",
    summary = "Writes a role: its permissions and trust policy",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "Replaced", body = serde_json::Value), (status = 201, description = "Created", body = serde_json::Value))
)]
async fn put_role(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<access::PutRole>,
) -> ApiResult<impl IntoResponse> {
    let (record, created) = access::put_role(&state, &p, &name, req).await?;
    Ok((created_or_ok(created), Json(json!({"role": record}))))
}

#[utoipa::path(
    get,
    path = "/api/v1/roles/{name}",
    tag = "roles",
    summary = "A role",
    responses((status = 200, description = "The role", body = serde_json::Value))
)]
async fn get_role(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        json!({"role": access::get_role(&state, &p, &name).await?}),
    ))
}

#[utoipa::path(
    delete,
    path = "/api/v1/roles/{name}",
    tag = "roles",
    summary = "Deletes a role",
    responses((status = 204, description = "Deleted"))
)]
async fn delete_role(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    access::delete_role(&state, &p, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/v1/roles",
    tag = "roles",
    summary = "The tenant's roles",
    responses((status = 200, description = "The roles", body = serde_json::Value))
)]
async fn list_roles(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        json!({"roles": access::list_roles(&state, &p).await?}),
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/sts/assume-role",
    tag = "roles",
    summary = "Assumes a role: a session token",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "The session token", body = serde_json::Value))
)]
async fn assume_role(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiJson(req): ApiJson<access::AssumeRole>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(access::assume_role(&state, &p, req).await?))
}

// ---- admin plane ----------------------------------------------------------

#[utoipa::path(
    post,
    path = "/admin/v1/tenants",
    tag = "tenants",
    summary = "Creates a tenant and its first API key (shown once)",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 201, description = "Created, with the key", body = serde_json::Value))
)]
async fn create_tenant(
    State(state): State<SharedState>,
    Operator(op): Operator,
    ApiJson(req): ApiJson<tenants::CreateTenant>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(tenants::create(&state, &op, req).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/admin/v1/tenants",
    tag = "tenants",
    summary = "Every tenant",
    responses((status = 200, description = "The tenants", body = serde_json::Value))
)]
async fn list_tenants(
    State(state): State<SharedState>,
    Operator(op): Operator,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(json!({"tenants": tenants::list(&state, &op).await?})))
}

#[utoipa::path(
    get,
    path = "/admin/v1/tenants/{id}",
    tag = "tenants",
    summary = "A tenant",
    responses((status = 200, description = "The tenant", body = serde_json::Value))
)]
async fn get_tenant(
    State(state): State<SharedState>,
    Operator(op): Operator,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let tenant = tenants::get(&state, &op, &id).await?;
    let effective = state.quota.effective(tenant.tier, tenant.quotas.as_ref());
    Ok(Json(
        json!({"tenant": tenant, "effective_quotas": effective}),
    ))
}

#[utoipa::path(
    patch,
    path = "/admin/v1/tenants/{id}",
    tag = "tenants",
    summary = "Changes a tenant's tier, tags or bucket",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "The tenant", body = serde_json::Value))
)]
async fn update_tenant(
    State(state): State<SharedState>,
    Operator(op): Operator,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<tenants::UpdateTenant>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        json!({"tenant": tenants::update(&state, &op, &id, req).await?}),
    ))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/tenants/{id}",
    tag = "tenants",
    summary = "Offboards a tenant: its content is destroyed",
    responses((status = 200, description = "What was destroyed", body = serde_json::Value))
)]
async fn delete_tenant(
    State(state): State<SharedState>,
    Operator(op): Operator,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    tenants::delete(&state, &op, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/admin/v1/tenants/{id}/api-keys",
    tag = "tenants",
    summary = "Creates an API key (shown once, with its AWS SigV4 pair)",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 201, description = "Created", body = serde_json::Value))
)]
async fn create_key(
    State(state): State<SharedState>,
    Operator(op): Operator,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<impl IntoResponse> {
    // The body is optional: no body means an unnamed key.
    let req = if body.is_empty() {
        tenants::CreateKey::default()
    } else {
        require_json(&headers)?;
        parse_json::<tenants::CreateKey>(&body)?
    };
    Ok((
        StatusCode::CREATED,
        Json(tenants::create_key(&state, &op, &id, req).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/admin/v1/tenants/{id}/api-keys",
    tag = "tenants",
    summary = "A tenant's API keys (never their secrets)",
    responses((status = 200, description = "The keys", body = serde_json::Value))
)]
async fn list_keys(
    State(state): State<SharedState>,
    Operator(op): Operator,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        json!({"api_keys": tenants::list_keys(&state, &op, &id).await?}),
    ))
}

#[utoipa::path(
    delete,
    path = "/admin/v1/tenants/{id}/api-keys/{key_id}",
    tag = "tenants",
    summary = "Revokes an API key",
    responses((status = 204, description = "Revoked"))
)]
async fn revoke_key(
    State(state): State<SharedState>,
    Operator(op): Operator,
    ApiPath((id, key_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    tenants::revoke_key(&state, &op, &id, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/admin/v1/sts/signing-keys",
    tag = "identity",
    summary = "Session-token signing keys (public parts)",
    responses((status = 200, description = "The keys", body = serde_json::Value))
)]
async fn list_signing_keys(
    State(state): State<SharedState>,
    Operator(op): Operator,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        json!({"signing_keys": crate::signing::list(&state, &op).await?}),
    ))
}

#[utoipa::path(
    post,
    path = "/admin/v1/sts/signing-keys",
    tag = "identity",
    summary = "Rotates the session-token signing key",
    responses((status = 200, description = "The new key", body = serde_json::Value), (status = 201, description = "The new key", body = serde_json::Value))
)]
async fn rotate_signing_key(
    State(state): State<SharedState>,
    Operator(op): Operator,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(crate::signing::rotate(&state, &op).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
async fn metrics(State(state): State<SharedState>, _: Operator) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
        let mut text = state
            .metrics
            .render(&state.cache.stats(), state.store.items_rejected());
        state.llm.metrics.render(&mut text);
        state.quota.render(&mut text);
        state.logs.render(&mut text);
        crate::coherence::render(&state, &mut text);
        text
    })
}
