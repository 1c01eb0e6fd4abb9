//! [`SqliteTable`]: the record interface over a SQLite table or query.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Column, Decode, Row, Sqlite, SqlitePool, TypeInfo, ValueRef};

use super::{Dialect, Statements, TableSpec};
use crate::records::{PutCondition, Record, RecordError, RecordKey, RecordStore, Value};

/// SQLite's limit on bound parameters per statement (since 3.32).
const MAX_PARAMETERS: usize = 32_766;

/// What a record missing a written column writes.
static NULL: Value = Value::Null;

/// A [`RecordStore`] over a table (or a query) of a SQLite database, on a
/// sqlx pool.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use dualwrite_runtime::records::{SqliteTable, TableSpec};
/// let pool = sqlx::SqlitePool::connect("sqlite:orders.db").await?;
/// // A table, every column a field, newer by `updated_at`:
/// let orders = SqliteTable::new(pool.clone(), "orders", "id").version_column("updated_at");
/// // The old schema, read through a query that renames its columns:
/// let legacy = SqliteTable::with_spec(
///     pool,
///     TableSpec::query("SELECT order_no AS id, amount AS total_cents, updated_at FROM legacy_orders", "id"),
/// );
/// orders.check().await?; // a missing table or column, named, before any work
/// # let _ = legacy; Ok(()) }
/// ```
///
/// Values map to SQLite's storage classes: `INTEGER` to [`Value::Int`],
/// `REAL` to [`Value::Float`], `TEXT` to [`Value::Text`], `BLOB` to
/// [`Value::Bytes`]. The key column must hold integers or text.
#[derive(Debug, Clone)]
pub struct SqliteTable {
    pool: SqlitePool,
    statements: Statements,
}

impl SqliteTable {
    /// The table `table` keyed by `key_column`, every other column a field.
    pub fn new(pool: SqlitePool, table: &str, key_column: &str) -> Self {
        Self::with_spec(pool, TableSpec::table(table, key_column))
    }

    /// The records `spec` describes.
    pub fn with_spec(pool: SqlitePool, spec: TableSpec) -> Self {
        SqliteTable {
            pool,
            statements: Statements::new(Dialect::Sqlite, spec),
        }
    }

    /// The same table, newer by `column` (see [`TableSpec::version_column`]).
    #[must_use]
    pub fn version_column(self, column: &str) -> Self {
        let spec = self.statements.spec().clone().version_column(column);
        Self::with_spec(self.pool, spec)
    }

    /// The same table, with only these columns as fields (see
    /// [`TableSpec::columns`]).
    #[must_use]
    pub fn columns(self, columns: &[&str]) -> Self {
        let spec = self
            .statements
            .spec()
            .clone()
            .columns(columns.iter().copied());
        Self::with_spec(self.pool, spec)
    }

    /// Reads nothing, but runs the statement a page is read with, so that a
    /// missing table or column (or a query that does not parse) is reported
    /// before any work starts, with SQLite's message naming it.
    pub async fn check(&self) -> Result<(), RecordError> {
        let rows = sqlx::query(&self.statements.page(false))
            .bind(0_i64)
            .fetch_all(&self.pool)
            .await
            .map_err(|error| self.failed("check the table and its columns", error))?;
        drop(rows);
        if let (Some(version), Some(columns)) = (
            &self.statements.spec().version_column,
            &self.statements.spec().columns,
        ) {
            if !columns.contains(version) {
                return Err(RecordError::message(
                    self.describe(),
                    format!("the version column `{version}` is not among the columns it writes"),
                ));
            }
        }
        Ok(())
    }

    fn failed(&self, what: &str, error: sqlx::Error) -> RecordError {
        RecordError::new(format!("{}: could not {what}", self.describe()), error)
    }

