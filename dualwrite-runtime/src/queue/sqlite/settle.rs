//! A batch that is neither only appends, prepares and commits nor only
//! completions and a claim (those take one round trip each: `insert`,
//! `turnover`): appends first,
//! then every completion in one statement, then the other writes one by one
//! (commits, aborts, renewals, retries, releases, dead letters), and claims
//! last, so that they see the heads the others promoted.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Column, Row, Sqlite};

use super::error::TxError;
use super::index::IndexDelta;
use super::request::Write;
use super::rows::{lenient_integer, read_detached, read_key};
use super::statements::{
    insert_sql, Opening, ABORT_PREPARED, COMMIT_PREPARED, REMOVE_DEAD, REMOVE_LEASED,
    UPDATE_TAIL_OF,
};
use super::values::{duration_ms, id_list, lease_id, now_ms, token};
use super::writer::Writer;
use crate::queue::{EntryId, PoisonPolicy, QueueError};

impl Writer {
    /// Runs `writes` inside one transaction (begun by the first statement),
    /// setting each one's result.
    pub(super) async fn body(
        &mut self,
        writes: &mut [Write],
        delta: &mut IndexDelta,
    ) -> Result<(), TxError> {
        let now = now_ms();
        self.append_all(writes, now, delta)
            .await
            .map_err(|error| TxError::of("append", error))?;
        self.complete_all(writes, now, delta)
            .await
            .map_err(|error| TxError::of("complete an entry", error))?;
        for claims in [false, true] {
            for write in writes.iter_mut() {
                if matches!(write, Write::Claim { .. }) != claims {
                    continue;
                }
                self.apply(write, now, delta)
                    .await
                    .map_err(|error| TxError::of(write.describe(), error))?;
            }
        }
        Ok(())
    }

    /// Deletes every completed entry of the batch and promotes the next
    /// entry of each key, in three statements.
    async fn complete_all(
        &mut self,
        writes: &mut [Write],
        now: i64,
        delta: &mut IndexDelta,
    ) -> Result<(), sqlx::Error> {
        let Some(leases) = completed_leases(writes) else {
            return Ok(());
        };
        let mut removed = self
            .remove_entries(REMOVE_LEASED, &leases, now, delta)
            .await?;
        answer_completions(writes, &mut removed);
        Ok(())
    }

    /// Removes the entries that `statements` select from the JSON `ids`,
    /// making each one's successor the head of its key (ready now, at the
    /// back of the line) and dropping the `streams` row of keys left empty.
    /// Returns the `(id, lease_token)` of each entry removed.
    async fn remove_entries(
        &mut self,
        statements: &'static Opening,
        ids: &str,
        now: i64,
        delta: &mut IndexDelta,
    ) -> Result<HashSet<(i64, i64)>, sqlx::Error> {
        let turn = self.next_turn();
        let sql = self.opening(statements);
        let rows = bind_removal(sqlx::query(sql), now, turn, ids)
            .fetch_all(&mut self.conn)
            .await?;
        Ok(removed(&rows, delta))
    }

