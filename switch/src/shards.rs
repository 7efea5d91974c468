//! Authorization shard threads.
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

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam::channel::{
    self, Receiver, RecvTimeoutError, Select, Sender, TryRecvError, TrySendError,
};
use routing::{Now, Output, PeerMsg, Request, Response, Shard};
use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::Metrics;

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
}

impl ShardSet {
    pub fn count(&self) -> usize {
        self.jobs.len()
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

/// The running shard threads.
#[derive(Debug)]
pub struct ShardThreads {
    handles: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl ShardThreads {
    /// Stops the shard threads and waits for them. Call once every `ShardSet` clone is dropped
    /// (no connection can submit) so each thread finishes what it holds first.
    pub fn join(self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles {
            if h.join().is_err() {
                tracing::error!("a shard thread panicked");
            }
        }
    }
}

/// How many jobs a shard takes from its queue before looking at its peers again.
const BATCH: usize = 256;

/// Starts one thread per shard.
pub fn start(
    shards: Vec<Shard>,
    queue_capacity: usize,
    metrics: Arc<Metrics>,
) -> std::io::Result<(ShardSet, ShardThreads)> {
    let n = shards.len();
    let (job_txs, job_rxs): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| channel::bounded::<Job>(queue_capacity))
        .unzip();
    let (peer_txs, peer_rxs): (Vec<_>, Vec<_>) =
        (0..n).map(|_| channel::unbounded::<Inbound>()).unzip();
    let peer_txs: Arc<[Sender<Inbound>]> = peer_txs.into();
    let mut handles = Vec::with_capacity(n);
    let stop = Arc::new(AtomicBool::new(false));
    for ((shard, jobs), peers) in shards.into_iter().zip(job_rxs).zip(peer_rxs) {
        let worker = Worker {
            id: shard.id(),
            shard,
            jobs,
            peers,
            peer_txs: peer_txs.clone(),
            replies: Vec::new(),
            free: Vec::new(),
            out: Vec::with_capacity(64),
            metrics: metrics.clone(),
            stop: stop.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("shard-{}", worker.id))
            .spawn(move || worker.run())?;
        handles.push(handle);
    }
    Ok((
        ShardSet {
            jobs: job_txs.into(),
        },
        ShardThreads { handles, stop },
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

/// Bits of a token below the submitting shard's id.
const TOKEN_SHARD_SHIFT: u32 = 40;

struct Worker {
    id: usize,
    shard: Shard,
    jobs: Receiver<Job>,
    peers: Receiver<Inbound>,
    peer_txs: Arc<[Sender<Inbound>]>,
    /// Reply addresses of the requests this shard is deciding, by token.
    replies: Vec<Option<ReplyTo>>,
    free: Vec<u64>,
    out: Vec<Output>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
}

fn wall_clock() -> Now {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Now::from_unix_secs(i64::try_from(secs).unwrap_or(i64::MAX))
}

impl Worker {
    fn run(mut self) {
        let mut jobs_open = true;
        let mut next_purge = wall_clock().plus_secs(PURGE_EVERY_SECS);
        loop {
            // Peers first: their messages finish decisions already under way.
            let now = wall_clock();
            if now >= next_purge {
                // Keys older than the idempotency window; bounded memory on a long run.
                let purged = self.shard.purge_expired(now);
                if purged > 0 {
                    tracing::debug!(
                        shard = self.id,
                        purged,
                        "expired idempotency records purged"
                    );
                }
                next_purge = now.plus_secs(PURGE_EVERY_SECS);
            }
            let mut did = 0;
            while let Ok(msg) = self.peers.try_recv() {
                self.inbound(now, msg);
                did += 1;
            }
            while jobs_open && did < BATCH {
                match self.jobs.try_recv() {
                    Ok(job) => {
                        self.take(now, job);
                        did += 1;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => jobs_open = false,
                }
            }
            if let Some(g) = self.metrics.shard_queue(self.id) {
                g.set(self.jobs.len() as i64);
            }
            if did > 0 {
                continue;
            }
            if !jobs_open && self.replies.iter().all(Option::is_none) {
                // No connection can send more and nothing is being decided here. Peers may
                // still need this shard to finish their own decisions: serve them until the
                // switch says stop and the peer channel has been quiet for a moment.
                match self.peers.recv_timeout(Duration::from_millis(50)) {
                    Ok(msg) => self.inbound(now, msg),
                    Err(RecvTimeoutError::Timeout) if self.stop.load(Ordering::SeqCst) => return,
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
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
        }
    }

    fn inbound(&mut self, now: Now, msg: Inbound) {
        match msg {
            Inbound::Peer(msg) => {
                self.shard.handle_peer(now, msg, &mut self.out);
                self.flush();
            }
            Inbound::Reply { token, response } => self.reply(token, response),
        }
    }

    fn take(&mut self, now: Now, job: Job) {
        let local = match self.free.pop() {
            Some(t) => t,
            None => {
                self.replies.push(None);
                (self.replies.len() - 1) as u64
            }
        };
        if let Some(slot) = self.replies.get_mut(local as usize) {
            *slot = Some(job.reply);
        }
        let token = (self.id as u64) << TOKEN_SHARD_SHIFT | local;
        self.shard
            .handle_request(now, token, job.request, &mut self.out);
        self.flush();
    }

    /// Sends an answer to its connection, or to the shard that holds its reply address.
    fn reply(&mut self, token: u64, response: Response) {
        let home = (token >> TOKEN_SHARD_SHIFT) as usize;
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
            Some(reply) => {
                self.free.push(local);
                // The connection may be gone; its answer then has no reader.
                let _ = reply.tx.send((reply.slot, response));
            }
            None => tracing::error!(shard = self.id, token, "engine answered an unknown token"),
        }
    }

    /// Delivers what the engine produced.
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
