//! The scale-out store: accounts, orders, holds, idempotency records and the ledger in
//! PostgreSQL, shared by every replica started with the same `--store` (issue 6).
//!
//! # How a decision is made
//!
//! Each replica runs `--shards` store workers (default 1), tokio tasks each with one database
//! connection. A connection task submits a request to the worker its card maps to, so that
//! one replica's requests for one card queue behind each other instead of contending in the
//! database. A worker takes everything queued (up to [`MAX_BATCH`]) as one batch and runs it
//! as one database transaction, in two round trips:
//!
//! 1. `BEGIN`, then the rows the batch reads ([`routing::BatchKeys`]) with `SELECT ... FOR
//!    UPDATE`: accounts, the records of the transactions completions and reversals act on,
//!    orders (those the requests name and those the records' slots hold), and a block of
//!    approval codes. The
//!    statements are pipelined: one round trip. Accounts are locked with `SKIP LOCKED`: a card
//!    that another transaction (on this replica or another) holds right now is not waited
//!    for; its requests are deferred to the worker's next batch, ahead of newer ones. Without
//!    this, batches of a few hundred random cards nearly always share a card with a batch of
//!    another replica and would run one after the other, each waiting for the other's
//!    commit.
//! 2. The rows go into a one-shard working set of the routing engine
//!    ([`routing::Shard::working_set`]), which decides every request with the same code as the
//!    embedded store. The rows that changed are written back (`UPDATE ... FROM unnest(...)`,
//!    new entries by plain `INSERT`), one ledger row per changed account is appended, and
//!    `COMMIT` follows in the same pipeline: the second round trip. Answers leave only after
//!    the commit succeeded, so an answer is never ahead of the database (group commit: one
//!    fsync of PostgreSQL's WAL covers the whole batch).
//!
//! **Records.** Since schema version 3 one `records` row per transaction identity (41, 11,
//! 7) holds both what the engine keeps under that identity: its slot (a hold, a purchase,
//! both when a 0100 and a 0200 share the identity, a late-original marker) and the answers
//! given to requests with that identity (their idempotency entries; the idempotency key is
//! the MTI followed by the identity, usually one answer per row). A purchase therefore
//! writes one row and one primary-key entry, not two.
//! A row's `expires_at` is the latest expiry of its parts (`NULL` while its slot is an open
//! hold), so an answer stays replayable as long as its row: never shorter than the engine's
//! window.
//!
//! **Optimistic first attempt.** Nearly every request carries a new transaction identity,
//! and looking each up only to find nothing was a fifth of the database's work. So a batch
//! first runs *optimistically*: it reads only the records of completion and reversal
//! targets, the engine takes every other identity as new, and the plain `INSERT`s of round
//! trip 2 prove it: if one of those records exists after all (a retransmission, a late
//! original, a record another batch just created) the primary key refuses it, the whole
//! transaction rolls back, and the batch runs again reading every record it may write, as
//! before. After a batch that found such a key the worker stays pessimistic until a batch
//! finds none, so a burst of retransmissions costs one extra attempt, not one per batch.
//!
//! **Cards not returned.** `SKIP LOCKED` cannot tell a card locked elsewhere from a card that
//! does not exist. Rather than look every card up a second time, a request whose card was not
//! returned waits for the next batch, and this batch's round trip 2 asks which of those cards
//! exist (`SELECT pan`, before `COMMIT`). In the next batch a card found missing is answered
//! as unknown (14) if it is still not returned; one found existing keeps waiting for its lock.
//! An unknown card therefore costs one extra batch of latency; a card imported in between is
//! seen as soon as a batch locks it.
//!
//! # Why this is correct with several replicas (isolation argument)
//!
//! The transactions run under PostgreSQL's default READ COMMITTED isolation and rely on row
//! locks and unique keys only:
//!
//! - Every existing row a batch decides on is locked (`FOR UPDATE`) before it is read, and
//!   stays locked until the batch commits. A decision therefore sees the latest committed
//!   version of each account, order and target slot it touches, and no other batch (on any
//!   replica) can change them until it committed: no overdraft, no order paid twice, one
//!   daily limit per card.
//! - A row a batch takes as new (every key of an optimistic attempt that it does not read, and
//!   any key a pessimistic read did not find) cannot be locked. Its `INSERT` is the check:
//!   the primary key lets only one transaction commit a key, and a batch whose key exists, or
//!   is being inserted by another transaction (it waits for that one to end), fails with a
//!   unique violation, rolls back, and is retried from the start reading every key: it then
//!   reads the winner's row and answers as the engine does for a known key (the original
//!   answer, 94, or 05 after a reversal marker). A retransmission to any replica therefore
//!   gets the original answer, and nothing is applied twice.
//! - Accounts are never waited for (`SKIP LOCKED`; a request whose card was not locked is
//!   deferred, never decided without its row, unless its card was just found not to exist).
//!   The other rows are locked in one global order (records, then orders, each sorted by
//!   key; inserts sorted too), so two batches never wait on each other in a cycle.
//!   A deadlock or serialization failure (40P01, 40001) is retried anyway, up to
//!   [`MAX_ATTEMPTS`] times. A request deferred for longer than `store_timeout_ms` is
//!   answered 96, nothing applied.
//! - Read-after-write across replicas: an answer leaves after its commit, and a later balance
//!   inquiry on any replica locks and reads the committed row.
//!
//! # Failures
//!
//! A database that cannot be reached within `store_timeout_ms` (default 2 s) answers the
//! batch 96, and `/readyz` answers 503 until a probe reaches it again. A connection lost while
//! `COMMIT` was in flight leaves the outcome unknown: the batch is retried on a new
//! connection while time is left, and the retry finds the committed entries (and replays
//! their answers) or decides afresh; if time runs out the answer is 96, "outcome unknown",
//! and a retransmission later returns the real answer.
//!
//! # Other databases
//!
//! The SQL is plain PostgreSQL 15 (`unnest`, `FOR UPDATE`, a sequence, an advisory lock for
//! migrations) and is meant to run on PostgreSQL-compatible distributed databases too; what
//! differs there is in the README ("Scale-out").

