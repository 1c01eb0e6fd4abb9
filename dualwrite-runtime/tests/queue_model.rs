//! The model-based queue suite (`queue::testing::model`) against both
//! built-in backends: the in-memory queue (no restarts) and the SQLite
//! queue (restarts close and reopen the file).
//!
//! `DUALWRITE_MODEL_CASES=500 cargo test -p dualwrite-runtime --test
//! queue_model` runs more cases; `DUALWRITE_MODEL_SEED` replays the seed a
//! failure printed.

mod support;

use dualwrite_runtime::queue::testing::model::{check_backend, check_fresh, ModelConfig};
use dualwrite_runtime::InMemoryQueue;
use support::SqliteBackend;

#[test]
fn in_memory_queue_matches_the_model() {
    let config = ModelConfig::new().cases(64).max_steps(40).with_env();
    if let Err(failure) = check_fresh(&config, || async { InMemoryQueue::new() }) {
        panic!("{failure}");
    }
}

#[test]
fn sqlite_queue_matches_the_model() {
    let config = ModelConfig::new()
        .cases(24)
        .max_steps(40)
        // The SQLite queue keeps wall-clock milliseconds.
        .short_deadline(std::time::Duration::from_millis(30))
        .time_step(std::time::Duration::from_millis(45))
        // Every case shrunk opens a file: bound the time a failure takes.
        .max_shrink_time(std::time::Duration::from_secs(20))
        .with_env();
    let backend = SqliteBackend::new("queue-model");
    if let Err(failure) = check_backend(&config, backend) {
        panic!("{failure}");
    }
}
