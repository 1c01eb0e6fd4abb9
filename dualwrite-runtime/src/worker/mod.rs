//! The reconciliation worker: applies queued operations to the store that
//! missed them.
//!
//! A worker claims the head entry of up to `worker_concurrency` keys at a
//! time and applies each with the follower timeout and panic isolation.
//! Keys proceed in parallel; within a key, the next entry is claimed only
//! after the previous one completed, so a key's writes reach the store in
//! the order they were queued (I4). A failed attempt is retried after an
//! exponential, jittered delay ([`RetryPolicy`]); when the budget runs out
//! the entry is dead-lettered with its last error, and its key waits behind
//! it while every other key keeps flowing (I5). An entry that cannot be
//! decoded is dead-lettered with the decode error (I7).
//!
//! An applied entry is completed in the queue together with the claim that
//! refills its slot, in one call
//! ([`complete_and_claim`](crate::ReconciliationQueue::complete_and_claim)),
//! with one such call out at a time: attempts that land while it is out go
//! in the next, so a durable queue pays one round trip per turnover of the
//! slots rather than one per completion and one per claim.
//!
//! Several workers, in one process or many, may share a queue: leases keep
//! them off each other's entries, and an entry whose worker died is claimed
//! again when its lease expires.
//!
//! # Leases
//!
//! An attempt renews its lease every third of the lease while it runs (an
//! orphan's replay may wait for the key and call two stores), and fences
//! itself: if a renewal is refused because the claim was lost, or if the
//! lease would run out by this process's monotonic clock before a renewal
//! succeeded, the attempt is dropped before it can land and the entry is
//! left to whoever holds it now. Within one process a key never has two
//! attempts at once, even if the queue hands an entry out again (a wall
//! clock stepping forward can make a lease look expired): the second waits
//! for the first. Across processes, fencing is as good as the clocks that
//! grant leases: a process whose wall clock runs ahead by more than two
//! thirds of the lease can take over an entry while its holder still runs
//! it, for up to a third of the lease.

mod breaker;
mod decode;
mod handle;
mod lease;
mod retry;
mod run;
mod shared;
mod spawn;
mod sync;
mod uncertain;
pub(crate) mod uncertain_writes;

pub use breaker::CircuitBreaker;
pub(crate) use breaker::{Admission, Breakers};
pub use handle::{WorkerHandle, WorkerShutdownError};
pub use retry::RetryPolicy;
pub(crate) use shared::Shared;

use self::run::Until;

use std::marker::PhantomData;
use std::sync::Arc;

use tokio::sync::watch;

use crate::observe::DeadLetterReport;
use crate::op::{Key, Replay};
use crate::order::KeyLocks;
use crate::queue::{ClaimedEntry, Lease, QueueError};
use crate::vocabulary::Side;
use decode::{decode, decode_parts, Decoded};

/// Applies queued operations of one trait (`Op`) to the stores of a
/// [`DualWrite`](crate::DualWrite). Create it with
/// [`DualWrite::worker`](crate::DualWrite::worker).
pub struct Worker<Op, Old, New> {
    old: Arc<Old>,
    new: Arc<New>,
    shared: Arc<Shared>,
    stop: watch::Sender<u64>,
    /// What it did so far, shared with its handle.
    report: Arc<std::sync::Mutex<WorkerReport>>,
    /// One attempt per key at a time in this worker, whatever the queue
    /// hands out (see the module docs on leases).
    attempts: Arc<KeyLocks>,
    /// How many runs are in progress, for [`WorkerHandle::shutdown`].
    running: watch::Sender<usize>,
    op: PhantomData<fn() -> Op>,
}

/// Asks a running [`Worker`] to stop. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerStop {
    stop: watch::Sender<u64>,
}

impl WorkerStop {
    /// Stops the worker gracefully: it claims nothing more, finishes the
    /// operations it is applying (each bounded by the follower timeout), and
    /// then [`Worker::run`] returns. Nothing is lost: whatever it did not
    /// apply stays queued.
    pub fn stop(&self) {
        // A count rather than a flag: `drain` compares it with its value at
        // the start, `run` with zero.
        self.stop.send_modify(|requests| *requests += 1);
    }
}

/// What a worker did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Operations applied and removed from the queue.
    pub applied: u64,
    /// Failed attempts that will be retried.
    pub retried: u64,
    /// Operations dead-lettered (retry budget spent, or undecodable).
    pub dead_lettered: u64,
    /// Queue calls that failed (the entry's lease expires and it is retried).
    pub queue_errors: u64,
    /// Attempts dropped before they could land because their lease was lost
    /// or ran out (another claim holds the entry).
    pub fenced: u64,
}

