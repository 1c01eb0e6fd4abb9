//! Every comparison outcome is told apart and reported with its key, and
//! the caller always gets the serving store's result. Two equal errors are
//! agreement; two different errors are a disagreement.

mod reads_support;

use dualwrite_runtime::{ComparisonOutcome, Side, Stage};
use dualwrite_suite::{Fault, StoreError};
use reads_support::{get, get_with, get_with_error_comparator, seed, wrapper};

#[tokio::test]
async fn equal_values_match_and_nothing_is_reported() {
    let (repo, collector) = wrapper(Stage::Shadow);
    seed(repo.old_store(), 1, 10).await;
    seed(repo.new_store(), 1, 10).await;
    assert_eq!(get(&repo, 1).await, Ok(Some(10)));
    assert!(collector.outcomes().is_empty());
    assert_eq!(repo.stage().mismatch_rate().comparisons, 1);
    assert_eq!(repo.stage().mismatch_rate().disagreements, 0);
}

#[tokio::test]
async fn different_values_are_a_value_mismatch_reported_with_the_key() {
    let (repo, collector) = wrapper(Stage::Shadow);
    seed(repo.old_store(), 7, 70).await;
    seed(repo.new_store(), 7, 71).await;
    assert_eq!(get(&repo, 7).await, Ok(Some(70)), "served by the old store");
    let report = collector.last();
    assert_eq!(report.outcome, ComparisonOutcome::ValueMismatch);
    assert_eq!(report.key.as_ref().map(|key| key.as_str()), Some("7"));
    assert_eq!((report.namespace, report.method), ("kv", "get"));
    assert_eq!((report.serving, report.compared), (Side::Old, Side::New));
    assert_eq!(report.stage, Stage::Shadow);
    assert!(!report.detached);
    assert_eq!(
        report.serving_value, None,
        "values are not reported unless asked for"
    );
    assert_eq!(report.compared_value, None);
}

#[tokio::test]
async fn in_live_the_new_store_serves_and_the_old_is_compared() {
    let (repo, collector) = wrapper(Stage::Live);
    seed(repo.old_store(), 7, 70).await;
    seed(repo.new_store(), 7, 71).await;
    assert_eq!(get(&repo, 7).await, Ok(Some(71)));
    let report = collector.last();
    assert_eq!((report.serving, report.compared), (Side::New, Side::Old));
}

#[tokio::test]
async fn the_compared_store_failing_is_compared_errored() {
    let (repo, collector) = wrapper(Stage::Shadow);
    seed(repo.old_store(), 1, 10).await;
    repo.new_store().script([Fault::Error]);
    assert_eq!(get(&repo, 1).await, Ok(Some(10)));
    assert_eq!(collector.outcomes(), [ComparisonOutcome::ComparedErrored]);
}

#[tokio::test]
async fn the_serving_store_failing_is_serving_errored_and_its_error_is_returned() {
    let (repo, collector) = wrapper(Stage::Shadow);
    repo.old_store().script([Fault::Error]);
    assert_eq!(
        get(&repo, 1).await,
        Err(StoreError("store unavailable".into()))
    );
    assert_eq!(collector.outcomes(), [ComparisonOutcome::ServingErrored]);
}

#[tokio::test]
async fn both_stores_failing_alike_agree_and_nothing_is_reported() {
    let (repo, collector) = wrapper(Stage::Shadow);
    repo.old_store().script([Fault::Error]);
    repo.new_store().script([Fault::Error]);
    assert_eq!(
        get(&repo, 1).await,
        Err(StoreError("store unavailable".into()))
    );
    assert!(
        collector.outcomes().is_empty(),
        "two equal errors are agreement, not a mismatch: {:?}",
        collector.outcomes()
    );
    assert_eq!(repo.stage().mismatch_rate().comparisons, 1);
    assert_eq!(
        repo.stage().mismatch_rate().disagreements,
        0,
        "two equal errors are no evidence the data differs"
    );
}

#[tokio::test]
async fn both_stores_failing_differently_is_an_error_mismatch() {
    let (repo, collector) = wrapper(Stage::Shadow);
    repo.old_store().script([Fault::Error]);
    repo.new_store()
        .script([Fault::ErrorAfter(std::time::Duration::from_millis(1))]);
    assert_eq!(
        get(&repo, 4).await,
        Err(StoreError("store unavailable".into())),
        "the serving store's error is returned"
    );
    let report = collector.last();
    assert_eq!(report.outcome, ComparisonOutcome::ErrorMismatch);
    assert_eq!(report.key.as_ref().map(|key| key.as_str()), Some("4"));
    assert_eq!(repo.stage().mismatch_rate().disagreements, 1);
}

