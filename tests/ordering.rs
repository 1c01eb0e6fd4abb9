//! I4 per-key order: concurrent callers on one key reach the follower in
//! exactly the order the authoritative store accepted their writes.
//!
//! The tests compare whole call sequences ([`FaultyStore::calls`]), not final
//! values or sets: every write the authoritative store accepted reaches the
//! follower once, in the authoritative order, and a write it refused never
//! reaches the follower at all.
//!
//! How this test was checked to bite: with the order guard taken out of
//! `WriteGuard::begin` (each write locking a fresh, unique key instead of its
//! own), `concurrent_writers_reach_both_stores_in_the_same_order_per_key`
//! failed on each of three runs with "key 0: the follower received the
//! writes in another order than the authoritative store accepted them".

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dualwrite_runtime::{DualWrite, InMemoryQueue, Stage};
use dualwrite_suite::{Call, Fault, FaultyStore, KvRepo, KvRepoOp};

const WRITERS: u64 = 16;
const WRITES_PER_WRITER: u64 = 40;
const KEYS: u32 = 3;
/// Every this many calls, the authoritative store refuses the write.
const REFUSE_EVERY: usize = 7;

/// The writes each key received (puts and deletes, reads left out), in the
/// order the store received them.
fn writes_per_key(calls: &[Call]) -> BTreeMap<u32, Vec<Call>> {
    let mut per_key: BTreeMap<u32, Vec<Call>> = BTreeMap::new();
    for call in calls {
        match call {
            Call::Put(key, _) | Call::Delete(key) => {
                per_key.entry(*key).or_default().push(call.clone());
            }
            Call::Get(_) => {}
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
    // The authoritative store refuses every seventh call it receives
    // (`Slow(ZERO)` is a call that succeeds): refused writes must not reach
    // the follower, and must not disturb the order of the others.
    let total = usize::try_from(WRITERS * WRITES_PER_WRITER).unwrap();
    repo.old_store().script((0..total).map(|call| {
        if call % REFUSE_EVERY == REFUSE_EVERY - 1 {
            Fault::Error
        } else {
            Fault::Slow(Duration::ZERO)
        }
    }));
    let repo = Arc::new(repo);
    let refused: Arc<Mutex<BTreeSet<u64>>> = Arc::default();

    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let repo = Arc::clone(&repo);
        let refused = Arc::clone(&refused);
        tasks.push(tokio::spawn(async move {
            for write in 0..WRITES_PER_WRITER {
                let key = u32::try_from((writer + write) % u64::from(KEYS)).unwrap();
                let value = writer * 1_000 + write;
                if repo.put(key, value).await.is_err() {
                    refused.lock().unwrap().insert(value);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let refused = refused.lock().unwrap().clone();
    assert_eq!(
        refused.len(),
        total / REFUSE_EVERY,
        "every scripted refusal reached its caller"
    );
    let report = repo.worker::<KvRepoOp>().drain().await;
    assert_eq!(
        report.applied, 0,
        "the follower never failed, so nothing was queued: {report:?}"
    );

    // What the authoritative store received, per key, in order; and of that,
    // what it accepted (refused writes are the ones whose caller got an
    // error; values are unique per write).
    let received = writes_per_key(&repo.old_store().calls());
    assert_eq!(
        received.values().map(Vec::len).sum::<usize>(),
        total,
        "every write reached the authoritative store once"
    );
    let accepted: BTreeMap<u32, Vec<Call>> = received
        .iter()
        .map(|(key, calls)| {
            let kept = calls
                .iter()
                .filter(|call| !matches!(call, Call::Put(_, value) if refused.contains(value)))
                .cloned()
                .collect();
            (*key, kept)
        })
        .collect();
    let followed = writes_per_key(&repo.new_store().calls());
    assert_eq!(
        followed.keys().collect::<Vec<_>>(),
        accepted.keys().collect::<Vec<_>>()
    );
    for key in 0..KEYS {
        assert_eq!(
            followed[&key], accepted[&key],
            "key {key}: the follower received the writes in another order than the authoritative store accepted them"
        );
        // The authoritative order itself keeps each writer's own writes in
        // the order that writer made them.
        let mut last_of_writer: BTreeMap<u64, u64> = BTreeMap::new();
        for call in &received[&key] {
            let Call::Put(_, value) = call else {
                unreachable!("only puts were made")
            };
            let (writer, write) = (value / 1_000, value % 1_000);
            if let Some(previous) = last_of_writer.insert(writer, write) {
                assert!(
                    previous < write,
                    "key {key}: writer {writer}'s write {write} arrived before its write {previous}"
                );
            }
        }
        // The final value is the last write the authoritative store accepted.
        let Some(Call::Put(_, last)) = accepted[&key].last() else {
            panic!("key {key}: no accepted write")
        };
        assert_eq!(repo.old_store().snapshot().get(&key), Some(last));
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
    repo.new_store().script([Fault::Error]);
    repo.put(1, 1).await.unwrap();
    repo.put(1, 2).await.unwrap();
    repo.delete(1).await.unwrap();
    repo.put(1, 3).await.unwrap();
    repo.put(2, 20).await.unwrap();
    let accepted = vec![
        Call::Put(1, 1),
        Call::Put(1, 2),
        Call::Delete(1),
        Call::Put(1, 3),
        Call::Put(2, 20),
    ];
    assert_eq!(
        repo.old_store().calls(),
        accepted,
        "the authoritative store took every write at once, in order"
    );
    assert_eq!(
        repo.new_store().calls(),
        vec![Call::Put(1, 1), Call::Put(2, 20)],
        "key 1's later writes are queued, key 2 is unaffected"
    );
    let report = repo.worker::<KvRepoOp>().drain().await;
    assert_eq!(
        (report.applied, report.retried, report.dead_lettered),
        (4, 0, 0),
        "{report:?}"
    );
    assert_eq!(
        repo.new_store().calls(),
        vec![
            Call::Put(1, 1),
            Call::Put(2, 20),
            Call::Put(1, 1),
            Call::Put(1, 2),
            Call::Delete(1),
            Call::Put(1, 3),
        ],
        "the failed write is retried first, then the queued ones in order"
    );
    // Per key, leaving out the attempt that failed, the follower received
    // exactly the authoritative sequence.
    let mut followed = writes_per_key(&repo.new_store().calls());
    followed.get_mut(&1).unwrap().remove(0);
    assert_eq!(followed, writes_per_key(&accepted));
    assert_eq!(repo.new_store().snapshot(), repo.old_store().snapshot());
    assert_eq!(
        repo.new_store().snapshot(),
        BTreeMap::from([(1, 3), (2, 20)])
    );
}
