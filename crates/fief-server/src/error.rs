//! The one place where errors become HTTP: the JSON error shape
//! `{"error": {"code", "type", "message", "request_id"}}` with its status (OpenAI's
//! shape, so its SDKs read it), or Bedrock's on the Converse routes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use fief_serving::ServingError;
use fief_store::StoreError;

use crate::request_id;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// A tenant-written policy or role that does not parse or validate.
    #[error("{0}")]
    InvalidPolicy(fief_policy::DocumentErrors),
    /// Deliberately without detail: the same answer whether or not the
    /// resource exists (invariant 7).
    #[error("access denied")]
    AccessDenied,
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` / `If-None-Match` did not hold.
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unavailable(String),
    /// A model is still loading; retry shortly.
    #[error("the model is loading; retry shortly")]
    ModelNotReady,
    /// A quota of the caller's is reached (fief's own limits).
    #[error("{message}")]
    Throttled { message: String, retry_after: u64 },
    /// A foundation model's upstream is rate limiting, after retries.
    #[error("{0}")]
    RateLimited(String),
    /// A foundation model's upstream failed (message scrubbed of upstream detail).
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    UpstreamTimeout(String),
    /// Details go to the server log, never to the client.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation(_) | ApiError::InvalidPolicy(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::AccessDenied => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) | ApiError::ModelNotReady => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited(_) | ApiError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI error `type` for the same status, so OpenAI SDKs raise
    /// the matching exception.
    pub fn kind(&self) -> &'static str {
        match self.status().as_u16() {
            400 | 404 | 405 | 409 | 412 | 413 | 415 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            502 | 504 => "upstream_error",
            _ => "api_error",
        }
    }

    /// Bedrock's error shape (`__type` and `x-amzn-ErrorType`) for the
    /// Converse routes, so botocore raises the matching `ClientError`.
    pub fn into_bedrock_response(self) -> Response {
        use fief_bedrock::ErrorKind as K;
        let kind = match self.status().as_u16() {
            400 | 412 | 413 | 415 => K::Validation,
            401 | 403 => K::AccessDenied,
            404 | 405 => K::NotFound,
            429 => K::Throttling,
            503 | 502 => K::ServiceUnavailable,
            504 => K::ModelTimeout,
            _ => K::Internal,
        };
        if let ApiError::Internal(detail) = &self {
            tracing::error!(request_id = %request_id::current(), "internal error: {detail}");
        }
        let (status, error_type, body) = fief_bedrock::error_response(kind, &self.to_string());
        let mut response = (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(body),
        )
            .into_response();
        response
            .headers_mut()
            .insert("x-amzn-errortype", HeaderValue::from_static(error_type));
        response
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation(_) => "ValidationError",
            ApiError::InvalidPolicy(_) => "InvalidPolicy",
            ApiError::Unauthenticated(_) => "Unauthenticated",
            ApiError::AccessDenied => "AccessDenied",
            ApiError::NotFound(_) => "NotFound",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::Conflict(_) => "Conflict",
            ApiError::PreconditionFailed(_) => "PreconditionFailed",
            ApiError::PayloadTooLarge(_) => "PayloadTooLarge",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Unavailable(_) => "Unavailable",
            ApiError::ModelNotReady => "ModelNotReady",
            ApiError::RateLimited(_) => "RateLimited",
            ApiError::Throttled { .. } => "Throttled",
            ApiError::Upstream(_) => "UpstreamError",
            ApiError::UpstreamTimeout(_) => "UpstreamTimeout",
            ApiError::Internal(_) => "InternalError",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = request_id::current();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%request_id, "internal error: {detail}");
        }
        let mut body = json!({"error": {"code": self.code(), "type": self.kind(), "message": self.to_string(), "request_id": request_id}});
        if let ApiError::InvalidPolicy(problems) = &self {
            // Each problem located in the text the client sent.
            body["error"]["details"] = json!(problems.0);
        }
        let mut response = (self.status(), axum::Json(body)).into_response();
        if matches!(self, ApiError::ModelNotReady | ApiError::RateLimited(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let ApiError::Throttled { retry_after, .. } = &self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        if matches!(self, ApiError::Unauthenticated(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ApiError::Conflict(format!("{what} already exists")),
            StoreError::State(message) => ApiError::Conflict(message),
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            StoreError::PreconditionFailed(m) => ApiError::PreconditionFailed(m),
            // The request's tenant incarnation went away while it ran.
            StoreError::TenantGone(_) => ApiError::Unauthenticated(
                "invalid, revoked or unknown credential: its tenant is no longer active".into(),
            ),
            StoreError::Moving(_) => ApiError::Unavailable(e.to_string()),
            // The detail (host names, driver messages) is the operator's.
            e if e.is_unreachable() => {
                tracing::warn!("storage unreachable: {e}");
                ApiError::Unavailable("storage is unreachable; try again".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<ServingError> for ApiError {
    fn from(e: ServingError) -> Self {
        match e {
            ServingError::InvalidModel(_) | ServingError::InvalidInput(_) => {
                ApiError::Validation(e.to_string())
            }
            ServingError::Execution(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<fief_core::CoreError> for ApiError {
    fn from(e: fief_core::CoreError) -> Self {
        ApiError::Validation(e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
