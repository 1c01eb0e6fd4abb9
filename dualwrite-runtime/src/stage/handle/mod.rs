use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedRwLockReadGuard, RwLock};

mod connect;
mod error;
mod fence;
mod guardrails;
mod sync;

use error::Committed;
pub use error::StageError;
pub use fence::Fence;

use super::source::{SourceStatus, StageRecord, StageSource};
use super::window::{ComparisonWindow, MismatchGuard, MismatchRate};
use super::{Side, Stage};
use crate::observe::{self, ComparisonOutcome, Observer, Observers, StageChange};
use crate::op::Key;
use crate::queue::{QueueError, QueueStats, ReconciliationQueue, TargetStats};
use crate::rollout::Rollout;

/// A shared, changeable [`Stage`].
///
/// Cheap to clone; clones see the same stage. Every wrapper built with
/// [`Builder::stage_handle`](crate::Builder::stage_handle) reads it on each
/// call, so a change takes effect on the next call.
///
/// # Guardrails
///
/// [`set`](Self::set) refuses a move that changes which store is
/// authoritative while the store about to become authoritative still has
/// queued work (pending, in flight or dead) in any queue of a wrapper using
/// this handle: that work is older than anything the store would accept as
/// authoritative, and replaying it later would overwrite newer data. It also
/// refuses to leave [`Stage::Complete`], after which the old store no longer
/// receives writes. [`force`](Self::force) makes either move with a reason,
/// which is logged and passed to observers.
///
/// A move that makes the new store serve reads (into `Live`, `RampDown` or
/// `Complete` from an earlier stage, or a [rollout](Self::set_rollout) to
/// them) is also refused while too many recent compared reads disagreed:
/// see [`MismatchGuard`].
///
/// A move waits for writes already in progress to finish, and writes that
/// start meanwhile wait for the move, so no write straddles two stages.
/// Only the switch itself runs under that barrier: the queue's counts, the
/// shared source's read and the observers run outside it (with a shared
/// source, storing the move is the one call made under the barrier, since
/// the move must not apply here unless stored). Work queued by a write that
/// finished between the check of the counts and the switch is noticed, and
/// the counts are checked again (the last of three tries holds the barrier
/// while it checks). Moves are made one at a time.
///
/// # Shared across instances
///
/// [`with_source`](Self::with_source) ties the handle to a [`StageSource`]
/// (a row in the SQLite file beside the queue): the stage is read from it at
/// start, every move is written to it, and it is polled so that a move made
/// by any instance reaches all of them. While it cannot be read, the handle
/// keeps the stage it last knew and says so ([`source_status`](Self::source_status)).
///
/// Between a move and the others' next poll, instances write under
/// different stages. [`with_fenced_source`](Self::with_fenced_source)
/// closes that window: moves are made in two steps, writes held between
/// them, so that no instance writes a store another has stopped writing
/// (see [`Fence`]).
#[derive(Clone)]
pub struct StageHandle {
    inner: Arc<Inner>,
}

struct Inner {
    stage: AtomicU8,
    /// The rollout by key ([`Rollout::to_bits`]), 0 for none.
    rollout: AtomicU32,
    /// Writes hold it shared; a stage change holds it exclusively.
    barrier: Arc<RwLock<()>>,
    /// The per-key order guards of every wrapper built with this handle, so
    /// that wrappers moving together also order each key together.
    key_locks: Arc<crate::order::KeyLocks>,
    queues: Mutex<Vec<Arc<dyn ReconciliationQueue>>>,
    observers: Mutex<Observers>,
    comparisons: ComparisonWindow,
    guard: Mutex<MismatchGuard>,
    source: Option<Arc<dyn StageSource>>,
    /// Serialises moves (`set`, `force`, `set_rollout`, `refresh`, polls
    /// that apply a change), whose I/O runs under it rather than under the
    /// barrier.
    moves: tokio::sync::Mutex<()>,
    /// Operations queued for each target (old, new) through wrappers using
    /// this handle, counted once the queue took them: a move compares the
    /// counts from before its backlog check with those under the barrier.
    queued: [AtomicU64; 2],
    /// The source's version of the stage in use.
    version: AtomicU64,
    status: Mutex<SourceStatus>,
    /// Set for a handle built with `with_fenced_source`.
    fence: Option<fence::FenceState>,
}

impl std::fmt::Debug for StageHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageHandle")
            .field("stage", &self.get())
            .finish_non_exhaustive()
    }
}

impl StageHandle {
    /// A handle starting at `stage`.
    pub fn new(stage: Stage) -> Self {
        Self::build(stage, None, None)
    }

