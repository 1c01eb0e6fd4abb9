//! I4 under slow replays: an attempt that outlives the lease it was claimed
//! with (an orphan's replay waits for its key and calls two stores) renews
//! its lease, so a second worker never takes the entry over and applies it
//! again behind its back; and an attempt whose lease is lost is dropped
//! before it can land.
//!
//! Checked to bite: without renewals (the `fence` in the worker resolving
//! only at the lease's end), the second worker claims the entry while the
//! first still replays it, and the new store receives the write twice.

use std::sync::Arc;
use std::time::Duration;

use dualwrite_runtime::queue::NewEntry;
use dualwrite_runtime::{DualWrite, InMemoryQueue, Key, ReconciliationQueue, Side, Stage};
use dualwrite_suite::{Call, Fault, FaultyStore, KvRepoOp};

#[tokio::test(start_paused = true)]
async fn an_orphan_replay_longer_than_the_lease_is_applied_once() {
    let queue: Arc<dyn ReconciliationQueue> = Arc::new(InMemoryQueue::new());
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .shared_queue(Arc::clone(&queue))
        .stage(Stage::DualWrite)
        .follower_timeout(Duration::from_millis(40))
        .lease(Duration::from_millis(60))
        .build()
        .unwrap();
    // An uncertain write: the worker applies it to the old store, then the
    // new one, 30 ms each, 60 ms and more in all: the lease's length.
    let op = KvRepoOp::Put { key: 5, value: 50 };
    queue
        .append(NewEntry {
            namespace: "kv".into(),
            target: Side::New,
            key: Key::from("5"),
            method: "put".into(),
            version: 1,
            payload: serde_json::to_vec(&op).unwrap(),
            reason: "test".into(),
            uncertain: true,
        })
        .await
        .unwrap();
    let slow = Fault::Slow(Duration::from_millis(30));
    repo.old_store().script([slow]);
    repo.new_store().script([slow]);
    let (first, second) = (repo.worker::<KvRepoOp>(), repo.worker::<KvRepoOp>());
    let (one, two) = tokio::join!(first.drain(), async {
        // The second worker starts claiming once the first holds the entry.
        tokio::time::sleep(Duration::from_millis(5)).await;
        second.drain().await
    });
    assert_eq!(one.applied + two.applied, 1, "{one:?} {two:?}");
    assert_eq!(
        repo.old_store().calls(),
        [Call::Put(5, 50)],
        "applied once to the old store"
    );
    assert_eq!(
        repo.new_store().calls(),
        [Call::Put(5, 50)],
        "and once to the new store"
    );
}
