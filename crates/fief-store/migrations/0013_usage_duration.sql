-- Each request's time from arrival to answer, microseconds (the consoles'
-- latency chart); 0 for events recorded before.
ALTER TABLE usage_events ADD COLUMN duration_us INTEGER NOT NULL DEFAULT 0;
ALTER TABLE usage_hourly ADD COLUMN duration_us INTEGER NOT NULL DEFAULT 0;
