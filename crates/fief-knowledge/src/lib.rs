//! Knowledge bases: ingestion (chunking with overlap, embedding, sealed
//! storage), vector search placed by tier, and the query path. No HTTP here.
//!
//! The tenant boundary on the query path has three layers: the scope picks
//! the tenant's own index or partition (never a global graph filtered
//! afterwards); the chunk fetch filters by the scope's tenant; and each
//! chunk opens only with the scope tenant's key under a context naming that
//! tenant. A client filter may not name a tenant at all.

mod embedder;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod filter;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use fief_config::KnowledgeConfig;
use fief_core::{TenantId, Tier};
use fief_retrieval::placement::{Indexes, Partition, Placement, SharedPartitionRef};
use fief_retrieval::{HnswParams, RetrievalError};
use fief_store::{
    DocumentRecord, KnowledgeBaseRecord, NewChunk, PutOutcome, Store, StoreError, TenantScope,
};

pub use embedder::{Embedded, Embedder, LOCAL_MODEL};

#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    #[error("{0}")]
    Validation(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("embeddings upstream {0}")]
    Upstream(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("index: {0}")]
    Index(#[from] RetrievalError),
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, KnowledgeError>;

/// Largest metadata object per document.
pub const MAX_METADATA_KEYS: usize = 32;
/// Largest query text, in bytes.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentInput {
    pub text: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryInput {
    pub query: String,
    #[serde(default)]
    pub top_k: Option<usize>,
    /// On metadata: `{"key": value}`, `{"key": [any, of]}`, operators
    /// (`{"year": {"gte": 2020}}`) and `and` / `or` (see `filter.rs`).
    #[serde(default)]
    pub filter: Map<String, Value>,
    /// `vector`, `keyword` or `hybrid` (the default).
    #[serde(default)]
    pub mode: SearchMode,
}

/// How a query finds chunks: by meaning (the embedding's nearest), by its
/// words (BM25 over keyed term hashes), or both fused by reciprocal rank.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    Vector,
    Keyword,
    #[default]
    Hybrid,
}

#[derive(Debug, Serialize)]
pub struct QueryHit {
    pub document_id: String,
    pub chunk: i64,
    pub text: String,
    pub score: f32,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Serialize)]
pub struct KnowledgeBaseView {
    #[serde(flatten)]
    pub record: KnowledgeBaseRecord,
    /// Where its vectors live: `dedicated` or `shared-partition`.
    pub placement: Placement,
    /// `exact` or `hnsw`, once loaded.
    pub index: &'static str,
}

#[derive(Debug, Serialize)]
pub struct DocumentView {
    pub id: String,
    pub chunks: usize,
    pub tokens: usize,
    #[serde(skip)]
    pub outcome: PutOutcome,
}

/// What the query path noticed beyond its answer.
#[derive(Debug, Default)]
pub struct QueryStats {
    /// Chunks that reached the query but failed authentication: they can
    /// only belong to another tenant or be tampered with. Never returned.
    pub rejected: usize,
}

pub struct Knowledge {
    config: KnowledgeConfig,
    embedder: Embedder,
    indexes: Indexes,
    params: HnswParams,
}

/// The index key of the scope's tenant incarnation.
fn owner(scope: &TenantScope) -> fief_retrieval::placement::Owner {
    (scope.tenant().clone(), scope.incarnation().clone())
}

/// True if a metadata or filter key names a tenant (`tenant`, `tenant_id`,
/// `TenantId`, `_tenant`, `x-tenant`, ...): the boundary is the store's.
fn names_a_tenant(key: &str) -> bool {
    key.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
        .contains("tenant")
}

fn check_scalar(key: &str, v: &Value) -> Result<()> {
    match v {
        Value::String(s) if s.len() <= 1024 => Ok(()),
        Value::Bool(_) | Value::Number(_) => Ok(()),
        _ => Err(KnowledgeError::Validation(format!(
            "metadata `{key}` must be a string of at most 1024 bytes, a number or a boolean"
        ))),
    }
}

pub fn validate_metadata(metadata: &Map<String, Value>) -> Result<()> {
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(KnowledgeError::Validation(format!(
            "metadata has {} keys, at most {MAX_METADATA_KEYS} are allowed",
            metadata.len()
        )));
    }
    for (k, v) in metadata {
        if k.is_empty() || k.len() > 64 {
            return Err(KnowledgeError::Validation(
                "metadata keys must be 1-64 bytes".into(),
            ));
        }
        if names_a_tenant(k) {
            return Err(KnowledgeError::Validation(format!(
                "metadata key `{k}` names a tenant; the tenant is set by fief, not by documents"
            )));
        }
        check_scalar(k, v)?;
    }
    Ok(())
}

