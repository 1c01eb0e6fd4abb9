//! How values are printed: times, ages, JSON lines, payloads.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::CliError;

/// A time as RFC 3339 in UTC, to the second.
pub(crate) fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A time as Unix milliseconds, for JSON.
pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    })
}

/// How long ago `at` was (zero if it is in the future: clocks differ).
pub(crate) fn age(at: SystemTime) -> Duration {
    SystemTime::now().duration_since(at).unwrap_or_default()
}

/// A duration to the second, as `3m 12s`.
pub(crate) fn duration(length: Duration) -> String {
    humantime::format_duration(Duration::from_secs(length.as_secs())).to_string()
}

/// Prints `value` as one line of JSON.
pub(crate) fn json_line(value: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string(value)
        .map_err(|error| CliError::store(format!("cannot encode the output as JSON: {error}")))?;
    println!("{text}");
    Ok(())
}

/// A queued operation's payload: its JSON if it is JSON, else its bytes as
/// text (lossily).
pub(crate) fn payload(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// `text` cut to `width` characters, with an ellipsis when cut, on one line.
pub(crate) fn clipped(text: &str, width: usize) -> String {
    let line = crate::error::one_line(text);
    if line.chars().count() <= width {
        line
    } else {
        let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}