    fn build(
        stage: Stage,
        source: Option<Arc<dyn StageSource>>,
        fence: Option<fence::FenceState>,
    ) -> Self {
        let status = if source.is_some() {
            SourceStatus::InSync { version: 0 }
        } else {
            SourceStatus::Local
        };
        StageHandle {
            inner: Arc::new(Inner {
                stage: AtomicU8::new(stage.to_u8()),
                rollout: AtomicU32::new(0),
                barrier: Arc::new(RwLock::new(())),
                key_locks: Arc::default(),
                queues: Mutex::new(Vec::new()),
                observers: Mutex::new(Observers::default()),
                comparisons: ComparisonWindow::default(),
                guard: Mutex::new(MismatchGuard::default()),
                source,
                moves: tokio::sync::Mutex::new(()),
                queued: [AtomicU64::new(0), AtomicU64::new(0)],
                version: AtomicU64::new(0),
                status: Mutex::new(status),
                fence,
            }),
        }
    }

    /// The current stage.
    pub fn get(&self) -> Stage {
        Stage::from_u8(self.inner.stage.load(Ordering::Acquire))
    }

    /// The rollout by key in force, if any.
    pub fn rollout(&self) -> Option<Rollout> {
        Rollout::from_bits(self.inner.rollout.load(Ordering::Acquire))
    }

    /// The stage a read is routed by: the base stage, or the rollout's stage
    /// when `key` is in the rollout. `key` is called only when a rollout
    /// could apply.
    pub(crate) fn read_stage(
        &self,
        key: impl FnOnce() -> Option<Key>,
    ) -> (Stage, Option<Option<Key>>) {
        let base = self.get();
        match self.rollout() {
            Some(rollout) if rollout.base() == base => {
                let key = key();
                (rollout.stage_for(base, key.as_ref()), Some(key))
            }
            _ => (base, None),
        }
    }

    /// Moves to `to`, unless a [guardrail](Self#guardrails) refuses.
    ///
    /// # Errors
    ///
    /// [`StageError::Backlog`] when the store that would become authoritative
    /// has queued work, [`StageError::MismatchRate`] when too many recent
    /// comparisons disagreed for the new store to serve reads,
    /// [`StageError::LeavingComplete`] when leaving `Complete`,
    /// [`StageError::Queue`] when a queue cannot be read; with a shared
    /// source, [`StageError::Source`] when it cannot be read or written and
    /// [`StageError::Conflict`] when another instance moved first. The stage
    /// is unchanged after an error (except that a conflict makes this handle
    /// follow the other instance's move).
    ///
    /// # Cancel safety
    ///
    /// Cancelling before it returns leaves the stage unchanged here; with a
    /// shared source, a move already stored reaches this handle on the next
    /// poll.
    pub async fn set(&self, to: Stage) -> Result<StageChange, StageError> {
        let _moves = self.inner.moves.lock().await;
        const TRIES: usize = 3;
        for attempt in 1..=TRIES {
            self.sync_source(to).await?;
            let from = self.get();
            if from == Stage::Complete && to != Stage::Complete {
                return Err(StageError::LeavingComplete { to });
            }
            // The last try checks under the barrier, so that a busy stream
            // of writes queueing work cannot keep the move from deciding.
            let held = if attempt == TRIES {
                Some(self.inner.barrier.write().await)
            } else {
                None
            };
            let counts = self.queued_counts();
            self.check_backlog(from, to).await?;
            if to.serving() == Side::New && to > from {
                self.check_mismatch_rate(from, to)?;
            }
            let barrier = match held {
                Some(barrier) => barrier,
                None => self.inner.barrier.write().await,
            };
            if self.queued_counts() != counts {
                // A write queued work after the check: check again.
                drop(barrier);
                continue;
            }
            let rollout = self.rollout();
            let change = self.commit_locked(from, to, rollout, None).await;
            drop(barrier);
            return self.announce_committed(change).await;
        }
        unreachable!("the last try holds the barrier, so the counts cannot change")
    }

    fn queued_counts(&self) -> [u64; 2] {
        [
            self.inner.queued[0].load(Ordering::SeqCst),
            self.inner.queued[1].load(Ordering::SeqCst),
        ]
    }

    /// Counts an operation queued for `target` (after the queue took it).
    pub(crate) fn note_queued(&self, target: Side) {
        let index = match target {
            Side::Old => 0,
            Side::New => 1,
        };
        self.inner.queued[index].fetch_add(1, Ordering::SeqCst);
    }

