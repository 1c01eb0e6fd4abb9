//! Writes in `Off` and `Complete` take no per-key order guard (one store is
//! written and nothing is queued): only the stage barrier keeps them from
//! interleaving with the guarded writes of the stage next to them. This
//! races writers on few keys against the move into (`Off` to `DualWrite`)
//! or out of (`RampDown` to `Complete`) a single-store stage, on every cell
//! of {in-memory, SQLite queue} x {sync, journaled delivery}, with follower
//! faults so that the guarded stage queues writes too.
//!
//! After the writers finish, the faults heal and the queue drains, each
//! store's sequence of applied operations per key is checked:
//!
//! - every write returned `Ok` (the authoritative store never fails here)
//!   and reached the authoritative store exactly once;
//! - the follower applied, per key, exactly the authoritative store's
//!   operations that it has, in the same order;
//! - in the authoritative store's sequence of each key, the operations of
//!   the single-store stage all come before (`Off`, moving on) or all after
//!   (`Complete`, moving in) those that reached both stores: a write that
//!   read the single-store stage never lands among the followed ones, so
//!   the stores end agreeing on every key the followed stage wrote last
//!   (`Off` to `DualWrite`), and the retired store's last value of a key is
//!   a value it had in the followed stage (`RampDown` to `Complete`).
//!
//! `DUALWRITE_SINGLE_STORE_ROUNDS` sets the rounds per cell (default 12).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::{
    dual_write, Delivery, DualWrite, InMemoryQueue, ReconciliationQueue, RetryPolicy, Stage,
};

const KEYS: u32 = 2;
const WRITERS: u64 = 4;
const WRITES: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
struct StoreError(String);

#[dual_write(namespace = "single")]
trait Registry: Send + Sync {
    #[dual_write(write, key = key)]
    async fn put(&self, key: u32, op: u64) -> Result<(), StoreError>;
}

/// A store that records the operations it applied, per key, in order; it
/// waits before applying (so writes are in flight when the stage moves)
/// and refuses calls while `failing` (the follower's faults).
#[derive(Default)]
struct Recorder {
    applied: Mutex<BTreeMap<u32, Vec<u64>>>,
    failing: std::sync::atomic::AtomicBool,
    calls: AtomicU64,
}

