//! The migration itself: the wrapper, the live load, the backfill, the
//! follower outage, the stage walk and the row-by-row check. `main.rs`
//! runs it and prints what it found; `tests/pg_to_mariadb.rs` runs it and
//! asserts the stores agree.

use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use dualwrite_runtime::fault_proxy::FaultProxy;
use dualwrite_runtime::migrate::{
    Backfill, BackfillOptions, BackfillReport, SyncQueue, Verify, VerifyOptions, VerifyReport,
};
use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::records::{MySqlTable, PgTable, TableSpec};
use dualwrite_runtime::{DualWrite, ReconciliationQueue, RetryPolicy, Stage};
use rust_decimal::Decimal;
use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::{MySqlPool, PgPool};

use crate::shop::{micros, Customer, MyShop, Order, OrderStatus, PgShop, Shop, Tables, ORDER_IDS};

/// The local PostgreSQL (old store) unless `DUALWRITE_OLD_URL` says otherwise.
pub const DEFAULT_OLD_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// The local MariaDB (new store) unless `DUALWRITE_NEW_URL` says otherwise.
pub const DEFAULT_NEW_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// What a run uses.
#[derive(Debug, Clone)]
pub struct Config {
    /// The old store (PostgreSQL).
    pub old_url: String,
    /// The new store (MariaDB); the service reaches it through a fault
    /// proxy, so the example can take it down.
    pub new_url: String,
    /// Customers that exist before dual writing begins (orders: three each).
    pub existing_customers: i64,
    /// Concurrent writers of the live load, each on keys of its own.
    pub writers: i64,
    /// How long the load runs in each stage.
    pub per_stage: Duration,
    /// How long the follower is down during `dual_write`.
    pub outage: Duration,
}

impl Config {
    /// The URLs from `DUALWRITE_OLD_URL` and `DUALWRITE_NEW_URL`, else the
    /// local servers.
    pub fn from_env() -> Config {
        Config {
            old_url: std::env::var("DUALWRITE_OLD_URL").unwrap_or_else(|_| DEFAULT_OLD_URL.into()),
            new_url: std::env::var("DUALWRITE_NEW_URL").unwrap_or_else(|_| DEFAULT_NEW_URL.into()),
            existing_customers: 500,
            writers: 4,
            per_stage: Duration::from_millis(800),
            outage: Duration::from_millis(1500),
        }
    }
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    pub tables: Tables,
    pub backfilled: Vec<BackfillReport>,
    /// Writes the live load made through the wrapper.
    pub live_writes: u64,
    /// Writes the worker applied to the follower after the outage.
    pub reconciled: u64,
    pub customers: VerifyReport,
    pub orders: VerifyReport,
}

impl Outcome {
    /// Whether both tables agree row by row.
    pub fn agree(&self) -> bool {
        self.customers.is_clean() && self.orders.is_clean()
    }
}

type Repo = DualWrite<PgShop, MyShop>;

/// The namespace the wrapper files `Shop`'s writes under (the trait's name).
const NAMESPACE: &str = "Shop";

