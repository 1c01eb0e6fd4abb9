//! The [`DualWrite`] wrapper and its [`Builder`].

mod breaker;
mod builder;
mod uncertain;
mod write;

pub use breaker::CircuitBreaker;
pub use builder::Builder;
pub use write::{FollowerPlan, QueueRefused, WriteGuard};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::observe::Observers;
use crate::op::{Key, Replay};
use crate::queue::{QueueError, QueueStats, ReconciliationQueue};
use crate::read::{ReadPlan, Reads};
use crate::stage::{Side, StageHandle};
use crate::worker::{RetryPolicy, Worker};

/// How a write reaches the follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// The follower is called in the request, with the follower timeout; on
    /// error, timeout or panic the operation is queued. Write latency is both
    /// stores' latency (the follower's bounded by the timeout).
    #[default]
    Sync,
    /// The operation is appended to the queue before the call returns and the
    /// worker applies it; the caller never waits for the follower. Write
    /// latency is the authoritative write plus one queue append (group
    /// committed by durable queues).
    Journaled,
}

/// Two implementations of one repository trait, used as one.
///
/// `#[dual_write]` on a trait generates `impl Trait for DualWrite<Old, New>`
/// (where both `Old` and `New` implement it): writes go to the authoritative
/// store and then the follower, reads go to the serving store, as the
/// current [`Stage`](crate::Stage) says. Build one with
/// [`DualWrite::builder`].
///
/// Cheap to clone (clones share the stores, the queue and the stage) and
/// `Send + Sync` when both stores are.
pub struct DualWrite<Old, New> {
    old: Arc<Old>,
    new: Arc<New>,
    shared: Arc<Shared>,
}

/// What every clone of a wrapper, and its workers, share.
pub(crate) struct Shared {
    pub(crate) stage: StageHandle,
    pub(crate) queue: Arc<dyn ReconciliationQueue>,
    pub(crate) locks: Arc<crate::order::KeyLocks>,
    pub(crate) follower_timeout: Duration,
    pub(crate) delivery: Delivery,
    pub(crate) orphan_after: Duration,
    pub(crate) breakers: breaker::Breakers,
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
    pub(crate) uncertain: uncertain::Uncertain,
    /// Whether a worker has run in this process (a write then waits longer
    /// for an uncertain write to be settled).
    pub(crate) workers_started: std::sync::atomic::AtomicBool,
    /// Read comparison settings, their permits and the observers.
    pub(crate) reads: Arc<Reads>,
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

impl<Old, New> Clone for DualWrite<Old, New> {
    fn clone(&self) -> Self {
        DualWrite {
            old: Arc::clone(&self.old),
            new: Arc::clone(&self.new),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Old, New> std::fmt::Debug for DualWrite<Old, New> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DualWrite")
            .field("stage", &self.shared.stage.get())
            .field("follower_timeout", &self.shared.follower_timeout)
            .finish_non_exhaustive()
    }
}

impl<Old, New> DualWrite<Old, New> {
    /// Starts building a wrapper around the store the data lives in today
    /// (`old`) and the one it is moving to (`new`).
    pub fn builder(old: Old, new: New) -> Builder<Old, New> {
        Builder::new(old, new)
    }

    /// The old store.
    pub fn old_store(&self) -> &Old {
        &self.old
    }

    /// The new store.
    pub fn new_store(&self) -> &New {
        &self.new
    }

    /// The stage handle: read or change the stage of every wrapper sharing it.
    pub fn stage(&self) -> &StageHandle {
        &self.shared.stage
    }

    /// The reconciliation queue, to inspect stats or handle dead letters.
    pub fn queue(&self) -> &Arc<dyn ReconciliationQueue> {
        &self.shared.queue
    }

    /// How many follower writes were lost because the queue refused them
    /// (the fail-open policy). Anything above zero needs a verify-and-repair
    /// pass over the affected keys; each loss was also logged at error level
    /// with its key.
    pub fn drift_count(&self) -> u64 {
        self.shared.drift.load(Ordering::Relaxed)
    }

    /// Reads the queue's stats and sets the queue gauges
    /// (`dualwrite_queue_depth`, `dualwrite_queue_oldest_pending_seconds`;
    /// see [`observe`](crate::observe)). Call it periodically, for example
    /// from the task that scrapes or pushes metrics.
    ///
    /// # Errors
    ///
    /// The queue's error if its stats cannot be read; the gauges keep their
    /// last values.
    pub async fn record_queue_metrics(&self) -> Result<QueueStats, QueueError> {
        let stats = self.shared.queue.stats().await?;
        crate::observe::record_queue(&stats);
        Ok(stats)
    }

