//! Fenced stage moves (`StageHandle::with_fenced_source`): instances sharing
//! a stage source never write under two stages at once.
//!
//! Two instances (two wrappers with their own handles on one SQLite stage
//! source) write continuously while one moves the stage. Each write carries
//! a unique value, and both stores append to one ledger, so the order in
//! which a write touched the stores tells the stage it was made under:
//! `Off` touches only the old store, `DualWrite`/`Shadow` old then new,
//! `Live`/`RampDown` new then old, `Complete` only the new store. The
//! property, for every move that changes what a write does (`Off` to
//! `DualWrite`, `Shadow` to `Live`, `RampDown` to `Complete`): once any
//! instance began a write under the new stage, no instance begins one under
//! the old stage. Without the fence the slower-polling instance keeps
//! writing under the old stage after the move (the unfenced tests show it,
//! for each of the three moves); with it, never.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dualwrite_runtime::stage::{
    Acknowledgement, Fence, SqliteStageSource, StageRecord, StageSource, StageSourceError,
    StoredStage,
};
use dualwrite_runtime::{DualWrite, InMemoryQueue, Stage, StageError, StageHandle};
use dualwrite_suite::{KvRepo, StoreError};

/// What both stores accepted, in one order: (store, value).
#[derive(Clone, Default)]
struct Ledger(Arc<Mutex<Vec<(Store, u64)>>>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    Old,
    New,
}

impl Ledger {
    /// Every value with the stores it reached, in the order of its first
    /// touch.
    fn writes(&self) -> Vec<(u64, Vec<Store>)> {
        let mut order = Vec::new();
        let mut touched: BTreeMap<u64, Vec<Store>> = BTreeMap::new();
        for &(store, value) in self.0.lock().unwrap().iter() {
            let stores = touched.entry(value).or_default();
            if stores.is_empty() {
                order.push(value);
            }
            stores.push(store);
        }
        order
            .into_iter()
            .map(|value| (value, touched.remove(&value).unwrap()))
            .collect()
    }

    fn last(&self, wanted: Store) -> Option<u64> {
        let entries = self.0.lock().unwrap();
        entries
            .iter()
            .rev()
            .find(|(store, _)| *store == wanted)
            .map(|(_, value)| *value)
    }
}

/// The stores a write under `stage` touches, in order.
fn touches(stage: Stage) -> Vec<Store> {
    match stage {
        Stage::Off => vec![Store::Old],
        Stage::DualWrite | Stage::Shadow => vec![Store::Old, Store::New],
        Stage::Live | Stage::RampDown => vec![Store::New, Store::Old],
        _ => vec![Store::New],
    }
}

/// A store that appends what it accepts to the shared ledger.
#[derive(Clone)]
struct Recorder {
    store: Store,
    ledger: Ledger,
}

fn stores(ledger: &Ledger) -> (Recorder, Recorder) {
    let recorder = |store| Recorder {
        store,
        ledger: ledger.clone(),
    };
    (recorder(Store::Old), recorder(Store::New))
}

impl KvRepo for Recorder {
    async fn put(&self, _key: u32, value: u64) -> Result<(), StoreError> {
        self.ledger.0.lock().unwrap().push((self.store, value));
        Ok(())
    }
    async fn delete(&self, _key: u32) -> Result<(), StoreError> {
        Ok(())
    }
    async fn get(&self, _key: u32) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
}

/// The stage source, which a test can make unreadable.
#[derive(Clone)]
struct Breakable {
    inner: Arc<SqliteStageSource>,
    broken: Arc<AtomicBool>,
}