impl Registry for Recorder {
    async fn put(&self, key: u32, op: u64) -> Result<(), StoreError> {
        // Every fourth write takes a while, every eighth longer than a
        // journaled write-ahead's fsync: writes are in flight across the
        // move.
        match op % 8 {
            0 => tokio::time::sleep(Duration::from_millis(4)).await,
            4 => tokio::time::sleep(Duration::from_micros(300)).await,
            _ => {}
        }
        tokio::task::yield_now().await;
        // Every fifth call refused while failing: the write is queued.
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        if self.failing.load(Ordering::Relaxed) && call % 5 == 0 {
            return Err(StoreError("follower unavailable".into()));
        }
        self.applied
            .lock()
            .unwrap()
            .entry(key)
            .or_default()
            .push(op);
        tokio::task::yield_now().await;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Queue {
    Memory,
    Sqlite,
}

#[derive(Debug, Clone, Copy)]
enum Move {
    /// `Off` to `DualWrite`: the single-store stage is left.
    OutOfOff,
    /// `RampDown` to `Complete`: the single-store stage is entered.
    IntoComplete,
}

impl Move {
    fn stages(self) -> (Stage, Stage) {
        match self {
            Move::OutOfOff => (Stage::Off, Stage::DualWrite),
            Move::IntoComplete => (Stage::RampDown, Stage::Complete),
        }
    }
}

type Repo = DualWrite<Recorder, Recorder>;

/// The authoritative and the follower store of `repo` in both stages of
/// the move (the old store, then the new one, in `Off`..`DualWrite`; the
/// new store, then the old one, in `RampDown`..`Complete`).
fn stores(repo: &Repo, change: Move) -> (&Recorder, &Recorder) {
    match change {
        Move::OutOfOff => (repo.old_store(), repo.new_store()),
        Move::IntoComplete => (repo.new_store(), repo.old_store()),
    }
}

async fn round(queue: Queue, delivery: Delivery, change: Move, round: u64) {
    let dir = std::env::temp_dir().join(format!(
        "dualwrite-single-store-{}-{round}-{:?}-{delivery:?}-{change:?}",
        std::process::id(),
        queue
    ));
    let queue: Arc<dyn ReconciliationQueue> = match queue {
        Queue::Memory => Arc::new(InMemoryQueue::new()),
        Queue::Sqlite => {
            std::fs::create_dir_all(&dir).unwrap();
            Arc::new(SqliteQueue::open(dir.join("queue.db")).await.unwrap())
        }
    };
    let (from, to) = change.stages();
    let repo: Arc<Repo> = Arc::new(
        DualWrite::builder(Recorder::default(), Recorder::default())
            .shared_queue(Arc::clone(&queue))
            .stage(from)
            .delivery(delivery)
            .without_circuit_breaker()
            .without_tracing_observer()
            .retry(
                RetryPolicy::default()
                    .max_attempts(100_000)
                    .min_delay(Duration::from_millis(1))
                    .max_delay(Duration::from_millis(5)),
            )
            .build()
            .unwrap(),
    );
    let (_, follower) = stores(&repo, change);
    follower.failing.store(true, Ordering::Relaxed);
    let worker = repo.spawn_worker();

    let ops = Arc::new(AtomicU64::new(1));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (repo, ops) = (repo.clone(), ops.clone());
            tokio::spawn(async move {
                for n in 0..WRITES {
                    let key = u32::try_from((writer + n) % u64::from(KEYS)).unwrap();
                    let op = ops.fetch_add(1, Ordering::SeqCst);
                    repo.put(key, op)
                        .await
                        .expect("the authoritative store takes it");
                }
            })
        })
        .collect();
    // The move lands somewhere in the writers' run: each round of eight
    // waits a little longer before it.
    tokio::time::sleep(Duration::from_micros(150 * (round % 8))).await;
    let moved = loop {
        match repo.stage().set(to).await {
            Ok(_) => break ops.load(Ordering::SeqCst),
            // A guardrail (the backlog) may refuse while writes are queued.
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    };
    for writer in writers {
        writer.await.unwrap();
    }
    follower.failing.store(false, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(60), repo.worker::<RegistryOp>().drain())
        .await
        .expect("the queue drains within a minute");
    worker.shutdown().await.unwrap();

    let (authoritative, follower) = stores(&repo, change);
    let authoritative = authoritative.applied.lock().unwrap().clone();
    let follower = follower.applied.lock().unwrap().clone();
    let context = format!("{change:?}, {delivery:?}, round {round}, moved at op {moved}");
    let all: BTreeSet<u64> = authoritative.values().flatten().copied().collect();
    assert_eq!(
        all.len() as u64,
        WRITERS * WRITES,
        "{context}: every write reaches the authoritative store once: {authoritative:?}"
    );
    for key in 0..KEYS {
        let ours = authoritative.get(&key).cloned().unwrap_or_default();
        let theirs = follower.get(&key).cloned().unwrap_or_default();
        let shared: BTreeSet<u64> = theirs.iter().copied().collect();
        assert_eq!(
            ours.iter()
                .copied()
                .filter(|op| shared.contains(op))
                .collect::<Vec<_>>(),
            theirs,
            "{context}: key {key}: the follower applied the authoritative store's operations, in its order, each once"
        );
        // Single-store operations (not in the follower) and followed ones,
        // in the authoritative store's order.
        let followed: Vec<bool> = ours.iter().map(|op| shared.contains(op)).collect();
        let interleaved = match change {
            // Off's writes first, then DualWrite's.
            Move::OutOfOff => followed.windows(2).any(|pair| pair[0] && !pair[1]),
            // RampDown's writes first, then Complete's.
            Move::IntoComplete => followed.windows(2).any(|pair| !pair[0] && pair[1]),
        };
        assert!(
            !interleaved,
            "{context}: key {key}: a write of the single-store stage landed among the followed ones in the authoritative store: {ours:?}, the follower has {theirs:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn rounds() -> u64 {
    std::env::var("DUALWRITE_SINGLE_STORE_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(12)
}

fn cell(queue: Queue, delivery: Delivery, change: Move) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for n in 0..rounds() {
        runtime.block_on(round(queue, delivery, change, n));
    }
}

macro_rules! cells {
    ($($name:ident: $queue:expr, $delivery:expr, $change:expr;)*) => {
        $(
            #[test]
            fn $name() {
                cell($queue, $delivery, $change);
            }
        )*
    };
}

cells! {
    leaving_off_in_memory_sync: Queue::Memory, Delivery::Sync, Move::OutOfOff;
    leaving_off_in_memory_journaled: Queue::Memory, Delivery::Journaled, Move::OutOfOff;
    leaving_off_sqlite_sync: Queue::Sqlite, Delivery::Sync, Move::OutOfOff;
    leaving_off_sqlite_journaled: Queue::Sqlite, Delivery::Journaled, Move::OutOfOff;
    entering_complete_in_memory_sync: Queue::Memory, Delivery::Sync, Move::IntoComplete;
    entering_complete_in_memory_journaled: Queue::Memory, Delivery::Journaled, Move::IntoComplete;
    entering_complete_sqlite_sync: Queue::Sqlite, Delivery::Sync, Move::IntoComplete;
    entering_complete_sqlite_journaled: Queue::Sqlite, Delivery::Journaled, Move::IntoComplete;
}
