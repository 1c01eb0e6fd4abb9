//! Writes that are not safe to replay (`clicks += n`) end exactly right in
//! both stores when each store skips repeats by the operation id (the inbox
//! pattern): through follower failures, follower timeouts after the write
//! landed, queue replays, a restart from the SQLite queue, uncertain writes
//! of cancelled callers and orphaned written-ahead operations. An entry of
//! such a write without an id is dead-lettered, never applied.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use dualwrite_runtime::queue::{NewEntry, SqliteQueue};
use dualwrite_runtime::{
    dual_write, operation_id, Delivery, DualWrite, InMemoryQueue, Key, OperationId,
    ReconciliationQueue, RetryPolicy, Side, Stage,
};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ClickError(String);

#[dual_write]
trait Clicks: Send + Sync {
    #[dual_write(write, key = id, idempotent = false)]
    async fn add_clicks(&self, id: u64, n: i64) -> Result<(), ClickError>;

    #[dual_write(read)]
    async fn clicks(&self, id: u64) -> Result<i64, ClickError>;
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Fails before writing anything.
    FailBefore,
    /// Commits, then reports a failure (a connection reset after commit).
    ApplyThenFail,
    /// Commits, then takes this long to answer.
    ApplyThenStall(Duration),
}

#[derive(Default)]
struct State {
    clicks: BTreeMap<u64, i64>,
    /// The inbox: ids of the operations applied, written with the counts.
    applied: BTreeSet<OperationId>,
    faults: VecDeque<Fault>,
    /// Calls that came without an operation id.
    without_id: usize,
    /// Repeats the inbox skipped.
    skipped: usize,
}

/// A counter table with an inbox, shared by clones (one database).
#[derive(Clone, Default)]
struct CounterStore(Arc<Mutex<State>>);

impl CounterStore {
    fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.0.lock().unwrap().faults.extend(faults);
    }
    fn count(&self, id: u64) -> i64 {
        self.0.lock().unwrap().clicks.get(&id).copied().unwrap_or(0)
    }
    fn skipped(&self) -> usize {
        self.0.lock().unwrap().skipped
    }
    fn without_id(&self) -> usize {
        self.0.lock().unwrap().without_id
    }
}

