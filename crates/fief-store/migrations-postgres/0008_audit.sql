-- One audit chain for every replica of a deployment. Appends are
-- serialised by a transaction-scoped advisory lock (the next entry links
-- to the committed head, so the order is the commit order); the runtime
-- role may only INSERT and SELECT (granted at start-up), so a replica
-- cannot rewrite or remove what it wrote. The owner role can: anchors of
-- the head, kept in the object store, show a truncated tail.
CREATE TABLE fief_platform.audit_log (
    seq      BIGINT PRIMARY KEY,
    ts_ms    BIGINT NOT NULL,
    kind     TEXT NOT NULL,
    tenant   TEXT,
    decision TEXT NOT NULL,
    -- The entry's exact JSON bytes (what `hash` covers), as the file log
    -- writes them.
    body     TEXT NOT NULL,
    hash     TEXT NOT NULL
);
-- The operator's filters: newest entries of a tenant, of a decision, or
-- in a time range.
CREATE INDEX audit_log_by_tenant ON fief_platform.audit_log (tenant, seq);
CREATE INDEX audit_log_by_decision ON fief_platform.audit_log (decision, seq);
CREATE INDEX audit_log_by_time ON fief_platform.audit_log (ts_ms);
