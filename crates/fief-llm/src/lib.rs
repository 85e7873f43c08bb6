//! Foundation-model routing: the catalog of models the upstreams serve
//! (`catalog.rs`), the choice of deployment with retries, rest and probe
//! (`router.rs`), the rewriting of requests and answers (`wire.rs`), the
//! usage record (`usage.rs`) and the upstream HTTP(S) client (here). It
//! knows nothing of fief's HTTP surface or of Cedar: the server decides
//! which models a caller may use and hands them over in order.

pub mod catalog;
pub mod metrics;
pub mod router;
pub mod usage;
pub mod wire;

use std::time::{Duration, Instant};

use bytes::Bytes;
use fief_config::LlmConfig;
use fief_core::TenantId;
use fief_quota::fair::FairPermit;
use serde_json::{Map, Value};

pub use catalog::{Allow, Catalog, ModelId, UpstreamId};
pub use usage::{Counted, Usage};

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("upstream {upstream}: {message}")]
    Setup { upstream: String, message: String },
}

/// Why no deployment answered. Messages are safe for tenants.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the model is busy upstream; retry later")]
    RateLimited,
    #[error("the model's upstream did not answer in time")]
    Timeout,
    #[error("the model's upstream failed: {0}")]
    Failed(String),
    #[error("every deployment of the model is resting after failures; retry later")]
    Resting,
}

struct UpstreamClient {
    http: reqwest::Client,
    /// Base URL without a trailing slash.
    base: String,
    key: Option<String>,
    /// Host (and credential) text scrubbed from every error message.
    secrets: Vec<String>,
}

/// The deployment's upstreams and their live state.
pub struct Llm {
    pub catalog: Catalog,
    router: router::Router,
    clients: Vec<UpstreamClient>,
    max_retries: usize,
    pub max_output_tokens: u64,
    user_key: ring::hmac::Key,
    pub metrics: metrics::LlmMetrics,
}

/// An upstream's answer, with its concurrency slot held until dropped.
pub struct Sent {
    pub model: ModelId,
    pub upstream: UpstreamId,
    /// Deployments that failed before this one answered.
    pub retries: u32,
    pub status: u16,
    pub response: reqwest::Response,
    /// A stream's first bytes, read before answering so a failure there
    /// could still be retried.
    pub first: Option<Bytes>,
    pub started: Instant,
    slot: Slot,
}

struct Slot {
    permit: FairPermit,
    _outstanding: router::Outstanding,
}

/// A tenant's claim on pooled upstream slots (fair queueing, `fief-quota`):
/// its weight, and the service a call is charged when it starts (its prompt
/// tokens); [`Sent::served`] corrects it to prompt + 2 × completion tokens.
#[derive(Debug, Clone, Copy)]
pub struct Share {
    pub weight: f64,
    pub estimate: f64,
}

impl Sent {
    /// The service this call gave, once known (prompt + 2 × completion
    /// tokens, as the Virtual Token Counter counts it).
    pub fn served(&mut self, prompt: u64, completion: u64) {
        self.slot
            .permit
            .served(prompt as f64 + 2.0 * completion as f64);
    }
    /// Reads the whole (non-streamed) body, keeping the slot.
    pub async fn body(&mut self) -> reqwest::Result<Bytes> {
        let mut out = Vec::new();
        while let Some(chunk) = self.response.chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }
    /// How long it waited for an upstream slot.
    pub fn queued(&self) -> Duration {
        self.slot.permit.waited()
    }
}

