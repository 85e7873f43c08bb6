//! Every request gets an id, echoed in `x-request-id`, in error bodies and in
//! audit entries. It is held in a task-local so code far from the handler
//! (errors, audit) can read it without threading it through every call,
//! with the moment the request arrived (its usage event's duration).

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    static REQUEST_ID: (String, Instant);
}

pub const HEADER: &str = "x-request-id";

pub fn current() -> String {
    REQUEST_ID
        .try_with(|(id, _)| id.clone())
        .unwrap_or_else(|_| "none".to_owned())
}

/// Microseconds since the current request arrived (0 outside a request).
pub fn elapsed_us() -> u64 {
    REQUEST_ID
        .try_with(|(_, at)| at.elapsed().as_micros() as u64)
        .unwrap_or(0)
}

/// Runs `work` as a part of the current request with its own id
/// (`{id}.{part}`, the same arrival): a request that makes two billable
/// calls (a knowledge-base answer: a query, then an LLM call) bills each
/// once, since usage events are idempotent by request id.
pub async fn part<F: std::future::Future>(part: &str, work: F) -> F::Output {
    let (id, at) = REQUEST_ID
        .try_with(|(id, at)| (format!("{id}.{part}"), *at))
        .unwrap_or_else(|_| (format!("none.{part}"), Instant::now()));
    REQUEST_ID.scope((id, at), work).await
}

pub fn new_id() -> String {
    format!("req_{}", uuid::Uuid::new_v4().simple())
}

pub async fn middleware(req: Request, next: Next) -> Response {
    let id = new_id();
    let mut response = REQUEST_ID
        .scope((id.clone(), Instant::now()), next.run(req))
        .await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, v);
    }
    response
}
