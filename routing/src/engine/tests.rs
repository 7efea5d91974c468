//! One test per rule of PROTOCOL.md section 2 and per response code the engine answers, each
//! run with one shard and with four. With four, requests are built so that the paths under
//! test really cross shards (checked with the placement functions), and the cluster counts
//! the messages delivered between shards.

use crate::build_shards;
use crate::data::{Account, CardStatus, Order, OrderStatus};
use crate::engine::AccountView;
use crate::engine::{EngineConfig, Shard, TxnSlot, TxnView};
use crate::luhn;
use crate::message::{
    MerchantId, Mti, OriginalData, ProcessingCode, Request, Response, ResponseCode, TerminalId,
};
use crate::pan::Pan;
use crate::placement::{shard_for_order, shard_for_pan, shard_for_transaction};
use crate::sim::Cluster;
use crate::time::{Now, Yymm};

use ResponseCode::*;

/// 2025-06-15T12:00:00Z.
const NOW: i64 = 1_749_988_800;
const DAY: i64 = 86_400;
const TERM: &[u8] = b"TERM0001";
/// DE 7 `0615120000`.
const DT: u64 = 615_120_000;
const USD: u16 = 840;
const JPY: u16 = 392;
const BHD: u16 = 48;
const SHOP: &[u8] = b"SHOP01         ";

// Cards by number, see `accounts()`.
const ACTIVE: u64 = 1;
const RICH: u64 = 2;
const LOST: u64 = 3;
const STOLEN: u64 = 4;
const BLOCKED: u64 = 5;
const EXPIRED: u64 = 6;
const YEN: u64 = 7;
const ZERO: u64 = 8;
const DINAR: u64 = 9;
const LIMITED: u64 = 10;
const THIS_MONTH: u64 = 11;
const SMALL: u64 = 12;
const RICH2: u64 = 13;
const UNKNOWN: u64 = 99;

/// A Luhn-valid 16-digit Visa-like PAN numbered `n`.
fn card(n: u64) -> Pan {
    let mut d = format!("4{n:014}").into_bytes();
    d.push(luhn::check_digit(&d).unwrap());
    Pan::from_digits(&d).unwrap()
}

fn mti(v: u16) -> Mti {
    Mti::new(v).unwrap()
}

fn account(
    n: u64,
    status: CardStatus,
    expiry: &str,
    currency: u16,
    balance: i64,
    limit: i64,
) -> Account {
    Account {
        pan: card(n),
        expiry: Yymm::from_digits(expiry.as_bytes()).unwrap(),
        status,
        currency,
        balance,
        daily_limit: limit,
    }
}

fn accounts() -> Vec<Account> {
    use CardStatus::*;
    vec![
        account(ACTIVE, Active, "3012", USD, 100_000, 50_000),
        account(RICH, Active, "3012", USD, 100_000_000, 100_000_000),
        account(RICH2, Active, "3012", USD, 100_000_000, 100_000_000),
        account(LOST, Lost, "3012", USD, 100_000, 50_000),
        account(STOLEN, Stolen, "3012", USD, 100_000, 50_000),
        account(BLOCKED, Blocked, "3012", USD, 100_000, 50_000),
        account(EXPIRED, Active, "2505", USD, 100_000, 50_000),
        account(YEN, Active, "3012", JPY, 150_000, 150_000),
        account(ZERO, Active, "3012", USD, 0, 50_000),
        account(DINAR, Active, "3012", BHD, 12_345, 100_000),
        account(LIMITED, Active, "3012", USD, 100_000, 10_000),
        account(THIS_MONTH, Active, "2506", USD, 100_000, 50_000),
        account(SMALL, Active, "3012", USD, 10_000, 100_000_000),
    ]
}

fn merchant() -> MerchantId {
    MerchantId::new(SHOP).unwrap()
}

fn order(id: &str, amount: i64, currency: u16, status: OrderStatus) -> Order {
    Order {
        order_id: id.into(),
        merchant_id: merchant(),
        amount,
        currency,
        status,
    }
}

/// Open orders `ORD-1`..`ORD-20` of 25.00 USD, plus a paid, a cancelled and a yen one.
fn orders() -> Vec<Order> {
    let mut v: Vec<Order> = (1..=20)
        .map(|i| order(&format!("ORD-{i}"), 2_500, USD, OrderStatus::Open))
        .collect();
    v.push(order("PAID", 2_500, USD, OrderStatus::Paid));
    v.push(order("CANCELLED", 2_500, USD, OrderStatus::Cancelled));
    v.push(order("YEN", 2_500, JPY, OrderStatus::Open));
    v
}

/// One cluster under test.
struct T {
    c: Cluster,
    n: usize,
    stan: u32,
}

impl T {
    fn new(n: usize) -> Self {
        Self::with_config(n, &EngineConfig::default())
    }

    fn with_config(n: usize, config: &EngineConfig) -> Self {
        let c = Cluster::new(n, config, accounts(), orders(), Now::from_unix_secs(NOW)).unwrap();
        Self { c, n, stan: 0 }
    }

    /// The next STAN whose transaction lives on another shard than `pan`'s account (with more
    /// than one shard), so the request's path crosses shards.
    fn stan_off(&mut self, pan: &Pan) -> u32 {
        loop {
            self.stan += 1;
            let k = shard_for_transaction(TERM, self.stan, DT, self.n);
            if self.n == 1 || k != shard_for_pan(pan.as_bytes(), self.n) {
                return self.stan;
            }
        }
    }

    fn request(
        &mut self,
        m: u16,
        pc: &str,
        pan: &Pan,
        amount: Option<u64>,
        currency: u16,
    ) -> Request {
        let stan = self.stan_off(pan);
        let mut r = Request::new(mti(m), stan, DT, TerminalId::new(b"TERM0001").unwrap());
        r.processing_code = Some(ProcessingCode::from_digits(pc.as_bytes()).unwrap());
        r.pan = Some(*pan);
        r.amount = amount;
        r.currency = Some(currency);
        r
    }

    fn purchase(&mut self, pan: &Pan, amount: u64) -> Request {
        self.request(200, "000000", pan, Some(amount), USD)
    }

    fn hold(&mut self, pan: &Pan, amount: u64) -> Request {
        self.request(100, "000000", pan, Some(amount), USD)
    }

    fn inquiry(&mut self, pan: &Pan, pc: &str, currency: u16) -> Request {
        self.request(100, pc, pan, None, currency)
    }

    /// A payment of `order_id` at SHOP01 (DE 42 padded with spaces, as on the wire).
    fn order_payment(
        &mut self,
        m: u16,
        pan: &Pan,
        amount: u64,
        currency: u16,
        order_id: &str,
    ) -> Request {
        let mut r = self.request(m, "000000", pan, Some(amount), currency);
        r.merchant = Some(merchant());
        r.order_ref = Some(order_id.to_owned());
        r
    }

    /// A request referring to `orig` through DE 90, with a STAN that puts its own identity on
    /// another shard than the original's (with more than one shard): it is routed by DE 90.
    fn referring(&mut self, m: u16, orig: &Request, amount: Option<u64>) -> Request {
        let home = orig.home_shard(self.n);
        loop {
            self.stan += 1;
            if self.n == 1 || shard_for_transaction(TERM, self.stan, DT + 1, self.n) != home {
                break;
            }
        }
        let mut r = orig.clone();
        r.mti = mti(m);
        r.stan = self.stan;
        r.transmission = DT + 1;
        r.amount = amount;
        r.order_ref = None;
        r.original = Some(OriginalData {
            mti: orig.mti,
            stan: orig.stan,
            transmission: orig.transmission,
        });
        assert_eq!(
            r.home_shard(self.n),
            home,
            "a reversal or completion goes to its original's shard"
        );
        r
    }

    fn reversal(&mut self, orig: &Request) -> Request {
        self.referring(400, orig, orig.amount)
    }

    fn reverse(&mut self, orig: &Request) -> ResponseCode {
        let r = self.reversal(orig);
        self.code(r)
    }

    fn completion(&mut self, hold: &Request, amount: u64) -> Request {
        self.referring(220, hold, Some(amount))
    }

