-- Knowledge bases. Names and document ids are addressing metadata, like
-- model names; chunk text, metadata and vectors are sealed with the
-- tenant's data key (bound to tenant, knowledge base, document and position).
CREATE TABLE knowledge_bases (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT;

CREATE TABLE kb_documents (
    tenant_id  TEXT NOT NULL,
    kb         TEXT NOT NULL,
    id         TEXT NOT NULL,
    chunks     INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, kb, id),
    FOREIGN KEY (tenant_id, kb) REFERENCES knowledge_bases (tenant_id, name) ON DELETE CASCADE
) STRICT;

-- AUTOINCREMENT: a chunk id is never reused, so an index entry that
-- outlives its chunk can never point at a newer one.
CREATE TABLE kb_chunks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id     TEXT NOT NULL,
    kb            TEXT NOT NULL,
    document      TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    sealed_text   BLOB NOT NULL,
    sealed_vector BLOB NOT NULL,
    FOREIGN KEY (tenant_id, kb, document) REFERENCES kb_documents (tenant_id, kb, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX kb_chunks_by_document ON kb_chunks (tenant_id, kb, document);
