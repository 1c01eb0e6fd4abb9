//! A journaled write returns once the authoritative store has taken it; its
//! written-ahead entry is confirmed after that, still under the key's order
//! guard and the stage barrier (`Builder::confirm_before_return` waits for
//! the confirmation instead). Each property on both the in-memory queue and
//! the SQLite file, through a queue whose confirmations the test can hold
//! or refuse:
//! - the write does not wait for its confirmation, and the confirmation
//!   still happens;
//! - the next write of the key waits for it, so the stores see the key's
//!   writes in one order (I4);
//! - `shutdown` waits for every confirmation owed;
//! - a confirmation the queue refuses leaves an entry the worker replays as
//!   an orphan, so the acknowledged write still reaches the follower (I3);
//! - with `confirm_before_return(true)` the write waits for the queue to
//!   take it.
//!
//! Checked to bite: with `Drop` leaving an owed confirmation undone, the
//! first, second and third tests fail (the entry stays prepared); with the
//! confirmation sent without the key's guard, the second fails (the second
//! write reaches the old store while the first is unconfirmed).

mod flaky_queue;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use dualwrite_runtime::queue::{EntryState, SqliteQueue};
use dualwrite_runtime::{
    Delivery, DualWrite, InMemoryQueue, Key, Operation, ReconciliationQueue, Side, Stage,
};
use dualwrite_suite::{FaultyStore, KvRepo, KvRepoOp};
use flaky_queue::FlakyQueue;

/// Long enough that a write that should wait has not finished.
const WHILE_HELD: Duration = Duration::from_millis(300);
/// Far longer than anything here takes.
const PATIENCE: Duration = Duration::from_secs(10);

type Repo = DualWrite<FaultyStore, FaultyStore>;

