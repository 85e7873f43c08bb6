//! AWS Bedrock Runtime `Converse` / `ConverseStream` on top of an OpenAI
//! chat-completions upstream, and (`agent`) Bedrock agent-runtime's
//! knowledge-base operations on top of fief's knowledge bases.
//!
//! Pure and synchronous: the HTTP layer hands in parsed JSON and gets back
//! JSON or already-encoded `application/vnd.amazon.eventstream` frames.
//! Shapes follow botocore's `bedrock-runtime/2023-09-30/service-2.json`;
//! framing follows botocore's `eventstream.py`.

use serde_json::{json, Map, Value};

/// Bedrock agent-runtime's `Retrieve` and `RetrieveAndGenerate`.
pub mod agent;

/// Content type of a `ConverseStream` response body.
pub const EVENT_STREAM_CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

#[derive(Debug, thiserror::Error)]
pub enum BedrockError {
    /// Message suitable for a `ValidationException`.
    #[error("{0}")]
    Validation(String),
}

fn invalid(message: impl Into<String>) -> BedrockError {
    BedrockError::Validation(message.into())
}

// ---------------------------------------------------------------------------
// Request: Converse -> chat completions
// ---------------------------------------------------------------------------

/// Converse request body → OpenAI chat-completions request body.
///
/// Anything we cannot honour is rejected rather than dropped, so a client
/// never gets an answer to a different question than the one it asked.
pub fn chat_request(converse: &Value, model: &str, stream: bool) -> Result<Value, BedrockError> {
    let body = converse
        .as_object()
        .ok_or_else(|| invalid("the request body must be a JSON object"))?;
    for key in body.keys() {
        match key.as_str() {
            "messages" | "system" | "inferenceConfig" => {}
            // Harmless to ignore. requestMetadata is the caller's own tagging
            // and must never reach the upstream.
            "additionalModelResponseFieldPaths" | "requestMetadata" => {}
            "additionalModelRequestFields"
            | "toolConfig"
            | "guardrailConfig"
            | "promptVariables"
            | "performanceConfig" => {
                return Err(invalid(format!("{key} is not supported by this endpoint")))
            }
            other => return Err(invalid(format!("unknown request field: {other}"))),
        }
    }

    let mut messages = Vec::new();
    if let Some(system) = present(body, "system") {
        let text = block_text(system, "system")?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let turns = present(body, "messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("messages must be a non-empty list"))?;
    for (i, turn) in turns.iter().enumerate() {
        messages.push(message(turn, i)?);
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    out.insert("messages".into(), Value::Array(messages));
    if let Some(config) = present(body, "inferenceConfig") {
        inference_config(config, &mut out)?;
    }
    if stream {
        out.insert("stream".into(), Value::Bool(true));
        // Without this the upstream never reports usage, and the final
        // `metadata` event would carry zeros.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(out))
}

/// Treats an explicit `null` like an absent member, as botocore would.
fn present<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|v| !v.is_null())
}

fn message(turn: &Value, index: usize) -> Result<Value, BedrockError> {
    let turn = turn
        .as_object()
        .ok_or_else(|| invalid(format!("messages[{index}] must be an object")))?;
    if let Some(other) = turn.keys().find(|k| *k != "role" && *k != "content") {
        return Err(invalid(format!(
            "unknown field in messages[{index}]: {other}"
        )));
    }
    let role = match turn.get("role").and_then(Value::as_str) {
        Some(role @ ("user" | "assistant")) => role,
        _ => {
            return Err(invalid(format!(
                "messages[{index}].role must be \"user\" or \"assistant\""
            )))
        }
    };
    let what = format!("messages[{index}].content");
    let content = turn
        .get("content")
        .ok_or_else(|| invalid(format!("{what} is required")))?;
    let text = block_text(content, &what)?;
    if text.is_empty() {
        return Err(invalid(format!(
            "{what} must contain a non-empty text block"
        )));
    }
    Ok(json!({"role": role, "content": text}))
}

/// Joins the text of a list of (union) content blocks.
fn block_text(blocks: &Value, what: &str) -> Result<String, BedrockError> {
    let blocks = blocks
        .as_array()
        .ok_or_else(|| invalid(format!("{what} must be a list of content blocks")))?;
    let mut texts = Vec::with_capacity(blocks.len());
    for block in blocks {
        let member = block
            .as_object()
            .filter(|b| b.len() == 1)
            .and_then(|b| b.iter().next());
        let Some((kind, value)) = member else {
            return Err(invalid(format!(
                "each block in {what} must set exactly one member"
            )));
        };
        match kind.as_str() {
            "text" => texts.push(
                value
                    .as_str()
                    .ok_or_else(|| invalid(format!("text in {what} must be a string")))?,
            ),
            // A prompt-cache hint does not change the answer, so dropping it is safe.
            "cachePoint" => {}
            other => {
                return Err(invalid(format!(
                    "{other} content blocks are not supported by this endpoint (in {what}); only text is"
                )))
            }
        }
    }
    Ok(texts.join("\n"))
}

fn inference_config(config: &Value, out: &mut Map<String, Value>) -> Result<(), BedrockError> {
    let config = config
        .as_object()
        .ok_or_else(|| invalid("inferenceConfig must be an object"))?;
    for (key, value) in config.iter().filter(|(_, v)| !v.is_null()) {
        let number = |name: &str| {
            value
                .as_f64()
                .map(|_| value.clone())
                .ok_or_else(|| invalid(format!("inferenceConfig.{name} must be a number")))
        };
        match key.as_str() {
            "maxTokens" => {
                let n = value.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                    invalid("inferenceConfig.maxTokens must be a positive integer")
                })?;
                out.insert("max_tokens".into(), n.into());
            }
            "temperature" => {
                out.insert("temperature".into(), number("temperature")?);
            }
            "topP" => {
                out.insert("top_p".into(), number("topP")?);
            }
            "stopSequences" => {
                let stops = value
                    .as_array()
                    .filter(|s| s.iter().all(Value::is_string))
                    .ok_or_else(|| {
                        invalid("inferenceConfig.stopSequences must be a list of strings")
                    })?;
                if !stops.is_empty() {
                    out.insert("stop".into(), Value::Array(stops.clone()));
                }
            }
            other => {
                return Err(invalid(format!(
                    "unknown field in inferenceConfig: {other}"
                )))
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Response: chat completion -> Converse
// ---------------------------------------------------------------------------

/// OpenAI `chat.completion` → Converse response JSON.
///
/// An error here means the upstream reply was malformed, not the client's
/// request: answer it as an `InternalServerException`.
pub fn converse_response(chat: &Value, latency_ms: u64) -> Result<Value, BedrockError> {
    let choice = first_choice(chat).ok_or_else(|| invalid("upstream response has no choices"))?;
    let message = choice
        .get("message")
        .ok_or_else(|| invalid("upstream response choice has no message"))?;
    let content = match message.get("content") {
        Some(Value::String(text)) => vec![json!({"text": text})],
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(invalid("upstream message content is not a string")),
    };
    Ok(json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason(choice.get("finish_reason").and_then(Value::as_str)),
        "usage": usage(chat.get("usage")),
        "metrics": {"latencyMs": latency_ms},
    }))
}

/// The choice with index 0 (we only ever ask for one).
fn first_choice(chat: &Value) -> Option<&Value> {
    chat.get("choices")?
        .as_array()?
        .iter()
        .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
}

fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("content_filter") => "content_filtered",
        Some("tool_calls") | Some("function_call") => "tool_use",
        // The upstream does not say whether a stop sequence or a natural end
        // stopped it, so "stop" reads as end_turn.
        _ => "end_turn",
    }
}

