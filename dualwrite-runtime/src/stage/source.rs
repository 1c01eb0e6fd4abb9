//! A stage shared by every instance of a service.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::Stage;
use crate::rollout::Rollout;

/// Where the instances of a service keep their common stage: a row beside
/// the reconciliation queue ([`SqliteStageSource`](super::SqliteStageSource)
/// in the SQLite file; PostgreSQL and MySQL later).
///
/// A [`StageHandle`](super::StageHandle) built with
/// [`StageHandle::with_source`](super::StageHandle::with_source) reads it at
/// start, writes every move to it (refusing the move if the write fails or
/// another instance moved first), and polls it to follow moves made
/// elsewhere. An instance that cannot read it keeps the stage it last knew
/// and says so (a warning, an observer call, a gauge and
/// [`StageHandle::source_status`](super::StageHandle::source_status)).
#[async_trait]
pub trait StageSource: Send + Sync + 'static {
    /// The stored stage, or `None` if none was ever stored.
    async fn load(&self) -> Result<Option<StoredStage>, StageSourceError>;

    /// Stores `stage` if the stored version is still `expected` (`None`:
    /// nothing stored yet). Returns the new version, or `None` when another
    /// writer got there first.
    async fn store(
        &self,
        expected: Option<u64>,
        stage: &StageRecord,
    ) -> Result<Option<u64>, StageSourceError>;

    /// Where the source is, for messages (a file path, a table).
    fn describe(&self) -> String;

    /// Records that `instance` has applied `version` and has no write in
    /// progress that was routed by an older one, valid for `ttl` from now
    /// (by the source's clock where it has one). A fenced move waits for
    /// every unexpired acknowledgement to reach its version (see
    /// [`Fence`](super::Fence)).
    ///
    /// The default keeps none, and says so: such a source cannot be fenced.
    async fn acknowledge(
        &self,
        instance: &str,
        version: u64,
        ttl: Duration,
    ) -> Result<(), StageSourceError> {
        let _ = (instance, version, ttl);
        Err(StageSourceError::new(
            self.describe(),
            "this stage source keeps no acknowledgements, so its stage moves cannot be fenced",
        ))
    }

    /// Every acknowledgement that has not expired. The default keeps none.
    async fn acknowledgements(&self) -> Result<Vec<Acknowledgement>, StageSourceError> {
        Ok(Vec::new())
    }
}

/// An instance's word that it applied a version of the stage
/// ([`StageSource::acknowledge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledgement {
    /// The instance, as its [`Fence`](super::Fence) names it.
    pub instance: String,
    /// The version it applied.
    pub version: u64,
}

/// What a move writes to the source.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRecord {
    /// The base stage.
    pub stage: Stage,
    /// The rollout by key, if any.
    pub rollout: Option<Rollout>,
    /// The reason of a forced move.
    pub reason: Option<String>,
    /// Set while a fenced move to this stage is under way: every fenced
    /// instance holds its writes until the move is stored (see
    /// [`Fence`](super::Fence)). `None` otherwise.
    pub moving_to: Option<Stage>,
}

impl StageRecord {
    /// `stage`, with no rollout, reason or move under way.
    pub fn new(stage: Stage) -> Self {
        StageRecord {
            stage,
            rollout: None,
            reason: None,
            moving_to: None,
        }
    }
}

/// A stage read from the source.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredStage {
    /// What was stored.
    pub record: StageRecord,
    /// Increases with every store; tells instances whether anything moved.
    pub version: u64,
    /// When it was stored, if the source keeps that.
    pub changed_at: Option<SystemTime>,
}

/// A stage source could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stage source {source_name}: {message}")]
pub struct StageSourceError {
    /// Which source.
    pub source_name: String,
    /// What went wrong.
    pub message: String,
}

impl StageSourceError {
    /// An error of the source described by `source_name`.
    pub fn new(source_name: impl Into<String>, message: impl Into<String>) -> Self {
        StageSourceError {
            source_name: source_name.into(),
            message: message.into(),
        }
    }
}

/// How this instance's stage relates to the shared source.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceStatus {
    /// The handle has no shared source: its stage is this process's own.
    Local,
    /// The last read of the source succeeded.
    InSync {
        /// The version applied.
        version: u64,
    },
    /// The source cannot be read; the stage in use is the last one known.
    Unreachable {
        /// The stage kept.
        kept_stage: Stage,
        /// The last error.
        error: String,
        /// When reading first failed.
        since: SystemTime,
    },
}

