//! What the service-backed examples and their tests share: where the local
//! servers are, names unique to one run, and waiting for the worker.
//!
//! The servers are the machine's own: PostgreSQL on 127.0.0.1:5432 (database
//! `test`) and Redis on 127.0.0.1:6379. `DUALWRITE_POSTGRES_URL` and
//! `DUALWRITE_REDIS_URL` point elsewhere. `bash .ci/services` starts them.

// Each example uses part of this file, and the tests another part.
#![allow(dead_code)]

use std::error::Error;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dualwrite_runtime::QueueAdmin;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::Connection;

const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const REDIS_URL: &str = "redis://127.0.0.1:6379/";

/// The PostgreSQL URL: `DUALWRITE_POSTGRES_URL`, or the local server.
pub fn postgres_url() -> String {
    std::env::var("DUALWRITE_POSTGRES_URL").unwrap_or_else(|_| POSTGRES_URL.to_owned())
}

/// The Redis URL: `DUALWRITE_REDIS_URL`, or the local server.
pub fn redis_url() -> String {
    std::env::var("DUALWRITE_REDIS_URL").unwrap_or_else(|_| REDIS_URL.to_owned())
}

/// Connects to PostgreSQL, or says which server could not be reached and
/// how to start it.
pub async fn postgres() -> Result<PgPool, String> {
    let url = postgres_url();
    let unreachable = |error: sqlx::Error| {
        format!(
            "cannot connect to PostgreSQL at {url}: {error} \
             (start the local servers with `bash .ci/services`, or set DUALWRITE_POSTGRES_URL)"
        )
    };
    // One connection first: a pool reports only that it timed out, this
    // says why (refused, no such database, authentication).
    let probe = PgConnection::connect(&url).await.map_err(unreachable)?;
    let _ = probe.close().await;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url);
    pool.await.map_err(unreachable)
}

/// A name no other run uses, for tables and key prefixes: `prefix`, the
/// process id and the clock, in characters safe in an SQL identifier.
pub fn run_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    format!("{prefix}_{}_{nanos:x}", std::process::id())
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `limit`;
/// `Err(what)` if it never did.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return Ok(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("gave up after {limit:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the queue holds nothing: every write applied, none
/// dead-lettered.
pub async fn drained(queue: &QueueAdmin, limit: Duration) -> Result<(), String> {
    wait_for("the worker to empty the queue", limit, || async {
        queue.stats().await.ok()?.is_empty().then_some(())
    })
    .await
}

/// An example's `main`: runs `example` in a fresh temporary directory
/// (removed afterwards) and exits with 0 if it returned `Ok(true)`, 1 if it
/// found a difference (`Ok(false)`) or stopped on an error.
pub async fn run_example<F, Fut>(name: &str, example: F) -> ExitCode
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: Future<Output = Result<bool, Box<dyn Error>>>,
{
    let dir = std::env::temp_dir().join(format!("dualwrite-{name}-{}", std::process::id()));
    let outcome = match std::fs::create_dir_all(&dir) {
        Ok(()) => example(dir.clone()).await,
        Err(error) => Err(format!("cannot create {}: {error}", dir.display()).into()),
    };
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("\nThe example stopped on an error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A directory for one test run's files, named `name`.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dualwrite-test-{name}"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    dir
}
