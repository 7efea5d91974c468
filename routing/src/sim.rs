//! A deterministic in-memory cluster: N shards, one FIFO inbox each, messages delivered one
//! at a time until quiescent. It plays the switch's part (channels between shard threads)
//! without threads, so tests can interleave cross-shard messages at will and replay an
//! interleaving from a seed.
//!
//! Every input reaches its shard through [`Shard::apply`], as the switch's will; with
//! [`Cluster::record_journal`] the cluster also keeps, per shard, each input it applied and
//! the outputs that input produced, encoded: a journal to replay in tests.
//!
//! Available to this crate's tests and, with the `sim` feature, to other crates' tests.
//! It is test support: it panics on misuse (see [`Cluster::request`]).

use std::collections::VecDeque;

use crate::data::{Account, Order};
use crate::engine::{build_shards, AccountView, EngineConfig, LoadError, OrderView, Output};
use crate::engine::{Input, PeerMsg, Shard, TxnView};
use crate::message::{MerchantId, Request, Response, TxnId};
use crate::pan::Pan;
use crate::placement;
use crate::rng::SplitMix64;
use crate::time::Now;

/// N shards and their inboxes.
#[derive(Debug)]
pub struct Cluster {
    shards: Vec<Shard>,
    inboxes: Vec<VecDeque<PeerMsg>>,
    replies: Vec<(u64, Response)>,
    now: Now,
    next_token: u64,
    /// `Some`: deliver from a pseudo-randomly chosen non-empty inbox; `None`: round robin.
    rng: Option<SplitMix64>,
    cursor: usize,
    delivered: u64,
    /// Per shard, what it applied (when recording).
    journals: Option<Vec<Vec<Recorded>>>,
}

/// One input a shard applied and what it produced, encoded ([`Input::encode`],
/// [`Output::encode`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The input.
    pub input: Vec<u8>,
    /// Its outputs, in order.
    pub outputs: Vec<Vec<u8>>,
}

impl Cluster {
    /// A cluster of `shard_count` shards holding `accounts` and `orders`, at `now`.
    pub fn new(
        shard_count: usize,
        config: &EngineConfig,
        accounts: Vec<Account>,
        orders: Vec<Order>,
        now: Now,
    ) -> Result<Self, LoadError> {
        let shards = build_shards(shard_count, config, accounts, orders)?;
        Ok(Self::from_shards(shards, now))
    }

    /// A cluster of existing shards (e.g. [`Shard::restore`]d ones), `shards[i]` being shard
    /// `i`, with empty inboxes.
    pub fn from_shards(shards: Vec<Shard>, now: Now) -> Self {
        let inboxes = shards.iter().map(|_| VecDeque::new()).collect();
        Self {
            shards,
            inboxes,
            replies: Vec::new(),
            now,
            next_token: 1,
            rng: None,
            cursor: 0,
            delivered: 0,
            journals: None,
        }
    }

    /// From now on, records every input each shard applies and its outputs (see
    /// [`Cluster::journal`]).
    pub fn record_journal(&mut self) {
        if self.journals.is_none() {
            self.journals = Some(self.shards.iter().map(|_| Vec::new()).collect());
        }
    }

    /// What shard `shard` applied since [`Cluster::record_journal`], in order.
    pub fn journal(&self, shard: usize) -> &[Recorded] {
        self.journals
            .as_ref()
            .and_then(|j| j.get(shard))
            .map_or(&[], Vec::as_slice)
    }

