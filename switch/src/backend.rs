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
            // transaction), each on the worker its card maps to.
            Self::Postgres(s) => {
                let Batch { conn, tx, jobs } = batch;
                let mut jobs = jobs.into_iter();
                while let Some((slot, request)) = jobs.next() {
                    let reply = ReplyTo {
                        tx: tx.clone(),
                        slot,
                    };
                    let rest = |job: Job, jobs: std::vec::IntoIter<(u32, Request)>| Batch {
                        conn,
                        tx: job.reply.tx.clone(),
                        jobs: std::iter::once((job.reply.slot, job.request))
                            .chain(jobs)
                            .collect(),
                    };
                    match s.submit(Job { request, reply }) {
                        Ok(()) => {}
                        Err(Rejected::Full(job)) => return Err(Rejected::Full(rest(job, jobs))),
                        Err(Rejected::Stopped(job)) => {
                            return Err(Rejected::Stopped(rest(job, jobs)))
                        }
                    }
                }
                Ok(())
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