fn usage(usage: Option<&Value>) -> Value {
    let field = |name: &str| usage.and_then(|u| u.get(name)).and_then(Value::as_u64);
    let input = field("prompt_tokens").unwrap_or(0);
    let output = field("completion_tokens").unwrap_or(0);
    let total = field("total_tokens").unwrap_or(input.saturating_add(output));
    json!({"inputTokens": input, "outputTokens": output, "totalTokens": total})
}

// ---------------------------------------------------------------------------
// Streaming: chat.completion.chunk -> ConverseStream events
// ---------------------------------------------------------------------------

/// Stateful translator of OpenAI `chat.completion.chunk` values into encoded
/// event-stream frames, in the order botocore's Converse stream expects:
/// `messageStart`, `contentBlockDelta`*, `contentBlockStop`, `messageStop`,
/// `metadata`.
#[derive(Debug, Default)]
pub struct StreamTranslator {
    started: bool,
    stopped: bool,
    finished: bool,
    usage: Option<Value>,
}

impl StreamTranslator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed one parsed chunk; returns the frames to send now.
    pub fn push(&mut self, chunk: &Value) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        // Usage arrives in a trailing chunk with no choices (or, for some
        // upstreams, alongside the finish reason); keep it for `finish`.
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        if self.stopped || self.finished {
            return frames;
        }
        let Some(choice) = first_choice(chunk) else {
            return frames;
        };
        let delta = choice.get("delta");
        let text = delta.and_then(|d| d.get("content")).and_then(Value::as_str);
        let role = delta
            .and_then(|d| d.get("role"))
            .is_some_and(|r| !r.is_null());
        if role || text.is_some() {
            self.start(&mut frames);
        }
        if let Some(text) = text.filter(|t| !t.is_empty()) {
            frames.push(event_frame(
                "contentBlockDelta",
                &json!({"contentBlockIndex": 0, "delta": {"text": text}}),
            ));
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop(&mut frames, stop_reason(Some(reason)));
        }
        frames
    }

    /// End of the upstream stream: any missing start/stop events, then the
    /// `metadata` event. Later calls return nothing.
    pub fn finish(&mut self, latency_ms: u64) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        if self.finished {
            return frames;
        }
        self.finished = true;
        if !self.stopped {
            self.stop(&mut frames, "end_turn");
        }
        frames.push(event_frame(
            "metadata",
            &json!({"usage": usage(self.usage.as_ref()), "metrics": {"latencyMs": latency_ms}}),
        ));
        frames
    }

    fn start(&mut self, frames: &mut Vec<Vec<u8>>) {
        if !self.started {
            self.started = true;
            frames.push(event_frame("messageStart", &json!({"role": "assistant"})));
        }
    }

    fn stop(&mut self, frames: &mut Vec<Vec<u8>>, reason: &str) {
        self.start(frames);
        self.stopped = true;
        frames.push(event_frame(
            "contentBlockStop",
            &json!({"contentBlockIndex": 0}),
        ));
        frames.push(event_frame("messageStop", &json!({"stopReason": reason})));
    }
}

