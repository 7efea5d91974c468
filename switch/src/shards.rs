//! Authorization shard threads, each with its journal (issue 4).
//!
//! Each shard is one OS thread that owns one `routing::Shard` (its partition of transactions,
//! accounts and orders) and is the only writer of that state: no lock is taken per message.
//! Connection tasks feed it through a bounded crossbeam channel, a [`Batch`] of requests per
//! connection read (its reply address once: the shard's [`ReplyBook`] keeps one per connection
//! with requests pending); shards talk to each other
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
//! requests, and a purge when one is due), and for each one appends its journal record
//! ([`routing::Input`], [`crate::journal::encode_record`]) to the batch's buffer, then applies
//! it ([`Shard::apply`]). Every output of the batch (replies and messages to other shards) is
//! held until the batch is committed: one write and, under `--durability fsync`, one
//! `fdatasync` for the whole batch. Inputs that arrive while a commit runs form the next batch,
//! so the fsync rate bounds batches, not decisions. Answers other shards produced for this
//! shard's requests are already durable there and are passed on at once. So are the
//! batch's answers the engine marks `durable` (a decision committed on the card's shard,
//! approval code included): they leave before the batch's write (`Worker::release_durable`),
//! which saves a payment whose card lives on another shard one disk flush of three.
//!
//! (A pipelined commit was tried and measured: the shard writing each batch and handing its
//! fdatasync to syncer threads, up to 3 in flight, answers released in journal order. On the
//! 2-core development machine it was not faster on average than committing on the shard
//! thread: better when the disk was slow, worse when it was fast, as the two thread hand-offs
//! per batch cost more than the overlap saved. The shard commits itself.)
//!
//! A failed write or fsync is fail-stop: the shard's memory is now ahead of its disk. The
//! batch's replies still held become 96 (same MTI), its messages to other shards are
//! dropped, every other request the shard was deciding is answered 96, the error is logged
//! and counted (`switch_journal_errors_total`), and a flag shared by all shards is raised:
//! from then on every shard answers each new request
//! 96 without deciding it (nothing applied), the failed shard ignores peer messages, and no
//! snapshot is taken at shutdown (the next start recovers from the disk). The failed shard also
//! tells every other shard, which answers 96 to every request it is still deciding (one may be
//! waiting on a message from the failed shard that will never come: a connection must never
//! wait forever). [`ShardSet::failed`] exposes the flag. A decision that another shard had
//! already made durable (a debit on the account's shard) stays: after a restart the
//! re-delivered message completes it, and a retransmission then gets that answer; the 96 the
//! terminal saw meant "unknown outcome".
//!
//! # Snapshots, built off the shard thread
//!
//! Every `SWITCH_SNAPSHOT_EVERY_RECORDS` records (default [`crate::store::SNAPSHOT_EVERY_RECORDS`])
//! a shard, right after committing a batch, starts journal segment `g` (a file create and,
//! under fsync, two fsyncs: a few milliseconds): that is all the shard thread does. A snapshot
//! builder thread (`snapshot-<i>`, one at a time
//! per shard) then makes snapshot `g` from the files alone, as recovery would
//! ([`crate::store::rebuild`]): the newest snapshot in force, replay of the closed segments up to
//! `g`; it checks that the rebuilt state sent every shard as many messages as the running
//! shard had at the cut, and writes it crash-safely as `snapshot-<g>.pending` (temporary file,
//! fsync, rename, fsync of the directory). The shard keeps answering meanwhile: the cost is
//! CPU on another thread and, briefly, a second copy of the shard's state in memory.
//!
//! The builder runs under `SCHED_IDLE`: it gets a core only when no other thread of the
//! machine wants it, so it takes no CPU time a shard asks for. (Measured on the 2-core
//! development machine, open loop at 125,000/s beside two builders replaying 1.2 million
//! records each: p99 7.3-10.2 ms against 13.6-55 ms with builders at nice 10, five runs each.)
//! It still costs answers on a 2-vCPU guest: closed-loop runs of 8 s answered 13% more with
//! periodic snapshots off (benches/RESULTS.md, "Where the rest goes"). A machine that is never idle
//! would starve it, so a build still running when the next snapshot is due (the shard has
//! journaled another `SWITCH_SNAPSHOT_EVERY_RECORDS` records) is given up and the next one
//! is built at nice 10, resting as long as it works (at most half a core);
//! so is every build while a given-up builder has not yet exited, and every build where the
//! system refuses `SCHED_IDLE`. The journal thus keeps at most about two snapshot intervals,
//! as when every build ran at nice 10.
//!
//! After each commit a shard publishes its `received_seq` of every other shard as of that
//! batch (a shared matrix of atomics). The builder puts the pending snapshot in force (rename,
//! then the older snapshot and segments are removed) only once every receiver's published
//! value reaches what this shard had sent it at the cut: a crash before then recovers from the
//! older snapshot and every segment since, so no message sent before the cut can be lost with
//! the journal that would re-deliver it. At a stop the builder is cancelled (and waited for
//! at most `BUILDER_STOP_WAIT`, 2 s: one on idle CPU may get none); on a clean
//! shutdown with nothing in flight between shards, every shard writes a final snapshot.
//! `switch_snapshot_builders`, `switch_snapshots_total{outcome}` and
//! `switch_snapshot_build_duration_seconds` show the builds: while one runs, the open loop's
//! tail latency rises (benches/RESULTS.md, "Where the open-loop p99 comes from").
//!
//! # Tokens
//!
//! `token = boot << 50 | shard << 40 | slot`: the boot number ([`crate::journal::next_boot`],
//! 14 bits, wrapping after 16384 starts) keeps tokens of requests journaled by an earlier
//! process (in flight at a crash, replayed at start) from ever matching a live request's; an
//! answer for a token of another boot is dropped.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{
    self, Receiver, RecvTimeoutError, Select, Sender, TryRecvError, TrySendError,
};
use routing::{
    EngineConfig, Input, Mti, Now, Output, PeerMsg, Request, Response, ResponseCode, Shard,
};
use thread_priority::{ThreadPriority, ThreadPriorityValue};
use tokio::sync::mpsc::UnboundedSender;

use crate::journal::Journal;
use crate::metrics::{Metrics, SnapshotOutcome};
use crate::store::Loaded;

/// Where an answer goes: the connection's channel and the request's slot there.
#[derive(Debug)]
pub struct ReplyTo {
    pub tx: UnboundedSender<(u32, Response)>,
    pub slot: u32,
}

/// One request for a shard, with where its answer goes.
#[derive(Debug)]
pub struct Job {
    pub request: Request,
    pub reply: ReplyTo,
}

/// The requests one connection read together for one shard, queued as one: one channel
/// operation and one reply address for all of them, where a job each cost a queue operation and
/// a clone of the connection's sender, shared by two cores, per request.
#[derive(Debug)]
pub struct Batch {
    /// The connection ([`connection_id`]): a shard keeps one reply address per connection with
    /// requests pending there.
    pub conn: u64,
    pub tx: UnboundedSender<(u32, Response)>,
    /// Each request with its slot on the connection.
    pub jobs: Vec<(u32, Request)>,
}

/// A new connection's id, unique for the life of the process.
pub fn connection_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Why a job (or a batch) could not be queued.
#[derive(Debug)]
pub enum Rejected<T = Job> {
    /// The shard's queue is full: try again shortly (backpressure).
    Full(T),
    /// The shards have stopped.
    Stopped(T),
}

/// The connection side's handle on the shards.
#[derive(Debug, Clone)]
pub struct ShardSet {
    jobs: Arc<[Sender<Batch>]>,
    /// Requests queued on each shard (its channel counts batches).
    queued: Arc<[AtomicUsize]>,
    /// How many requests a shard's queue holds before a batch is refused as full.
    capacity: usize,
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

