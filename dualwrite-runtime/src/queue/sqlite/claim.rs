//! Claims: leasing the heads of keys that are ready, in the order they
//! became ready, and dead-lettering a claimed row that cannot be read.

use std::time::Duration;

use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Column, Row, Sqlite};

use super::rows::read_claimed;
use super::statements::{CLAIM, COUNTS_COLUMN};
use super::values::duration_ms;
use super::writer::Writer;
use crate::queue::Claim;

/// The parameters of a [`CLAIM`] statement.
pub(super) struct ClaimQuery<'a> {
    pub(super) namespace: &'a str,
    pub(super) limit: usize,
    pub(super) lease: Duration,
    pub(super) now: i64,
    pub(super) turn: i64,
}

impl<'a> ClaimQuery<'a> {
    /// Binds the parameters of [`CLAIM`], in its order, to `query`.
    pub(super) fn bind(
        &self,
        query: sqlx::query::Query<'a, Sqlite, SqliteArguments<'a>>,
    ) -> sqlx::query::Query<'a, Sqlite, SqliteArguments<'a>> {
        let limit = i64::try_from(self.limit).unwrap_or(i64::MAX);
        query
            .bind(self.namespace)
            .bind(self.now)
            .bind(self.namespace)
            .bind(self.now)
            .bind(limit.saturating_add(1))
            .bind(self.now.saturating_add(duration_ms(self.lease)))
            .bind(self.turn)
            .bind(self.namespace)
            .bind(self.now)
            .bind(limit)
    }

    /// The claim that [`CLAIM`]'s rows make (among `rows`, which may hold
    /// other statements' rows too): its counts row and the claimed rows.
    /// Also returns the claimed rows that could not
    /// be read, by id and problem, to dead-letter.
    pub(super) fn claimed<'r>(
        &self,
        rows: impl IntoIterator<Item = &'r SqliteRow>,
    ) -> (Claim, Vec<(i64, String)>) {
        let limit = i64::try_from(self.limit).unwrap_or(i64::MAX);
        let mut claim = Claim::default();
        let mut unreadable = Vec::new();
        let mut counts = None;
        for row in rows {
            match row.columns().first().map(|column| column.name()) {
                Some(COUNTS_COLUMN) => {
                    counts = Some(row);
                    continue;
                }
                // The claimed rows (`RETURNING id, ...`); a removal's rows
                // in the same round trip are shorter.
                Some("id") if row.columns().len() > 3 => {}
                _ => continue,
            }
            match read_claimed(row) {
                Ok(entry) => claim.entries.push(entry),
                Err(problem) => unreadable.push(problem),
            }
        }
        let next_ready = counts.and_then(|row| row.try_get::<Option<i64>, _>(0).ok().flatten());
        let ready = counts
            .and_then(|row| row.try_get::<i64, _>(1).ok())
            .unwrap_or(0);
        if ready > limit {
            claim.next_ready_in = Some(Duration::ZERO);
        } else {
            claim.next_ready_in = next_ready.map(|at| {
                Duration::from_millis(u64::try_from(at.saturating_sub(self.now)).unwrap_or(0))
            });
        }
        claim.entries.sort_by_key(|entry| entry.lease.id);
        (claim, unreadable)
    }
}

impl Writer {
    /// Leases up to `limit` heads of `namespace` for `lease`, inside the
    /// open transaction (see [`CLAIM`]).
    pub(super) async fn claim(
        &mut self,
        namespace: &str,
        limit: usize,
        lease: Duration,
        now: i64,
    ) -> Result<Claim, sqlx::Error> {
        let query = ClaimQuery {
            namespace,
            limit,
            lease,
            now,
            turn: self.next_turn(),
        };
        let sql = self.opening(CLAIM);
        let rows = query
            .bind(sqlx::query(sql))
            .fetch_all(&mut self.conn)
            .await?;
        let (claim, unreadable) = query.claimed(&rows);
        self.dead_letter_unreadable(&unreadable, now).await?;
        Ok(claim)
    }

    /// Dead-letters claimed rows whose columns cannot be read, with the
    /// problem as their error, inside the open transaction.
    pub(super) async fn dead_letter_unreadable(
        &mut self,
        unreadable: &[(i64, String)],
        now: i64,
    ) -> Result<(), sqlx::Error> {
        for (id, problem) in unreadable {
            tracing::error!(path = %self.path.display(), id, %problem, "unreadable SQLite queue row dead-lettered");
            sqlx::query(
                "UPDATE entries SET state = 'dead', attempts = attempts + 1, last_error = ?, died_at = ? WHERE id = ?",
            )
            .bind(format!("unreadable queue row: {problem}"))
            .bind(now)
            .bind(id)
            .execute(&mut self.conn)
            .await?;
        }
        Ok(())
    }
}
