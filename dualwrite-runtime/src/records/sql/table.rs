//! What every SQL table executor shares, whatever its database: building a
//! [`Record`] from a row's decoded columns, the error messages, the table
//! writes go to, and splitting a batch into statements.

use std::collections::BTreeMap;

use super::{Statements, TableSpec};
use crate::records::{Record, RecordError, RecordKey, Value};

/// How timestamps read as text are spelled, on PostgreSQL and MySQL alike:
/// microseconds always, no zone (a zoned timestamp is read in UTC).
#[allow(dead_code)] // read by the PostgreSQL and MySQL executors only
pub(super) const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.6f";

/// The keys of `records`, for a message: the first few, then how many more.
pub(super) fn shown_keys<'r>(records: impl IntoIterator<Item = &'r Record>) -> String {
    const SHOWN: usize = 10;
    let keys: Vec<String> = records
        .into_iter()
        .map(|record| record.key.to_string())
        .collect();
    if keys.len() > SHOWN {
        format!(
            "{} and {} more",
            keys[..SHOWN].join(", "),
            keys.len() - SHOWN
        )
    } else {
        keys.join(", ")
    }
}

/// What a record missing a written column writes.
pub(crate) static NULL: Value = Value::Null;

/// One table (or query) of one database, as its executor sees it.
#[derive(Debug, Clone)]
pub(super) struct Table {
    /// "sqlite", "postgres", "mysql": the first word of every message.
    database: &'static str,
    pub(super) statements: Statements,
}

impl Table {
    pub(super) fn new(database: &'static str, statements: Statements) -> Self {
        Table {
            database,
            statements,
        }
    }

    pub(super) fn spec(&self) -> &TableSpec {
        self.statements.spec()
    }

    pub(super) fn describe(&self) -> String {
        format!("{} {}", self.database, self.spec().describe())
    }

    pub(super) fn failed(&self, what: &str, error: sqlx::Error) -> RecordError {
        RecordError::new(format!("{}: could not {what}", self.describe()), error)
    }

    /// A failed write of `batch`: a [conflict](RecordError::conflict) naming
    /// the batch's keys when the database refused it on a unique column
    /// (the key's own conflicts are resolved by the upsert, so another
    /// one's).
    pub(super) fn write_failed(&self, error: sqlx::Error, batch: &[Record]) -> RecordError {
        let unique = error
            .as_database_error()
            .is_some_and(|error| error.is_unique_violation());
        if unique {
            let keys = batch.iter().map(|record| record.key.clone()).collect();
            RecordError::conflict(
                format!(
                    "{}: could not write record(s) {}",
                    self.describe(),
                    shown_keys(batch)
                ),
                error,
                keys,
            )
        } else {
            self.failed("write records", error)
        }
    }