/// Runs the whole migration on tables named after `prefix` (which must be
/// unique to the run); the tables are left for the caller to drop
/// ([`drop_tables`]) or keep.
pub async fn run(config: &Config, prefix: &str) -> Result<Outcome, Box<dyn Error>> {
    let old = connect_old(&config.old_url).await?;
    let new_direct = connect_new(&config.new_url).await?;
    let tables = Tables::new(prefix);
    PgShop {
        pool: old.clone(),
        tables: tables.clone(),
    }
    .create()
    .await?;
    MyShop {
        pool: new_direct.clone(),
        tables: tables.clone(),
    }
    .create()
    .await?;

    // Before dual writing: the shop's existing customers and orders, in
    // PostgreSQL only.
    let existing = PgShop {
        pool: old.clone(),
        tables: tables.clone(),
    };
    for id in 0..config.existing_customers {
        existing.put_customer(id, customer(id, 0)).await?;
        for n in 0..3 {
            existing.put_order(order_id(id, n), order(id, n, 0)).await?;
        }
    }
    println!(
        "{} customers and {} orders exist in PostgreSQL ({}, {})",
        config.existing_customers,
        config.existing_customers * 3,
        tables.customers,
        tables.orders
    );

    // The service reaches MariaDB through a proxy the example controls.
    let proxy = FaultProxy::start_to(&host_port(&config.new_url)?).await?;
    let new = MySqlPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_millis(800))
        .connect(&via(&config.new_url, proxy.addr()))
        .await?;
    let dir = std::env::temp_dir().join(format!("dualwrite-{prefix}"));
    std::fs::create_dir_all(&dir)?;
    let queue: Arc<dyn ReconciliationQueue> =
        Arc::new(SqliteQueue::open(dir.join("queue.db")).await?);
    let repo: Repo = DualWrite::builder(
        PgShop {
            pool: old.clone(),
            tables: tables.clone(),
        },
        MyShop {
            pool: new.clone(),
            tables: tables.clone(),
        },
    )
    .shared_queue(Arc::clone(&queue))
    .stage(Stage::Off)
    // A follower write that times out is queued, and until the worker
    // applies it a shadow read of its key disagrees (which counts against
    // the move to `live`): generous, for a machine busy with other work.
    .follower_timeout(Duration::from_secs(2))
    .poll_interval(Duration::from_millis(20))
    .retry(
        RetryPolicy::default()
            .min_delay(Duration::from_millis(20))
            .max_delay(Duration::from_millis(250))
            .max_attempts(10_000),
    )
    .sync_records(
        "customers",
        PgTable::new(old.clone(), &tables.customers, "id"),
        my_customers(&new, &tables),
    )
    .sync_records(
        "orders",
        PgTable::new(old.clone(), &tables.orders, "id"),
        MySqlTable::new(new.clone(), &tables.orders, "id"),
    )
    .build()?;
    let worker = repo.spawn_worker();

    let load = Load::start(&repo, config);
    println!("live load: {} writers", config.writers);
    println!("stage off: writes go to PostgreSQL only");
    tokio::time::sleep(config.per_stage).await;

    move_to(&repo, Stage::DualWrite).await?;
    println!("stage dual_write: backfilling what existed before (live writes continue)");
    let mut backfilled = Vec::new();
    for (records, table, target) in [
        ("customers", &tables.customers, my_customers(&new, &tables)),
        (
            "orders",
            &tables.orders,
            MySqlTable::new(new.clone(), &tables.orders, "id"),
        ),
    ] {
        let report = Backfill::new(
            PgTable::new(old.clone(), table, "id"),
            target,
            BackfillOptions {
                batch_size: 200,
                ..BackfillOptions::default()
            },
        )
        .live_writes(SyncQueue::new(Arc::clone(&queue), NAMESPACE, records))
        .run()
        .await?;
        println!(
            "  {records}: {} read, {} written, {} already there, {} re-synced (changed while copied or clashed on the unique email)",
            report.read, report.written, report.skipped, report.resynced + report.conflicted
        );
        backfilled.push(report);
    }

    println!(
        "follower outage: MariaDB refused for {:?} under load",
        config.outage
    );
    let applied_before = worker.report().applied;
    proxy.refuse().await;
    tokio::time::sleep(config.outage).await;
    let queued = repo.queue().stats().await?;
    println!(
        "  queued for the follower meanwhile: {} pending, {} being retried",
        queued.new.pending, queued.new.in_flight
    );
    proxy.heal().await?;
    drained(&repo).await?;
    let reconciled = worker.report().applied - applied_before;
    println!("  follower back; the worker applied {reconciled} queued writes");

    for stage in [Stage::Shadow, Stage::Live, Stage::RampDown] {
        move_to(&repo, stage).await?;
        println!(
            "stage {}: writes {}{}, reads from {}{}",
            stage.as_str(),
            stage.authoritative(),
            stage
                .follower()
                .map(|f| format!(" then {f}"))
                .unwrap_or_default(),
            stage.serving(),
            stage
                .compared()
                .map(|c| format!(" (compared with {c})"))
                .unwrap_or_default(),
        );
        tokio::time::sleep(config.per_stage).await;
    }
    let live_writes = load.stop().await?;
    drained(&repo).await?;

    // Both databases, row by row, while both still receive every write.
    let customers = Verify::new(
        PgTable::new(old.clone(), &tables.customers, "id"),
        my_customers(&new_direct, &tables),
        VerifyOptions::default(),
    )
    .run()
    .await?;
    let orders = Verify::new(
        PgTable::new(old.clone(), &tables.orders, "id"),
        MySqlTable::new(new_direct.clone(), &tables.orders, "id"),
        VerifyOptions::default(),
    )
    .run()
    .await?;

    move_to(&repo, Stage::Complete).await?;
    let served = repo.customer(0).await?;
    println!(
        "stage complete: MariaDB alone; customer 0 is {}",
        served.map_or("missing".to_owned(), |c| c.email)
    );
    worker.shutdown().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Outcome {
        tables,
        backfilled,
        live_writes,
        reconciled,
        customers,
        orders,
    })
}

