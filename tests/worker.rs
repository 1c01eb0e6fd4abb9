//! The reconciliation worker: panics and timeouts in the follower, graceful
//! shutdown that loses nothing, and entries it cannot decode (I7).

use std::sync::Arc;
use std::time::Duration;

use dualwrite_runtime::queue::NewEntry;
use dualwrite_runtime::{
    DualWrite, InMemoryQueue, Key, ReconciliationQueue, RetryPolicy, Side, Stage,
};
use dualwrite_suite::{Fault, FaultyStore, KvRepo, KvRepoOp};

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

#[tokio::test]
async fn graceful_shutdown_finishes_what_is_in_flight_and_loses_nothing() {
    let repo = wrapper(Arc::new(InMemoryQueue::new()));
    repo.new_store().fail_always(Fault::Error);
    for key in 0..20 {
        repo.put(key, 1).await.unwrap();
    }
    repo.new_store().heal();
    repo.new_store().script(std::iter::repeat_n(
        Fault::Slow(Duration::from_millis(20)),
        20,
    ));

    let worker = repo.worker::<KvRepoOp>();
    let stop = worker.stopper();
    let run = worker.run();
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        stop.stop();
    };
    let (report, ()) = tokio::join!(run, stopper);

    let stats = repo.queue().stats().await.unwrap();
    assert_eq!(stats.new.in_flight, 0, "nothing is left claimed: {stats:?}");
    assert!(report.applied > 0, "the claimed ops finished: {report:?}");
    assert_eq!(
        report.applied + stats.new.pending,
        20,
        "every op is either applied or still queued"
    );

    // Another worker (after a restart) picks up the rest.
    repo.worker::<KvRepoOp>().drain().await;
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
