//! Backfill and verify throughput on SQLite, printed as figures (a
//! benchmark, not a test: it asserts nothing about speed).
//!
//! ```sh
//! cargo bench --bench migrate                 # 200,000 records copied, 1,000,000 verified
//! cargo bench --bench migrate -- 50000 200000 # smaller: records copied, records verified
//! ```
//!
//! Measured in one run, on one file system, with batches of 1000:
//! 1. verify of two SQLite databases holding the same N records (default
//!    1,000,000 each): records per second, and the process's peak resident
//!    memory during the verify (`VmHWM` of `/proc/self/status`, reset first
//!    through `/proc/self/clear_refs` where the kernel allows);
//! 2. a hand-written batched copy between two SQLite databases (`SELECT ..
//!    WHERE id > ? ORDER BY id LIMIT 1000`, one multi-row `INSERT` per batch
//!    in a transaction), against `Backfill` between the same databases with
//!    the same batch size, both without and with the live-write re-read;
//!    each runs three times, interleaved, and its best run is compared
//!    (the machine may be shared).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dualwrite_runtime::migrate::{Backfill, BackfillOptions, SyncQueue, Verify, VerifyOptions};
use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::records::SqliteTable;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::SqlitePool;

const BATCH: usize = 1000;
const ROUNDS: usize = 3;

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dualwrite-bench-migrate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn database(path: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, cents INTEGER NOT NULL, version INTEGER NOT NULL)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool
}

async fn filled(path: &Path, records: usize) -> SqlitePool {
    let pool = database(path).await;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) \
         INSERT INTO accounts SELECT i, 'owner-' || i, i * 100, 1 FROM n",
    )
    .bind(records as i64)
    .execute(&pool)
    .await
    .unwrap();
    pool
}

fn table(pool: &SqlitePool) -> SqliteTable {
    SqliteTable::new(pool.clone(), "accounts", "id").version_column("version")
}

/// `VmHWM` of this process, in MiB.
fn peak_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets `VmHWM` to the current resident size, if the kernel allows.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The copy a team would write by hand: read a batch by key, insert it in
/// one statement in one transaction.
async fn hand_written_copy(source: &SqlitePool, target: &SqlitePool) -> usize {
    let mut after = -1_i64;
    let mut copied = 0;
    loop {
        let rows: Vec<(i64, String, i64, i64)> = sqlx::query_as(
            "SELECT id, owner, cents, version FROM accounts WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(BATCH as i64)
        .fetch_all(source)
        .await
        .unwrap();
        let Some(last) = rows.last() else { break };
        after = last.0;
        let values = vec!["(?, ?, ?, ?)"; rows.len()].join(", ");
        let sql = format!("INSERT INTO accounts (id, owner, cents, version) VALUES {values}");
        let mut query = sqlx::query(&sql);
        for (id, owner, cents, version) in &rows {
            query = query.bind(id).bind(owner).bind(cents).bind(version);
        }
        let mut transaction = target.begin().await.unwrap();
        query.execute(&mut *transaction).await.unwrap();
        transaction.commit().await.unwrap();
        copied += rows.len();
    }
    copied
}

fn per_second(records: usize, elapsed: Duration) -> f64 {
    records as f64 / elapsed.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"));
    let copied: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let verified: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = scratch();
    println!(
        "migrate benchmark: batches of {BATCH}, SQLite files in {}",
        dir.display()
    );

    // 1. Verify first, so the peak memory is the verify's.
    let started = Instant::now();
    let old = filled(&dir.join("verify-old.db"), verified).await;
    let new = filled(&dir.join("verify-new.db"), verified).await;
    println!(
        "  (made two databases of {verified} records in {:.1?})",
        started.elapsed()
    );
    let before = peak_mib();
    let reset = reset_peak();
    let options = VerifyOptions {
        batch_size: BATCH,
        ..VerifyOptions::default()
    };
    let started = Instant::now();
    let report = Verify::new(table(&old), table(&new), options)
        .run()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(report.is_clean(), "the databases are equal: {report:?}");
    let peak = peak_mib();
    println!(
        "verify          {verified:>9} records per side in {elapsed:>8.2?}: {:>9.0} records/s, peak memory {} ({})",
        per_second(verified, elapsed),
        peak.map_or("unknown".to_owned(), |mib| format!("{mib:.1} MiB")),
        if reset {
            "VmHWM reset before the verify".to_owned()
        } else {
            format!("process peak; {:.1} MiB before the verify", before.unwrap_or(0.0))
        },
    );
    old.close().await;
    new.close().await;

    // 2. Copies between the same two databases, each into a fresh target.
    let source = filled(&dir.join("source.db"), copied).await;
    let queue = SqliteQueue::open(dir.join("queue.db")).await.unwrap();
    let link = SyncQueue::new(std::sync::Arc::new(queue), "Accounts", "accounts");
    let options = BackfillOptions {
        batch_size: BATCH,
        ..BackfillOptions::default()
    };
    // The machine is shared: each variant runs ROUNDS times, interleaved,
    // and its best run is compared.
    let mut best = [Duration::MAX; 3];
    for round in 0..ROUNDS {
        let target = database(&dir.join(format!("hand-{round}.db"))).await;
        let started = Instant::now();
        assert_eq!(hand_written_copy(&source, &target).await, copied);
        best[0] = best[0].min(started.elapsed());
        target.close().await;

        let target = database(&dir.join(format!("backfill-{round}.db"))).await;
        let started = Instant::now();
        let report = Backfill::new(table(&source), table(&target), options.clone())
            .run()
            .await
            .unwrap();
        best[1] = best[1].min(started.elapsed());
        assert_eq!(report.written as usize, copied);
        target.close().await;

        let target = database(&dir.join(format!("backfill-live-{round}.db"))).await;
        let started = Instant::now();
        let report = Backfill::new(table(&source), table(&target), options.clone())
            .live_writes(link.clone())
            .run()
            .await
            .unwrap();
        best[2] = best[2].min(started.elapsed());
        assert_eq!((report.written as usize, report.resynced), (copied, 0));
        target.close().await;
    }
    let [hand, plain, live] = best;
    println!(
        "hand-written    {copied:>9} records           in {hand:>8.2?}: {:>9.0} records/s (best of {ROUNDS})",
        per_second(copied, hand)
    );
    println!(
        "backfill        {copied:>9} records           in {plain:>8.2?}: {:>9.0} records/s, {:.2}x the hand-written copy",
        per_second(copied, plain),
        hand.as_secs_f64() / plain.as_secs_f64()
    );
    println!(
        "backfill, live  {copied:>9} records           in {live:>8.2?}: {:>9.0} records/s, {:.2}x the hand-written copy (each batch read again)",
        per_second(copied, live),
        hand.as_secs_f64() / live.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
