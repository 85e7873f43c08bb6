-- Tenant-written authorisation: policy documents and roles (Cedar text,
-- validated when written). Read by the authorisation layer to compile each
-- tenant's policy set.
CREATE TABLE policies (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
) STRICT;

CREATE TABLE roles (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    trust_policy     TEXT NOT NULL,
    policies         TEXT NOT NULL, -- JSON array of Cedar documents
    external_id      TEXT,
    max_session_secs INTEGER,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT;

-- A scoped key has only its role's permissions.
ALTER TABLE api_keys ADD COLUMN role TEXT;

-- Resource tags for attribute-based policies (JSON object of strings).
ALTER TABLE models ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';

-- Session-token signing keys (Ed25519, PKCS#8), sealed under the master key.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    sealed      BLOB NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;
