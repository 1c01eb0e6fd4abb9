//! Graceful shutdown: after `DualWrite::shutdown` and the worker handle's
//! `shutdown`, every acknowledged journaled write is durable in the SQLite
//! queue file as pending work (none left as a written-ahead entry waiting
//! for a commit that was only requested), and a clean stop leaves no
//! orphans behind: a new process finds each write once, ready, not orphaned.
//!
//! On this machine the test also passes with the flushes taken out of both
//! shutdowns (the last fire-and-forget commits land while the rest of the
//! shutdown runs), so it proves the property, not the flush;
//! `flush_makes_fire_and_forget_commits_durable` in the runtime's
//! `queue_ordering_rules` tests the flush itself.

use std::time::Duration;

use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::{Delivery, DualWrite, Stage};
use dualwrite_suite::{Fault, FaultyStore, KvRepo, KvRepoOp};
use sqlx::Connection;

const CHILD_DIR: &str = "DUALWRITE_SHUTDOWN_DIR";
const WRITES: u32 = 200;

/// The child half: journaled writes, a clean stop, and an immediate exit,
/// as a service's `main` would do after its server stopped.
#[test]
#[ignore = "the child half of a_clean_stop_leaves_every_acknowledged_write_queued_and_no_orphans"]
fn child_writes_then_stops_and_exits() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(std::path::PathBuf::from) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
            .queue(SqliteQueue::open(dir.join("queue.db")).await.unwrap())
            .stage(Stage::DualWrite)
            .delivery(Delivery::Journaled)
            .build()
            .unwrap();
        // The follower is down: everything stays queued.
        repo.new_store().fail_always(Fault::Error);
        let worker = repo.worker::<KvRepoOp>();
        let handle = worker.handle();
        tokio::spawn(async move { worker.run().await });
        let writes: Vec<_> = (0..WRITES)
            .map(|key| {
                let repo = repo.clone();
                tokio::spawn(async move { repo.put(key % 50, u64::from(key)).await })
            })
            .collect();
        for write in writes {
            write.await.unwrap().unwrap();
        }
        repo.shutdown().await.unwrap();
        handle.shutdown().await.unwrap();
    });
    // No destructors, no closing of the file: whatever was not durable is lost.
    std::process::exit(0);
}

#[test]
fn a_clean_stop_leaves_every_acknowledged_write_queued_and_no_orphans() {
    let dir = std::env::temp_dir().join(format!("dualwrite-shutdown-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writes_then_stops_and_exits",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_DIR, &dir)
        .status()
        .unwrap();
    assert!(status.success(), "the child failed: {status}");

    // Read the file as the next process would.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let states = runtime.block_on(async {
        let mut file = sqlx::SqliteConnection::connect(&format!(
            "sqlite://{}",
            dir.join("queue.db").display()
        ))
        .await
        .unwrap();
        let states: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT state, count(*), sum(orphaned) FROM entries GROUP BY state ORDER BY state",
        )
        .fetch_all(&mut file)
        .await
        .unwrap();
        states
    });
    assert_eq!(
        states,
        [("pending".to_owned(), i64::from(WRITES), 0)],
        "every acknowledged write pending, none prepared or orphaned"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn worker_shutdown_finishes_what_it_applies_and_waits_for_the_run() {
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(dualwrite_runtime::InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .delivery(Delivery::Journaled)
        .build()
        .unwrap();
    repo.new_store()
        .script([Fault::Slow(Duration::from_millis(200))]);
    repo.put(1, 1).await.unwrap();
    let worker = repo.worker::<KvRepoOp>();
    let handle = worker.handle();
    let running = tokio::spawn(async move { worker.run().await });
    // Let the worker claim the write and start applying it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(handle.is_running());
    let report = handle.shutdown().await.unwrap();
    assert_eq!(
        report.applied, 1,
        "the write in flight was finished, not abandoned"
    );
    assert!(running.is_finished() || running.await.is_ok());
    assert_eq!(repo.new_store().snapshot().get(&1), Some(&1));
    assert!(repo.queue().stats().await.unwrap().new.is_empty());
}
