//! Fenced stage moves (`StageHandle::with_fenced_source`): instances sharing
//! a stage source never write under two stages at once.
//!
//! Two instances (two wrappers with their own handles on one SQLite stage
//! source) write continuously while one moves `Off` to `DualWrite`. Each
//! write carries a unique value; a write made in `Off` reaches only the old
//! store. The property: in the old store's order of writes, every `Off`
//! write comes before every `DualWrite` write, i.e. once any instance wrote
//! the new store, no instance wrote the old store alone. Without the fence
//! the slower-polling instance keeps writing in `Off` after the move (the
//! unfenced test shows it); with it, never.

use std::collections::BTreeSet;
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

/// A store that keeps the order in which it accepted values.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<u64>>>);

impl KvRepo for Recorder {
    async fn put(&self, _key: u32, value: u64) -> Result<(), StoreError> {
        self.0.lock().unwrap().push(value);
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
    match fence {
        Some(fence) => StageHandle::with_fenced_source(source, Stage::Off, poll, fence)
            .await
            .unwrap(),
        None => StageHandle::with_source(source, Stage::Off, poll)
            .await
            .unwrap(),
    }
}

fn wrapper(old: &Recorder, new: &Recorder, stage: &StageHandle) -> DualWrite<Recorder, Recorder> {
    DualWrite::builder(old.clone(), new.clone())
        .queue(InMemoryQueue::new())
        .stage_handle(stage.clone())
        .build()
        .unwrap()
}

/// Both instances write for a while; the fast one moves `Off` to
/// `DualWrite` in the middle. Returns whether an `Off` write came after a
/// `DualWrite` write in the old store.
async fn writes_straddle_the_move(fenced: bool) -> bool {
    let path = temp_file(if fenced { "fenced" } else { "plain" });
    let fence = |name: &str| {
        fenced.then(|| {
            Fence::new(name)
                .lease(Duration::from_millis(400))
                .patience(Duration::from_secs(5))
        })
    };
    let mover = handle(
        source(&path).await,
        Duration::from_millis(10),
        fence("mover"),
    )
    .await;
    let laggard = handle(
        source(&path).await,
        Duration::from_millis(150),
        fence("laggard"),
    )
    .await;
    let (old, new) = (Recorder::default(), Recorder::default());
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
    mover.set(Stage::DualWrite).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(laggard.get(), Stage::DualWrite);
    let in_new: BTreeSet<u64> = new.0.lock().unwrap().iter().copied().collect();
    let old_order = old.0.lock().unwrap().clone();
    assert!(!in_new.is_empty(), "no write reached the new store");
    let first_dual = old_order
        .iter()
        .position(|value| in_new.contains(value))
        .unwrap();
    old_order[first_dual..]
        .iter()
        .any(|value| !in_new.contains(value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fence_an_instance_writes_the_old_store_alone_after_another_wrote_both() {
    assert!(
        writes_straddle_the_move(false).await,
        "the laggard (polling every 150 ms) should have written in Off after the move"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_fence_no_instance_writes_under_the_old_stage_after_the_move() {
    assert!(!writes_straddle_the_move(true).await);
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
    let (old, new) = (Recorder::default(), Recorder::default());
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
        new.0.lock().unwrap().last(),
        Some(&3),
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
    let (old, new) = (Recorder::default(), Recorder::default());
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
