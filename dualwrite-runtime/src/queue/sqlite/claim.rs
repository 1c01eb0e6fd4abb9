//! Claims: leasing the heads of keys that are ready, in the order they
//! became ready, and dead-lettering a claimed row that cannot be read.

use std::time::Duration;

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::rows::read_claimed;
use super::statements::CLAIM;
use super::values::duration_ms;
use super::writer::Writer;
use crate::queue::Claim;

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
        let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
        let turn = self.next_turn();
        let sql = self.opening(CLAIM);
        let all_rows = sqlx::query(sql)
            .bind(namespace)
            .bind(now)
            .bind(namespace)
            .bind(now)
            .bind(limit_sql.saturating_add(1))
            .bind(now.saturating_add(duration_ms(lease)))
            .bind(turn)
            .bind(namespace)
            .bind(now)
            .bind(limit_sql)
            .fetch_all(&mut self.conn)
            .await?;
        // The first statement's one row (two columns), then the claimed rows.
        let mut claim = Claim::default();
        let (counts, rows): (Vec<SqliteRow>, Vec<SqliteRow>) = all_rows
            .into_iter()
            .partition(|row| row.columns().len() == 2);
        let next_ready = counts
            .first()
            .and_then(|row| row.try_get::<Option<i64>, _>(0).ok().flatten());
        let ready = counts
            .first()
            .and_then(|row| row.try_get::<i64, _>(1).ok())
            .unwrap_or(0);
        if ready > limit_sql {
            claim.next_ready_in = Some(Duration::ZERO);
        } else {
            claim.next_ready_in = next_ready.map(|at| {
                Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
            });
        }
        for row in &rows {
            match read_claimed(row) {
                Ok(entry) => claim.entries.push(entry),
                Err((id, problem)) => {
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
            }
        }
        claim.entries.sort_by_key(|entry| entry.lease.id);
        Ok(claim)
    }
}