mod import;
mod schema;
mod tls;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use import::import;
pub use schema::migrate;

use crate::metrics::Metrics;
use crate::shards::{Job, Rejected};

/// Largest batch one transaction decides (approval-code blocks are this wide).
pub const MAX_BATCH: usize = 1024;
/// Attempts of one batch after conflicts with other replicas before it is answered 96.
pub const MAX_ATTEMPTS: u32 = 16;

/// A parsed `--store`: the connection settings, and whether the server's certificate is
/// verified.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pg: tokio_postgres::Config,
    /// `sslmode=verify-ca` / `verify-full`: check the certificate against the system's roots
    /// (and the host name). libpq's `prefer` and `require` encrypt without checking it, and so
    /// does the switch.
    verify: bool,
}

/// Parses a store URL (`postgres://...` or libpq `key=value`); `PGPASSWORD` supplies a
/// password the URL lacks. `sslmode` is libpq's: `disable`, `prefer` (the default),
/// `require`, `verify-ca`, `verify-full`.
pub fn parse_url(url: &str) -> anyhow::Result<StoreConfig> {
    // tokio-postgres knows disable/prefer/require; the verifying modes are require plus a
    // verifying TLS connector.
    let mut verify = false;
    let mut text = url.to_owned();
    for mode in ["verify-full", "verify-ca"] {
        let key = format!("sslmode={mode}");
        if text.contains(&key) {
            verify = true;
            text = text.replace(&key, "sslmode=require");
        }
    }
    let mut pg: tokio_postgres::Config = text
        .parse()
        .map_err(|e| anyhow::anyhow!("not a PostgreSQL URL or connection string: {e}"))?;
    if pg.get_password().is_none() {
        if let Ok(pw) = std::env::var("PGPASSWORD") {
            pg.password(pw);
        }
    }
    if pg.get_application_name().is_none() {
        pg.application_name("iso8583-switch");
    }
    Ok(StoreConfig { pg, verify })
}