    fn send(&mut self, r: Request) -> Response {
        self.c.request(r)
    }

    fn code(&mut self, r: Request) -> ResponseCode {
        self.send(r).code
    }

    fn acct(&self, n: u64) -> AccountView {
        self.c.account(&card(n)).unwrap()
    }

    fn order_status(&self, id: &str) -> OrderStatus {
        self.c.order(&merchant(), id).unwrap().status
    }

    /// An open order whose shard differs from `pan`'s account shard (with more than one).
    fn order_off(&self, pan: &Pan) -> String {
        (1..=20)
            .map(|i| format!("ORD-{i}"))
            .find(|id| {
                self.n == 1
                    || shard_for_order(SHOP, id.as_bytes(), self.n)
                        != shard_for_pan(pan.as_bytes(), self.n)
            })
            .unwrap()
    }

    /// With several shards, messages crossed between them; with one, none did.
    fn assert_crossed(&self) {
        if self.n == 1 {
            assert_eq!(self.c.cross_shard_messages(), 0);
        } else {
            assert!(
                self.c.cross_shard_messages() > 0,
                "no message crossed shards"
            );
        }
    }

    fn advance(&mut self, secs: i64) {
        let now = self.c.now().unix_secs() + secs;
        self.c.set_now(Now::from_unix_secs(now));
    }
}

/// Runs a scenario with one shard and with four.
fn both(f: impl Fn(&mut T)) {
    for n in [1, 4] {
        let mut t = T::new(n);
        f(&mut t);
    }
}

// ===== approvals, idempotency =====

#[test]
fn purchase_is_approved_with_an_approval_code_and_debited() {
    both(|t| {
        let r = t.purchase(&card(ACTIVE), 12_345);
        let resp = t.send(r);
        assert_eq!(resp.code, Approved);
        assert_eq!(resp.mti, mti(210));
        let code = resp.approval_code.expect("0210 approved carries DE 38");
        assert_eq!(code.as_str().len(), 6);
        assert!(code.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(resp.additional_amounts, None);
        let a = t.acct(ACTIVE);
        assert_eq!(
            (a.balance, a.held, a.available, a.day_total),
            (87_655, 0, 87_655, 12_345)
        );
        t.assert_crossed();
    });
}

#[test]
fn hold_is_approved_and_reserves_funds() {
    both(|t| {
        let h = t_hold(t, ACTIVE, 20_000);
        let resp = t.send(h);
        assert_eq!((resp.code, resp.mti), (Approved, mti(110)));
        assert!(resp.approval_code.is_some());
        let a = t.acct(ACTIVE);
        assert_eq!(
            (a.balance, a.held, a.available, a.day_total),
            (100_000, 20_000, 80_000, 20_000)
        );
        t.assert_crossed();
    });
}

fn t_hold(t: &mut T, n: u64, amount: u64) -> Request {
    t.hold(&card(n), amount)
}

#[test]
fn replay_returns_the_identical_answer_and_applies_once() {
    both(|t| {
        let r = t.purchase(&card(ACTIVE), 1_000);
        let first = t.send(r.clone());
        let again = t.send(r.clone());
        assert_eq!(first, again, "same DE 38 and 39");
        // A repeat (0201) shares the key of 0200.
        let mut repeat = r.clone();
        repeat.mti = mti(201);
        assert_eq!(t.send(repeat), first);
        assert_eq!(t.acct(ACTIVE).balance, 99_000);
        // A declined answer is replayed too.
        let declined = t.purchase(&card(SMALL), 10_001);
        assert_eq!(t.code(declined.clone()), InsufficientFunds);
        assert_eq!(t.code(declined), InsufficientFunds);
        t.assert_crossed();
    });
}

#[test]
fn same_key_with_other_content_answers_94_and_changes_nothing() {
    both(|t| {
        let r = t.purchase(&card(ACTIVE), 1_000);
        let first = t.send(r.clone());
        assert_eq!(first.code, Approved);
        let mut amount = r.clone();
        amount.amount = Some(2_000);
        let mut pan = r.clone();
        pan.pan = Some(card(RICH));
        let mut currency = r.clone();
        currency.currency = Some(978);
        let mut pc = r.clone();
        pc.processing_code = ProcessingCode::from_digits(b"001000");
        for changed in [amount, pan, currency, pc] {
            let resp = t.send(changed);
            assert_eq!(
                (resp.code, resp.mti, resp.approval_code),
                (Duplicate, mti(210), None)
            );
        }
        assert_eq!(t.acct(ACTIVE).balance, 99_000);
        assert_eq!(t.acct(RICH).balance, 100_000_000);
        // 14, 42 and 48 are not "other content": the original answer is replayed.
        let mut other = r.clone();
        other.expiry = Yymm::from_digits(b"3012");
        other.merchant = Some(merchant());
        other.order_ref = Some("ORD-1".into());
        assert_eq!(t.send(other), first);
        assert_eq!(t.send(r), first);
        assert_eq!(t.acct(ACTIVE).balance, 99_000);
        assert_eq!(t.order_status("ORD-1"), OrderStatus::Open);
    });
}

#[test]
fn keys_differ_by_mti_without_repeat_digit() {
    both(|t| {
        // 0200 and 0220 with one 41 + 11 + 7 are two keys: the 0220 is a completion of that
        // purchase (found by its own 41 + 11 + 7), which is not a hold: 25.
        let p = t.purchase(&card(ACTIVE), 1_000);
        assert_eq!(t.code(p.clone()), Approved);
        let mut c = p.clone();
        c.mti = mti(220);
        let resp = t.send(c.clone());
        assert_eq!((resp.code, resp.mti), (UnableToLocate, mti(230)));
        // 0221 shares the 0220's key.
        c.mti = mti(221);
        assert_eq!(t.send(c).code, UnableToLocate);
        assert_eq!(t.acct(ACTIVE).balance, 99_000);
    });
}

#[test]
fn retransmission_while_pending_is_parked_and_answered_alike() {
    both(|t| {
        let r = t.purchase(&card(ACTIVE), 1_000);
        let a = t.c.submit(r.clone());
        let b = t.c.submit(r.clone());
        let mut changed = r.clone();
        changed.amount = Some(5);
        let c = t.c.submit(changed);
        if t.n > 1 {
            // Decision in flight: the retransmission waits, the changed one is refused now.
            let now = t.c.replies();
            assert_eq!(now.len(), 1, "{now:?}");
            assert_eq!((now[0].0, now[0].1.code), (c, Duplicate));
            assert_eq!(t.c.shards()[r.home_shard(t.n)].stats().parked, 1);
        }
        t.c.run();
        let (ra, rb, rc) = (
            t.c.take_replies(a),
            t.c.take_replies(b),
            t.c.take_replies(c),
        );
        assert_eq!(ra.len(), 1);
        assert_eq!(ra, rb);
        assert_eq!(ra[0].code, Approved);
        assert_eq!(rc[0].code, Duplicate);
        assert_eq!(t.acct(ACTIVE).balance, 99_000);
        t.assert_crossed();
    });
}

#[test]
fn idempotency_records_and_markers_expire_after_the_window() {
    for n in [1, 4] {
        let config = EngineConfig {
            idempotency_window_secs: 60,
            ..EngineConfig::default()
        };
        let mut t = T::with_config(n, &config);
        let r = t.purchase(&card(RICH), 1_000);
        let first = t.send(r.clone());
        t.advance(59);
        assert_eq!(t.send(r.clone()), first);
        t.advance(1);
        // Key and record are forgotten (lazily, without a purge): the same message is now a
        // new transaction.
        let again = t.send(r.clone());
        assert_eq!(again.code, Approved);
        assert_ne!(again.approval_code, first.approval_code);
        assert_eq!(t.acct(RICH).balance, 100_000_000 - 2_000);

        // A late-original marker lasts for the window only.
        let orig = t.purchase(&card(RICH), 500);
        assert_eq!(t.reverse(&orig), UnableToLocate);
        t.advance(61);
        assert_eq!(t.code(orig), Approved);
    }
}

#[test]
fn approval_codes_are_unique() {
    both(|t| {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let r = t.purchase(&card(RICH), 1);
            let code = t.send(r).approval_code.unwrap();
            assert!(seen.insert(code), "approval code {code} issued twice");
        }
    });
}

