//! [`PgTable`]: the record interface over a PostgreSQL table or query.

use sqlx::postgres::{PgArguments, PgRow, PgTypeKind};
use sqlx::types::chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sqlx::types::Decimal;
use sqlx::{Column, Postgres, Row, TypeInfo};

use super::table::{bind_key_fn, sql_record_store, NULL, TIMESTAMP_FORMAT};
use super::{Dialect, SqlDatabase, SqlTable};
use crate::records::{PutCondition, Record, RecordError, RecordKey, Value};

impl SqlDatabase for Postgres {
    const DIALECT: Dialect = Dialect::Postgres;
    const LABEL: &'static str = "postgres";
}

/// How many records one insert carries (one JSON parameter each).
const RECORDS_PER_STATEMENT: usize = 1_000;

/// A [`RecordStore`](crate::records::RecordStore) over a table (or a
/// query) of a PostgreSQL database, on a sqlx pool (feature `postgres`).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use dualwrite_runtime::records::PgTable;
/// let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1/test").await?;
/// let customers = PgTable::new(pool, "customers", "id").version_column("updated_at");
/// customers.check().await?; // a missing table or column, named, before any work
/// # Ok(()) }
/// ```
///
/// Columns read as [`Value`]s by type: integers and `boolean` (0 or 1) as
/// [`Value::Int`], `real` and `double precision` as [`Value::Float`],
/// `bytea` as [`Value::Bytes`]; text types, enums, and, as exact text,
/// `numeric` (its scale kept: `12.50`), `timestamptz` (in UTC),
/// `timestamp` (both `2026-01-02 03:04:05.000000`) and `date`
/// (`2026-01-02`) as [`Value::Text`]. That spelling is also what MySQL
/// and MariaDB take for `DECIMAL`, `DATETIME` and `DATE`, so a record read
/// here writes there unchanged. Another type is an error naming the
/// column: read it through a [query](super::TableSpec::query) that casts
/// it (`payload::text AS payload`).
///
/// Writes bind one JSON array per statement, turned into the table's own
/// column types by `json_populate_recordset`, so text writes into
/// `numeric`, `timestamptz` or an enum column as it would in SQL.
/// Text keys are listed in the database's collation order; verify across
/// databases needs integer keys or the same (`C`) collation on both sides.
pub type PgTable = SqlTable<Postgres>;

sql_record_store!(Postgres, PgRow, "PostgreSQL", {
    async fn put(&self, records: &[Record], condition: PutCondition) -> Result<u64, RecordError> {
        if records.is_empty() {
            return Ok(0);
        }
        let table = self.table.writable("write to")?;
        let key_column = &self.table.spec().key_column;
        let mut transaction = self
            .pool
            .begin()
            .await
            .map_err(|error| self.table.failed("begin a transaction", error))?;
        let mut written = 0;
        // Bound by records, not parameters: one parameter per statement.
        let runs = self.table.runs(records, usize::MAX);
        for (columns, run) in runs {
            for batch in run.chunks(RECORDS_PER_STATEMENT) {
                let rows = batch
                    .iter()
                    .map(|record| json_row(key_column, &columns, record))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|message| RecordError::message(self.table.describe(), message))?;
                let rows = serde_json::Value::Array(rows).to_string();
                let sql = self.table.statements.put_json(table, &columns, condition);
                written += sqlx::query(&sql)
                    .bind(rows)
                    .execute(&mut *transaction)
                    .await
                    .map_err(|error| self.table.write_failed(error, batch))?
                    .rows_affected();
            }
        }
        transaction
            .commit()
            .await
            .map_err(|error| self.table.failed("commit written records", error))?;
        Ok(written)
    }
});

bind_key_fn!(Postgres, PgArguments);

/// One record as the JSON object `json_populate_recordset` reads.
fn json_row(
    key_column: &str,
    columns: &[String],
    record: &Record,
) -> Result<serde_json::Value, String> {
    let mut object = serde_json::Map::with_capacity(columns.len() + 1);
    let key = match &record.key {
        RecordKey::Int(value) => serde_json::Value::from(*value),
        RecordKey::Text(value) => serde_json::Value::from(value.as_str()),
    };
    object.insert(key_column.to_owned(), key);
    for column in columns {
        let value = match record.fields.get(column).unwrap_or(&NULL) {
            Value::Null => serde_json::Value::Null,
            Value::Int(value) => serde_json::Value::from(*value),
            Value::Float(value) => serde_json::Number::from_f64(*value)
                .map(serde_json::Value::Number)
                .ok_or_else(|| {
                    format!(
                        "record {}: column `{column}` holds {value}, which PostgreSQL cannot store as a number",
                        record.key
                    )
                })?,
            Value::Text(value) => serde_json::Value::from(value.as_str()),
            Value::Bytes(value) => {
                // bytea's hex input format.
                let mut hex = String::with_capacity(2 + value.len() * 2);
                hex.push_str("\\x");
                for byte in value {
                    hex.push_str(&format!("{byte:02x}"));
                }
                serde_json::Value::from(hex)
            }
        };
        object.insert(column.clone(), value);
    }
    Ok(serde_json::Value::Object(object))
}

fn decode(row: &PgRow, index: usize) -> Result<Value, sqlx::Error> {
    let type_info = row.columns()[index].type_info().clone();
    let value = match type_info.name() {
        "INT2" => row.try_get::<Option<i16>, _>(index)?.map(|v| Value::Int(v.into())),
        "INT4" => row.try_get::<Option<i32>, _>(index)?.map(|v| Value::Int(v.into())),
        "INT8" => row.try_get::<Option<i64>, _>(index)?.map(Value::Int),
        "BOOL" => row.try_get::<Option<bool>, _>(index)?.map(Value::from),
        "FLOAT4" => row.try_get::<Option<f32>, _>(index)?.map(|v| Value::Float(v.into())),
        "FLOAT8" => row.try_get::<Option<f64>, _>(index)?.map(Value::Float),
        "NUMERIC" => row.try_get::<Option<Decimal>, _>(index)?.map(|v| Value::Text(v.to_string())),
        "TIMESTAMPTZ" => row
            .try_get::<Option<DateTime<Utc>>, _>(index)?
            .map(|v| Value::Text(v.format(TIMESTAMP_FORMAT).to_string())),
        "TIMESTAMP" => row
            .try_get::<Option<NaiveDateTime>, _>(index)?
            .map(|v| Value::Text(v.format(TIMESTAMP_FORMAT).to_string())),
        "DATE" => row
            .try_get::<Option<NaiveDate>, _>(index)?
            .map(|v| Value::Text(v.to_string())),
        "BYTEA" => row.try_get::<Option<Vec<u8>>, _>(index)?.map(Value::Bytes),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "CITEXT" => {
            row.try_get::<Option<String>, _>(index)?.map(Value::Text)
        }
        // An enum's value travels as its label.
        _ if matches!(type_info.kind(), PgTypeKind::Enum(_)) => row
            .try_get_unchecked::<Option<String>, _>(index)?
            .map(Value::Text),
        other => {
            return Err(sqlx::Error::ColumnDecode {
                index: row.columns()[index].name().to_owned(),
                source: format!(
                    "type {other} is not one a record store reads; read the table through a query that casts the column to text"
                )
                .into(),
            })
        }
    };
    Ok(value.unwrap_or(Value::Null))
}