impl Llm {
    /// `env` reads the variables named by `api_key_env`; `user_key` keys the
    /// opaque `user` ids.
    /// `scheduling`: how pooled upstreams hand out their slots (a dedicated
    /// upstream's are first come, first served).
    pub fn new(
        config: &LlmConfig,
        env: impl Fn(&str) -> Option<String>,
        user_key: [u8; 32],
        scheduling: fief_config::Scheduling,
    ) -> Result<Self, LlmError> {
        let mut clients = Vec::new();
        for u in &config.upstreams {
            let setup = |message: String| LlmError::Setup {
                upstream: u.name.clone(),
                message,
            };
            let key = match &u.api_key_env {
                Some(var) => Some(env(var).ok_or_else(|| setup(format!("{var} is not set")))?),
                None => None,
            };
            let http = fief_http::client(u.ca_file.as_deref(), Duration::from_secs(u.timeout_secs))
                .map_err(setup)?;
            let base = u.url.trim_end_matches('/').to_owned();
            let host = reqwest::Url::parse(&base)
                .ok()
                .and_then(|url| url.host_str().map(str::to_owned))
                .unwrap_or_default();
            let mut secrets = vec![base.clone(), host];
            secrets.extend(key.clone());
            clients.push(UpstreamClient {
                http,
                base,
                key,
                secrets,
            });
        }
        let limits: Vec<_> = config
            .upstreams
            .iter()
            .map(|u| {
                let mode = if u.exclusive {
                    fief_config::Scheduling::Fifo
                } else {
                    scheduling
                };
                (u.max_concurrency, mode)
            })
            .collect();
        let catalog = Catalog::new(config);
        let metrics = metrics::LlmMetrics::new(&catalog);
        Ok(Self {
            router: router::Router::new(
                &limits,
                config.cooldown_after,
                Duration::from_secs(config.cooldown_secs),
            ),
            catalog,
            clients,
            max_retries: config.max_retries,
            max_output_tokens: config.max_output_tokens,
            user_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &user_key),
            metrics,
        })
    }

    pub fn user_id(&self, tenant: &str, incarnation: &str, principal: &str) -> String {
        wire::opaque_user(&self.user_key, tenant, incarnation, principal)
    }

    pub fn upstream_name(&self, u: UpstreamId) -> &str {
        &self.catalog.upstream(u).name
    }

    /// Scrubs an upstream's error text of that upstream's URL, host and key.
    pub fn scrub(&self, u: UpstreamId, message: &str) -> String {
        let secrets: Vec<&str> = self.clients[u.0]
            .secrets
            .iter()
            .map(String::as_str)
            .collect();
        wire::scrub(message, &secrets)
    }

    /// Sends `body` (already rewritten by [`wire::upstream_request`], whose
    /// `model` is replaced per deployment) to `path` (`chat/completions`,
    /// `completions`, `embeddings`) of a deployment of the first of
    /// `models` that answers: connect errors, timeouts, 5xx and 429 move on
    /// to another deployment (at most `max_retries` more), then to the next
    /// model (the caller's authorised fallbacks). A 4xx other than 429 is
    /// the client's and comes back as it is.
    pub async fn send(
        &self,
        models: &[ModelId],
        tenant: &TenantId,
        share: Share,
        path: &str,
        body: &Map<String, Value>,
        stream: bool,
    ) -> Result<Sent, CallError> {
        let started = Instant::now();
        let mut retries = 0u32;
        let mut last = CallError::Resting;
        for &model in models {
            let deployments = self.catalog.deployments_for(model, tenant);
            let mut tried = Vec::new();
            let mut attempts = 0usize;
            loop {
                if attempts > self.max_retries {
                    break;
                }
                let index = match self.router.pick(&deployments, &tried, Instant::now()) {
                    router::Pick::Send { index, .. } => index,
                    router::Pick::AllResting | router::Pick::Exhausted => break,
                };
                tried.push(index);
                if attempts > 0 || retries > 0 {
                    retries += 1;
                    self.metrics.retry(deployments[index].upstream);
                    // Back off a little so a burst does not hammer the next one.
                    let wait = Duration::from_millis(10u64 << attempts.min(4));
                    tokio::time::sleep(wait).await;
                }
                attempts += 1;
                let d = deployments[index];
                match self.attempt(d, tenant, share, body, path, stream).await {
                    Ok((response, first, slot)) => {
                        self.router.succeeded(d.upstream);
                        return Ok(Sent {
                            model,
                            upstream: d.upstream,
                            retries,
                            status: response.status().as_u16(),
                            response,
                            first,
                            started,
                            slot,
                        });
                    }
                    Err(e) => {
                        self.metrics.upstream_error(d.upstream, &e);
                        self.router.failed(d.upstream, Instant::now());
                        last = e;
                    }
                }
            }
        }
        Err(last)
    }

    /// Reports that an answer already started failed later (its body broke).
    pub fn broke(&self, u: UpstreamId) {
        self.metrics
            .upstream_error(u, &CallError::Failed("stream broke".into()));
        self.router.failed(u, Instant::now());
    }

    async fn attempt(
        &self,
        d: &catalog::Deployment,
        tenant: &TenantId,
        share: Share,
        body: &Map<String, Value>,
        path: &str,
        stream: bool,
    ) -> Result<(reqwest::Response, Option<Bytes>, Slot), CallError> {
        let client = &self.clients[d.upstream.0];
        let state = self.router.state(d.upstream);
        let outstanding = self.router.begin(d.upstream);
        let permit = state
            .slots
            .acquire(tenant.as_str(), share.weight, share.estimate)
            .await;
        let slot = Slot {
            permit,
            _outstanding: outstanding,
        };
        let mut body = body.clone();
        body.insert("model".into(), Value::String(d.upstream_model.clone()));
        let mut request = client
            .http
            .post(format!("{}/{path}", client.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(Value::Object(body).to_string());
        if let Some(key) = &client.key {
            request = request.bearer_auth(key);
        }
        let mut response = request.send().await.map_err(|e| {
            let detail = fief_http::describe(&e);
            tracing::warn!(upstream = %self.catalog.upstream(d.upstream).name, "upstream request failed: {detail}");
            if e.is_timeout() {
                CallError::Timeout
            } else if detail.contains("certificate") || detail.contains("UnknownIssuer") {
                // The operator's to fix (ca_file); said plainly, without the host.
                CallError::Failed("its TLS certificate is not trusted (see the upstream's ca_file)".into())
            } else {
                CallError::Failed("could not reach it".into())
            }
        })?;
        let status = response.status();
        if status.as_u16() == 429 {
            return Err(CallError::RateLimited);
        }
        if status.is_server_error() {
            let text = response.bytes().await.unwrap_or_default();
            let message = wire::error_message(&text)
                .map(|m| self.scrub(d.upstream, &m))
                .unwrap_or_else(|| format!("status {}", status.as_u16()));
            return Err(CallError::Failed(message));
        }
        if stream && status.is_success() {
            // A stream that breaks before its first byte can still go elsewhere.
            match response.chunk().await {
                Ok(Some(first)) => return Ok((response, Some(first), slot)),
                Ok(None) => return Err(CallError::Failed("empty answer".into())),
                Err(e) if e.is_timeout() => return Err(CallError::Timeout),
                Err(_) => return Err(CallError::Failed("the answer broke off".into())),
            }
        }
        Ok((response, None, slot))
    }
}
