//! Metering: what each billable operation consumed ([`UsageEvent`]), the
//! hourly aggregates invoices and usage views read ([`Aggregate`]), prices
//! by model and effective date ([`pricing::PriceBook`]) and invoices per
//! tenant or per tag ([`invoice`]). Pure: the store writes and reads the
//! rows, the server decides when an event is made. Events hold counts and
//! names, never content.

pub mod invoice;
pub mod pricing;
pub mod time;
pub mod usage;

use serde::{Deserialize, Serialize};

pub use fief_core::Tags;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MeteringError {
    #[error("{0}")]
    Invalid(String),
}

/// The billable operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A foundation-model call (chat, completions, converse, upstream embeddings).
    Llm,
    /// An ONNX model invocation.
    Onnx,
    /// `/v1/embeddings` on the in-process embedder.
    Embedding,
    /// A document written to a knowledge base (chunked and embedded).
    KbIngest,
    /// A knowledge-base query.
    KbQuery,
    /// A tenant-table operation.
    Table,
    /// What a tenant holds, sampled once a day.
    Storage,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Llm,
        Kind::Onnx,
        Kind::Embedding,
        Kind::KbIngest,
        Kind::KbQuery,
        Kind::Table,
        Kind::Storage,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Kind::Llm => "llm",
            Kind::Onnx => "onnx",
            Kind::Embedding => "embedding",
            Kind::KbIngest => "kb_ingest",
            Kind::KbQuery => "kb_query",
            Kind::Table => "table",
            Kind::Storage => "storage",
        }
    }
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// What one operation consumed. Every field adds up in aggregates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantities {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub embedding_tokens: u64,
    /// ONNX run time, microseconds.
    pub compute_us: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Items, chunks or documents the operation touched.
    pub units: u64,
    /// Bytes held × days held (a daily storage sample adds its bytes).
    pub byte_days: u64,
    /// Time from the request's arrival to its answer (a foundation-model
    /// call: to its last byte), microseconds; per request, the latency.
    pub duration_us: u64,
}

impl Quantities {
    pub const FIELDS: [&'static str; 10] = [
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "embedding_tokens",
        "compute_us",
        "bytes_in",
        "bytes_out",
        "units",
        "byte_days",
        "duration_us",
    ];
    pub fn values(&self) -> [u64; 10] {
        [
            self.requests,
            self.prompt_tokens,
            self.completion_tokens,
            self.embedding_tokens,
            self.compute_us,
            self.bytes_in,
            self.bytes_out,
            self.units,
            self.byte_days,
            self.duration_us,
        ]
    }
    pub fn from_values(v: [u64; 10]) -> Quantities {
        Quantities {
            requests: v[0],
            prompt_tokens: v[1],
            completion_tokens: v[2],
            embedding_tokens: v[3],
            compute_us: v[4],
            bytes_in: v[5],
            bytes_out: v[6],
            units: v[7],
            byte_days: v[8],
            duration_us: v[9],
        }
    }
    pub fn add(&mut self, other: &Quantities) {
        let mut v = self.values();
        for (a, b) in v.iter_mut().zip(other.values()) {
            *a = a.saturating_add(b);
        }
        *self = Quantities::from_values(v);
    }
}

/// One billable operation. Idempotent by (`tenant`, `request_id`): the
/// store keeps the first and ignores a repeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub request_id: String,
    pub tenant: String,
    pub incarnation: String,
    /// The principal as audited (`api-key:…`, `user:…`, `session:…`).
    pub principal: String,
    /// For a session: who assumed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The tenant's tags when the request was made.
    pub tags: Tags,
    /// Unix milliseconds.
    pub at_ms: i64,
    pub kind: Kind,
    /// The model (foundation, ONNX or embedding) or, for other kinds, the
    /// resource kind it touched; empty when none.
    pub model: String,
    pub quantities: Quantities,
}

impl UsageEvent {
    /// The hour it counts in (hours since the Unix epoch).
    pub fn hour(&self) -> i64 {
        self.at_ms.div_euclid(3_600_000)
    }
}

/// The sums of one tenant × hour × kind × model × principal × tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    pub tenant: String,
    pub incarnation: String,
    pub hour: i64,
    /// Minutes since the epoch, for a row read from one raw event (the
    /// hourly sums have none).
    pub minute: Option<i64>,
    pub kind: Kind,
    pub model: String,
    pub principal: String,
    pub tags: Tags,
    pub quantities: Quantities,
}
