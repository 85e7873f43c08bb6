//! The OpenAI wire format: request parsing, deterministic answers, JSON and
//! server-sent-event rendering, errors.

use std::io;
use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{InFlight, MockOptions, Shared};

const FAIL_BODY: &str = r#"{"error":{"message":"internal upstream failure at http://10.9.8.7:8000 key=sk-upstream-secret","type":"server_error"}}"#;
const RATE_LIMIT_BODY: &str = r#"{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;

fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => respond(StatusCode::OK, "application/json", Body::from(body)),
        Err(e) => error(500, "server_error", &e.to_string()),
    }
}

/// An OpenAI-style error answer (rare path, so `json!` is fine here).
pub(crate) fn error(status: u16, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": null}
    });
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    respond(status, "application/json", Body::from(body.to_string()))
}

pub(crate) fn fail() -> Response {
    let status = StatusCode::INTERNAL_SERVER_ERROR;
    respond(status, "application/json", Body::from(FAIL_BODY))
}

pub(crate) fn rate_limited() -> Response {
    let status = StatusCode::TOO_MANY_REQUESTS;
    let mut response = respond(status, "application/json", Body::from(RATE_LIMIT_BODY));
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

pub(crate) fn models(options: &MockOptions) -> Response {
    let data: Vec<_> = (options.models.iter())
        .map(|id| serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": options.name}))
        .collect();
    json(&serde_json::json!({"object": "list", "data": data}))
}

/// Errs with the message for a 400 answer.
fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))
}

