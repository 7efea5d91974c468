//! Authorization shard threads, each with its journal (issue 4).
//!
//! Each shard is one OS thread that owns one `routing::Shard` (its partition of transactions,
//! accounts and orders) and is the only writer of that state: no lock is taken per message.
//! Connection tasks feed it through a bounded crossbeam channel; shards talk to each other
//! through unbounded channels (a bounded peer channel could deadlock two shards sending to each
//! other; peer traffic is bounded anyway by the requests in flight). Answers go back to the
//! connection's own tokio channel, named in the request.
//!
//! The engine may answer a request on another shard than the one it was submitted to (a balance
//! inquiry is answered where the account lives). Tokens carry the submitting shard in their high
//! bits, and an answer produced elsewhere travels back to that shard, which holds the reply
//! address.
//!
//! # Durability: group commit
//!
//! A worker takes a batch of inputs (everything its peer channel holds, then up to [`BATCH`]
//! requests, and a purge when one is due), and for each one appends its encoding
//! ([`routing::Input`]) to the journal buffer, then applies it ([`Shard::apply`]). Every output
//! of the batch (replies and messages to other shards) is held until the batch is committed:
//! one write and, under `--durability fsync`, one fsync for the whole batch. Inputs that arrive
//! while a commit runs form the next batch, so the fsync rate bounds batches, not decisions.
//! Answers other shards produced for this shard's requests are already durable there and are
//! passed on at once.
//!
//! A failed write or fsync is fail-stop: the shard's memory is now ahead of its disk. The
//! batch's replies become 96 (same MTI), its messages to other shards are dropped, every other
//! request the shard was deciding is answered 96, the error is logged and counted
//! (`switch_journal_errors_total`), and a flag shared by all shards is raised: from then on
//! every shard answers each new request 96 without deciding it (nothing applied), the failed
//! shard ignores peer messages, and no snapshot is taken at shutdown (the next start recovers
//! from the disk). [`ShardSet::failed`] exposes the flag. A decision that another shard had
//! already made durable (a debit on the account's shard) stays: after a restart the
//! re-delivered message completes it, and a retransmission then gets that answer; the 96 the
//! terminal saw meant "unknown outcome".
//!
//! # Snapshots
//!
//! Every `SWITCH_SNAPSHOT_EVERY_RECORDS` records (default [`crate::store::SNAPSHOT_EVERY_RECORDS`])
//! a shard writes a pending snapshot between two batches and starts a new journal segment. After
//! each commit a shard publishes its `received_seq` of every other shard (a shared matrix of
//! atomics); the pending snapshot goes into force, and the journal before it is removed, once
//! every receiver's published value reaches what this shard had sent it at the snapshot. On a
//! clean shutdown with nothing in flight between shards, every shard writes a final snapshot.
//!
//! # Tokens
//!
//! `token = boot << 50 | shard << 40 | slot`: the boot number ([`crate::journal::next_boot`],
//! 14 bits, wrapping after 16384 starts) keeps tokens of requests journaled by an earlier
//! process (in flight at a crash, replayed at start) from ever matching a live request's; an
//! answer for a token of another boot is dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{
    self, Receiver, RecvTimeoutError, Select, Sender, TryRecvError, TrySendError,
};
use routing::{Input, Mti, Now, Output, PeerMsg, Request, Response, ResponseCode, Shard};
use tokio::sync::mpsc::UnboundedSender;

use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::store::Loaded;

/// Where an answer goes: the connection's channel and the request's slot there.
#[derive(Debug)]
pub struct ReplyTo {
    pub tx: UnboundedSender<(u32, Response)>,
    pub slot: u32,
}

/// Work for a shard from a connection.
#[derive(Debug)]
pub struct Job {
    pub request: Request,
    pub reply: ReplyTo,
}

/// Why a job could not be queued.
#[derive(Debug)]
pub enum Rejected {
    /// The shard's queue is full: try again shortly (backpressure).
    Full(Job),
    /// The shards have stopped.
    Stopped(Job),
}

/// The connection side's handle on the shards.
#[derive(Debug, Clone)]
pub struct ShardSet {
    jobs: Arc<[Sender<Job>]>,
    failed: Arc<AtomicBool>,
}

