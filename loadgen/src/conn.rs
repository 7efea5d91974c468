//! One task per connection: sends requests, matches and checks answers, expires timeouts.
//!
//! The task never blocks on a write while answers wait to be read: writes and reads race in
//! one `select!` (a partial write keeps the rest for later), so a server that answers while we
//! send can never deadlock with us. Sends are batched: requests are encoded into one reused
//! buffer (`MessageBuilder` into a `BytesMut`, no allocation per message) and written with one
//! syscall per batch; answers are read through a framed reader and handled as many as are
//! buffered before the next write.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use codec::framing::{FrameError, LengthFramer};
use codec::{DecodeError, Message, Spec};
use futures::{FutureExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::codec::FramedRead;

use crate::data::{exponent, Data};
use crate::mix::{Mix, Op};
use crate::pace::Schedule;
use crate::stats::{new_histogram, ConnStats, Live};
use crate::traffic::{key, Kind, Original, PanRef, Req, Wire, NO_ORDER};

/// How often a connection expires timeouts and publishes its live figures.
const HOUSEKEEPING: Duration = Duration::from_millis(50);

/// Frames handled before the next write.
const READ_BATCH: usize = 4096;

/// Keys of answers that timed out, kept to tell a late answer from a stray one.
const MAX_LATE_KEYS: usize = 1 << 22;

/// An amount no demo card can pay (DE 4 is n12): a deliberate 51.
const OVER_BALANCE: u64 = 999_999_999_999;

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Send nothing new; wait for answers in flight (each until its timeout).
    Draining,
    /// Stop now: what is in flight is counted as such.
    Abort,
}

/// Everything the connections share (read-only apart from `live`).
#[derive(Debug)]
pub struct Shared {
    pub spec: &'static Spec,
    pub framer: LengthFramer,
    pub data: Data,
    pub mix: Mix,
    /// The peer is an echo server: an answer is the request itself.
    pub echo_mode: bool,
    /// Closed loop: requests in flight per connection.
    pub pipeline: usize,
    /// Open loop: the timeline (closed loop: `None`).
    pub schedule: Option<Schedule>,
    pub timeout: Duration,
    /// End of the warm-up: requests sent (or due) from here on are measured.
    pub warm_end: Instant,
    /// No request is sent (or due) from here on.
    pub end: Instant,
    /// When a Ctrl-C ended the run early: the measured window closed then.
    pub stopped_at: std::sync::OnceLock<Instant>,
    pub seed: u64,
    /// Terminal ids are `LG` + six digits: this base + the connection's index.
    pub terminal_base: u32,
    pub live: Live,
    /// A live progress line is shown: connections feed `live.interval` (latencies since the
    /// line was last drawn). Without one they skip that histogram (merging and clearing one
    /// costs about as much as a few hundred requests).
    pub progress: bool,
}

impl Shared {
    /// Whether an answer arriving at `now` falls in the measured window (the warm-up aside):
    /// before the end, and before a Ctrl-C that came first.
    fn window_open(&self, now: Instant) -> bool {
        now < self.end && self.stopped_at.get().is_none_or(|&t| now < t)
    }
}

/// A request waiting for its answer.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    req: Req,
    /// Latency is measured from here: when it was encoded (closed loop) or due (open loop).
    start: Instant,
    deadline: Instant,
    measured: bool,
}

/// Fibonacci hashing of the (7, 11) key: keys are sequential, no need for SipHash.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, k: u64) {
        self.0 = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;
type KeySet = HashSet<u64, BuildHasherDefault<KeyHasher>>;

