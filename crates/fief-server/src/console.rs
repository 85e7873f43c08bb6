//! The consoles, served from assets embedded in the binary (fief-console):
//! the operator console on the admin listener, the tenant console on the
//! data listener, each under `/console/`. The page needs no credential to
//! load; it asks for one and calls its own listener's API with it. Headers
//! keep it from being framed, from loading anything but its own files, and
//! from sending a referrer.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;

use fief_console::Console;

use crate::error::ApiError;
use crate::route_table::Routes;
use crate::routes::Plane;

/// The console of the listener's [`Plane`] (an extension `open_routes` adds).
pub fn routes() -> Routes {
    Routes::new()
        .get("/console", to_console)
        .get("/console/", page)
        .get("/console/{*path}", asset)
}

fn console_of(plane: Plane) -> Console {
    match plane {
        Plane::Admin => Console::Operator,
        Plane::Data => Console::Tenant,
    }
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

fn serve(console: Console, path: &str) -> Response {
    let Some(asset) = fief_console::asset(console, path) else {
        return ApiError::NotFound("no such console file".into()).into_response();
    };
    let cache = if asset.immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-store"
    };
    let mut r = (StatusCode::OK, asset.bytes).into_response();
    let h = r.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, asset.content_type),
        (header::CACHE_CONTROL, cache),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

#[utoipa::path(
    get,
    path = "/console",
    tag = "console",
    summary = "Redirects to the console",
    responses((status = 308, description = "To /console/"))
)]
async fn to_console() -> Redirect {
    Redirect::permanent("/console/")
}

#[utoipa::path(
    get,
    path = "/console/",
    tag = "console",
    operation_id = "console",
    summary = "The console: the operator's on the admin listener (admin token), the tenant's on the data listener (a tenant credential)",
    responses((status = 200, description = "The console's page", body = String, content_type = "text/html"))
)]
async fn page(Extension(plane): Extension<Plane>) -> Response {
    serve(console_of(plane), "")
}

#[utoipa::path(
    get,
    path = "/console/{path}",
    tag = "console",
    operation_id = "console_asset",
    summary = "A file of the console (script, stylesheet)",
    responses((status = 200, description = "The file", body = String, content_type = "text/javascript"))
)]
async fn asset(Extension(plane): Extension<Plane>, Path(path): Path<String>) -> Response {
    serve(console_of(plane), &path)
}
