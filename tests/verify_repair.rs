//! Verify finds every kind of difference between the stores (and forgives
//! representation differences a normaliser evens out, and differences a
//! live write is about to fix); repair turns the differing keys into
//! key-level syncs the worker applies; a second verify finds nothing.

mod migrate_support;

use std::time::Duration;

use dualwrite_runtime::migrate::{
    read_differences, Difference, DifferenceKind, Normalize, Repair, Verify, VerifyOptions,
};
use dualwrite_runtime::records::{sync_entry, RecordKey};
use dualwrite_runtime::{DualWrite, InMemoryQueue, ReconciliationQueue, Side, Stage};
use migrate_support::{
    fill, records, rows, AccountsOp, FailsAfter, Migration, SqlAccounts, NAMESPACE, RECORDS,
};

fn quick() -> VerifyOptions {
    VerifyOptions {
        batch_size: 64,
        recheck_attempts: 2,
        recheck_delay: Duration::from_millis(5),
        ..VerifyOptions::default()
    }
}

/// Queues a sync of `key` to the new store, drains the worker, and returns
/// the error of the one dead letter it must have made.
async fn sync_dead_lettered(
    repo: &migrate_support::Repo,
    queue: &InMemoryQueue,
    key: i64,
) -> String {
    let entry = sync_entry(NAMESPACE, RECORDS, Side::New, &RecordKey::Int(key), "test");
    queue.append(entry).await.expect("queued");
    let report = repo.worker::<AccountsOp>().drain().await;
    assert_eq!(report.dead_lettered, 1, "{report:?}");
    let letters = repo.queue().dead_letters().await.expect("dead letters");
    letters[0].error.clone()
}

/// Matching, different, missing in new, extra in new.
fn counts(report: &dualwrite_runtime::migrate::VerifyReport) -> (u64, u64, u64, u64) {
    (
        report.matching,
        report.different,
        report.missing_in_new,
        report.extra_in_new,
    )
}

async fn execute(pool: &sqlx::SqlitePool, sql: &str) {
    sqlx::query(sql).execute(pool).await.expect(sql);
}

