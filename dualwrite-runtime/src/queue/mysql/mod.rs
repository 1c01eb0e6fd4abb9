//! The reconciliation queue in MySQL or MariaDB tables, shared by every
//! process that opens the same tables (feature `mysql`). Needs InnoDB and
//! `FOR UPDATE SKIP LOCKED` (MySQL 8.0, MariaDB 10.6 or later).
//!
//! # Tables
//!
//! Three tables, named from a prefix
//! ([`table_prefix`](super::ServerQueueOptions::table_prefix), default
//! [`DEFAULT_TABLE_PREFIX`](super::DEFAULT_TABLE_PREFIX)): `{prefix}meta`
//! (the schema version), `{prefix}entries` (one row per entry) and
//! `{prefix}lines` (one row per namespace and target, which appends lock).
//! The schema is created only on request: [`MySqlQueue::install_schema`],
//! or [`create_schema`](super::ServerQueueOptions::create_schema); opening tables that do not
//! exist fails with a [`SchemaError`](super::SchemaError) naming the missing
//! tables and the call that creates them, and tables of a newer schema
//! version are refused.
//!
//! # Many processes
//!
//! The same design as the PostgreSQL queue (`queue::postgres`): claims lease
//! heads of keys with `FOR UPDATE SKIP LOCKED` in `READ COMMITTED`
//! transactions, so claimers never wait for each other's rows and never
//! lease two entries of one key; times are the database's (`NOW(6)`, kept
//! as microseconds since the epoch); deadlocks and lock wait timeouts
//! (errors 1213 and 1205) are retried. Appends of one namespace and target
//! are serialised on their `lines` row, so that `AUTO_INCREMENT` ids, which
//! decide the order, follow the order appends commit in (InnoDB hands ids
//! out at insert, not at commit). That bounds one namespace's append rate
//! to one transaction at a time on the server; the PostgreSQL queue, with
//! advisory locks per key, does not have this bound.
//!
//! Where to put the tables (old database, new, or a third) is weighed in
//! the [queue module's docs](super#where-to-put-a-server-queues-tables).

mod schema;
mod statements;
mod writes;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::mysql::MySqlPool;

use super::sql::{
    complete_at_once, decode, entry_columns, head_condition, hint, in_line, interval_micros,
    stats_of, to_i64, Decoded, ServerQueueOptions, Tables,
};
use super::{
    Claim, DeadLetter, EntryId, Lease, NewEntry, PoisonPolicy, QueueError, QueueStats, QueuedEntry,
    ReconciliationQueue, Turnover,
};
use crate::op::Key;
use crate::vocabulary::Side;
use schema::{check_version, install};
use statements::{as_text, backend, cut, placeholders, Arg};

const SERVER: &str = "MySQL";

/// The database clock, in microseconds since the epoch.
const NOW: &str = "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)";

/// The longest namespace and key the tables hold (characters).
const MAX_NAMESPACE: usize = 190;
const MAX_KEY: usize = 512;
/// Longer errors are cut to this many characters (the column is `TEXT`).
const MAX_ERROR: usize = 16_000;

/// How to open a [`MySqlQueue`]; from [`MySqlQueue::options`].
pub type MySqlQueueOptions = ServerQueueOptions<MySqlPool>;

impl MySqlQueueOptions {
    /// Opens the queue: checks the prefix and the schema version.
    ///
    /// # Errors
    ///
    /// [`QueueError::Backend`] holding a [`SchemaError`](super::SchemaError)
    /// when the tables are missing (without
    /// [`create_schema`](Self::create_schema)) or of a newer version, or a
    /// database error.
    pub async fn open(self) -> Result<MySqlQueue, QueueError> {
        let tables = Tables::new(SERVER, &self.prefix, "lines")?;
        if self.create_schema {
            install(&self.pool, &tables).await?;
        }
        check_version(&self.pool, &tables).await?;
        Ok(MySqlQueue {
            pool: self.pool,
            tables,
            poison: self.poison,
        })
    }
}

