//! The scenarios, each measured against its floor in alternation.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dualwrite_runtime::queue::{NewEntry, SqliteQueue};
use dualwrite_runtime::{
    Delivery, DualWrite, InMemoryQueue, Key, ReconciliationQueue, Side, Stage,
};
use futures::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};

use crate::stats::{median, micros, quantile, resident_bytes};
use crate::store::{Accounts, AccountsOp, Store};
use crate::{growth, Args};

/// The scenario names `--only` accepts.
pub const NAMES: [&str; 9] = [
    "off-overhead",
    "dualwrite-sync",
    "vs-launchdarkly",
    "shadow-read",
    "journaled-append",
    "drain",
    "follower-down-p99",
    "queue-memory",
    "growth",
];

/// Concurrent writers of the journaled scenarios.
const WRITERS: usize = 64;

/// What a ratio must be.
#[derive(Debug, Clone, Copy)]
enum Target {
    AtMost(f64),
    AtLeast(f64),
}

/// One printed line.
struct Line {
    name: &'static str,
    this: f64,
    floor: f64,
    unit: &'static str,
    target: Target,
}

impl Line {
    fn ratio(&self) -> f64 {
        self.this / self.floor
    }

    fn met(&self) -> bool {
        match self.target {
            Target::AtMost(limit) => self.ratio() <= limit,
            Target::AtLeast(limit) => self.ratio() >= limit,
        }
    }

    fn print(&self) {
        println!(
            "{}: ratio={:.3} this={:.3} floor={:.3} unit={}",
            self.name,
            self.ratio(),
            self.this,
            self.floor,
            self.unit
        );
    }
}

/// How long each kind of scenario runs.
pub struct Sizes {
    /// Alternating rounds of the per-call scenarios.
    pub rounds: usize,
    /// Calls per round of the per-call scenarios.
    pub calls: usize,
    /// Shadow reads per round.
    pub reads: usize,
    /// Alternating rounds of the journaled scenarios.
    pub journaled_rounds: usize,
    /// Journaled writes per round.
    pub journaled_ops: usize,
    /// Calls per round, and rounds, of follower-down-p99.
    pub down_calls: usize,
    /// Entries queued for queue-memory and the largest queue of the growth table.
    pub queued: usize,
    /// How long each cell of the writer/key table runs.
    pub cell: Duration,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                rounds: 7,
                calls: 4_000,
                reads: 15,
                journaled_rounds: 3,
                journaled_ops: 3_200,
                down_calls: 3_000,
                queued: 100_000,
                cell: Duration::from_millis(100),
            }
        } else {
            Sizes {
                rounds: 21,
                calls: 20_000,
                reads: 40,
                journaled_rounds: 5,
                journaled_ops: 12_800,
                down_calls: 4_000,
                queued: 1_000_000,
                cell: Duration::from_millis(400),
            }
        }
    }
}

/// Runs what `args` asks and prints its lines, then the summary.
pub async fn run(args: &Args) {
    let sizes = Sizes::new(args.quick);
    let wanted = |name: &str| args.only.as_deref().is_none_or(|only| only == name);
    let mut lines = Vec::new();
    let mut record = |line: Line| {
        line.print();
        lines.push(line);
    };
    if wanted("off-overhead") {
        record(off_overhead(&sizes).await);
    }
    if wanted("dualwrite-sync") || wanted("vs-launchdarkly") {
        let (sync, peer) = dualwrite_sync_and_peer(&sizes).await;
        if wanted("dualwrite-sync") {
            record(sync);
        }
        if wanted("vs-launchdarkly") {
            record(peer);
        }
    }
    if wanted("shadow-read") {
        record(shadow_read(&sizes).await);
    }
    if wanted("journaled-append") || wanted("drain") {
        for line in journaled_and_drain(&sizes).await {
            if wanted(line.name) || (line.name == "drain-vs-journaled" && wanted("drain")) {
                record(line);
            }
        }
    }
    if wanted("follower-down-p99") {
        record(follower_down(&sizes).await);
    }
    let mut queue_table = None;
    if wanted("queue-memory") || wanted("growth") {
        let (line, table) = queue_growth(&sizes).await;
        if wanted("queue-memory") {
            record(line);
        }
        queue_table = Some(table);
    }
    let writer_table = if wanted("growth") {
        Some(growth::writers_and_keys(sizes.cell).await)
    } else {
        None
    };

    let met = lines.iter().filter(|line| line.met()).count();
    println!(
        "summary: {met} of {} lines met their targets{}",
        lines.len(),
        if args.quick { " (--quick)" } else { "" }
    );
    for line in &lines {
        let (word, limit) = match line.target {
            Target::AtMost(limit) => ("<=", limit),
            Target::AtLeast(limit) => (">=", limit),
        };
        println!(
            "  {:<20} {:>8.3} target {word} {limit:<6} {}",
            line.name,
            line.ratio(),
            if line.met() { "met" } else { "MISSED" }
        );
    }
    if let Some(table) = &writer_table {
        growth::print_writer_table(table);
    }
    if let Some(table) = &queue_table {
        growth::print_queue_table(table);
    }
    if let (Some(table), false) = (&writer_table, args.no_chart) {
        match growth::chart(table, &args.chart) {
            Ok(()) => println!("chart written to {}", args.chart.display()),
            Err(error) => eprintln!(
                "could not write the chart {}: {error}",
                args.chart.display()
            ),
        }
    }
}

