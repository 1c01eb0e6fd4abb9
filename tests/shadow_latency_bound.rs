//! A slow compared store delays the caller by at most the compare timeout;
//! a detached comparison does not delay it at all. Times are tokio's paused
//! clock: virtual, exact, and independent of the machine's load.

mod reads_support;

use std::time::Duration;

use dualwrite_runtime::{ComparisonOutcome, Stage};
use dualwrite_suite::Fault;
use reads_support::{get, get_detached, seed, wrapper};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);
const TIMEOUT: Duration = Duration::from_millis(100); // reads_support's compare timeout

#[tokio::test(start_paused = true)]
async fn a_hanging_compared_store_delays_the_caller_by_at_most_the_timeout() {
    let (repo, collector) = wrapper(Stage::Shadow);
    seed(repo.old_store(), 1, 10).await;
    repo.old_store().script([Fault::Slow(2 * MS)]);
    repo.new_store()
        .script([Fault::Slow(Duration::from_secs(3600))]);
    let start = Instant::now();
    assert_eq!(get(&repo, 1).await, Ok(Some(10)));
    let elapsed = start.elapsed();
    assert!(
        elapsed >= 2 * MS + TIMEOUT && elapsed <= 2 * MS + TIMEOUT + MS,
        "serving time + timeout, took {elapsed:?}"
    );
    assert_eq!(collector.outcomes(), [ComparisonOutcome::ComparedTimedOut]);
}

#[tokio::test(start_paused = true)]
async fn both_stores_are_read_at_once_so_the_caller_waits_for_the_slower_not_the_sum() {
    let (repo, collector) = wrapper(Stage::Shadow);
    repo.old_store().script([Fault::Slow(2 * MS)]);
    repo.new_store().script([Fault::Slow(30 * MS)]);
    let start = Instant::now();
    get(&repo, 1).await.unwrap();
    let elapsed = start.elapsed();
    assert!(
        elapsed >= 30 * MS && elapsed <= 31 * MS,
        "the slower store's time, took {elapsed:?}"
    );
    assert!(
        collector.outcomes().is_empty(),
        "both answered in time and agree"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_serving_store_is_waited_for_in_full() {
    let (repo, _collector) = wrapper(Stage::Shadow);
    repo.old_store().script([Fault::Slow(500 * MS)]);
    repo.new_store().script([Fault::Slow(2 * MS)]);
    let start = Instant::now();
    get(&repo, 1).await.unwrap();
    assert!(start.elapsed() >= 500 * MS && start.elapsed() <= 501 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_detached_comparison_leaves_the_caller_at_the_serving_store_time() {
    let (repo, collector) = wrapper(Stage::Shadow);
    seed(repo.old_store(), 1, 10).await;
    repo.old_store().script([Fault::Slow(2 * MS)]);
    repo.new_store()
        .script([Fault::Slow(Duration::from_secs(3600))]);
    let start = Instant::now();
    assert_eq!(get_detached(&repo, 1).await, Ok(Some(10)));
    let elapsed = start.elapsed();
    assert!(elapsed >= 2 * MS && elapsed <= 3 * MS, "took {elapsed:?}");
    assert!(collector.outcomes().is_empty(), "not judged yet");
    tokio::time::sleep(TIMEOUT + MS).await;
    let report = collector.last();
    assert_eq!(report.outcome, ComparisonOutcome::ComparedTimedOut);
    assert!(report.detached);
}
