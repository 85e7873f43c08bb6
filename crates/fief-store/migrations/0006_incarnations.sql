-- Tenant incarnations (a tenant id may be reused after offboarding; every
-- credential and data key belongs to one incarnation), key tags for
-- attribute-based trust policies, and a record of offboarded incarnations.
ALTER TABLE tenants ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';
UPDATE tenants SET incarnation = lower(hex(randomblob(16)));
-- 1: the data key is wrapped bound to the tenant id only (rewrapped at
-- start-up); 2: bound to the tenant id and the incarnation.
ALTER TABLE tenants ADD COLUMN key_format INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tenants ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0;
UPDATE tenants SET created_ms = CAST(strftime('%s', created_at) AS INTEGER) * 1000;
-- When an earlier incarnation of the same id was offboarded, if any.
ALTER TABLE tenants ADD COLUMN reused_after_ms INTEGER;

ALTER TABLE api_keys ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';
UPDATE api_keys SET incarnation =
    (SELECT t.incarnation FROM tenants t WHERE t.id = api_keys.tenant_id);
ALTER TABLE api_keys ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';

CREATE TABLE offboarded_tenants (
    id            TEXT NOT NULL,
    incarnation   TEXT NOT NULL,
    offboarded_ms INTEGER NOT NULL,
    PRIMARY KEY (id, incarnation)
) STRICT;
