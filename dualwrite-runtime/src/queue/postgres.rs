//! The reconciliation queue in PostgreSQL tables, shared by every process
//! that opens the same tables (feature `postgres`).
//!
//! # Tables
//!
//! Two tables and a sequence, named from a prefix
//! ([`table_prefix`](super::ServerQueueOptions::table_prefix), default [`DEFAULT_TABLE_PREFIX`](super::DEFAULT_TABLE_PREFIX)):
//! `{prefix}meta` (the schema version), `{prefix}entries` (one row per
//! entry, in the states of [`EntryState`](super::EntryState)) and `{prefix}turns` (the order
//! in which heads of keys are served, so that a busy key cannot starve the
//! others). The schema is created only on request:
//! [`PostgresQueue::install_schema`], or
//! [`create_schema`](super::ServerQueueOptions::create_schema). Opening tables that do not
//! exist fails with a [`SchemaError`](super::SchemaError) naming the missing table and the call
//! that creates it; tables of a newer schema version are refused.
//!
//! # Many processes
//!
//! Every call is one transaction. A claim leases, with `FOR UPDATE SKIP
//! LOCKED`, entries that are the head of their key (no older entry of the
//! key, and the unkeyed rules of [`ReconciliationQueue`]), so claimers in
//! different processes never wait for each other's rows and never lease two
//! entries of one key: an entry is a head only once the row ahead of it is
//! deleted. Appends take transaction-scoped advisory locks (one per key,
//! and one per namespace and target, shared by keyed appends and exclusive
//! for unkeyed ones) so that ids, which decide the order, are handed out in
//! the order the appends commit. Leases, delays and expiries are read from
//! the database clock (`now()`), never from a process's clock, so processes
//! whose clocks disagree still agree on who holds a lease. Transactions
//! that fail with a serialization failure or a deadlock (`40001`, `40P01`)
//! are retried.
//!
//! Where to put the tables (old database, new, or a third) is weighed in
//! the [queue module's docs](super#where-to-put-a-server-queues-tables).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

use super::sql::{
    decode, entry_columns, head_condition, in_line, interval_micros, next_ready_in, stats_of,
    to_i64, Decoded, ServerQueueOptions, Tables,
};
use super::{
    Claim, DeadLetter, EntryId, Lease, NewEntry, PoisonPolicy, QueueError, QueueStats, QueuedEntry,
    ReconciliationQueue, Turnover,
};
use crate::op::Key;
use crate::vocabulary::Side;

const SERVER: &str = "PostgreSQL";

fn backend(context: &str, error: sqlx::Error) -> QueueError {
    QueueError::Backend(format!("PostgreSQL queue: {context}: {error}").into())
}

/// How to open a [`PostgresQueue`]; from [`PostgresQueue::options`].
pub type PostgresQueueOptions = ServerQueueOptions<PgPool>;

impl PostgresQueueOptions {
    /// Opens the queue: checks the prefix and the schema version.
    ///
    /// # Errors
    ///
    /// [`QueueError::Backend`] holding a [`SchemaError`](super::SchemaError) when the tables are
    /// missing (without [`create_schema`](Self::create_schema)) or of a
    /// newer version, or a database error.
    pub async fn open(self) -> Result<PostgresQueue, QueueError> {
        let tables = Tables::new(SERVER, &self.prefix, "turns")?;
        if self.create_schema {
            install(&self.pool, &tables).await?;
        }
        check_version(&self.pool, &tables).await?;
        Ok(PostgresQueue {
            pool: self.pool,
            tables,
            poison: self.poison,
        })
    }
}

/// A durable reconciliation queue in PostgreSQL, shared by every process
/// opening the same tables (see the [module docs](self)).
#[derive(Clone)]
pub struct PostgresQueue {
    pool: PgPool,
    tables: Tables,
    poison: PoisonPolicy,
}

impl fmt::Debug for PostgresQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresQueue")
            .field("prefix", &self.tables.prefix)
            .field("poison", &self.poison)
            .finish_non_exhaustive()
    }
}

