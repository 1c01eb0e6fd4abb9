//! How the queue's values are stored in columns: times as wall-clock Unix
//! milliseconds, ids and lease tokens as SQLite integers, sides as `old` and
//! `new`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::queue::EntryId;
use crate::vocabulary::Side;

pub(super) fn now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(super) fn ms_to_system_time(ms: i64) -> SystemTime {
    match u64::try_from(ms) {
        Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
        Err(_) => UNIX_EPOCH,
    }
}

pub(super) fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn side_from_str(text: &str) -> Option<Side> {
    match text {
        "old" => Some(Side::Old),
        "new" => Some(Side::New),
        _ => None,
    }
}

pub(super) fn lease_id(id: EntryId) -> i64 {
    // Ids come from this file and fit; a forged larger one matches nothing.
    i64::try_from(id.0).unwrap_or(-1)
}

/// `id` as a JSON list of one id, for the statements that take a list.
pub(super) fn id_list(id: EntryId) -> String {
    format!("[{}]", lease_id(id))
}

pub(super) fn token(token: u64) -> i64 {
    i64::try_from(token).unwrap_or(-1)
}

/// An id read from the file as an [`EntryId`] (0 if it is negative).
pub(super) fn entry_id(id: i64) -> EntryId {
    EntryId(u64::try_from(id).unwrap_or(0))
}
