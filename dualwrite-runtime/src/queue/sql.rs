//! What the PostgreSQL and MySQL/MariaDB queues share: table names from a
//! prefix, the schema error, the SQL conditions that say which entry is the
//! head of its key, the decoding of an entry's row (which never trusts a
//! column), the answer of a claim and the counts of `stats`. Each backend
//! keeps its dialect: its DDL, its locks, its clock expression and the
//! round trips of each call.
//!
//! Both backends keep one row per entry, in the states of [`EntryState`],
//! and the same rule for claims: an entry is claimable when it is not dead,
//! no older entry of its key is in line (every entry under
//! [`PoisonPolicy::Block`]; every entry but the dead under
//! [`PoisonPolicy::Skip`]), the unkeyed barrier holds, and its `ready_at`
//! (the end of a retry delay, a lease or a prepared entry's expiry) has
//! passed on the database clock. Heads are served in the order of their
//! `turn`, which an entry gets when it is appended and again when it
//! becomes the head of its key, so a busy key cannot starve the others.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{ColumnIndex, Database, Decode, Row, Type};

use super::{
    ClaimedEntry, DeadLetter, EntryId, EntryState, Lease, PoisonPolicy, QueueError, QueueStats,
    QueuedEntry,
};
use crate::op::Key;
use crate::vocabulary::Side;

/// The default prefix of a server queue's table names.
pub const DEFAULT_TABLE_PREFIX: &str = "dualwrite_queue_";

/// Opening a server queue's tables failed because their schema is missing
/// or newer than this build understands. Carried in
/// [`QueueError::Backend`]; downcast the source to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    message: String,
}

impl SchemaError {
    /// What is wrong and how to fix it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SchemaError {}

/// A [`SchemaError`] as a queue error.
pub(super) fn schema_error(message: String) -> QueueError {
    QueueError::Backend(Box::new(SchemaError { message }))
}

/// The table names of one prefix.
#[derive(Debug, Clone)]
pub(super) struct Tables {
    pub(super) prefix: String,
    pub(super) meta: String,
    pub(super) entries: String,
    /// PostgreSQL: the sequence of turns. MySQL: the rows appends lock.
    pub(super) aux: String,
}

impl Tables {
    /// The names under `prefix`, checked to be plain lowercase identifiers;
    /// `aux` names the backend's third object.
    pub(super) fn new(server: &str, prefix: &str, aux: &str) -> Result<Tables, QueueError> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 40
            && prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(QueueError::Backend(
                format!(
                    "{server} queue: invalid table prefix {prefix:?}: use lowercase ASCII letters, digits and '_', starting with a letter, at most 40 characters"
                )
                .into(),
            ));
        }
        Ok(Tables {
            prefix: prefix.to_owned(),
            meta: format!("{prefix}meta"),
            entries: format!("{prefix}entries"),
            aux: format!("{prefix}{aux}"),
        })
    }

    /// The error for tables found `missing` (by name), naming the calls
    /// that create them.
    pub(super) fn missing(&self, server: &str, queue: &str, missing: &[String]) -> QueueError {
        schema_error(format!(
            "{server} queue: the schema is not installed: {} missing; create it with {queue}::install_schema(&pool, {:?}) or open with {queue}::options(pool).table_prefix({:?}).create_schema(true)",
            missing.join(", "),
            self.prefix,
            self.prefix
        ))
    }

    /// Checks the schema version read from the meta table.
    pub(super) fn check_version(
        &self,
        server: &str,
        found: Option<i64>,
        understood: i64,
    ) -> Result<(), QueueError> {
        match found {
            Some(version) if version == understood => Ok(()),
            Some(version) if version > understood => Err(schema_error(format!(
                "{server} queue: {} has schema version {version}, but this build of dualwrite-runtime understands versions up to {understood}; it was written by a newer release. Upgrade this service (or use another table prefix); nothing was changed",
                self.meta
            ))),
            other => Err(schema_error(format!(
                "{server} queue: {} holds no valid schema_version (found {other:?}); it is not a dualwrite queue's, or was damaged",
                self.meta
            ))),
        }
    }
}

