//! The writer: one task on a thread of its own that owns the write
//! connection, takes every request waiting for it, runs them as one
//! transaction and answers each caller after the commit (group commit; see
//! "Group commit and claims" in the module docs).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::error::{could_not, BackendError, TxError};
use super::index::{IndexDelta, KeyIndex};
use super::reads;
use super::request::{Command, Reply, Write};
use super::statements::{Opening, MAX_INSERT_ROWS};
use crate::queue::{PoisonPolicy, QueueError};

pub(super) struct Writer {
    pub(super) path: PathBuf,
    pub(super) conn: SqliteConnection,
    pub(super) reads: SqlitePool,
    pub(super) index: Arc<RwLock<KeyIndex>>,
    /// Counts the transactions committed ([`SqliteQueue::transactions`](super::SqliteQueue::transactions)).
    pub(super) transactions: Arc<AtomicU64>,
    pub(super) max_batch: usize,
    /// The last `turn` handed out (see [`Writer::next_turn`]).
    pub(super) last_turn: i64,
    /// Commit claims and completions without `fsync` (see the module docs).
    pub(super) relaxed_settles: bool,
    /// Whether the connection is in `synchronous = FULL` now.
    pub(super) full_sync: bool,
    /// Whether the current transaction has begun.
    pub(super) begun: bool,
    pub(super) poison: PoisonPolicy,
    /// Wakes the checkpointer after a commit.
    pub(super) checkpoints: mpsc::Sender<()>,
    pub(super) checkpointer: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Serves requests until the last queue handle is dropped or one asks
    /// to close, then closes the file.
    pub(super) async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Command>) {
        let mut closing: Option<oneshot::Sender<()>> = None;
        while let Some(first) = receiver.recv().await {
            let mut writes: Vec<Write> = Vec::new();
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Write(write) => writes.push(write),
                    Command::Together(together) => writes.extend(together),
                    Command::Read(read) => reads::spawn(&self.reads, &self.path, read),
                    Command::Close(done) => {
                        closing = Some(done);
                        break;
                    }
                }
                if writes.len() >= self.max_batch {
                    break;
                }
                next = receiver.try_recv().ok();
            }
            if !writes.is_empty() {
                self.execute(writes).await;
            }
            if closing.is_some() {
                break;
            }
        }
        // Requests still in the channel get "closed" when it is dropped.
        receiver.close();
        self.close().await;
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    pub(super) fn context(&self, what: &str) -> String {
        could_not(self.path.display(), what)
    }

    fn failure(&self, what: &str, error: sqlx::Error) -> QueueError {
        BackendError::new(self.context(what), error).into()
    }

    /// Runs a batch of writes in one transaction and answers each after the
    /// commit; if a statement fails, retries them one transaction each.
    async fn execute(&mut self, mut writes: Vec<Write>) {
        match self.transaction(&mut writes).await {
            Ok(()) => {}
            Err(TxError::Begin(error)) => {
                let error = BackendError::new(self.context("start a transaction"), error);
                for write in &mut writes {
                    write.fail(error.clone().into());
                }
            }
            Err(TxError::Statement(what, error)) if writes.len() == 1 => {
                let error = self.failure(what, error);
                writes[0].fail(error);
            }
            Err(TxError::Statement(what, error)) => {
                tracing::warn!(path = %self.path.display(), batch = writes.len(), %error, failed = what, "a SQLite queue batch failed; retrying its requests one by one");
                for write in &mut writes {
                    let error = match self.transaction(std::slice::from_mut(write)).await {
                        Ok(()) => continue,
                        Err(TxError::Begin(error)) => self.failure("start a transaction", error),
                        Err(TxError::Statement(what, error)) => self.failure(what, error),
                    };
                    write.fail(error);
                }
            }
        }
        let flushes = writes.iter().any(|write| matches!(write, Write::Flush(_)));
        if flushes && self.relaxed_settles {
            // Settles committed with `synchronous = NORMAL` are durable once
            // the log is synced, which a checkpoint does.
            let synced = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut self.conn)
                .await;
            if let Err(error) = synced {
                let error = BackendError::new(self.context("flush"), error);
                for write in &mut writes {
                    if let Write::Flush(reply) = write {
                        reply.set(Err(error.clone().into()));
                    }
                }
            }
        }
        let mut unheard = Vec::new();
        for mut write in writes {
            if let Write::Prepare(_, _, reply) = &mut write {
                if let Some(Ok(id)) = reply.send() {
                    unheard.push(id);
                }
            } else if let Some(reply) = write.reply() {
                reply.answer();
            }
        }
        // A writer that stopped waiting for its prepare (its caller was
        // cancelled) never learns the entry's id, so it cannot commit or
        // abort it, and it has not called the authoritative store: withdraw
        // the entry rather than leave it to become an orphan.
        for id in unheard {
            let (reply, _unheard) = Reply::channel();
            if let Err(error) = self.transaction(&mut [Write::Abort(id, reply)]).await {
                let error = match error {
                    TxError::Begin(error) | TxError::Statement(_, error) => error,
                };
                tracing::warn!(path = %self.path.display(), entry = %id, %error, "could not withdraw a written-ahead entry whose writer went away; it is replayed as an orphan after its expiry");
            }
        }
    }

    /// One transaction over `writes`: their results set, committed, with the
    /// index already updated.
    async fn transaction(&mut self, writes: &mut [Write]) -> Result<(), TxError> {
        let full = !self.relaxed_settles
            || writes.iter().any(|write| {
                !matches!(
                    write,
                    Write::Claim { .. }
                        | Write::Complete(..)
                        | Write::RetryLater { .. }
                        | Write::Release(..)
                        | Write::Renew(..)
                        | Write::HasLater(..)
                )
            });
        if full != self.full_sync {
            let pragma = if full {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            sqlx::query(pragma)
                .execute(&mut self.conn)
                .await
                .map_err(TxError::Begin)?;
            self.full_sync = full;
        }
        let mut delta = IndexDelta::default();
        self.begun = false;
        let write_ahead = writes.len() <= MAX_INSERT_ROWS
            && writes.iter().all(|write| {
                matches!(
                    write,
                    Write::Append(..) | Write::Prepare(..) | Write::Commit(_)
                )
            });
        if write_ahead {
            // The hot path of journaled writes: one round trip to SQLite.
            if let Err(error) = self.write_ahead(writes, &mut delta).await {
                self.rollback().await;
                return Err(TxError::of("append", error));
            }
        } else if Self::is_turnover(writes) {
            // The hot path of the worker: one round trip too.
            if let Err(error) = self.turnover(writes, &mut delta).await {
                self.rollback().await;
                return Err(TxError::of("complete and claim entries", error));
            }
        } else {
            if let Err(error) = self.body(writes, &mut delta).await {
                self.rollback().await;
                return Err(error);
            }
            if !self.begun {
                return Ok(());
            }
            let committed = sqlx::query("COMMIT").execute(&mut self.conn).await;
            if let Err(error) = committed {
                self.rollback().await;
                return Err(TxError::Statement("commit", error));
            }
        }
        self.transactions.fetch_add(1, Ordering::Relaxed);
        let _ = self.checkpoints.try_send(());
        self.index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .apply(&delta);
        Ok(())
    }

    pub(super) async fn rollback(&mut self) {
        if let Err(error) = sqlx::query("ROLLBACK").execute(&mut self.conn).await {
            // SQLite rolls back by itself after some errors; then there is
            // no transaction left to roll back.
            tracing::debug!(%error, "ROLLBACK of the SQLite queue's transaction failed");
        }
    }

    /// The next fairness tie-breaker: wall-clock microseconds, made strictly
    /// increasing within this process.
    pub(super) fn next_turn(&mut self) -> i64 {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.last_turn = micros.max(self.last_turn.saturating_add(1));
        self.last_turn
    }

    /// The statement to run next: `statement` itself, or preceded by
    /// `BEGIN IMMEDIATE` if the transaction has not begun yet.
    pub(super) fn opening(&mut self, statement: &'static Opening) -> &'static str {
        if std::mem::replace(&mut self.begun, true) {
            statement.plain
        } else {
            statement.begin
        }
    }

    /// Begins the transaction if no statement has yet.
    pub(super) async fn begin(&mut self) -> Result<(), sqlx::Error> {
        if !std::mem::replace(&mut self.begun, true) {
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut self.conn)
                .await?;
        }
        Ok(())
    }
}
