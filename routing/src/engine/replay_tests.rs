//! Deterministic replay: random traffic on a three-shard cluster that records every input
//! each shard applies; then each shard is rebuilt alone from its starting snapshot and its
//! own journal, decoded. The rebuilt shard must produce the very same outputs, in order, and
//! end in a byte-identical snapshot. Also: snapshots taken mid-run (messages in flight)
//! plus the rest of the journal give the same final state, and a simulated crash recovers by
//! replaying and re-delivering exactly the messages no receiver journaled.
//!
//! Restored shards have fresh hash maps (another `RandomState`), so these tests also catch
//! any output or snapshot that would depend on a map's iteration order.

use proptest::prelude::*;

use crate::data::{Account, CardStatus, Order, OrderStatus};
use crate::engine::{EngineConfig, Input, Output, Shard, TxnSlot};
use crate::luhn;
use crate::message::{MerchantId, Mti, OriginalData, ProcessingCode, Request, TerminalId};
use crate::pan::Pan;
use crate::rng::SplitMix64;
use crate::sim::{Cluster, Recorded};
use crate::time::{Now, Yymm};

const N: usize = 3;
/// 2025-06-15T12:00:00Z.
const START: i64 = 1_749_988_800;
const DT: u64 = 615_120_000;
const CARDS: u64 = 6;
const ORDERS: u64 = 6;
const SHOP: &[u8] = b"SHOP01";

fn card(n: u64) -> Pan {
    let mut d = format!("5{n:014}").into_bytes();
    d.push(luhn::check_digit(&d).unwrap());
    Pan::from_digits(&d).unwrap()
}

fn config() -> EngineConfig {
    // A short window, so that time advances expire records and purges remove them.
    EngineConfig {
        idempotency_window_secs: 2 * 3600,
        ..EngineConfig::default()
    }
}

fn accounts() -> Vec<Account> {
    (0..CARDS)
        .map(|n| Account {
            pan: card(n),
            expiry: Yymm::from_digits(if n == 5 { b"2506" } else { b"3012" }).unwrap(),
            status: if n == 4 {
                CardStatus::Lost
            } else {
                CardStatus::Active
            },
            currency: if n == 3 { 392 } else { 840 },
            balance: [30_000, 8_000, 100_000, 50_000, 10_000, 20_000][n as usize],
            daily_limit: [20_000, 100_000, 12_000, 50_000, 10_000, 100_000][n as usize],
        })
        .collect()
}

fn orders() -> Vec<Order> {
    let mut v: Vec<Order> = (0..ORDERS)
        .map(|i| Order {
            order_id: format!("ORD-{i}"),
            merchant_id: MerchantId::new(SHOP).unwrap(),
            amount: 2_500,
            currency: 840,
            status: OrderStatus::Open,
        })
        .collect();
    v.push(Order {
        order_id: "GONE".into(),
        merchant_id: MerchantId::new(SHOP).unwrap(),
        amount: 2_500,
        currency: 840,
        status: OrderStatus::Cancelled,
    });
    v
}

/// Random traffic: every kind of request, retransmissions (some while their original is in
/// flight), forwarded requests, time passing, purges, and batches left half-delivered.
struct Traffic {
    rng: SplitMix64,
    stan: u32,
    sent: Vec<Request>,
    /// The order payments sent that can be approved: every third reversal takes one of them
    /// in turn, so that orders are reopened (without drawing on `rng`, so that the rest of
    /// the traffic stays what it was).
    order_payments: Vec<Request>,
    reversals: usize,
    /// Every fourth "retransmission" of a 0100 or 0200 is sent as the other of the two: a
    /// second original under the same identity (also without drawing on `rng`).
    retransmissions: usize,
}

