//! A caller that goes away (its future dropped, e.g. a client disconnect)
//! after the authoritative write succeeded does not cost the follower the
//! write: it is queued and reconciled, in the key's order.
//!
//! Checked to bite: with `WriteGuard::follower_plan` no longer recording the
//! owed operation, the test fails at "the cancelled write was queued".

use std::time::Duration;

use dualwrite_runtime::{DualWrite, InMemoryQueue, Stage};
use dualwrite_suite::{Call, Fault, FaultyStore, KvRepo, KvRepoOp};

#[tokio::test(start_paused = true)]
async fn a_write_cancelled_while_the_follower_is_slow_still_reaches_it() {
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .follower_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    // The follower's first call hangs past the caller's patience, and is
    // dropped with the caller before it applies anything.
    repo.new_store()
        .script([Fault::Slow(Duration::from_secs(10))]);

    let cancelled = tokio::time::timeout(Duration::from_millis(50), repo.put(7, 1)).await;
    assert!(cancelled.is_err(), "the caller gave up");
    assert_eq!(
        repo.old_store().snapshot().get(&7),
        Some(&1),
        "the authoritative write happened"
    );

    // Let the queueing task run, then reconcile.
    tokio::task::yield_now().await;
    assert_eq!(
        repo.queue().stats().await.unwrap().new.pending,
        1,
        "the cancelled write was queued"
    );
    repo.worker::<KvRepoOp>().drain().await;
    assert_eq!(
        repo.new_store().snapshot().get(&7),
        Some(&1),
        "the follower got the cancelled write"
    );

    // A later write of the key waits behind the queued one.
    repo.new_store()
        .script([Fault::Slow(Duration::from_secs(10))]);
    let _ = tokio::time::timeout(Duration::from_millis(50), repo.put(8, 1)).await;
    repo.put(8, 2).await.unwrap();
    repo.worker::<KvRepoOp>().drain().await;
    let puts: Vec<_> = repo
        .new_store()
        .calls()
        .into_iter()
        .filter(|call| matches!(call, Call::Put(8, _)))
        .collect();
    assert_eq!(
        puts.last(),
        Some(&Call::Put(8, 2)),
        "the key's order holds: {puts:?}"
    );
    assert_eq!(repo.new_store().snapshot(), repo.old_store().snapshot());
}
