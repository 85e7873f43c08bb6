-- Quotas: the operator's limits of a tenant (JSON; NULL: the tier's
-- defaults), the lower limits a tenant sets for its roles, keys and users,
-- and each level's budget spend per calendar month, so a restart does not
-- reset a month.
ALTER TABLE fief_platform.tenants ADD COLUMN quotas text;

CREATE TABLE fief_platform.quota_limits (
    tenant_id   text NOT NULL,
    incarnation text NOT NULL,
    subject     text NOT NULL,
    limits      text NOT NULL,
    PRIMARY KEY (tenant_id, incarnation, subject)
);

CREATE TABLE fief_platform.quota_spend (
    tenant_id   text NOT NULL,
    incarnation text NOT NULL,
    subject     text NOT NULL,
    month       text NOT NULL,
    spent       bigint NOT NULL,
    PRIMARY KEY (tenant_id, incarnation, subject, month)
);
