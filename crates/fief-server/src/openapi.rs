//! The OpenAPI 3.1 documents of both listeners, generated from the handlers'
//! own `#[utoipa::path]` annotations and served at `GET /openapi.json`.
//! What every operation shares is added here once: path parameters from the
//! path template, the error shape for 4XX and 5XX, and the credential
//! (a tenant's bearer key, session or OIDC token, or AWS Signature V4, on
//! the data listener; the admin token on the admin listener). The committed
//! `openapi/*.json` must equal these documents (tests/openapi.rs), and the
//! route table of each listener must equal its document's operations.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, Required, ResponseBuilder};
use utoipa::{Modify, OpenApi as _, ToSchema};

use crate::route_table::Method;
use crate::routes::Plane;

/// A raw byte body (an ONNX model, a package).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(#[allow(dead_code)] Vec<u8>);

/// Every error: `{"error": {"code", "type", "message", "request_id"}}` (the
/// Converse routes answer Bedrock's shape, `{"message"}` with `__type`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    error: Option<ErrorDetail>,
    /// Bedrock's shape (Converse routes).
    message: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorDetail {
    /// Stable, e.g. `AccessDenied`, `ValidationError`.
    code: String,
    /// OpenAI's error type for the status.
    #[schema(rename = "type")]
    kind: String,
    message: String,
    request_id: String,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "fief tenant API", description = "The data listener: what a tenant's credential reaches. Every route answers only about the caller's own tenant."),
    paths(
        crate::routes::healthz, crate::routes::readyz, served,
        crate::console::to_console, crate::console::page, crate::console::asset,
        crate::routes::me,
        crate::routes::list_models, crate::routes::get_model, crate::routes::put_model,
        crate::routes::delete_model, crate::routes::put_model_tags, crate::routes::invoke,
        crate::routes::list_policies, crate::routes::explain, crate::routes::get_policy,
        crate::routes::put_policy, crate::routes::delete_policy,
        crate::routes::list_roles, crate::routes::get_role, crate::routes::put_role,
        crate::routes::delete_role, crate::routes::assume_role,
        crate::routes::list_knowledge_bases, crate::routes::create_knowledge_base,
        crate::routes::get_knowledge_base, crate::routes::delete_knowledge_base,
        crate::routes::list_documents, crate::routes::put_document,
        crate::routes::delete_document, crate::routes::query_knowledge_base, crate::answer::answer,
        crate::answer::bedrock_retrieve, crate::answer::bedrock_retrieve_and_generate,
        crate::routes::embeddings,
        crate::routes::list_items, crate::routes::get_item, crate::routes::put_item,
        crate::routes::delete_item,
        crate::llm::chat, crate::llm::completions, crate::llm::list, crate::llm::converse,
        crate::quota::status, crate::quota::put_subject, crate::quota::delete_subject,
        crate::meter::own_usage,
        crate::logs::read, crate::logs::delete, crate::logs::get_settings,
        crate::logs::put_settings, crate::logs::get_sink, crate::logs::put_sink,
        crate::logs::delete_sink,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&DATA_PLANE),
)]
struct DataApi;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "fief operator API", description = "The admin listener: tenants, keys, usage, audit and metrics. It shows counts, money and metadata, never tenant content."),
    paths(
        crate::routes::healthz, crate::routes::readyz, served,
        crate::console::to_console, crate::console::page, crate::console::asset,
        crate::routes::list_tenants, crate::routes::create_tenant, crate::routes::get_tenant,
        crate::routes::update_tenant, crate::routes::delete_tenant,
        crate::routes::list_keys, crate::routes::create_key, crate::routes::revoke_key,
        crate::routes::list_signing_keys, crate::routes::rotate_signing_key,
        crate::routes::metrics,
        crate::meter::all_usage, crate::meter::invoice,
        crate::audit::list, crate::audit::verify, crate::audit::anchor,
        crate::verify::start, crate::verify::last,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&ADMIN_PLANE),
)]
struct AdminApi;

/// Paths a client reaches without a credential.
const OPEN: [&str; 6] = [
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/console",
    "/console/",
    "/console/{path}",
];

struct Common(Plane);
const DATA_PLANE: Common = Common(Plane::Data);
const ADMIN_PLANE: Common = Common(Plane::Admin);

