//! The OpenAI wire format as fief rewrites it: what a client may not decide
//! is removed from the request, upstream names and errors are rewritten in
//! the answer, and server-sent events are split without buffering more than
//! one event. Pure.

use serde_json::{Map, Value};

/// Request fields a client might use to claim a tenant, a priority or an
/// identity upstream. Removed; `user` is then set by fief.
const CLIENT_CLAIMS: &[&str] = &[
    "user",
    "metadata",
    "tenant",
    "tenant_id",
    "priority",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "store",
];

/// Rewrites a client's request body for the upstream: its model id, the
/// opaque `user`, usage always reported on a stream (`include_usage`), and
/// nothing the client sent to claim tenancy, priority or identity.
/// Returns whether the client itself asked for usage on the stream.
pub fn upstream_request(body: &mut Map<String, Value>, upstream_model: &str, user: &str) -> bool {
    body.retain(|k, _| {
        let k = k.to_ascii_lowercase();
        !CLIENT_CLAIMS.contains(&k.as_str()) && !k.starts_with("x-") && !k.starts_with("x_")
    });
    body.insert("model".into(), Value::String(upstream_model.into()));
    body.insert("user".into(), Value::String(user.into()));
    let mut client_usage = false;
    if is_stream(body) {
        let options = body
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(o) = options {
            client_usage = o.get("include_usage") == Some(&Value::Bool(true));
            o.insert("include_usage".into(), Value::Bool(true));
        } else {
            *options = serde_json::json!({"include_usage": true});
        }
    }
    client_usage
}

pub fn is_stream(body: &Map<String, Value>) -> bool {
    body.get("stream") == Some(&Value::Bool(true))
}

/// The opaque id sent upstream as `user`: a keyed hash of the tenant
/// incarnation and principal, so upstream logs can tell callers apart but
/// cannot link a principal to its tenant or across tenants.
pub fn opaque_user(
    key: &ring::hmac::Key,
    tenant: &str,
    incarnation: &str,
    principal: &str,
) -> String {
    let mut ctx = ring::hmac::Context::with_key(key);
    for part in [tenant, incarnation, principal] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let tag = ctx.sign();
    format!("fief-{}", hex::encode(&tag.as_ref()[..12]))
}

/// Upstream ids in an answer become the name the tenant used.
pub fn rename_model(answer: &mut Value, name: &str) {
    if let Some(o) = answer.as_object_mut() {
        if o.contains_key("model") {
            o.insert("model".into(), Value::String(name.into()));
        }
        o.remove("system_fingerprint");
    }
}

/// Token counts an answer reports: (prompt, completion).
pub fn reported_usage(answer: &Value) -> Option<(u64, u64)> {
    let u = answer.get("usage")?;
    let prompt = u.get("prompt_tokens")?.as_u64()?;
    let completion = u
        .get("completion_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Some((prompt, completion))
}

/// A rough token count of text when an upstream reports none: about four
/// bytes a token for English, never zero for non-empty text.
pub fn estimate_tokens(text: &str) -> u64 {
    if text.is_empty() {
        0
    } else {
        (text.len() as u64).div_ceil(4)
    }
}

/// All the text a request sends (messages, prompt or input), for estimates.
pub fn request_text(body: &Map<String, Value>) -> String {
    let mut out = String::new();
    let mut push = |v: &Value| collect_text(v, &mut out);
    for key in ["messages", "prompt", "input"] {
        if let Some(v) = body.get(key) {
            push(v);
        }
    }
    out
}

fn collect_text(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push(' ');
        }
        Value::Array(a) => a.iter().for_each(|v| collect_text(v, out)),
        Value::Object(o) => {
            for key in ["content", "text"] {
                if let Some(v) = o.get(key) {
                    collect_text(v, out);
                }
            }
        }
        _ => {}
    }
}

/// The generated text in an answer or a stream chunk (chat or completion).
pub fn answer_text(answer: &Value) -> String {
    let mut out = String::new();
    if let Some(choices) = answer.get("choices").and_then(Value::as_array) {
        for c in choices {
            for v in [
                c.get("message").and_then(|m| m.get("content")),
                c.get("delta").and_then(|m| m.get("content")),
                c.get("text"),
            ]
            .into_iter()
            .flatten()
            {
                if let Some(s) = v.as_str() {
                    out.push_str(s);
                }
            }
        }
    }
    out
}

/// An upstream's error message as a tenant may see it: no URL, host,
/// address or credential-looking token of the upstream, and short.
pub fn scrub(message: &str, secrets: &[&str]) -> String {
    let mut text = message.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(s, "[redacted]");
    }
    let words: Vec<String> = text
        .split(' ')
        .map(|w| {
            let bare = w.trim_matches(|c: char| !c.is_ascii_alphanumeric());
            let lower = bare.to_ascii_lowercase();
            let looks_secret = (lower.starts_with("sk-")
                || lower.starts_with("key=")
                || lower.starts_with("bearer"))
                && bare.len() > 3;
            let looks_address = w.contains("://")
                || bare.split('.').count() == 4
                    && bare
                        .split(['.', ':'])
                        .take(4)
                        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
                || (bare.contains('.')
                    && bare.contains(':')
                    && bare
                        .rsplit(':')
                        .next()
                        .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit())));
            if looks_secret || looks_address || w.contains("key=") {
                "[redacted]".to_owned()
            } else {
                w.to_owned()
            }
        })
        .collect();
    let mut out = words.join(" ");
    if out.len() > 300 {
        let mut end = 300;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

/// The message of an OpenAI-style error body, if any.
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    e.get("message")
        .and_then(Value::as_str)
        .or_else(|| e.as_str())
        .map(str::to_owned)
}

