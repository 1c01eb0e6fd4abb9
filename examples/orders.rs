//! The main example: moving an order table to a new schema without downtime.
//!
//! Two SQLite files stand for the two databases: the old one (table
//! `orders`) and the new one (table `orders_v2`: other column names, the
//! status as a number). The service talks to them through an
//! `OrderRepository` trait, and `#[dual_write]` on that trait is the one line
//! the migration adds. The example takes the new database offline and back,
//! lets the worker catch it up, copies the orders that existed before dual
//! writing began (a backfill), walks the stages to `complete`, and ends by
//! verifying the two databases record by record (exit code 1 if they
//! disagree). Backfill and verify see each database through the record
//! interface (`RecordStore`): the old table as it is (`SqliteTable`), the new
//! one through a few lines of hand-written mapping (`OrdersV2Records`).
//!
//! ```text
//! cargo run --example orders           # databases in a temporary directory
//! cargo run --example orders -- dbs    # or in ./dbs, kept for `sqlite3 dbs/new.db`
//! ```

use std::error::Error;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dualwrite_runtime::migrate::{
    Backfill, BackfillOptions, DifferenceKind, SyncQueue, Verify, VerifyOptions, VerifyReport,
};
use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::records::{
    PutCondition, Record, RecordError, RecordKey, RecordStore, SqliteTable, Value,
};
use dualwrite_runtime::{dual_write, DualWrite, RetryPolicy, Stage, Worker};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteRow};
use sqlx::Row;

/// An order as the service sees it, whichever database holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Order {
    id: i64,
    customer: String,
    amount_cents: i64,
    status: Status,
}

/// The old schema stores the name, the new one the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Status {
    Placed = 1,
    Paid = 2,
    Shipped = 3,
}

impl Status {
    const ALL: [Status; 3] = [Status::Placed, Status::Paid, Status::Shipped];

    fn name(self) -> &'static str {
        match self {
            Status::Placed => "placed",
            Status::Paid => "paid",
            Status::Shipped => "shipped",
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the {0} database is offline")]
    Offline(&'static str),
    #[error("no order {0}")]
    NotFound(i64),
    #[error("order {0} has an unknown status {1}")]
    UnknownStatus(i64, String),
}

/// The repository trait the service already had, plus the attribute. The
/// method options say which methods are writes and what orders them (the
/// names alone would classify them; saying it is clearer).
#[dual_write]
trait OrderRepository: Send + Sync {
    /// Creates the order, or overwrites it with the same data: queued writes
    /// are delivered at least once, so every write must be safe to repeat.
    #[dual_write(write, key = order.id)]
    async fn create_order(&self, order: Order) -> Result<(), StoreError>;

    #[dual_write(write, key = id)]
    async fn update_status(&self, id: i64, status: Status) -> Result<(), StoreError>;

    #[dual_write(read)]
    async fn get_order(&self, id: i64) -> Result<Option<Order>, StoreError>;

    #[dual_write(read)]
    async fn list_orders(&self) -> Result<Vec<Order>, StoreError>;
}

/// What both stores share: a connection pool, a fault switch, and a log of
/// which store each call reached (the stage walk prints it).
struct Db {
    name: &'static str,
    pool: SqlitePool,
    offline: AtomicBool,
    calls: Arc<Mutex<Vec<&'static str>>>,
}

impl Db {
    /// Opens (creating if needed) a SQLite file and sets up its table.
    async fn open(
        name: &'static str,
        dir: &Path,
        schema: &str,
        calls: &Arc<Mutex<Vec<&'static str>>>,
    ) -> Result<Db, sqlx::Error> {
        let options = SqliteConnectOptions::new()
            .filename(dir.join(format!("{name}.db")))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePool::connect_with(options).await?;
        for statement in schema.split(';') {
            sqlx::query(statement).execute(&pool).await?;
        }
        let (offline, calls) = (AtomicBool::new(false), Arc::clone(calls));
        Ok(Db {
            name,
            pool,
            offline,
            calls,
        })
    }

    fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::SeqCst);
    }

