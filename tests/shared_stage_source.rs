//! Instances sharing a stage source (a table in a SQLite file) move
//! together; an instance that cannot read the source keeps its last stage
//! and says so.

mod reads_support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dualwrite_runtime::observe::Observer;
use dualwrite_runtime::stage::{
    SourceStatus, SqliteStageSource, StageRecord, StageSource, StageSourceError, StoredStage,
};
use dualwrite_runtime::{Rollout, Stage, StageError, StageHandle};
use reads_support::{builder, Collector};

fn temp_file(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!(
        "dualwrite-{name}-{}-{nanos}.db",
        std::process::id()
    ))
}

async fn instance(path: &PathBuf, poll: Duration) -> StageHandle {
    let source = SqliteStageSource::open(path).await.unwrap();
    StageHandle::with_source(source, Stage::DualWrite, poll)
        .await
        .unwrap()
}

/// Waits (up to 10 s of real time, polling) until `handle` is at `stage`.
async fn until_at(handle: &StageHandle, stage: Stage) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.get() != stage {
        assert!(
            Instant::now() < deadline,
            "never reached {stage}, at {}",
            handle.get()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_move_on_one_instance_reaches_the_other_on_its_next_poll() {
    let path = temp_file("poll");
    let first = instance(&path, Duration::from_secs(3600)).await;
    let second = instance(&path, Duration::from_millis(20)).await;
    assert_eq!(
        (first.get(), second.get()),
        (Stage::DualWrite, Stage::DualWrite)
    );
    first.set(Stage::Shadow).await.unwrap();
    until_at(&second, Stage::Shadow).await;
    assert!(matches!(
        second.source_status(),
        SourceStatus::InSync { .. }
    ));
}

#[tokio::test]
async fn a_restarted_instance_starts_at_the_shared_stage() {
    let path = temp_file("restart");
    let first = instance(&path, Duration::from_secs(3600)).await;
    first.set(Stage::Shadow).await.unwrap();
    drop(first);
    let restarted = instance(&path, Duration::from_secs(3600)).await;
    assert_eq!(
        restarted.get(),
        Stage::Shadow,
        "not its own initial DualWrite"
    );
}

#[tokio::test]
async fn two_wrappers_move_together_and_a_forced_reason_reaches_the_other_instance() {
    let path = temp_file("wrappers");
    let (first_seen, second_seen) = (
        Arc::new(Collector::default()),
        Arc::new(Collector::default()),
    );
    let first = builder(Stage::DualWrite, &first_seen)
        .stage_handle(instance(&path, Duration::from_secs(3600)).await)
        .build()
        .unwrap();
    let second = builder(Stage::DualWrite, &second_seen)
        .stage_handle(instance(&path, Duration::from_secs(3600)).await)
        .build()
        .unwrap();
    first.stage().set(Stage::Shadow).await.unwrap();
    first
        .stage()
        .set_rollout(Some(Rollout::new(Stage::Live, 10.0).unwrap()))
        .await
        .unwrap();
    second.stage().refresh().await.unwrap();
    assert_eq!(second.stage().get(), Stage::Shadow);
    assert_eq!(
        second.stage().rollout(),
        Rollout::new(Stage::Live, 10.0).ok()
    );

    first
        .stage()
        .force(Stage::DualWrite, "incident 77: new store overloaded")
        .await
        .unwrap();
    second.stage().refresh().await.unwrap();
    assert_eq!(second.stage().get(), Stage::DualWrite);
    let last = second_seen
        .stage_changes
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!((last.from, last.to), (Stage::Shadow, Stage::DualWrite));
    assert_eq!(
        last.forced.as_deref(),
        Some("incident 77: new store overloaded")
    );
}

#[tokio::test]
async fn a_stage_edited_in_the_table_by_hand_is_followed() {
    let path = temp_file("by-hand");
    let handle = instance(&path, Duration::from_millis(20)).await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("UPDATE dualwrite_stage SET stage = 'shadow', version = version + 1")
        .execute(&pool)
        .await
        .unwrap();
    until_at(&handle, Stage::Shadow).await;
}

/// A source held in memory that can be made unreadable.
#[derive(Default)]
struct FlakySource {
    stored: Mutex<Option<StoredStage>>,
    broken: AtomicBool,
}

#[async_trait]
impl StageSource for FlakySource {
    async fn load(&self) -> Result<Option<StoredStage>, StageSourceError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(StageSourceError::new("flaky", "connection refused"));
        }
        Ok(self.stored.lock().unwrap().clone())
    }

    async fn store(
        &self,
        expected: Option<u64>,
        record: &StageRecord,
    ) -> Result<Option<u64>, StageSourceError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(StageSourceError::new("flaky", "connection refused"));
        }
        let mut stored = self.stored.lock().unwrap();
        let current = stored.as_ref().map(|stored| stored.version);
        if current != expected {
            return Ok(None);
        }
        let version = current.unwrap_or(0) + 1;
        *stored = Some(StoredStage {
            record: record.clone(),
            version,
            changed_at: None,
        });
        Ok(Some(version))
    }

    fn describe(&self) -> String {
        "flaky".into()
    }
}

#[tokio::test]
async fn an_instance_that_cannot_read_the_source_keeps_its_stage_and_says_so() {
    let source = Arc::new(FlakySource::default());
    let handle = StageHandle::with_source(
        Arc::clone(&source),
        Stage::Shadow,
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let seen = Arc::new(Collector::default());
    handle.add_observer(Arc::clone(&seen) as Arc<dyn Observer>);

    source.broken.store(true, Ordering::SeqCst);
    assert!(matches!(
        handle.refresh().await,
        Err(StageError::Source { .. })
    ));
    assert_eq!(handle.get(), Stage::Shadow, "the last known stage is kept");
    match handle.source_status() {
        SourceStatus::Unreachable {
            kept_stage, error, ..
        } => {
            assert_eq!(kept_stage, Stage::Shadow);
            assert!(error.contains("connection refused"), "{error}");
        }
        other => panic!("expected unreachable, got {other:?}"),
    }
    let _ = handle.refresh().await;
    let reports = seen.source_errors.lock().unwrap().clone();
    assert_eq!(reports.len(), 1, "told once, not on every failed read");
    assert_eq!(reports[0].kept_stage, Stage::Shadow);

    let refused = handle.set(Stage::Live).await.unwrap_err();
    assert!(
        matches!(refused, StageError::Source { .. }),
        "a move that cannot be shared is refused: {refused}"
    );

    source.broken.store(false, Ordering::SeqCst);
    handle.refresh().await.unwrap();
    assert!(!handle.source_status().is_stale());
    handle.set(Stage::Live).await.unwrap();
}

#[tokio::test]
async fn a_source_that_cannot_be_read_at_start_is_an_error() {
    let source = Arc::new(FlakySource::default());
    source.broken.store(true, Ordering::SeqCst);
    let error = StageHandle::with_source(source, Stage::Shadow, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("connection refused"), "{error}");
}
