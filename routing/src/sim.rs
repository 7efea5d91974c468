//! A deterministic in-memory cluster: N shards, one FIFO inbox each, messages delivered one
//! at a time until quiescent. It plays the switch's part (channels between shard threads)
//! without threads, so tests can interleave cross-shard messages at will and replay an
//! interleaving from a seed.
//!
//! Available to this crate's tests and, with the `sim` feature, to other crates' tests.
//! It is test support: it panics on misuse (see [`Cluster::request`]).

use std::collections::VecDeque;

use crate::data::{Account, Order};
use crate::engine::{build_shards, AccountView, EngineConfig, LoadError, OrderView, Output};
use crate::engine::{PeerMsg, Shard, TxnView};
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
        let inboxes = shards.iter().map(|_| VecDeque::new()).collect();
        Ok(Self {
            shards,
            inboxes,
            replies: Vec::new(),
            now,
            next_token: 1,
            rng: None,
            cursor: 0,
            delivered: 0,
        })
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
        let mut out = Vec::new();
        let now = self.now;
        if let Some(s) = self.shards.get_mut(shard) {
            s.handle_request(now, token, req, &mut out);
        }
        self.route(out);
        token
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
        let mut out = Vec::new();
        let now = self.now;
        self.shards[target].handle_peer(now, msg, &mut out);
        self.route(out);
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

    /// Purges every shard; returns the number of entries removed.
    pub fn purge_expired(&mut self) -> usize {
        let now = self.now;
        self.shards.iter_mut().map(|s| s.purge_expired(now)).sum()
    }

    fn route(&mut self, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Reply { token, response } => self.replies.push((token, response)),
                Output::ToShard { shard, msg } => {
                    if let Some(inbox) = self.inboxes.get_mut(shard) {
                        inbox.push_back(msg);
                    }
                }
            }
        }
    }
}
