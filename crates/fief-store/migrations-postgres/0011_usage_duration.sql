-- Each request's time from arrival to answer, microseconds (the consoles'
-- latency chart); 0 for events recorded before.
ALTER TABLE fief_platform.usage_events ADD COLUMN duration_us bigint NOT NULL DEFAULT 0;
ALTER TABLE fief_platform.usage_hourly ADD COLUMN duration_us bigint NOT NULL DEFAULT 0;
