//! The engine over a store it does not own (the switch's PostgreSQL backend).
//!
//! A store that keeps the state in a database runs each batch of requests on a fresh
//! one-shard [`Shard`], a *working set*: it reads the rows the batch needs ([`BatchKeys`]),
//! puts them in ([`Shard::put_account`], [`Shard::put_order`], [`Shard::put_idem`],
//! [`Shard::put_txn`]), hands the requests to [`Shard::handle_request`] as usual, then reads
//! every row back ([`Shard::account_row`], ...) and writes those that changed. The decisions
//! are made by the same code as the embedded store's. A one-shard working set settles every
//! request before `handle_request` returns (messages to itself are handled at once), so what
//! it reads back is final; [`Shard::is_settled`] checks it.
//!
//! Accounts and orders are plain columns, what operators and `switch import` see.
//! Idempotency entries and transaction slots are opaque values in the engine's own encoding
//! ([`crate::wire`]), keyed by the encoded [`IdemKey`] / [`TxnId`]; each comes with the Unix
//! second after which the store may delete it (`None`: keep, e.g. an open hold).

use super::{AccountState, IdemEntry, OrderKey, OrderState, Shard, TxnSlot};
use crate::data::{Account, CardStatus, Order, OrderStatus};
use crate::kind::TxnKind;
use crate::message::{IdemKey, MerchantId, Mti, Request, TxnId};
use crate::pan::Pan;
use crate::time::Yymm;
use crate::wire::{Reader, Wire, WireError};

/// An account as a store row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRow {
    /// Card number (the key).
    pub pan: Pan,
    /// Card expiry.
    pub expiry: Yymm,
    /// Card status.
    pub status: CardStatus,
    /// ISO 4217 numeric currency.
    pub currency: u16,
    /// Ledger balance, minor units (open holds included).
    pub balance: i64,
    /// Sum of open holds, minor units.
    pub held: i64,
    /// Daily limit, minor units.
    pub daily_limit: i64,
    /// The UTC day (days since 1970-01-01) `day_total` counts; `i64::MIN` before the first.
    pub day: i64,
    /// Approved debits counted on `day`, minor units.
    pub day_total: i64,
}

impl From<&Account> for AccountRow {
    /// A freshly loaded account: no holds, nothing counted yet.
    fn from(a: &Account) -> Self {
        Self {
            pan: a.pan,
            expiry: a.expiry,
            status: a.status,
            currency: a.currency,
            balance: a.balance,
            held: 0,
            daily_limit: a.daily_limit,
            day: i64::MIN,
            day_total: 0,
        }
    }
}

/// An order's identity: DE 42 without trailing spaces, and DE 48.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderRef {
    /// The merchant.
    pub merchant: MerchantId,
    /// The merchant's order reference.
    pub order_id: String,
}

/// An order as a store row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderRow {
    /// The key.
    pub order: OrderRef,
    /// Amount due, minor units.
    pub amount: i64,
    /// Currency.
    pub currency: u16,
    /// Status.
    pub status: OrderStatus,
    /// The encoded [`TxnId`] of the payment holding a paid order.
    pub paid_by: Option<Vec<u8>>,
}

impl From<&Order> for OrderRow {
    fn from(o: &Order) -> Self {
        Self {
            order: OrderRef {
                merchant: o.merchant_id,
                order_id: o.order_id.clone(),
            },
            amount: o.amount,
            currency: o.currency,
            status: o.status,
            paid_by: None,
        }
    }
}

/// An idempotency entry or transaction slot as a store row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRow {
    /// The encoded key.
    pub key: Vec<u8>,
    /// The encoded entry.
    pub value: Vec<u8>,
    /// Unix seconds after which the entry may be deleted; `None`: keep it.
    pub expires: Option<i64>,
    /// For a transaction slot, the order its payment holds (so that a store can read that
    /// order together with the slot: a reversal reopens it).
    pub order: Option<OrderRef>,
}