    /// The record of a row whose columns decoded to `columns`, in order.
    pub(super) fn record<'c>(
        &self,
        columns: impl IntoIterator<Item = (&'c str, Result<Value, sqlx::Error>)>,
    ) -> Result<Record, RecordError> {
        let key_column = &self.spec().key_column;
        let mut key = None;
        let mut fields = BTreeMap::new();
        for (name, value) in columns {
            let value =
                value.map_err(|error| self.failed(&format!("read column `{name}`"), error))?;
            if name == key_column {
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
                fields.insert(name.to_owned(), value);
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

    /// The table written to, or an error saying why there is none.
    pub(super) fn writable(&self, what: &str) -> Result<&str, RecordError> {
        self.statements.table().ok_or_else(|| {
            RecordError::message(
                self.describe(),
                format!("it reads through a query and names no table to {what} (`TableSpec::writes_to`)"),
            )
        })
    }

    /// The check every executor runs after its probe read: a version
    /// column the writes would not carry.
    pub(super) fn check_spec(&self) -> Result<(), RecordError> {
        if let (Some(version), Some(columns)) = (&self.spec().version_column, &self.spec().columns)
        {
            if !columns.contains(version) {
                return Err(RecordError::message(
                    self.describe(),
                    format!("the version column `{version}` is not among the columns it writes"),
                ));
            }
        }
        Ok(())
    }

    /// `records` cut into runs written by one statement each: records with
    /// the same fields (or all, when the columns are configured), at most
    /// `max_parameters` bound values per run.
    pub(super) fn runs<'r>(
        &self,
        records: &'r [Record],
        max_parameters: usize,
    ) -> Vec<(Vec<String>, &'r [Record])> {
        let configured = self.spec().columns.as_ref().map(|columns| {
            columns
                .iter()
                .filter(|column| **column != self.spec().key_column)
                .cloned()
                .collect::<Vec<_>>()
        });
        let mut runs = Vec::new();
        let mut rest = records;
        while let Some(first) = rest.first() {
            let columns = configured
                .clone()
                .unwrap_or_else(|| first.fields.keys().cloned().collect());
            let per_statement = (max_parameters / (columns.len() + 1)).max(1);
            let run = rest
                .iter()
                .take(per_statement)
                .take_while(|record| {
                    configured.is_some() || record.fields.keys().eq(columns.iter())
                })
                .count();
            let (batch, later) = rest.split_at(run);
            rest = later;
            runs.push((columns, batch));
        }
        runs
    }
}

/// The parts of a [`SqlTable`](super::SqlTable)'s record store that are the
/// same on every database, spelled once: `check`, reading rows into
/// records, and `RecordStore` but for `put`, which the invoking module
/// writes (its batching differs). The module provides `bind_key(query,
/// key)` and `decode(row, index)` for its database.
macro_rules! sql_record_store {
    ($db:ty, $row:ty, $database:literal, { $($put:tt)* }) => {
        impl $crate::records::sql::SqlTable<$db> {
            #[doc = concat!(
                "Reads nothing, but runs the statement a page is read with, so that a\n",
                "missing table or column (or a query that does not parse) is reported\n",
                "before any work starts, with ", $database, "'s message naming it."
            )]
            pub async fn check(&self) -> Result<(), $crate::records::RecordError> {
                sqlx::query(&self.table.statements.page(false))
                    .bind(0_i64)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|error| self.table.failed("check the table and its columns", error))?;
                self.table.check_spec()
            }

            fn record(&self, row: &$row) -> Result<$crate::records::Record, $crate::records::RecordError> {
                use sqlx::{Column, Row};
                self.table.record(
                    row.columns()
                        .iter()
                        .enumerate()
                        .map(|(index, column)| (column.name(), decode(row, index))),
                )
            }
        }

        #[async_trait::async_trait]
        impl $crate::records::RecordStore for $crate::records::sql::SqlTable<$db> {
            fn describe(&self) -> String {
                self.table.describe()
            }

            async fn page(
                &self,
                after: Option<&$crate::records::RecordKey>,
                limit: usize,
            ) -> Result<Vec<$crate::records::Record>, $crate::records::RecordError> {
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                let sql = self.table.statements.page(after.is_some());
                let mut query = sqlx::query(&sql);
                if let Some(after) = after {
                    query = bind_key(query, after);
                }
                let rows = query
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|error| self.table.failed("read a page of records", error))?;
                rows.iter().map(|row| self.record(row)).collect()
            }

            async fn get(
                &self,
                key: &$crate::records::RecordKey,
            ) -> Result<Option<$crate::records::Record>, $crate::records::RecordError> {
                let sql = self.table.statements.get();
                let row = bind_key(sqlx::query(&sql), key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|error| self.table.failed(&format!("read record {key}"), error))?;
                row.map(|row| self.record(&row)).transpose()
            }

            $($put)*

            async fn delete(
                &self,
                key: &$crate::records::RecordKey,
            ) -> Result<bool, $crate::records::RecordError> {
                let table = self.table.writable("delete from")?;
                let sql = self.table.statements.delete(table);
                let done = bind_key(sqlx::query(&sql), key)
                    .execute(&self.pool)
                    .await
                    .map_err(|error| self.table.failed(&format!("delete record {key}"), error))?;
                Ok(done.rows_affected() > 0)
            }

            async fn count(&self) -> Result<Option<u64>, $crate::records::RecordError> {
                let count: i64 = sqlx::query_scalar(&self.table.statements.count())
                    .fetch_one(&self.pool)
                    .await
                    .map_err(|error| self.table.failed("count records", error))?;
                Ok(u64::try_from(count).ok())
            }
        }
    };
}
pub(super) use sql_record_store;

