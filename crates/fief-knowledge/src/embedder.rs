//! The embedder behind knowledge bases and `/v1/embeddings`: all-MiniLM-L6-v2
//! in-process (fief-embed), or an OpenAI-compatible upstream from config.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;

use fief_config::EmbeddingsUpstream;
use fief_embed::{MiniLm, Tokenizer};

use crate::KnowledgeError;

/// The in-process model's name in API answers.
pub const LOCAL_MODEL: &str = "all-MiniLM-L6-v2";

pub enum Embedder {
    Local {
        model: Arc<MiniLm>,
        /// Inference is CPU-bound: at most one run per core at a time, so a
        /// burst of ingestion queues instead of thrashing every request.
        permits: Arc<Semaphore>,
    },
    Upstream {
        config: EmbeddingsUpstream,
        api_key: Option<String>,
        client: reqwest::Client,
        /// The local vocabulary, if installed, to size chunks in word pieces.
        tokenizer: Option<Arc<Tokenizer>>,
    },
    /// Not installed: every use answers 503 with how to install it.
    Missing(String),
}

/// Vectors (unit length) and the word pieces they cost.
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

impl Embedder {
    /// The configured embedder. A missing local model is not fatal (models
    /// and everything else still serve); its uses fail with the reason.
    pub fn from_config(upstream: Option<&EmbeddingsUpstream>) -> Result<Self, KnowledgeError> {
        let dir = fief_embed::default_dir();
        match upstream {
            Some(config) => {
                let api_key = match &config.api_key_env {
                    Some(var) => Some(std::env::var(var).map_err(|_| {
                        KnowledgeError::Unavailable(format!(
                            "knowledge.upstream.api_key_env names {var}, which is not set"
                        ))
                    })?),
                    None => None,
                };
                let client = fief_http::client(
                    config.ca_file.as_deref(),
                    Duration::from_secs(config.timeout_secs),
                )
                .map_err(|e| KnowledgeError::Unavailable(format!("HTTP client: {e}")))?;
                let tokenizer = dir
                    .ok()
                    .and_then(|d| Tokenizer::from_vocab_file(&d.join("vocab.txt")).ok())
                    .map(Arc::new);
                Ok(Embedder::Upstream {
                    config: config.clone(),
                    api_key,
                    client,
                    tokenizer,
                })
            }
            None => Ok(match dir.and_then(|d| MiniLm::load(&d)) {
                Ok(model) => Self::from_model(model),
                Err(e) => Embedder::Missing(e.to_string()),
            }),
        }
    }

    pub fn from_model(model: MiniLm) -> Self {
        Embedder::Local {
            model: Arc::new(model),
            permits: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
        }
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        match self {
            Embedder::Local { .. } => format!("{LOCAL_MODEL} in-process"),
            Embedder::Upstream { config, .. } => {
                format!("{} at {} (upstream)", config.model, config.url)
            }
            Embedder::Missing(why) => format!("not available: {why}"),
        }
    }

    pub fn model_name(&self) -> &str {
        match self {
            Embedder::Upstream { config, .. } => &config.model,
            _ => LOCAL_MODEL,
        }
    }

    pub fn dimensions(&self) -> usize {
        match self {
            Embedder::Upstream { config, .. } => config.dimensions,
            _ => fief_embed::DIM,
        }
    }

    /// The word-piece vocabulary chunks are measured in, if there is one.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        match self {
            Embedder::Local { model, .. } => Some(model.tokenizer()),
            Embedder::Upstream { tokenizer, .. } => tokenizer.as_deref(),
            Embedder::Missing(_) => None,
        }
    }

    /// A tenant is told what it can act on; the operator's log says why
    /// and how to fix it (paths and commands are the operator's business).
    fn missing(why: &str) -> KnowledgeError {
        tracing::warn!("a knowledge-base request was refused: {why}");
        KnowledgeError::Unavailable(
            "knowledge bases cannot embed on this deployment: its embedder is not installed; \
             ask the operator (the server log says how to install it), then retry"
                .into(),
        )
    }

    /// Embeds `texts`; each vector is unit length and of `dimensions()`.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Embedded, KnowledgeError> {
        if texts.is_empty() {
            return Ok(Embedded {
                vectors: Vec::new(),
                tokens: 0,
            });
        }
        let tokens = match self.tokenizer() {
            Some(t) => texts
                .iter()
                .map(|s| t.count_tokens(s).min(fief_embed::MAX_TOKENS - 2) + 2)
                .sum(),
            None => texts.iter().map(|s| s.split_whitespace().count()).sum(),
        };
        let vectors = match self {
            Embedder::Missing(why) => return Err(Self::missing(why)),
            Embedder::Local { model, permits } => {
                let _permit =
                    permits.clone().acquire_owned().await.map_err(|_| {
                        KnowledgeError::Unavailable("embedder is shutting down".into())
                    })?;
                let model = model.clone();
                tokio::task::spawn_blocking(move || {
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    model.embed(&refs)
                })
                .await
                .map_err(|e| KnowledgeError::Internal(format!("embedding task: {e}")))?
                .map_err(|e| KnowledgeError::Internal(format!("embedding: {e}")))?
            }
            Embedder::Upstream {
                config,
                api_key,
                client,
                ..
            } => upstream(config, api_key.as_deref(), client, &texts).await?,
        };
        Ok(Embedded { vectors, tokens })
    }
}

#[derive(Deserialize)]
struct UpstreamAnswer {
    data: Vec<UpstreamVector>,
}

#[derive(Deserialize)]
struct UpstreamVector {
    index: usize,
    embedding: Vec<f32>,
}

async fn upstream(
    config: &EmbeddingsUpstream,
    api_key: Option<&str>,
    client: &reqwest::Client,
    texts: &[String],
) -> Result<Vec<Vec<f32>>, KnowledgeError> {
    let bad = |m: String| KnowledgeError::Upstream(format!("{}: {m}", config.url));
    let url = format!("{}/embeddings", config.url.trim_end_matches('/'));
    let mut request = client
        .post(&url)
        .json(&json!({"model": config.model, "input": texts}));
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.map_err(|e| bad(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(bad(format!("answered {status}")));
    }
    let answer: UpstreamAnswer = response
        .json()
        .await
        .map_err(|e| bad(format!("not an embeddings answer: {e}")))?;
    let mut vectors = vec![Vec::new(); texts.len()];
    for item in answer.data {
        let slot = vectors
            .get_mut(item.index)
            .ok_or_else(|| bad(format!("answer index {} out of range", item.index)))?;
        *slot = item.embedding;
    }
    for v in &mut vectors {
        if v.len() != config.dimensions {
            return Err(bad(format!(
                "a vector has {} dimensions, knowledge.upstream.dimensions says {}",
                v.len(),
                config.dimensions
            )));
        }
        fief_retrieval::normalize(v).map_err(|e| bad(e.to_string()))?;
    }
    Ok(vectors)
}
