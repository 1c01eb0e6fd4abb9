//! Fixing the keys a verify found.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::progress::Meter;
use super::{MigrateError, ProgressObserver, SyncQueue};
use crate::records::{sync_key, RecordKey, RecordPair, RecordStore, SyncOutcome};
use crate::vocabulary::Side;

/// What a repair did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    /// Key-level syncs queued for the worker.
    pub queued: u64,
    /// Records written to the target directly ([`Repair::direct`]).
    pub written: u64,
    /// Records deleted from the target directly.
    pub deleted: u64,
    /// Keys neither store holds any more (nothing to do).
    pub already_absent: u64,
}

enum Route {
    Queue(SyncQueue),
    Direct { pair: RecordPair, target: Side },
}

/// Makes the target's record of each given key what the authoritative
/// store holds.
///
/// - [`through_queue`](Self::through_queue) (beside a live service): each
///   key becomes a key-level sync entry on the service's reconciliation
///   queue, behind the key's queued writes; the service's worker applies it
///   under the key's order guard. Verify again once the queue drained.
/// - [`direct`](Self::direct) (nothing writes the stores): each key is
///   synced at once ([`sync_key`]).
pub struct Repair {
    route: Route,
    progress: Option<Arc<dyn ProgressObserver>>,
}

impl Repair {
    /// Repairs through the service's queue, to its target (see
    /// [`SyncQueue::target`]).
    pub fn through_queue(queue: SyncQueue) -> Self {
        Repair {
            route: Route::Queue(queue),
            progress: None,
        }
    }

    /// Repairs by copying from the other store to `target` directly: only
    /// while nothing else writes the keys.
    pub fn direct(old: impl RecordStore, new: impl RecordStore, target: Side) -> Self {
        Repair {
            route: Route::Direct {
                pair: RecordPair::new(old, new),
                target,
            },
            progress: None,
        }
    }

    /// Tells `observer` how many keys are done, every 1000 keys.
    #[must_use]
    pub fn progress(mut self, observer: impl ProgressObserver + 'static) -> Self {
        self.progress = Some(Arc::new(observer));
        self
    }

    /// Repairs every key of `keys` (from [`VerifyReport::sample`](super::VerifyReport::sample)
    /// or [`read_differences`](super::read_differences)).
    ///
    /// # Errors
    ///
    /// [`MigrateError`] when the queue or a store fails; the keys before
    /// the failing one are repaired (or queued), and repairing them again
    /// is harmless.
    pub async fn run(
        &self,
        keys: impl IntoIterator<Item = RecordKey>,
    ) -> Result<RepairReport, MigrateError> {
        let meter = Meter::new("repair", 0, None, self.progress.clone());
        let mut report = RepairReport::default();
        let mut done = 0u64;
        let mut last = None;
        for key in keys {
            match &self.route {
                Route::Queue(queue) => {
                    queue
                        .queue_sync(&key, "repair of a key verify found differing")
                        .await?;
                    report.queued += 1;
                }
                Route::Direct { pair, target } => {
                    let role = target.as_str();
                    match sync_key(pair, *target, &key)
                        .await
                        .map_err(MigrateError::store(role))?
                    {
                        SyncOutcome::Written => report.written += 1,
                        SyncOutcome::Deleted => report.deleted += 1,
                        SyncOutcome::AlreadyAbsent => report.already_absent += 1,
                    }
                }
            }
            done += 1;
            if done % 1000 == 0 {
                meter.report(done, Some(&key));
            }
            last = Some(key);
        }
        meter.report(done, last.as_ref());
        Ok(report)
    }
}
