//! Reading rows without trusting them: a column that cannot be read (NULL,
//! a wrong type, invalid UTF-8 written by hand) is reported, never a panic
//! (see "Bad data" in the module docs).

use std::time::UNIX_EPOCH;

use sqlx::sqlite::SqliteRow;
use sqlx::{Decode, Row, Sqlite, TypeInfo, ValueRef};

use super::values::{entry_id, ms_to_system_time, side_from_str};
use crate::op::Key;
use crate::queue::{
    ClaimedEntry, DeadLetter, EntryState, Lease, NewEntry, QueueStats, QueuedEntry,
};
use crate::vocabulary::Side;

/// A text column read leniently: `problem` says what was wrong, if anything.
pub(super) struct Lenient<T> {
    pub(super) value: T,
    problem: Option<String>,
}

pub(super) fn lenient_text(
    row: &SqliteRow,
    at: usize,
    name: &str,
) -> Result<Lenient<String>, String> {
    let raw = row
        .try_get_raw(at)
        .map_err(|error| format!("column `{name}` cannot be read: {error}"))?;
    if raw.is_null() {
        return Err(format!("column `{name}` is NULL"));
    }
    let bytes = <Vec<u8> as Decode<Sqlite>>::decode(raw)
        .map_err(|error| format!("column `{name}` cannot be read: {error}"))?;
    Ok(match String::from_utf8(bytes) {
        Ok(value) => Lenient {
            value,
            problem: None,
        },
        Err(error) => Lenient {
            value: String::from_utf8_lossy(error.as_bytes()).into_owned(),
            problem: Some(format!("column `{name}` is not valid UTF-8")),
        },
    })
}

pub(super) fn lenient_bytes(row: &SqliteRow, at: usize, name: &str) -> Result<Vec<u8>, String> {
    let raw = row
        .try_get_raw(at)
        .map_err(|error| format!("column `{name}` cannot be read: {error}"))?;
    if raw.is_null() {
        return Err(format!("column `{name}` is NULL"));
    }
    <Vec<u8> as Decode<Sqlite>>::decode(raw)
        .map_err(|error| format!("column `{name}` cannot be read: {error}"))
}

pub(super) fn lenient_integer(row: &SqliteRow, at: usize, name: &str) -> Result<i64, String> {
    let raw = row
        .try_get_raw(at)
        .map_err(|error| format!("column `{name}` cannot be read: {error}"))?;
    if raw.is_null() {
        return Err(format!("column `{name}` is NULL"));
    }
    let kind = raw.type_info().name().to_owned();
    if kind != "INTEGER" {
        return Err(format!("column `{name}` holds {kind}, not an integer"));
    }
    <i64 as Decode<Sqlite>>::decode(raw)
        .map_err(|error| format!("column `{name}` cannot be read: {error}"))
}

/// Reads the columns of a row that is shown whatever it holds: what is
/// wrong with a column goes into `problems` (an unreadable text column
/// reads as empty, an integer as 0, a payload as no bytes), and
/// [`annotated`](Self::annotated) appends them to a message.
struct Noting<'r> {
    row: &'r SqliteRow,
    problems: Vec<String>,
}

impl<'r> Noting<'r> {
    fn new(row: &'r SqliteRow) -> Self {
        Noting {
            row,
            problems: Vec::new(),
        }
    }

    fn text(&mut self, at: usize, name: &str) -> String {
        match lenient_text(self.row, at, name) {
            Ok(Lenient { value, problem }) => {
                self.problems.extend(problem);
                value
            }
            Err(problem) => {
                self.problems.push(problem);
                String::new()
            }
        }
    }

    fn integer(&mut self, at: usize, name: &str) -> i64 {
        lenient_integer(self.row, at, name).unwrap_or_else(|problem| {
            self.problems.push(problem);
            0
        })
    }

    fn bytes(&mut self, at: usize, name: &str) -> Vec<u8> {
        lenient_bytes(self.row, at, name).unwrap_or_else(|problem| {
            self.problems.push(problem);
            Vec::new()
        })
    }

    fn note(&mut self, problem: String) {
        self.problems.push(problem);
    }

    /// `message`, followed by the problems found, if any.
    fn annotated(self, message: String) -> String {
        if self.problems.is_empty() {
            message
        } else {
            format!(
                "{message} [unreadable queue row: {}]",
                self.problems.join("; ")
            )
        }
    }
}

