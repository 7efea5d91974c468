//! The shard state machine: one [`Shard`] per shard thread, single writer of its partition of
//! transaction records, accounts and orders (see the crate docs for the K/A/O design).
//!
//! Sans-I/O in the style of `quinn-proto`: the caller feeds inputs
//! ([`Shard::handle_request`], [`Shard::handle_peer`]) with the current time, and collects
//! [`Output`]s: replies to send back on a connection, and [`PeerMsg`]s to deliver to other
//! shards. A message a shard would send to itself is handled before the call returns, by the
//! same code as a remote one, so a one-shard switch runs exactly the same protocol.
//!
//! For durability, [`Shard::apply`] takes the same inputs as one journalable value
//! ([`Input`]), and [`Shard::snapshot`] / [`Shard::restore`] save and load the whole state
//! (crate docs, "Durability hooks").

mod account;
mod external;
mod home;
mod journal;
mod order;
mod snapshot;
mod split_map;

pub use external::{split_idem_key, AccountRow, BatchKeys, EntryRow, OrderRef, OrderRow};
pub use journal::Input;

use std::collections::VecDeque;

/// The shard maps' hash: keys come from the wire (PANs, terminal ids), so the hash is keyed
/// per process against collision flooding, and ahash is several times cheaper than std's
/// SipHash. No output depends on iteration order (see "Durability hooks").
type HashMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;
use std::fmt;

use split_map::SplitMap;

use crate::bins::BinTable;
use crate::data::{Account, CardStatus, Order, OrderStatus};
use crate::message::{
    ApprovalCode, IdemKey, MerchantId, ProcessingCode, Request, Response, ResponseCode, TxnId,
};
use crate::pan::Pan;
use crate::placement;
use crate::time::{Now, Yymm};

/// Engine settings shared by all shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// How long an answered request is remembered under its idempotency key, and a
    /// late-original marker kept, in seconds. PROTOCOL.md requires at least 24 h, the default.
    pub idempotency_window_secs: u64,
    /// What to do by BIN; the default serves every card.
    pub bins: BinTable,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            idempotency_window_secs: 24 * 60 * 60,
            bins: BinTable::default(),
        }
    }
}

/// An invalid [`EngineConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A zero window would make retransmissions apply twice.
    #[error("idempotency_window_secs must be greater than zero")]
    ZeroWindow,
}

impl EngineConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.idempotency_window_secs == 0 {
            return Err(ConfigError::ZeroWindow);
        }
        Ok(())
    }
}

/// Something the caller must do after handing the shard an input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Answer the request the switch tagged with `token`. May come from any shard (balance
    /// inquiries are answered by the account's shard), and several replies may share a token
    /// only if the caller reused one.
    Reply {
        /// The caller's tag for the request.
        token: u64,
        /// The answer.
        response: Response,
        /// Everything the answer follows from is durable already (the decision in the
        /// card's shard's committed journal, this shard's part in its own): the caller may
        /// deliver it before committing the input that produced it. A hold's or purchase's
        /// answer after a decision from another shard is; the home shard's commit would
        /// only add a wait for its disk.
        durable: bool,
    },
    /// Deliver `msg` to shard `shard` through [`Shard::handle_peer`] (or [`Shard::apply`]
    /// of an [`Input::Peer`]).
    ToShard {
        /// Destination shard index.
        shard: usize,
        /// Opaque message.
        msg: PeerMsg,
    },
}

/// A message between shards. Opaque: the caller only carries it to the named shard. Plain
/// data (`Send`), card numbers masked in `Debug`.
///
/// The sending shard stamps each message with its own index ([`PeerMsg::from`]) and a
/// sequence number per destination ([`PeerMsg::seq`]: 1, 2, 3, ... for the messages from one
/// shard to another). Both are part of the shards' state, so a replay stamps the same
/// numbers again; a receiver ignores a message whose number it has already seen from that
/// sender, so re-delivering a message after a restart is harmless.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerMsg {
    from: usize,
    seq: u64,
    msg: Msg,
}

impl PeerMsg {
    /// The sending shard.
    pub fn from(&self) -> usize {
        self.from
    }

    /// The message's number among those its sender sent to its destination, from 1.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// A short name of the message kind, for metrics and traces.
    pub fn kind(&self) -> &'static str {
        match &self.msg {
            Msg::Forward { .. } => "forward",
            Msg::Authorize(_) => "authorize",
            Msg::Reserve(_) => "reserve",
            Msg::Reserved { .. } => "reserved",
            Msg::CheckOrder(_) => "check_order",
            Msg::OrderChecked { .. } => "order_checked",
            Msg::Decided { .. } => "decided",
            Msg::Apply { .. } => "apply",
            Msg::Release { .. } => "release",
            Msg::Applied { .. } => "applied",
        }
    }
}