/// `put_batched`, the `put` of a database whose statements bind every value
/// (`?` placeholders, at most `$max_parameters` a statement): SQLite and
/// MySQL. The invoking module provides `bind_key`, `bind_value(query,
/// value)` and `written(rows_affected, batch_len)`, what its database's
/// count of affected rows means in records written.
macro_rules! batched_put {
    ($db:ty, $max_parameters:expr) => {
        impl $crate::records::sql::SqlTable<$db> {
            async fn put_batched(
                &self,
                records: &[$crate::records::Record],
                condition: $crate::records::PutCondition,
            ) -> Result<u64, $crate::records::RecordError> {
                if records.is_empty() {
                    return Ok(0);
                }
                let table = self.table.writable("write to")?;
                let mut transaction = self
                    .pool
                    .begin()
                    .await
                    .map_err(|error| self.table.failed("begin a transaction", error))?;
                let mut total = 0;
                for (columns, batch) in self.table.runs(records, $max_parameters) {
                    let sql = self
                        .table
                        .statements
                        .put(table, &columns, batch.len(), condition);
                    let mut query = sqlx::query(&sql);
                    for record in batch {
                        query = bind_key(query, &record.key);
                        for column in &columns {
                            query = bind_value(
                                query,
                                record
                                    .fields
                                    .get(column)
                                    .unwrap_or(&$crate::records::sql::table::NULL),
                            );
                        }
                    }
                    let affected = query
                        .execute(&mut *transaction)
                        .await
                        .map_err(|error| self.table.write_failed(error, batch))?
                        .rows_affected();
                    check_written(&self.table, &mut transaction, table, batch).await?;
                    total += written(affected, batch.len());
                }
                transaction
                    .commit()
                    .await
                    .map_err(|error| self.table.failed("commit written records", error))?;
                Ok(total)
            }
        }
    };
}
pub(super) use batched_put;

/// Binds a value as it is (for a database that converts text into the
/// column's type itself).
macro_rules! bind_value_fn {
    () => {
        fn bind_value<'q>(query: Query<'q>, value: &'q $crate::records::Value) -> Query<'q> {
            use $crate::records::Value;
            match value {
                Value::Null => query.bind(None::<i64>),
                Value::Int(value) => query.bind(*value),
                Value::Float(value) => query.bind(*value),
                Value::Text(value) => query.bind(value.as_str()),
                Value::Bytes(value) => query.bind(value.as_slice()),
            }
        }
    };
}
pub(super) use bind_value_fn;

/// Binds a record key: an integer or text, on any database.
macro_rules! bind_key_fn {
    ($db:ty, $arguments:ty) => {
        type Query<'q> = sqlx::query::Query<'q, $db, $arguments>;

        /// Binds borrow: a batch's values are not copied to be written.
        fn bind_key<'q>(query: Query<'q>, key: &'q $crate::records::RecordKey) -> Query<'q> {
            match key {
                $crate::records::RecordKey::Int(value) => query.bind(*value),
                $crate::records::RecordKey::Text(value) => query.bind(value.as_str()),
            }
        }
    };
}
pub(super) use bind_key_fn;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::sql::Dialect;

    fn table(spec: TableSpec) -> Table {
        Table::new("test", Statements::new(Dialect::Sqlite, spec))
    }

    #[test]
    fn runs_split_where_the_fields_change_and_at_the_parameter_limit() {
        let records = vec![
            Record::new(1).with("a", 1),
            Record::new(2).with("a", 2),
            Record::new(3).with("a", 3).with("b", 1),
            Record::new(4).with("a", 4),
        ];
        let runs = table(TableSpec::table("t", "k")).runs(&records, 4);
        let shape: Vec<(usize, usize)> = runs.iter().map(|(c, r)| (c.len(), r.len())).collect();
        assert_eq!(shape, vec![(1, 2), (2, 1), (1, 1)]);

        let configured = table(TableSpec::table("t", "k").columns(["a", "b"]));
        let runs = configured.runs(&records, 1000);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].0, vec!["a".to_owned(), "b".to_owned()]);
    }

    #[test]
    fn a_row_without_the_key_column_is_named() {
        let error = table(TableSpec::table("t", "k"))
            .record([("x", Ok(Value::Int(1)))])
            .unwrap_err();
        assert!(error.to_string().contains("no column `k`"), "{error}");
    }
}