/// Reads a claimed row (`id, lease_token, target, key, method, version,
/// payload, attempts, enqueued_at, last_error, namespace`). A row with
/// unreadable essentials comes back with an empty payload and the problem in
/// its method, so the worker dead-letters it; a row without a usable id,
/// token or target is an `Err` for the queue to dead-letter.
pub(super) fn read_claimed(row: &SqliteRow) -> Result<ClaimedEntry, (i64, String)> {
    let id = lenient_integer(row, 0, "id").map_err(|problem| (-1, problem))?;
    let lease_token = lenient_integer(row, 1, "lease_token").map_err(|problem| (id, problem))?;
    let target = lenient_text(row, 2, "target").map_err(|problem| (id, problem))?;
    let Some(target) = side_from_str(&target.value) else {
        return Err((
            id,
            format!(
                "column `target` is {:?}, neither \"old\" nor \"new\"",
                target.value
            ),
        ));
    };
    let mut columns = Noting::new(row);
    let key = columns.text(3, "key");
    let method = columns.text(4, "method");
    let namespace = columns.text(10, "namespace");
    let version = u32::try_from(columns.integer(5, "version")).unwrap_or_else(|_| {
        columns.note("column `version` is out of range".to_owned());
        0
    });
    let payload = columns.bytes(6, "payload");
    // Bookkeeping columns: a bad value there does not stop the replay.
    let attempts = lenient_integer(row, 7, "attempts")
        .ok()
        .and_then(|attempts| u32::try_from(attempts).ok())
        .unwrap_or(0);
    let enqueued_at = lenient_integer(row, 8, "enqueued_at")
        .map(ms_to_system_time)
        .unwrap_or(UNIX_EPOCH);
    let last_error = lenient_text(row, 9, "last_error")
        .map(|text| text.value)
        .unwrap_or_default();
    let orphaned = lenient_integer(row, 11, "orphaned").is_ok_and(|orphaned| orphaned != 0);
    let (method, payload) = if columns.problems.is_empty() {
        (method, payload)
    } else {
        (
            format!(
                "{method} (unreadable queue row {id}: {})",
                columns.problems.join("; ")
            ),
            Vec::new(),
        )
    };
    Ok(ClaimedEntry {
        lease: Lease {
            id: entry_id(id),
            token: u64::try_from(lease_token).unwrap_or(0),
        },
        namespace,
        target,
        key: Key::from(key),
        method,
        version,
        payload,
        attempts,
        enqueued_at,
        last_error,
        orphaned,
    })
}

/// Reads a dead row; whatever cannot be read is described in `error`.
pub(super) fn read_dead_letter(row: &SqliteRow) -> DeadLetter {
    let mut columns = Noting::new(row);
    let namespace = columns.text(1, "namespace");
    let target_text = columns.text(2, "target");
    let key = columns.text(3, "key");
    let method = columns.text(4, "method");
    let error = columns.text(8, "last_error");
    let target = side_from_str(&target_text).unwrap_or_else(|| {
        columns.note(format!(
            "column `target` is {target_text:?}, neither \"old\" nor \"new\" (shown as \"new\")"
        ));
        Side::New
    });
    let id = columns.integer(0, "id");
    let version = columns.integer(5, "version");
    let attempts = columns.integer(7, "attempts");
    let enqueued_at = columns.integer(9, "enqueued_at");
    let died_at = columns.integer(10, "died_at");
    let payload = columns.bytes(6, "payload");
    DeadLetter {
        id: entry_id(id),
        namespace,
        target,
        key: Key::from(key),
        method,
        version: u32::try_from(version).unwrap_or(0),
        payload,
        attempts: u32::try_from(attempts).unwrap_or(0),
        error: columns.annotated(error),
        enqueued_at: ms_to_system_time(enqueued_at),
        died_at: ms_to_system_time(died_at),
    }
}