/// The cross-shard protocol (crate docs, "Cross-shard protocol").
#[derive(Clone, Debug, PartialEq, Eq)]
enum Msg {
    /// A request delivered to a shard that is not its home: handled as if it arrived there.
    Forward { token: u64, req: Box<Request> },
    /// K -> A: card checks, then funds and limit (or order reservation first).
    Authorize(Box<AuthCtx>),
    /// A -> O: reserve the order for this payment.
    Reserve(Box<AuthCtx>),
    /// O -> A: the reservation's outcome.
    Reserved {
        ctx: Box<AuthCtx>,
        result: Result<(), ResponseCode>,
    },
    /// A -> O: the order checks only, nothing reserved, for a payment A will decline for
    /// funds or limit unless the order answers first (its 25, 13 or 94 come before 51 and 61).
    CheckOrder(Box<AuthCtx>),
    /// O -> A: the order checks' outcome for a `CheckOrder`.
    OrderChecked {
        ctx: Box<AuthCtx>,
        result: Result<(), ResponseCode>,
    },
    /// A -> K: the decision on a hold or purchase; `day` is the UTC day it was counted in.
    /// `approval` is the approval code A gave an approved one (`None` in journals written
    /// before A gave them: K then numbers it, and its answer waits for K's commit).
    Decided {
        key: IdemKey,
        txn: TxnId,
        code: ResponseCode,
        day: i64,
        approval: Option<ApprovalCode>,
    },
    /// K -> A: apply a decided completion or reversal to the account.
    Apply {
        home: usize,
        key: IdemKey,
        pan: Pan,
        effect: Effect,
    },
    /// A or K -> O: reopen the order if `by` holds it; acknowledge to K when asked.
    Release {
        order: Box<OrderKey>,
        by: TxnId,
        ack: Option<(usize, IdemKey)>,
    },
    /// A or O -> K: an `Apply` or acknowledged `Release` is done.
    Applied { key: IdemKey },
}

/// What a hold, purchase or balance inquiry carries from K to A (and O).
#[derive(Clone, Debug, PartialEq, Eq)]
struct AuthCtx {
    /// K, where the decision goes.
    home: usize,
    /// The connection's tag (replied to directly only for balance inquiries).
    token: u64,
    key: IdemKey,
    txn: TxnId,
    kind: AuthKind,
    pan: Pan,
    amount: i64,
    currency: Option<u16>,
    expiry: Option<Yymm>,
    /// DE 3 digits 3-4, for DE 54.
    account_type: [u8; 2],
    order: Option<OrderKey>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AuthKind {
    Inquiry,
    Hold,
    Purchase,
}

/// A decided change to an account, applied by A on K's word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    /// Reversal of an open hold: release it; give back `amount` of day `day`.
    ReleaseHold { amount: i64, day: i64 },
    /// Reversal of a purchase or completed hold: credit `amount` counted on day `day`.
    Credit { amount: i64, day: i64 },
    /// Completion: debit `amount` (day `day`) and release the whole hold `held` (day
    /// `hold_day`), so the completion replaces the hold towards the daily limit.
    Complete {
        held: i64,
        hold_day: i64,
        amount: i64,
        day: i64,
    },
}

/// An order's identity: DE 42 (trimmed) and DE 48. Ordered by merchant, then order id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct OrderKey {
    merchant: MerchantId,
    order_id: String,
}

impl OrderKey {
    fn shard(&self, shard_count: usize) -> usize {
        placement::shard_for_order(
            self.merchant.as_bytes(),
            self.order_id.as_bytes(),
            shard_count,
        )
    }
}

// ===== K-side state =====

/// What makes two requests with one key "the same" (PROTOCOL.md: fields 2, 3, 4, 49).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    pan: Option<Pan>,
    processing_code: Option<ProcessingCode>,
    amount: Option<u64>,
    currency: Option<u16>,
}

impl Fingerprint {
    fn of(req: &Request) -> Self {
        Self {
            pan: req.pan,
            processing_code: req.processing_code,
            amount: req.amount,
            currency: req.currency,
        }
    }
}

#[derive(Debug)]
enum IdemEntry {
    /// The decision is in flight; retransmissions wait in `waiters`. Boxed: an answered
    /// entry is what the map holds for a day, and the larger in-flight state would make every
    /// bucket of the map bigger.
    Pending(Box<PendingReply>),
    /// Answered; replayed until `expires` (Unix seconds).
    Done {
        fp: Fingerprint,
        response: Response,
        expires: i64,
    },
}

