//! The `pg_to_mariadb` example's migration, run against the local
//! PostgreSQL and MariaDB (`DUALWRITE_OLD_URL`, `DUALWRITE_NEW_URL`):
//! existing rows backfilled, live writes through every stage, a follower
//! outage reconciled, and both databases agreeing row by row at the end.

#[path = "../examples/pg_to_mariadb/migration.rs"]
mod migration;
#[path = "../examples/pg_to_mariadb/shop.rs"]
mod shop;

use migration::{drop_tables, run, unique_prefix, Config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_mariadb_under_live_writes_and_an_outage_ends_with_agreeing_rows() {
    let config = Config::from_env();
    let outcome = run(&config, &unique_prefix())
        .await
        .expect("the migration runs");
    let existing = config.existing_customers as u64;
    // Customers are never deleted (the load deletes orders, from `off` on).
    assert!(
        outcome.backfilled[0].read >= existing && outcome.backfilled[1].read > 0,
        "the backfill read every existing customer, and orders: {:?}",
        outcome.backfilled
    );
    assert!(outcome.live_writes > 0, "the load wrote");
    assert!(
        outcome.reconciled > 0,
        "the outage left writes for the worker to reconcile"
    );
    assert!(
        outcome.agree(),
        "the databases differ: {:?} {:?} (tables kept: {:?})",
        outcome.customers,
        outcome.orders,
        outcome.tables
    );
    assert!(outcome.customers.matching >= existing);
    assert!(outcome.orders.matching > 0);
    drop_tables(&config, &outcome.tables).await.unwrap();
}
