//! Throughput of the embedded SQLite reconciliation queue, printed as figures
//! (a benchmark, not a test: it asserts nothing about speed).
//!
//! ```sh
//! cargo bench --bench queue            # or: cargo bench --bench queue -- 20000
//! ```
//!
//! Measured in one run, on one file system:
//! 1. the baseline: one fsync'd SQLite transaction per inserted row, one
//!    writer, the same pragmas as the queue (WAL, `synchronous = FULL`);
//! 2. acknowledged `append`s to `SqliteQueue` from 64 concurrent writers
//!    (group commit);
//! 3. acknowledged journaled writes through `DualWrite` from 64 concurrent
//!    writers (in-memory authoritative store; each write is written ahead to
//!    the queue, then confirmed);
//! 4. the worker draining those into an in-memory follower, at the default
//!    `worker_concurrency` (64) and two larger settings; 3 and 4 run once
//!    per setting.
//!
//! For 3 and 4 it also prints the queue's write transactions (each one
//! `fsync`) per operation ([`SqliteQueue::transactions`]): how well group
//! commit, and the worker's completions sent with its claims, batch them;
//! and, on Linux, the process's CPU time per operation, which other load on
//! the machine moves far less than the rates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dualwrite_runtime::queue::{NewEntry, SqliteQueue};
use dualwrite_runtime::{Delivery, DualWrite, Key, ReconciliationQueue, Side, Stage};
use dualwrite_suite::{FaultyStore, KvRepo, KvRepoOp};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

const WRITERS: usize = 64;

fn rate(ops: usize, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dualwrite-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn entry(key: usize) -> NewEntry {
    NewEntry {
        namespace: "kv".into(),
        target: Side::New,
        key: Key::from_display(&key),
        method: "put".into(),
        version: 1,
        payload: format!(r#"{{"method":"put","args":{{"key":{key},"value":{key}}}}}"#).into_bytes(),
        reason: "journaled delivery".into(),
        uncertain: false,
    }
}

async fn baseline(ops: usize) -> f64 {
    let dir = scratch("baseline");
    let options = SqliteConnectOptions::new()
        .filename(dir.join("baseline.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE entries (id INTEGER PRIMARY KEY, key TEXT, payload BLOB)")
        .execute(&pool)
        .await
        .unwrap();
    let started = Instant::now();
    for key in 0..ops {
        let mut transaction = pool.begin().await.unwrap();
        sqlx::query("INSERT INTO entries (key, payload) VALUES (?, ?)")
            .bind(key.to_string())
            .bind(entry(key).payload)
            .execute(&mut *transaction)
            .await
            .unwrap();
        transaction.commit().await.unwrap();
    }
    let elapsed = started.elapsed();
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    rate(ops, elapsed)
}

async fn concurrent_appends(ops: usize) -> f64 {
    let dir = scratch("appends");
    let queue = Arc::new(SqliteQueue::open(dir.join("queue.db")).await.unwrap());
    let started = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                for seq in 0..ops / WRITERS {
                    queue.append(entry(writer * 1_000_000 + seq)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    rate(ops / WRITERS * WRITERS, elapsed)
}

/// A phase of [`journaled_writes_then_drain`]: its rate, the queue's write
/// transactions per operation, and the process's CPU time per operation
/// (all threads; less sensitive than the rate to other load on the
/// machine).
struct Phase {
    rate: f64,
    transactions_per_op: f64,
    cpu_per_op: Option<Duration>,
}

/// The CPU time this process has used so far (user and system, all
/// threads), from `/proc/self/stat`; `None` where there is none.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports them in clock ticks of 1/100 s (USER_HZ).
    Some(Duration::from_millis(ticks * 10))
}

fn per_op(from: Option<Duration>, to: Option<Duration>, ops: usize) -> Option<Duration> {
    Some(to?.checked_sub(from?)? / u32::try_from(ops).ok()?)
}

fn shown(cpu: Option<Duration>) -> String {
    cpu.map_or_else(
        || "n/a".to_owned(),
        |cpu| format!("{:.0} us", cpu.as_secs_f64() * 1e6),
    )
}

/// Journaled writes through the wrapper, then the drain of what they queued.
async fn journaled_writes_then_drain(ops: usize, worker_concurrency: usize) -> (Phase, Phase) {
    let dir = scratch(&format!("journaled-{worker_concurrency}"));
    let queue = SqliteQueue::open(dir.join("queue.db")).await.unwrap();
    // A clone shares the file and the transaction count.
    let counted = queue.clone();
    let repo = Arc::new(
        DualWrite::builder(FaultyStore::new(), FaultyStore::new())
            .queue(queue)
            .stage(Stage::DualWrite)
            .delivery(Delivery::Journaled)
            .worker_concurrency(worker_concurrency)
            .build()
            .unwrap(),
    );
    let started = Instant::now();
    let cpu = cpu_time();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let repo = Arc::clone(&repo);
            tokio::spawn(async move {
                for seq in 0..ops / WRITERS {
                    let key = u32::try_from(writer * 100_000 + seq).unwrap();
                    repo.put(key, u64::from(key)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let written = ops / WRITERS * WRITERS;
    let writes = Phase {
        rate: rate(written, started.elapsed()),
        transactions_per_op: counted.transactions() as f64 / written as f64,
        cpu_per_op: per_op(cpu, cpu_time(), written),
    };

    let before = counted.transactions();
    let started = Instant::now();
    let cpu = cpu_time();
    let report = repo.worker::<KvRepoOp>().drain().await;
    let drain = Phase {
        rate: rate(usize::try_from(report.applied).unwrap(), started.elapsed()),
        transactions_per_op: (counted.transactions() - before) as f64 / written as f64,
        cpu_per_op: per_op(cpu, cpu_time(), written),
    };
    assert_eq!(report.applied as usize, written, "every write was drained");
    assert_eq!(repo.new_store().snapshot().len(), written);
    let _ = std::fs::remove_dir_all(&dir);
    (writes, drain)
}

fn main() {
    let ops: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let baseline_ops = (ops / 10).max(500);
        let baseline = baseline(baseline_ops).await;
        println!("baseline: one fsync'd transaction per row, 1 writer ({baseline_ops} rows): {baseline:>10.0} rows/s");
        let appends = concurrent_appends(ops).await;
        println!(
            "SqliteQueue::append, {WRITERS} concurrent writers ({ops} entries):      {appends:>10.0} appends/s  ({:.1}x baseline)",
            appends / baseline
        );
        // The drain rate depends on how many keys the worker applies at once
        // (`worker_concurrency`): the default, and two larger settings.
        for concurrency in [64, 256, 1024] {
            let (writes, drain) = journaled_writes_then_drain(ops, concurrency).await;
            println!(
                "journaled DualWrite::put, {WRITERS} concurrent writers ({ops} writes):  {:>10.0} writes/s   ({:.1}x baseline; {:.3} queue transactions, {} CPU per write)",
                writes.rate,
                writes.rate / baseline,
                writes.transactions_per_op,
                shown(writes.cpu_per_op)
            );
            println!(
                "  then the worker drains them, worker_concurrency {concurrency:>4}:       {:>10.0} ops/s      ({:.2}x the journaled write rate; {:.3} queue transactions, {} CPU per op)",
                drain.rate,
                drain.rate / writes.rate,
                drain.transactions_per_op,
                shown(drain.cpu_per_op)
            );
        }
    });
}