/// `Output::Reply::durable` (an answer the switch may send before the home shard's commit)
/// is set exactly where the answer follows from a decision another shard has committed: a
/// payment whose card lives on another shard. When the card lives on the home shard, request
/// and decision are one uncommitted input there: the answer must wait; so must the answer to
/// a decision from an older journal, which carries no approval code.
#[test]
fn only_answers_to_another_shards_decision_may_leave_before_the_commit() {
    use crate::engine::{Input, Output};
    let mut shards = build_shards(2, &EngineConfig::default(), accounts(), orders()).unwrap();
    let pan = card(RICH);
    let a = shard_for_pan(pan.as_bytes(), 2);
    let now = Now::from_unix_secs(NOW);
    // (card on another shard, decision as an older journal holds it: without the approval)
    for (crossing, legacy) in [(false, false), (true, false), (true, true)] {
        let stan = (1..)
            .find(|&s| (shard_for_transaction(TERM, s, DT, 2) != a) == crossing)
            .unwrap();
        let mut r = Request::new(mti(200), stan, DT, TerminalId::new(TERM).unwrap());
        r.processing_code = Some(ProcessingCode::from_digits(b"000000").unwrap());
        r.pan = Some(pan);
        r.amount = Some(100);
        r.currency = Some(USD);
        let home = r.home_shard(2);
        let mut pending = vec![(
            home,
            Input::Request {
                now,
                token: 1,
                request: Box::new(r),
            },
        )];
        let mut replies = Vec::new();
        while let Some((to, input)) = pending.pop() {
            let mut out = Vec::new();
            shards[to].apply(input, &mut out);
            for o in out {
                match o {
                    Output::Reply {
                        response, durable, ..
                    } => replies.push((to, response, durable)),
                    Output::ToShard { shard, mut msg } => {
                        if let (true, super::Msg::Decided { approval, .. }) = (legacy, &mut msg.msg)
                        {
                            *approval = None;
                        }
                        pending.push((shard, Input::Peer { now, msg }));
                    }
                }
            }
        }
        assert_eq!(replies.len(), 1, "{replies:?}");
        let (from, response, durable) = &replies[0];
        assert_eq!(*from, home);
        assert_eq!(response.code, Approved);
        assert!(response.approval_code.is_some());
        // An older decision is numbered here, so its answer waits for this shard's commit.
        assert_eq!(
            *durable,
            crossing && !legacy,
            "card on another shard: {crossing}, older journal: {legacy}"
        );
    }
}

// ===== 12 =====

#[test]
fn unsupported_mti_processing_code_or_network_code_answers_12() {
    both(|t| {
        let pan = card(ACTIVE);
        let cases = [
            (300, "000000", 310),
            (200, "310000", 210),
            (200, "200000", 210),
            (100, "200000", 110),
            (220, "310000", 230),
            (400, "310000", 410),
            (1200, "000000", 1210),
            (210, "000000", 220),
        ];
        for (m, pc, resp_mti) in cases {
            let r = t.request(m, pc, &pan, Some(100), USD);
            let resp = t.send(r.clone());
            assert_eq!(
                (resp.code, resp.mti),
                (InvalidTransaction, mti(resp_mti)),
                "{m:04} {pc}"
            );
            // Remembered like any answer: same content replays, other content is 94.
            assert_eq!(t.send(r.clone()), resp);
            let mut other = r;
            other.amount = Some(101);
            assert_eq!(t.code(other), Duplicate);
        }
        assert_eq!(t.acct(ACTIVE).balance, 100_000);
    });
}

#[test]
fn network_management() {
    both(|t| {
        for (m, code70, expected) in [
            (800, Some(1), Approved),
            (800, Some(2), Approved),
            (800, Some(301), Approved),
            (801, Some(301), Approved),
            (800, Some(999), InvalidTransaction),
            (800, None, InvalidTransaction),
        ] {
            let mut r = Request::new(mti(m), 7, DT, TerminalId::EMPTY);
            r.network_code = code70;
            let resp = t.send(r.clone());
            assert_eq!(
                (resp.code, resp.mti, resp.approval_code),
                (expected, mti(810), None)
            );
            // Not stored: answered afresh.
            assert_eq!(t.send(r).code, expected);
        }
    });
}

// ===== 05 late original, 25 reversals =====

#[test]
fn reversal_before_original_answers_25_then_the_original_05() {
    both(|t| {
        let orig = t.purchase(&card(ACTIVE), 1_000);
        let rev = t.reversal(&orig);
        if t.n > 1 {
            assert_ne!(
                rev.own_txn().shard(t.n),
                rev.home_shard(t.n),
                "routed by DE 90"
            );
        }
        let resp = t.send(rev.clone());
        assert_eq!((resp.code, resp.mti), (UnableToLocate, mti(410)));
        assert_eq!(
            t.c.transaction(&orig.own_txn()),
            Some(TxnView::LateOriginalMarker)
        );
        let late = t.send(orig.clone());
        assert_eq!((late.code, late.approval_code), (DoNotHonour, None));
        assert_eq!(t.acct(ACTIVE).balance, 100_000);
        // Both answers are remembered.
        assert_eq!(t.send(orig.clone()).code, DoNotHonour);
        assert_eq!(t.send(rev).code, UnableToLocate);
        // A new reversal of the declined late original: 00, nothing changes.
        let rev2 = t.reversal(&orig);
        assert_eq!(t.code(rev2), Approved);
        assert_eq!(t.acct(ACTIVE).balance, 100_000);
    });
}

#[test]
fn reversal_undoes_a_purchase_exactly_once() {
    both(|t| {
        let orig = t.purchase(&card(ACTIVE), 1_000);
        assert_eq!(t.code(orig.clone()), Approved);
        let rev = t.reversal(&orig);
        let resp = t.send(rev.clone());
        assert_eq!(
            (resp.code, resp.mti, resp.approval_code),
            (Approved, mti(410), None)
        );
        let a = t.acct(ACTIVE);
        assert_eq!((a.balance, a.day_total), (100_000, 0));
        // Replay, a repeat (0401), an advice (0420) and a second reversal: no second credit.
        assert_eq!(t.send(rev.clone()), resp);
        let mut repeat = rev.clone();
        repeat.mti = mti(401);
        assert_eq!(t.send(repeat), resp);
        let advice = t.referring(420, &orig, orig.amount);
        let adv = t.send(advice);
        assert_eq!((adv.code, adv.mti), (Approved, mti(430)));
        let rev2 = t.reversal(&orig);
        assert_eq!(t.code(rev2), Approved);
        assert_eq!(t.acct(ACTIVE).balance, 100_000);
        assert_eq!(t.c.transaction(&orig.own_txn()), Some(TxnView::Reversed));
        t.assert_crossed();
    });
}

#[test]
fn reversal_of_a_hold_releases_it() {
    both(|t| {
        let hold = t_hold(t, ACTIVE, 30_000);
        assert_eq!(t.code(hold.clone()), Approved);
        assert_eq!(t.acct(ACTIVE).held, 30_000);
        let rev = t.reversal(&hold);
        assert_eq!(t.code(rev), Approved);
        let a = t.acct(ACTIVE);
        assert_eq!((a.balance, a.held, a.day_total), (100_000, 0, 0));
    });
}

#[test]
fn reversal_of_a_declined_original_answers_00_and_changes_nothing() {
    both(|t| {
        let declined = t.purchase(&card(SMALL), 10_001);
        assert_eq!(t.code(declined.clone()), InsufficientFunds);
        let rev = t.reversal(&declined);
        assert_eq!(t.code(rev), Approved);
        assert_eq!(t.acct(SMALL).balance, 10_000);
        // Also for an original declined at K (Luhn).
        let mut bad = t.purchase(&card(ACTIVE), 100);
        bad.pan = Some("4111111111111112".parse().unwrap());
        assert_eq!(t.code(bad.clone()), InvalidCardNumber);
        assert_eq!(t.reverse(&bad), Approved);
    });
}