/// The keys of the rows a batch of requests may read or write, each list sorted and without
/// duplicates once [`BatchKeys::finish`] ran (a store locks rows in this order, so that two
/// batches never wait on each other in a cycle).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchKeys {
    /// Accounts by card number.
    pub accounts: Vec<Pan>,
    /// Encoded idempotency keys.
    pub idem: Vec<Vec<u8>>,
    /// Encoded transaction identities: the own identities of holds and purchases (new, as a
    /// rule) and [`targets`](Self::targets).
    pub txns: Vec<Vec<u8>>,
    /// The transaction identities completions and reversals act on (slots expected to
    /// exist), and those of balance inquiries (whose keys may be stored requests').
    /// A store must also read the orders these slots hold ([`EntryRow::order`]; a reversal
    /// reopens its original's order). A hold or purchase never touches the order of a slot
    /// already under its own identity: it is answered 94 or 05 before any order is looked at,
    /// or joins that slot as the other of 0100/0200 and leaves its order alone.
    pub targets: Vec<Vec<u8>>,
    /// Orders named by payments.
    pub orders: Vec<OrderRef>,
}

impl BatchKeys {
    /// Empties the lists, keeping their allocations.
    pub fn clear(&mut self) {
        self.accounts.clear();
        self.idem.clear();
        self.txns.clear();
        self.targets.clear();
        self.orders.clear();
    }

    /// Adds what `req` reads (the same look-ups as [`Shard::handle_request`] makes).
    pub fn add(&mut self, req: &Request) {
        let kind = req.kind();
        if matches!(kind, TxnKind::NetworkManagement(_)) {
            return;
        }
        self.idem.push(encode(&req.key()));
        if let Some(pan) = req.pan {
            self.accounts.push(pan);
        }
        match kind {
            TxnKind::AuthorizationHold | TxnKind::Purchase => {
                self.txns.push(encode(&req.own_txn()));
                if let Some(order_id) = &req.order_ref {
                    self.orders.push(OrderRef {
                        merchant: req.merchant.unwrap_or(MerchantId::EMPTY),
                        order_id: order_id.clone(),
                    });
                }
            }
            TxnKind::Completion | TxnKind::Reversal => {
                let target = encode(&req.target_txn());
                self.txns.push(target.clone());
                self.targets.push(target);
            }
            TxnKind::BalanceInquiry => {
                // Not stored, but its key may be a stored request's (a hold's, with the same
                // 41, 11 and 7): its identity's row is read even by an optimistic attempt
                // (which inserts nothing for an inquiry, so no conflict would tell), so that
                // the inquiry answers 94 as on the embedded store, not afresh.
                let own = encode(&req.own_txn());
                self.txns.push(own.clone());
                self.targets.push(own);
            }
            TxnKind::Unsupported | TxnKind::NetworkManagement(_) => {}
        }
    }

    /// Sorts each list and drops duplicates.
    pub fn finish(&mut self) {
        fn sort_dedup<T: Ord>(v: &mut Vec<T>) {
            v.sort_unstable();
            v.dedup();
        }
        sort_dedup(&mut self.accounts);
        sort_dedup(&mut self.idem);
        sort_dedup(&mut self.txns);
        sort_dedup(&mut self.targets);
        sort_dedup(&mut self.orders);
    }
}

/// Splits an encoded idempotency key into the encoding of its MTI and the encoded
/// transaction identity (41, 11, 7) that follows it, so that a store can keep a request's
/// answer in one row with its identity's slot.
pub fn split_idem_key(key: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    // The MTI's varint comes first; what follows must be a whole identity.
    let mut r = Reader::new(key);
    Mti::get(&mut r)?;
    let (mti, id) = key.split_at(r.offset());
    decode::<TxnId>(id, "idempotency key")?;
    Ok((mti, id))
}

fn encode<T: Wire>(v: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    v.put(&mut out);
    out
}

fn decode<T: Wire>(bytes: &[u8], what: &'static str) -> Result<T, WireError> {
    let mut r = Reader::new(bytes);
    let v = T::get(&mut r)?;
    r.finish(what)?;
    Ok(v)
}

impl Shard {
    /// An empty working set (a one-shard engine) with `config`.
    pub fn working_set(config: super::EngineConfig) -> Shard {
        // A batch's worth of entries: one table each, not 256.
        Shard::with_map_parts(0, 1, config, 1)
    }

    /// Whether no decision is in flight (always so between inputs of a working set).
    pub fn is_settled(&self) -> bool {
        self.idem
            .values()
            .all(|e| matches!(e, IdemEntry::Done { .. }))
            && self.txns.values().all(|s| !s.deciding())
    }

    /// The approval counter (approval codes are derived from it).
    pub fn approvals(&self) -> u64 {
        self.approvals
    }

    /// Sets the approval counter: a store gives each batch its own range of codes.
    pub fn set_approvals(&mut self, n: u64) {
        self.approvals = n;
    }

