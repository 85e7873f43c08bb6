-- Private logs: each tenant's settings and sink, sealed with the tenant's
-- data key (an empty blob: not set), and the sink's delivery progress.
-- The records themselves are tenant content (`log_records`, placed by
-- tier with the other content tables).
CREATE TABLE log_config (
    tenant_id        TEXT PRIMARY KEY,
    incarnation      TEXT NOT NULL,
    sealed_settings  BLOB NOT NULL,
    sealed_sink      BLOB NOT NULL,
    delivered        INTEGER NOT NULL,
    skipped          INTEGER NOT NULL,
    failures         INTEGER NOT NULL,
    last_error       TEXT,
    last_delivery_ms INTEGER,
    next_ms          INTEGER NOT NULL,
    lease_holder     TEXT,
    lease_until      INTEGER NOT NULL
) STRICT;

-- The pool tier's log records (bridge and silo tenants' are created with
-- their place; the same DDL, placement.rs `content_ddl`).
CREATE TABLE log_records (
    tenant_id  TEXT NOT NULL,
    stream     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    at_ms      INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    kind       TEXT NOT NULL,
    model      TEXT NOT NULL,
    principal  TEXT NOT NULL,
    sealed     BLOB NOT NULL,
    PRIMARY KEY (tenant_id, stream, seq)
) STRICT;
CREATE INDEX log_records_by_time ON log_records (tenant_id, stream, at_ms);