/// Runs `case` over each queue: in memory, and a SQLite file.
async fn on_each_queue<F, Fut>(name: &str, case: F)
where
    F: Fn(Arc<dyn Held>) -> Fut,
    Fut: Future<Output = ()>,
{
    case(Arc::new(FlakyQueue::over(InMemoryQueue::new()))).await;
    let dir = std::env::temp_dir().join(format!("dualwrite-confirm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = SqliteQueue::open(dir.join("queue.db")).await.unwrap();
    case(Arc::new(FlakyQueue::over(sqlite))).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A [`FlakyQueue`] over some queue, as the cases use it.
trait Held: ReconciliationQueue {
    fn hold_commits(&self);
    fn release_commits(&self, how_many: usize);
    fn refuse_commits(&self, how_many: usize);
    fn queue(self: Arc<Self>) -> Arc<dyn ReconciliationQueue>;
}

impl<Q: ReconciliationQueue> Held for FlakyQueue<Q> {
    fn hold_commits(&self) {
        self.hold_commits.store(true, Ordering::SeqCst);
    }
    fn release_commits(&self, how_many: usize) {
        self.commit_gate.add_permits(how_many);
    }
    fn refuse_commits(&self, how_many: usize) {
        self.failing_commits.store(how_many, Ordering::SeqCst);
    }
    fn queue(self: Arc<Self>) -> Arc<dyn ReconciliationQueue> {
        self
    }
}

fn repo(queue: &Arc<dyn Held>, confirm_before_return: bool) -> Repo {
    DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .shared_queue(Arc::clone(queue).queue())
        .stage(Stage::DualWrite)
        .delivery(Delivery::Journaled)
        .orphan_after(Duration::from_millis(200))
        .confirm_before_return(confirm_before_return)
        .build()
        .unwrap()
}

/// The states of `key`'s entries for the new store, oldest first.
async fn states(queue: &Arc<dyn Held>, key: u32) -> Vec<EntryState> {
    queue
        .key_entries(KvRepoOp::NAMESPACE, Side::New, &Key::from_display(&key))
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.state)
        .collect()
}

/// Waits until `key`'s entries are in `expected`.
async fn until_states(queue: &Arc<dyn Held>, key: u32, expected: &[EntryState]) {
    let waited = tokio::time::timeout(PATIENCE, async {
        while states(queue, key).await != expected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "key {key}'s entries: {:?}, expected {expected:?}",
        states(queue, key).await
    );
}

#[tokio::test]
async fn a_journaled_write_returns_before_its_confirmation_which_still_happens() {
    on_each_queue("returns", |queue| async move {
        let repo = repo(&queue, false);
        queue.hold_commits();
        let put = tokio::time::timeout(PATIENCE, repo.put(1, 10)).await;
        assert!(
            matches!(put, Ok(Ok(()))),
            "the write returned with its confirmation held: {put:?}"
        );
        assert_eq!(repo.old_store().snapshot().get(&1), Some(&10));
        assert_eq!(states(&queue, 1).await, [EntryState::Prepared]);
        queue.release_commits(1);
        until_states(&queue, 1, &[EntryState::Pending]).await;
        repo.worker::<KvRepoOp>().drain().await;
        assert_eq!(repo.new_store().snapshot().get(&1), Some(&10));
    })
    .await;
}

#[tokio::test]
async fn the_next_write_of_the_key_waits_for_the_confirmation_owed() {
    on_each_queue("next", |queue| async move {
        let repo = Arc::new(repo(&queue, false));
        queue.hold_commits();
        repo.put(1, 10).await.unwrap();
        let second = tokio::spawn({
            let repo = Arc::clone(&repo);
            async move { repo.put(1, 11).await }
        });
        // Another key does not wait.
        tokio::time::timeout(PATIENCE, repo.put(2, 20))
            .await
            .expect("a write of another key is not held")
            .unwrap();
        tokio::time::sleep(WHILE_HELD).await;
        assert!(!second.is_finished(), "the second write of key 1 waited");
        assert_eq!(
            repo.old_store().snapshot().get(&1),
            Some(&10),
            "the second write has not reached the old store"
        );
        queue.release_commits(3);
        tokio::time::timeout(PATIENCE, second)
            .await
            .expect("the second write finishes once the first is confirmed")
            .unwrap()
            .unwrap();
        until_states(&queue, 1, &[EntryState::Pending, EntryState::Pending]).await;
        until_states(&queue, 2, &[EntryState::Pending]).await;
        repo.worker::<KvRepoOp>().drain().await;
        assert_eq!(
            repo.new_store().snapshot(),
            repo.old_store().snapshot(),
            "the stores agree, key 1 at its second write"
        );
        assert_eq!(repo.new_store().snapshot().get(&1), Some(&11));
    })
    .await;
}

#[tokio::test]
async fn shutdown_waits_for_every_confirmation_owed() {
    on_each_queue("shutdown", |queue| async move {
        let repo = Arc::new(repo(&queue, false));
        queue.hold_commits();
        repo.put(1, 10).await.unwrap();
        repo.put(2, 20).await.unwrap();
        let shutdown = tokio::spawn({
            let repo = Arc::clone(&repo);
            async move { repo.shutdown().await }
        });
        tokio::time::sleep(WHILE_HELD).await;
        assert!(
            !shutdown.is_finished(),
            "shutdown waited for the confirmations"
        );
        queue.release_commits(2);
        tokio::time::timeout(PATIENCE, shutdown)
            .await
            .expect("shutdown finishes once both are confirmed")
            .unwrap()
            .unwrap();
        assert_eq!(states(&queue, 1).await, [EntryState::Pending]);
        assert_eq!(states(&queue, 2).await, [EntryState::Pending]);
    })
    .await;
}

#[tokio::test]
async fn a_refused_confirmation_is_replayed_as_an_orphan_so_the_write_is_not_lost() {
    on_each_queue("refused", |queue| async move {
        let repo = repo(&queue, false);
        queue.refuse_commits(1);
        repo.put(1, 10).await.unwrap();
        repo.shutdown().await.unwrap();
        assert_eq!(
            states(&queue, 1).await,
            [EntryState::Prepared],
            "the confirmation was refused"
        );
        // Past `orphan_after`, the worker presumes the writer gone.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let report = repo.worker::<KvRepoOp>().drain().await;
        assert_eq!(report.applied, 1, "{report:?}");
        assert_eq!(repo.new_store().snapshot().get(&1), Some(&10));
        assert_eq!(repo.old_store().snapshot().get(&1), Some(&10));
    })
    .await;
}

#[tokio::test]
async fn confirm_before_return_makes_the_write_wait_for_its_confirmation() {
    on_each_queue("before", |queue| async move {
        let repo = Arc::new(repo(&queue, true));
        queue.hold_commits();
        let put = tokio::spawn({
            let repo = Arc::clone(&repo);
            async move { repo.put(1, 10).await }
        });
        tokio::time::sleep(WHILE_HELD).await;
        assert!(!put.is_finished(), "the write waits for its confirmation");
        queue.release_commits(1);
        tokio::time::timeout(PATIENCE, put)
            .await
            .expect("the write returns once confirmed")
            .unwrap()
            .unwrap();
        let report = repo.worker::<KvRepoOp>().drain().await;
        assert_eq!(
            report.applied, 1,
            "deliverable when the write returned: {report:?}"
        );
    })
    .await;
}
