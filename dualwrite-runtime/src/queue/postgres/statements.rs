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

    /// Runs one statement outside an explicit transaction, retried like
    /// [`transaction`](Self::transaction); returns the rows it affected.
    pub(super) async fn execute(
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
