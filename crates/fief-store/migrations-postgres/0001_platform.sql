-- Platform metadata on PostgreSQL: tenants and their credentials, and the
-- session signing keys. No tenant content here except the wrapped data key,
-- which only the master key opens. Tenant content lives in `fief_pool`,
-- `fief_t_<tenant>` schemas and silo databases (src/placement.rs), created
-- by the gateway with the runtime role's grants.
CREATE SCHEMA IF NOT EXISTS fief_platform;

CREATE TABLE fief_platform.tenants (
    id          text PRIMARY KEY,
    tier        text NOT NULL CHECK (tier IN ('silo', 'bridge', 'pool')),
    tags        text NOT NULL,
    status      text NOT NULL CHECK (status IN ('active', 'offboarding')),
    wrapped_key bytea NOT NULL,
    created_at  text NOT NULL
);

CREATE TABLE fief_platform.api_keys (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES fief_platform.tenants (id) ON DELETE CASCADE,
    secret_hash bytea NOT NULL,
    name        text NOT NULL,
    role        text,
    created_at  text NOT NULL,
    revoked_at  text
);
CREATE INDEX api_keys_by_tenant ON fief_platform.api_keys (tenant_id);

CREATE TABLE fief_platform.signing_keys (
    kid         text PRIMARY KEY,
    sealed      bytea NOT NULL,
    created_at  text NOT NULL
);
