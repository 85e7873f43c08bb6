-- Metering: one row per billable request (idempotent by tenant and
-- request id; raw rows are deleted after metering.event_retention_days),
-- and the hourly sums invoices and usage views read, written in the same
-- transaction as the event they add. Counts and names only, never content.
CREATE TABLE usage_events (
    tenant_id         TEXT NOT NULL,
    request_id        TEXT NOT NULL,
    incarnation       TEXT NOT NULL,
    principal         TEXT NOT NULL,
    source            TEXT,
    tags              TEXT NOT NULL,
    at_ms             INTEGER NOT NULL,
    kind              TEXT NOT NULL,
    model             TEXT NOT NULL,
    requests          INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    embedding_tokens  INTEGER NOT NULL,
    compute_us        INTEGER NOT NULL,
    bytes_in          INTEGER NOT NULL,
    bytes_out         INTEGER NOT NULL,
    units             INTEGER NOT NULL,
    byte_days         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, request_id)
);
CREATE INDEX usage_events_by_time ON usage_events (at_ms);

CREATE TABLE usage_hourly (
    tenant_id         TEXT NOT NULL,
    incarnation       TEXT NOT NULL,
    hour              INTEGER NOT NULL,
    kind              TEXT NOT NULL,
    model             TEXT NOT NULL,
    principal         TEXT NOT NULL,
    tags              TEXT NOT NULL,
    requests          INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    embedding_tokens  INTEGER NOT NULL,
    compute_us        INTEGER NOT NULL,
    bytes_in          INTEGER NOT NULL,
    bytes_out         INTEGER NOT NULL,
    units             INTEGER NOT NULL,
    byte_days         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, incarnation, hour, kind, model, principal, tags)
);
CREATE INDEX usage_hourly_by_hour ON usage_hourly (hour);
