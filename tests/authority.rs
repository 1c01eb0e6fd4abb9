//! I1 authority: a write returns `Err` exactly when the authoritative store's
//! write did; then the follower is untouched and nothing is queued.

use dualwrite_runtime::{DualWrite, InMemoryQueue, Side, Stage};
use dualwrite_suite::{Fault, FaultyStore, KvRepo, StoreError};

#[tokio::test]
async fn an_authoritative_failure_is_returned_and_the_follower_is_never_called() {
    for stage in Stage::ALL {
        let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
            .queue(InMemoryQueue::new())
            .stage(stage)
            .build()
            .unwrap();
        let (authoritative, follower) = match stage.authoritative() {
            Side::Old => (repo.old_store(), repo.new_store()),
            Side::New => (repo.new_store(), repo.old_store()),
        };
        authoritative.fail_always(Fault::Error);

        let put = repo.put(1, 10).await;
        let delete = repo.delete(1).await;

        assert_eq!(
            put,
            Err(StoreError("store unavailable".into())),
            "{stage}: put returns the store's error"
        );
        assert_eq!(
            delete,
            Err(StoreError("store unavailable".into())),
            "{stage}: delete returns the store's error"
        );
        assert_eq!(
            follower.call_count(),
            0,
            "{stage}: the follower is not called"
        );
        let stats = repo.queue().stats().await.unwrap();
        assert!(
            stats.old.is_empty() && stats.new.is_empty(),
            "{stage}: nothing is queued: {stats:?}"
        );
    }
}

#[tokio::test]
async fn a_follower_failure_never_reaches_the_caller() {
    dualwrite_suite::silence_injected_panics();
    for stage in [
        Stage::DualWrite,
        Stage::Shadow,
        Stage::Live,
        Stage::RampDown,
    ] {
        for fault in [Fault::Error, Fault::Panic] {
            let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
                .queue(InMemoryQueue::new())
                .stage(stage)
                .build()
                .unwrap();
            let follower = match stage.authoritative() {
                Side::Old => repo.new_store(),
                Side::New => repo.old_store(),
            };
            follower.fail_always(fault);
            assert_eq!(
                repo.put(1, 10).await,
                Ok(()),
                "{stage} {fault:?}: the authoritative result is returned"
            );
            let stats = repo.queue().stats().await.unwrap();
            assert_eq!(
                stats.target(stage.follower().unwrap()).pending,
                1,
                "{stage} {fault:?}: the op is queued"
            );
        }
    }
}
