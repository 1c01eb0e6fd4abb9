//! A shared PostgreSQL (or MySQL/MariaDB) queue drained by 1, 2 and 3
//! worker processes: does claiming hold up under contention (`FOR UPDATE
//! SKIP LOCKED` on key heads), or collapse?
//!
//! `cargo bench --features services --bench pg_queue_drain -- [mysql] [ENTRIES] [KEYS]`
//! (default 6,000 entries over 1,000 keys; the server at `DUALWRITE_PG_URL`,
//! default postgres://postgres@127.0.0.1:5432/test, or with `mysql` a
//! `MySqlQueue` at `DUALWRITE_MYSQL_URL`, default
//! mysql://root@127.0.0.1:3306/test). For each process
//! count the queue is filled with the same entries (64 concurrent appends),
//! then that many OS processes claim (64 at a time) and complete until the
//! queue is empty; no store sits behind them, so the figure is the queue's
//! own claim-and-complete rate. Prints entries per second; asserts nothing
//! about speed.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dualwrite_runtime::queue::{MySqlQueue, NewEntry, PostgresQueue};
use dualwrite_runtime::{Key, ReconciliationQueue, Side};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;

const CHILD_PREFIX: &str = "DUALWRITE_DRAIN_PREFIX";
/// Set in a worker process to drain the MySQL queue.
const CHILD_MYSQL: &str = "DUALWRITE_DRAIN_MYSQL";
const NAMESPACE: &str = "kv";

/// Which server the queue is on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Server {
    Postgres,
    MySql,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Postgres => "pg",
            Server::MySql => "mysql",
        }
    }

    /// The environment variable naming the server, and its default.
    fn variable(self) -> (&'static str, &'static str) {
        match self {
            Server::Postgres => (
                "DUALWRITE_PG_URL",
                "postgres://postgres@127.0.0.1:5432/test",
            ),
            Server::MySql => ("DUALWRITE_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
        }
    }

    fn url(self) -> String {
        let (variable, default) = self.variable();
        std::env::var(variable).unwrap_or_else(|_| default.to_owned())
    }

    fn unreachable(self, error: sqlx::Error) -> ! {
        let (variable, _) = self.variable();
        panic!(
            "{self:?} at {} (set {variable} to use another): {error}",
            self.url()
        )
    }

    /// The queue with tables `prefix`, on a pool of 4.
    async fn open(self, prefix: &str) -> Arc<dyn ReconciliationQueue> {
        match self {
            Server::Postgres => {
                let pool = PgPoolOptions::new()
                    .max_connections(4)
                    .connect(&self.url())
                    .await
                    .unwrap_or_else(|error| self.unreachable(error));
                let queue = PostgresQueue::options(pool).table_prefix(prefix.to_owned());
                Arc::new(queue.open().await.unwrap())
            }
            Server::MySql => {
                let pool = MySqlPoolOptions::new()
                    .max_connections(4)
                    .connect(&self.url())
                    .await
                    .unwrap_or_else(|error| self.unreachable(error));
                let queue = MySqlQueue::options(pool).table_prefix(prefix.to_owned());
                Arc::new(queue.open().await.unwrap())
            }
        }
    }

    /// Installs (`true`) or removes the queue's tables.
    async fn schema(self, prefix: &str, install: bool) {
        match self {
            Server::Postgres => {
                let pool = PgPoolOptions::new().connect(&self.url()).await.unwrap();
                if install {
                    PostgresQueue::install_schema(&pool, prefix).await.unwrap();
                } else {
                    PostgresQueue::uninstall_schema(&pool, prefix)
                        .await
                        .unwrap();
                }
            }
            Server::MySql => {
                let pool = MySqlPoolOptions::new().connect(&self.url()).await.unwrap();
                if install {
                    MySqlQueue::install_schema(&pool, prefix).await.unwrap();
                } else {
                    MySqlQueue::uninstall_schema(&pool, prefix).await.unwrap();
                }
            }
        }
    }
}

fn entry(number: usize, keys: usize) -> NewEntry {
    let key = number % keys;
    NewEntry {
        namespace: NAMESPACE.into(),
        target: Side::New,
        key: Key::from_display(&key),
        method: "put".into(),
        version: 1,
        payload: format!(r#"{{"method":"put","args":{{"key":{key},"value":{number}}}}}"#)
            .into_bytes(),
        reason: "bench".into(),
        uncertain: false,
    }
}

/// 64 concurrent appenders fill the queue with `entries` entries.
async fn fill(queue: Arc<dyn ReconciliationQueue>, entries: usize, keys: usize) {
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                let mut number = task;
                while number < entries {
                    queue.append(entry(number, keys)).await.unwrap();
                    number += 64;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// A worker process: claims and completes until the queue is empty.
async fn drain(server: Server, prefix: &str) -> usize {
    let queue = server.open(prefix).await;
    let lease = Duration::from_secs(30);
    let mut held = Vec::new();
    let mut done = 0;
    loop {
        let turnover = queue.complete_and_claim(&held, NAMESPACE, 64, lease).await;
        for completed in &turnover.completed {
            completed.as_ref().unwrap();
        }
        done += held.len();
        let claim = turnover.claim.unwrap();
        held = claim.entries.iter().map(|entry| entry.lease).collect();
        if held.is_empty() {
            if queue.stats().await.unwrap().is_empty() {
                return done;
            }
            // Another process holds the rest of some keys.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Ok(prefix) = std::env::var(CHILD_PREFIX) {
        let server = if std::env::var_os(CHILD_MYSQL).is_some() {
            Server::MySql
        } else {
            Server::Postgres
        };
        let done = runtime.block_on(drain(server, &prefix));
        println!("{done}");
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let server = if args.iter().any(|arg| arg == "mysql") {
        Server::MySql
    } else {
        Server::Postgres
    };
    let numbers: Vec<usize> = args.iter().filter_map(|arg| arg.parse().ok()).collect();
    let entries = numbers.first().copied().unwrap_or(6_000);
    let keys = numbers.get(1).copied().unwrap_or(1_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let prefix = format!("bench_drain_{}_{nanos}_", std::process::id());
    runtime.block_on(server.schema(&prefix, true));
    let name = server.name();
    println!(
        "{name}-queue-drain: {entries} entries over {keys} keys, claims of 64, no store behind"
    );
    let mut rates = Vec::new();
    // One process again at the end: the first run drains tables the server
    // has just seen filled from empty, whose statistics may lag (the state
    // of a queue that filled during an outage); the last, warmed ones.
    for processes in [1, 2, 3, 1] {
        runtime.block_on(async {
            fill(server.open(&prefix).await, entries, keys).await;
        });
        let started = Instant::now();
        let children: Vec<_> = (0..processes)
            .map(|_| {
                let mut child = Command::new(std::env::current_exe().unwrap());
                child.env(CHILD_PREFIX, &prefix);
                if server == Server::MySql {
                    child.env(CHILD_MYSQL, "1");
                }
                child
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut drained = 0;
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "a worker process failed");
            drained += String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse::<usize>()
                .unwrap();
        }
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(drained, entries, "every entry completed exactly once");
        let rate = entries as f64 / seconds;
        rates.push(rate);
        println!(
            "{name}-queue-drain processes={processes}{}: {rate:.0} entries/s ({seconds:.2} s, ratio to 1 process {:.2})",
            if rates.len() == 4 { " (again)" } else { "" },
            rate / rates[0]
        );
    }
    runtime.block_on(server.schema(&prefix, false));
}
