//! Fenced stage moves: instances sharing a stage source never write under
//! two stages at once.

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::error::Committed;
use super::{StageError, StageHandle};
use crate::rollout::Rollout;
use crate::stage::source::{StageRecord, StageSource, StageSourceError};
use crate::vocabulary::Stage;

/// How long a move made by a handle that is not fenced itself waits for
/// fenced instances to acknowledge.
const UNFENCED_MOVER_PATIENCE: Duration = Duration::from_secs(30);

/// How often a fenced move reads the acknowledgements while it waits.
const ACK_POLL: Duration = Duration::from_millis(20);

/// Fenced stage moves, for instances that share a stage source
/// ([`StageHandle::with_fenced_source`]).
///
/// # The problem
///
/// Each instance reads the shared stage every poll interval, so for up to
/// that long after a move some instances write under the old stage and some
/// under the new one. Moving from `Off` to `DualWrite`, an instance still in
/// `Off` writes only the old store while another already writes both: the
/// new store misses its writes. Moving from `Shadow` to `Live`, one instance
/// treats the old store as the truth and another the new one, and a write of
/// each to one key can leave each store with the other's value.
///
/// # What a fence does
///
/// A fenced move is made in two steps. First the mover stores the current
/// stage marked *moving to* the new one. Every fenced instance that reads
/// that holds new writes, waits for its writes in progress to finish, and
/// acknowledges the version in the source. Once every instance with an
/// unexpired acknowledgement has acknowledged it, no write routed by the old
/// stage is in progress anywhere, and the mover stores the new stage; each
/// instance lets its writes go on as it reads it. Writes wait for at most
/// about two poll intervals during a move; none is ever routed by two
/// stages.
///
/// An instance that cannot read the source for longer than the `lease`
/// holds its writes until it can (they wait, or fail by the caller's own
/// timeout): it cannot know whether a move is under way. Its
/// acknowledgement expires after the same lease, so a mover never waits
/// for an instance that is gone; a mover waits at most `patience` for the
/// others, then withdraws the fence and reports
/// [`StageError::Fence`], naming them.
///
/// Every handle on the source fences its moves while any fenced instance's
/// acknowledgement is live, fenced itself or not (the `dualwrite` command
/// line tool moves stages that way).
///
/// Writes routed by an instance take the stage barrier for their whole
/// duration, so "in progress" includes a slow authoritative call. A write
/// that started before its instance lost the source keeps going after the
/// lease: keep the lease longer than your slowest write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    instance: String,
    pub(super) lease: Duration,
    patience: Duration,
}

impl Fence {
    /// This instance's fence, under a name unique among the instances
    /// (a host name and process id, a pod name). Lease 5 s, patience 30 s.
    pub fn new(instance: impl Into<String>) -> Self {
        Fence {
            instance: instance.into(),
            lease: Duration::from_secs(5),
            patience: Duration::from_secs(30),
        }
    }

    /// How long an acknowledgement lasts, and how long this instance keeps
    /// writing without reading the source. At least twice the poll
    /// interval.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a move made here waits for the other instances before it
    /// gives up. Longer than the lease.
    #[must_use]
    pub fn patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// The instance's name.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub(super) fn validate(
        &self,
        source: &dyn StageSource,
        poll_interval: Duration,
    ) -> Result<(), StageSourceError> {
        let invalid = |message: String| Err(StageSourceError::new(source.describe(), message));
        if self.instance.is_empty() {
            return invalid("the fence needs a non-empty instance name".to_owned());
        }
        if self.lease < poll_interval * 2 {
            return invalid(format!(
                "the fence's lease ({:?}) must be at least twice the poll interval ({poll_interval:?}), or an instance would lose it between two polls",
                self.lease
            ));
        }
        if self.patience <= self.lease {
            return invalid(format!(
                "the fence's patience ({:?}) must be longer than its lease ({:?}), or a move could give up before a dead instance's acknowledgement expires",
                self.patience, self.lease
            ));
        }
        Ok(())
    }
}

/// A fenced handle's state.
pub(super) struct FenceState {
    pub(super) settings: Fence,
    /// Writes wait while it is `true`.
    held: watch::Sender<bool>,
    /// When the source was last read (the process's monotonic clock).
    last_read: Mutex<Instant>,
}

impl FenceState {
    pub(super) fn new(settings: Fence, held: bool) -> Self {
        FenceState {
            settings,
            held: watch::channel(held).0,
            last_read: Mutex::new(Instant::now()),
        }
    }

    pub(super) fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    fn set_held(&self, held: bool) {
        self.held.send_if_modified(|current| {
            let changed = *current != held;
            *current = held;
            changed
        });
    }

    /// Resolves once writes may go on.
    pub(super) async fn released(&self) {
        let mut held = self.held.subscribe();
        while *held.borrow_and_update() {
            if held.changed().await.is_err() {
                return;
            }
        }
    }