#[async_trait]
impl StageSource for Breakable {
    async fn load(&self) -> Result<Option<StoredStage>, StageSourceError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(StageSourceError::new(self.describe(), "unreachable (test)"));
        }
        self.inner.load().await
    }
    async fn store(
        &self,
        expected: Option<u64>,
        stage: &StageRecord,
    ) -> Result<Option<u64>, StageSourceError> {
        self.inner.store(expected, stage).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn acknowledge(
        &self,
        instance: &str,
        version: u64,
        ttl: Duration,
    ) -> Result<(), StageSourceError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(StageSourceError::new(self.describe(), "unreachable (test)"));
        }
        self.inner.acknowledge(instance, version, ttl).await
    }
    async fn acknowledgements(&self) -> Result<Vec<Acknowledgement>, StageSourceError> {
        self.inner.acknowledgements().await
    }
}

fn temp_file(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!(
        "dualwrite-fence-{name}-{}-{nanos}.db",
        std::process::id()
    ))
}

async fn source(path: &PathBuf) -> Breakable {
    Breakable {
        inner: Arc::new(SqliteStageSource::open(path).await.unwrap()),
        broken: Arc::default(),
    }
}

async fn handle(source: Breakable, poll: Duration, fence: Option<Fence>) -> StageHandle {
    handle_at(Stage::Off, source, poll, fence).await
}

async fn handle_at(
    stage: Stage,
    source: Breakable,
    poll: Duration,
    fence: Option<Fence>,
) -> StageHandle {
    match fence {
        Some(fence) => StageHandle::with_fenced_source(source, stage, poll, fence)
            .await
            .unwrap(),
        None => StageHandle::with_source(source, stage, poll).await.unwrap(),
    }
}

fn wrapper(old: &Recorder, new: &Recorder, stage: &StageHandle) -> DualWrite<Recorder, Recorder> {
    DualWrite::builder(old.clone(), new.clone())
        .queue(InMemoryQueue::new())
        .stage_handle(stage.clone())
        .build()
        .unwrap()
}