pub(crate) fn bad_request(message: &str) -> Response {
    error(400, "invalid_request_error", message)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn texts(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    role: String,
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type", default)]
    kind: String,
    text: Option<String>,
}

impl Message {
    /// The text parts (non-text parts such as images are ignored).
    fn texts(&self) -> impl Iterator<Item = &str> {
        let (one, parts) = match &self.content {
            Some(Content::Text(t)) => (Some(t.as_str()), &[][..]),
            Some(Content::Parts(p)) => (None, p.as_slice()),
            None => (None, &[][..]),
        };
        let parts = parts
            .iter()
            .filter(|p| p.kind == "text")
            .filter_map(|p| p.text.as_deref());
        one.into_iter().chain(parts)
    }
}

#[derive(Deserialize)]
struct CompletionRequest {
    model: String,
    prompt: OneOrMany,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<usize>,
}

#[derive(Deserialize)]
struct EmbeddingRequest {
    model: String,
    input: OneOrMany,
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// Byte offsets where each whitespace-separated word starts.
fn word_starts(s: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut in_word = false;
    for (i, c) in s.char_indices() {
        let space = c.is_whitespace();
        if !space && !in_word {
            starts.push(i);
        }
        in_word = !space;
    }
    starts
}

#[derive(Clone, Copy, Serialize)]
struct Usage {
    prompt_tokens: usize,
    completion_tokens: usize,
    total_tokens: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

/// A chat or text completion, ready to render either way.
pub(crate) struct Generation {
    pub(crate) stream: bool,
    include_usage: bool,
    kind: Kind,
    model: String,
    text: String,
    finish_reason: &'static str,
    usage: Usage,
}

impl Generation {
    fn new(
        kind: Kind,
        model: String,
        mut text: String,
        prompt_tokens: usize,
        max_tokens: Option<usize>,
        stream: Option<bool>,
        stream_options: Option<StreamOptions>,
    ) -> Generation {
        let mut finish_reason = "stop";
        if let Some(max) = max_tokens {
            if let Some(&next) = word_starts(&text).get(max) {
                text.truncate(text[..next].trim_end().len());
                finish_reason = "length";
            }
        }
        let prompt_tokens = prompt_tokens.max(1);
        let completion_tokens = words(&text);
        Generation {
            stream: stream.unwrap_or(false),
            include_usage: stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            kind,
            model,
            text,
            finish_reason,
            usage: Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens: prompt_tokens + completion_tokens,
            },
        }
    }

    fn id(&self, shared: &Shared) -> String {
        let prefix = if self.kind == Kind::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        };
        format!("{prefix}-mock-{}", shared.next_id())
    }

    pub(crate) fn to_json(&self, shared: &Shared) -> Response {
        #[derive(Serialize)]
        struct Answer<'a, C> {
            id: &'a str,
            object: &'static str,
            created: u64,
            model: &'a str,
            choices: [C; 1],
            usage: Usage,
        }
        #[derive(Serialize)]
        struct ChatChoice<'a> {
            index: u32,
            message: Assistant<'a>,
            finish_reason: &'a str,
        }
        #[derive(Serialize)]
        struct Assistant<'a> {
            role: &'static str,
            content: &'a str,
        }
        #[derive(Serialize)]
        struct TextChoice<'a> {
            index: u32,
            text: &'a str,
            finish_reason: &'a str,
            logprobs: Option<()>,
        }
        let id = self.id(shared);
        let (id, created, model, usage) = (&id, unix_now(), &self.model, self.usage);
        let finish_reason = self.finish_reason;
        match self.kind {
            Kind::Chat => json(&Answer {
                id,
                object: "chat.completion",
                created,
                model,
                choices: [ChatChoice {
                    index: 0,
                    message: Assistant {
                        role: "assistant",
                        content: &self.text,
                    },
                    finish_reason,
                }],
                usage,
            }),
            Kind::Text => json(&Answer {
                id,
                object: "text_completion",
                created,
                model,
                choices: [TextChoice {
                    index: 0,
                    text: &self.text,
                    finish_reason,
                    logprobs: None,
                }],
                usage,
            }),
        }
    }

    /// The SSE events in order, and which of them carry content; `cut` keeps
    /// only those up to the first content chunk. Each event is rendered up
    /// front, so streaming itself only hands out buffers.
    fn events(&self, shared: &Shared, chunks: usize, cut: bool) -> (Vec<Bytes>, Range<usize>) {
        let (object, chunk) = match self.kind {
            Kind::Chat => ("chat.completion.chunk", r#"{"index":0,"delta":{"content":"#),
            Kind::Text => ("text_completion", r#"{"index":0,"text":"#),
        };
        let unfinished = match self.kind {
            Kind::Chat => r#"},"finish_reason":null}"#,
            Kind::Text => r#","logprobs":null,"finish_reason":null}"#,
        };
        let head = format!(
            r#"data: {{"id":"{}","object":"{object}","created":{},"model":{},"choices":["#,
            self.id(shared),
            unix_now(),
            json_str(&self.model),
        );
        let event = |choice: &str| Bytes::from(format!("{head}{choice}]}}\n\n"));
        let mut events = Vec::with_capacity(chunks + 4);
        if self.kind == Kind::Chat {
            events.push(event(
                r#"{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}"#,
            ));
        }
        let first = events.len();
        for piece in split(&self.text, chunks) {
            events.push(event(&format!("{chunk}{}{unfinished}", json_str(piece))));
            if cut {
                break;
            }
        }
        let content = first..events.len();
        if cut {
            return (events, content);
        }
        let finish = self.finish_reason;
        events.push(event(&match self.kind {
            Kind::Chat => format!(r#"{{"index":0,"delta":{{}},"finish_reason":"{finish}"}}"#),
            Kind::Text => {
                format!(r#"{{"index":0,"text":"","logprobs":null,"finish_reason":"{finish}"}}"#)
            }
        }));
        if self.include_usage {
            let usage = serde_json::to_string(&self.usage).unwrap_or_default();
            events.push(Bytes::from(format!("{head}],\"usage\":{usage}}}\n\n")));
        }
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        (events, content)
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Splits `text` into at most `chunks` pieces of whole words, as even as
/// possible; whitespace stays attached so the pieces concatenate to `text`.
fn split(text: &str, chunks: usize) -> Vec<&str> {
    let starts = word_starts(text);
    let n = starts.len();
    if n == 0 {
        return Vec::new();
    }
    let k = chunks.clamp(1, n);
    let mut pieces = Vec::with_capacity(k);
    let mut from = 0;
    for i in 1..k {
        let to = starts[i * n / k];
        pieces.push(&text[from..to]);
        from = to;
    }
    pieces.push(&text[from..]);
    pieces
}

pub(crate) fn chat(name: &str, body: &[u8]) -> Result<Generation, String> {
    let req: ChatRequest = parse(body)?;
    let prompt_tokens = req
        .messages
        .iter()
        .flat_map(Message::texts)
        .map(words)
        .sum();
    let last_user = req.messages.iter().rev().find(|m| m.role == "user");
    let last_user: Vec<&str> = last_user.map(|m| m.texts().collect()).unwrap_or_default();
    let text = format!("{name} answers {}: {}", req.model, last_user.join(" "));
    let max_tokens = req.max_tokens.or(req.max_completion_tokens);
    Ok(Generation::new(
        Kind::Chat,
        req.model,
        text,
        prompt_tokens,
        max_tokens,
        req.stream,
        req.stream_options,
    ))
}

pub(crate) fn completion(name: &str, body: &[u8]) -> Result<Generation, String> {
    let req: CompletionRequest = parse(body)?;
    let prompts = req.prompt.texts();
    let prompt_tokens = prompts.iter().map(|p| words(p)).sum();
    let text = format!("{name} completes {}: {}", req.model, prompts.join(" "));
    Ok(Generation::new(
        Kind::Text,
        req.model,
        text,
        prompt_tokens,
        req.max_tokens,
        req.stream,
        req.stream_options,
    ))
}

pub(crate) fn embeddings(dims: usize, body: &[u8]) -> Response {
    #[derive(Serialize)]
    struct Item {
        object: &'static str,
        index: usize,
        embedding: Vec<f32>,
    }
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Item>,
        model: &'a str,
        usage: EmbedUsage,
    }
    #[derive(Serialize)]
    struct EmbedUsage {
        prompt_tokens: usize,
        total_tokens: usize,
    }
    let req: EmbeddingRequest = match parse(body) {
        Ok(req) => req,
        Err(message) => return bad_request(&message),
    };
    let inputs = req.input.texts();
    let data: Vec<Item> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| Item {
            object: "embedding",
            index,
            embedding: embed(text, dims),
        })
        .collect();
    let tokens = inputs.iter().map(|t| words(t)).sum::<usize>().max(1);
    json(&List {
        object: "list",
        data,
        model: &req.model,
        usage: EmbedUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    })
}

/// A unit-norm vector seeded by an FNV-1a hash of the text and expanded with
/// splitmix64: stable across processes and Rust versions, unlike std hashers.
pub(crate) fn embed(text: &str, dims: usize) -> Vec<f32> {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let raw: Vec<f64> = (0..dims)
        .map(|_| (next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm == 0.0 {
        return raw.iter().map(|_| 0.0).collect();
    }
    raw.iter().map(|x| (x / norm) as f32).collect()
}

/// Streams `generation` as SSE. The in-flight guard rides along until the
/// body ends; if the client goes away first, the stream counts as cancelled.
/// `cut` ends the connection abruptly after the first content chunk.
pub(crate) fn stream(generation: Generation, guard: InFlight, cut: bool) -> Response {
    struct Sse {
        events: std::vec::IntoIter<Bytes>,
        sent: usize,
        content: Range<usize>,
        delay: Duration,
        cut: bool,
        finished: bool,
        guard: InFlight,
    }
    impl Drop for Sse {
        fn drop(&mut self) {
            if !self.finished {
                self.guard.shared().cancel();
            }
        }
    }
    let shared = guard.shared();
    let (events, content) = generation.events(shared, shared.options.chunks, cut);
    let state = Sse {
        events: events.into_iter(),
        sent: 0,
        content,
        delay: shared.options.chunk_delay,
        cut,
        finished: false,
        guard,
    };
    let body = futures::stream::unfold(state, |mut s| async move {
        let Some(event) = s.events.next() else {
            s.finished = true;
            if !s.cut {
                return None;
            }
            // Let hyper flush what was sent, then fail the body so the
            // connection is cut without the terminating chunk.
            tokio::task::yield_now().await;
            s.cut = false;
            let aborted = io::Error::new(io::ErrorKind::ConnectionAborted, "mock: stream cut");
            return Some((Err(aborted), s));
        };
        // Pause between content chunks only.
        if s.sent > s.content.start && s.content.contains(&s.sent) && !s.delay.is_zero() {
            tokio::time::sleep(s.delay).await;
        }
        s.sent += 1;
        Some((Ok::<Bytes, io::Error>(event), s))
    });
    let mut response = respond(StatusCode::OK, "text/event-stream", Body::from_stream(body));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::{embed, split};

    #[test]
    fn split_keeps_every_byte() {
        let text = "  one two  three four five ";
        for chunks in 0..8 {
            let pieces = split(text, chunks);
            assert_eq!(pieces.concat(), text);
            assert_eq!(pieces.len(), chunks.clamp(1, 5));
        }
        assert_eq!(split("a b c d", 2), ["a b ", "c d"]);
        assert!(split("   ", 3).is_empty());
    }

    #[test]
    fn embedding_is_stable() {
        assert_eq!(embed("x", 4), embed("x", 4));
        assert!(embed("", 0).is_empty());
    }
}
