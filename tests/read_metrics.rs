//! The documented metric names and labels are recorded, checked with
//! metrics-util's debugging recorder.

mod reads_support;

use std::future::Future;
use std::time::Duration;

use dualwrite_runtime::observe::names;
use dualwrite_runtime::Stage;
use dualwrite_suite::Fault;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use reads_support::{get, get_detached, seed, wrapper};

/// One recorded metric: name, labels (sorted), value.
type Recorded = (String, Vec<(String, String)>, DebugValue);

/// Runs `body` on a current-thread runtime with a debugging recorder
/// installed for this thread, and returns what was recorded.
fn recorded<F: Future<Output = ()>>(body: impl FnOnce() -> F) -> Vec<Recorded> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(body())
    });
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (_, key) = key.into_parts();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect();
            labels.sort();
            (key.name().to_owned(), labels, value)
        })
        .collect()
}

fn find<'r>(
    metrics: &'r [Recorded],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'r DebugValue> {
    metrics.iter().find_map(|(found, found_labels, value)| {
        let matches = found == name
            && labels
                .iter()
                .all(|(key, value)| found_labels.iter().any(|(k, v)| k == key && v == value));
        matches.then_some(value)
    })
}

fn counter(metrics: &[Recorded], name: &str, labels: &[(&str, &str)]) -> u64 {
    match find(metrics, name, labels) {
        Some(DebugValue::Counter(count)) => *count,
        other => panic!("no counter {name} {labels:?}: {other:?}\nrecorded: {metrics:#?}"),
    }
}

fn gauge(metrics: &[Recorded], name: &str, labels: &[(&str, &str)]) -> f64 {
    match find(metrics, name, labels) {
        Some(DebugValue::Gauge(value)) => value.0,
        other => panic!("no gauge {name} {labels:?}: {other:?}\nrecorded: {metrics:#?}"),
    }
}

#[test]
fn compared_reads_record_calls_latency_and_comparisons_per_side() {
    let metrics = recorded(|| async {
        let (repo, _collector) = wrapper(Stage::Shadow);
        seed(repo.old_store(), 1, 10).await;
        seed(repo.new_store(), 1, 11).await;
        seed(repo.old_store(), 2, 20).await;
        seed(repo.new_store(), 2, 20).await;
        get(&repo, 1).await.unwrap();
        get(&repo, 2).await.unwrap();
        repo.new_store().script([Fault::Error]);
        get(&repo, 2).await.unwrap();
        repo.new_store()
            .script([Fault::Slow(Duration::from_secs(60))]);
        get(&repo, 2).await.unwrap();
    });
    let kv = [("namespace", "kv"), ("method", "get")];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        kv.iter().chain(extra).copied().collect()
    };
    assert_eq!(
        counter(
            &metrics,
            names::CALLS,
            &with(&[("side", "old"), ("outcome", "ok")])
        ),
        4
    );
    assert_eq!(
        counter(
            &metrics,
            names::CALLS,
            &with(&[("side", "new"), ("outcome", "ok")])
        ),
        2
    );
    assert_eq!(
        counter(
            &metrics,
            names::CALLS,
            &with(&[("side", "new"), ("outcome", "error")])
        ),
        1
    );
    assert_eq!(
        counter(
            &metrics,
            names::CALLS,
            &with(&[("side", "new"), ("outcome", "timeout")])
        ),
        1
    );
    match find(&metrics, names::CALL_DURATION, &with(&[("side", "old")])) {
        Some(DebugValue::Histogram(samples)) => assert_eq!(samples.len(), 4),
        other => panic!("{other:?}"),
    }
    match find(&metrics, names::CALL_DURATION, &with(&[("side", "new")])) {
        Some(DebugValue::Histogram(samples)) => {
            assert_eq!(samples.len(), 3, "the timed-out call is not timed")
        }
        other => panic!("{other:?}"),
    }
    for (outcome, count) in [
        ("match", 1),
        ("value_mismatch", 1),
        ("compared_errored", 1),
        ("compared_timed_out", 1),
    ] {
        assert_eq!(
            counter(&metrics, names::COMPARISONS, &with(&[("outcome", outcome)])),
            count,
            "{outcome}"
        );
    }
    assert_eq!(
        counter(
            &metrics,
            names::MISMATCHES,
            &with(&[("outcome", "value_mismatch")])
        ),
        1
    );
    assert!(find(&metrics, names::MISMATCHES, &with(&[("outcome", "match")])).is_none());
}

