//! A small HTTP client for the CLI: the admin plane with the admin token, the
//! data plane with a tenant key. Error bodies are shown as the server wrote them.

use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach {url}: {source}")]
    Connect { url: String, source: reqwest::Error },
    #[error("{status} {code}: {message}")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("unexpected response ({status}): {body}")]
    Unexpected { status: StatusCode, body: String },
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
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
        let text = resp.text().await.map_err(|source| self.connect(source))?;
        let body = decode(&text);
        match body.get("error") {
            Some(err) => Err(ClientError::Api {
                status,
                code: err["code"].as_str().unwrap_or("?").to_owned(),
                message: err["message"].as_str().unwrap_or("").to_owned(),
            }),
            None => Err(ClientError::Unexpected {
                status,
                body: body.to_string(),
            }),
        }
    }

    pub fn connect(&self, source: reqwest::Error) -> ClientError {
        ClientError::Connect {
            url: self.base.clone(),
            source,
        }
    }
}

fn decode(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
    }
}
