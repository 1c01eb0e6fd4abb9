//! `#[dw::dual_write]` end to end with the runtime renamed to `dw`.

use dualwrite_renamed_crate_test::{Counters, CountersOp, MemoryCounters};
use dw::{DualWrite, InMemoryQueue, Operation, Stage};

#[tokio::test]
async fn the_renamed_runtime_dual_writes_and_reconciles() {
    let repo = DualWrite::builder(MemoryCounters::default(), MemoryCounters::default())
        .queue(InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .build()
        .unwrap();
    repo.set("hits", 1).await.unwrap();
    assert_eq!(repo.new_store().values(), repo.old_store().values());

    repo.new_store().set_down(true);
    repo.set("hits", 2).await.unwrap();
    repo.set("misses", 7).await.unwrap();
    assert_eq!(repo.queue().stats().await.unwrap().new.pending, 2);
    assert_eq!(repo.get("hits").await.unwrap(), Some(2));

    repo.new_store().set_down(false);
    let report = repo.worker::<CountersOp>().drain().await;
    assert_eq!(report.applied, 2);
    assert_eq!(repo.new_store().values(), repo.old_store().values());
    assert_eq!(CountersOp::NAMESPACE, "counters");
}
