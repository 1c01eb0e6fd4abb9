//! The shared stage in a SQLite file: one row per migration in the table
//! `dualwrite_stage`, beside the reconciliation queue's tables.
//!
//! ```text
//! $ sqlite3 dualwrite.db 'SELECT * FROM dualwrite_stage'
//! migration|stage |rollout_stage|rollout_basis_points|version|reason|changed_at_ms
//! default  |shadow|live         |1000                |4      |      |1718000000000
//! ```
//!
//! Fenced instances (see [`Fence`](super::Fence)) keep their
//! acknowledgements in `dualwrite_stage_acks`, one row per instance:
//! `SELECT * FROM dualwrite_stage_acks` shows which instance applied which
//! version, until when.
//!
//! `version` grows with every move, which is how instances tell that
//! something moved. An operator may edit the row by hand (`UPDATE
//! dualwrite_stage SET stage = 'dual_write', version = version + 1`); the
//! guardrails only apply to moves made through a [`StageHandle`](super::StageHandle).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;

use super::source::{
    stage_from_row, Acknowledgement, StageRecord, StageSource, StageSourceError, StoredStage,
};
use super::Stage;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS dualwrite_stage (
    migration TEXT PRIMARY KEY NOT NULL,
    stage TEXT NOT NULL,
    rollout_stage TEXT,
    rollout_basis_points INTEGER,
    version INTEGER NOT NULL,
    reason TEXT,
    changed_at_ms INTEGER NOT NULL,
    moving_to TEXT
)";

/// The instances' acknowledgements of fenced moves (see `Fence`).
const ACKS: &str = "CREATE TABLE IF NOT EXISTS dualwrite_stage_acks (
    migration TEXT NOT NULL,
    instance TEXT NOT NULL,
    version INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (migration, instance)
)";

/// A [`StageSource`] in a SQLite file (usually the queue's file), with a
/// connection of its own.
///
/// ```no_run
/// use std::time::Duration;
/// use dualwrite_runtime::stage::SqliteStageSource;
/// use dualwrite_runtime::{Stage, StageHandle};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let source = SqliteStageSource::open("dualwrite.db").await?;
/// let stage = StageHandle::with_source(source, Stage::DualWrite, Duration::from_secs(1)).await?;
/// // DualWrite::builder(old, new).stage_handle(stage.clone())...
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStageSource {
    pool: SqlitePool,
    path: PathBuf,
    migration: String,
}

