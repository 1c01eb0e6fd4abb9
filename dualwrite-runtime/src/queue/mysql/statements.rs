//! Running statements: transactions retried on deadlocks, bound
//! arguments, reading entries, and the error and column helpers.

use std::time::Duration;

use sqlx::mysql::{MySqlConnection, MySqlDatabaseError};
use sqlx::Acquire;

use super::{MySqlQueue, MAX_ERROR, SERVER};
use crate::queue::sql::{decode, entry_columns, Decoded};
use crate::queue::QueueError;

pub(super) fn backend(context: &str, error: sqlx::Error) -> QueueError {
    QueueError::Backend(format!("{SERVER} queue: {context}: {error}").into())
}

/// Whether a database error is worth retrying the transaction for.
fn transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .is_some_and(|db| matches!(db.number(), 1213 | 1205)),
        _ => false,
    }
}

/// A bound value of a statement.
#[derive(Debug, Clone)]
pub(super) enum Arg {
    Int(i64),
    Text(String),
}

pub(super) fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>,
    args: &'q [Arg],
) -> sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments> {
    for arg in args {
        query = match arg {
            Arg::Int(value) => query.bind(*value),
            Arg::Text(value) => query.bind(value.as_str()),
        };
    }
    query
}

/// `?, ?, ...` for `count` values.
pub(super) fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

type Work<'t, T> = futures::future::BoxFuture<'t, Result<T, sqlx::Error>>;

impl MySqlQueue {
    /// Runs `work` in a `READ COMMITTED` transaction, again when it fails
    /// with a deadlock or a lock wait timeout.
    pub(super) async fn transaction<T, F>(&self, what: &str, work: F) -> Result<T, QueueError>
    where
        F: for<'t> Fn(&'t mut MySqlConnection) -> Work<'t, T>,
    {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = async {
                let mut conn = self.pool.acquire().await?;
                // Applies to the next transaction of this connection only.
                sqlx::query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                    .execute(&mut *conn)
                    .await?;
                let mut tx = conn.begin().await?;
                let value = work(tx.acquire().await?).await?;
                tx.commit().await?;
                Ok::<T, sqlx::Error>(value)
            }
            .await;
            match result {
                Ok(value) => return Ok(value),
                Err(error) if transient(&error) && attempt < 10 => {
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 5)).await;
                }
                Err(error) => return Err(backend(what, error)),
            }
        }
    }

    /// Runs one statement with `args` in a transaction; returns the rows
    /// it changed.
    pub(super) async fn execute(
        &self,
        what: &str,
        sql: String,
        args: Vec<Arg>,
    ) -> Result<u64, QueueError> {
        self.transaction(what, move |conn| {
            let (sql, args) = (sql.clone(), args.clone());
            Box::pin(async move {
                Ok(bind_all(sqlx::query(&sql), &args)
                    .execute(conn)
                    .await?
                    .rows_affected())
            })
        })
        .await
    }

    pub(super) async fn fetch_entries(
        &self,
        what: &str,
        condition: &str,
        args: Vec<Arg>,
    ) -> Result<Vec<Decoded>, QueueError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {condition} ORDER BY id",
            entry_columns("enqueued_at", "died_at", as_text),
            self.tables.entries
        );
        let rows = bind_all(sqlx::query(&sql), &args)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| backend(what, e))?;
        rows.iter().map(|row| decode(SERVER, row)).collect()
    }
}

/// A text column read as text: the tables' binary collation (keys compare
/// byte for byte) makes the driver see `VARBINARY` otherwise.
pub(super) fn as_text(column: &str) -> String {
    format!("CAST(`{column}` AS CHAR)")
}

pub(super) fn cut(error: &str) -> String {
    error.chars().take(MAX_ERROR).collect()
}
