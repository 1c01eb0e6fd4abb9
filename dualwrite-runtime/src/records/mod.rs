//! The record-level interface: how a store takes part in backfill, verify,
//! repair and key-level sync.
//!
//! The `#[dual_write]` trait speaks in the service's own calls
//! (`put_balance`, `cancel_order`). The migration tools need four plainer
//! ones, which [`RecordStore`] names:
//!
//! | call | used by |
//! |---|---|
//! | [`page`](RecordStore::page): records after a key, in key order | backfill (the source), verify (both sides) |
//! | [`get`](RecordStore::get): one record by key | verify's re-check, key-level sync (the authoritative side) |
//! | [`put`](RecordStore::put): write records, unconditionally or only where absent or newer | backfill (the target), key-level sync (the follower) |
//! | [`delete`](RecordStore::delete): remove one record | key-level sync (the follower) |
//!
//! A record is a [`RecordKey`] and named [`Value`]s ([`Record`]); both
//! stores name their columns the same way (a per-side query renames them).
//!
//! # SQL tables
//!
//! [`SqliteTable`] implements the interface for a table (or a query) of a
//! SQLite database: name the table and its key column, and optionally the
//! columns, a version column, and a query to read through. The statements
//! are built by dialect, so server databases take the same code.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::SqlitePool) {
//! use dualwrite_runtime::records::SqliteTable;
//! let accounts = SqliteTable::new(pool, "accounts", "id").version_column("updated_at");
//! # let _ = accounts; }
//! ```
//!
//! # What "newer" means
//!
//! [`PutCondition::IfAbsentOrNewer`] writes a record only where the store
//! has none with its key, or has one with an older version. The version is
//! a column both stores keep (an `updated_at` timestamp in a format that
//! sorts, a counter the service increments), compared in the store itself,
//! in the same statement as the write, so no live write slips in between.
//! A store without a version column writes only where absent: backfill
//! then never touches a record that dual writing already put there, and
//! catches the records that changed during its copy by re-reading them
//! (see [`migrate`](crate::migrate)).
//!
//! # Implementing it for your own store
//!
//! A few lines per call over sqlx (or any client). The version comparison
//! belongs in the write statement:
//!
//! ```ignore
//! use dualwrite_runtime::records::{PutCondition, Record, RecordError, RecordKey, RecordStore};
//!
//! struct Accounts(sqlx::PgPool);
//!
//! fn account(row: (i64, String, i64)) -> Record {
//!     Record::new(row.0).with("email", row.1).with("updated_at", row.2)
//! }
//! fn failed(what: &str) -> impl FnOnce(sqlx::Error) -> RecordError + '_ {
//!     move |error| RecordError::new(format!("accounts: {what}"), error)
//! }
//!
//! #[async_trait::async_trait]
//! impl RecordStore for Accounts {
//!     async fn page(&self, after: Option<&RecordKey>, limit: usize) -> Result<Vec<Record>, RecordError> {
//!         let after = match after { Some(RecordKey::Int(id)) => *id, _ => i64::MIN };
//!         let rows: Vec<(i64, String, i64)> = sqlx::query_as(
//!             "SELECT id, email, updated_at FROM accounts WHERE id > $1 ORDER BY id LIMIT $2")
//!             .bind(after).bind(limit as i64).fetch_all(&self.0).await.map_err(failed("page"))?;
//!         Ok(rows.into_iter().map(account).collect())
//!     }
//!     async fn get(&self, key: &RecordKey) -> Result<Option<Record>, RecordError> { /* one SELECT */ }
//!     async fn put(&self, records: &[Record], condition: PutCondition) -> Result<u64, RecordError> {
//!         // INSERT .. ON CONFLICT (id) DO UPDATE SET .. WHERE accounts.updated_at < excluded.updated_at
//!         // (no WHERE for PutCondition::Always); return the rows written.
//!     }
//!     async fn delete(&self, key: &RecordKey) -> Result<bool, RecordError> { /* one DELETE */ }
//! }
//! ```
//!
//! # Key-level sync
//!
//! A *sync entry* on the reconciliation queue says "make the follower's
//! record of this key what the authoritative store holds now". The worker
//! applies it ([`sync_key`]) under the key's order guard, once every entry
//! queued before it for the key is applied: it reads the key from the
//! store that was authoritative when the entry was queued and writes it to
//! the entry's target (or deletes it there when the authoritative store has
//! none). Because the sync reads the current record instead of replaying a
//! call, the order in which writers reached the stores stops mattering.
//! Repair queues sync entries; the cross-instance mode can too. A wrapper
//! learns which record stores apply them from
//! [`Builder::sync_records`](crate::Builder::sync_records).

mod error;
mod record;
mod sql;
mod sync;

pub use error::RecordError;
pub use record::{Record, RecordKey, Value};
#[cfg(feature = "sqlite")]
pub use sql::SqliteTable;
pub use sql::TableSpec;
pub use sync::{sync_entry, sync_key, RecordPair, SyncOutcome, SYNC_METHOD};
pub(crate) use sync::{RecordSyncs, SyncRequest};

use async_trait::async_trait;

/// Which records [`RecordStore::put`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutCondition {
    /// Only where the store has no record with the key, or has one with an
    /// older version (see the [module docs](self) on "newer"). Backfill
    /// writes this way.
    IfAbsentOrNewer,
    /// Every record, replacing what is there. Key-level sync writes this
    /// way: the authoritative store's record is the truth.
    Always,
}

/// A store as the migration tools see it: records in key order. See the
/// [module docs](self) for what each call is for and how to implement it.
#[async_trait]
pub trait RecordStore: Send + Sync + 'static {
    /// What to call the store in progress lines and errors ("sqlite table
    /// accounts"), and what a checkpoint is tied to.
    fn describe(&self) -> String {
        std::any::type_name::<Self>().to_owned()
    }

    /// Up to `limit` records whose keys are greater than `after` (every
    /// record when `None`), in ascending [`RecordKey`] order.
    async fn page(
        &self,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Record>, RecordError>;

    /// The record with this key, if there is one.
    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, RecordError>;

    /// Writes `records` under `condition`, and returns how many it wrote
    /// (records skipped because the store holds the same or a newer version
    /// are not counted). Writing a batch in one transaction is what makes a
    /// backfill fast.
    async fn put(&self, records: &[Record], condition: PutCondition) -> Result<u64, RecordError>;

    /// Deletes the record with this key; whether there was one.
    async fn delete(&self, key: &RecordKey) -> Result<bool, RecordError>;

    /// How many records the store holds, if it can tell cheaply (for the
    /// progress line's ETA). Default: unknown.
    async fn count(&self) -> Result<Option<u64>, RecordError> {
        Ok(None)
    }
}

#[async_trait]
impl<T: RecordStore + ?Sized> RecordStore for std::sync::Arc<T> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    async fn page(
        &self,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Record>, RecordError> {
        (**self).page(after, limit).await
    }
    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, RecordError> {
        (**self).get(key).await
    }
    async fn put(&self, records: &[Record], condition: PutCondition) -> Result<u64, RecordError> {
        (**self).put(records, condition).await
    }
    async fn delete(&self, key: &RecordKey) -> Result<bool, RecordError> {
        (**self).delete(key).await
    }
    async fn count(&self) -> Result<Option<u64>, RecordError> {
        (**self).count().await
    }
}
