//! A stage move decides under the write barrier and does its I/O outside
//! it: writes keep flowing while the move reads the queue's counts, and an
//! observer that writes through the wrapper when the stage changes does not
//! deadlock.
//!
//! Checked to bite: with `StageHandle::set` holding the barrier while it
//! read the queue's stats (as it did before), the write in
//! `writes_flow_while_a_move_checks_the_queue` waits for the held stats
//! call and the test fails at its timeout.

mod flaky_queue;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dualwrite_runtime::observe::Observer;
use dualwrite_runtime::{DualWrite, Stage, StageChange};
use dualwrite_suite::{FaultyStore, KvRepo};
use flaky_queue::FlakyQueue;

type Repo = DualWrite<FaultyStore, FaultyStore>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_flow_while_a_move_checks_the_queue() {
    let queue = Arc::new(FlakyQueue::new());
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .shared_queue(Arc::clone(&queue) as _)
        .stage(Stage::Shadow)
        .build()
        .unwrap();
    queue.hold_stats.store(true, Ordering::SeqCst);
    let mover = {
        let repo = repo.clone();
        tokio::spawn(async move { repo.stage().set(Stage::Live).await })
    };
    // Wait until the move is inside its queue check.
    while queue.stats_calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let write = tokio::time::timeout(Duration::from_secs(10), repo.put(1, 1)).await;
    assert!(write.is_ok(), "a write waited for the move's queue check");
    write.unwrap().unwrap();
    queue.hold_stats.store(false, Ordering::SeqCst);
    queue.stats_gate.add_permits(1000);
    mover.await.unwrap().unwrap();
    assert_eq!(repo.stage().get(), Stage::Live);
}

/// Writes through the wrapper from inside `on_stage_change`.
struct WritingObserver {
    repo: Arc<OnceLock<Repo>>,
    runtime: tokio::runtime::Handle,
    done: Arc<Mutex<Vec<bool>>>,
}

impl Observer for WritingObserver {
    fn on_stage_change(&self, change: &StageChange) {
        let Some(repo) = self.repo.get().cloned() else {
            return;
        };
        let runtime = self.runtime.clone();
        let value = change.to as u64;
        let (sent, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = sent.send(runtime.block_on(repo.put(7, value)).is_ok());
        });
        let finished = received
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or(false);
        self.done.lock().unwrap().push(finished);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_that_writes_through_the_wrapper_does_not_deadlock() {
    let slot = Arc::new(OnceLock::new());
    let done = Arc::new(Mutex::new(Vec::new()));
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(dualwrite_runtime::InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .observer(WritingObserver {
            repo: Arc::clone(&slot),
            runtime: tokio::runtime::Handle::current(),
            done: Arc::clone(&done),
        })
        .build()
        .unwrap();
    let _ = slot.set(repo.clone());
    repo.stage().set(Stage::Shadow).await.unwrap();
    repo.stage().force(Stage::DualWrite, "back").await.unwrap();
    assert_eq!(
        *done.lock().unwrap(),
        [true, true],
        "each observer write finished"
    );
    assert_eq!(
        repo.old_store().snapshot().get(&7),
        repo.new_store().snapshot().get(&7)
    );
}
