//! [`SqliteQueueOptions`], and opening a queue: the writer thread is started
//! here and the queue is handed out once it has opened the file.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::error::{could_not, BackendError};
use super::index::KeyIndex;
use super::writer::Writer;
use super::{Inner, SqliteQueue};
#[cfg(doc)]
use crate::queue::ReconciliationQueue;
use crate::queue::{PoisonPolicy, QueueError};

/// Settings of a [`SqliteQueue`]; [`SqliteQueue::open`] uses the defaults.
#[derive(Debug, Clone)]
pub struct SqliteQueueOptions {
    pub(super) path: PathBuf,
    pub(super) busy_timeout: Duration,
    pub(super) max_batch: usize,
    pub(super) multi_process: bool,
    pub(super) read_connections: u32,
    pub(super) durable_settles: bool,
    pub(super) poison: PoisonPolicy,
}

impl SqliteQueueOptions {
    /// Defaults for the queue file at `path`.
    pub fn new(path: impl AsRef<Path>) -> Self {
        SqliteQueueOptions {
            path: path.as_ref().to_path_buf(),
            busy_timeout: Duration::from_secs(5),
            max_batch: 1024,
            multi_process: false,
            read_connections: 2,
            durable_settles: true,
            poison: PoisonPolicy::Block,
        }
    }

    /// What a dead letter does to the later entries of its key (default
    /// [`PoisonPolicy::Block`]). Under [`PoisonPolicy::Skip`] a dead letter
    /// leaves its key's line, and [`retry_dead`](ReconciliationQueue::retry_dead)
    /// puts it back at the *end* of the line, with a new id.
    pub fn poison_policy(mut self, poison: PoisonPolicy) -> Self {
        self.poison = poison;
        self
    }

    /// Whether claims and settles of claimed entries (`claim`, `complete`,
    /// `retry_later`, `release`) wait for `fsync` like appends do (default
    /// `true`). With `false` they are committed with `synchronous = NORMAL`
    /// when no append shares their transaction, which saves an `fsync` per
    /// batch while draining. Nothing acknowledged is lost, but after an
    /// *operating-system*
    /// crash or power loss (not a process crash) the last completions may be
    /// rolled back, and their operations are then applied again, in order,
    /// so a store may briefly hold an older value of a key before the replay
    /// reaches the newest one. Appends, prepares, commits and dead-letter
    /// operations always wait for `fsync`.
    pub fn durable_settles(mut self, durable: bool) -> Self {
        self.durable_settles = durable;
        self
    }

    /// How long a statement waits for another process's lock on the file
    /// before failing (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The most requests committed in one transaction (default 1024, at
    /// least 1). Larger batches amortise the `fsync` over more callers.
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// Whether other processes append to the same file (default `false`).
    /// When they do, [`ReconciliationQueue::has_work`] queries the file
    /// instead of the in-process index of busy keys (see the
    /// [module docs](super)).
    pub fn multi_process(mut self, multi_process: bool) -> Self {
        self.multi_process = multi_process;
        self
    }

    /// Connections used for `stats`, `dead_letters` and, with
    /// [`multi_process`](Self::multi_process), `has_work` (default 2, at
    /// least 1). Reads never wait for the writer (WAL mode).
    pub fn read_connections(mut self, connections: u32) -> Self {
        self.read_connections = connections.max(1);
        self
    }

    /// Opens the queue file, creating it (mode `0600`) and its schema if
    /// needed. See [`SqliteQueue::open`].
    pub async fn open(self) -> Result<SqliteQueue, QueueError> {
        let index = Arc::new(RwLock::new(KeyIndex::default()));
        let transactions = Arc::new(AtomicU64::new(0));
        let (commands, receiver) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let options = self.clone();
        let thread_index = Arc::clone(&index);
        let thread_transactions = Arc::clone(&transactions);
        std::thread::Builder::new()
            .name("dualwrite-sqlite-queue".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(BackendError::new(
                            could_not(options.path.display(), "start its runtime"),
                            error,
                        )));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Writer::open(&options, thread_index, thread_transactions).await {
                        Ok(writer) => {
                            if ready_tx.send(Ok(())).is_ok() {
                                writer.run(receiver).await;
                            } else {
                                writer.close().await;
                            }
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                        }
                    }
                });
            })
            .map_err(|error| {
                QueueError::from(BackendError::new(
                    could_not(self.path.display(), "start its writer thread"),
                    error,
                ))
            })?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(SqliteQueue {
                inner: Arc::new(Inner {
                    commands,
                    index,
                    transactions,
                    path: self.path,
                    multi_process: self.multi_process,
                }),
            }),
            Ok(Err(error)) => Err(QueueError::Backend(Box::new(error))),
            Err(_) => Err(QueueError::Backend(Box::new(BackendError::message(
                format!(
                    "SQLite queue {}: the writer thread stopped while opening the file",
                    self.path.display()
                ),
            )))),
        }
    }
}
