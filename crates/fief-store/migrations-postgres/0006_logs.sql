-- Private logs: each tenant's settings and sink, sealed with the tenant's
-- data key (an empty value: not set), and the sink's delivery progress.
-- The records themselves are tenant content (`log_records`, placed by
-- tier with the other content tables).
CREATE TABLE fief_platform.log_config (
    tenant_id        TEXT PRIMARY KEY,
    incarnation      TEXT NOT NULL,
    sealed_settings  BYTEA NOT NULL,
    sealed_sink      BYTEA NOT NULL,
    delivered        BIGINT NOT NULL,
    skipped          BIGINT NOT NULL,
    failures         BIGINT NOT NULL,
    last_error       TEXT,
    last_delivery_ms BIGINT,
    next_ms          BIGINT NOT NULL,
    lease_holder     TEXT,
    lease_until      BIGINT NOT NULL
);
