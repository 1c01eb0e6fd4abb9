//! The "done when" test of taking real repository traits unchanged: a forum
//! repository of 50 methods in the styles services write (see
//! `forum_support`), implemented by two stores of different designs, passes
//! one behaviour suite against each store directly, through the wrapper at
//! every stage in both directions of migration, and after its writes were
//! queued while the new store was down and replayed from a reopened SQLite
//! queue by a fresh wrapper.

mod forum_support;

use std::sync::{Arc, Mutex};

use dualwrite_runtime::observe::{ComparisonReport, Observer};
use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::{DualWrite, InMemoryQueue, Side, Stage};
use forum_support::documents::Documents;
use forum_support::maps::Maps;
use forum_support::{suite, Forum, ForumOp};

/// The methods of the comparisons that disagreed.
#[derive(Default)]
struct Mismatches(Mutex<Vec<String>>);

impl Observer for Mismatches {
    fn on_mismatch(&self, report: &ComparisonReport) {
        let shown = format!("{} {:?}", report.method, report.outcome);
        self.0.lock().unwrap().push(shown);
    }
}

impl Mismatches {
    fn none(&self) {
        assert_eq!(*self.0.lock().unwrap(), Vec::<String>::new());
    }
}

#[tokio::test]
async fn the_suite_passes_against_each_store() {
    let maps = Maps::default();
    suite::writes(&maps).await;
    suite::check(&maps).await;
    let documents = Documents::default();
    suite::writes(&documents).await;
    suite::check(&documents).await;
}

/// The suite through a wrapper of `old` and `new` at `stage`; then each
/// store the stage writes holds the forum the suite expects.
async fn through_the_wrapper<Old, New>(stage: Stage, old: Old, new: New)
where
    Old: Forum<PostId = u64> + Clone + 'static,
    New: Forum<PostId = u64> + Clone + 'static,
{
    let mismatches = Arc::new(Mismatches::default());
    let repo = DualWrite::builder(old.clone(), new.clone())
        .queue(InMemoryQueue::new())
        .stage(stage)
        .shared_observer(mismatches.clone())
        .build()
        .unwrap();
    suite::writes(&repo).await;
    suite::check(&repo).await;
    mismatches.none();
    let stats = repo.queue().stats().await.unwrap();
    assert_eq!((stats.old.pending, stats.new.pending), (0, 0), "{stage:?}");
    let written = [stage.authoritative()].into_iter().chain(stage.follower());
    for side in written {
        match side {
            Side::Old => suite::check(&old).await,
            Side::New => suite::check(&new).await,
        }
    }
    // The store-numbered reports carry the authoritative store's ids in
    // both stores (the two serials start far apart).
    if stage.follower().is_some() {
        assert_eq!(
            old.list_reports().await.unwrap(),
            new.list_reports().await.unwrap(),
            "{stage:?}"
        );
    }
}

#[tokio::test]
async fn the_suite_passes_through_the_wrapper_at_every_stage() {
    for stage in Stage::ALL {
        through_the_wrapper(stage, Maps::default(), Documents::default()).await;
        through_the_wrapper(stage, Documents::default(), Maps::default()).await;
    }
}

#[tokio::test]
async fn writes_queued_while_the_new_store_is_down_are_replayed_after_a_restart() {
    let dir = std::env::temp_dir().join(format!("dualwrite-forum-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (old, new) = (Maps::default(), Documents::default());
    let mismatches = Arc::new(Mismatches::default());
    let open = |stage: Stage| {
        let (old, new, dir, mismatches) =
            (old.clone(), new.clone(), dir.clone(), mismatches.clone());
        async move {
            let queue = SqliteQueue::open(dir.join("queue.db")).await.unwrap();
            DualWrite::builder(old, new)
                .queue(queue)
                .stage(stage)
                .shared_observer(mismatches)
                .build()
                .unwrap()
        }
    };
    new.down.store(true, std::sync::atomic::Ordering::SeqCst);
    {
        let repo = open(Stage::DualWrite).await;
        suite::writes(&repo).await;
        let pending = repo.queue().stats().await.unwrap().new.pending;
        assert_eq!(pending, suite::SUCCESSFUL_WRITES);
    }
    suite::check(&old).await;

    new.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let repo = open(Stage::DualWrite).await;
    let report = repo.worker::<ForumOp<u64>>().drain().await;
    assert_eq!(
        (report.applied, report.dead_lettered),
        (suite::SUCCESSFUL_WRITES, 0),
        "{report:?}"
    );
    suite::check(&new).await;
    assert_eq!(
        old.list_reports().await.unwrap(),
        new.list_reports().await.unwrap()
    );
    suite::check(&open(Stage::Shadow).await).await;
    suite::check(&open(Stage::Live).await).await;
    mismatches.none();
}