#[test]
fn equal_errors_are_counted_as_comparisons_but_not_as_mismatches() {
    let metrics = recorded(|| async {
        let (repo, _collector) = wrapper(Stage::Shadow);
        repo.old_store().script([Fault::Error, Fault::Error]);
        repo.new_store()
            .script([Fault::Error, Fault::ErrorAfter(Duration::from_millis(1))]);
        get(&repo, 1).await.unwrap_err();
        get(&repo, 1).await.unwrap_err();
    });
    let labels = |outcome| [("namespace", "kv"), ("method", "get"), ("outcome", outcome)];
    assert_eq!(
        counter(&metrics, names::COMPARISONS, &labels("both_errored")),
        1
    );
    assert_eq!(
        counter(&metrics, names::COMPARISONS, &labels("error_mismatch")),
        1
    );
    assert_eq!(
        counter(&metrics, names::MISMATCHES, &labels("error_mismatch")),
        1
    );
    assert!(
        find(&metrics, names::MISMATCHES, &labels("both_errored")).is_none(),
        "two equal errors are not a mismatch"
    );
}

#[test]
fn saturated_detached_comparisons_are_dropped_and_counted() {
    let metrics = recorded(|| async {
        let collector = std::sync::Arc::new(reads_support::Collector::default());
        let repo = reads_support::builder(Stage::Shadow, &collector)
            .detached_concurrency(1)
            .build()
            .unwrap();
        // The first comparison holds the only permit while the new store hangs.
        repo.new_store()
            .script([Fault::Slow(Duration::from_secs(60))]);
        get_detached(&repo, 1).await.unwrap();
        get_detached(&repo, 2).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            repo.new_store().call_count(),
            1,
            "the second read was not compared"
        );
    });
    assert_eq!(
        counter(
            &metrics,
            names::COMPARISONS_DROPPED,
            &[
                ("namespace", "kv"),
                ("method", "get"),
                ("reason", "saturated")
            ]
        ),
        1
    );
}

#[test]
fn stage_moves_and_the_queue_are_recorded() {
    let metrics = recorded(|| async {
        let (repo, _collector) = wrapper(Stage::DualWrite);
        repo.stage().set(Stage::Shadow).await.unwrap();
        repo.stage().force(Stage::Live, "test").await.unwrap();
        repo.new_store().script([Fault::Error]);
        repo.stage().force(Stage::DualWrite, "back").await.unwrap();
        dualwrite_suite::KvRepo::put(&repo, 1, 1).await.unwrap();
        repo.record_queue_metrics().await.unwrap();
    });
    assert_eq!(
        counter(
            &metrics,
            names::STAGE_CHANGES,
            &[
                ("from", "dual_write"),
                ("to", "shadow"),
                ("forced", "false")
            ]
        ),
        1
    );
    assert_eq!(
        counter(
            &metrics,
            names::STAGE_CHANGES,
            &[("from", "shadow"), ("to", "live"), ("forced", "true")]
        ),
        1
    );
    assert_eq!(
        gauge(&metrics, names::STAGE, &[]),
        1.0,
        "dual_write is stage 1"
    );
    assert_eq!(
        gauge(
            &metrics,
            names::QUEUE_DEPTH,
            &[("target", "new"), ("state", "pending")]
        ),
        1.0
    );
    assert_eq!(
        gauge(
            &metrics,
            names::QUEUE_DEPTH,
            &[("target", "old"), ("state", "pending")]
        ),
        0.0
    );
    assert!(find(&metrics, names::QUEUE_OLDEST_PENDING, &[("target", "new")]).is_some());
}
