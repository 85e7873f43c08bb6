-- Coherence between replicas: every change to a row some replica caches
-- (tenants, keys, signing keys, quota settings, log settings; in the
-- content schemas models, policies, roles, knowledge bases and documents)
-- appends a row here and notifies `fief_changes`, in the changing
-- transaction itself (a trigger), so no committed change goes unannounced.
-- Appends take one transaction-scoped advisory lock: changes commit in
-- `seq` order, so a replica that has applied up to `seq` has missed
-- nothing below it.
CREATE TABLE fief_platform.changes (
    seq     BIGSERIAL PRIMARY KEY,
    kind    TEXT NOT NULL,
    tenant  TEXT,
    subject TEXT,
    -- The replica whose connection made the change (its connections set
    -- `fief.origin`): that replica already forgot what it changed, so it
    -- skips its own rows. A change made by any other session has none.
    origin  TEXT DEFAULT NULLIF(current_setting('fief.origin', true), ''),
    at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- SECURITY DEFINER: the runtime role may read the log but not write it.
CREATE FUNCTION fief_platform.note_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = fief_platform, pg_temp AS $$
DECLARE
    r jsonb;
    n bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN r := to_jsonb(OLD); ELSE r := to_jsonb(NEW); END IF;
    PERFORM pg_advisory_xact_lock(4607736914032211969);
    INSERT INTO fief_platform.changes (kind, tenant, subject)
    VALUES (TG_TABLE_NAME,
            CASE WHEN TG_ARGV[0] <> '' THEN r ->> TG_ARGV[0] END,
            CASE WHEN TG_NARGS > 1 THEN r ->> TG_ARGV[1] END)
    RETURNING seq INTO n;
    PERFORM pg_notify('fief_changes', n::text);
    RETURN NULL;
END $$;

CREATE TRIGGER fief_change AFTER INSERT OR UPDATE OR DELETE ON fief_platform.tenants
    FOR EACH ROW EXECUTE FUNCTION fief_platform.note_change('id');
CREATE TRIGGER fief_change AFTER INSERT OR UPDATE OR DELETE ON fief_platform.api_keys
    FOR EACH ROW EXECUTE FUNCTION fief_platform.note_change('tenant_id', 'id');
CREATE TRIGGER fief_change AFTER INSERT OR UPDATE OR DELETE ON fief_platform.signing_keys
    FOR EACH ROW EXECUTE FUNCTION fief_platform.note_change('', 'kid');
CREATE TRIGGER fief_change AFTER INSERT OR UPDATE OR DELETE ON fief_platform.quota_limits
    FOR EACH ROW EXECUTE FUNCTION fief_platform.note_change('tenant_id');
-- Only the settings and the sink: delivery progress is not cached.
CREATE TRIGGER fief_change AFTER INSERT OR DELETE OR UPDATE OF sealed_settings, sealed_sink
    ON fief_platform.log_config
    FOR EACH ROW EXECUTE FUNCTION fief_platform.note_change('tenant_id');

-- A change the store announces itself: one in a silo tenant's own
-- database, after it committed there.
CREATE FUNCTION fief_platform.announce_change(k text, t text, s text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = fief_platform, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(4607736914032211969);
    INSERT INTO fief_platform.changes (kind, tenant, subject) VALUES (k, t, s) RETURNING seq INTO n;
    PERFORM pg_notify('fief_changes', n::text);
END $$;