impl SqliteStageSource {
    /// Opens (creating if needed) the file at `path` and the stage table,
    /// for the migration named `default`.
    ///
    /// # Errors
    ///
    /// [`StageSourceError`] when the file or the table cannot be opened.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StageSourceError> {
        Self::open_named(path, "default").await
    }

    /// Like [`open`](Self::open), for one of several migrations sharing the
    /// file, each with its own row.
    ///
    /// # Errors
    ///
    /// [`StageSourceError`] when the file or the table cannot be opened.
    pub async fn open_named(
        path: impl AsRef<Path>,
        migration: &str,
    ) -> Result<Self, StageSourceError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .connect_with(options)
            .await
            .map_err(|error| StageSourceError::new(&shown, format!("could not open: {error}")))?;
        let create = |error: sqlx::Error| {
            StageSourceError::new(&shown, format!("could not create the stage table: {error}"))
        };
        sqlx::query(SCHEMA).execute(&pool).await.map_err(create)?;
        sqlx::query(ACKS).execute(&pool).await.map_err(create)?;
        // A file made before fenced moves existed has no `moving_to`.
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info('dualwrite_stage')")
                .fetch_all(&pool)
                .await
                .map_err(create)?;
        if !columns.iter().any(|column| column == "moving_to") {
            sqlx::query("ALTER TABLE dualwrite_stage ADD COLUMN moving_to TEXT")
                .execute(&pool)
                .await
                .map_err(create)?;
        }
        Ok(SqliteStageSource {
            pool,
            path,
            migration: migration.to_owned(),
        })
    }

    fn error(&self, what: &str, error: impl std::fmt::Display) -> StageSourceError {
        StageSourceError::new(self.describe(), format!("could not {what}: {error}"))
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

#[async_trait]
impl StageSource for SqliteStageSource {
    async fn load(&self) -> Result<Option<StoredStage>, StageSourceError> {
        let row = sqlx::query(
            "SELECT stage, rollout_stage, rollout_basis_points, version, reason, changed_at_ms, moving_to
             FROM dualwrite_stage WHERE migration = ?",
        )
        .bind(&self.migration)
        .fetch_optional(&self.pool)
        .await
        .map_err(|error| self.error("read the stage", error))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let read = |error: sqlx::Error| self.error("read the stage row", error);
        stage_from_row!(row, read, Duration::from_millis, &self.describe()).map(Some)
    }

    async fn store(
        &self,
        expected: Option<u64>,
        record: &StageRecord,
    ) -> Result<Option<u64>, StageSourceError> {
        let rollout_stage = record.rollout.map(|rollout| rollout.stage().as_str());
        let basis_points = record
            .rollout
            .map(|rollout| i64::from(rollout.basis_points()));
        let stored = match expected {
            None => sqlx::query(
                "INSERT OR IGNORE INTO dualwrite_stage
                 (migration, stage, rollout_stage, rollout_basis_points, version, reason, changed_at_ms, moving_to)
                 VALUES (?, ?, ?, ?, 1, ?, ?, ?)",
            )
            .bind(&self.migration)
            .bind(record.stage.as_str())
            .bind(rollout_stage)
            .bind(basis_points)
            .bind(&record.reason)
            .bind(now_ms())
            .bind(record.moving_to.map(Stage::as_str))
            .execute(&self.pool)
            .await
            .map(|done| (done.rows_affected() == 1).then_some(1)),
            Some(expected) => {
                let expected = i64::try_from(expected).unwrap_or(i64::MAX);
                sqlx::query(
                    "UPDATE dualwrite_stage
                     SET stage = ?, rollout_stage = ?, rollout_basis_points = ?,
                         version = version + 1, reason = ?, changed_at_ms = ?, moving_to = ?
                     WHERE migration = ? AND version = ?",
                )
                .bind(record.stage.as_str())
                .bind(rollout_stage)
                .bind(basis_points)
                .bind(&record.reason)
                .bind(now_ms())
                .bind(record.moving_to.map(Stage::as_str))
                .bind(&self.migration)
                .bind(expected)
                .execute(&self.pool)
                .await
                .map(|done| {
                    (done.rows_affected() == 1).then(|| u64::try_from(expected + 1).unwrap_or(0))
                })
            }
        };
        stored.map_err(|error| self.error("store the stage", error))
    }

    fn describe(&self) -> String {
        format!(
            "SQLite {} (migration `{}`)",
            self.path.display(),
            self.migration
        )
    }

    async fn acknowledge(
        &self,
        instance: &str,
        version: u64,
        ttl: Duration,
    ) -> Result<(), StageSourceError> {
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO dualwrite_stage_acks (migration, instance, version, expires_at_ms)
             VALUES (?, ?, ?, ?)
             ON CONFLICT (migration, instance) DO UPDATE
             SET version = excluded.version, expires_at_ms = excluded.expires_at_ms",
        )
        .bind(&self.migration)
        .bind(instance)
        .bind(i64::try_from(version).unwrap_or(i64::MAX))
        .bind(now_ms().saturating_add(ttl))
        .execute(&self.pool)
        .await
        .map_err(|error| self.error("acknowledge the stage", error))?;
        Ok(())
    }

    async fn acknowledgements(&self) -> Result<Vec<Acknowledgement>, StageSourceError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT instance, version FROM dualwrite_stage_acks
             WHERE migration = ? AND expires_at_ms > ? ORDER BY instance",
        )
        .bind(&self.migration)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(|error| self.error("read the instances' acknowledgements", error))?;
        Ok(rows
            .into_iter()
            .map(|(instance, version)| Acknowledgement {
                instance,
                version: u64::try_from(version).unwrap_or(0),
            })
            .collect())
    }
}
