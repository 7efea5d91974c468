//! Where connection tasks send requests to be decided: the embedded store's shard threads
//! ([`crate::shards`]) or the PostgreSQL store's workers ([`crate::pg`]). Both take the same
//! [`Job`] and answer on the job's reply channel.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::pg::StoreSet;
use crate::shards::{Job, Rejected, ShardSet};

/// The connection side's handle on whichever decides.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Shard threads with their journals (the default).
    Embedded(ShardSet),
    /// Store workers over PostgreSQL (`--store`).
    Postgres(StoreSet),
}

impl Backend {
    /// Queues a request; `Rejected::Full` asks the caller to retry shortly.
    #[allow(clippy::result_large_err)]
    pub fn submit(&self, job: Job) -> Result<(), Rejected> {
        match self {
            Self::Embedded(s) => s.submit(job),
            Self::Postgres(s) => s.submit(job),
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
