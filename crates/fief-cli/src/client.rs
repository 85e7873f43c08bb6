//! A small HTTP client for the CLI: the admin plane with the admin token, the
//! data plane with a tenant key. Error bodies are shown as the server wrote them.

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error(
        "cannot reach {url}: {}; is `fief serve` running there? Another address: set {hint}",
        root_cause(source)
    )]
    Connect {
        url: String,
        hint: &'static str,
        source: reqwest::Error,
    },
    /// The server's own error: its code, message and request id (what an
    /// operator greps the server log for).
    #[error("{code}: {message} (HTTP {}, request id {})", status.as_u16(), request_id.as_deref().unwrap_or("none"))]
    Api {
        status: StatusCode,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    #[error("unexpected answer (HTTP {}, request id {}): {body}", status.as_u16(), request_id.as_deref().unwrap_or("none"))]
    Unexpected {
        status: StatusCode,
        body: String,
        request_id: Option<String>,
    },
}

impl ClientError {
    /// The HTTP status of the server's answer, if there was one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } | ClientError::Unexpected { status, .. } => {
                Some(*status)
            }
            ClientError::Usage(_) | ClientError::Connect { .. } => None,
        }
    }
}

/// The innermost cause ("Connection refused (os error 111)"), not
/// reqwest's "error sending request for url".
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Which plane a client talks to, for the hint when it cannot be reached.
#[derive(Clone, Copy)]
pub enum Plane {
    Data,
    Admin,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    plane: Plane,
}

impl Client {
    pub fn new(base: &str, token: &str, plane: Plane) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            plane,
        }
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends and decodes a JSON answer (`Value::Null` for an empty one).
    pub async fn send(&self, req: RequestBuilder) -> Result<(StatusCode, Value), ClientError> {
        let resp = self.send_raw(req).await?;
        let status = resp.status();
        let text = resp.text().await.map_err(|source| self.connect(source))?;
        Ok((status, decode(&text)))
    }

    /// Sends and hands back a successful answer unread (a stream); a
    /// non-2xx answer becomes the error the server wrote.
    pub async fn send_raw(&self, req: RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|source| self.connect(source))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let header_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.map_err(|source| self.connect(source))?;
        let body = decode(&text);
        match body.get("error") {
            Some(err) => Err(ClientError::Api {
                status,
                code: err["code"].as_str().unwrap_or("?").to_owned(),
                message: err["message"].as_str().unwrap_or("").to_owned(),
                request_id: err["request_id"].as_str().map(str::to_owned).or(header_id),
            }),
            None => Err(ClientError::Unexpected {
                status,
                body: body.to_string(),
                request_id: header_id,
            }),
        }
    }

    pub fn connect(&self, source: reqwest::Error) -> ClientError {
        ClientError::Connect {
            url: self.base.clone(),
            hint: match self.plane {
                Plane::Data => "FIEF_DATA_URL (or --data-url)",
                Plane::Admin => "FIEF_ADMIN_URL (or --admin-url)",
            },
            source,
        }
    }
}

/// One path segment, percent-encoded: names and keys may hold `/`, spaces
/// and other reserved characters.
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn decode(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
    }
}
