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

#[cfg(test)]
mod tests {
    use routing::{Mti, Pan, TerminalId};
    use tokio::sync::mpsc;

    use super::*;

    /// A purchase whose card the store maps to worker `worker` of 2.
    fn purchase_on(worker: usize, stan: u32) -> Request {
        let pan = (0u64..)
            .map(|i| Pan::from_digits(format!("4111110000{i:06}").as_bytes()).expect("pan"))
            .find(|p| routing::placement::shard_for_pan(p.as_bytes(), 2) == worker)
            .expect("a card for that worker");
        let mut r = Request::new(
            Mti::new(200).expect("mti"),
            stan,
            1_126_104_500,
            TerminalId::new(b"TERM0001").expect("tid"),
        );
        r.pan = Some(pan);
        r
    }

    fn slots(batch: &Batch) -> Vec<u32> {
        batch.jobs.iter().map(|(slot, _)| *slot).collect()
    }

    /// A batch split over the store's workers: a stopped worker refuses its own requests only
    /// (the others are queued, in order); a full one stops the batch there, the rest given
    /// back to be offered again.
    #[test]
    fn a_batch_for_the_store_is_queued_request_by_request() {
        let (live_tx, mut live_rx) = mpsc::channel(2);
        let (dead_tx, dead_rx) = mpsc::channel(2);
        drop(dead_rx);
        let backend = Backend::Postgres(StoreSet::over_queues(vec![live_tx, dead_tx]));
        let (tx, _rx) = mpsc::unbounded_channel();
        let batch = |jobs| Batch {
            conn: 1,
            tx: tx.clone(),
            jobs,
        };
        let first = batch(vec![
            (1, purchase_on(1, 1)),
            (2, purchase_on(0, 2)),
            (3, purchase_on(1, 3)),
            (4, purchase_on(0, 4)),
        ]);
        match backend.submit_batch(0, first) {
            Err(Rejected::Stopped(refused)) => assert_eq!(slots(&refused), [1, 3]),
            other => panic!("the dead worker's requests refused, not {other:?}"),
        }
        let queued: Vec<u32> = std::iter::from_fn(|| live_rx.try_recv().ok())
            .map(|job| job.reply.slot)
            .collect();
        assert_eq!(queued, [2, 4]);

        // The live worker's queue holds 2: the third request for it and all after it come back.
        let second = batch(vec![
            (5, purchase_on(0, 5)),
            (6, purchase_on(0, 6)),
            (7, purchase_on(0, 7)),
            (8, purchase_on(1, 8)),
        ]);
        match backend.submit_batch(0, second) {
            Err(Rejected::Full(rest)) => assert_eq!(slots(&rest), [7, 8]),
            other => panic!("the rest given back as full, not {other:?}"),
        }
    }
}
