-- The tenant tables API, pool tier: one shared table with a tenant column.
-- (Each bridge tenant gets its own table `items_<tenant>`, created on first
-- use; each silo tenant its own database file.) Values are sealed.
CREATE TABLE table_items (
    tenant_id  TEXT NOT NULL,
    tbl        TEXT NOT NULL,
    key        TEXT NOT NULL,
    sealed     BLOB NOT NULL,
    version    INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, tbl, key)
) STRICT;