    /// Puts an account row in (replacing any).
    pub fn put_account(&mut self, row: &AccountRow) {
        let state = AccountState {
            expiry: row.expiry,
            status: row.status,
            currency: row.currency,
            balance: row.balance,
            held: row.held,
            daily_limit: row.daily_limit,
            day: row.day,
            day_total: row.day_total,
        };
        self.accounts.insert(row.pan, state);
    }

    /// The row of the account of `pan`.
    pub fn account_row(&self, pan: &Pan) -> Option<AccountRow> {
        self.accounts.get(pan).map(|a| AccountRow {
            pan: *pan,
            expiry: a.expiry,
            status: a.status,
            currency: a.currency,
            balance: a.balance,
            held: a.held,
            daily_limit: a.daily_limit,
            day: a.day,
            day_total: a.day_total,
        })
    }

    /// Puts an order row in (replacing any). Refuses an undecodable `paid_by`.
    pub fn put_order(&mut self, row: &OrderRow) -> Result<(), WireError> {
        let paid_by = match &row.paid_by {
            Some(b) => Some(decode::<TxnId>(b, "order paid_by")?),
            None => None,
        };
        let key = OrderKey {
            merchant: row.order.merchant,
            order_id: row.order.order_id.clone(),
        };
        let state = OrderState {
            amount: row.amount,
            currency: row.currency,
            status: row.status,
            paid_by,
        };
        self.orders.insert(key, state);
        Ok(())
    }

    /// The row of an order.
    pub fn order_row(&self, order: &OrderRef) -> Option<OrderRow> {
        let key = OrderKey {
            merchant: order.merchant,
            order_id: order.order_id.clone(),
        };
        self.orders.get(&key).map(|o| OrderRow {
            order: order.clone(),
            amount: o.amount,
            currency: o.currency,
            status: o.status,
            paid_by: o.paid_by.as_ref().map(encode),
        })
    }

    /// Puts an idempotency entry in from its encoded key and value.
    pub fn put_idem(&mut self, key: &[u8], value: &[u8]) -> Result<(), WireError> {
        let key = decode::<IdemKey>(key, "idempotency key")?;
        let entry = decode::<IdemEntry>(value, "idempotency entry")?;
        self.idem.insert(key, entry);
        Ok(())
    }

    /// The row of the idempotency entry under the encoded `key`, if it is settled.
    pub fn idem_row(&self, key: &[u8]) -> Result<Option<EntryRow>, WireError> {
        let k = decode::<IdemKey>(key, "idempotency key")?;
        Ok(match self.idem.get(&k) {
            Some(e @ IdemEntry::Done { expires, .. }) => Some(EntryRow {
                key: key.to_vec(),
                value: encode(e),
                expires: Some(*expires),
                order: None,
            }),
            Some(IdemEntry::Pending(_)) | None => None,
        })
    }

    /// Puts a transaction slot in from its encoded key and value.
    pub fn put_txn(&mut self, key: &[u8], value: &[u8]) -> Result<(), WireError> {
        let key = decode::<TxnId>(key, "transaction id")?;
        let slot = decode::<TxnSlot>(value, "transaction slot")?;
        self.txns.insert(key, slot);
        Ok(())
    }