/// Reads a row of `SELECT id, state, method, version, payload, attempts,
/// last_error, enqueued_at, orphaned`; whatever cannot be read is described
/// in `last_error` (a `state` that is none of the four shows as dead: no
/// worker claims it as it is).
pub(super) fn read_queued(row: &SqliteRow) -> QueuedEntry {
    let mut columns = Noting::new(row);
    let state_text = columns.text(1, "state");
    let method = columns.text(2, "method");
    let last_error = columns.text(6, "last_error");
    let state = EntryState::from_stored(&state_text).unwrap_or_else(|| {
        columns.note(format!(
            "column `state` is {state_text:?}, none of prepared, pending, leased, dead (shown as dead)"
        ));
        EntryState::Dead
    });
    let id = columns.integer(0, "id");
    let version = columns.integer(3, "version");
    let attempts = columns.integer(5, "attempts");
    let enqueued_at = columns.integer(7, "enqueued_at");
    let orphaned = columns.integer(8, "orphaned");
    let payload = columns.bytes(4, "payload");
    QueuedEntry {
        id: entry_id(id),
        state,
        method,
        version: u32::try_from(version).unwrap_or(0),
        payload,
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_error: columns.annotated(last_error),
        enqueued_at: ms_to_system_time(enqueued_at),
        orphaned: orphaned != 0,
    }
}

/// Adds up the rows of `SELECT target, state, count(*), sum(prev_id IS
/// NULL), min(enqueued_at) FROM entries GROUP BY target, state`.
pub(super) fn read_stats(rows: &[SqliteRow]) -> QueueStats {
    let mut stats = QueueStats::default();
    for row in rows {
        let (Ok(target), Ok(state)) = (
            lenient_text(row, 0, "target"),
            lenient_text(row, 1, "state"),
        ) else {
            continue;
        };
        let Some(side) = side_from_str(&target.value) else {
            continue;
        };
        let count = u64::try_from(lenient_integer(row, 2, "count").unwrap_or(0)).unwrap_or(0);
        let heads = u64::try_from(lenient_integer(row, 3, "heads").unwrap_or(0)).unwrap_or(0);
        let oldest = lenient_integer(row, 4, "enqueued_at").ok();
        let Some(state) = EntryState::from_stored(&state.value) else {
            continue;
        };
        let target = stats.target_mut(side);
        match state {
            EntryState::Pending | EntryState::Prepared => target.pending += count,
            EntryState::InFlight => target.in_flight += count,
            EntryState::Dead => {
                target.dead += count;
                target.blocked_keys += heads;
            }
        }
        if state != EntryState::Dead {
            if let Some(oldest) = oldest.map(ms_to_system_time) {
                target.oldest_pending = Some(
                    target
                        .oldest_pending
                        .map_or(oldest, |other| other.min(oldest)),
                );
            }
        }
    }
    stats
}

/// The key in the first three columns of a row (`namespace, target, key`,
/// from `streams` or returned by a statement); `None` if it cannot be read.
pub(super) fn read_key(row: &SqliteRow) -> Option<(String, Side, Key)> {
    let text = |at| lenient_text(row, at, "key").map(|text| text.value);
    let (Ok(namespace), Ok(target), Ok(key)) = (text(0), text(1), text(2)) else {
        return None;
    };
    Some((namespace, side_from_str(&target)?, Key::from(key)))
}

/// Reads a dead letter taken out of line (`namespace, target, key, method,
/// version, payload, last_error, orphaned`) as the entry to queue again;
/// `None` if its essentials cannot be read.
pub(super) fn read_detached(row: &SqliteRow) -> Option<NewEntry> {
    let text = |at, name| lenient_text(row, at, name).map(|text| text.value);
    let (Ok(namespace), Ok(target), Ok(key), Ok(method)) = (
        text(0, "namespace"),
        text(1, "target"),
        text(2, "key"),
        text(3, "method"),
    ) else {
        return None;
    };
    let (Some(target), Ok(version), Ok(payload)) = (
        side_from_str(&target),
        lenient_integer(row, 4, "version").map(|version| u32::try_from(version).unwrap_or(0)),
        lenient_bytes(row, 5, "payload"),
    ) else {
        return None;
    };
    Some(NewEntry {
        namespace,
        target,
        key: Key::from(key),
        method,
        version,
        payload,
        reason: text(6, "last_error").unwrap_or_default(),
        // An orphan stays one: whether its first store has it is unknown.
        uncertain: lenient_integer(row, 7, "orphaned").is_ok_and(|orphaned| orphaned != 0),
    })
}
