//! The handle that stops a running worker and waits for it.

use std::sync::Arc;

use tokio::sync::watch;

use super::{WorkerReport, WorkerStop};
use crate::queue::{QueueError, ReconciliationQueue};

/// Stops a running [`Worker`](super::Worker) and waits for it, and reports
/// what it did.
///
/// [`DualWrite::spawn_worker`](crate::DualWrite::spawn_worker) starts a
/// worker and returns its handle; dropping that handle stops the worker.
///
/// ```ignore
/// let worker = repo.spawn_worker();
/// // ... on shutdown:
/// let report = worker.shutdown().await?;
/// ```
///
/// [`Worker::handle`](super::Worker::handle) gives one for a worker you run
/// yourself (`tokio::spawn(async move { worker.run().await })`); dropping
/// such a handle leaves the worker running.
pub struct WorkerHandle {
    stop: WorkerStop,
    running: watch::Receiver<usize>,
    report: Arc<std::sync::Mutex<WorkerReport>>,
    queue: Arc<dyn ReconciliationQueue>,
    /// Set for the handle of a spawned worker, its only way to be stopped.
    stop_on_drop: bool,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("running", &*self.running.borrow())
            .field("report", &self.report())
            .finish_non_exhaustive()
    }
}

/// [`WorkerHandle::shutdown`] could not finish cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerShutdownError {
    /// The queue could not make the worker's last settles durable. Nothing
    /// queued is lost by that: entries whose completion was not recorded
    /// are applied again (replays are idempotent).
    #[error("the reconciliation worker stopped, but the queue could not be flushed: {0}")]
    Flush(#[source] QueueError),
}

impl WorkerHandle {
    pub(super) fn new(
        stop: WorkerStop,
        running: watch::Receiver<usize>,
        report: Arc<std::sync::Mutex<WorkerReport>>,
        queue: Arc<dyn ReconciliationQueue>,
    ) -> Self {
        WorkerHandle {
            stop,
            running,
            report,
            queue,
            stop_on_drop: false,
        }
    }

    pub(super) fn stop_on_drop(&mut self) {
        self.stop_on_drop = true;
    }

    /// Asks the worker to stop: it claims nothing more and finishes what it
    /// is applying. Returns at once; [`shutdown`](Self::shutdown) waits.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// A handle that only stops the worker, for another task.
    pub fn stopper(&self) -> WorkerStop {
        self.stop.clone()
    }

    /// What the worker has done so far, over all its runs.
    pub fn report(&self) -> WorkerReport {
        *self
            .report
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the worker is inside [`run`](super::Worker::run) or
    /// [`drain`](super::Worker::drain) now (for a spawned worker: from
    /// [`spawn_worker`](crate::DualWrite::spawn_worker) until its run
    /// returned). A spawned worker that stopped without being asked to has
    /// logged why at error level.
    pub fn is_running(&self) -> bool {
        *self.running.borrow() > 0
    }

    /// Stops the worker, waits until every run of it has returned (the
    /// operations it was applying settled, each bounded by the follower
    /// timeout) or was dropped, then flushes the queue so that those settles
    /// are durable. Returns what the worker did.
    ///
    /// # Errors
    ///
    /// [`WorkerShutdownError::Flush`] if the queue could not be flushed.
    ///
    /// # Cancel safety
    ///
    /// Cancelling it stops the wait; the worker still stops.
    pub async fn shutdown(mut self) -> Result<WorkerReport, WorkerShutdownError> {
        self.stop.stop();
        // Ends when no run is in progress, or when the worker is dropped.
        let _ = self.running.wait_for(|running| *running == 0).await;
        self.queue
            .flush()
            .await
            .map_err(WorkerShutdownError::Flush)?;
        Ok(self.report())
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if self.stop_on_drop {
            self.stop.stop();
        }
    }
}
