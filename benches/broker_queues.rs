//! Acknowledged appends and drains of the broker queues beside the SQLite
//! and PostgreSQL queues, in one run (a benchmark: it prints figures and asserts only that
//! everything appended was drained).
//!
//! ```sh
//! cargo bench --features services --bench broker_queues        # or: ... -- 20000
//! ```
//!
//! For each backend: `ops` entries appended by 64 concurrent writers, each
//! append acknowledged (SQLite: committed and fsync'd by group commit;
//! PostgreSQL: its transaction committed, on a pool of 16 connections;
//! RabbitMQ: confirmed by the broker, the quorum queue's majority; NATS:
//! the JetStream publish acknowledgement, stored in the file stream), then
//! one drainer that claims up to 64 entries at a time and completes them
//! with the next claim (`complete_and_claim`, what the worker does), with
//! no store behind it: the queue's own drain rate. PostgreSQL at
//! `DUALWRITE_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`,
//! tables of a prefix of this run's, dropped after), RabbitMQ at
//! `DUALWRITE_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`),
//! NATS at `DUALWRITE_NATS_URL` (default `nats://127.0.0.1:4222`), each 16
//! partitions, prefetch 32.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dualwrite_runtime::queue::{
    NatsOptions, NatsQueue, NewEntry, PostgresQueue, RabbitMqOptions, RabbitMqQueue, SqliteQueue,
};
use dualwrite_runtime::{Key, ReconciliationQueue, Side};

const WRITERS: usize = 64;
const NAMESPACE: &str = "bench";

fn entry(key: usize) -> NewEntry {
    NewEntry {
        namespace: NAMESPACE.into(),
        target: Side::New,
        key: Key::from_display(&key),
        method: "put".into(),
        version: 1,
        payload: format!(r#"{{"method":"put","args":{{"key":{key},"value":{key}}}}}"#).into_bytes(),
        reason: "follower down".into(),
        uncertain: false,
    }
}

fn rate(ops: usize, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64()
}

/// 64 writers append `ops` entries (each writer its own keys, 8 entries a
/// key); returns appends per second.
async fn appends(queue: Arc<dyn ReconciliationQueue>, ops: usize) -> f64 {
    let started = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move {
                for seq in 0..ops / WRITERS {
                    queue
                        .append(entry(writer * 1_000_000 + seq / 8))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    rate(ops / WRITERS * WRITERS, started.elapsed())
}

/// Appends then drains `ops` entries; returns (appends/s, drained/s).
async fn run(queue: Arc<dyn ReconciliationQueue>, ops: usize) -> (f64, f64) {
    let append_rate = appends(Arc::clone(&queue), ops).await;
    (append_rate, drain(queue, ops).await)
}

/// Claims and completes until `expected` entries were drained; returns
/// entries per second.
async fn drain(queue: Arc<dyn ReconciliationQueue>, expected: usize) -> f64 {
    let started = Instant::now();
    let mut drained = 0;
    let mut leases = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while drained < expected {
        assert!(
            Instant::now() < deadline,
            "drained only {drained} of {expected}"
        );
        let turnover = queue
            .complete_and_claim(&leases, NAMESPACE, 64, Duration::from_secs(60))
            .await;
        for completed in turnover.completed {
            completed.unwrap();
        }
        let claim = turnover.claim.unwrap();
        leases = claim.entries.iter().map(|entry| entry.lease).collect();
        drained += leases.len();
        if leases.is_empty() {
            if let Some(wait) = claim.next_ready_in {
                tokio::time::sleep(wait.min(Duration::from_millis(10))).await;
            }
        }
    }
    for completed in queue
        .complete_and_claim(&leases, NAMESPACE, 0, Duration::from_secs(60))
        .await
        .completed
    {
        completed.unwrap();
    }
    rate(drained, started.elapsed())
}

fn main() {
    let ops: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(20_000);
    let ops = ops / WRITERS * WRITERS;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("dualwrite-bench-brokers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sqlite: Arc<dyn ReconciliationQueue> =
            Arc::new(SqliteQueue::open(dir.join("queue.db")).await.unwrap());
        let (append_rate, drain_rate) = run(sqlite, ops).await;
        println!("SQLite     ({ops} entries): {append_rate:>9.0} acknowledged appends/s at {WRITERS} writers, drain {drain_rate:>9.0} entries/s");
        let _ = std::fs::remove_dir_all(&dir);

        let url = std::env::var("DUALWRITE_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(16)
            .connect(&url)
            .await
            .unwrap_or_else(|error| panic!("PostgreSQL at {url} (set DUALWRITE_PG_URL): {error}"));
        let prefix = format!("dwbench_{}_", std::process::id());
        let postgres = PostgresQueue::options(pool.clone())
            .table_prefix(&prefix)
            .create_schema(true)
            .open()
            .await
            .unwrap();
        let (append_rate, drain_rate) = run(Arc::new(postgres), ops).await;
        println!("PostgreSQL ({ops} entries): {append_rate:>9.0} acknowledged appends/s at {WRITERS} writers, drain {drain_rate:>9.0} entries/s");
        PostgresQueue::uninstall_schema(&pool, &prefix).await.unwrap();

        let url = std::env::var("DUALWRITE_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
        let prefix = format!("dwbench.{}", std::process::id());
        let rabbit = RabbitMqQueue::open(RabbitMqOptions::new(url).prefix(prefix).namespace(NAMESPACE))
            .await
            .unwrap();
        let (append_rate, drain_rate) = run(Arc::new(rabbit.clone()), ops).await;
        println!("RabbitMQ   ({ops} entries): {append_rate:>9.0} acknowledged appends/s at {WRITERS} writers, drain {drain_rate:>9.0} entries/s");
        rabbit.destroy().await.unwrap();

        let url = std::env::var("DUALWRITE_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
        let prefix = format!("dwbench_{}", std::process::id());
        let nats = NatsQueue::open(NatsOptions::new(url).prefix(prefix).namespace(NAMESPACE))
            .await
            .unwrap();
        let (append_rate, drain_rate) = run(Arc::new(nats.clone()), ops).await;
        println!("NATS       ({ops} entries): {append_rate:>9.0} acknowledged appends/s at {WRITERS} writers, drain {drain_rate:>9.0} entries/s");
        nats.destroy().await.unwrap();
    });
}