// ---------------------------------------------------------------------------
// Event-stream framing
// ---------------------------------------------------------------------------

const PRELUDE_LEN: usize = 12;
const CRC_LEN: usize = 4;
const HEADER_TYPE_STRING: u8 = 7;
// aws-c-event-stream caps header names at INT8_MAX.
const MAX_HEADER_NAME: usize = 127;

/// One event frame with `:event-type`, `:content-type: application/json` and
/// `:message-type: event`, carrying `payload` as JSON.
pub fn event_frame(event_type: &str, payload: &Value) -> Vec<u8> {
    encode_frame(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

/// One exception frame; botocore raises it as `EventStreamError` with
/// `Error.Code` = `exception_type`. Only the ConverseStream exception members
/// are recognised: `internalServerException`, `modelStreamErrorException`,
/// `validationException`, `throttlingException`, `serviceUnavailableException`.
pub fn exception_frame(exception_type: &str, message: &str) -> Vec<u8> {
    encode_frame(
        &[
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        json!({"message": message}).to_string().as_bytes(),
    )
}

/// Encodes one message with string-valued headers.
fn encode_frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut header_bytes = Vec::new();
    for (name, value) in headers {
        let name = truncate(name, MAX_HEADER_NAME);
        let value = truncate(value, usize::from(u16::MAX));
        header_bytes.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        header_bytes.extend_from_slice(name.as_bytes());
        header_bytes.push(HEADER_TYPE_STRING);
        header_bytes
            .extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
        header_bytes.extend_from_slice(value.as_bytes());
    }
    let total = PRELUDE_LEN + header_bytes.len() + payload.len() + CRC_LEN;
    let mut out = Vec::with_capacity(total);
    // Frames are far below 4 GiB (botocore rejects payloads over 16 MiB anyway).
    out.extend_from_slice(&u32::try_from(total).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(
        &u32::try_from(header_bytes.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(payload);
    let message_crc = crc32fast::hash(&out);
    out.extend_from_slice(&message_crc.to_be_bytes());
    out
}

/// Cuts `s` to at most `max` bytes without splitting a character.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One decoded event-stream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a buffer of whole, concatenated frames, checking both CRCs.
/// Only string-valued headers are supported (all this crate emits).
pub fn decode_frames(mut bytes: &[u8]) -> Result<Vec<Frame>, BedrockError> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let (prelude, _) = take(bytes, PRELUDE_LEN)?;
        let total = be_len(&prelude[0..4]);
        let headers_len = be_len(&prelude[4..8]);
        if crc32fast::hash(&prelude[0..8]) != be_u32(&prelude[8..12]) {
            return Err(invalid("event-stream prelude checksum mismatch"));
        }
        if total < headers_len.saturating_add(PRELUDE_LEN + CRC_LEN) {
            return Err(invalid("event-stream frame lengths are inconsistent"));
        }
        let (frame, rest) = take(bytes, total)?;
        let (body, crc) = frame.split_at(total - CRC_LEN);
        if crc32fast::hash(body) != be_u32(crc) {
            return Err(invalid("event-stream message checksum mismatch"));
        }
        let (headers, payload) = body[PRELUDE_LEN..].split_at(headers_len);
        frames.push(Frame {
            headers: decode_headers(headers)?,
            payload: payload.to_vec(),
        });
        bytes = rest;
    }
    Ok(frames)
}

fn decode_headers(mut bytes: &[u8]) -> Result<Vec<(String, String)>, BedrockError> {
    let mut headers = Vec::new();
    while let Some((&name_len, rest)) = bytes.split_first() {
        let (name, rest) = take(rest, usize::from(name_len))?;
        let (kind, rest) = take(rest, 1)?;
        if kind[0] != HEADER_TYPE_STRING {
            return Err(invalid(format!(
                "unsupported event-stream header type {}",
                kind[0]
            )));
        }
        let (len, rest) = take(rest, 2)?;
        let (value, rest) = take(rest, usize::from(u16::from_be_bytes([len[0], len[1]])))?;
        headers.push((utf8(name)?, utf8(value)?));
        bytes = rest;
    }
    Ok(headers)
}

fn take(bytes: &[u8], n: usize) -> Result<(&[u8], &[u8]), BedrockError> {
    if bytes.len() < n {
        return Err(invalid("truncated event-stream frame"));
    }
    Ok(bytes.split_at(n))
}

/// Callers pass exactly four bytes.
fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_len(b: &[u8]) -> usize {
    usize::try_from(be_u32(b)).unwrap_or(usize::MAX)
}

fn utf8(bytes: &[u8]) -> Result<String, BedrockError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| invalid("event-stream header is not UTF-8"))
}

// ---------------------------------------------------------------------------
// Non-streaming errors
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Validation,
    AccessDenied,
    NotFound,
    Throttling,
    ServiceUnavailable,
    Internal,
    ModelTimeout,
}

