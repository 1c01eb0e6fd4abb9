//! A journaled write returns once the authoritative store has taken it; its
//! written-ahead entry is confirmed after that, still under the key's order
//! guard and the stage barrier (`Builder::confirm_before_return` waits for
//! the confirmation instead). Each property on both the in-memory queue and
//! the SQLite file, through a queue whose confirmations the test can hold
//! or refuse, in each stage with a follower (`DualWrite`, `Shadow`, `Live`,
//! `RampDown`: where it is the old store, the entries are for it):
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
//! write reaches the authoritative store while the first is unconfirmed).

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

/// The stages with a follower: those whose writes are journaled.
const STAGES: [Stage; 4] = [
    Stage::DualWrite,
    Stage::Shadow,
    Stage::Live,
    Stage::RampDown,
];

/// One queue and one stage.
struct Cell {
    queue: Arc<dyn Held>,
    stage: Stage,
}

/// Runs `case` on each cell: each queue (in memory, and a SQLite file) in
/// each stage with a follower.
async fn on_each_cell<F, Fut>(name: &str, case: F)
where
    F: Fn(Cell) -> Fut,
    Fut: Future<Output = ()>,
{
    for stage in STAGES {
        eprintln!("cell: in-memory queue, {stage:?}");
        let queue = Arc::new(FlakyQueue::over(InMemoryQueue::new()));
        case(Cell { queue, stage }).await;
        eprintln!("cell: SQLite queue, {stage:?}");
        let dir = std::env::temp_dir().join(format!(
            "dualwrite-confirm-{name}-{stage:?}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sqlite = SqliteQueue::open(dir.join("queue.db")).await.unwrap();
        case(Cell {
            queue: Arc::new(FlakyQueue::over(sqlite)),
            stage,
        })
        .await;
        let _ = std::fs::remove_dir_all(&dir);
    }
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

impl Cell {
    fn repo(&self, confirm_before_return: bool) -> Repo {
        DualWrite::builder(FaultyStore::new(), FaultyStore::new())
            .shared_queue(Arc::clone(&self.queue).queue())
            .stage(self.stage)
            .delivery(Delivery::Journaled)
            .orphan_after(Duration::from_millis(200))
            .confirm_before_return(confirm_before_return)
            .build()
            .unwrap()
    }

    fn store(repo: &Repo, side: Side) -> &FaultyStore {
        match side {
            Side::Old => repo.old_store(),
            Side::New => repo.new_store(),
        }
    }

    /// The store whose result the caller gets in this cell's stage.
    fn authoritative<'r>(&self, repo: &'r Repo) -> &'r FaultyStore {
        Self::store(repo, self.stage.authoritative())
    }

    /// The store the queued entries are for.
    fn follower<'r>(&self, repo: &'r Repo) -> &'r FaultyStore {
        Self::store(repo, self.follower_side())
    }

    fn follower_side(&self) -> Side {
        self.stage.follower().expect("a stage with a follower")
    }

    /// The states of `key`'s entries for the follower, oldest first.
    async fn states(&self, key: u32) -> Vec<EntryState> {
        self.queue
            .key_entries(
                KvRepoOp::NAMESPACE,
                self.follower_side(),
                &Key::from_display(&key),
            )
            .await
            .unwrap()
            .into_iter()
            .map(|entry| entry.state)
            .collect()
    }

    /// Waits until `key`'s entries are in `expected`.
    async fn until_states(&self, key: u32, expected: &[EntryState]) {
        let waited = tokio::time::timeout(PATIENCE, async {
            while self.states(key).await != expected {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "key {key}'s entries: {:?}, expected {expected:?}",
            self.states(key).await
        );
    }
}

#[tokio::test]
async fn a_journaled_write_returns_before_its_confirmation_which_still_happens() {
    on_each_cell("returns", |cell| async move {
        let repo = cell.repo(false);
        cell.queue.hold_commits();
        let put = tokio::time::timeout(PATIENCE, repo.put(1, 10)).await;
        assert!(
            matches!(put, Ok(Ok(()))),
            "the write returned with its confirmation held: {put:?}"
        );
        assert_eq!(cell.authoritative(&repo).snapshot().get(&1), Some(&10));
        assert_eq!(cell.states(1).await, [EntryState::Prepared]);
        cell.queue.release_commits(1);
        cell.until_states(1, &[EntryState::Pending]).await;
        repo.worker::<KvRepoOp>().drain().await;
        assert_eq!(cell.follower(&repo).snapshot().get(&1), Some(&10));
    })
    .await;
}

#[tokio::test]
async fn the_next_write_of_the_key_waits_for_the_confirmation_owed() {
    on_each_cell("next", |cell| async move {
        let repo = Arc::new(cell.repo(false));
        cell.queue.hold_commits();
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
            cell.authoritative(&repo).snapshot().get(&1),
            Some(&10),
            "the second write has not reached the authoritative store"
        );
        cell.queue.release_commits(3);
        tokio::time::timeout(PATIENCE, second)
            .await
            .expect("the second write finishes once the first is confirmed")
            .unwrap()
            .unwrap();
        cell.until_states(1, &[EntryState::Pending, EntryState::Pending])
            .await;
        cell.until_states(2, &[EntryState::Pending]).await;
        repo.worker::<KvRepoOp>().drain().await;
        assert_eq!(
            cell.follower(&repo).snapshot(),
            cell.authoritative(&repo).snapshot(),
            "the stores agree, key 1 at its second write"
        );
        assert_eq!(cell.follower(&repo).snapshot().get(&1), Some(&11));
    })
    .await;
}

#[tokio::test]
async fn shutdown_waits_for_every_confirmation_owed() {
    on_each_cell("shutdown", |cell| async move {
        let repo = Arc::new(cell.repo(false));
        cell.queue.hold_commits();
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
        cell.queue.release_commits(2);
        tokio::time::timeout(PATIENCE, shutdown)
            .await
            .expect("shutdown finishes once both are confirmed")
            .unwrap()
            .unwrap();
        assert_eq!(cell.states(1).await, [EntryState::Pending]);
        assert_eq!(cell.states(2).await, [EntryState::Pending]);
    })
    .await;
}

#[tokio::test]
async fn a_refused_confirmation_is_replayed_as_an_orphan_so_the_write_is_not_lost() {
    on_each_cell("refused", |cell| async move {
        let repo = cell.repo(false);
        cell.queue.refuse_commits(1);
        repo.put(1, 10).await.unwrap();
        repo.shutdown().await.unwrap();
        assert_eq!(
            cell.states(1).await,
            [EntryState::Prepared],
            "the confirmation was refused"
        );
        // Past `orphan_after`, the worker presumes the writer gone.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let report = repo.worker::<KvRepoOp>().drain().await;
        assert_eq!(report.applied, 1, "{report:?}");
        assert_eq!(cell.follower(&repo).snapshot().get(&1), Some(&10));
        assert_eq!(cell.authoritative(&repo).snapshot().get(&1), Some(&10));
    })
    .await;
}

#[tokio::test]
async fn confirm_before_return_makes_the_write_wait_for_its_confirmation() {
    on_each_cell("before", |cell| async move {
        let repo = Arc::new(cell.repo(true));
        cell.queue.hold_commits();
        let put = tokio::spawn({
            let repo = Arc::clone(&repo);
            async move { repo.put(1, 10).await }
        });
        tokio::time::sleep(WHILE_HELD).await;
        assert!(!put.is_finished(), "the write waits for its confirmation");
        cell.queue.release_commits(1);
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
