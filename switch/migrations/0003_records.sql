-- Schema version 3 of the switch's PostgreSQL store.
--
-- `idempotency` and `transactions` become one table with one row per transaction identity
-- (41, 11, 7): a purchase or hold wrote two rows and two primary-key entries (its answer under
-- (MTI, identity), its slot under the identity), now it writes one. Measured on the 2-core
-- bench machine (benches/scale_out.sh, A/B): PostgreSQL's CPU per purchase 23.0 -> 18.1 us.
--
-- `answers`: the idempotency entries of the requests with this identity, usually one (a
-- reversal or completion sent with the original's STAN and date-time adds a second), each as
--   1 byte: length n of the MTI's encoding (the start of the entry's key before the identity)
--   n bytes: that encoding
--   4 bytes: length m of the entry, big-endian
--   m bytes: the entry (the engine's encoding)
-- `expires_at`: when the whole row may go, the latest expiry of its slot and answers; NULL
-- while the slot is an open hold. (An answer therefore stays replayable as long as its row.)
--
-- Replicas of schema version 2 read the dropped tables: stop them all before the first
-- replica of version 3 starts (README, "Scale-out", upgrades).
CREATE TABLE records (
    id             bytea PRIMARY KEY,
    slot           bytea,
    order_merchant text COLLATE "C",
    order_id       text COLLATE "C",
    answers        bytea NOT NULL,
    expires_at     bigint
);
CREATE INDEX records_expires ON records USING brin (expires_at);

-- An idempotency key is the MTI as a varint (one byte below 128, else two: MTIs are below
-- 16384) followed by the transaction identity.
WITH answers AS (
    SELECT substring(key FROM p + 1) AS id,
           max(expires_at) AS expires_at,
           string_agg(substring(int4send(p) FROM 4 FOR 1) || substring(key FOR p)
                          || int4send(length(entry)) || entry,
                      ''::bytea ORDER BY key) AS answers
    FROM (SELECT key, entry, expires_at,
                 CASE WHEN get_byte(key, 0) >= 128 THEN 2 ELSE 1 END AS p
          FROM idempotency) i
    GROUP BY 1
)
INSERT INTO records (id, slot, order_merchant, order_id, answers, expires_at)
SELECT coalesce(t.id, a.id), t.slot, t.order_merchant, t.order_id,
       coalesce(a.answers, ''::bytea),
       CASE WHEN t.id IS NOT NULL AND t.expires_at IS NULL THEN NULL
            ELSE greatest(t.expires_at, a.expires_at) END
FROM transactions t FULL JOIN answers a ON a.id = t.id;

DROP TABLE idempotency;
DROP TABLE transactions;