/// A durable reconciliation queue in MySQL or MariaDB, shared by every
/// process opening the same tables (see the [module docs](self)).
#[derive(Clone)]
pub struct MySqlQueue {
    pool: MySqlPool,
    tables: Tables,
    poison: PoisonPolicy,
}

impl fmt::Debug for MySqlQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlQueue")
            .field("prefix", &self.tables.prefix)
            .field("poison", &self.poison)
            .finish_non_exhaustive()
    }
}

impl MySqlQueue {
    /// Opens the queue in the tables of
    /// [`DEFAULT_TABLE_PREFIX`](super::DEFAULT_TABLE_PREFIX), which must
    /// exist ([`install_schema`](Self::install_schema)).
    pub async fn connect(pool: MySqlPool) -> Result<MySqlQueue, QueueError> {
        Self::options(pool).open().await
    }

    /// Options to open the queue with: table prefix, poison policy, schema
    /// creation.
    pub fn options(pool: MySqlPool) -> MySqlQueueOptions {
        ServerQueueOptions::new(pool)
    }

    /// The shared stage of `migration`, in this queue's schema and on its
    /// pool, for [`StageHandle::with_source`](crate::StageHandle::with_source)
    /// or [`with_fenced_source`](crate::StageHandle::with_fenced_source).
    pub async fn stage_source(
        &self,
        migration: &str,
    ) -> Result<crate::stage::MySqlStageSource, crate::stage::StageSourceError> {
        crate::stage::MySqlStageSource::open(self.pool.clone(), &self.tables.prefix, migration)
            .await
    }

    /// The pool the queue uses.
    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// The prefix of the queue's tables.
    pub fn table_prefix(&self) -> &str {
        &self.tables.prefix
    }
}

#[async_trait]
impl ReconciliationQueue for MySqlQueue {
    async fn append(&self, entry: NewEntry) -> Result<EntryId, QueueError> {
        self.insert(entry, None).await
    }

    async fn prepare(&self, entry: NewEntry, expiry: Duration) -> Result<EntryId, QueueError> {
        self.insert(entry, Some(expiry)).await
    }

    async fn commit(&self, id: EntryId) -> Result<(), QueueError> {
        let sql = format!(
            "UPDATE {} SET state = 'pending', ready_at = {NOW} WHERE id = ? AND state = 'prepared'",
            self.tables.entries
        );
        self.execute("commit", sql, vec![Arg::Int(to_i64(id.0))])
            .await?;
        Ok(())
    }

    async fn commit_uncertain(&self, id: EntryId) -> Result<(), QueueError> {
        let sql = format!(
            "UPDATE {} SET ready_at = LEAST(ready_at, {NOW}) WHERE id = ? AND state = 'prepared'",
            self.tables.entries
        );
        self.execute("commit_uncertain", sql, vec![Arg::Int(to_i64(id.0))])
            .await?;
        Ok(())
    }