    /// Every call starts here: it is logged, and fails while offline.
    fn reach(&self) -> Result<&SqlitePool, StoreError> {
        self.calls.lock().unwrap().push(self.name);
        match self.offline.load(Ordering::SeqCst) {
            true => Err(StoreError::Offline(self.name)),
            false => Ok(&self.pool),
        }
    }
}

// Each table is created if missing and emptied, so every run starts afresh.
const OLD_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY,
    customer TEXT NOT NULL, amount_cents INTEGER NOT NULL, status TEXT NOT NULL);
    DELETE FROM orders";

/// The old store: `orders(id, customer, amount_cents, status)`.
struct OldStore(Db);

fn from_old_row(row: SqliteRow) -> Result<Order, StoreError> {
    let (id, status): (i64, String) = (row.try_get("id")?, row.try_get("status")?);
    let Some(status) = Status::ALL.into_iter().find(|known| known.name() == status) else {
        return Err(StoreError::UnknownStatus(id, status));
    };
    Ok(Order {
        id,
        customer: row.try_get("customer")?,
        amount_cents: row.try_get("amount_cents")?,
        status,
    })
}

impl OrderRepository for OldStore {
    async fn create_order(&self, order: Order) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO orders (id, customer, amount_cents, status) VALUES (?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET customer = excluded.customer,
                 amount_cents = excluded.amount_cents, status = excluded.status",
        )
        .bind(order.id)
        .bind(&order.customer)
        .bind(order.amount_cents)
        .bind(order.status.name())
        .execute(self.0.reach()?)
        .await?;
        Ok(())
    }

    async fn update_status(&self, id: i64, status: Status) -> Result<(), StoreError> {
        let query = sqlx::query("UPDATE orders SET status = ? WHERE id = ?");
        let done = query
            .bind(status.name())
            .bind(id)
            .execute(self.0.reach()?)
            .await?;
        match done.rows_affected() {
            0 => Err(StoreError::NotFound(id)),
            _ => Ok(()),
        }
    }

    async fn get_order(&self, id: i64) -> Result<Option<Order>, StoreError> {
        let query = sqlx::query("SELECT * FROM orders WHERE id = ?").bind(id);
        let row = query.fetch_optional(self.0.reach()?).await?;
        row.map(from_old_row).transpose()
    }

    async fn list_orders(&self) -> Result<Vec<Order>, StoreError> {
        let query = sqlx::query("SELECT * FROM orders ORDER BY id");
        let rows = query.fetch_all(self.0.reach()?).await?;
        rows.into_iter().map(from_old_row).collect()
    }
}

const NEW_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS orders_v2 (order_id INTEGER PRIMARY KEY,
    customer_name TEXT NOT NULL, total_cents INTEGER NOT NULL,
    status_code INTEGER NOT NULL, migrated_at TEXT NOT NULL);
    DELETE FROM orders_v2";

/// The new store: `orders_v2(order_id, customer_name, total_cents,
/// status_code, migrated_at)`.
struct NewStore(Db);

fn from_new_row(row: SqliteRow) -> Result<Order, StoreError> {
    let (id, code): (i64, i64) = (row.try_get("order_id")?, row.try_get("status_code")?);
    let Some(status) = Status::ALL.into_iter().find(|known| *known as i64 == code) else {
        return Err(StoreError::UnknownStatus(id, code.to_string()));
    };
    Ok(Order {
        id,
        customer: row.try_get("customer_name")?,
        amount_cents: row.try_get("total_cents")?,
        status,
    })
}

impl OrderRepository for NewStore {
    async fn create_order(&self, order: Order) -> Result<(), StoreError> {
        // `migrated_at` is the new schema's own bookkeeping: set when the row
        // first arrives, left alone when a replay writes the row again.
        sqlx::query(
            "INSERT INTO orders_v2 (order_id, customer_name, total_cents, status_code, migrated_at)
             VALUES (?, ?, ?, ?, datetime('now'))
             ON CONFLICT (order_id) DO UPDATE SET customer_name = excluded.customer_name,
                 total_cents = excluded.total_cents, status_code = excluded.status_code",
        )
        .bind(order.id)
        .bind(&order.customer)
        .bind(order.amount_cents)
        .bind(order.status as i64)
        .execute(self.0.reach()?)
        .await?;
        Ok(())
    }

