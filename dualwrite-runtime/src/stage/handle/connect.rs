//! Building a handle on a shared stage source: the first read (or the
//! first store), the fence's first acknowledgement, and the poller.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::fence::{self, Fence};
use super::{sync, StageHandle};
use crate::observe;
use crate::stage::source::{SourceStatus, StageRecord, StageSource, StageSourceError, StoredStage};
use crate::vocabulary::Stage;

impl StageHandle {
    /// A handle whose stage is shared through `source` with every other
    /// instance using the same source, polled every `poll_interval`.
    ///
    /// The stored stage is used if there is one; otherwise `initial` is
    /// stored. A task polls the source until the last clone of the handle is
    /// dropped; a move stored by another instance applies here on the next
    /// poll (or at once with [`refresh`](Self::refresh)).
    ///
    /// # Errors
    ///
    /// [`StageSourceError`] when the source cannot be read or written at
    /// start: without it, this instance cannot know the stage the others
    /// are in, and guessing could split writes between two authorities.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the poller is a tokio task).
    pub async fn with_source(
        source: impl StageSource,
        initial: Stage,
        poll_interval: Duration,
    ) -> Result<Self, StageSourceError> {
        Self::connect(Arc::new(source), initial, poll_interval, None).await
    }

    /// Like [`with_source`](Self::with_source), with [fenced](Fence) stage
    /// moves: this instance holds its writes while a move is under way
    /// (and while it cannot read the source for longer than the fence's
    /// lease), and acknowledges every version it applies, so that no two
    /// instances ever write under different stages.
    ///
    /// # Errors
    ///
    /// [`StageSourceError`] as for `with_source`, when the fence's settings
    /// cannot work (naming which), or when the source cannot keep
    /// acknowledgements.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the poller is a tokio task).
    pub async fn with_fenced_source(
        source: impl StageSource,
        initial: Stage,
        poll_interval: Duration,
        fence: Fence,
    ) -> Result<Self, StageSourceError> {
        let source: Arc<dyn StageSource> = Arc::new(source);
        fence.validate(&*source, poll_interval)?;
        let handle = Self::connect(source, initial, poll_interval, Some(fence)).await?;
        if let (Some(fence), Some(source)) = (&handle.inner.fence, &handle.inner.source) {
            let version = handle.inner.version.load(Ordering::Acquire);
            source
                .acknowledge(fence.settings.instance(), version, fence.settings.lease)
                .await?;
        }
        Ok(handle)
    }

    async fn connect(
        source: Arc<dyn StageSource>,
        initial: Stage,
        poll_interval: Duration,
        fence: Option<Fence>,
    ) -> Result<Self, StageSourceError> {
        let stored = match source.load().await? {
            Some(stored) => stored,
            None => {
                let record = StageRecord::new(initial);
                match source.store(None, &record).await? {
                    Some(version) => StoredStage {
                        record,
                        version,
                        changed_at: Some(SystemTime::now()),
                    },
                    // Another instance stored one first: use it.
                    None => source.load().await?.ok_or_else(|| {
                        StageSourceError::new(source.describe(), "the stored stage vanished")
                    })?,
                }
            }
        };
        let fence =
            fence.map(|fence| fence::FenceState::new(fence, stored.record.moving_to.is_some()));
        let handle = Self::build(stored.record.stage, Some(Arc::clone(&source)), fence);
        handle.store_local(stored.record.stage, stored.record.rollout);
        handle
            .inner
            .version
            .store(stored.version, Ordering::Release);
        *handle.lock_status() = SourceStatus::InSync {
            version: stored.version,
        };
        observe::record_stage(stored.record.stage);
        observe::record_stage_source_stale(false);
        tracing::info!(
            source = %source.describe(),
            stage = %stored.record.stage,
            version = stored.version,
            "dualwrite stage read from the shared stage source"
        );
        let poll_interval = poll_interval.max(Duration::from_millis(1));
        tokio::spawn(sync::poll_source(
            Arc::downgrade(&handle.inner),
            poll_interval,
        ));
        Ok(handle)
    }
}
