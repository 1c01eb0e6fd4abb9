//! A real migration: a shop's customers and orders moved from PostgreSQL
//! to MariaDB with the dual-write wrapper, while writers keep writing.
//!
//! The shop existed before the migration: its customers and orders are in
//! PostgreSQL only. The example builds the wrapper over one `Shop` trait
//! with a sqlx implementation per database ([`shop`]), starts a live load,
//! moves to `dual_write`, backfills the existing rows with
//! `migrate::Backfill` through `PgTable` and `MySqlTable` record stores,
//! takes MariaDB down (a fault proxy refuses its connections) and brings it
//! back, lets the worker reconcile, walks `shadow`, `live` and `ramp_down`,
//! then compares both databases row by row with `migrate::Verify` and moves
//! to `complete`. Exit code 1 if they differ (the tables are then kept, and
//! named, for inspection); otherwise the tables are dropped.
//!
//! ```text
//! cargo run --features services --example pg_to_mariadb
//! DUALWRITE_OLD_URL=postgres://me@db1/shop DUALWRITE_NEW_URL=mysql://me:pw@db2/shop \
//!     cargo run --features services --example pg_to_mariadb
//! ```

mod migration;
mod shop;

use std::process::ExitCode;

use migration::{drop_tables, run, unique_prefix, Config, Unreachable};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let config = Config::from_env();
    let outcome = match run(&config, &unique_prefix()).await {
        Ok(outcome) => outcome,
        Err(error) => {
            match error.downcast_ref::<Unreachable>() {
                Some(unreachable) => eprintln!("{unreachable}"),
                None => eprintln!("the migration failed: {error}"),
            }
            return ExitCode::FAILURE;
        }
    };
    println!(
        "\n{} live writes, {} rows backfilled, {} writes reconciled after the outage; row by row: customers {} matching, {} differing; orders {} matching, {} differing",
        outcome.live_writes,
        outcome.backfilled.iter().map(|report| report.written).sum::<u64>(),
        outcome.reconciled,
        outcome.customers.matching,
        outcome.customers.differences(),
        outcome.orders.matching,
        outcome.orders.differences(),
    );
    if !outcome.agree() {
        eprintln!(
            "the databases differ (first differences: {:?} {:?}); tables kept: {}, {}",
            outcome.customers.sample,
            outcome.orders.sample,
            outcome.tables.customers,
            outcome.tables.orders
        );
        return ExitCode::FAILURE;
    }
    if let Err(error) = drop_tables(&config, &outcome.tables).await {
        eprintln!("the databases agree, but dropping the tables failed: {error}");
        return ExitCode::FAILURE;
    }
    println!("the databases agree; tables dropped");
    ExitCode::SUCCESS
}
