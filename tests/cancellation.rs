//! A caller that goes away (its future dropped, e.g. a client disconnect)
//! at any await point of a write leaves the stores convergent: what the
//! authoritative store may have taken is queued for the follower (and, if
//! it is unknown whether the authoritative store took it, applied there
//! again before any later write of the key), in the key's order.
//!
//! Checked to bite: with `WriteGuard::follower_plan` no longer recording the
//! owed operation, the first test fails at "the cancelled write was queued";
//! on the commit before the write path tracked the authoritative call,
//! `a_write_cancelled_during_the_authoritative_call_still_reaches_the_follower`
//! failed with the follower missing the write.

use std::time::Duration;

use dualwrite_runtime::{Delivery, DualWrite, InMemoryQueue, Stage};
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

#[tokio::test(start_paused = true)]
async fn a_write_cancelled_during_the_authoritative_call_still_reaches_the_follower() {
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .build()
        .unwrap();
    // The database commits, then the call hangs until the caller gives up.
    repo.old_store()
        .script([Fault::ApplyThenStall(Duration::from_secs(10))]);
    let cancelled = tokio::time::timeout(Duration::from_millis(50), repo.put(3, 30)).await;
    assert!(cancelled.is_err(), "the caller gave up");
    assert_eq!(
        repo.old_store().snapshot().get(&3),
        Some(&30),
        "the database took it"
    );
    assert_eq!(
        repo.queue().stats().await.unwrap().new.pending,
        1,
        "queued for the follower"
    );
    repo.worker::<KvRepoOp>().drain().await;
    assert_eq!(repo.new_store().snapshot(), repo.old_store().snapshot());
    assert_eq!(
        repo.old_store().calls(),
        [Call::Put(3, 30), Call::Put(3, 30)],
        "uncertain: applied to the authoritative store again (idempotent), once"
    );
    assert_eq!(repo.new_store().calls(), [Call::Put(3, 30)]);
}

#[tokio::test(start_paused = true)]
async fn a_write_after_an_uncertain_one_waits_until_it_is_settled() {
    dualwrite_suite::silence_injected_panics();
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .build()
        .unwrap();
    let worker = repo.worker::<KvRepoOp>();
    let handle = worker.handle();
    let running = async { worker.run().await };
    let writes = async {
        // The authoritative store panics: nobody knows whether it took put(4, 1).
        repo.old_store().script([Fault::Panic]);
        let first =
            futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(repo.put(4, 1))).await;
        assert!(first.is_err(), "the panic reached the caller");
        // The next write of the key must not reach the authoritative store
        // before the uncertain one is applied there again.
        repo.put(4, 2).await.unwrap();
        handle.stop();
    };
    tokio::join!(running, writes);
    repo.worker::<KvRepoOp>().drain().await;
    assert_eq!(
        repo.old_store().calls(),
        [Call::Put(4, 1), Call::Put(4, 1), Call::Put(4, 2)],
        "the uncertain write is settled before the next one"
    );
    assert_eq!(repo.new_store().calls(), [Call::Put(4, 1), Call::Put(4, 2)]);
    assert_eq!(repo.new_store().snapshot(), repo.old_store().snapshot());
}

/// Cancels one write at every moment of its life (1 ms apart, while each
/// store call takes 5 ms), for both deliveries, with a worker running and
/// without one (a later write then waits for the lease, and goes ahead),
/// and checks that the stores converge and apply the key's writes in one
/// order.
#[tokio::test(start_paused = true)]
async fn a_write_cancelled_at_any_await_point_leaves_the_stores_convergent() {
    for (delivery, with_worker) in [
        (Delivery::Sync, true),
        (Delivery::Journaled, true),
        (Delivery::Sync, false),
        (Delivery::Journaled, false),
    ] {
        for cancel_at in 0..=14u64 {
            let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
                .queue(InMemoryQueue::new())
                .stage(Stage::DualWrite)
                .delivery(delivery)
                .orphan_after(Duration::from_millis(500))
                .build()
                .unwrap();
            let slow = Fault::Slow(Duration::from_millis(5));
            repo.old_store().script([slow, slow]);
            repo.new_store().script([slow, slow, slow]);
            let worker = repo.worker::<KvRepoOp>();
            let handle = worker.handle();
            let running = async {
                if with_worker {
                    worker.run().await;
                }
            };
            let writes = async {
                let _ =
                    tokio::time::timeout(Duration::from_millis(cancel_at), repo.put(9, 1)).await;
                repo.put(9, 2).await.unwrap();
                handle.stop();
            };
            tokio::join!(running, writes);
            tokio::time::sleep(Duration::from_secs(1)).await;
            repo.worker::<KvRepoOp>().drain().await;
            let context = format!(
                "{delivery:?}, worker running: {with_worker}, cancelled after {cancel_at} ms"
            );
            assert_eq!(
                repo.old_store().snapshot(),
                repo.new_store().snapshot(),
                "{context}"
            );
            assert_eq!(repo.old_store().snapshot().get(&9), Some(&2), "{context}");
            let order = |calls: Vec<Call>| {
                let mut order: Vec<Call> = Vec::new();
                for call in calls {
                    if order.last() != Some(&call) {
                        order.push(call);
                    }
                }
                order
            };
            assert_eq!(
                order(repo.old_store().calls()),
                order(repo.new_store().calls()),
                "{context}: one order in both stores"
            );
            assert!(
                repo.queue().stats().await.unwrap().new.is_empty(),
                "{context}"
            );
        }
    }
}
