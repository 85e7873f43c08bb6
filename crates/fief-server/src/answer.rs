//! Retrieve and generate: `POST /api/v1/knowledge-bases/{kb}/answer`. The
//! caller's own base is searched exactly as `/query` searches it (decided
//! as `QueryKnowledgeBase`, metered as a query), then one of the caller's
//! foundation models is asked with the passages found, exactly as
//! `/v1/chat/completions` asks it (decided as `InvokeFoundationModel` under
//! the allowlist, admitted by its quotas, metered and logged as an LLM
//! call). Nothing else reaches the prompt: the passages come from the
//! caller's scope, so another tenant's chunk cannot be in it.

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fief_knowledge::{QueryHit, QueryInput, SearchMode};
use fief_store::Principal;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::TenantCaller;
use crate::error::{ApiError, ApiResult};
use crate::knowledge;
use crate::llm::Surface;
use crate::route_table::Routes;
use crate::routes::{ApiJson, ApiPath};
use crate::state::SharedState;

/// What the model is told: answer from the numbered passages, cite them.
const INSTRUCTIONS: &str = "Answer the question using only the numbered passages from the \
     user's knowledge base. Cite the passages you use by their numbers, like [1]. If the \
     passages do not hold the answer, say that they do not.";

/// A model's whole answer is read up to this size.
const MAX_ANSWER_BYTES: usize = 4 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerInput {
    pub query: String,
    /// A foundation model the caller may use (any spelling `/v1/models` lists).
    pub model: String,
    #[serde(default)]
    pub top_k: Option<usize>,
    #[serde(default)]
    pub filter: Map<String, Value>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub stream: bool,
    /// How the chunks are found (`vector`, `keyword`, `hybrid`), as for `/query`.
    #[serde(default)]
    pub mode: SearchMode,
}

/// A Bedrock request's search mode; fief's default when it names none.
fn mode(named: Option<&str>) -> SearchMode {
    match named {
        Some("vector") => SearchMode::Vector,
        Some("keyword") => SearchMode::Keyword,
        _ => SearchMode::Hybrid,
    }
}

pub fn routes() -> Routes {
    Routes::new()
        .post("/api/v1/knowledge-bases/{kb}/answer", answer)
        .post("/knowledgebases/{kb}/retrieve", bedrock_retrieve)
        .post("/retrieveAndGenerate", bedrock_retrieve_and_generate)
}

/// The chat request: the instructions, then the passages and the question.
fn prompt(query: &str, hits: &[QueryHit]) -> Vec<Value> {
    let mut passages = String::new();
    for (i, hit) in hits.iter().enumerate() {
        passages.push_str(&format!(
            "[{}] (document {}, chunk {})\n{}\n\n",
            i + 1,
            hit.document_id,
            hit.chunk,
            hit.text
        ));
    }
    if hits.is_empty() {
        passages.push_str("(no passage matched)\n\n");
    }
    vec![
        json!({"role": "system", "content": INSTRUCTIONS}),
        json!({"role": "user", "content": format!("Passages:\n\n{passages}Question: {query}")}),
    ]
}

fn citations(hits: &[QueryHit]) -> Vec<Value> {
    hits.iter()
        .map(|h| {
            json!({"document_id": h.document_id, "chunk": h.chunk, "text": h.text, "score": h.score})
        })
        .collect()
}

/// Retrieves from the caller's base and asks the model; the model's answer
/// (JSON) or its relayed stream, with the citations.
async fn retrieve_and_generate(
    state: &SharedState,
    p: &Principal,
    kb: &str,
    input: AnswerInput,
) -> ApiResult<(Vec<QueryHit>, Response)> {
    if input.model.trim().is_empty() {
        return Err(ApiError::Validation(
            "`model` is required: a foundation model `GET /v1/models` lists".into(),
        ));
    }
    let hits = knowledge::query(
        state,
        p,
        kb,
        QueryInput {
            query: input.query.clone(),
            top_k: input.top_k,
            filter: input.filter,
            mode: input.mode,
        },
    )
    .await?;
    // The log keeps the question and which chunks were given, not the
    // passages themselves (they are in the base).
    let logged = json!({
        "model": input.model, "knowledge_base": kb, "query": input.query,
        "stream": input.stream, "max_tokens": input.max_tokens,
        "chunks": hits.iter().map(|h| json!({"document_id": h.document_id, "chunk": h.chunk})).collect::<Vec<_>>(),
    });
    let mut body = Map::new();
    body.insert("model".into(), input.model.into());
    body.insert("messages".into(), prompt(&input.query, &hits).into());
    body.insert("stream".into(), input.stream.into());
    if let Some(n) = input.max_tokens {
        body.insert("max_tokens".into(), n.into());
    }
    // Its own request id: the query above was billed under the request's.
    let response = crate::request_id::part(
        "generate",
        crate::llm::openai(state, p, Surface::Chat, body, Some(logged)),
    )
    .await?;
    Ok((hits, response))
}