impl ShardSet {
    pub fn count(&self) -> usize {
        self.jobs.len()
    }

    /// Whether a journal write failed: the switch answers 96 to every new request.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// The shared failure flag itself, for readiness (holding it keeps no shard running).
    pub fn failure_flag(&self) -> Arc<AtomicBool> {
        self.failed.clone()
    }

    /// Queues a request on the shard that owns it.
    // The job comes back in the error to be retried; boxing it would allocate per message.
    #[allow(clippy::result_large_err)]
    pub fn submit(&self, job: Job) -> Result<(), Rejected> {
        let shard = job.request.home_shard(self.jobs.len());
        let Some(tx) = self.jobs.get(shard) else {
            return Err(Rejected::Stopped(job));
        };
        tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) => Rejected::Full(job),
            TrySendError::Disconnected(job) => Rejected::Stopped(job),
        })
    }
}

/// What a shard thread hands back when it stops: its state and journal, for the shutdown
/// snapshot.
type Finished = (Shard, Journal);

/// The running shard threads.
#[derive(Debug)]
pub struct ShardThreads {
    handles: Vec<JoinHandle<Finished>>,
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicBool>,
}

impl ShardThreads {
    /// Stops the shard threads and waits for them. Call once every `ShardSet` clone is dropped
    /// (no connection can submit) so each thread finishes what it holds first. Then, if every
    /// shard stopped cleanly, no journal failed and no message is in flight between shards,
    /// each shard writes a snapshot and its older journal is removed.
    pub fn join(self) {
        self.stop.store(true, Ordering::SeqCst);
        let mut finished = Vec::with_capacity(self.handles.len());
        let mut clean = true;
        for h in self.handles {
            match h.join() {
                Ok(f) => finished.push(f),
                Err(_) => {
                    tracing::error!("a shard thread panicked");
                    clean = false;
                }
            }
        }
        if !clean {
            tracing::warn!("no shutdown snapshot: the next start replays the journals");
            return;
        }
        if self.failed.load(Ordering::SeqCst) {
            tracing::warn!(
                "no shutdown snapshot after a journal failure: the next start recovers from the journals"
            );
            return;
        }
        snapshot_all(&mut finished);
    }
}

/// Writes every shard's snapshot as a new generation, then removes the older files. Only when
/// nothing is in flight between shards (each `sent_seq` matched by the receiver's
/// `received_seq`): then every snapshot replaces its journal whatever the others do, so a crash
/// between two shards' snapshots is harmless.
fn snapshot_all(finished: &mut [Finished]) {
    let n = finished.len();
    for s in 0..n {
        for r in 0..n {
            let sent = finished[s].0.sent_seq(r);
            let received = finished[r].0.received_seq(s);
            if sent != received {
                tracing::warn!(
                    from = s,
                    to = r,
                    sent,
                    received,
                    "messages in flight between shards at shutdown: no snapshot; the next start replays the journals"
                );
                return;
            }
        }
    }
    let started = Instant::now();
    let mut bytes = Vec::new();
    for (shard, journal) in finished.iter_mut() {
        bytes.clear();
        shard.snapshot(&mut bytes);
        if let Err(e) = journal.start_generation(&bytes) {
            tracing::error!(shard = shard.id(), error = %format!("{e:#}"), "writing the shutdown snapshot failed; the next start replays the journals");
            return;
        }
    }
    for (shard, journal) in finished.iter() {
        if let Err(e) = journal.remove_older() {
            tracing::warn!(shard = shard.id(), error = %format!("{e:#}"), "removing the journal a snapshot covers failed");
        }
    }
    tracing::info!(shards = n, elapsed = ?started.elapsed(), "shutdown snapshots written");
}

/// How many jobs a shard takes from its queue into one batch.
pub const BATCH: usize = 1024;
/// How many peer messages a shard takes into one batch.
const PEER_BATCH: usize = 4096;

/// Bits of a token below the submitting shard's id.
const TOKEN_SHARD_SHIFT: u32 = 40;
/// Bits of a token below the boot number.
const TOKEN_BOOT_SHIFT: u32 = 50;
/// Most shards the token layout has room for.
pub const MAX_SHARDS: usize = 1 << (TOKEN_BOOT_SHIFT - TOKEN_SHARD_SHIFT);

