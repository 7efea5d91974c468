-- Schema version 2 of the switch's PostgreSQL store.

-- Card numbers, merchant ids and order ids are ASCII keys, only ever compared for equality
-- and sorted for lock order: the "C" collation compares them byte by byte instead of by the
-- database's locale rules (C.UTF-8 on Debian, which PostgreSQL compares through strcoll).
-- The indexes on them are rebuilt.
ALTER TABLE accounts ALTER COLUMN pan TYPE text COLLATE "C";
ALTER TABLE orders
    ALTER COLUMN merchant_id TYPE text COLLATE "C",
    ALTER COLUMN order_id TYPE text COLLATE "C";
ALTER TABLE transactions
    ALTER COLUMN order_merchant TYPE text COLLATE "C",
    ALTER COLUMN order_id TYPE text COLLATE "C";
ALTER TABLE ledger ALTER COLUMN pan TYPE text COLLATE "C";

-- One `nextval` now reserves 16 blocks of approval codes: a store worker asks once every
-- 16 batches instead of every batch. A switch of schema version 1 still takes one block per
-- value, inside the 16 reserved, so both can run side by side during an upgrade.
ALTER SEQUENCE approval_blocks INCREMENT BY 16;
