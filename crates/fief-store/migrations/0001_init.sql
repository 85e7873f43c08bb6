-- Platform metadata: tenants and their credentials. No tenant content here
-- except the wrapped data key, which only the master key opens.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    tier        TEXT NOT NULL CHECK (tier IN ('silo', 'bridge', 'pool')),
    tags        TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('active', 'offboarding')),
    wrapped_key BLOB NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    secret_hash BLOB NOT NULL,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
) STRICT;
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id);

-- Tenant models: metadata rows here, sealed bytes in the object store.
CREATE TABLE models (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    size_bytes  INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    signature   TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
) STRICT;
