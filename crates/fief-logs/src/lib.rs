//! Private invocation logs. Each tenant's record of its own invocations
//! (prompts and answers included) is sealed with the tenant's data key by
//! the store. This crate holds the parts that need no database:
//!
//! - what a record's sealed body holds, with redaction before sealing and a
//!   size cap;
//! - a tenant's settings (content on or off, ONNX inputs and outputs,
//!   retention, redaction patterns);
//! - sinks (`sink`): the tenant's own webhook or bucket, how a batch is
//!   signed, named and throttled;
//! - delivery (`deliver`): the one module here that does I/O.

pub mod deliver;
pub mod sink;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{0}")]
    Invalid(String),
    #[error("delivery failed: {0}")]
    Delivery(String),
}

pub type Result<T> = std::result::Result<T, LogError>;

/// The one stream every invocation goes to today (the seal binds the name,
/// so more streams can follow without a format change).
pub const STREAM: &str = "invocations";

/// What replaces a redacted match.
pub const REDACTED: &str = "[REDACTED]";

const MAX_PATTERNS: usize = 32;
const MAX_PATTERN_LEN: usize = 512;

/// A tenant's settings, as it writes them (`PUT /api/v1/log-settings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Off: records keep their metadata and usage, not the request or answer.
    #[serde(default = "yes")]
    pub content: bool,
    /// ONNX invocations' inputs and outputs (off unless the tenant asks).
    #[serde(default)]
    pub onnx_io: bool,
    /// Absent: the deployment's default.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// Regular expressions; every match in a logged string is replaced
    /// before the record is sealed.
    #[serde(default)]
    pub redact: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            content: true,
            onnx_io: false,
            retention_days: None,
            redact: Vec::new(),
        }
    }
}

/// Settings checked and compiled.
#[derive(Debug, Clone)]
pub struct Policy {
    pub settings: Settings,
    pub retention_days: u32,
    redact: Vec<Regex>,
}

impl Policy {
    pub fn new(settings: Settings, default_retention: u32, max_retention: u32) -> Result<Policy> {
        let retention_days = settings.retention_days.unwrap_or(default_retention);
        if !(1..=max_retention).contains(&retention_days) {
            return Err(LogError::Invalid(format!(
                "retention_days must be between 1 and {max_retention}"
            )));
        }
        if settings.redact.len() > MAX_PATTERNS {
            return Err(LogError::Invalid(format!(
                "at most {MAX_PATTERNS} redaction patterns"
            )));
        }
        let mut redact = Vec::with_capacity(settings.redact.len());
        for (i, p) in settings.redact.iter().enumerate() {
            if p.is_empty() || p.len() > MAX_PATTERN_LEN {
                return Err(LogError::Invalid(format!(
                    "redact[{i}] must be 1 to {MAX_PATTERN_LEN} characters"
                )));
            }
            let re = regex::RegexBuilder::new(p)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    LogError::Invalid(format!("redact[{i}] is not a valid pattern: {e}"))
                })?;
            redact.push(re);
        }
        Ok(Policy {
            settings,
            retention_days,
            redact,
        })
    }

    /// Replaces every match of every pattern in every string of `v`.
    pub fn redact(&self, v: &mut Value) {
        if self.redact.is_empty() {
            return;
        }
        match v {
            Value::String(s) => {
                for re in &self.redact {
                    if re.is_match(s) {
                        *s = re.replace_all(s, REDACTED).into_owned();
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.redact(x)),
            Value::Object(o) => o.values_mut().for_each(|x| self.redact(x)),
            _ => {}
        }
    }

    /// The sealed body of one record: its usage, and (when content logging
    /// is on and there is content) the request and answer, redacted, cut
    /// to `max_bytes`.
    pub fn body(&self, usage: Value, content: Option<Content>, max_bytes: usize) -> Vec<u8> {
        let mut body = Map::new();
        body.insert("usage".into(), usage);
        if let Some(c) = content.filter(|_| self.settings.content) {
            let mut request = c.request;
            let mut response = c.response;
            self.redact(&mut request);
            self.redact(&mut response);
            body.insert("request".into(), request);
            body.insert("response".into(), response);
        }
        let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
        if bytes.len() > max_bytes {
            // The head of the serialised content, on a character boundary,
            // so the tenant still sees what was asked.
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let mut cut = max_bytes / 2;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let truncated = json!({
                "usage": body.get("usage"),
                "truncated": {"bytes": bytes.len(), "head": &text[..cut]},
            });
            bytes = serde_json::to_vec(&truncated).unwrap_or_default();
        }
        bytes
    }
}

/// A record's body without content (its tenant's settings unknown).
pub fn usage_only(usage: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({ "usage": usage })).unwrap_or_default()
}

