//! What a write still owes when its caller goes away, and how `Drop`
//! settles it (see the table in the [parent module](super)).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::WriteGuard;
use crate::op::{Key, Operation, ShownKey};
use crate::operation_id::OperationId;
use crate::queue::{EntryId, NewEntry, QueueError};
use crate::vocabulary::Side;
use crate::worker::uncertain_writes::UncertainWrite;
use crate::worker::Shared;

/// What a write owes the stores at this point (see the module docs).
pub(super) enum Owed {
    Nothing,
    /// Journaled: written ahead; the authoritative call has not started.
    Prepared(EntryId),
    /// The authoritative call is running: whether it lands is unknown.
    Authoritative {
        prepared: Option<EntryId>,
        op: Option<Box<dyn OwedOperation>>,
    },
    /// Sync: the authoritative store took it; the follower has not.
    Follower(Box<dyn OwedOperation>),
    /// Journaled: the authoritative store took it; the commit is owed.
    Commit(EntryId),
    /// Journaled: the write is done and answered; its commit runs after
    /// (see [`WriteGuard::commit`]). Not a cancellation.
    Confirm(EntryId),
    /// Journaled: the authoritative call failed; the entry must go.
    Withdraw(EntryId),
}

/// An operation kept for queueing, encoded only if it is queued.
pub(super) trait OwedOperation: Send + Sync {
    fn encode(&self, id: OperationId) -> Result<Vec<u8>, QueueError>;
    fn method(&self) -> &'static str;
    fn version(&self) -> u32;
    /// The key it is queued under, when not the write's own (an operation
    /// built from the authoritative result).
    fn key(&self) -> Option<Key> {
        None
    }
}

impl<Op: Operation + Clone> OwedOperation for Op {
    fn encode(&self, id: OperationId) -> Result<Vec<u8>, QueueError> {
        crate::operation_id::encode(self, id).map_err(QueueError::Encode)
    }
    fn method(&self) -> &'static str {
        Operation::method(self)
    }
    fn version(&self) -> u32 {
        Op::VERSION
    }
}

/// How often a failed withdrawal is retried in the request before the entry
/// is marked withdrawn in memory and left to a background task.
const WITHDRAW_PAUSES: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(10),
    Duration::from_millis(50),
];

