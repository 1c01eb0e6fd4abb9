//! One write, as the generated code drives it (DESIGN "Write path").
//!
//! 1. [`WriteGuard::begin`] waits until no stage move is in progress, then
//!    takes the key's order guard (the namespace's, for an unkeyed write;
//!    none in `Off` and `Complete`, which write one store) and snapshots the
//!    stage; if an uncertain write of an overlapping key
//!    is still to be settled in the authoritative store, it lets go of both
//!    and waits for that first. Holding both for the whole write is what
//!    makes two writers of one key reach both stores in the same order (I4),
//!    and keeps a stage move from landing between the two halves of a write.
//! 2. Journaled delivery only: [`WriteGuard::prepare`] writes the operation
//!    ahead to the queue.
//! 3. [`WriteGuard::authoritative_call`] calls the authoritative store. On
//!    `Err`, [`WriteGuard::abort`] withdraws the written-ahead entry and the
//!    write returns: the follower is not called and nothing is queued (I1).
//! 4. The follower gets the write: a journaled entry is
//!    [committed](WriteGuard::commit) (by default after the write returns,
//!    still holding both guards); otherwise
//!    [`WriteGuard::follower_plan`] decides between calling the follower
//!    (with the timeout and panic isolation, queueing on failure) and
//!    queueing at once (the key already has work for the follower, or the
//!    circuit breaker is open).
//!
//! # Cancellation
//!
//! The guard tracks what the write still owes ([`Owed`]). If the caller's
//! future is dropped at any await point, `Drop` settles it, keeping the
//! key's order guard (and the stage barrier) until that is done:
//!
//! | dropped while | what `Drop` does |
//! |---|---|
//! | waiting for the guards, or writing ahead | nothing (a backend withdraws a written-ahead entry whose id never reached its writer; see [`ReconciliationQueue::prepare`](crate::ReconciliationQueue::prepare)) |
//! | the authoritative call runs | queues the operation *uncertain* (journaled: marks the entry uncertain), so the worker applies it to the authoritative store again, unless a later write superseded it, then to the follower |
//! | the follower call, or the queueing, runs | queues the operation for the follower |
//! | a journaled commit is owed | commits it |
//! | the write returned, its journaled commit owed (the default) | commits it, quietly |
//! | a withdrawal is owed | withdraws the entry |
//!
//! The first step of that work runs inside `Drop` (polled once, so a queue
//! that takes requests synchronously, like both built-in ones, has the
//! request before `Drop` returns); the rest runs in a task on the current
//! runtime. [`DualWrite::shutdown`](crate::DualWrite::shutdown) waits for
//! those tasks and flushes the queue.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedRwLockReadGuard;
use tokio::time::Instant;
use tracing::Instrument;

mod cancel;
mod derived;
mod follower;

use cancel::{confirm_entry, spawn_withdrawal_retries, withdraw, Owed, OwedOperation};

use crate::observe::CallOutcome;
use crate::op::{Key, Operation, ShownKey};
use crate::operation_id::{self, OperationId};
use crate::order::KeyLockGuard;
use crate::queue::{EntryId, NewEntry, QueueError};
use crate::vocabulary::Delivery;
use crate::vocabulary::{Side, Stage};
use crate::worker::Shared;

/// The state of one write in progress. Used by generated code only.
#[doc(hidden)]
pub struct WriteGuard<'a> {
    shared: &'a Shared,
    namespace: &'static str,
    method: &'static str,
    key: Key,
    stage: Stage,
    delivery: Delivery,
    /// The write's id, the same for every store call and replay of it.
    operation_id: OperationId,
    /// `dualwrite.write`, entered around each store call of this write.
    span: tracing::Span,
    /// What the write still owes if its caller goes away now.
    owed: Mutex<Owed>,
    /// Keeps the shared state alive for the work `Drop` hands to a task.
    owner: Arc<Shared>,
    /// Both guards are `Option`s only so that `Drop` can hand them to the
    /// task that settles what is owed, keeping the key's order.
    key_lock: Option<KeyLockGuard>,
    stage_barrier: Option<OwnedRwLockReadGuard<()>>,
}

