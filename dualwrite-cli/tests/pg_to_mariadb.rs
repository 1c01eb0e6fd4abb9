//! `dualwrite backfill | verify | repair` from PostgreSQL to MariaDB on the
//! local servers, through the built binary: a missing table or column is
//! refused before anything is written; backfill copies every row; verify
//! finds each kind of difference (exit 1) and writes their keys; repair
//! fixes them and a second verify is clean (exit 0).
//!
//! `cargo test -p dualwrite-cli --features services --test pg_to_mariadb`
//! (`DUALWRITE_PG_URL`, `DUALWRITE_MYSQL_URL` override the servers).

mod support;

use sqlx::{MySqlPool, PgPool};
use support::{block_on, mysql_url, pg_url, run, Ran};

/// The two servers, with a table of the same name (unique to this run) on
/// each: 300 accounts in PostgreSQL, none in MariaDB.
struct Servers {
    pg: PgPool,
    my: MySqlPool,
    table: String,
}

impl Servers {
    fn new(prefix: &str) -> Servers {
        block_on(async {
            let pg = PgPool::connect(&pg_url()).await.expect("PostgreSQL");
            let my = MySqlPool::connect(&mysql_url()).await.expect("MariaDB");
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos();
            let table = format!("{prefix}_{}_{nanos}", std::process::id());
            let schema =
                "(id BIGINT PRIMARY KEY, owner VARCHAR(64) NOT NULL, cents BIGINT NOT NULL)";
            for statement in [format!("CREATE TABLE {table} {schema}")] {
                sqlx::query(&statement).execute(&pg).await.unwrap();
                sqlx::query(&statement).execute(&my).await.unwrap();
            }
            sqlx::query(&format!(
                "INSERT INTO {table} SELECT n, 'owner-' || n, n * 100 FROM generate_series(1, 300) AS n"
            ))
            .execute(&pg)
            .await
            .unwrap();
            Servers { pg, my, table }
        })
    }

    /// `dualwrite <args> --old <PostgreSQL> --new <MariaDB>`.
    fn run(&self, args: &[&str]) -> Ran {
        let (old, new) = (pg_url(), mysql_url());
        let mut all = args.to_vec();
        all.extend(["--old", &old, "--new", &new]);
        run(&all)
    }

    /// MariaDB's rows, in key order.
    fn new_rows(&self) -> Vec<(i64, String, i64)> {
        let sql = format!("SELECT id, owner, cents FROM {} ORDER BY id", self.table);
        block_on(sqlx::query_as(&sql).fetch_all(&self.my)).unwrap()
    }

    fn on_new(&self, statement: &str) {
        let statement = statement.replace("{table}", &self.table);
        block_on(sqlx::query(&statement).execute(&self.my)).unwrap();
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let drop = format!("DROP TABLE IF EXISTS {}", self.table);
        block_on(async {
            let _ = sqlx::query(&drop).execute(&self.pg).await;
            let _ = sqlx::query(&drop).execute(&self.my).await;
        });
    }
}

#[test]
fn a_missing_table_or_column_is_named_and_nothing_is_written() {
    let servers = Servers::new("cli_bad_input");
    let table = servers.table.as_str();
    servers
        .run(&[
            "backfill",
            "--old-table",
            table,
            "--new-table",
            "acounts",
            "--key",
            "id",
        ])
        .fails_with(3, "acounts");
    servers
        .run(&[
            "backfill",
            "--table",
            table,
            "--key",
            "id",
            "--columns",
            "owner,balance",
        ])
        .fails_with(3, "balance");
    servers
        .run(&["backfill", "--table", table, "--key", "account_id"])
        .fails_with(3, "account_id");
    assert!(servers.new_rows().is_empty(), "nothing was written");
}

#[test]
fn backfill_verify_repair_from_postgres_to_mariadb_through_the_binary() {
    let servers = Servers::new("cli_migrate");
    let table = servers.table.as_str();
    let stores = ["--table", table, "--key", "id"];
    let with = |command: &str, more: &[&str]| {
        let mut args = vec![command];
        args.extend(stores);
        args.extend(more);
        servers.run(&args)
    };

    let copied = with("backfill", &["--batch-size", "64", "--json"]);
    let report = copied.succeeds().json();
    assert_eq!(
        (report["read"].as_u64(), report["written"].as_u64()),
        (Some(300), Some(300))
    );
    let rows = servers.new_rows();
    assert_eq!(rows.len(), 300);
    assert_eq!(rows[4], (5, "owner-5".to_owned(), 500));
    with("verify", &[]).succeeds();

    servers.on_new("UPDATE {table} SET cents = 1 WHERE id = 5");
    servers.on_new("DELETE FROM {table} WHERE id = 6");
    servers.on_new("INSERT INTO {table} VALUES (1000, 'stray', 1)");
    let keys = std::env::temp_dir().join(format!("{table}-keys.jsonl"));
    let keys_path = keys.to_str().unwrap();
    let found = with("verify", &["--json", "--keys-to", keys_path]);
    assert_eq!(found.code, 1, "differences found: {}", found.stderr);
    let report = found.json();
    let counts = ["matching", "different", "missing_in_new", "extra_in_new"]
        .map(|name| report[name].as_u64().unwrap_or(u64::MAX));
    assert_eq!(counts, [298, 1, 1, 1], "{report}");

    with("repair", &["--keys", keys_path]).succeeds();
    let rows = servers.new_rows();
    assert_eq!(rows.len(), 300);
    assert_eq!(rows[4], (5, "owner-5".to_owned(), 500));
    assert_eq!(rows[5], (6, "owner-6".to_owned(), 600));
    with("verify", &[]).succeeds();
    let _ = std::fs::remove_file(keys);
}