/// Opens one connection (TLS as `sslmode` says) and drives it on a task.
pub async fn connect(config: &StoreConfig) -> anyhow::Result<tokio_postgres::Client> {
    let tls = tls::connector(config.verify)?;
    let (client, connection) = config
        .pg
        .connect(tls)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the PostgreSQL store: {}", describe(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// A database error as logged and shown: its SQLSTATE and message, never its DETAIL (which
/// can quote a row: a card number in a unique violation, say).
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// `e` with any database error in its chain replaced by [`describe`]: safe to print with
/// `{:#}`.
pub fn scrub(e: anyhow::Error) -> anyhow::Error {
    match e
        .chain()
        .find_map(|c| c.downcast_ref::<tokio_postgres::Error>())
    {
        Some(pg) => anyhow::anyhow!("{e}: {}", describe(pg)),
        None => e,
    }
}

/// The connection side's handle on the store workers.
#[derive(Debug, Clone)]
pub struct StoreSet {
    jobs: Arc<[mpsc::Sender<Job>]>,
    unreachable: Arc<AtomicBool>,
}

impl StoreSet {
    /// Queues a request on the worker its card maps to.
    #[allow(clippy::result_large_err)]
    pub fn submit(&self, job: Job) -> Result<(), Rejected> {
        let n = self.jobs.len();
        let i = match job.request.pan {
            Some(pan) => routing::placement::shard_for_pan(pan.as_bytes(), n),
            None => job.request.home_shard(n),
        };
        let Some(tx) = self.jobs.get(i) else {
            return Err(Rejected::Stopped(job));
        };
        tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(job) => Rejected::Full(job),
            mpsc::error::TrySendError::Closed(job) => Rejected::Stopped(job),
        })
    }

    /// Raised while the database cannot be reached (readiness answers 503).
    pub fn unreachable_flag(&self) -> Arc<AtomicBool> {
        self.unreachable.clone()
    }

    /// A set over these worker queues, without workers or a database.
    #[cfg(test)]
    pub(crate) fn over_queues(jobs: Vec<mpsc::Sender<Job>>) -> StoreSet {
        StoreSet {
            jobs: jobs.into(),
            unreachable: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// The running workers and the probe.
#[derive(Debug)]
pub struct StoreWorkers {
    workers: Vec<JoinHandle<()>>,
    probe: JoinHandle<()>,
}

impl StoreWorkers {
    /// Waits for the workers to finish what they hold. Call once every `StoreSet` clone is
    /// dropped.
    pub async fn join(self) {
        for w in self.workers {
            let _ = w.await;
        }
        self.probe.abort();
    }
}

/// Migrates the schema, then starts `workers` store workers and the reachability probe.
pub async fn start(
    url: &str,
    workers: usize,
    queue_capacity: usize,
    timeout: Duration,
    engine: routing::EngineConfig,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(StoreSet, StoreWorkers)> {
    let config = parse_url(url)?;
    let client = tokio::time::timeout(timeout.max(Duration::from_secs(10)), connect(&config))
        .await
        .context("connecting to the PostgreSQL store: timed out")?
        .map_err(scrub)?;
    migrate(&client).await?;
    let unreachable = Arc::new(AtomicBool::new(false));
    let mut txs = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for id in 0..workers.max(1) {
        let (tx, rx) = mpsc::channel(queue_capacity);
        txs.push(tx);
        let w = worker::Worker::new(
            id,
            config.clone(),
            rx,
            timeout,
            engine.clone(),
            metrics.clone(),
            unreachable.clone(),
        );
        handles.push(tokio::spawn(w.run()));
    }
    let probe = tokio::spawn(schema::probe(config, client, unreachable.clone()));
    Ok((
        StoreSet {
            jobs: txs.into(),
            unreachable,
        },
        StoreWorkers {
            workers: handles,
            probe,
        },
    ))
}

/// Marks the database reachable or not (logging the change once).
fn set_unreachable(flag: &AtomicBool, down: bool) {
    if flag.swap(down, Ordering::Relaxed) != down {
        if down {
            tracing::error!("PostgreSQL store unreachable: answering 96, /readyz 503");
        } else {
            tracing::info!("PostgreSQL store reachable again");
        }
    }
}
