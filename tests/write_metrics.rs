//! Writes are counted and timed per side and outcome, reconciled operations
//! are counted, and dead letters reach observers and the dead-letter counter
//! (metric names as documented in `dualwrite_runtime::observe::names`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dualwrite_runtime::observe::{names, DeadLetterReport, Observer};
use dualwrite_runtime::{DualWrite, InMemoryQueue, RetryPolicy, Side, Stage};
use dualwrite_suite::{Fault, FaultyStore, KvRepo, KvRepoOp};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[derive(Default, Clone)]
struct DeadLetters(Arc<Mutex<Vec<DeadLetterReport>>>);

impl Observer for DeadLetters {
    fn on_dead_letter(&self, report: &DeadLetterReport) {
        self.0.lock().unwrap().push(report.clone());
    }
}

/// One recorded metric: name, labels, value.
type Recorded = (String, Vec<(String, String)>, DebugValue);

fn counter(snapshot: &[Recorded], name: &str, labels: &[(&str, &str)]) -> u64 {
    snapshot
        .iter()
        .filter(|(found, found_labels, _)| {
            found == name
                && labels
                    .iter()
                    .all(|(k, v)| found_labels.iter().any(|(fk, fv)| fk == k && fv == v))
        })
        .map(|(_, _, value)| match value {
            DebugValue::Counter(count) => *count,
            _ => 0,
        })
        .sum()
}

/// What the recorder holds, as (name, labels, value).
fn recorded(snapshotter: &metrics_util::debugging::Snapshotter) -> Vec<Recorded> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (_, key) = key.into_parts();
            let labels = key
                .labels()
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect();
            (key.name().to_owned(), labels, value)
        })
        .collect()
}

#[test]
fn writes_reconciliations_and_dead_letters_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let observed = DeadLetters::default();
    let seen = observed.clone();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(async move {
                let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
                    .queue(InMemoryQueue::new())
                    .stage(Stage::DualWrite)
                    .observer(seen)
                    .retry(
                        RetryPolicy::default()
                            .max_attempts(2)
                            .min_delay(Duration::from_millis(1)),
                    )
                    .build()
                    .unwrap();
                repo.put(1, 1).await.unwrap();
                repo.new_store().script([Fault::Error]);
                repo.put(2, 2).await.unwrap();
                repo.new_store().reject_key(3);
                repo.put(3, 3).await.unwrap();
                repo.worker::<KvRepoOp>().drain().await;
            })
    });
    let snapshot = recorded(&snapshotter);

    let calls = |side: &str, outcome: &str| {
        counter(
            &snapshot,
            names::CALLS,
            &[
                ("namespace", "kv"),
                ("method", "put"),
                ("side", side),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(calls("old", "ok"), 3, "three authoritative writes");
    assert_eq!(
        calls("new", "ok"),
        1,
        "one follower write went through in the request"
    );
    assert_eq!(
        calls("new", "error"),
        2,
        "two follower writes failed in the request"
    );
    assert!(
        snapshot
            .iter()
            .any(|(name, labels, _)| name == names::CALL_DURATION
                && labels.iter().any(|(k, v)| k == "side" && v == "old")),
        "write latency is recorded"
    );
    assert_eq!(
        counter(
            &snapshot,
            names::RECONCILED,
            &[("method", "put"), ("target", "new")]
        ),
        1,
        "key 2 was reconciled"
    );
    assert_eq!(
        counter(
            &snapshot,
            names::DEAD_LETTERS,
            &[("method", "put"), ("target", "new")]
        ),
        1,
        "key 3 died"
    );

    let reports = observed.0.lock().unwrap();
    assert_eq!(reports.len(), 1, "the observer heard of the dead letter");
    assert_eq!(
        (
            reports[0].key.as_str(),
            reports[0].target,
            reports[0].attempts
        ),
        ("3", Side::New, 2)
    );
    assert_eq!(reports[0].error, "key 3 is rejected by this store");
}

/// A follower write the queue refused (fail-open) is counted in
/// `dualwrite_drift_total` as well as in `drift_count()`.
#[test]
fn a_refused_queue_append_is_counted_as_drift() {
    #[path = "flaky_queue/mod.rs"]
    mod flaky_queue;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let drift = metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(async move {
                let queue = Arc::new(flaky_queue::FlakyQueue::new());
                queue
                    .refuse_appends
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
                    .shared_queue(queue)
                    .stage(Stage::DualWrite)
                    .build()
                    .unwrap();
                repo.new_store().script([Fault::Error]);
                repo.put(1, 1).await.unwrap();
                repo.drift_count()
            })
    });
    assert_eq!(drift, 1);
    let snapshot = recorded(&snapshotter);
    assert_eq!(
        counter(
            &snapshot,
            names::DRIFT,
            &[("namespace", "kv"), ("method", "put"), ("target", "new")]
        ),
        1
    );
}

/// The store calls' metric handles are registered once and kept, so they
/// must follow the recorder in effect: writes made before a recorder is
/// installed, under it, and after it is gone are counted by it exactly for
/// the writes made under it, on one thread and one wrapper.
#[test]
fn call_counts_follow_the_recorder_in_effect() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .build()
        .unwrap();
    let puts = |from: u32, count: u32| {
        runtime.block_on(async {
            for key in from..from + count {
                repo.put(key, u64::from(key)).await.unwrap();
            }
        })
    };
    let old_calls = |snapshotter: &metrics_util::debugging::Snapshotter| {
        counter(
            &recorded(snapshotter),
            names::CALLS,
            &[("method", "put"), ("side", "old"), ("outcome", "ok")],
        )
    };
    puts(0, 3);
    let first = DebuggingRecorder::new();
    let first_snapshots = first.snapshotter();
    metrics::with_local_recorder(&first, || puts(10, 2));
    puts(20, 4);
    let second = DebuggingRecorder::new();
    let second_snapshots = second.snapshotter();
    metrics::with_local_recorder(&second, || puts(30, 5));
    assert_eq!(
        old_calls(&first_snapshots),
        2,
        "the first recorder's writes"
    );
    assert_eq!(
        old_calls(&second_snapshots),
        5,
        "the second recorder's writes"
    );
}