#[tokio::test]
async fn the_serving_store_failing_and_the_compared_panicking_is_an_error_mismatch() {
    let (repo, collector) = wrapper(Stage::Shadow);
    repo.old_store().script([Fault::Error]);
    repo.new_store().script([Fault::Panic]);
    assert!(get(&repo, 1).await.is_err());
    assert_eq!(collector.outcomes(), [ComparisonOutcome::ErrorMismatch]);
}

#[tokio::test]
async fn an_error_comparator_decides_which_errors_agree() {
    let (repo, collector) = wrapper(Stage::Shadow);
    let any_errors_agree = |_: &StoreError, _: &StoreError| true;
    let no_errors_agree = |_: &StoreError, _: &StoreError| false;
    for (errors_agree, expected) in [
        (any_errors_agree as fn(&_, &_) -> bool, vec![]),
        (no_errors_agree, vec![ComparisonOutcome::ErrorMismatch]),
    ] {
        collector.mismatches.lock().unwrap().clear();
        repo.old_store().script([Fault::Error]);
        repo.new_store()
            .script([Fault::ErrorAfter(std::time::Duration::from_millis(1))]);
        let result = get_with_error_comparator(&repo, 1, errors_agree).await;
        assert!(result.is_err());
        assert_eq!(collector.outcomes(), expected);
    }
}

#[tokio::test(start_paused = true)]
async fn a_compared_store_slower_than_the_timeout_is_timed_out() {
    let (repo, collector) = wrapper(Stage::Shadow);
    seed(repo.old_store(), 1, 10).await;
    repo.new_store()
        .script([Fault::Slow(std::time::Duration::from_secs(60))]);
    assert_eq!(get(&repo, 1).await, Ok(Some(10)));
    let report = collector.last();
    assert_eq!(report.outcome, ComparisonOutcome::ComparedTimedOut);
    assert_eq!(report.compared_elapsed, None);
}

#[tokio::test]
async fn a_panicking_comparator_is_comparator_panicked() {
    let (repo, collector) = wrapper(Stage::Shadow);
    seed(repo.old_store(), 1, 10).await;
    seed(repo.new_store(), 1, 10).await;
    let comparator = |_: &Option<u64>, _: &Option<u64>| -> bool { panic!("comparator bug") };
    assert_eq!(get_with(&repo, 1, comparator, None).await, Ok(Some(10)));
    assert_eq!(
        collector.outcomes(),
        [ComparisonOutcome::ComparatorPanicked]
    );
}

#[tokio::test]
async fn a_custom_comparator_decides_what_matches() {
    let (repo, collector) = wrapper(Stage::Shadow);
    seed(repo.old_store(), 1, 1_000).await;
    seed(repo.new_store(), 1, 1_004).await;
    // Values within 10 of each other are the same (say, rounding).
    let close = |a: &Option<u64>, b: &Option<u64>| match (a, b) {
        (Some(a), Some(b)) => a.abs_diff(*b) < 10,
        _ => a == b,
    };
    assert_eq!(get_with(&repo, 1, close, None).await, Ok(Some(1_000)));
    assert!(collector.outcomes().is_empty());
}

#[tokio::test]
async fn values_are_reported_only_when_asked_for() {
    let (repo, collector) = wrapper(Stage::Shadow);
    seed(repo.old_store(), 3, 30).await;
    seed(repo.new_store(), 3, 31).await;
    let show: fn(&Result<Option<u64>, StoreError>) -> String = |result| format!("{result:?}");
    get_with(&repo, 3, dualwrite_runtime::__private::equal, Some(show))
        .await
        .unwrap();
    let report = collector.last();
    assert_eq!(report.serving_value.as_deref(), Some("Ok(Some(30))"));
    assert_eq!(report.compared_value.as_deref(), Some("Ok(Some(31))"));
}

#[tokio::test]
async fn stages_without_comparison_read_one_store() {
    for stage in [
        Stage::Off,
        Stage::DualWrite,
        Stage::RampDown,
        Stage::Complete,
    ] {
        let (repo, collector) = wrapper(stage);
        get(&repo, 1).await.unwrap();
        let reads = repo.old_store().call_count() + repo.new_store().call_count();
        assert_eq!(reads, 1, "{stage}");
        assert!(collector.outcomes().is_empty(), "{stage}");
        assert_eq!(repo.stage().mismatch_rate().comparisons, 0, "{stage}");
    }
}
