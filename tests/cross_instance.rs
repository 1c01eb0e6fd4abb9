//! The cross-instance mode (`KeySync`) in one process: two or three
//! wrappers, each with its own order guards (as separate instances of a
//! service have), sharing one SQLite queue file and writing the same keys of
//! SQLite old and new stores.
//!
//! - Without the mode, one interleaving of two instances leaves the stores
//!   disagreeing for good although every write succeeded: the classic
//!   dual-write race, shown deterministically by holding one instance's
//!   follower call until the other instance's write is done.
//! - With it, the same interleaving, and random concurrent writes and
//!   deletes from three instances with slow stores, leave the stores
//!   agreeing row by row after the drain: on every stage with a follower
//!   (`DualWrite`, `Shadow`, `Live`, `RampDown`, so with either store
//!   authoritative) and with the instances sharing a SQLite queue file or
//!   one in-memory queue.
//!
//! Checked to bite: the three-instance test, built without `key_sync`,
//! failed in one run of three here (rows missing or different in the new
//! store); the two-instance race fails without the mode every time.
//!
//! The multi-process version, PostgreSQL to MariaDB with follower faults,
//! is `tests/cross_instance_processes.rs` (feature `services`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dualwrite_runtime::queue::{ReconciliationQueue, SqliteQueue};
use dualwrite_runtime::records::SqliteTable;
use dualwrite_runtime::{
    dual_write, BuildError, DualWrite, InMemoryQueue, KeySync, RetryPolicy, Stage,
};
use sqlx::SqlitePool;
use tokio::sync::Notify;

#[dual_write]
pub trait Balances: Send + Sync {
    #[dual_write(write, key = id)]
    async fn set_balance(&self, id: i64, cents: i64) -> Result<(), String>;

    #[dual_write(write, key = id)]
    async fn close(&self, id: i64) -> Result<(), String>;

    #[dual_write(write)]
    async fn close_all(&self) -> Result<(), String>;

    #[dual_write(read)]
    async fn balance(&self, id: i64) -> Result<Option<i64>, String>;
}

/// Holds the first write of `value` until released.
#[derive(Default)]
struct Hold {
    value: i64,
    armed: AtomicBool,
    entered: Notify,
    release: Notify,
}

/// A `balances` table; optionally slow (a pseudo-random pause per write)
/// or holding one write.
struct Table {
    pool: SqlitePool,
    hold: Option<Arc<Hold>>,
    jitter: Option<AtomicU64>,
}

impl Table {
    async fn pause(&self) {
        if let Some(seed) = &self.jitter {
            let next = seed
                .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
                .wrapping_mul(0xBF58_476D_1CE4_E5B9);
            tokio::time::sleep(Duration::from_micros(next % 3_000)).await;
        }
    }
}

impl Balances for Table {
    async fn set_balance(&self, id: i64, cents: i64) -> Result<(), String> {
        if let Some(hold) = &self.hold {
            if cents == hold.value && hold.armed.swap(false, Ordering::SeqCst) {
                hold.entered.notify_one();
                hold.release.notified().await;
            }
        }
        self.pause().await;
        sqlx::query(
            "INSERT INTO balances (id, cents) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET cents = excluded.cents",
        )
        .bind(id)
        .bind(cents)
        .execute(&self.pool)
        .await
        .map(drop)
        .map_err(|error| error.to_string())
    }