pub(super) fn time_of(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

/// A wait in microseconds, capped at a century (so `Duration::MAX` means
/// "practically never").
pub(super) fn interval_micros(wait: Duration) -> i64 {
    const CENTURY: u128 = 100 * 365 * 24 * 3600 * 1_000_000;
    i64::try_from(wait.as_micros().min(CENTURY)).unwrap_or(i64::MAX)
}

pub(super) fn side_of(text: &str) -> Result<Side, String> {
    match text {
        "old" => Ok(Side::Old),
        "new" => Ok(Side::New),
        other => Err(format!("unknown target {other:?}")),
    }
}

pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The SQL condition "entry `{alias}` counts for ordering": under the skip
/// policy, dead entries are out of line.
pub(super) fn in_line(poison: PoisonPolicy, alias: &str) -> String {
    match poison {
        PoisonPolicy::Block => "1 = 1".to_owned(),
        PoisonPolicy::Skip => format!("{alias}.state <> 'dead'"),
    }
}

/// The SQL condition "`e` (a row of `entries`) is the workable head of its
/// key and past every unkeyed barrier". The subqueries read `entries`
/// under other aliases; through the index on `(namespace, target, key, id)`
/// each is one probe.
pub(super) fn head_condition(entries: &str, poison: PoisonPolicy) -> String {
    let o = in_line(poison, "o");
    let k = in_line(poison, "k");
    let b = in_line(poison, "b");
    format!(
        "e.state <> 'dead' \
         AND NOT EXISTS (SELECT 1 FROM {entries} o WHERE o.namespace = e.namespace \
           AND o.target = e.target AND o.key = e.key AND o.id < e.id AND {o}) \
         AND NOT (e.key = '*' AND EXISTS (SELECT 1 FROM {entries} k WHERE k.namespace = e.namespace \
           AND k.target = e.target AND k.key <> '*' AND k.id < e.id AND {k})) \
         AND NOT (e.key <> '*' AND EXISTS (SELECT 1 FROM {entries} b WHERE b.namespace = e.namespace \
           AND b.target = e.target AND b.key = '*' AND b.id < e.id AND {b}))"
    )
}

/// The columns every entry read selects, in [`Decoded`]'s order, given the
/// expressions of `enqueued_at` and `died_at` in microseconds since the
/// epoch, and how a text column is read (`text(column)`).
pub(super) fn entry_columns(enqueued_at: &str, died_at: &str, text: fn(&str) -> String) -> String {
    format!(
        "id, {}, {}, {}, {}, version, payload, {}, orphaned, attempts, {}, {enqueued_at}, \
         lease_token, {died_at}",
        text("namespace"),
        text("target"),
        text("key"),
        text("method"),
        text("state"),
        text("last_error"),
    )
}

/// An entry's row, read.
pub(super) struct Decoded {
    pub(super) id: EntryId,
    pub(super) namespace: String,
    pub(super) target: Side,
    pub(super) key: Key,
    pub(super) method: String,
    pub(super) version: u32,
    pub(super) payload: Vec<u8>,
    pub(super) state: EntryState,
    pub(super) orphaned: bool,
    pub(super) attempts: u32,
    pub(super) last_error: String,
    pub(super) enqueued_at: SystemTime,
    pub(super) token: u64,
    pub(super) died_at: Option<SystemTime>,
}

/// Reads a row of [`entry_columns`]; a column that does not hold what the
/// queue writes is an error naming it.
pub(super) fn decode<'r, R>(server: &str, row: &'r R) -> Result<Decoded, QueueError>
where
    R: Row,
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    R::Database: Database,
{
    let read = || -> Result<Decoded, String> {
        let text = |index: usize| {
            row.try_get::<String, _>(index)
                .map_err(|e| format!("column {index}: {e}"))
        };
        let int = |index: usize| {
            row.try_get::<i64, _>(index)
                .map_err(|e| format!("column {index}: {e}"))
        };
        let unsigned = |index: usize| {
            int(index).and_then(|value| {
                u64::try_from(value).map_err(|_| format!("column {index}: negative {value}"))
            })
        };
        let state = text(7)?;
        Ok(Decoded {
            id: EntryId(unsigned(0)?),
            namespace: text(1)?,
            target: side_of(&text(2)?)?,
            key: Key::from(text(3)?),
            method: text(4)?,
            version: u32::try_from(unsigned(5)?).map_err(|e| format!("version: {e}"))?,
            payload: row
                .try_get::<Vec<u8>, _>(6)
                .map_err(|e| format!("payload: {e}"))?,
            state: EntryState::from_stored(&state).ok_or(format!("unknown state {state:?}"))?,
            orphaned: row
                .try_get::<bool, _>(8)
                .map_err(|e| format!("orphaned: {e}"))?,
            attempts: u32::try_from(unsigned(9)?).unwrap_or(u32::MAX),
            last_error: text(10)?,
            enqueued_at: time_of(int(11)?),
            token: unsigned(12)?,
            died_at: row
                .try_get::<Option<i64>, _>(13)
                .map_err(|e| format!("died_at: {e}"))?
                .map(time_of),
        })
    };
    read().map_err(|problem| {
        QueueError::Backend(format!("{server} queue: unreadable queue row: {problem}").into())
    })
}

impl Decoded {
    pub(super) fn claimed(self) -> ClaimedEntry {
        ClaimedEntry {
            lease: Lease {
                id: self.id,
                token: self.token,
            },
            namespace: self.namespace,
            target: self.target,
            key: self.key,
            method: self.method,
            version: self.version,
            payload: self.payload,
            attempts: self.attempts,
            enqueued_at: self.enqueued_at,
            last_error: self.last_error,
            orphaned: self.orphaned,
        }
    }

