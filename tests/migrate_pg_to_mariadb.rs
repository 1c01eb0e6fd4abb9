//! Backfill, verify and repair from PostgreSQL (old) to MariaDB (new) on
//! the local servers: a backfill beside live dual writes that update and
//! delete the keys it copies leaves the stores equal row by row; verify
//! finds every kind of difference and absorbs the representation
//! differences of the two databases; repair through the queue makes a
//! second verify clean.
//!
//! `cargo test --features services --test migrate_pg_to_mariadb`

mod migrate_support;
mod real_servers;

use std::time::Duration;

use dualwrite_runtime::migrate::{
    Backfill, BackfillOptions, DifferenceKind, Normalize, Repair, SyncQueue, Verify, VerifyOptions,
    VerifyReport,
};
use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::records::{MySqlTable, PgTable, RecordKey};
use dualwrite_runtime::{DualWrite, RetryPolicy, Stage};
use migrate_support::Interleaved;
use real_servers::{
    create_tables, drop_tables, mysql_pool, mysql_url, pg_pool, rows, unique_table, Accounts,
    AccountsOp, MyAccounts, PgAccounts,
};
use sqlx::{MySqlPool, PgPool};
use tokio::sync::{mpsc, oneshot};

type Repo = DualWrite<PgAccounts, MyAccounts>;

/// A wrapper over `table` on both servers whose worker applies key-level
/// syncs through the same tables (registered as `accounts`), its queue in a
/// SQLite file of its own.
async fn wrapper(pg: &PgPool, my: &MySqlPool, table: &str) -> (Repo, SyncQueue) {
    let dir = std::env::temp_dir().join(unique_table("dualwrite-migrate-pg"));
    std::fs::create_dir_all(&dir).unwrap();
    let queue = std::sync::Arc::new(SqliteQueue::open(dir.join("queue.db")).await.unwrap());
    let stores = (
        PgAccounts {
            pool: pg.clone(),
            table: table.to_owned(),
        },
        MyAccounts {
            pool: my.clone(),
            table: table.to_owned(),
        },
    );
    let repo = DualWrite::builder(stores.0, stores.1)
        .shared_queue(queue.clone())
        .stage(Stage::DualWrite)
        .poll_interval(Duration::from_millis(20))
        .retry(RetryPolicy::default().min_delay(Duration::from_millis(20)))
        .sync_records(
            "accounts",
            PgTable::new(pg.clone(), table, "id"),
            MySqlTable::new(my.clone(), table, "id"),
        )
        .build()
        .unwrap();
    (repo, SyncQueue::new(queue, "Accounts", "accounts"))
}

