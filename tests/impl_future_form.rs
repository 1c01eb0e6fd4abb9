//! `#[dual_write]` on a trait whose methods are `fn .. -> impl Future<Output
//! = _> + Send`: writes reach both stores, a write the follower misses is
//! queued and reconciled by the worker, reads are served by the stage's
//! store. Because the trait promises `Send` futures, generic code can spawn
//! the wrapper's calls.

mod support;

use std::future::Future;
use std::time::Duration;

use dualwrite_runtime::{dual_write, DualWrite, InMemoryQueue, RetryPolicy, Stage};
use support::{Table, TableError, SERVING};

/// A notes repository, in the `impl Future + Send` form.
#[dual_write(namespace = "notes", op = NoteWrite)]
pub trait Notes: Send + Sync + 'static {
    /// Creates or replaces a note.
    #[dual_write(write, key = id)]
    fn put_note(
        &self,
        id: u64,
        text: String,
    ) -> impl Future<Output = Result<(), TableError>> + Send;

    /// Deletes a note.
    #[dual_write(write, key = id)]
    fn delete_note(&self, id: u64) -> impl Future<Output = Result<bool, TableError>> + Send;

    /// Reads a note.
    #[dual_write(read, key = id)]
    fn get_note(&self, id: u64) -> impl Future<Output = Result<Option<String>, TableError>> + Send;
}

#[derive(Debug, Default)]
struct Store(Table);

impl Notes for Store {
    // Written out as `impl Future`, as the trait says.
    #[allow(clippy::manual_async_fn)]
    fn put_note(
        &self,
        id: u64,
        text: String,
    ) -> impl Future<Output = Result<(), TableError>> + Send {
        async move {
            tokio::task::yield_now().await;
            self.0.put(id, &text)
        }
    }

    // An `async fn` also implements an `impl Future + Send` method.
    async fn delete_note(&self, id: u64) -> Result<bool, TableError> {
        tokio::task::yield_now().await;
        self.0.delete(id)
    }

    fn get_note(&self, id: u64) -> impl Future<Output = Result<Option<String>, TableError>> + Send {
        std::future::ready(self.0.get(id))
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

/// Generic over any `Notes`: compiles only because the trait's futures are
/// `Send`, and the wrapper's are too.
fn spawn_put<N: Notes + Clone>(
    notes: &N,
    id: u64,
    text: &str,
) -> tokio::task::JoinHandle<Result<(), TableError>> {
    let notes = notes.clone();
    let text = text.to_owned();
    tokio::spawn(async move { notes.put_note(id, text).await })
}

#[tokio::test]
async fn writes_reach_both_stores() {
    let repo = wrapper(Stage::DualWrite);
    repo.put_note(1, "one".into()).await.unwrap();
    repo.put_note(2, "two".into()).await.unwrap();
    assert!(repo.delete_note(1).await.unwrap());
    let expected = [(2, "two".to_owned())].into();
    assert_eq!(repo.old_store().0.rows(), expected);
    assert_eq!(repo.new_store().0.rows(), expected);
}

#[tokio::test]
async fn a_write_the_follower_misses_is_queued_and_reconciled() {
    let repo = wrapper(Stage::DualWrite);
    repo.new_store().0.go_down();
    repo.put_note(1, "one".into()).await.unwrap();
    repo.put_note(2, "two".into()).await.unwrap();
    assert!(repo.delete_note(1).await.unwrap());
    let stats = repo.queue().stats().await.unwrap();
    assert_eq!(stats.new.pending, 3, "{stats:?}");

    repo.new_store().0.come_back();
    let report = repo.worker::<NoteWrite>().drain().await;
    assert_eq!(report.applied, 3, "{report:?}");
    assert_eq!(repo.new_store().0.rows(), [(2, "two".to_owned())].into());
    assert_eq!(repo.new_store().0.rows(), repo.old_store().0.rows());
}

#[tokio::test]
async fn queue_entries_use_the_namespace_option() {
    use dualwrite_runtime::Operation;
    assert_eq!(NoteWrite::NAMESPACE, "notes");
    assert_eq!(NoteWrite::VERSION, 1);
    let op = NoteWrite::PutNote {
        id: 1,
        text: "one".into(),
    };
    assert_eq!(op.method(), "put_note");
    assert_eq!(
        serde_json::to_value(&op).unwrap(),
        serde_json::json!({"method": "put_note", "args": {"id": 1, "text": "one"}})
    );
    // Argument values stay out of debug output (and so out of logs).
    assert_eq!(format!("{op:?}"), "NoteWrite::put_note { .. }");
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
async fn generic_code_spawns_the_wrapper_s_calls() {
    let repo = wrapper(Stage::Live);
    let worker = repo.worker::<NoteWrite>();
    let stop = worker.stopper();
    let worker = tokio::spawn(async move { worker.run().await });

    repo.old_store().0.go_down();
    let writes: Vec<_> = (0..6).map(|id| spawn_put(&repo, id, "x")).collect();
    for write in writes {
        write.await.unwrap().unwrap();
    }
    assert_eq!(repo.new_store().0.rows().len(), 6);
    repo.old_store().0.come_back();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while repo.old_store().0.rows() != repo.new_store().0.rows() {
        assert!(tokio::time::Instant::now() < deadline, "never reconciled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.stop();
    assert_eq!(worker.await.unwrap().applied, 6);
}