impl IdemEntry {
    fn fingerprint(&self) -> &Fingerprint {
        match self {
            Self::Pending(p) => &p.fp,
            Self::Done { fp, .. } => fp,
        }
    }
}

/// The request's own token inline; parked retransmissions (rare) spill to the heap.
type Waiters = smallvec::SmallVec<[u64; 1]>;

#[derive(Debug)]
struct PendingReply {
    fp: Fingerprint,
    /// Tokens to answer when the decision lands: the request and parked retransmissions.
    waiters: Waiters,
    /// Acknowledgements still expected (completions and reversals).
    awaiting: u8,
    /// The answer, when it is known before the acknowledgements arrive.
    response: Option<Response>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PayKind {
    Hold,
    Purchase,
}

#[derive(Debug)]
enum TxnSlot {
    /// A reversal came for this identity before any original: the original, arriving within
    /// the window, is declined 05.
    Marker { expires: i64 },
    /// The original's decision is in flight; completions and reversals of it wait here.
    Pending(Box<PendingTxn>),
    /// The original was decided.
    Record(TxnRecord),
    /// A 0100 hold and a 0200 purchase under one (41, 11, 7): the contract's idempotency keys
    /// tell them apart by MTI, so both are originals. `[hold, purchase]`, each half `Pending`,
    /// `Record`, or `Marker` (still waiting for a late original of its kind); never two
    /// markers.
    Both(Box<[TxnSlot; 2]>),
}

impl TxnSlot {
    /// Whether the window no longer protects this slot at `t`. Open holds never expire: their
    /// funds stay reserved until completed or reversed.
    fn expired(&self, t: i64, window: i64) -> bool {
        self.expires_at(window).is_some_and(|e| e <= t)
    }

    /// When the window stops protecting this slot (unix seconds); `None` while it must be
    /// kept: an original still being decided, an open hold. A pair lasts as long as its
    /// longer-lived half.
    fn expires_at(&self, window: i64) -> Option<i64> {
        match self {
            Self::Marker { expires } => Some(*expires),
            Self::Pending(_) => None,
            Self::Record(r) => {
                let open_hold =
                    r.kind == PayKind::Hold && matches!(r.state, TxnState::Approved { .. });
                (!open_hold).then(|| r.since.saturating_add(window))
            }
            Self::Both(halves) => {
                let [hold, purchase] = &**halves;
                hold.expires_at(window)
                    .zip(purchase.expires_at(window))
                    .map(|(a, b)| a.max(b))
            }
        }
    }

    /// The kind of original a single `Pending` or `Record` slot holds.
    fn kind(&self) -> Option<PayKind> {
        match self {
            Self::Pending(p) => Some(p.kind),
            Self::Record(r) => Some(r.kind),
            Self::Marker { .. } | Self::Both(_) => None,
        }
    }

    /// The original of `kind` under this identity, if there is one.
    fn half_mut(&mut self, kind: PayKind) -> Option<&mut TxnSlot> {
        match self {
            Self::Both(halves) => Some(&mut halves[kind.half()]),
            single if single.kind() == Some(kind) => Some(single),
            _ => None,
        }
    }

    /// Whether an original under this identity is still being decided.
    fn deciding(&self) -> bool {
        match self {
            Self::Pending(_) => true,
            Self::Both(halves) => halves.iter().any(TxnSlot::deciding),
            Self::Marker { .. } | Self::Record(_) => false,
        }
    }

    /// Whether an original of `kind` is under this identity.
    fn has(&self, kind: PayKind) -> bool {
        match self {
            Self::Both(halves) => halves[kind.half()].kind().is_some(),
            single => single.kind() == Some(kind),
        }
    }

    /// Whether a reversal came first and a late original of `kind` is to be declined 05.
    fn awaits_late(&self, kind: PayKind) -> bool {
        match self {
            Self::Marker { .. } => true,
            Self::Both(halves) => matches!(halves[kind.half()], Self::Marker { .. }),
            _ => false,
        }
    }

    /// The order an original under this identity holds or is reserving (one at most:
    /// `start_payment`).
    fn order(&self) -> Option<&OrderKey> {
        match self {
            Self::Pending(p) => p.order.as_ref(),
            Self::Record(r) => r.order.as_deref(),
            Self::Marker { .. } => None,
            Self::Both(halves) => halves.iter().find_map(TxnSlot::order),
        }
    }

    /// A late original of `kind`, declined at its marker, takes the marker's place for its
    /// kind. The marker did not say whether it waited for a 0100 or a 0200: it stays for
    /// the other.
    fn decline_late(&mut self, kind: PayKind, declined: TxnRecord) {
        if let Self::Marker { expires } = *self {
            *self = Self::Both(Box::new([
                Self::Marker { expires },
                Self::Marker { expires },
            ]));
        }
        if let Self::Both(halves) = self {
            halves[kind.half()] = Self::Record(declined);
        }
    }

