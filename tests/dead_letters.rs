//! I5 isolation: an op the follower rejects permanently is dead-lettered
//! after the retry budget, with its error; other keys keep flowing; the
//! operator can retry or drop it (I7).

use std::time::Duration;

use dualwrite_runtime::{DualWrite, InMemoryQueue, RetryPolicy, Side, Stage};
use dualwrite_suite::{FaultyStore, KvRepo, KvRepoOp};

const POISONED: u32 = 7;

fn wrapper() -> DualWrite<FaultyStore, FaultyStore> {
    DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .retry(
            RetryPolicy::default()
                .max_attempts(3)
                .min_delay(Duration::from_millis(1))
                .max_delay(Duration::from_millis(5)),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_rejected_op_is_dead_lettered_after_the_budget_and_other_keys_flow() {
    let repo = wrapper();
    repo.new_store().reject_key(POISONED);
    for key in 1..=10 {
        repo.put(key, u64::from(key) * 10).await.unwrap();
    }
    let report = repo.worker::<KvRepoOp>().drain().await;

    assert_eq!(report.dead_lettered, 1, "{report:?}");
    assert_eq!(
        report.retried, 2,
        "two retries before the third, final attempt: {report:?}"
    );
    let dead = repo.queue().dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(letter.key.as_str(), "7");
    assert_eq!(letter.method, "put");
    assert_eq!(letter.target, Side::New);
    assert_eq!(
        letter.attempts, 3,
        "the direct call is not counted; the worker made three attempts"
    );
    assert_eq!(letter.error, "key 7 is rejected by this store");

    let mut expected = repo.old_store().snapshot();
    expected.remove(&POISONED);
    assert_eq!(
        repo.new_store().snapshot(),
        expected,
        "every other key reached the new store"
    );
}

#[tokio::test]
async fn later_writes_of_a_dead_key_wait_behind_it_until_it_is_retried() {
    let repo = wrapper();
    repo.new_store().reject_key(POISONED);
    repo.put(POISONED, 1).await.unwrap();
    let worker = repo.worker::<KvRepoOp>();
    worker.drain().await;

    // The key is blocked: a newer write is queued behind the dead one rather
    // than overtaking it, even though the store would accept it now.
    repo.new_store().accept_all_keys();
    repo.put(POISONED, 2).await.unwrap();
    worker.drain().await;
    let stats = repo.queue().stats().await.unwrap();
    assert_eq!(
        (stats.new.dead, stats.new.pending, stats.new.blocked_keys),
        (1, 1, 1),
        "{stats:?}"
    );
    assert_eq!(repo.new_store().snapshot().get(&POISONED), None);

    let dead = repo.queue().dead_letters().await.unwrap();
    repo.queue().retry_dead(dead[0].id).await.unwrap();
    let report = worker.drain().await;
    assert_eq!(
        report.applied, 2,
        "the retried op, then the one behind it: {report:?}"
    );
    assert_eq!(repo.new_store().snapshot(), repo.old_store().snapshot());
    assert!(repo.queue().stats().await.unwrap().new.is_empty());
}

#[tokio::test]
async fn dropping_a_dead_letter_unblocks_its_key() {
    let repo = wrapper();
    repo.new_store().reject_key(POISONED);
    repo.put(POISONED, 1).await.unwrap();
    let worker = repo.worker::<KvRepoOp>();
    worker.drain().await;
    repo.new_store().accept_all_keys();
    repo.put(POISONED, 2).await.unwrap();

    let dead = repo.queue().dead_letters().await.unwrap();
    repo.queue().drop_dead(dead[0].id).await.unwrap();
    assert!(
        repo.queue().drop_dead(dead[0].id).await.is_err(),
        "a dropped letter is gone"
    );
    worker.drain().await;
    assert_eq!(repo.new_store().snapshot().get(&POISONED), Some(&2));
}

#[tokio::test]
async fn under_the_skip_policy_later_writes_of_a_dead_key_go_ahead() {
    use dualwrite_runtime::queue::PoisonPolicy;
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::with_poison_policy(PoisonPolicy::Skip))
        .stage(Stage::DualWrite)
        .retry(
            RetryPolicy::default()
                .max_attempts(2)
                .min_delay(Duration::from_millis(1))
                .max_delay(Duration::from_millis(5)),
        )
        .build()
        .unwrap();
    repo.new_store().reject_key(POISONED);
    repo.put(POISONED, 1).await.unwrap();
    let worker = repo.worker::<KvRepoOp>();
    worker.drain().await;
    repo.new_store().accept_all_keys();

    repo.put(POISONED, 2).await.unwrap();
    worker.drain().await;
    assert_eq!(
        repo.new_store().snapshot().get(&POISONED),
        Some(&2),
        "the newer write was not held back"
    );
    let stats = repo.queue().stats().await.unwrap();
    assert_eq!(
        (stats.new.dead, stats.new.blocked_keys),
        (1, 0),
        "{stats:?}"
    );
}