    async fn close(&self, id: i64) -> Result<(), String> {
        self.pause().await;
        sqlx::query("DELETE FROM balances WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(|error| error.to_string())
    }

    async fn close_all(&self) -> Result<(), String> {
        sqlx::query("DELETE FROM balances")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(|error| error.to_string())
    }

    async fn balance(&self, id: i64) -> Result<Option<i64>, String> {
        sqlx::query_scalar("SELECT cents FROM balances WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| error.to_string())
    }
}

async fn database(path: &Path) -> SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    let pool = SqlitePool::connect_with(options).await.unwrap();
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS balances (id INTEGER PRIMARY KEY, cents INTEGER NOT NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool
}

/// The queue the instances share.
#[derive(Clone, Copy, Debug)]
enum Shared {
    /// One SQLite file, each instance with its own handle on it.
    SqliteFile,
    /// One in-memory queue (instances in one process only).
    Memory,
}

struct Deployment {
    old: SqlitePool,
    new: SqlitePool,
    queue: std::path::PathBuf,
    memory: Arc<InMemoryQueue>,
    shared: Shared,
    stage: Stage,
}

impl Deployment {
    async fn new(name: &str) -> Deployment {
        Deployment::with(name, Shared::SqliteFile, Stage::DualWrite).await
    }

    async fn with(name: &str, shared: Shared, stage: Stage) -> Deployment {
        let dir = std::env::temp_dir().join(format!(
            "dualwrite-cross-instance-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Deployment {
            old: database(&dir.join("old.db")).await,
            new: database(&dir.join("new.db")).await,
            queue: dir.join("queue.db"),
            memory: Arc::new(InMemoryQueue::new()),
            shared,
            stage,
        }
    }

    async fn queue(&self) -> Arc<dyn ReconciliationQueue> {
        match self.shared {
            Shared::SqliteFile => Arc::new(SqliteQueue::open(&self.queue).await.unwrap()),
            Shared::Memory => Arc::clone(&self.memory) as Arc<dyn ReconciliationQueue>,
        }
    }

    /// One instance of the service: its own wrapper (and so its own order
    /// guards) on the shared stores and queue file.
    async fn instance(
        &self,
        key_sync: bool,
        hold: Option<Arc<Hold>>,
        jitter: Option<u64>,
    ) -> DualWrite<Table, Table> {
        let table = |pool: &SqlitePool, hold: Option<Arc<Hold>>| Table {
            pool: pool.clone(),
            hold,
            jitter: jitter.map(AtomicU64::new),
        };
        let builder = DualWrite::builder(table(&self.old, None), table(&self.new, hold))
            .shared_queue(self.queue().await)
            .stage(self.stage)
            .poll_interval(Duration::from_millis(10))
            .retry(RetryPolicy::default().min_delay(Duration::from_millis(5)));
        let builder = if key_sync {
            builder
                .sync_records(
                    "balances",
                    SqliteTable::new(self.old.clone(), "balances", "id"),
                    SqliteTable::new(self.new.clone(), "balances", "id"),
                )
                .key_sync(KeySync::records("balances"))
        } else {
            builder
        };
        builder.build().unwrap()
    }

    async fn rows(&self) -> (BTreeMap<i64, i64>, BTreeMap<i64, i64>) {
        let read = |pool: SqlitePool| async move {
            sqlx::query_as::<_, (i64, i64)>("SELECT id, cents FROM balances ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap()
                .into_iter()
                .collect::<BTreeMap<_, _>>()
        };
        (read(self.old.clone()).await, read(self.new.clone()).await)
    }
}

/// Instance A writes 1 to key 7, and its follower call is held until
/// instance B has written 2 to both stores; then A's follower call goes on.
async fn race(deployment: &Deployment, key_sync: bool) {
    let hold = Arc::new(Hold {
        value: 1,
        armed: AtomicBool::new(true),
        ..Hold::default()
    });
    let a = deployment
        .instance(key_sync, Some(Arc::clone(&hold)), None)
        .await;
    let b = deployment.instance(key_sync, None, None).await;
    let first = {
        let a = a.clone();
        tokio::spawn(async move { a.set_balance(7, 1).await })
    };
    // In the cross-instance mode A never calls the follower, so nothing is
    // held: then A's write simply finishes first.
    tokio::select! {
        () = hold.entered.notified() => {}
        finished = tokio::time::timeout(Duration::from_secs(10), async {
            while !first.is_finished() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }) => finished.expect("A's write neither finished nor reached the follower"),
    }
    b.set_balance(7, 2).await.unwrap();
    hold.release.notify_one();
    first.await.unwrap().unwrap();
    a.worker::<BalancesOp>().drain().await;
    b.worker::<BalancesOp>().drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_mode_two_instances_leave_the_stores_disagreeing() {
    let deployment = Deployment::new("race-plain").await;
    race(&deployment, false).await;
    let (old, new) = deployment.rows().await;
    // Every write succeeded, nothing was queued, and yet:
    assert_eq!(old.get(&7), Some(&2), "B wrote the old store last");
    assert_eq!(new.get(&7), Some(&1), "A wrote the new store last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_key_sync_the_same_interleaving_leaves_the_stores_agreeing() {
    let deployment = Deployment::new("race-sync").await;
    race(&deployment, true).await;
    let (old, new) = deployment.rows().await;
    assert_eq!(old.get(&7), Some(&2));
    assert_eq!(new, old);
}

/// Three instances write and delete keys 0-4 concurrently, each with a
/// worker beside it; after the drain the stores agree and nothing is queued.
async fn three_instances_converge(shared: Shared, stage: Stage) {
    let deployment = Deployment::with(&format!("three-{shared:?}-{stage}"), shared, stage).await;
    let mut instances = Vec::new();
    for seed in 1..=3 {
        instances.push(deployment.instance(true, None, Some(seed * 7919)).await);
    }
    let mut writers = Vec::new();
    for (number, instance) in instances.iter().enumerate() {
        let instance = instance.clone();
        writers.push(tokio::spawn(async move {
            for step in 0..60_i64 {
                let key = (step * 7 + number as i64) % 5;
                if step % 9 == 4 {
                    instance.close(key).await.unwrap();
                } else {
                    instance
                        .set_balance(key, (number as i64 + 1) * 1_000 + step)
                        .await
                        .unwrap();
                }
            }
        }));
    }
    // A worker per instance runs beside the writers, as in a deployment.
    let workers: Vec<_> = instances
        .iter()
        .map(|instance| {
            let instance = instance.clone();
            tokio::spawn(async move {
                let worker = instance.worker::<BalancesOp>();
                for _ in 0..20 {
                    worker.drain().await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    for worker in workers {
        worker.await.unwrap();
    }
    for instance in &instances {
        instance.worker::<BalancesOp>().drain().await;
    }
    let (old, new) = deployment.rows().await;
    assert!(!old.is_empty(), "{shared:?}, {stage}");
    assert_eq!(new, old, "{shared:?}, {stage}: the stores agree row by row");
    let stats = instances[0].queue().stats().await.unwrap();
    assert!(stats.is_empty(), "{shared:?}, {stage}: drained: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_key_sync_three_instances_writing_and_deleting_the_same_keys_converge_on_every_stage_and_queue(
) {
    for shared in [Shared::SqliteFile, Shared::Memory] {
        for stage in [
            Stage::DualWrite,
            Stage::Shadow,
            Stage::Live,
            Stage::RampDown,
        ] {
            three_instances_converge(shared, stage).await;
        }
    }
}

#[tokio::test]
async fn an_unkeyed_write_cannot_be_synced_by_key_and_says_why() {
    let deployment = Deployment::new("unkeyed").await;
    let instance = deployment.instance(true, None, None).await;
    // Fail-open: the authoritative result is returned, the refusal counted.
    instance.close_all().await.unwrap();
    assert_eq!(instance.drift_count(), 1);
}

#[tokio::test]
async fn key_sync_of_records_never_registered_is_a_build_error_naming_them() {
    let deployment = Deployment::new("unregistered").await;
    let table = |pool: &SqlitePool| Table {
        pool: pool.clone(),
        hold: None,
        jitter: None,
    };
    let built = DualWrite::builder(table(&deployment.old), table(&deployment.new))
        .queue(SqliteQueue::open(&deployment.queue).await.unwrap())
        .key_sync(KeySync::records("balances").method("close", "closures"))
        .sync_records(
            "balances",
            SqliteTable::new(deployment.old.clone(), "balances", "id"),
            SqliteTable::new(deployment.new.clone(), "balances", "id"),
        )
        .build();
    let Err(error) = built else {
        panic!("a wrapper syncing unregistered records was built")
    };
    assert!(matches!(
        error,
        BuildError::Invalid {
            setting: "key_sync",
            ..
        }
    ));
    assert!(error.to_string().contains("`closures`"), "{error}");
}