/// One connection's state.
pub struct Conn {
    index: usize,
    terminal: String,
    sh: &'static Shared,
    rng: u64,
    stan: u32,
    f7_unix: i64,
    f7: u64,
    inflight: KeyMap<InFlight>,
    followups: VecDeque<Req>,
    /// Lost during the warm-up and not open again yet.
    down_in_warmup: bool,
    /// Orders this connection may pay (each order belongs to one connection, so two
    /// connections never race for one order).
    orders: VecDeque<u32>,
    late: KeySet,
    /// Answers are decoded here, one after the other.
    scratch: Option<Box<Message<'static>>>,
    out: BytesMut,
    /// Open loop: slots sent so far, and this connection's share of the timeline.
    slots_sent: u64,
    slots: u64,
    decline_flip: bool,
    stats: ConnStats,
    interval: Histogram<u64>,
    /// Totals including the warm-up, for the live figures, and what was published of them.
    live_now: [u64; 4],
    live_published: [u64; 4],
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("terminal", &self.terminal)
            .field("in_flight", &self.inflight.len())
            .finish_non_exhaustive()
    }
}

const SENT: usize = 0;
const RECEIVED: usize = 1;
const ERRORS: usize = 2;
const TIMEOUTS: usize = 3;

impl Conn {
    pub fn new(index: usize, sh: &'static Shared, connections: usize) -> Conn {
        let orders = (0..sh.data.orders.len() as u32)
            .filter(|o| *o as usize % connections.max(1) == index)
            .collect();
        let f7_unix = crate::clock::unix_now();
        let terminal = format!("LG{:06}", (sh.terminal_base as usize + index) % 1_000_000);
        let slots = sh.schedule.map_or(0, |s| s.slots(index));
        let capacity = if sh.schedule.is_some() {
            1024
        } else {
            sh.pipeline * 2
        };
        Conn {
            index,
            terminal,
            rng: splitmix(sh.seed ^ (index as u64).wrapping_mul(0xA076_1D64_78BD_642F)),
            stan: 0,
            f7_unix,
            f7: crate::clock::de7(f7_unix),
            inflight: KeyMap::with_capacity_and_hasher(capacity, Default::default()),
            followups: VecDeque::with_capacity(capacity),
            down_in_warmup: false,
            orders,
            late: KeySet::default(),
            scratch: None,
            out: BytesMut::with_capacity(64 * 1024),
            slots_sent: 0,
            slots,
            decline_flip: false,
            stats: ConnStats::default(),
            interval: new_histogram(),
            live_now: [0; 4],
            live_published: [0; 4],
            sh,
        }
    }