    /// The shard that owns a request: where its batch goes.
    pub fn shard_of(&self, request: &Request) -> usize {
        request.home_shard(self.jobs.len())
    }

    /// Queues a batch on shard `shard` (every request in it owned by that shard). Refused as
    /// full when the shard's queue holds its capacity in requests (a batch larger than the
    /// capacity is taken by an empty queue).
    pub fn submit_batch(&self, shard: usize, batch: Batch) -> Result<(), Rejected<Batch>> {
        let (Some(tx), Some(queued)) = (self.jobs.get(shard), self.queued.get(shard)) else {
            return Err(Rejected::Stopped(batch));
        };
        let n = batch.jobs.len();
        // Counted before it is sent, so that the shard never takes it off the count first.
        let before = queued.fetch_add(n, Ordering::Relaxed);
        if before > 0 && before + n > self.capacity {
            queued.fetch_sub(n, Ordering::Relaxed);
            return Err(Rejected::Full(batch));
        }
        tx.try_send(batch).map_err(|e| {
            queued.fetch_sub(n, Ordering::Relaxed);
            match e {
                TrySendError::Full(batch) => Rejected::Full(batch),
                TrySendError::Disconnected(batch) => Rejected::Stopped(batch),
            }
        })
    }

    /// Queues one request on the shard that owns it (tests: connections queue batches).
    #[cfg(test)]
    fn submit(&self, job: Job) -> Result<(), Rejected<Batch>> {
        let batch = Batch::single(job);
        self.submit_batch(self.shard_of(&batch.jobs[0].1), batch)
    }
}

