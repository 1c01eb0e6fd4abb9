//! I1 holds for withdrawals too: a journaled write whose authoritative call
//! failed never reaches either store later, even when withdrawing its
//! written-ahead entry fails at first (the queue refuses the abort). The
//! write path retries the withdrawal while it holds the key; if the queue
//! still refuses, the entry is marked withdrawn in the process, and the
//! worker removes it instead of replaying it as an orphan.
//!
//! Checked to bite: on the commit before this test, a failed abort left
//! the entry to be replayed to both stores after `orphan_after`, and
//! `every_abort_failing_still_keeps_the_write_out_of_both_stores` failed
//! with the write in both stores.

mod flaky_queue;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use dualwrite_runtime::{Delivery, DualWrite, ReconciliationQueue, Stage};
use dualwrite_suite::{Fault, FaultyStore, KvRepo, KvRepoOp};
use flaky_queue::FlakyQueue;

fn repo(queue: Arc<FlakyQueue>) -> DualWrite<FaultyStore, FaultyStore> {
    DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .shared_queue(queue)
        .stage(Stage::DualWrite)
        .delivery(Delivery::Journaled)
        .orphan_after(Duration::from_millis(100))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_failed_abort_is_retried_while_the_key_is_held() {
    let queue = Arc::new(FlakyQueue::new());
    let repo = repo(Arc::clone(&queue));
    queue.failing_aborts.store(2, Ordering::SeqCst);
    repo.old_store().script([Fault::Error]);
    assert!(
        repo.put(1, 10).await.is_err(),
        "the authoritative write failed"
    );
    assert_eq!(
        queue.abort_calls.load(Ordering::SeqCst),
        3,
        "two refusals, then the withdrawal"
    );
    let stats = queue.stats().await.unwrap();
    assert!(stats.new.is_empty(), "nothing left queued: {stats:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    repo.worker::<KvRepoOp>().drain().await;
    assert_eq!(repo.old_store().snapshot().get(&1), None);
    assert_eq!(repo.new_store().snapshot().get(&1), None);
}

#[tokio::test(start_paused = true)]
async fn every_abort_failing_still_keeps_the_write_out_of_both_stores() {
    let queue = Arc::new(FlakyQueue::new());
    let repo = repo(Arc::clone(&queue));
    // Every abort in the request fails, and the background retries too,
    // until the worker finds the orphan.
    queue.failing_aborts.store(usize::MAX, Ordering::SeqCst);
    repo.old_store().script([Fault::Error]);
    assert!(repo.put(1, 10).await.is_err());
    assert_eq!(
        repo.queue().stats().await.unwrap().new.pending,
        1,
        "the entry could not be withdrawn"
    );
    // The queue heals once the entry has expired into an orphan.
    tokio::time::sleep(Duration::from_millis(200)).await;
    queue.failing_aborts.store(0, Ordering::SeqCst);
    let report = repo.worker::<KvRepoOp>().drain().await;
    assert_eq!(
        report.applied, 0,
        "the withdrawn write is never replayed: {report:?}"
    );
    assert_eq!(
        repo.old_store().snapshot().get(&1),
        None,
        "I1: not in the authoritative store"
    );
    assert_eq!(
        repo.new_store().snapshot().get(&1),
        None,
        "I1: not in the follower"
    );
    assert!(
        repo.queue().stats().await.unwrap().new.is_empty(),
        "and it is gone from the queue"
    );
    // A later write of the key goes through normally.
    repo.put(1, 11).await.unwrap();
    repo.worker::<KvRepoOp>().drain().await;
    assert_eq!(repo.new_store().snapshot().get(&1), Some(&11));
}