    fn record(&self, row: &SqliteRow) -> Result<Record, RecordError> {
        let key_column = &self.statements.spec().key_column;
        let mut key = None;
        let mut fields = BTreeMap::new();
        for (index, column) in row.columns().iter().enumerate() {
            let value = decode(row, index)
                .map_err(|error| self.failed(&format!("read column `{}`", column.name()), error))?;
            if column.name() == key_column {
                key = Some(match value {
                    Value::Int(value) => RecordKey::Int(value),
                    Value::Text(value) => RecordKey::Text(value),
                    other => {
                        return Err(RecordError::message(
                            self.describe(),
                            format!("key column `{key_column}` holds {other:?}; keys must be integers or text"),
                        ))
                    }
                });
            } else {
                fields.insert(column.name().to_owned(), value);
            }
        }
        let key = key.ok_or_else(|| {
            RecordError::message(
                self.describe(),
                format!("the rows it reads have no column `{key_column}` (the key column)"),
            )
        })?;
        Ok(Record { key, fields })
    }

    /// The columns a batch of records is written with: the configured ones,
    /// else the first record's fields.
    fn write_columns(&self, first: &Record) -> Vec<String> {
        match &self.statements.spec().columns {
            Some(columns) => columns
                .iter()
                .filter(|column| **column != self.statements.spec().key_column)
                .cloned()
                .collect(),
            None => first.fields.keys().cloned().collect(),
        }
    }
}

#[async_trait]
impl RecordStore for SqliteTable {
    fn describe(&self) -> String {
        format!("sqlite {}", self.statements.spec().describe())
    }