/// Mean nanoseconds per call of `calls` sequential calls of `call`.
async fn per_call<F, Fut>(calls: usize, mut call: F) -> f64
where
    F: FnMut(u64) -> Fut,
    Fut: Future,
{
    let started = Instant::now();
    for seq in 0..calls as u64 {
        std::hint::black_box(call(seq).await);
    }
    started.elapsed().as_secs_f64() * 1e9 / calls as f64
}

/// A fresh directory for one scenario's SQLite files.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dualwrite-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// `Off` through the wrapper vs the old store called directly.
async fn off_overhead(sizes: &Sizes) -> Line {
    let repo = DualWrite::builder(Store::new(), Store::new())
        .queue(InMemoryQueue::new())
        .stage(Stage::Off)
        .build()
        .expect("valid settings");
    let (mut this, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..sizes.rounds {
        this.push(per_call(sizes.calls, |seq| repo.put(seq, seq)).await);
        floor.push(per_call(sizes.calls, |seq| repo.old_store().put(seq, seq)).await);
    }
    Line {
        name: "off-overhead",
        this: median(&mut this),
        floor: median(&mut floor),
        unit: "ns/call",
        target: Target::AtMost(1.05),
    }
}

/// The old-then-new function a user would write by hand.
async fn hand_written(old: &Store, new: &Store, id: u64, balance: u64) -> Result<(), String> {
    old.put(id, balance)
        .await
        .map_err(|error| error.to_string())?;
    new.put(id, balance)
        .await
        .map_err(|error| error.to_string())
}

/// A LaunchDarkly migrator's write function over `store`.
fn peer_write(
    store: &'static Store,
) -> impl for<'a> Fn(&'a (u64, u64)) -> BoxFuture<'a, Result<(), String>> + Send + Sync {
    move |&(id, balance)| {
        Box::pin(async move { store.put(id, balance).await.map_err(|e| e.to_string()) })
    }
}

/// A LaunchDarkly migrator's read function over `store`.
fn peer_read(
    store: &'static Store,
) -> impl for<'a> Fn(&'a (u64, u64)) -> BoxFuture<'a, Result<(), String>> + Send + Sync {
    move |&(id, _)| {
        Box::pin(async move { store.get(id).await.map(drop).map_err(|e| e.to_string()) })
    }
}

/// A `DualWrite` wrapper with sync delivery over a fresh old store and
/// `new`, queueing into a SQLite file in `dir`.
async fn dualwrite_on_sqlite(dir: &Path, new: Store) -> DualWrite<Store, Store> {
    DualWrite::builder(Store::new(), new)
        .queue(
            SqliteQueue::open(dir.join("queue.db"))
                .await
                .expect("queue"),
        )
        .stage(Stage::DualWrite)
        .build()
        .expect("valid settings")
}