    /// The row of the transaction slot under the encoded `key`, if it is settled.
    pub fn txn_row(&self, key: &[u8]) -> Result<Option<EntryRow>, WireError> {
        let k = decode::<TxnId>(key, "transaction id")?;
        let window = self.window_secs();
        // An original still being decided: no row yet.
        let Some(slot) = self.txns.get(&k).filter(|s| !s.deciding()) else {
            return Ok(None);
        };
        // The row lives as long as its slot (an open hold: until it ends).
        Ok(Some(EntryRow {
            key: key.to_vec(),
            value: encode(slot),
            expires: slot.expires_at(window),
            order: slot.order().map(|o| OrderRef {
                merchant: o.merchant,
                order_id: o.order_id.clone(),
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    //! A working set over a map-backed store, batch after batch, must answer exactly as one
    //! engine that keeps everything in memory, and leave the same accounts and orders.

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::engine::{EngineConfig, Output};
    use crate::luhn;
    use crate::message::{Mti, OriginalData, ProcessingCode, Response, ResponseCode, TerminalId};
    use crate::time::Now;

    const NOW: i64 = 1_749_988_800;
    const DT: u64 = 615_120_000;

    /// What a database would hold, as the switch's PostgreSQL store uses it: one record per
    /// transaction identity with its slot and the answers under that identity.
    #[derive(Default)]
    struct MapStore {
        accounts: BTreeMap<Pan, AccountRow>,
        orders: BTreeMap<OrderRef, OrderRow>,
        records: BTreeMap<Vec<u8>, Record>,
        approvals: u64,
        /// Optimistic attempts that had to run again.
        conflicts: usize,
    }

    #[derive(Clone, Default)]
    struct Record {
        slot: Option<EntryRow>,
        /// Idempotency entries by full key.
        answers: BTreeMap<Vec<u8>, Vec<u8>>,
    }

    impl MapStore {
        /// Runs a batch as the PostgreSQL store does: first optimistically, reading only the
        /// accounts, the orders and the records of the targets of completions and reversals,
        /// and taking every other record as new; if that would insert a record that exists
        /// (the database's unique index refuses it and the transaction rolls back), again
        /// reading every record.
        fn run_batch(&mut self, now: Now, reqs: &[Request]) -> Vec<Response> {
            match self.try_batch(now, reqs, true) {
                Some(answers) => answers,
                None => {
                    self.conflicts += 1;
                    self.try_batch(now, reqs, false)
                        .expect("a batch that read every key inserts no existing key")
                }
            }
        }

        /// One attempt; `None` (and nothing written) when it would insert an existing key.
        fn try_batch(
            &mut self,
            now: Now,
            reqs: &[Request],
            optimistic: bool,
        ) -> Option<Vec<Response>> {
            let mut keys = BatchKeys::default();
            for r in reqs {
                keys.add(r);
            }
            keys.finish();
            let mut ws = Shard::working_set(EngineConfig::default());
            ws.set_approvals(self.approvals);
            for pan in &keys.accounts {
                if let Some(row) = self.accounts.get(pan) {
                    ws.put_account(row);
                }
            }
            let mut orders = keys.orders.clone();
            // Each idempotency key with the identity whose record keeps its answer.
            let answer_ids: Vec<(&Vec<u8>, &[u8])> = keys
                .idem
                .iter()
                .map(|k| (k, split_idem_key(k).unwrap().1))
                .collect();
            let mut ids: Vec<Vec<u8>> = keys.txns.clone();
            ids.extend(answer_ids.iter().map(|(_, id)| id.to_vec()));
            ids.sort();
            ids.dedup();
            let read: Vec<Vec<u8>> = if optimistic {
                keys.targets.clone()
            } else {
                ids.clone()
            };
            for id in &read {
                if let Some(record) = self.records.get(id) {
                    if let Some(slot) = &record.slot {
                        ws.put_txn(id, &slot.value).unwrap();
                        if keys.targets.contains(id) {
                            orders.extend(slot.order.clone());
                        }
                    }
                    for (k, v) in &record.answers {
                        ws.put_idem(k, v).unwrap();
                    }
                }
            }
            for o in &orders {
                if let Some(row) = self.orders.get(o) {
                    ws.put_order(row).unwrap();
                }
            }
            let mut out = Vec::new();
            for (i, r) in reqs.iter().enumerate() {
                ws.handle_request(now, i as u64, r.clone(), &mut out);
            }
            assert!(ws.is_settled());
            let mut written = Vec::new();
            for id in &ids {
                let mut record = if read.contains(id) {
                    self.records.get(id).cloned().unwrap_or_default()
                } else {
                    Record::default()
                };
                let mut changed = false;
                if let Some(row) = ws.txn_row(id).unwrap() {
                    changed |= record.slot.as_ref() != Some(&row);
                    record.slot = Some(row);
                }
                for &(k, _) in answer_ids.iter().filter(|(_, of)| *of == id.as_slice()) {
                    if let Some(row) = ws.idem_row(k).unwrap() {
                        changed |= record.answers.get(k) != Some(&row.value);
                        record.answers.insert(row.key, row.value);
                    }
                }
                if changed {
                    if !read.contains(id) && self.records.contains_key(id) {
                        return None;
                    }
                    written.push((id.clone(), record));
                }
            }
            for (id, record) in written {
                self.records.insert(id, record);
            }
            for pan in &keys.accounts {
                if let Some(row) = ws.account_row(pan) {
                    self.accounts.insert(*pan, row);
                }
            }
            for o in &orders {
                if let Some(row) = ws.order_row(o) {
                    self.orders.insert(o.clone(), row);
                }
            }
            self.approvals = ws.approvals();
            let mut answers = vec![None; reqs.len()];
            for o in out {
                match o {
                    Output::Reply {
                        token, response, ..
                    } => answers[token as usize] = Some(response),
                    Output::ToShard { .. } => panic!("a working set sent a peer message"),
                }
            }
            Some(
                answers
                    .into_iter()
                    .map(|a| a.expect("every request answered"))
                    .collect(),
            )
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Purchase {
            card: usize,
            amount: u64,
            order: Option<usize>,
        },
        Hold {
            card: usize,
            amount: u64,
            order: Option<usize>,
        },
        Complete {
            target: usize,
            amount: u64,
        },
        Reverse {
            target: usize,
        },
        Inquiry {
            card: usize,
        },
        Retransmit {
            target: usize,
        },
        /// The other of 0100/0200 with an earlier request's 41, 11 and 7 (another key).
        Twin {
            target: usize,
            amount: u64,
        },
    }

    fn card(n: usize) -> Pan {
        let mut d = format!("4{:014}", n + 7).into_bytes();
        d.push(luhn::check_digit(&d).unwrap());
        Pan::from_digits(&d).unwrap()
    }

    fn order_key(n: usize) -> OrderRef {
        OrderRef {
            merchant: MerchantId::new(b"MERCHANT0000001").unwrap(),
            order_id: format!("ORD{n}"),
        }
    }

    fn request(mti: u16, stan: u32, pan: Pan, amount: u64, processing: &[u8]) -> Request {
        let terminal = TerminalId::new(b"WORKSET1").unwrap();
        let mut r = Request::new(Mti::new(mti).unwrap(), stan, DT, terminal);
        r.processing_code = ProcessingCode::from_digits(processing);
        r.pan = Some(pan);
        r.amount = Some(amount);
        r.currency = Some(840);
        r
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        let order = proptest::option::weighted(0.3, 0usize..3);
        prop_oneof![
            (0usize..4, 1u64..4_000, order.clone()).prop_map(|(card, amount, order)| {
                Op::Purchase {
                    card,
                    amount,
                    order,
                }
            }),
            (0usize..4, 1u64..4_000, order).prop_map(|(card, amount, order)| Op::Hold {
                card,
                amount,
                order
            }),
            (0usize..1_000, 0u64..4_500)
                .prop_map(|(target, amount)| Op::Complete { target, amount }),
            (0usize..1_000).prop_map(|target| Op::Reverse { target }),
            (0usize..4).prop_map(|card| Op::Inquiry { card }),
            (0usize..1_000).prop_map(|target| Op::Retransmit { target }),
            (0usize..1_000, 1u64..4_000).prop_map(|(target, amount)| Op::Twin { target, amount }),
        ]
    }

    fn requests(ops: &[Op]) -> Vec<Request> {
        let mut reqs: Vec<Request> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let stan = u32::try_from(i + 1).unwrap();
            let req = match *op {
                _ if i == 0 => request(200, stan, card(0), 100, b"000000"),
                Op::Purchase {
                    card: n,
                    amount,
                    order,
                }
                | Op::Hold {
                    card: n,
                    amount,
                    order,
                } => {
                    let mti = if matches!(op, Op::Hold { .. }) {
                        100
                    } else {
                        200
                    };
                    let mut r = request(mti, stan, card(n), amount, b"000000");
                    if let Some(o) = order {
                        let key = order_key(o);
                        r.merchant = Some(key.merchant);
                        r.order_ref = Some(key.order_id);
                        r.amount = Some(500);
                    }
                    r
                }
                Op::Complete { target, .. } | Op::Reverse { target } => {
                    let orig = &reqs[target % i];
                    let (mti, amount) = match *op {
                        Op::Complete { amount, .. } => (220, amount),
                        _ => (400, orig.amount.unwrap_or(0)),
                    };
                    let mut r = request(mti, stan, orig.pan.unwrap(), amount, b"000000");
                    r.original = Some(OriginalData {
                        mti: orig.mti,
                        stan: orig.stan,
                        transmission: orig.transmission,
                    });
                    r
                }
                Op::Inquiry { card: n } => request(100, stan, card(n), 0, b"310000"),
                Op::Retransmit { target } => reqs[target % i].clone(),
                Op::Twin { target, amount } => {
                    let mut r = reqs[target % i].clone();
                    r.mti = Mti::new(if r.mti.base().value() == 100 {
                        200
                    } else {
                        100
                    })
                    .unwrap();
                    r.amount = Some(amount);
                    r.original = None;
                    r.processing_code = ProcessingCode::from_digits(b"000000");
                    r
                }
            };
            reqs.push(req);
        }
        reqs
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn working_sets_answer_like_one_engine(
            ops in proptest::collection::vec(op_strategy(), 1..60),
            splits in proptest::collection::vec(1usize..8, 60),
        ) {
            let now = Now::from_unix_secs(NOW);
            let reqs = requests(&ops);
            let accounts: Vec<Account> = (0..3)
                .map(|i| Account {
                    pan: card(i),
                    expiry: Yymm::from_digits(b"3012").unwrap(),
                    status: CardStatus::Active,
                    currency: 840,
                    balance: 10_000,
                    daily_limit: [15_000, 8_000, 100_000][i],
                })
                .collect();
            let orders: Vec<Order> = (0..3)
                .map(|i| Order {
                    order_id: order_key(i).order_id,
                    merchant_id: order_key(i).merchant,
                    amount: 500,
                    currency: 840,
                    status: OrderStatus::Open,
                })
                .collect();

            let mut reference = Shard::new(0, 1, EngineConfig::default());
            let mut store = MapStore::default();
            for a in &accounts {
                reference.load_account(a.clone()).unwrap();
                store.accounts.insert(a.pan, AccountRow::from(a));
            }
            for o in &orders {
                reference.load_order(o.clone()).unwrap();
                let row = OrderRow::from(o);
                store.orders.insert(row.order.clone(), row);
            }

            let mut expected = Vec::new();
            for (i, r) in reqs.iter().enumerate() {
                let mut out = Vec::new();
                reference.handle_request(now, i as u64, r.clone(), &mut out);
                prop_assert_eq!(out.len(), 1);
                match out.pop() {
                    Some(Output::Reply { response, .. }) => expected.push(response),
                    other => prop_assert!(false, "unexpected output {:?}", other),
                }
            }
            let mut got = Vec::new();
            let mut rest = &reqs[..];
            for n in splits.iter().copied().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (batch, tail) = rest.split_at(n.min(rest.len()));
                got.extend(store.run_batch(now, batch));
                rest = tail;
            }
            prop_assert_eq!(got, expected);
            for a in &accounts {
                prop_assert_eq!(store.accounts.get(&a.pan).cloned(), reference.account_row(&a.pan));
            }
            for o in 0..3 {
                let key = order_key(o);
                prop_assert_eq!(store.orders.get(&key).cloned(), reference.order_row(&key));
            }
        }
    }

    #[test]
    fn an_idempotency_key_splits_into_its_mti_and_transaction_identity() {
        for mti in [100, 200, 220, 400, 420, 800] {
            let txn = TxnId {
                terminal: TerminalId::new(b"TERM0001").unwrap(),
                stan: 123_456,
                transmission: DT,
            };
            let key = encode(&IdemKey {
                mti: Mti::new(mti).unwrap(),
                terminal: txn.terminal,
                stan: txn.stan,
                transmission: txn.transmission,
            });
            let (m, id) = split_idem_key(&key).unwrap();
            assert_eq!(m, encode(&Mti::new(mti).unwrap()).as_slice());
            assert_eq!(id, encode(&txn).as_slice());
        }
        assert!(split_idem_key(&[0x80]).is_err());
        assert!(split_idem_key(b"").is_err());
    }

    #[test]
    fn an_optimistic_batch_that_meets_an_existing_key_runs_again_reading_it() {
        let now = Now::from_unix_secs(NOW);
        let mut store = MapStore::default();
        let account = Account {
            pan: card(0),
            expiry: Yymm::from_digits(b"3012").unwrap(),
            status: CardStatus::Active,
            currency: 840,
            balance: 10_000,
            daily_limit: 100_000,
        };
        store
            .accounts
            .insert(account.pan, AccountRow::from(&account));
        let reqs = requests(&[
            Op::Purchase {
                card: 0,
                amount: 700,
                order: None,
            },
            Op::Retransmit { target: 0 },
        ]);
        let first = store.run_batch(now, &reqs[..1]);
        assert_eq!(first[0].code, ResponseCode::Approved);
        assert_eq!(store.conflicts, 0, "a new key needs no second attempt");
        let debited = store.accounts[&account.pan].balance;
        assert!(debited < account.balance);
        // The retransmission's idempotency key exists: the optimistic attempt would insert
        // it again, so the batch runs again, reads it and replays the answer.
        let again = store.run_batch(now, &reqs[1..]);
        assert_eq!(store.conflicts, 1);
        assert_eq!(again, first);
        assert_eq!(
            store.accounts[&account.pan].balance, debited,
            "debited once"
        );
    }
}