#[test]
fn reversal_with_another_pan_answers_25() {
    both(|t| {
        let orig = t.purchase(&card(ACTIVE), 1_000);
        assert_eq!(t.code(orig.clone()), Approved);
        let mut rev = t.reversal(&orig);
        rev.pan = Some(card(RICH));
        assert_eq!(t.code(rev), UnableToLocate);
        assert_eq!(t.acct(ACTIVE).balance, 99_000);
        assert_eq!(t.acct(RICH).balance, 100_000_000);
        // The original is still reversible with its own PAN.
        let rev = t.reversal(&orig);
        assert_eq!(t.code(rev), Approved);
        assert_eq!(t.acct(ACTIVE).balance, 100_000);
    });
}

#[test]
fn reversal_without_field_90_finds_the_original_by_its_own_fields() {
    both(|t| {
        let orig = t.purchase(&card(ACTIVE), 1_000);
        assert_eq!(t.code(orig.clone()), Approved);
        let mut rev = orig.clone();
        rev.mti = mti(400);
        assert_eq!(rev.home_shard(t.n), orig.home_shard(t.n));
        assert_eq!(t.code(rev), Approved);
        assert_eq!(t.acct(ACTIVE).balance, 100_000);
        t.assert_crossed();
    });
}

#[test]
fn reversal_arriving_while_the_original_is_in_flight_waits_for_it() {
    both(|t| {
        let orig = t.purchase(&card(ACTIVE), 1_000);
        let rev = t.reversal(&orig);
        let a = t.c.submit(orig.clone());
        let b = t.c.submit(rev);
        t.c.run();
        assert_eq!(t.c.take_replies(a)[0].code, Approved);
        assert_eq!(t.c.take_replies(b)[0].code, Approved);
        assert_eq!(t.acct(ACTIVE).balance, 100_000);
        assert_eq!(t.c.transaction(&orig.own_txn()), Some(TxnView::Reversed));
    });
}

// ===== completions =====

#[test]
fn completion_debits_the_advice_amount_and_releases_the_whole_hold() {
    both(|t| {
        let hold = t_hold(t, ACTIVE, 5_000);
        assert_eq!(t.code(hold.clone()), Approved);
        let c = t.completion(&hold, 3_000);
        let resp = t.send(c.clone());
        assert_eq!(
            (resp.code, resp.mti, resp.approval_code),
            (Approved, mti(230), None)
        );
        let a = t.acct(ACTIVE);
        assert_eq!((a.balance, a.held, a.available), (97_000, 0, 97_000));
        // Towards the daily limit the completion replaces the hold.
        assert_eq!(a.day_total, 3_000);
        // 0221 repeats 0220.
        let mut repeat = c;
        repeat.mti = mti(221);
        assert_eq!(t.send(repeat), resp);
        assert_eq!(t.acct(ACTIVE).balance, 97_000);
        assert_eq!(
            t.c.transaction(&hold.own_txn()),
            Some(TxnView::Completed {
                held: 5_000,
                amount: 3_000
            })
        );
        t.assert_crossed();
    });
}

#[test]
fn completion_above_the_hold_or_zero_answers_13() {
    both(|t| {
        let hold = t_hold(t, ACTIVE, 5_000);
        assert_eq!(t.code(hold.clone()), Approved);
        let above = t.completion(&hold, 5_001);
        assert_eq!(t.code(above), InvalidAmount);
        let zero = t.completion(&hold, 0);
        assert_eq!(t.code(zero), InvalidAmount);
        let a = t.acct(ACTIVE);
        assert_eq!((a.balance, a.held), (100_000, 5_000));
        // The full hold is fine.
        let full = t.completion(&hold, 5_000);
        assert_eq!(t.code(full), Approved);
        assert_eq!(t.acct(ACTIVE).balance, 95_000);
    });
}

#[test]
fn completing_a_hold_twice_answers_94() {
    both(|t| {
        let hold = t_hold(t, ACTIVE, 5_000);
        assert_eq!(t.code(hold.clone()), Approved);
        let first = t.completion(&hold, 3_000);
        assert_eq!(t.code(first.clone()), Approved);
        let second = t.completion(&hold, 1_000);
        assert_eq!(t.code(second.clone()), Duplicate);
        // Both answers are remembered under their keys.
        assert_eq!(t.code(first), Approved);
        assert_eq!(t.code(second), Duplicate);
        let a = t.acct(ACTIVE);
        assert_eq!((a.balance, a.held), (97_000, 0));
    });
}

#[test]
fn completion_of_a_missing_reversed_declined_or_purchase_original_answers_25() {
    both(|t| {
        // Unknown hold.
        let never = t_hold(t, ACTIVE, 5_000);
        let c = t.completion(&never, 1_000);
        assert_eq!(t.code(c), UnableToLocate);
        // Reversed hold.
        let hold = t_hold(t, ACTIVE, 5_000);
        assert_eq!(t.code(hold.clone()), Approved);
        assert_eq!(t.reverse(&hold), Approved);
        let c = t.completion(&hold, 1_000);
        assert_eq!(t.code(c), UnableToLocate);
        // Declined hold.
        let declined = t_hold(t, SMALL, 10_001);
        assert_eq!(t.code(declined.clone()), InsufficientFunds);
        let c = t.completion(&declined, 1_000);
        assert_eq!(t.code(c), UnableToLocate);
        // A purchase.
        let p = t.purchase(&card(ACTIVE), 1_000);
        assert_eq!(t.code(p.clone()), Approved);
        let c = t.completion(&p, 1_000);
        assert_eq!(t.code(c), UnableToLocate);
        // Another PAN.
        let hold = t_hold(t, ACTIVE, 5_000);
        assert_eq!(t.code(hold.clone()), Approved);
        let mut c = t.completion(&hold, 1_000);
        c.pan = Some(card(RICH));
        assert_eq!(t.code(c), UnableToLocate);
        let a = t.acct(ACTIVE);
        assert_eq!((a.balance, a.held), (99_000, 5_000));
    });
}

#[test]
fn completion_in_another_currency_answers_57() {
    both(|t| {
        let hold = t_hold(t, ACTIVE, 5_000);
        assert_eq!(t.code(hold.clone()), Approved);
        let mut c = t.completion(&hold, 1_000);
        c.currency = Some(978);
        assert_eq!(t.code(c), NotPermitted);
        assert_eq!(t.acct(ACTIVE).held, 5_000);
    });
}

#[test]
fn completion_does_not_recheck_the_card() {
    // A hold approved on a card that expires at the end of this month, completed next month.
    both(|t| {
        let hold = t_hold(t, THIS_MONTH, 5_000);
        assert_eq!(t.code(hold.clone()), Approved);
        t.advance(20 * DAY);
        let c = t.completion(&hold, 5_000);
        assert_eq!(t.code(c), Approved);
        assert_eq!(t.acct(THIS_MONTH).balance, 95_000);
    });
}

#[test]
fn reversal_of_a_completed_hold_credits_the_completed_amount() {
    both(|t| {
        let hold = t_hold(t, ACTIVE, 5_000);
        assert_eq!(t.code(hold.clone()), Approved);
        let c = t.completion(&hold, 3_000);
        assert_eq!(t.code(c), Approved);
        let rev = t.reversal(&hold);
        assert_eq!(t.code(rev), Approved);
        let a = t.acct(ACTIVE);
        assert_eq!((a.balance, a.held, a.day_total), (100_000, 0, 0));
        // Reversed: no more completion, and a second reversal changes nothing.
        let c = t.completion(&hold, 1_000);
        assert_eq!(t.code(c), UnableToLocate);
        assert_eq!(t.reverse(&hold), Approved);
        assert_eq!(t.acct(ACTIVE).balance, 100_000);
    });
}

// ===== card checks: 14 41 43 05 54 57 13 =====