    fn lock_last_read(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.last_read.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StageHandle {
    /// Applies a fence's state after the source was read: `moving` is the
    /// record's move under way. Call with the barrier held exclusively
    /// when writes become held (so none is in progress when it returns).
    pub(super) fn apply_fence(&self, moving: Option<Stage>) {
        if let Some(fence) = &self.inner.fence {
            *fence.lock_last_read() = Instant::now();
            fence.set_held(moving.is_some());
        }
    }

    /// After a successful read of the source: acknowledges the version in
    /// use, and lets writes held because the source was unreadable go on
    /// (unless a move is under way).
    pub(super) async fn after_fenced_read(&self, moving: Option<Stage>) {
        let Some(fence) = &self.inner.fence else {
            return;
        };
        if fence.is_held() != moving.is_some() {
            let _barrier = self.inner.barrier.write().await;
            self.apply_fence(moving);
        } else {
            self.apply_fence(moving);
        }
        self.acknowledge().await;
    }

    /// After a failed read: once the lease has run out, hold writes.
    pub(super) async fn after_failed_read(&self) {
        let Some(fence) = &self.inner.fence else {
            return;
        };
        let stale = fence.lock_last_read().elapsed() > fence.settings.lease;
        if stale && !fence.is_held() {
            let _barrier = self.inner.barrier.write().await;
            fence.set_held(true);
            tracing::error!(
                instance = fence.settings.instance(),
                lease = ?fence.settings.lease,
                "dualwrite stage source unreadable for longer than the fence's lease: writes wait until it can be read (a stage move may be under way)"
            );
        }
    }

    /// Tells the source this instance applied the version in use.
    pub(super) async fn acknowledge(&self) {
        let (Some(fence), Some(source)) = (&self.inner.fence, &self.inner.source) else {
            return;
        };
        let version = self.inner.version.load(Ordering::Acquire);
        if let Err(error) = source
            .acknowledge(fence.settings.instance(), version, fence.settings.lease)
            .await
        {
            tracing::warn!(%error, version, "could not acknowledge the stage version; other instances' fenced moves stop waiting for this one when its acknowledgement expires");
        }
    }

    /// Waits (writes of a fenced handle) until no fenced move holds them.
    pub(super) async fn fence_released(&self) {
        if let Some(fence) = &self.inner.fence {
            fence.released().await;
        }
    }

    pub(super) fn fence_holds(&self) -> bool {
        self.inner.fence.as_ref().is_some_and(FenceState::is_held)
    }

    /// The first step of a fenced move, under the barrier: stores `from`
    /// marked as moving to `to`, and waits until every instance holding a
    /// live acknowledgement has acknowledged that. Does nothing when no
    /// instance is fenced. On `Err`, the fence was withdrawn (or never
    /// stored) and the move must not be made.
    pub(super) async fn fence_move(
        &self,
        source: &dyn StageSource,
        from: Stage,
        to: Stage,
    ) -> Result<(), Committed> {
        let fenced = self.inner.fence.is_some()
            || source
                .acknowledgements()
                .await
                .is_ok_and(|acks| !acks.is_empty());
        if !fenced {
            return Ok(());
        }
        let failed = |source| Committed::Failed(StageError::Source { from, to, source });
        let current = self.rollout();
        let marked = StageRecord {
            rollout: current,
            moving_to: Some(to),
            ..StageRecord::new(from)
        };
        let expected = self.inner.version.load(Ordering::Acquire);
        let version = match source.store(Some(expected), &marked).await {
            Ok(Some(version)) => version,
            Ok(None) => return Err(Committed::Conflict { from, to }),
            Err(error) => return Err(failed(error)),
        };
        self.inner.version.store(version, Ordering::Release);
        // The caller holds the barrier: no write of this instance runs.
        self.apply_fence(Some(to));
        self.acknowledge().await;
        let patience = self
            .inner
            .fence
            .as_ref()
            .map_or(UNFENCED_MOVER_PATIENCE, |fence| fence.settings.patience);
        let deadline = Instant::now() + patience;
        loop {
            let waiting_for: Vec<String> = match source.acknowledgements().await {
                Ok(acks) => acks
                    .into_iter()
                    .filter(|ack| ack.version < version)
                    .map(|ack| ack.instance)
                    .collect(),
                Err(error) => {
                    self.withdraw_fence(source, from, current, version).await;
                    return Err(failed(error));
                }
            };
            if waiting_for.is_empty() {
                tracing::info!(%from, %to, version, "every fenced instance holds its writes; making the move");
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.withdraw_fence(source, from, current, version).await;
                return Err(Committed::Failed(StageError::Fence {
                    from,
                    to,
                    waiting_for,
                    patience,
                }));
            }
            tokio::time::sleep(ACK_POLL).await;
        }
    }

    /// Stores `from` again without a move under way, releasing every
    /// instance's writes.
    async fn withdraw_fence(
        &self,
        source: &dyn StageSource,
        from: Stage,
        rollout: Option<Rollout>,
        version: u64,
    ) {
        let record = StageRecord {
            rollout,
            ..StageRecord::new(from)
        };
        match source.store(Some(version), &record).await {
            Ok(Some(version)) => {
                self.inner.version.store(version, Ordering::Release);
                self.apply_fence(None);
            }
            Ok(None) => {
                tracing::error!(%from, "could not withdraw a fence: another instance changed the stage meanwhile")
            }
            Err(error) => {
                tracing::error!(%from, %error, "could not withdraw a fence; writes stay held until the stage source is readable and a move is made")
            }
        }
    }
}