    /// A reconciliation worker for the operations of one trait (the enum
    /// `#[dual_write]` generated, `<Trait>Op` unless renamed).
    ///
    /// Run it with [`Worker::run`], usually in its own task:
    ///
    /// ```ignore
    /// let worker = repo.worker::<OrderRepositoryOp>();
    /// let stop = worker.stopper();
    /// let task = tokio::spawn(async move { worker.run().await });
    /// // ...
    /// stop.stop();
    /// task.await??;
    /// ```
    pub fn worker<Op>(&self) -> Worker<Op, Old, New>
    where
        Op: Replay<Old> + Replay<New>,
    {
        Worker::new(
            Arc::clone(&self.old),
            Arc::clone(&self.new),
            Arc::clone(&self.shared),
        )
    }

    /// Graceful shutdown of the write path: waits until every write in
    /// progress has finished, including the queueing that cancelled writes
    /// left to background tasks, tries once more to remove entries marked
    /// withdrawn, then waits until everything acknowledged is durable in the
    /// queue ([`ReconciliationQueue::flush`]). Call it after the service has
    /// stopped taking requests and before the process exits; with
    /// [`WorkerHandle::shutdown`](crate::WorkerHandle::shutdown) for the workers.
    ///
    /// Writes that start while it waits wait for it; writes after it returns
    /// work as before.
    ///
    /// # Errors
    ///
    /// The queue's error if it could not make the queued work durable; the
    /// operations may then be lost with the process.
    ///
    /// # Cancel safety
    ///
    /// Cancelling it stops the wait; nothing is lost by that.
    pub async fn shutdown(&self) -> Result<(), QueueError> {
        {
            let _quiet = self.shared.stage.quiesce_writes().await;
        }
        for id in self.shared.withdrawals.all() {
            match self.shared.queue.abort(id).await {
                Ok(()) => self.shared.withdrawals.clear(id),
                Err(error) => {
                    tracing::error!(entry = %id, %error, "at shutdown, a written-ahead operation whose authoritative write failed still cannot be removed from the queue; if this process exits now, it is replayed to both stores as an orphan")
                }
            }
        }
        self.shared.queue.flush().await
    }

    fn from_parts(old: Old, new: New, shared: Shared) -> Self {
        DualWrite {
            old: Arc::new(old),
            new: Arc::new(new),
            shared: Arc::new(shared),
        }
    }
}

/// Entry points for the code `#[dual_write]` generates. Not part of the API.
#[doc(hidden)]
impl<Old, New> DualWrite<Old, New> {
    pub fn __old(&self) -> &Old {
        &self.old
    }

    pub fn __new(&self) -> &New {
        &self.new
    }

    pub fn __old_arc(&self) -> Arc<Old> {
        Arc::clone(&self.old)
    }

    pub fn __new_arc(&self) -> Arc<New> {
        Arc::clone(&self.new)
    }

    /// The store that serves a read now.
    pub fn __read_side(&self, _namespace: &'static str, _method: &'static str) -> Side {
        self.shared.stage.get().serving()
    }

    /// Plans one read: its stage (after rollout by key), the serving store
    /// and, if this call is compared, the other store. `key` is called only
    /// when a rollout or a comparison needs the key.
    pub fn __read(
        &self,
        namespace: &'static str,
        method: &'static str,
        key: impl FnOnce() -> Option<Key>,
    ) -> ReadPlan<'_> {
        ReadPlan::new(&self.shared.reads, namespace, method, key)
    }

    /// Starts a write: waits for the key's order guard and snapshots the stage.
    pub async fn __begin_write(
        &self,
        namespace: &'static str,
        method: &'static str,
        key: Key,
    ) -> WriteGuard<'_> {
        WriteGuard::begin(&self.shared, namespace, method, key).await
    }

    /// [`Self::__begin_write`] for blocking traits.
    pub fn __begin_write_blocking(
        &self,
        namespace: &'static str,
        method: &'static str,
        key: Key,
    ) -> WriteGuard<'_> {
        futures::executor::block_on(WriteGuard::begin(&self.shared, namespace, method, key))
    }
}
