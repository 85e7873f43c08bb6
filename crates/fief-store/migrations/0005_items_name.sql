-- Every placement names its content tables alike (see src/placement.rs):
-- the pool tier's table items are in `items`, as in a bridge tenant's
-- `t_<tenant>_items` and a silo tenant's file.
ALTER TABLE table_items RENAME TO items;
