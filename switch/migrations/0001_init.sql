-- Schema version 1 of the switch's PostgreSQL store (see switch/src/pg/mod.rs).
-- Amounts are integers in the currency's minor units; times are Unix seconds.

-- One row per card. `held` is the sum of open holds; `day`/`day_total` count the approved
-- debits of one UTC day (days since 1970-01-01) for the daily limit.
CREATE TABLE accounts (
    pan         text     PRIMARY KEY,
    expiry      text     NOT NULL CHECK (expiry ~ '^[0-9]{4}$'),
    status      text     NOT NULL CHECK (status IN ('active', 'blocked', 'lost', 'stolen')),
    currency    smallint NOT NULL,
    balance     bigint   NOT NULL,
    held        bigint   NOT NULL DEFAULT 0,
    daily_limit bigint   NOT NULL CHECK (daily_limit > 0),
    day         bigint   NOT NULL DEFAULT -9223372036854775808,
    day_total   bigint   NOT NULL DEFAULT 0
);

-- Merchant orders, unique by (merchant, order id). `paid_by`: the engine's encoding of the
-- payment holding a paid order.
CREATE TABLE orders (
    merchant_id text     NOT NULL,
    order_id    text     NOT NULL,
    amount      bigint   NOT NULL CHECK (amount > 0),
    currency    smallint NOT NULL,
    status      text     NOT NULL CHECK (status IN ('open', 'paid', 'cancelled')),
    paid_by     bytea,
    PRIMARY KEY (merchant_id, order_id)
);

-- The answer given to each idempotency key (MTI, 41, 11, 7), replayed to retransmissions
-- until `expires_at`. Key and entry are the engine's own encodings.
CREATE TABLE idempotency (
    key        bytea  PRIMARY KEY,
    entry      bytea  NOT NULL,
    expires_at bigint NOT NULL
);
-- BRIN, not B-tree: entries are written in roughly expiry order, and a B-tree's rightmost
-- page would be a point of contention between every inserting transaction.
CREATE INDEX idempotency_expires ON idempotency USING brin (expires_at);

-- Holds, purchases and late-original markers by transaction identity (41, 11, 7). An open
-- hold has no `expires_at`. `order_*`: the order the payment holds, read with the slot.
CREATE TABLE transactions (
    id             bytea  PRIMARY KEY,
    slot           bytea  NOT NULL,
    expires_at     bigint,
    order_merchant text,
    order_id       text
);
CREATE INDEX transactions_expires ON transactions USING brin (expires_at);

-- Every change of an account's balance or holds, in commit order per account: the balance
-- equals the sum of `balance_delta` (the import writes the opening balance). Append-only and
-- read by audits, so indexed by BRIN only: cheap to write, good enough to scan by time.
CREATE TABLE ledger (
    id            bigint    GENERATED ALWAYS AS IDENTITY,
    pan           text      NOT NULL,
    at            bigint    NOT NULL,
    balance_delta bigint    NOT NULL,
    held_delta    bigint    NOT NULL,
    balance       bigint    NOT NULL,
    held          bigint    NOT NULL
);
CREATE INDEX ledger_at ON ledger USING brin (at);

-- Blocks of approval codes, one per batch.
CREATE SEQUENCE approval_blocks;