/// Splits a server-sent-event byte stream into events as bytes arrive; only
/// an unfinished event is ever held.
#[derive(Debug, Default)]
pub struct SseSplitter {
    pending: Vec<u8>,
}

/// One event's `data:` payload.
#[derive(Debug, PartialEq, Eq)]
pub enum SseData {
    Json(Vec<u8>),
    Done,
}

impl SseSplitter {
    /// Feeds bytes; returns the data of every event they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseData> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some((end, sep)) = find_event_end(&self.pending) {
            let event: Vec<u8> = self.pending.drain(..end + sep).collect();
            let mut data = Vec::new();
            for line in event[..end].split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if let Some(rest) = line.strip_prefix(b"data:") {
                    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                    if !data.is_empty() {
                        data.push(b'\n');
                    }
                    data.extend_from_slice(rest);
                }
            }
            if data == b"[DONE]" {
                events.push(SseData::Done);
            } else if !data.is_empty() {
                events.push(SseData::Json(data));
            }
        }
        events
    }

    /// Whether bytes of an unfinished event are held.
    pub fn has_pending(&self) -> bool {
        self.pending.iter().any(|b| !b.is_ascii_whitespace())
    }
}

fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// One SSE event holding `value`.
pub fn sse_event(value: &Value) -> Vec<u8> {
    let mut out = b"data: ".to_vec();
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

pub const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn client_claims_never_reach_the_upstream() {
        let mut body = json!({
            "model": "small", "messages": [], "user": "victim", "metadata": {"tenant": "acme"},
            "tenant": "acme", "priority": 0, "X-Tenant-Id": "acme", "x_priority": 1,
            "stream": true, "temperature": 0.5
        })
        .as_object()
        .cloned()
        .unwrap();
        let asked = upstream_request(&mut body, "org/Small-1", "fief-abc");
        assert!(!asked);
        assert_eq!(
            Value::Object(body),
            json!({"model": "org/Small-1", "messages": [], "user": "fief-abc", "stream": true,
                   "temperature": 0.5, "stream_options": {"include_usage": true}})
        );
        let mut asked_for = json!({"stream": true, "stream_options": {"include_usage": true}})
            .as_object()
            .cloned()
            .unwrap();
        assert!(upstream_request(&mut asked_for, "m", "u"));
    }

    #[test]
    fn the_opaque_user_differs_per_tenant_and_principal() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k");
        let a = opaque_user(&key, "acme", "i1", "api-key:1");
        assert_eq!(a, opaque_user(&key, "acme", "i1", "api-key:1"));
        assert_ne!(a, opaque_user(&key, "globex", "i1", "api-key:1"));
        assert_ne!(a, opaque_user(&key, "acme", "i2", "api-key:1"));
        assert_ne!(a, opaque_user(&key, "acme", "i1", "api-key:2"));
        assert!(!a.contains("acme"));
    }

    #[test]
    fn scrubbed_errors_hold_no_upstream_detail() {
        let m = "internal upstream failure at http://10.9.8.7:8000 key=sk-upstream-secret (host gpu-7.internal:8000, 10.1.2.3)";
        let s = scrub(m, &["gpu-7.internal"]);
        for leak in ["10.9.8.7", "sk-upstream", "gpu-7", "10.1.2.3", "http"] {
            assert!(!s.contains(leak), "{s}");
        }
        assert!(s.starts_with("internal upstream failure"));
        assert_eq!(
            scrub("context length exceeded: 9000 > 8192", &[]),
            "context length exceeded: 9000 > 8192"
        );
    }

    #[test]
    fn events_split_as_they_arrive() {
        let mut s = SseSplitter::default();
        assert!(s.push(b"data: {\"a\"").is_empty());
        assert!(s.has_pending());
        assert_eq!(
            s.push(b":1}\n\ndata: {\"b\":2}\r\n\r\ndata: [DONE]\n\n"),
            vec![
                SseData::Json(b"{\"a\":1}".to_vec()),
                SseData::Json(b"{\"b\":2}".to_vec()),
                SseData::Done
            ]
        );
        assert!(!s.has_pending());
    }

    #[test]
    fn text_is_collected_for_estimates() {
        let body = json!({"messages": [{"role": "user", "content": "hello there"}, {"role": "user", "content": [{"type": "text", "text": "again"}]}]});
        let text = request_text(body.as_object().unwrap());
        assert!(text.contains("hello there") && text.contains("again"));
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
        let chunk = json!({"choices": [{"delta": {"content": "hi"}}]});
        assert_eq!(answer_text(&chunk), "hi");
    }
}
