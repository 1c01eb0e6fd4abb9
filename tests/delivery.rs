//! Delivery modes: `Journaled` never makes the caller wait for the follower;
//! the circuit breaker stops `Sync` writes from waiting on a follower that
//! keeps failing, and lets them call it again once it recovers.

use std::time::Duration;

use dualwrite_runtime::{CircuitBreaker, Delivery, DualWrite, InMemoryQueue, RetryPolicy, Stage};
use dualwrite_suite::{Fault, FaultyStore, KvRepo, KvRepoOp};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn journaled_writes_never_wait_for_the_follower() {
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .delivery(Delivery::Journaled)
        .build()
        .unwrap();
    repo.new_store()
        .fail_always(Fault::Slow(Duration::from_secs(10)));

    let started = Instant::now();
    for key in 0..5 {
        repo.put(key, 1).await.unwrap();
    }
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "the writes took no (virtual) time"
    );
    assert_eq!(
        repo.new_store().call_count(),
        0,
        "the follower is not called in the request"
    );
    assert_eq!(repo.queue().stats().await.unwrap().new.pending, 5);

    repo.new_store().heal();
    repo.worker::<KvRepoOp>().drain().await;
    assert_eq!(repo.new_store().snapshot(), repo.old_store().snapshot());
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_breaker_queues_without_calling_and_a_probe_closes_it() {
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .follower_timeout(Duration::from_millis(100))
        .circuit_breaker(CircuitBreaker::new(3, Duration::from_secs(2)))
        .retry(
            RetryPolicy::default()
                .min_delay(Duration::from_millis(1))
                .max_delay(Duration::from_millis(5)),
        )
        .build()
        .unwrap();
    repo.new_store()
        .fail_always(Fault::Slow(Duration::from_secs(60)));

    // Three timeouts open the breaker (different keys, so none queues behind another).
    for key in 0..3 {
        repo.put(key, 1).await.unwrap();
    }
    assert_eq!(repo.new_store().call_count(), 3);
    let started = Instant::now();
    for key in 10..20 {
        repo.put(key, 1).await.unwrap();
    }
    assert_eq!(
        repo.new_store().call_count(),
        3,
        "an open breaker does not call the follower"
    );
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "nor wait for its timeout"
    );

    // The follower recovers; after the cooldown one write probes it.
    repo.new_store().heal();
    tokio::time::advance(Duration::from_secs(2)).await;
    repo.put(30, 1).await.unwrap();
    assert_eq!(
        repo.new_store().call_count(),
        4,
        "the probe called the follower"
    );
    repo.put(31, 1).await.unwrap();
    assert_eq!(
        repo.new_store().call_count(),
        5,
        "a successful probe closed the breaker"
    );

    repo.worker::<KvRepoOp>().drain().await;
    assert_eq!(repo.new_store().snapshot(), repo.old_store().snapshot());
}

#[tokio::test(start_paused = true)]
async fn a_journaled_write_that_fails_after_being_presumed_orphaned_is_not_replayed() {
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .delivery(Delivery::Journaled)
        .orphan_after(Duration::from_millis(100))
        .build()
        .unwrap();
    // The authoritative write outlasts `orphan_after`, then fails: the
    // worker claims the written-ahead operation as an orphan meanwhile.
    repo.old_store()
        .script([Fault::ErrorAfter(Duration::from_millis(500))]);
    let worker = repo.worker::<KvRepoOp>();
    let drain_later = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        worker.drain().await
    };
    let (written, report) = tokio::join!(repo.put(9, 42), drain_later);

    assert!(written.is_err(), "the caller was told the write failed");
    assert_eq!(report.applied, 0, "{report:?}");
    assert_eq!(
        repo.old_store().snapshot().get(&9),
        None,
        "I1: the failed write is nowhere"
    );
    assert_eq!(
        repo.new_store().snapshot().get(&9),
        None,
        "I1: the failed write is nowhere"
    );
    assert!(repo.queue().stats().await.unwrap().new.is_empty());
}
