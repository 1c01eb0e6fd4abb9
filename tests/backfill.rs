//! Backfill: copies the records that existed before dual writing began,
//! resumes where a killed run stopped, and never leaves an older or a
//! deleted record in the new store where live dual writes changed it.

mod migrate_support;

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dualwrite_runtime::migrate::{
    Backfill, BackfillOptions, MigrateError, Progress, Verify, VerifyOptions,
};
use dualwrite_runtime::records::{RecordKey, SqliteTable};
use migrate_support::{fill, records, rows, Accounts, FailsAfter, Interleaved, Migration};
use tokio::sync::{mpsc, oneshot};

#[derive(Default)]
struct LiveCounts {
    deleted: AtomicUsize,
    updated: AtomicUsize,
}

/// Serves the interleaving store: of each batch, deletes every fifth key
/// and updates (to a newer version) the key after it, through the wrapper.
async fn live_writer(migration: &Migration, mut batches: LiveBatches, counts: &LiveCounts) {
    let version = AtomicI64::new(100);
    while let Some((keys, done)) = batches.recv().await {
        for (index, id) in keys.iter().enumerate() {
            match index % 5 {
                0 => {
                    migration
                        .repo
                        .delete_account(*id)
                        .await
                        .expect("the old store deletes");
                    counts.deleted.fetch_add(1, Ordering::Relaxed);
                }
                1 => {
                    let version = version.fetch_add(1, Ordering::Relaxed);
                    migration
                        .repo
                        .put_account(*id, format!("renamed-{id}"), id * 7, version)
                        .await
                        .expect("the old store takes it");
                    counts.updated.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        let _ = done.send(());
    }
}

/// The pages the interleaving store hands the live writer, each with the
/// signal that lets its write go ahead.
type LiveBatches = mpsc::Receiver<(Vec<i64>, oneshot::Sender<()>)>;

/// A backfill of the old store's accounts to the new in pages of 50, each
/// written only after the returned receiver's live writer has had its turn.
fn interleaved_backfill(migration: &Migration, live_writes: bool) -> (Backfill, LiveBatches) {
    let (sender, receiver) = mpsc::channel(1);
    let target = Interleaved {
        inner: records(&migration.new),
        live: sender,
    };
    let options = BackfillOptions {
        batch_size: 50,
        ..BackfillOptions::default()
    };
    let mut backfill = Backfill::new(records(&migration.old), target, options);
    if live_writes {
        backfill = backfill.live_writes(migration.link());
    }
    (backfill, receiver)
}

async fn backfill_under_live_writes(
    migration: &Migration,
    live_writes: bool,
) -> (dualwrite_runtime::migrate::BackfillReport, LiveCounts) {
    fill(&migration.old, 0..1_000).await;
    let (backfill, receiver) = interleaved_backfill(migration, live_writes);
    let counts = LiveCounts::default();
    let (report, ()) = tokio::join!(
        async move {
            let report = backfill.run().await;
            drop(backfill); // ends the live writer
            report
        },
        live_writer(migration, receiver, &counts),
    );
    (report.expect("the backfill runs"), counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_beside_live_updates_and_deletes_leaves_the_stores_equal() {
    let migration = Migration::new("live").await;
    let worker = migration.repo.spawn_worker();
    let (report, counts) = backfill_under_live_writes(&migration, true).await;
    let deleted = counts.deleted.load(Ordering::Relaxed) as u64;
    let updated = counts.updated.load(Ordering::Relaxed) as u64;
    assert_eq!((deleted, updated), (200, 200));
    assert_eq!(report.read, 1_000, "{report:?}");
    // Every updated key already held the newer, dual-written version when
    // its batch was written: the older copy was not written over it.
    assert!(report.skipped >= updated, "{report:?}");
    // Each deleted and each updated key changed while copied: queued for a sync.
    assert_eq!(report.resynced, deleted + updated, "{report:?}");

    migration.drained().await;
    let verified = Verify::new(
        records(&migration.old),
        records(&migration.new),
        VerifyOptions::default(),
    )
    .live_writes(migration.link())
    .run()
    .await
    .expect("the verify runs");
    assert!(verified.is_clean(), "{verified:?}");
    assert_eq!(verified.matching, 800);
    let old_rows = rows(&migration.old).await;
    assert_eq!(old_rows, rows(&migration.new).await, "row by row");
    assert!(old_rows
        .iter()
        .any(|row| row.1.starts_with("renamed-") && row.3 >= 100));
    worker.shutdown().await.expect("the worker stops");
}

/// Shows that the test above can fail: without the re-read, a delete that
/// lands between a batch's read and its write brings the record back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_live_writes_a_delete_racing_the_copy_brings_the_record_back() {
    let migration = Migration::new("no-live").await;
    let (report, counts) = backfill_under_live_writes(&migration, false).await;
    assert_eq!(report.resynced, 0);
    let verified = Verify::new(
        records(&migration.old),
        records(&migration.new),
        VerifyOptions {
            recheck_attempts: 1,
            recheck_delay: Duration::from_millis(1),
            ..VerifyOptions::default()
        },
    )
    .run()
    .await
    .expect("the verify runs");
    assert_eq!(
        verified.extra_in_new,
        counts.deleted.load(Ordering::Relaxed) as u64,
        "{verified:?}"
    );
    // The version column still kept every newer update.
    assert_eq!(verified.different, 0, "{verified:?}");
}

#[tokio::test]
async fn a_killed_backfill_resumes_after_its_checkpoint_and_reports_progress() {
    let migration = Migration::new("resume").await;
    fill(&migration.old, 0..1_000).await;
    let options = BackfillOptions {
        batch_size: 100,
        checkpoint: Some(migration.dir.join("backfill.json")),
        checkpoint_every: Duration::ZERO,
        ..BackfillOptions::default()
    };
    let source = FailsAfter::new(records(&migration.old), 4);
    let failed = Backfill::new(source, records(&migration.new), options.clone())
        .run()
        .await
        .expect_err("the source fails on its fifth page");
    assert!(
        matches!(failed, MigrateError::Store { role: "source", .. }),
        "{failed}"
    );
    assert!(failed.to_string().contains("connection lost"), "{failed}");
    assert_eq!(rows(&migration.new).await.len(), 400);

    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let report = Backfill::new(
        records(&migration.old),
        records(&migration.new),
        options.clone(),
    )
    .progress(move |progress: &Progress| sink.lock().unwrap().push(progress.clone()))
    .run()
    .await
    .expect("the resumed run finishes");
    assert_eq!(
        report.resumed_after,
        Some(RecordKey::Int(399)),
        "{report:?}"
    );
    assert_eq!(
        (report.read, report.written, report.skipped),
        (1_000, 1_000, 0),
        "{report:?}"
    );
    assert_eq!(rows(&migration.old).await, rows(&migration.new).await);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        6,
        "one progress report per batch of the resumed run"
    );
    assert_eq!(seen.first().map(|p| p.done), Some(500));
    assert_eq!(
        seen.last().map(|p| (p.done, p.total)),
        Some((1_000, Some(1_000)))
    );

    // Finished: the next run starts over, and finds everything there.
    let again = Backfill::new(records(&migration.old), records(&migration.new), options)
        .run()
        .await
        .expect("a new run");
    assert_eq!(
        (again.resumed_after, again.written, again.skipped),
        (None, 0, 1_000)
    );
}

#[tokio::test]
async fn a_missing_table_is_named_before_any_work() {
    let migration = Migration::new("missing").await;
    let table = SqliteTable::new(migration.old.clone(), "acounts", "id");
    let error = table.check().await.expect_err("no such table");
    assert!(error.to_string().contains("acounts"), "{error}");
    let column =
        SqliteTable::new(migration.old.clone(), "accounts", "id").columns(&["owner", "balance"]);
    let error = column.check().await.expect_err("no such column");
    assert!(error.to_string().contains("balance"), "{error}");
}

/// Serves the interleaving store: of each page of the first `below` keys,
/// deletes the first key through the wrapper and gives its owner (a unique
/// column here) to a key far beyond, so that the page's copy of the first
/// key, read before, clashes in the new store with the row now holding
/// that owner.
async fn owner_mover(migration: &Migration, mut batches: LiveBatches, below: i64) -> usize {
    let mut moved = 0;
    while let Some((keys, done)) = batches.recv().await {
        // A page, not the record-by-record retry of one.
        if let (true, Some(&first)) = (keys.len() > 1, keys.first()) {
            if first < below {
                migration.repo.delete_account(first).await.expect("deleted");
                migration
                    .repo
                    .put_account(first + 10_000, format!("owner-{first}"), 1, 100)
                    .await
                    .expect("the old store takes it");
                moved += 1;
            }
        }
        let _ = done.send(());
    }
    moved
}

/// Both stores' `owner` made unique, the old filled with 200 accounts,
/// and a backfill of pages of 50 beside [`owner_mover`].
async fn backfill_beside_moved_unique_values(
    migration: &Migration,
    live_writes: bool,
) -> (
    Result<dualwrite_runtime::migrate::BackfillReport, MigrateError>,
    usize,
) {
    for pool in [&migration.old, &migration.new] {
        sqlx::query("CREATE UNIQUE INDEX accounts_owner ON accounts (owner)")
            .execute(pool)
            .await
            .expect("the index is made");
    }
    fill(&migration.old, 0..200).await;
    let (backfill, receiver) = interleaved_backfill(migration, live_writes);
    tokio::join!(
        async move {
            let report = backfill.run().await;
            drop(backfill); // ends the live writer
            report
        },
        owner_mover(migration, receiver, 200),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_clashing_on_a_unique_column_is_synced_instead_and_the_stores_end_equal() {
    let migration = Migration::new("unique-live").await;
    let worker = migration.repo.spawn_worker();
    let (report, moved) = backfill_beside_moved_unique_values(&migration, true).await;
    let report = report.expect("a clash is no reason to stop");
    assert_eq!(moved, 4, "one per page of the first 200 keys");
    assert_eq!(report.conflicted, 4, "{report:?}");
    migration.drained().await;
    let old_rows = rows(&migration.old).await;
    assert_eq!(old_rows.len(), 200, "4 deleted, 4 moved");
    assert_eq!(old_rows, rows(&migration.new).await, "row by row");
    let stats = migration.queue.stats().await.expect("stats");
    assert!(stats.is_empty(), "synced, nothing dead: {stats:?}");
    worker.shutdown().await.expect("the worker stops");
}

/// Without live writes there is no one to sync the key: the backfill stops
/// and names the records, rather than skip them or write over another row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_live_writes_a_clash_on_a_unique_column_stops_the_backfill_by_name() {
    let migration = Migration::new("unique-plain").await;
    let (report, _) = backfill_beside_moved_unique_values(&migration, false).await;
    let error = report.expect_err("the copy of key 0 clashes");
    assert!(
        matches!(error, MigrateError::Store { role: "target", .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("could not write record(s) 0, 1, 2"),
        "{message}"
    );
    assert!(message.contains("UNIQUE"), "{message}");
}
