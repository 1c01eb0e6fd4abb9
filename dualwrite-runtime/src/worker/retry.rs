use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::config::{self, BuildError};

/// How the worker retries a queued operation that failed: exponential
/// backoff with jitter (computed by [`backon`]), up to a budget of attempts,
/// after which the operation is dead-lettered with its last error.
///
/// The default budget (25 attempts, 100 ms doubling to at most 5 min, each
/// delay stretched by up to 100 % jitter) spans well over an hour, so a
/// follower that is down for an hour loses nothing to the dead-letter queue.
///
/// ```
/// use std::time::Duration;
/// use dualwrite_runtime::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .max_attempts(5)
///     .min_delay(Duration::from_millis(10))
///     .max_delay(Duration::from_secs(1));
/// assert!(policy.delay_after(1) >= Duration::from_millis(10));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    min_delay: Duration,
    max_delay: Duration,
    factor: f32,
    jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 25,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(300),
            factor: 2.0,
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// Attempts the worker makes before dead-lettering (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The delay after the first failure.
    pub fn min_delay(mut self, delay: Duration) -> Self {
        self.min_delay = delay;
        self
    }

    /// The longest delay between two attempts, before jitter.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// How much each delay grows over the previous one (at least 1).
    pub fn factor(mut self, factor: f32) -> Self {
        self.factor = factor;
        self
    }

    /// Whether delays get random jitter, so that many keys failing together
    /// do not retry together. Default: on.
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// The attempt budget.
    pub fn attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delay before the next attempt, after `failures` failed attempts (1 or more).
    pub fn delay_after(&self, failures: u32) -> Duration {
        let mut builder = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.factor)
            .without_max_times();
        if self.jitter {
            builder = builder.with_jitter();
        }
        let index = usize::try_from(failures.max(1) - 1).unwrap_or(usize::MAX);
        builder.build().nth(index).unwrap_or(self.max_delay)
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        use crate::config::invalid;
        if self.max_attempts == 0 {
            return Err(invalid("retry.max_attempts", "must be at least 1"));
        }
        if !(self.factor.is_finite() && self.factor >= 1.0) {
            return Err(invalid(
                "retry.factor",
                format!("{} must be a finite number of at least 1", self.factor),
            ));
        }
        config::duration("retry.min_delay", self.min_delay, true)?;
        config::duration("retry.max_delay", self.max_delay, true)?;
        if self.min_delay > self.max_delay {
            return Err(invalid(
                "retry.min_delay",
                format!(
                    "{:?} is longer than retry.max_delay ({:?})",
                    self.min_delay, self.max_delay
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap() {
        let policy = RetryPolicy::default()
            .jitter(false)
            .min_delay(Duration::from_millis(10))
            .max_delay(Duration::from_millis(50));
        let delays: Vec<_> = (1..=5)
            .map(|failures| (policy.delay_after(failures).as_secs_f64() * 1000.0).round() as u64)
            .collect();
        assert_eq!(delays, [10, 20, 40, 50, 50]);
    }

    #[test]
    fn jitter_stays_within_double_the_delay() {
        let policy = RetryPolicy::default().min_delay(Duration::from_millis(10));
        for _ in 0..100 {
            let delay = policy.delay_after(1);
            assert!(
                delay >= Duration::from_millis(10) && delay <= Duration::from_millis(20),
                "{delay:?}"
            );
        }
    }

    #[test]
    fn the_default_budget_outlasts_an_hour_long_outage() {
        let policy = RetryPolicy::default().jitter(false);
        let total: Duration = (1..policy.attempts())
            .map(|failures| policy.delay_after(failures))
            .sum();
        assert!(total > Duration::from_secs(3600), "{total:?}");
    }

    #[test]
    fn invalid_settings_are_named() {
        let error = RetryPolicy::default()
            .max_attempts(0)
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("retry.max_attempts"), "{error}");
        let error = RetryPolicy::default().factor(0.5).validate().unwrap_err();
        assert!(error.to_string().contains("retry.factor"), "{error}");
        let error = RetryPolicy::default()
            .min_delay(Duration::from_secs(2))
            .max_delay(Duration::from_secs(1))
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("retry.min_delay"), "{error}");
    }
}