    /// Waits until no write is in progress and holds off new ones while the
    /// guard lives (graceful shutdown).
    pub(crate) async fn quiesce_writes(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.inner.barrier.write().await
    }

    /// Moves to `to` whatever the guardrails say. `reason` is logged at warn
    /// level, stored with the move in a shared source, and passed to
    /// observers (here and, through the source, on other instances).
    ///
    /// # Errors
    ///
    /// Only with a shared source: [`StageError::Source`] when it cannot be
    /// written, [`StageError::Conflict`] when another instance moved first.
    pub async fn force(&self, to: Stage, reason: &str) -> Result<StageChange, StageError> {
        let _moves = self.inner.moves.lock().await;
        self.sync_source(to).await?;
        let from = self.get();
        let rollout = self.rollout();
        let barrier = self.inner.barrier.write().await;
        let change = self
            .commit_locked(from, to, rollout, Some(reason.to_owned()))
            .await;
        drop(barrier);
        self.announce_committed(change).await
    }

    /// Sets (or with `None` clears) the rollout by key. Widening a rollout
    /// to a stage where the new store serves reads is refused like the move
    /// itself while the mismatch rate is above the bound.
    ///
    /// # Errors
    ///
    /// [`StageError::MismatchRate`], and with a shared source
    /// [`StageError::Source`] or [`StageError::Conflict`].
    pub async fn set_rollout(&self, rollout: Option<Rollout>) -> Result<StageChange, StageError> {
        let _moves = self.inner.moves.lock().await;
        let stage = self.get();
        let target = rollout.map_or(stage, Rollout::stage);
        self.sync_source(target).await?;
        let stage = self.get();
        if let Some(rollout) = rollout {
            let widens = self.rollout().is_none_or(|current| {
                current.stage() != rollout.stage()
                    || current.basis_points() < rollout.basis_points()
            });
            if widens && rollout.stage().serving() == Side::New && rollout.stage() > stage {
                self.check_mismatch_rate(stage, rollout.stage())?;
            }
        }
        let barrier = self.inner.barrier.write().await;
        let change = self.commit_locked(stage, stage, rollout, None).await;
        drop(barrier);
        self.announce_committed(change).await
    }

    /// Reads the shared source now and applies a move stored by another
    /// instance, without waiting for the next poll. Does nothing without a
    /// source.
    ///
    /// # Errors
    ///
    /// [`StageError::Source`] when the source cannot be read; the stage in
    /// use is kept.
    pub async fn refresh(&self) -> Result<(), StageError> {
        let _moves = self.inner.moves.lock().await;
        let stage = self.get();
        self.sync_source(stage).await
    }

    /// How this handle's stage relates to its shared source.
    pub fn source_status(&self) -> SourceStatus {
        self.lock_status().clone()
    }

    /// Sets the mismatch-rate guardrail. Default: [`MismatchGuard::default`].
    pub fn set_mismatch_guard(&self, guard: MismatchGuard) {
        *self.inner.guard.lock().unwrap_or_else(|p| p.into_inner()) = guard;
    }

