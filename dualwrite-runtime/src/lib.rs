//! Zero-downtime data migrations by dual writes, made safe and boring.
//!
//! Put `#[dual_write]` on the repository trait your service already uses.
//! The attribute generates `impl Trait for DualWrite<Old, New>`: every write
//! goes to the authoritative store and then to the follower, every read goes
//! to the serving store, as the current [`Stage`] says. A write the follower
//! misses (error, timeout, panic) is queued and a [`Worker`] applies it
//! later, in per-key order, with backoff and dead letters. At cutover you
//! delete the attribute and use the new store directly; nothing else changes.
//!
//! # Quick start
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::sync::Mutex;
//! use dualwrite_runtime::{dual_write, DualWrite, InMemoryQueue, Stage};
//!
//! #[dual_write]
//! pub trait Accounts: Send + Sync {
//!     #[dual_write(write, key = id)]
//!     async fn put_balance(&self, id: u64, cents: i64) -> Result<(), String>;
//!
//!     #[dual_write(read)]
//!     async fn balance(&self, id: u64) -> Result<Option<i64>, String>;
//! }
//!
//! #[derive(Default)]
//! struct MapStore(Mutex<BTreeMap<u64, i64>>);
//!
//! impl Accounts for MapStore {
//!     async fn put_balance(&self, id: u64, cents: i64) -> Result<(), String> {
//!         self.0.lock().unwrap().insert(id, cents);
//!         Ok(())
//!     }
//!     async fn balance(&self, id: u64) -> Result<Option<i64>, String> {
//!         Ok(self.0.lock().unwrap().get(&id).copied())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let accounts = DualWrite::builder(MapStore::default(), MapStore::default())
//!     .queue(InMemoryQueue::new())
//!     .stage(Stage::DualWrite)
//!     .build()?;
//! let worker = accounts.worker::<AccountsOp>();
//!
//! accounts.put_balance(7, 1_500).await?;             // old store, then new
//! assert_eq!(accounts.balance(7).await?, Some(1_500)); // served by the old store
//! worker.drain().await;                                // nothing was queued
//! assert_eq!(accounts.new_store().balance(7).await?, Some(1_500));
//! # Ok(()) }
//! ```
//!
//! # The attribute
//!
//! `#[dual_write]` goes on a trait. Its methods may be native `async fn`,
//! `fn .. -> impl Future<Output = _> + Send`, `async fn` under
//! `#[async_trait]` (written *below* `#[dual_write]`), or plain blocking
//! `fn`. Generics, lifetimes, where clauses, associated types and consts,
//! default methods and `#[cfg]` on methods are carried through. For the
//! trait `Repo` it generates:
//!
//! - `impl Repo for DualWrite<Old, New> where Old: Repo, New: Repo` (with
//!   `New`'s associated types equal to `Old`'s);
//! - `enum RepoOp`, one variant per write method holding owned copies of its
//!   arguments, serialisable with serde, implementing [`Operation`] and
//!   [`Replay`] for every implementation of `Repo`;
//! - `impl HasOperations<RepoOp> for DualWrite<Old, New>` ([`HasOperations`]),
//!   so that `repo.spawn_worker()` knows which enum to replay.
//!
//! That last impl makes rustc treat the trait as reachable from other crates
//! even when it is `pub` inside a private module, so for a `pub` trait with
//! native `async fn`s the attribute allows the `async_fn_in_trait` lint,
//! which would otherwise appear where it did not before. If you publish the
//! trait for other crates, its advice (callers cannot require the futures to
//! be `Send`) still applies.
//!
//! Options on the trait, all optional:
//!
//! | option | meaning |
//! |---|---|
//! | `namespace = "orders"` | the name queue entries are filed under (default: the trait's name) |
//! | `version = 2` | the operation encoding version (default 1); bump it when a write method's arguments change, and entries of other versions are dead-lettered rather than misread |
//! | `op = OrderOps` | the name of the generated enum (default: the trait's name + `Op`) |
//! | `crate = path` | where to find this crate, if it is neither a direct dependency nor re-exported under its own name |
//! | `fail_closed` | every write method is `fail_closed` (below) |
//!
//! Options on a method, written `#[dual_write(...)]`:
//!
//! | option | meaning |
//! |---|---|
//! | `write` | a write: authoritative store, then follower |
//! | `read` | a read: served by the serving store, compared in `Shadow` and `Live` |
//! | `skip` | neither: forwarded to the serving store as is |
//! | `key = <expr>` | the ordering key, an expression over the arguments whose value is [`Display`](std::fmt::Display) (`key = id`, `key = order.id`, `key = format!("{tenant}/{id}")`) |
//! | `compare = <path>` | for reads: `fn(&T, &T) -> bool` deciding whether two results agree (default: `PartialEq`) |
//! | `normalize = <path>` | for reads: `fn(&T) -> U` (`U: PartialEq`), compare what it makes of each value (e.g. to ignore timestamp precision); not with `compare` |
//! | `compare_errors = <path>` | for reads returning `Result<T, E>`: `fn(&E, &E) -> bool` deciding whether two errors agree (default: `PartialEq`, else `Display` text, else `Debug` text; see [Reads](#reads)) |
//! | `detached` | for reads: compare after the caller has its result, in a task of its own (see [`read`]) |
//! | `delivery = sync` / `delivery = journaled` | for writes: this method's [`Delivery`], whatever the wrapper's default |
//! | `fail_closed` | for writes: when the queue refuses the operation, return [`QueueRefused`] converted with `From` into the method's error type, instead of the authoritative result (with journaled delivery, before either store is written) |
//! | `report_values` | for reads: put both stores' results (`{:?}`, so the output must be `Debug`) in mismatch reports, and for a read without `key` its arguments too; off by default, so values never reach logs unasked |
//! | `idempotent = false` | for writes: a replay could apply it twice unless the store skips repeats by [`operation_id()`]; the worker dead-letters, never applies, a queued entry of it that carries no id (see below) |
//! | `follower = <path>` | for writes: the follower gets the operation `fn(&args.., &T) -> <Trait>Op` builds from the arguments and the authoritative `Ok(T)`, not the call (see below); always delivered in the request, and not with `delivery = journaled` |
//!
//! A method without `read`, `write` or `skip` is classified by the words of
//! its name. A read verb (`get`, `find`, `list`, `fetch`, `load`, `search`,
//! `count`, `exists`, `is`, `has`, `check`, `stats`, ...) or a write verb
//! (`create`, `insert`, `add`, `save`, `put`, `set`, `update`, `upsert`,
//! `delete`, `remove`, `mark`, `record`, `increment`, `revoke`, ...) decides
//! wherever it stands when its meaning is clear (`username_exists` reads);
//! words that are as often nouns (`record`, `count`, `read`, `list`, `set`)
//! decide only as the first word or when no other verb does (`mark_read`
//! writes, `get_record` and `user_count` read). A name with no verb, or
//! pulled both ways (`get_or_create`, `record_fetch`), is a compile error
//! that names the words and asks you to say which. Default methods without
//! an option keep their default body (which calls the wrapper's other
//! methods).
//!
//! Write methods must return `Result<_, _>` whose error implements
//! [`Display`](std::fmt::Display); their by-value arguments must be
//! `Clone`, and all their arguments serde-serialisable, because the
//! operation may be queued. A write without `key` (a `delete_all()`) is
//! ordered against every write of the trait: it waits for every key's
//! queued work, and every later write of any key waits for it.
//!
//! The operation keeps each argument in an owned form and lends it back to
//! the store as the method declares it:
//!
//! | argument | kept as |
//! |---|---|
//! | `T` | `T` (cloned) |
//! | `&str`, `&[T]`, `&T` | `String`, `Vec<T>`, `T` |
//! | `Option<&str>`, `Option<&[T]>`, `Option<&T>` | `Option<String>`, `Option<Vec<T>>`, `Option<T>` |
//! | `Cow<'_, str>`, `Cow<'_, [T]>` | `String`, `Vec<T>` |
//! | `&X`, `Option<&X>` or `X` where `X` borrows (`&Register<'_>`, `&[&str]`, `Register<'_>`) | a [`Payload`]: its JSON value; replay deserialises `X` borrowing from it (so `X` derives `Serialize` and `Deserialize`, with `#[serde(borrow)]` on `Cow` fields) |
//! | `Self::Id`, an associated type of the trait | the enum's type parameter `Id` (`RepoOp<T, Id>`) |
//!
//! Methods may have their own lifetime parameters
//! (`fn create<'o>(&self, by: Option<&'o str>)`). A trait with a supertrait
//! (`trait Db: Send + Sync + CloneDb`) is implemented for
//! `DualWrite<Old, New>` where `Old` and `New` are `'static`, so blanket
//! impls that ask `'static` cover the wrapper.
//!
//! A trait's lifetime parameters are replayed at `'static` (queued
//! operations own their data), so stores implement `impl<'a> Repo<'a>`.
//! `unsafe fn` write methods are refused: a replay could not uphold their
//! contract.
//!
//! Read methods are compared in `Shadow` and `Live`, so the value a read
//! returns (`T` of `Result<T, E>`, else the whole output) must be
//! `PartialEq` unless the method gives `compare` or `normalize`, and its
//! by-value arguments must be `Clone` (they go to both stores). For types
//! named through the trait's parameters or associated types these become
//! bounds of the generated impl; for other types, a compile error on the
//! type. Mark a method `skip` to forward it without comparison.
//!
//! Once the attribute is removed from the trait, method-level
//! `#[dual_write(..)]` attributes left behind are inert, so cutover is one
//! deleted line.
//!
//! # Stages
//!
//! See [`stage`] for the table. Change the stage at run time with
//! [`DualWrite::stage`]; the next call obeys it. Share one stage between
//! every instance of a service with a [`StageSource`](stage::StageSource)
//! (the SQLite one is a table in the queue's file). Guardrails refuse to
//! make a store authoritative while it has queued work, and to let the new
//! store serve reads while recent comparisons disagree too often;
//! [`StageHandle::force`] overrides them with a reason.
//!
//! The `dualwrite` command-line tool (crate `dualwrite-cli`) shows and
//! moves the shared stage, the queue and its dead letters from a shell; the
//! operator's runbook (`docs/runbook.md` in the repository) says what to
//! watch at each stage, when to roll back and how to drain before a
//! cutover, on the Grafana dashboard in `docs/grafana/dualwrite.json`.
//!
//! # Reads
//!
//! In `Shadow` and `Live` every read (or a sampled fraction) goes to both
//! stores; the caller gets the serving store's result, at most the
//! [compare timeout](Builder::compare_timeout) later than that store
//! answered, and the other result is compared with it. Mismatches go to
//! metrics and [observers](observe) with the call's key; a read without
//! `key` is identified by a stable hash of its arguments instead
//! ([`ComparisonReport::arguments_hash`](observe::ComparisonReport::arguments_hash)),
//! and with `report_values` by the arguments themselves.
//!
//! When both stores answer `Err`, the errors are compared: equal errors
//! (both "not found") are agreement ([`ComparisonOutcome::BothErrored`]),
//! neither reported to observers nor logged as a disagreement; errors that
//! differ are a disagreement ([`ComparisonOutcome::ErrorMismatch`]). The
//! method's `compare_errors = path` decides, else `PartialEq` when the
//! error type has it, else the errors' `Display` text, else their `Debug`
//! text; an error type with none of these cannot be told apart, and its
//! errors count as equal. A `detached` read keeps a copy of the serving
//! error when its type is `Clone`, else its text (so `compare_errors` on a
//! `detached` read needs a `Clone` error).
//!
//! ```
//! use std::future::Future;
//! use dualwrite_runtime::dual_write;
//!
//! #[derive(Debug, Clone, PartialEq, thiserror::Error)]
//! pub enum DbError {
//!     #[error("not found")]
//!     NotFound,
//!     #[error("connection: {0}")]
//!     Connection(String),
//! }
//!
//! /// The two databases word connection errors differently; only the kind
//! /// of error matters.
//! fn same_kind(a: &DbError, b: &DbError) -> bool {
//!     std::mem::discriminant(a) == std::mem::discriminant(b)
//! }
//!
//! #[dual_write]
//! pub trait Accounts: Send + Sync {
//!     #[dual_write(read, key = id, compare_errors = same_kind)]
//!     fn balance(&self, id: u64) -> impl Future<Output = Result<i64, DbError>> + Send;
//!
//!     /// No `key`: a mismatch is reported with the hash of `(owner, limit)`,
//!     /// and with `report_values` with the arguments as JSON, `["ada",10]`.
//!     #[dual_write(read, report_values)]
//!     fn recent(&self, owner: &str, limit: u32)
//!         -> impl Future<Output = Result<Vec<u64>, DbError>> + Send;
//! }
//! ```
//!
//! A
//! [`Rollout`] moves a sticky share of keys' reads one stage ahead. See
//! [`read`] for how each method form runs, and [`observe`] for the metric
//! names and the tracing spans.
//!
//! # Failure handling
//!
//! - The authoritative store fails: the caller gets its error; the follower
//!   is not called and nothing is queued.
//! - The follower fails, times out or panics: the caller gets the
//!   authoritative result; the operation is queued and a warning logged.
//! - The key already has queued work for the follower: the write is queued
//!   behind it, so the follower sees the key's writes in order.
//! - The queue refuses an operation: the caller still gets the authoritative
//!   result; an error is logged with the key and
//!   [`DualWrite::drift_count`] grows (fail-open). A `fail_closed` method
//!   returns the refusal as its error instead.
//! - A replay fails: the worker retries it with backoff until the
//!   [`RetryPolicy`] budget is spent, then dead-letters it. A store that
//!   knows the failure is permanent (a validation error, an HTTP `422`)
//!   calls [`reject_permanently`] before returning it, and the worker
//!   dead-letters the operation on that attempt instead.
//!
//! # Delivery
//!
//! - [`Delivery::Sync`] (default): the follower is called in the request,
//!   with the [follower timeout](Builder::follower_timeout); a
//!   [`CircuitBreaker`] stops calling a follower that keeps failing.
//! - [`Delivery::Journaled`]: the operation is written ahead to the queue
//!   before the authoritative write, confirmed after it (withdrawn if it
//!   failed) and applied by the [`Worker`]; callers never wait for the
//!   follower. A process killed between the two writes loses nothing: the
//!   worker finds the unconfirmed operation after
//!   [`orphan_after`](Builder::orphan_after) and applies it to both stores.
//!
//! The embedded durable queue is one SQLite file
//! ([`Builder::queue`] with a [`queue::SqliteQueue`]).
//!
//! Replays and retries deliver at least once: follower writes must be
//! idempotent (an upsert, a delete), as a timed-out write may have landed,
//! or skip repeats by their operation id (next section).
//!
//! # Writes that are not safe to replay
//!
//! An increment (`clicks += n`) replayed after a timeout that landed is
//! counted twice. Every write has an [`OperationId`], made once when it
//! begins and the same for the authoritative call, the follower call and
//! every replay by the worker (also after a restart: it is stored in the
//! queued payload, as an `"operation_id"` member beside the method and its
//! arguments, which older builds' payloads simply lack). A store reads it
//! with [`operation_id()`] inside its write method, so the trait does not
//! change. The *inbox pattern*: the store records the ids it applied in the
//! same transaction as the write and skips an id it has seen.
//!
//! ```ignore
//! #[dual_write(write, key = id, idempotent = false)]
//! async fn add_clicks(&self, id: u64, n: i64) -> Result<(), Error>;
//!
//! // In the store (PostgreSQL):
//! async fn add_clicks(&self, id: u64, n: i64) -> Result<(), Error> {
//!     let mut tx = self.pool.begin().await?;
//!     if let Some(op) = dualwrite_runtime::operation_id() {
//!         let fresh = sqlx::query("INSERT INTO applied_ops (id) VALUES ($1) ON CONFLICT DO NOTHING")
//!             .bind(op.to_string()).execute(&mut *tx).await?.rows_affected() == 1;
//!         if !fresh { return Ok(()); } // a replay of a write already applied
//!     }
//!     sqlx::query("UPDATE links SET clicks = clicks + $1 WHERE id = $2")
//!         .bind(n).bind(id as i64).execute(&mut *tx).await?;
//!     tx.commit().await?;
//!     Ok(())
//! }
//! ```
//!
//! Give both stores an inbox: orphaned and uncertain writes are applied to
//! the authoritative store again, with the same id. `idempotent = false`
//! makes the worker refuse an entry of the method that carries no id (one
//! queued by a build before ids): it is dead-lettered with an error saying
//! why, never applied. The id is a task-local: a store that hands the write
//! to a task it spawns must pass it along itself.
//!
//! # Values the authoritative store makes
//!
//! Replaying a call is wrong when the store generates part of the data: a
//! serial id (the new store numbers the row differently, and a later
//! `mark_read(id)` marks the wrong row), a UUID or a timestamp made inside
//! the store. Two ways out:
//!
//! - Generate the value before the call and pass it in (`create_user(&self,
//!   id: Uuid, created_at: Timestamp, ..)`): both stores get the same value
//!   and replays stay plain. Prefer it when you can change the call sites.
//! - Otherwise `#[dual_write(write, follower = path)]`: `path` builds the
//!   follower's operation from the arguments (by reference) and the
//!   authoritative `Ok` value, usually another write of the trait that takes
//!   the row as is. It is delivered like any write (called, or queued and
//!   replayed), under *its* method's key, so later writes keyed by the new id
//!   queue behind it.
//!
//! ```ignore
//! #[dual_write(write, follower = import_created)]
//! async fn create_message(&self, text: &str) -> Result<Message, Error>;
//! #[dual_write(write, key = message.id)]
//! async fn import_message(&self, message: &Message) -> Result<(), Error>;
//!
//! fn import_created(_text: &str, created: &Message) -> InboxOp {
//!     InboxOp::ImportMessage { message: created.clone() }
//! }
//! ```
//!
//! Such a write is always delivered in the request (the write-ahead of
//! journaled delivery happens before the result exists, and an orphan replay
//! would call the store again and make a second row), so `follower` with
//! `delivery = journaled` is a compile error, and the wrapper's journaled
//! default does not apply to it. If its caller goes away while the
//! authoritative store runs it, whether the row was made is unknown and the
//! follower's operation cannot be built: the queued call is dead-lettered
//! with that explanation (an operator checks the old store), never replayed.
//! A write of the new id that reaches the follower before the import (a
//! reader saw the row in the old store first) fails there and is retried.
//!
//! # Shutdown and cancellation
//!
//! A write whose caller goes away (its future dropped) at any await point
//! still leaves the stores convergent: what the authoritative store may
//! have taken is queued for the follower, and when it is unknown whether
//! the authoritative store took it (the caller left during that call, or
//! the store panicked) the worker applies it there again before any later
//! write of the key goes ahead. On shutdown, after the service stopped
//! taking requests:
//!
//! ```ignore
//! repo.shutdown().await?;   // writes in progress finish; the queue is flushed
//! handle.shutdown().await?; // the worker (from `worker.handle()`) stops
//! ```
//!
//! # Migrating history
//!
//! Dual writes carry new traffic only. The records that existed before
//! dual writing began are copied by a [backfill](migrate::Backfill), the
//! stores compared by a [verify](migrate::Verify), and the differences
//! fixed by a [repair](migrate::Repair), all beside the running service.
//! They see each store through the record-level interface,
//! [`RecordStore`](records::RecordStore) (records in key order page by
//! page, one by key, written if absent or newer, deleted), which
//! [`SqliteTable`](records::SqliteTable) implements for a SQLite table or
//! query and a user implements for any other store in a few lines.
//!
//! 1. Build the wrapper with
//!    [`sync_records(name, old, new)`](Builder::sync_records): the record
//!    stores of the same data, through which its worker applies *key-level
//!    sync* entries (read the key from the authoritative store, write or
//!    delete it in the follower, under the key's order guard).
//! 2. In `DualWrite`, backfill with
//!    [`live_writes`](migrate::Backfill::live_writes) pointing at the
//!    service's queue: records dual writing already put in the new store
//!    are never overwritten by older copies, and keys that change while
//!    copied are queued for a sync.
//! 3. Verify, with a [normaliser](migrate::Normalize) for representation
//!    differences; a key that differs is re-checked after its queued work
//!    drains before it is reported.
//! 4. Repair the keys it reports (sync entries on the queue), verify again,
//!    and move on to `Shadow`.
//!
//! See [`migrate`] for the options, the reports (JSON with serde) and the
//! errors, and [`records`] for implementing the interface.
//!
//! # Keys in logs
//!
//! Keys are made from arguments, so logs, errors and the default observer
//! show a key by its stable [fingerprint](Key::fingerprint) unless the
//! wrapper is built with [`log_keys(true)`](Builder::log_keys).
//!
//! # Blocking traits
//!
//! Methods that are plain `fn` run the whole write path on the calling
//! thread. Call them from threads that are not async runtime workers (for
//! example inside `tokio::task::spawn_blocking`), and run the worker on a
//! multi-threaded runtime. The follower timeout cannot interrupt a blocking
//! call; panics are still caught.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

