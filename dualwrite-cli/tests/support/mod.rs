//! Queue files made through the runtime, the built binary, and snapshots
//! of a file's content to prove that a failed command changed nothing.
#![allow(dead_code)] // each test file uses part of it

use std::path::{Path, PathBuf};
use std::time::Duration;

use dualwrite_runtime::queue::{EntryId, NewEntry, SqliteQueue};
use dualwrite_runtime::stage::{SqliteStageSource, StageRecord, StageSource};
use dualwrite_runtime::{Key, ReconciliationQueue, Side, Stage};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};

pub fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// The local PostgreSQL of the service-backed tests (`DUALWRITE_PG_URL`).
pub fn pg_url() -> String {
    std::env::var("DUALWRITE_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The local MariaDB of the service-backed tests (`DUALWRITE_MYSQL_URL`).
pub fn mysql_url() -> String {
    std::env::var("DUALWRITE_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

/// The `dualwrite` binary, with no DUALWRITE_* variables inherited.
pub fn dualwrite() -> assert_cmd::Command {
    let mut command = assert_cmd::Command::cargo_bin("dualwrite").expect("the binary is built");
    for variable in [
        "DUALWRITE_QUEUE",
        "DUALWRITE_QUEUE_PREFIX",
        "DUALWRITE_STAGE_SOURCE",
        "DUALWRITE_MIGRATION",
    ] {
        command.env_remove(variable);
    }
    command
}

/// What a run printed and how it ended.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|error| panic!("stdout is not JSON ({error}): {}", self.stdout))
    }

    /// Asserts success (exit 0).
    pub fn succeeds(&self) -> &Ran {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts a failure: `code`, one line on stderr naming `needle`.
    pub fn fails_with(&self, code: i32, needle: &str) {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        let first = self.stderr.lines().next().unwrap_or("");
        assert!(
            first.contains(needle),
            "the first line of stderr should name `{needle}`: {}",
            self.stderr
        );
    }
}

pub fn run(args: &[&str]) -> Ran {
    let output = dualwrite().args(args).output().expect("the binary runs");
    Ran {
        code: output.status.code().expect("an exit code"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A queue file in a directory of its own.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// What [`Fixture::with_work`] queued.
pub struct Queued {
    /// The dead letter (namespace `orders`, target new, key `c`).
    pub dead: EntryId,
    /// Pending for the new store: keys `a` (two entries) and `b`.
    pub pending_new: Vec<EntryId>,
}

pub fn entry(target: Side, key: &str, method: &str) -> NewEntry {
    NewEntry {
        namespace: "orders".to_owned(),
        target,
        key: Key::from_display(key),
        method: method.to_owned(),
        version: 1,
        payload: format!(r#"{{"method":"{method}","args":{{"id":"{key}"}}}}"#).into_bytes(),
        reason: "the follower timed out".to_owned(),
        uncertain: false,
    }
}

impl Fixture {
    /// An empty queue file.
    pub fn empty() -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("queue.db");
        block_on(async {
            let queue = SqliteQueue::open(&path).await.expect("the queue opens");
            queue.close().await;
        });
        Fixture { _dir: dir, path }
    }

    /// A queue holding one dead letter and pending work for the new store.
    pub fn with_work() -> (Fixture, Queued) {
        let fixture = Fixture::empty();
        let queued = block_on(async {
            let queue = SqliteQueue::open(&fixture.path)
                .await
                .expect("the queue opens");
            let dead = queue
                .append(entry(Side::New, "c", "update_status"))
                .await
                .expect("append");
            let claim = queue
                .claim("orders", 1, Duration::from_secs(30))
                .await
                .expect("claim");
            assert_eq!(claim.entries.len(), 1);
            queue
                .dead_letter(
                    claim.entries[0].lease,
                    "UNIQUE constraint failed: orders.id",
                )
                .await
                .expect("dead letter");
            let mut pending_new = Vec::new();
            for (key, method) in [
                ("a", "create_order"),
                ("a", "update_status"),
                ("b", "create_order"),
            ] {
                pending_new.push(
                    queue
                        .append(entry(Side::New, key, method))
                        .await
                        .expect("append"),
                );
            }
            queue.close().await;
            Queued { dead, pending_new }
        });
        (fixture, queued)
    }

    /// Runs `dualwrite` with `command` split at spaces, on this queue.
    pub fn run(&self, command: &str) -> Ran {
        self.run_args(&command.split_whitespace().collect::<Vec<_>>())
    }

    /// Runs `dualwrite` with `args` (which may hold spaces), on this queue.
    pub fn run_args(&self, args: &[&str]) -> Ran {
        let url = self.url();
        let mut args = args.to_vec();
        args.extend(["--queue", &url]);
        run(&args)
    }

    pub fn url(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    /// Stores `stage` as a service starting with this source would.
    pub fn store_stage(&self, stage: Stage) {
        block_on(async {
            let source = SqliteStageSource::open(&self.path)
                .await
                .expect("the source opens");
            let record = StageRecord::new(stage);
            source
                .store(None, &record)
                .await
                .expect("stored")
                .expect("first");
        });
    }

    /// Every row of the queue's and the stage's tables, as text.
    pub fn snapshot(&self) -> String {
        snapshot(&self.path)
    }
}

/// The rows of every table of the SQLite file at `path`, read through a
/// read-only connection, in a stable order.
pub fn snapshot(path: &Path) -> String {
    block_on(async {
        let mut conn = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .connect()
            .await
            .expect("the file opens read-only");
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .fetch_all(&mut conn)
                .await
                .expect("the schema");
        let mut text = String::new();
        for table in tables {
            text.push_str(&format!("[{table}]\n"));
            let rows = sqlx::query(&format!("SELECT * FROM \"{table}\" ORDER BY 1"))
                .fetch_all(&mut conn)
                .await
                .expect("rows");
            for row in rows {
                let cells: Vec<String> = (0..row.len())
                    .map(|index| {
                        row.try_get::<Option<String>, _>(index)
                            .map(|cell| format!("{cell:?}"))
                            .or_else(|_| {
                                row.try_get::<Option<i64>, _>(index)
                                    .map(|cell| format!("{cell:?}"))
                            })
                            .or_else(|_| {
                                row.try_get::<Option<Vec<u8>>, _>(index)
                                    .map(|cell| format!("{cell:?}"))
                            })
                            .unwrap_or_else(|_| "?".to_owned())
                    })
                    .collect();
                text.push_str(&cells.join("|"));
                text.push('\n');
            }
        }
        let _ = conn.close().await;
        text
    })
}

/// The stage stored in the queue's file, read as a service would.
pub fn stored_stage(path: &Path) -> Option<(Stage, u64, Option<String>)> {
    block_on(async {
        let source = SqliteStageSource::open(path)
            .await
            .expect("the source opens");
        source
            .load()
            .await
            .expect("loads")
            .map(|stored| (stored.record.stage, stored.version, stored.record.reason))
    })
}

/// A service instance's Prometheus endpoint, as a loopback HTTP server
/// answering each scrape with the next of `bodies` (the last one again
/// once they run out). Returns its URL; the server lives until the test
/// process ends.
pub fn serve_metrics(bodies: Vec<String>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut served = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            // The request line and headers, up to the blank line.
            while reader.read_line(&mut line).is_ok_and(|read| read > 0) && line != "\r\n" {
                line.clear();
            }
            let body = &bodies[served.min(bodies.len() - 1)];
            served += 1;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

/// A Prometheus exposition as `metrics-exporter-prometheus` renders the
/// runtime's counters: `compared` reads of which `mismatched` disagreed.
pub fn comparisons(compared: u64, mismatched: u64) -> String {
    format!(
        "# TYPE dualwrite_mismatches_total counter\n\
         dualwrite_mismatches_total{{namespace=\"orders\",method=\"find\",outcome=\"value_mismatch\"}} {mismatched}\n\
         # TYPE dualwrite_comparisons_total counter\n\
         dualwrite_comparisons_total{{namespace=\"orders\",method=\"find\",outcome=\"match\"}} {}\n\
         dualwrite_comparisons_total{{namespace=\"orders\",method=\"find\",outcome=\"value_mismatch\"}} {mismatched}\n\
         # TYPE dualwrite_calls_total counter\n\
         dualwrite_calls_total{{namespace=\"orders\",method=\"find\",side=\"old\",outcome=\"ok\"}} 99999\n",
        compared - mismatched
    )
}
