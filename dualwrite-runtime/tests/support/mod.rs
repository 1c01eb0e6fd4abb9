//! A [`ModelBackend`] of the SQLite queue for the exported queue suites
//! (`queue_model` and `queue_conformance`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use dualwrite_runtime::queue::testing::model::ModelBackend;
use dualwrite_runtime::queue::{PoisonPolicy, SqliteQueue};
use dualwrite_runtime::QueueError;

/// One SQLite file per case, in a directory of the system's temp dir that
/// is removed on drop.
pub struct SqliteBackend {
    dir: PathBuf,
    cases: u64,
    current: Option<PathBuf>,
}

impl SqliteBackend {
    /// A backend whose directory's name starts with `dualwrite-{suite}-`.
    pub fn new(suite: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "dualwrite-{suite}-{}-{nanos}-{}",
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

    /// A fresh file for the next case.
    fn next_path(&mut self) -> PathBuf {
        // A case that panicked left its file behind.
        self.remove_current();
        self.cases += 1;
        let path = self.dir.join(format!("case-{}.db", self.cases));
        self.current = Some(path.clone());
        path
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
        let path = self.next_path();
        SqliteQueue::open(path).await
    }

    async fn open_with_policy(
        &mut self,
        policy: PoisonPolicy,
    ) -> Result<Option<SqliteQueue>, QueueError> {
        let path = self.next_path();
        SqliteQueue::options(path)
            .poison_policy(policy)
            .open()
            .await
            .map(Some)
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
