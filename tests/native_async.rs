//! `#[dual_write]` on a trait written with native `async fn`: writes reach
//! both stores, a write the follower misses is queued and reconciled by the
//! worker, reads are served by the store the stage names.

mod support;

use std::time::Duration;

use dualwrite_runtime::{dual_write, DualWrite, InMemoryQueue, RetryPolicy, Stage};
use support::{Table, TableError, SERVING};

/// A notes repository, in the native `async fn` form.
#[dual_write]
trait Notes: Send + Sync {
    /// Creates or replaces a note.
    #[dual_write(write, key = id)]
    async fn put_note(&self, id: u64, text: &str) -> Result<(), TableError>;

    /// Deletes a note (a write by its name, ordered by `id`).
    #[dual_write(key = id)]
    async fn delete_note(&self, id: u64) -> Result<bool, TableError>;

    /// Reads a note (a read by its name).
    async fn get_note(&self, id: u64) -> Result<Option<String>, TableError>;
}

#[derive(Debug, Default)]
struct Store(Table);

impl Notes for Store {
    async fn put_note(&self, id: u64, text: &str) -> Result<(), TableError> {
        // A real await point, so the futures are really suspended.
        tokio::task::yield_now().await;
        self.0.put(id, text)
    }

    async fn delete_note(&self, id: u64) -> Result<bool, TableError> {
        tokio::task::yield_now().await;
        self.0.delete(id)
    }

    async fn get_note(&self, id: u64) -> Result<Option<String>, TableError> {
        self.0.get(id)
    }
}

fn wrapper(stage: Stage) -> DualWrite<Store, Store> {
    DualWrite::builder(Store::default(), Store::default())
        .queue(InMemoryQueue::new())
        .stage(stage)
        .retry(
            RetryPolicy::default()
                .min_delay(Duration::from_millis(1))
                .max_delay(Duration::from_millis(5)),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn writes_reach_both_stores() {
    let repo = wrapper(Stage::DualWrite);
    repo.put_note(1, "one").await.unwrap();
    repo.put_note(2, "two").await.unwrap();
    assert!(repo.delete_note(1).await.unwrap());

    let expected = [(2, "two".to_owned())].into();
    assert_eq!(repo.old_store().0.rows(), expected);
    assert_eq!(repo.new_store().0.rows(), expected);
    assert!(repo.queue().stats().await.unwrap().new.is_empty());
}

#[tokio::test]
async fn a_write_the_follower_misses_is_queued_and_reconciled() {
    let repo = wrapper(Stage::DualWrite);
    repo.new_store().0.go_down();

    repo.put_note(1, "one").await.unwrap();
    repo.put_note(1, "uno").await.unwrap();
    repo.put_note(2, "two").await.unwrap();
    assert!(repo.delete_note(2).await.unwrap());

    assert_eq!(repo.old_store().0.rows(), [(1, "uno".to_owned())].into());
    assert!(repo.new_store().0.rows().is_empty());
    let stats = repo.queue().stats().await.unwrap();
    assert_eq!(stats.new.pending, 4, "{stats:?}");
    assert!(stats.old.is_empty());

    repo.new_store().0.come_back();
    let report = repo.worker::<NotesOp>().drain().await;
    assert_eq!(report.applied, 4, "{report:?}");
    assert_eq!(repo.new_store().0.rows(), repo.old_store().0.rows());
    assert!(repo.queue().stats().await.unwrap().new.is_empty());
}

#[tokio::test]
async fn in_live_the_old_store_is_the_follower() {
    let repo = wrapper(Stage::Live);
    repo.old_store().0.go_down();
    repo.put_note(7, "seven").await.unwrap();
    assert_eq!(repo.new_store().0.rows(), [(7, "seven".to_owned())].into());
    assert_eq!(repo.queue().stats().await.unwrap().old.pending, 1);

    repo.old_store().0.come_back();
    repo.worker::<NotesOp>().drain().await;
    assert_eq!(repo.old_store().0.rows(), repo.new_store().0.rows());
}

#[tokio::test]
async fn an_authoritative_failure_is_returned_and_nothing_is_queued() {
    let repo = wrapper(Stage::DualWrite);
    repo.old_store().0.go_down();
    let error = repo.put_note(1, "one").await.unwrap_err();
    assert_eq!(error, TableError("table is down".to_owned()));
    assert_eq!(repo.new_store().0.writes(), 0);
    assert!(repo.queue().stats().await.unwrap().new.is_empty());
}

#[tokio::test]
async fn reads_are_served_by_the_stage_s_store() {
    for (stage, serving) in SERVING {
        let repo = wrapper(stage);
        repo.old_store().0.seed(1, "old");
        repo.new_store().0.seed(1, "new");
        assert_eq!(
            repo.get_note(1).await.unwrap().as_deref(),
            Some(serving),
            "{stage}"
        );
        let (served, other) = match serving {
            "old" => (repo.old_store(), repo.new_store()),
            _ => (repo.new_store(), repo.old_store()),
        };
        // Shadow and Live also read the other store, to compare.
        let compared = if stage.compared().is_some() { 1 } else { 0 };
        assert_eq!(
            (served.0.reads(), other.0.reads()),
            (1, compared),
            "{stage}"
        );
    }
}

#[tokio::test]
async fn the_worker_runs_in_its_own_task() {
    let repo = wrapper(Stage::DualWrite);
    let worker = repo.worker::<NotesOp>();
    let stop = worker.stopper();
    let task = tokio::spawn(async move { worker.run().await });

    repo.new_store().0.go_down();
    repo.put_note(3, "three").await.unwrap();
    repo.new_store().0.come_back();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !repo.new_store().0.rows().contains_key(&3) {
        assert!(tokio::time::Instant::now() < deadline, "never reconciled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.stop();
    let report = task.await.unwrap();
    assert_eq!(report.applied, 1);
}
