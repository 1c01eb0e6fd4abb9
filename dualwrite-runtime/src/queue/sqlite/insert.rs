//! Appends and prepares: multi-row inserts whose ids follow the order the
//! requests arrived in, each entry linked behind the previous entry of its
//! key, and the keys' tails moved to the new entries.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::query::Query;
use sqlx::sqlite::SqliteArguments;
use sqlx::Sqlite;

use super::index::IndexDelta;
use super::request::Write;
use super::rows::lenient_integer;
use super::statements::{
    insert_chunks, insert_sql, write_ahead_sql, COMMIT_PREPARED, HEADS_AFTER, UPDATE_TAILS_AFTER,
};
use super::values::{duration_ms, entry_id, lease_id, now_ms};
use super::writer::Writer;
use crate::op::Key;
use crate::queue::NewEntry;
use crate::vocabulary::Side;

/// An entry to insert, its state and how long until it is ready (see
/// [`Write::inserted`]).
pub(super) type Inserted<'a> = (&'a NewEntry, &'static str, Duration);

impl Writer {
    /// A batch of at most [`MAX_INSERT_ROWS`](super::statements::MAX_INSERT_ROWS)
    /// appends, prepares and commits and nothing else, as one round trip
    /// (see [`write_ahead_sql`]).
    pub(super) async fn write_ahead(
        &mut self,
        writes: &mut [Write],
        delta: &mut IndexDelta,
    ) -> Result<(), sqlx::Error> {
        let now = now_ms();
        let inserts: Vec<Inserted<'_>> = writes.iter().filter_map(Write::inserted).collect();
        let count = inserts.len();
        let commits = commit_list(writes);
        let turn = self.next_turn();
        let rows = if inserts.is_empty() {
            let sql = self.opening(COMMIT_PREPARED);
            sqlx::query(sql)
                .bind(now)
                .bind(turn)
                .bind(commits.as_deref().unwrap_or("[]"))
                .execute(&mut self.conn)
                .await?;
            sqlx::query("COMMIT").execute(&mut self.conn).await?;
            Vec::new()
        } else {
            let sql = write_ahead_sql(count, commits.is_some());
            let mut query = self.bind_rows(sqlx::query(sql), now, &inserts);
            query = query.bind(count as i64);
            if let Some(commits) = &commits {
                query = query.bind(now).bind(turn).bind(commits.as_str());
            }
            query.fetch_all(&mut self.conn).await?
        };
        // (id, whether it is the head of its key), in insertion order.
        let mut ids: Vec<(i64, bool)> = rows
            .iter()
            .filter_map(|row| {
                let id = lenient_integer(row, 0, "id").ok()?;
                let head = lenient_integer(row, 1, "head").ok()?;
                Some((id, head != 0))
            })
            .collect();
        ids.sort_unstable();
        if ids.len() != count {
            return Err(sqlx::Error::Protocol(format!(
                "appending {count} queue entries returned {} ids",
                ids.len()
            )));
        }
        let mut ids = ids.into_iter();
        for (entry, reply) in writes.iter_mut().filter_map(Write::insertion) {
            let (id, head) = ids.next().unwrap_or((0, false));
            if head {
                delta.add_head(entry);
            }
            reply.set(Ok(entry_id(id)));
        }
        Ok(())
    }

    /// Binds the time and the rows of an [`insert_sql`] statement.
    pub(super) fn bind_rows<'q>(
        &mut self,
        mut query: Query<'q, Sqlite, SqliteArguments<'q>>,
        now: i64,
        rows: &[Inserted<'q>],
    ) -> Query<'q, Sqlite, SqliteArguments<'q>> {
        query = query.bind(now);
        // The previous row of the same key in this statement, if any.
        let mut last_of_key: HashMap<(&str, Side, &Key), i64> = HashMap::new();
        for (position, (entry, state, wait)) in (1i64..).zip(rows) {
            let turn = self.next_turn();
            let previous = last_of_key.insert(
                (entry.namespace.as_str(), entry.target, &entry.key),
                position,
            );
            query = query
                .bind(position)
                .bind(entry.namespace.as_str())
                .bind(entry.target.as_str())
                .bind(entry.key.as_str())
                .bind(entry.method.as_str())
                .bind(i64::from(entry.version))
                .bind(entry.payload.as_slice())
                .bind(entry.reason.as_str())
                .bind(turn)
                .bind(previous)
                .bind(*state)
                .bind(now.saturating_add(duration_ms(*wait)))
                .bind(i64::from(entry.uncertain));
        }
        for _ in rows.len()..rows.len().next_power_of_two() {
            for _ in 0..13 {
                query = query.bind(None::<i64>);
            }
        }
        query
    }

    /// Inserts the entries of every append and prepare of the batch, in
    /// statements of at most [`MAX_INSERT_ROWS`](super::statements::MAX_INSERT_ROWS)
    /// rows, inside the open transaction.
    pub(super) async fn append_all(
        &mut self,
        writes: &mut [Write],
        now: i64,
        delta: &mut IndexDelta,
    ) -> Result<(), sqlx::Error> {
        let appends: Vec<usize> = (0..writes.len())
            .filter(|at| writes[*at].inserted().is_some())
            .collect();
        if appends.is_empty() {
            return Ok(());
        }
        self.begin().await?;
        let mut rest = appends.as_slice();
        for chunk in insert_chunks(appends.len()) {
            let (rows, later) = rest.split_at(chunk);
            rest = later;
            let inserted: Vec<Inserted<'_>> = rows
                .iter()
                .filter_map(|at| writes[*at].inserted())
                .collect();
            let query = self.bind_rows(sqlx::query(insert_sql(chunk)), now, &inserted);
            let done = query.execute(&mut self.conn).await?;
            if done.rows_affected() != chunk as u64 {
                return Err(sqlx::Error::Protocol(format!(
                    "inserting {chunk} queue entries inserted {} rows",
                    done.rows_affected()
                )));
            }
            // The last row inserted has the highest position.
            let base = done.last_insert_rowid() - chunk as i64;
            sqlx::query(UPDATE_TAILS_AFTER)
                .bind(base)
                .execute(&mut self.conn)
                .await?;
            let heads: HashSet<i64> = sqlx::query_scalar(HEADS_AFTER)
                .bind(base)
                .fetch_all(&mut self.conn)
                .await?
                .into_iter()
                .collect();
            for (offset, at) in (1i64..).zip(rows) {
                if let Some((entry, reply)) = writes[*at].insertion() {
                    reply.set(Ok(entry_id(base + offset)));
                    if heads.contains(&(base + offset)) {
                        delta.add_head(entry);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The ids of the prepared entries `writes` commit, as a JSON list.
fn commit_list(writes: &[Write]) -> Option<String> {
    let ids: Vec<String> = writes
        .iter()
        .filter_map(|write| match write {
            Write::Commit(id) => Some(lease_id(*id).to_string()),
            _ => None,
        })
        .collect();
    (!ids.is_empty()).then(|| format!("[{}]", ids.join(",")))
}