/// Chunks measured in whitespace-separated words, for an upstream embedder
/// with no local vocabulary to count word pieces.
fn chunk_words(text: &str, max: usize, overlap: usize) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out = Vec::new();
    let mut start = 0;
    while start < words.len() {
        let end = (start + max).min(words.len());
        out.push(words[start..end].join(" "));
        if end == words.len() {
            break;
        }
        start = end.saturating_sub(overlap).max(start + 1);
    }
    out
}

impl Knowledge {
    pub fn new(config: KnowledgeConfig, embedder: Embedder) -> Self {
        Self {
            config,
            embedder,
            indexes: Indexes::new(),
            params: HnswParams::default(),
        }
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// `/v1/embeddings`: nothing stored.
    pub async fn embed(&self, inputs: Vec<String>) -> Result<Embedded> {
        if inputs.is_empty() || inputs.len() > 256 {
            return Err(KnowledgeError::Validation(
                "input must hold 1-256 texts".into(),
            ));
        }
        if inputs.iter().any(|s| s.trim().is_empty()) {
            return Err(KnowledgeError::Validation(
                "input texts must not be empty".into(),
            ));
        }
        self.embedder.embed(inputs).await
    }

    pub async fn create(
        &self,
        store: &Store,
        scope: &TenantScope,
        name: &str,
    ) -> Result<KnowledgeBaseRecord> {
        Ok(store.create_knowledge_base(scope, name).await?)
    }

    pub async fn list(
        &self,
        store: &Store,
        scope: &TenantScope,
    ) -> Result<Vec<KnowledgeBaseRecord>> {
        Ok(store.list_knowledge_bases(scope).await?)
    }

    pub async fn get(
        &self,
        store: &Store,
        scope: &TenantScope,
        tier: Tier,
        name: &str,
    ) -> Result<KnowledgeBaseView> {
        let record = self.existing(store, scope, name).await?;
        let placement = Placement::for_tier(tier);
        let partition = self.partition(store, scope, placement, name).await?;
        let index = partition
            .read()
            .map_err(|_| RetrievalError::Poisoned)?
            .index_kind();
        Ok(KnowledgeBaseView {
            record,
            placement,
            index,
        })
    }

    pub async fn delete(&self, store: &Store, scope: &TenantScope, name: &str) -> Result<()> {
        // Out of the index first: from here on no query can reach it.
        self.indexes.drop_knowledge_base(&owner(scope), name)?;
        if !store.delete_knowledge_base(scope, name).await? {
            return Err(KnowledgeError::NotFound(format!("knowledge base {name}")));
        }
        self.indexes.drop_knowledge_base(&owner(scope), name)?;
        Ok(())
    }

    pub async fn list_documents(
        &self,
        store: &Store,
        scope: &TenantScope,
        kb: &str,
    ) -> Result<Vec<DocumentRecord>> {
        self.existing(store, scope, kb).await?;
        Ok(store.list_documents(scope, kb).await?)
    }

    /// Chunks, embeds and stores a document, replacing any previous version.
    pub async fn put_document(
        &self,
        store: &Store,
        scope: &TenantScope,
        tier: Tier,
        kb: &str,
        doc: &str,
        input: DocumentInput,
    ) -> Result<DocumentView> {
        validate_metadata(&input.metadata)?;
        if input.text.trim().is_empty() {
            return Err(KnowledgeError::Validation(
                "document text must not be empty".into(),
            ));
        }
        self.existing(store, scope, kb).await?;
        let texts: Vec<String> = match self.embedder.tokenizer() {
            Some(t) => fief_embed::chunk(
                t,
                &input.text,
                self.config.chunk_tokens,
                self.config.chunk_overlap_tokens,
            )
            .into_iter()
            .map(|c| c.text)
            .collect(),
            None => chunk_words(
                &input.text,
                self.config.chunk_tokens,
                self.config.chunk_overlap_tokens,
            ),
        };
        let embedded = self.embedder.embed(texts.clone()).await?;
        let placement = Placement::for_tier(tier);
        // Loaded before the write, so the new chunks land in a loaded index.
        let partition = self.partition(store, scope, placement, kb).await?;
        let chunks: Vec<NewChunk> = texts
            .into_iter()
            .zip(embedded.vectors)
            .map(|(text, vector)| NewChunk {
                text,
                metadata: input.metadata.clone(),
                vector,
            })
            .collect();
        let written = store
            .put_document(scope, kb, doc, input.text.len(), &chunks)
            .await?;
        let mut index = partition.write().map_err(|_| RetrievalError::Poisoned)?;
        for id in &written.removed {
            index.remove(*id as u64);
        }
        for (id, chunk) in written.added.iter().zip(&chunks) {
            index.insert(*id as u64, &chunk.vector)?;
            index.index_text(*id as u64, &chunk.text);
        }
        Ok(DocumentView {
            id: doc.to_owned(),
            chunks: chunks.len(),
            tokens: embedded.tokens,
            outcome: written.outcome,
        })
    }

    /// Removes a document from search at once and from disk.
    pub async fn delete_document(
        &self,
        store: &Store,
        scope: &TenantScope,
        tier: Tier,
        kb: &str,
        doc: &str,
    ) -> Result<()> {
        self.existing(store, scope, kb).await?;
        let removed = store
            .delete_document(scope, kb, doc)
            .await?
            .ok_or_else(|| KnowledgeError::NotFound(format!("document {doc}")))?;
        if let Some(p) = self
            .indexes
            .get(&owner(scope), Placement::for_tier(tier), kb)?
        {
            let mut index = p.write().map_err(|_| RetrievalError::Poisoned)?;
            for id in removed {
                index.remove(id as u64);
            }
        }
        Ok(())
    }

    pub async fn query(
        &self,
        store: &Store,
        scope: &TenantScope,
        tier: Tier,
        kb: &str,
        input: QueryInput,
    ) -> Result<(Vec<QueryHit>, QueryStats)> {
        let filter = filter::Filter::parse(&input.filter)?;
        let top_k = input.top_k.unwrap_or(5);
        if top_k == 0 || top_k > self.config.max_top_k {
            return Err(KnowledgeError::Validation(format!(
                "top_k must be between 1 and {}",
                self.config.max_top_k
            )));
        }
        if input.query.trim().is_empty() || input.query.len() > MAX_QUERY_BYTES {
            return Err(KnowledgeError::Validation(format!(
                "query must be 1-{MAX_QUERY_BYTES} bytes of text"
            )));
        }
        self.existing(store, scope, kb).await?;
        let placement = Placement::for_tier(tier);
        let partition = self.partition(store, scope, placement, kb).await?;
        // A filter is applied to opened chunks, so look further ahead.
        let wanted = if filter.is_all() {
            top_k
        } else {
            (top_k * 10).min(1000)
        };
        let by_meaning = if input.mode == SearchMode::Keyword {
            Vec::new()
        } else {
            let mut vector = self
                .embedder
                .embed(vec![input.query.clone()])
                .await?
                .vectors
                .pop()
                .ok_or_else(|| KnowledgeError::Internal("the embedder returned nothing".into()))?;
            fief_retrieval::normalize(&mut vector)?;
            self.search(&partition, placement, &vector, wanted).await?
        };
        let by_words = if input.mode == SearchMode::Vector {
            Vec::new()
        } else {
            partition
                .read()
                .map_err(|_| RetrievalError::Poisoned)?
                .search_keyword(&input.query, wanted)
        };
        let hits = match input.mode {
            SearchMode::Vector => by_meaning,
            SearchMode::Keyword => by_words,
            SearchMode::Hybrid => fief_retrieval::keyword::fuse(&[&by_meaning, &by_words], wanted),
        };
        let ids: Vec<i64> = hits.iter().map(|h| h.id as i64).collect();
        let opened = store.open_chunks(scope, kb, &ids).await?;
        let mut out = Vec::new();
        for chunk in opened.chunks {
            if !filter.matches(&chunk.metadata) {
                continue;
            }
            let score = hits
                .iter()
                .find(|h| h.id as i64 == chunk.id)
                .map_or(0.0, |h| h.score);
            out.push(QueryHit {
                document_id: chunk.document,
                chunk: chunk.seq,
                text: chunk.text,
                score,
                metadata: chunk.metadata,
            });
            if out.len() == top_k {
                break;
            }
        }
        Ok((
            out,
            QueryStats {
                rejected: opened.rejected,
            },
        ))
    }

    async fn search(
        &self,
        partition: &SharedPartitionRef,
        placement: Placement,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<fief_retrieval::Hit>> {
        #[cfg(feature = "fault-injection")]
        if faults::query_partition_dropped() && placement == Placement::SharedPartition {
            return Ok(self.indexes.search_shared_unpartitioned(vector, k)?);
        }
        let _ = placement;
        let partition = partition.clone();
        let vector = vector.to_vec();
        // A large graph walk is milliseconds of CPU: off the async workers.
        tokio::task::spawn_blocking(move || {
            partition
                .read()
                .map_err(|_| RetrievalError::Poisoned)?
                .search(&vector, k)
        })
        .await
        .map_err(|e| KnowledgeError::Internal(format!("search task: {e}")))?
        .map_err(Into::into)
    }

    /// Forgets a tenant's loaded indexes (offboarding, or a tier change: the
    /// next request loads its vectors where the new tier places them).
    pub fn forget_tenant(&self, tenant: &TenantId) -> Result<()> {
        Ok(self.indexes.drop_tenant(tenant)?)
    }

    /// Loaded (dedicated indexes, shared partitions), for metrics.
    pub fn loaded(&self) -> (usize, usize) {
        self.indexes.counts()
    }

    async fn existing(
        &self,
        store: &Store,
        scope: &TenantScope,
        name: &str,
    ) -> Result<KnowledgeBaseRecord> {
        store
            .get_knowledge_base(scope, name)
            .await?
            .ok_or_else(|| KnowledgeError::NotFound(format!("knowledge base {name}")))
    }

    /// The knowledge base's loaded partition, loading it from the sealed
    /// vectors on first use.
    async fn partition(
        &self,
        store: &Store,
        scope: &TenantScope,
        placement: Placement,
        kb: &str,
    ) -> Result<SharedPartitionRef> {
        let tenant = &owner(scope);
        if let Some(p) = self.indexes.get(tenant, placement, kb)? {
            return Ok(p);
        }
        let rows = store.knowledge_base_index(scope, kb).await?;
        // Per base: the same word in two bases (or tenants) hashes apart.
        let terms_key = store
            .tenant_derived_key(scope, &format!("kb keyword terms\0{kb}"))
            .await?;
        let (dim, threshold, params) = (
            self.embedder.dimensions(),
            self.config.hnsw_threshold,
            self.params,
        );
        let partition = tokio::task::spawn_blocking(move || {
            let mut p = Partition::new(dim, threshold, params).with_keywords(&terms_key);
            for (id, v, text) in rows {
                p.index_text(id as u64, &text);
                p.insert(id as u64, &v).map_err(|e| match e {
                    RetrievalError::Dimension { expected, got } => {
                        KnowledgeError::Unavailable(format!(
                            "this knowledge base was embedded with {got} dimensions and the \
                             embedder now gives {expected}; re-ingest its documents"
                        ))
                    }
                    other => other.into(),
                })?;
            }
            Ok::<_, KnowledgeError>(p)
        })
        .await
        .map_err(|e| KnowledgeError::Internal(format!("index load task: {e}")))??;
        Ok(self.indexes.install(tenant, placement, kb, partition)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_metadata_cannot_name_a_tenant() {
        for key in [
            "tenant",
            "tenant_id",
            "TenantId",
            "_tenant",
            "x-tenant",
            "Tenant.Name",
        ] {
            let mut m = Map::new();
            m.insert(key.into(), Value::from("bb"));
            assert!(filter::Filter::parse(&m).is_err(), "{key}");
            assert!(validate_metadata(&m).is_err(), "{key}");
        }
        let mut ok = Map::new();
        ok.insert("lang".into(), Value::from("en"));
        ok.insert("year".into(), Value::from(2024));
        assert!(filter::Filter::parse(&ok).is_ok() && validate_metadata(&ok).is_ok());
        let mut nested = Map::new();
        nested.insert("a".into(), serde_json::json!({"b": 1}));
        assert!(validate_metadata(&nested).is_err());
    }

    #[test]
    fn word_chunks_overlap_and_cover() {
        let text = (0..25)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let chunks = chunk_words(&text, 10, 3);
        assert_eq!(chunks.len(), 4);
        assert!(chunks[0].starts_with("w0 ") && chunks[1].starts_with("w7 "));
        assert!(chunks.last().unwrap().ends_with("w24"));
        assert!(chunk_words("  ", 10, 3).is_empty());
    }
}