    async fn page(
        &self,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Record>, RecordError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = self.statements.page(after.is_some());
        let mut query = sqlx::query(&sql);
        if let Some(after) = after {
            query = bind_key(query, after);
        }
        let rows = query
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(|error| self.failed("read a page of records", error))?;
        rows.iter().map(|row| self.record(row)).collect()
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, RecordError> {
        let sql = self.statements.get();
        let row = bind_key(sqlx::query(&sql), key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|error| self.failed(&format!("read record {key}"), error))?;
        row.map(|row| self.record(&row)).transpose()
    }

    async fn put(&self, records: &[Record], condition: PutCondition) -> Result<u64, RecordError> {
        let Some(first) = records.first() else {
            return Ok(0);
        };
        let table = self.statements.table().ok_or_else(|| {
            RecordError::message(
                self.describe(),
                "it reads through a query and names no table to write to (`TableSpec::writes_to`)",
            )
        })?;
        let configured = self.statements.spec().columns.is_some();
        let mut transaction = self
            .pool
            .begin()
            .await
            .map_err(|error| self.failed("begin a transaction", error))?;
        let mut written = 0;
        let mut rest = records;
        let mut columns = self.write_columns(first);
        while !rest.is_empty() {
            if !configured {
                columns = self.write_columns(&rest[0]);
            }
            // A run of records with the same fields, as many as one
            // statement may bind.
            let per_statement = (MAX_PARAMETERS / (columns.len() + 1)).max(1);
            let run = rest
                .iter()
                .take(per_statement)
                .take_while(|record| configured || record.fields.keys().eq(columns.iter()))
                .count();
            let (batch, later) = rest.split_at(run);
            rest = later;
            let sql = self.statements.put(table, &columns, batch.len(), condition);
            let mut query = sqlx::query(&sql);
            for record in batch {
                query = bind_key(query, &record.key);
                for column in &columns {
                    query = bind_value(query, record.fields.get(column).unwrap_or(&NULL));
                }
            }
            written += query
                .execute(&mut *transaction)
                .await
                .map_err(|error| self.failed("write records", error))?
                .rows_affected();
        }
        transaction
            .commit()
            .await
            .map_err(|error| self.failed("commit written records", error))?;
        Ok(written)
    }

    async fn delete(&self, key: &RecordKey) -> Result<bool, RecordError> {
        let table = self.statements.table().ok_or_else(|| {
            RecordError::message(
                self.describe(),
                "it reads through a query and names no table to delete from",
            )
        })?;
        let sql = self.statements.delete(table);
        let done = bind_key(sqlx::query(&sql), key)
            .execute(&self.pool)
            .await
            .map_err(|error| self.failed(&format!("delete record {key}"), error))?;
        Ok(done.rows_affected() > 0)
    }

    async fn count(&self) -> Result<Option<u64>, RecordError> {
        let count: i64 = sqlx::query_scalar(&self.statements.count())
            .fetch_one(&self.pool)
            .await
            .map_err(|error| self.failed("count records", error))?;
        Ok(u64::try_from(count).ok())
    }
}

type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

/// Binds borrow: a batch's values are not copied to be written.
fn bind_key<'q>(query: Query<'q>, key: &'q RecordKey) -> Query<'q> {
    match key {
        RecordKey::Int(value) => query.bind(*value),
        RecordKey::Text(value) => query.bind(value.as_str()),
    }
}

fn bind_value<'q>(query: Query<'q>, value: &'q Value) -> Query<'q> {
    match value {
        Value::Null => query.bind(None::<i64>),
        Value::Int(value) => query.bind(*value),
        Value::Float(value) => query.bind(*value),
        Value::Text(value) => query.bind(value.as_str()),
        Value::Bytes(value) => query.bind(value.as_slice()),
    }
}

/// A column's value by the storage class SQLite reports for it, decoded
/// from the raw value once (no second lookup by index, no type check).
fn decode(row: &SqliteRow, index: usize) -> Result<Value, sqlx::Error> {
    let raw = row.try_get_raw(index)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let decoded = {
        let class = raw.type_info();
        let class = class.name();
        let is = |name: &str| class.eq_ignore_ascii_case(name);
        if is("INTEGER") || is("BOOLEAN") || is("INT") || is("BIGINT") || is("INT8") {
            <i64 as Decode<Sqlite>>::decode(raw).map(Value::Int)
        } else if is("REAL") || is("FLOAT") || is("DOUBLE") || is("NUMERIC") {
            <f64 as Decode<Sqlite>>::decode(raw).map(Value::Float)
        } else if is("BLOB") {
            <Vec<u8> as Decode<Sqlite>>::decode(raw).map(Value::Bytes)
        } else {
            <String as Decode<Sqlite>>::decode(raw).map(Value::Text)
        }
    };
    decoded.map_err(|source| sqlx::Error::ColumnDecode {
        index: index.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn memory() -> SqlitePool {
        // One connection: every connection to `:memory:` is a database of its own.
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (k PRIMARY KEY, name TEXT, version INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        pool
    }

    #[tokio::test]
    async fn pages_list_text_keys_in_record_key_order() {
        let pool = memory().await;
        for key in ["b", "B", "a", "\u{e9}", "Z", "aa"] {
            sqlx::query("INSERT INTO t VALUES (?, 'x', 1)")
                .bind(key)
                .execute(&pool)
                .await
                .unwrap();
        }
        let table = SqliteTable::new(pool, "t", "k");
        let mut keys = Vec::new();
        let mut after = None;
        loop {
            let page = table.page(after.as_ref(), 4).await.unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            keys.extend(page.into_iter().map(|record| record.key));
        }
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys.len(), 6);
    }

    #[tokio::test]
    async fn only_absent_or_older_records_are_replaced_unless_always() {
        let pool = memory().await;
        let table = SqliteTable::new(pool, "t", "k").version_column("version");
        let record =
            |name: &str, version: i64| Record::new(1).with("name", name).with("version", version);
        let name = |table: SqliteTable| async move {
            let record = table.get(&RecordKey::Int(1)).await.unwrap().unwrap();
            record
                .get("name")
                .and_then(Value::as_text)
                .map(str::to_owned)
        };
        assert_eq!(
            table
                .put(&[record("first", 5)], PutCondition::IfAbsentOrNewer)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            table
                .put(&[record("older", 4)], PutCondition::IfAbsentOrNewer)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            table
                .put(&[record("same", 5)], PutCondition::IfAbsentOrNewer)
                .await
                .unwrap(),
            0
        );
        assert_eq!(name(table.clone()).await.as_deref(), Some("first"));
        assert_eq!(
            table
                .put(&[record("newer", 6)], PutCondition::IfAbsentOrNewer)
                .await
                .unwrap(),
            1
        );
        assert_eq!(name(table.clone()).await.as_deref(), Some("newer"));
        assert_eq!(
            table
                .put(&[record("forced", 1)], PutCondition::Always)
                .await
                .unwrap(),
            1
        );
        assert_eq!(name(table.clone()).await.as_deref(), Some("forced"));
        assert!(table.delete(&RecordKey::Int(1)).await.unwrap());
        assert!(!table.delete(&RecordKey::Int(1)).await.unwrap());
        assert_eq!(table.count().await.unwrap(), Some(0));
    }
}
