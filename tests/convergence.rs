//! I2 convergence: once the follower is healthy and the queue drained, both
//! stores hold the same data, whatever the follower did meanwhile (errors,
//! timeouts, slowness, writes that land but time out, panics, flapping), with
//! concurrent writers, and with the worker running during the faults.
//!
//! Checked to bite: with the write path told to call the follower directly
//! even when the key has queued work (`Ok(_) => FollowerPlan::Call(side)` in
//! `WriteGuard::follower_plan`), proptest finds a failing schedule at once.

use std::sync::Arc;
use std::time::Duration;

use dualwrite_runtime::{DualWrite, InMemoryQueue, ReconciliationQueue, RetryPolicy, Stage};
use dualwrite_suite::{Fault, FaultyStore, KvRepo, KvRepoOp};
use proptest::prelude::*;

const FOLLOWER_TIMEOUT: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy)]
enum Write {
    Put(u32, u64),
    Delete(u32),
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        4 => (0u32..4, 0u64..1_000).prop_map(|(key, value)| Write::Put(key, value)),
        1 => (0u32..4).prop_map(Write::Delete),
    ]
}

/// `None` is a healthy call.
fn follower_call() -> impl Strategy<Value = Option<Fault>> {
    prop_oneof![
        6 => Just(None),
        2 => Just(Some(Fault::Error)),
        1 => Just(Some(Fault::Panic)),
        1 => (1u64..10).prop_map(|ms| Some(Fault::Slow(Duration::from_millis(ms)))),
        1 => Just(Some(Fault::Slow(FOLLOWER_TIMEOUT * 3))),
        1 => Just(Some(Fault::ApplyThenStall(FOLLOWER_TIMEOUT * 3))),
    ]
}

/// Flapping: a run of identical outcomes, so the follower goes down and up.
fn follower_schedule() -> impl Strategy<Value = Vec<Option<Fault>>> {
    prop::collection::vec((follower_call(), 1usize..6), 0..25).prop_map(|runs| {
        runs.into_iter()
            .flat_map(|(call, length)| std::iter::repeat_n(call, length))
            .collect()
    })
}

/// Scripts `schedule` into the store; a healthy call is a zero-length delay.
fn script(store: &FaultyStore, schedule: &[Option<Fault>]) {
    store.script(
        schedule
            .iter()
            .map(|call| call.unwrap_or(Fault::Slow(Duration::ZERO))),
    );
}

async fn apply(repo: &DualWrite<FaultyStore, FaultyStore>, write: Write) {
    // The result may be an authoritative error; either way the stores must
    // agree in the end.
    let _ = match write {
        Write::Put(key, value) => repo.put(key, value).await,
        Write::Delete(key) => repo.delete(key).await,
    };
}

fn run_case(
    stage: Stage,
    writers: Vec<Vec<Write>>,
    follower: Vec<Option<Fault>>,
    authoritative_errors: Vec<bool>,
) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    dualwrite_suite::silence_injected_panics();
    runtime.block_on(async {
        let queue: Arc<dyn ReconciliationQueue> = Arc::new(InMemoryQueue::new());
        let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
            .shared_queue(Arc::clone(&queue))
            .stage(stage)
            .follower_timeout(FOLLOWER_TIMEOUT)
            .retry(
                RetryPolicy::default()
                    .max_attempts(10_000)
                    .min_delay(Duration::from_millis(1))
                    .max_delay(Duration::from_millis(50)),
            )
            .build()
            .unwrap();
        let (authoritative, follower_store) = match stage.authoritative() {
            dualwrite_runtime::Side::Old => (repo.old_store(), repo.new_store()),
            dualwrite_runtime::Side::New => (repo.new_store(), repo.old_store()),
        };
        script(follower_store, &follower);
        authoritative.script(authoritative_errors.iter().map(|fails| {
            if *fails {
                Fault::Error
            } else {
                Fault::Slow(Duration::ZERO)
            }
        }));

        // The worker runs while the writers write and the follower flaps.
        let worker = repo.worker::<KvRepoOp>();
        let stop = worker.stopper();
        let writes = async {
            futures::future::join_all(writers.iter().map(|writes| {
                let repo = &repo;
                async move {
                    for write in writes {
                        apply(repo, *write).await;
                    }
                }
            }))
            .await;
            stop.stop();
        };
        let ((), _) = tokio::join!(writes, worker.run());
        // The script may outlast the writes; the follower recovers by itself
        // once it is used up, while the worker keeps retrying.
        worker.drain().await;

        let dead = queue.dead_letters().await.unwrap();
        prop_assert!(dead.is_empty(), "nothing should be dead-lettered: {dead:?}");
        let stats = queue.stats().await.unwrap();
        prop_assert!(
            stats.old.is_empty() && stats.new.is_empty(),
            "queue drained: {stats:?}"
        );
        prop_assert_eq!(repo.old_store().snapshot(), repo.new_store().snapshot());
        Ok(())
    })
}

