//! I1, I2, I4 and I7 on every cell of {in-memory, SQLite queue} x {sync,
//! journaled delivery} x {fixed stage, stage moves during the run}: several
//! writers on few keys (keyed puts and deletes, and an unkeyed `clear` that
//! touches every key), follower faults (errors, timeouts, slowness, panics,
//! writes that land and then time out, flapping), callers cancelled at
//! random moments, and the worker stopped and restarted while they write.
//!
//! Every operation carries a unique id, and each store records the exact
//! sequence of operations it applied. After the faults heal and the queue
//! drains, the checks are:
//!
//! - I1: an operation whose call returned `Err` reached neither store, ever;
//!   one that returned `Ok` reached both.
//! - I4: for every key, both stores applied the key's operations in the
//!   same order (the authoritative one's order is the order it accepted
//!   them in, so the follower's matches it), each exactly once. The only
//!   repeats allowed are back-to-back replays of an operation whose caller
//!   was cancelled or whose store call landed and then timed out (delivery
//!   is at least once); operations of cancelled callers, whose outcome the
//!   caller never learned, are left out of the order check (their effect is
//!   still checked by I2).
//! - I2: both stores hold the same data.
//! - I7: the queue is empty: nothing pending, in flight or dead.
//!
//! Default case counts are CI-sized; `DUALWRITE_MATRIX_CASES` sets the cases
//! per cell (and `DUALWRITE_MATRIX_DIR` where the SQLite files go, e.g. a
//! tmpfs for long runs).
//!
//! What it found while the fixes of this change were written (each now has
//! a test of its own): an uncertain write of a cancelled caller replayed to
//! the authoritative store after a later write of its key, because "later"
//! ignored unkeyed writes (`has_later_entries`) and because only the
//! follower's queue order decided when the replay ran; an orphan's retry
//! applying it to the authoritative store on every attempt; the worker
//! settling an uncertain write twice, once after the write that waited for
//! it. `DUALWRITE_MATRIX_CASES=1250` runs 10,000 cases in all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::{
    dual_write, Delivery, DualWrite, InMemoryQueue, ReconciliationQueue, RetryPolicy, Stage,
};
use futures::FutureExt;
use proptest::prelude::*;

const FOLLOWER_TIMEOUT: Duration = Duration::from_millis(20);
const KEYS: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
struct StoreError(String);

/// A ledger whose writes name the operation that made them.
#[dual_write(namespace = "matrix")]
trait Ledger: Send + Sync {
    #[dual_write(write, key = key)]
    async fn put(&self, key: u32, op: u64) -> Result<(), StoreError>;

    #[dual_write(write, key = key)]
    async fn delete(&self, key: u32, op: u64) -> Result<(), StoreError>;

    /// Unkeyed: ordered against every key.
    #[dual_write(write)]
    async fn clear(&self, op: u64) -> Result<(), StoreError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Healthy,
    Error,
    Panic,
    /// Sleeps, then applies (dropped first, it never lands).
    Slow(Duration),
    /// Applies, then sleeps: lands, and may look timed out.
    ApplyThenStall(Duration),
}

/// What one store applied, in order: `(key or None for clear, op)`.
#[derive(Default)]
struct Recording {
    data: BTreeMap<u32, u64>,
    applied: Vec<(Option<u32>, u64)>,
    /// Operations applied by a call that then stalled.
    stalled: BTreeSet<u64>,
}

#[derive(Default)]
struct RecordingStore {
    recording: Mutex<Recording>,
    script: Mutex<std::collections::VecDeque<Fault>>,
}

impl RecordingStore {
    fn heal(&self) {
        self.script.lock().unwrap().clear();
    }

    async fn call(
        &self,
        key: Option<u32>,
        op: u64,
        apply: impl FnOnce(&mut BTreeMap<u32, u64>),
    ) -> Result<(), StoreError> {
        let fault = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Fault::Healthy);
        match fault {
            Fault::Healthy | Fault::ApplyThenStall(_) => {}
            Fault::Error => return Err(StoreError("store unavailable".into())),
            Fault::Panic => panic!("{INJECTED} on op {op}"),
            Fault::Slow(delay) => tokio::time::sleep(delay).await,
        }
        {
            let mut recording = self.recording.lock().unwrap();
            apply(&mut recording.data);
            recording.applied.push((key, op));
            if let Fault::ApplyThenStall(_) = fault {
                recording.stalled.insert(op);
            }
        }
        if let Fault::ApplyThenStall(delay) = fault {
            tokio::time::sleep(delay).await;
        }
        Ok(())
    }
}