impl Traffic {
    fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            stan: 0,
            sent: Vec::new(),
            order_payments: Vec::new(),
            reversals: 0,
            retransmissions: 0,
        }
    }

    fn pick(&mut self, n: u64) -> u64 {
        self.rng.below(n)
    }

    fn base(&mut self, mti: u16, pc: &str) -> Request {
        self.stan += 1;
        let terminal: &[u8] = if self.pick(2) == 0 {
            b"TERM0001"
        } else {
            b"T2"
        };
        let mut r = Request::new(
            Mti::new(mti).unwrap(),
            self.stan,
            DT,
            TerminalId::new(terminal).unwrap(),
        );
        r.processing_code = ProcessingCode::from_digits(pc.as_bytes());
        // Now and then a card no account has (14).
        let n = self.pick(CARDS + 1);
        r.pan = Some(card(if n == CARDS { 99 } else { n }));
        r.currency = Some(if self.pick(8) == 0 { 978 } else { 840 });
        r.amount = Some(1 + self.pick(6_000));
        r
    }

    /// An earlier request: half the time one of the last three (likely still in flight).
    fn earlier(&mut self) -> Option<Request> {
        let n = self.sent.len() as u64;
        if n == 0 {
            return None;
        }
        let i = if self.pick(2) == 0 {
            n - 1 - self.pick(n.min(3))
        } else {
            self.pick(n)
        };
        Some(self.sent[i as usize].clone())
    }

    /// A completion or reversal of `orig`.
    fn referring(&mut self, mti: u16, orig: &Request) -> Request {
        let mut r = self.base(mti, "000000");
        r.terminal = orig.terminal;
        r.pan = orig.pan;
        r.currency = orig.currency;
        r.transmission = DT + 1;
        r.original = Some(OriginalData {
            mti: orig.mti,
            stan: orig.stan,
            transmission: orig.transmission,
        });
        r
    }

    fn next(&mut self) -> Request {
        let r = match self.pick(14) {
            0 | 1 => self.base(200, "000000"),
            2 | 3 => self.base(100, "000000"),
            4 => {
                let mut r = self.base(200, "000000");
                r.merchant = Some(MerchantId::new(b"SHOP01         ").unwrap());
                let i = self.pick(ORDERS + 1);
                r.order_ref = Some(if i == ORDERS {
                    "GONE".into()
                } else {
                    format!("ORD-{i}")
                });
                if self.pick(4) != 0 {
                    r.amount = Some(2_500);
                }
                // Those that can be approved (an open order, a card that can pay it).
                let payable = r.amount == Some(2_500)
                    && r.currency == Some(840)
                    && r.order_ref.as_deref() != Some("GONE")
                    && [card(0), card(1), card(2)].contains(&r.pan.unwrap());
                if payable {
                    self.order_payments.push(r.clone());
                }
                r
            }
            5 => match self.earlier() {
                Some(orig) => {
                    let mut r = self.referring(220, &orig);
                    r.amount = Some(1 + self.pick(orig.amount.unwrap_or(1) + 500));
                    r
                }
                None => self.base(200, "000000"),
            },
            6 => match self.earlier() {
                Some(orig) => {
                    self.reversals += 1;
                    let orig = match self.order_payments.len() {
                        n if n > 0 && self.reversals.is_multiple_of(3) => {
                            self.order_payments[self.reversals / 3 % n].clone()
                        }
                        _ => orig,
                    };
                    let m = if self.pick(2) == 0 { 400 } else { 420 };
                    self.referring(m, &orig)
                }
                None => self.base(200, "000000"),
            },
            7 | 8 => match self.earlier() {
                // A retransmission, sometimes flagged as a repeat.
                Some(mut r) => {
                    if self.pick(2) == 0 && !r.mti.is_repeat() {
                        r.mti = Mti::new(r.mti.value() + 1).unwrap();
                    }
                    self.retransmissions += 1;
                    let repeat = r.mti.value() - r.mti.base().value();
                    match r.mti.base().value() {
                        100 | 200 if self.retransmissions.is_multiple_of(4) => {
                            r.mti = Mti::new(300 - r.mti.base().value() + repeat).unwrap();
                        }
                        _ => {}
                    }
                    r
                }
                None => self.base(100, "000000"),
            },
            9 => match self.earlier() {
                // Same key, other content: 94.
                Some(mut r) => {
                    r.amount = Some(r.amount.unwrap_or(0) + 1);
                    r
                }
                None => self.base(100, "000000"),
            },
            10 => {
                let mut r = self.base(100, "310000");
                r.amount = None;
                r
            }
            11 => {
                // A reversal of an original that comes later (a late-original marker); the
                // original may come as a "retransmission" of something never sent.
                let late_stan = self.stan + 2;
                let mut r = self.base(400, "000000");
                r.original = Some(OriginalData {
                    mti: Mti::new(200).unwrap(),
                    stan: late_stan,
                    transmission: DT,
                });
                let mut late = self.base(200, "000000");
                late.terminal = r.terminal;
                late.pan = r.pan;
                late.currency = r.currency;
                self.sent.push(late);
                r
            }
            12 => {
                let mut r = self.base(800, "000000");
                r.network_code = Some([1, 2, 301, 99][self.pick(4) as usize]);
                r
            }
            _ => self.base(300, "000000"),
        };
        self.sent.push(r.clone());
        r
    }
}

