//! `repo.spawn_worker()`: the operation enum found from the trait, a worker
//! on a thread of its own that replays what the follower missed, and a
//! handle that stops it, waits for it and reports.

use std::time::Duration;

use dualwrite_runtime::{DualWrite, InMemoryQueue, RetryPolicy, Stage};
use dualwrite_suite::{Fault, FaultyStore, KvRepo};

type Repo = DualWrite<FaultyStore, FaultyStore>;

fn repo() -> Repo {
    DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .poll_interval(Duration::from_millis(10))
        .retry(RetryPolicy::default().min_delay(Duration::from_millis(5)))
        .build()
        .expect("valid settings")
}

/// Writes `keys` while the new store refuses them, so that each is queued.
async fn missed_writes(repo: &Repo, keys: std::ops::Range<u32>) {
    repo.new_store().fail_always(Fault::Error);
    for key in keys {
        repo.put(key, u64::from(key) * 10)
            .await
            .expect("the old store takes it");
    }
    repo.new_store().heal();
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_worker_replays_missed_writes_and_shuts_down_with_a_report() {
    let repo = repo();
    let worker = repo.spawn_worker();
    assert!(worker.is_running(), "running from the moment it is spawned");

    missed_writes(&repo, 0..20).await;
    until("the worker replayed every missed write", || {
        repo.new_store().snapshot() == repo.old_store().snapshot()
    })
    .await;
    let report = worker.shutdown().await.expect("the queue flushes");
    assert_eq!(report.applied, 20, "{report:?}");
    assert!(repo.queue().stats().await.expect("stats").is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_spawned_worker_runs_beside_a_current_thread_runtime() {
    let repo = repo();
    let worker = repo.spawn_worker();
    missed_writes(&repo, 1..2).await;
    until("the worker replayed the write", || {
        repo.new_store().snapshot().get(&1) == Some(&10)
    })
    .await;
    let report = worker.shutdown().await.expect("the queue flushes");
    assert_eq!(report.applied, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_stops_the_spawned_worker() {
    let repo = repo();
    let worker = repo.spawn_worker();
    drop(worker);
    // Give the stopped worker time to have replayed, had it kept running.
    tokio::time::sleep(Duration::from_millis(100)).await;
    missed_writes(&repo, 7..8).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        repo.new_store().snapshot().get(&7),
        None,
        "no worker replayed it"
    );
    assert_eq!(repo.queue().stats().await.expect("stats").new.pending, 1);
}
