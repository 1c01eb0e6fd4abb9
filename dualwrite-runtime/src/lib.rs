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
//! | `detached` | for reads: compare after the caller has its result, in a task of its own (see [`read`]) |
//! | `delivery = sync` / `delivery = journaled` | for writes: this method's [`Delivery`], whatever the wrapper's default |
//! | `fail_closed` | for writes: when the queue refuses the operation, return [`QueueRefused`] converted with `From` into the method's error type, instead of the authoritative result (with journaled delivery, before either store is written) |
//! | `report_values` | for reads: put both stores' results (`{:?}`, so the output must be `Debug`) in mismatch reports; off by default, so values never reach logs unasked |
//!
//! A method without `read`, `write` or `skip` is classified by its name:
//! names whose first word is a read verb (`get`, `find`, `list`, `load`,
//! `count`, ...) are reads, names whose first word is a write verb (`create`,
//! `insert`, `update`, `upsert`, `delete`, `save`, `put`, `set`, ...) are
//! writes. Anything else, or a name mixing both (`get_or_create`), is a
//! compile error asking you to say which. Default methods without an option
//! keep their default body (which calls the wrapper's other methods).
//!
//! Write methods must return `Result<_, _>` whose error implements
//! [`Display`](std::fmt::Display); their by-value arguments must be
//! `Clone`, and all their arguments serde-serialisable, because the
//! operation may be queued. A write without `key` (a `delete_all()`) is
//! ordered against every write of the trait: it waits for every key's
//! queued work, and every later write of any key waits for it.
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
//! # Reads
//!
//! In `Shadow` and `Live` every read (or a sampled fraction) goes to both
//! stores; the caller gets the serving store's result, at most the
//! [compare timeout](Builder::compare_timeout) later than that store
//! answered, and the other result is compared with it. Mismatches go to
//! metrics and [observers](observe) with the call's key. A
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
//! idempotent (an upsert, a delete), as a timed-out write may have landed.
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
mod guarded;
pub mod observe;
mod op;
mod operation_id;
mod order;
pub mod queue;
pub mod read;
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
pub use op::{HasOperations, Key, Operation, Replay};
pub use operation_id::{operation_id, OperationId, ParseOperationIdError};
pub use queue::{InMemoryQueue, QueueAdmin, QueueError, QueueStats, ReconciliationQueue};
pub use read::{ComparisonOutcome, Rollout};
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
