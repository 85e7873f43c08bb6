-- Quotas: the operator's limits of a tenant (JSON; NULL: the tier's
-- defaults), the lower limits a tenant sets for its roles, keys and users,
-- and each level's budget spend per calendar month, so a restart does not
-- reset a month.
ALTER TABLE tenants ADD COLUMN quotas TEXT;

CREATE TABLE quota_limits (
    tenant_id   TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    subject     TEXT NOT NULL,
    limits      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, incarnation, subject)
);

CREATE TABLE quota_spend (
    tenant_id   TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    subject     TEXT NOT NULL,
    month       TEXT NOT NULL,
    spent       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, incarnation, subject, month)
);
