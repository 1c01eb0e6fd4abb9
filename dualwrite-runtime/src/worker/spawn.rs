//! Starting a worker on a thread of its own.

use super::{Worker, WorkerHandle};
use crate::op::Replay;

impl<Op, Old, New> Worker<Op, Old, New>
where
    Op: Replay<Old> + Replay<New>,
    Old: Send + Sync + 'static,
    New: Send + Sync + 'static,
{
    /// Starts [`run`](Self::run) on a thread of its own and returns its
    /// handle: [`stop`](WorkerHandle::stop) it, or
    /// [`shutdown`](WorkerHandle::shutdown) it (stop claiming, finish the
    /// operations in flight, flush the queue), and read its
    /// [`report`](WorkerHandle::report). Dropping the handle stops the
    /// worker too, gracefully, provided the runtime keeps running until it
    /// has: await [`shutdown`](WorkerHandle::shutdown) before a `main`
    /// returns. A runtime shut down under a running worker makes the
    /// worker's thread panic inside Tokio ("being shutdown"); the panic is
    /// caught and logged, and nothing queued is lost (leases held then
    /// expire, and their entries are claimed again), but the panic message
    /// reaches standard error.
    ///
    /// The thread drives the worker with the Tokio runtime this is called
    /// from: the stores' I/O and the worker's timers stay that runtime's.
    /// A thread rather than a task because generic code cannot prove the
    /// worker's future `Send` (a native `async fn` trait's futures are
    /// opaque); the stores' futures run on that thread, interleaved like
    /// tasks of one `select!`, as they would in a spawned task.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime, like `tokio::spawn`, or if the
    /// operating system refuses a thread.
    pub fn spawn(self) -> WorkerHandle {
        let runtime = tokio::runtime::Handle::current();
        let mut handle = self.handle();
        handle.stop_on_drop();
        // Counted as running from now, not from when the thread gets there,
        // so that the handle never reports a starting worker as stopped.
        self.running.send_modify(|running| *running += 1);
        let name = format!("dualwrite-{}", Op::NAMESPACE);
        let started = std::thread::Builder::new().name(name).spawn(move || {
            let worker = self;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runtime.block_on(worker.run())
            }));
            if let Err(panic) = outcome {
                tracing::error!(
                    namespace = Op::NAMESPACE,
                    panic = %crate::panic_message(&*panic),
                    "the reconciliation worker's thread panicked; nothing queued is lost, restart the worker"
                );
            }
            worker.running.send_modify(|running| *running -= 1);
        });
        if let Err(error) = started {
            panic!("could not start the reconciliation worker's thread: {error}");
        }
        handle
    }
}