    /// Adds the original `half` (a `Pending` or `Record` of the other kind) beside this one.
    fn join(&mut self, half: TxnSlot) {
        let other = std::mem::replace(self, Self::Marker { expires: 0 });
        *self = match half.kind() {
            Some(PayKind::Hold) => Self::Both(Box::new([half, other])),
            _ => Self::Both(Box::new([other, half])),
        };
    }

    /// Of two halves, keeps only the one the window still protects, when only one is;
    /// returns whether it dropped one.
    fn drop_expired_half(&mut self, t: i64, window: i64) -> bool {
        let Self::Both(halves) = self else {
            return false;
        };
        let expired = [halves[0].expired(t, window), halves[1].expired(t, window)];
        if expired[0] == expired[1] {
            return false;
        }
        let Self::Both(halves) = std::mem::replace(self, Self::Marker { expires: 0 }) else {
            return false;
        };
        let [hold, purchase] = *halves;
        *self = if expired[0] { purchase } else { hold };
        true
    }
}

impl PayKind {
    /// Its place in [`TxnSlot::Both`].
    fn half(self) -> usize {
        match self {
            PayKind::Hold => 0,
            PayKind::Purchase => 1,
        }
    }
}

#[derive(Debug)]
struct PendingTxn {
    key: IdemKey,
    kind: PayKind,
    pan: Pan,
    amount: i64,
    currency: Option<u16>,
    order: Option<OrderKey>,
    queued: Vec<(u64, Request)>,
}

#[derive(Debug)]
struct TxnRecord {
    kind: PayKind,
    pan: Option<Pan>,
    currency: Option<u16>,
    amount: i64,
    state: TxnState,
    /// The order this payment holds, until it is reversed. Boxed, as most payments hold no
    /// order: a smaller record is a smaller bucket in the transaction map.
    order: Option<Box<OrderKey>>,
    /// Unix seconds of the last change; the record is kept for the window after it.
    since: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxnState {
    Declined,
    /// Approved on UTC day `day` (an open hold, or a purchase).
    Approved {
        day: i64,
    },
    /// A hold completed for `amount` on day `day`.
    Completed {
        amount: i64,
        day: i64,
    },
    Reversed,
}

// ===== A-side and O-side state =====

#[derive(Clone, Debug)]
struct AccountState {
    expiry: Yymm,
    status: CardStatus,
    currency: u16,
    balance: i64,
    held: i64,
    daily_limit: i64,
    /// The UTC day `day_total` counts (only the latest day matters for the limit).
    day: i64,
    day_total: i64,
}

#[derive(Clone, Debug)]
struct OrderState {
    amount: i64,
    currency: u16,
    status: OrderStatus,
    /// The payment holding a paid order (`None` for orders paid before load).
    paid_by: Option<TxnId>,
}

// ===== public views =====

/// A read-only view of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountView {
    /// Card status.
    pub status: CardStatus,
    /// Card expiry.
    pub expiry: Yymm,
    /// Account currency.
    pub currency: u16,
    /// Ledger balance, minor units (open holds included).
    pub balance: i64,
    /// Sum of open holds, minor units.
    pub held: i64,
    /// `balance - held`: what a purchase or hold may use, and what DE 54 reports.
    pub available: i64,
    /// Daily limit, minor units.
    pub daily_limit: i64,
    /// Approved debits counted on the UTC day of the `now` asked about.
    pub day_total: i64,
}

/// A read-only view of an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderView {
    /// Amount due, minor units.
    pub amount: i64,
    /// Currency.
    pub currency: u16,
    /// Status (`Paid` also while a payment's decision is in flight).
    pub status: OrderStatus,
    /// The payment holding it.
    pub paid_by: Option<TxnId>,
}

/// Where a transaction identity stands on its home shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnView {
    /// A reversal arrived first; the original will be declined 05.
    LateOriginalMarker,
    /// The original's decision is in flight.
    Pending,
    /// Declined.
    Declined,
    /// An approved purchase, or an open hold.
    Approved {
        /// Amount, minor units.
        amount: i64,
    },
    /// A completed hold.
    Completed {
        /// The hold's amount.
        held: i64,
        /// The completed amount.
        amount: i64,
    },
    /// Reversed.
    Reversed,
    /// A 0100 hold and a 0200 purchase both under this (41, 11, 7).
    Both,
}

