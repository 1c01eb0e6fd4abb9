//! [`MySqlTable`]: the record interface over a MySQL or MariaDB table or
//! query.

use sqlx::mysql::{MySqlArguments, MySqlRow};
use sqlx::types::chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sqlx::types::Decimal;
use sqlx::{Column, MySql, Row, TypeInfo};

use std::collections::BTreeSet;

use super::table::{
    batched_put, bind_key_fn, bind_value_fn, shown_keys, sql_record_store, TIMESTAMP_FORMAT,
};
use super::{Dialect, SqlDatabase, SqlTable};
use crate::records::{PutCondition, Record, RecordError, Value};

impl SqlDatabase for MySql {
    const DIALECT: Dialect = Dialect::MySql;
    const LABEL: &'static str = "mysql";
}

/// MySQL's limit on placeholders per prepared statement.
const MAX_PARAMETERS: usize = 65_535;

/// A [`RecordStore`](crate::records::RecordStore) over a table (or a
/// query) of a MySQL or MariaDB database, on a sqlx pool (feature `mysql`).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use dualwrite_runtime::records::MySqlTable;
/// let pool = sqlx::MySqlPool::connect("mysql://root@127.0.0.1/test").await?;
/// let customers = MySqlTable::new(pool, "customers", "id").version_column("updated_at");
/// customers.check().await?; // a missing table or column, named, before any work
/// # Ok(()) }
/// ```
///
/// Columns read as [`Value`]s by type: integers and `BOOLEAN` as
/// [`Value::Int`] (a `BIGINT UNSIGNED` above `i64::MAX` is an error),
/// `FLOAT` and `DOUBLE` as [`Value::Float`], binary strings and blobs as
/// [`Value::Bytes`]; text types, `ENUM`, `SET`, `JSON`, and, as exact
/// text, `DECIMAL` (its scale kept: `12.50`), `DATETIME` and `TIMESTAMP`
/// (`2026-01-02 03:04:05.000000`; a `TIMESTAMP` in UTC) and `DATE` as [`Value::Text`]: the
/// spelling `PgTable` (feature `postgres`) reads PostgreSQL's types in, so
/// records move between the two unchanged. Writes bind values as they are
/// and let MySQL convert text into the column's type. Another type is an
/// error naming the column.
///
/// Text keys are listed in the column's collation order (often
/// case-insensitive); verify across databases needs integer keys or a
/// binary collation on the key.
pub type MySqlTable = SqlTable<MySql>;

sql_record_store!(MySql, MySqlRow, "MySQL", {
    async fn put(&self, records: &[Record], condition: PutCondition) -> Result<u64, RecordError> {
        self.put_batched(records, condition).await
    }
});

batched_put!(MySql, MAX_PARAMETERS);

bind_key_fn!(MySql, MySqlArguments);
bind_value_fn!();

/// Fails, naming them, if records of `batch` are not in the table after
/// their upsert: MySQL's `ON DUPLICATE KEY UPDATE` resolves a clash on
/// *any* unique column, so a new key whose email another row holds would
/// update that row instead. The upsert's assignments change a row only
/// when its key is the record's (see `Dialect::on_conflict`), so such a
/// record leaves every row as it was and is missing here; the error rolls
/// the whole write back.
async fn check_written(
    table: &super::table::Table,
    transaction: &mut sqlx::Transaction<'_, MySql>,
    into: &str,
    batch: &[Record],
) -> Result<(), RecordError> {
    let wanted: BTreeSet<String> = batch.iter().map(|record| record.key.to_string()).collect();
    let sql = table.statements.present_keys(into, batch.len());
    let mut query = sqlx::query(&sql);
    for record in batch {
        query = bind_key(query, &record.key);
    }
    let present: BTreeSet<String> = query
        .fetch_all(&mut **transaction)
        .await
        .map_err(|error| table.failed("read back written keys", error))?
        .iter()
        .map(|row| row.try_get::<String, _>(0))
        .collect::<Result<_, _>>()
        .map_err(|error| table.failed("read back written keys", error))?;
    // By count: a case-insensitive key column finds `a` for a record `A`.
    if present.len() >= wanted.len() {
        return Ok(());
    }
    let missing: Vec<&Record> = batch
        .iter()
        .filter(|record| !present.contains(&record.key.to_string()))
        .collect();
    Err(RecordError::conflict(
        format!(
            "{}: could not write record(s) {}",
            table.describe(),
            shown_keys(missing.iter().copied())
        ),
        "they clash with other rows on a unique column other than the key (MySQL would have updated those rows instead); nothing of the write was kept",
        missing.iter().map(|record| record.key.clone()).collect(),
    ))
}

/// MySQL counts an inserted row once, a changed row twice and a row left as
/// it was not at all, so a batch that both inserts and changes rows is
/// counted approximately (never more than the batch). Only progress figures
/// read the count.
fn written(affected: u64, batch: usize) -> u64 {
    affected.min(batch as u64)
}

fn decode(row: &MySqlRow, index: usize) -> Result<Value, sqlx::Error> {
    let column = &row.columns()[index];
    let name = column.type_info().name();
    let value = match name {
        "BOOLEAN" => row.try_get::<Option<bool>, _>(index)?.map(Value::from),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => {
            row.try_get::<Option<i64>, _>(index)?.map(Value::Int)
        }
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" | "YEAR" => match row.try_get::<Option<u64>, _>(index)? {
            None => None,
            Some(value) => Some(Value::Int(i64::try_from(value).map_err(|_| {
                sqlx::Error::ColumnDecode {
                    index: column.name().to_owned(),
                    source: format!("{value} does not fit a signed 64-bit integer").into(),
                }
            })?)),
        },
        "FLOAT" => row.try_get::<Option<f32>, _>(index)?.map(|v| Value::Float(v.into())),
        "DOUBLE" => row.try_get::<Option<f64>, _>(index)?.map(Value::Float),
        "DECIMAL" => row.try_get::<Option<Decimal>, _>(index)?.map(|v| Value::Text(v.to_string())),
        "DATETIME" => row
            .try_get::<Option<NaiveDateTime>, _>(index)?
            .map(|v| Value::Text(v.format(TIMESTAMP_FORMAT).to_string())),
        // sqlx decodes a TIMESTAMP only as a `DateTime<Utc>` (it holds an
        // instant; sqlx's session time zone is UTC), never as naive.
        "TIMESTAMP" => row
            .try_get::<Option<DateTime<Utc>>, _>(index)?
            .map(|v| Value::Text(v.format(TIMESTAMP_FORMAT).to_string())),
        "DATE" => row
            .try_get::<Option<NaiveDate>, _>(index)?
            .map(|v| Value::Text(v.to_string())),
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" | "BIT" => {
            row.try_get::<Option<Vec<u8>>, _>(index)?.map(Value::Bytes)
        }
        "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" | "SET"
        | "JSON" => row.try_get_unchecked::<Option<String>, _>(index)?.map(Value::Text),
        other => {
            return Err(sqlx::Error::ColumnDecode {
                index: column.name().to_owned(),
                source: format!(
                    "type {other} is not one a record store reads; read the table through a query that casts the column (CAST(.. AS CHAR))"
                )
                .into(),
            })
        }
    };
    Ok(value.unwrap_or(Value::Null))
}
