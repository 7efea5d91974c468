//! Where connection tasks send requests to be decided: the embedded store's shard threads
//! ([`crate::shards`]) or the PostgreSQL store's workers ([`crate::pg`]). Both take the same
//! [`Job`] and answer on the job's reply channel.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use routing::Request;

use crate::pg::StoreSet;
use crate::shards::{Batch, Job, Rejected, ReplyTo, ShardSet};

/// The connection side's handle on whichever decides.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Shard threads with their journals (the default).
    Embedded(ShardSet),
    /// Store workers over PostgreSQL (`--store`).
    Postgres(StoreSet),
}

impl Backend {
    /// How many queues a connection batches its requests for.
    pub fn queues(&self) -> usize {
        match self {
            Self::Embedded(s) => s.count(),
            // Each request is queued on its own (`submit_batch`).
            Self::Postgres(_) => 1,
        }
    }

    /// The queue a request's batch goes to (below [`Backend::queues`]).
    pub fn queue_of(&self, request: &Request) -> usize {
        match self {
            Self::Embedded(s) => s.shard_of(request),
            Self::Postgres(_) => 0,
        }
    }

    /// Queues a connection's batch for queue `queue`; `Rejected::Full` gives back what was
    /// not queued, to retry shortly.
    pub fn submit_batch(&self, queue: usize, batch: Batch) -> Result<(), Rejected<Batch>> {
        match self {
            Self::Embedded(s) => s.submit_batch(queue, batch),
            // The store's workers take single jobs (their own batching is per database
            // transaction), each on the worker its card maps to. A stopped worker refuses
            // only its own jobs; a full one stops the batch there, its rest (and the refused
            // ones) offered again later.
            Self::Postgres(s) => {
                let Batch { conn, tx, jobs } = batch;
                let mut refused = Vec::new();
                let mut jobs = jobs.into_iter();
                while let Some((slot, request)) = jobs.next() {
                    let reply = ReplyTo {
                        tx: tx.clone(),
                        slot,
                    };
                    match s.submit(Job { request, reply }) {
                        Ok(()) => {}
                        Err(Rejected::Stopped(job)) => refused.push((job.reply.slot, job.request)),
                        Err(Rejected::Full(job)) => {
                            refused.push((job.reply.slot, job.request));
                            refused.extend(jobs);
                            return Err(Rejected::Full(Batch {
                                conn,
                                tx,
                                jobs: refused,
                            }));
                        }
                    }
                }
                if refused.is_empty() {
                    Ok(())
                } else {
                    Err(Rejected::Stopped(Batch {
                        conn,
                        tx,
                        jobs: refused,
                    }))
                }
            }
        }
    }

    /// Raised while this switch cannot decide (a failed journal; an unreachable database):
    /// `/readyz` answers 503 meanwhile.
    pub fn unavailable_flag(&self) -> Arc<AtomicBool> {
        match self {
            Self::Embedded(s) => s.failure_flag(),
            Self::Postgres(s) => s.unreachable_flag(),
        }
    }
}