    /// Messages waiting in shard `shard`'s inbox, in delivery order.
    pub fn in_flight(&self, shard: usize) -> impl Iterator<Item = &PeerMsg> + '_ {
        self.inboxes.get(shard).into_iter().flatten()
    }

    /// Queues `msg` at the end of shard `shard`'s inbox (a re-delivery after a restart).
    pub fn deliver_later(&mut self, shard: usize, msg: PeerMsg) {
        if let Some(inbox) = self.inboxes.get_mut(shard) {
            inbox.push_back(msg);
        }
    }

    /// The token the next submitted request gets (after a restart, start above every token
    /// the journal holds).
    pub fn set_next_token(&mut self, token: u64) {
        self.next_token = token;
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The clock handed to the shards.
    pub fn now(&self) -> Now {
        self.now
    }

    /// Sets the clock.
    pub fn set_now(&mut self, now: Now) {
        self.now = now;
    }

    /// Delivers messages from pseudo-randomly chosen inboxes from now on (each inbox stays
    /// FIFO, as a channel is).
    pub fn shuffle_deliveries(&mut self, seed: u64) {
        self.rng = Some(SplitMix64::new(seed));
    }

    /// Hands `req` to its home shard (as the switch does) and returns its token. Messages it
    /// causes wait in the inboxes until [`Cluster::step`] or [`Cluster::run`].
    pub fn submit(&mut self, req: Request) -> u64 {
        let home = req.home_shard(self.shards.len());
        self.submit_to(home, req)
    }

    /// Hands `req` to shard `shard`, whatever its home (the shard forwards it).
    pub fn submit_to(&mut self, shard: usize, req: Request) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        let input = Input::Request {
            now: self.now,
            token,
            request: Box::new(req),
        };
        self.apply(shard, input);
        token
    }

    /// Hands `input` to shard `shard` through [`Shard::apply`], records it when recording,
    /// and routes its outputs.
    fn apply(&mut self, shard: usize, input: Input) {
        let encoded = self.journals.as_ref().map(|_| {
            let mut b = Vec::new();
            input.encode(&mut b);
            b
        });
        let mut out = Vec::new();
        if let Some(s) = self.shards.get_mut(shard) {
            s.apply(input, &mut out);
        }
        if let (Some(input), Some(journals)) = (encoded, self.journals.as_mut()) {
            let outputs = out
                .iter()
                .map(|o| {
                    let mut b = Vec::new();
                    o.encode(&mut b);
                    b
                })
                .collect();
            if let Some(j) = journals.get_mut(shard) {
                j.push(Recorded { input, outputs });
            }
        }
        self.route(out);
    }

    /// Delivers one message; false when every inbox is empty.
    pub fn step(&mut self) -> bool {
        let n = self.inboxes.len();
        let busy: Vec<usize> = (0..n).filter(|&i| !self.inboxes[i].is_empty()).collect();
        if busy.is_empty() {
            return false;
        }
        let target = match &mut self.rng {
            Some(rng) => busy[rng.below(busy.len() as u64) as usize],
            None => {
                let t = busy
                    .iter()
                    .copied()
                    .find(|&i| i >= self.cursor)
                    .unwrap_or(busy[0]);
                self.cursor = (t + 1) % n;
                t
            }
        };
        let Some(msg) = self.inboxes[target].pop_front() else {
            return false;
        };
        self.delivered += 1;
        let now = self.now;
        self.apply(target, Input::Peer { now, msg });
        true
    }

    /// Delivers until quiescent; returns the number of messages delivered.
    ///
    /// # Panics
    /// After ten million deliveries (a livelock in the protocol).
    pub fn run(&mut self) -> usize {
        let mut steps = 0;
        while self.step() {
            steps += 1;
            assert!(steps < 10_000_000, "cluster did not become quiescent");
        }
        steps
    }

    /// Submits `req`, runs to quiescence and returns its one reply.
    ///
    /// # Panics
    /// If the request got no reply or several.
    pub fn request(&mut self, req: Request) -> Response {
        let token = self.submit(req);
        self.run();
        let mut replies = self.take_replies(token);
        assert_eq!(
            replies.len(),
            1,
            "expected exactly one reply for token {token}: {replies:?}"
        );
        replies.remove(0)
    }

    /// Removes and returns the replies to `token`, in order.
    pub fn take_replies(&mut self, token: u64) -> Vec<Response> {
        let mut taken = Vec::new();
        self.replies.retain(|(t, r)| {
            if *t == token {
                taken.push(r.clone());
                false
            } else {
                true
            }
        });
        taken
    }

    /// Replies not taken yet, in order.
    pub fn replies(&self) -> &[(u64, Response)] {
        &self.replies
    }

    /// Messages delivered between shards so far (self-messages are not counted: a shard
    /// handles them inside the same input).
    pub fn cross_shard_messages(&self) -> u64 {
        self.delivered
    }

    /// The shards.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The account of `pan`, from its owner.
    pub fn account(&self, pan: &Pan) -> Option<AccountView> {
        let i = placement::shard_for_pan(pan.as_bytes(), self.shards.len());
        self.shards.get(i)?.account(pan, self.now)
    }

    /// The order, from its owner.
    pub fn order(&self, merchant: &MerchantId, order_id: &str) -> Option<OrderView> {
        let i =
            placement::shard_for_order(merchant.as_bytes(), order_id.as_bytes(), self.shards.len());
        self.shards.get(i)?.order(merchant, order_id)
    }

    /// A transaction identity's state, from its home.
    pub fn transaction(&self, txn: &TxnId) -> Option<TxnView> {
        self.shards
            .get(txn.shard(self.shards.len()))?
            .transaction(txn)
    }

    /// Purges every shard ([`Input::Purge`]); returns the number of entries removed.
    pub fn purge_expired(&mut self) -> usize {
        let now = self.now;
        let before: u64 = self.shards.iter().map(|s| s.stats().purged).sum();
        for i in 0..self.shards.len() {
            self.apply(i, Input::Purge { now });
        }
        let after: u64 = self.shards.iter().map(|s| s.stats().purged).sum();
        usize::try_from(after - before).unwrap_or(usize::MAX)
    }

    fn route(&mut self, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Reply {
                    token, response, ..
                } => self.replies.push((token, response)),
                Output::ToShard { shard, msg } => {
                    if let Some(inbox) = self.inboxes.get_mut(shard) {
                        inbox.push_back(msg);
                    }
                }
            }
        }
    }
}
