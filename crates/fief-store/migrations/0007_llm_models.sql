-- The operator's foundation-model allowlist of a tenant (a JSON array of
-- model names or Key=Value tag matches); NULL: no allowlist.
ALTER TABLE tenants ADD COLUMN llm_models TEXT;
