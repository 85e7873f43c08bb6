-- Metering: one row per billable request (idempotent by tenant and
-- request id; raw rows are deleted after metering.event_retention_days),
-- and the hourly sums invoices and usage views read, written in the same
-- transaction as the event they add. Counts and names only, never content.
CREATE TABLE fief_platform.usage_events (
    tenant_id         text NOT NULL,
    request_id        text NOT NULL,
    incarnation       text NOT NULL,
    principal         text NOT NULL,
    source            text,
    tags              text NOT NULL,
    at_ms             bigint NOT NULL,
    kind              text NOT NULL,
    model             text NOT NULL,
    requests          bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    embedding_tokens  bigint NOT NULL,
    compute_us        bigint NOT NULL,
    bytes_in          bigint NOT NULL,
    bytes_out         bigint NOT NULL,
    units             bigint NOT NULL,
    byte_days         bigint NOT NULL,
    PRIMARY KEY (tenant_id, request_id)
);
CREATE INDEX usage_events_by_time ON fief_platform.usage_events (at_ms);

CREATE TABLE fief_platform.usage_hourly (
    tenant_id         text NOT NULL,
    incarnation       text NOT NULL,
    hour              bigint NOT NULL,
    kind              text NOT NULL,
    model             text NOT NULL,
    principal         text NOT NULL,
    tags              text NOT NULL,
    requests          bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    embedding_tokens  bigint NOT NULL,
    compute_us        bigint NOT NULL,
    bytes_in          bigint NOT NULL,
    bytes_out         bigint NOT NULL,
    units             bigint NOT NULL,
    byte_days         bigint NOT NULL,
    PRIMARY KEY (tenant_id, incarnation, hour, kind, model, principal, tags)
);
CREATE INDEX usage_hourly_by_hour ON fief_platform.usage_hourly (hour);
