//! The operator surface of a queue: what a person or a command-line tool
//! does with it (counts, dead letters, a key's line), apart from the calls
//! the write path and the worker make.

use std::fmt;
use std::sync::Arc;

use super::{DeadLetter, EntryId, QueueError, QueueStats, QueuedEntry, ReconciliationQueue};
use crate::op::Key;
use crate::vocabulary::Side;

/// What an operator does with a reconciliation queue: look at it, retry or
/// drop dead letters, and see what waits for one key. It is what
/// [`DualWrite::queue`](crate::DualWrite::queue) hands out; the calls that
/// move entries through their life (claims, leases, completions) stay on the
/// [`ReconciliationQueue`] trait, for the wrapper and the worker.
///
/// Cheap to clone. It works on any backend, so a tool can open the queue
/// file (or database) of a service and act on it while the service runs.
///
/// ```
/// # async fn demo(repo: &dualwrite_runtime::DualWrite<(), ()>) -> Result<(), dualwrite_runtime::QueueError> {
/// let admin = repo.queue();
/// let waiting = admin.stats().await?.new;
/// println!("{} pending, {} dead", waiting.pending, waiting.dead);
/// for letter in admin.dead_letters().await? {
///     println!("{} {} {}: {}", letter.id, letter.method, letter.key, letter.error);
///     // after fixing the cause in the store:
///     admin.retry_dead(letter.id).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct QueueAdmin {
    queue: Arc<dyn ReconciliationQueue>,
}

impl fmt::Debug for QueueAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueAdmin").finish_non_exhaustive()
    }
}

impl QueueAdmin {
    /// The operator surface of `queue`.
    pub fn new(queue: Arc<dyn ReconciliationQueue>) -> Self {
        QueueAdmin { queue }
    }

    /// Counts by target store: pending, in flight, dead, blocked keys and
    /// the age of the oldest waiting entry.
    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.queue.stats().await
    }

    /// Every dead letter, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.queue.dead_letters().await
    }

    /// One dead letter, or `None` if no dead letter has that id.
    pub async fn dead_letter(&self, id: EntryId) -> Result<Option<DeadLetter>, QueueError> {
        let letters = self.queue.dead_letters().await?;
        Ok(letters.into_iter().find(|letter| letter.id == id))
    }

    /// Makes a dead letter pending again at the head of its key, with its
    /// attempts reset; the worker applies it next. Retry once the cause (a
    /// constraint, a missing row) is fixed in the store.
    ///
    /// # Errors
    ///
    /// [`QueueError::NotDead`] if no dead letter has that id.
    pub async fn retry_dead(&self, id: EntryId) -> Result<(), QueueError> {
        self.queue.retry_dead(id).await
    }

    /// Deletes a dead letter for good, unblocking its key: the store never
    /// gets that write (repair the row by hand, or let verify-and-repair
    /// find it).
    ///
    /// # Errors
    ///
    /// [`QueueError::NotDead`] if no dead letter has that id.
    pub async fn drop_dead(&self, id: EntryId) -> Result<(), QueueError> {
        self.queue.drop_dead(id).await
    }

    /// Retries every dead letter of `namespace` (every namespace with
    /// `None`), oldest first, and returns how many were retried. A letter
    /// that stopped being dead meanwhile (another operator acted) is
    /// skipped.
    pub async fn retry_all_dead(&self, namespace: Option<&str>) -> Result<usize, QueueError> {
        let mut retried = 0;
        for letter in self.queue.dead_letters().await? {
            if namespace.is_some_and(|namespace| letter.namespace != namespace) {
                continue;
            }
            match self.queue.retry_dead(letter.id).await {
                Ok(()) => retried += 1,
                Err(QueueError::NotDead(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(retried)
    }

    /// The entries waiting for one key of `namespace` in `target`, in the
    /// order the worker applies them (the head first), whatever their state:
    /// prepared, pending, in flight or dead. Empty when the key has nothing
    /// queued.
    pub async fn key_entries(
        &self,
        namespace: &str,
        target: Side,
        key: &Key,
    ) -> Result<Vec<QueuedEntry>, QueueError> {
        self.queue.key_entries(namespace, target, key).await
    }
}