impl Batch {
    /// One request as a batch of its own, from a connection of its own (tests).
    #[cfg(test)]
    fn single(job: Job) -> Batch {
        Batch {
            conn: connection_id(),
            tx: job.reply.tx,
            jobs: vec![(job.reply.slot, job.request)],
        }
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

    /// Stops the shard threads like [`ShardThreads::join`] but without the shutdown snapshot
    /// (as a crash would leave the files), returning their state.
    #[cfg(test)]
    fn stop_for_tests(self) -> Vec<Finished> {
        self.stop.store(true, Ordering::SeqCst);
        self.handles
            .into_iter()
            .map(|h| h.join().expect("a shard thread"))
            .collect()
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

/// How many requests a shard takes from its queue into one batch (at least: it takes whole
/// connection batches, so up to one connection batch more).
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
        engine,
    } = loaded;
    let n = shards.len();
    if n > MAX_SHARDS || journals.len() != n {
        return Err(std::io::Error::other(format!(
            "{n} shards: at most {MAX_SHARDS}, one journal each"
        )));
    }
    let boot_bits = (boot & ((1 << (64 - TOKEN_BOOT_SHIFT)) - 1)) << TOKEN_BOOT_SHIFT;
    let (job_txs, job_rxs): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| channel::bounded::<Batch>(queue_capacity))
        .unzip();
    let queued: Arc<[AtomicUsize]> = (0..n).map(|_| AtomicUsize::new(0)).collect();
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
        let worker = Worker::new(
            shard,
            journal,
            boot_bits,
            jobs,
            peers,
            Shared {
                peer_txs: peer_txs.clone(),
                queued: queued.clone(),
                metrics: metrics.clone(),
                stop: stop.clone(),
                failed: failed.clone(),
                durable: durable.clone(),
                engine: engine.clone(),
                snapshot_every,
            },
        )?;
        let handle = std::thread::Builder::new()
            .name(format!("shard-{}", worker.id))
            .spawn(move || worker.run())?;
        handles.push(handle);
    }
    Ok((
        ShardSet {
            jobs: job_txs.into(),
            queued,
            capacity: queue_capacity,
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
    /// The sender's journal failed: requests waiting here may wait on it forever.
    Failed,
}

/// How often a shard drops records older than the idempotency window.
const PURGE_EVERY_SECS: u64 = 60;

/// A request this shard is deciding: where its answer goes (its connection's entry in the
/// [`ReplyBook`], its slot on that connection), and the response MTI for a 96.
#[derive(Debug)]
struct Pending {
    entry: u32,
    slot: u32,
    response_mti: Mti,
}

/// The reply addresses of the connections with requests pending on a shard, one per
/// connection: a request holds an index here rather than a clone of its connection's sender.
/// A connection is forgotten when its last pending request is answered.
#[derive(Default)]
struct ReplyBook {
    entries: Vec<Option<ReplyEntry>>,
    free: Vec<u32>,
    by_conn: std::collections::HashMap<u64, u32>,
}

struct ReplyEntry {
    conn: u64,
    tx: UnboundedSender<(u32, Response)>,
    pending: u32,
}

impl ReplyBook {
    /// Where `n` more requests of connection `conn` answer.
    fn attach(&mut self, conn: u64, tx: UnboundedSender<(u32, Response)>, n: u32) -> u32 {
        if let Some(&i) = self.by_conn.get(&conn) {
            if let Some(Some(e)) = self.entries.get_mut(i as usize) {
                e.pending += n;
                return i;
            }
        }
        let entry = Some(ReplyEntry {
            conn,
            tx,
            pending: n,
        });
        let i = match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = entry;
                i
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        self.by_conn.insert(conn, i);
        i
    }

    /// Sends one pending request's answer to its connection (which may be gone: the answer
    /// then has no reader).
    fn send(&mut self, i: u32, slot: u32, response: Response) {
        let Some(Some(e)) = self.entries.get_mut(i as usize) else {
            tracing::error!(entry = i, "answer for a connection not in the reply book");
            return;
        };
        let _ = e.tx.send((slot, response));
        e.pending -= 1;
        if e.pending == 0 {
            let conn = e.conn;
            self.entries[i as usize] = None;
            self.by_conn.remove(&conn);
            self.free.push(i);
        }
    }

    /// Connections with requests pending.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_conn.len()
    }
}

/// What every shard thread shares.
struct Shared {
    peer_txs: Arc<[Sender<Inbound>]>,
    /// Requests queued on each shard ([`ShardSet`]'s count).
    queued: Arc<[AtomicUsize]>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    /// Raised by any shard whose journal failed: every shard answers new requests 96.
    failed: Arc<AtomicBool>,
    /// Every shard's durably journaled `received_seq` of every other (module docs).
    durable: Arc<[AtomicU64]>,
    /// The engine settings, for rebuilding a shard's state from its files.
    engine: EngineConfig,
    /// Records between periodic snapshots (0: none).
    snapshot_every: u64,
}

/// A periodic snapshot being built off the shard thread.
struct SnapshotBuild {
    handle: JoinHandle<()>,
    cancel: Arc<AtomicBool>,
    /// Built at nice 10 rather than on idle CPU only (module docs).
    urgent: bool,
    /// The builder's kernel thread id once it runs (0 before): where `/proc` shows its
    /// scheduling.
    tid: Arc<AtomicI32>,
}

/// How long a stopping shard waits for a cancelled snapshot builder to exit.
const BUILDER_STOP_WAIT: Duration = Duration::from_secs(2);

impl SnapshotBuild {
    /// Cancels the build and waits for its thread, at most `limit`: a builder on idle CPU may
    /// not run at all on a machine other processes keep busy, and a stop must not hang on it.
    /// One left behind cannot put its snapshot in force (it checks `cancel` first) and dies
    /// with the process; at worst it leaves a `.pending` file, which recovery ignores and the
    /// next snapshot in force removes. Whether it exited.
    fn cancel_and_wait(self, limit: Duration) -> bool {
        self.cancel.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + limit;
        while !self.handle.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.handle.join();
        true
    }
}

struct Worker {
    id: usize,
    /// Boot and shard bits of this shard's tokens.
    token_base: u64,
    shard: Shard,
    journal: Journal,
    /// The shard's directory (snapshots and segments).
    dir: std::path::PathBuf,
    jobs: Receiver<Batch>,
    peers: Receiver<Inbound>,
    shared: Shared,
    /// Reply addresses of the requests this shard is deciding, by local slot.
    replies: Vec<Option<Pending>>,
    free: Vec<u64>,
    /// The connections those requests answer to.
    conns: ReplyBook,
    /// Journal records of the batch being decided.
    buf: Vec<u8>,
    /// Outputs of the batch being decided, held until it is committed.
    out: Vec<Output>,
    /// The batch being taken off the queues (kept for its allocation). Requests are boxed
    /// as they are taken (their journal input holds them boxed), so the batch moves pointers.
    peer_batch: Vec<Inbound>,
    /// Each request with its connection's entry in `conns` and its slot on that connection.
    job_batch: Vec<(Box<Request>, u32, u32)>,
    /// This shard's own journal failed: it applies nothing more.
    broken: bool,
    /// Stopping: no new periodic snapshot.
    stopping: bool,
    since_snapshot: u64,
    snapshot: Option<SnapshotBuild>,
    /// A build given up as overdue whose thread has not yet noticed (module docs).
    abandoned: Option<SnapshotBuild>,
    /// The next build runs at nice 10: the last one was given up as overdue.
    urgent_next: bool,
}

fn wall_clock() -> Now {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Now::from_unix_secs(i64::try_from(secs).unwrap_or(i64::MAX))
}

impl Worker {
    fn new(
        shard: Shard,
        journal: Journal,
        boot_bits: u64,
        jobs: Receiver<Batch>,
        peers: Receiver<Inbound>,
        shared: Shared,
    ) -> std::io::Result<Worker> {
        let id = shard.id();
        let dir = journal.dir().to_owned();
        Ok(Worker {
            id,
            token_base: boot_bits | (id as u64) << TOKEN_SHARD_SHIFT,
            shard,
            journal,
            dir,
            jobs,
            peers,
            shared,
            replies: Vec::new(),
            free: Vec::new(),
            conns: ReplyBook::default(),
            buf: Vec::with_capacity(64 * 1024),
            out: Vec::with_capacity(256),
            peer_batch: Vec::with_capacity(PEER_BATCH),
            job_batch: Vec::with_capacity(BATCH),
            broken: false,
            stopping: false,
            since_snapshot: 0,
            snapshot: None,
            abandoned: None,
            urgent_next: false,
        })
    }

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
            // Each batch is taken off its queue first and its map entries warmed
            // (`Shard::warm_request`), then decided.
            let mut peer_batch = std::mem::take(&mut self.peer_batch);
            while peer_batch.len() < PEER_BATCH {
                match self.peers.try_recv() {
                    Ok(msg) => peer_batch.push(msg),
                    Err(_) => break,
                }
            }
            // Apart from the receiving: a channel's atomic operations would wait for each
            // look-up's cache misses, which must overlap.
            for msg in &peer_batch {
                if let Inbound::Peer(m) = msg {
                    self.shard.warm_peer(m);
                }
            }
            did += peer_batch.len();
            for msg in peer_batch.drain(..) {
                self.inbound(now, msg);
            }
            self.peer_batch = peer_batch;
            let mut job_batch = std::mem::take(&mut self.job_batch);
            while jobs_open && job_batch.len() < BATCH {
                match self.jobs.try_recv() {
                    Ok(batch) => self.unpack(batch, &mut job_batch),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => jobs_open = false,
                }
            }
            for (request, _, _) in &job_batch {
                self.shard.warm_request(request);
            }
            let taken = job_batch.len();
            for (request, entry, slot) in job_batch.drain(..) {
                self.take_boxed(now, request, entry, slot);
            }
            self.job_batch = job_batch;
            if let (Some(g), Some(q)) = (
                self.shared.metrics.shard_queue(self.id),
                self.shared.queued.get(self.id),
            ) {
                g.set(q.load(Ordering::Relaxed) as i64);
            }
            // Commit what this pass decided: one write (and fsync) for the whole batch.
            self.submit();
            self.reap_snapshot();
            if did + taken > 0 {
                continue;
            }
            if !jobs_open {
                // No connection can send more. Peers may still need this shard to finish their
                // own decisions: serve them until the switch says stop and the peer channel has
                // been quiet for a moment. (Requests still undecided then have lost their
                // connections; they never finish if a shard failed.)
                match self.peers.recv_timeout(Duration::from_millis(50)) {
                    Ok(msg) => self.inbound(now, msg),
                    Err(RecvTimeoutError::Timeout) if self.shared.stop.load(Ordering::SeqCst) => {
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
                continue;
            }
            // Sleep until there is work.
            self.wait(&mut jobs_open);
        }
        self.stopping = true;
        self.settle();
        // A shutdown snapshot supersedes them; let their files be complete first.
        for build in [self.snapshot.take(), self.abandoned.take()]
            .into_iter()
            .flatten()
        {
            if !build.cancel_and_wait(BUILDER_STOP_WAIT) {
                tracing::warn!(
                    shard = self.id,
                    "a cancelled snapshot builder got no CPU to stop; stopping without it"
                );
            }
        }
        (self.shard, self.journal)
    }

    /// Sleeps until a peer sends something or (when `jobs_open`) a job arrives, and handles
    /// that.
    fn wait(&mut self, jobs_open: &mut bool) {
        let mut sel = Select::new();
        let peer_idx = sel.recv(&self.peers);
        let job_idx = jobs_open.then(|| sel.recv(&self.jobs));
        let op = sel.select();
        let idx = op.index();
        if idx == peer_idx {
            if let Ok(msg) = op.recv(&self.peers) {
                self.inbound(wall_clock(), msg);
            }
        } else if Some(idx) == job_idx {
            match op.recv(&self.jobs) {
                Ok(batch) => self.take_batch(wall_clock(), batch),
                Err(_) => *jobs_open = false,
            }
        }
        // Committed at the top of the loop, with whatever else arrived meanwhile.
    }

    /// Commits everything decided (at shutdown).
    fn settle(&mut self) {
        self.submit();
    }

    /// Journals one input (buffered) and applies it; its outputs wait for the commit.
    fn record(&mut self, input: Input) {
        if self.broken {
            return;
        }
        crate::journal::encode_record(&mut self.buf, &input);
        self.shard.apply(input, &mut self.out);
        self.since_snapshot += 1;
    }

    fn inbound(&mut self, now: Now, msg: Inbound) {
        match msg {
            Inbound::Peer(msg) => self.record(Input::Peer { now, msg }),
            // Durable on the shard that produced it.
            Inbound::Reply { token, response } => self.reply(token, response),
            Inbound::Failed => self.refuse_undecided(),
        }
    }

    /// A batch off the queue: its connection's entry in the reply book, its requests (boxed, as
    /// their journal input holds them) onto `into`.
    fn unpack(&mut self, batch: Batch, into: &mut Vec<(Box<Request>, u32, u32)>) {
        let n = batch.jobs.len();
        if let Some(q) = self.shared.queued.get(self.id) {
            q.fetch_sub(n, Ordering::Relaxed);
        }
        if n == 0 {
            return;
        }
        let entry = self.conns.attach(batch.conn, batch.tx, n as u32);
        into.extend(
            batch
                .jobs
                .into_iter()
                .map(|(slot, request)| (Box::new(request), entry, slot)),
        );
    }

    /// A batch taken outside the batching pass (the shard had been waiting for work).
    fn take_batch(&mut self, now: Now, batch: Batch) {
        let mut jobs = std::mem::take(&mut self.job_batch);
        self.unpack(batch, &mut jobs);
        for (request, entry, slot) in jobs.drain(..) {
            self.take_boxed(now, request, entry, slot);
        }
        self.job_batch = jobs;
    }

    /// One request, as a batch of its own.
    #[cfg(test)]
    fn take(&mut self, now: Now, job: Job) {
        self.take_batch(now, Batch::single(job));
    }

    fn take_boxed(&mut self, now: Now, request: Box<Request>, entry: u32, slot: u32) {
        let response_mti = request.mti.response();
        if self.shared.failed.load(Ordering::Relaxed) {
            // Fail-stop: nothing is decided (or applied) once a journal has failed.
            self.conns.send(
                entry,
                slot,
                Response::plain(response_mti, ResponseCode::SystemMalfunction),
            );
            return;
        }
        let local = match self.free.pop() {
            Some(t) => t,
            None => {
                self.replies.push(None);
                (self.replies.len() - 1) as u64
            }
        };
        if let Some(pending) = self.replies.get_mut(local as usize) {
            *pending = Some(Pending {
                entry,
                slot,
                response_mti,
            });
        }
        let token = self.token_base | local;
        self.record(Input::Request {
            now,
            token,
            request,
        });
    }

    /// Whether the next batch should end the journal segment for a periodic snapshot.
    fn snapshot_due(&self) -> bool {
        !self.broken
            && !self.stopping
            && self.shared.snapshot_every > 0
            && self.since_snapshot >= self.shared.snapshot_every
            && self.snapshot.is_none()
    }

    /// Commits the batch decided so far (one write and, under `--durability fsync`, one
    /// fdatasync), then releases its outputs; on a failure, answers 96 instead and stops
    /// (module docs). At a periodic snapshot's cut, also starts the next journal segment.
    fn submit(&mut self) {
        if self.broken {
            return;
        }
        let rotate = self.snapshot_due();
        if self.buf.is_empty() && !rotate {
            return;
        }
        self.release_durable();
        let started = Instant::now();
        let written = self.journal.write_batch(&self.buf);
        if !self.buf.is_empty() {
            self.shared
                .metrics
                .journal_commit_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        self.buf.clear();
        if let Err(e) = written {
            self.fail(&e);
            return;
        }
        // Committed: publish what this shard has durably taken from each shard, then release
        // the batch's outputs.
        let n = self.shard.shard_count();
        for from in 0..n {
            if let Some(d) = self.shared.durable.get(self.id * n + from) {
                d.store(self.shard.received_seq(from), Ordering::Release);
            }
        }
        let mut out = std::mem::take(&mut self.out);
        self.flush(&mut out);
        self.out = out;
        if rotate {
            self.since_snapshot = 0;
            let sent = (0..n).map(|to| self.shard.sent_seq(to)).collect();
            // A file create and, under fsync, two fsyncs (the file and its directory entry).
            match self.journal.begin_generation() {
                Ok(_) => self.start_snapshot(self.journal.generation(), sent),
                Err(e) => {
                    // The journal goes on in the old segment; nothing is lost.
                    tracing::warn!(shard = self.id, error = %format!("{e:#}"), "starting a journal segment failed; no periodic snapshot");
                }
            }
        }
    }

    /// Starts building the periodic snapshot of `generation` off the shard thread.
    fn start_snapshot(&mut self, generation: u64, sent: Vec<u64>) {
        let cancel = Arc::new(AtomicBool::new(false));
        // The previous build was given up as overdue (or its thread still runs): this one
        // must not wait for an idle core.
        let urgent = std::mem::take(&mut self.urgent_next) || self.abandoned.is_some();
        let build = SnapshotBuilder {
            id: self.id,
            shard_count: self.shard.shard_count(),
            engine: self.shared.engine.clone(),
            dir: self.dir.clone(),
            generation,
            sent,
            durable: self.shared.durable.clone(),
            failed: self.shared.failed.clone(),
            cancel: cancel.clone(),
            urgent,
            tid: Arc::new(AtomicI32::new(0)),
            metrics: self.shared.metrics.clone(),
        };
        let tid = build.tid.clone();
        match std::thread::Builder::new()
            .name(format!("snapshot-{}", self.id))
            .spawn(move || build.run())
        {
            Ok(handle) => {
                self.snapshot = Some(SnapshotBuild {
                    handle,
                    cancel,
                    urgent,
                    tid,
                })
            }
            Err(e) => {
                tracing::warn!(shard = self.id, error = %e, "no thread to build a periodic snapshot")
            }
        }
    }

    /// Forgets a periodic snapshot whose builder is done, so the next one may start; gives up
    /// an idle-priority build that is overdue (module docs).
    fn reap_snapshot(&mut self) {
        if let Some(build) = self.snapshot.take_if(|b| b.handle.is_finished()) {
            if build.handle.join().is_err() {
                tracing::warn!(shard = self.id, "the periodic snapshot builder panicked");
            }
        }
        if let Some(build) = self.abandoned.take_if(|b| b.handle.is_finished()) {
            let _ = build.handle.join();
        }
        let overdue = self.shared.snapshot_every > 0
            && self.since_snapshot >= self.shared.snapshot_every
            && !self.stopping;
        if overdue {
            if let Some(build) = self.snapshot.take_if(|b| !b.urgent) {
                // Its thread exits when it next runs; the next build starts at the next
                // commit (`snapshot_due`), at nice 10.
                build.cancel.store(true, Ordering::SeqCst);
                tracing::warn!(
                    shard = self.id,
                    builder_tid = build.tid.load(Ordering::SeqCst),
                    "periodic snapshot overdue (no idle CPU to build it): given up; the next one is built at nice 10"
                );
                self.abandoned = Some(build);
                self.urgent_next = true;
            }
        }
    }

    /// Fail-stop after a journal write or fsync failed (module docs).
    fn fail(&mut self, error: &std::io::Error) {
        self.shared.metrics.journal_errors.inc();
        tracing::error!(
            shard = self.id,
            dir = %self.dir.display(),
            error = %error,
            "journal write failed: answering 96 and deciding nothing more (fail-stop)"
        );
        self.broken = true;
        self.shared.failed.store(true, Ordering::SeqCst);
        // The failed batch: refused.
        let mut out = std::mem::take(&mut self.out);
        self.buf.clear();
        for output in out.drain(..) {
            if let Output::Reply {
                token, response, ..
            } = output
            {
                let refused = Response::plain(response.mti, ResponseCode::SystemMalfunction);
                self.reply(token, refused);
            }
        }
        self.refuse_undecided();
        // Requests on other shards may wait on a message from this one: they answer 96 too.
        for (to, tx) in self.shared.peer_txs.iter().enumerate() {
            if to != self.id {
                let _ = tx.send(Inbound::Failed);
            }
        }
    }

    /// Answers 96 to every request still being decided here (a journal failed: it might wait
    /// forever on the failed shard). 96 means "outcome unknown": a retransmission after the
    /// restart gets the real answer.
    fn refuse_undecided(&mut self) {
        for (local, slot) in self.replies.iter_mut().enumerate() {
            if let Some(p) = slot.take() {
                self.conns.send(
                    p.entry,
                    p.slot,
                    Response::plain(p.response_mti, ResponseCode::SystemMalfunction),
                );
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
            match self.shared.peer_txs.get(home) {
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
                self.conns.send(p.entry, p.slot, response);
            }
            // Already answered 96 after a journal failure.
            None if self.broken || self.shared.failed.load(Ordering::Relaxed) => {}
            None => tracing::error!(shard = self.id, token, "engine answered an unknown token"),
        }
    }

    /// Delivers the batch's answers that follow from inputs already committed (a decision
    /// from another shard, `Output::Reply::durable`) before this batch's write and fsync:
    /// waiting for this shard's disk too would add nothing to their durability.
    fn release_durable(&mut self) {
        let mut out = std::mem::take(&mut self.out);
        for output in out.extract_if(.., |o| matches!(o, Output::Reply { durable: true, .. })) {
            if let Output::Reply {
                token, response, ..
            } = output
            {
                self.reply(token, response);
            }
        }
        self.out = out;
    }

    /// Delivers what the engine produced (after its batch is committed), emptying `out`.
    fn flush(&mut self, out: &mut Vec<Output>) {
        for output in out.drain(..) {
            match output {
                Output::Reply {
                    token, response, ..
                } => self.reply(token, response),
                Output::ToShard { shard, msg } => match self.shared.peer_txs.get(shard) {
                    Some(tx) => {
                        if tx.send(Inbound::Peer(msg)).is_err() {
                            tracing::error!(shard = self.id, to = shard, "peer shard stopped");
                        }
                    }
                    None => tracing::error!(shard = self.id, to = shard, "no such shard"),
                },
            }
        }
    }
}

/// Builds a periodic snapshot off the shard thread (module docs): rebuilds the shard's state at
/// the start of segment `generation` from the previous snapshot and the closed segments,
/// writes it as `snapshot-<generation>.pending`, waits until every receiver has durably
/// journaled what the shard had sent by then, and puts it in force.
struct SnapshotBuilder {
    id: usize,
    shard_count: usize,
    engine: EngineConfig,
    dir: std::path::PathBuf,
    generation: u64,
    /// What the shard had sent every shard at the cut.
    sent: Vec<u64>,
    durable: Arc<[AtomicU64]>,
    failed: Arc<AtomicBool>,
    cancel: Arc<AtomicBool>,
    /// Nice 10 and resting half the time, instead of `SCHED_IDLE` (module docs).
    urgent: bool,
    tid: Arc<AtomicI32>,
    metrics: Arc<Metrics>,
}

/// Counts a builder in `switch_snapshot_builders` while it lives (a panic included).
struct RunningBuilder(Arc<Metrics>);

impl RunningBuilder {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.snapshot_builders.inc();
        Self(metrics)
    }
}

impl Drop for RunningBuilder {
    fn drop(&mut self) {
        self.0.snapshot_builders.dec();
    }
}

impl SnapshotBuilder {
    fn run(self) {
        let _running = RunningBuilder::new(self.metrics.clone());
        // Replaying millions of records takes a core for seconds; at the shards' priority it
        // starved them on a 2-core machine (measured: open-loop p90 2.2 s at a quarter of
        // saturation while two builders ran). So idle CPU only, or when overdue nice 10 (a
        // tenth of a busy core; nice 19 left snapshots waiting indefinitely under full load).
        let nice_10 = || {
            // The crate maps 0..=99 onto nice 19..=-20; 22 is nice 10.
            ThreadPriorityValue::try_from(22u8)
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    thread_priority::set_current_thread_priority(ThreadPriority::Crossplatform(v))
                        .map_err(|e| e.to_string())
                })
        };
        let idle = || {
            use thread_priority::unix::{
                set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
                ThreadSchedulePolicy,
            };
            set_thread_priority_and_policy(
                thread_native_id(),
                ThreadPriority::Min,
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
            )
            .map_err(|e| e.to_string())
        };
        // Where `SCHED_IDLE` is refused (a seccomp profile), nice 10 as before.
        let on_idle_cpu = !self.urgent
            && idle()
                .map_err(|e| {
                    tracing::warn!(shard = self.id, error = %e, "no SCHED_IDLE for the snapshot builder: nice 10")
                })
                .is_ok();
        if !on_idle_cpu {
            if let Err(e) = nice_10() {
                tracing::warn!(shard = self.id, error = %e, "snapshot builder keeps the shard's priority");
            }
        }
        self.tid
            .store(nix::unistd::gettid().as_raw(), Ordering::SeqCst);
        let started = Instant::now();
        // Off idle CPU it rests as long as it works (at most half a core).
        let outcome = match self.build(started, !on_idle_cpu) {
            Ok(true) => {
                let elapsed = started.elapsed();
                tracing::info!(
                    shard = self.id,
                    generation = self.generation,
                    ?elapsed,
                    "periodic snapshot in force; the journal before it removed"
                );
                self.metrics
                    .snapshot_build_seconds
                    .observe(elapsed.as_secs_f64());
                SnapshotOutcome::InForce
            }
            Ok(false) => {
                tracing::info!(
                    shard = self.id,
                    generation = self.generation,
                    "periodic snapshot abandoned (stopping, overdue, or a journal failed); recovery uses the older one"
                );
                SnapshotOutcome::Abandoned
            }
            Err(e) => {
                tracing::warn!(
                    shard = self.id,
                    generation = self.generation,
                    error = %format!("{e:#}"),
                    "periodic snapshot failed; recovery uses the older one and the journal since"
                );
                SnapshotOutcome::Failed
            }
        };
        self.metrics.snapshot_finished(outcome);
    }

    /// Ok(true): in force; Ok(false): given up (cancelled or a journal failed).
    fn build(&self, started: Instant, rest: bool) -> anyhow::Result<bool> {
        let rebuilt = crate::store::rebuild(
            &self.dir,
            self.id,
            self.shard_count,
            &self.engine,
            self.generation,
            &self.cancel,
            rest,
        );
        let (shard, records) = match rebuilt {
            Ok(r) => r,
            Err(_) if self.cancel.load(Ordering::SeqCst) => return Ok(false),
            Err(e) => return Err(e),
        };
        for (to, &seq) in self.sent.iter().enumerate() {
            let rebuilt = shard.sent_seq(to);
            if rebuilt != seq {
                anyhow::bail!(
                    "the rebuilt state differs from the running shard's: {rebuilt} messages to shard {to} instead of {seq}"
                );
            }
        }
        let mut bytes = Vec::new();
        shard.snapshot(&mut bytes);
        drop(shard);
        let path = crate::journal::pending_snapshot_path(&self.dir, self.generation);
        crate::journal::write_atomic(&path, &bytes)?;
        tracing::info!(
            shard = self.id,
            generation = self.generation,
            records,
            bytes = bytes.len(),
            elapsed = ?started.elapsed(),
            "periodic snapshot built off the shard thread and written; waiting for the receivers"
        );
        drop(bytes);
        let n = self.shard_count;
        loop {
            if self.cancel.load(Ordering::SeqCst) || self.failed.load(Ordering::SeqCst) {
                // Never put in force: not left behind either (recovery ignores it anyway).
                let _ = std::fs::remove_file(&path);
                return Ok(false);
            }
            let covered = self.sent.iter().enumerate().all(|(to, &seq)| {
                self.durable
                    .get(to * n + self.id)
                    .is_some_and(|d| d.load(Ordering::Acquire) >= seq)
            });
            if covered {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        crate::journal::confirm_snapshot(&self.dir, self.generation)?;
        Ok(true)
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
            engine: EngineConfig::default(),
        };
        let (set, threads) = start(loaded, 16, metrics.clone()).expect("start");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (set, threads, metrics, tx, rx)
    }

    /// A connection's read batch: several requests, one queue operation, one reply address;
    /// each answered in its own slot, and the queue gauge back at zero.
    #[test]
    fn a_batch_is_answered_request_by_request() {
        let dir = tempfile::tempdir().expect("tmp");
        let journal = Journal::open(dir.path(), 0, 0, false).expect("journal");
        let (set, threads, metrics, tx, mut rx) = one_shard(journal);
        let conn = connection_id();
        let jobs: Vec<(u32, Request)> = (10..15).map(|stan| (stan + 100, echo(stan))).collect();
        assert!(set
            .submit_batch(
                0,
                Batch {
                    conn,
                    tx: tx.clone(),
                    jobs
                }
            )
            .is_ok());
        let second = vec![(200, echo(20))];
        assert!(set
            .submit_batch(
                0,
                Batch {
                    conn,
                    tx,
                    jobs: second
                }
            )
            .is_ok());
        let mut slots: Vec<u32> = (0..6)
            .map(|_| {
                let (slot, response) = rx.blocking_recv().expect("an answer");
                assert_eq!(response.code, ResponseCode::Approved);
                slot
            })
            .collect();
        slots.sort_unstable();
        assert_eq!(slots, [110, 111, 112, 113, 114, 200]);
        assert_eq!(metrics.shard_queue(0).expect("gauge").get(), 0);
        drop(set);
        threads.join();
    }

    /// A shard's queue is bounded in requests, whatever the batches: a batch that would take
    /// it past its capacity is refused as full (an empty queue takes any batch), and a refused
    /// or undeliverable batch leaves the count as it was.
    #[test]
    fn a_shard_queue_holds_its_capacity_in_requests() {
        // A set over these shard queues, holding 4 requests each.
        let over = |jobs: Vec<Sender<Batch>>| ShardSet {
            queued: jobs.iter().map(|_| AtomicUsize::new(0)).collect(),
            jobs: jobs.into(),
            capacity: 4,
            failed: Arc::new(AtomicBool::new(false)),
        };
        let (tx0, rx0) = channel::bounded(16);
        let (tx1, rx1) = channel::bounded(16);
        let set = over(vec![tx0, tx1]);
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let batch = |n: u32| Batch {
            conn: 1,
            tx: tx.clone(),
            jobs: (0..n).map(|i| (i, echo(i))).collect(),
        };
        assert!(set.submit_batch(0, batch(3)).is_ok());
        assert!(
            matches!(set.submit_batch(0, batch(2)), Err(Rejected::Full(b)) if b.jobs.len() == 2)
        );
        assert!(set.submit_batch(0, batch(1)).is_ok());
        assert_eq!(set.queued[0].load(Ordering::Relaxed), 4);
        assert!(
            set.submit_batch(1, batch(10)).is_ok(),
            "an empty queue takes a large batch"
        );
        assert_eq!(
            rx0.len() + rx1.len(),
            3,
            "batches, not requests, in the channels"
        );
        drop(rx0);
        drop(rx1);
        let (tx2, _) = channel::bounded(16);
        let stopped = over(vec![tx2]);
        assert!(matches!(
            stopped.submit_batch(0, batch(2)),
            Err(Rejected::Stopped(_))
        ));
        assert_eq!(stopped.queued[0].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_reply_book_keeps_one_address_per_connection_until_its_last_answer() {
        let mut book = ReplyBook::default();
        let (tx_a, mut rx_a) = tokio::sync::mpsc::unbounded_channel();
        let (tx_b, mut rx_b) = tokio::sync::mpsc::unbounded_channel();
        let a = book.attach(1, tx_a.clone(), 2);
        assert_eq!(
            book.attach(1, tx_a, 1),
            a,
            "the same connection, the same entry"
        );
        let b = book.attach(2, tx_b, 1);
        assert_ne!(a, b);
        assert_eq!(book.len(), 2);
        let ok = || Response::plain(Mti::new(810).expect("mti"), ResponseCode::Approved);
        book.send(b, 7, ok());
        assert_eq!(rx_b.try_recv().expect("b's answer").0, 7);
        assert_eq!(book.len(), 1, "b had nothing more pending");
        book.send(a, 1, ok());
        book.send(a, 2, ok());
        assert_eq!(book.len(), 1);
        book.send(a, 3, ok());
        assert_eq!(book.len(), 0);
        let got: Vec<u32> = std::iter::from_fn(|| rx_a.try_recv().ok().map(|(s, _)| s)).collect();
        assert_eq!(got, [1, 2, 3]);
        // A freed entry is reused by the next connection; the old one's sender is gone.
        assert!(rx_b.try_recv().is_err());
        let (tx_c, _rx_c) = tokio::sync::mpsc::unbounded_channel();
        let c = book.attach(3, tx_c, 1);
        assert!(c == a || c == b, "a freed index is reused");
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

    /// Demo accounts for the tests over 2 shards.
    fn demo_accounts() -> Vec<routing::data::Account> {
        let (accounts_csv, _) = routing::demo::demo_data(40, 0, 1).expect("demo");
        routing::data::parse_accounts("a.csv", &accounts_csv).expect("parse")
    }

    /// A purchase homed on shard `home` of 2 for `account`, from STAN `from` on.
    fn purchase(account: &routing::data::Account, home: usize, from: u32) -> Request {
        (from..)
            .map(|stan| {
                let mut r = Request::new(
                    Mti::new(200).expect("mti"),
                    stan,
                    1_126_104_500,
                    TerminalId::new(b"TERM0001").expect("tid"),
                );
                r.pan = Some(account.pan);
                r.processing_code = routing::ProcessingCode::from_digits(b"000000");
                r.amount = Some(100);
                r.currency = Some(account.currency);
                r.expiry = Some(account.expiry);
                r
            })
            .find(|r| r.home_shard(2) == home)
            .expect("a request homed there")
    }

    fn card_on(accounts: &[routing::data::Account], shard: usize) -> &routing::data::Account {
        accounts
            .iter()
            .find(|a| routing::placement::shard_for_pan(a.pan.as_bytes(), 2) == shard)
            .expect("a card on that shard")
    }

    fn names(d: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Waits (at most 20 s) until `done`.
    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(20), "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Generation 0 of 2 shards of the demo accounts in `state`; their journals.
    fn two_shards(state: &std::path::Path, fsync: bool) -> (Vec<Shard>, Vec<Journal>) {
        let shards = routing::build_shards(2, &EngineConfig::default(), demo_accounts(), [])
            .expect("shards");
        crate::journal::init_state_from(state, &shards).expect("state");
        let journals = (0..2)
            .map(|i| {
                Journal::open(&crate::journal::shard_dir(state, i), 0, 0, fsync).expect("journal")
            })
            .collect();
        (shards, journals)
    }

    /// Shard 0 of 2 driven by hand (no thread), journal without fsync (written inline).
    fn worker_by_hand(
        state: &std::path::Path,
        durable: Arc<[AtomicU64]>,
    ) -> (Worker, Receiver<Inbound>) {
        let (mut shards, mut journals) = two_shards(state, false);
        let (peer0_tx, peer0_rx) = channel::unbounded();
        let (peer1_tx, peer1_rx) = channel::unbounded();
        let (_job_tx, job_rx) = channel::bounded(1);
        drop(peer0_tx);
        let worker = Worker::new(
            shards.remove(0),
            journals.remove(0),
            1 << TOKEN_BOOT_SHIFT,
            job_rx,
            peer0_rx,
            Shared {
                peer_txs: vec![channel::unbounded().0, peer1_tx].into(),
                queued: (0..2).map(|_| AtomicUsize::new(0)).collect(),
                metrics: Metrics::new(2),
                stop: Arc::new(AtomicBool::new(false)),
                failed: Arc::new(AtomicBool::new(false)),
                durable,
                engine: EngineConfig::default(),
                snapshot_every: 1,
            },
        )
        .expect("worker");
        (worker, peer1_rx)
    }

    /// [`worker_by_hand`] in a new directory, with nothing durable on shard 1 yet; also the
    /// matrix shard 1's progress goes into and shard 0's directory.
    fn fresh_worker_by_hand() -> (
        tempfile::TempDir,
        Arc<[AtomicU64]>,
        Worker,
        Receiver<Inbound>,
        std::path::PathBuf,
    ) {
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        let durable: Arc<[AtomicU64]> = (0..4).map(|_| AtomicU64::new(0)).collect();
        let (w, to_shard_1) = worker_by_hand(&state, durable.clone());
        let sdir = crate::journal::shard_dir(&state, 0);
        (dir, durable, w, to_shard_1, sdir)
    }

    /// A purchase homed on shard 0 whose card lives on shard 1: shard 1's decision, committed
    /// there, is answered as soon as shard 0 applies it, before shard 0's own commit. Shown by
    /// shard 0's journal failing at that commit: the terminal gets the approval (it stands:
    /// shard 1 made it durable), not the 96 of the requests that batch really held.
    #[test]
    fn a_decision_committed_on_the_cards_shard_is_answered_before_the_home_commits() {
        let (dir, _durable, mut w, to_shard_1, _sdir) = fresh_worker_by_hand();
        let accounts = demo_accounts();
        let mut shard_1 = routing::build_shards(2, &EngineConfig::default(), accounts.clone(), [])
            .expect("shards")
            .remove(1);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let now = wall_clock();
        let request = purchase(card_on(&accounts, 1), 0, 1);
        w.take(
            now,
            Job {
                request,
                reply: ReplyTo {
                    tx: tx.clone(),
                    slot: 7,
                },
            },
        );
        w.submit();
        // Committed on shard 0: the authorization went to shard 1, nothing was answered yet.
        assert!(rx.try_recv().is_err());
        let Ok(Inbound::Peer(authorize)) = to_shard_1.try_recv() else {
            panic!("no authorization sent to shard 1");
        };
        let mut out = Vec::new();
        shard_1.apply(
            Input::Peer {
                now,
                msg: authorize,
            },
            &mut out,
        );
        let decided = out
            .into_iter()
            .find_map(|o| match o {
                Output::ToShard { shard: 0, msg } => Some(msg),
                _ => None,
            })
            .expect("shard 1 decides and answers shard 0");
        // Another request in the same batch as the decision: it has no answer before the
        // commit, so the failed commit refuses it.
        w.take(
            now,
            Job {
                request: echo(2),
                reply: ReplyTo {
                    tx: tx.clone(),
                    slot: 2,
                },
            },
        );
        w.inbound(now, Inbound::Peer(decided));
        let failing = dir.path().join("failing");
        std::fs::create_dir(&failing).expect("dir");
        w.journal = Journal::failing_for_tests(&failing);
        w.submit();
        let mut answers = std::collections::BTreeMap::new();
        while let Ok((slot, response)) = rx.try_recv() {
            assert!(
                answers.insert(slot, response).is_none(),
                "two answers for {slot}"
            );
        }
        let approved = &answers[&7];
        assert_eq!(approved.code, ResponseCode::Approved, "{answers:?}");
        assert!(approved.approval_code.is_some(), "{approved:?}");
        assert_eq!(answers[&2].code, ResponseCode::SystemMalfunction);
        assert!(w.broken, "the failed commit still stops the shard");
    }

    #[test]
    fn a_periodic_snapshot_is_built_off_the_shard_and_waits_for_the_receivers() {
        let (_dir, durable, mut w, to_shard_1, sdir) = fresh_worker_by_hand();
        // A purchase decided on shard 0 for a card on shard 1: shard 0 sends 1 a message.
        let accounts = demo_accounts();
        let request = purchase(card_on(&accounts, 1), 0, 1);
        w.record(Input::Request {
            now: wall_clock(),
            token: w.token_base,
            request: Box::new(request),
        });
        w.submit();
        assert!(w.shard.sent_seq(1) > 0, "a message went to shard 1");
        assert!(to_shard_1.try_recv().is_ok(), "released after the commit");
        assert!(w.snapshot.is_some(), "a snapshot is being built");
        // The shard thread only started segment 1; a builder thread writes the snapshot.
        let pending = sdir.join("snapshot-00000000000000000001.pending");
        eventually("snapshot written", || {
            names(&sdir)
                == [
                    "journal-00000000000000000000.log",
                    "journal-00000000000000000001.log",
                    "snapshot-00000000000000000000",
                    "snapshot-00000000000000000001.pending",
                ]
        });
        // Built from the files alone, it is exactly the running shard's state.
        let mut bytes = Vec::new();
        w.shard.snapshot(&mut bytes);
        assert!(std::fs::read(&pending).expect("pending") == bytes, "exact");
        // Not in force while shard 1 has not journaled what shard 0 had sent it.
        std::thread::sleep(Duration::from_millis(50));
        assert!(pending.exists());
        assert!(!w.snapshot.as_ref().is_some_and(|b| b.handle.is_finished()));
        let metrics = w.shared.metrics.clone();
        assert_eq!(metrics.snapshot_builders.get(), 1, "the builder is counted");
        assert!(metrics
            .render()
            .contains("switch_snapshots_total{outcome=\"in_force\"} 0"));
        // Shard 1 has durably journaled everything shard 0 sent it: the snapshot takes over.
        durable[2].store(w.shard.sent_seq(1), Ordering::SeqCst);
        eventually("confirmed", || {
            names(&sdir)
                == [
                    "journal-00000000000000000001.log",
                    "snapshot-00000000000000000001",
                ]
        });
        eventually("builder done", || {
            w.reap_snapshot();
            w.snapshot.is_none()
        });
        assert_eq!(metrics.snapshot_builders.get(), 0);
        let text = metrics.render();
        assert!(
            text.contains("switch_snapshots_total{outcome=\"in_force\"} 1"),
            "{text}"
        );
        assert!(text.contains("switch_snapshot_build_duration_seconds_count 1"));
    }

    /// Scheduling policy (`/proc` field 41: 0 normal, 5 idle) and nice value (field 19) of
    /// the builder's thread, once it has set them.
    fn builder_sched(build: &SnapshotBuild) -> (u32, i32) {
        let mut found = None;
        eventually("the builder runs", || {
            let tid = build.tid.load(Ordering::SeqCst);
            let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"));
            // After the command: field 3 (state) is index 0.
            found = stat.ok().and_then(|stat| {
                let fields: Vec<String> = stat
                    .rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                Some((fields.get(38)?.parse().ok()?, fields.get(16)?.parse().ok()?))
            });
            tid != 0 && found.is_some()
        });
        found.expect("read")
    }

    #[test]
    fn an_overdue_idle_snapshot_is_given_up_and_the_next_built_at_nice_10() {
        const SCHED_IDLE: u32 = 5;
        let (_dir, durable, mut w, to_shard_1, sdir) = fresh_worker_by_hand();
        let accounts = demo_accounts();
        let decide = |w: &mut Worker, from: u32| {
            let request = purchase(card_on(&accounts, 1), 0, from);
            w.record(Input::Request {
                now: wall_clock(),
                token: w.token_base | u64::from(from),
                request: Box::new(request),
            });
            w.submit();
            w.reap_snapshot();
        };
        // A cut (snapshots every record here): the builder waits on idle CPU only. Shard 1
        // never confirms what it received, so the build cannot finish.
        decide(&mut w, 1);
        let first = w.snapshot.as_ref().expect("building");
        assert!(!first.urgent);
        assert_eq!(builder_sched(first).0, SCHED_IDLE, "idle CPU only");
        let first_cancel = first.cancel.clone();
        // The next snapshot falls due while it still runs: given up, and the next cut is
        // built at nice 10 under the normal policy.
        decide(&mut w, 2);
        assert!(
            first_cancel.load(Ordering::SeqCst),
            "the overdue build is cancelled"
        );
        decide(&mut w, 3);
        let second = w.snapshot.as_ref().expect("building again");
        assert!(second.urgent);
        assert_eq!(builder_sched(second), (0, 10), "nice 10");
        assert_eq!(w.journal.generation(), 2, "a new cut");
        // The given-up builder exits; the nice-10 one puts snapshot 2 in force once shard 1
        // has journaled what shard 0 sent.
        eventually("the given-up builder exits", || {
            w.reap_snapshot();
            w.abandoned.is_none()
        });
        let text = w.shared.metrics.render();
        assert!(
            text.contains("switch_snapshots_total{outcome=\"abandoned\"} 1"),
            "{text}"
        );
        while to_shard_1.try_recv().is_ok() {}
        durable[2].store(w.shard.sent_seq(1), Ordering::SeqCst);
        eventually("snapshot 2 in force", || {
            names(&sdir)
                .iter()
                .any(|n| n == "snapshot-00000000000000000002")
        });
        eventually("builder done", || {
            w.reap_snapshot();
            w.snapshot.is_none()
        });
        // Past the overdue one, builds wait for idle CPU again.
        decide(&mut w, 4);
        let third = w.snapshot.as_ref().expect("building a third");
        assert!(!third.urgent);
        assert_eq!(builder_sched(third).0, SCHED_IDLE);
    }

    #[test]
    fn a_stop_does_not_wait_long_for_a_builder_that_does_not_run() {
        // Stands for a builder on idle CPU that gets none: it never looks at `cancel`.
        let (release_tx, release_rx) = channel::bounded::<()>(1);
        let stuck = SnapshotBuild {
            handle: std::thread::spawn(move || {
                let _ = release_rx.recv();
            }),
            cancel: Arc::new(AtomicBool::new(false)),
            urgent: false,
            tid: Arc::new(AtomicI32::new(0)),
        };
        let cancel = stuck.cancel.clone();
        let started = Instant::now();
        assert!(
            !stuck.cancel_and_wait(Duration::from_millis(100)),
            "left behind"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(cancel.load(Ordering::SeqCst), "told to stop");
        drop(release_tx);
        // One that stops when told is waited for.
        let cancel = Arc::new(AtomicBool::new(false));
        let seen = cancel.clone();
        let prompt = SnapshotBuild {
            handle: std::thread::spawn(move || {
                while !seen.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }),
            cancel,
            urgent: false,
            tid: Arc::new(AtomicI32::new(0)),
        };
        assert!(prompt.cancel_and_wait(Duration::from_secs(10)), "exited");
    }

    #[test]
    fn snapshots_in_the_background_while_answering_and_recovery_is_exact() {
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        let (shards, journals) = two_shards(&state, true);
        let loaded = Loaded {
            shards,
            journals,
            boot: 1,
            redeliver: Vec::new(),
            snapshot_every: 40,
            engine: EngineConfig::default(),
        };
        let (set, threads) = start(loaded, 64, Metrics::new(2)).expect("start");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let accounts = demo_accounts();
        let mut stan = 1;
        let mut answered = 0;
        for round in 0..30 {
            // 16 in flight: purchases homed on both shards for cards on both.
            for k in 0..16 {
                let account = &accounts[(round * 16 + k) % accounts.len()];
                let request = purchase(account, k % 2, stan);
                stan = request.stan + 1;
                let job = Job {
                    request,
                    reply: ReplyTo {
                        tx: tx.clone(),
                        slot: 0,
                    },
                };
                assert!(set.submit(job).is_ok(), "queued");
            }
            for _ in 0..16 {
                let (_, r) = rx.blocking_recv().expect("an answer");
                assert_ne!(r.code, ResponseCode::SystemMalfunction);
                answered += 1;
            }
        }
        assert_eq!(answered, 480);
        // Every shard put at least one periodic snapshot in force and removed segment 0.
        for i in 0..2 {
            let sdir = crate::journal::shard_dir(&state, i);
            eventually("a periodic snapshot in force", || {
                let files = names(&sdir);
                !files
                    .iter()
                    .any(|f| f == "journal-00000000000000000000.log")
                    && files
                        .iter()
                        .any(|f| f.starts_with("snapshot-") && !f.ends_with(".pending"))
            });
        }
        // The snapshot waited for above may have been cut after the loop's last batch, leaving
        // no journal after it. More decisions until every shard's newest segment holds some
        // once things settled (a round that triggers a cut is followed by one that does not:
        // a round is far fewer records than `snapshot_every`), so recovery has some to replay.
        let newest_segment_len = |i: usize| {
            let sdir = crate::journal::shard_dir(&state, i);
            let newest = names(&sdir)
                .into_iter()
                .rfind(|f| f.starts_with("journal-"))
                .expect("a journal segment");
            std::fs::metadata(sdir.join(newest)).expect("segment").len()
        };
        for round in 0.. {
            assert!(round < 10, "a journal segment after the snapshots");
            for (k, account) in accounts.iter().take(2).enumerate() {
                let request = purchase(account, k, stan);
                stan = request.stan + 1;
                let reply = ReplyTo {
                    tx: tx.clone(),
                    slot: 0,
                };
                assert!(set.submit(Job { request, reply }).is_ok(), "queued");
                let (_, r) = rx.blocking_recv().expect("an answer");
                assert_ne!(r.code, ResponseCode::SystemMalfunction);
            }
            std::thread::sleep(Duration::from_millis(50));
            eventually("no snapshot pending", || {
                (0..2).all(|i| {
                    !names(&crate::journal::shard_dir(&state, i))
                        .iter()
                        .any(|f| f.ends_with(".pending"))
                })
            });
            if (0..2).all(|i| newest_segment_len(i) > 0) {
                break;
            }
        }
        drop(set);
        // Stop without the shutdown snapshot: a restart recovers from the periodic ones.
        let finished = threads.stop_for_tests();
        let (loaded, replayed) =
            crate::store::recover(&state, 2, &EngineConfig::default(), true, 0).expect("recovers");
        assert!(replayed > 0, "the journal since the snapshots is replayed");
        assert_eq!((finished.len(), loaded.shards.len()), (2, 2));
        for ((shard, _), recovered) in finished.iter().zip(&loaded.shards) {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            shard.snapshot(&mut a);
            recovered.snapshot(&mut b);
            assert!(a == b, "shard {}: recovery is exact", shard.id());
        }
    }

    #[test]
    fn a_request_waiting_on_a_failed_shard_is_answered_96() {
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        let (shards, mut journals) = two_shards(&state, true);
        // Shard 1's disk fails; shard 0's works.
        journals[1] = Journal::failing_for_tests(&crate::journal::shard_dir(&state, 1));
        let metrics = Metrics::new(2);
        let loaded = Loaded {
            shards,
            journals,
            boot: 1,
            redeliver: Vec::new(),
            snapshot_every: 0,
            engine: EngineConfig::default(),
        };
        let (set, threads) = start(loaded, 16, metrics.clone()).expect("start");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Decided on shard 0, which asks shard 1 (the card's): shard 1 fails journaling it.
        let accounts = demo_accounts();
        let job = Job {
            request: purchase(card_on(&accounts, 1), 0, 1),
            reply: ReplyTo { tx, slot: 7 },
        };
        assert!(set.submit(job).is_ok(), "queued");
        let started = Instant::now();
        let (slot, r) = loop {
            match rx.try_recv() {
                Ok(answer) => break answer,
                Err(_) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "the request got no answer"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        assert_eq!(slot, 7);
        assert_eq!(
            (r.mti.value(), r.code),
            (210, ResponseCode::SystemMalfunction)
        );
        assert_eq!(metrics.journal_errors.get(), 1);
        drop(set);
        threads.join();
    }
}
