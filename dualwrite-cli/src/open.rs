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

#[cfg(feature = "mysql")]
use dualwrite_runtime::queue::MySqlQueue;
#[cfg(feature = "postgres")]
use dualwrite_runtime::queue::PostgresQueue;
use dualwrite_runtime::queue::SqliteQueue;
#[cfg(feature = "mysql")]
use dualwrite_runtime::stage::MySqlStageSource;
#[cfg(feature = "postgres")]
use dualwrite_runtime::stage::PostgresStageSource;
use dualwrite_runtime::stage::{SqliteStageSource, StageSource, StoredStage};
#[cfg(any(feature = "postgres", feature = "mysql"))]
use dualwrite_runtime::QueueError;
use dualwrite_runtime::{QueueAdmin, ReconciliationQueue};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::args::GlobalArgs;
use crate::error::CliError;
use crate::location::Location;
#[cfg(feature = "mysql")]
use crate::stores::mysql_pool;
#[cfg(feature = "postgres")]
use crate::stores::pg_pool;
#[cfg(any(feature = "postgres", feature = "mysql"))]
use crate::stores::Access;

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

/// An open queue, closed again when the command is done.
pub(crate) struct OpenQueue {
    backend: QueueBackend,
    /// What the command acts through.
    pub(crate) admin: QueueAdmin,
}

/// The queue an [`OpenQueue`] holds, by where it is.
#[derive(Clone)]
enum QueueBackend {
    Sqlite(SqliteQueue),
    #[cfg(feature = "postgres")]
    Postgres(PostgresQueue),
    #[cfg(feature = "mysql")]
    Mysql(MySqlQueue),
}

impl QueueBackend {
    fn shared(&self) -> Arc<dyn ReconciliationQueue> {
        match self {
            QueueBackend::Sqlite(queue) => Arc::new(queue.clone()),
            #[cfg(feature = "postgres")]
            QueueBackend::Postgres(queue) => Arc::new(queue.clone()),
            #[cfg(feature = "mysql")]
            QueueBackend::Mysql(queue) => Arc::new(queue.clone()),
        }
    }
}

impl OpenQueue {
    /// The queue as the guardrails of a stage handle watch it.
    pub(crate) fn shared(&self) -> Arc<dyn ReconciliationQueue> {
        self.backend.shared()
    }

    /// Closes the file (the last connection checkpoints it), or the pool.
    pub(crate) async fn close(self) {
        match self.backend {
            QueueBackend::Sqlite(queue) => queue.close().await,
            #[cfg(feature = "postgres")]
            QueueBackend::Postgres(queue) => queue.pool().close().await,
            #[cfg(feature = "mysql")]
            QueueBackend::Mysql(queue) => queue.pool().close().await,
        }
    }
}

/// Opens the queue at `--queue`, which must be an existing dualwrite
/// queue: a SQLite queue file, or a PostgreSQL or MySQL database holding
/// the queue's tables under `--queue-prefix` (never created here).
pub(crate) async fn queue(global: &GlobalArgs) -> Result<OpenQueue, CliError> {
    let location = global.queue.as_ref().ok_or_else(|| {
        CliError::Usage(
            "no queue given: pass --queue sqlite:<path> (or a postgres:// or mysql:// URL) or set DUALWRITE_QUEUE".to_owned(),
        )
    })?;
    let backend = match location {
        Location::Sqlite(path) => QueueBackend::Sqlite(sqlite_queue(path).await?),
        #[cfg(feature = "postgres")]
        Location::Postgres(url) => {
            let pool = pg_pool("queue", location, url, Access::Write).await?;
            let queue = PostgresQueue::options(pool)
                .table_prefix(global.queue_prefix.as_str())
                .open()
                .await
                .map_err(|error| server_queue_failed(location, error))?;
            QueueBackend::Postgres(queue)
        }
        #[cfg(feature = "mysql")]
        Location::Mysql(url) => {
            let pool = mysql_pool("queue", location, url, Access::Write).await?;
            let queue = MySqlQueue::options(pool)
                .table_prefix(global.queue_prefix.as_str())
                .open()
                .await
                .map_err(|error| server_queue_failed(location, error))?;
            QueueBackend::Mysql(queue)
        }
        #[allow(unreachable_patterns)] // a server location without its feature
        other => return Err(not_built("queue", other)),
    };
    let admin = QueueAdmin::new(backend.shared());
    Ok(OpenQueue { backend, admin })
}

async fn sqlite_queue(path: &Path) -> Result<SqliteQueue, CliError> {
    if !probe("queue", path).await?.is_queue {
        return Err(CliError::store(format!(
            "queue {}: the file is a SQLite database but not a dualwrite queue (its application_id is not the queue's); nothing was changed",
            path.display()
        )));
    }
    SqliteQueue::options(path)
        .read_connections(1)
        .open()
        .await
        .map_err(CliError::store)
}