#[test]
fn unknown_card_or_luhn_failure_answers_14() {
    both(|t| {
        let unknown = t.purchase(&card(UNKNOWN), 100);
        let resp = t.send(unknown);
        assert_eq!((resp.code, resp.approval_code), (InvalidCardNumber, None));
        t.assert_crossed();
        let mut luhn = t.purchase(&card(ACTIVE), 100);
        luhn.pan = Some("4111111111111112".parse().unwrap());
        assert_eq!(t.code(luhn), InvalidCardNumber);
        let mut short = t.purchase(&card(ACTIVE), 100);
        short.pan = Some("79927398713".parse().unwrap()); // Luhn-valid, 11 digits
        assert_eq!(t.code(short), InvalidCardNumber);
        let mut missing = t.purchase(&card(ACTIVE), 100);
        missing.pan = None;
        assert_eq!(t.code(missing), InvalidCardNumber);
        let bi = t.inquiry(&card(UNKNOWN), "310000", USD);
        assert_eq!(t.code(bi), InvalidCardNumber);
    });
}

#[test]
fn lost_stolen_blocked_answer_41_43_05() {
    both(|t| {
        for (n, code) in [
            (LOST, LostCard),
            (STOLEN, StolenCard),
            (BLOCKED, DoNotHonour),
        ] {
            let p = t.purchase(&card(n), 100);
            assert_eq!(t.code(p), code);
            let h = t.hold(&card(n), 100);
            assert_eq!(t.code(h), code);
            let bi = t.inquiry(&card(n), "310000", USD);
            assert_eq!(t.code(bi), code);
            assert_eq!(t.acct(n).balance, 100_000);
        }
        t.assert_crossed();
    });
}

#[test]
fn expired_card_or_wrong_field_14_answers_54() {
    both(|t| {
        let p = t.purchase(&card(EXPIRED), 100);
        assert_eq!(t.code(p), ExpiredCard);
        let mut wrong = t.purchase(&card(ACTIVE), 100);
        wrong.expiry = Yymm::from_digits(b"3011");
        assert_eq!(t.code(wrong), ExpiredCard);
        let mut right = t.purchase(&card(ACTIVE), 100);
        right.expiry = Yymm::from_digits(b"3012");
        assert_eq!(t.code(right), Approved);
        // A card is valid through its expiry month.
        let p = t.purchase(&card(THIS_MONTH), 100);
        assert_eq!(t.code(p), Approved);
        t.advance(16 * DAY); // 2025-07-01
        let p = t.purchase(&card(THIS_MONTH), 100);
        assert_eq!(t.code(p), ExpiredCard);
        assert_eq!(t.acct(EXPIRED).balance, 100_000);
    });
}

#[test]
fn currency_other_than_the_accounts_answers_57() {
    both(|t| {
        let p = t.request(200, "000000", &card(ACTIVE), Some(100), 978);
        assert_eq!(t.code(p), NotPermitted);
        let p = t.request(200, "000000", &card(YEN), Some(100), JPY);
        assert_eq!(t.code(p), Approved);
        let bi = t.inquiry(&card(ACTIVE), "310000", JPY);
        assert_eq!(t.code(bi), NotPermitted);
        assert_eq!(t.acct(ACTIVE).balance, 100_000);
    });
}

#[test]
fn zero_amount_answers_13() {
    both(|t| {
        let p = t.purchase(&card(ACTIVE), 0);
        assert_eq!(t.code(p), InvalidAmount);
        let h = t.hold(&card(ACTIVE), 0);
        assert_eq!(t.code(h), InvalidAmount);
        let mut none = t.purchase(&card(ACTIVE), 1);
        none.amount = None;
        assert_eq!(t.code(none), InvalidAmount);
        // The card checks come first.
        let p = t.purchase(&card(LOST), 0);
        assert_eq!(t.code(p), LostCard);
    });
}

#[test]
fn bin_table_declines_after_the_unknown_card_check() {
    use crate::bins::{BinAction, BinRangeEntry, BinTable};
    for n in [1, 4] {
        let bins = BinTable::from_entries(&[BinRangeEntry {
            low: "400000".into(),
            high: "400000".into(),
            action: BinAction::Decline(NotPermitted),
        }])
        .unwrap();
        let mut t = T::with_config(
            n,
            &EngineConfig {
                bins,
                ..EngineConfig::default()
            },
        );
        let p = t.purchase(&card(ACTIVE), 100);
        assert_eq!(t.code(p), NotPermitted);
        let p = t.purchase(&card(UNKNOWN), 100);
        assert_eq!(t.code(p), InvalidCardNumber);
        let p = t.purchase(&card(LOST), 100);
        assert_eq!(
            t.code(p),
            NotPermitted,
            "the BIN table comes before the card status"
        );
    }
}

// ===== 51, 61 =====

#[test]
fn insufficient_available_funds_answer_51() {
    both(|t| {
        let p = t.purchase(&card(SMALL), 10_001);
        assert_eq!(t.code(p), InsufficientFunds);
        let h = t.hold(&card(SMALL), 6_000);
        assert_eq!(t.code(h), Approved);
        // Available is balance minus open holds.
        let p = t.purchase(&card(SMALL), 4_001);
        assert_eq!(t.code(p), InsufficientFunds);
        let p = t.purchase(&card(SMALL), 4_000);
        assert_eq!(t.code(p), Approved);
        let a = t.acct(SMALL);
        assert_eq!((a.balance, a.held, a.available), (6_000, 6_000, 0));
        let p = t.purchase(&card(ZERO), 1);
        assert_eq!(t.code(p), InsufficientFunds);
        t.assert_crossed();
    });
}

#[test]
fn daily_limit_boundary_answers_61_above_the_limit_only() {
    both(|t| {
        // LIMITED: balance 1000.00, daily limit 100.00.
        let p = t.purchase(&card(LIMITED), 6_000);
        assert_eq!(t.code(p), Approved);
        let h = t.hold(&card(LIMITED), 4_000);
        assert_eq!(
            t.code(h),
            Approved,
            "a total equal to the limit is approved"
        );
        let p = t.purchase(&card(LIMITED), 1);
        assert_eq!(t.code(p), ExceedsLimit);
        assert_eq!(t.acct(LIMITED).day_total, 10_000);
        // Next UTC day: the total starts over.
        t.advance(12 * 3_600);
        let p = t.purchase(&card(LIMITED), 10_000);
        assert_eq!(t.code(p), Approved);
        let p = t.purchase(&card(LIMITED), 1);
        assert_eq!(t.code(p), ExceedsLimit);
    });
}

#[test]
fn reversal_gives_back_to_the_daily_total() {
    both(|t| {
        let p = t.purchase(&card(LIMITED), 10_000);
        assert_eq!(t.code(p.clone()), Approved);
        let q = t.purchase(&card(LIMITED), 1);
        assert_eq!(t.code(q), ExceedsLimit);
        assert_eq!(t.reverse(&p), Approved);
        assert_eq!(t.acct(LIMITED).day_total, 0);
        let q = t.purchase(&card(LIMITED), 10_000);
        assert_eq!(t.code(q), Approved);
    });
}

#[test]
fn completion_replaces_the_hold_towards_the_daily_limit() {
    both(|t| {
        let h = t.hold(&card(LIMITED), 10_000);
        assert_eq!(t.code(h.clone()), Approved);
        let p = t.purchase(&card(LIMITED), 1);
        assert_eq!(t.code(p), ExceedsLimit);
        let c = t.completion(&h, 3_000);
        assert_eq!(t.code(c), Approved);
        assert_eq!(t.acct(LIMITED).day_total, 3_000);
        let p = t.purchase(&card(LIMITED), 7_000);
        assert_eq!(t.code(p), Approved);
        let p = t.purchase(&card(LIMITED), 1);
        assert_eq!(t.code(p), ExceedsLimit);
    });
}

// ===== orders =====

#[test]
fn order_payment_marks_the_order_paid_and_a_second_payment_answers_94() {
    both(|t| {
        let id = t.order_off(&card(RICH));
        let p = t.order_payment(200, &card(RICH), 2_500, USD, &id);
        let resp = t.send(p.clone());
        assert_eq!(resp.code, Approved);
        assert!(resp.approval_code.is_some());
        let o = t.c.order(&merchant(), &id).unwrap();
        assert_eq!(
            (o.status, o.paid_by),
            (OrderStatus::Paid, Some(p.own_txn()))
        );
        assert_eq!(t.acct(RICH).balance, 100_000_000 - 2_500);
        let second = t.order_payment(200, &card(RICH2), 2_500, USD, &id);
        assert_eq!(t.code(second), Duplicate);
        assert_eq!(t.acct(RICH2).balance, 100_000_000);
        // Paid in the data file.
        let paid = t.order_payment(200, &card(RICH2), 2_500, USD, "PAID");
        assert_eq!(t.code(paid), Duplicate);
        t.assert_crossed();
    });
}

