use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use super::{Side, Stage};
use crate::queue::{QueueError, QueueStats, ReconciliationQueue, TargetStats};

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
/// which is logged.
///
/// A move waits for writes already in progress to finish, and writes that
/// start meanwhile wait for the move, so no write straddles two stages.
#[derive(Clone)]
pub struct StageHandle {
    inner: Arc<Inner>,
}

struct Inner {
    stage: AtomicU8,
    /// Writes hold it shared; a stage change holds it exclusively.
    barrier: Arc<RwLock<()>>,
    queues: Mutex<Vec<Arc<dyn ReconciliationQueue>>>,
}

impl std::fmt::Debug for StageHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageHandle")
            .field("stage", &self.get())
            .finish_non_exhaustive()
    }
}

/// A stage move that took place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageChange {
    /// The stage before.
    pub from: Stage,
    /// The stage now.
    pub to: Stage,
    /// The reason given to [`StageHandle::force`], if the move was forced.
    pub forced: Option<String>,
}

/// A stage move that was refused. The stage is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// The store about to become authoritative still has queued work.
    #[error(
        "refusing to move from `{from}` to `{to}`: the {side} store would become authoritative while {} pending, {} in-flight and {} dead operations are queued for it; let the worker drain them (retry or drop dead letters), or force the move with a reason",
        backlog.pending, backlog.in_flight, backlog.dead
    )]
    Backlog {
        /// The current stage.
        from: Stage,
        /// The requested stage.
        to: Stage,
        /// The store that would become authoritative.
        side: Side,
        /// Its queued work.
        backlog: TargetStats,
    },
    /// Leaving `Complete` would make the old store serve data it stopped receiving.
    #[error(
        "refusing to move from `complete` to `{to}`: the old store has not received writes since the move to `complete`; force the move with a reason if you have repaired it"
    )]
    LeavingComplete {
        /// The requested stage.
        to: Stage,
    },
    /// The queue could not be read to check the move.
    #[error("refusing to move from `{from}` to `{to}`: the reconciliation queue could not be checked: {source}")]
    Queue {
        /// The current stage.
        from: Stage,
        /// The requested stage.
        to: Stage,
        /// What the queue said.
        #[source]
        source: QueueError,
    },
}

impl StageHandle {
    /// A handle starting at `stage`.
    pub fn new(stage: Stage) -> Self {
        StageHandle {
            inner: Arc::new(Inner {
                stage: AtomicU8::new(stage.to_u8()),
                barrier: Arc::new(RwLock::new(())),
                queues: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The current stage.
    pub fn get(&self) -> Stage {
        Stage::from_u8(self.inner.stage.load(Ordering::Acquire))
    }

    /// Moves to `to`, unless a [guardrail](Self#guardrails) refuses.
    ///
    /// # Errors
    ///
    /// [`StageError::Backlog`] when the store that would become authoritative
    /// has queued work, [`StageError::LeavingComplete`] when leaving
    /// `Complete`, [`StageError::Queue`] when a queue cannot be read. The
    /// stage is unchanged after an error.
    ///
    /// # Cancel safety
    ///
    /// Cancelling before it returns leaves the stage unchanged.
    pub async fn set(&self, to: Stage) -> Result<StageChange, StageError> {
        let _barrier = self.inner.barrier.write().await;
        let from = self.get();
        if from == Stage::Complete && to != Stage::Complete {
            return Err(StageError::LeavingComplete { to });
        }
        if from.authoritative() != to.authoritative() {
            let side = to.authoritative();
            let backlog = self
                .backlog(side)
                .await
                .map_err(|source| StageError::Queue { from, to, source })?;
            if !backlog.is_empty() {
                return Err(StageError::Backlog {
                    from,
                    to,
                    side,
                    backlog,
                });
            }
        }
        self.inner.stage.store(to.to_u8(), Ordering::Release);
        tracing::info!(%from, %to, "dualwrite stage changed");
        Ok(StageChange {
            from,
            to,
            forced: None,
        })
    }

    /// Moves to `to` whatever the guardrails say, logging `reason` at warn level.
    pub async fn force(&self, to: Stage, reason: &str) -> StageChange {
        let _barrier = self.inner.barrier.write().await;
        let from = self.get();
        self.inner.stage.store(to.to_u8(), Ordering::Release);
        tracing::warn!(%from, %to, reason, "dualwrite stage change forced past the guardrails");
        StageChange {
            from,
            to,
            forced: Some(reason.to_owned()),
        }
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

    pub(crate) fn attach_queue(&self, queue: &Arc<dyn ReconciliationQueue>) {
        let mut queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        if !queues.iter().any(|known| Arc::ptr_eq(known, queue)) {
            queues.push(Arc::clone(queue));
        }
    }

    /// Held by a write for its whole duration, so a stage move never lands
    /// between a write's authoritative and follower halves.
    pub(crate) async fn enter_write(&self) -> (Stage, OwnedRwLockReadGuard<()>) {
        let guard = Arc::clone(&self.inner.barrier).read_owned().await;
        (self.get(), guard)
    }
}