    async fn update_status(&self, id: i64, status: Status) -> Result<(), StoreError> {
        let query = sqlx::query("UPDATE orders_v2 SET status_code = ? WHERE order_id = ?");
        let done = query
            .bind(status as i64)
            .bind(id)
            .execute(self.0.reach()?)
            .await?;
        match done.rows_affected() {
            0 => Err(StoreError::NotFound(id)),
            _ => Ok(()),
        }
    }

    async fn get_order(&self, id: i64) -> Result<Option<Order>, StoreError> {
        let query = sqlx::query("SELECT * FROM orders_v2 WHERE order_id = ?").bind(id);
        let row = query.fetch_optional(self.0.reach()?).await?;
        row.map(from_new_row).transpose()
    }

    async fn list_orders(&self) -> Result<Vec<Order>, StoreError> {
        let query = sqlx::query("SELECT * FROM orders_v2 ORDER BY order_id");
        let rows = query.fetch_all(self.0.reach()?).await?;
        rows.into_iter().map(from_new_row).collect()
    }
}

/// The new table as backfill, verify and the worker's key-level syncs see
/// it: a record keyed by `order_id` whose fields carry the old table's
/// names and spellings (`customer`, `amount_cents`, `status` by name), so
/// that both sides speak the same record. `SqliteTable` reads through a
/// renaming query too, but cannot write back through one; a store whose
/// schema changed takes these few lines instead.
#[derive(Clone)]
struct OrdersV2Records(SqlitePool);

type V2Row = (i64, String, i64, i64);
const V2_SELECT: &str = "SELECT order_id, customer_name, total_cents, status_code FROM orders_v2";

fn failed(what: &'static str) -> impl FnOnce(sqlx::Error) -> RecordError {
    move |error| RecordError::new(format!("orders_v2: could not {what}"), error)
}

fn order_id(key: &RecordKey) -> Result<i64, RecordError> {
    match key {
        RecordKey::Int(id) => Ok(*id),
        other => Err(RecordError::message(
            "orders_v2",
            format!("key {other} is not an order id"),
        )),
    }
}

fn v2_record((id, customer, cents, code): V2Row) -> Result<Record, RecordError> {
    let Some(status) = Status::ALL.into_iter().find(|known| *known as i64 == code) else {
        return Err(RecordError::message(
            "orders_v2",
            format!("order {id} has status code {code}"),
        ));
    };
    let record = Record::new(id)
        .with("customer", customer)
        .with("amount_cents", cents);
    Ok(record.with("status", status.name()))
}

/// The fields of a record the other store wrote, in the new table's terms.
fn v2_row(record: &Record) -> Result<V2Row, RecordError> {
    let id = order_id(&record.key)?;
    let bad = |field| RecordError::message("orders_v2", format!("order {id}: no valid {field}"));
    let text = |field| {
        record
            .get(field)
            .and_then(Value::as_text)
            .ok_or_else(|| bad(field))
    };
    let Some(Value::Int(cents)) = record.get("amount_cents") else {
        return Err(bad("amount_cents"));
    };
    let status = text("status")?;
    let status = Status::ALL.into_iter().find(|known| known.name() == status);
    let code = status.ok_or_else(|| bad("status"))? as i64;
    Ok((id, text("customer")?.to_owned(), *cents, code))
}

#[async_trait::async_trait]
impl RecordStore for OrdersV2Records {
    fn describe(&self) -> String {
        "sqlite table orders_v2".to_owned()
    }