/// The reconciliation queue refused an operation, so the follower may miss
/// the write. A write method declared `fail_closed` returns it (converted
/// with `From` into the method's error type); otherwise it is only logged and
/// counted in [`DualWrite::drift_count`](crate::DualWrite::drift_count).
///
/// Its message shows the key as logs do: by
/// [fingerprint](crate::Key::fingerprint) unless the wrapper was built with
/// [`log_keys(true)`](crate::Builder::log_keys). The field `key` holds the
/// key itself.
#[derive(Debug, thiserror::Error)]
#[error("the reconciliation queue refused the `{method}` operation on key `{shown_key}` for the {target} store: {source}")]
pub struct QueueRefused {
    /// The trait's namespace.
    pub namespace: &'static str,
    /// The write method.
    pub method: &'static str,
    /// The operation's key.
    pub key: Key,
    /// The key as the message shows it.
    pub shown_key: ShownKey,
    /// The store that would have missed the write.
    pub target: Side,
    /// What the queue said.
    #[source]
    pub source: QueueError,
}

/// How the follower gets this write.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowerPlan {
    /// Call it now.
    Call(Side),
    /// Queue the operation for it, for the reason given.
    Queue(Side, String),
}

impl<'a> WriteGuard<'a> {
    pub(super) async fn begin(
        owner: &'a Arc<Shared>,
        namespace: &'static str,
        method: &'static str,
        key: Key,
    ) -> Self {
        let shared: &'a Shared = owner;
        let (stage, stage_barrier, key_lock) = Self::enter(shared, namespace, &key).await;
        WriteGuard {
            shared,
            namespace,
            method,
            key,
            stage,
            delivery: shared.delivery,
            operation_id: OperationId::generate(),
            // Without a subscriber that takes INFO spans, no span at all:
            // building a disabled one still records its fields for `log`.
            span: if tracing::level_enabled!(tracing::Level::INFO) {
                tracing::info_span!(
                    "dualwrite.write",
                    namespace,
                    method,
                    stage = stage.as_str(),
                    side = stage.authoritative().as_str(),
                    follower = stage.follower().map_or("none", Side::as_str),
                )
            } else {
                tracing::Span::none()
            },
            owed: Mutex::new(Owed::Nothing),
            owner: Arc::clone(owner),
            key_lock,
            stage_barrier: Some(stage_barrier),
        }
    }