/// One run of random traffic. Returns the cluster (quiescent, recording since the start),
/// the starting snapshots, and the mid-run snapshots with the journal lengths they cover.
struct Run {
    cluster: Cluster,
    start: Vec<Vec<u8>>,
    mid: Vec<(Vec<u8>, usize)>,
    /// Batches after which some identity held both a 0100 and a 0200.
    batches_with_pairs: usize,
}

fn run_traffic(seed: u64, batches: usize) -> Run {
    let mut c = Cluster::new(
        N,
        &config(),
        accounts(),
        orders(),
        Now::from_unix_secs(START),
    )
    .expect("load");
    c.shuffle_deliveries(seed ^ 0x5EED);
    c.record_journal();
    let start = snapshots(&c);
    let mut t = Traffic::new(seed);
    let mut batches_with_pairs = 0;
    let mid_at = t.pick(batches as u64) as usize;
    let mut mid = Vec::new();
    for b in 0..batches {
        for _ in 0..=t.pick(4) {
            let r = t.next();
            if t.pick(8) == 0 {
                let s = t.pick(N as u64) as usize;
                c.submit_to(s, r);
            } else {
                c.submit(r);
            }
        }
        // Leave some batches half-delivered: the next one meets decisions in flight.
        if t.pick(2) == 0 {
            c.run();
        } else {
            for _ in 0..t.pick(12) {
                c.step();
            }
        }
        if b == mid_at {
            mid = (0..N)
                .map(|i| {
                    let mut s = Vec::new();
                    c.shards()[i].snapshot(&mut s);
                    (s, c.journal(i).len())
                })
                .collect();
        }
        if c.shards()
            .iter()
            .flat_map(|s| s.txns.values())
            .any(|slot| matches!(slot, TxnSlot::Both(_)))
        {
            batches_with_pairs += 1;
        }
        match t.pick(10) {
            0 | 1 => {
                let now = c.now().unix_secs() + t.rng.between(60, 3 * 3600) as i64;
                c.set_now(Now::from_unix_secs(now));
            }
            2 => {
                c.purge_expired();
            }
            _ => {}
        }
    }
    c.run();
    Run {
        cluster: c,
        start,
        mid,
        batches_with_pairs,
    }
}

fn snapshots(c: &Cluster) -> Vec<Vec<u8>> {
    c.shards()
        .iter()
        .map(|s| {
            let mut b = Vec::new();
            s.snapshot(&mut b);
            b
        })
        .collect()
}

fn encode_outputs(out: &[Output]) -> Vec<Vec<u8>> {
    out.iter()
        .map(|o| {
            let mut b = Vec::new();
            o.encode(&mut b);
            b
        })
        .collect()
}

/// Replays `log` on `shard` (warming each input first), checking each input's outputs against
/// the recorded ones; at index `cut` (if any) swaps the shard for one restored from its own
/// snapshot.
fn replay(mut shard: Shard, log: &[Recorded], cut: Option<usize>) -> Result<Shard, TestCaseError> {
    for (i, rec) in log.iter().enumerate() {
        if cut == Some(i) {
            shard = round_trip_snapshot(shard)?;
        }
        let input = Input::decode(&rec.input).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // As the shard thread does before deciding a batch: the warm-up reads only, so the
        // outputs and the state below must not notice it (and it must not panic on any input).
        match &input {
            Input::Request { request, .. } => shard.warm_request(request),
            Input::Peer { msg, .. } => shard.warm_peer(msg),
            Input::Purge { .. } => {}
        }
        let mut out = Vec::new();
        shard.apply(input, &mut out);
        prop_assert_eq!(
            &encode_outputs(&out),
            &rec.outputs,
            "shard {} input {}",
            shard.id(),
            i
        );
    }
    if cut == Some(log.len()) {
        shard = round_trip_snapshot(shard)?;
    }
    Ok(shard)
}

/// The shard restored from its snapshot, whose own snapshot must be the same bytes.
fn round_trip_snapshot(shard: Shard) -> Result<Shard, TestCaseError> {
    let mut a = Vec::new();
    shard.snapshot(&mut a);
    let restored = Shard::restore(shard.id(), N, config(), &a)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut b = Vec::new();
    restored.snapshot(&mut b);
    prop_assert!(a == b, "snapshot of a restored shard differs");
    Ok(restored)
}

