//! `#[dual_write]` on a trait written with `#[async_trait]` (the attribute
//! below ours, so we see the `async fn`s before `async_trait` rewrites
//! them): writes reach both stores, a write the follower misses is queued
//! and reconciled by the worker, reads are served by the stage's store. The
//! trait is object safe, as `async_trait` traits usually are, and the
//! wrapper is usable as `dyn Notes`.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dualwrite_runtime::{dual_write, DualWrite, InMemoryQueue, RetryPolicy, Stage};
use support::{Table, TableError, SERVING};

/// A notes repository, in the `#[async_trait]` form.
#[dual_write]
#[async_trait]
pub trait Notes: Send + Sync {
    /// Creates or replaces a note.
    #[dual_write(write, key = id)]
    async fn put_note(&self, id: u64, text: &str) -> Result<(), TableError>;

    /// Creates or replaces many notes; ordered with the other keyless writes.
    #[dual_write(write)]
    async fn put_notes(&self, notes: &[(u64, String)]) -> Result<(), TableError>;

    /// Deletes a note.
    #[dual_write(write, key = id)]
    async fn delete_note(&self, id: u64) -> Result<bool, TableError>;

    /// Reads a note.
    #[dual_write(read, key = id)]
    async fn get_note(&self, id: u64) -> Result<Option<String>, TableError>;
}

#[derive(Debug, Default)]
struct Store(Table);

#[async_trait]
impl Notes for Store {
    async fn put_note(&self, id: u64, text: &str) -> Result<(), TableError> {
        tokio::task::yield_now().await;
        self.0.put(id, text)
    }

    async fn put_notes(&self, notes: &[(u64, String)]) -> Result<(), TableError> {
        for (id, text) in notes {
            self.0.put(*id, text)?;
        }
        Ok(())
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
    repo.put_notes(&[(2, "two".to_owned()), (3, "three".to_owned())])
        .await
        .unwrap();
    assert!(repo.delete_note(3).await.unwrap());

    let expected = [(1, "one".to_owned()), (2, "two".to_owned())].into();
    assert_eq!(repo.old_store().0.rows(), expected);
    assert_eq!(repo.new_store().0.rows(), expected);
    assert!(repo.queue().stats().await.unwrap().new.is_empty());
}

#[tokio::test]
async fn the_wrapper_is_usable_as_a_trait_object() {
    let repo = wrapper(Stage::DualWrite);
    let notes: Arc<dyn Notes> = Arc::new(repo.clone());
    notes.put_note(1, "one").await.unwrap();
    assert_eq!(notes.get_note(1).await.unwrap().as_deref(), Some("one"));
    assert_eq!(repo.new_store().0.rows(), repo.old_store().0.rows());
}

#[tokio::test]
async fn a_write_the_follower_misses_is_queued_and_reconciled() {
    let repo = wrapper(Stage::DualWrite);
    repo.new_store().0.go_down();

    repo.put_note(1, "one").await.unwrap();
    repo.put_notes(&[(2, "two".to_owned())]).await.unwrap();
    repo.put_note(1, "uno").await.unwrap();
    assert!(repo.delete_note(2).await.unwrap());

    assert!(repo.new_store().0.rows().is_empty());
    let stats = repo.queue().stats().await.unwrap();
    assert_eq!(stats.new.pending, 4, "{stats:?}");

    repo.new_store().0.come_back();
    let report = repo.worker::<NotesOp>().drain().await;
    assert_eq!(report.applied, 4, "{report:?}");
    assert_eq!(repo.new_store().0.rows(), [(1, "uno".to_owned())].into());
    assert_eq!(repo.new_store().0.rows(), repo.old_store().0.rows());
}

#[tokio::test]
async fn in_live_the_old_store_is_the_follower() {
    let repo = wrapper(Stage::Live);
    repo.old_store().0.go_down();
    repo.put_note(7, "seven").await.unwrap();
    assert_eq!(repo.queue().stats().await.unwrap().old.pending, 1);
    repo.old_store().0.come_back();
    repo.worker::<NotesOp>().drain().await;
    assert_eq!(repo.old_store().0.rows(), repo.new_store().0.rows());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_and_the_worker_run_in_spawned_tasks() {
    let repo = wrapper(Stage::DualWrite);
    let worker = repo.worker::<NotesOp>();
    let stop = worker.stopper();
    let worker = tokio::spawn(async move { worker.run().await });

    repo.new_store().0.go_down();
    let writers: Vec<_> = (0..8u64)
        .map(|id| {
            let repo = repo.clone();
            tokio::spawn(async move { repo.put_note(id % 3, &format!("v{id}")).await })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    repo.new_store().0.come_back();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while repo.new_store().0.rows() != repo.old_store().0.rows() {
        assert!(tokio::time::Instant::now() < deadline, "never reconciled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.stop();
    worker.await.unwrap();
}