impl WriteGuard<'_> {
    /// The work `Drop` must do for what is owed, if anything.
    fn settle_owed(&mut self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        let owed = std::mem::replace(
            self.owed
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            Owed::Nothing,
        );
        // The common case, a write that finished: nothing to settle, and
        // nothing (no key shown, no clones) to prepare for it.
        if matches!(
            owed,
            Owed::Nothing
                | Owed::Authoritative {
                    prepared: None,
                    op: None
                }
        ) {
            return None;
        }
        let shared = Arc::clone(&self.owner);
        let (namespace, method, key) = (self.namespace, self.method, self.key.clone());
        let shown = self.shown_key();
        let follower = self.follower();
        let operation_id = self.operation_id;
        let shared_for_entries = Arc::clone(&self.owner);
        let key_sync = shared.key_sync.is_some();
        let queue_op = move |op: Box<dyn OwedOperation>, uncertain: bool| {
            let reason = if uncertain {
                "the caller went away during the authoritative write: it may or may not have landed"
            } else {
                "the caller went away before the follower had the write"
            };
            if let Some(key_sync) = &shared_for_entries.key_sync {
                // A key-level sync copies whatever the authoritative store
                // holds: never uncertain.
                let key = op.key().unwrap_or_else(|| key.clone());
                return key_sync.entry(namespace, op.method(), follower, &key, reason);
            }
            op.encode(operation_id).map(|payload| NewEntry {
                namespace: namespace.to_owned(),
                target: follower,
                key: op.key().unwrap_or_else(|| key.clone()),
                method: op.method().to_owned(),
                version: op.version(),
                payload,
                reason: reason.to_owned(),
                uncertain,
            })
        };
        let work: Pin<Box<dyn Future<Output = ()> + Send>> = match owed {
            Owed::Nothing => return None,
            Owed::Authoritative {
                prepared: None,
                op: None,
            } => return None,
            Owed::Prepared(id) | Owed::Withdraw(id) => {
                tracing::warn!(namespace, method, key = %shown, "write cancelled before its authoritative write completed; withdrawing its written-ahead operation");
                Box::pin(async move {
                    if withdraw(&shared, id).await.is_err() {
                        shared.withdrawals.mark(id);
                        spawn_withdrawal_retries(Arc::clone(&shared), id);
                    }
                })
            }
            Owed::Authoritative {
                prepared: Some(id),
                op,
            } => {
                if key_sync {
                    tracing::warn!(namespace, method, key = %shown, "write cancelled during its authoritative write; confirming its key-level sync");
                    return Some(confirm(shared, id, namespace, method, shown));
                }
                tracing::warn!(namespace, method, key = %shown, "write cancelled during its authoritative write; its written-ahead operation will be applied to both stores");
                let uncertain = op.and_then(|op| {
                    queue_op(op, true)
                        .ok()
                        .map(|entry| uncertain_write(id, entry, follower))
                });
                Box::pin(async move {
                    match shared.queue.commit_uncertain(id).await {
                        Ok(()) => {
                            if let Some(write) = uncertain {
                                shared.uncertain.register(write);
                            }
                            shared.queued.notify_one();
                        }
                        Err(error) => {
                            tracing::error!(namespace, method, key = %shown, %error, "could not mark a cancelled write's operation uncertain; the worker replays it after the orphan timeout")
                        }
                    }
                })
            }
            Owed::Commit(id) => {
                tracing::warn!(namespace, method, key = %shown, "write cancelled before its written-ahead operation was confirmed; confirming it");
                confirm(shared, id, namespace, method, shown)
            }
            Owed::Confirm(id) => confirm(shared, id, namespace, method, shown),
            Owed::Authoritative {
                prepared: None,
                op: Some(op),
            } => {
                tracing::warn!(namespace, method, key = %shown, "write cancelled during its authoritative write; queueing it for both stores");
                queue_owed(
                    shared,
                    queue_op(op, !key_sync),
                    namespace,
                    method,
                    self.key.clone(),
                    follower,
                    !key_sync,
                )
            }
            Owed::Follower(op) => {
                tracing::warn!(namespace, method, key = %shown, "write cancelled before the follower had it; queueing it");
                let key = op.key().unwrap_or_else(|| self.key.clone());
                queue_owed(
                    shared,
                    queue_op(op, false),
                    namespace,
                    method,
                    key,
                    follower,
                    false,
                )
            }
        };
        Some(work)
    }
}

/// Confirms a written-ahead entry in work `Drop` hands on: a cancelled
/// write's, or a finished write's whose confirmation runs after it returned.
fn confirm(
    shared: Arc<Shared>,
    id: EntryId,
    namespace: &'static str,
    method: &'static str,
    shown: ShownKey,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move { confirm_entry(&shared, id, namespace, method, &shown).await })
}

/// Makes written-ahead entry `id` available to the worker, waking it; if
/// the queue refuses, the entry stays prepared and the worker replays it as
/// an orphan once `orphan_after` has passed, so nothing is lost.
pub(super) async fn confirm_entry(
    shared: &Shared,
    id: EntryId,
    namespace: &'static str,
    method: &'static str,
    shown: &ShownKey,
) {
    match shared.queue.commit(id).await {
        Ok(()) => shared.queued.notify_one(),
        Err(error) => {
            tracing::error!(namespace, method, key = %shown, %error, "could not confirm a written-ahead operation; the worker replays it after the orphan timeout")
        }
    }
}

