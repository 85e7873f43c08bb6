-- Tenant incarnations (a tenant id may be reused after offboarding; every
-- credential and data key belongs to one incarnation), key tags for
-- attribute-based trust policies, and a record of offboarded incarnations.
ALTER TABLE fief_platform.tenants
    ADD COLUMN incarnation text NOT NULL DEFAULT md5(random()::text || clock_timestamp()::text);
ALTER TABLE fief_platform.tenants ALTER COLUMN incarnation DROP DEFAULT;
-- 1: the data key is wrapped bound to the tenant id only (rewrapped at
-- start-up); 2: bound to the tenant id and the incarnation.
ALTER TABLE fief_platform.tenants ADD COLUMN key_format bigint NOT NULL DEFAULT 1;
ALTER TABLE fief_platform.tenants ADD COLUMN created_ms bigint NOT NULL DEFAULT 0;
UPDATE fief_platform.tenants
    SET created_ms = (extract(epoch FROM created_at::timestamptz) * 1000)::bigint;
ALTER TABLE fief_platform.tenants ADD COLUMN reused_after_ms bigint;

ALTER TABLE fief_platform.api_keys ADD COLUMN incarnation text NOT NULL DEFAULT '';
UPDATE fief_platform.api_keys k SET incarnation = t.incarnation
    FROM fief_platform.tenants t WHERE t.id = k.tenant_id;
ALTER TABLE fief_platform.api_keys ADD COLUMN tags text NOT NULL DEFAULT '{}';

CREATE TABLE fief_platform.offboarded_tenants (
    id            text NOT NULL,
    incarnation   text NOT NULL,
    offboarded_ms bigint NOT NULL,
    PRIMARY KEY (id, incarnation)
);
