//! The usage record of one foundation-model call: what quotas and metering
//! consume. Counts and names only, never content.

use serde::{Deserialize, Serialize};

/// Where the token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Counted {
    /// The upstream reported them.
    Upstream,
    /// fief estimated them from the text (about four bytes a token).
    Estimate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub request_id: String,
    pub tenant: String,
    /// Which incarnation of the tenant.
    pub incarnation: String,
    /// The principal as audited (`api-key:…`, `user:…`, `session:…`).
    pub principal: String,
    /// For a session: who assumed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The surface called: `chat`, `completions`, `embeddings`, `converse`.
    pub surface: String,
    /// The model as tenants name it (after any fallback).
    pub model: String,
    /// The upstream that answered (config name; never shown to tenants).
    pub upstream: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub counted: Counted,
    pub latency_ms: u64,
    /// For a stream: time until the first content reached the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    /// The HTTP status the client got (200 for a stream that started, even
    /// if it ended with an error event: see `complete`).
    pub status: u16,
    /// Whether the answer ended as the upstream meant it to (a stream cut
    /// by an upstream failure or a client disconnect is not complete).
    pub complete: bool,
    /// Deployments tried before the one that answered.
    pub retries: u32,
    /// Set when a fallback model answered instead of the one asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_from: Option<String>,
}
