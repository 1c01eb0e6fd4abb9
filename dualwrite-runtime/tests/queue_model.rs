//! The model-based queue suite (`queue::testing::model`) against both
//! built-in backends: the in-memory queue (no restarts) and the SQLite
//! queue (restarts close and reopen the file).
//!
//! `DUALWRITE_MODEL_CASES=500 cargo test -p dualwrite-runtime --test
//! queue_model` runs more cases; `DUALWRITE_MODEL_SEED` replays the seed a
//! failure printed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use dualwrite_runtime::queue::testing::model::{
    check_backend, check_fresh, ModelBackend, ModelConfig,
};
use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::{InMemoryQueue, QueueError};

#[test]
fn in_memory_queue_matches_the_model() {
    let config = ModelConfig::new().cases(64).max_steps(40).with_env();
    if let Err(failure) = check_fresh(&config, || async { InMemoryQueue::new() }) {
        panic!("{failure}");
    }
}

#[test]
fn sqlite_queue_matches_the_model() {
    let config = ModelConfig::new()
        .cases(24)
        .max_steps(40)
        // The SQLite queue keeps wall-clock milliseconds.
        .short_deadline(std::time::Duration::from_millis(30))
        .time_step(std::time::Duration::from_millis(45))
        // Every case shrunk opens a file: bound the time a failure takes.
        .max_shrink_time(std::time::Duration::from_secs(20))
        .with_env();
    let backend = SqliteBackend::new();
    if let Err(failure) = check_backend(&config, backend) {
        panic!("{failure}");
    }
}

/// One SQLite file per case, in a directory of the system's temp dir that
/// is removed on drop.
struct SqliteBackend {
    dir: PathBuf,
    cases: u64,
    current: Option<PathBuf>,
}

impl SqliteBackend {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "dualwrite-queue-model-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the temp dir");
        SqliteBackend {
            dir,
            cases: 0,
            current: None,
        }
    }

    /// Removes the file of the last case (and its `-wal` and `-shm`).
    fn remove_current(&mut self) {
        if let Some(path) = self.current.take() {
            remove_queue_files(&path);
        }
    }
}

fn remove_queue_files(path: &Path) {
    let _ = std::fs::remove_file(path);
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

impl ModelBackend for SqliteBackend {
    type Queue = SqliteQueue;

    async fn open(&mut self) -> Result<SqliteQueue, QueueError> {
        // A case that panicked left its file behind.
        self.remove_current();
        self.cases += 1;
        let path = self.dir.join(format!("case-{}.db", self.cases));
        self.current = Some(path.clone());
        SqliteQueue::open(path).await
    }

    fn durable(&self) -> bool {
        true
    }

    async fn reopen(&mut self, queue: SqliteQueue) -> Result<SqliteQueue, QueueError> {
        let path = queue.path().to_path_buf();
        queue.close().await;
        SqliteQueue::open(path).await
    }

    async fn finish(&mut self, queue: SqliteQueue) {
        queue.close().await;
        self.remove_current();
    }
}

impl Drop for SqliteBackend {
    fn drop(&mut self) {
        self.remove_current();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