/// A whole chat answer: its headers, the answer, and the answer's text.
async fn read_answer(response: Response) -> ApiResult<(axum::http::HeaderMap, Value, String)> {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ANSWER_BYTES)
        .await
        .map_err(|e| ApiError::Upstream(format!("the model's answer could not be read: {e}")))?;
    let answer: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Upstream(format!("the model's answer is not JSON: {e}")))?;
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok((parts.headers, answer, text))
}

#[utoipa::path(
    post,
    path = "/api/v1/knowledge-bases/{kb}/answer",
    tag = "knowledge-bases",
    summary = "Answers a question from the knowledge base with one of the caller's foundation models, with citations (streamed with \"stream\": true)",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "The answer and its citations (or a text/event-stream: the citations, then the model's chunks)", body = serde_json::Value))
)]
async fn answer(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(kb): ApiPath<String>,
    ApiJson(input): ApiJson<AnswerInput>,
) -> ApiResult<Response> {
    let stream = input.stream;
    let (hits, response) = retrieve_and_generate(&state, &p, &kb, input).await?;
    let cited = citations(&hits);
    if stream {
        // The citations first, then the model's chunks as they come.
        let (parts, body) = response.into_parts();
        let first = fief_llm::wire::sse_event(&json!({
            "object": "knowledge_base.citations", "citations": cited,
        }));
        let events = futures::stream::once(async move { Ok(axum::body::Bytes::from(first)) })
            .chain(body.into_data_stream());
        return Ok(Response::from_parts(parts, Body::from_stream(events)));
    }
    let (headers, whole, text) = read_answer(response).await?;
    let mut out = Json(json!({
        "answer": text,
        "citations": cited,
        "model": whole["model"],
        "usage": whole["usage"],
    }))
    .into_response();
    for (name, value) in headers.iter() {
        if name.as_str().starts_with("x-ratelimit") {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(out)
}

// ---- Bedrock agent-runtime ----------------------------------------------------

fn hits_json(hits: &[QueryHit]) -> Vec<Value> {
    hits.iter()
        .map(|h| serde_json::to_value(h).unwrap_or_default())
        .collect()
}

/// boto3's `bedrock-agent-runtime` `retrieve`: the same search as `/query`.
#[utoipa::path(
    post,
    path = "/knowledgebases/{kb}/retrieve",
    tag = "knowledge-bases",
    summary = "Bedrock agent-runtime's Retrieve on a knowledge base of the caller's",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "The retrieval results", body = serde_json::Value))
)]
async fn bedrock_retrieve(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiPath(kb): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> Response {
    let run = async {
        let r = fief_bedrock::agent::retrieve_request(&kb, &body)
            .map_err(|e| ApiError::Validation(e.to_string()))?;
        let input = QueryInput {
            query: r.query,
            top_k: r.top_k,
            filter: r.filter,
            mode: mode(r.mode),
        };
        let hits = knowledge::query(&state, &p, &r.kb, input).await?;
        Ok::<_, ApiError>(
            Json(fief_bedrock::agent::retrieve_response(&hits_json(&hits))).into_response(),
        )
    };
    run.await.unwrap_or_else(ApiError::into_bedrock_response)
}

/// boto3's `bedrock-agent-runtime` `retrieve_and_generate`: the same as
/// `/answer`, in Bedrock's shape (the session id is the request's id; no
/// session is carried over).
#[utoipa::path(
    post,
    path = "/retrieveAndGenerate",
    tag = "knowledge-bases",
    summary = "Bedrock agent-runtime's RetrieveAndGenerate on a knowledge base of the caller's",
    request_body(content = serde_json::Value, content_type = "application/json"),
    responses((status = 200, description = "The answer and its citations", body = serde_json::Value))
)]
async fn bedrock_retrieve_and_generate(
    State(state): State<SharedState>,
    TenantCaller(p): TenantCaller,
    ApiJson(body): ApiJson<Value>,
) -> Response {
    let run = async {
        let (r, model) = fief_bedrock::agent::retrieve_and_generate_request(&body)
            .map_err(|e| ApiError::Validation(e.to_string()))?;
        let input = AnswerInput {
            query: r.query,
            model,
            top_k: r.top_k,
            filter: r.filter,
            max_tokens: None,
            stream: false,
            mode: mode(r.mode),
        };
        let (hits, response) = retrieve_and_generate(&state, &p, &r.kb, input).await?;
        let (_, _, text) = read_answer(response).await?;
        let session = crate::request_id::current();
        Ok::<_, ApiError>(
            Json(fief_bedrock::agent::retrieve_and_generate_response(
                &text,
                &hits_json(&hits),
                &session,
            ))
            .into_response(),
        )
    };
    run.await.unwrap_or_else(ApiError::into_bedrock_response)
}