    /// One write other than an append or a completion, inside the open
    /// transaction, setting its result. `Err` is a database failure (the
    /// batch rolls back).
    async fn apply(
        &mut self,
        write: &mut Write,
        now: i64,
        delta: &mut IndexDelta,
    ) -> Result<(), sqlx::Error> {
        match write {
            // Done in bulk by `append_all` and `complete_all`.
            Write::Append(..) | Write::Prepare(..) | Write::Complete(..) => {}
            Write::Commit(id) => {
                let turn = self.next_turn();
                let sql = self.opening(COMMIT_PREPARED);
                sqlx::query(sql)
                    .bind(now)
                    .bind(turn)
                    .bind(id_list(*id))
                    .execute(&mut self.conn)
                    .await?;
            }
            Write::Abort(id, reply) => {
                // A prepared entry may sit anywhere in its key's line; the
                // delete trigger relinks its neighbours and the key's tail.
                let sql = self.opening(ABORT_PREPARED);
                let removed = sqlx::query(sql)
                    .bind(lease_id(*id))
                    .fetch_optional(&mut self.conn)
                    .await?;
                if let Some((namespace, side, key)) = removed.as_ref().and_then(read_key) {
                    let busy: bool = sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM streams \
                         WHERE namespace = ? AND target = ? AND key = ?)",
                    )
                    .bind(namespace.as_str())
                    .bind(side.as_str())
                    .bind(key.as_str())
                    .fetch_one(&mut self.conn)
                    .await?;
                    if !busy {
                        delta.empty((namespace, side, key));
                    }
                }
                reply.set(Ok(()));
            }
            Write::CommitUncertain(id) => {
                let turn = self.next_turn();
                self.begin().await?;
                sqlx::query(
                    "UPDATE entries SET ready_at = ?, turn = ? WHERE id = ? AND state = 'prepared'",
                )
                .bind(now)
                .bind(turn)
                .bind(lease_id(*id))
                .execute(&mut self.conn)
                .await?;
            }
            Write::SettleOrphan(id, reply) => {
                self.begin().await?;
                let turn = self.next_turn();
                sqlx::query(
                    "UPDATE entries SET orphaned = 0, \
                       ready_at = CASE WHEN state = 'prepared' THEN ? ELSE ready_at END, \
                       turn = CASE WHEN state = 'prepared' THEN ? ELSE turn END, \
                       state = CASE WHEN state = 'prepared' THEN 'pending' ELSE state END \
                     WHERE id = ?",
                )
                .bind(now)
                .bind(turn)
                .bind(lease_id(*id))
                .execute(&mut self.conn)
                .await?;
                reply.set(Ok(()));
            }
            Write::Renew(lease, duration, reply) => {
                self.begin().await?;
                let done = sqlx::query(
                    "UPDATE entries SET ready_at = ? WHERE id = ? AND state = 'leased' AND lease_token = ?",
                )
                .bind(now.saturating_add(duration_ms(*duration)))
                .bind(lease_id(lease.id))
                .bind(token(lease.token))
                .execute(&mut self.conn)
                .await?;
                reply.set(settled(done.rows_affected(), lease.id));
            }
            // Everything sent earlier is committed by the time this batch
            // is (requests run in order); `execute` syncs relaxed settles.
            Write::Flush(reply) => reply.set(Ok(())),
            Write::HasLater(lease, reply) => {
                self.begin().await?;
                let (leased, later): (bool, bool) = sqlx::query_as(
                    // The key's next entry, or a later entry across the
                    // unkeyed barrier (see `ReconciliationQueue`).
                    "SELECT EXISTS (SELECT 1 FROM entries WHERE id = ?1 AND state = 'leased' \
                       AND lease_token = ?2), \
                     EXISTS (SELECT 1 FROM entries WHERE prev_id = ?1) \
                     OR EXISTS (SELECT 1 FROM entries l JOIN entries o \
                       ON o.namespace = l.namespace AND o.target = l.target AND o.id > l.id \
                       AND o.prev_id IS NOT 0 AND (l.key = '*' OR o.key = '*') \
                       WHERE l.id = ?1)",
                )
                .bind(lease_id(lease.id))
                .bind(token(lease.token))
                .fetch_one(&mut self.conn)
                .await?;
                reply.set(if leased {
                    Ok(later)
                } else {
                    Err(QueueError::LeaseLost(lease.id))
                });
            }
            Write::Claim {
                namespace,
                limit,
                lease,
                reply,
            } => {
                let claim = self.claim(namespace, *limit, *lease, now).await?;
                reply.set(Ok(claim));
            }
            Write::RetryLater {
                lease,
                error,
                delay,
                reply,
            } => {
                self.begin().await?;
                let turn = self.next_turn();
                let done = sqlx::query(
                    "UPDATE entries SET state = 'pending', attempts = attempts + 1, last_error = ?, \
                     ready_at = ?, turn = ? WHERE id = ? AND state = 'leased' AND lease_token = ?",
                )
                .bind(error.as_str())
                .bind(now.saturating_add(duration_ms(*delay)))
                .bind(turn)
                .bind(lease_id(lease.id))
                .bind(token(lease.token))
                .execute(&mut self.conn)
                .await?;
                reply.set(settled(done.rows_affected(), lease.id));
            }
            Write::Release(lease, reply) => {
                self.begin().await?;
                let turn = self.next_turn();
                let done = sqlx::query(
                    "UPDATE entries SET state = 'pending', ready_at = ?, turn = ? \
                     WHERE id = ? AND state = 'leased' AND lease_token = ?",
                )
                .bind(now)
                .bind(turn)
                .bind(lease_id(lease.id))
                .bind(token(lease.token))
                .execute(&mut self.conn)
                .await?;
                reply.set(settled(done.rows_affected(), lease.id));
            }
            Write::DeadLetter {
                lease,
                error,
                reply,
            } => {
                self.begin().await?;
                let done = sqlx::query(
                    "UPDATE entries SET state = 'dead', attempts = attempts + 1, last_error = ?, \
                     died_at = ? WHERE id = ? AND state = 'leased' AND lease_token = ?",
                )
                .bind(error.as_str())
                .bind(now)
                .bind(lease_id(lease.id))
                .bind(token(lease.token))
                .execute(&mut self.conn)
                .await?;
                if done.rows_affected() > 0 && self.poison == PoisonPolicy::Skip {
                    self.detach(lease.id, now, delta).await?;
                }
                reply.set(settled(done.rows_affected(), lease.id));
            }
            Write::RetryDead(id, reply) => {
                self.begin().await?;
                if self.requeue_detached(*id, now, delta).await? {
                    reply.set(Ok(()));
                    return Ok(());
                }
                let turn = self.next_turn();
                let done = sqlx::query(
                    "UPDATE entries SET state = 'pending', attempts = 0, ready_at = ?, turn = ?, \
                     died_at = NULL WHERE id = ? AND state = 'dead'",
                )
                .bind(now)
                .bind(turn)
                .bind(lease_id(*id))
                .execute(&mut self.conn)
                .await?;
                reply.set(dead(done.rows_affected() > 0, *id));
            }
            Write::DropDead(id, reply) => {
                let removed = self
                    .remove_entries(REMOVE_DEAD, &id_list(*id), now, delta)
                    .await?;
                let id_removed = removed.iter().any(|(removed, _)| *removed == lease_id(*id));
                reply.set(dead(id_removed, *id));
            }
        }
        Ok(())
    }

    /// Under [`PoisonPolicy::Skip`], takes a new dead letter out of its
    /// key's line (`prev_id = 0`): its successor becomes the head, and a key
    /// left with no other entry has no work.
    async fn detach(
        &mut self,
        id: EntryId,
        now: i64,
        delta: &mut IndexDelta,
    ) -> Result<(), sqlx::Error> {
        let turn = self.next_turn();
        let rows = sqlx::query(
            "UPDATE entries SET prev_id = NULL, \
               ready_at = CASE WHEN state = 'prepared' THEN ready_at ELSE ? END, \
               turn = CASE WHEN state = 'prepared' THEN turn ELSE ? END WHERE prev_id = ?; \
             DELETE FROM streams WHERE (namespace, target, key, tail_id) IN \
               (SELECT namespace, target, key, id FROM entries WHERE id = ?) \
             RETURNING namespace, target, key; \
             UPDATE entries SET prev_id = 0 WHERE id = ?;",
        )
        .bind(now)
        .bind(turn)
        .bind(lease_id(id))
        .bind(lease_id(id))
        .bind(lease_id(id))
        .fetch_all(&mut self.conn)
        .await?;
        for key in rows.iter().filter_map(read_key) {
            delta.empty(key);
        }
        Ok(())
    }

    /// Retries a dead letter that [`detach`](Self::detach) took out of its
    /// key's line: it goes back in at the end, as a new entry (new id,
    /// attempts reset). `false` if `id` is not such a dead letter.
    async fn requeue_detached(
        &mut self,
        id: EntryId,
        now: i64,
        delta: &mut IndexDelta,
    ) -> Result<bool, sqlx::Error> {
        let row = sqlx::query(
            "SELECT namespace, target, key, method, version, payload, last_error, orphaned \
             FROM entries WHERE id = ? AND state = 'dead' AND prev_id = 0",
        )
        .bind(lease_id(id))
        .fetch_optional(&mut self.conn)
        .await?;
        let Some(entry) = row.as_ref().and_then(read_detached) else {
            return Ok(false);
        };
        let inserted = [(&entry, "pending", Duration::ZERO)];
        let query = self.bind_rows(sqlx::query(insert_sql(1)), now, &inserted);
        let done = query.execute(&mut self.conn).await?;
        let new_id = done.last_insert_rowid();
        sqlx::query(UPDATE_TAIL_OF)
            .bind(new_id)
            .execute(&mut self.conn)
            .await?;
        let head: bool = sqlx::query_scalar("SELECT prev_id IS NULL FROM entries WHERE id = ?")
            .bind(new_id)
            .fetch_one(&mut self.conn)
            .await?;
        sqlx::query("DELETE FROM entries WHERE id = ?")
            .bind(lease_id(id))
            .execute(&mut self.conn)
            .await?;
        if head {
            delta.add_head(&entry);
        }
        Ok(true)
    }
}

