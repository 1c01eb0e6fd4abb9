//! The reconciliation worker: panics and timeouts in the follower, a
//! graceful stop that finishes the operations in flight but (unlike a drain)
//! leaves unclaimed work queued, `WorkerHandle::shutdown` waiting for the
//! run and flushing the queue, and entries it cannot decode (I7).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dualwrite_runtime::queue::NewEntry;
use dualwrite_runtime::{
    DualWrite, InMemoryQueue, Key, ReconciliationQueue, RetryPolicy, Side, Stage,
};
use dualwrite_suite::{Call, Fault, FaultyStore, KvRepo, KvRepoOp};

mod flaky_queue;
use flaky_queue::FlakyQueue;

fn wrapper(queue: Arc<dyn ReconciliationQueue>) -> DualWrite<FaultyStore, FaultyStore> {
    DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .shared_queue(queue)
        .stage(Stage::DualWrite)
        .follower_timeout(Duration::from_millis(50))
        .retry(
            RetryPolicy::default()
                .max_attempts(5)
                .min_delay(Duration::from_millis(1))
                .max_delay(Duration::from_millis(5)),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn follower_panics_and_timeouts_are_queued_and_reconciled() {
    dualwrite_suite::silence_injected_panics();
    let repo = wrapper(Arc::new(InMemoryQueue::new()));
    repo.new_store().script([
        Fault::Panic,
        Fault::Slow(Duration::from_millis(500)),
        Fault::Panic,
    ]);
    repo.put(1, 1).await.unwrap();
    repo.put(2, 2).await.unwrap();
    assert_eq!(repo.queue().stats().await.unwrap().new.pending, 2);

    // The worker's first attempt panics too; the second succeeds.
    let report = repo.worker::<KvRepoOp>().drain().await;
    assert_eq!(
        (report.applied, report.retried, report.dead_lettered),
        (2, 1, 0),
        "{report:?}"
    );
    assert_eq!(repo.new_store().snapshot(), repo.old_store().snapshot());
}

/// A wrapper whose worker applies two keys at a time with follower calls
/// that take 200 ms (by the paused test clock), over `queue`; `ops` writes
/// are queued (the follower refused them) and the follower then heals.
async fn queued_writes(
    queue: Arc<dyn ReconciliationQueue>,
    ops: u32,
) -> (DualWrite<FaultyStore, FaultyStore>, usize) {
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .shared_queue(queue)
        .stage(Stage::DualWrite)
        .follower_timeout(Duration::from_secs(5))
        .worker_concurrency(CONCURRENCY)
        .build()
        .unwrap();
    repo.new_store().fail_always(Fault::Error);
    for key in 0..ops {
        repo.put(key, u64::from(key) + 100).await.unwrap();
    }
    assert_eq!(
        repo.queue().stats().await.unwrap().new.pending,
        u64::from(ops)
    );
    repo.new_store().heal();
    repo.new_store().script(std::iter::repeat_n(
        Fault::Slow(Duration::from_millis(200)),
        ops as usize,
    ));
    // The follower's calls so far (it may have stopped being called once
    // its circuit breaker opened): the worker's calls come after these.
    let before = repo.new_store().call_count();
    (repo, before)
}

/// How many keys the shutdown tests' workers apply at once.
const CONCURRENCY: usize = 2;

/// Resolves once the follower has received a call beyond `before`, that is,
/// once the worker has operations in flight. Spins with `yield_now`, so a
/// paused clock cannot advance meanwhile: the in-flight calls are still
/// sleeping when it returns.
async fn worker_call_started(repo: &DualWrite<FaultyStore, FaultyStore>, before: usize) {
    while repo.new_store().call_count() == before {
        tokio::task::yield_now().await;
    }
}

/// The keys the follower received puts for after its first `before` calls.
fn keys_put_after(repo: &DualWrite<FaultyStore, FaultyStore>, before: usize) -> Vec<u32> {
    repo.new_store().calls()[before..]
        .iter()
        .map(|call| match call {
            Call::Put(key, _) => *key,
            other => panic!("unexpected call {other:?}"),
        })
        .collect()
}

/// A graceful stop is not a drain: the operations in flight when it is asked
/// for finish (they are neither abandoned nor left claimed), and nothing more
/// is claimed, so work that was not yet claimed stays queued. The paused
/// clock makes the moment of the stop exact: both in-flight calls have
/// started and are still sleeping.
#[tokio::test(start_paused = true)]
async fn graceful_stop_finishes_in_flight_ops_and_leaves_the_rest_queued() {
    const OPS: u32 = 20;
    let (repo, before) = queued_writes(Arc::new(InMemoryQueue::new()), OPS).await;

    let worker = repo.worker::<KvRepoOp>();
    let stop = worker.stopper();
    let stopper = async {
        worker_call_started(&repo, before).await;
        stop.stop();
        // The calls in flight at the stop: one claim of `CONCURRENCY` keys,
        // all started before the first of them can finish.
        let stats = repo.queue().stats().await.unwrap();
        assert_eq!(
            stats.new.in_flight, CONCURRENCY as u64,
            "claimed when the stop was asked for: {stats:?}"
        );
    };
    let (report, ()) = tokio::join!(worker.run(), stopper);

    let in_flight = keys_put_after(&repo, before);
    assert_eq!(
        in_flight.len(),
        CONCURRENCY,
        "nothing was claimed after the stop: {in_flight:?}"
    );
    assert_eq!(
        (
            report.applied,
            report.retried,
            report.dead_lettered,
            report.fenced
        ),
        (CONCURRENCY as u64, 0, 0, 0),
        "the in-flight ops finished and were settled: {report:?}"
    );
    let followed = repo.new_store().snapshot();
    assert_eq!(
        followed,
        in_flight
            .iter()
            .map(|key| (*key, u64::from(*key) + 100))
            .collect(),
        "the in-flight writes landed (an abandoned write never would)"
    );
    let stats = repo.queue().stats().await.unwrap();
    assert_eq!(stats.new.in_flight, 0, "nothing is left claimed: {stats:?}");
    assert_eq!(
        stats.new.pending,
        u64::from(OPS) - CONCURRENCY as u64,
        "a stop is not a drain: the unclaimed ops are still queued: {stats:?}"
    );

    // Another worker (after a restart) applies exactly the rest.
    let rest = repo.worker::<KvRepoOp>().drain().await;
    assert_eq!(
        (rest.applied, rest.retried),
        (u64::from(OPS) - CONCURRENCY as u64, 0),
        "{rest:?}"
    );
    assert!(repo.queue().stats().await.unwrap().new.is_empty());
    assert_eq!(repo.new_store().snapshot(), repo.old_store().snapshot());
    assert_eq!(
        repo.new_store().call_count(),
        before + OPS as usize,
        "every queued op was applied once"
    );
}

/// `WorkerHandle::shutdown` stops the worker, waits until its run has
/// returned (the ops in flight finished), then flushes the queue, and returns
/// the worker's report.
#[tokio::test(start_paused = true)]
async fn worker_handle_shutdown_waits_for_the_run_and_flushes_the_queue() {
    const OPS: u32 = 6;
    let queue = Arc::new(FlakyQueue::new());
    let (repo, before) =
        queued_writes(Arc::clone(&queue) as Arc<dyn ReconciliationQueue>, OPS).await;

    let worker = repo.worker::<KvRepoOp>();
    let handle = worker.handle();
    let observer = worker.handle();
    assert!(!observer.is_running());
    let run_ended = AtomicBool::new(false);
    let run = async {
        let report = worker.run().await;
        run_ended.store(true, Ordering::SeqCst);
        report
    };
    let shutdown = async {
        worker_call_started(&repo, before).await;
        assert!(observer.is_running());
        let settles_before = queue.count("complete");
        let report = handle.shutdown().await.expect("shutdown");
        assert!(
            run_ended.load(Ordering::SeqCst),
            "shutdown returned before the run did"
        );
        assert!(!observer.is_running());
        (report, settles_before)
    };
    let (run_report, (report, settles_before)) = tokio::join!(run, shutdown);

    assert_eq!(
        settles_before, 0,
        "nothing had finished when shutdown began"
    );
    assert_eq!(report, run_report, "the handle reports what the run did");
    assert_eq!(report, observer.report());
    assert_eq!(
        (
            report.applied,
            report.retried,
            report.dead_lettered,
            report.fenced
        ),
        (CONCURRENCY as u64, 0, 0, 0),
        "{report:?}"
    );
    let applied = keys_put_after(&repo, before);
    assert_eq!(applied.len(), CONCURRENCY, "{applied:?}");
    assert_eq!(
        repo.new_store().snapshot().len(),
        CONCURRENCY,
        "the writes the report counts landed"
    );

    // The queue saw the settles of the ops in flight, and then (last) one
    // flush.
    let calls = queue.calls();
    assert_eq!(queue.count("complete"), CONCURRENCY, "{calls:?}");
    assert_eq!(queue.count("flush"), 1, "{calls:?}");
    assert_eq!(calls.last(), Some(&"flush"), "{calls:?}");
    let stats = repo.queue().stats().await.unwrap();
    assert_eq!(
        (stats.new.pending, stats.new.in_flight),
        (u64::from(OPS) - CONCURRENCY as u64, 0),
        "the rest is still queued: {stats:?}"
    );

    // A stopped worker can still be drained.
    let rest = repo.worker::<KvRepoOp>().drain().await;
    assert_eq!(rest.applied, u64::from(OPS) - CONCURRENCY as u64);
    assert_eq!(repo.new_store().snapshot(), repo.old_store().snapshot());
}

#[tokio::test]
async fn undecodable_entries_are_dead_lettered_with_the_reason_and_the_worker_goes_on() {
    let queue: Arc<dyn ReconciliationQueue> = Arc::new(InMemoryQueue::new());
    let repo = wrapper(Arc::clone(&queue));
    let entry = |key: &str, method: &str, version: u32, payload: &[u8]| NewEntry {
        namespace: "kv".into(),
        target: Side::New,
        key: Key::from(key),
        method: method.into(),
        version,
        payload: payload.to_vec(),
        reason: "test".into(),
        uncertain: false,
    };
    queue
        .append(entry("1", "put", 1, b"{not json"))
        .await
        .unwrap();
    queue
        .append(entry(
            "2",
            "frobnicate",
            1,
            br#"{"method":"frobnicate","args":{}}"#,
        ))
        .await
        .unwrap();
    queue
        .append(entry(
            "3",
            "put",
            99,
            br#"{"method":"put","args":{"key":3,"value":3}}"#,
        ))
        .await
        .unwrap();
    queue
        .append(entry(
            "4",
            "put",
            1,
            br#"{"method":"put","args":{"key":4,"value":4}}"#,
        ))
        .await
        .unwrap();

    let report = repo.worker::<KvRepoOp>().drain().await;
    assert_eq!((report.applied, report.dead_lettered), (1, 3), "{report:?}");
    assert_eq!(
        repo.new_store().snapshot().get(&4),
        Some(&4),
        "the good entry was applied"
    );
    let errors: Vec<(String, String)> = queue
        .dead_letters()
        .await
        .unwrap()
        .into_iter()
        .map(|letter| (letter.key.to_string(), letter.error))
        .collect();
    assert!(
        errors[0].1.contains("cannot decode entry of method `put`"),
        "{errors:?}"
    );
    assert!(
        errors[1].1.contains("unknown variant `frobnicate`"),
        "{errors:?}"
    );
    assert!(
        errors[2]
            .1
            .contains("encoded with version 99, but this build decodes version 1"),
        "{errors:?}"
    );
}

/// A failed attempt is tried again once its retry delay ends, not at the
/// next poll of an idle worker: the worker claims again after the failure
/// and learns when the entry is due. (By the paused test clock.)
#[tokio::test(start_paused = true)]
async fn a_retry_is_attempted_when_its_delay_ends_not_at_the_next_poll() {
    const POLL: Duration = Duration::from_secs(30);
    const DELAY: Duration = Duration::from_millis(100);
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .poll_interval(POLL)
        .retry(
            RetryPolicy::default()
                .max_attempts(5)
                .min_delay(DELAY)
                .max_delay(DELAY),
        )
        .build()
        .unwrap();
    repo.new_store().fail_always(Fault::Error);
    repo.put(1, 10).await.unwrap();
    assert_eq!(repo.queue().stats().await.unwrap().new.pending, 1);
    repo.new_store().heal();
    // The worker's first two attempts fail (the second retry comes after
    // the worker has used up any wake-up the write left it).
    repo.new_store().script([Fault::Error, Fault::Error]);

    let started = tokio::time::Instant::now();
    let report = repo.worker::<KvRepoOp>().drain().await;
    let took = started.elapsed();
    assert_eq!((report.applied, report.retried), (1, 2), "{report:?}");
    assert!(
        took < POLL / 2,
        "the retry waited {took:?}: for the poll interval ({POLL:?}), not its delay ({DELAY:?})"
    );
    assert_eq!(repo.new_store().snapshot(), repo.old_store().snapshot());
}
