//! Opening the stores a command names, after checking that they exist and
//! are dualwrite's, so that a wrong path is an error rather than a new file.
//!
//! The runtime's openers create what is missing (a service starting for the
//! first time must get its queue and its stage table). An operator's typo
//! must not: every file is checked first, through a connection that cannot
//! create or change anything, and only a file that is a dualwrite queue (its
//! `application_id`) or already holds the stage table is handed to them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::stage::{SqliteStageSource, StageSource, StoredStage};
use dualwrite_runtime::{QueueAdmin, ReconciliationQueue};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::error::CliError;
use crate::location::Location;

/// `PRAGMA application_id` of a dualwrite queue file (`"dwqu"`).
const QUEUE_APPLICATION_ID: i64 = 0x6477_7175;

/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// What a SQLite file turned out to hold.
#[derive(Debug, Clone, Copy)]
struct Probe {
    is_queue: bool,
    has_stage_table: bool,
}

/// Checks that `path` is an existing SQLite database file, reading its
/// first bytes only.
pub(crate) fn check_sqlite_file(role: &str, path: &Path) -> Result<(), CliError> {
    let shown = path.display();
    let metadata = std::fs::metadata(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            CliError::store(format!(
                "{role} {shown}: the file does not exist (this tool never creates one; a service creates its queue when it starts)"
            ))
        } else {
            CliError::store(format!("{role} {shown}: cannot read the file: {error}"))
        }
    })?;
    if !metadata.is_file() {
        return Err(CliError::store(format!("{role} {shown}: not a file")));
    }
    let mut header = [0u8; 16];
    let read = std::fs::File::open(path).and_then(|mut file| {
        use std::io::Read;
        let mut filled = 0;
        while filled < header.len() {
            match file.read(&mut header[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    });
    match read {
        Ok(0) => Err(CliError::store(format!(
            "{role} {shown}: the file is empty, not a SQLite database"
        ))),
        Ok(n) if n < header.len() || &header != SQLITE_MAGIC => Err(CliError::store(format!(
            "{role} {shown}: not a SQLite database"
        ))),
        Ok(_) => Ok(()),
        Err(error) => Err(CliError::store(format!(
            "{role} {shown}: cannot read the file: {error}"
        ))),
    }
}

/// Checks the file at `path` without creating or changing it.
async fn probe(role: &str, path: &Path) -> Result<Probe, CliError> {
    check_sqlite_file(role, path)?;
    let shown = path.display();
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .read_only(true)
        .busy_timeout(Duration::from_secs(5))
        .disable_statement_logging();
    let failed = |what: &str, error: sqlx::Error| {
        CliError::store(format!("{role} {shown}: {what}: {error}"))
    };
    let mut conn = options
        .connect()
        .await
        .map_err(|error| failed("cannot open the file", error))?;
    let application_id: i64 = sqlx::query_scalar("PRAGMA application_id")
        .fetch_one(&mut conn)
        .await
        .map_err(|error| failed("cannot read the file", error))?;
    let stage_tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'dualwrite_stage'",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|error| failed("cannot read the schema", error))?;
    let _ = conn.close().await;
    Ok(Probe {
        is_queue: application_id == QUEUE_APPLICATION_ID,
        has_stage_table: stage_tables > 0,
    })
}

pub(crate) fn sqlite_file<'a>(role: &str, location: &'a Location) -> Result<&'a PathBuf, CliError> {
    match location {
        Location::Sqlite(path) => Ok(path),
        Location::Postgres(_) | Location::Mysql(_) => Err(CliError::Usage(format!(
            "{role} {location}: a queue on this database is not supported yet; use a `sqlite:<path>` URL"
        ))),
    }
}

/// An open queue, closed again when the command is done.
pub(crate) struct OpenQueue {
    queue: SqliteQueue,
    /// What the command acts through.
    pub(crate) admin: QueueAdmin,
}

impl OpenQueue {
    /// The queue as the guardrails of a stage handle watch it.
    pub(crate) fn shared(&self) -> Arc<dyn ReconciliationQueue> {
        Arc::new(self.queue.clone())
    }

    /// Closes the file (the last connection checkpoints it).
    pub(crate) async fn close(self) {
        self.queue.close().await;
    }
}

/// Opens the queue at `location`, which must be an existing dualwrite queue.
pub(crate) async fn queue(location: Option<&Location>) -> Result<OpenQueue, CliError> {
    let location = location.ok_or_else(|| {
        CliError::Usage(
            "no queue given: pass --queue sqlite:<path> or set DUALWRITE_QUEUE".to_owned(),
        )
    })?;
    let path = sqlite_file("queue", location)?;
    if !probe("queue", path).await?.is_queue {
        return Err(CliError::store(format!(
            "queue {}: the file is a SQLite database but not a dualwrite queue (its application_id is not the queue's); nothing was changed",
            path.display()
        )));
    }
    let queue = SqliteQueue::options(path)
        .read_connections(1)
        .open()
        .await
        .map_err(CliError::store)?;
    let admin = QueueAdmin::new(Arc::new(queue.clone()));
    Ok(OpenQueue { queue, admin })
}

/// The shared stage source of a command: the `--stage-source` file, else
/// the queue's file.
pub(crate) struct StageFile {
    path: PathBuf,
    migration: String,
    has_table: bool,
}

impl StageFile {
    /// Checks the stage source's file; nothing is opened for writing.
    pub(crate) async fn find(
        stage_source: Option<&Location>,
        queue: Option<&Location>,
        migration: &str,
    ) -> Result<StageFile, CliError> {
        let location = stage_source.or(queue).ok_or_else(|| {
            CliError::Usage(
                "no stage source given: pass --queue (the stage is kept in the queue's file) or --stage-source, or set DUALWRITE_QUEUE".to_owned(),
            )
        })?;
        let path = sqlite_file("stage source", location)?;
        let probe = probe("stage source", path).await?;
        if !probe.is_queue && !probe.has_stage_table {
            return Err(CliError::store(format!(
                "stage source {}: the file is a SQLite database but not a dualwrite queue, nor a stage source (no `dualwrite_stage` table); nothing was changed",
                path.display()
            )));
        }
        Ok(StageFile {
            path: path.clone(),
            migration: migration.to_owned(),
            has_table: probe.has_stage_table,
        })
    }

    /// The file, for messages.
    pub(crate) fn describe(&self) -> String {
        format!(
            "SQLite {} (migration `{}`)",
            self.path.display(),
            self.migration
        )
    }

    /// Opens the source, creating its table only when `create` (a forced
    /// first move); `None` when the file has no stage table and `create` is
    /// false.
    pub(crate) async fn open(&self, create: bool) -> Result<Option<SqliteStageSource>, CliError> {
        if !self.has_table && !create {
            return Ok(None);
        }
        SqliteStageSource::open_named(&self.path, &self.migration)
            .await
            .map(Some)
            .map_err(CliError::store)
    }

    /// The stored stage, or `None` when none is stored.
    pub(crate) async fn load(&self) -> Result<Option<StoredStage>, CliError> {
        match self.open(false).await? {
            Some(source) => source.load().await.map_err(CliError::store),
            None => Ok(None),
        }
    }
}
