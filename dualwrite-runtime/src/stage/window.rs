//! The recent comparisons the mismatch-rate guardrail judges.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The mismatch-rate guardrail: a move that makes the new store serve
/// reads (into `Live`, `RampDown` or `Complete`, or a rollout to them) is
/// refused while the share of recent compared reads that disagreed is above
/// a bound.
///
/// A comparison disagrees unless both stores matched or both errored (see
/// [`ComparisonOutcome::is_disagreement`](crate::ComparisonOutcome::is_disagreement)).
/// The rate is judged over the comparisons this process made within the
/// window, and only once there are at least `min_comparisons` of them: with
/// fewer there is no evidence either way and the guardrail lets the move
/// through (the backlog guardrail still applies).
///
/// Default: at most 1% over the last 15 minutes, judged from 1 comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MismatchGuard {
    max_rate: f64,
    window: Duration,
    min_comparisons: u64,
}

impl Default for MismatchGuard {
    fn default() -> Self {
        MismatchGuard {
            max_rate: 0.01,
            window: Duration::from_secs(15 * 60),
            min_comparisons: 1,
        }
    }
}

impl MismatchGuard {
    /// Refuses moves while more than `max_rate` (0 to 1) of recent
    /// comparisons disagreed.
    pub fn max_rate(mut self, max_rate: f64) -> Self {
        self.max_rate = max_rate;
        self
    }

    /// How far back comparisons count. Default: 15 minutes.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How many comparisons the window needs before the rate is judged.
    /// Default: 1.
    pub fn min_comparisons(mut self, comparisons: u64) -> Self {
        self.min_comparisons = comparisons;
        self
    }

    /// No mismatch-rate guardrail (the backlog guardrail stays).
    pub fn disabled() -> Self {
        MismatchGuard::default().max_rate(1.0)
    }

    /// The bound on the disagreeing share.
    pub fn bound(&self) -> f64 {
        self.max_rate
    }

    /// The window's length.
    pub fn window_length(&self) -> Duration {
        self.window
    }

    /// Checks the settings, naming the first that cannot work.
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.max_rate) {
            return Err((
                "mismatch_guard.max_rate",
                format!("must be from 0 to 1, not {}", self.max_rate),
            ));
        }
        if self.window.is_zero() {
            return Err(("mismatch_guard.window", "must be greater than zero".into()));
        }
        Ok(())
    }

    fn is_disabled(&self) -> bool {
        self.max_rate >= 1.0
    }
}

/// Counts of comparisons within a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MismatchRate {
    /// Compared reads in the window.
    pub comparisons: u64,
    /// Those that disagreed.
    pub disagreements: u64,
}

impl MismatchRate {
    /// Disagreements over comparisons (0 when there were none).
    pub fn rate(&self) -> f64 {
        if self.comparisons == 0 {
            0.0
        } else {
            self.disagreements as f64 / self.comparisons as f64
        }
    }
}

/// Comparisons in time buckets, a tenth of the window each.
#[derive(Debug, Default)]
pub(crate) struct ComparisonWindow {
    buckets: Mutex<VecDeque<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    start: Instant,
    counts: MismatchRate,
}

impl ComparisonWindow {
    pub(crate) fn record(&self, window: Duration, disagreed: bool) {
        let now = Instant::now();
        let width = (window / 10).max(Duration::from_millis(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        while buckets
            .front()
            .is_some_and(|bucket| now.saturating_duration_since(bucket.start) > window + width)
        {
            buckets.pop_front();
        }
        let current = match buckets.back_mut() {
            Some(bucket) if now.saturating_duration_since(bucket.start) < width => bucket,
            _ => {
                buckets.push_back(Bucket {
                    start: now,
                    counts: MismatchRate::default(),
                });
                buckets.back_mut().expect("just pushed")
            }
        };
        current.counts.comparisons += 1;
        current.counts.disagreements += u64::from(disagreed);
    }

    /// The counts of the buckets that started within `window`.
    pub(crate) fn rate(&self, window: Duration) -> MismatchRate {
        let now = Instant::now();
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets
            .iter()
            .filter(|bucket| now.saturating_duration_since(bucket.start) <= window)
            .fold(MismatchRate::default(), |total, bucket| MismatchRate {
                comparisons: total.comparisons + bucket.counts.comparisons,
                disagreements: total.disagreements + bucket.counts.disagreements,
            })
    }

    pub(crate) fn clear(&self) {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Whether `guard` refuses a move given `rate`.
pub(crate) fn refuses(guard: &MismatchGuard, rate: &MismatchRate) -> bool {
    !guard.is_disabled()
        && rate.comparisons >= guard.min_comparisons.max(1)
        && rate.rate() > guard.max_rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn old_comparisons_leave_the_window() {
        let window = ComparisonWindow::default();
        let length = Duration::from_secs(60);
        window.record(length, true);
        window.record(length, false);
        assert_eq!(
            window.rate(length),
            MismatchRate {
                comparisons: 2,
                disagreements: 1
            }
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        window.record(length, false);
        assert_eq!(
            window.rate(length),
            MismatchRate {
                comparisons: 1,
                disagreements: 0
            }
        );
    }

    #[test]
    fn the_guard_judges_only_with_enough_comparisons() {
        let guard = MismatchGuard::default().max_rate(0.1).min_comparisons(10);
        let rate = |comparisons, disagreements| MismatchRate {
            comparisons,
            disagreements,
        };
        assert!(!refuses(&guard, &rate(9, 9)));
        assert!(refuses(&guard, &rate(10, 2)));
        assert!(!refuses(&guard, &rate(10, 1)));
        assert!(!refuses(&MismatchGuard::disabled(), &rate(100, 100)));
    }
}