/// Both instances write for a while, starting at `from`; the fast one moves
/// to `to` in the middle. Returns whether a write under `from` began after a
/// write under `to` had begun.
async fn writes_straddle_the_move(fenced: bool, from: Stage, to: Stage) -> bool {
    let path = temp_file(&format!(
        "{}-{from}-{to}",
        if fenced { "fenced" } else { "plain" }
    ));
    let fence = |name: &str| {
        fenced.then(|| {
            Fence::new(name)
                .lease(Duration::from_millis(400))
                .patience(Duration::from_secs(5))
        })
    };
    let mover = handle_at(
        from,
        source(&path).await,
        Duration::from_millis(10),
        fence("mover"),
    )
    .await;
    let laggard = handle_at(
        from,
        source(&path).await,
        Duration::from_millis(150),
        fence("laggard"),
    )
    .await;
    let ledger = Ledger::default();
    let (old, new) = stores(&ledger);
    let instances = [wrapper(&old, &new, &mover), wrapper(&old, &new, &laggard)];
    let next = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = instances
        .iter()
        .cloned()
        .map(|instance| {
            let (next, stop) = (Arc::clone(&next), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let value = next.fetch_add(1, Ordering::SeqCst);
                    instance.put(1, value).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    mover.set(to).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(laggard.get(), to);
    let writes = ledger.writes();
    let (before, after) = (touches(from), touches(to));
    for (value, stores) in &writes {
        assert!(
            *stores == before || *stores == after,
            "write {value} touched {stores:?}, under neither {from} nor {to}"
        );
    }
    let first_after = writes
        .iter()
        .position(|(_, stores)| *stores == after)
        .unwrap_or_else(|| panic!("no write was made under {to}"));
    writes[first_after..]
        .iter()
        .any(|(_, stores)| *stores == before)
}

/// The moves after which a write does something else: what it writes, or in
/// which order.
const MOVES: [(Stage, Stage); 3] = [
    (Stage::Off, Stage::DualWrite),
    (Stage::Shadow, Stage::Live),
    (Stage::RampDown, Stage::Complete),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fence_an_instance_writes_under_the_old_stage_after_another_moved_on() {
    for (from, to) in MOVES {
        assert!(
            writes_straddle_the_move(false, from, to).await,
            "{from} to {to}: the laggard (polling every 150 ms) should have written under {from} after the move"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_fence_no_instance_writes_under_the_old_stage_after_the_move() {
    for (from, to) in MOVES {
        assert!(
            !writes_straddle_the_move(true, from, to).await,
            "{from} to {to}: a write under {from} began after one under {to}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_cannot_read_the_source_past_its_lease_holds_writes_and_moves_go_on() {
    let path = temp_file("stale");
    let lease = Duration::from_millis(200);
    let fence = |name: &str| {
        Fence::new(name)
            .lease(lease)
            .patience(Duration::from_secs(5))
    };
    let mover = handle(
        source(&path).await,
        Duration::from_millis(10),
        Some(fence("mover")),
    )
    .await;
    let cut_off_source = source(&path).await;
    let broken = Arc::clone(&cut_off_source.broken);
    let cut_off = handle(
        cut_off_source,
        Duration::from_millis(20),
        Some(fence("cut-off")),
    )
    .await;
    let ledger = Ledger::default();
    let (old, new) = stores(&ledger);
    let writer = wrapper(&old, &new, &cut_off);
    writer.put(1, 1).await.unwrap();

    broken.store(true, Ordering::SeqCst);
    tokio::time::sleep(lease * 2).await;
    let held = tokio::time::timeout(Duration::from_millis(200), writer.put(1, 2)).await;
    assert!(
        held.is_err(),
        "a write went ahead on a stage it could not confirm"
    );

    // The mover does not wait for it beyond its expired acknowledgement.
    let started = std::time::Instant::now();
    mover.set(Stage::DualWrite).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    broken.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(5), writer.put(1, 3))
        .await
        .expect("writes go on once the source is readable")
        .unwrap();
    assert_eq!(cut_off.get(), Stage::DualWrite);
    assert_eq!(
        ledger.last(Store::New),
        Some(3),
        "written under the new stage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_an_instance_never_acknowledges_is_withdrawn_and_names_the_instance() {
    let path = temp_file("ghost");
    let fence = Fence::new("mover")
        .lease(Duration::from_millis(100))
        .patience(Duration::from_millis(300));
    let raw = source(&path).await;
    let mover = handle(raw.clone(), Duration::from_millis(10), Some(fence)).await;
    // An instance that acknowledged version 1 and then hung: its
    // acknowledgement is still live, but it never applies the fence.
    raw.acknowledge("stuck-instance", 1, Duration::from_secs(60))
        .await
        .unwrap();
    let error = mover.set(Stage::DualWrite).await.unwrap_err();
    match &error {
        StageError::Fence { waiting_for, .. } => {
            assert_eq!(waiting_for, &vec!["stuck-instance".to_owned()]);
        }
        other => panic!("expected a fence error, got {other}"),
    }
    assert!(error.to_string().contains("stuck-instance"), "{error}");
    assert_eq!(mover.get(), Stage::Off, "the move was not made");
    let stored = raw.load().await.unwrap().unwrap();
    assert_eq!(
        (stored.record.stage, stored.record.moving_to),
        (Stage::Off, None)
    );
    // Writes are not left held.
    let (old, new) = stores(&Ledger::default());
    tokio::time::timeout(
        Duration::from_secs(1),
        wrapper(&old, &new, &mover).put(1, 1),
    )
    .await
    .expect("not held")
    .unwrap();
}

#[tokio::test]
async fn fence_settings_that_cannot_work_are_refused_by_name() {
    let path = temp_file("settings");
    let refused = StageHandle::with_fenced_source(
        source(&path).await,
        Stage::Off,
        Duration::from_secs(1),
        Fence::new("a").lease(Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    assert!(
        refused.to_string().contains("twice the poll interval"),
        "{refused}"
    );
    let refused = StageHandle::with_fenced_source(
        source(&path).await,
        Stage::Off,
        Duration::from_millis(10),
        Fence::new("a")
            .lease(Duration::from_secs(5))
            .patience(Duration::from_secs(1)),
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("patience"), "{refused}");
}
