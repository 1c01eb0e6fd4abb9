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

mod schema;
mod statements;
mod writes;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgPool;

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
use statements::{after, backend, micros, Failure};

const SERVER: &str = "PostgreSQL";

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

impl PostgresQueue {
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
        // The hint, after the claim, so that the common case costs one
        // probe: a full claim asks whether another head is ready (the first
        // one found in turn order answers); only a claim that came up short
        // looks for the earliest head not ready yet, past the entries it
        // just leased. (Counting every head first, as this did before, cost
        // a scan of the namespace per claim: 9 ms for 6,000 entries with
        // statistics, 860 ms on a table not analysed yet, against 0.4 ms
        // for the claim.)
        let more = format!(
            "SELECT EXISTS (SELECT 1 FROM {entries} e WHERE e.namespace = $1 \
               AND e.ready_at <= now() AND {head})"
        );
        let next = format!(
            "SELECT (extract(epoch from (min(e.ready_at) - now())) * 1000000)::bigint \
             FROM {entries} e WHERE e.namespace = $1 AND e.ready_at > now() \
               AND NOT (e.id = ANY($2)) AND {head}"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let wait = interval_micros(lease);
        let (claim_sql, more, next) = (&claim, &more, &next);
        let (more_ready, next, rows) = self
            .transaction("claim", move |mut tx| {
                Box::pin(async move {
                    let result: Result<_, Failure> = async {
                        let rows = sqlx::query(claim_sql)
                            .bind(namespace)
                            .bind(limit)
                            .bind(wait)
                            .fetch_all(&mut *tx)
                            .await?;
                        if i64::try_from(rows.len()).unwrap_or(i64::MAX) >= limit {
                            let more: bool = sqlx::query_scalar(more)
                                .bind(namespace)
                                .fetch_one(&mut *tx)
                                .await?;
                            if more {
                                return Ok((true, None, rows));
                            }
                        }
                        let leased = rows
                            .iter()
                            .map(|row| sqlx::Row::try_get::<i64, _>(row, "id"))
                            .collect::<Result<Vec<_>, _>>()?;
                        let next: Option<i64> = sqlx::query_scalar(next)
                            .bind(namespace)
                            .bind(&leased)
                            .fetch_one(&mut *tx)
                            .await?;
                        Ok((false, next, rows))
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
            next_ready_in: hint(more_ready, next),
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

    /// The completions at once (see `sql::complete_at_once`), then the claim.
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