/// Both stores hold 0..500, then one difference of each kind is made.
async fn injected(migration: &Migration) {
    fill(&migration.old, 0..500).await;
    fill(&migration.new, 0..500).await;
    execute(
        &migration.new,
        "UPDATE accounts SET cents = 1 WHERE id = 10",
    )
    .await; // different
    execute(&migration.new, "DELETE FROM accounts WHERE id = 20").await; // missing in new
    execute(&migration.old, "DELETE FROM accounts WHERE id = 30").await; // extra in new
    execute(
        &migration.new,
        "INSERT INTO accounts VALUES (1000, 'stray', 0, 1)",
    )
    .await; // extra in new
            // A representation difference only: CHAR-style padding.
    execute(
        &migration.new,
        "UPDATE accounts SET owner = owner || '   ' WHERE id = 40",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_every_kind_of_difference_and_repair_through_the_queue_fixes_them() {
    let migration = Migration::new("verify-repair").await;
    injected(&migration).await;
    let keys_file = migration.dir.join("differences.jsonl");
    let report = Verify::new(records(&migration.old), records(&migration.new), quick())
        .normalizer(Normalize::new().trim_end("owner"))
        .live_writes(migration.link())
        .keys_to(std::fs::File::create(&keys_file).expect("the keys file"))
        .run()
        .await
        .expect("the verify runs");
    assert_eq!(counts(&report), (497, 1, 1, 2), "{report:?}");
    assert!(!report.is_clean());
    let expected = vec![
        Difference {
            key: RecordKey::Int(10),
            kind: DifferenceKind::Different,
            fields: vec!["cents".into()],
        },
        Difference {
            key: RecordKey::Int(20),
            kind: DifferenceKind::MissingInNew,
            fields: vec![],
        },
        Difference {
            key: RecordKey::Int(30),
            kind: DifferenceKind::ExtraInNew,
            fields: vec![],
        },
        Difference {
            key: RecordKey::Int(1000),
            kind: DifferenceKind::ExtraInNew,
            fields: vec![],
        },
    ];
    assert_eq!(report.sample, expected);
    let written: Vec<Difference> = read_differences(std::fs::File::open(&keys_file).unwrap())
        .collect::<Result<_, _>>()
        .expect("the keys file reads back");
    assert_eq!(written, expected, "every difference is in the file");
    let json = serde_json::to_value(&report).expect("the report serialises");
    assert_eq!(json["missing_in_new"], 1);
    assert_eq!(json["sample"][0]["kind"], "different");

    let worker = migration.repo.spawn_worker();
    let repaired = Repair::through_queue(migration.link())
        .run(written.into_iter().map(|difference| difference.key))
        .await
        .expect("the syncs are queued");
    assert_eq!(repaired.queued, 4);
    migration.drained().await;
    let again = Verify::new(records(&migration.old), records(&migration.new), quick())
        .normalizer(Normalize::new().trim_end("owner"))
        .run()
        .await
        .expect("the verify runs");
    assert!(again.is_clean(), "{again:?}");
    assert_eq!(again.matching, 499);
    let stats = worker.shutdown().await.expect("the worker stops");
    assert_eq!(stats.applied, 4, "{stats:?}");
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");
}

#[tokio::test]
async fn without_the_normaliser_a_representation_difference_is_reported_with_its_field() {
    let migration = Migration::new("no-normaliser").await;
    injected(&migration).await;
    let report = Verify::new(records(&migration.old), records(&migration.new), quick())
        .run()
        .await
        .expect("the verify runs");
    assert_eq!(report.different, 2, "{report:?}");
    assert!(report.sample.contains(&Difference {
        key: RecordKey::Int(40),
        kind: DifferenceKind::Different,
        fields: vec!["owner".into()],
    }));
}

#[tokio::test]
async fn direct_repair_fixes_the_stores_when_nothing_else_writes_them() {
    let migration = Migration::new("direct").await;
    injected(&migration).await;
    let keys = [10, 20, 30, 1000, 40].map(RecordKey::Int);
    let repaired = Repair::direct(records(&migration.old), records(&migration.new), Side::New)
        .run(keys)
        .await
        .expect("the repair runs");
    assert_eq!((repaired.written, repaired.deleted), (3, 2), "{repaired:?}");
    assert_eq!(rows(&migration.old).await, rows(&migration.new).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_queued_work_is_rechecked_after_the_work_drains_not_reported() {
    let migration = Migration::new("live-recheck").await;
    fill(&migration.old, 0..300).await;
    fill(&migration.new, 0..300).await;
    // The service changed key 150 in the old store; its sync to the new
    // one is queued, and no worker runs yet.
    execute(
        &migration.old,
        "UPDATE accounts SET cents = 5, version = 2 WHERE id = 150",
    )
    .await;
    migration
        .queue
        .append(sync_entry(
            NAMESPACE,
            RECORDS,
            Side::New,
            &RecordKey::Int(150),
            "test",
        ))
        .await
        .expect("queued");
    let verify = Verify::new(records(&migration.old), records(&migration.new), quick())
        .live_writes(migration.link());
    let (report, worker) = tokio::join!(verify.run(), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        migration.repo.spawn_worker()
    });
    let report = report.expect("the verify runs");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.settled_on_recheck, 1, "{report:?}");
    worker.shutdown().await.expect("the worker stops");
}

#[tokio::test]
async fn a_sync_entry_for_records_the_wrapper_was_not_given_is_dead_lettered_saying_so() {
    let migration = Migration::new("unregistered").await;
    let queue = std::sync::Arc::new(InMemoryQueue::new());
    let repo = DualWrite::builder(
        SqlAccounts(migration.old.clone()),
        SqlAccounts(migration.new.clone()),
    )
    .shared_queue(queue.clone())
    .stage(Stage::DualWrite)
    .build()
    .expect("valid settings");
    let error = sync_dead_lettered(&repo, &queue, 1).await;
    assert!(
        error.contains(".sync_records(\"accounts\", old, new)"),
        "{error}"
    );
}

#[tokio::test]
async fn a_killed_verify_resumes_after_its_checkpoint_with_the_counts_so_far() {
    let migration = Migration::new("verify-resume").await;
    injected(&migration).await;
    let options = VerifyOptions {
        checkpoint: Some(migration.dir.join("verify.json")),
        checkpoint_every: Duration::ZERO,
        ..quick()
    };
    let failing = FailsAfter::new(records(&migration.new), 3);
    let error = Verify::new(records(&migration.old), failing, options.clone())
        .normalizer(Normalize::new().trim_end("owner"))
        .run()
        .await
        .expect_err("the new store fails on its fourth page");
    assert!(error.to_string().contains("connection lost"), "{error}");
    let report = Verify::new(records(&migration.old), records(&migration.new), options)
        .normalizer(Normalize::new().trim_end("owner"))
        .run()
        .await
        .expect("the resumed run finishes");
    assert!(report.resumed_after.is_some(), "{report:?}");
    assert_eq!(
        counts(&report),
        (497, 1, 1, 2),
        "the counts of both runs add up to one whole walk: {report:?}"
    );
}

#[tokio::test]
async fn a_query_per_side_compares_and_copies_between_two_schemas() {
    let migration = Migration::new("two-schemas").await;
    fill(&migration.old, 0..200).await;
    // The new schema renames every column and keeps money as decimal text.
    execute(
        &migration.new,
        "CREATE TABLE accounts_v2 (account_id INTEGER PRIMARY KEY, holder TEXT NOT NULL, balance TEXT NOT NULL, version INTEGER NOT NULL)",
    )
    .await;
    let old_as_new = || {
        dualwrite_runtime::records::SqliteTable::with_spec(
            migration.old.clone(),
            dualwrite_runtime::records::TableSpec::query(
                "SELECT id AS account_id, owner AS holder, printf('%d.%02d', cents / 100, cents % 100) AS balance, version FROM accounts",
                "account_id",
            ),
        )
    };
    let new_table = || {
        dualwrite_runtime::records::SqliteTable::new(
            migration.new.clone(),
            "accounts_v2",
            "account_id",
        )
        .version_column("version")
    };
    new_table()
        .check()
        .await
        .expect("the table and its columns exist");
    let copied =
        dualwrite_runtime::migrate::Backfill::new(old_as_new(), new_table(), Default::default())
            .run()
            .await
            .expect("the backfill runs");
    assert_eq!(copied.written, 200);
    let balance: String =
        sqlx::query_scalar("SELECT balance FROM accounts_v2 WHERE account_id = 7")
            .fetch_one(&migration.new)
            .await
            .unwrap();
    assert_eq!(balance, "7.00");
    execute(
        &migration.new,
        "UPDATE accounts_v2 SET balance = '7.5' WHERE account_id = 7",
    )
    .await;
    let report = Verify::new(old_as_new(), new_table(), quick())
        .normalizer(Normalize::new().decimal_scale("balance", 2))
        .run()
        .await
        .expect("the verify runs");
    assert_eq!((report.matching, report.different), (199, 1), "{report:?}");
    assert_eq!(report.sample[0].fields, vec!["balance".to_owned()]);
    // A query side is read-only unless it names a table to write to.
    let error = Repair::direct(old_as_new(), new_table(), Side::Old)
        .run([RecordKey::Int(7)])
        .await
        .expect_err("the old side is a query");
    assert!(
        error.to_string().contains("names no table to write to"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_live_the_repair_syncs_the_old_store_from_the_new_one() {
    let migration = Migration::new("live-stage").await;
    fill(&migration.old, 0..100).await;
    fill(&migration.new, 0..100).await;
    migration
        .repo
        .stage()
        .set(Stage::Shadow)
        .await
        .expect("dual write to shadow");
    migration
        .repo
        .stage()
        .set(Stage::Live)
        .await
        .expect("shadow to live");
    // The new store is authoritative now; the old one missed a change.
    execute(
        &migration.new,
        "UPDATE accounts SET cents = 9, version = 2 WHERE id = 5",
    )
    .await;
    execute(
        &migration.old,
        "INSERT INTO accounts VALUES (500, 'stray', 0, 1)",
    )
    .await;
    let report = Verify::new(records(&migration.old), records(&migration.new), quick())
        .run()
        .await
        .expect("the verify runs");
    assert_eq!(counts(&report), (99, 1, 1, 0), "{report:?}");
    let worker = migration.repo.spawn_worker();
    Repair::through_queue(migration.link().target(Side::Old))
        .run(
            report
                .sample
                .iter()
                .map(|difference| difference.key.clone()),
        )
        .await
        .expect("the syncs are queued");
    migration.drained().await;
    assert_eq!(rows(&migration.old).await, rows(&migration.new).await);
    worker.shutdown().await.expect("the worker stops");
}

#[tokio::test]
async fn against_an_empty_new_store_every_key_is_reported_missing_with_rechecks_in_groups() {
    let migration = Migration::new("empty-new").await;
    fill(&migration.old, 0..3_000).await;
    let keys_file = migration.dir.join("missing.jsonl");
    let report = Verify::new(
        records(&migration.old),
        records(&migration.new),
        VerifyOptions {
            max_pending_rechecks: 100,
            recheck_delay: Duration::from_millis(1),
            ..VerifyOptions::default()
        },
    )
    .keys_to(std::fs::File::create(&keys_file).expect("the keys file"))
    .run()
    .await
    .expect("the verify runs");
    assert_eq!(counts(&report), (0, 0, 3_000, 0), "{report:?}");
    assert_eq!(report.sample.len(), 20, "the sample is bounded");
    let written = read_differences(std::fs::File::open(&keys_file).unwrap()).count();
    assert_eq!(written, 3_000, "every key is in the file");
}

#[tokio::test]
async fn a_sync_into_the_store_that_became_authoritative_is_refused_not_applied() {
    let migration = Migration::new("sync-into-authority").await;
    fill(&migration.old, 0..10).await;
    fill(&migration.new, 0..10).await;
    execute(&migration.new, "UPDATE accounts SET cents = 9 WHERE id = 3").await;
    let queue = std::sync::Arc::new(InMemoryQueue::new());
    let repo = DualWrite::builder(
        SqlAccounts(migration.old.clone()),
        SqlAccounts(migration.new.clone()),
    )
    .shared_queue(queue.clone())
    .stage(Stage::Live)
    .sync_records(RECORDS, records(&migration.old), records(&migration.new))
    .build()
    .expect("valid settings");
    let error = sync_dead_lettered(&repo, &queue, 3).await;
    assert!(error.contains("the new store is authoritative"), "{error}");
    let cents: i64 = sqlx::query_scalar("SELECT cents FROM accounts WHERE id = 3")
        .fetch_one(&migration.new)
        .await
        .unwrap();
    assert_eq!(cents, 9, "the authoritative record is untouched");
}
