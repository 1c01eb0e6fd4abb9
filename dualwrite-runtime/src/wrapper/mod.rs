//! The [`DualWrite`] wrapper and its [`Builder`].

mod builder;
mod write;

pub use crate::vocabulary::Delivery;
pub use crate::worker::CircuitBreaker;
pub use builder::Builder;
pub use write::{FollowerPlan, QueueRefused, WriteGuard};

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::op::{HasOperations, Key, Replay};
use crate::queue::{QueueAdmin, QueueError, QueueStats};
use crate::read::ReadPlan;
use crate::stage::{Side, StageHandle};
use crate::worker::{Shared, Worker, WorkerHandle};

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

    /// The reconciliation queue's operator surface: its stats, its dead
    /// letters (list, retry, drop) and what waits for a key. The calls that
    /// move entries (claims, leases) are the worker's and are not offered
    /// here.
    pub fn queue(&self) -> QueueAdmin {
        QueueAdmin::new(Arc::clone(&self.shared.queue))
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

    /// Starts a worker for the operations of the trait this wrapper
    /// implements, on a thread of its own (see [`Worker::spawn`]), and
    /// returns its handle. The operation enum is found from the trait:
    ///
    /// ```ignore
    /// let worker = repo.spawn_worker();
    /// // ... serve requests ...
    /// repo.shutdown().await?;             // the write path first
    /// let report = worker.shutdown().await?; // then the worker
    /// ```
    ///
    /// If the stores implement more than one `#[dual_write]` trait, name
    /// the one to run, once per trait:
    /// `repo.spawn_worker::<OrderRepositoryOp>()`. Dropping the handle
    /// stops the worker.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    pub fn spawn_worker<Op>(&self) -> WorkerHandle
    where
        Self: HasOperations<Op>,
        Op: Replay<Old> + Replay<New>,
        Old: Send + Sync + 'static,
        New: Send + Sync + 'static,
    {
        self.worker::<Op>().spawn()
    }

    /// Graceful shutdown of the write path: waits until every write in
    /// progress has finished, including the queueing that cancelled writes
    /// left to background tasks, tries once more to remove entries marked
    /// withdrawn, then waits until everything acknowledged is durable in the
    /// queue ([`ReconciliationQueue::flush`](crate::ReconciliationQueue::flush)). Call it after the service has
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
}
