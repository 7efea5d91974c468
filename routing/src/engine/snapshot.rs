//! A shard's whole state as bytes ([`Shard::snapshot`]) and back ([`Shard::restore`]).
//!
//! Layout (version 1), after the magic `RSNP` and the version byte: shard index and count,
//! the approval counter, the statistics counters, the last sequence number sent to and
//! taken from each shard, then accounts, orders, idempotency entries and transaction slots,
//! each a count followed by its entries in ascending key order. The order makes the bytes a
//! function of the state alone: two shards in equal states give identical snapshots, in any
//! process, whatever their hash maps' iteration order. Encodings of the values are those of
//! [`crate::wire`] (PANs in clear: the file must be protected like the journal).

use super::{
    AccountState, Fingerprint, IdemEntry, IdemKey, OrderKey, OrderState, PayKind, PendingReply,
    PendingTxn, Shard, ShardStats, TxnRecord, TxnSlot, TxnState,
};
use crate::data::{CardStatus, OrderStatus};
use crate::engine::EngineConfig;
use crate::message::{ProcessingCode, Request, Response, TxnId};
use crate::pan::Pan;
use crate::placement;
use crate::time::Yymm;
use crate::wire::{
    put_i64, put_opt, put_u8, put_usize, put_varint, Flags, Reader, Wire, WireError,
    SNAPSHOT_MAGIC as MAGIC, SNAPSHOT_VERSION,
};

impl Shard {
    /// Appends the shard's complete state to `out` (the layout is in the module docs): what a
    /// replay needs to continue from here, byte-identical for equal states. Its size is
    /// proportional to the state; it sorts the keys, so it costs `O(n log n)`.
    ///
    /// Take it between inputs (any time [`Shard::apply`] is not running): a shard has no
    /// other pending work.
    pub fn snapshot(&self, out: &mut Vec<u8>) {
        debug_assert!(self.local.is_empty(), "local messages outlive no input");
        out.extend_from_slice(MAGIC);
        put_u8(out, SNAPSHOT_VERSION);
        put_usize(out, self.id);
        put_usize(out, self.shard_count);
        put_varint(out, self.approvals);
        put_stats(out, &self.stats);
        for &s in self.sent.iter().chain(&self.received) {
            put_varint(out, s);
        }

        // Keys are copied next to the value references before sorting: a sort comparing
        // through references into the maps missed the cache on almost every comparison (a
        // fifth of a snapshot builder's time with a million entries, `perf`).
        let mut accounts: Vec<_> = self.accounts.iter().map(|(k, v)| (*k, v)).collect();
        accounts.sort_unstable_by_key(|&(k, _)| k);
        put_usize(out, accounts.len());
        for (pan, a) in accounts {
            pan.put(out);
            a.put(out);
        }

        let mut orders: Vec<_> = self.orders.iter().collect();
        orders.sort_unstable_by_key(|&(k, _)| k);
        put_usize(out, orders.len());
        for (key, o) in orders {
            key.put(out);
            o.put(out);
        }

        let mut idem: Vec<_> = self.idem.iter().map(|(k, v)| (*k, v)).collect();
        idem.sort_unstable_by_key(|&(k, _)| k);
        put_usize(out, idem.len());
        for (key, e) in idem {
            key.put(out);
            e.put(out);
        }

        let mut txns: Vec<_> = self.txns.iter().map(|(k, v)| (*k, v)).collect();
        txns.sort_unstable_by_key(|&(k, _)| k);
        put_usize(out, txns.len());
        for (txn, slot) in txns {
            txn.put(out);
            slot.put(out);
        }
    }