/// `DualWrite` through the wrapper vs the hand-written old-then-new, and the
/// wrapper's overhead vs LaunchDarkly's migrator's over the same stores.
async fn dualwrite_sync_and_peer(sizes: &Sizes) -> (Line, Line) {
    use launchdarkly_server_sdk as ld;
    let dir = scratch("sync");
    let repo = dualwrite_on_sqlite(&dir, Store::new()).await;
    let repo: &'static DualWrite<Store, Store> = Box::leak(Box::new(repo));
    let client = ld::Client::build(
        ld::ConfigBuilder::new("offline-sdk-key")
            .offline(true)
            .build()
            .expect("an offline LaunchDarkly config"),
    )
    .expect("an offline LaunchDarkly client");
    let mut migrator = ld::MigratorBuilder::new(Arc::new(client))
        .read(
            peer_read(repo.old_store()),
            peer_read(repo.new_store()),
            None,
        )
        .write(peer_write(repo.old_store()), peer_write(repo.new_store()))
        .build()
        .expect("a LaunchDarkly migrator");
    let context = ld::ContextBuilder::new("bench").build().expect("a context");
    let flag = "accounts-migration".to_owned();

    let (mut this, mut hand, mut peer) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..sizes.rounds {
        this.push(per_call(sizes.calls, |seq| repo.put(seq, seq)).await);
        hand.push(
            per_call(sizes.calls, |seq| {
                hand_written(repo.old_store(), repo.new_store(), seq, seq)
            })
            .await,
        );
        let started = Instant::now();
        for seq in 0..sizes.calls as u64 {
            let result = migrator
                .write(&context, flag.clone(), ld::Stage::DualWrite, (seq, seq))
                .await;
            assert!(
                result.authoritative.result.is_ok()
                    && result
                        .nonauthoritative
                        .is_some_and(|new| new.result.is_ok()),
                "LaunchDarkly's migrator wrote both stores"
            );
        }
        peer.push(started.elapsed().as_secs_f64() * 1e9 / sizes.calls as f64);
    }
    let (this, hand, peer) = (median(&mut this), median(&mut hand), median(&mut peer));
    let _ = std::fs::remove_dir_all(&dir);
    (
        Line {
            name: "dualwrite-sync",
            this,
            floor: hand,
            unit: "ns/call",
            target: Target::AtMost(1.10),
        },
        Line {
            name: "vs-launchdarkly",
            this: this - hand,
            floor: peer - hand,
            unit: "ns-added/call",
            target: Target::AtMost(0.2),
        },
    )
}