/// MariaDB's customers as records. sqlx reports a `utf8mb4_bin` column
/// (the email) as binary, so a plain [`MySqlTable`] would read the email as
/// bytes and never match PostgreSQL's text; the query reads it as text
/// (the same characters), and writes still go to the table.
fn my_customers(pool: &MySqlPool, tables: &Tables) -> MySqlTable {
    MySqlTable::with_spec(
        pool.clone(),
        TableSpec::query(
            format!(
                "SELECT id, CAST(email AS CHAR) AS email, name, phone, created_at FROM {}",
                tables.customers
            ),
            "id",
        )
        .writes_to(&tables.customers),
    )
}

/// Drops a run's tables (and PostgreSQL's enum type) from both databases.
pub async fn drop_tables(config: &Config, tables: &Tables) -> Result<(), Box<dyn Error>> {
    PgShop {
        pool: connect_old(&config.old_url).await?,
        tables: tables.clone(),
    }
    .drop_all()
    .await?;
    MyShop {
        pool: connect_new(&config.new_url).await?,
        tables: tables.clone(),
    }
    .drop_all()
    .await?;
    Ok(())
}

/// A table prefix unique to this run.
pub fn unique_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("shop_{}_{nanos}", std::process::id())
}

/// A server that cannot be reached, named, with the variable that points
/// at another.
#[derive(Debug, thiserror::Error)]
#[error("{server} is not reachable at {url} ({source}); start it, or set {variable} to point at another")]
pub struct Unreachable {
    pub server: &'static str,
    pub url: String,
    pub variable: &'static str,
    pub source: sqlx::Error,
}

async fn connect_old(url: &str) -> Result<PgPool, Unreachable> {
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(3))
        .connect(url)
        .await
        .map_err(|source| Unreachable {
            server: "PostgreSQL (the old store)",
            url: url.to_owned(),
            variable: "DUALWRITE_OLD_URL",
            source,
        })
}

async fn connect_new(url: &str) -> Result<MySqlPool, Unreachable> {
    MySqlPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(3))
        .connect(url)
        .await
        .map_err(|source| Unreachable {
            server: "MariaDB (the new store)",
            url: url.to_owned(),
            variable: "DUALWRITE_NEW_URL",
            source,
        })
}

/// `host:port` of a URL (port 3306 if it names none).
fn host_port(url: &str) -> Result<String, String> {
    let rest = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("{url:?} is not a URL (DUALWRITE_NEW_URL)"))?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    Ok(if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:3306")
    })
}

/// The URL with its host and port replaced by `addr` (the proxy).
fn via(url: &str, addr: std::net::SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("mysql", url));
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((credentials, rest)) => (format!("{credentials}@"), rest),
        None => (String::new(), rest),
    };
    let path = rest.find(['/', '?']).map_or("", |at| &rest[at..]);
    format!("{scheme}://{credentials}{addr}{path}")
}