/// The same property over the durable SQLite queue, on the real clock, with
/// the worker killed (its future dropped mid-operation, leaving leases
/// behind) and restarted several times while the writers write.
fn run_case_on_sqlite(
    stage: Stage,
    writers: Vec<Vec<Write>>,
    follower: Vec<Option<Fault>>,
    restarts: Vec<u64>,
) -> Result<(), TestCaseError> {
    static CASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let case = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "dualwrite-convergence-{}-{case}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    dualwrite_suite::silence_injected_panics();
    let outcome = runtime.block_on(async {
        let queue = dualwrite_runtime::queue::SqliteQueue::open(dir.join("queue.db"))
            .await
            .unwrap();
        let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
            .queue(queue)
            .stage(stage)
            .follower_timeout(FOLLOWER_TIMEOUT)
            .lease(FOLLOWER_TIMEOUT * 4)
            .retry(
                RetryPolicy::default()
                    .max_attempts(10_000)
                    .min_delay(Duration::from_millis(1))
                    .max_delay(Duration::from_millis(20)),
            )
            .build()
            .unwrap();
        let follower_store = match stage.authoritative() {
            dualwrite_runtime::Side::Old => repo.new_store(),
            dualwrite_runtime::Side::New => repo.old_store(),
        };
        script(follower_store, &follower);
        let writes = futures::future::join_all(writers.iter().map(|writes| {
            let repo = &repo;
            async move {
                for write in writes {
                    apply(repo, *write).await;
                }
            }
        }));
        let restarting_worker = async {
            for lifetime_ms in &restarts {
                let worker = repo.worker::<KvRepoOp>();
                tokio::select! {
                    _ = worker.run() => {}
                    () = tokio::time::sleep(Duration::from_millis(*lifetime_ms)) => {}
                }
            }
        };
        tokio::join!(writes, restarting_worker);
        repo.worker::<KvRepoOp>().drain().await;

        let dead = repo.queue().dead_letters().await.unwrap();
        prop_assert!(dead.is_empty(), "nothing should be dead-lettered: {dead:?}");
        let stats = repo.queue().stats().await.unwrap();
        prop_assert!(
            stats.old.is_empty() && stats.new.is_empty(),
            "queue drained: {stats:?}"
        );
        prop_assert_eq!(repo.old_store().snapshot(), repo.new_store().snapshot());
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn follower_converges_over_the_sqlite_queue_with_worker_restarts(
        stage in prop_oneof![Just(Stage::DualWrite), Just(Stage::Live)],
        writers in prop::collection::vec(prop::collection::vec(write(), 1..12), 1..4),
        follower in follower_schedule(),
        restarts in prop::collection::vec(1u64..40, 1..5),
    ) {
        run_case_on_sqlite(stage, writers, follower, restarts)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn follower_converges_under_any_fault_schedule(
        stage in prop_oneof![Just(Stage::DualWrite), Just(Stage::Shadow), Just(Stage::Live), Just(Stage::RampDown)],
        writers in prop::collection::vec(prop::collection::vec(write(), 1..15), 1..4),
        follower in follower_schedule(),
        authoritative_errors in prop::collection::vec(prop::bool::weighted(0.1), 0..30),
    ) {
        run_case(stage, writers, follower, authoritative_errors)?;
    }
}
