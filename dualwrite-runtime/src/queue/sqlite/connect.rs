//! Opening the file for the writer: creating it with mode `0600`, the write
//! connection, the schema check, WAL mode, the index of queued keys, the
//! checkpointer's connection and the read pool; and closing them again.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Connection;
use tokio::sync::mpsc;

use super::error::{could_not, BackendError};
use super::index::KeyIndex;
use super::options::SqliteQueueOptions;
use super::rows::read_key;
use super::schema::prepare_schema;
use super::writer::Writer;

impl Writer {
    /// Opens the file and builds the index of keys with work.
    pub(super) async fn open(
        options: &SqliteQueueOptions,
        index: Arc<RwLock<KeyIndex>>,
        transactions: Arc<AtomicU64>,
    ) -> Result<Writer, BackendError> {
        let path = options.path.clone();
        let shown = path.display().to_string();
        let context = |what: &str| could_not(&shown, what);
        create_file(&path).map_err(|error| BackendError::new(context("create the file"), error))?;
        let connect = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(false)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(false)
            .thread_name(|id| format!("dualwrite-sqlite-{id}"));
        let mut conn = SqliteConnection::connect_with(&connect)
            .await
            .map_err(|error| BackendError::new(context("open the file"), error))?;
        if let Err(error) = prepare_schema(&mut conn, &shown).await {
            let _ = conn.close().await;
            return Err(error);
        }
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
            .fetch_one(&mut conn)
            .await
            .map_err(|error| BackendError::new(context("switch to WAL mode"), error))?;
        if !mode.eq_ignore_ascii_case("wal") {
            let _ = conn.close().await;
            return Err(BackendError::message(format!(
                "SQLite queue {shown}: the file stayed in journal mode `{mode}`; WAL is required"
            )));
        }
        // Build the index of keys with work.
        let rows = sqlx::query("SELECT namespace, target, key FROM streams")
            .fetch_all(&mut conn)
            .await
            .map_err(|error| BackendError::new(context("read the queued keys"), error))?;
        {
            let mut index = index
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *index = KeyIndex::default();
            for (namespace, target, key) in rows.iter().filter_map(read_key) {
                index.insert(&namespace, target, &key);
            }
        }
        // Checkpoints (copying the WAL into the file) run on a connection of
        // their own, beside the writer, rather than inside its commits; the
        // writer only checkpoints by itself if they fall far behind.
        sqlx::query("PRAGMA wal_autocheckpoint = 20000")
            .execute(&mut conn)
            .await
            .map_err(|error| BackendError::new(context("configure checkpoints"), error))?;
        let checkpoint_conn = SqliteConnection::connect_with(&connect)
            .await
            .map_err(|error| BackendError::new(context("open a second connection"), error))?;
        let (checkpoints, wakes) = mpsc::channel(1);
        let checkpointer = tokio::spawn(checkpoint_loop(checkpoint_conn, wakes, shown.clone()));
        let reads = SqlitePoolOptions::new()
            .max_connections(options.read_connections)
            .min_connections(0)
            .connect_lazy_with(connect.journal_mode(SqliteJournalMode::Wal));
        tracing::debug!(path = %shown, keys = rows.len(), "SQLite reconciliation queue opened");
        Ok(Writer {
            path,
            conn,
            reads,
            index,
            transactions,
            max_batch: options.max_batch,
            last_turn: 0,
            relaxed_settles: !options.durable_settles,
            full_sync: true,
            begun: false,
            poison: options.poison,
            checkpoints,
            checkpointer,
        })
    }

    pub(super) async fn close(self) {
        let Writer {
            conn,
            reads,
            checkpoints,
            checkpointer,
            ..
        } = self;
        drop(checkpoints);
        let _ = checkpointer.await;
        reads.close().await;
        // The last connection to close checkpoints the WAL into the file.
        if let Err(error) = conn.close().await {
            tracing::warn!(%error, "closing the SQLite queue's write connection failed");
        }
    }
}

/// Creates the file with mode 0600 if it does not exist yet, so that SQLite
/// (and its `-wal` and `-shm` files, which copy the mode) never widen it.
fn create_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(metadata) = std::fs::metadata(path) {
                    let mode = metadata.permissions().mode() & 0o777;
                    if mode & 0o077 != 0 {
                        tracing::warn!(
                            path = %path.display(),
                            mode = format_args!("{mode:o}"),
                            "the reconciliation queue file is readable by other users; queued operations hold your data (chmod 600 it)"
                        );
                    }
                }
            }
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// Copies committed WAL frames into the database file after commits, at
/// most every 50 ms, without blocking the writer (`PASSIVE`), until the
/// writer goes away.
async fn checkpoint_loop(mut conn: SqliteConnection, mut wakes: mpsc::Receiver<()>, shown: String) {
    while wakes.recv().await.is_some() {
        let started = tokio::time::Instant::now();
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::warn!(path = %shown, %error, "SQLite queue checkpoint failed; the writer will checkpoint by itself");
        }
        tokio::time::sleep_until(started + Duration::from_millis(50)).await;
    }
    if let Err(error) = conn.close().await {
        tracing::debug!(path = %shown, %error, "closing the SQLite queue's checkpoint connection failed");
    }
}
