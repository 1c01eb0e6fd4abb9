//! When the queue file cannot be written (here: another connection holds an
//! exclusive lock on it), a fail-open write still returns the authoritative
//! result and counts the drift, and a fail-closed write returns the queue's
//! refusal as its own error.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::{dual_write, Delivery, DualWrite, QueueRefused, Stage};
use sqlx::Connection;

#[derive(Debug, thiserror::Error)]
enum LedgerError {
    #[error("store unavailable")]
    Unavailable,
    #[error(transparent)]
    Queue(#[from] QueueRefused),
}

#[dual_write(namespace = "ledger")]
trait Ledger: Send + Sync {
    #[dual_write(write, key = id)]
    async fn set_lenient(&self, id: u32, cents: i64) -> Result<(), LedgerError>;

    #[dual_write(write, key = id, fail_closed)]
    async fn set_strict(&self, id: u32, cents: i64) -> Result<(), LedgerError>;
}

#[derive(Default)]
struct MapLedger {
    rows: Mutex<BTreeMap<u32, i64>>,
    down: AtomicBool,
}

impl MapLedger {
    fn get(&self, id: u32) -> Option<i64> {
        self.rows.lock().unwrap().get(&id).copied()
    }

    fn set(&self, id: u32, cents: i64) -> Result<(), LedgerError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(LedgerError::Unavailable);
        }
        self.rows.lock().unwrap().insert(id, cents);
        Ok(())
    }
}

impl Ledger for MapLedger {
    async fn set_lenient(&self, id: u32, cents: i64) -> Result<(), LedgerError> {
        self.set(id, cents)
    }

    async fn set_strict(&self, id: u32, cents: i64) -> Result<(), LedgerError> {
        self.set(id, cents)
    }
}

struct LockedQueue {
    dir: PathBuf,
    repo: DualWrite<MapLedger, MapLedger>,
    lock: sqlx::SqliteConnection,
}

/// A wrapper over a SQLite queue whose file another connection has locked.
async fn locked_queue(name: &str, delivery: Delivery) -> LockedQueue {
    let dir = std::env::temp_dir().join(format!(
        "dualwrite-queue-failure-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("queue.db");
    let queue = SqliteQueue::options(&path)
        .busy_timeout(Duration::from_millis(100))
        .open()
        .await
        .unwrap();
    let repo = DualWrite::builder(MapLedger::default(), MapLedger::default())
        .queue(queue)
        .stage(Stage::DualWrite)
        .delivery(delivery)
        .build()
        .unwrap();
    let mut lock = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .unwrap();
    LockedQueue { dir, repo, lock }
}

impl LockedQueue {
    async fn finish(mut self) {
        sqlx::query("ROLLBACK")
            .execute(&mut self.lock)
            .await
            .unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn fail_open_returns_the_authoritative_result_and_counts_the_drift() {
    let locked = locked_queue("open", Delivery::Journaled).await;
    let repo = &locked.repo;
    repo.set_lenient(1, 100).await.unwrap();
    assert_eq!(
        repo.old_store().get(1),
        Some(100),
        "the authoritative write happened"
    );
    assert_eq!(repo.new_store().get(1), None, "the follower missed it");
    assert_eq!(repo.drift_count(), 1, "the miss is counted, once");
    locked.finish().await;
}

#[tokio::test]
async fn fail_closed_journaled_returns_the_refusal_and_writes_nothing() {
    let locked = locked_queue("closed-journaled", Delivery::Journaled).await;
    let repo = &locked.repo;
    let error = repo.set_strict(1, 100).await.unwrap_err();
    let LedgerError::Queue(refusal) = &error else {
        panic!("expected the queue's refusal, got {error}")
    };
    assert_eq!((refusal.method, refusal.key.as_str()), ("set_strict", "1"));
    // Keys are made from arguments: the message shows the key's stable
    // fingerprint, never the key itself, unless the wrapper logs keys.
    let shown = refusal.key.shown(false);
    assert!(
        error.to_string().contains(&format!(
            "refused the `set_strict` operation on key `{shown}`"
        )),
        "{error}"
    );
    assert!(!error.to_string().contains("key `1`"), "{error}");
    assert_eq!(
        repo.old_store().get(1),
        None,
        "the write was refused before either store"
    );
    assert_eq!(repo.new_store().get(1), None);
    locked.finish().await;
}

#[tokio::test]
async fn fail_closed_sync_reports_a_follower_write_that_could_not_be_queued() {
    let locked = locked_queue("closed-sync", Delivery::Sync).await;
    let repo = &locked.repo;
    repo.new_store().down.store(true, Ordering::SeqCst);
    let error = repo.set_strict(2, 200).await.unwrap_err();
    assert!(matches!(error, LedgerError::Queue(_)), "{error}");
    assert_eq!(
        repo.old_store().get(2),
        Some(200),
        "the authoritative store holds it; a retry is idempotent"
    );
    assert_eq!(repo.drift_count(), 1);

    repo.new_store().down.store(false, Ordering::SeqCst);
    repo.set_strict(3, 300).await.unwrap();
    assert_eq!(
        repo.new_store().get(3),
        Some(300),
        "a healthy follower needs no queue"
    );
    locked.finish().await;
}
