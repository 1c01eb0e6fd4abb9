//! A runtime shut down under a running worker (a `main` that returns
//! without awaiting `WorkerHandle::shutdown`, a test's runtime dropped)
//! stops the worker quietly: its thread sees the runtime go and returns,
//! instead of polling a timer of a runtime that is gone and panicking
//! inside Tokio ("being shutdown") with the message on standard error.
//! Nothing queued is lost either way: leases held expire and their entries
//! are claimed again.
//!
//! Checked to bite: before the worker's thread watched for the runtime's
//! shutdown, this test counted one panic on that thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dualwrite_runtime::{DualWrite, InMemoryQueue, Stage};
use dualwrite_suite::{FaultyStore, KvRepo, KvRepoOp};

#[test]
fn a_runtime_shut_down_under_a_running_worker_stops_it_without_a_panic() {
    let panics = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&panics);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let on_worker = std::thread::current()
            .name()
            .is_some_and(|name| name.starts_with("dualwrite-"));
        if on_worker {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.block_on(async {
        let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
            .queue(InMemoryQueue::new())
            .stage(Stage::DualWrite)
            .poll_interval(Duration::from_millis(20))
            .build()
            .unwrap();
        repo.put(1, 10).await.unwrap();
        let handle = repo.spawn_worker::<KvRepoOp>();
        // The worker applies nothing (nothing queued) and sleeps between
        // polls: the state a runtime usually shuts down in.
        tokio::time::sleep(Duration::from_millis(200)).await;
        handle
    });
    assert!(
        handle.is_running(),
        "the worker runs until the runtime goes"
    );
    drop(runtime);

    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !handle.is_running(),
        "the worker's thread returned once its runtime shut down"
    );
    assert_eq!(
        panics.load(Ordering::SeqCst),
        0,
        "no panic on the worker's thread"
    );
    drop(handle);
}
