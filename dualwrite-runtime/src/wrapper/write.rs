//! One write, as the generated code drives it (DESIGN "Write path").
//!
//! 1. [`WriteGuard::begin`] waits until no stage move is in progress, then
//!    takes the key's order guard and snapshots the stage. Holding both for
//!    the whole write is what makes two writers of one key reach both stores
//!    in the same order (I4), and keeps a stage move from landing between the
//!    two halves of a write.
//! 2. The generated code calls the authoritative store. On `Err` it returns
//!    at once: the follower is not called and nothing is queued (I1).
//! 3. [`WriteGuard::follower_plan`] decides how the follower gets the write:
//!    queued when delivery is journaled, when the key already has work for
//!    the follower (the write must go behind it), or when the circuit breaker
//!    is open; otherwise called.
//! 4. A called follower gets the timeout and panic isolation; any failure
//!    queues the operation ([`WriteGuard::enqueue`]) and counts towards the
//!    circuit breaker.

use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use tokio::time::Instant;
use tracing::Instrument;

use crate::observe::CallOutcome;
use tokio::sync::OwnedRwLockReadGuard;

use super::breaker::Admission;
use super::locks::KeyLockGuard;
use super::{Delivery, Shared};
use crate::op::{Key, Operation};
use crate::queue::{EntryId, NewEntry, QueueError};
use crate::stage::{Side, Stage};
use std::sync::Arc;

/// The state of one write in progress. Used by generated code only.
#[doc(hidden)]
pub struct WriteGuard<'a> {
    shared: &'a Shared,
    namespace: &'static str,
    method: &'static str,
    key: Key,
    stage: Stage,
    delivery: Delivery,
    /// `dualwrite.write`, entered around each store call of this write.
    span: tracing::Span,
    /// The operation the follower is owed once the authoritative write
    /// succeeded, until the follower has it or it is queued. If the caller's
    /// future is dropped meanwhile (a client went away), `Drop` queues it.
    owed: std::sync::Mutex<Option<NewEntry>>,
    /// Keeps the shared state alive for that last append.
    owner: Arc<Shared>,
    /// Both guards are `Option`s only so that `Drop` can hand them to the
    /// task that queues an owed operation, keeping the key's order.
    key_lock: Option<KeyLockGuard>,
    stage_barrier: Option<OwnedRwLockReadGuard<()>>,
}

