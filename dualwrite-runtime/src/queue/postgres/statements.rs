//! Running statements: transactions retried on serialization failures
//! and deadlocks, one statement, reading entries, and the error and
//! clock helpers.

use std::time::Duration;

use sqlx::{Postgres, Transaction};

use super::{PostgresQueue, SERVER};
use crate::queue::sql::{decode, entry_columns, Decoded};
use crate::queue::QueueError;

pub(super) fn backend(context: &str, error: sqlx::Error) -> QueueError {
    QueueError::Backend(format!("PostgreSQL queue: {context}: {error}").into())
}

/// Whether a database error is worth retrying the transaction for.
fn transient(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001") | Some("40P01")))
}

/// Microseconds since the epoch, in SQL, of a timestamptz column.
pub(super) fn micros(column: &str) -> String {
    format!("(extract(epoch from {column}) * 1000000)::bigint")
}

type Tx<'c> = Transaction<'c, Postgres>;

impl PostgresQueue {
    /// Runs `work` in a transaction, again when it fails with a
    /// serialization failure or a deadlock.
    pub(super) async fn transaction<'a, T, F>(&self, what: &str, work: F) -> Result<T, QueueError>
    where
        F: Fn(Tx<'static>) -> futures::future::BoxFuture<'a, (Tx<'static>, Result<T, Failure>)>,
    {
        self.retried(what, || async {
            let tx = self.pool.begin().await?;
            let (tx, result) = work(tx).await;
            match result {
                Ok(value) => tx.commit().await.map(|()| value),
                Err(Failure::Database(error)) => {
                    let _ = tx.rollback().await;
                    Err(error)
                }
            }
        })
        .await
    }

    /// Runs `statement` (one statement, outside an explicit transaction:
    /// one round trip), again when it fails with a serialization failure
    /// or a deadlock, like [`transaction`](Self::transaction).
    pub(super) async fn retried<T, F, Fut>(&self, what: &str, statement: F) -> Result<T, QueueError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
    {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match statement().await {
                Ok(value) => return Ok(value),
                Err(error) if transient(&error) && attempt < 10 => {
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 5)).await;
                }
                Err(error) => return Err(backend(what, error)),
            }
        }
    }

    /// Runs one statement outside an explicit transaction (one round
    /// trip), retried like [`transaction`](Self::transaction); returns the
    /// rows it affected.
    pub(super) async fn execute(
        &self,
        what: &str,
        sql: &str,
        binds: &[i64],
        text: Option<&str>,
    ) -> Result<u64, QueueError> {
        self.retried(what, || {
            let mut query = sqlx::query(sql);
            for bind in binds {
                query = query.bind(*bind);
            }
            if let Some(text) = text {
                query = query.bind(text);
            }
            query.execute(&self.pool)
        })
        .await
        .map(|done| done.rows_affected())
    }

    pub(super) async fn fetch_entries(
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

/// Why a transaction's work failed: the database (retried when transient).
pub(super) enum Failure {
    Database(sqlx::Error),
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Failure::Database(error)
    }
}

/// `now() + $n` microseconds, in SQL.
pub(super) fn after(param: &str) -> String {
    format!("now() + make_interval(secs => {param}::float8 / 1000000)")
}