/// The panic message `dualwrite_suite::silence_injected_panics` keeps out
/// of the test output.
const INJECTED: &str = "injected store panic";

impl Ledger for RecordingStore {
    async fn put(&self, key: u32, op: u64) -> Result<(), StoreError> {
        self.call(Some(key), op, |data| {
            data.insert(key, op);
        })
        .await
    }

    async fn delete(&self, key: u32, op: u64) -> Result<(), StoreError> {
        self.call(Some(key), op, |data| {
            data.remove(&key);
        })
        .await
    }

    async fn clear(&self, op: u64) -> Result<(), StoreError> {
        self.call(None, op, BTreeMap::clear).await
    }
}

#[derive(Debug, Clone, Copy)]
enum Write {
    Put(u32),
    Delete(u32),
    Clear,
}

/// One call of a writer: the write, and after how long its caller gives up
/// (`None`: never).
#[derive(Debug, Clone, Copy)]
struct Call {
    write: Write,
    cancel_after: Option<Duration>,
}

fn call() -> impl Strategy<Value = Call> {
    let write = prop_oneof![
        8 => (0..KEYS).prop_map(Write::Put),
        3 => (0..KEYS).prop_map(Write::Delete),
        1 => Just(Write::Clear),
    ];
    let cancel = prop_oneof![
        5 => Just(None),
        1 => (0u64..40).prop_map(|ms| Some(Duration::from_millis(ms))),
    ];
    (write, cancel).prop_map(|(write, cancel_after)| Call {
        write,
        cancel_after,
    })
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        8 => Just(Fault::Healthy),
        2 => Just(Fault::Error),
        1 => Just(Fault::Panic),
        1 => (1u64..10).prop_map(|ms| Fault::Slow(Duration::from_millis(ms))),
        1 => Just(Fault::Slow(FOLLOWER_TIMEOUT * 3)),
        1 => Just(Fault::ApplyThenStall(FOLLOWER_TIMEOUT * 3)),
    ]
}

/// Flapping: runs of one outcome, so a store goes down and comes back.
fn schedule() -> impl Strategy<Value = Vec<Fault>> {
    prop::collection::vec((fault(), 1usize..6), 0..20).prop_map(|runs| {
        runs.into_iter()
            .flat_map(|(fault, length)| std::iter::repeat_n(fault, length))
            .collect()
    })
}

const FOLLOWED: [Stage; 4] = [
    Stage::DualWrite,
    Stage::Shadow,
    Stage::Live,
    Stage::RampDown,
];

#[derive(Debug, Clone)]
struct Case {
    stage: Stage,
    writers: Vec<Vec<Call>>,
    old_faults: Vec<Fault>,
    new_faults: Vec<Fault>,
    /// How long each worker runs before it is stopped and replaced.
    worker_lifetimes: Vec<u64>,
    /// Stages to try to move to, one every few milliseconds.
    moves: Vec<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..FOLLOWED.len(),
        prop::collection::vec(prop::collection::vec(call(), 1..12), 1..4),
        schedule(),
        schedule(),
        prop::collection::vec(1u64..60, 1..4),
        prop::collection::vec(0..FOLLOWED.len(), 0..12),
    )
        .prop_map(
            |(stage, writers, old_faults, new_faults, worker_lifetimes, moves)| Case {
                stage: FOLLOWED[stage],
                writers,
                old_faults,
                new_faults,
                worker_lifetimes,
                moves,
            },
        )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Memory,
    Sqlite,
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    backend: Backend,
    delivery: Delivery,
    moving: bool,
}

/// How each call ended, by op id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Ok,
    Err,
    /// Cancelled, or the authoritative store panicked: the caller never
    /// learned the outcome.
    Unknown,
}

type Repo = DualWrite<RecordingStore, RecordingStore>;

async fn run_writer(
    repo: &Repo,
    calls: &[Call],
    ids: &AtomicU64,
    ended: &Mutex<HashMap<u64, Ended>>,
) {
    for call in calls {
        let op = ids.fetch_add(1, Ordering::Relaxed);
        let write = async {
            match call.write {
                Write::Put(key) => repo.put(key, op).await,
                Write::Delete(key) => repo.delete(key, op).await,
                Write::Clear => repo.clear(op).await,
            }
        };
        let guarded = std::panic::AssertUnwindSafe(write).catch_unwind();
        let outcome = match call.cancel_after {
            Some(after) => tokio::time::timeout(after, guarded).await.ok(),
            None => Some(guarded.await),
        };
        let end = match outcome {
            Some(Ok(Ok(()))) => Ended::Ok,
            Some(Ok(Err(_))) => Ended::Err,
            Some(Err(_)) | None => Ended::Unknown,
        };
        ended.lock().unwrap().insert(op, end);
    }
}