    /// Shard `id` of `shard_count` from a [`Shard::snapshot`] of that same shard. Refuses
    /// bytes that are not a complete, canonical snapshot of it (wrong shard or count,
    /// truncated, entries out of order or on the wrong shard, trailing bytes), naming what
    /// and where, never the bytes. `config` is today's: the snapshot holds state, not
    /// settings.
    pub fn restore(
        id: usize,
        shard_count: usize,
        config: EngineConfig,
        bytes: &[u8],
    ) -> Result<Shard, WireError> {
        let mut r = Reader::new(bytes);
        if r.array::<4>("snapshot magic").ok().as_ref() != Some(MAGIC) {
            return Err(WireError::Magic);
        }
        let found = r.u8("snapshot version")?;
        if found != SNAPSHOT_VERSION {
            return Err(WireError::Version {
                found,
                supported: SNAPSHOT_VERSION,
            });
        }
        let found_id = r.usize("shard index")?;
        let found_count = r.usize("shard count")?;
        let mut shard = Shard::new(id, shard_count, config);
        if found_id != id || found_count != shard.shard_count {
            return Err(WireError::WrongShard {
                found_id,
                found_count,
                id,
                count: shard.shard_count,
            });
        }
        let n = shard.shard_count;
        shard.approvals = r.varint("approval counter")?;
        shard.stats = get_stats(&mut r)?;
        for s in &mut shard.sent {
            *s = r.varint("sent sequence number")?;
        }
        for s in &mut shard.received {
            *s = r.varint("received sequence number")?;
        }

        let count = r.count("account count")?;
        shard.accounts.reserve(count);
        let mut prev: Option<Pan> = None;
        for _ in 0..count {
            let at = r.offset();
            let pan = Pan::get(&mut r)?;
            check_order(&mut prev, pan, "account", at)?;
            let owner = placement::shard_for_pan(pan.as_bytes(), n);
            check_owner(owner, id, "account", at)?;
            shard.accounts.insert(pan, AccountState::get(&mut r)?);
        }

        let count = r.count("order count")?;
        shard.orders.reserve(count);
        let mut prev: Option<OrderKey> = None;
        for _ in 0..count {
            let at = r.offset();
            let key = OrderKey::get(&mut r)?;
            check_order(&mut prev, key.clone(), "order", at)?;
            check_owner(key.shard(n), id, "order", at)?;
            shard.orders.insert(key, OrderState::get(&mut r)?);
        }

        let count = r.count("idempotency entry count")?;
        shard.idem.reserve(count);
        let mut prev: Option<IdemKey> = None;
        for _ in 0..count {
            let at = r.offset();
            let key = IdemKey::get(&mut r)?;
            check_order(&mut prev, key, "idempotency entry", at)?;
            shard.idem.insert(key, IdemEntry::get(&mut r)?);
        }

        let count = r.count("transaction count")?;
        shard.txns.reserve(count);
        let mut prev: Option<TxnId> = None;
        for _ in 0..count {
            let at = r.offset();
            let txn = TxnId::get(&mut r)?;
            check_order(&mut prev, txn, "transaction", at)?;
            check_owner(txn.shard(n), id, "transaction", at)?;
            shard.txns.insert(txn, TxnSlot::get(&mut r)?);
        }
        r.finish("snapshot")?;
        Ok(shard)
    }
}

/// Keys must be strictly ascending: sorted, no key twice.
fn check_order<K: Ord>(
    prev: &mut Option<K>,
    key: K,
    what: &'static str,
    offset: usize,
) -> Result<(), WireError> {
    if prev.as_ref().is_some_and(|p| *p >= key) {
        return Err(WireError::Unordered { what, offset });
    }
    *prev = Some(key);
    Ok(())
}

fn check_owner(
    owner: usize,
    id: usize,
    what: &'static str,
    offset: usize,
) -> Result<(), WireError> {
    if owner != id {
        return Err(WireError::Misplaced {
            what,
            offset,
            owner,
        });
    }
    Ok(())
}

/// The counters (the sizes are recomputed from the maps).
fn put_stats(out: &mut Vec<u8>, s: &ShardStats) {
    for v in [
        s.requests,
        s.peer_messages,
        s.replies,
        s.replays,
        s.parked,
        s.content_mismatches,
        s.purged,
        s.duplicate_peer_messages,
        s.peer_sequence_gaps,
        s.foreign_peer_messages,
    ] {
        put_varint(out, v);
    }
}

fn get_stats(r: &mut Reader<'_>) -> Result<ShardStats, WireError> {
    Ok(ShardStats {
        requests: r.varint("statistics")?,
        peer_messages: r.varint("statistics")?,
        replies: r.varint("statistics")?,
        replays: r.varint("statistics")?,
        parked: r.varint("statistics")?,
        content_mismatches: r.varint("statistics")?,
        purged: r.varint("statistics")?,
        duplicate_peer_messages: r.varint("statistics")?,
        peer_sequence_gaps: r.varint("statistics")?,
        foreign_peer_messages: r.varint("statistics")?,
        ..ShardStats::default()
    })
}