/// Plain counters and sizes of one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Requests handed to [`Shard::handle_request`].
    pub requests: u64,
    /// Messages handed to [`Shard::handle_peer`].
    pub peer_messages: u64,
    /// Replies produced.
    pub replies: u64,
    /// Retransmissions answered from the idempotency record.
    pub replays: u64,
    /// Retransmissions parked behind an in-flight decision.
    pub parked: u64,
    /// Requests answered 94 because their content differs from their key's first request.
    pub content_mismatches: u64,
    /// Entries removed by [`Shard::purge_expired`] (and [`Input::Purge`]).
    pub purged: u64,
    /// Peer messages ignored because their sequence number was already seen from their
    /// sender (a re-delivery after a restart).
    pub duplicate_peer_messages: u64,
    /// Peer messages whose sequence number skipped one or more from their sender: a message
    /// was lost between shards (a bug in the caller). They are applied anyway.
    pub peer_sequence_gaps: u64,
    /// Peer messages ignored because their sender is not a shard of this switch.
    pub foreign_peer_messages: u64,
    /// Accounts held.
    pub accounts: usize,
    /// Orders held.
    pub orders: usize,
    /// Idempotency records (answered and in flight).
    pub idempotency_records: usize,
    /// Transaction records (incl. in flight).
    pub transaction_records: usize,
    /// Late-original markers.
    pub late_original_markers: usize,
}

/// Refused load-time data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The item belongs to another shard (placement disagrees).
    #[error("belongs to shard {owner}, not shard {shard}")]
    WrongShard {
        /// The shard that owns it.
        owner: usize,
        /// The shard it was given to.
        shard: usize,
    },
    /// An account loaded twice.
    #[error("account {0} loaded twice")]
    DuplicateAccount(Pan),
    /// An order loaded twice.
    #[error("order {order_id} of merchant {merchant} loaded twice")]
    DuplicateOrder {
        /// Merchant.
        merchant: MerchantId,
        /// Order id.
        order_id: String,
    },
}

// ===== Shard =====

/// One shard: the single writer of its partition of transaction records (K), accounts (A)
/// and orders (O).
pub struct Shard {
    id: usize,
    shard_count: usize,
    config: EngineConfig,
    accounts: HashMap<Pan, AccountState>,
    orders: HashMap<OrderKey, OrderState>,
    /// Split maps: these two grow to millions of entries (split_map.rs).
    idem: SplitMap<IdemKey, IdemEntry>,
    txns: SplitMap<TxnId, TxnSlot>,
    /// Approval codes issued, for unique codes.
    approvals: u64,
    /// By destination shard: the sequence number of the last message sent there.
    sent: Vec<u64>,
    /// By sending shard: the sequence number of the last message taken from it.
    received: Vec<u64>,
    /// Messages to self, handled before the current input returns (always empty between
    /// inputs, so not part of a snapshot).
    local: VecDeque<Msg>,
    stats: ShardStats,
}

