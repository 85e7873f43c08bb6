-- A silo tenant's own bucket for its objects (NULL: the shared one).
ALTER TABLE fief_platform.tenants ADD COLUMN bucket TEXT;
