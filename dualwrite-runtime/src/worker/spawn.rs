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
    /// returns. A runtime shut down under a running worker stops it
    /// abruptly, with a warning: the thread watches for the runtime's
    /// shutdown and returns without polling the worker again (which would
    /// panic inside Tokio, "being shutdown"). Nothing queued is lost: leases
    /// held then expire, and their entries are claimed again. A shutdown
    /// that lands while the thread is polling the worker can still make it
    /// panic; that panic is caught and logged.
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
        // A task of the runtime that lasts as long as the thread: if the
        // runtime shuts down first, it drops the task before its timers and
        // I/O stop, and that drop is the thread's signal to return.
        let (alive, gone) = tokio::sync::oneshot::channel::<()>();
        let (finished, done) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(async move {
            let _alive = alive;
            let _ = done.await;
        });
        let name = format!("dualwrite-{}", Op::NAMESPACE);
        let started = std::thread::Builder::new().name(name).spawn(move || {
            let worker = self;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runtime.block_on(async {
                    tokio::select! {
                        biased;
                        _ = gone => tracing::warn!(
                            namespace = Op::NAMESPACE,
                            "the runtime shut down under the reconciliation worker, which stopped without finishing its operations in flight; nothing queued is lost (their leases expire and they are claimed again). Await WorkerHandle::shutdown before the runtime ends"
                        ),
                        _ = worker.run() => {}
                    }
                })
            }));
            if let Err(panic) = outcome {
                tracing::error!(
                    namespace = Op::NAMESPACE,
                    panic = %crate::panic_message(&*panic),
                    "the reconciliation worker's thread panicked; nothing queued is lost, restart the worker"
                );
            }
            worker.running.send_modify(|running| *running -= 1);
            drop(finished);
        });
        if let Err(error) = started {
            panic!("could not start the reconciliation worker's thread: {error}");
        }
        handle
    }
}
