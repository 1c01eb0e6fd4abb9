//! The circuit breaker in front of the follower.
//!
//! While the follower keeps failing, calling it in the request only adds its
//! timeout to every write before the operation is queued anyway. After
//! `failures` consecutive failed follower calls the breaker opens: writes
//! queue at once. After `cooldown` one write is let through as a probe; if it
//! succeeds (or the worker applies an operation to that store) the breaker
//! closes and writes call the follower again; if it fails the breaker stays
//! open for another cooldown.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{self, BuildError};
use crate::vocabulary::Side;

/// Settings of the circuit breaker. See [`Builder::circuit_breaker`](crate::Builder::circuit_breaker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    failures: u32,
    cooldown: Duration,
}

impl Default for CircuitBreaker {
    /// Opens after 5 consecutive failures; probes every 5 s.
    fn default() -> Self {
        CircuitBreaker {
            failures: 5,
            cooldown: Duration::from_secs(5),
        }
    }
}

impl CircuitBreaker {
    /// Opens after `failures` consecutive failed follower calls and lets a
    /// probe through every `cooldown`.
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        CircuitBreaker { failures, cooldown }
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        if self.failures == 0 {
            return Err(config::invalid(
                "circuit_breaker.failures",
                "must be at least 1",
            ));
        }
        config::duration("circuit_breaker.cooldown", self.cooldown, false)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct SideState {
    consecutive_failures: u32,
    /// Open until then; a probe may pass after it.
    open_until: Option<Instant>,
    /// A probe is in flight.
    probing: bool,
}

/// What the breaker says about one follower call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Closed: call the follower.
    Call,
    /// Open, but the cooldown passed: this call is the probe.
    Probe,
    /// Open: queue without calling.
    Skip,
}

#[derive(Debug)]
pub(crate) struct Breakers {
    settings: Option<CircuitBreaker>,
    sides: Mutex<[SideState; 2]>,
}

fn index(side: Side) -> usize {
    match side {
        Side::Old => 0,
        Side::New => 1,
    }
}

impl Breakers {
    pub(crate) fn new(settings: Option<CircuitBreaker>) -> Self {
        Breakers {
            settings,
            sides: Mutex::new([SideState::default(); 2]),
        }
    }

    fn with<R>(
        &self,
        side: Side,
        f: impl FnOnce(&mut SideState, &CircuitBreaker) -> R,
    ) -> Option<R> {
        let settings = self.settings.as_ref()?;
        let mut sides = self
            .sides
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Some(f(&mut sides[index(side)], settings))
    }

    pub(crate) fn admit(&self, side: Side) -> Admission {
        self.with(side, |state, _| match state.open_until {
            None => Admission::Call,
            Some(until) if Instant::now() >= until && !state.probing => {
                state.probing = true;
                Admission::Probe
            }
            Some(_) => Admission::Skip,
        })
        .unwrap_or(Admission::Call)
    }

    pub(crate) fn record_success(&self, side: Side) {
        let closed = self.with(side, |state, _| {
            let was_open = state.open_until.is_some();
            *state = SideState::default();
            was_open
        });
        if closed == Some(true) {
            tracing::info!(follower = %side, "circuit breaker closed: the follower is answering again");
        }
    }

    pub(crate) fn record_failure(&self, side: Side) {
        self.with(side, |state, settings| {
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            let was_probe = std::mem::take(&mut state.probing);
            if was_probe || state.consecutive_failures >= settings.failures {
                if state.open_until.is_none() {
                    tracing::warn!(
                        follower = %side,
                        failures = state.consecutive_failures,
                        cooldown = ?settings.cooldown,
                        "circuit breaker opened: writes queue for the follower without calling it"
                    );
                }
                state.open_until = Some(Instant::now() + settings.cooldown);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_probes_after_the_cooldown_and_closes_on_success() {
        let breakers = Breakers::new(Some(CircuitBreaker::new(3, Duration::from_secs(1))));
        for _ in 0..2 {
            assert_eq!(breakers.admit(Side::New), Admission::Call);
            breakers.record_failure(Side::New);
        }
        assert_eq!(breakers.admit(Side::New), Admission::Call);
        breakers.record_failure(Side::New);
        assert_eq!(
            breakers.admit(Side::New),
            Admission::Skip,
            "open after 3 failures"
        );
        assert_eq!(
            breakers.admit(Side::Old),
            Admission::Call,
            "each side has its own breaker"
        );

        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(breakers.admit(Side::New), Admission::Probe);
        assert_eq!(
            breakers.admit(Side::New),
            Admission::Skip,
            "one probe at a time"
        );
        breakers.record_failure(Side::New);
        assert_eq!(
            breakers.admit(Side::New),
            Admission::Skip,
            "a failed probe reopens"
        );

        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(breakers.admit(Side::New), Admission::Probe);
        breakers.record_success(Side::New);
        assert_eq!(
            breakers.admit(Side::New),
            Admission::Call,
            "a successful probe closes"
        );
    }

    #[test]
    fn disabled_breaker_always_calls() {
        let breakers = Breakers::new(None);
        for _ in 0..10 {
            breakers.record_failure(Side::New);
        }
        assert_eq!(breakers.admit(Side::New), Admission::Call);
    }
}