#[test]
fn missing_or_cancelled_order_answers_25_and_a_different_amount_or_currency_13() {
    both(|t| {
        let p = t.order_payment(200, &card(RICH), 2_500, USD, "NO-SUCH-ORDER");
        assert_eq!(t.code(p), UnableToLocate);
        let p = t.order_payment(200, &card(RICH), 2_500, USD, "CANCELLED");
        assert_eq!(t.code(p), UnableToLocate);
        let id = t.order_off(&card(RICH));
        let p = t.order_payment(200, &card(RICH), 2_501, USD, &id);
        assert_eq!(t.code(p), InvalidAmount);
        let p = t.order_payment(200, &card(YEN), 2_500, JPY, &id);
        assert_eq!(
            t.code(p),
            InvalidAmount,
            "currency differs from the order's"
        );
        // The merchant is part of the order's identity.
        let mut p = t.order_payment(200, &card(RICH), 2_500, USD, &id);
        p.merchant = Some(MerchantId::new(b"SHOP02").unwrap());
        assert_eq!(t.code(p), UnableToLocate);
        // Card checks come before order checks.
        let p = t.order_payment(200, &card(LOST), 2_500, USD, "CANCELLED");
        assert_eq!(t.code(p), LostCard);
        assert_eq!(t.order_status(&id), OrderStatus::Open);
        assert_eq!(t.acct(RICH).balance, 100_000_000);
        t.assert_crossed();
    });
}

#[test]
fn declined_payment_releases_the_order() {
    both(|t| {
        let id = t.order_off(&card(ZERO));
        let p = t.order_payment(200, &card(ZERO), 2_500, USD, &id);
        assert_eq!(t.code(p), InsufficientFunds);
        assert_eq!(t.order_status(&id), OrderStatus::Open);
        let p = t.order_payment(200, &card(RICH), 2_500, USD, &id);
        assert_eq!(t.code(p), Approved);
    });
}

#[test]
fn reversal_reopens_the_order() {
    both(|t| {
        let id = t.order_off(&card(RICH));
        let p = t.order_payment(200, &card(RICH), 2_500, USD, &id);
        assert_eq!(t.code(p.clone()), Approved);
        assert_eq!(t.reverse(&p), Approved);
        let o = t.c.order(&merchant(), &id).unwrap();
        assert_eq!((o.status, o.paid_by), (OrderStatus::Open, None));
        assert_eq!(t.acct(RICH).balance, 100_000_000);
        let again = t.order_payment(200, &card(RICH2), 2_500, USD, &id);
        assert_eq!(t.code(again), Approved);
        // A second reversal of the first payment does not reopen the order paid by another.
        assert_eq!(t.reverse(&p), Approved);
        assert_eq!(t.order_status(&id), OrderStatus::Paid);
    });
}

#[test]
fn hold_with_an_order_reserves_it_and_its_reversal_reopens_it() {
    both(|t| {
        let id = t.order_off(&card(RICH));
        let h = t.order_payment(100, &card(RICH), 2_500, USD, &id);
        let resp = t.send(h.clone());
        assert_eq!((resp.code, resp.mti), (Approved, mti(110)));
        assert_eq!(t.order_status(&id), OrderStatus::Paid);
        let other = t.order_payment(200, &card(RICH2), 2_500, USD, &id);
        assert_eq!(t.code(other), Duplicate);
        // Completing the hold keeps it paid; reversing the completed hold reopens it.
        let c = t.completion(&h, 2_500);
        assert_eq!(t.code(c), Approved);
        assert_eq!(t.order_status(&id), OrderStatus::Paid);
        assert_eq!(t.reverse(&h), Approved);
        assert_eq!(t.order_status(&id), OrderStatus::Open);
        assert_eq!(t.acct(RICH).balance, 100_000_000);
    });
}

#[test]
fn concurrent_payments_of_one_order_approve_exactly_one() {
    for n in [1, 4] {
        for seed in 0..16 {
            let mut t = T::new(n);
            t.c.shuffle_deliveries(seed);
            let id = t.order_off(&card(RICH));
            let p1 = t.order_payment(200, &card(RICH), 2_500, USD, &id);
            let p2 = t.order_payment(100, &card(RICH2), 2_500, USD, &id);
            // Both are submitted before any message between shards is delivered.
            let a = t.c.submit(p1.clone());
            let b = t.c.submit(p2.clone());
            t.c.run();
            let ra = t.c.take_replies(a).remove(0);
            let rb = t.c.take_replies(b).remove(0);
            let mut codes = [ra.code, rb.code];
            codes.sort_by_key(|c| c.as_str());
            assert_eq!(codes, [Approved, Duplicate], "n={n} seed={seed}");
            let winner = if ra.code == Approved { &p1 } else { &p2 };
            let o = t.c.order(&merchant(), &id).unwrap();
            assert_eq!(
                (o.status, o.paid_by),
                (OrderStatus::Paid, Some(winner.own_txn()))
            );
            let spent = (100_000_000 - t.acct(RICH).balance) + t.acct(RICH2).held;
            assert_eq!(spent, 2_500, "exactly one payment took money");
            if n > 1 {
                assert!(t.c.cross_shard_messages() > 0);
            }
        }
    }
}

#[test]
fn a_payment_the_card_cannot_make_does_not_keep_the_order_from_another() {
    // PROTOCOL.md 2, Orders: of two concurrent payments exactly one is approved. When the
    // first to reach the order cannot pay (51), the other must not get 94 for an order that
    // stays open: in every order of delivery, the payable one is approved.
    for n in [1, 4] {
        for seed in 0..32 {
            let mut t = T::new(n);
            t.c.shuffle_deliveries(seed);
            let id = t.order_off(&card(RICH));
            let poor = t.order_payment(200, &card(ZERO), 2_500, USD, &id);
            let rich = t.order_payment(200, &card(RICH2), 2_500, USD, &id);
            let a = t.c.submit(poor);
            let b = t.c.submit(rich.clone());
            t.c.run();
            let poor_code = t.c.take_replies(a).remove(0).code;
            let rich_code = t.c.take_replies(b).remove(0).code;
            assert_eq!(rich_code, Approved, "n={n} seed={seed}");
            // 51 if it came first; 94 if the order was paid when it came (order checks
            // come before funds).
            assert!(
                matches!(poor_code, InsufficientFunds | Duplicate),
                "n={n} seed={seed}: {poor_code:?}"
            );
            let o = t.c.order(&merchant(), &id).unwrap();
            assert_eq!(
                (o.status, o.paid_by),
                (OrderStatus::Paid, Some(rich.own_txn()))
            );
        }
    }
}

#[test]
fn order_answers_come_before_funds_for_a_card_that_cannot_pay() {
    both(|t| {
        let id = t.order_off(&card(RICH));
        let paid = t.order_payment(200, &card(RICH), 2_500, USD, &id);
        assert_eq!(t.code(paid), Approved);
        // The card cannot pay, but the order's own answers come first (25, 13, 94 before 51).
        let p = t.order_payment(200, &card(ZERO), 2_500, USD, &id);
        assert_eq!(t.code(p), Duplicate);
        let p = t.order_payment(200, &card(ZERO), 2_499, USD, &id);
        assert_eq!(t.code(p), InvalidAmount);
        let p = t.order_payment(200, &card(ZERO), 2_500, USD, "NO-SUCH-ORDER");
        assert_eq!(t.code(p), UnableToLocate);
        assert_eq!(t.acct(ZERO).balance, 0);
    });
}

// ===== a 0100 and a 0200 under one (41, 11, 7) =====

/// A hold of 2,000 by `hold_card` and a purchase of 3,000 by `purchase_card`, with one
/// identity (41, 11, 7): two keys, since the MTI is part of a key.
fn hold_and_purchase(t: &mut T, hold_card: u64, purchase_card: u64) -> (Request, Request) {
    let hold = t.hold(&card(hold_card), 2_000);
    let mut purchase = hold.clone();
    purchase.mti = mti(200);
    purchase.pan = Some(card(purchase_card));
    purchase.amount = Some(3_000);
    (hold, purchase)
}

