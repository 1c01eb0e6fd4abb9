//! Shared by the migration tests: an accounts repository over two SQLite
//! databases, the wrapper that dual-writes them (with the record stores
//! its worker syncs keys through), and helpers to fill and read the tables.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dualwrite_runtime::migrate::SyncQueue;
use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::records::{
    PutCondition, Record, RecordError, RecordKey, RecordStore, SqliteTable,
};
use dualwrite_runtime::{dual_write, DualWrite, ReconciliationQueue, RetryPolicy, Stage};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::SqlitePool;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{mpsc, oneshot};

pub const NAMESPACE: &str = "Accounts";
pub const RECORDS: &str = "accounts";

#[dual_write]
pub trait Accounts: Send + Sync {
    #[dual_write(write, key = id)]
    async fn put_account(
        &self,
        id: i64,
        owner: String,
        cents: i64,
        version: i64,
    ) -> Result<(), String>;

    #[dual_write(write, key = id)]
    async fn delete_account(&self, id: i64) -> Result<(), String>;

    #[dual_write(read)]
    async fn account(&self, id: i64) -> Result<Option<(String, i64, i64)>, String>;
}

/// One database's `accounts` table.
pub struct SqlAccounts(pub SqlitePool);

impl Accounts for SqlAccounts {
    async fn put_account(
        &self,
        id: i64,
        owner: String,
        cents: i64,
        version: i64,
    ) -> Result<(), String> {
        sqlx::query(
            "INSERT INTO accounts (id, owner, cents, version) VALUES (?, ?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, cents = excluded.cents, version = excluded.version",
        )
        .bind(id)
        .bind(owner)
        .bind(cents)
        .bind(version)
        .execute(&self.0)
        .await
        .map(drop)
        .map_err(|error| error.to_string())
    }

    async fn delete_account(&self, id: i64) -> Result<(), String> {
        sqlx::query("DELETE FROM accounts WHERE id = ?")
            .bind(id)
            .execute(&self.0)
            .await
            .map(drop)
            .map_err(|error| error.to_string())
    }

    async fn account(&self, id: i64) -> Result<Option<(String, i64, i64)>, String> {
        sqlx::query_as("SELECT owner, cents, version FROM accounts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.0)
            .await
            .map_err(|error| error.to_string())
    }
}

pub type Repo = DualWrite<SqlAccounts, SqlAccounts>;

/// A scratch directory of its own for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dualwrite-migrate-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// A database file holding an empty `accounts` table.
pub async fn database(path: PathBuf) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("the database opens");
    sqlx::query(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, cents INTEGER NOT NULL, version INTEGER NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("the table is made");
    pool
}

/// Rows `ids` with owner `owner-<id>`, `id * 100` cents, version 1.
pub async fn fill(pool: &SqlitePool, ids: std::ops::Range<i64>) {
    let mut transaction = pool.begin().await.expect("a transaction");
    for id in ids {
        sqlx::query("INSERT INTO accounts (id, owner, cents, version) VALUES (?, ?, ?, 1)")
            .bind(id)
            .bind(format!("owner-{id}"))
            .bind(id * 100)
            .execute(&mut *transaction)
            .await
            .expect("a row");
    }
    transaction.commit().await.expect("committed");
}

/// Every row, in key order.
pub async fn rows(pool: &SqlitePool) -> Vec<(i64, String, i64, i64)> {
    sqlx::query_as("SELECT id, owner, cents, version FROM accounts ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("the rows")
}

pub fn records(pool: &SqlitePool) -> SqliteTable {
    SqliteTable::new(pool.clone(), "accounts", "id").version_column("version")
}

/// Two databases, the durable queue, and the wrapper in `DualWrite`.
pub struct Migration {
    pub old: SqlitePool,
    pub new: SqlitePool,
    pub queue: Arc<dyn ReconciliationQueue>,
    pub repo: Repo,
    pub dir: PathBuf,
}

impl Migration {
    pub async fn new(name: &str) -> Migration {
        let dir = scratch(name);
        let old = database(dir.join("old.db")).await;
        let new = database(dir.join("new.db")).await;
        let queue: Arc<dyn ReconciliationQueue> = Arc::new(
            SqliteQueue::open(dir.join("queue.db"))
                .await
                .expect("the queue opens"),
        );
        let repo = DualWrite::builder(SqlAccounts(old.clone()), SqlAccounts(new.clone()))
            .shared_queue(Arc::clone(&queue))
            .stage(Stage::DualWrite)
            .poll_interval(Duration::from_millis(10))
            .retry(RetryPolicy::default().min_delay(Duration::from_millis(5)))
            .sync_records(RECORDS, records(&old), records(&new))
            .build()
            .expect("valid settings");
        Migration {
            old,
            new,
            queue,
            repo,
            dir,
        }
    }

    pub fn link(&self) -> SyncQueue {
        SyncQueue::new(Arc::clone(&self.queue), NAMESPACE, RECORDS)
    }

    /// Waits until the queue holds nothing pending or in flight.
    pub async fn drained(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let stats = self.queue.stats().await.expect("stats");
            if stats.new.pending == 0
                && stats.new.in_flight == 0
                && stats.old.pending == 0
                && stats.old.in_flight == 0
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the queue did not drain: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A record store that fails after a number of pages, like a run killed
/// midway (or a connection lost), and otherwise is `inner`.
pub struct FailsAfter {
    inner: SqliteTable,
    pages_left: AtomicUsize,
}

impl FailsAfter {
    pub fn new(inner: SqliteTable, pages: usize) -> Self {
        FailsAfter {
            inner,
            pages_left: AtomicUsize::new(pages),
        }
    }
}

#[async_trait]
impl RecordStore for FailsAfter {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn page(
        &self,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Record>, RecordError> {
        let left = self
            .pages_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            });
        if left.is_err() {
            return Err(RecordError::message("the store", "connection lost"));
        }
        self.inner.page(after, limit).await
    }
    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, RecordError> {
        self.inner.get(key).await
    }
    async fn put(&self, records: &[Record], condition: PutCondition) -> Result<u64, RecordError> {
        self.inner.put(records, condition).await
    }
    async fn delete(&self, key: &RecordKey) -> Result<bool, RecordError> {
        self.inner.delete(key).await
    }
    async fn count(&self) -> Result<Option<u64>, RecordError> {
        self.inner.count().await
    }
}

/// The new store's records, with live writes let in between a batch's read
/// and its write: before writing a batch it hands the batch's keys to the
/// test's live writer and waits until that writer has updated and deleted
/// some of them through its `DualWrite`.
pub struct Interleaved<S> {
    pub inner: S,
    pub live: mpsc::Sender<(Vec<i64>, oneshot::Sender<()>)>,
}

#[async_trait]
impl<S: RecordStore> RecordStore for Interleaved<S> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn page(
        &self,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Record>, RecordError> {
        self.inner.page(after, limit).await
    }
    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, RecordError> {
        self.inner.get(key).await
    }
    async fn put(&self, batch: &[Record], condition: PutCondition) -> Result<u64, RecordError> {
        let keys = batch
            .iter()
            .filter_map(|record| match record.key {
                RecordKey::Int(id) => Some(id),
                RecordKey::Text(_) => None,
            })
            .collect();
        let (done, wait) = oneshot::channel();
        if self.live.send((keys, done)).await.is_ok() {
            let _ = wait.await;
        }
        self.inner.put(batch, condition).await
    }
    async fn delete(&self, key: &RecordKey) -> Result<bool, RecordError> {
        self.inner.delete(key).await
    }
}