// Lets generated code name `::dualwrite_runtime` inside this crate's own tests.
extern crate self as dualwrite_runtime;

mod config;
#[cfg(feature = "testing")]
pub mod fault_proxy;
mod guarded;
pub mod migrate;
pub mod observe;
mod op;
mod operation_id;
mod order;
pub mod queue;
pub mod read;
pub mod records;
mod rejection;
mod rollout;
pub mod stage;
mod vocabulary;
mod worker;
mod wrapper;

#[doc(hidden)]
pub mod __private;

pub use config::BuildError;
pub use dualwrite_macros::dual_write;
pub use observe::Observer;
pub use op::ShownKey;
pub use op::{HasOperations, Key, Operation, Payload, Replay};
pub use operation_id::{operation_id, OperationId, ParseOperationIdError};
pub use queue::{InMemoryQueue, QueueAdmin, QueueError, QueueStats, ReconciliationQueue};
pub use read::{ComparisonOutcome, Rollout};
pub use records::KeySync;
pub use rejection::reject_permanently;
pub use stage::{MismatchGuard, Side, Stage, StageChange, StageError, StageHandle};
pub use worker::{
    RetryPolicy, Worker, WorkerHandle, WorkerReport, WorkerShutdownError, WorkerStop,
};
pub use wrapper::{Builder, CircuitBreaker, Delivery, DualWrite, QueueRefused};

/// The message of a caught panic, if it carried one.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
