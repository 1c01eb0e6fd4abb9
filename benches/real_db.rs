//! Write figures against the local PostgreSQL (old) and MariaDB (new):
//! the wrapper beside a hand-written equivalent on the same pools and
//! concurrency, each scenario and its floor run alternately in one process
//! for several rounds. One line per scenario:
//! `name: ratio=R this=X floor=Y unit=U`.
//!
//! ```text
//! cargo bench --features services --bench real_db            # 3 rounds of 2,000 writes
//! cargo bench --features services --bench real_db -- 5 4000  # rounds, writes per round
//! cargo bench --features services --bench real_db -- 3 1000 2 # and 2 writers (default 16)
//! ```
//!
//! Servers: `DUALWRITE_PG_URL` and `DUALWRITE_MYSQL_URL` (defaults: the
//! local servers). Targets (issue 9): `sync` throughput >= 0.9x the
//! hand-written loop; follower down, `journaled`: p99 <= 1.2x the old store
//! alone (measured three times: the SQLite queue, a `PostgresQueue` in the
//! old database, and that queue with `confirm_before_return`, the setting's
//! price); `key_sync` against plain `sync`: no target, its price.

#[path = "../tests/real_servers/mod.rs"]
mod real_servers;

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dualwrite_runtime::fault_proxy::FaultProxy;
use dualwrite_runtime::queue::{PostgresQueue, SqliteQueue};
use dualwrite_runtime::records::{MySqlTable, PgTable};
use dualwrite_runtime::{
    Builder, Delivery, DualWrite, KeySync, ReconciliationQueue, RetryPolicy, Stage,
};
use real_servers::{
    create_tables, drop_tables, mysql_url, pg_url, unique_table, via, Accounts, MyAccounts,
    PgAccounts,
};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::{MySqlPool, PgPool};

/// Concurrent writers, and each pool's connections (default 16; the third
/// argument sets it).
static CONCURRENCY: AtomicUsize = AtomicUsize::new(16);

fn concurrency() -> usize {
    CONCURRENCY.load(Ordering::Relaxed)
}

