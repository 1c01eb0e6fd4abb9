//! Keeping a handle in step with its shared stage source: reading moves
//! other instances stored, polling, and the source's health.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::{Duration, SystemTime};

use super::{Inner, StageError, StageHandle};
use crate::observe::{self, StageChange, StageSourceReport};
use crate::stage::source::{SourceStatus, StageSourceError};
use crate::vocabulary::Stage;

impl StageHandle {
    /// Reads the source (if any) and applies what another instance stored:
    /// the read outside the barrier, the switch under it, the announcement
    /// after it. Call with the moves lock held. `to` is only for the error.
    pub(super) async fn sync_source(&self, to: Stage) -> Result<(), StageError> {
        let Some(source) = &self.inner.source else {
            return Ok(());
        };
        let from = self.get();
        let stored = match source.load().await {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                let error = StageSourceError::new(
                    source.describe(),
                    "no stage is stored (the row is missing)",
                );
                self.mark_unreachable(&error);
                return Err(StageError::Source {
                    from,
                    to,
                    source: error,
                });
            }
            Err(error) => {
                self.mark_unreachable(&error);
                return Err(StageError::Source {
                    from,
                    to,
                    source: error,
                });
            }
        };
        self.mark_in_sync(stored.version);
        if stored.version == self.inner.version.load(Ordering::Acquire) {
            self.after_fenced_read(stored.record.moving_to).await;
            return Ok(());
        }
        let record = stored.record;
        let change = {
            let _barrier = self.inner.barrier.write().await;
            self.apply_fence(record.moving_to);
            self.inner.version.store(stored.version, Ordering::Release);
            let from = self.get();
            (record.stage != from || record.rollout != self.rollout()).then(|| {
                self.store_local(record.stage, record.rollout);
                StageChange {
                    from,
                    to: record.stage,
                    forced: record.reason,
                    rollout: record.rollout,
                }
            })
        };
        self.acknowledge().await;
        if let Some(change) = change {
            self.announce(&change);
        }
        Ok(())
    }

    /// One poll of the source: a cheap read first, the barrier only when
    /// something moved.
    async fn poll(&self) {
        let Some(source) = &self.inner.source else {
            return;
        };
        match source.load().await {
            Ok(Some(stored)) if stored.version == self.inner.version.load(Ordering::Acquire) => {
                self.mark_in_sync(stored.version);
                self.after_fenced_read(stored.record.moving_to).await;
            }
            Ok(_) => {
                let _moves = self.inner.moves.lock().await;
                let stage = self.get();
                let _ = self.sync_source(stage).await;
            }
            Err(error) => {
                self.mark_unreachable(&error);
                self.after_failed_read().await;
            }
        }
    }

    fn mark_unreachable(&self, error: &StageSourceError) {
        let kept_stage = self.get();
        let newly = {
            let mut status = self.lock_status();
            let newly = !status.is_stale();
            let since = match &*status {
                SourceStatus::Unreachable { since, .. } => *since,
                _ => SystemTime::now(),
            };
            *status = SourceStatus::Unreachable {
                kept_stage,
                error: error.to_string(),
                since,
            };
            newly
        };
        if newly {
            tracing::warn!(
                kept_stage = %kept_stage,
                %error,
                "dualwrite stage source unreadable; keeping the last known stage"
            );
            observe::record_stage_source_stale(true);
            self.observers().stage_source_error(&StageSourceReport {
                kept_stage,
                error: error.to_string(),
            });
        } else {
            tracing::debug!(%error, "dualwrite stage source still unreadable");
        }
    }

    fn mark_in_sync(&self, version: u64) {
        let mut status = self.lock_status();
        if status.is_stale() {
            observe::record_stage_source_stale(false);
            tracing::info!(version, "dualwrite stage source readable again");
        }
        *status = SourceStatus::InSync { version };
    }
}

/// Polls the source until the handle is dropped.
pub(super) async fn poll_source(inner: Weak<Inner>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        StageHandle { inner }.poll().await;
    }
}