/// The JSON object `{"id": lease_token, ..}` of the batch's completions
/// (the parameter of [`REMOVE_LEASED`]), or `None` if it has none.
pub(super) fn completed_leases(writes: &[Write]) -> Option<String> {
    let mut leases = String::from("{");
    for write in writes {
        if let Write::Complete(lease, _) = write {
            if leases.len() > 1 {
                leases.push(',');
            }
            let _ = write!(leases, "\"{}\":{}", lease_id(lease.id), token(lease.token));
        }
    }
    (leases.len() > 1).then(|| leases + "}")
}

/// Binds the parameters of a [`remove!`](super::statements) statement.
pub(super) fn bind_removal<'q>(
    query: Query<'q, Sqlite, SqliteArguments<'q>>,
    now: i64,
    turn: i64,
    ids: &'q str,
) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    query.bind(now).bind(turn).bind(ids).bind(ids).bind(ids)
}

/// What a removal's rows (among `rows`, which may hold other statements'
/// rows too) say: the keys left empty go into `delta`; returns the
/// `(id, lease_token)` of each entry removed.
pub(super) fn removed<'r>(
    rows: impl IntoIterator<Item = &'r SqliteRow>,
    delta: &mut IndexDelta,
) -> HashSet<(i64, i64)> {
    let mut removed = HashSet::new();
    for row in rows {
        let columns = row.columns();
        if columns.len() == 2 && columns[0].name() == "id" {
            if let (Ok(id), Ok(token)) = (
                lenient_integer(row, 0, "id"),
                lenient_integer(row, 1, "lease_token"),
            ) {
                removed.insert((id, token));
            }
        } else if columns.len() == 3 && columns[0].name() == "namespace" {
            if let Some(key) = read_key(row) {
                delta.empty(key);
            }
        }
    }
    removed
}

/// Answers the batch's completions from the entries `removed`.
pub(super) fn answer_completions(writes: &mut [Write], removed: &mut HashSet<(i64, i64)>) {
    for write in writes.iter_mut() {
        if let Write::Complete(lease, reply) = write {
            // Only the claim the entry was removed under succeeds: a stale
            // claim of the same entry in the batch is late, and so is the
            // same claim completed twice (the in-memory queue and a second
            // batch say the same).
            reply.set(
                if removed.remove(&(lease_id(lease.id), token(lease.token))) {
                    Ok(())
                } else {
                    Err(QueueError::LeaseLost(lease.id))
                },
            );
        }
    }
}

/// The answer to a settle of a lease: `LeaseLost` if it changed no row.
fn settled(rows: u64, id: EntryId) -> Result<(), QueueError> {
    if rows == 0 {
        Err(QueueError::LeaseLost(id))
    } else {
        Ok(())
    }
}

/// The answer to a retry or drop of a dead letter: `NotDead` if `id` was not
/// one.
fn dead(found: bool, id: EntryId) -> Result<(), QueueError> {
    if found {
        Ok(())
    } else {
        Err(QueueError::NotDead(id))
    }
}