/// One side of a comparison: its writes' latencies and wall time.
#[derive(Default)]
struct Sample {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Sample {
    fn add(&mut self, other: Sample) {
        self.latencies.extend(other.latencies);
        self.elapsed += other.elapsed;
    }

    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn p99_ms(&mut self) -> f64 {
        self.latencies.sort_unstable();
        let at = (self.latencies.len() * 99 / 100).min(self.latencies.len() - 1);
        self.latencies[at].as_secs_f64() * 1e3
    }
}

/// `writes` writes by `CONCURRENCY` tasks, each on keys of its own
/// (`base` up), through `write`.
/// The wrapper the scenarios write through.
type Repo = DualWrite<PgAccounts, MyAccounts>;

/// [`run`] writing through `repo` with the owner `owner`.
async fn through(repo: &Repo, writes: usize, base: i64, owner: &'static str) -> Sample {
    let repo = repo.clone();
    run(writes, base, move |key, step| {
        let repo = repo.clone();
        async move {
            repo.put_account(key, owner.into(), step)
                .await
                .expect("a write");
        }
    })
    .await
}

async fn run<W, F>(writes: usize, base: i64, write: W) -> Sample
where
    W: Fn(i64, i64) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let per_task = writes / concurrency();
    let tasks: Vec<_> = (0..concurrency() as i64)
        .map(|task| {
            let write = write.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task);
                for step in 0..per_task as i64 {
                    let key = base + task * 100_000 + step % 500;
                    let at = Instant::now();
                    write(key, step).await;
                    latencies.push(at.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut sample = Sample::default();
    for task in tasks {
        sample.latencies.extend(task.await.expect("a writer"));
    }
    sample.elapsed = started.elapsed();
    sample
}

/// The floor of the follower-down lines: `writes` to the old store alone.
async fn old_alone(old: &Arc<PgAccounts>, writes: usize, base: i64) -> Sample {
    let old = old.clone();
    run(writes, base, move |key, step| {
        let old = old.clone();
        async move {
            old.put_account(key, "alone".into(), step)
                .await
                .expect("old");
        }
    })
    .await
}

/// The wrapper over `pg` and `my` with the SQLite queue in `queue`.
async fn wrapper(
    pg: &PgPool,
    my: &MySqlPool,
    table: &str,
    queue: &Path,
    delivery: Delivery,
    key_sync: bool,
) -> DualWrite<PgAccounts, MyAccounts> {
    let queue = SqliteQueue::open(queue).await.expect("the queue opens");
    builder_on(pg, my, table, queue, delivery, key_sync)
        .build()
        .expect("valid settings")
}

/// The wrapper's builder over `pg` and `my` with `queue`.
fn builder_on(
    pg: &PgPool,
    my: &MySqlPool,
    table: &str,
    queue: impl ReconciliationQueue + 'static,
    delivery: Delivery,
    key_sync: bool,
) -> Builder<PgAccounts, MyAccounts> {
    let builder = DualWrite::builder(
        PgAccounts {
            pool: pg.clone(),
            table: table.to_owned(),
        },
        MyAccounts {
            pool: my.clone(),
            table: table.to_owned(),
        },
    )
    .queue(queue)
    .stage(Stage::DualWrite)
    .delivery(delivery)
    .follower_timeout(Duration::from_millis(500))
    .retry(
        RetryPolicy::default()
            .min_delay(Duration::from_millis(50))
            .max_delay(Duration::from_secs(1))
            .max_attempts(100_000),
    );
    if key_sync {
        builder
            .sync_records(
                "accounts",
                PgTable::new(pg.clone(), table, "id"),
                MySqlTable::new(my.clone(), table, "id"),
            )
            .key_sync(KeySync::records("accounts"))
    } else {
        builder
    }
}

/// A `PostgresQueue` in the old database with tables `prefix`, on a pool
/// of its own of 16 connections, whatever the number of writers: queue and
/// store calls do not wait for each other's connections, and the worker's
/// statements (up to 64 leases settled at once) do not starve the writers'
/// write-aheads, as they did on a pool of 2 (p99 1.5 s).
async fn pg_queue(prefix: &str) -> PostgresQueue {
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect(&pg_url())
        .await
        .expect("PostgreSQL for the queue");
    PostgresQueue::options(pool)
        .table_prefix(prefix)
        .create_schema(true)
        .open()
        .await
        .expect("the PostgreSQL queue opens")
}

fn line(name: &str, ratio: f64, this: f64, floor: f64, unit: &str) {
    println!("{name}: ratio={ratio:.3} this={this:.1} floor={floor:.1} unit={unit}");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|arg| arg.parse::<usize>().ok());
    let rounds = args.next().unwrap_or(3);
    let writes = args.next().unwrap_or(2_000);
    if let Some(writers) = args.next() {
        CONCURRENCY.store(writers.max(1), Ordering::Relaxed);
    }

    let pg = PgPoolOptions::new()
        .max_connections(concurrency() as u32)
        .connect(&pg_url())
        .await
        .unwrap_or_else(|error| {
            panic!("PostgreSQL at {} (set DUALWRITE_PG_URL): {error}", pg_url())
        });
    let my = MySqlPoolOptions::new()
        .max_connections(concurrency() as u32)
        .connect(&mysql_url())
        .await
        .unwrap_or_else(|error| {
            panic!(
                "MariaDB at {} (set DUALWRITE_MYSQL_URL): {error}",
                mysql_url()
            )
        });
    let table = unique_table("bench");
    create_tables(&pg, &my, &table).await;
    let dir = std::env::temp_dir().join(format!("dualwrite-bench-{table}"));
    std::fs::create_dir_all(&dir).expect("a scratch directory");

    // The follower behind a proxy that refuses: a lazy pool, so that it
    // is built while MariaDB is unreachable.
    let proxy = FaultProxy::start_to(&mysql_addr())
        .await
        .expect("the proxy starts");
    proxy.refuse().await;
    let my_down = MySqlPoolOptions::new()
        .max_connections(concurrency() as u32)
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy(&via(&mysql_url(), proxy.addr()))
        .expect("a lazy pool");

    let sync = wrapper(
        &pg,
        &my,
        &table,
        &dir.join("sync.db"),
        Delivery::Sync,
        false,
    )
    .await;
    let keyed = wrapper(
        &pg,
        &my,
        &table,
        &dir.join("keysync.db"),
        Delivery::Sync,
        true,
    )
    .await;
    let journaled = wrapper(
        &pg,
        &my_down,
        &table,
        &dir.join("down.db"),
        Delivery::Journaled,
        false,
    )
    .await;
    // The same with a `PostgresQueue` in the old database, beside the
    // accounts table.
    let queue_prefix = format!("{table}_q_");
    let journaled_pg = builder_on(
        &pg,
        &my_down,
        &table,
        pg_queue(&queue_prefix).await,
        Delivery::Journaled,
        false,
    )
    .build()
    .expect("valid settings");
    // And with each write waiting for its confirmation (the setting's price).
    let confirmed_prefix = format!("{table}_qc_");
    let journaled_pg_confirmed = builder_on(
        &pg,
        &my_down,
        &table,
        pg_queue(&confirmed_prefix).await,
        Delivery::Journaled,
        false,
    )
    .confirm_before_return(true)
    .build()
    .expect("valid settings");
    // Key syncs are applied by a worker; the follower-down queues' workers
    // meet the circuit breaker.
    let keyed_worker = keyed.spawn_worker();
    let down_worker = journaled.spawn_worker();
    let down_pg_worker = journaled_pg.spawn_worker();
    let confirmed_worker = journaled_pg_confirmed.spawn_worker();
    let old = Arc::new(PgAccounts {
        pool: pg.clone(),
        table: table.clone(),
    });
    let new = Arc::new(MyAccounts {
        pool: my.clone(),
        table: table.clone(),
    });

    let mut figures: [(Sample, Sample); 5] = Default::default();
    for round in 0..rounds as i64 {
        let base = round * 100_000_000;
        // 1. sync, both healthy, against old-then-new by hand.
        let this = through(&sync, writes, base, "sync").await;
        let (o, n) = (old.clone(), new.clone());
        let floor = run(writes, base + 10_000_000, move |key, step| {
            let (o, n) = (o.clone(), n.clone());
            async move {
                o.put_account(key, "hand".into(), step).await.expect("old");
                n.put_account(key, "hand".into(), step).await.expect("new");
            }
        })
        .await;
        figures[0].0.add(this);
        figures[0].1.add(floor);

        // 2. follower down, journaled, against the old store alone.
        let this = through(&journaled, writes, base + 20_000_000, "down").await;
        let floor = old_alone(&old, writes, base + 30_000_000).await;
        figures[1].0.add(this);
        figures[1].1.add(floor);

        // 3. key_sync against plain sync.
        let this = through(&keyed, writes, base + 40_000_000, "keysync").await;
        let floor = through(&sync, writes, base + 50_000_000, "sync").await;
        figures[2].0.add(this);
        figures[2].1.add(floor);

        // 4. follower down, journaled, the PostgreSQL queue in the old
        // database, against the old store alone.
        let this = through(&journaled_pg, writes, base + 60_000_000, "downpg").await;
        let floor = old_alone(&old, writes, base + 70_000_000).await;
        figures[3].0.add(this);
        figures[3].1.add(floor);

        // 5. the same, each write waiting for its confirmation.
        let this = through(
            &journaled_pg_confirmed,
            writes,
            base + 80_000_000,
            "downpgc",
        )
        .await;
        let floor = old_alone(&old, writes, base + 90_000_000).await;
        figures[4].0.add(this);
        figures[4].1.add(floor);
        eprintln!("round {} of {rounds} done", round + 1);
    }

    let [healthy, mut down, mut keysync, mut down_pg, mut down_pg_confirmed] = figures;
    let (this, floor) = (healthy.0.per_second(), healthy.1.per_second());
    line(
        "sync_healthy_throughput_vs_hand_loop",
        this / floor,
        this,
        floor,
        "writes/s",
    );
    let (this, floor) = (down.0.p99_ms(), down.1.p99_ms());
    line(
        "journaled_follower_down_p99_vs_old_alone",
        this / floor,
        this,
        floor,
        "ms",
    );
    let (this, floor) = (down_pg.0.p99_ms(), down_pg.1.p99_ms());
    line(
        "journaled_follower_down_pg_queue_p99_vs_old_alone",
        this / floor,
        this,
        floor,
        "ms",
    );
    let (this, floor) = (down_pg_confirmed.0.p99_ms(), down_pg_confirmed.1.p99_ms());
    line(
        "journaled_follower_down_pg_queue_confirm_before_return_p99_vs_old_alone",
        this / floor,
        this,
        floor,
        "ms",
    );
    let (this, floor) = (keysync.0.per_second(), keysync.1.per_second());
    line(
        "key_sync_throughput_vs_sync",
        this / floor,
        this,
        floor,
        "writes/s",
    );
    let (this, floor) = (keysync.0.p99_ms(), keysync.1.p99_ms());
    line("key_sync_p99_vs_sync", this / floor, this, floor, "ms");

    let _ = keyed_worker.shutdown().await;
    // Waited for, so that its thread is not still running when main returns
    // and the runtime shuts down under it.
    let _ = down_worker.shutdown().await;
    let _ = down_pg_worker.shutdown().await;
    let _ = confirmed_worker.shutdown().await;
    let _ = PostgresQueue::uninstall_schema(&pg, &queue_prefix).await;
    let _ = PostgresQueue::uninstall_schema(&pg, &confirmed_prefix).await;
    drop_tables(&pg, &my, &table).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// MariaDB's `host:port`, from its URL.
fn mysql_addr() -> String {
    let url = mysql_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:3306")
    }
}