async fn install(pool: &PgPool, tables: &Tables) -> Result<(), QueueError> {
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

async fn check_version(pool: &PgPool, tables: &Tables) -> Result<(), QueueError> {
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

/// Whether a database error is worth retrying the transaction for.
fn transient(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001") | Some("40P01")))
}

/// Microseconds since the epoch, in SQL, of a timestamptz column.
fn micros(column: &str) -> String {
    format!("(extract(epoch from {column}) * 1000000)::bigint")
}

type Tx<'c> = Transaction<'c, Postgres>;

impl PostgresQueue {
    /// The schema version this build writes and reads.
    pub const SCHEMA_VERSION: i64 = 1;

    /// Opens the queue in the tables of [`DEFAULT_TABLE_PREFIX`](super::DEFAULT_TABLE_PREFIX), which
    /// must exist ([`install_schema`](Self::install_schema)).
    pub async fn connect(pool: PgPool) -> Result<PostgresQueue, QueueError> {
        Self::options(pool).open().await
    }

    /// Options to open the queue with: table prefix, poison policy, schema
    /// creation.
    pub fn options(pool: PgPool) -> PostgresQueueOptions {
        ServerQueueOptions::new(pool)
    }

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

    /// The shared stage of `migration`, in this queue's schema and on its
    /// pool, for [`StageHandle::with_source`](crate::StageHandle::with_source)
    /// or [`with_fenced_source`](crate::StageHandle::with_fenced_source).
    pub async fn stage_source(
        &self,
        migration: &str,
    ) -> Result<crate::stage::PostgresStageSource, crate::stage::StageSourceError> {
        crate::stage::PostgresStageSource::open(self.pool.clone(), &self.tables.prefix, migration)
            .await
    }

    /// The pool the queue uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The prefix of the queue's tables.
    pub fn table_prefix(&self) -> &str {
        &self.tables.prefix
    }

    /// Runs `work` in a transaction, again when it fails with a
    /// serialization failure or a deadlock.
    async fn transaction<'a, T, F>(&self, what: &str, work: F) -> Result<T, QueueError>
    where
        F: Fn(Tx<'static>) -> futures::future::BoxFuture<'a, (Tx<'static>, Result<T, Failure>)>,
    {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let tx = self
                .pool
                .begin()
                .await
                .map_err(|e| backend(&format!("begin ({what})"), e))?;
            let (tx, result) = work(tx).await;
            let result = match result {
                Ok(value) => tx.commit().await.map(|()| value).map_err(Failure::Database),
                Err(failure) => {
                    let _ = tx.rollback().await;
                    Err(failure)
                }
            };
            match result {
                Ok(value) => return Ok(value),
                Err(Failure::Database(error)) if transient(&error) && attempt < 10 => {
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 5)).await;
                }
                Err(Failure::Database(error)) => return Err(backend(what, error)),
            }
        }
    }

    async fn insert(
        &self,
        entry: NewEntry,
        prepared: Option<Duration>,
    ) -> Result<EntryId, QueueError> {
        let entries = self.tables.entries.clone();
        let turns = self.tables.aux.clone();
        let prefix = self.tables.prefix.clone();
        let (state, wait) = match prepared {
            Some(expiry) => ("prepared", interval_micros(expiry)),
            None => ("pending", 0),
        };
        let entry = &entry;
        let (entries, turns, prefix) = (&entries, &turns, &prefix);
        self.transaction("append", move |mut tx| {
            Box::pin(async move {
                let result: Result<_, Failure> = async {
                let line = format!("{prefix}/{}/{}", entry.namespace, entry.target.as_str());
                let lock = if entry.is_unkeyed() {
                    "SELECT pg_advisory_xact_lock(hashtext($1), 0)"
                } else {
                    "SELECT pg_advisory_xact_lock_shared(hashtext($1), 0), \
                     pg_advisory_xact_lock(hashtext($1), hashtext($2))"
                };
                sqlx::query(lock)
                    .bind(&line)
                    .bind(entry.key.as_str())
                    .execute(&mut *tx)
                    .await?;
                let id: i64 = sqlx::query_scalar(&format!(
                    "INSERT INTO {entries} (namespace, target, key, method, version, payload, state, \
                       orphaned, last_error, ready_at, turn) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + make_interval(secs => $10::float8 / 1000000), nextval('{turns}')) \
                     RETURNING id"
                ))
                .bind(&entry.namespace)
                .bind(entry.target.as_str())
                .bind(entry.key.as_str())
                .bind(&entry.method)
                .bind(i64::from(entry.version))
                .bind(&entry.payload)
                .bind(state)
                .bind(entry.uncertain)
                .bind(&entry.reason)
                .bind(wait)
                .fetch_one(&mut *tx)
                .await?;
                Ok(EntryId(u64::try_from(id).unwrap_or(0)))
                }
                .await;
                (tx, result)
            })
        })
        .await
    }

    /// Runs one statement outside an explicit transaction, retried like
    /// [`transaction`](Self::transaction); returns the rows it affected.
    async fn execute(
        &self,
        what: &str,
        sql: &str,
        binds: &[i64],
        text: Option<&str>,
    ) -> Result<u64, QueueError> {
        let sql = sql.to_owned();
        let binds = binds.to_vec();
        let text = text.map(str::to_owned);
        let (sql, binds, text) = (&sql, &binds, &text);
        self.transaction(what, move |mut tx| {
            Box::pin(async move {
                let result: Result<_, Failure> = async {
                    let mut query = sqlx::query(sql);
                    for bind in binds {
                        query = query.bind(*bind);
                    }
                    if let Some(text) = text {
                        query = query.bind(text);
                    }
                    Ok(query.execute(&mut *tx).await?.rows_affected())
                }
                .await;
                (tx, result)
            })
        })
        .await
    }

    /// Deletes the entry selected by `condition` (on `id = $1`, further
    /// parameters after) and gives the next entry of its key a fresh turn,
    /// so that it waits behind the heads of other keys; returns whether a
    /// row was deleted.
    async fn remove(&self, what: &str, condition: &str, binds: &[i64]) -> Result<bool, QueueError> {
        let entries = &self.tables.entries;
        let turns = &self.tables.aux;
        let sql = format!(
            "WITH gone AS (DELETE FROM {entries} WHERE id = $1 AND {condition} \
               RETURNING id, namespace, target, key), \
             next AS (SELECT min(n.id) AS id FROM {entries} n, gone \
               WHERE n.namespace = gone.namespace AND n.target = gone.target AND n.key = gone.key \
               AND n.id > gone.id), \
             bump AS (UPDATE {entries} SET turn = nextval('{turns}') \
               WHERE id = (SELECT id FROM next) AND state <> 'prepared' RETURNING 1) \
             SELECT count(*) FROM gone"
        );
        let binds = binds.to_vec();
        let (sql, binds) = (&sql, &binds);
        let removed = self
            .transaction(what, move |mut tx| {
                Box::pin(async move {
                    let result: Result<_, Failure> = async {
                        let mut query = sqlx::query_scalar::<_, i64>(sql);
                        for bind in binds {
                            query = query.bind(*bind);
                        }
                        Ok(query.fetch_one(&mut *tx).await?)
                    }
                    .await;
                    (tx, result)
                })
            })
            .await?;
        Ok(removed > 0)
    }
}

/// Why a transaction's work failed: the database (retried when transient).
enum Failure {
    Database(sqlx::Error),
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Failure::Database(error)
    }
}