impl fmt::Debug for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shard")
            .field("id", &self.id)
            .field("shard_count", &self.shard_count)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Shard {
    /// Shard `id` of `shard_count` (0 counts as 1), empty.
    pub fn new(id: usize, shard_count: usize, config: EngineConfig) -> Self {
        Self::with_map_parts(id, shard_count, config, split_map::PARTS)
    }

    /// [`Shard::new`] with idempotency and transaction maps of `parts` tables each (1 or
    /// [`split_map::PARTS`]).
    fn with_map_parts(id: usize, shard_count: usize, config: EngineConfig, parts: usize) -> Self {
        let shard_count = shard_count.max(1);
        Self {
            id,
            shard_count,
            config,
            accounts: HashMap::default(),
            orders: HashMap::default(),
            idem: SplitMap::with_parts(parts),
            txns: SplitMap::with_parts(parts),
            approvals: 0,
            sent: vec![0; shard_count],
            received: vec![0; shard_count],
            local: VecDeque::new(),
            stats: ShardStats::default(),
        }
    }

    /// This shard's index.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Number of shards in the switch.
    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// Sizes the idempotency and transaction maps for `entries` entries each, so that they
    /// do not grow while they fill up to that (a table grows by moving every entry into one
    /// twice as large: on a fresh switch at saturation about a tenth of a shard's CPU). Never
    /// shrinks them; past `entries` they grow as before. The switch's
    /// `expected_transactions` setting.
    pub fn reserve_transactions(&mut self, entries: usize) {
        self.idem.reserve(entries.saturating_sub(self.idem.len()));
        self.txns.reserve(entries.saturating_sub(self.txns.len()));
    }

    /// The least memory, in bytes, that [`Shard::reserve_transactions`] takes per entry: an
    /// entry in each map (key, value and control byte) at the tables' fullest (7/8). Rounding
    /// each table up to a power of two takes up to twice that.
    pub const fn map_bytes_per_transaction() -> usize {
        (std::mem::size_of::<(IdemKey, IdemEntry)>() + std::mem::size_of::<(TxnId, TxnSlot)>() + 2)
            * 8
            / 7
    }

    /// How many entries the idempotency and transaction maps can each take, filled as keys
    /// spread, before one of their tables must grow.
    pub fn transaction_capacity(&self) -> usize {
        self.idem.capacity().min(self.txns.capacity())
    }

    /// Starts loading, and changes nothing, the map entries deciding `req` here will probe:
    /// its idempotency key, its transaction and its card's account (if on this shard).
    /// The shard thread calls it for every request of a batch before deciding any: the look-ups
    /// of different requests are independent, so their cache misses overlap instead of
    /// stalling the decisions one after another (the maps hold millions of entries; their
    /// probes were the largest item in the shards' profile). The two big maps are prefetched
    /// (nothing waits for the lines: benches/RESULTS.md, "Prefetching the maps").
    pub fn warm_request(&self, req: &Request) {
        self.idem.prefetch(&req.key());
        self.txns.prefetch(&req.own_txn());
        // Not worth hashing the PAN to learn whether the card lives here: the accounts map
        // is small, and probing it for a card it lacks costs less.
        if let Some(pan) = &req.pan {
            std::hint::black_box(self.accounts.contains_key(pan));
        }
    }

    /// [`Shard::warm_request`] for a message from another shard: the account an authorization
    /// checks, the transaction and key a decision completes.
    pub fn warm_peer(&self, msg: &PeerMsg) {
        match &msg.msg {
            Msg::Authorize(ctx) => {
                std::hint::black_box(self.accounts.contains_key(&ctx.pan));
            }
            Msg::Decided { key, txn, .. } => {
                self.idem.prefetch(key);
                self.txns.prefetch(txn);
            }
            Msg::Forward { req, .. } => self.warm_request(req),
            _ => {}
        }
    }

    /// Adds an account; it must belong here (`shard_for_pan`).
    pub fn load_account(&mut self, a: Account) -> Result<(), LoadError> {
        let owner = placement::shard_for_pan(a.pan.as_bytes(), self.shard_count);
        if owner != self.id {
            return Err(LoadError::WrongShard {
                owner,
                shard: self.id,
            });
        }
        if self.accounts.contains_key(&a.pan) {
            return Err(LoadError::DuplicateAccount(a.pan));
        }
        self.put_account(&AccountRow::from(&a));
        Ok(())
    }

    /// Adds an order; it must belong here (`shard_for_order`).
    pub fn load_order(&mut self, o: Order) -> Result<(), LoadError> {
        let key = OrderKey {
            merchant: o.merchant_id,
            order_id: o.order_id,
        };
        let owner = key.shard(self.shard_count);
        if owner != self.id {
            return Err(LoadError::WrongShard {
                owner,
                shard: self.id,
            });
        }
        if self.orders.contains_key(&key) {
            return Err(LoadError::DuplicateOrder {
                merchant: key.merchant,
                order_id: key.order_id,
            });
        }
        let state = OrderState {
            amount: o.amount,
            currency: o.currency,
            status: o.status,
            paid_by: None,
        };
        self.orders.insert(key, state);
        Ok(())
    }

    /// A request from a connection. `token` is opaque here: it comes back in the
    /// [`Output::Reply`]. Deliver requests to [`Request::home_shard`]; one delivered elsewhere
    /// is forwarded there (one extra hop).
    pub fn handle_request(&mut self, now: Now, token: u64, req: Request, out: &mut Vec<Output>) {
        self.stats.requests += 1;
        self.route_request(now, token, req, out);
        self.drain_local(now, out);
    }

    /// A message from another shard (an [`Output::ToShard`] addressed here). A message whose
    /// sequence number was already taken from its sender is ignored (see [`PeerMsg`]). Deliver
    /// only messages whose producing input the sender has journaled (the crate's durability
    /// rules): answers marked [`Output::Reply`]`{ durable: true }` rely on it.
    pub fn handle_peer(&mut self, now: Now, msg: PeerMsg, out: &mut Vec<Output>) {
        let PeerMsg { from, seq, msg } = msg;
        let Some(last) = self.received.get_mut(from) else {
            self.stats.foreign_peer_messages += 1;
            return;
        };
        if seq <= *last {
            self.stats.duplicate_peer_messages += 1;
            return;
        }
        if seq != *last + 1 {
            self.stats.peer_sequence_gaps += 1;
        }
        *last = seq;
        self.stats.peer_messages += 1;
        // From another shard: committed there before it was sent.
        self.on_msg(now, msg, true, out);
        self.drain_local(now, out);
    }

    /// The sequence number of the last message this shard sent to shard `to` (0: none).
    pub fn sent_seq(&self, to: usize) -> u64 {
        self.sent.get(to).copied().unwrap_or(0)
    }

    /// The sequence number of the last message this shard took from shard `from` (0: none).
    /// After a restart, a message from `from` numbered above this was never applied here and
    /// must be delivered again.
    pub fn received_seq(&self, from: usize) -> u64 {
        self.received.get(from).copied().unwrap_or(0)
    }

    /// Forgets what the idempotency window no longer protects: answered keys, markers, and
    /// decided transaction records past the window (open holds are kept until completed or
    /// reversed). Returns how many entries went. Expired keys are also ignored on lookup, so
    /// calling this is about memory, not correctness.
    ///
    /// It changes the state a snapshot sees, though: a switch keeping a journal hands it to
    /// [`Shard::apply`] as [`Input::Purge`], so a replay purges at the same points. Which
    /// entries go depends only on `now` and the state (never on map iteration order).
    pub fn purge_expired(&mut self, now: Now) -> usize {
        let t = now.unix_secs();
        let window = self.window_secs();
        let before = self.idem.len() + self.txns.len();
        self.idem
            .retain(|_, e| !matches!(e, IdemEntry::Done { expires, .. } if *expires <= t));
        let mut halves = 0;
        self.txns.retain(|_, slot| {
            halves += usize::from(slot.drop_expired_half(t, window));
            !slot.expired(t, window)
        });
        let purged = before - (self.idem.len() + self.txns.len()) + halves;
        self.stats.purged += purged as u64;
        purged
    }

    /// The account of `pan` if this shard owns it; `day_total` is for the UTC day of `now`.
    pub fn account(&self, pan: &Pan, now: Now) -> Option<AccountView> {
        self.accounts.get(pan).map(|a| a.view(now.utc_day()))
    }

    /// Every account this shard owns, in PAN order (the same in every process, unlike a hash
    /// map's order).
    pub fn accounts(&self, now: Now) -> impl Iterator<Item = (Pan, AccountView)> + '_ {
        let mut pans: Vec<&Pan> = self.accounts.keys().collect();
        pans.sort_unstable();
        pans.into_iter()
            .filter_map(move |pan| Some((*pan, self.accounts.get(pan)?.view(now.utc_day()))))
    }

    /// The order `(merchant, order_id)` if this shard owns it.
    pub fn order(&self, merchant: &MerchantId, order_id: &str) -> Option<OrderView> {
        let key = OrderKey {
            merchant: *merchant,
            order_id: order_id.to_owned(),
        };
        self.orders.get(&key).map(|o| OrderView {
            amount: o.amount,
            currency: o.currency,
            status: o.status,
            paid_by: o.paid_by,
        })
    }

    /// Where the transaction `txn` stands, if this shard is its home and knows it.
    pub fn transaction(&self, txn: &TxnId) -> Option<TxnView> {
        Some(match self.txns.get(txn)? {
            TxnSlot::Marker { .. } => TxnView::LateOriginalMarker,
            TxnSlot::Pending(_) => TxnView::Pending,
            TxnSlot::Record(r) => match r.state {
                TxnState::Declined => TxnView::Declined,
                TxnState::Approved { .. } => TxnView::Approved { amount: r.amount },
                TxnState::Completed { amount, .. } => TxnView::Completed {
                    held: r.amount,
                    amount,
                },
                TxnState::Reversed => TxnView::Reversed,
            },
            TxnSlot::Both(_) => TxnView::Both,
        })
    }

    /// Counters and sizes.
    pub fn stats(&self) -> ShardStats {
        ShardStats {
            accounts: self.accounts.len(),
            orders: self.orders.len(),
            idempotency_records: self.idem.len(),
            transaction_records: self.txns.len(),
            late_original_markers: self
                .txns
                .values()
                .filter(|s| matches!(s, TxnSlot::Marker { .. }))
                .count(),
            ..self.stats
        }
    }

    // ----- plumbing -----

    fn route_request(&mut self, now: Now, token: u64, req: Request, out: &mut Vec<Output>) {
        let home = req.home_shard(self.shard_count);
        if home == self.id {
            self.on_request(now, token, req, out);
        } else {
            self.send(
                home,
                Msg::Forward {
                    token,
                    req: Box::new(req),
                },
                out,
            );
        }
    }

    /// `committed`: the message came from another shard, which delivers it only once the
    /// input that produced it is in its committed journal (not from this shard's own queue,
    /// whose messages belong to the input being applied).
    fn on_msg(&mut self, now: Now, msg: Msg, committed: bool, out: &mut Vec<Output>) {
        match msg {
            Msg::Forward { token, req } => self.route_request(now, token, *req, out),
            Msg::Authorize(ctx) => self.on_authorize(now, ctx, out),
            Msg::Reserve(ctx) => self.on_reserve(ctx, out),
            Msg::Reserved { ctx, result } => self.on_reserved(now, ctx, result, out),
            Msg::CheckOrder(ctx) => self.on_check_order(ctx, out),
            Msg::OrderChecked { ctx, result } => self.on_order_checked(now, ctx, result, out),
            Msg::Decided {
                key,
                txn,
                code,
                day,
                approval,
            } => self.on_decided(now, key, txn, code, day, approval, committed, out),
            Msg::Apply {
                home,
                key,
                pan,
                effect,
            } => self.on_apply(home, key, pan, effect, out),
            Msg::Release { order, by, ack } => self.on_release(&order, by, ack, out),
            Msg::Applied { key } => self.on_applied(now, key, out),
        }
    }

    fn drain_local(&mut self, now: Now, out: &mut Vec<Output>) {
        while let Some(msg) = self.local.pop_front() {
            self.on_msg(now, msg, false, out);
        }
    }

    /// Sends `msg` to shard `to`; to itself it is queued and handled before the current input
    /// returns, so K == A == O runs the same protocol without the caller's help.
    /// Messages to other shards are numbered per destination (see [`PeerMsg`]).
    fn send(&mut self, to: usize, msg: Msg, out: &mut Vec<Output>) {
        if to == self.id {
            self.local.push_back(msg);
            return;
        }
        let seq = match self.sent.get_mut(to) {
            Some(last) => {
                *last += 1;
                *last
            }
            // Placement never names a shard beyond the count; number it anyway.
            None => 0,
        };
        out.push(Output::ToShard {
            shard: to,
            msg: PeerMsg {
                from: self.id,
                seq,
                msg,
            },
        });
    }

    fn reply(&mut self, token: u64, response: Response, out: &mut Vec<Output>) {
        self.reply_as(token, response, false, out);
    }

    /// [`Shard::reply`], marked [`Output::Reply::durable`] when `durable`.
    fn reply_as(&mut self, token: u64, response: Response, durable: bool, out: &mut Vec<Output>) {
        self.stats.replies += 1;
        out.push(Output::Reply {
            token,
            response,
            durable,
        });
    }

    fn pan_shard(&self, pan: &Pan) -> usize {
        placement::shard_for_pan(pan.as_bytes(), self.shard_count)
    }

    /// A cluster-unique approval code: the counter interleaved with the shard id, in base 36
    /// (unique until 36^6 approvals in total). Counting starts at 1: some terminals read
    /// `000000` as "no approval code".
    fn next_approval_code(&mut self) -> ApprovalCode {
        let n = self
            .approvals
            .wrapping_add(1)
            .wrapping_mul(self.shard_count as u64)
            .wrapping_add(self.id as u64);
        self.approvals = self.approvals.wrapping_add(1);
        ApprovalCode::from_number(n)
    }

    fn window_secs(&self) -> i64 {
        i64::try_from(self.config.idempotency_window_secs).unwrap_or(i64::MAX)
    }

    fn window_end(&self, now: Now) -> i64 {
        now.plus_secs(self.config.idempotency_window_secs)
            .unix_secs()
    }
}

/// Builds all shards from loaded data, each account and order on its owner.
pub fn build_shards(
    shard_count: usize,
    config: &EngineConfig,
    accounts: impl IntoIterator<Item = Account>,
    orders: impl IntoIterator<Item = Order>,
) -> Result<Vec<Shard>, LoadError> {
    let n = shard_count.max(1);
    let mut shards: Vec<Shard> = (0..n).map(|i| Shard::new(i, n, config.clone())).collect();
    for a in accounts {
        let i = placement::shard_for_pan(a.pan.as_bytes(), n);
        if let Some(s) = shards.get_mut(i) {
            s.load_account(a)?;
        }
    }
    for o in orders {
        let i = placement::shard_for_order(o.merchant_id.as_bytes(), o.order_id.as_bytes(), n);
        if let Some(s) = shards.get_mut(i) {
            s.load_order(o)?;
        }
    }
    Ok(shards)
}

/// DE 4 as the engine's signed minor units; an absent amount counts as zero (answered 13),
/// one beyond `i64` (impossible for n12) saturates and fails the funds check.
fn minor_units(amount: Option<u64>) -> i64 {
    amount.map_or(0, |a| i64::try_from(a).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod replay_tests;
#[cfg(test)]
mod tests;