/// Moves the stage once nothing is queued (a stage move waits for the
/// follower to have caught up).
async fn move_to(repo: &Repo, stage: Stage) -> Result<(), Box<dyn Error>> {
    let mut tries = 0;
    loop {
        drained(repo).await?;
        match repo.stage().set(stage).await {
            Ok(_) => return Ok(()),
            // A write queued between the drain and the move: wait again.
            Err(error) if tries < 20 => {
                tries += 1;
                eprintln!("  moving to {}: {error}; retrying", stage.as_str());
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Waits until the queue holds nothing (the worker running).
async fn drained(repo: &Repo) -> Result<(), Box<dyn Error>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = repo.queue().stats().await?;
        if stats.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the queue did not drain in 60 s: {stats:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn order_id(customer: i64, n: i64) -> i64 {
    ORDER_IDS + customer * 10 + n
}

/// Customer `id` at its `version`-th change. Pairs of customers have emails
/// that differ only in case (`Buyer7@` and `buyer7@`): distinct in
/// PostgreSQL, so they must be distinct in MariaDB too.
fn customer(id: i64, version: i64) -> Customer {
    let local = if id % 2 == 0 {
        format!("Buyer{}", id / 2)
    } else {
        format!("buyer{}", id / 2)
    };
    let email = if version == 0 {
        format!("{local}@example.com")
    } else {
        format!("{local}.{version}@example.com")
    };
    Customer {
        email,
        name: format!("Customer {id} (v{version})"),
        phone: (id % 3 != 0).then(|| format!("+44 20 7946 {:04}", (id * 7 + version) % 10_000)),
        created_at: micros(
            Utc.timestamp_opt(1_700_000_000 + id * 3_600, (id as u32 % 1000) * 1_001_000)
                .single()
                .unwrap_or_default(),
        ),
    }
}

fn order(customer: i64, n: i64, version: i64) -> Order {
    let status = OrderStatus::ALL[((n + version) % 4) as usize];
    let placed_at = micros(
        Utc.timestamp_opt(1_710_000_000 + customer * 60 + n, 123_456_000)
            .single()
            .unwrap_or_default(),
    );
    Order {
        customer_id: customer,
        // 12.34, 112.35, ...: two decimal places, never a float.
        total: Decimal::new(1_234 + 10_001 * n + 7 * version, 2),
        status,
        placed_at,
        shipped_at: (status == OrderStatus::Shipped)
            .then(|| placed_at + chrono::Duration::hours(26)),
        note: (version % 2 == 1).then(|| format!("leave at door (v{version})")),
    }
}

/// Writers through the wrapper, each on customers of its own, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Load {
    fn start(repo: &Repo, config: &Config) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let tasks = (0..config.writers)
            .map(|writer| {
                let (repo, stop, writes) = (repo.clone(), stop.clone(), writes.clone());
                let (writers, existing) = (config.writers, config.existing_customers);
                tokio::spawn(async move {
                    let mut step = 0_i64;
                    while !stop.load(Ordering::Relaxed) {
                        step += 1;
                        // Existing customers and new ones (ids from `existing` on).
                        let id = writer + writers * (step % (existing / writers + 40));
                        let result = match step % 5 {
                            0 => repo.delete_order(order_id(id, step % 3)).await,
                            1 | 2 => {
                                repo.put_order(order_id(id, step % 4), order(id, step % 4, step))
                                    .await
                            }
                            _ => repo.put_customer(id, customer(id, step)).await,
                        };
                        result.map_err(|error| format!("writer {writer}, step {step}: {error}"))?;
                        writes.fetch_add(1, Ordering::Relaxed);
                        // Read back what was written: in `shadow` and
                        // `live` the other store's answer is compared.
                        repo.customer(id).await.map_err(|error| error.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        Load {
            stop,
            writes,
            tasks,
        }
    }

    async fn stop(self) -> Result<u64, Box<dyn Error>> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await??;
        }
        Ok(self.writes.load(Ordering::Relaxed))
    }
}
