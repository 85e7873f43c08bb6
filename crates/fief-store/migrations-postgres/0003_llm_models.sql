-- The operator's foundation-model allowlist of a tenant (a JSON array of
-- model names or Key=Value tag matches); NULL: no allowlist.
ALTER TABLE fief_platform.tenants ADD COLUMN llm_models text;
