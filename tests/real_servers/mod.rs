//! What the tests against the local PostgreSQL (old) and MariaDB (new)
//! servers share: an accounts repository with a sqlx implementation per
//! server, tables unique to the test, the instances' shared queue (a
//! `PostgresQueue` in tables of the test's own prefix), and the row-by-row
//! check.
//!
//! Servers: `DUALWRITE_PG_URL` (default postgres://postgres@127.0.0.1:5432/test)
//! and `DUALWRITE_MYSQL_URL` (default mysql://root@127.0.0.1:3306/test).

#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeMap;
use std::time::Duration;

use dualwrite_runtime::queue::PostgresQueue;
use dualwrite_runtime::records::{MySqlTable, PgTable};
use dualwrite_runtime::{dual_write, Builder, Delivery, DualWrite, KeySync, RetryPolicy, Stage};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::{MySqlPool, PgPool};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        StoreError(error.to_string())
    }
}

/// A write the queue cannot take is refused (`fail_closed`), so that a test
/// with the queue's database unreachable knows which writes were
/// acknowledged.
impl From<dualwrite_runtime::QueueRefused> for StoreError {
    fn from(error: dualwrite_runtime::QueueRefused) -> Self {
        StoreError(error.to_string())
    }
}

#[dual_write]
pub trait Accounts: Send + Sync {
    #[dual_write(write, key = id, fail_closed)]
    async fn put_account(&self, id: i64, owner: String, cents: i64) -> Result<(), StoreError>;

    #[dual_write(write, key = id, fail_closed)]
    async fn delete_account(&self, id: i64) -> Result<(), StoreError>;

    #[dual_write(read)]
    async fn account(&self, id: i64) -> Result<Option<(String, i64)>, StoreError>;
}

/// The old store: a PostgreSQL table.
pub struct PgAccounts {
    pub pool: PgPool,
    pub table: String,
}

impl Accounts for PgAccounts {
    async fn put_account(&self, id: i64, owner: String, cents: i64) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO {} (id, owner, cents) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, cents = excluded.cents",
            self.table
        ))
        .bind(id)
        .bind(owner)
        .bind(cents)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_account(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query(&format!("DELETE FROM {} WHERE id = $1", self.table))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn account(&self, id: i64) -> Result<Option<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT owner, cents FROM {} WHERE id = $1",
            self.table
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }
}

/// The new store: a MariaDB table (reached through the fault proxy).
pub struct MyAccounts {
    pub pool: MySqlPool,
    pub table: String,
}

impl Accounts for MyAccounts {
    async fn put_account(&self, id: i64, owner: String, cents: i64) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO {} (id, owner, cents) VALUES (?, ?, ?) \
             ON DUPLICATE KEY UPDATE owner = VALUES(owner), cents = VALUES(cents)",
            self.table
        ))
        .bind(id)
        .bind(owner)
        .bind(cents)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_account(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query(&format!("DELETE FROM {} WHERE id = ?", self.table))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn account(&self, id: i64) -> Result<Option<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT owner, cents FROM {} WHERE id = ?",
            self.table
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }
}

pub fn pg_url() -> String {
    std::env::var("DUALWRITE_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

pub fn mysql_url() -> String {
    std::env::var("DUALWRITE_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

/// The MariaDB URL with its host and port replaced by `addr` (the proxy).
pub fn via(url: &str, addr: std::net::SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((credentials, rest)) => (format!("{credentials}@"), rest),
        None => (String::new(), rest),
    };
    let path = rest.find('/').map_or("", |slash| &rest[slash..]);
    format!("{scheme}://{credentials}{addr}{path}")
}

pub async fn pg_pool() -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect(&pg_url())
        .await
        .unwrap_or_else(|error| panic!("PostgreSQL at {} (DUALWRITE_PG_URL): {error}", pg_url()))
}

/// A MariaDB pool that gives up on a connection quickly, so that a
/// follower behind a refusing proxy fails fast rather than after 30 s.
pub async fn mysql_pool(url: &str) -> MySqlPool {
    MySqlPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_millis(800))
        .connect(url)
        .await
        .unwrap_or_else(|error| panic!("MariaDB at {url} (DUALWRITE_MYSQL_URL): {error}"))
}

/// A table name unique to this test run.
pub fn unique_table(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

pub async fn create_tables(pg: &PgPool, my: &MySqlPool, table: &str) {
    sqlx::query(&format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, owner TEXT NOT NULL, cents BIGINT NOT NULL)"
    ))
    .execute(pg)
    .await
    .unwrap();
    sqlx::query(&format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, owner VARCHAR(64) NOT NULL, cents BIGINT NOT NULL)"
    ))
    .execute(my)
    .await
    .unwrap();
}

pub async fn drop_tables(pg: &PgPool, my: &MySqlPool, table: &str) {
    let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(pg)
        .await;
    let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(my)
        .await;
}

pub type Rows = BTreeMap<i64, (String, i64)>;