    async fn page(
        &self,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Record>, RecordError> {
        let after = after.map(order_id).transpose()?.unwrap_or(i64::MIN);
        let sql = format!("{V2_SELECT} WHERE order_id > ? ORDER BY order_id LIMIT ?");
        let query = sqlx::query_as::<_, V2Row>(&sql)
            .bind(after)
            .bind(limit as i64);
        let rows = query
            .fetch_all(&self.0)
            .await
            .map_err(failed("read a page"))?;
        rows.into_iter().map(v2_record).collect()
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, RecordError> {
        let sql = format!("{V2_SELECT} WHERE order_id = ?");
        let query = sqlx::query_as::<_, V2Row>(&sql).bind(order_id(key)?);
        let row = query
            .fetch_optional(&self.0)
            .await
            .map_err(failed("read an order"))?;
        row.map(v2_record).transpose()
    }

    /// Backfill writes only where the order is absent (the table has no
    /// version column, and dual writing already put every newer copy
    /// there); a key-level sync replaces what is there.
    async fn put(&self, records: &[Record], condition: PutCondition) -> Result<u64, RecordError> {
        let on_conflict = match condition {
            PutCondition::IfAbsentOrNewer => "DO NOTHING",
            PutCondition::Always => {
                "DO UPDATE SET customer_name = excluded.customer_name, \
                total_cents = excluded.total_cents, status_code = excluded.status_code"
            }
        };
        let sql = format!(
            "INSERT INTO orders_v2 (order_id, customer_name, total_cents, status_code, migrated_at) \
             VALUES (?, ?, ?, ?, datetime('now')) ON CONFLICT (order_id) {on_conflict}"
        );
        let mut transaction = self.0.begin().await.map_err(failed("begin"))?;
        let mut written = 0;
        for record in records {
            let (id, customer, cents, code) = v2_row(record)?;
            let query = sqlx::query(&sql)
                .bind(id)
                .bind(customer)
                .bind(cents)
                .bind(code);
            let done = query
                .execute(&mut *transaction)
                .await
                .map_err(failed("write an order"))?;
            written += done.rows_affected();
        }
        transaction.commit().await.map_err(failed("commit"))?;
        Ok(written)
    }

    async fn delete(&self, key: &RecordKey) -> Result<bool, RecordError> {
        let query = sqlx::query("DELETE FROM orders_v2 WHERE order_id = ?").bind(order_id(key)?);
        let done = query
            .execute(&self.0)
            .await
            .map_err(failed("delete an order"))?;
        Ok(done.rows_affected() > 0)
    }
}

impl Order {
    fn placed(id: i64, customer: &str, amount_cents: i64) -> Order {
        let customer = customer.to_owned();
        Order {
            id,
            customer,
            amount_cents,
            status: Status::Placed,
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (id, customer, status) = (self.id, &self.customer, self.status.name());
        let (dollars, cents) = (self.amount_cents / 100, self.amount_cents % 100);
        write!(
            f,
            "order {id} for {customer}, ${dollars}.{cents:02}, {status}"
        )
    }
}

type Repo = DualWrite<OldStore, NewStore>;

async fn create(repo: &Repo, id: i64, customer: &str, cents: i64) -> Result<(), StoreError> {
    let order = Order::placed(id, customer, cents);
    println!("  created {order}");
    repo.create_order(order).await
}

async fn update(repo: &Repo, id: i64, status: Status) -> Result<(), StoreError> {
    println!("  order {id} is now {}", status.name());
    repo.update_status(id, status).await
}

async fn show_queue(repo: &Repo) -> Result<(), Box<dyn Error>> {
    let waiting = repo.queue().stats().await?.new;
    let (pending, dead) = (waiting.pending + waiting.in_flight, waiting.dead);
    match waiting.is_empty() {
        true => println!("  queue: nothing is waiting for the new database"),
        false => println!("  queue: {pending} writes wait for the new database ({dead} given up)"),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let temporary = std::env::temp_dir().join(format!("dualwrite-orders-{}", std::process::id()));
    let chosen = std::env::args_os().nth(1).map(PathBuf::from);
    let dir = chosen.clone().unwrap_or(temporary);
    match run(&dir).await {
        Ok(true) => {
            if chosen.is_none() {
                let _ = std::fs::remove_dir_all(&dir);
            }
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("The databases are kept in {} to look into.", dir.display());
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("\nThe example stopped on an error: {error}");
            eprintln!("(its files, if any, are in {})", dir.display());
            ExitCode::FAILURE
        }
    }
}

/// The migration, start to finish; `Ok(true)` if the databases agree at the end.
async fn run(dir: &Path) -> Result<bool, Box<dyn Error>> {
    std::fs::create_dir_all(dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    println!("Moving orders from old.db to new.db, in {}", dir.display());
    let calls = Arc::new(Mutex::new(Vec::new()));
    let old = OldStore(Db::open("old", dir, OLD_SCHEMA, &calls).await?);
    let new = NewStore(Db::open("new", dir, NEW_SCHEMA, &calls).await?);
    println!("\nBefore the migration: the old database holds the orders placed so far");
    for (id, customer, cents) in [
        (901, "Hana", 3_100),
        (902, "Ivo", 740),
        (903, "Jun", 12_000),
    ] {
        old.create_order(Order::placed(id, customer, cents)).await?;
        println!("  {}", Order::placed(id, customer, cents));
    }
    // The record interface over each table, for backfill, verify and the
    // key-level syncs the worker applies.
    let old_records = SqliteTable::new(old.0.pool.clone(), "orders", "id");
    let new_records = OrdersV2Records(new.0.pool.clone());

    // Writes the follower misses wait in a third SQLite file, the embedded
    // durable queue: they survive a restart of the process.
    let retry = RetryPolicy::default().min_delay(Duration::from_millis(20));
    let queue = Arc::new(SqliteQueue::open(dir.join("queue.db")).await?);
    let repo = DualWrite::builder(old, new)
        .shared_queue(queue.clone())
        .sync_records("orders", old_records.clone(), new_records.clone())
        .stage(Stage::DualWrite)
        // A slow follower holds callers up this long at most, then is queued.
        .follower_timeout(Duration::from_millis(250))
        // Quick retries, so that the example never sits waiting.
        .retry(retry.max_delay(Duration::from_secs(1)))
        .build()?;
    // A service starts the worker once (`let worker = repo.spawn_worker();`)
    // and stops it with `worker.shutdown().await`; here `drain()` runs it
    // until the queue is empty, so that each phase shows its effect.
    let worker = repo.worker::<OrderRepositoryOp>();

    println!("\nPhase 1: both databases are up; writes go to the old one, then the new one");
    create(&repo, 1001, "Ada", 1_250).await?;
    create(&repo, 1002, "Brian", 4_000).await?;
    create(&repo, 1003, "Chloe", 899).await?;
    update(&repo, 1001, Status::Paid).await?;
    show_queue(&repo).await?;

    println!("\nPhase 2: the new database goes offline; the service keeps working");
    repo.new_store().0.set_offline(true);
    create(&repo, 1004, "Dmitri", 15_000).await?;
    create(&repo, 1005, "Esther", 2_350).await?;
    update(&repo, 1004, Status::Paid).await?;
    update(&repo, 1002, Status::Shipped).await?;
    if let Some(order) = repo.get_order(1004).await? {
        println!("  every call succeeded, and reads still work: {order}");
    }
    show_queue(&repo).await?;

    println!("\nPhase 3: the new database is back; the worker replays what it missed");
    repo.new_store().0.set_offline(false);
    let report = worker.drain().await;
    let (applied, retried, dead) = (report.applied, report.retried, report.dead_lettered);
    println!("  the worker applied {applied} writes ({retried} retries, {dead} given up)");
    show_queue(&repo).await?;
    if let Some(order) = repo.new_store().get_order(1004).await? {
        println!("  the new database now has {order}");
    }

    println!("\nPhase 4: business as usual");
    create(&repo, 1006, "Farah", 6_720).await?;
    update(&repo, 1003, Status::Paid).await?;
    update(&repo, 1004, Status::Shipped).await?;
    show_queue(&repo).await?;

    println!("\nPhase 5: backfill copies the orders from before dual writing");
    // Beside live writes: a key that changes while it is copied gets a
    // key-level sync on the queue (namespace: the trait's name), which the
    // worker applies in the key's order.
    let live = SyncQueue::new(queue, "OrderRepository", "orders");
    let copy = Backfill::new(
        old_records.clone(),
        new_records.clone(),
        BackfillOptions::default(),
    );
    let copied = copy.live_writes(live.clone()).run().await?;
    let (read, written, skipped) = (copied.read, copied.written, copied.skipped);
    println!(
        "  read {read} orders, copied {written}, skipped {skipped} that dual writing had put there"
    );
    // Through the service's own read: the history is there for it too.
    let listed = repo.new_store().list_orders().await?;
    let history = listed.iter().filter(|order| order.id < 1000).count();
    println!(
        "  the new database now lists {} orders, {history} of them from before",
        listed.len()
    );

    let (surprises, only_new) = walk_stages(&repo, &worker, &calls).await?;
    worker.drain().await;
    // A service's clean stop: writes in progress finish and everything
    // acknowledged is durable in the queue file before the process exits.
    repo.shutdown().await?;
    let checked = Verify::new(old_records, new_records, VerifyOptions::default()).live_writes(live);
    let agree = verdict(&checked.run().await?, only_new) && surprises == 0;
    repo.old_store().0.pool.close().await;
    repo.new_store().0.pool.close().await;
    Ok(agree)
}

type OrderWorker = Worker<OrderRepositoryOp, OldStore, NewStore>;

/// Moves through the stages after `off`, writing and reading one order at
/// each, and prints which database each call reached. Returns how many
/// stages routed a call elsewhere than the stage table says, and the order
/// written at `complete`.
async fn walk_stages(
    repo: &Repo,
    worker: &OrderWorker,
    calls: &Mutex<Vec<&'static str>>,
) -> Result<(usize, i64), Box<dyn Error>> {
    println!("\nWalking the stages, one write and one read at each:");
    println!("  stage        write went to    read served by (and compared with)");
    let (mut surprises, mut id) = (0, 2000);
    // Every stage after `off`, in migration order.
    for stage in Stage::ALL.into_iter().skip(1) {
        // A follower write that timed out would be queued, and the stage
        // refuses to make a database authoritative while work waits for it.
        worker.drain().await;
        repo.stage().set(stage).await?;
        id += 1;
        calls.lock().unwrap().clear();
        repo.create_order(Order::placed(id, "Gus", 500)).await?;
        let wrote = std::mem::take(&mut *calls.lock().unwrap());
        let read = repo.get_order(id).await?;
        let served = std::mem::take(&mut *calls.lock().unwrap());

        let reads = match stage.compared() {
            Some(other) => format!("{} ({other})", stage.serving()),
            None => stage.serving().to_string(),
        };
        let (name, writes) = (stage.as_str(), wrote.join(", then "));
        println!("  {name:<12} {writes:<16} {reads}");
        let should_write = std::iter::once(stage.authoritative()).chain(stage.follower());
        let should_write: Vec<_> = should_write.map(|side| side.as_str()).collect();
        // In `shadow` and `live` both databases are read (concurrently), the
        // other one only to compare: the caller gets the serving one's answer.
        let mut should_read: Vec<_> = std::iter::once(stage.serving())
            .chain(stage.compared())
            .map(|side| side.as_str())
            .collect();
        let mut did_read = served.clone();
        should_read.sort_unstable();
        did_read.sort_unstable();
        if wrote != should_write || did_read != should_read || read.is_none() {
            println!("  ^ not what the stage table says!");
            surprises += 1;
        }
    }
    println!("  At `complete` the old database gets no more writes: remove #[dual_write]");
    println!("  and the wrapper, use the new store directly, retire the old database.");
    Ok((surprises, id))
}

/// Prints what verify found, record by record. `only_new` was written at
/// `complete`, so the old database is right not to have it.
fn verdict(found: &VerifyReport, only_new: i64) -> bool {
    println!("\nVerifying the two databases record by record");
    let mut differ = 0;
    for difference in &found.sample {
        let id = &difference.key;
        match difference.kind {
            DifferenceKind::ExtraInNew if *id == RecordKey::Int(only_new) => {
                println!("  order {id} is only in the new database, as it should be (written at `complete`)");
            }
            DifferenceKind::Different => {
                differ += 1;
                println!("  order {id} differs in {}", difference.fields.join(", "));
            }
            kind => {
                differ += 1;
                println!("  order {id}: {kind:?}");
            }
        }
    }
    let same = found.matching;
    match differ {
        0 if found.differences() <= 1 => {
            println!("  The databases agree: {same} orders are the same in both.");
            true
        }
        _ => {
            let total = found.differences();
            println!("  The databases DISAGREE: {total} orders differ, {same} are the same.");
            false
        }
    }
}
