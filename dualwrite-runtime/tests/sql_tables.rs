//! `PgTable` and `MySqlTable` against the local servers (features
//! `postgres` and `mysql`): the column types a real schema has (decimals,
//! zoned timestamps, enums, optional fields) read as the same values on
//! both, a record read from one writes to the other unchanged, "newer"
//! holds, a record clashing with another row on a unique column is refused
//! by name without changing any row, and a missing table is named.
//!
//! `cargo test -p dualwrite-runtime --features postgres,mysql --test sql_tables`
//! (PostgreSQL at `DUALWRITE_PG_URL`, default postgres://postgres@127.0.0.1:5432/test;
//! MariaDB at `DUALWRITE_MYSQL_URL`, default mysql://root@127.0.0.1:3306/test).

use dualwrite_runtime::records::{
    MySqlTable, PgTable, PutCondition, Record, RecordKey, RecordStore, Value,
};
use sqlx::{MySqlPool, PgPool};

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn pg() -> PgPool {
    let url = std::env::var("DUALWRITE_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    PgPool::connect(&url)
        .await
        .expect("PostgreSQL at DUALWRITE_PG_URL")
}

async fn mysql() -> MySqlPool {
    let url = std::env::var("DUALWRITE_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
    MySqlPool::connect(&url)
        .await
        .expect("MariaDB at DUALWRITE_MYSQL_URL")
}

/// The same orders table on both servers, in each one's own types.
async fn orders_tables() -> (PgTable, MySqlTable, String) {
    let name = unique("orders");
    let pg = pg().await;
    let status = format!("{name}_status");
    sqlx::query(&format!(
        "CREATE TYPE {status} AS ENUM ('pending', 'paid', 'shipped')"
    ))
    .execute(&pg)
    .await
    .unwrap();
    sqlx::query(&format!(
        "CREATE TABLE {name} (id BIGINT PRIMARY KEY, email TEXT NOT NULL UNIQUE, total NUMERIC(12,2) NOT NULL, \
         status {status} NOT NULL, note TEXT, placed_at TIMESTAMPTZ NOT NULL, version BIGINT NOT NULL)"
    ))
    .execute(&pg)
    .await
    .unwrap();
    let my = mysql().await;
    sqlx::query(&format!(
        "CREATE TABLE {name} (id BIGINT PRIMARY KEY, email VARCHAR(200) NOT NULL UNIQUE, total DECIMAL(12,2) NOT NULL, \
         status ENUM('pending', 'paid', 'shipped') NOT NULL, note TEXT NULL, placed_at DATETIME(6) NOT NULL, \
         version BIGINT NOT NULL)"
    ))
    .execute(&my)
    .await
    .unwrap();
    (
        PgTable::new(pg, &name, "id").version_column("version"),
        MySqlTable::new(my, &name, "id").version_column("version"),
        name,
    )
}

async fn drop_tables(pg: &PgTable, my: &MySqlTable, name: &str) {
    let _ = sqlx::query(&format!("DROP TABLE {name}"))
        .execute(pg.pool())
        .await;
    let _ = sqlx::query(&format!("DROP TYPE {name}_status"))
        .execute(pg.pool())
        .await;
    let _ = sqlx::query(&format!("DROP TABLE {name}"))
        .execute(my.pool())
        .await;
}

fn order(id: i64, total: &str, version: i64) -> Record {
    Record::new(id)
        .with("email", format!("c{id}@example.com"))
        .with("total", total)
        .with("status", "paid")
        .with("note", Value::Null)
        .with("placed_at", "2026-03-04 05:06:07.250000")
        .with("version", version)
}

#[tokio::test]
async fn a_record_reads_the_same_from_postgres_and_mariadb_and_moves_unchanged() {
    let (pg, my, name) = orders_tables().await;
    // Written in SQL on PostgreSQL, with a zone: read back in UTC.
    sqlx::query(&format!(
        "INSERT INTO {name} VALUES (1, 'a@example.com', 12.5, 'shipped', NULL, \
         '2026-03-04 07:06:07.25+02', 3)"
    ))
    .execute(pg.pool())
    .await
    .unwrap();
    let read = pg.get(&RecordKey::Int(1)).await.unwrap().unwrap();
    assert_eq!(read.get("total"), Some(&Value::from("12.50")));
    assert_eq!(read.get("status"), Some(&Value::from("shipped")));
    assert_eq!(read.get("note"), Some(&Value::Null));
    assert_eq!(
        read.get("placed_at"),
        Some(&Value::from("2026-03-04 05:06:07.250000"))
    );

    assert_eq!(
        my.put(std::slice::from_ref(&read), PutCondition::Always)
            .await
            .unwrap(),
        1
    );
    let moved = my.get(&RecordKey::Int(1)).await.unwrap().unwrap();
    assert_eq!(
        moved, read,
        "a record read from PostgreSQL reads the same from MariaDB"
    );

    // And back: MariaDB's record writes into PostgreSQL's enum, numeric
    // and timestamptz columns.
    pg.delete(&RecordKey::Int(1)).await.unwrap();
    pg.put(std::slice::from_ref(&moved), PutCondition::Always)
        .await
        .unwrap();
    assert_eq!(pg.get(&RecordKey::Int(1)).await.unwrap().unwrap(), moved);
    drop_tables(&pg, &my, &name).await;
}

/// MariaDB's `TIMESTAMP` (the zone-aware type: an instant, stored in UTC)
/// reads as PostgreSQL's `timestamptz` does, in UTC, and a record moves
/// between the two unchanged.
#[tokio::test]
async fn a_mariadb_timestamp_column_reads_in_utc_like_timestamptz() {
    let name = unique("stamps");
    let pg = PgTable::new(pg().await, &name, "id");
    let my = MySqlTable::new(mysql().await, &name, "id");
    sqlx::query(&format!(
        "CREATE TABLE {name} (id BIGINT PRIMARY KEY, at TIMESTAMPTZ NOT NULL, shipped TIMESTAMPTZ)"
    ))
    .execute(pg.pool())
    .await
    .unwrap();
    sqlx::query(&format!(
        "CREATE TABLE {name} (id BIGINT PRIMARY KEY, at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
         shipped TIMESTAMP(6) NULL DEFAULT NULL)"
    ))
    .execute(my.pool())
    .await
    .unwrap();
    sqlx::query(&format!(
        "INSERT INTO {name} VALUES (1, '2026-03-04 07:06:07.25+02', NULL)"
    ))
    .execute(pg.pool())
    .await
    .unwrap();
    let read = pg.get(&RecordKey::Int(1)).await.unwrap().unwrap();
    my.put(std::slice::from_ref(&read), PutCondition::Always)
        .await
        .unwrap();
    let moved = my.get(&RecordKey::Int(1)).await.unwrap();
    drop_tables(&pg, &my, &name).await;
    let moved = moved.expect("the record is in MariaDB");
    assert_eq!(
        moved.get("at"),
        Some(&Value::from("2026-03-04 05:06:07.250000"))
    );
    assert_eq!(moved.get("shipped"), Some(&Value::Null));
    assert_eq!(moved, read);
}

#[tokio::test]
async fn only_absent_or_older_records_are_replaced_on_both_servers() {
    let (pg, my, name) = orders_tables().await;
    for store in [&pg as &dyn RecordStore, &my as &dyn RecordStore] {
        let batch: Vec<Record> = (1..=3).map(|id| order(id, "1.00", 5)).collect();
        assert_eq!(
            store
                .put(&batch, PutCondition::IfAbsentOrNewer)
                .await
                .unwrap(),
            3
        );
        // Older and equal versions change nothing; a newer one replaces.
        store
            .put(
                &[order(1, "9.99", 4), order(2, "9.99", 5)],
                PutCondition::IfAbsentOrNewer,
            )
            .await
            .unwrap();
        store
            .put(&[order(3, "7.00", 6)], PutCondition::IfAbsentOrNewer)
            .await
            .unwrap();
        let totals: Vec<Value> = store
            .page(None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|record| record.get("total").cloned().unwrap())
            .collect();
        assert_eq!(
            totals,
            vec![
                Value::from("1.00"),
                Value::from("1.00"),
                Value::from("7.00")
            ],
            "{}",
            store.describe()
        );
        let after = store.page(Some(&RecordKey::Int(1)), 1).await.unwrap();
        assert_eq!(after[0].key, RecordKey::Int(2));
        assert_eq!(store.count().await.unwrap(), Some(3));
    }
    drop_tables(&pg, &my, &name).await;
}

/// MySQL's `ON DUPLICATE KEY UPDATE` fires on a clash with any unique
/// column: a new key carrying an email another row holds would rewrite that
/// row. Both servers must instead refuse the write, name the record, and
/// keep nothing of it, under either condition.
#[tokio::test]
async fn a_record_clashing_on_another_unique_column_is_refused_and_changes_no_row() {
    let (pg, my, name) = orders_tables().await;
    for store in [&pg as &dyn RecordStore, &my as &dyn RecordStore] {
        for condition in [PutCondition::IfAbsentOrNewer, PutCondition::Always] {
            let _ = store.delete(&RecordKey::Int(1)).await.unwrap();
            let _ = store.delete(&RecordKey::Int(2)).await.unwrap();
            store
                .put(&[order(1, "1.00", 5), order(2, "2.00", 5)], condition)
                .await
                .unwrap();
            let before = store.page(None, 10).await.unwrap();
            let context = format!("{} {condition:?}", store.describe());

            // A new key holding key 1's email, alone and beside a good one.
            let clash = order(3, "3.00", 9).with("email", "c1@example.com");
            for batch in [
                vec![clash.clone()],
                vec![order(4, "4.00", 9), clash.clone()],
            ] {
                let error = store.put(&batch, condition).await.unwrap_err();
                let keys = error
                    .conflicting_keys()
                    .unwrap_or_else(|| panic!("{context}: {error}"));
                assert!(keys.contains(&RecordKey::Int(3)), "{context}: {error}");
                assert!(error.to_string().contains('3'), "{context}: {error}");
                assert_eq!(
                    store.page(None, 10).await.unwrap(),
                    before,
                    "{context}: no row changed"
                );
            }
            // An existing key taking key 1's email.
            let moved = order(2, "2.50", 9).with("email", "c1@example.com");
            let error = store.put(&[moved], condition).await.unwrap_err();
            assert!(error.conflicting_keys().is_some(), "{context}: {error}");
            assert_eq!(
                store.page(None, 10).await.unwrap(),
                before,
                "{context}: no row changed"
            );
        }
    }
    drop_tables(&pg, &my, &name).await;
}

#[tokio::test]
async fn a_missing_table_or_column_is_named_before_any_work() {
    let missing = unique("no_such_table");
    let error = PgTable::new(pg().await, &missing, "id")
        .check()
        .await
        .unwrap_err();
    assert!(error.to_string().contains(&missing), "{error}");
    let error = MySqlTable::new(mysql().await, &missing, "id")
        .check()
        .await
        .unwrap_err();
    assert!(error.to_string().contains(&missing), "{error}");

    let (pg, my, name) = orders_tables().await;
    let error = pg
        .clone()
        .columns(&["email", "no_such_column"])
        .check()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no_such_column"), "{error}");
    let error = my
        .clone()
        .columns(&["email", "no_such_column"])
        .check()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no_such_column"), "{error}");
    drop_tables(&pg, &my, &name).await;
}
