//! `dualwrite status | dead | queue | stage` on a shared PostgreSQL queue
//! and a shared MariaDB queue (feature `services`), through the built
//! binary: the same figures, letters and stage moves as on a SQLite file,
//! the tables named by `--queue-prefix`, and missing tables refused by name
//! without creating any.
//!
//! `cargo test -p dualwrite-cli --features services --test server_queues`
//! (`DUALWRITE_PG_URL`, `DUALWRITE_MYSQL_URL` override the servers).

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dualwrite_runtime::queue::{MySqlQueue, PostgresQueue};
use dualwrite_runtime::{ReconciliationQueue, Side};
use serde_json::json;
use support::{entry, mysql_url, pg_url, run, Ran};

fn unique_prefix(server: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("dwcli_{server}_{}_{nanos}_", std::process::id())
}

/// A queue's schema installed under a prefix of its own, dropped at the end.
struct ServerQueue {
    /// The runtime the queue's pool lives on (a pool outlives no runtime).
    runtime: tokio::runtime::Runtime,
    url: String,
    prefix: String,
    queue: Arc<dyn ReconciliationQueue>,
    uninstall: Option<Pin<Box<dyn Future<Output = ()>>>>,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// A [`ServerQueue`] of the queue type `$queue` on a `$pool` at `$url`.
macro_rules! installed {
    ($queue:ty, $pool:ty, $url:expr, $server:literal) => {{
        let url: String = $url;
        let prefix = unique_prefix($server);
        let runtime = runtime();
        let pool = runtime.block_on(<$pool>::connect(&url)).expect($server);
        let queue = runtime.block_on(async {
            <$queue>::install_schema(&pool, &prefix).await.unwrap();
            <$queue>::options(pool.clone())
                .table_prefix(prefix.as_str())
                .open()
                .await
                .unwrap()
        });
        let dropped = prefix.clone();
        ServerQueue {
            runtime,
            url,
            prefix,
            queue: Arc::new(queue),
            uninstall: Some(Box::pin(async move {
                <$queue>::uninstall_schema(&pool, &dropped).await.unwrap();
            })),
        }
    }};
}

impl ServerQueue {
    fn postgres() -> ServerQueue {
        installed!(PostgresQueue, sqlx::PgPool, pg_url(), "postgresql")
    }

    fn mysql() -> ServerQueue {
        installed!(MySqlQueue, sqlx::MySqlPool, mysql_url(), "mariadb")
    }

    /// One dead letter (key `c`) and three pending entries for the new
    /// store (keys `a`, `a`, `b`); returns the dead letter's id.
    fn fill(&self) -> u64 {
        let queue = &self.queue;
        self.runtime.block_on(async {
            let dead = queue
                .append(entry(Side::New, "c", "update_status"))
                .await
                .unwrap();
            let claim = queue
                .claim("orders", 1, Duration::from_secs(30))
                .await
                .unwrap();
            assert_eq!(claim.entries.len(), 1);
            queue
                .dead_letter(claim.entries[0].lease, "duplicate key value")
                .await
                .unwrap();
            for (key, method) in [
                ("a", "create_order"),
                ("a", "update_status"),
                ("b", "create_order"),
            ] {
                queue.append(entry(Side::New, key, method)).await.unwrap();
            }
            dead.0
        })
    }

    fn run(&self, command: &str) -> Ran {
        let mut args: Vec<&str> = command.split_whitespace().collect();
        args.extend(["--queue", &self.url, "--queue-prefix", &self.prefix]);
        run(&args)
    }
}

impl Drop for ServerQueue {
    fn drop(&mut self) {
        if let Some(uninstall) = self.uninstall.take() {
            self.runtime.block_on(uninstall);
        }
    }
}

fn status_dead_queue_and_stage_work_on(server: ServerQueue) {
    let dead = server.fill();

    let status = server.run("status --json");
    assert_eq!(
        status.code, 1,
        "a dead letter is a difference: {}",
        status.stderr
    );
    let status = status.json();
    assert_eq!(status["dead_letters"], 1, "{status}");
    assert_eq!(status["new"]["pending"], 3, "{status}");
    assert!(status["stage"].is_null(), "no stage stored yet: {status}");

    let letters = server.run("dead list --json").succeeds().json();
    assert_eq!(letters[0]["id"], dead, "{letters}");
    assert_eq!(letters[0]["key"], "c");
    assert_eq!(letters[0]["error"], "duplicate key value");

    let entries = server
        .run("queue key orders new a --json")
        .succeeds()
        .json();
    let methods: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        ["create_order", "update_status"],
        "in the order they apply"
    );

    let retried = server
        .run(&format!("dead retry {dead} --json"))
        .succeeds()
        .json();
    assert_eq!(retried["ids"], json!([dead]));
    let status = server.run("status --json").succeeds().json();
    assert_eq!(
        (
            status["dead_letters"].clone(),
            status["new"]["pending"].clone()
        ),
        (json!(0), json!(4))
    );

    // The stage lives in the queue's own stage table.
    assert!(server.run("stage get --json").succeeds().json().is_null());
    server
        .run("stage set dual-write --force --reason first")
        .succeeds();
    let stored = server.run("stage get --json").succeeds().json();
    assert_eq!(stored["stage"], "dual_write", "{stored}");
    assert_eq!(stored["reason"], "first", "{stored}");
    let status = server.run("status --json").succeeds().json();
    assert_eq!(status["stage"]["stage"], "dual_write", "{status}");
}

#[test]
fn status_dead_letters_key_entries_and_stage_on_a_postgres_queue() {
    status_dead_queue_and_stage_work_on(ServerQueue::postgres());
}

#[test]
fn status_dead_letters_key_entries_and_stage_on_a_mariadb_queue() {
    status_dead_queue_and_stage_work_on(ServerQueue::mysql());
}

#[test]
fn a_prefix_without_queue_tables_is_refused_by_name_and_creates_none() {
    for url in [pg_url(), mysql_url()] {
        let prefix = unique_prefix("none");
        let ran = run(&["status", "--queue", &url, "--queue-prefix", &prefix]);
        ran.fails_with(3, &prefix);
        assert!(ran.stderr.contains("never creates"), "{}", ran.stderr);
        // Still none: a second run finds the same.
        run(&["dead", "list", "--queue", &url, "--queue-prefix", &prefix]).fails_with(3, &prefix);
    }
}
