//! [`SqliteTable`]: the record interface over a SQLite table or query.

use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Decode, Row, Sqlite, TypeInfo, ValueRef};

use super::table::{batched_put, bind_key_fn, bind_value_fn, sql_record_store};
use super::{Dialect, SqlDatabase, SqlTable};
use crate::records::{PutCondition, Record, RecordError, Value};

/// SQLite's limit on bound parameters per statement (since 3.32).
const MAX_PARAMETERS: usize = 32_766;

impl SqlDatabase for Sqlite {
    const DIALECT: Dialect = Dialect::Sqlite;
    const LABEL: &'static str = "sqlite";
}

/// A [`RecordStore`](crate::records::RecordStore) over a table (or a
/// query) of a SQLite database, on a sqlx pool.
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
pub type SqliteTable = SqlTable<Sqlite>;

sql_record_store!(Sqlite, SqliteRow, "SQLite", {
    async fn put(&self, records: &[Record], condition: PutCondition) -> Result<u64, RecordError> {
        self.put_batched(records, condition).await
    }
});

batched_put!(Sqlite, MAX_PARAMETERS);

bind_key_fn!(Sqlite, SqliteArguments<'q>);
bind_value_fn!();

/// SQLite's upsert resolves only the key's conflicts; a clash on another
/// unique column fails the statement, so every record it took is written.
async fn check_written(
    _table: &super::table::Table,
    _transaction: &mut sqlx::Transaction<'_, Sqlite>,
    _into: &str,
    _batch: &[Record],
) -> Result<(), RecordError> {
    Ok(())
}

/// SQLite counts each row inserted or replaced once.
fn written(affected: u64, _batch: usize) -> u64 {
    affected
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
    use crate::records::{RecordKey, RecordStore};
    use sqlx::SqlitePool;

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