impl PostgresQueue {
    /// Applies `set` to the entry leased with `lease`; [`QueueError::LeaseLost`]
    /// when the claim is no longer held. `$1` is the id, `$2` the token,
    /// `$3` an interval in microseconds, `$4` a text.
    async fn settle(
        &self,
        what: &str,
        lease: Lease,
        set: &str,
        micros: i64,
        text: &str,
    ) -> Result<(), QueueError> {
        let sql = format!(
            "UPDATE {} SET {set} WHERE id = $1 AND lease_token = $2 AND state = 'leased' \
             AND $3::bigint IS NOT NULL AND $4::text IS NOT NULL",
            self.tables.entries
        );
        let changed = self
            .execute(
                what,
                &sql,
                &[to_i64(lease.id.0), to_i64(lease.token), micros],
                Some(text),
            )
            .await?;
        if changed == 0 {
            return Err(QueueError::LeaseLost(lease.id));
        }
        Ok(())
    }

    async fn fetch_entries(
        &self,
        what: &str,
        condition: &str,
        binds: Vec<String>,
    ) -> Result<Vec<Decoded>, QueueError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {condition} ORDER BY id",
            entry_columns(&micros("enqueued_at"), &micros("died_at"), str::to_owned),
            self.tables.entries
        );
        let mut query = sqlx::query(&sql);
        for bind in &binds {
            query = query.bind(bind);
        }
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| backend(what, e))?;
        rows.iter().map(|row| decode(SERVER, row)).collect()
    }
}

/// `now() + $n` microseconds, in SQL.
fn after(param: &str) -> String {
    format!("now() + make_interval(secs => {param}::float8 / 1000000)")
}

#[async_trait]
impl ReconciliationQueue for PostgresQueue {
    async fn append(&self, entry: NewEntry) -> Result<EntryId, QueueError> {
        self.insert(entry, None).await
    }

