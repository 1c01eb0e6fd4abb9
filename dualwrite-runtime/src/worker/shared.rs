//! What every clone of a wrapper, its write path and its workers share: the
//! queue, the order guards, the settings, the follower's circuit breakers,
//! and the in-process records of withdrawn and uncertain writes. The
//! wrapper builds it; the worker, below the wrapper, owns its definition.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::RetryPolicy;
use crate::observe::Observers;
use crate::queue::ReconciliationQueue;
use crate::read::Reads;
use crate::stage::StageHandle;
use crate::vocabulary::Delivery;

/// What every clone of a wrapper, and its workers, share.
pub(crate) struct Shared {
    pub(crate) stage: StageHandle,
    pub(crate) queue: Arc<dyn ReconciliationQueue>,
    pub(crate) locks: Arc<crate::order::KeyLocks>,
    pub(crate) follower_timeout: Duration,
    pub(crate) delivery: Delivery,
    pub(crate) orphan_after: Duration,
    /// A journaled write waits for its entry's confirmation before it
    /// returns (else the confirmation runs after, still holding the key).
    pub(crate) confirm_before_return: bool,
    pub(crate) breakers: super::breaker::Breakers,
    pub(crate) retry: RetryPolicy,
    pub(crate) worker_concurrency: usize,
    pub(crate) lease: Duration,
    pub(crate) poll_interval: Duration,
    /// Woken when an operation is queued, so an idle worker starts at once.
    pub(crate) queued: Notify,
    /// Follower writes lost because the queue refused them (fail-open).
    pub(crate) drift: AtomicU64,
    /// Show keys in logs and errors as written, not by fingerprint.
    pub(crate) log_keys: bool,
    /// Written-ahead entries whose authoritative write failed but which the
    /// queue would not remove yet: never to be replayed.
    pub(crate) withdrawals: Withdrawals,
    /// Writes whose authoritative outcome is unknown until the worker
    /// settles them (see `uncertain.rs`).
    pub(crate) uncertain: super::uncertain_writes::Uncertain,
    /// Whether a worker has run in this process (a write then waits longer
    /// for an uncertain write to be settled).
    pub(crate) workers_started: std::sync::atomic::AtomicBool,
    /// Read comparison settings, their permits and the observers.
    pub(crate) reads: Arc<Reads>,
    /// The record stores key-level sync entries are applied with, by name.
    pub(crate) records: crate::records::RecordSyncs,
    /// The cross-instance mode: writes queue key-level syncs for the
    /// follower instead of calling it.
    pub(crate) key_sync: Option<crate::records::KeySync>,
}

/// Entries marked withdrawn in this process (see [`WriteGuard::abort`]).
#[derive(Debug, Default)]
pub(crate) struct Withdrawals {
    ids: std::sync::Mutex<std::collections::BTreeSet<crate::queue::EntryId>>,
}

impl Withdrawals {
    fn ids(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<crate::queue::EntryId>> {
        self.ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn mark(&self, id: crate::queue::EntryId) {
        self.ids().insert(id);
    }

    pub(crate) fn contains(&self, id: crate::queue::EntryId) -> bool {
        self.ids().contains(&id)
    }

    pub(crate) fn clear(&self, id: crate::queue::EntryId) {
        self.ids().remove(&id);
    }

    pub(crate) fn all(&self) -> Vec<crate::queue::EntryId> {
        self.ids().iter().copied().collect()
    }
}

impl Shared {
    /// The wrapper's observers (for dead letters: see
    /// [`Observers::dead_letter`]).
    pub(crate) fn observers(&self) -> &Observers {
        &self.reads.observers
    }
}