impl SourceStatus {
    /// Whether the stage in use may be out of date.
    pub fn is_stale(&self) -> bool {
        matches!(self, SourceStatus::Unreachable { .. })
    }
}

/// A source shared with the caller (to inspect it, or to build several
/// handles on it in tests).
#[async_trait]
impl<S: StageSource + ?Sized> StageSource for std::sync::Arc<S> {
    async fn load(&self) -> Result<Option<StoredStage>, StageSourceError> {
        (**self).load().await
    }

    async fn store(
        &self,
        expected: Option<u64>,
        stage: &StageRecord,
    ) -> Result<Option<u64>, StageSourceError> {
        (**self).store(expected, stage).await
    }

    fn describe(&self) -> String {
        (**self).describe()
    }

    async fn acknowledge(
        &self,
        instance: &str,
        version: u64,
        ttl: Duration,
    ) -> Result<(), StageSourceError> {
        (**self).acknowledge(instance, version, ttl).await
    }

    async fn acknowledgements(&self) -> Result<Vec<Acknowledgement>, StageSourceError> {
        (**self).acknowledgements().await
    }
}

/// The stored stage of `$row`, a row of the columns every SQL source's
/// `load` selects in this order: stage, rollout stage, rollout basis
/// points, version, reason, the change time as a count of `$unit` since the
/// epoch (`Duration::from_micros`, `Duration::from_millis`), `moving_to`.
/// A column that does not decode is `$read`'s error; a value that names no
/// stage, an error of the source `$described`.
macro_rules! stage_from_row {
    ($row:expr, $read:expr, $unit:path, $described:expr) => {{
        let row = &$row;
        let read = $read;
        let changed_at: i64 = row.try_get(5).map_err(read)?;
        $crate::stage::source::StageColumns {
            stage: row.try_get(0).map_err(read)?,
            rollout_stage: row.try_get(1).map_err(read)?,
            basis_points: row.try_get(2).map_err(read)?,
            version: row.try_get(3).map_err(read)?,
            reason: row.try_get(4).map_err(read)?,
            changed_at: u64::try_from(changed_at)
                .ok()
                .map(|count| std::time::UNIX_EPOCH + $unit(count)),
            moving_to: row.try_get(6).map_err(read)?,
        }
        .decode($described)
    }};
}
pub(super) use stage_from_row;

/// The columns of a stored stage as a SQL source reads them, checked and
/// turned into a [`StoredStage`] (shared by the SQLite and server sources).
pub(super) struct StageColumns {
    pub(super) stage: String,
    pub(super) rollout_stage: Option<String>,
    pub(super) basis_points: Option<i64>,
    pub(super) version: i64,
    pub(super) reason: Option<String>,
    pub(super) changed_at: Option<SystemTime>,
    pub(super) moving_to: Option<String>,
}

impl StageColumns {
    /// The stage they hold; a column that names no stage is an error of the
    /// source `described`.
    pub(super) fn decode(self, described: &str) -> Result<StoredStage, StageSourceError> {
        use std::str::FromStr;
        let error = |what: &str, error: crate::vocabulary::ParseStageError| {
            StageSourceError::new(described, format!("could not {what}: {error}"))
        };
        let stage = Stage::from_str(&self.stage).map_err(|e| error("read the stage", e))?;
        let rollout = match self.rollout_stage {
            None => None,
            Some(text) => {
                let stage = Stage::from_str(&text).map_err(|e| error("read the rollout", e))?;
                let basis_points = self.basis_points.unwrap_or(0).clamp(0, 10_000) as u16;
                Rollout::from_parts(stage, basis_points)
            }
        };
        let moving_to = self
            .moving_to
            .map(|text| Stage::from_str(&text))
            .transpose()
            .map_err(|e| error("read the move under way", e))?;
        Ok(StoredStage {
            record: StageRecord {
                stage,
                rollout,
                reason: self.reason,
                moving_to,
            },
            version: u64::try_from(self.version).unwrap_or(0),
            changed_at: self.changed_at,
        })
    }
}
