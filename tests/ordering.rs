//! I4 per-key order: two concurrent callers on one key reach both stores in
//! the same order.
//!
//! How this test was checked to bite: with the order guard taken out of
//! `WriteGuard::begin` (each write locking a fresh, unique key instead of its
//! own), `concurrent_writers_reach_both_stores_in_the_same_order_per_key`
//! failed on each of three runs with "key 0: the stores received the writes
//! in different orders".

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dualwrite_runtime::{DualWrite, InMemoryQueue, Stage};
use dualwrite_suite::{Call, FaultyStore, KvRepo, KvRepoOp};

const WRITERS: u64 = 16;
const WRITES_PER_WRITER: u64 = 40;
const KEYS: u32 = 3;

/// The values each key was set to, in the order the store received them.
fn puts_per_key(calls: &[Call]) -> BTreeMap<u32, Vec<u64>> {
    let mut per_key: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for call in calls {
        if let Call::Put(key, value) = call {
            per_key.entry(*key).or_default().push(*value);
        }
    }
    per_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_reach_both_stores_in_the_same_order_per_key() {
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .follower_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // Random delays in both stores make writers interleave between the
    // authoritative write and the follower write.
    repo.old_store().jitter(Duration::from_micros(300));
    repo.new_store().jitter(Duration::from_micros(300));
    let repo = Arc::new(repo);

    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let repo = Arc::clone(&repo);
        tasks.push(tokio::spawn(async move {
            for write in 0..WRITES_PER_WRITER {
                let key = u32::try_from((writer + write) % u64::from(KEYS)).unwrap();
                repo.put(key, writer * 1_000 + write).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    repo.worker::<KvRepoOp>().drain().await;

    let old_order = puts_per_key(&repo.old_store().calls());
    let new_order = puts_per_key(&repo.new_store().calls());
    for key in 0..KEYS {
        assert_eq!(
            old_order[&key], new_order[&key],
            "key {key}: the stores received the writes in different orders"
        );
    }
    assert_eq!(repo.old_store().snapshot(), repo.new_store().snapshot());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_behind_queued_work_wait_their_turn() {
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .build()
        .unwrap();
    // The first follower write fails and is queued; the follower is healthy
    // for the next ones, which must still queue behind it, not overtake it.
    repo.new_store().script([dualwrite_suite::Fault::Error]);
    repo.put(1, 1).await.unwrap();
    repo.put(1, 2).await.unwrap();
    repo.put(1, 3).await.unwrap();
    repo.put(2, 20).await.unwrap();
    assert_eq!(
        repo.new_store().calls(),
        vec![Call::Put(1, 1), Call::Put(2, 20)],
        "key 1's later writes are queued, key 2 is unaffected"
    );
    repo.worker::<KvRepoOp>().drain().await;
    let new_order = puts_per_key(&repo.new_store().calls());
    assert_eq!(
        new_order[&1],
        vec![1, 1, 2, 3],
        "the failed write is retried first, then the queued ones in order"
    );
    assert_eq!(repo.new_store().snapshot(), repo.old_store().snapshot());
}