/// A server queue that would not open: its tables missing (this tool never
/// creates them) or of a newer schema, or the database failing.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn server_queue_failed(location: &Location, error: QueueError) -> CliError {
    CliError::store(format!(
        "queue {location}: {error}; nothing was changed (this tool never creates a queue's tables; pass --queue-prefix if the service uses another prefix)"
    ))
}

/// A location whose database this build cannot reach.
#[allow(dead_code)] // used only when a server feature is off
fn not_built(role: &str, location: &Location) -> CliError {
    let feature = match location {
        Location::Mysql(_) => "mysql",
        _ => "postgres",
    };
    CliError::Usage(format!(
        "{role} {location}: this dualwrite was built without its `{feature}` feature (it is on by default)"
    ))
}

/// The shared stage source of a command: the `--stage-source`, else the
/// queue's file or database.
pub(crate) struct StageFile {
    kind: StageKind,
    migration: String,
}

enum StageKind {
    /// A SQLite file, and whether it holds the stage table yet.
    Sqlite { path: PathBuf, has_table: bool },
    /// The stage tables of a server queue (they exist: the queue's schema
    /// creates them).
    #[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
    Server {
        source: Arc<dyn StageSource>,
        location: Location,
    },
}

impl StageFile {
    /// Checks the stage source; nothing is opened for writing.
    pub(crate) async fn find(global: &GlobalArgs) -> Result<StageFile, CliError> {
        let migration = global.migration.as_str();
        let location = global
            .stage_source
            .as_ref()
            .or(global.queue.as_ref())
            .ok_or_else(|| {
                CliError::Usage(
                    "no stage source given: pass --queue (the stage is kept with the queue) or --stage-source, or set DUALWRITE_QUEUE".to_owned(),
                )
            })?;
        let kind = match location {
            Location::Sqlite(path) => {
                let probe = probe("stage source", path).await?;
                if !probe.is_queue && !probe.has_stage_table {
                    return Err(CliError::store(format!(
                        "stage source {}: the file is a SQLite database but not a dualwrite queue, nor a stage source (no `dualwrite_stage` table); nothing was changed",
                        path.display()
                    )));
                }
                StageKind::Sqlite {
                    path: path.clone(),
                    has_table: probe.has_stage_table,
                }
            }
            #[cfg(feature = "postgres")]
            Location::Postgres(url) => {
                let pool = pg_pool("stage source", location, url, Access::Write).await?;
                let source = PostgresStageSource::open(pool, &global.queue_prefix, migration)
                    .await
                    .map_err(|error| stage_failed(location, error))?;
                StageKind::Server {
                    source: Arc::new(source),
                    location: location.clone(),
                }
            }
            #[cfg(feature = "mysql")]
            Location::Mysql(url) => {
                let pool = mysql_pool("stage source", location, url, Access::Write).await?;
                let source = MySqlStageSource::open(pool, &global.queue_prefix, migration)
                    .await
                    .map_err(|error| stage_failed(location, error))?;
                StageKind::Server {
                    source: Arc::new(source),
                    location: location.clone(),
                }
            }
            #[allow(unreachable_patterns)] // a server location without its feature
            other => return Err(not_built("stage source", other)),
        };
        Ok(StageFile {
            kind,
            migration: migration.to_owned(),
        })
    }

    /// The source, for messages.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            StageKind::Sqlite { path, .. } => {
                format!("SQLite {} (migration `{}`)", path.display(), self.migration)
            }
            StageKind::Server { location, .. } => {
                format!("{location} (migration `{}`)", self.migration)
            }
        }
    }

    /// Opens the source, creating a SQLite file's table only when `create`
    /// (a forced first move); `None` when the file has no stage table and
    /// `create` is false.
    pub(crate) async fn open(
        &self,
        create: bool,
    ) -> Result<Option<Arc<dyn StageSource>>, CliError> {
        match &self.kind {
            StageKind::Sqlite {
                has_table: false, ..
            } if !create => Ok(None),
            StageKind::Sqlite { path, .. } => SqliteStageSource::open_named(path, &self.migration)
                .await
                .map(|source| Some(Arc::new(source) as Arc<dyn StageSource>))
                .map_err(CliError::store),
            StageKind::Server { source, .. } => Ok(Some(Arc::clone(source))),
        }
    }

    /// The stored stage, or `None` when none is stored.
    pub(crate) async fn load(&self) -> Result<Option<StoredStage>, CliError> {
        match self.open(false).await? {
            Some(source) => source.load().await.map_err(CliError::store),
            None => Ok(None),
        }
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn stage_failed(location: &Location, error: impl std::fmt::Display) -> CliError {
    CliError::store(format!(
        "stage source {location}: {error}; nothing was changed (pass --queue-prefix if the service uses another prefix)"
    ))
}

#[cfg(all(test, any(feature = "postgres", feature = "mysql")))]
mod tests {
    #[test]
    fn the_default_queue_prefix_is_the_services_own() {
        assert_eq!(
            crate::args::QUEUE_PREFIX,
            dualwrite_runtime::queue::DEFAULT_TABLE_PREFIX
        );
    }
}