    /// The mismatch-rate guardrail in force.
    pub fn mismatch_guard(&self) -> MismatchGuard {
        *self.inner.guard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The compared reads (and how many disagreed) within the guardrail's
    /// window, made through wrappers using this handle.
    pub fn mismatch_rate(&self) -> MismatchRate {
        let window = self.mismatch_guard().window_length();
        self.inner.comparisons.rate(window)
    }

    /// Forgets the comparisons made so far, after fixing what made the
    /// stores disagree, so that the guardrail judges fresh comparisons only.
    pub fn reset_comparisons(&self) {
        self.inner.comparisons.clear();
        tracing::info!("dualwrite comparison window reset");
    }

    /// Adds an observer of stage changes and stage-source errors. Wrappers
    /// built with this handle add theirs.
    pub fn add_observer(&self, observer: Arc<dyn Observer>) {
        self.attach_observers(&Observers::new(vec![observer]));
    }

    pub(crate) fn attach_observers(&self, observers: &Observers) {
        let mut current = self
            .inner
            .observers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *current = observe::merged_observers(&current, observers);
    }

    fn observers(&self) -> Observers {
        self.inner
            .observers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn record_comparison(&self, outcome: ComparisonOutcome) {
        let window = self.mismatch_guard().window_length();
        self.inner
            .comparisons
            .record(window, outcome.is_disagreement());
    }

    fn store_local(&self, stage: Stage, rollout: Option<Rollout>) {
        self.inner.stage.store(stage.to_u8(), Ordering::Release);
        self.inner
            .rollout
            .store(rollout.map_or(0, Rollout::to_bits), Ordering::Release);
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, SourceStatus> {
        self.inner.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores the move in the source (if any), then applies it here. Runs
    /// under the barrier; what it returns is announced after the barrier is
    /// released ([`announce_committed`](Self::announce_committed)).
    async fn commit_locked(
        &self,
        from: Stage,
        to: Stage,
        rollout: Option<Rollout>,
        forced: Option<String>,
    ) -> Committed {
        if let Some(source) = &self.inner.source {
            if from != to || rollout != self.rollout() {
                if let Err(committed) = self.fence_move(&**source, from, to).await {
                    return committed;
                }
            }
            let record = StageRecord {
                rollout,
                reason: forced.clone(),
                ..StageRecord::new(to)
            };
            let expected = self.inner.version.load(Ordering::Acquire);
            match source.store(Some(expected), &record).await {
                Ok(Some(version)) => self.inner.version.store(version, Ordering::Release),
                Ok(None) => return Committed::Conflict { from, to },
                Err(source) => return Committed::Failed(StageError::Source { from, to, source }),
            }
            self.apply_fence(None);
        }
        let change = StageChange {
            from,
            to,
            forced,
            rollout,
        };
        self.store_local(change.to, change.rollout);
        Committed::Moved(change)
    }

    /// Announces a committed move (logs, metrics, observers), or on a
    /// conflict follows the other instance's move; outside the barrier.
    async fn announce_committed(&self, committed: Committed) -> Result<StageChange, StageError> {
        match committed {
            Committed::Moved(change) => {
                self.announce(&change);
                Ok(change)
            }
            Committed::Failed(error) => Err(error),
            Committed::Conflict { from, to } => {
                let _ = self.sync_source(to).await;
                Err(StageError::Conflict {
                    from,
                    to,
                    now: self.get(),
                })
            }
        }
    }

    /// Logs, counts and reports a move that took place. Never under the
    /// barrier: an observer may write through a wrapper.
    fn announce(&self, change: &StageChange) {
        let (from, to) = (change.from, change.to);
        let rollout = change.rollout.map(|rollout| rollout.to_string());
        match &change.forced {
            None if from == to => tracing::info!(stage = %to, rollout, "dualwrite rollout changed"),
            None => tracing::info!(%from, %to, rollout, "dualwrite stage changed"),
            Some(reason) => tracing::warn!(
                %from,
                %to,
                rollout,
                reason = reason.as_str(),
                "dualwrite stage change forced past the guardrails"
            ),
        }
        if from != to {
            observe::record_stage_change(change);
        }
        self.observers().stage_change(change);
    }

    /// The queued work for `side`, summed over every attached queue.
    async fn backlog(&self, side: Side) -> Result<TargetStats, QueueError> {
        let queues: Vec<_> = self
            .inner
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut total = TargetStats::default();
        for queue in queues {
            let stats: QueueStats = queue.stats().await?;
            let target = stats.target(side);
            total.pending += target.pending;
            total.in_flight += target.in_flight;
            total.dead += target.dead;
            total.blocked_keys += target.blocked_keys;
            total.oldest_pending = match (total.oldest_pending, target.oldest_pending) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(total)
    }

    pub(crate) fn key_locks(&self) -> Arc<crate::order::KeyLocks> {
        Arc::clone(&self.inner.key_locks)
    }

    /// Makes the backlog guardrail count `queue`'s work too. Wrappers built
    /// with this handle attach their queue themselves; this is for a process
    /// that moves a service's stage without running its wrapper (the
    /// `dualwrite` command-line tool opens the service's queue and its
    /// shared stage source, and moves the stage under the same guardrails).
    pub fn watch_queue(&self, queue: Arc<dyn ReconciliationQueue>) {
        self.attach_queue(&queue);
    }

    pub(crate) fn attach_queue(&self, queue: &Arc<dyn ReconciliationQueue>) {
        let mut queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        if !queues.iter().any(|known| Arc::ptr_eq(known, queue)) {
            queues.push(Arc::clone(queue));
        }
    }

    /// Held by a write for its whole duration, so a stage move never lands
    /// between a write's authoritative and follower halves.
    pub(crate) async fn enter_write(&self) -> (Stage, OwnedRwLockReadGuard<()>) {
        loop {
            self.fence_released().await;
            let guard = Arc::clone(&self.inner.barrier).read_owned().await;
            // A fence applied while this waited for the barrier holds it.
            if !self.fence_holds() {
                return (self.get(), guard);
            }
        }
    }
}
