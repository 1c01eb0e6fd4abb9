//! Every stage sends reads and writes where DESIGN.md's table says, and a
//! stage change takes effect on the next call.

use dualwrite_runtime::{DualWrite, InMemoryQueue, Stage};
use dualwrite_suite::{Call, FaultyStore, KvRepo, KvRepoOp};

fn wrapper(stage: Stage) -> DualWrite<FaultyStore, FaultyStore> {
    DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::new())
        .stage(stage)
        .build()
        .unwrap()
}

#[tokio::test]
async fn each_stage_routes_writes_and_reads_as_the_table_says() {
    // (stage, stores written in order, store read)
    let table = [
        (Stage::Off, vec!["old"], "old"),
        (Stage::DualWrite, vec!["old", "new"], "old"),
        (Stage::Shadow, vec!["old", "new"], "old"),
        (Stage::Live, vec!["new", "old"], "new"),
        (Stage::RampDown, vec!["new", "old"], "new"),
        (Stage::Complete, vec!["new"], "new"),
    ];
    for (stage, written, read) in table {
        let repo = wrapper(stage);
        repo.put(1, 10).await.unwrap();
        let old_calls = repo.old_store().calls();
        let new_calls = repo.new_store().calls();
        assert_eq!(
            old_calls.contains(&Call::Put(1, 10)),
            written.contains(&"old"),
            "{stage}: old store write"
        );
        assert_eq!(
            new_calls.contains(&Call::Put(1, 10)),
            written.contains(&"new"),
            "{stage}: new store write"
        );

        let value = repo.get(1).await.unwrap();
        assert_eq!(
            value,
            Some(10),
            "{stage}: the serving store holds the write"
        );
        let (serving, other) = match read {
            "old" => (repo.old_store(), repo.new_store()),
            _ => (repo.new_store(), repo.old_store()),
        };
        assert!(
            serving.calls().contains(&Call::Get(1)),
            "{stage}: read served by {read}"
        );
        assert_eq!(
            other.calls().contains(&Call::Get(1)),
            stage.compared().is_some(),
            "{stage}: the other store is read only to compare (Shadow, Live)"
        );
    }
}

#[tokio::test]
async fn the_authoritative_store_is_written_before_the_follower() {
    for stage in [Stage::DualWrite, Stage::Live] {
        let repo = wrapper(stage);
        let (first, second) = match stage.authoritative() {
            dualwrite_runtime::Side::Old => (repo.old_store(), repo.new_store()),
            dualwrite_runtime::Side::New => (repo.new_store(), repo.old_store()),
        };
        repo.put(5, 50).await.unwrap();
        assert_eq!(first.snapshot().get(&5), Some(&50), "{stage}");
        assert_eq!(second.snapshot().get(&5), Some(&50), "{stage}");
        assert!(repo.queue().stats().await.unwrap().new.is_empty());
    }
}

#[tokio::test]
async fn a_stage_change_applies_to_the_next_call() {
    let repo = wrapper(Stage::DualWrite);
    repo.put(1, 1).await.unwrap();
    assert_eq!(repo.new_store().call_count(), 1);
    repo.stage().set(Stage::Off).await.unwrap();
    repo.put(1, 2).await.unwrap();
    assert_eq!(
        repo.new_store().call_count(),
        1,
        "Off writes only the old store"
    );
    repo.stage().set(Stage::DualWrite).await.unwrap();
    repo.stage().set(Stage::Live).await.unwrap();
    repo.put(1, 3).await.unwrap();
    assert_eq!(repo.new_store().snapshot().get(&1), Some(&3));
    assert_eq!(repo.get(1).await.unwrap(), Some(3));
    assert_eq!(
        repo.new_store().calls().last(),
        Some(&Call::Get(1)),
        "Live reads the new store"
    );
}

#[tokio::test]
async fn clones_share_the_stage() {
    let repo = wrapper(Stage::DualWrite);
    let clone = repo.clone();
    repo.stage().set(Stage::Shadow).await.unwrap();
    assert_eq!(clone.stage().get(), Stage::Shadow);
    let _worker = clone.worker::<KvRepoOp>();
}
