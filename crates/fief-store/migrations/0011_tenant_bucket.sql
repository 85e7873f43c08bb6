-- A silo tenant's own bucket for its objects (NULL: the shared one).
ALTER TABLE tenants ADD COLUMN bucket TEXT;