impl Modify for Common {
    fn modify(&self, doc: &mut OpenApi) {
        doc.info.version = env!("CARGO_PKG_VERSION").into();
        let (scheme, description) = match self.0 {
            Plane::Data => (
                "tenant",
                "A tenant credential: an API key (fief_<id>_<secret>), a session token from sts/assume-role, or an OIDC token. The AWS SDKs may instead sign with Signature V4, the key's id as the access key id and its secret as the secret access key.",
            ),
            Plane::Admin => ("operator", "The admin token (FIEF_ADMIN_TOKEN)."),
        };
        let components = doc.components.get_or_insert_with(Default::default);
        let mut http = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        http.description = Some(description.into());
        components
            .security_schemes
            .insert(scheme.into(), SecurityScheme::Http(http));
        let error = ResponseBuilder::new()
            .description("An error, with a message that says what to do")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build();
        for (path, item) in doc.paths.paths.iter_mut() {
            let template_params = template_params(path);
            let open = OPEN.contains(&path.as_str());
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let params = op.parameters.get_or_insert_with(Vec::new);
                for name in &template_params {
                    if !params
                        .iter()
                        .any(|p| p.name == *name && p.parameter_in == ParameterIn::Path)
                    {
                        params.push(path_param(name));
                    }
                }
                if params.is_empty() {
                    op.parameters = None;
                }
                for status in ["4XX", "5XX"] {
                    op.responses
                        .responses
                        .entry(status.into())
                        .or_insert_with(|| error.clone().into());
                }
                if !open {
                    op.security = Some(vec![SecurityRequirement::new::<_, _, &str>(scheme, [])]);
                }
            }
        }
    }
}

/// `{name}` segments of a path template.
fn template_params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_owned)
        .collect()
}

fn path_param(name: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .schema(Some(
            utoipa::openapi::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .min_length(Some(1)),
        ))
        .build()
}

static DATA: LazyLock<OpenApi> = LazyLock::new(DataApi::openapi);
static ADMIN: LazyLock<OpenApi> = LazyLock::new(AdminApi::openapi);

/// The document of one listener.
pub fn document(plane: Plane) -> &'static OpenApi {
    match plane {
        Plane::Data => &DATA,
        Plane::Admin => &ADMIN,
    }
}

/// Every (method, path) the document of `plane` describes, sorted.
pub fn operations(plane: Plane) -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for (path, item) in &document(plane).paths.paths {
        for (method, op) in [
            (Method::Get, &item.get),
            (Method::Post, &item.post),
            (Method::Put, &item.put),
            (Method::Patch, &item.patch),
            (Method::Delete, &item.delete),
        ] {
            if op.is_some() {
                out.push((method, path.clone()));
            }
        }
    }
    out.sort();
    out
}

fn json(plane: Plane) -> Response {
    match document(plane).to_pretty_json() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => {
            crate::error::ApiError::Internal(format!("OpenAPI document: {e}")).into_response()
        }
    }
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    operation_id = "openapi",
    summary = "This listener's OpenAPI 3.1 document",
    responses((status = 200, description = "The OpenAPI document", body = serde_json::Value))
)]
pub async fn served(Extension(plane): Extension<Plane>) -> Response {
    json(plane)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn committed(plane: Plane) -> std::path::PathBuf {
        let name = match plane {
            Plane::Data => "data.json",
            Plane::Admin => "admin.json",
        };
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../openapi")
            .join(name)
    }

    /// A route added without its `#[utoipa::path]` (or documented but not
    /// served) fails here.
    #[test]
    fn every_route_of_each_listener_is_in_its_document() {
        for plane in [Plane::Data, Plane::Admin] {
            let (served, documented) = crate::operations(plane);
            assert!(!served.is_empty());
            assert_eq!(
                served, documented,
                "{plane:?}: the route table and the document differ"
            );
        }
    }

    /// `FIEF_WRITE_OPENAPI=1 cargo test -p fief-server --lib openapi` writes them.
    #[test]
    fn the_committed_documents_are_what_the_code_generates() {
        for plane in [Plane::Data, Plane::Admin] {
            let generated = format!("{}\n", crate::openapi_json(plane));
            let path = committed(plane);
            if std::env::var_os("FIEF_WRITE_OPENAPI").is_some() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &generated).unwrap();
            }
            let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                on_disk == generated,
                "{} differs from what the code generates: run FIEF_WRITE_OPENAPI=1 cargo test -p fief-server --lib openapi and commit it",
                path.display()
            );
        }
    }

    #[test]
    fn documents_are_openapi_3_1_with_unique_operation_ids() {
        for plane in [Plane::Data, Plane::Admin] {
            let doc: serde_json::Value = serde_json::from_str(&crate::openapi_json(plane)).unwrap();
            assert_eq!(doc["openapi"], "3.1.0");
            let mut ids = std::collections::BTreeSet::new();
            for (path, item) in doc["paths"].as_object().unwrap() {
                for (method, op) in item.as_object().unwrap() {
                    let id = op["operationId"].as_str().unwrap();
                    assert!(
                        ids.insert(id.to_owned()),
                        "{plane:?}: {method} {path}: {id} twice"
                    );
                    // Every template parameter is declared.
                    for name in template_params(path) {
                        assert!(
                            op["parameters"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .any(|p| p["name"] == name.as_str() && p["in"] == "path"),
                            "{method} {path}: {name}"
                        );
                    }
                    let open = OPEN.contains(&path.as_str());
                    assert_eq!(op.get("security").is_none(), open, "{method} {path}");
                }
            }
        }
    }
}
