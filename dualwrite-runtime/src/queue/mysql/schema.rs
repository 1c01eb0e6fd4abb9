//! The queue's tables: creating, dropping and checking their version.

use sqlx::mysql::MySqlPool;

use super::statements::backend;
use super::{MySqlQueue, MAX_KEY, MAX_NAMESPACE, SERVER};
use crate::queue::sql::Tables;
use crate::queue::QueueError;

pub(super) async fn install(pool: &MySqlPool, tables: &Tables) -> Result<(), QueueError> {
    let Tables {
        meta,
        entries,
        aux: lines,
        ..
    } = tables;
    let version = MySqlQueue::SCHEMA_VERSION;
    // `CREATE TABLE IF NOT EXISTS` is safe to race; each statement commits.
    let ddl = [
        format!(
            "CREATE TABLE IF NOT EXISTS {meta} (name VARCHAR(64) NOT NULL PRIMARY KEY, value BIGINT NOT NULL) \
             ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        ),
        format!("INSERT IGNORE INTO {meta} (name, value) VALUES ('schema_version', {version})"),
        format!(
            "CREATE TABLE IF NOT EXISTS {lines} (namespace VARCHAR({MAX_NAMESPACE}) NOT NULL, \
             target VARCHAR(3) NOT NULL, PRIMARY KEY (namespace, target)) \
             ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {entries} (
               id          BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
               namespace   VARCHAR({MAX_NAMESPACE}) NOT NULL,
               target      VARCHAR(3) NOT NULL CHECK (target IN ('old', 'new')),
               `key`       VARCHAR({MAX_KEY}) NOT NULL,
               method      VARCHAR(190) NOT NULL,
               version     BIGINT NOT NULL CHECK (version BETWEEN 0 AND 4294967295),
               payload     LONGBLOB NOT NULL,
               state       VARCHAR(8) NOT NULL CHECK (state IN ('prepared', 'pending', 'leased', 'dead')),
               orphaned    BOOLEAN NOT NULL DEFAULT FALSE,
               attempts    BIGINT NOT NULL DEFAULT 0,
               last_error  TEXT NOT NULL,
               enqueued_at BIGINT NOT NULL,
               ready_at    BIGINT NOT NULL,
               turn        BIGINT NOT NULL,
               lease_token BIGINT NOT NULL DEFAULT 0,
               died_at     BIGINT NULL,
               KEY {entries}_line (namespace, target, `key`, id),
               KEY {entries}_turn (namespace, turn)
             ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
        ),
    ];
    for statement in ddl
        .into_iter()
        .chain(crate::stage::mysql_stage_ddl(&tables.prefix))
    {
        sqlx::query(&statement)
            .execute(pool)
            .await
            .map_err(|e| backend("create the schema", e))?;
    }
    Ok(())
}

pub(super) async fn check_version(pool: &MySqlPool, tables: &Tables) -> Result<(), QueueError> {
    let mut missing = Vec::new();
    for table in [&tables.meta, &tables.entries, &tables.aux] {
        let found: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = ?",
        )
        .bind(table)
        .fetch_one(pool)
        .await
        .map_err(|e| backend("look for the queue's tables", e))?;
        if found == 0 {
            missing.push(table.clone());
        }
    }
    if !missing.is_empty() {
        return Err(tables.missing(SERVER, "MySqlQueue", &missing));
    }
    let version: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT value FROM {} WHERE name = 'schema_version'",
        tables.meta
    ))
    .fetch_optional(pool)
    .await
    .map_err(|e| backend("read the schema version", e))?;
    tables.check_version(SERVER, version, MySqlQueue::SCHEMA_VERSION)
}

impl MySqlQueue {
    /// The schema version this build writes and reads.
    pub const SCHEMA_VERSION: i64 = 1;

    /// Creates the queue's tables under `prefix` if they do not exist (the
    /// migration to run once, before services open the queue).
    pub async fn install_schema(pool: &MySqlPool, prefix: &str) -> Result<(), QueueError> {
        install(pool, &Tables::new(SERVER, prefix, "lines")?).await
    }

    /// Drops the queue's tables under `prefix`, with every entry in them:
    /// for tests and for decommissioning a migration's queue.
    pub async fn uninstall_schema(pool: &MySqlPool, prefix: &str) -> Result<(), QueueError> {
        let tables = Tables::new(SERVER, prefix, "lines")?;
        sqlx::query(&format!(
            "DROP TABLE IF EXISTS {}, {}, {}, {prefix}stage, {prefix}stage_acks",
            tables.entries, tables.meta, tables.aux
        ))
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(|e| backend("drop the schema", e))
    }
}
