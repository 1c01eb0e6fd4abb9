//! The file's identity and schema: the tables, `PRAGMA application_id` and
//! `user_version`, creating the schema in a new file and upgrading an older
//! one (see "The file" in the module docs).

use sqlx::SqliteConnection;

use super::error::{could_not, BackendError};
use super::{links, SqliteQueue};

/// `PRAGMA application_id` of a queue file: `"dwqu"`.
const APPLICATION_ID: i64 = 0x6477_7175;

/// The delete trigger (since version 3 with its `WHEN` clause), in
/// [`SCHEMA`] and [`MIGRATE_2_TO_3`].
macro_rules! unlink_trigger {
    () => {
        r#"
-- Keeps the chains whole when rows are deleted by hand. The queue's own
-- deletes have already relinked (the successor is the head, the key's
-- tail moved or gone), so the WHEN clause finds nothing to do for them and
-- the body does not run: two lookups a deleted row instead of three
-- statements.
CREATE TRIGGER entries_unlink AFTER DELETE ON entries
WHEN EXISTS (SELECT 1 FROM entries WHERE prev_id = old.id)
  OR EXISTS (SELECT 1 FROM streams WHERE namespace = old.namespace
             AND target = old.target AND key = old.key AND tail_id = old.id)
BEGIN
    UPDATE entries SET prev_id = old.prev_id,
        ready_at = CASE WHEN old.prev_id IS NULL
            THEN max(ready_at, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
            ELSE ready_at END
        WHERE prev_id = old.id;
    UPDATE streams SET tail_id = old.prev_id
        WHERE namespace = old.namespace AND target = old.target AND key = old.key
          AND tail_id = old.id AND old.prev_id IS NOT NULL;
    DELETE FROM streams
        WHERE namespace = old.namespace AND target = old.target AND key = old.key
          AND tail_id = old.id AND old.prev_id IS NULL;
END;
"#
    };
}

const SCHEMA: &str = concat!(
    r#"
CREATE TABLE entries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace   TEXT    NOT NULL,
    target      TEXT    NOT NULL CHECK (target IN ('old', 'new')),
    key         TEXT    NOT NULL,
    method      TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version BETWEEN 0 AND 4294967295),
    payload     BLOB    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'pending'
                CHECK (state IN ('prepared', 'pending', 'leased', 'dead')),
    prev_id     INTEGER,
    orphaned    INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT    NOT NULL DEFAULT '',
    enqueued_at INTEGER NOT NULL,
    ready_at    INTEGER NOT NULL,
    turn        INTEGER NOT NULL DEFAULT 0,
    lease_token INTEGER NOT NULL DEFAULT 0,
    died_at     INTEGER
);
CREATE INDEX entries_next ON entries (prev_id) WHERE prev_id IS NOT NULL;
CREATE INDEX entries_ready ON entries (namespace, ready_at, turn) WHERE prev_id IS NULL AND state <> 'dead';
CREATE INDEX entries_dead ON entries (id) WHERE state = 'dead';
CREATE INDEX entries_unkeyed ON entries (namespace, target, id) WHERE key = '*';
CREATE TABLE streams (
    namespace TEXT    NOT NULL,
    target    TEXT    NOT NULL,
    key       TEXT    NOT NULL,
    tail_id   INTEGER NOT NULL,
    PRIMARY KEY (namespace, target, key)
) WITHOUT ROWID;
"#,
    unlink_trigger!()
);

/// Schema version 2: the index that orders unkeyed entries against every
/// key of their namespace.
const MIGRATE_1_TO_2: &str =
    "CREATE INDEX IF NOT EXISTS entries_unkeyed ON entries (namespace, target, id) WHERE key = '*';";

/// Schema version 3: the delete trigger skips its body when the row has no
/// successor and is not its key's tail (the queue's own deletes, which
/// relink first); before, it ran its three statements for every row.
const MIGRATE_2_TO_3: &str = concat!("DROP TRIGGER IF EXISTS entries_unlink;", unlink_trigger!());

/// Checks the file's identity and schema version, creating the schema in a
/// new file, and repairs the links between entries.
pub(super) async fn prepare_schema(
    conn: &mut SqliteConnection,
    shown: &str,
) -> Result<(), BackendError> {
    let context = |what: &str| could_not(shown, what);
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .map_err(|error| BackendError::new(context("lock the file to check its schema"), error))?;
    let result = prepare_schema_locked(conn, shown).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = sqlx::query(end).execute(&mut *conn).await;
    result?;
    ended.map_err(|error| BackendError::new(context("commit the schema"), error))?;
    Ok(())
}

async fn prepare_schema_locked(
    conn: &mut SqliteConnection,
    shown: &str,
) -> Result<(), BackendError> {
    let context = |what: &str| could_not(shown, what);
    let application_id: i64 = sqlx::query_scalar("PRAGMA application_id")
        .fetch_one(&mut *conn)
        .await
        .map_err(|error| BackendError::new(context("read the file's application id"), error))?;
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await
        .map_err(|error| BackendError::new(context("read the schema version"), error))?;
    let objects: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master")
        .fetch_one(&mut *conn)
        .await
        .map_err(|error| BackendError::new(context("read the schema"), error))?;
    if application_id != 0 && application_id != APPLICATION_ID {
        return Err(BackendError::message(format!(
            "SQLite queue {shown}: the file is not a dualwrite queue (its application_id is {application_id:#x}, a queue's is {APPLICATION_ID:#x}); refusing to touch it"
        )));
    }
    if version > SqliteQueue::SCHEMA_VERSION {
        return Err(BackendError::message(format!(
            "SQLite queue {shown}: the file has schema version {version}, but this build of dualwrite-runtime understands versions up to {}; it was written by a newer release. Upgrade this service (or point it at another file); the file was not changed",
            SqliteQueue::SCHEMA_VERSION
        )));
    }
    if version == 0 {
        if objects > 0 {
            return Err(BackendError::message(format!(
                "SQLite queue {shown}: the file holds a database that is not a dualwrite queue ({objects} schema objects, no queue schema version); refusing to touch it"
            )));
        }
        sqlx::raw_sql(SCHEMA)
            .execute(&mut *conn)
            .await
            .map_err(|error| BackendError::new(context("create the schema"), error))?;
        sqlx::raw_sql(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {};",
            SqliteQueue::SCHEMA_VERSION
        ))
        .execute(&mut *conn)
        .await
        .map_err(|error| BackendError::new(context("record the schema version"), error))?;
        return Ok(());
    }
    if application_id != APPLICATION_ID {
        return Err(BackendError::message(format!(
            "SQLite queue {shown}: the file has user_version {version} but not the application id of a dualwrite queue; refusing to touch it"
        )));
    }
    if version < SqliteQueue::SCHEMA_VERSION {
        tracing::info!(
            path = shown,
            from = version,
            to = SqliteQueue::SCHEMA_VERSION,
            "upgrading the SQLite queue's schema"
        );
        // Each step from the file's version on, in order.
        let steps = [(2, MIGRATE_1_TO_2), (3, MIGRATE_2_TO_3)];
        let mut sql = String::new();
        for (to, step) in steps {
            if version < to {
                sql.push_str(step);
                sql.push('\n');
            }
        }
        sql.push_str(&format!(
            "PRAGMA user_version = {};",
            SqliteQueue::SCHEMA_VERSION
        ));
        sqlx::raw_sql(&sql)
            .execute(&mut *conn)
            .await
            .map_err(|error| BackendError::new(context("upgrade the schema"), error))?;
    }
    links::repair(conn, shown).await
}