/// A small closed enum as one byte, its variants in `ALL` order.
macro_rules! byte_enum {
    ($ty:ty, $what:literal, [$($v:path),+ $(,)?]) => {
        impl Wire for $ty {
            fn put(&self, out: &mut Vec<u8>) {
                let all = [$($v),+];
                let i = all.iter().position(|v| v == self).unwrap_or(0);
                put_u8(out, i as u8);
            }
            fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
                let offset = r.offset();
                let all = [$($v),+];
                all.get(usize::from(r.u8($what)?))
                    .copied()
                    .ok_or(WireError::UnknownTag { what: $what, offset })
            }
        }
    };
}

byte_enum!(
    CardStatus,
    "card status",
    [
        CardStatus::Active,
        CardStatus::Blocked,
        CardStatus::Lost,
        CardStatus::Stolen,
    ]
);
byte_enum!(
    OrderStatus,
    "order status",
    [OrderStatus::Open, OrderStatus::Paid, OrderStatus::Cancelled]
);
byte_enum!(PayKind, "payment kind", [PayKind::Hold, PayKind::Purchase]);

impl Wire for AccountState {
    fn put(&self, out: &mut Vec<u8>) {
        self.expiry.put(out);
        self.status.put(out);
        self.currency.put(out);
        for v in [
            self.balance,
            self.held,
            self.daily_limit,
            self.day,
            self.day_total,
        ] {
            put_i64(out, v);
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(Self {
            expiry: Yymm::get(r)?,
            status: CardStatus::get(r)?,
            currency: r.u16("currency")?,
            balance: r.i64("balance")?,
            held: r.i64("held")?,
            daily_limit: r.i64("daily limit")?,
            day: r.i64("day")?,
            day_total: r.i64("day total")?,
        })
    }
}

impl Wire for OrderState {
    fn put(&self, out: &mut Vec<u8>) {
        put_i64(out, self.amount);
        self.currency.put(out);
        self.status.put(out);
        Flags::of(&[self.paid_by.is_some()]).put(out);
        put_opt(out, &self.paid_by);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let amount = r.i64("amount")?;
        let currency = r.u16("currency")?;
        let status = OrderStatus::get(r)?;
        let f = Flags::get(r, 1, "order flags")?;
        Ok(Self {
            amount,
            currency,
            status,
            paid_by: f.take(0, r)?,
        })
    }
}

impl Wire for Fingerprint {
    fn put(&self, out: &mut Vec<u8>) {
        Flags::of(&[
            self.pan.is_some(),
            self.processing_code.is_some(),
            self.amount.is_some(),
            self.currency.is_some(),
        ])
        .put(out);
        put_opt(out, &self.pan);
        put_opt(out, &self.processing_code);
        put_opt(out, &self.amount);
        put_opt(out, &self.currency);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let f = Flags::get(r, 4, "fingerprint flags")?;
        Ok(Self {
            pan: f.take(0, r)?,
            processing_code: f.take::<ProcessingCode>(1, r)?,
            amount: f.take(2, r)?,
            currency: f.take(3, r)?,
        })
    }
}

impl Wire for IdemEntry {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Self::Pending(p) => {
                put_u8(out, 0);
                p.fp.put(out);
                put_usize(out, p.waiters.len());
                for &t in &p.waiters {
                    put_varint(out, t);
                }
                put_u8(out, p.awaiting);
                Flags::of(&[p.response.is_some()]).put(out);
                put_opt(out, &p.response);
            }
            Self::Done {
                fp,
                response,
                expires,
            } => {
                put_u8(out, 1);
                fp.put(out);
                response.put(out);
                put_i64(out, *expires);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.offset();
        Ok(match r.u8("idempotency entry")? {
            0 => {
                let fp = Fingerprint::get(r)?;
                let n = r.count("waiter count")?;
                let waiters = (0..n)
                    .map(|_| r.varint("token"))
                    .collect::<Result<_, _>>()?;
                let awaiting = r.u8("acknowledgements awaited")?;
                let f = Flags::get(r, 1, "pending reply flags")?;
                Self::Pending(Box::new(PendingReply {
                    fp,
                    waiters,
                    awaiting,
                    response: f.take::<Response>(0, r)?,
                }))
            }
            1 => Self::Done {
                fp: Fingerprint::get(r)?,
                response: Response::get(r)?,
                expires: r.i64("expiry")?,
            },
            _ => {
                return Err(WireError::UnknownTag {
                    what: "idempotency entry",
                    offset,
                })
            }
        })
    }
}

impl Wire for TxnState {
    fn put(&self, out: &mut Vec<u8>) {
        match *self {
            Self::Declined => put_u8(out, 0),
            Self::Approved { day } => {
                put_u8(out, 1);
                put_i64(out, day);
            }
            Self::Completed { amount, day } => {
                put_u8(out, 2);
                put_i64(out, amount);
                put_i64(out, day);
            }
            Self::Reversed => put_u8(out, 3),
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.offset();
        Ok(match r.u8("transaction state")? {
            0 => Self::Declined,
            1 => Self::Approved { day: r.i64("day")? },
            2 => Self::Completed {
                amount: r.i64("amount")?,
                day: r.i64("day")?,
            },
            3 => Self::Reversed,
            _ => {
                return Err(WireError::UnknownTag {
                    what: "transaction state",
                    offset,
                })
            }
        })
    }
}

impl Wire for TxnSlot {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Self::Marker { expires } => {
                put_u8(out, 0);
                put_i64(out, *expires);
            }
            Self::Pending(p) => {
                put_u8(out, 1);
                p.key.put(out);
                p.kind.put(out);
                p.pan.put(out);
                put_i64(out, p.amount);
                Flags::of(&[p.currency.is_some(), p.order.is_some()]).put(out);
                put_opt(out, &p.currency);
                put_opt(out, &p.order);
                put_usize(out, p.queued.len());
                for (token, req) in &p.queued {
                    put_varint(out, *token);
                    req.put(out);
                }
            }
            Self::Record(rec) => {
                put_u8(out, 2);
                rec.kind.put(out);
                put_i64(out, rec.amount);
                rec.state.put(out);
                put_i64(out, rec.since);
                Flags::of(&[
                    rec.pan.is_some(),
                    rec.currency.is_some(),
                    rec.order.is_some(),
                ])
                .put(out);
                put_opt(out, &rec.pan);
                put_opt(out, &rec.currency);
                put_opt(out, &rec.order);
            }
            Self::Both(halves) => {
                put_u8(out, 3);
                halves[0].put(out);
                halves[1].put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.offset();
        let tag = r.u8("transaction slot")?;
        Self::get_tagged(tag, offset, r)
    }
}

impl TxnSlot {
    /// The slot whose tag, at `offset`, was `tag`.
    fn get_tagged(tag: u8, offset: usize, r: &mut Reader<'_>) -> Result<Self, WireError> {
        Ok(match tag {
            0 => Self::Marker {
                expires: r.i64("expiry")?,
            },
            1 => {
                let key = IdemKey::get(r)?;
                let kind = PayKind::get(r)?;
                let pan = Pan::get(r)?;
                let amount = r.i64("amount")?;
                let f = Flags::get(r, 2, "pending transaction flags")?;
                let currency = f.take(0, r)?;
                let order = f.take(1, r)?;
                let n = r.count("queued request count")?;
                let queued = (0..n)
                    .map(|_| Ok((r.varint("token")?, Request::get(r)?)))
                    .collect::<Result<Vec<_>, WireError>>()?;
                Self::Pending(Box::new(PendingTxn {
                    key,
                    kind,
                    pan,
                    amount,
                    currency,
                    order,
                    queued,
                }))
            }
            2 => {
                let kind = PayKind::get(r)?;
                let amount = r.i64("amount")?;
                let state = TxnState::get(r)?;
                let since = r.i64("since")?;
                let f = Flags::get(r, 3, "transaction flags")?;
                Self::Record(TxnRecord {
                    kind,
                    amount,
                    state,
                    since,
                    pan: f.take(0, r)?,
                    currency: f.take(1, r)?,
                    order: f.take(2, r)?,
                })
            }
            3 => {
                let halves = [Self::get_half(r)?, Self::get_half(r)?];
                // The hold's half then the purchase's, each its original or a marker, not two
                // markers: nothing else is a pair.
                let fits = |half: &TxnSlot, kind| half.kind().is_none_or(|k| k == kind);
                if !fits(&halves[0], PayKind::Hold)
                    || !fits(&halves[1], PayKind::Purchase)
                    || halves.iter().all(|h| h.kind().is_none())
                {
                    return Err(WireError::UnknownTag {
                        what: "pair of transaction slots",
                        offset,
                    });
                }
                Self::Both(Box::new(halves))
            }
            _ => {
                return Err(WireError::UnknownTag {
                    what: "transaction slot",
                    offset,
                })
            }
        })
    }
    /// One half of a pair: never a pair itself (no nesting, however the bytes are made).
    fn get_half(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let offset = r.offset();
        match r.u8("transaction slot")? {
            3 => Err(WireError::UnknownTag {
                what: "half of a pair of transaction slots",
                offset,
            }),
            tag => Self::get_tagged(tag, offset, r),
        }
    }
}
