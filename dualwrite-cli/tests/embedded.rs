//! The subcommands run inside the user's own binary, on record stores only
//! its code can reach (here: in-memory SQLite databases).

use clap::Parser;
use dualwrite_cli::{execute, Cli, CliError, Outcome};
use dualwrite_runtime::records::{RecordPair, SqliteTable};
use sqlx::sqlite::SqlitePoolOptions;

async fn table(rows: i64) -> SqliteTable {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    sqlx::query("CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    for id in 1..=rows {
        sqlx::query("INSERT INTO accounts VALUES (?, ?)")
            .bind(id)
            .bind(format!("user{id}@example.com"))
            .execute(&pool)
            .await
            .unwrap();
    }
    SqliteTable::new(pool, "accounts", "id")
}

fn cli(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("dualwrite").chain(args.iter().copied())).unwrap()
}

#[tokio::test]
async fn backfill_verify_and_repair_run_on_the_binarys_own_stores() {
    let pair = RecordPair::new(table(50).await, table(0).await);
    let before = execute(&cli(&["verify", "--json"]), Some(&pair))
        .await
        .unwrap();
    assert_eq!(before, Outcome::DifferencesFound, "the new store is empty");
    let copied = execute(&cli(&["backfill", "--json"]), Some(&pair))
        .await
        .unwrap();
    assert_eq!(copied, Outcome::Clean);
    let after = execute(&cli(&["verify", "--json"]), Some(&pair))
        .await
        .unwrap();
    assert_eq!(after, Outcome::Clean);
    let repaired = execute(&cli(&["repair", "7"]), Some(&pair)).await.unwrap();
    assert_eq!(repaired, Outcome::Clean);
}

#[tokio::test]
async fn options_naming_sql_tables_are_refused_when_the_binary_brings_its_stores() {
    let pair = RecordPair::new(table(1).await, table(1).await);
    let refused = execute(&cli(&["verify", "--table", "accounts"]), Some(&pair)).await;
    match refused {
        Err(CliError::Usage(message)) => {
            assert!(message.contains("its own record stores"), "{message}")
        }
        other => panic!("expected a usage error, got {other:?}"),
    }
}

#[test]
fn the_command_line_mounts_in_a_larger_one() {
    #[derive(Parser)]
    enum Admin {
        Serve,
        Dualwrite(Box<Cli>),
    }
    let parsed = Admin::try_parse_from(["admin", "dualwrite", "stage", "get"]).unwrap();
    assert!(matches!(parsed, Admin::Dualwrite(_)));
    assert!(matches!(
        Admin::try_parse_from(["admin", "serve"]).unwrap(),
        Admin::Serve
    ));
}