    fn rand(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix(self.rng)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift, no division).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.rand()) * u128::from(n)) >> 64) as u64
    }

    /// The next key: STAN 000001-999999; DE 7 moves on by at least a second at each wrap.
    fn next_key(&mut self) -> (u32, u64) {
        self.stan += 1;
        if self.stan > 999_999 {
            self.stan = 1;
            self.f7_unix = crate::clock::unix_now().max(self.f7_unix + 1);
            self.f7 = crate::clock::de7(self.f7_unix);
        }
        (self.stan, self.f7)
    }

    fn random_card(&mut self) -> (PanRef, u16) {
        let n = self.sh.data.cards.len() as u64;
        if n == 0 {
            return (PanRef::None, 840);
        }
        let i = self.below(n) as u32;
        let currency = self
            .sh
            .data
            .cards
            .get(i as usize)
            .map_or(840, |c| c.currency);
        (PanRef::Card(i), currency)
    }

    /// 1.00 to 50.99 in the currency's major units.
    fn random_amount(&mut self, currency: u16) -> u64 {
        let scale = 10u64.pow(exponent(currency));
        let major = 1 + self.below(50);
        major * scale + self.below(scale)
    }

    fn card_req(&mut self, kind: Kind) -> Req {
        let (pan, currency) = self.random_card();
        let amount = if kind == Kind::Balance {
            0
        } else {
            self.random_amount(currency)
        };
        Req {
            kind,
            pan,
            amount,
            currency,
            stan: 0,
            f7: 0,
            order: NO_ORDER,
            original: None,
        }
    }

    /// A new operation's first request, by the mix.
    fn new_req(&mut self) -> Req {
        let r = self.rand();
        let op = self.sh.mix.pick(r);
        match op {
            Op::Purchase => self.card_req(Kind::Purchase),
            Op::AuthCompletion => self.card_req(Kind::Hold),
            Op::Reversal => self.card_req(Kind::ReversiblePurchase),
            Op::Balance => self.card_req(Kind::Balance),
            Op::Echo => Req {
                kind: Kind::Echo,
                pan: PanRef::None,
                amount: 0,
                currency: 0,
                stan: 0,
                f7: 0,
                order: NO_ORDER,
                original: None,
            },
            Op::Order => {
                let data = &self.sh.data;
                let picked = self.orders.pop_front().and_then(|o| {
                    let order = data.orders.get(o as usize)?;
                    let cards = data.cards_by_currency.get(&order.currency)?;
                    Some((o, order.amount_minor, order.currency, cards.len()))
                });
                match picked {
                    Some((o, amount, currency, n)) => {
                        let r = self.below(n as u64) as usize;
                        let card = self
                            .sh
                            .data
                            .cards_by_currency
                            .get(&currency)
                            .and_then(|c| c.get(r))
                            .copied()
                            .unwrap_or(0);
                        Req {
                            kind: Kind::OrderPayment,
                            pan: PanRef::Card(card),
                            amount,
                            currency,
                            stan: 0,
                            f7: 0,
                            order: o,
                            original: None,
                        }
                    }
                    // Every order of this connection is being paid or reversed right now.
                    None => self.card_req(Kind::Purchase),
                }
            }
            Op::Decline => {
                self.decline_flip = !self.decline_flip;
                let mut req = self.card_req(Kind::OverBalance);
                let payable = match req.pan {
                    PanRef::Card(i) => self
                        .sh
                        .data
                        .cards
                        .get(i as usize)
                        .and_then(|c| c.balance_minor)
                        .is_some_and(|b| b < OVER_BALANCE),
                    _ => false,
                };
                if self.decline_flip && payable {
                    req.amount = OVER_BALANCE;
                } else {
                    let n = self.sh.data.unknown_pans.len().max(1) as u64;
                    req.kind = Kind::UnknownCard;
                    req.pan = PanRef::Unknown(self.below(n) as u32);
                }
                req
            }
        }
    }

    /// Encodes and records one request; `start` is when its latency starts.
    fn send_one(&mut self, start: Instant) {
        let mut req = match self.followups.pop_front() {
            Some(r) => r,
            None => self.new_req(),
        };
        let (stan, f7) = self.next_key();
        req.stan = stan;
        req.f7 = f7;
        let wire = Wire {
            spec: self.sh.spec,
            framer: &self.sh.framer,
            data: &self.sh.data,
            terminal: &self.terminal,
        };
        let measured = start >= self.sh.warm_end;
        if let Err(e) = wire.encode(&req, &mut self.out) {
            if measured {
                self.stats.errors.encode += 1;
            } else {
                self.stats.warmup.errors += 1;
            }
            self.live_now[ERRORS] += 1;
            let kind = req.kind.name();
            self.stats
                .sample(|| format!("cannot encode a {kind} request: {e}"));
            return;
        }
        self.inflight.insert(
            key(f7, stan),
            InFlight {
                req,
                start,
                deadline: start + self.sh.timeout,
                measured,
            },
        );
        self.live_now[SENT] += 1;
        if measured {
            self.stats.sent += 1;
            self.stats.kinds[req.kind as usize].sent += 1;
        } else {
            self.stats.warmup.sent += 1;
        }
    }

    /// Whether requests may still be sent in `phase`. Closed loop: while the run runs. Open
    /// loop: every slot due before the run ended, even once it drains (late, its latency
    /// counted from its due time), so a loadgen that fell behind never drops load quietly;
    /// after a Ctrl-C only those due before it.
    fn may_send(&self, phase: Phase, now: Instant) -> bool {
        match self.sh.schedule {
            Some(s) => phase != Phase::Abort && self.slots_sent < self.last_slot(s),
            None => phase == Phase::Running && now < self.sh.end,
        }
    }

    /// Open loop: how many of this connection's slots fall due in the run (those due before
    /// a Ctrl-C, after one).
    fn last_slot(&self, s: Schedule) -> u64 {
        match self.sh.stopped_at.get() {
            Some(&t) => s.due(self.index, t.into_std()).min(self.slots),
            None => self.slots,
        }
    }

    /// Open loop: measured slots that fell due and were never sent (their connection was
    /// lost and could not be opened again, or a second Ctrl-C came first).
    fn unsent(&self) -> u64 {
        let Some(s) = self.sh.schedule else {
            return 0;
        };
        let last = self.last_slot(s);
        // The first measured slot: `due` counts a slot due exactly at the end of the warm-up,
        // which is measured.
        let mut first = s
            .due(self.index, self.sh.warm_end.into_std())
            .min(self.slots);
        if first > 0 && Instant::from_std(s.intended(self.index, first - 1)) >= self.sh.warm_end {
            first -= 1;
        }
        last.saturating_sub(self.slots_sent.max(first))
    }

    /// Closed loop: tops up to `pipeline` in flight. Open loop: sends every slot due.
    fn fill(&mut self, now: Instant) {
        match self.sh.schedule {
            None => {
                let missing = self.sh.pipeline.saturating_sub(self.inflight.len());
                for _ in 0..missing {
                    self.send_one(now);
                }
            }
            Some(s) => {
                // Nothing falls due after a Ctrl-C.
                let until = self.sh.stopped_at.get().map_or(now, |&t| now.min(t));
                let due = s.due(self.index, until.into_std()).min(self.slots);
                while self.slots_sent < due {
                    let intended = Instant::from_std(s.intended(self.index, self.slots_sent));
                    self.slots_sent += 1;
                    if intended >= self.sh.warm_end {
                        // How late loadgen itself is: part of every latency it reports.
                        let lag = now.saturating_duration_since(intended).as_micros() as u64;
                        self.stats.send_lag.saturating_record(lag);
                    }
                    self.send_one(intended);
                }
            }
        }
    }

    fn error_counted(&mut self, now: Instant) {
        self.live_now[ERRORS] += 1;
        if now < self.sh.warm_end {
            self.stats.warmup.errors += 1;
        }
    }

    /// One frame from the peer, decoded into the connection's reused message (no 1.6 KB
    /// message built and moved per answer).
    fn on_frame(&mut self, frame: Bytes, now: Instant) {
        let sh = self.sh;
        let mut msg = self
            .scratch
            .take()
            .unwrap_or_else(|| Box::new(Message::empty(sh.spec)));
        // As `Message::decode`: any error in any field fails the frame.
        let decoded = msg
            .decode_partial_into(sh.spec, frame)
            .and_then(|()| msg.error().map_or(Ok(()), |e| Err(*e)));
        self.on_message(&msg, decoded, now);
        self.scratch = Some(msg);
    }

    fn on_message(&mut self, msg: &Message<'_>, decoded: Result<(), DecodeError>, now: Instant) {
        let sh = self.sh;
        match decoded {
            Ok(()) => {}
            Err(e) => {
                self.error_counted(now);
                if now >= sh.warm_end {
                    self.stats.errors.undecodable += 1;
                }
                self.stats.sample(|| format!("undecodable frame: {e}"));
                return;
            }
        };
        let wire = Wire {
            spec: sh.spec,
            framer: &sh.framer,
            data: &sh.data,
            terminal: &self.terminal,
        };
        // One probe of the map: the entry is taken when the answer's key is one in flight.
        let found = match wire.answer_key(msg) {
            Some(k) => match self.inflight.entry(k) {
                Entry::Occupied(e) => Some(e.remove()),
                Entry::Vacant(_) if self.late.remove(&k) => {
                    self.stats.late += 1;
                    return;
                }
                Entry::Vacant(_) => None,
            },
            None => None,
        };
        let Some(entry) = found else {
            self.error_counted(now);
            if now >= sh.warm_end {
                self.stats.errors.unmatched += 1;
            }
            let mti = msg.mti();
            self.stats
                .sample(|| format!("{mti} answer matches no request in flight (41 + 11 + 7)"));
            return;
        };
        if now >= entry.deadline {
            // Past its timeout, though housekeeping had not yet expired it: a timeout whose
            // answer came late, as if `expire` had run first.
            count_timeout(&mut self.stats, &mut self.live_now, entry.measured);
            self.stats.late += 1;
            return;
        }
        // Matched by 41 + 11 + 7 above.
        let verdict = wire.check_matched(&entry.req, msg, sh.echo_mode);
        let latency_us = now.saturating_duration_since(entry.start).as_micros() as u64;
        self.live_now[RECEIVED] += 1;
        if sh.progress {
            self.interval.saturating_record(latency_us);
        }
        let kind = entry.req.kind;
        if entry.measured {
            self.stats.received += 1;
            self.stats.kinds[kind as usize].received += 1;
            self.stats.hist.saturating_record(latency_us);
        } else {
            self.stats.warmup.received += 1;
        }
        match verdict {
            Ok(code) => {
                if let (Some(c), true) = (code, entry.measured) {
                    self.stats.codes.count(c);
                }
                if entry.measured && sh.window_open(now) {
                    self.stats.answered_in_window += 1;
                }
                self.follow_up(&entry.req, code);
            }
            Err(m) => {
                self.live_now[ERRORS] += 1;
                let code = m.code();
                if entry.measured {
                    match code {
                        // Counted among the codes too: a switch answering 96 shows it there.
                        Some(c) => {
                            self.stats.errors.unexpected_code += 1;
                            self.stats.codes.count(c);
                        }
                        None => self.stats.errors.mismatch += 1,
                    }
                } else {
                    self.stats.warmup.errors += 1;
                }
                if code.is_some() {
                    // A decline all the same (a 96 applied nothing): an order goes back in
                    // the pool; nothing follows an unapproved original.
                    self.follow_up(&entry.req, code);
                }
                let mti = msg.mti();
                self.stats
                    .sample(|| format!("{mti} answer to a {}: {m}", kind.name()));
            }
        }
    }

    /// What an answer leads to: a completion, a reversal, an order back in the pool.
    fn follow_up(&mut self, req: &Req, code: Option<[u8; 2]>) {
        let approved = code == Some(*b"00");
        let next = |kind: Kind, mti: u16| Req {
            kind,
            stan: 0,
            f7: 0,
            original: Some(Original {
                mti,
                stan: req.stan,
                f7: req.f7,
            }),
            ..*req
        };
        match req.kind {
            Kind::Hold if approved => self.followups.push_back(next(Kind::Completion, 100)),
            Kind::ReversiblePurchase if approved => {
                self.followups.push_back(next(Kind::Reversal, 200))
            }
            Kind::OrderPayment if approved => {
                self.followups.push_back(next(Kind::OrderReversal, 200))
            }
            // Not found, not payable or already paid: this order is out of play.
            Kind::OrderPayment if matches!(code, Some(c) if [*b"13", *b"25", *b"94"].contains(&c)) =>
                {}
            // Any other decline (the card's) leaves it open. An echo server gives no code.
            Kind::OrderPayment => self.orders.push_back(req.order),
            Kind::OrderReversal => self.orders.push_back(req.order),
            _ => {}
        }
    }

    /// Counts the requests whose deadline has passed as timeouts.
    fn expire(&mut self, now: Instant) {
        if self.inflight.is_empty() {
            return;
        }
        let stats = &mut self.stats;
        let late = &mut self.late;
        let live = &mut self.live_now;
        self.inflight.retain(|&k, f| {
            if f.deadline > now {
                return true;
            }
            count_timeout(stats, live, f.measured);
            if late.len() < MAX_LATE_KEYS {
                late.insert(k);
            }
            false
        });
    }

    /// Expires overdue requests and publishes the live figures; returns when this is next due.
    fn housekeep(&mut self, now: Instant) -> Instant {
        self.expire(now);
        self.publish();
        now + HOUSEKEEPING
    }

    /// Adds what changed since last time to the live figures.
    fn publish(&mut self) {
        let d: [u64; 4] = std::array::from_fn(|i| self.live_now[i] - self.live_published[i]);
        self.live_published = self.live_now;
        self.sh
            .live
            .add(d[SENT], d[RECEIVED], d[ERRORS], d[TIMEOUTS]);
        if self.sh.progress && !self.interval.is_empty() {
            if let Ok(mut h) = self.sh.live.interval.lock() {
                let _ = h.add(&self.interval);
            }
            self.interval.reset();
        }
    }

    /// The connection is gone: what was in flight on it will never be answered. Each such
    /// request is an error (`lost_in_flight`) and abandoned, never answered; what was encoded
    /// but not yet written goes with it (those requests are in flight too).
    fn lost(&mut self, why: &str) {
        // A loss in the warm-up is counted once it is known whose it is: the warm-up's if the
        // connection is open again before the warm-up ends (`reopened`), else the run's
        // (`finish`: the measured window lacked this connection's load).
        if Instant::now() < self.sh.warm_end {
            self.down_in_warmup = true;
        } else {
            self.stats.errors.connection += 1;
        }
        self.live_now[ERRORS] += 1;
        let terminal = self.terminal.clone();
        self.stats
            .sample(|| format!("connection {terminal}: {why}"));
        eprintln!("loadgen: connection {}: {why}", self.terminal);
        for f in self.inflight.values() {
            self.live_now[ERRORS] += 1;
            if f.measured {
                self.stats.abandoned += 1;
                self.stats.errors.lost_in_flight += 1;
            } else {
                self.stats.warmup.errors += 1;
            }
        }
        self.inflight.clear();
        self.out.clear();
    }

    /// The run was cut short: what is in flight stays so.
    fn abort(&mut self) {
        self.stats.in_flight_at_end += self.inflight.values().filter(|f| f.measured).count() as u64;
        self.inflight.clear();
    }

    /// The connection is open again after a loss.
    fn reopened(&mut self) {
        self.stats.reconnects += 1;
        if self.down_in_warmup && Instant::now() < self.sh.warm_end {
            self.down_in_warmup = false;
            self.stats.warmup.errors += 1;
        }
    }

    fn finish(mut self) -> ConnStats {
        if self.down_in_warmup {
            // Lost in the warm-up and not back before it ended: a loss of the run.
            self.stats.errors.connection += 1;
        }
        self.stats.errors.unsent += self.unsent();
        self.publish();
        self.stats
    }
}