impl ErrorKind {
    /// The `:exception-type` to use once a stream has started: the closest
    /// member of ConverseStreamOutput, since botocore gives any other name an
    /// empty error code.
    pub fn stream_exception_type(self) -> &'static str {
        match self {
            ErrorKind::Validation => "validationException",
            ErrorKind::Throttling => "throttlingException",
            ErrorKind::ServiceUnavailable => "serviceUnavailableException",
            ErrorKind::ModelTimeout => "modelStreamErrorException",
            ErrorKind::AccessDenied | ErrorKind::NotFound | ErrorKind::Internal => {
                "internalServerException"
            }
        }
    }
}

/// `(status, x-amzn-ErrorType value, JSON body)` for a non-streaming error.
///
/// botocore's rest-json parser takes the code from `__type` in the body and
/// lets the `x-amzn-ErrorType` header override it; sending both keeps
/// `ClientError.response["Error"]["Code"]` right even if a proxy drops the
/// header.
pub fn error_response(kind: ErrorKind, message: &str) -> (u16, &'static str, Value) {
    let (status, code) = match kind {
        ErrorKind::Validation => (400, "ValidationException"),
        ErrorKind::AccessDenied => (403, "AccessDeniedException"),
        ErrorKind::NotFound => (404, "ResourceNotFoundException"),
        ErrorKind::Throttling => (429, "ThrottlingException"),
        ErrorKind::ServiceUnavailable => (503, "ServiceUnavailableException"),
        ErrorKind::Internal => (500, "InternalServerException"),
        ErrorKind::ModelTimeout => (408, "ModelTimeoutException"),
    };
    (status, code, json!({"__type": code, "message": message}))
}

#[cfg(test)]
mod tests;