fn restore(i: usize, bytes: &[u8]) -> Result<Shard, TestCaseError> {
    Shard::restore(i, N, config(), bytes).map_err(|e| TestCaseError::fail(e.to_string()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// (b) and (c): replaying each shard's journal alone reproduces every output and the
    /// final state; so does a snapshot at a random point (of the replay, and of the live
    /// run with messages in flight) plus the rest of the journal.
    #[test]
    fn replay_reproduces_outputs_and_state(seed in any::<u64>(), cuts in any::<[u16; N]>()) {
        let run = run_traffic(seed, 40);
        let finals = snapshots(&run.cluster);
        for i in 0..N {
            let log = run.cluster.journal(i);
            let cut = usize::from(cuts[i]) % (log.len() + 1);
            let rebuilt = replay(restore(i, &run.start[i])?, log, Some(cut))?;
            let mut snap = Vec::new();
            rebuilt.snapshot(&mut snap);
            prop_assert!(snap == finals[i], "shard {} differs after replay", i);

            let (mid, covered) = &run.mid[i];
            let rest = replay(restore(i, mid)?, &log[*covered..], None)?;
            let mut snap = Vec::new();
            rest.snapshot(&mut snap);
            prop_assert!(snap == finals[i], "shard {} differs after mid-run snapshot", i);
        }
    }

    /// Corrupting a real snapshot gives an error or a canonical snapshot, never a panic.
    #[test]
    fn corrupted_snapshots_never_panic(seed in any::<u64>(), at in any::<usize>(), value in 1u8..) {
        let run = run_traffic(seed, 6);
        let mut snap = run.start[0].clone();
        let mut later = Vec::new();
        run.cluster.shards()[0].snapshot(&mut later);
        for bytes in [&mut snap, &mut later] {
            let i = at % bytes.len();
            bytes[i] ^= value;
            if let Ok(s) = Shard::restore(0, N, config(), bytes) {
                let mut again = Vec::new();
                s.snapshot(&mut again);
                prop_assert!(&again == bytes);
            }
            bytes.truncate(i);
            prop_assert!(Shard::restore(0, N, config(), bytes).is_err());
        }
    }
}

/// The traffic above really exercises what a replay must reproduce.
#[test]
fn traffic_covers_the_protocol() {
    let run = run_traffic(7, 300);
    let c = &run.cluster;
    let stats: Vec<_> = c.shards().iter().map(Shard::stats).collect();
    let sum = |f: fn(&crate::engine::ShardStats) -> u64| stats.iter().map(f).sum::<u64>();
    assert!(sum(|s| s.parked) > 0, "retransmissions parked");
    assert!(sum(|s| s.replays) > 0, "retransmissions replayed");
    assert!(sum(|s| s.content_mismatches) > 0, "94 for other content");
    assert!(sum(|s| s.purged) > 0, "purges removed entries");
    assert!(sum(|s| s.peer_messages) > 0, "messages crossed shards");
    let mut kinds = std::collections::BTreeSet::new();
    let mut codes = std::collections::BTreeSet::new();
    for i in 0..N {
        for rec in c.journal(i) {
            match Input::decode(&rec.input).unwrap() {
                Input::Request { .. } => kinds.insert("request"),
                Input::Peer { msg, .. } => kinds.insert(msg.kind()),
                Input::Purge { .. } => kinds.insert("purge"),
            };
        }
    }
    for (_, r) in c.replies() {
        codes.insert(r.code.as_str());
    }
    assert!(
        run.batches_with_pairs > 0,
        "no 0100 and 0200 under one identity"
    );
    for k in [
        "request",
        "purge",
        "forward",
        "authorize",
        "reserve",
        "reserved",
        "check_order",
        "order_checked",
        "decided",
        "apply",
        "release",
        "applied",
    ] {
        assert!(kinds.contains(k), "no {k} in the journals: {kinds:?}");
    }
    for code in [
        "00", "05", "12", "13", "14", "25", "41", "51", "57", "61", "94",
    ] {
        assert!(codes.contains(code), "no {code} answered: {codes:?}");
    }
    // Replaying, of course, still reproduces it all.
    for i in 0..N {
        let rebuilt = replay(restore(i, &run.start[i]).unwrap(), c.journal(i), None).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        rebuilt.snapshot(&mut a);
        c.shards()[i].snapshot(&mut b);
        assert!(a == b, "shard {i}");
    }
}

/// The recovery recipe for the switch: after a crash (every shard's journal holds what it
/// applied; messages in the channels are lost), replay each journal into its shard, then
/// deliver again each replayed message its receiver has not taken (`seq` above the
/// receiver's `received_seq` from its sender). Exactly the lost messages come back, and the
/// recovered cluster ends where the uncrashed one does, byte for byte; re-delivering more
/// than that is harmless (duplicates are ignored).
#[test]
fn crash_recovery_redelivers_exactly_the_lost_messages() {
    let mut duplicates_tried = 0;
    for seed in 0..12u64 {
        let mut c = Cluster::new(
            N,
            &config(),
            accounts(),
            orders(),
            Now::from_unix_secs(START),
        )
        .unwrap();
        c.shuffle_deliveries(seed);
        c.record_journal();
        let start = snapshots(&c);
        let mut t = Traffic::new(seed);
        for _ in 0..20 {
            for _ in 0..=t.pick(4) {
                let r = t.next();
                c.submit(r);
            }
            for _ in 0..t.pick(6) {
                c.step();
            }
        }
        for _ in 0..4 {
            let r = t.next();
            c.submit(r);
        }
        // Crash now. What the channels held:
        let mut lost: Vec<(usize, Vec<u8>)> = Vec::new();
        for r in 0..N {
            for m in c.in_flight(r) {
                let mut b = Vec::new();
                m.encode(&mut b);
                lost.push((r, b));
            }
        }
        assert!(
            !lost.is_empty(),
            "seed {seed}: crash with messages in flight"
        );
        let journals: Vec<Vec<Recorded>> = (0..N).map(|i| c.journal(i).to_vec()).collect();
        let replies_before = c.replies().len();

        // Recovery: replay every journal, keep the messages it sends.
        let mut shards = Vec::new();
        let mut sent = Vec::new();
        for (i, log) in journals.iter().enumerate() {
            let mut s = Shard::restore(i, N, config(), &start[i]).unwrap();
            for rec in log {
                let mut out = Vec::new();
                s.apply(Input::decode(&rec.input).unwrap(), &mut out);
                for o in out {
                    if let Output::ToShard { shard, msg } = o {
                        sent.push((shard, msg));
                    }
                }
            }
            shards.push(s);
        }
        let (again, taken): (Vec<_>, Vec<_>) = sent
            .into_iter()
            .partition(|(r, m)| m.seq() > shards[*r].received_seq(m.from()));
        let mut again_enc: Vec<(usize, Vec<u8>)> = again
            .iter()
            .map(|(r, m)| {
                let mut b = Vec::new();
                m.encode(&mut b);
                (*r, b)
            })
            .collect();
        let mut lost_sorted = lost.clone();
        lost_sorted.sort();
        again_enc.sort();
        assert_eq!(again_enc, lost_sorted, "seed {seed}");

        // Duplicates change nothing but a counter.
        let mut probe = {
            let mut b = Vec::new();
            shards[0].snapshot(&mut b);
            Shard::restore(0, N, config(), &b).unwrap()
        };
        let dups: Vec<_> = taken.iter().filter(|(r, _)| *r == 0).collect();
        for (_, m) in &dups {
            let mut out = Vec::new();
            probe.apply(
                Input::Peer {
                    now: c.now(),
                    msg: m.clone(),
                },
                &mut out,
            );
            assert!(out.is_empty());
        }
        assert_eq!(probe.stats().duplicate_peer_messages, dups.len() as u64);
        duplicates_tried += dups.len();

        // Re-deliver in the channels' order, then let both clusters finish alike.
        let mut recovered = Cluster::from_shards(shards, c.now());
        for (r, bytes) in &lost {
            let (_, m) = again
                .iter()
                .find(|(to, m)| {
                    let mut b = Vec::new();
                    m.encode(&mut b);
                    to == r && &b == bytes
                })
                .unwrap();
            recovered.deliver_later(*r, m.clone());
        }
        c.shuffle_deliveries(seed + 100);
        recovered.shuffle_deliveries(seed + 100);
        c.run();
        recovered.run();
        assert_eq!(snapshots(&recovered), snapshots(&c), "seed {seed}");
        assert_eq!(
            recovered.replies(),
            &c.replies()[replies_before..],
            "seed {seed}"
        );
    }
    // The duplicate check above ran on something, not only on empty lists.
    assert!(
        duplicates_tried > 0,
        "no seed re-applied a message shard 0 had taken"
    );
}