fn queue_dir() -> std::path::PathBuf {
    static CASE: AtomicU64 = AtomicU64::new(0);
    let base = std::env::var_os("DUALWRITE_MATRIX_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    base.join(format!(
        "dualwrite-matrix-{}-{}",
        std::process::id(),
        CASE.fetch_add(1, Ordering::Relaxed)
    ))
}

/// With `DUALWRITE_MATRIX_TRACE` set, the runtime's debug events of each
/// case are kept and printed when the case fails.
static TRACE: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct TraceWriter;

impl std::io::Write for TraceWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        TRACE.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn install_trace() -> bool {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    let wanted = std::env::var_os("DUALWRITE_MATRIX_TRACE").is_some();
    if wanted {
        INSTALL.call_once(|| {
            let _ = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_writer(|| TraceWriter)
                .with_ansi(false)
                .try_init();
        });
    }
    wanted
}

fn run_case(cell: Cell, case: Case) -> Result<(), TestCaseError> {
    let traced = install_trace();
    TRACE.lock().unwrap().clear();
    let result = run_traced_case(cell, case);
    if traced && result.is_err() {
        eprintln!("{}", String::from_utf8_lossy(&TRACE.lock().unwrap()));
    }
    result
}

fn run_traced_case(cell: Cell, case: Case) -> Result<(), TestCaseError> {
    let runtime = match cell.backend {
        // The in-memory queue keeps tokio's time: a paused clock makes the
        // run fast and its timeouts exact.
        Backend::Memory => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build(),
        // SQLite keeps wall-clock time: run on the real clock.
        Backend::Sqlite => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    }
    .unwrap();
    let dir = queue_dir();
    dualwrite_suite::silence_injected_panics();
    let result = runtime.block_on(async {
        let queue: Arc<dyn ReconciliationQueue> = match cell.backend {
            Backend::Memory => Arc::new(InMemoryQueue::new()),
            Backend::Sqlite => {
                std::fs::create_dir_all(&dir).unwrap();
                Arc::new(SqliteQueue::open(dir.join("queue.db")).await.unwrap())
            }
        };
        let repo = DualWrite::builder(RecordingStore::default(), RecordingStore::default())
            .shared_queue(Arc::clone(&queue))
            .stage(case.stage)
            .delivery(cell.delivery)
            .follower_timeout(FOLLOWER_TIMEOUT)
            .lease(FOLLOWER_TIMEOUT * 5)
            .orphan_after(Duration::from_secs(30))
            .poll_interval(Duration::from_millis(5))
            .without_tracing_observer()
            .retry(
                RetryPolicy::default()
                    .max_attempts(100_000)
                    .min_delay(Duration::from_millis(1))
                    .max_delay(Duration::from_millis(10)),
            )
            .build()
            .unwrap();
        repo.old_store()
            .script
            .lock()
            .unwrap()
            .extend(case.old_faults.iter().copied());
        repo.new_store()
            .script
            .lock()
            .unwrap()
            .extend(case.new_faults.iter().copied());

        let ids = AtomicU64::new(1);
        let ended = Mutex::new(HashMap::new());
        let writing = futures::future::join_all(
            case.writers
                .iter()
                .map(|calls| run_writer(&repo, calls, &ids, &ended)),
        );
        let done = tokio::sync::Notify::new();
        let finished = std::sync::atomic::AtomicBool::new(false);
        let writes = async {
            writing.await;
            finished.store(true, Ordering::SeqCst);
            done.notify_waiters();
        };
        // Workers that are stopped and replaced while the writers write.
        let workers = async {
            for lifetime in case.worker_lifetimes.iter().cycle() {
                if finished.load(Ordering::SeqCst) {
                    break;
                }
                let worker = repo.worker::<LedgerOp>();
                let handle = worker.handle();
                let run = worker.run();
                tokio::pin!(run);
                tokio::select! {
                    _ = &mut run => {}
                    () = tokio::time::sleep(Duration::from_millis(*lifetime)) => {
                        handle.stop();
                        run.await;
                    }
                    () = done.notified() => {
                        handle.stop();
                        run.await;
                    }
                }
            }
        };
        // Stage moves through the guardrails (refusals are expected).
        let mover = async {
            if !cell.moving {
                return;
            }
            for target in case.moves.iter().cycle().take(200) {
                if finished.load(Ordering::SeqCst) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
                let _ = repo.stage().set(FOLLOWED[*target]).await;
            }
        };
        tokio::join!(writes, workers, mover);

        // Heal, drain, shut down.
        repo.old_store().heal();
        repo.new_store().heal();
        let drained =
            tokio::time::timeout(Duration::from_secs(60), repo.worker::<LedgerOp>().drain()).await;
        prop_assert!(drained.is_ok(), "the queue did not drain within a minute");
        repo.shutdown().await.unwrap();
        let stats = queue.stats().await.unwrap();
        prop_assert!(
            stats.old.is_empty() && stats.new.is_empty(),
            "I7: the queue holds work after the drain: {stats:?}"
        );

        let ended = ended.into_inner().unwrap();
        let old = std::mem::take(&mut *repo.old_store().recording.lock().unwrap());
        let new = std::mem::take(&mut *repo.new_store().recording.lock().unwrap());
        check(&ended, &old, &new)
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn check(
    ended: &HashMap<u64, Ended>,
    old: &Recording,
    new: &Recording,
) -> Result<(), TestCaseError> {
    // I1.
    for (store, recording) in [("old", old), ("new", new)] {
        let applied: BTreeSet<u64> = recording.applied.iter().map(|(_, op)| *op).collect();
        for (op, end) in ended {
            match end {
                Ended::Err => prop_assert!(
                    !applied.contains(op),
                    "I1: op {} returned Err but the {} store applied it",
                    op,
                    store
                ),
                Ended::Ok => prop_assert!(
                    applied.contains(op),
                    "I1/I2: op {} returned Ok but the {} store never applied it",
                    op,
                    store
                ),
                Ended::Unknown => {}
            }
        }
    }
    // I4: per key, the same order in both stores, each op once.
    let may_repeat = |op: u64| {
        ended.get(&op) == Some(&Ended::Unknown)
            || old.stalled.contains(&op)
            || new.stalled.contains(&op)
    };
    for key in 0..KEYS {
        let history = |recording: &Recording| -> Vec<u64> {
            let mut ops: Vec<u64> = Vec::new();
            for (touched, op) in &recording.applied {
                if touched.is_some_and(|touched| touched != key) {
                    continue;
                }
                if ended.get(op) == Some(&Ended::Unknown) {
                    continue;
                }
                if ops.last() == Some(op) && may_repeat(*op) {
                    continue;
                }
                ops.push(*op);
            }
            ops
        };
        let (old_history, new_history) = (history(old), history(new));
        let mut seen = BTreeSet::new();
        for op in &old_history {
            prop_assert!(
                seen.insert(*op),
                "I4: op {} applied twice to the old store for key {}: {:?}",
                op,
                key,
                old_history
            );
        }
        prop_assert_eq!(
            &old_history,
            &new_history,
            "I4: key {} was written in different orders",
            key
        );
    }
    // I2.
    prop_assert_eq!(
        &old.data,
        &new.data,
        "I2: the stores disagree; old applied {:?}, new applied {:?}, calls ended {:?}",
        old.applied,
        new.applied,
        {
            let mut ended: Vec<_> = ended.iter().collect();
            ended.sort_by_key(|(op, _)| **op);
            ended
        }
    );
    Ok(())
}

fn cases(default: u32) -> u32 {
    std::env::var("DUALWRITE_MATRIX_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

fn run_cell(cell: Cell, default_cases: u32) {
    let config = ProptestConfig {
        cases: cases(default_cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    if let Err(failure) = runner.run(&case(), |case| run_case(cell, case)) {
        panic!("{cell:?}: {failure}");
    }
}

macro_rules! cells {
    ($($name:ident: $backend:ident, $delivery:ident, $moving:expr, $cases:expr;)*) => {
        $(
            #[test]
            fn $name() {
                run_cell(
                    Cell { backend: Backend::$backend, delivery: Delivery::$delivery, moving: $moving },
                    $cases,
                );
            }
        )*
    };
}

cells! {
    invariants_hold_in_memory_sync_fixed_stage: Memory, Sync, false, 64;
    invariants_hold_in_memory_sync_moving_stage: Memory, Sync, true, 64;
    invariants_hold_in_memory_journaled_fixed_stage: Memory, Journaled, false, 64;
    invariants_hold_in_memory_journaled_moving_stage: Memory, Journaled, true, 64;
    invariants_hold_on_sqlite_sync_fixed_stage: Sqlite, Sync, false, 8;
    invariants_hold_on_sqlite_sync_moving_stage: Sqlite, Sync, true, 8;
    invariants_hold_on_sqlite_journaled_fixed_stage: Sqlite, Journaled, false, 8;
    invariants_hold_on_sqlite_journaled_moving_stage: Sqlite, Journaled, true, 8;
}
