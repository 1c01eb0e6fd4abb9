//! The queue's tables: creating, dropping and checking their version.

use sqlx::postgres::PgPool;

use super::statements::backend;
use super::{PostgresQueue, SERVER};
use crate::queue::sql::Tables;
use crate::queue::QueueError;

pub(super) async fn install(pool: &PgPool, tables: &Tables) -> Result<(), QueueError> {
    let Tables {
        meta,
        entries,
        aux: turns,
        ..
    } = tables;
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| backend("begin the schema transaction", e))?;
    // Two processes installing at once: the second waits, then finds it done.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("dualwrite schema {meta}"))
        .execute(&mut *tx)
        .await
        .map_err(|e| backend("lock the schema", e))?;
    let ddl = format!(
        "CREATE TABLE IF NOT EXISTS {meta} (name text PRIMARY KEY, value bigint NOT NULL);
         INSERT INTO {meta} (name, value) VALUES ('schema_version', {version})
           ON CONFLICT (name) DO NOTHING;
         CREATE SEQUENCE IF NOT EXISTS {turns};
         CREATE TABLE IF NOT EXISTS {entries} (
           id          bigserial PRIMARY KEY,
           namespace   text NOT NULL,
           target      text NOT NULL CHECK (target IN ('old', 'new')),
           key         text NOT NULL,
           method      text NOT NULL,
           version     bigint NOT NULL CHECK (version BETWEEN 0 AND 4294967295),
           payload     bytea NOT NULL,
           state       text NOT NULL CHECK (state IN ('prepared', 'pending', 'leased', 'dead')),
           orphaned    boolean NOT NULL DEFAULT false,
           attempts    bigint NOT NULL DEFAULT 0,
           last_error  text NOT NULL DEFAULT '',
           enqueued_at timestamptz NOT NULL DEFAULT now(),
           ready_at    timestamptz NOT NULL,
           turn        bigint NOT NULL,
           lease_token bigint NOT NULL DEFAULT 0,
           died_at     timestamptz
         );
         CREATE INDEX IF NOT EXISTS {entries}_line ON {entries} (namespace, target, key, id);
         CREATE INDEX IF NOT EXISTS {entries}_turn ON {entries} (namespace, turn) WHERE state <> 'dead';
         CREATE INDEX IF NOT EXISTS {entries}_unkeyed ON {entries} (namespace, target, id) WHERE key = '*';",
        version = PostgresQueue::SCHEMA_VERSION
    );
    let ddl = format!(
        "{ddl}\n{}",
        crate::stage::postgres_stage_ddl(&tables.prefix)
    );
    sqlx::raw_sql(&ddl)
        .execute(&mut *tx)
        .await
        .map_err(|e| backend("create the schema", e))?;
    tx.commit()
        .await
        .map_err(|e| backend("commit the schema", e))
}

pub(super) async fn check_version(pool: &PgPool, tables: &Tables) -> Result<(), QueueError> {
    let missing: Vec<String> =
        sqlx::query_scalar("SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL")
            .bind(vec![
                tables.meta.clone(),
                tables.entries.clone(),
                tables.aux.clone(),
            ])
            .fetch_all(pool)
            .await
            .map_err(|e| backend("look for the queue's tables", e))?;
    if !missing.is_empty() {
        return Err(tables.missing(SERVER, "PostgresQueue", &missing));
    }
    let version: Option<i64> = sqlx::query_scalar(&format!(
        "SELECT value FROM {} WHERE name = 'schema_version'",
        tables.meta
    ))
    .fetch_optional(pool)
    .await
    .map_err(|e| backend("read the schema version", e))?;
    tables.check_version(SERVER, version, PostgresQueue::SCHEMA_VERSION)
}

impl PostgresQueue {
    /// The schema version this build writes and reads.
    pub const SCHEMA_VERSION: i64 = 1;

    /// Creates the queue's tables under `prefix` if they do not exist (the
    /// migration to run once, before services open the queue). Safe to run
    /// from several processes at once.
    pub async fn install_schema(pool: &PgPool, prefix: &str) -> Result<(), QueueError> {
        install(pool, &Tables::new(SERVER, prefix, "turns")?).await
    }

    /// Drops the queue's tables under `prefix`, with every entry in them:
    /// for tests and for decommissioning a migration's queue.
    pub async fn uninstall_schema(pool: &PgPool, prefix: &str) -> Result<(), QueueError> {
        let tables = Tables::new(SERVER, prefix, "turns")?;
        sqlx::raw_sql(&format!(
            "DROP TABLE IF EXISTS {} ; DROP TABLE IF EXISTS {}; DROP SEQUENCE IF EXISTS {}; \
             DROP TABLE IF EXISTS {prefix}stage; DROP TABLE IF EXISTS {prefix}stage_acks;",
            tables.entries, tables.meta, tables.aux
        ))
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(|e| backend("drop the schema", e))
    }
}
