//! A `detached` comparison runs after the caller has its result, reports
//! like a concurrent one, and frees its slot when done.

mod reads_support;

use std::sync::Arc;
use std::time::Duration;

use dualwrite_runtime::{ComparisonOutcome, Stage};
use dualwrite_suite::Fault;
use reads_support::{builder, get_detached, seed, Collector};

#[tokio::test(start_paused = true)]
async fn a_mismatch_is_reported_after_the_call_returns() {
    let collector = Arc::new(Collector::default());
    let repo = builder(Stage::Shadow, &collector).build().unwrap();
    seed(repo.old_store(), 4, 40).await;
    seed(repo.new_store(), 4, 41).await;
    repo.new_store()
        .script([Fault::Slow(Duration::from_millis(50))]);
    assert_eq!(get_detached(&repo, 4).await, Ok(Some(40)));
    assert!(
        collector.outcomes().is_empty(),
        "the new store has not answered yet"
    );
    tokio::time::sleep(Duration::from_millis(51)).await;
    let report = collector.last();
    assert_eq!(report.outcome, ComparisonOutcome::ValueMismatch);
    assert!(report.detached);
    assert_eq!(report.key.as_ref().map(|key| key.as_str()), Some("4"));
    assert_eq!(report.compared_elapsed, Some(Duration::from_millis(50)));
}

#[tokio::test(start_paused = true)]
async fn a_finished_comparison_frees_its_slot() {
    let collector = Arc::new(Collector::default());
    let repo = builder(Stage::Shadow, &collector)
        .detached_concurrency(1)
        .build()
        .unwrap();
    for key in 0..5 {
        seed(repo.new_store(), key, 1).await;
        get_detached(&repo, key).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(repo.stage().mismatch_rate().comparisons, 5);
    assert_eq!(collector.outcomes(), [ComparisonOutcome::ValueMismatch; 5]);
}