    pub(super) fn dead_letter(self) -> DeadLetter {
        DeadLetter {
            id: self.id,
            namespace: self.namespace,
            target: self.target,
            key: self.key,
            method: self.method,
            version: self.version,
            payload: self.payload,
            attempts: self.attempts,
            error: self.last_error,
            enqueued_at: self.enqueued_at,
            died_at: self.died_at.unwrap_or(self.enqueued_at),
        }
    }

    pub(super) fn queued(self) -> QueuedEntry {
        QueuedEntry {
            id: self.id,
            state: self.state,
            method: self.method,
            version: self.version,
            payload: self.payload,
            attempts: self.attempts,
            last_error: self.last_error,
            enqueued_at: self.enqueued_at,
            orphaned: self.orphaned,
        }
    }
}

/// Runs `complete` for each lease of `completed` at once (on the pool's
/// connections: distinct leases are distinct rows, and a key has one entry
/// leased at a time, so no completion depends on another), and answers in
/// the order given. Of a lease given twice, the first completion is the one
/// that runs; the repeats are refused as late, as they would be one after
/// another.
pub(super) async fn complete_at_once<F, Fut>(
    completed: &[Lease],
    complete: F,
) -> Vec<Result<(), QueueError>>
where
    F: Fn(Lease) -> Fut,
    Fut: std::future::Future<Output = Result<(), QueueError>>,
{
    let mut seen = std::collections::HashSet::with_capacity(completed.len());
    let firsts: Vec<bool> = completed
        .iter()
        .map(|done| seen.insert((done.id, done.token)))
        .collect();
    let mut results = futures::future::join_all(
        completed
            .iter()
            .zip(&firsts)
            .filter(|(_, first)| **first)
            .map(|(done, _)| complete(*done)),
    )
    .await
    .into_iter();
    // Back in the order given, repeats in their places.
    completed
        .iter()
        .zip(&firsts)
        .map(|(done, first)| {
            if *first {
                results.next().expect("one result per first completion")
            } else {
                Err(QueueError::LeaseLost(done.id))
            }
        })
        .collect()
}

/// A claim's hint: zero when `more_ready` (a ready head was left
/// unclaimed), else the wait until the earliest head not ready yet
/// (`next`, microseconds).
pub(super) fn hint(more_ready: bool, next: Option<i64>) -> Option<Duration> {
    if more_ready {
        Some(Duration::ZERO)
    } else {
        next.map(|micros| Duration::from_micros(u64::try_from(micros).unwrap_or(0)))
    }
}

/// Counts from rows of `(target, state, count, oldest enqueued_at in
/// microseconds)`.
pub(super) fn stats_of(
    server: &str,
    poison: PoisonPolicy,
    rows: Vec<(String, String, i64, Option<i64>)>,
) -> Result<QueueStats, QueueError> {
    let mut stats = QueueStats::default();
    for (target, state, count, oldest) in rows {
        let side = side_of(&target).map_err(|problem| {
            QueueError::Backend(format!("{server} queue: stats: {problem}").into())
        })?;
        let count = u64::try_from(count).unwrap_or(0);
        let counts = stats.target_mut(side);
        match EntryState::from_stored(&state) {
            Some(EntryState::Dead) => {
                counts.dead += count;
                if poison == PoisonPolicy::Block {
                    counts.blocked_keys += count;
                }
                continue;
            }
            Some(EntryState::InFlight) => counts.in_flight += count,
            _ => counts.pending += count,
        }
        if let Some(oldest) = oldest.map(time_of) {
            counts.oldest_pending = Some(
                counts
                    .oldest_pending
                    .map_or(oldest, |other| other.min(oldest)),
            );
        }
    }
    Ok(stats)
}

/// How to open a server queue on a pool `P`: `PostgresQueueOptions` (a
/// PostgreSQL pool) or `MySqlQueueOptions` (a MySQL pool), from the queue's
/// `options(pool)`; their `open()` opens it.
#[derive(Debug, Clone)]
pub struct ServerQueueOptions<P> {
    pub(super) pool: P,
    pub(super) prefix: String,
    pub(super) poison: PoisonPolicy,
    pub(super) create_schema: bool,
}

impl<P> ServerQueueOptions<P> {
    pub(super) fn new(pool: P) -> Self {
        ServerQueueOptions {
            pool,
            prefix: DEFAULT_TABLE_PREFIX.to_owned(),
            poison: PoisonPolicy::default(),
            create_schema: false,
        }
    }

    /// The prefix of the table names (default [`DEFAULT_TABLE_PREFIX`]):
    /// lowercase ASCII letters, digits and `_`, starting with a letter, at
    /// most 40 characters.
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// What a dead letter does to its key's later entries (default
    /// [`PoisonPolicy::Block`]). Every process sharing the tables must use
    /// the same policy.
    pub fn poison_policy(mut self, poison: PoisonPolicy) -> Self {
        self.poison = poison;
        self
    }

    /// Whether opening creates the tables when they do not exist (default
    /// `false`: a missing schema is an error). Creating runs DDL on the
    /// database; opt in only where the service may do that.
    pub fn create_schema(mut self, create: bool) -> Self {
        self.create_schema = create;
        self
    }
}