#[test]
fn a_hold_and_a_purchase_may_share_41_11_7() {
    both(|t| {
        let (h, p) = hold_and_purchase(t, RICH, RICH);
        let approved_h = t.send(h.clone());
        let approved_p = t.send(p.clone());
        assert_eq!((approved_h.code, approved_p.code), (Approved, Approved));
        assert_eq!(t.acct(RICH).held, 2_000);
        assert_eq!(t.acct(RICH).balance, 100_000_000 - 3_000);
        assert_eq!(t.c.transaction(&h.own_txn()), Some(TxnView::Both));
        // Both survive a snapshot.
        for shard in t.c.shards() {
            let mut bytes = Vec::new();
            shard.snapshot(&mut bytes);
            let back = Shard::restore(shard.id(), t.n, EngineConfig::default(), &bytes).unwrap();
            let mut again = Vec::new();
            back.snapshot(&mut again);
            assert_eq!(bytes, again);
            if shard.id() == h.home_shard(t.n) {
                assert_eq!(back.transaction(&h.own_txn()), Some(TxnView::Both));
            }
        }
        // Each replays its own answer.
        assert_eq!(t.send(h.clone()), approved_h);
        assert_eq!(t.send(p.clone()), approved_p);
        // DE 90 names the original's MTI: each reversal undoes its own, once.
        assert_eq!(t.reverse(&p), Approved);
        assert_eq!(t.acct(RICH).balance, 100_000_000);
        assert_eq!(t.acct(RICH).held, 2_000);
        assert_eq!(t.reverse(&p), Approved);
        assert_eq!(t.acct(RICH).balance, 100_000_000);
        // The hold is still there to complete, then to reverse.
        let c = t.completion(&h, 1_500);
        assert_eq!(t.code(c), Approved);
        assert_eq!(t.acct(RICH).held, 0);
        assert_eq!(t.acct(RICH).balance, 100_000_000 - 1_500);
        assert_eq!(t.reverse(&h), Approved);
        assert_eq!(t.acct(RICH).balance, 100_000_000);
        t.assert_crossed();
    });
}

#[test]
fn a_reversal_without_de_90_undoes_the_original_with_its_pan_else_the_purchase() {
    both(|t| {
        // Different cards: the reversal's PAN decides.
        let (h, p) = hold_and_purchase(t, RICH, RICH2);
        assert_eq!((t.code(h.clone()), t.code(p.clone())), (Approved, Approved));
        let mut r = h.clone();
        r.mti = mti(400);
        assert_eq!(t.code(r), Approved);
        assert_eq!(t.acct(RICH).held, 0, "the hold was released");
        assert_eq!(
            t.acct(RICH2).balance,
            100_000_000 - 3_000,
            "the purchase stands"
        );
        // One card: the purchase.
        let (h, p) = hold_and_purchase(t, RICH, RICH);
        assert_eq!((t.code(h.clone()), t.code(p.clone())), (Approved, Approved));
        let mut r = p.clone();
        r.mti = mti(420);
        assert_eq!(t.code(r), Approved);
        assert_eq!(t.acct(RICH).balance, 100_000_000);
        assert_eq!(t.acct(RICH).held, 2_000, "the hold stands");
    });
}

#[test]
fn a_hold_and_a_purchase_in_flight_together_are_both_decided() {
    for n in [1, 4] {
        for seed in 0..16 {
            let mut t = T::new(n);
            t.c.shuffle_deliveries(seed);
            let (h, p) = hold_and_purchase(&mut t, RICH, RICH);
            let a = t.c.submit(h.clone());
            let b = t.c.submit(p.clone());
            // The purchase's reversal arrives while both are in flight: it waits for it.
            let rev = t.reversal(&p);
            let c = t.c.submit(rev);
            t.c.run();
            let codes = [a, b, c].map(|token| t.c.take_replies(token).remove(0).code);
            assert_eq!(codes, [Approved; 3], "n={n} seed={seed}");
            assert_eq!(t.acct(RICH).held, 2_000, "n={n} seed={seed}");
            assert_eq!(t.acct(RICH).balance, 100_000_000, "n={n} seed={seed}");
        }
    }
}

#[test]
fn two_originals_under_one_identity_pay_one_order_at_most() {
    both(|t| {
        let id = t.order_off(&card(RICH));
        let (mut h, mut p) = hold_and_purchase(t, RICH, RICH);
        h.merchant = Some(merchant());
        h.order_ref = Some(id.clone());
        h.amount = Some(2_500);
        p.merchant = Some(merchant());
        p.order_ref = Some("ORD-20".into());
        assert_eq!(t.code(h.clone()), Approved);
        assert_eq!(t.code(p.clone()), Duplicate);
        assert_eq!(t.acct(RICH).balance, 100_000_000);
        // The refused one is a declined original: its reversals answer 00 and change
        // nothing, named by DE 90 or (its own PAN, here the hold's too) without it.
        assert_eq!(t.reverse(&p), Approved);
        let mut own = p.clone();
        own.mti = mti(420);
        own.order_ref = None;
        assert_eq!(t.code(own), Approved);
        assert_eq!(t.acct(RICH).held, 2_500, "the hold stands");
        assert_eq!(t.order_status(&id), OrderStatus::Paid);
    });
}

#[test]
fn a_reversal_first_declines_a_late_0100_and_a_late_0200_alike() {
    both(|t| {
        // The reversal's marker cannot say which of the two it waited for: both are
        // declined 05, nothing is held or debited.
        let (h, p) = hold_and_purchase(t, RICH, RICH);
        let rev = t.reversal(&p);
        assert_eq!(t.code(rev), UnableToLocate);
        assert_eq!(t.code(h.clone()), DoNotHonour);
        assert_eq!(t.code(p.clone()), DoNotHonour);
        assert_eq!((t.acct(RICH).balance, t.acct(RICH).held), (100_000_000, 0));
        // Reversals of the declined late originals: 00, nothing changes.
        assert_eq!(t.reverse(&h), Approved);
        assert_eq!(t.reverse(&p), Approved);
        assert_eq!((t.acct(RICH).balance, t.acct(RICH).held), (100_000_000, 0));
    });
}

#[test]
fn a_reversal_naming_a_0220_undoes_the_completed_hold_of_a_pair() {
    both(|t| {
        let (h, p) = hold_and_purchase(t, RICH, RICH);
        assert_eq!((t.code(h.clone()), t.code(p.clone())), (Approved, Approved));
        // A completion sent with the hold's own 41, 11 and 7, no DE 90.
        let mut c = h.clone();
        c.mti = mti(220);
        c.amount = Some(1_500);
        assert_eq!(t.code(c.clone()), Approved);
        assert_eq!(t.acct(RICH).balance, 100_000_000 - 3_000 - 1_500);
        // Its reversal names the 0220 in DE 90: the completed hold is credited back.
        let r = t.referring(400, &c, Some(1_500));
        assert_eq!(t.code(r), Approved);
        assert_eq!(t.acct(RICH).balance, 100_000_000 - 3_000);
        assert_eq!(t.acct(RICH).held, 0);
    });
}

#[test]
fn a_pair_keeps_its_open_hold_when_the_purchase_expires() {
    for n in [1, 4] {
        let config = EngineConfig {
            idempotency_window_secs: 60,
            ..EngineConfig::default()
        };
        let mut t = T::with_config(n, &config);
        let (h, p) = hold_and_purchase(&mut t, RICH, RICH);
        assert_eq!((t.code(h.clone()), t.code(p.clone())), (Approved, Approved));
        t.advance(3_600);
        // The purchase's record and both answers go; the open hold stays, alone.
        assert_eq!(t.c.purge_expired(), 3, "n={n}");
        assert_eq!(
            t.c.transaction(&h.own_txn()),
            Some(TxnView::Approved { amount: 2_000 })
        );
        let c = t.completion(&h, 2_000);
        assert_eq!(t.code(c), Approved);
        assert_eq!(t.acct(RICH).balance, 100_000_000 - 5_000);
    }
}