impl Clicks for CounterStore {
    async fn add_clicks(&self, id: u64, n: i64) -> Result<(), ClickError> {
        let fault = self.0.lock().unwrap().faults.pop_front();
        if let Some(Fault::FailBefore) = fault {
            return Err(ClickError("down".into()));
        }
        {
            // One transaction: the id goes into the inbox with the count.
            let mut state = self.0.lock().unwrap();
            match operation_id() {
                Some(op) if !state.applied.insert(op) => {
                    state.skipped += 1;
                    return Ok(());
                }
                Some(_) => {}
                None => state.without_id += 1,
            }
            *state.clicks.entry(id).or_default() += n;
        }
        match fault {
            Some(Fault::ApplyThenFail) => Err(ClickError("connection reset after commit".into())),
            Some(Fault::ApplyThenStall(stall)) => {
                tokio::time::sleep(stall).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn clicks(&self, id: u64) -> Result<i64, ClickError> {
        Ok(self.count(id))
    }
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy::default()
        .min_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(5))
}

fn wrapper(
    old: &CounterStore,
    new: &CounterStore,
    queue: Arc<dyn ReconciliationQueue>,
    delivery: Delivery,
) -> DualWrite<CounterStore, CounterStore> {
    DualWrite::builder(old.clone(), new.clone())
        .shared_queue(queue)
        .stage(Stage::DualWrite)
        .delivery(delivery)
        .follower_timeout(Duration::from_millis(50))
        .orphan_after(Duration::from_millis(100))
        .lease(Duration::from_secs(2))
        .retry(fast_retries())
        .build()
        .unwrap()
}

#[tokio::test]
async fn increments_count_once_through_follower_failures_timeouts_and_replays() {
    let (old, new) = (CounterStore::default(), CounterStore::default());
    let repo = wrapper(&old, &new, Arc::new(InMemoryQueue::new()), Delivery::Sync);
    let worker = repo.worker::<ClicksOp>();
    // In the request: down; landed but reported failed; landed but timed
    // out. In the worker: the first replay lands and reports failure too.
    new.script([
        Fault::FailBefore,
        Fault::ApplyThenFail,
        Fault::ApplyThenStall(Duration::from_millis(200)),
        Fault::ApplyThenFail,
    ]);
    for n in 1..=6 {
        repo.add_clicks(7, n).await.unwrap();
    }
    worker.drain().await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    worker.drain().await;
    assert_eq!(old.count(7), 21);
    assert_eq!(repo.clicks(7).await.unwrap(), 21);
    assert_eq!(new.count(7), 21);
    assert!(new.skipped() >= 2, "the inbox skipped the repeats");
    assert_eq!(new.without_id() + old.without_id(), 0);
}

#[tokio::test]
async fn increments_queued_before_a_restart_are_applied_once_after_it() {
    let dir = std::env::temp_dir().join(format!("dualwrite-clicks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("queue.db");
    let _ = std::fs::remove_file(&file);
    let (old, new) = (CounterStore::default(), CounterStore::default());
    {
        let repo = wrapper(
            &old,
            &new,
            Arc::new(SqliteQueue::open(&file).await.unwrap()),
            Delivery::Sync,
        );
        new.script([Fault::FailBefore; 3]);
        for n in [10, 20, 30] {
            repo.add_clicks(1, n).await.unwrap();
        }
        repo.shutdown().await.unwrap();
    }
    assert_eq!(new.count(1), 0, "all three were queued");
    // The restarted process: its first replay lands but reports failure,
    // so the retry is a repeat only the queued id can reveal.
    let repo = wrapper(
        &old,
        &new,
        Arc::new(SqliteQueue::open(&file).await.unwrap()),
        Delivery::Sync,
    );
    new.script([Fault::ApplyThenFail]);
    repo.worker::<ClicksOp>().drain().await;
    assert_eq!((old.count(1), new.count(1)), (60, 60));
    assert_eq!(new.skipped(), 1);
    assert_eq!(new.without_id(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Polls `future` until `done` says so, then leaves it as is.
async fn poll_until<F: Future + Unpin>(future: &mut F, done: impl Fn() -> bool) {
    std::future::poll_fn(|cx: &mut Context<'_>| {
        let _ = std::pin::Pin::new(&mut *future).poll(cx);
        if done() {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
}

#[tokio::test]
async fn a_cancelled_increment_is_applied_once_to_each_store() {
    let (old, new) = (CounterStore::default(), CounterStore::default());
    let repo = wrapper(&old, &new, Arc::new(InMemoryQueue::new()), Delivery::Sync);
    // The old store commits, then stalls; the caller gives up meanwhile, so
    // whether it landed is unknown and the worker applies it there again.
    old.script([Fault::ApplyThenStall(Duration::from_secs(60))]);
    let mut call = Box::pin(repo.add_clicks(3, 4));
    poll_until(&mut call, || old.count(3) == 4).await;
    drop(call);
    repo.worker::<ClicksOp>().drain().await;
    assert_eq!((old.count(3), new.count(3)), (4, 4));
    assert_eq!(old.skipped(), 1, "the replay to the old store was a repeat");
}

#[tokio::test]
async fn an_orphaned_journaled_increment_is_applied_once_to_each_store() {
    let (old, new) = (CounterStore::default(), CounterStore::default());
    let queue = Arc::new(InMemoryQueue::new());
    // The writer's process: the operation is written ahead, the old store
    // commits, and the process dies before it confirms (its future is
    // never polled again, nor dropped).
    let dying = wrapper(&old, &new, queue.clone(), Delivery::Journaled);
    old.script([Fault::ApplyThenStall(Duration::from_secs(60))]);
    let mut call = Box::pin(dying.add_clicks(5, 9));
    poll_until(&mut call, || old.count(5) == 9).await;
    std::mem::forget(call);
    std::mem::forget(dying);
    // Another process finds the orphan and applies it to both stores.
    let repo = wrapper(&old, &new, queue.clone(), Delivery::Journaled);
    tokio::time::sleep(Duration::from_millis(150)).await;
    repo.worker::<ClicksOp>().drain().await;
    assert_eq!((old.count(5), new.count(5)), (9, 9));
    assert_eq!(
        old.skipped(),
        1,
        "the orphan's replay to the old store was a repeat"
    );
    // Later increments of the key still count once.
    repo.add_clicks(5, 1).await.unwrap();
    repo.worker::<ClicksOp>().drain().await;
    assert_eq!((old.count(5), new.count(5)), (10, 10));
}

#[tokio::test]
async fn an_increment_queued_without_an_operation_id_is_dead_lettered_unapplied() {
    let (old, new) = (CounterStore::default(), CounterStore::default());
    let queue = Arc::new(InMemoryQueue::new());
    let repo = wrapper(&old, &new, queue.clone(), Delivery::Sync);
    // What a build without operation ids queued.
    queue
        .append(NewEntry {
            namespace: "Clicks".into(),
            target: Side::New,
            key: Key::from("2"),
            method: "add_clicks".into(),
            version: 1,
            payload: br#"{"method":"add_clicks","args":{"id":2,"n":5}}"#.to_vec(),
            reason: "queued by an older build".into(),
            uncertain: false,
        })
        .await
        .unwrap();
    let report = repo.worker::<ClicksOp>().drain().await;
    assert_eq!(report.dead_lettered, 1);
    assert_eq!(new.count(2), 0, "never applied");
    let dead = queue.dead_letters().await.unwrap();
    assert!(
        dead[0].error.contains("idempotent = false") && dead[0].error.contains("no operation id"),
        "{}",
        dead[0].error
    );
}
