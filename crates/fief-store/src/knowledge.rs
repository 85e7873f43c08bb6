//! Knowledge bases: documents split into chunks, each chunk's text,
//! metadata and vector sealed with the tenant's data key. Every accessor
//! takes a [`TenantScope`] and filters by its tenant; the seal binds each
//! chunk to (tenant, knowledge base, document, position), so a row that
//! reached the wrong tenant by a query bug still cannot be opened.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use fief_core::TenantId;
use fief_crypto::{DataKey, SealContext};

use crate::db::{q, Row, Tx};
use crate::placement::{tenant_filter, Place};
use crate::{now, PutOutcome, Result, Store, StoreError, TenantScope};

#[derive(Debug, Clone, Serialize)]
pub struct KnowledgeBaseRecord {
    pub name: String,
    pub documents: i64,
    pub chunks: i64,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DocumentRecord {
    pub id: String,
    pub chunks: i64,
    pub bytes: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// A chunk to store: its text, the document's metadata, its unit vector.
#[derive(Debug, Clone)]
pub struct NewChunk {
    pub text: String,
    pub metadata: Map<String, Value>,
    pub vector: Vec<f32>,
}

/// A chunk read back and opened.
#[derive(Debug, Clone)]
pub struct ChunkRecord {
    pub id: i64,
    pub document: String,
    pub seq: i64,
    pub text: String,
    pub metadata: Map<String, Value>,
}

/// What replacing a document changed, for the caller's index.
#[derive(Debug, Clone)]
pub struct DocumentWrite {
    pub outcome: PutOutcome,
    pub removed: Vec<i64>,
    pub added: Vec<i64>,
}

/// Result of opening a batch of chunks: rows that failed authentication are
/// counted, not returned (they can only be another tenant's or tampered).
#[derive(Debug, Default)]
pub struct OpenedChunks {
    pub chunks: Vec<ChunkRecord>,
    pub rejected: usize,
}

#[derive(Serialize, Deserialize)]
struct SealedPayload {
    text: String,
    metadata: Map<String, Value>,
}

fn text_context(tenant: &TenantId, kb: &str, doc: &str, seq: i64) -> SealContext {
    SealContext::new(tenant, "kb-chunk", &format!("{kb}/{doc}#{seq}"))
}

fn vector_context(tenant: &TenantId, kb: &str, doc: &str, seq: i64) -> SealContext {
    SealContext::new(tenant, "kb-vector", &format!("{kb}/{doc}#{seq}"))
}

fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn vector_from(bytes: &[u8]) -> Result<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return Err(StoreError::Corrupt("chunk vector length".into()));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn kb_from_row(row: &Row) -> Result<KnowledgeBaseRecord> {
    Ok(KnowledgeBaseRecord {
        name: row.get("name")?,
        documents: row.get("documents")?,
        chunks: row.get("chunks")?,
        created_at: row.get("created_at")?,
    })
}

/// Knowledge bases with their counts, on `place`; the caller adds the
/// `WHERE` (on `k.`) and binds the tenant as `$1`.
fn kb_select(place: &Place) -> String {
    let documents = place.t("kb_documents");
    format!(
        "SELECT k.name, k.created_at,
            (SELECT COUNT(*) FROM {documents} d WHERE d.tenant_id = k.tenant_id AND d.kb = k.name) AS documents,
            (SELECT CAST(COALESCE(SUM(d.chunks), 0) AS BIGINT) FROM {documents} d
              WHERE d.tenant_id = k.tenant_id AND d.kb = k.name) AS chunks
         FROM {} k",
        place.t("knowledge_bases")
    )
}

impl Store {
    pub async fn create_knowledge_base(
        &self,
        scope: &TenantScope,
        name: &str,
    ) -> Result<KnowledgeBaseRecord> {
        let created_at = now();
        let place = self.place(scope).await?;
        let inserted = place
            .run(
                scope.tenant(),
                q(format!(
                    "INSERT INTO {} (tenant_id, name, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT (tenant_id, name) DO NOTHING",
                    place.t("knowledge_bases")
                ))
                .bind(scope.tenant().as_str())
                .bind(name)
                .bind(&created_at),
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::Conflict(format!("knowledge base {name}")));
        }
        self.announced(scope.tenant(), "knowledge_bases", name)
            .await;
        Ok(KnowledgeBaseRecord {
            name: name.to_owned(),
            documents: 0,
            chunks: 0,
            created_at,
        })
    }

    pub async fn list_knowledge_bases(
        &self,
        scope: &TenantScope,
    ) -> Result<Vec<KnowledgeBaseRecord>> {
        let place = self.place(scope).await?;
        let sql = format!(
            "{} WHERE k.tenant_id = $1 ORDER BY k.name",
            kb_select(&place)
        );
        place
            .fetch(scope.tenant(), q(sql).bind(scope.tenant().as_str()))
            .await?
            .iter()
            .map(kb_from_row)
            .collect()
    }

    pub async fn get_knowledge_base(
        &self,
        scope: &TenantScope,
        name: &str,
    ) -> Result<Option<KnowledgeBaseRecord>> {
        let place = self.place(scope).await?;
        let sql = format!(
            "{} WHERE k.tenant_id = $1 AND k.name = $2",
            kb_select(&place)
        );
        place
            .fetch(
                scope.tenant(),
                q(sql).bind(scope.tenant().as_str()).bind(name),
            )
            .await?
            .first()
            .map(kb_from_row)
            .transpose()
    }

    /// Deletes a knowledge base with its documents and chunks, and scrubs
    /// them from the database files. Returns false if it did not exist.
    pub async fn delete_knowledge_base(&self, scope: &TenantScope, name: &str) -> Result<bool> {
        let tenant = scope.tenant();
        let place = self.place(scope).await?;
        let mut tx = place.begin(tenant).await?;
        for table in ["kb_chunks", "kb_documents"] {
            q(format!(
                "DELETE FROM {} WHERE tenant_id = $1 AND kb = $2",
                place.t(table)
            ))
            .bind(tenant.as_str())
            .bind(name)
            .exec(&mut tx)
            .await?;
        }
        let deleted = q(format!(
            "DELETE FROM {} WHERE tenant_id = $1 AND name = $2",
            place.t("knowledge_bases")
        ))
        .bind(tenant.as_str())
        .bind(name)
        .exec(&mut tx)
        .await?;
        tx.commit().await?;
        self.announced(tenant, "knowledge_bases", name).await;
        place.scrub().await?;
        Ok(deleted > 0)
    }

    /// Creates or replaces a document: its old chunks go, the new ones are
    /// sealed and inserted, in one transaction.
    pub async fn put_document(
        &self,
        scope: &TenantScope,
        kb: &str,
        doc: &str,
        bytes: usize,
        chunks: &[NewChunk],
    ) -> Result<DocumentWrite> {
        let tenant = scope.tenant();
        let key = self.data_key(scope).await?;
        let mut sealed = Vec::with_capacity(chunks.len());
        for (seq, c) in (0i64..).zip(chunks) {
            let payload = serde_json::to_vec(&SealedPayload {
                text: c.text.clone(),
                metadata: c.metadata.clone(),
            })
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sealed.push((
                seq,
                key.seal(&text_context(tenant, kb, doc, seq), &payload)?,
                key.seal(
                    &vector_context(tenant, kb, doc, seq),
                    &vector_bytes(&c.vector),
                )?,
            ));
        }

        let place = self.place(scope).await?;
        let mut tx = place.begin_write(tenant).await?;
        let exists = q(format!(
            "SELECT name FROM {} WHERE tenant_id = $1 AND name = $2",
            place.t("knowledge_bases")
        ))
        .bind(tenant.as_str())
        .bind(kb)
        .opt(&mut tx)
        .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("knowledge base {kb}")));
        }
        let removed = delete_chunks(&place, &mut tx, tenant, kb, doc).await?;
        let now = now();
        let replaced = q(format!(
            "UPDATE {} SET chunks = $4, bytes = $5, updated_at = $6
             WHERE tenant_id = $1 AND kb = $2 AND id = $3",
            place.t("kb_documents")
        ))
        .bind(tenant.as_str())
        .bind(kb)
        .bind(doc)
        .bind(chunks.len() as i64)
        .bind(bytes as i64)
        .bind(&now)
        .exec(&mut tx)
        .await?
            > 0;
        if !replaced {
            q(format!(
                "INSERT INTO {} (tenant_id, kb, id, chunks, bytes, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
                place.t("kb_documents")
            ))
            .bind(tenant.as_str())
            .bind(kb)
            .bind(doc)
            .bind(chunks.len() as i64)
            .bind(bytes as i64)
            .bind(&now)
            .exec(&mut tx)
            .await?;
        }
        let insert = format!(
            "INSERT INTO {} (tenant_id, kb, document, seq, sealed_text, sealed_vector)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            place.t("kb_chunks")
        );
        let mut added = Vec::with_capacity(sealed.len());
        for (seq, text, vector) in sealed {
            let row = q(insert.clone())
                .bind(tenant.as_str())
                .bind(kb)
                .bind(doc)
                .bind(seq)
                .bind(text)
                .bind(vector)
                .one(&mut tx)
                .await?;
            added.push(row.get("id")?);
        }
        tx.commit().await?;
        self.announced(tenant, "kb_documents", kb).await;
        if !removed.is_empty() {
            place.scrub().await?;
        }
        Ok(DocumentWrite {
            outcome: if replaced {
                PutOutcome::Replaced
            } else {
                PutOutcome::Created
            },
            removed,
            added,
        })
    }

    /// Deletes a document and its chunks, scrubbing them from disk. Returns
    /// the removed chunk ids, or `None` if there was no such document.
    pub async fn delete_document(
        &self,
        scope: &TenantScope,
        kb: &str,
        doc: &str,
    ) -> Result<Option<Vec<i64>>> {
        let tenant = scope.tenant();
        let place = self.place(scope).await?;
        let mut tx = place.begin(tenant).await?;
        let removed = delete_chunks(&place, &mut tx, tenant, kb, doc).await?;
        let deleted = q(format!(
            "DELETE FROM {} WHERE tenant_id = $1 AND kb = $2 AND id = $3",
            place.t("kb_documents")
        ))
        .bind(tenant.as_str())
        .bind(kb)
        .bind(doc)
        .exec(&mut tx)
        .await?;
        tx.commit().await?;
        if deleted == 0 {
            return Ok(None);
        }
        self.announced(tenant, "kb_documents", kb).await;
        place.scrub().await?;
        Ok(Some(removed))
    }

    pub async fn list_documents(
        &self,
        scope: &TenantScope,
        kb: &str,
    ) -> Result<Vec<DocumentRecord>> {
        let place = self.place(scope).await?;
        let rows = place
            .fetch(
                scope.tenant(),
                q(format!(
                    "SELECT id, chunks, bytes, created_at, updated_at FROM {}
                     WHERE tenant_id = $1 AND kb = $2 ORDER BY id",
                    place.t("kb_documents")
                ))
                .bind(scope.tenant().as_str())
                .bind(kb),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(DocumentRecord {
                    id: r.get("id")?,
                    chunks: r.get("chunks")?,
                    bytes: r.get("bytes")?,
                    created_at: r.get("created_at")?,
                    updated_at: r.get("updated_at")?,
                })
            })
            .collect()
    }

    /// Every chunk of a knowledge base, its vector and its text opened, to
    /// build its vector and keyword indexes.
    pub async fn knowledge_base_index(
        &self,
        scope: &TenantScope,
        kb: &str,
    ) -> Result<Vec<(i64, Vec<f32>, String)>> {
        let tenant = scope.tenant();
        let key = self.data_key(scope).await?;
        let place = self.place(scope).await?;
        let rows = place
            .fetch(
                tenant,
                q(format!(
                    "SELECT id, document, seq, sealed_vector, sealed_text FROM {} WHERE tenant_id = $1 AND kb = $2",
                    place.t("kb_chunks")
                ))
                .bind(tenant.as_str())
                .bind(kb),
            )
            .await?;
        rows.iter()
            .map(|r| {
                let doc: String = r.get("document")?;
                let seq: i64 = r.get("seq")?;
                let sealed: Vec<u8> = r.get("sealed_vector")?;
                let opened = key.open(&vector_context(tenant, kb, &doc, seq), &sealed)?;
                let sealed: Vec<u8> = r.get("sealed_text")?;
                let text = key.open(&text_context(tenant, kb, &doc, seq), &sealed)?;
                let payload: SealedPayload = serde_json::from_slice(&text)
                    .map_err(|e| StoreError::Corrupt(format!("chunk payload: {e}")))?;
                Ok((r.get("id")?, vector_from(&opened)?, payload.text))
            })
            .collect()
    }

    /// Opens the chunks an index search returned. The query filters by the
    /// scope's tenant and knowledge base, and each chunk is opened with the
    /// scope's key under a context naming the scope's tenant: a row of any
    /// other tenant fails authentication and is counted in `rejected`.
    pub async fn open_chunks(
        &self,
        scope: &TenantScope,
        kb: &str,
        ids: &[i64],
    ) -> Result<OpenedChunks> {
        if ids.is_empty() {
            return Ok(OpenedChunks::default());
        }
        let tenant = scope.tenant();
        let key = self.data_key(scope).await?;
        let place = self.place(scope).await?;
        let placeholders: Vec<String> = (3..ids.len() + 3).map(|i| format!("${i}")).collect();
        #[cfg(feature = "fault-injection")]
        let kb_filter = if crate::faults::tenant_filter_dropped() {
            "CAST($2 AS TEXT) IS NOT NULL"
        } else {
            "kb = $2"
        };
        #[cfg(not(feature = "fault-injection"))]
        let kb_filter = "kb = $2";
        let sql = format!(
            "SELECT id, tenant_id, kb, document, seq, sealed_text FROM {}
             WHERE {} AND {kb_filter} AND id IN ({})",
            place.t("kb_chunks"),
            tenant_filter(),
            placeholders.join(", ")
        );
        let mut query = q(sql).bind(tenant.as_str()).bind(kb);
        for id in ids {
            query = query.bind(*id);
        }
        let rows = place.fetch(tenant, query).await?;
        let mut opened = OpenedChunks::default();
        for r in &rows {
            let document: String = r.get("document")?;
            let seq: i64 = r.get("seq")?;
            let sealed: Vec<u8> = r.get("sealed_text")?;
            let (key, ctx) = self.chunk_key(scope, &key, r, kb, &document, seq).await?;
            match key.open(&ctx, &sealed) {
                Ok(bytes) => {
                    let payload: SealedPayload = serde_json::from_slice(&bytes)
                        .map_err(|e| StoreError::Corrupt(format!("chunk payload: {e}")))?;
                    opened.chunks.push(ChunkRecord {
                        id: r.get("id")?,
                        document,
                        seq,
                        text: payload.text,
                        metadata: payload.metadata,
                    });
                }
                Err(_) => opened.rejected += 1,
            }
        }
        // Best first, as the ids were given.
        opened
            .chunks
            .sort_by_key(|c| ids.iter().position(|id| *id == c.id));
        Ok(opened)
    }

    /// The key and context a chunk row is opened with: always the scope's.
    /// (The fault-injection build can take them from the row instead, to
    /// show that a test notices when this last layer is gone too.)
    async fn chunk_key(
        &self,
        scope: &TenantScope,
        key: &DataKey,
        _row: &Row,
        kb: &str,
        doc: &str,
        seq: i64,
    ) -> Result<(DataKey, SealContext)> {
        #[cfg(feature = "fault-injection")]
        if crate::faults::key_from_row() {
            let owner: String = _row.get("tenant_id")?;
            let row_kb: String = _row.get("kb")?;
            let owner = TenantId::parse(&owner).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let incarnation = self
                .active_incarnation(&owner)
                .await?
                .ok_or_else(|| StoreError::TenantGone(owner.to_string()))?;
            let key = self
                .data_key(&TenantScope::internal(owner.clone(), incarnation))
                .await?;
            return Ok((key, text_context(&owner, &row_kb, doc, seq)));
        }
        Ok((key.clone(), text_context(scope.tenant(), kb, doc, seq)))
    }
}

/// Deletes a document's chunks in `tx`; their ids, for the caller's index.
async fn delete_chunks(
    place: &Place,
    tx: &mut Tx,
    tenant: &TenantId,
    kb: &str,
    doc: &str,
) -> Result<Vec<i64>> {
    q(format!(
        "DELETE FROM {} WHERE tenant_id = $1 AND kb = $2 AND document = $3 RETURNING id",
        place.t("kb_chunks")
    ))
    .bind(tenant.as_str())
    .bind(kb)
    .bind(doc)
    .all(tx)
    .await?
    .iter()
    .map(|r| r.get("id"))
    .collect()
}
