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
//! [`SqlTable`] implements the interface for a table (or a query) of a SQL
//! database on a sqlx pool: name the table and its key column, and
//! optionally the columns, a version column, and a query to read through.
//! The statements are built by dialect: `SqliteTable` (feature `sqlite`, on
//! by default), `PgTable` (feature `postgres`) and `MySqlTable` (feature
//! `mysql`, also for MariaDB) take the same code. A sqlx table in a few
//! lines, on each:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use dualwrite_runtime::records::{SqliteTable, TableSpec};
//!
//! // SQLite: the table as it is, every column but the key a field.
//! let pool = sqlx::SqlitePool::connect("sqlite:orders.db").await?;
//! let old = SqliteTable::new(pool, "orders", "id");
//! old.check().await?; // names a missing table or column before any work
//!
//! // PostgreSQL: newer by a version column both stores keep.
//! # #[cfg(feature = "postgres")] {
//! let pool = sqlx::PgPool::connect("postgres://app@db/orders").await?;
//! let new = dualwrite_runtime::records::PgTable::new(pool, "orders", "id")
//!     .version_column("updated_at");
//! # let _ = new; }
//!
//! // MariaDB or MySQL: a source whose columns were named otherwise, read
//! // through a query that gives them the other side's names.
//! # #[cfg(feature = "mysql")] {
//! let pool = sqlx::MySqlPool::connect("mysql://app@db/orders").await?;
//! let spec = TableSpec::query(
//!     "SELECT order_id AS id, customer_name AS customer, total_cents AS amount_cents FROM orders_v2",
//!     "id",
//! );
//! let legacy = dualwrite_runtime::records::MySqlTable::with_spec(pool, spec);
//! # let _ = legacy; }
//! # Ok(()) }
//! ```
//!
//! A query only reads. A side that is written to (the backfill's target,
//! the follower of key-level syncs) through a query needs
//! [`TableSpec::writes_to`] and a table whose columns carry the query's
//! names; when the new schema renames or re-encodes them, implement the
//! interface by hand, as below (the `orders` example does it for its
//! `orders_v2` table, whose status is a number where the old one is a name).
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
//! A few lines per call over sqlx (or any client); here a SQLite table,
//! newer by an `updated_at` counter. The version comparison belongs in the
//! write statement, so that no live write slips in between:
//!
//! ```no_run
//! use dualwrite_runtime::records::{PutCondition, Record, RecordError, RecordKey, RecordStore, Value};
//!
//! struct Accounts(sqlx::SqlitePool);
//!
//! fn account((id, email, updated_at): (i64, String, i64)) -> Record {
//!     Record::new(id).with("email", email).with("updated_at", updated_at)
//! }
//! fn failed(what: &'static str) -> impl FnOnce(sqlx::Error) -> RecordError {
//!     move |error| RecordError::new(format!("accounts: could not {what}"), error)
//! }
//! fn id(key: &RecordKey) -> Result<i64, RecordError> {
//!     match key {
//!         RecordKey::Int(id) => Ok(*id),
//!         other => Err(RecordError::message("accounts", format!("key {other} is not an id"))),
//!     }
//! }
//!
//! #[async_trait::async_trait]
//! impl RecordStore for Accounts {
//!     async fn page(&self, after: Option<&RecordKey>, limit: usize) -> Result<Vec<Record>, RecordError> {
//!         let after = after.map(id).transpose()?.unwrap_or(i64::MIN);
//!         let rows = sqlx::query_as("SELECT id, email, updated_at FROM accounts WHERE id > ? ORDER BY id LIMIT ?")
//!             .bind(after).bind(limit as i64)
//!             .fetch_all(&self.0).await.map_err(failed("read a page"))?;
//!         Ok(rows.into_iter().map(account).collect())
//!     }
//!
//!     async fn get(&self, key: &RecordKey) -> Result<Option<Record>, RecordError> {
//!         let row = sqlx::query_as("SELECT id, email, updated_at FROM accounts WHERE id = ?")
//!             .bind(id(key)?)
//!             .fetch_optional(&self.0).await.map_err(failed("read a record"))?;
//!         Ok(row.map(account))
//!     }
//!
//!     async fn put(&self, records: &[Record], condition: PutCondition) -> Result<u64, RecordError> {
//!         let only_newer = match condition {
//!             PutCondition::IfAbsentOrNewer => "WHERE accounts.updated_at < excluded.updated_at",
//!             PutCondition::Always => "",
//!         };
//!         let sql = format!(
//!             "INSERT INTO accounts (id, email, updated_at) VALUES (?, ?, ?) ON CONFLICT (id) \
//!              DO UPDATE SET email = excluded.email, updated_at = excluded.updated_at {only_newer}"
//!         );
//!         let mut transaction = self.0.begin().await.map_err(failed("begin"))?;
//!         let mut written = 0;
//!         for record in records {
//!             let updated_at = match record.get("updated_at") { Some(Value::Int(at)) => Some(*at), _ => None };
//!             written += sqlx::query(&sql)
//!                 .bind(id(&record.key)?)
//!                 .bind(record.get("email").and_then(Value::as_text))
//!                 .bind(updated_at)
//!                 .execute(&mut *transaction).await.map_err(failed("write a record"))?
//!                 .rows_affected();
//!         }
//!         transaction.commit().await.map_err(failed("commit"))?;
//!         Ok(written)
//!     }
//!
//!     async fn delete(&self, key: &RecordKey) -> Result<bool, RecordError> {
//!         let done = sqlx::query("DELETE FROM accounts WHERE id = ?")
//!             .bind(id(key)?)
//!             .execute(&self.0).await.map_err(failed("delete a record"))?;
//!         Ok(done.rows_affected() > 0)
//!     }
//! }
//! ```
//!
//! On PostgreSQL (`sqlx::PgPool`) and MariaDB or MySQL (`sqlx::MySqlPool`)
//! the same functions change only their statements:
//!
//! | | PostgreSQL | MariaDB / MySQL |
//! |---|---|---|
//! | placeholders | `$1, $2, ..` | `?` as in SQLite |
//! | `page` | `WHERE id > $1 ORDER BY id LIMIT $2` | as in SQLite |
//! | `put`, newer only | `ON CONFLICT (id) DO UPDATE SET email = excluded.email, updated_at = excluded.updated_at WHERE accounts.updated_at < excluded.updated_at` | `ON DUPLICATE KEY UPDATE email = IF(updated_at < VALUES(updated_at), VALUES(email), email), updated_at = GREATEST(updated_at, VALUES(updated_at))` (the version column last, so the other columns compare against the old version) |
//! | `put`, absent only | `ON CONFLICT (id) DO NOTHING` | `INSERT IGNORE` |
//! | rows written | `rows_affected()` | `rows_affected()` of one row is 1 for an insert, 2 for an update, 0 when nothing changed: written when above 0 |
//!
//! A text key on PostgreSQL pages in byte order with `ORDER BY id COLLATE
//! "C"`, the order the record key sorts in.
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
//! call, the order in which writers reached the stores stops mattering. A
//! sync whose target is the authoritative store of the current stage (the
//! stage was forced past the guardrail while it waited) is dead-lettered,
//! never applied.
//! Repair queues sync entries; the cross-instance mode can too. A wrapper
//! learns which record stores apply them from
//! [`Builder::sync_records`](crate::Builder::sync_records).

mod error;
mod key_sync;
mod record;
mod sql;
mod sync;

pub use error::RecordError;
pub use key_sync::KeySync;
pub use record::{Record, RecordKey, Value};
#[cfg(feature = "mysql")]
pub use sql::MySqlTable;
#[cfg(feature = "postgres")]
pub use sql::PgTable;
#[cfg(feature = "sqlite")]
pub use sql::SqliteTable;
pub use sql::{SqlDatabase, SqlTable, TableSpec};
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
