//! Migrating history: backfill, verify and repair.
//!
//! Dual writes carry new traffic only; the records that existed before
//! dual writing began must be copied by a separate process, and the two
//! stores checked against each other before the new one serves reads.
//! These tasks work on any two [`RecordStore`](crate::records::RecordStore)s (see [`records`](crate::records)), and
//! beside the live service: they never overwrite newer dual-written data,
//! and they route every fix through the reconciliation queue, where it
//! takes its place in the key's line among the service's own writes.
//!
//! | task | what it does | safe beside live writes because |
//! |---|---|---|
//! | [`Backfill`] | copies the source's records to the target in key order, in batches, rate-limited, checkpointed | it writes only where the target has no record or an older one, and queues a key-level sync for every key that changed while it copied it (a delete racing the copy would otherwise bring a record back) |
//! | [`Verify`] | walks both stores side by side by key, one page of each in memory, and reports matching, different, missing-in-new and extra-in-new keys | a key that differs is re-checked after its queued work drains, and reported only if it still differs |
//! | [`Repair`] | turns differing keys into key-level sync entries that the worker applies | the worker applies a sync under the key's order guard, after the key's earlier queued writes |
//!
//! Every task returns a report that serialises to JSON, or a
//! [`MigrateError`] when it could not run (a store or the queue failed, a
//! checkpoint of another job): "differences found" is a report whose
//! [`is_clean`](VerifyReport::is_clean) is false, never an error.
//!
//! # Backfill, verify, repair
//!
//! ```no_run
//! # async fn demo(old_pool: sqlx::SqlitePool, new_pool: sqlx::SqlitePool,
//! #               queue: std::sync::Arc<dyn dualwrite_runtime::ReconciliationQueue>) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use dualwrite_runtime::migrate::{Backfill, BackfillOptions, Normalize, Repair, SyncQueue, Verify, VerifyOptions};
//! use dualwrite_runtime::records::{RecordStore, SqliteTable};
//!
//! let old: Arc<dyn RecordStore> = Arc::new(SqliteTable::new(old_pool, "accounts", "id"));
//! let new: Arc<dyn RecordStore> = Arc::new(SqliteTable::new(new_pool, "accounts", "id").version_column("updated_at"));
//! // The service's wrapper is built with `.sync_records("accounts", ..)` on the same tables.
//! let link = SyncQueue::new(queue, "Accounts", "accounts");
//!
//! let copied = Backfill::new(old.clone(), new.clone(), BackfillOptions {
//!     checkpoint: Some("backfill-accounts.json".into()),
//!     max_records_per_second: Some(5_000.0),
//!     ..BackfillOptions::default()
//! })
//! .live_writes(link.clone())
//! .progress(|p: &dualwrite_runtime::migrate::Progress| eprintln!("{} copied, {:.0}/s, eta {:?}", p.done, p.per_second, p.eta))
//! .run()
//! .await?;
//!
//! let report = Verify::new(old.clone(), new.clone(), VerifyOptions::default())
//!     .live_writes(link.clone())
//!     .normalizer(Normalize::new().timestamp_precision("updated_at", 3))
//!     .keys_to(std::fs::File::create("differences.jsonl")?)
//!     .run()
//!     .await?;
//! if !report.is_clean() {
//!     Repair::through_queue(link).run(report.sample.iter().map(|d| d.key.clone())).await?;
//!     // or every key: `read_differences(File::open("differences.jsonl")?)`
//! }
//! # let _ = copied; Ok(()) }
//! ```

mod backfill;
mod checkpoint;
mod normalize;
mod progress;
mod queue_link;
mod repair;
mod verify;

pub use backfill::{Backfill, BackfillOptions, BackfillReport};
pub use normalize::{Normalize, Normalizer};
pub use progress::{Progress, ProgressObserver};
pub use queue_link::SyncQueue;
pub use repair::{Repair, RepairReport};
pub use verify::{
    read_differences, Difference, DifferenceKind, Verify, VerifyOptions, VerifyReport,
};

use std::path::PathBuf;

use crate::queue::QueueError;
use crate::records::{RecordError, RecordKey};

/// Why a migration task could not run (as opposed to a report of the
/// differences it found). Its message names the store, file or setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// A record store failed, or is set up wrongly (a missing table or
    /// column).
    #[error("the {role} store failed: {source}")]
    Store {
        /// `source`, `target`, `old` or `new`.
        role: &'static str,
        /// The store's error.
        #[source]
        source: RecordError,
    },
    /// The reconciliation queue failed.
    #[error("the reconciliation queue failed: {0}")]
    Queue(#[from] QueueError),
    /// The checkpoint file cannot be used.
    #[error("checkpoint file {}: {message}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The keys could not be written to (or read from) the file given.
    #[error("the differing keys could not be {what}: {source}")]
    Keys {
        /// `written` or `read`.
        what: &'static str,
        /// The I/O or JSON error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A store listed its records out of key order, so two stores cannot
    /// be walked side by side.
    #[error("the {role} store ({store}) listed key {after} after key {before}: its order disagrees with the record key order (integers, then text byte by byte; for text keys on PostgreSQL, a `COLLATE \"C\"` order)")]
    OutOfOrder {
        /// `source`, `target`, `old` or `new`.
        role: &'static str,
        /// What the store calls itself.
        store: String,
        /// The earlier key.
        before: RecordKey,
        /// The key that came after it but sorts before it.
        after: RecordKey,
    },
    /// A setting is invalid.
    #[error("invalid setting `{setting}`: {message}")]
    Invalid {
        /// The setting.
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl MigrateError {
    pub(crate) fn store(role: &'static str) -> impl FnOnce(RecordError) -> MigrateError {
        move |source| MigrateError::Store { role, source }
    }
}

/// Checks that `page` is in ascending key order and starts after `after`.
pub(crate) fn check_order(
    role: &'static str,
    store: &dyn crate::records::RecordStore,
    after: Option<&RecordKey>,
    page: &[crate::records::Record],
) -> Result<(), MigrateError> {
    let mut previous = after;
    for record in page {
        if let Some(before) = previous {
            if record.key <= *before {
                return Err(MigrateError::OutOfOrder {
                    role,
                    store: store.describe(),
                    before: before.clone(),
                    after: record.key.clone(),
                });
            }
        }
        previous = Some(&record.key);
    }
    Ok(())
}

fn positive_batch(batch_size: usize) -> Result<(), MigrateError> {
    if batch_size == 0 {
        return Err(MigrateError::Invalid {
            setting: "batch_size",
            message: "must be at least 1".to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Record, SqliteTable};

    #[tokio::test]
    async fn a_page_out_of_key_order_is_refused_naming_both_keys() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        let store = SqliteTable::new(pool, "accounts", "id");
        let page = [Record::new(3), Record::new("a"), Record::new(2)];
        let error = check_order("old", &store, None, &page).unwrap_err();
        assert_eq!(
            error.to_string().split(':').next(),
            Some("the old store (sqlite table `accounts`) listed key 2 after key a")
        );
        let error = check_order("new", &store, Some(&RecordKey::Int(3)), &page[..1]).unwrap_err();
        assert!(
            error.to_string().contains("listed key 3 after key 3"),
            "{error}"
        );
        assert!(check_order("new", &store, Some(&RecordKey::Int(2)), &page[..2]).is_ok());
    }
}