/// Runs the worker until nothing is queued for either store.
async fn drained(repo: &Repo) {
    let worker = repo.worker::<AccountsOp>();
    for _ in 0..200 {
        worker.drain().await;
        let stats = repo.queue().stats().await.unwrap();
        if stats.new.is_empty() && stats.old.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the queue did not drain");
}

/// Of each batch, deletes every fifth key and updates the key after it,
/// through the wrapper (PostgreSQL, then MariaDB). Returns (deleted, updated).
async fn live_writer(
    repo: &Repo,
    mut batches: mpsc::Receiver<(Vec<i64>, oneshot::Sender<()>)>,
) -> (usize, usize) {
    let (mut deleted, mut updated) = (0, 0);
    while let Some((keys, done)) = batches.recv().await {
        for (index, id) in keys.iter().enumerate() {
            match index % 5 {
                0 => {
                    repo.delete_account(*id).await.expect("the delete");
                    deleted += 1;
                }
                1 => {
                    let owner = format!("renamed-{id}");
                    repo.put_account(*id, owner, id * 7)
                        .await
                        .expect("the update");
                    updated += 1;
                }
                _ => {}
            }
        }
        let _ = done.send(());
    }
    (deleted, updated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_beside_live_updates_and_deletes_leaves_postgres_and_mariadb_equal() {
    let (pg, my) = (pg_pool().await, mysql_pool(&mysql_url()).await);
    let table = unique_table("backfill_live");
    create_tables(&pg, &my, &table).await;
    // The history: 1,000 accounts in PostgreSQL only, from before dual writing.
    sqlx::query(&format!(
        "INSERT INTO {table} (id, owner, cents) \
         SELECT n, 'owner-' || n, n * 100 FROM generate_series(0, 999) AS n"
    ))
    .execute(&pg)
    .await
    .unwrap();
    let (repo, link) = wrapper(&pg, &my, &table).await;

    let (sender, receiver) = mpsc::channel(1);
    let target = Interleaved {
        inner: MySqlTable::new(my.clone(), &table, "id"),
        live: sender,
    };
    let options = BackfillOptions {
        batch_size: 50,
        ..BackfillOptions::default()
    };
    let backfill = Backfill::new(PgTable::new(pg.clone(), &table, "id"), target, options)
        .live_writes(link.clone());
    let (report, (deleted, updated)) = tokio::join!(
        async move {
            let report = backfill.run().await;
            drop(backfill); // ends the live writer
            report
        },
        live_writer(&repo, receiver),
    );
    let report = report.expect("the backfill runs");
    assert_eq!((deleted, updated), (200, 200));
    assert_eq!(report.read, 1_000, "{report:?}");
    assert_eq!(report.resynced, (deleted + updated) as u64, "{report:?}");
    // Before any sync is applied: every updated key (every fifth, from 1)
    // still holds the newer, dual-written copy in MariaDB; the older copy
    // from PostgreSQL, read before the update, was not put over it.
    // (`report.skipped` cannot show it on MySQL: sqlx asks for found rows,
    // so a skipped row counts as written.)
    let (_, copied) = rows(&pg, &my, &table).await;
    let stale: Vec<_> = (1..1_000)
        .step_by(5)
        .filter(|id| copied.get(id) != Some(&(format!("renamed-{id}"), id * 7)))
        .collect();
    assert!(stale.is_empty(), "older copies over newer ones: {stale:?}");

    drained(&repo).await;
    let verified = Verify::new(
        PgTable::new(pg.clone(), &table, "id"),
        MySqlTable::new(my.clone(), &table, "id"),
        VerifyOptions::default(),
    )
    .live_writes(link)
    .run()
    .await
    .expect("the verify runs");
    assert!(verified.is_clean(), "{verified:?}");
    assert_eq!(verified.matching, 800);
    let (old, new) = rows(&pg, &my, &table).await;
    assert_eq!(old, new, "row by row");
    assert!(!new.contains_key(&0), "a deleted account came back");
    assert_eq!(new.get(&1), Some(&("renamed-1".to_owned(), 7)));
    drop_tables(&pg, &my, &table).await;
}

/// Orders with the representation differences of the two databases:
/// PostgreSQL keeps two decimals, microseconds and upper-case statuses;
/// MariaDB four decimals, milliseconds, lower case, and pads names.
async fn create_orders(pg: &PgPool, my: &MySqlPool, table: &str) {
    let pg_schema = format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, owner TEXT NOT NULL, \
         amount NUMERIC(12, 2) NOT NULL, placed_at TIMESTAMP(6) NOT NULL, status TEXT NOT NULL)"
    );
    sqlx::query(&pg_schema).execute(pg).await.unwrap();
    let my_schema = format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, owner VARCHAR(64) NOT NULL, \
         amount DECIMAL(12, 4) NOT NULL, placed_at DATETIME(3) NOT NULL, status VARCHAR(16) NOT NULL)"
    );
    sqlx::query(&my_schema).execute(my).await.unwrap();
    sqlx::query(&format!(
        "INSERT INTO {table} SELECT n, 'owner-' || n, n + 0.5, \
         TIMESTAMP '2026-05-01 10:00:00.123456' + n * INTERVAL '1 minute', 'PAID' \
         FROM generate_series(1, 20) AS n"
    ))
    .execute(pg)
    .await
    .unwrap();
    // The same orders as MariaDB holds them after the dual writes and the
    // backfill, in its own representation.
    for n in 1..=20i64 {
        sqlx::query(&format!(
            "INSERT INTO {table} VALUES (?, CONCAT(?, '   '), ?, \
             TIMESTAMPADD(MINUTE, ?, '2026-05-01 10:00:00.123'), 'paid')"
        ))
        .bind(n)
        .bind(format!("owner-{n}"))
        .bind(format!("{n}.5000"))
        .bind(n)
        .execute(my)
        .await
        .unwrap();
    }
}