    /// Takes the stage barrier and the key's guard once no uncertain write
    /// of an overlapping key is waiting to be settled in the authoritative
    /// store (see `uncertain.rs`). While it waits it holds neither (the
    /// worker needs the key; a stage move must not wait for it), and it
    /// waits for at most `orphan_after` once a worker has run in this
    /// process, else the lease length.
    async fn enter(
        shared: &Shared,
        namespace: &'static str,
        key: &Key,
    ) -> (Stage, OwnedRwLockReadGuard<()>, Option<KeyLockGuard>) {
        // Set when the first wait starts: most writes never wait.
        let mut deadline = None;
        loop {
            // Barrier first, key second: a stage move waits for writes that
            // hold the barrier, and those must never wait for a writer that
            // does not.
            let (stage, barrier) = shared.stage.enter_write().await;
            let key_lock = Self::order_guard(shared, stage, namespace, key).await;
            if shared.uncertain.blocking(namespace, key).is_none() {
                return (stage, barrier, key_lock);
            }
            // Wait for a settle from here on, then look again.
            let settled = shared.uncertain.settled();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let Some(waiting_for) = shared.uncertain.blocking(namespace, key) else {
                return (stage, barrier, key_lock);
            };
            drop(key_lock);
            drop(barrier);
            let deadline = *deadline.get_or_insert_with(|| {
                // A worker of this process settles it as soon as the
                // authoritative store takes it; if none was ever started,
                // nobody here will.
                let patience = if shared.workers_started.load(Ordering::SeqCst) {
                    shared.orphan_after
                } else {
                    shared.lease
                };
                Instant::now() + patience
            });
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                tracing::error!(
                    namespace,
                    key = %key.shown(shared.log_keys),
                    entry = %waiting_for,
                    "a write goes ahead of an uncertain write of its key that the worker has not settled in time (is the worker running?); the stores may disagree on this key until it is repaired"
                );
                // Overtaken: applying it to the authoritative store now would
                // land after this write. The queue still takes it to the
                // follower, where this write supersedes it.
                shared.uncertain.settle(waiting_for, false);
                let (stage, barrier) = shared.stage.enter_write().await;
                let key_lock = Self::order_guard(shared, stage, namespace, key).await;
                return (stage, barrier, key_lock);
            }
        }
    }

    /// The key's order guard, in a stage with a follower. In `Off` and
    /// `Complete` the write reaches one store and queues nothing, so there
    /// is no second store whose order could differ from the first's (I4),
    /// and the guard is skipped. The stage barrier, still held, keeps these
    /// writes from overlapping a write of a stage with a follower; uncertain
    /// writes are still waited for, and none can arise in these stages (no
    /// operation is captured).
    async fn order_guard(
        shared: &Shared,
        stage: Stage,
        namespace: &'static str,
        key: &Key,
    ) -> Option<KeyLockGuard> {
        match stage.follower() {
            Some(_) => Some(shared.locks.lock(namespace, key.clone()).await),
            None => None,
        }
    }

    /// This write's id, as its store calls see it in
    /// [`operation_id()`](crate::operation_id()).
    pub fn operation_id(&self) -> OperationId {
        self.operation_id
    }

    /// The store whose result the caller gets.
    pub fn authoritative(&self) -> Side {
        self.stage.authoritative()
    }

    /// Whether this stage has a follower, so the operation must be captured.
    pub fn has_follower(&self) -> bool {
        self.stage.follower().is_some()
    }

    fn follower(&self) -> Side {
        self.stage
            .follower()
            .unwrap_or(self.authoritative().other())
    }

    fn shown_key(&self) -> ShownKey {
        self.key.shown(self.shared.log_keys)
    }

    fn set_owed(&self, owed: Owed) -> Owed {
        std::mem::replace(
            &mut *self
                .owed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            owed,
        )
    }

    /// With journaled delivery, writes the operation ahead to the queue,
    /// before the authoritative write, so that a crash between the two
    /// cannot lose it. Returns the prepared entry, to [`commit`](Self::commit)
    /// or [`abort`](Self::abort), or `None` with sync delivery.
    ///
    /// # Errors
    ///
    /// The queue refused the entry (logged). A fail-open write goes on and
    /// queues the operation after the authoritative write instead; a
    /// fail-closed write returns the error before touching either store.
    pub async fn prepare<Op: Operation>(&self, op: &Op) -> Result<Option<EntryId>, QueueRefused> {
        if self.delivery != Delivery::Journaled {
            return Ok(None);
        }
        let side = self.follower();
        let prepared = match self.entry(side, &self.key, op, "journaled delivery".to_owned(), false)
        {
            Ok(entry) => {
                self.shared
                    .queue
                    .prepare(entry, self.shared.orphan_after)
                    .await
            }
            Err(error) => Err(error),
        };
        match prepared {
            Ok(id) => {
                self.shared.stage.note_queued(side);
                self.set_owed(Owed::Prepared(id));
                Ok(Some(id))
            }
            Err(source) => {
                tracing::error!(
                    namespace = self.namespace,
                    method = self.method,
                    key = %self.shown_key(),
                    error = %source,
                    "could not write an operation ahead to the reconciliation queue"
                );
                Err(self.refusal(side, source))
            }
        }
    }

    /// Marks the start of the authoritative call: from here until it
    /// returns, a dropped caller leaves the write uncertain.
    fn enter_authoritative<Op: Operation + Clone>(&self, op: Option<&Op>) {
        // Without a follower nothing is captured or written ahead, so a
        // dropped caller owes nothing whatever happens.
        if !self.has_follower() {
            return;
        }
        let prepared = match self.set_owed(Owed::Nothing) {
            Owed::Prepared(id) => Some(id),
            _ => None,
        };
        let op = op.map(|op| Box::new(op.clone()) as Box<dyn OwedOperation>);
        self.set_owed(Owed::Authoritative { prepared, op });
    }

    /// Records the authoritative call's outcome in what the write owes.
    fn leave_authoritative(&self, succeeded: bool) {
        if !self.has_follower() {
            return;
        }
        let Owed::Authoritative { prepared, op } = self.set_owed(Owed::Nothing) else {
            return;
        };
        self.set_owed(match (succeeded, prepared, op) {
            (true, Some(id), _) => Owed::Commit(id),
            (true, None, Some(op)) => Owed::Follower(op),
            (false, Some(id), _) => Owed::Withdraw(id),
            (_, None, _) => Owed::Nothing,
        });
    }

    /// Awaits the authoritative store's write inside the write's span,
    /// counting and timing it (`dualwrite_calls_total`,
    /// `dualwrite_call_duration_seconds`). `op` is the captured operation
    /// when the stage has a follower.
    pub async fn authoritative_call<Op, F, T, E>(&self, op: Option<&Op>, write: F) -> Result<T, E>
    where
        Op: Operation + Clone,
        F: Future<Output = Result<T, E>>,
    {
        self.enter_authoritative(op);
        let started = Instant::now();
        let write = operation_id::scoped(Some(self.operation_id), write);
        let result = if self.span.is_disabled() {
            write.await
        } else {
            write.instrument(self.span.clone()).await
        };
        self.leave_authoritative(result.is_ok());
        self.record_authoritative(result.is_ok(), started);
        result
    }

    /// [`Self::authoritative_call`] for blocking traits.
    pub fn authoritative_call_blocking<Op, F, T, E>(
        &self,
        op: Option<&Op>,
        write: F,
    ) -> Result<T, E>
    where
        Op: Operation + Clone,
        F: FnOnce() -> Result<T, E>,
    {
        self.enter_authoritative(op);
        let started = Instant::now();
        let result = self
            .span
            .in_scope(|| operation_id::scoped_blocking(Some(self.operation_id), write));
        self.leave_authoritative(result.is_ok());
        self.record_authoritative(result.is_ok(), started);
        result
    }

    fn record_authoritative(&self, succeeded: bool, started: Instant) {
        let outcome = if succeeded {
            CallOutcome::Ok
        } else {
            CallOutcome::Error
        };
        self.record(self.authoritative(), outcome, started);
    }

    fn record(&self, side: Side, outcome: CallOutcome, started: Instant) {
        let elapsed = (outcome != CallOutcome::Timeout).then(|| started.elapsed());
        crate::observe::record_call(self.namespace, self.method, side, outcome, elapsed);
    }

    /// Makes a prepared operation available to the worker, after the
    /// authoritative write succeeded. Unless the wrapper was built with
    /// [`confirm_before_return`](crate::Builder::confirm_before_return),
    /// this only records that the confirmation is owed: `Drop` sends it
    /// when the write returns and finishes it in a task that keeps the
    /// key's guard and the stage barrier (the way it settles a cancelled
    /// write's commit, without the warning).
    pub async fn commit(&self, prepared: EntryId) {
        if !self.shared.confirm_before_return {
            self.set_owed(Owed::Confirm(prepared));
            return;
        }
        let shown = self.shown_key();
        confirm_entry(self.shared, prepared, self.namespace, self.method, &shown).await;
        self.set_owed(Owed::Nothing);
    }

    /// Records that the authoritative write failed, withdrawing the prepared
    /// operation if there is one: neither store may get it later (I1).
    ///
    /// The withdrawal is retried a few times while the key is held. If the
    /// queue still refuses, the entry is marked withdrawn in this process
    /// (the worker drops it instead of replaying it) and a background task
    /// keeps trying to remove it.
    pub async fn abort(&self, prepared: Option<EntryId>) {
        tracing::debug!(
            namespace = self.namespace,
            method = self.method,
            key = %self.shown_key(),
            side = %self.authoritative(),
            "authoritative write failed; follower untouched"
        );
        let Some(id) = prepared else {
            self.set_owed(Owed::Nothing);
            return;
        };
        let withdrawn = withdraw(&self.owner, id).await;
        self.set_owed(Owed::Nothing);
        if let Err(error) = withdrawn {
            tracing::error!(
                namespace = self.namespace,
                method = self.method,
                key = %self.shown_key(),
                %error,
                "could not withdraw a written-ahead operation whose authoritative write failed; it is marked withdrawn in this process (the worker drops it) and its removal is retried in the background"
            );
            self.shared.withdrawals.mark(id);
            spawn_withdrawal_retries(Arc::clone(&self.owner), id);
        }
    }

    fn entry<Op: Operation>(
        &self,
        side: Side,
        key: &Key,
        op: &Op,
        reason: String,
        uncertain: bool,
    ) -> Result<NewEntry, QueueError> {
        if let Some(key_sync) = &self.shared.key_sync {
            // Cross-instance mode: the follower gets the key's record as the
            // authoritative store holds it when the sync runs, never this
            // call; there is nothing uncertain about copying it.
            return key_sync.entry(self.namespace, op.method(), side, key, &reason);
        }
        let payload = operation_id::encode(op, self.operation_id).map_err(QueueError::Encode)?;
        Ok(NewEntry {
            namespace: self.namespace.to_owned(),
            target: side,
            key: key.clone(),
            method: op.method().to_owned(),
            version: Op::VERSION,
            payload,
            reason,
            uncertain,
        })
    }

    fn refusal(&self, target: Side, source: QueueError) -> QueueRefused {
        QueueRefused {
            namespace: self.namespace,
            method: self.method,
            key: self.key.clone(),
            shown_key: self.shown_key(),
            target,
            source,
        }
    }

    /// Delivers this write as `delivery` says, whatever the wrapper's default
    /// (the method-level `delivery = ..` option).
    /// In the cross-instance mode every write is journaled, whatever the
    /// method says (see [`KeySync`](crate::KeySync)).
    pub fn deliver_by(mut self, delivery: Delivery) -> Self {
        if self.shared.key_sync.is_none() {
            self.delivery = delivery;
        }
        self
    }
}