/// Starts one thread per shard, after queueing the messages a recovery re-delivers.
pub fn start(
    loaded: Loaded,
    queue_capacity: usize,
    metrics: Arc<Metrics>,
) -> std::io::Result<(ShardSet, ShardThreads)> {
    let Loaded {
        shards,
        journals,
        boot,
        redeliver,
        snapshot_every,
    } = loaded;
    let n = shards.len();
    if n > MAX_SHARDS || journals.len() != n {
        return Err(std::io::Error::other(format!(
            "{n} shards: at most {MAX_SHARDS}, one journal each"
        )));
    }
    let boot_bits = (boot & ((1 << (64 - TOKEN_BOOT_SHIFT)) - 1)) << TOKEN_BOOT_SHIFT;
    let (job_txs, job_rxs): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| channel::bounded::<Job>(queue_capacity))
        .unzip();
    let (peer_txs, peer_rxs): (Vec<_>, Vec<_>) =
        (0..n).map(|_| channel::unbounded::<Inbound>()).unzip();
    let redelivered = redeliver.len();
    for (to, msg) in redeliver {
        if let Some(tx) = peer_txs.get(to) {
            let _ = tx.send(Inbound::Peer(msg));
        }
    }
    if redelivered > 0 {
        tracing::info!(
            messages = redelivered,
            "re-delivering messages between shards that recovery found unapplied"
        );
    }
    let peer_txs: Arc<[Sender<Inbound>]> = peer_txs.into();
    let mut handles = Vec::with_capacity(n);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicBool::new(false));
    // [receiver * n + sender]: the receiver's received_seq of the sender as of its last commit.
    let durable: Arc<[AtomicU64]> = (0..n * n)
        .map(|k| AtomicU64::new(shards[k / n].received_seq(k % n)))
        .collect();
    for (((shard, journal), jobs), peers) in
        shards.into_iter().zip(journals).zip(job_rxs).zip(peer_rxs)
    {
        let worker = Worker {
            id: shard.id(),
            token_base: boot_bits | (shard.id() as u64) << TOKEN_SHARD_SHIFT,
            shard,
            journal,
            jobs,
            peers,
            peer_txs: peer_txs.clone(),
            replies: Vec::new(),
            free: Vec::new(),
            out: Vec::with_capacity(256),
            metrics: metrics.clone(),
            stop: stop.clone(),
            failed: failed.clone(),
            broken: false,
            durable: durable.clone(),
            snapshot_every,
            since_snapshot: 0,
            pending_snapshot: None,
        };
        let handle = std::thread::Builder::new()
            .name(format!("shard-{}", worker.id))
            .spawn(move || worker.run())?;
        handles.push(handle);
    }
    Ok((
        ShardSet {
            jobs: job_txs.into(),
            failed: failed.clone(),
        },
        ShardThreads {
            handles,
            stop,
            failed,
        },
    ))
}

/// What one shard sends another.
#[derive(Debug)]
enum Inbound {
    /// A step of a cross-shard decision.
    Peer(PeerMsg),
    /// An answer for a request submitted to the receiving shard.
    Reply { token: u64, response: Response },
}

/// How often a shard drops records older than the idempotency window.
const PURGE_EVERY_SECS: u64 = 60;

/// A request this shard is deciding: where its answer goes, and the response MTI for a 96.
#[derive(Debug)]
struct Pending {
    reply: ReplyTo,
    response_mti: Mti,
}

struct Worker {
    id: usize,
    /// Boot and shard bits of this shard's tokens.
    token_base: u64,
    shard: Shard,
    journal: Journal,
    jobs: Receiver<Job>,
    peers: Receiver<Inbound>,
    peer_txs: Arc<[Sender<Inbound>]>,
    /// Reply addresses of the requests this shard is deciding, by local slot.
    replies: Vec<Option<Pending>>,
    free: Vec<u64>,
    /// Outputs of the current batch, held until it is committed.
    out: Vec<Output>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    /// Raised by any shard whose journal failed: every shard answers new requests 96.
    failed: Arc<AtomicBool>,
    /// This shard's own journal failed: it applies nothing more.
    broken: bool,
    /// Every shard's durably journaled `received_seq` of every other (module docs).
    durable: Arc<[AtomicU64]>,
    /// Records between periodic snapshots (0: none).
    snapshot_every: u64,
    since_snapshot: u64,
    /// A periodic snapshot not yet in force.
    pending_snapshot: Option<PendingSnapshot>,
}

