//! A shared PostgreSQL queue drained by 1, 2 and 3 worker processes: does
//! claiming hold up under contention (`FOR UPDATE SKIP LOCKED` on key
//! heads), or collapse?
//!
//! `cargo bench --features services --bench pg_queue_drain -- [ENTRIES] [KEYS]`
//! (default 6,000 entries over 1,000 keys; the server at `DUALWRITE_PG_URL`,
//! default postgres://postgres@127.0.0.1:5432/test). For each process
//! count the queue is filled with the same entries (64 concurrent appends),
//! then that many OS processes claim (64 at a time) and complete until the
//! queue is empty; no store sits behind them, so the figure is the queue's
//! own claim-and-complete rate. Prints entries per second; asserts nothing
//! about speed.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dualwrite_runtime::queue::{NewEntry, PostgresQueue};
use dualwrite_runtime::{Key, ReconciliationQueue, Side};
use sqlx::postgres::PgPoolOptions;

const CHILD_PREFIX: &str = "DUALWRITE_DRAIN_PREFIX";
const NAMESPACE: &str = "kv";

fn pg_url() -> String {
    std::env::var("DUALWRITE_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

async fn open(prefix: &str) -> PostgresQueue {
    let url = pg_url();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap_or_else(|error| {
            panic!("PostgreSQL at {url} (set DUALWRITE_PG_URL to use another): {error}")
        });
    PostgresQueue::options(pool)
        .table_prefix(prefix.to_owned())
        .open()
        .await
        .unwrap()
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
async fn fill(queue: Arc<PostgresQueue>, entries: usize, keys: usize) {
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
async fn drain(prefix: &str) -> usize {
    let queue = open(prefix).await;
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
        let done = runtime.block_on(drain(&prefix));
        println!("{done}");
        return;
    }
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|arg| arg.parse().ok())
        .collect();
    let entries = numbers.first().copied().unwrap_or(6_000);
    let keys = numbers.get(1).copied().unwrap_or(1_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let prefix = format!("bench_drain_{}_{nanos}_", std::process::id());
    runtime.block_on(async {
        let pool = PgPoolOptions::new().connect(&pg_url()).await.unwrap();
        PostgresQueue::install_schema(&pool, &prefix).await.unwrap();
    });
    println!("pg-queue-drain: {entries} entries over {keys} keys, claims of 64, no store behind");
    let mut rates = Vec::new();
    for processes in 1..=3 {
        runtime.block_on(async {
            fill(Arc::new(open(&prefix).await), entries, keys).await;
        });
        let started = Instant::now();
        let children: Vec<_> = (0..processes)
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .env(CHILD_PREFIX, &prefix)
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
            "pg-queue-drain processes={processes}: {rate:.0} entries/s ({seconds:.2} s, ratio to 1 process {:.2})",
            rate / rates[0]
        );
    }
    runtime.block_on(async {
        let pool = PgPoolOptions::new().connect(&pg_url()).await.unwrap();
        PostgresQueue::uninstall_schema(&pool, &prefix)
            .await
            .unwrap();
    });
}