    async fn abort(&self, id: EntryId) -> Result<(), QueueError> {
        self.remove(
            "abort",
            id,
            "(state = 'prepared' OR (state = 'leased' AND orphaned))",
            Vec::new(),
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
             FROM {entries} e WHERE e.id = ? AND e.lease_token = ? AND e.state = 'leased'"
        );
        let later: Option<i64> = sqlx::query_scalar(&sql)
            .bind(to_i64(lease.id.0))
            .bind(to_i64(lease.token))
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| backend("has_later_entries", e))?;
        later
            .map(|later| later != 0)
            .ok_or(QueueError::LeaseLost(lease.id))
    }

    async fn settle_orphan(&self, id: EntryId) -> Result<(), QueueError> {
        // MySQL assigns left to right, each seeing the ones before: read
        // `state` before changing it.
        let sql = format!(
            "UPDATE {} SET orphaned = FALSE, \
               ready_at = CASE WHEN state = 'prepared' THEN {NOW} ELSE ready_at END, \
               state = CASE WHEN state = 'prepared' THEN 'pending' ELSE state END \
             WHERE id = ?",
            self.tables.entries
        );
        self.execute("settle_orphan", sql, vec![Arg::Int(to_i64(id.0))])
            .await?;
        Ok(())
    }

    async fn has_work(&self, namespace: &str, target: Side, key: &Key) -> Result<bool, QueueError> {
        let keys = if key.is_unkeyed() {
            "(? IS NOT NULL)"
        } else {
            "(e.key = ? OR e.key = '*')"
        };
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {} e WHERE e.namespace = ? AND e.target = ? \
               AND {keys} AND {})",
            self.tables.entries,
            in_line(self.poison, "e")
        );
        let busy: i64 = sqlx::query_scalar(&sql)
            .bind(namespace)
            .bind(target.as_str())
            .bind(key.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| backend("has_work", e))?;
        Ok(busy != 0)
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
        // The hint after the claim, as the PostgreSQL queue does: one probe
        // when the claim is full, the scan for the earliest head not ready
        // only when it came up short (counting every head first cost a scan
        // of the namespace per claim).
        let more = format!(
            "SELECT EXISTS (SELECT 1 FROM {entries} e WHERE e.namespace = ? \
               AND e.ready_at <= {NOW} AND {head})"
        );
        // Not `ready_at > NOW`: MySQL's NOW is the statement's, not the
        // transaction's, so a lease that expired after the pick but before
        // this scan would be skipped and a later one reported (a worker told
        // to wait a whole lease for an entry ready now). Such a head gives a
        // negative difference, which the hint reads as "ready now"; so does
        // a ready head another claim holds locked, costing one early claim.
        let next = format!(
            "SELECT MIN(e.ready_at) - {NOW} FROM {entries} e WHERE e.namespace = ? AND {head}"
        );
        let pick = format!(
            "SELECT e.id FROM {entries} e WHERE e.namespace = ? AND e.ready_at <= {NOW} AND {head} \
             ORDER BY e.turn, e.id LIMIT ? FOR UPDATE SKIP LOCKED"
        );
        let columns = entry_columns("enqueued_at", "died_at", as_text);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let wait = interval_micros(lease);
        let namespace = namespace.to_owned();
        let tables = entries.clone();
        let (more_ready, next, rows) = self
            .transaction("claim", move |conn| {
                let (more, next, pick, columns, namespace, entries) = (
                    more.clone(),
                    next.clone(),
                    pick.clone(),
                    columns.clone(),
                    namespace.clone(),
                    tables.clone(),
                );
                Box::pin(async move {
                    let ids: Vec<i64> = sqlx::query_scalar(&pick)
                        .bind(&namespace)
                        .bind(limit)
                        .fetch_all(&mut *conn)
                        .await?;
                    if ids.is_empty() {
                        let next: Option<i64> = sqlx::query_scalar(&next)
                            .bind(&namespace)
                            .fetch_one(&mut *conn)
                            .await?;
                        return Ok((false, next, Vec::new()));
                    }
                    let listed = placeholders(ids.len());
                    // `orphaned` first: it reads the state before the lease.
                    let lease = format!(
                        "UPDATE {entries} SET orphaned = (orphaned OR state = 'prepared'), \
                           state = 'leased', lease_token = lease_token + 1, ready_at = {NOW} + ? \
                         WHERE id IN ({listed})"
                    );
                    let mut query = sqlx::query(&lease).bind(wait);
                    for id in &ids {
                        query = query.bind(*id);
                    }
                    query.execute(&mut *conn).await?;
                    let read = format!("SELECT {columns} FROM {entries} WHERE id IN ({listed})");
                    let mut query = sqlx::query(&read);
                    for id in &ids {
                        query = query.bind(*id);
                    }
                    let rows = query.fetch_all(&mut *conn).await?;
                    // The entries just leased are past `now` now: left out
                    // of the earliest-not-ready scan.
                    if i64::try_from(ids.len()).unwrap_or(i64::MAX) >= limit {
                        let more: bool = sqlx::query_scalar(&more)
                            .bind(&namespace)
                            .fetch_one(&mut *conn)
                            .await?;
                        if more {
                            return Ok((true, None, rows));
                        }
                    }
                    let next = format!("{next} AND e.id NOT IN ({listed})");
                    let mut query = sqlx::query_scalar(&next).bind(&namespace);
                    for id in &ids {
                        query = query.bind(*id);
                    }
                    let next: Option<i64> = query.fetch_one(&mut *conn).await?;
                    Ok((false, next, rows))
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
            next_ready_in: hint(more_ready, next),
        })
    }

    async fn renew(&self, lease: Lease, duration: Duration) -> Result<(), QueueError> {
        let set = format!("ready_at = {NOW} + ?");
        self.settle(
            "renew",
            lease,
            &set,
            vec![Arg::Int(interval_micros(duration))],
        )
        .await
    }

    async fn complete(&self, lease: Lease) -> Result<(), QueueError> {
        let removed = self
            .remove(
                "complete",
                lease.id,
                "lease_token = ? AND state = 'leased'",
                vec![Arg::Int(to_i64(lease.token))],
            )
            .await?;
        if removed {
            Ok(())
        } else {
            Err(QueueError::LeaseLost(lease.id))
        }
    }

    /// The completions at once (see `sql::complete_at_once`; they were one
    /// after another, which bounded a single worker process at about 400
    /// entries a second), then the claim.
    async fn complete_and_claim(
        &self,
        completed: &[Lease],
        namespace: &str,
        limit: usize,
        lease: Duration,
    ) -> Turnover {
        let results = complete_at_once(completed, |done| self.complete(done)).await;
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
            "state = 'pending', attempts = attempts + 1, last_error = ?, ready_at = {NOW} + ?"
        );
        let args = vec![Arg::Text(cut(error)), Arg::Int(interval_micros(delay))];
        self.settle("retry_later", lease, &set, args).await
    }

    async fn release(&self, lease: Lease) -> Result<(), QueueError> {
        let set = format!("state = 'pending', ready_at = {NOW}");
        self.settle("release", lease, &set, Vec::new()).await
    }

    async fn dead_letter(&self, lease: Lease, error: &str) -> Result<(), QueueError> {
        let set =
            format!("state = 'dead', attempts = attempts + 1, last_error = ?, died_at = {NOW}");
        self.settle("dead_letter", lease, &set, vec![Arg::Text(cut(error))])
            .await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        let dead = self
            .fetch_entries("list dead letters", "state = 'dead'", Vec::new())
            .await?;
        Ok(dead.into_iter().map(Decoded::dead_letter).collect())
    }

    async fn retry_dead(&self, id: EntryId) -> Result<(), QueueError> {
        let sql = format!(
            "UPDATE {} SET state = 'pending', attempts = 0, ready_at = {NOW}, died_at = NULL \
             WHERE id = ? AND state = 'dead'",
            self.tables.entries
        );
        match self
            .execute("retry_dead", sql, vec![Arg::Int(to_i64(id.0))])
            .await?
        {
            0 => Err(QueueError::NotDead(id)),
            _ => Ok(()),
        }
    }

    async fn drop_dead(&self, id: EntryId) -> Result<(), QueueError> {
        if self
            .remove("drop_dead", id, "state = 'dead'", Vec::new())
            .await?
        {
            Ok(())
        } else {
            Err(QueueError::NotDead(id))
        }
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let sql = format!(
            "SELECT {}, {}, COUNT(*), MIN(enqueued_at) FROM {} GROUP BY target, state",
            as_text("target"),
            as_text("state"),
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
                "namespace = ? AND target = ? AND `key` = ?",
                vec![
                    Arg::Text(namespace.to_owned()),
                    Arg::Text(target.as_str().to_owned()),
                    Arg::Text(key.as_str().to_owned()),
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