#[test]
fn a_snapshot_refuses_pairs_that_cannot_be() {
    use crate::wire::{Reader, Wire};
    let decode = |bytes: &[u8]| TxnSlot::get(&mut Reader::new(bytes));
    let marker = TxnSlot::Marker { expires: 7 };
    let two_markers = TxnSlot::Both(Box::new([marker, TxnSlot::Marker { expires: 7 }]));
    let mut bytes = Vec::new();
    two_markers.put(&mut bytes);
    assert!(decode(&bytes).is_err(), "two markers are no pair");
    // Nested pairs, however deep, are refused without recursing into them.
    assert!(decode(&[3; 100_000]).is_err());
    // A hold's record where the purchase's belongs.
    let t = &mut T::new(1);
    let (h, _) = hold_and_purchase(t, RICH, RICH);
    assert_eq!(t.code(h.clone()), Approved);
    let mut snapshot = Vec::new();
    t.c.shards()[0].snapshot(&mut snapshot);
    let hold = Shard::restore(0, 1, EngineConfig::default(), &snapshot).unwrap();
    let slot = hold.txns.get(&h.own_txn()).unwrap();
    let mut one = Vec::new();
    slot.put(&mut one);
    let mut swapped = vec![3];
    swapped.extend_from_slice(&one);
    swapped.extend_from_slice(&one);
    assert!(decode(&swapped).is_err(), "two holds are no pair");
}

// ===== balance inquiry =====

#[test]
fn balance_inquiry_answers_field_54_with_the_available_balance() {
    both(|t| {
        let bi = t.inquiry(&card(ACTIVE), "311000", USD);
        let resp = t.send(bi.clone());
        assert_eq!(
            (resp.code, resp.mti, resp.approval_code),
            (Approved, mti(110), None)
        );
        assert_eq!(
            resp.additional_amounts.unwrap().as_str(),
            "1002840C000000100000"
        );
        // Available is balance minus open holds; inquiries are not stored, so the same key
        // answers afresh.
        let h = t.hold(&card(ACTIVE), 25_000);
        assert_eq!(t.code(h), Approved);
        let resp = t.send(bi);
        assert_eq!(
            resp.additional_amounts.unwrap().as_str(),
            "1002840C000000075000"
        );
        // Zero is written with C; exponent-0 and exponent-3 currencies in minor units.
        let bi = t.inquiry(&card(ZERO), "310000", USD);
        assert_eq!(
            t.send(bi).additional_amounts.unwrap().as_str(),
            "0002840C000000000000"
        );
        let bi = t.inquiry(&card(YEN), "312000", JPY);
        assert_eq!(
            t.send(bi).additional_amounts.unwrap().as_str(),
            "2002392C000000150000"
        );
        let bi = t.inquiry(&card(DINAR), "310000", BHD);
        assert_eq!(
            t.send(bi).additional_amounts.unwrap().as_str(),
            "0002048C000000012345"
        );
        // DE 4, if present, is ignored.
        let mut bi = t.inquiry(&card(ACTIVE), "310000", USD);
        bi.amount = Some(999_999);
        assert_eq!(t.code(bi), Approved);
        assert_eq!(t.acct(ACTIVE).balance, 100_000);
        // Card checks still apply.
        let bi = t.inquiry(&card(EXPIRED), "310000", USD);
        let resp = t.send(bi);
        assert_eq!((resp.code, resp.additional_amounts), (ExpiredCard, None));
        t.assert_crossed();
    });
}

#[test]
fn balance_inquiry_with_a_key_already_used_answers_94() {
    both(|t| {
        let h = t.hold(&card(ACTIVE), 100);
        assert_eq!(t.code(h.clone()), Approved);
        let mut bi = h;
        bi.processing_code = ProcessingCode::from_digits(b"310000");
        bi.amount = None;
        assert_eq!(t.code(bi), Duplicate);
    });
}

// ===== delivery =====

#[test]
fn a_request_delivered_to_another_shard_is_forwarded_home() {
    let mut t = T::new(4);
    let r = t.purchase(&card(ACTIVE), 1_000);
    let wrong = (r.home_shard(4) + 1) % 4;
    let token = t.c.submit_to(wrong, r.clone());
    t.c.run();
    assert_eq!(t.c.take_replies(token)[0].code, Approved);
    // The record is on the home shard: a replay through the right door finds it.
    assert_eq!(t.code(r), Approved);
    assert_eq!(t.acct(ACTIVE).balance, 99_000);
}

#[test]
fn loading_checks_placement() {
    let config = EngineConfig::default();
    let shards = build_shards(4, &config, accounts(), orders()).unwrap();
    let total: usize = shards.iter().map(|s| s.stats().accounts).sum();
    assert_eq!(total, accounts().len());
    let a = accounts().remove(0);
    let owner = shard_for_pan(a.pan.as_bytes(), 4);
    let mut other = crate::Shard::new((owner + 1) % 4, 4, config.clone());
    assert!(other.load_account(a.clone()).is_err());
    let mut own = crate::Shard::new(owner, 4, config);
    own.load_account(a.clone()).unwrap();
    let err = own.load_account(a).unwrap_err().to_string();
    assert!(!err.contains(card(ACTIVE).as_str()), "{err}");
    assert!(build_shards(
        2,
        &EngineConfig::default(),
        accounts(),
        [orders()[0].clone(), orders()[0].clone()]
    )
    .is_err());
    assert!(EngineConfig {
        idempotency_window_secs: 0,
        ..EngineConfig::default()
    }
    .validate()
    .is_err());
}

#[test]
fn purge_keeps_open_holds() {
    for n in [1, 4] {
        let config = EngineConfig {
            idempotency_window_secs: 60,
            ..EngineConfig::default()
        };
        let mut t = T::with_config(n, &config);
        let h = t.hold(&card(ACTIVE), 5_000);
        assert_eq!(t.code(h.clone()), Approved);
        let p = t.purchase(&card(ACTIVE), 1_000);
        assert_eq!(t.code(p.clone()), Approved);
        t.advance(3_600);
        let records = |t: &T| -> usize {
            t.c.shards()
                .iter()
                .map(|s| s.stats().transaction_records + s.stats().idempotency_records)
                .sum()
        };
        let before = records(&t);
        assert_eq!(
            t.c.purge_expired(),
            before - 1,
            "all but the open hold's record"
        );
        assert_eq!(records(&t), 1);
        assert_eq!(t.c.transaction(&p.own_txn()), None);
        assert_eq!(
            t.c.transaction(&h.own_txn()),
            Some(TxnView::Approved { amount: 5_000 })
        );
        let c = t.completion(&h, 5_000);
        assert_eq!(t.code(c), Approved);
        let a = t.acct(ACTIVE);
        assert_eq!((a.balance, a.held), (94_000, 0));
    }
}

#[test]
fn peer_messages_mask_card_numbers_in_debug() {
    let mut t = T::new(4);
    let r = t.purchase(&card(ACTIVE), 1_000);
    let mut out = Vec::new();
    let home = r.home_shard(4);
    let mut shard = crate::Shard::new(home, 4, EngineConfig::default());
    shard.handle_request(Now::from_unix_secs(NOW), 1, r, &mut out);
    let shown = format!("{out:?}");
    assert!(
        shown.contains("authorize") || shown.contains("Authorize"),
        "{shown}"
    );
    assert!(!shown.contains(card(ACTIVE).as_str()), "{shown}");
}

#[test]
fn shard_state_and_messages_can_move_between_threads() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<crate::Shard>();
    assert_send::<crate::PeerMsg>();
    assert_send::<crate::Output>();
    assert_send::<Request>();
}

/// The idempotency and transaction maps hold about a day of entries, so their bucket size is
/// most of the switch's memory and of its cache misses per request (README, "Capacity
/// benchmark"): in-flight state and the rare order reference are boxed to keep it small. A
/// field added inline to an entry should be a decision, not an accident.
#[test]
fn map_entries_stay_small() {
    assert!(std::mem::size_of::<super::IdemEntry>() <= 88);
    assert!(std::mem::size_of::<super::TxnSlot>() <= 80);
}