    async fn prepare(&self, entry: NewEntry, expiry: Duration) -> Result<EntryId, QueueError> {
        self.insert(entry, Some(expiry)).await
    }

    async fn commit(&self, id: EntryId) -> Result<(), QueueError> {
        let sql = format!(
            "UPDATE {} SET state = 'pending', ready_at = now() WHERE id = $1 AND state = 'prepared'",
            self.tables.entries
        );
        self.execute("commit", &sql, &[to_i64(id.0)], None).await?;
        Ok(())
    }

    async fn commit_uncertain(&self, id: EntryId) -> Result<(), QueueError> {
        let sql = format!(
            "UPDATE {} SET ready_at = least(ready_at, now()) WHERE id = $1 AND state = 'prepared'",
            self.tables.entries
        );
        self.execute("commit_uncertain", &sql, &[to_i64(id.0)], None)
            .await?;
        Ok(())
    }

    async fn abort(&self, id: EntryId) -> Result<(), QueueError> {
        self.remove(
            "abort",
            "(state = 'prepared' OR (state = 'leased' AND orphaned))",
            &[to_i64(id.0)],
        )
        .await?;
        Ok(())
    }

    async fn has_later_entries(&self, lease: Lease) -> Result<bool, QueueError> {
        let entries = &self.tables.entries;
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {entries} l WHERE l.namespace = e.namespace \
               AND l.target = e.target AND l.id > e.id \
               AND (l.key = e.key OR e.key = '*' OR l.key = '*')) \
             FROM {entries} e WHERE e.id = $1 AND e.lease_token = $2 AND e.state = 'leased'"
        );
        let later: Option<bool> = sqlx::query_scalar(&sql)
            .bind(to_i64(lease.id.0))
            .bind(to_i64(lease.token))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| backend("has_later_entries", e))?;
        later.ok_or(QueueError::LeaseLost(lease.id))
    }

    async fn settle_orphan(&self, id: EntryId) -> Result<(), QueueError> {
        let sql = format!(
            "UPDATE {} SET orphaned = false, \
               ready_at = CASE WHEN state = 'prepared' THEN now() ELSE ready_at END, \
               state = CASE WHEN state = 'prepared' THEN 'pending' ELSE state END \
             WHERE id = $1",
            self.tables.entries
        );
        self.execute("settle_orphan", &sql, &[to_i64(id.0)], None)
            .await?;
        Ok(())
    }

    async fn has_work(&self, namespace: &str, target: Side, key: &Key) -> Result<bool, QueueError> {
        let keys = if key.is_unkeyed() {
            "true"
        } else {
            "(e.key = $3 OR e.key = '*')"
        };
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {} e WHERE e.namespace = $1 AND e.target = $2 \
               AND {keys} AND {} AND $3::text IS NOT NULL)",
            self.tables.entries,
            in_line(self.poison, "e")
        );
        sqlx::query_scalar(&sql)
            .bind(namespace)
            .bind(target.as_str())
            .bind(key.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| backend("has_work", e))
    }

    async fn claim(
        &self,
        namespace: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Claim, QueueError> {
        if limit == 0 {
            return Ok(Claim::default());
        }
        let entries = &self.tables.entries;
        let head = head_condition(entries, self.poison);
        let counts = format!(
            "SELECT count(*) FILTER (WHERE e.ready_at <= now()), \
               (extract(epoch from (min(e.ready_at) FILTER (WHERE e.ready_at > now()) - now())) \
                 * 1000000)::bigint \
             FROM {entries} e WHERE e.namespace = $1 AND {head}"
        );
        let claim = format!(
            "WITH picked AS (SELECT e.id FROM {entries} e WHERE e.namespace = $1 \
               AND e.ready_at <= now() AND {head} ORDER BY e.turn, e.id LIMIT $2 \
               FOR UPDATE OF e SKIP LOCKED) \
             UPDATE {entries} SET state = 'leased', lease_token = lease_token + 1, \
               orphaned = (orphaned OR state = 'prepared'), ready_at = {} \
             WHERE id IN (SELECT id FROM picked) RETURNING {}",
            after("$3"),
            entry_columns(&micros("enqueued_at"), &micros("died_at"), str::to_owned)
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let wait = interval_micros(lease);
        let (counts, claim_sql) = (&counts, &claim);
        let (ready, next, rows) = self
            .transaction("claim", move |mut tx| {
                Box::pin(async move {
                    let result: Result<_, Failure> = async {
                        let (ready, next): (i64, Option<i64>) = sqlx::query_as(counts)
                            .bind(namespace)
                            .fetch_one(&mut *tx)
                            .await?;
                        let rows = sqlx::query(claim_sql)
                            .bind(namespace)
                            .bind(limit)
                            .bind(wait)
                            .fetch_all(&mut *tx)
                            .await?;
                        Ok((ready, next, rows))
                    }
                    .await;
                    (tx, result)
                })
            })
            .await?;
        let mut entries = rows
            .iter()
            .map(|row| decode(SERVER, row).map(Decoded::claimed))
            .collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(|entry| entry.lease.id);
        Ok(Claim {
            entries,
            next_ready_in: next_ready_in(ready, limit, next),
        })
    }

    async fn renew(&self, lease: Lease, duration: Duration) -> Result<(), QueueError> {
        let set = format!("ready_at = {}", after("$3"));
        self.settle("renew", lease, &set, interval_micros(duration), "")
            .await
    }

    async fn complete(&self, lease: Lease) -> Result<(), QueueError> {
        let removed = self
            .remove(
                "complete",
                "lease_token = $2 AND state = 'leased'",
                &[to_i64(lease.id.0), to_i64(lease.token)],
            )
            .await?;
        if removed {
            Ok(())
        } else {
            Err(QueueError::LeaseLost(lease.id))
        }
    }

    /// The completions in the order given (so that of a lease given twice,
    /// the first completion is the one that succeeds), then the claim.
    async fn complete_and_claim(
        &self,
        completed: &[Lease],
        namespace: &str,
        limit: usize,
        lease: Duration,
    ) -> Turnover {
        let mut results = Vec::with_capacity(completed.len());
        for done in completed {
            results.push(self.complete(*done).await);
        }
        Turnover {
            completed: results,
            claim: self.claim(namespace, limit, lease).await,
        }
    }

    async fn retry_later(
        &self,
        lease: Lease,
        error: &str,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let set = format!(
            "state = 'pending', attempts = attempts + 1, last_error = $4, ready_at = {}",
            after("$3")
        );
        self.settle("retry_later", lease, &set, interval_micros(delay), error)
            .await
    }

    async fn release(&self, lease: Lease) -> Result<(), QueueError> {
        self.settle(
            "release",
            lease,
            "state = 'pending', ready_at = now()",
            0,
            "",
        )
        .await
    }

    async fn dead_letter(&self, lease: Lease, error: &str) -> Result<(), QueueError> {
        let set = "state = 'dead', attempts = attempts + 1, last_error = $4, died_at = now()";
        self.settle("dead_letter", lease, set, 0, error).await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        let dead = self
            .fetch_entries("list dead letters", "state = 'dead'", Vec::new())
            .await?;
        Ok(dead.into_iter().map(Decoded::dead_letter).collect())
    }

    async fn retry_dead(&self, id: EntryId) -> Result<(), QueueError> {
        let sql = format!(
            "UPDATE {} SET state = 'pending', attempts = 0, ready_at = now(), died_at = NULL \
             WHERE id = $1 AND state = 'dead'",
            self.tables.entries
        );
        match self
            .execute("retry_dead", &sql, &[to_i64(id.0)], None)
            .await?
        {
            0 => Err(QueueError::NotDead(id)),
            _ => Ok(()),
        }
    }

    async fn drop_dead(&self, id: EntryId) -> Result<(), QueueError> {
        if self
            .remove("drop_dead", "state = 'dead'", &[to_i64(id.0)])
            .await?
        {
            Ok(())
        } else {
            Err(QueueError::NotDead(id))
        }
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let sql = format!(
            "SELECT target, state, count(*), min({}) FROM {} GROUP BY target, state",
            micros("enqueued_at"),
            self.tables.entries
        );
        let rows: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| backend("stats", e))?;
        stats_of(SERVER, self.poison, rows)
    }

    async fn key_entries(
        &self,
        namespace: &str,
        target: Side,
        key: &Key,
    ) -> Result<Vec<QueuedEntry>, QueueError> {
        let entries = self
            .fetch_entries(
                "key_entries",
                "namespace = $1 AND target = $2 AND key = $3",
                vec![
                    namespace.to_owned(),
                    target.as_str().to_owned(),
                    key.as_str().to_owned(),
                ],
            )
            .await?;
        Ok(entries.into_iter().map(Decoded::queued).collect())
    }

    /// Every call commits its transaction before it returns: nothing to
    /// wait for.
    async fn flush(&self) -> Result<(), QueueError> {
        Ok(())
    }
}