/// A concurrent shadow read (old 2 ms, new 3 ms) vs the slower store alone.
async fn shadow_read(sizes: &Sizes) -> Line {
    let repo = DualWrite::builder(
        Store::with_read_latency(Duration::from_millis(2)),
        Store::with_read_latency(Duration::from_millis(3)),
    )
    .queue(InMemoryQueue::new())
    .stage(Stage::Shadow)
    .compare_timeout(Duration::from_millis(100))
    .build()
    .expect("valid settings");
    for id in 0..10 {
        repo.get(id).await.expect("a read");
    }
    let (mut this, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..sizes.rounds {
        this.push(per_call(sizes.reads, |id| repo.get(id)).await / 1e6);
        floor.push(per_call(sizes.reads, |id| repo.new_store().get(id)).await / 1e6);
    }
    Line {
        name: "shadow-read",
        this: median(&mut this),
        floor: median(&mut floor),
        unit: "ms/read",
        target: Target::AtMost(1.10),
    }
}

/// The SQLite connection the floors use: the queue's pragmas (WAL,
/// `synchronous = FULL`), on the queue's own file.
async fn raw_sqlite(path: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("the floor's SQLite connection");
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS floor_entries (id INTEGER PRIMARY KEY, key TEXT NOT NULL, payload BLOB NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("the floor's table");
    pool
}

/// The payload the queue holds for `put(id, id)`.
fn payload(id: u64) -> Vec<u8> {
    format!(r#"{{"method":"put","args":{{"id":{id},"balance":{id}}}}}"#).into_bytes()
}

/// The floor of journaled-append: the same rows inserted in transactions
/// of [`WRITERS`] rows each (what a perfect group commit would do).
async fn batched_insert(pool: &SqlitePool, first: u64, ops: usize) -> f64 {
    let started = Instant::now();
    for batch in (first..first + ops as u64)
        .collect::<Vec<_>>()
        .chunks(WRITERS)
    {
        let mut transaction = pool.begin().await.expect("begin");
        for &id in batch {
            sqlx::query("INSERT INTO floor_entries (key, payload) VALUES (?, ?)")
                .bind(id.to_string())
                .bind(payload(id))
                .execute(&mut *transaction)
                .await
                .expect("insert");
        }
        transaction.commit().await.expect("commit");
    }
    ops as f64 / started.elapsed().as_secs_f64()
}

/// The floor of drain: a plain loop that reads the rows back in batches,
/// decodes each, applies it to the store and deletes the batch.
async fn plain_drain(pool: &SqlitePool, store: &Store) -> f64 {
    let started = Instant::now();
    let mut applied = 0usize;
    loop {
        let mut transaction = pool.begin().await.expect("begin");
        let rows: Vec<(i64, String, Vec<u8>)> =
            sqlx::query_as("SELECT id, key, payload FROM floor_entries ORDER BY id LIMIT 64")
                .fetch_all(&mut *transaction)
                .await
                .expect("select");
        let Some(last) = rows.last().map(|row| row.0) else {
            break;
        };
        for (_, _, payload) in &rows {
            let op: serde_json::Value = serde_json::from_slice(payload).expect("a payload");
            let id = op["args"]["id"].as_u64().expect("an id");
            let balance = op["args"]["balance"].as_u64().expect("a balance");
            store.put(id, balance).await.expect("applied");
        }
        sqlx::query("DELETE FROM floor_entries WHERE id <= ?")
            .bind(last)
            .execute(&mut *transaction)
            .await
            .expect("delete");
        transaction.commit().await.expect("commit");
        applied += rows.len();
    }
    applied as f64 / started.elapsed().as_secs_f64()
}

/// Journaled writes at 64 writers vs a batched insert into the same file;
/// the worker's drain of them vs a plain loop; and the drain rate vs the
/// journaled write rate.
async fn journaled_and_drain(sizes: &Sizes) -> Vec<Line> {
    let dir = scratch("journaled");
    let path = dir.join("queue.db");
    let repo = Arc::new(
        DualWrite::builder(Store::new(), Store::new())
            .queue(SqliteQueue::open(&path).await.expect("queue"))
            .stage(Stage::DualWrite)
            .delivery(Delivery::Journaled)
            .build()
            .expect("valid settings"),
    );
    let pool = raw_sqlite(&path).await;
    let floor_store = Store::new();
    let per_writer = sizes.journaled_ops / WRITERS;
    let (mut writes, mut inserts, mut drains, mut loops) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..sizes.journaled_rounds {
        let first = (round * sizes.journaled_ops) as u64;
        let started = Instant::now();
        let tasks: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let repo = Arc::clone(&repo);
                tokio::spawn(async move {
                    for seq in 0..per_writer {
                        let id = first + (writer * per_writer + seq) as u64;
                        repo.put(id, id).await.expect("a journaled write");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a writer");
        }
        let written = per_writer * WRITERS;
        writes.push(written as f64 / started.elapsed().as_secs_f64());
        inserts.push(batched_insert(&pool, first, written).await);

        let started = Instant::now();
        let report = repo.worker::<AccountsOp>().drain().await;
        assert_eq!(
            report.applied as usize, written,
            "the worker drained every write"
        );
        drains.push(written as f64 / started.elapsed().as_secs_f64());
        loops.push(plain_drain(&pool, &floor_store).await);
    }
    assert_eq!(
        repo.new_store().len(),
        floor_store.len(),
        "both drains applied every op"
    );
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    let (writes, inserts) = (median(&mut writes), median(&mut inserts));
    let (drains, loops) = (median(&mut drains), median(&mut loops));
    vec![
        Line {
            name: "journaled-append",
            this: writes,
            floor: inserts,
            unit: "ops/s",
            target: Target::AtLeast(0.5),
        },
        Line {
            name: "drain",
            this: drains,
            floor: loops,
            unit: "ops/s",
            target: Target::AtLeast(0.5),
        },
        Line {
            name: "drain-vs-journaled",
            this: drains,
            floor: writes,
            unit: "ops/s",
            target: Target::AtLeast(1.0),
        },
    ]
}

/// Write p99 with the follower refusing every call (circuit breaker on,
/// the default) vs the old store alone.
async fn follower_down(sizes: &Sizes) -> Line {
    let dir = scratch("down");
    let repo = dualwrite_on_sqlite(&dir, Store::down()).await;
    // Open the breaker.
    for id in 0..20 {
        repo.put(id, id)
            .await
            .expect("the old store took the write");
    }
    let (mut this, mut floor) = (Vec::new(), Vec::new());
    let rounds = (sizes.rounds / 3).max(3);
    for round in 0..rounds {
        let first = ((round + 1) * sizes.down_calls) as u64;
        for id in first..first + sizes.down_calls as u64 {
            let started = Instant::now();
            repo.put(id, id)
                .await
                .expect("the old store took the write");
            this.push(started.elapsed());
        }
        for id in first..first + sizes.down_calls as u64 {
            let started = Instant::now();
            repo.old_store().put(id, id).await.expect("a write");
            floor.push(started.elapsed());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Line {
        name: "follower-down-p99",
        this: micros(quantile(&mut this, 0.99)),
        floor: micros(quantile(&mut floor, 0.99)),
        unit: "us",
        target: Target::AtMost(1.2),
    }
}

/// A queue entry for the new store, as a missed `put(id, id)` queues it.
pub fn entry(id: u64) -> NewEntry {
    NewEntry {
        namespace: "bench".into(),
        target: Side::New,
        key: Key::from_display(&id),
        method: "put".into(),
        version: 1,
        payload: payload(id),
        reason: "follower unavailable".into(),
        uncertain: false,
    }
}

/// Appends entries `from..to` from [`WRITERS`] concurrent writers.
async fn fill(queue: &SqliteQueue, from: u64, to: u64) {
    let tasks: Vec<_> = (0..WRITERS as u64)
        .map(|writer| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut id = from + writer;
                while id < to {
                    queue.append(entry(id)).await.expect("an append");
                    id += WRITERS as u64;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a filler");
    }
}

/// Append and claim costs at 0, 10,000 and `sizes.queued` entries queued,
/// and the resident memory the queue grew by while filling to the last.
async fn queue_growth(sizes: &Sizes) -> (Line, growth::QueueTable) {
    let dir = scratch("queue");
    let queue = SqliteQueue::open(dir.join("queue.db"))
        .await
        .expect("queue");
    let mut table = growth::QueueTable::default();
    let mut queued = 0u64;
    let mut resident = (0, 0);
    let mut next_id = 10_000_000_000u64;
    for level in [0, 10_000, sizes.queued as u64] {
        if level > queued {
            let before = resident_bytes().unwrap_or(0);
            fill(&queue, queued, level).await;
            resident = (before, resident_bytes().unwrap_or(0));
            queued = level;
        }
        // Appends: one writer, each acknowledged (one fsync each).
        let appends = 200;
        let started = Instant::now();
        for _ in 0..appends {
            queue.append(entry(next_id)).await.expect("an append");
            next_id += 1;
        }
        let append = started.elapsed() / appends;
        // Claims: the worker's turnover, completing the last claim's 64
        // entries and claiming the next 64, twenty times.
        let mut leases = Vec::new();
        let mut claimed = 0u32;
        let started = Instant::now();
        for _ in 0..20 {
            let turnover = queue
                .complete_and_claim(&leases, "bench", 64, Duration::from_secs(60))
                .await;
            let claim = turnover.claim.expect("a claim");
            claimed += claim.entries.len() as u32;
            leases = claim.entries.iter().map(|entry| entry.lease).collect();
        }
        let per_entry = started.elapsed() / claimed.max(1);
        for result in queue
            .complete_and_claim(&leases, "bench", 0, Duration::from_secs(60))
            .await
            .completed
        {
            result.expect("a completion");
        }
        table.rows.push(growth::QueueRow {
            queued: level,
            append_us: micros(append),
            claim_us: micros(per_entry),
        });
    }
    let filled = (sizes.queued - 10_000) as f64;
    let grown = resident.1.saturating_sub(resident.0) as f64 / (1024.0 * 1024.0);
    let per_million = grown * 1e6 / filled;
    // What holding the same entries in memory would take: their payloads
    // and keys, with no overhead at all.
    let held = (payload(12_345_678).len() + 8) as f64 * 1e6 / (1024.0 * 1024.0);
    let _ = std::fs::remove_dir_all(&dir);
    (
        Line {
            name: "queue-memory",
            this: per_million,
            floor: held,
            unit: "MiB/1M-queued",
            target: Target::AtMost(0.1),
        },
        table,
    )
}
