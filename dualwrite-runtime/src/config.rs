//! Configuration errors and the checks every setting goes through. A leaf
//! module: the builder, the worker's retry policy, the circuit breaker and
//! the read settings all validate through it, and it imports none of them.

use std::time::Duration;

/// A setting [`Builder::build`](crate::Builder::build) refused. Nothing was started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting that has no safe default was not given.
    #[error("dualwrite setting `{setting}` is required: {hint}")]
    Missing {
        /// The builder method that sets it.
        setting: &'static str,
        /// What to pass.
        hint: &'static str,
    },
    /// A setting has a value that cannot work.
    #[error("dualwrite setting `{setting}` is invalid: {reason}")]
    Invalid {
        /// The builder method (or `retry.<field>`) that sets it.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The longest duration any setting accepts: a year. Longer values are
/// certainly mistakes (`Duration::MAX` meaning "never"), and adding them to
/// a clock reading would overflow.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

pub(crate) fn invalid(setting: &'static str, reason: impl Into<String>) -> BuildError {
    BuildError::Invalid {
        setting,
        reason: reason.into(),
    }
}

/// Checks a duration setting: greater than zero (unless `zero_ok`) and at
/// most [`MAX_DURATION`].
pub(crate) fn duration(
    setting: &'static str,
    value: Duration,
    zero_ok: bool,
) -> Result<(), BuildError> {
    if value.is_zero() && !zero_ok {
        return Err(invalid(setting, "must be greater than zero"));
    }
    if value > MAX_DURATION {
        return Err(invalid(
            setting,
            format!(
                "{value:?} is longer than the longest accepted duration, a year ({MAX_DURATION:?})"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_out_of_range_name_the_setting() {
        let error = duration("lease", Duration::MAX, false).unwrap_err();
        assert!(error.to_string().contains("`lease`"), "{error}");
        assert!(error.to_string().contains("a year"), "{error}");
        let error = duration("lease", Duration::ZERO, false).unwrap_err();
        assert!(error.to_string().contains("greater than zero"), "{error}");
        assert!(duration("jitter", Duration::ZERO, true).is_ok());
        assert!(duration("lease", MAX_DURATION, false).is_ok());
    }
}
