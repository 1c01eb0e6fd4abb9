//! The reconciliation queue as the migration tools use it: to ask whether
//! a key has queued work, and to queue key-level syncs.

use std::fmt;
use std::sync::Arc;

use crate::queue::{QueueError, ReconciliationQueue};
use crate::records::{sync_entry, RecordKey};
use crate::vocabulary::Side;

/// Where the service's dual writes queue their work: the queue, the trait's
/// namespace, and the name its wrapper registered the record stores under
/// ([`Builder::sync_records`](crate::Builder::sync_records)).
///
/// Backfill queues a sync for every key that changed while it copied it;
/// verify waits for a key's queued work before it re-checks a difference;
/// repair queues a sync for every differing key. The service's worker
/// applies the syncs.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use dualwrite_runtime::migrate::SyncQueue;
/// use dualwrite_runtime::queue::SqliteQueue;
/// let queue = Arc::new(SqliteQueue::open("/var/lib/orders/dualwrite-queue.db").await?);
/// let link = SyncQueue::new(queue, "Accounts", "accounts");
/// # let _ = link; Ok(()) }
/// ```
#[derive(Clone)]
pub struct SyncQueue {
    queue: Arc<dyn ReconciliationQueue>,
    namespace: String,
    records: String,
    target: Side,
}

impl fmt::Debug for SyncQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncQueue")
            .field("namespace", &self.namespace)
            .field("records", &self.records)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl SyncQueue {
    /// The queue of the trait whose namespace is `namespace` (its name, or
    /// its `#[dual_write(namespace = "..")]`), syncing the record stores
    /// registered as `records`, to the new store.
    pub fn new(
        queue: Arc<dyn ReconciliationQueue>,
        namespace: impl Into<String>,
        records: impl Into<String>,
    ) -> Self {
        SyncQueue {
            queue,
            namespace: namespace.into(),
            records: records.into(),
            target: Side::New,
        }
    }

    /// The store syncs write to: the follower of the current stage (the new
    /// store until `Live`, the old one from then on). Default: new.
    #[must_use]
    pub fn target(mut self, target: Side) -> Self {
        self.target = target;
        self
    }

    /// The store syncs write to.
    pub fn target_side(&self) -> Side {
        self.target
    }

    /// Queues a sync of `key`, giving `reason` for operators.
    pub(crate) async fn queue_sync(&self, key: &RecordKey, reason: &str) -> Result<(), QueueError> {
        let entry = sync_entry(&self.namespace, &self.records, self.target, key, reason);
        self.queue.append(entry).await?;
        Ok(())
    }

    /// Whether either store has work queued for `key`.
    pub(crate) async fn has_work(&self, key: &RecordKey) -> Result<bool, QueueError> {
        let key = key.queue_key();
        for side in [Side::New, Side::Old] {
            if self.queue.has_work(&self.namespace, side, &key).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