impl WorkerReport {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Applied => self.applied += 1,
            Outcome::Retried => self.retried += 1,
            Outcome::DeadLettered => self.dead_lettered += 1,
            Outcome::QueueError => self.queue_errors += 1,
            Outcome::Fenced => self.fenced += 1,
            // A landed attempt counts as applied once its completion is.
            Outcome::Withdrawn | Outcome::Settled | Outcome::Landed(_) => {}
        }
    }
}

/// What became of an orphaned operation.
enum Replayed {
    Applied,
    /// Its writer aborted it after the worker claimed it.
    Withdrawn,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// The writer withdrew an orphaned operation; nothing was applied.
    Withdrawn,
    /// Applied to the store; the loop completes it in the queue.
    Landed(Lease),
    /// Applied and completed.
    Applied,
    Retried,
    DeadLettered,
    QueueError,
    /// The lease was lost or ran out; the attempt was dropped unsettled.
    Fenced,
    /// A pass over the uncertain writes to settle ended.
    Settled,
}

impl<Op, Old, New> Worker<Op, Old, New>
where
    Op: Replay<Old> + Replay<New>,
{
    pub(crate) fn new(old: Arc<Old>, new: Arc<New>, shared: Arc<Shared>) -> Self {
        Worker {
            old,
            new,
            shared,
            stop: watch::Sender::new(0),
            report: Arc::default(),
            attempts: Arc::default(),
            running: watch::Sender::new(0),
            op: PhantomData,
        }
    }

    /// A handle that stops this worker and waits for it, once it runs in a
    /// task of its own (see [`WorkerHandle`]).
    pub fn handle(&self) -> WorkerHandle {
        WorkerHandle::new(
            self.stopper(),
            self.running.subscribe(),
            Arc::clone(&self.report),
            Arc::clone(&self.shared.queue),
        )
    }

    /// What this worker has done so far, over all its runs.
    pub fn report(&self) -> WorkerReport {
        *self
            .report
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn count(&self, report: &mut WorkerReport, outcome: Outcome) {
        report.add(outcome);
        self.report
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .add(outcome);
    }

    /// A handle that stops [`run`](Self::run).
    pub fn stopper(&self) -> WorkerStop {
        WorkerStop {
            stop: self.stop.clone(),
        }
    }

    /// Applies queued operations until [`WorkerStop::stop`] is called, then
    /// returns what it did. Queue failures are logged and retried; they do
    /// not end the loop.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the operations in flight; their leases
    /// expire and they are applied again later (replays must be idempotent,
    /// as for any at-least-once delivery). Prefer [`WorkerStop::stop`].
    pub async fn run(&self) -> WorkerReport {
        self.run_loop(Until::Stopped).await
    }

    /// Applies queued operations until none is pending or in flight (dead
    /// letters excepted), waiting out retry delays, and returns what it did.
    /// A [`WorkerStop::stop`] during the drain ends it early; one from before
    /// does not.
    /// Useful in tests, examples and tools; a service runs [`run`](Self::run).
    pub async fn drain(&self) -> WorkerReport {
        self.run_loop(Until::Idle).await
    }

    fn shown(&self, key: &Key) -> crate::op::ShownKey {
        key.shown(self.shared.log_keys)
    }

    /// [`apply`](Self::apply) under the worker's own per-key lock, with the
    /// lease renewed while it runs and the attempt dropped if the lease is
    /// lost or runs out (see the module docs).
    async fn attempt_fenced(
        &self,
        entry: ClaimedEntry,
        claimed_at: tokio::time::Instant,
    ) -> Outcome {
        let lease = entry.lease;
        let length = self.shared.lease;
        let target_key = Key::from(format!("{}/{}", entry.target.as_str(), entry.key.as_str()));
        let _turn = self.attempts.lock("attempts", target_key).await;
        let key = self.shown(&entry.key);
        let work = self.apply(entry);
        let fence = lease::fence(self.shared.queue.as_ref(), lease, length, claimed_at);
        tokio::pin!(work, fence);
        tokio::select! {
            outcome = &mut work => outcome,
            reason = &mut fence => {
                tracing::warn!(entry = %lease.id, %key, %reason, "attempt dropped before it could land: its lease is gone");
                Outcome::Fenced
            }
        }
    }

    /// Applies one claimed entry and settles it in the queue.
    async fn apply(&self, entry: ClaimedEntry) -> Outcome {
        let lease = entry.lease;
        let queue = &self.shared.queue;
        if entry.orphaned && self.shared.withdrawals.contains(lease.id) {
            // Its authoritative write failed and the writer could not
            // remove it: never replay it, remove it now.
            return match queue.abort(lease.id).await {
                Ok(()) => {
                    self.shared.withdrawals.clear(lease.id);
                    tracing::info!(entry = %lease.id, "written-ahead operation of a failed write removed by the worker");
                    Outcome::Withdrawn
                }
                Err(error) => {
                    tracing::error!(entry = %lease.id, %error, "could not remove a withdrawn operation; trying again when its lease expires");
                    Outcome::QueueError
                }
            };
        }
        if entry.method == crate::records::SYNC_METHOD {
            let attempt = match self.apply_sync(&entry).await {
                Ok(attempt) => attempt,
                Err(reason) => {
                    tracing::error!(namespace = %entry.namespace, key = %self.shown(&entry.key), error = %reason, "key-level sync entry dead-lettered");
                    return self.dead_letter(&entry, &reason).await;
                }
            };
            return self.settle_attempt(&entry, attempt, false).await;
        }
        let op = match decode::<Op>(&entry) {
            Ok(op) => op,
            Err(refused) => {
                tracing::error!(namespace = %entry.namespace, key = %self.shown(&entry.key), method = %entry.method, error = %refused.reason, "{}", refused.what);
                return self.dead_letter(&entry, &refused.reason).await;
            }
        };
        // Whether the store said its failure is permanent
        // (`reject_permanently`) during the replay.
        let (attempt, permanent) = crate::rejection::watching(async {
            if entry.orphaned {
                self.replay_orphan(&op, &entry).await
            } else {
                self.replay_to(&op, entry.target)
                    .await
                    .map(|()| Replayed::Applied)
            }
        })
        .await;
        let attempt = match attempt {
            Ok(Replayed::Withdrawn) => {
                tracing::debug!(namespace = %entry.namespace, key = %self.shown(&entry.key), method = %entry.method, "orphaned operation withdrawn by its writer");
                return Outcome::Withdrawn;
            }
            Ok(Replayed::Applied) => Ok(()),
            Err(error) => Err(error),
        };
        self.settle_attempt(&entry, attempt, permanent).await
    }

    /// Completes an applied entry, or retries or dead-letters a failed one
    /// (at once when the store said the failure is `permanent`).
    async fn settle_attempt(
        &self,
        entry: &ClaimedEntry,
        attempt: Result<(), String>,
        permanent: bool,
    ) -> Outcome {
        let lease = entry.lease;
        let queue = &self.shared.queue;
        match attempt {
            Ok(()) => {
                tracing::debug!(namespace = %entry.namespace, key = %self.shown(&entry.key), method = %entry.method, target = %entry.target, attempts = entry.attempts + 1, "queued operation applied");
                // The store just took a write: if writes were skipping it,
                // they may call it again.
                self.shared.breakers.record_success(entry.target);
                crate::observe::record_reconciled(&entry.namespace, &entry.method, entry.target);
                self.shared.uncertain.forget(lease.id);
                Outcome::Landed(lease)
            }
            Err(error) => {
                let failures = entry.attempts + 1;
                if permanent {
                    tracing::error!(namespace = %entry.namespace, key = %self.shown(&entry.key), method = %entry.method, target = %entry.target, failures, %error, "the store rejected the operation permanently; dead-lettered and its key blocked");
                    let error = format!("{error} (rejected permanently by the store: not retried)");
                    self.dead_letter(entry, &error).await
                } else if failures >= self.shared.retry.attempts() {
                    tracing::error!(namespace = %entry.namespace, key = %self.shown(&entry.key), method = %entry.method, target = %entry.target, failures, %error, "retry budget spent; operation dead-lettered and its key blocked");
                    self.dead_letter(entry, &error).await
                } else {
                    let delay = self.shared.retry.delay_after(failures);
                    tracing::warn!(namespace = %entry.namespace, key = %self.shown(&entry.key), method = %entry.method, target = %entry.target, failures, %error, retry_in = ?delay, "queued operation failed; will retry");
                    settle(
                        queue.retry_later(lease, &error, delay).await,
                        Outcome::Retried,
                    )
                }
            }
        }
    }

    /// Dead-letters the entry and tells the observers (which also count it).
    async fn dead_letter(&self, entry: &ClaimedEntry, error: &str) -> Outcome {
        // Nothing more happens to it without an operator: writes waiting for
        // it go ahead.
        self.shared.uncertain.forget(entry.lease.id);
        let outcome = settle(
            self.shared.queue.dead_letter(entry.lease, error).await,
            Outcome::DeadLettered,
        );
        if matches!(outcome, Outcome::DeadLettered) {
            let report = DeadLetterReport::new(
                entry.namespace.as_str(),
                entry.method.as_str(),
                entry.target,
                entry.key.clone(),
                entry.attempts + 1,
                error,
            );
            self.shared.observers().dead_letter(&report);
        }
        outcome
    }

    async fn replay_to(&self, op: &Decoded<Op>, side: Side) -> Result<(), String> {
        self.replay_within(op, side, self.shared.follower_timeout)
            .await
    }

    /// Replays to the store that was authoritative: it gets the lease as its
    /// bound rather than the follower timeout, since writes to it are never
    /// timed out in the request either.
    async fn replay_to_authoritative(&self, op: &Decoded<Op>, side: Side) -> Result<(), String> {
        let bound = self
            .shared
            .lease
            .saturating_sub(self.shared.follower_timeout);
        self.replay_within(op, side, bound.max(self.shared.follower_timeout))
            .await
    }

    async fn replay_within(
        &self,
        op: &Decoded<Op>,
        side: Side,
        bound: std::time::Duration,
    ) -> Result<(), String> {
        // The store sees the operation's id, as it did in the request.
        let replay = crate::operation_id::scoped(
            op.id,
            crate::op::replay_on(&op.op, side, &self.old, &self.new),
        );
        crate::guarded::call(bound, replay)
            .await
            .unwrap_or_else(|failure| Err(failure.to_string()))
    }

    /// An operation written ahead by a writer that died before confirming
    /// its authoritative write: whether that write happened is unknown. If
    /// nothing was written to the key after it, it is applied to the store
    /// that was authoritative and then to the target, so both hold it (the
    /// caller was never answered, so either outcome is allowed, as long as
    /// the stores agree). If later writes of the key exist, they superseded
    /// it in the authoritative store and it only goes to the target, in its
    /// place in the key's order. The key's order guard is held meanwhile, so
    /// no write of this process interleaves.
    async fn replay_orphan(
        &self,
        op: &Decoded<Op>,
        entry: &ClaimedEntry,
    ) -> Result<Replayed, String> {
        let _order = self
            .shared
            .locks
            .lock(Op::NAMESPACE, entry.key.clone())
            .await;
        let superseded = match self.shared.queue.has_later_entries(entry.lease).await {
            Ok(superseded) => superseded,
            // The writer was alive after all and withdrew the operation (its
            // authoritative write failed): nothing to replay.
            Err(QueueError::LeaseLost(_)) => {
                self.shared.uncertain.forget(entry.lease.id);
                return Ok(Replayed::Withdrawn);
            }
            Err(error) => return Err(format!("could not check the key for later writes: {error}")),
        };
        if superseded {
            self.shared.uncertain.settle(entry.lease.id, false);
        } else if self.shared.uncertain.is_settled(entry.lease.id) {
            // Already applied to the authoritative store out of line.
        } else {
            let authoritative = entry.target.other();
            tracing::warn!(namespace = %entry.namespace, key = %self.shown(&entry.key), method = %entry.method, "replaying an orphaned written-ahead operation to both stores");
            self.replay_to_authoritative(op, authoritative)
                .await
                .map_err(|error| {
                    format!(
                        "replaying the orphaned operation to the {authoritative} store: {error}"
                    )
                })?;
            // Writes of the key waiting for it may go ahead now.
            self.shared.uncertain.settle(entry.lease.id, true);
            // A retry (the target may fail next) must not apply it to the
            // authoritative store again.
            if let Err(error) = self.shared.queue.settle_orphan(entry.lease.id).await {
                tracing::warn!(entry = %entry.lease.id, %error, "could not record that an orphan reached the authoritative store; a retry applies it there again (idempotent)");
            }
        }
        self.replay_to(op, entry.target)
            .await
            .map(|()| Replayed::Applied)
    }
}

struct RunningGuard<'a>(&'a watch::Sender<usize>);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0
            .send_modify(|running| *running = running.saturating_sub(1));
    }
}

fn settle(result: Result<(), QueueError>, outcome: Outcome) -> Outcome {
    match result {
        Ok(()) => outcome,
        Err(error) => {
            tracing::error!(%error, "reconciliation worker could not record an outcome; the entry will be retried when its lease expires");
            Outcome::QueueError
        }
    }
}

impl<Op, Old, New> std::fmt::Debug for Worker<Op, Old, New> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("operations", &std::any::type_name::<Op>())
            .field("concurrency", &self.shared.worker_concurrency)
            .finish_non_exhaustive()
    }
}