/// Appends the operation of a cancelled write.
fn queue_owed(
    shared: Arc<Shared>,
    entry: Result<NewEntry, QueueError>,
    namespace: &'static str,
    method: &'static str,
    key: Key,
    target: Side,
    uncertain: bool,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let (appended, registered) = match entry {
            Ok(entry) => {
                let copy = uncertain.then(|| entry.clone());
                (shared.queue.append(entry).await, copy)
            }
            Err(error) => (Err(error), None),
        };
        match appended {
            Ok(id) => {
                if let Some(entry) = registered {
                    shared
                        .uncertain
                        .register(uncertain_write(id, entry, target));
                }
                shared.stage.note_queued(target);
                shared.queued.notify_one();
            }
            Err(error) => report_drift(&shared, namespace, method, &key, target, &error),
        }
    })
}

/// What the worker needs to settle an uncertain write queued as `id` for
/// `follower`.
fn uncertain_write(id: EntryId, entry: NewEntry, follower: Side) -> UncertainWrite {
    UncertainWrite {
        id,
        namespace: entry.namespace,
        key: entry.key,
        authoritative: follower.other(),
        method: entry.method,
        version: entry.version,
        payload: entry.payload,
    }
}

/// A follower write lost because the queue refused it: counted, measured,
/// logged.
pub(super) fn report_drift(
    shared: &Shared,
    namespace: &'static str,
    method: &'static str,
    key: &Key,
    target: Side,
    error: &QueueError,
) {
    shared.drift.fetch_add(1, Ordering::Relaxed);
    crate::observe::record_drift(namespace, method, target);
    tracing::error!(
        namespace,
        method,
        key = %key.shown(shared.log_keys),
        follower = %target,
        %error,
        "reconciliation queue refused an operation: the follower will miss this write until it is repaired"
    );
}

/// Withdraws a written-ahead entry, retrying a few times.
pub(super) async fn withdraw(shared: &Shared, id: EntryId) -> Result<(), QueueError> {
    let mut last = None;
    for pause in WITHDRAW_PAUSES {
        if !pause.is_zero() {
            crate::guarded::pause(pause).await;
        }
        match shared.queue.abort(id).await {
            Ok(()) => return Ok(()),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| QueueError::Backend("the withdrawal was never attempted".into())))
}

/// Keeps trying to remove an entry marked withdrawn, until the queue takes
/// the removal or the worker has dropped the entry itself. Needs a tokio
/// runtime; without one, the worker's check of the mark is what keeps the
/// entry from being replayed.
pub(super) fn spawn_withdrawal_retries(shared: Arc<Shared>, id: EntryId) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut pause = Duration::from_millis(100);
        while shared.withdrawals.contains(id) {
            tokio::time::sleep(pause).await;
            match shared.queue.abort(id).await {
                Ok(()) => {
                    shared.withdrawals.clear(id);
                    tracing::info!(entry = %id, "written-ahead operation withdrawn after earlier failures");
                }
                Err(error) => {
                    tracing::debug!(entry = %id, %error, "withdrawal still failing");
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    });
}

impl Drop for WriteGuard<'_> {
    /// The caller's future was dropped with something still owed: settle it
    /// in work that keeps the key's order guard and the stage barrier until
    /// it is done, so the stores still converge (I2) and nothing is lost
    /// silently (I7). See the module docs.
    fn drop(&mut self) {
        let Some(work) = self.settle_owed() else {
            return;
        };
        let held = (self.key_lock.take(), self.stage_barrier.take());
        run_detached(Box::pin(async move {
            let _held = held;
            work.await;
        }));
    }
}

/// Polls `work` once here (so that a queue taking requests synchronously
/// has this one before the caller's task moves on), then finishes it in a
/// task of the current runtime, or blocks on it without one.
fn run_detached(mut work: Pin<Box<dyn Future<Output = ()> + Send>>) {
    let waker = futures::task::noop_waker();
    let mut context = Context::from_waker(&waker);
    if let Poll::Ready(()) = work.as_mut().poll(&mut context) {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(work);
        }
        Err(_) => futures::executor::block_on(work),
    }
}