/// A periodic snapshot being written, or written and waiting for the receivers.
#[derive(Debug)]
struct PendingSnapshot {
    /// What this shard had sent each shard when it was taken.
    sent: Vec<u64>,
    /// The thread writing the file.
    writing: Option<JoinHandle<anyhow::Result<()>>>,
    written: bool,
}

fn wall_clock() -> Now {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Now::from_unix_secs(i64::try_from(secs).unwrap_or(i64::MAX))
}

impl Worker {
    fn run(mut self) -> Finished {
        let mut jobs_open = true;
        let mut next_purge = wall_clock().plus_secs(PURGE_EVERY_SECS);
        loop {
            // Gather a batch: peers first (their messages finish decisions under way).
            let now = wall_clock();
            let mut did = 0;
            if now >= next_purge {
                // Keys older than the idempotency window; bounded memory on a long run.
                self.record(Input::Purge { now });
                next_purge = now.plus_secs(PURGE_EVERY_SECS);
            }
            while did < PEER_BATCH {
                match self.peers.try_recv() {
                    Ok(msg) => {
                        self.inbound(now, msg);
                        did += 1;
                    }
                    Err(_) => break,
                }
            }
            let mut taken = 0;
            while jobs_open && taken < BATCH {
                match self.jobs.try_recv() {
                    Ok(job) => {
                        self.take(now, job);
                        taken += 1;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => jobs_open = false,
                }
            }
            if let Some(g) = self.metrics.shard_queue(self.id) {
                g.set(self.jobs.len() as i64);
            }
            if did + taken > 0 || self.journal.pending() || !self.out.is_empty() {
                self.commit();
                continue;
            }
            if !jobs_open {
                // No connection can send more. Peers may still need this shard to finish their
                // own decisions: serve them until the switch says stop and the peer channel has
                // been quiet for a moment. (Requests still undecided then have lost their
                // connections; they never finish if a shard failed.)
                match self.peers.recv_timeout(Duration::from_millis(50)) {
                    Ok(msg) => self.inbound(now, msg),
                    Err(RecvTimeoutError::Timeout) if self.stop.load(Ordering::SeqCst) => {
                        let undecided = self.replies.iter().filter(|r| r.is_some()).count();
                        if undecided > 0 {
                            tracing::warn!(
                                shard = self.id,
                                undecided,
                                "stopping with requests undecided"
                            );
                        }
                        break;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                self.commit();
                continue;
            }
            // Sleep until there is work.
            let mut sel = Select::new();
            let peer_idx = sel.recv(&self.peers);
            let job_idx = if jobs_open {
                Some(sel.recv(&self.jobs))
            } else {
                None
            };
            let op = sel.select();
            let idx = op.index();
            if idx == peer_idx {
                if let Ok(msg) = op.recv(&self.peers) {
                    self.inbound(wall_clock(), msg);
                }
            } else if Some(idx) == job_idx {
                match op.recv(&self.jobs) {
                    Ok(job) => self.take(wall_clock(), job),
                    Err(_) => jobs_open = false,
                }
            }
            // Commit at the top of the loop, with whatever else arrived meanwhile.
        }
        self.commit();
        if let Some(writing) = self.pending_snapshot.take().and_then(|p| p.writing) {
            // Let the file be complete before a shutdown snapshot supersedes it.
            let _ = writing.join();
        }
        (self.shard, self.journal)
    }

    /// Journals one input (buffered) and applies it; its outputs wait for the commit.
    fn record(&mut self, input: Input) {
        if self.broken {
            return;
        }
        self.journal.append(&input);
        self.shard.apply(input, &mut self.out);
        self.since_snapshot += 1;
    }

    fn inbound(&mut self, now: Now, msg: Inbound) {
        match msg {
            Inbound::Peer(msg) => self.record(Input::Peer { now, msg }),
            // Durable on the shard that produced it.
            Inbound::Reply { token, response } => self.reply(token, response),
        }
    }

    fn take(&mut self, now: Now, job: Job) {
        let response_mti = job.request.mti.response();
        if self.failed.load(Ordering::Relaxed) {
            // Fail-stop: nothing is decided (or applied) once a journal has failed.
            let _ = job.reply.tx.send((
                job.reply.slot,
                Response::plain(response_mti, ResponseCode::SystemMalfunction),
            ));
            return;
        }
        let local = match self.free.pop() {
            Some(t) => t,
            None => {
                self.replies.push(None);
                (self.replies.len() - 1) as u64
            }
        };
        if let Some(slot) = self.replies.get_mut(local as usize) {
            *slot = Some(Pending {
                reply: job.reply,
                response_mti,
            });
        }
        let token = self.token_base | local;
        self.record(Input::Request {
            now,
            token,
            request: Box::new(job.request),
        });
    }

    /// Commits the batch's journal records, then releases its outputs; on a failure, answers
    /// 96 instead and stops (module docs).
    fn commit(&mut self) {
        if self.journal.pending() {
            let started = Instant::now();
            let result = self.journal.commit();
            self.metrics
                .journal_commit_seconds
                .observe(started.elapsed().as_secs_f64());
            if let Err(e) = result {
                self.fail(&e);
                return;
            }
            let n = self.shard.shard_count();
            for from in 0..n {
                if let Some(d) = self.durable.get(self.id * n + from) {
                    d.store(self.shard.received_seq(from), Ordering::Release);
                }
            }
        }
        self.flush();
        self.periodic_snapshot();
    }

    /// Periodic snapshots bound recovery time and disk use. Taken between batches; it replaces
    /// the journal before it only once every receiver has durably journaled what this shard
    /// had sent it by then (routing's rule): until then it stays `.pending` and recovery uses
    /// the older snapshot and every segment since.
    fn periodic_snapshot(&mut self) {
        if self.broken || self.snapshot_every == 0 {
            return;
        }
        if let Some(pending) = &mut self.pending_snapshot {
            if let Some(writing) = pending.writing.take_if(|h| h.is_finished()) {
                match writing.join() {
                    Ok(Ok(())) => pending.written = true,
                    Ok(Err(e)) => {
                        // The journal goes on; the older snapshot and segments stay in force.
                        tracing::warn!(shard = self.id, error = %format!("{e:#}"), "writing a periodic snapshot failed");
                        self.pending_snapshot = None;
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(shard = self.id, "the periodic snapshot writer panicked");
                        self.pending_snapshot = None;
                        return;
                    }
                }
            }
            if !pending.written {
                return;
            }
            let n = self.shard.shard_count();
            let covered = pending.sent.iter().enumerate().all(|(to, &seq)| {
                self.durable
                    .get(to * n + self.id)
                    .is_some_and(|d| d.load(Ordering::Acquire) >= seq)
            });
            if covered {
                match self.journal.confirm_generation() {
                    Ok(()) => tracing::info!(
                        shard = self.id,
                        generation = self.journal.generation(),
                        "periodic snapshot in force; the journal before it removed"
                    ),
                    Err(e) => {
                        tracing::warn!(shard = self.id, error = %format!("{e:#}"), "confirming a periodic snapshot failed; recovery keeps using the older one")
                    }
                }
                self.pending_snapshot = None;
            }
            return;
        }
        if self.since_snapshot < self.snapshot_every || self.journal.pending() {
            return;
        }
        self.since_snapshot = 0;
        let started = Instant::now();
        let mut bytes = Vec::new();
        self.shard.snapshot(&mut bytes);
        let sent = (0..self.shard.shard_count())
            .map(|to| self.shard.sent_seq(to))
            .collect();
        let path = match self.journal.begin_generation() {
            Ok(path) => path,
            Err(e) => {
                // The journal goes on in the old segment; nothing is lost.
                tracing::warn!(shard = self.id, error = %format!("{e:#}"), "starting a journal segment failed; no periodic snapshot");
                return;
            }
        };
        tracing::info!(
            shard = self.id,
            generation = self.journal.generation(),
            bytes = bytes.len(),
            elapsed = ?started.elapsed(),
            "periodic snapshot taken; writing it"
        );
        // The file write and fsyncs take the time of the snapshot's size: off the shard thread.
        let writing = std::thread::Builder::new()
            .name(format!("snapshot-{}", self.id))
            .spawn(move || crate::journal::write_atomic(&path, &bytes));
        match writing {
            Ok(handle) => {
                self.pending_snapshot = Some(PendingSnapshot {
                    sent,
                    writing: Some(handle),
                    written: false,
                })
            }
            Err(e) => {
                tracing::warn!(shard = self.id, error = %e, "no thread to write a periodic snapshot")
            }
        }
    }

    fn fail(&mut self, error: &std::io::Error) {
        self.metrics.journal_errors.inc();
        tracing::error!(
            shard = self.id,
            file = %self.journal.path().display(),
            error = %error,
            "journal write failed: answering 96 and deciding nothing more (fail-stop)"
        );
        self.broken = true;
        self.failed.store(true, Ordering::SeqCst);
        let mut out = std::mem::take(&mut self.out);
        for output in out.drain(..) {
            if let Output::Reply { token, response } = output {
                let refused = Response::plain(response.mti, ResponseCode::SystemMalfunction);
                self.reply(token, refused);
            }
        }
        self.out = out;
        // Requests still being decided here would wait forever: answer them now.
        for (local, slot) in self.replies.iter_mut().enumerate() {
            if let Some(p) = slot.take() {
                let _ = p.reply.tx.send((
                    p.reply.slot,
                    Response::plain(p.response_mti, ResponseCode::SystemMalfunction),
                ));
                self.free.push(local as u64);
            }
        }
    }

    /// Sends an answer to its connection, or to the shard that holds its reply address.
    fn reply(&mut self, token: u64, response: Response) {
        if token >> TOKEN_BOOT_SHIFT != self.token_base >> TOKEN_BOOT_SHIFT {
            // A request of an earlier process (replayed): its connection is gone.
            tracing::debug!(
                shard = self.id,
                "answer for a request of an earlier boot dropped"
            );
            return;
        }
        let home = ((token >> TOKEN_SHARD_SHIFT) as usize) & (MAX_SHARDS - 1);
        if home != self.id {
            match self.peer_txs.get(home) {
                Some(tx) => {
                    let _ = tx.send(Inbound::Reply { token, response });
                }
                None => tracing::error!(shard = self.id, token, "answer for no such shard"),
            }
            return;
        }
        let local = token & ((1 << TOKEN_SHARD_SHIFT) - 1);
        match self.replies.get_mut(local as usize).and_then(Option::take) {
            Some(p) => {
                self.free.push(local);
                // The connection may be gone; its answer then has no reader.
                let _ = p.reply.tx.send((p.reply.slot, response));
            }
            None if self.broken => {}
            None => tracing::error!(shard = self.id, token, "engine answered an unknown token"),
        }
    }

    /// Delivers what the engine produced (after the batch is committed).
    fn flush(&mut self) {
        let mut out = std::mem::take(&mut self.out);
        for output in out.drain(..) {
            match output {
                Output::Reply { token, response } => self.reply(token, response),
                Output::ToShard { shard, msg } => match self.peer_txs.get(shard) {
                    Some(tx) => {
                        if tx.send(Inbound::Peer(msg)).is_err() {
                            tracing::error!(shard = self.id, to = shard, "peer shard stopped");
                        }
                    }
                    None => tracing::error!(shard = self.id, to = shard, "no such shard"),
                },
            }
        }
        self.out = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routing::{EngineConfig, TerminalId};

    fn echo(stan: u32) -> Request {
        let mut r = Request::new(
            Mti::new(800).expect("mti"),
            stan,
            1_126_104_500,
            TerminalId::EMPTY,
        );
        r.network_code = Some(301);
        r
    }

    type Answers = tokio::sync::mpsc::UnboundedReceiver<(u32, Response)>;
    type OneShard = (
        ShardSet,
        ShardThreads,
        Arc<Metrics>,
        UnboundedSender<(u32, Response)>,
        Answers,
    );

    /// Starts one shard on `journal`; returns its handle, threads, metrics and an answer channel.
    fn one_shard(journal: Journal) -> OneShard {
        let shards = routing::build_shards(1, &EngineConfig::default(), [], []).expect("shards");
        let metrics = Metrics::new(1);
        let loaded = Loaded {
            shards,
            journals: vec![journal],
            boot: 1,
            redeliver: Vec::new(),
            snapshot_every: 0,
        };
        let (set, threads) = start(loaded, 16, metrics.clone()).expect("start");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (set, threads, metrics, tx, rx)
    }

    fn ask(
        set: &ShardSet,
        tx: &UnboundedSender<(u32, Response)>,
        rx: &mut Answers,
        stan: u32,
    ) -> Response {
        let job = Job {
            request: echo(stan),
            reply: ReplyTo {
                tx: tx.clone(),
                slot: stan,
            },
        };
        assert!(set.submit(job).is_ok(), "queued");
        let (slot, response) = rx.blocking_recv().expect("an answer");
        assert_eq!(slot, stan);
        response
    }

    #[test]
    fn answers_leave_after_their_input_is_journaled() {
        let dir = tempfile::tempdir().expect("tmp");
        let journal = Journal::open(dir.path(), 0, 0, true).expect("open");
        let path = journal.path().to_owned();
        let (set, threads, metrics, tx, mut rx) = one_shard(journal);
        let r = ask(&set, &tx, &mut rx, 1);
        assert_eq!((r.mti.value(), r.code), (810, ResponseCode::Approved));
        // The request is in the journal by the time its answer is out.
        let mut inputs = Vec::new();
        crate::journal::read_segment(&path, true, |i| {
            inputs.push(i);
            Ok(())
        })
        .expect("reads");
        assert!(
            matches!(&inputs[..], [Input::Request { token, request, .. }]
                if request.stan == 1 && token >> TOKEN_BOOT_SHIFT == 1),
            "{inputs:?}"
        );
        assert_eq!(metrics.journal_errors.get(), 0);
        drop(set);
        threads.join();
    }

    #[test]
    fn a_failing_journal_answers_96_and_stops_deciding() {
        let dir = tempfile::tempdir().expect("tmp");
        let (set, threads, metrics, tx, mut rx) = one_shard(Journal::failing_for_tests(dir.path()));
        let r = ask(&set, &tx, &mut rx, 1);
        assert_eq!(
            (r.mti.value(), r.code),
            (810, ResponseCode::SystemMalfunction)
        );
        assert_eq!(metrics.journal_errors.get(), 1);
        assert!(set.failed(), "the switch knows it failed");
        // Fail-stop: the next request is refused without being decided or journaled.
        let r = ask(&set, &tx, &mut rx, 2);
        assert_eq!(r.code, ResponseCode::SystemMalfunction);
        assert_eq!(metrics.journal_errors.get(), 1, "nothing more was written");
        assert!(metrics.render().contains("switch_journal_errors_total 1"));
        drop(set);
        threads.join();
        // No shutdown snapshot after a failure: generation 0 is still the newest.
        assert!(!dir.path().join("snapshot-00000000000000000001").exists());
    }

    /// A worker for shard 0 of 2, driven by hand (no thread), on `dir`.
    fn worker_by_hand(
        dir: &std::path::Path,
        durable: Arc<[AtomicU64]>,
    ) -> (Worker, Receiver<Inbound>) {
        let (accounts_csv, _) = routing::demo::demo_data(40, 0, 1).expect("demo");
        let accounts = routing::data::parse_accounts("a.csv", &accounts_csv).expect("parse");
        let mut shards =
            routing::build_shards(2, &EngineConfig::default(), accounts, []).expect("shards");
        let shard = shards.remove(0);
        let mut bytes = Vec::new();
        shard.snapshot(&mut bytes);
        crate::journal::write_atomic(&dir.join("snapshot-00000000000000000000"), &bytes)
            .expect("snapshot 0");
        let (peer0_tx, peer0_rx) = channel::unbounded();
        let (peer1_tx, peer1_rx) = channel::unbounded();
        let (_job_tx, job_rx) = channel::bounded(1);
        drop(peer0_tx);
        let worker = Worker {
            id: 0,
            token_base: 1 << TOKEN_BOOT_SHIFT,
            shard,
            journal: Journal::open(dir, 0, 0, true).expect("journal"),
            jobs: job_rx,
            peers: peer0_rx,
            peer_txs: vec![channel::unbounded().0, peer1_tx].into(),
            replies: Vec::new(),
            free: Vec::new(),
            out: Vec::new(),
            metrics: Metrics::new(2),
            stop: Arc::new(AtomicBool::new(false)),
            failed: Arc::new(AtomicBool::new(false)),
            broken: false,
            durable,
            snapshot_every: 1,
            since_snapshot: 0,
            pending_snapshot: None,
        };
        (worker, peer1_rx)
    }

    #[test]
    fn a_periodic_snapshot_waits_until_receivers_have_journaled_what_it_sent() {
        let dir = tempfile::tempdir().expect("tmp");
        let durable: Arc<[AtomicU64]> = (0..4).map(|_| AtomicU64::new(0)).collect();
        let (mut w, to_shard_1) = worker_by_hand(dir.path(), durable.clone());
        // A purchase decided on shard 0 for a card on shard 1: shard 0 sends 1 a message.
        let (accounts_csv, _) = routing::demo::demo_data(40, 0, 1).expect("demo");
        let accounts = routing::data::parse_accounts("a.csv", &accounts_csv).expect("parse");
        let remote = accounts
            .iter()
            .find(|a| routing::placement::shard_for_pan(a.pan.as_bytes(), 2) == 1)
            .expect("a card on shard 1");
        let request = (1..)
            .map(|stan| {
                let mut r = Request::new(
                    Mti::new(200).expect("mti"),
                    stan,
                    1_126_104_500,
                    TerminalId::new(b"TERM0001").expect("tid"),
                );
                r.pan = Some(remote.pan);
                r.processing_code = routing::ProcessingCode::from_digits(b"000000");
                r.amount = Some(100);
                r.currency = Some(remote.currency);
                r
            })
            .find(|r| r.home_shard(2) == 0)
            .expect("a request homed on shard 0");
        let now = wall_clock();
        w.record(Input::Request {
            now,
            token: w.token_base,
            request: Box::new(request),
        });
        w.commit();
        assert!(w.shard.sent_seq(1) > 0, "a message went to shard 1");
        assert!(to_shard_1.try_recv().is_ok(), "released after the commit");
        let files = |d: &std::path::Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        // Written off the shard thread: wait for the writer.
        let started = Instant::now();
        while !w
            .pending_snapshot
            .as_ref()
            .and_then(|p| p.writing.as_ref())
            .is_some_and(JoinHandle::is_finished)
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "snapshot written"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Snapshot written as pending; the old generation stays in force.
        assert_eq!(
            files(dir.path()),
            [
                "journal-00000000000000000000.log",
                "journal-00000000000000000001.log",
                "snapshot-00000000000000000000",
                "snapshot-00000000000000000001.pending",
            ]
        );
        let listed = crate::journal::shard_files(dir.path());
        // (shard_files removes the stale pending file, as a recovery would.)
        let listed = listed.expect("files");
        assert_eq!((listed.generation, listed.segments.len()), (0, 2));
        // Rewrite it and check the rule: nothing confirmed while shard 1 lags.
        let mut bytes = Vec::new();
        w.shard.snapshot(&mut bytes);
        crate::journal::write_atomic(
            &dir.path().join("snapshot-00000000000000000001.pending"),
            &bytes,
        )
        .expect("pending again");
        w.commit();
        assert!(w.pending_snapshot.is_some(), "waits for shard 1");
        assert!(dir.path().join("snapshot-00000000000000000000").exists());
        // Shard 1 has durably journaled everything shard 0 sent it: the snapshot takes over.
        durable[2].store(w.shard.sent_seq(1), Ordering::SeqCst);
        w.commit();
        assert!(w.pending_snapshot.is_none());
        assert_eq!(
            files(dir.path()),
            [
                "journal-00000000000000000001.log",
                "snapshot-00000000000000000001",
            ]
        );
    }
}