fn normalizer() -> Normalize {
    Normalize::new()
        .decimal_scale("amount", 2)
        .timestamp_precision("placed_at", 3)
        .trim_end("owner")
        .lowercase("status")
}

async fn verify(pg: &PgPool, my: &MySqlPool, table: &str, link: &SyncQueue) -> VerifyReport {
    let options = VerifyOptions {
        recheck_attempts: 1,
        recheck_delay: Duration::from_millis(1),
        ..VerifyOptions::default()
    };
    Verify::new(
        PgTable::new(pg.clone(), table, "id"),
        MySqlTable::new(my.clone(), table, "id"),
        options,
    )
    .live_writes(link.clone())
    .normalizer(normalizer())
    .run()
    .await
    .expect("the verify runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_every_kind_of_difference_and_repair_through_the_queue_clears_them() {
    let (pg, my) = (pg_pool().await, mysql_pool(&mysql_url()).await);
    let table = unique_table("verify_kinds");
    create_orders(&pg, &my, &table).await;
    let (repo, link) = wrapper(&pg, &my, &table).await;

    // Only representations differ: the normaliser absorbs them all.
    let clean = verify(&pg, &my, &table, &link).await;
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!(clean.matching, 20);
    // Without it, every row differs, in exactly those four columns.
    let raw = Verify::new(
        PgTable::new(pg.clone(), &table, "id"),
        MySqlTable::new(my.clone(), &table, "id"),
        VerifyOptions::default(),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(raw.different, 20, "{raw:?}");
    let mut fields = raw.sample[0].fields.clone();
    fields.sort();
    assert_eq!(fields, ["amount", "owner", "placed_at", "status"]);

    // One difference of each kind.
    let changed = format!("UPDATE {table} SET amount = 99.9900 WHERE id = 5");
    sqlx::query(&changed).execute(&my).await.unwrap();
    let missing = format!("DELETE FROM {table} WHERE id = 6");
    sqlx::query(&missing).execute(&my).await.unwrap();
    let extra = format!("INSERT INTO {table} VALUES (100, 'stray', 1, '2026-01-01', 'paid')");
    sqlx::query(&extra).execute(&my).await.unwrap();

    let found = verify(&pg, &my, &table, &link).await;
    assert_eq!(
        (
            found.matching,
            found.different,
            found.missing_in_new,
            found.extra_in_new
        ),
        (18, 1, 1, 1),
        "{found:?}"
    );
    let kinds: Vec<_> = found
        .sample
        .iter()
        .map(|d| (d.key.clone(), d.kind, d.fields.clone()))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                RecordKey::Int(5),
                DifferenceKind::Different,
                vec!["amount".to_owned()]
            ),
            (RecordKey::Int(6), DifferenceKind::MissingInNew, vec![]),
            (RecordKey::Int(100), DifferenceKind::ExtraInNew, vec![]),
        ]
    );

    let keys = found.sample.iter().map(|d| d.key.clone());
    let repaired = Repair::through_queue(link.clone())
        .run(keys.collect::<Vec<_>>())
        .await
        .expect("the repair queues");
    assert_eq!(repaired.queued, 3, "{repaired:?}");
    drained(&repo).await;
    let again = verify(&pg, &my, &table, &link).await;
    assert!(again.is_clean(), "{again:?}");
    assert_eq!(again.matching, 20);
    let gone = format!("SELECT COUNT(*) FROM {table} WHERE id = 100");
    let (stray,): (i64,) = sqlx::query_as(&gone).fetch_one(&my).await.unwrap();
    assert_eq!(stray, 0);
    let (old_tables, new_tables) = (pg.clone(), my.clone());
    drop_tables(&old_tables, &new_tables, &table).await;
}
