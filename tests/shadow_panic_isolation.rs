//! A panic in the compared store, in a comparator or in an observer never
//! reaches the caller, who gets the serving store's result (I6).

mod reads_support;

use std::sync::Arc;

use dualwrite_runtime::observe::{ComparisonReport, Observer};
use dualwrite_runtime::{ComparisonOutcome, Stage};
use dualwrite_suite::{silence_injected_panics, Fault, StoreError};
use reads_support::{builder, get, get_detached, get_with, seed, wrapper, Collector};

#[tokio::test]
async fn a_panicking_compared_store_is_reported_not_raised() {
    silence_injected_panics();
    let (repo, collector) = wrapper(Stage::Shadow);
    seed(repo.old_store(), 1, 10).await;
    repo.new_store().script([Fault::Panic]);
    let show: fn(&Result<Option<u64>, StoreError>) -> String = |result| format!("{result:?}");
    let value = get_with(&repo, 1, dualwrite_runtime::__private::equal, Some(show)).await;
    assert_eq!(value, Ok(Some(10)));
    let report = collector.last();
    assert_eq!(report.outcome, ComparisonOutcome::ComparedErrored);
    assert!(
        report
            .compared_value
            .as_deref()
            .is_some_and(|text| text.starts_with("panicked: injected store panic")),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_panicking_compared_store_in_live_is_reported_not_raised() {
    silence_injected_panics();
    let (repo, collector) = wrapper(Stage::Live);
    seed(repo.new_store(), 1, 10).await;
    repo.old_store().script([Fault::Panic]);
    assert_eq!(get(&repo, 1).await, Ok(Some(10)));
    assert_eq!(collector.outcomes(), [ComparisonOutcome::ComparedErrored]);
}

#[tokio::test]
async fn a_panicking_comparator_is_reported_not_raised() {
    let (repo, collector) = wrapper(Stage::Shadow);
    seed(repo.old_store(), 1, 10).await;
    let comparator = |_: &Option<u64>, _: &Option<u64>| -> bool { panic!("comparator bug") };
    assert_eq!(get_with(&repo, 1, comparator, None).await, Ok(Some(10)));
    assert_eq!(
        collector.outcomes(),
        [ComparisonOutcome::ComparatorPanicked]
    );
}

struct PanickingObserver;

impl Observer for PanickingObserver {
    fn on_mismatch(&self, _: &ComparisonReport) {
        panic!("observer bug");
    }
}

#[tokio::test]
async fn a_panicking_observer_is_caught_and_the_next_one_still_runs() {
    let collector = Arc::new(Collector::default());
    let repo = builder(Stage::Shadow, &Arc::new(Collector::default()))
        .observer(PanickingObserver)
        .shared_observer(Arc::clone(&collector) as Arc<dyn Observer>)
        .build()
        .unwrap();
    seed(repo.old_store(), 1, 10).await;
    seed(repo.new_store(), 1, 11).await;
    assert_eq!(get(&repo, 1).await, Ok(Some(10)));
    assert_eq!(collector.outcomes(), [ComparisonOutcome::ValueMismatch]);
}

#[tokio::test]
async fn a_panicking_compared_store_in_a_detached_comparison_is_reported_not_raised() {
    silence_injected_panics();
    let (repo, collector) = wrapper(Stage::Shadow);
    seed(repo.old_store(), 1, 10).await;
    repo.new_store().script([Fault::Panic]);
    assert_eq!(get_detached(&repo, 1).await, Ok(Some(10)));
    for _ in 0..100 {
        if !collector.outcomes().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(collector.outcomes(), [ComparisonOutcome::ComparedErrored]);
}
