//! Knowledge bases: documents split into chunks, each chunk's text,
//! metadata and vector sealed with the tenant's data key. Every accessor
//! takes a [`TenantScope`] and filters by its tenant; the seal binds each
//! chunk to (tenant, knowledge base, document, position), so a row that
//! reached the wrong tenant by a query bug still cannot be opened.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use fief_core::TenantId;
use fief_crypto::{DataKey, SealContext};

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
    if bytes.len() % 4 != 0 {
        return Err(StoreError::Corrupt("chunk vector length".into()));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn kb_from_row(row: &SqliteRow) -> Result<KnowledgeBaseRecord> {
    Ok(KnowledgeBaseRecord {
        name: row.try_get("name")?,
        documents: row.try_get("documents")?,
        chunks: row.try_get("chunks")?,
        created_at: row.try_get("created_at")?,
    })
}

const KB_SELECT: &str = "SELECT k.name, k.created_at,
        (SELECT COUNT(*) FROM kb_documents d WHERE d.tenant_id = k.tenant_id AND d.kb = k.name) AS documents,
        (SELECT COALESCE(SUM(d.chunks), 0) FROM kb_documents d WHERE d.tenant_id = k.tenant_id AND d.kb = k.name) AS chunks
     FROM knowledge_bases k";

impl Store {
    pub async fn create_knowledge_base(
        &self,
        scope: &TenantScope,
        name: &str,
    ) -> Result<KnowledgeBaseRecord> {
        let created_at = now();
        let inserted = sqlx::query(
            "INSERT INTO knowledge_bases (tenant_id, name, created_at) VALUES (?, ?, ?)
             ON CONFLICT (tenant_id, name) DO NOTHING",
        )
        .bind(scope.tenant().as_str())
        .bind(name)
        .bind(&created_at)
        .execute(&self.db)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("knowledge base {name}")));
        }
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
        sqlx::query(&format!(
            "{KB_SELECT} WHERE k.tenant_id = ? ORDER BY k.name"
        ))
        .bind(scope.tenant().as_str())
        .fetch_all(&self.db)
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
        sqlx::query(&format!("{KB_SELECT} WHERE k.tenant_id = ? AND k.name = ?"))
            .bind(scope.tenant().as_str())
            .bind(name)
            .fetch_optional(&self.db)
            .await?
            .as_ref()
            .map(kb_from_row)
            .transpose()
    }

    /// Deletes a knowledge base with its documents and chunks, and scrubs
    /// them from the database files. Returns false if it did not exist.
    pub async fn delete_knowledge_base(&self, scope: &TenantScope, name: &str) -> Result<bool> {
        let tenant = scope.tenant().as_str();
        let mut tx = self.db.begin().await?;
        sqlx::query("DELETE FROM kb_chunks WHERE tenant_id = ? AND kb = ?")
            .bind(tenant)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM knowledge_bases WHERE tenant_id = ? AND name = ?")
            .bind(tenant)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.scrub().await?;
        Ok(deleted.rows_affected() > 0)
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

        let mut tx = self.db.begin().await?;
        let exists: Option<(i64,)> =
            sqlx::query_as("SELECT 1 FROM knowledge_bases WHERE tenant_id = ? AND name = ?")
                .bind(tenant.as_str())
                .bind(kb)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("knowledge base {kb}")));
        }
        let removed: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM kb_chunks WHERE tenant_id = ? AND kb = ? AND document = ? RETURNING id",
        )
        .bind(tenant.as_str())
        .bind(kb)
        .bind(doc)
        .fetch_all(&mut *tx)
        .await?;
        let now = now();
        let replaced = sqlx::query(
            "UPDATE kb_documents SET chunks = ?, bytes = ?, updated_at = ?
             WHERE tenant_id = ? AND kb = ? AND id = ?",
        )
        .bind(chunks.len() as i64)
        .bind(bytes as i64)
        .bind(&now)
        .bind(tenant.as_str())
        .bind(kb)
        .bind(doc)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !replaced {
            sqlx::query(
                "INSERT INTO kb_documents (tenant_id, kb, id, chunks, bytes, created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(tenant.as_str())
            .bind(kb)
            .bind(doc)
            .bind(chunks.len() as i64)
            .bind(bytes as i64)
            .bind(&now)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        }
        let mut added = Vec::with_capacity(sealed.len());
        for (seq, text, vector) in sealed {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO kb_chunks (tenant_id, kb, document, seq, sealed_text, sealed_vector)
                 VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(tenant.as_str())
            .bind(kb)
            .bind(doc)
            .bind(seq)
            .bind(text)
            .bind(vector)
            .fetch_one(&mut *tx)
            .await?;
            added.push(id);
        }
        tx.commit().await?;
        if !removed.is_empty() {
            self.scrub().await?;
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
        let tenant = scope.tenant().as_str();
        let mut tx = self.db.begin().await?;
        let removed: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM kb_chunks WHERE tenant_id = ? AND kb = ? AND document = ? RETURNING id",
        )
        .bind(tenant)
        .bind(kb)
        .bind(doc)
        .fetch_all(&mut *tx)
        .await?;
        let deleted =
            sqlx::query("DELETE FROM kb_documents WHERE tenant_id = ? AND kb = ? AND id = ?")
                .bind(tenant)
                .bind(kb)
                .bind(doc)
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        if deleted.rows_affected() == 0 {
            return Ok(None);
        }
        self.scrub().await?;
        Ok(Some(removed))
    }

    pub async fn list_documents(
        &self,
        scope: &TenantScope,
        kb: &str,
    ) -> Result<Vec<DocumentRecord>> {
        let rows = sqlx::query(
            "SELECT id, chunks, bytes, created_at, updated_at FROM kb_documents
             WHERE tenant_id = ? AND kb = ? ORDER BY id",
        )
        .bind(scope.tenant().as_str())
        .bind(kb)
        .fetch_all(&self.db)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DocumentRecord {
                    id: r.try_get("id")?,
                    chunks: r.try_get("chunks")?,
                    bytes: r.try_get("bytes")?,
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    /// Every vector of a knowledge base, opened, to build its index.
    pub async fn knowledge_base_vectors(
        &self,
        scope: &TenantScope,
        kb: &str,
    ) -> Result<Vec<(i64, Vec<f32>)>> {
        let tenant = scope.tenant();
        let key = self.data_key(scope).await?;
        let rows = sqlx::query(
            "SELECT id, document, seq, sealed_vector FROM kb_chunks WHERE tenant_id = ? AND kb = ?",
        )
        .bind(tenant.as_str())
        .bind(kb)
        .fetch_all(&self.db)
        .await?;
        rows.iter()
            .map(|r| {
                let doc: String = r.try_get("document")?;
                let sealed: Vec<u8> = r.try_get("sealed_vector")?;
                let opened = key.open(
                    &vector_context(tenant, kb, &doc, r.try_get("seq")?),
                    &sealed,
                )?;
                Ok((r.try_get("id")?, vector_from(&opened)?))
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
        let placeholders = vec!["?"; ids.len()].join(", ");
        #[cfg(feature = "fault-injection")]
        let filter = if crate::faults::tenant_filter_dropped() {
            "(? IS NOT NULL AND ? IS NOT NULL)"
        } else {
            "tenant_id = ? AND kb = ?"
        };
        #[cfg(not(feature = "fault-injection"))]
        let filter = "tenant_id = ? AND kb = ?";
        let sql = format!(
            "SELECT id, tenant_id, kb, document, seq, sealed_text FROM kb_chunks
             WHERE ({filter}) AND id IN ({placeholders})"
        );
        let mut query = sqlx::query(&sql).bind(tenant.as_str()).bind(kb);
        for id in ids {
            query = query.bind(id);
        }
        let rows = query.fetch_all(&self.db).await?;
        let mut opened = OpenedChunks::default();
        for r in &rows {
            let document: String = r.try_get("document")?;
            let seq: i64 = r.try_get("seq")?;
            let sealed: Vec<u8> = r.try_get("sealed_text")?;
            let (key, ctx) = self.chunk_key(scope, &key, r, kb, &document, seq).await?;
            match key.open(&ctx, &sealed) {
                Ok(bytes) => {
                    let payload: SealedPayload = serde_json::from_slice(&bytes)
                        .map_err(|e| StoreError::Corrupt(format!("chunk payload: {e}")))?;
                    opened.chunks.push(ChunkRecord {
                        id: r.try_get("id")?,
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
        _row: &SqliteRow,
        kb: &str,
        doc: &str,
        seq: i64,
    ) -> Result<(DataKey, SealContext)> {
        #[cfg(feature = "fault-injection")]
        if crate::faults::key_from_row() {
            let owner: String = _row.try_get("tenant_id")?;
            let row_kb: String = _row.try_get("kb")?;
            let owner = TenantId::parse(&owner).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let key = self.data_key_of(&owner).await?;
            return Ok((key, text_context(&owner, &row_kb, doc, seq)));
        }
        Ok((key.clone(), text_context(scope.tenant(), kb, doc, seq)))
    }

    /// Overwrites freed pages and truncates the write-ahead log, so deleted
    /// chunks leave the database files at once (with `secure_delete`, SQLite
    /// zeroes freed content; the checkpoint moves it out of the WAL).
    pub(crate) async fn scrub(&self) -> Result<()> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.db)
            .await?;
        Ok(())
    }
}