/// One request timed out: in the live figures, and in the measured or the warm-up ones.
fn count_timeout(stats: &mut ConnStats, live: &mut [u64; 4], measured: bool) {
    live[TIMEOUTS] += 1;
    if measured {
        stats.timeouts += 1;
    } else {
        stats.warmup.timeouts += 1;
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

async fn notified(n: &Option<Arc<Notify>>) {
    match n {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// First wait before opening a lost connection again; doubles up to [`MAX_RECONNECT_WAIT`].
const FIRST_RECONNECT_WAIT: Duration = Duration::from_millis(50);
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(1);

/// How one stretch on one TCP connection ended.
enum Ended {
    /// The run is over for this connection.
    Done,
    /// The connection was lost (why).
    Lost(String),
}

/// Runs one connection until the run ends; returns what it counted. A lost connection is
/// opened again to `target` (after what was in flight on it is counted), for as long as the
/// run may still send.
pub async fn run(
    mut c: Conn,
    mut stream: TcpStream,
    target: String,
    mut phase: watch::Receiver<Phase>,
    pace: Option<Arc<Notify>>,
) -> ConnStats {
    loop {
        match serve(&mut c, &mut stream, &mut phase, &pace).await {
            Ended::Done => {
                let _ = stream.shutdown().await;
                break;
            }
            Ended::Lost(why) => {
                c.lost(&why);
                match reconnect(&mut c, &target, &mut phase).await {
                    Some(s) => stream = s,
                    None => break,
                }
            }
        }
    }
    c.finish()
}

/// Opens the connection again, with a growing wait between attempts; `None` once the run
/// no longer sends (nothing is in flight: the lost connection took it).
async fn reconnect(
    c: &mut Conn,
    target: &str,
    phase: &mut watch::Receiver<Phase>,
) -> Option<TcpStream> {
    let mut wait = FIRST_RECONNECT_WAIT;
    loop {
        let current = *phase.borrow_and_update();
        if current != Phase::Running || !c.may_send(current, Instant::now()) {
            return None;
        }
        let attempt = tokio::time::timeout(c.sh.timeout, TcpStream::connect(target)).await;
        match attempt {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                c.reopened();
                eprintln!("loadgen: connection {}: open again", c.terminal);
                return Some(stream);
            }
            Ok(Err(e)) => c.stats.sample(|| format!("reconnecting to {target}: {e}")),
            Err(_) => c
                .stats
                .sample(|| format!("reconnecting to {target}: timed out")),
        }
        c.publish();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = phase.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
        }
        wait = (wait * 2).min(MAX_RECONNECT_WAIT);
    }
}

/// Sends, reads and checks on one TCP connection until the run ends or the connection is lost.
async fn serve(
    c: &mut Conn,
    stream: &mut TcpStream,
    phase: &mut watch::Receiver<Phase>,
    pace: &Option<Arc<Notify>>,
) -> Ended {
    let (rd, mut wr) = stream.split();
    let mut frames = FramedRead::with_capacity(rd, c.sh.framer.clone(), 64 * 1024);
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Housekeeping also runs from the loop's top when due: the tick below is polled only
    // when nothing before it in the biased `select!` is ready, which a fast target at
    // saturation may never leave it (polling the tick first cost 3-10% of echo answers/s).
    let mut housekeeping_due = Instant::now() + HOUSEKEEPING;
    loop {
        let now = Instant::now();
        if now >= housekeeping_due {
            housekeeping_due = c.housekeep(now);
            tick.reset();
        }
        let current = *phase.borrow_and_update();
        if current == Phase::Abort {
            c.abort();
            return Ended::Done;
        }
        let sending = c.may_send(current, now);
        if sending {
            c.fill(now);
        }
        // Bytes still unwritten then belong to requests already counted as timeouts: a peer
        // that stopped reading cannot hold the drain.
        if !sending && c.inflight.is_empty() {
            return Ended::Done;
        }
        let mut lost: Option<String> = None;
        tokio::select! {
            biased;
            written = wr.write(&c.out), if !c.out.is_empty() => match written {
                Ok(0) => lost = Some("closed by the peer while writing".into()),
                Ok(n) if n >= c.out.len() => c.out.clear(),
                Ok(n) => c.out.advance(n),
                Err(e) => lost = Some(format!("write failed: {e}")),
            },
            item = frames.next() => {
                let mut item = Some(item);
                for _ in 0..READ_BATCH {
                    match item.take() {
                        Some(Some(Ok(frame))) => c.on_frame(frame, Instant::now()),
                        Some(None) => {
                            lost = Some("closed by the peer".into());
                            break;
                        }
                        Some(Some(Err(e))) => {
                            lost = Some(frame_error(&e));
                            break;
                        }
                        None => break,
                    }
                    item = frames.next().now_or_never();
                }
            }
            _ = notified(pace), if sending => {}
            _ = tick.tick() => housekeeping_due = c.housekeep(Instant::now()),
            changed = phase.changed() => {
                if changed.is_err() {
                    c.abort();
                    return Ended::Done;
                }
            }
        }
        if let Some(why) = lost {
            return Ended::Lost(why);
        }
    }
}

fn frame_error(e: &FrameError) -> String {
    format!("framing lost: {e}")
}
