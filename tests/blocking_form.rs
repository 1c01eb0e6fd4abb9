//! `#[dual_write]` on a blocking trait, the shape of a Diesel repository:
//! plain `fn`s that do their I/O on the calling thread. Writes reach both
//! stores, a write the follower misses is queued and reconciled by the
//! worker (on a multi-threaded runtime, where it moves the blocking replay
//! off the runtime's other tasks), reads are served by the stage's store.
//! Calls come from `spawn_blocking` and from plain threads, never from an
//! async task directly.

mod support;

use std::thread;
use std::time::Duration;

use dualwrite_runtime::{dual_write, DualWrite, InMemoryQueue, RetryPolicy, Stage};
use support::{Table, TableError, SERVING};

/// A notes repository, in the blocking form.
#[dual_write]
pub trait Notes: Send + Sync + 'static {
    /// Creates or replaces a note.
    #[dual_write(write, key = id)]
    fn put_note(&self, id: u64, text: &str) -> Result<(), TableError>;

    /// Deletes a note.
    fn delete_note(&self, id: u64) -> Result<bool, TableError>;

    /// Reads a note.
    fn get_note(&self, id: u64) -> Result<Option<String>, TableError>;

    /// Counts notes: a default method, which runs against the wrapper and so
    /// reads through it.
    fn count_notes(&self, ids: &[u64]) -> Result<usize, TableError> {
        let mut count = 0;
        for id in ids {
            count += usize::from(self.get_note(*id)?.is_some());
        }
        Ok(count)
    }
}

#[derive(Debug, Default)]
struct Store(Table);

impl Notes for Store {
    fn put_note(&self, id: u64, text: &str) -> Result<(), TableError> {
        // A blocking call, as a database driver would make.
        thread::sleep(Duration::from_micros(100));
        self.0.put(id, text)
    }

    fn delete_note(&self, id: u64) -> Result<bool, TableError> {
        self.0.delete(id)
    }

    fn get_note(&self, id: u64) -> Result<Option<String>, TableError> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_both_stores() {
    let repo = wrapper(Stage::DualWrite);
    let writer = repo.clone();
    tokio::task::spawn_blocking(move || {
        writer.put_note(1, "one")?;
        writer.put_note(2, "two")?;
        writer.delete_note(1)
    })
    .await
    .unwrap()
    .unwrap();
    let expected = [(2, "two".to_owned())].into();
    assert_eq!(repo.old_store().0.rows(), expected);
    assert_eq!(repo.new_store().0.rows(), expected);
    assert!(repo.queue().stats().await.unwrap().new.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_follower_misses_is_queued_and_reconciled() {
    let repo = wrapper(Stage::DualWrite);
    repo.new_store().0.go_down();
    // Plain threads, as a synchronous web framework's workers would be.
    thread::scope(|scope| {
        for id in 0..4u64 {
            let repo = &repo;
            scope.spawn(move || {
                repo.put_note(id, &format!("note {id}")).unwrap();
                repo.put_note(id, &format!("note {id}, edited")).unwrap();
            });
        }
    });
    assert_eq!(repo.old_store().0.rows().len(), 4);
    assert!(repo.new_store().0.rows().is_empty());
    assert_eq!(repo.queue().stats().await.unwrap().new.pending, 8);

    repo.new_store().0.come_back();
    let report = repo.worker::<NotesOp>().drain().await;
    assert_eq!(report.applied, 8, "{report:?}");
    assert_eq!(repo.new_store().0.rows(), repo.old_store().0.rows());
    assert_eq!(
        repo.new_store().0.rows().get(&3).map(String::as_str),
        Some("note 3, edited")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_while_blocking_writers_write() {
    let repo = wrapper(Stage::Live);
    let worker = repo.worker::<NotesOp>();
    let stop = worker.stopper();
    let worker = tokio::spawn(async move { worker.run().await });

    repo.old_store().0.go_down();
    let writer = repo.clone();
    tokio::task::spawn_blocking(move || {
        for id in 0..5 {
            writer.put_note(id, "x").unwrap();
        }
    })
    .await
    .unwrap();
    repo.old_store().0.come_back();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while repo.old_store().0.rows() != repo.new_store().0.rows() {
        assert!(tokio::time::Instant::now() < deadline, "never reconciled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.stop();
    assert_eq!(worker.await.unwrap().applied, 5);
}

#[test]
fn reads_are_served_by_the_stage_s_store() {
    for (stage, serving) in SERVING {
        let repo = wrapper(stage);
        repo.old_store().0.seed(1, "old");
        repo.new_store().0.seed(1, "new");
        assert_eq!(
            repo.get_note(1).unwrap().as_deref(),
            Some(serving),
            "{stage}"
        );
        // The default method's reads go through the wrapper too.
        assert_eq!(repo.count_notes(&[1, 2]).unwrap(), 1, "{stage}");
        let (served, other) = match serving {
            "old" => (repo.old_store(), repo.new_store()),
            _ => (repo.new_store(), repo.old_store()),
        };
        // Shadow and Live also read the other store, to compare.
        let compared = if stage.compared().is_some() { 3 } else { 0 };
        assert_eq!(
            (served.0.reads(), other.0.reads()),
            (3, compared),
            "{stage}"
        );
    }
}