/// What an invocation asked and answered.
#[derive(Debug, Clone)]
pub struct Content {
    pub request: Value,
    pub response: Value,
}

/// An embeddings answer as logged: the vectors' count and size, not the
/// vectors (they are derived from the logged input, and large).
pub fn summarize_embeddings(answer: &Value) -> Value {
    let data = answer.get("data").and_then(Value::as_array);
    let dims = data
        .and_then(|d| d.first())
        .and_then(|e| e.get("embedding"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    json!({
        "model": answer.get("model"),
        "vectors": data.map_or(0, Vec::len),
        "dimensions": dims,
        "usage": answer.get("usage"),
    })
}

/// One record as it is stored: metadata in clear (what a query filters on,
/// the same names the operator's usage view shows), the body sealed.
#[derive(Debug, Clone)]
pub struct Entry {
    pub request_id: String,
    pub at_ms: i64,
    pub kind: String,
    pub model: String,
    pub principal: String,
    /// [`Policy::body`]'s bytes, sealed by the store.
    pub body: Vec<u8>,
}

/// One record read back, opened.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub seq: i64,
    pub at: String,
    pub request_id: String,
    pub kind: String,
    pub model: String,
    pub principal: String,
    #[serde(flatten)]
    pub body: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(redact: &[&str]) -> Policy {
        Policy::new(
            Settings {
                redact: redact.iter().map(|s| s.to_string()).collect(),
                ..Settings::default()
            },
            30,
            365,
        )
        .unwrap()
    }

    #[test]
    fn redaction_reaches_every_string_before_the_body_is_built() {
        let p = policy(&[r"\d{3}-\d{2}-\d{4}", "secret"]);
        let body = p.body(
            json!({"prompt_tokens": 3}),
            Some(Content {
                request: json!({"messages": [{"content": "ssn 123-45-6789 and a secret"}]}),
                response: json!({"choices": [{"text": "ok 999-99-9999"}]}),
            }),
            1 << 20,
        );
        let text = String::from_utf8(body).unwrap();
        assert!(!text.contains("123-45-6789") && !text.contains("secret"));
        assert!(!text.contains("999-99-9999"));
        assert_eq!(text.matches(REDACTED).count(), 3);
        assert!(text.contains("\"prompt_tokens\":3"));
    }

    #[test]
    fn content_off_keeps_usage_only() {
        let p = Policy::new(
            Settings {
                content: false,
                ..Settings::default()
            },
            30,
            365,
        )
        .unwrap();
        let body = p.body(
            json!({"n": 1}),
            Some(Content {
                request: json!("hello"),
                response: json!("world"),
            }),
            1 << 20,
        );
        assert_eq!(String::from_utf8(body).unwrap(), r#"{"usage":{"n":1}}"#);
    }

    #[test]
    fn big_bodies_are_cut_on_a_character_boundary() {
        let p = policy(&[]);
        let body = p.body(
            json!({}),
            Some(Content {
                request: json!("é".repeat(5000)),
                response: json!(null),
            }),
            2048,
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["truncated"]["bytes"].as_u64().unwrap() > 10_000);
        assert!(v.get("request").is_none());
        assert!(body.len() < 2048);
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let bad = |s: Settings| Policy::new(s, 30, 365).unwrap_err().to_string();
        assert!(bad(Settings {
            redact: vec!["(".into()],
            ..Settings::default()
        })
        .contains("redact[0]"));
        assert!(bad(Settings {
            retention_days: Some(0),
            ..Settings::default()
        })
        .contains("retention_days"));
        assert!(bad(Settings {
            retention_days: Some(366),
            ..Settings::default()
        })
        .contains("365"));
        let parsed: std::result::Result<Settings, _> = serde_json::from_str(r#"{"contnet": true}"#);
        assert!(parsed.is_err());
    }

    #[test]
    fn embeddings_are_logged_as_their_shape() {
        let s = summarize_embeddings(&json!({
            "model": "e", "data": [{"embedding": [0.1, 0.2, 0.3]}, {"embedding": [0.0, 0.0, 1.0]}],
        }));
        assert_eq!(s["vectors"], 2);
        assert_eq!(s["dimensions"], 3);
    }
}