/// The reconciliation queue refused an operation, so the follower may miss
/// the write. A write method declared `fail_closed` returns it (converted
/// with `From` into the method's error type); otherwise it is only logged and
/// counted in [`DualWrite::drift_count`](crate::DualWrite::drift_count).
#[derive(Debug, thiserror::Error)]
#[error("the reconciliation queue refused the `{method}` operation on key `{key}` for the {target} store: {source}")]
pub struct QueueRefused {
    /// The trait's namespace.
    pub namespace: &'static str,
    /// The write method.
    pub method: &'static str,
    /// The operation's key.
    pub key: Key,
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
        // Barrier first, key second: a stage move waits for writes that hold
        // the barrier, and those must never wait for a writer that does not.
        let (stage, stage_barrier) = shared.stage.enter_write().await;
        let key_lock = shared.locks.lock(namespace, key.clone()).await;
        WriteGuard {
            shared,
            namespace,
            method,
            key,
            stage,
            delivery: shared.delivery,
            span: tracing::info_span!(
                "dualwrite.write",
                namespace,
                method,
                stage = stage.as_str(),
                side = stage.authoritative().as_str(),
                follower = stage.follower().map_or("none", Side::as_str),
            ),
            owed: std::sync::Mutex::new(None),
            owner: Arc::clone(owner),
            key_lock: Some(key_lock),
            stage_barrier: Some(stage_barrier),
        }
    }

    /// The store whose result the caller gets.
    pub fn authoritative(&self) -> Side {
        self.stage.authoritative()
    }

    /// Awaits the authoritative store's write inside the write's span,
    /// counting and timing it (`dualwrite_calls_total`,
    /// `dualwrite_call_duration_seconds`).
    pub async fn authoritative_call<F, T, E>(&self, write: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        let started = Instant::now();
        let result = write.instrument(self.span.clone()).await;
        self.record(
            self.authoritative(),
            if result.is_ok() {
                CallOutcome::Ok
            } else {
                CallOutcome::Error
            },
            started,
        );
        result
    }

    /// [`Self::authoritative_call`] for blocking traits.
    pub fn authoritative_call_blocking<F, T, E>(&self, write: F) -> Result<T, E>
    where
        F: FnOnce() -> Result<T, E>,
    {
        let started = Instant::now();
        let result = self.span.in_scope(write);
        self.record(
            self.authoritative(),
            if result.is_ok() {
                CallOutcome::Ok
            } else {
                CallOutcome::Error
            },
            started,
        );
        result
    }

    fn record(&self, side: Side, outcome: CallOutcome, started: Instant) {
        let elapsed = (outcome != CallOutcome::Timeout).then(|| started.elapsed());
        crate::observe::record_call(self.namespace, self.method, side, outcome, elapsed);
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

    fn record_follower_call(&self, outcome: Result<(), String>) -> Result<(), String> {
        match &outcome {
            Ok(()) => {
                self.settle_owed();
                self.shared.breakers.record_success(self.follower());
            }
            Err(_) => self.shared.breakers.record_failure(self.follower()),
        }
        outcome
    }

    /// With journaled delivery, writes the operation ahead to the queue,
    /// before the authoritative write, so that a crash between the two
    /// cannot lose it. Returns the prepared entry, to [`commit`](Self::commit)
    /// or [`abort`](Self::abort), or `None` with sync delivery.
    ///
    /// # Errors
    ///
    /// The queue refused the entry (logged). A fail-open write goes on and
    /// appends the operation after the authoritative write instead; a
    /// fail-closed write returns the error before touching either store.
    pub async fn prepare<Op: Operation>(&self, op: &Op) -> Result<Option<EntryId>, QueueRefused> {
        if self.delivery != Delivery::Journaled {
            return Ok(None);
        }
        let side = self.follower();
        let prepared = match self.entry(side, op, "journaled delivery".to_owned()) {
            Ok(entry) => {
                self.shared
                    .queue
                    .prepare(entry, self.shared.orphan_after)
                    .await
            }
            Err(error) => Err(error),
        };
        prepared.map(Some).map_err(|source| {
            tracing::error!(
                namespace = self.namespace,
                method = self.method,
                key = %self.key,
                error = %source,
                "could not write an operation ahead to the reconciliation queue"
            );
            self.refusal(side, source)
        })
    }

    /// [`Self::prepare`] for blocking traits.
    pub fn prepare_blocking<Op: Operation>(
        &self,
        op: &Op,
    ) -> Result<Option<EntryId>, QueueRefused> {
        futures::executor::block_on(self.prepare(op))
    }

    /// Makes a prepared operation available to the worker, after the
    /// authoritative write succeeded.
    pub async fn commit(&self, prepared: EntryId) {
        match self.shared.queue.commit(prepared).await {
            Ok(()) => self.shared.queued.notify_one(),
            // The entry stays prepared; the worker replays it as an orphan
            // once `orphan_after` has passed, so nothing is lost.
            Err(error) => tracing::error!(
                namespace = self.namespace,
                method = self.method,
                key = %self.key,
                %error,
                "could not confirm a written-ahead operation; the worker will replay it after the orphan timeout"
            ),
        }
    }

    /// [`Self::commit`] for blocking traits.
    pub fn commit_blocking(&self, prepared: EntryId) {
        futures::executor::block_on(self.commit(prepared))
    }

    /// Records that the authoritative write failed, withdrawing the prepared
    /// operation if there is one: the follower must not get it (I1).
    pub async fn abort(&self, prepared: Option<EntryId>) {
        self.authoritative_failed();
        if let Some(id) = prepared {
            if let Err(error) = self.shared.queue.abort(id).await {
                tracing::error!(
                    namespace = self.namespace,
                    method = self.method,
                    key = %self.key,
                    %error,
                    "could not withdraw a written-ahead operation whose authoritative write failed; it will be replayed to both stores after the orphan timeout"
                );
            }
        }
    }

    /// [`Self::abort`] for blocking traits.
    pub fn abort_blocking(&self, prepared: Option<EntryId>) {
        futures::executor::block_on(self.abort(prepared))
    }

    fn entry<Op: Operation>(
        &self,
        side: Side,
        op: &Op,
        reason: String,
    ) -> Result<NewEntry, crate::queue::QueueError> {
        let payload = serde_json::to_vec(op).map_err(crate::queue::QueueError::Encode)?;
        Ok(NewEntry {
            namespace: self.namespace.to_owned(),
            target: side,
            key: self.key.clone(),
            method: op.method().to_owned(),
            version: Op::VERSION,
            payload,
            reason,
        })
    }

    /// Records that the authoritative write failed; nothing else happens.
    pub fn authoritative_failed(&self) {
        tracing::debug!(
            namespace = self.namespace,
            method = self.method,
            key = %self.key,
            side = %self.authoritative(),
            "authoritative write failed; follower untouched"
        );
    }

    /// Decides how the follower gets the write. Call only when
    /// [`has_follower`](Self::has_follower).
    pub async fn follower_plan<Op: Operation>(&self, op: &Op) -> FollowerPlan {
        let side = self.follower();
        // From here until the follower has the write (or it is queued), a
        // dropped caller must not lose it.
        if let Ok(entry) = self.entry(
            side,
            op,
            "the caller went away before the follower had the write".to_owned(),
        ) {
            *self
                .owed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(entry);
        }
        if self.delivery == Delivery::Journaled {
            return FollowerPlan::Queue(side, "journaled delivery".to_owned());
        }
        match self
            .shared
            .queue
            .has_work(self.namespace, side, &self.key)
            .await
        {
            Ok(false) => match self.shared.breakers.admit(side) {
                Admission::Call | Admission::Probe => FollowerPlan::Call(side),
                Admission::Skip => FollowerPlan::Queue(
                    side,
                    "the circuit breaker is open: the follower has been failing".to_owned(),
                ),
            },
            Ok(true) => FollowerPlan::Queue(
                side,
                "the key already had queued work for this store".to_owned(),
            ),
            // If the queue cannot say, calling the follower directly could
            // overtake queued work; queueing is the safe choice (and if the
            // queue is down, the append fails and is reported).
            Err(error) => FollowerPlan::Queue(
                side,
                format!("could not check the queue for earlier work: {error}"),
            ),
        }
    }

    /// [`Self::follower_plan`] for blocking traits.
    pub fn follower_plan_blocking<Op: Operation>(&self, op: &Op) -> FollowerPlan {
        futures::executor::block_on(self.follower_plan(op))
    }

    /// Awaits a follower write with the timeout, catching panics. Returns
    /// why it failed, if it did.
    pub async fn call_follower<F, T, E>(&self, write: F) -> Result<(), String>
    where
        F: Future<Output = Result<T, E>>,
        E: Display,
    {
        let timeout = self.shared.follower_timeout;
        let started = Instant::now();
        let write = AssertUnwindSafe(write)
            .catch_unwind()
            .instrument(self.span.clone());
        let (outcome, kind) = match tokio::time::timeout(timeout, write).await {
            Ok(Ok(Ok(_))) => (Ok(()), CallOutcome::Ok),
            Ok(Ok(Err(error))) => (Err(error.to_string()), CallOutcome::Error),
            Ok(Err(panic)) => (
                Err(format!("panicked: {}", crate::panic_message(&*panic))),
                CallOutcome::Panic,
            ),
            Err(_) => (
                Err(format!("timed out after {timeout:?}")),
                CallOutcome::Timeout,
            ),
        };
        self.record(self.follower(), kind, started);
        self.record_follower_call(outcome)
    }

    /// [`Self::call_follower`] for blocking traits (no timeout can apply).
    pub fn call_follower_blocking<F, T, E>(&self, write: F) -> Result<(), String>
    where
        F: FnOnce() -> Result<T, E>,
        E: Display,
    {
        let started = Instant::now();
        let (outcome, kind) = match self
            .span
            .in_scope(|| std::panic::catch_unwind(AssertUnwindSafe(write)))
        {
            Ok(Ok(_)) => (Ok(()), CallOutcome::Ok),
            Ok(Err(error)) => (Err(error.to_string()), CallOutcome::Error),
            Err(panic) => (
                Err(format!("panicked: {}", crate::panic_message(&*panic))),
                CallOutcome::Panic,
            ),
        };
        self.record(self.follower(), kind, started);
        self.record_follower_call(outcome)
    }

    /// Queues the operation for `side`.
    ///
    /// # Errors
    ///
    /// The queue refused it: the write is lost to the follower. That is
    /// logged at error level with the key and counted in
    /// [`DualWrite::drift_count`](crate::DualWrite::drift_count); a fail-open
    /// write still returns the authoritative result, a fail-closed one this
    /// error.
    pub async fn enqueue<Op: Operation>(
        &self,
        side: Side,
        op: &Op,
        reason: String,
    ) -> Result<(), QueueRefused> {
        tracing::warn!(
            namespace = self.namespace,
            method = self.method,
            key = %self.key,
            follower = %side,
            reason = %reason,
            "follower write not applied; queued for reconciliation"
        );
        let appended = match self.entry(side, op, reason) {
            Ok(entry) => self.shared.queue.append(entry).await,
            Err(error) => Err(error),
        };
        // Queued or refused (and reported), the follower is owed nothing more.
        self.settle_owed();
        match appended {
            Ok(_) => {
                self.shared.queued.notify_one();
                Ok(())
            }
            Err(error) => {
                self.shared.drift.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    namespace = self.namespace,
                    method = self.method,
                    key = %self.key,
                    follower = %side,
                    %error,
                    "reconciliation queue refused an operation: the follower will miss this write until it is repaired"
                );
                Err(self.refusal(side, error))
            }
        }
    }

    fn settle_owed(&self) {
        self.owed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
    }

    fn refusal(&self, target: Side, source: QueueError) -> QueueRefused {
        QueueRefused {
            namespace: self.namespace,
            method: self.method,
            key: self.key.clone(),
            target,
            source,
        }
    }

    /// Delivers this write as `delivery` says, whatever the wrapper's default
    /// (the method-level `delivery = ..` option).
    pub fn deliver_by(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// [`Self::enqueue`] for blocking traits.
    pub fn enqueue_blocking<Op: Operation>(
        &self,
        side: Side,
        op: &Op,
        reason: String,
    ) -> Result<(), QueueRefused> {
        futures::executor::block_on(self.enqueue(side, op, reason))
    }
}

impl Drop for WriteGuard<'_> {
    /// The caller's future was dropped after the authoritative write
    /// succeeded but before the follower had the write: queue it now, in a
    /// task that keeps the key's order guard until it is queued, so the
    /// follower still converges (I2) and nothing is lost silently (I7).
    fn drop(&mut self) {
        let owed = self
            .owed
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let Some(entry) = owed else { return };
        let shared = Arc::clone(&self.owner);
        let held = (self.key_lock.take(), self.stage_barrier.take());
        let (namespace, method, key) = (self.namespace, self.method, self.key.clone());
        tracing::warn!(namespace, method, key = %key, "write cancelled before the follower had it; queueing it");
        let append = async move {
            let _held = held;
            match shared.queue.append(entry).await {
                Ok(_) => shared.queued.notify_one(),
                Err(error) => {
                    shared.drift.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(namespace, method, key = %key, %error, "reconciliation queue refused the operation of a cancelled write: the follower will miss it until it is repaired");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(append);
            }
            Err(_) => futures::executor::block_on(append),
        }
    }
}