/// Both tables, row by row.
pub async fn rows(pg: &PgPool, my: &MySqlPool, table: &str) -> (Rows, Rows) {
    let sql = format!("SELECT id, owner, cents FROM {table} ORDER BY id");
    let old: Vec<(i64, String, i64)> = sqlx::query_as(&sql).fetch_all(pg).await.unwrap();
    let new: Vec<(i64, String, i64)> = sqlx::query_as(&sql).fetch_all(my).await.unwrap();
    let collect = |rows: Vec<(i64, String, i64)>| {
        rows.into_iter()
            .map(|(id, owner, cents)| (id, (owner, cents)))
            .collect::<Rows>()
    };
    (collect(old), collect(new))
}

/// The keys whose rows differ.
pub fn differing(old: &Rows, new: &Rows) -> Vec<i64> {
    old.keys()
        .chain(new.keys())
        .filter(|key| old.get(key) != new.get(key))
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The instances' shared queue: PostgreSQL tables named with `prefix`,
/// reached at `url` (the server, or a fault proxy in front of it).
#[derive(Debug, Clone)]
pub struct QueueAt {
    pub url: String,
    pub prefix: String,
}

impl QueueAt {
    /// The queue of the test using `table`, on the PostgreSQL server.
    pub fn of(table: &str) -> QueueAt {
        QueueAt::with_prefix(&format!("{table}_q_"))
    }

    /// The queue with tables named `prefix...`, on the PostgreSQL server.
    pub fn with_prefix(prefix: &str) -> QueueAt {
        QueueAt {
            url: pg_url(),
            prefix: prefix.to_owned(),
        }
    }

    /// The same tables reached at `url` instead.
    pub fn via(&self, url: String) -> QueueAt {
        QueueAt {
            url,
            prefix: self.prefix.clone(),
        }
    }

    /// Creates the queue's tables (once, before any instance opens them).
    pub async fn install(&self) {
        PostgresQueue::install_schema(&pg_pool().await, &self.prefix)
            .await
            .unwrap();
    }

    pub async fn uninstall(&self) {
        let _ = PostgresQueue::uninstall_schema(&pg_pool().await, &self.prefix).await;
    }

    /// A handle of one instance, on a pool of its own that gives up on a
    /// connection quickly (the queue may be behind a refusing proxy).
    pub async fn open(&self) -> PostgresQueue {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_millis(800))
            .connect(&self.url)
            .await
            .unwrap_or_else(|error| panic!("the queue's PostgreSQL at {}: {error}", self.url));
        PostgresQueue::options(pool)
            .table_prefix(self.prefix.clone())
            .open()
            .await
            .unwrap()
    }
}

/// How an instance delivers to the follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `sync` delivery: the follower is called within the write.
    Sync,
    /// `journaled` delivery: written ahead, applied by the worker.
    Journaled,
    /// The cross-instance mode (`KeySync`).
    KeySync,
}

/// One instance's wrapper: PostgreSQL old, MariaDB new at `my_url`, the
/// shared queue `queue`, in `DualWrite`; with `key_sync`, the
/// cross-instance mode over the same tables.
pub async fn instance(
    table: &str,
    my_url: &str,
    queue: &QueueAt,
    key_sync: bool,
) -> DualWrite<PgAccounts, MyAccounts> {
    let mode = if key_sync { Mode::KeySync } else { Mode::Sync };
    instance_in(table, my_url, queue, mode).await
}

/// [`instance`] delivering as `mode` says.
pub async fn instance_in(
    table: &str,
    my_url: &str,
    queue: &QueueAt,
    mode: Mode,
) -> DualWrite<PgAccounts, MyAccounts> {
    let pg = pg_pool().await;
    let my = mysql_pool(my_url).await;
    let builder: Builder<PgAccounts, MyAccounts> = DualWrite::builder(
        PgAccounts {
            pool: pg.clone(),
            table: table.to_owned(),
        },
        MyAccounts {
            pool: my.clone(),
            table: table.to_owned(),
        },
    )
    .queue(queue.open().await)
    .stage(Stage::DualWrite)
    .follower_timeout(Duration::from_millis(500))
    // Short, so a killed worker's leases expire within a test.
    .lease(Duration::from_secs(2))
    .orphan_after(Duration::from_secs(1))
    .poll_interval(Duration::from_millis(20))
    .retry(
        RetryPolicy::default()
            .min_delay(Duration::from_millis(20))
            .max_delay(Duration::from_millis(200))
            .max_attempts(10_000),
    )
    .delivery(if mode == Mode::Journaled {
        Delivery::Journaled
    } else {
        Delivery::Sync
    });
    let builder = if mode == Mode::KeySync {
        builder
            .sync_records(
                "accounts",
                PgTable::new(pg, table, "id"),
                MySqlTable::new(my, table, "id"),
            )
            .key_sync(KeySync::records("accounts"))
    } else {
        builder
    };
    builder.build().unwrap()
}
