//! [`ModelConfig`], the settings of a run, and [`ModelFailure`], why a run
//! failed.

use std::fmt;
use std::time::Duration;

#[cfg(doc)]
use super::check_backend;

/// Settings of a run of the suite: how many cases, how long, how time
/// passes. [`ModelConfig::new`] has defaults fit for CI.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub(super) cases: u32,
    pub(super) max_steps: usize,
    pub(super) short: Duration,
    pub(super) time_step: Duration,
    pub(super) check_every_step: bool,
    pub(super) max_shrink_iters: u32,
    pub(super) max_shrink_time: Duration,
    pub(super) seed: Option<u64>,
    pub(super) env_error: Option<String>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ModelConfig {
    /// The environment variable [`with_env`](Self::with_env) reads the
    /// number of cases from.
    pub const CASES_VAR: &'static str = "DUALWRITE_MODEL_CASES";
    /// The environment variable [`with_env`](Self::with_env) reads the
    /// random seed from (printed by every [`ModelFailure`]).
    pub const SEED_VAR: &'static str = "DUALWRITE_MODEL_SEED";

    /// 64 cases of up to 40 steps, short deadlines of 25 ms, time steps of
    /// 40 ms, every step followed by a check of `stats`, `dead_letters` and
    /// `has_work`, and a random seed.
    pub fn new() -> Self {
        ModelConfig {
            cases: 64,
            max_steps: 40,
            short: Duration::from_millis(25),
            time_step: Duration::from_millis(40),
            check_every_step: true,
            max_shrink_iters: 2048,
            max_shrink_time: Duration::from_secs(30),
            seed: None,
            env_error: None,
        }
    }

    /// How many random cases to run (at least 1).
    pub fn cases(mut self, cases: u32) -> Self {
        self.cases = cases.max(1);
        self
    }

    /// The most steps in a case (at least 1).
    pub fn max_steps(mut self, steps: usize) -> Self {
        self.max_steps = steps.max(1);
        self
    }

    /// The short deadline: the prepare expiry, lease or retry delay that
    /// has passed after one [time step](Self::time_step). Keep it small;
    /// it must be well above the backend's clock resolution.
    pub fn short_deadline(mut self, short: Duration) -> Self {
        self.short = short;
        self
    }

    /// How long a "time passes" step sleeps. At least the
    /// [short deadline](Self::short_deadline) plus 5 ms is used.
    pub fn time_step(mut self, step: Duration) -> Self {
        self.time_step = step;
        self
    }

    /// Whether every step is followed by comparing `stats`, `dead_letters`
    /// and `has_work` of every key with the model (default `true`).
    pub fn check_every_step(mut self, check: bool) -> Self {
        self.check_every_step = check;
        self
    }

    /// The most cases tried while shrinking a failure (default 2048).
    pub fn max_shrink_iters(mut self, iters: u32) -> Self {
        self.max_shrink_iters = iters;
        self
    }

    /// The longest time spent shrinking a failure (default 30 s).
    pub fn max_shrink_time(mut self, time: Duration) -> Self {
        self.max_shrink_time = time;
        self
    }

    /// The random seed, to replay a run (by default a new one each run).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Applies the environment: [`CASES_VAR`](Self::CASES_VAR)
    /// (`DUALWRITE_MODEL_CASES`) sets the number of cases and
    /// [`SEED_VAR`](Self::SEED_VAR) (`DUALWRITE_MODEL_SEED`) the seed. A
    /// value that is not a number makes the run fail with a message.
    pub fn with_env(mut self) -> Self {
        if let Ok(text) = std::env::var(Self::CASES_VAR) {
            match text.trim().parse::<u32>() {
                Ok(cases) => self = self.cases(cases),
                Err(_) => {
                    self.env_error = Some(format!(
                        "{}={text:?} is not a number of cases",
                        Self::CASES_VAR
                    ))
                }
            }
        }
        if let Ok(text) = std::env::var(Self::SEED_VAR) {
            match text.trim().parse::<u64>() {
                Ok(seed) => self = self.seed(seed),
                Err(_) => {
                    self.env_error = Some(format!("{}={text:?} is not a seed", Self::SEED_VAR))
                }
            }
        }
        self
    }
}

/// Why [`check_backend`] failed: the backend disagreed with the model (or
/// failed, or panicked) on a generated sequence of steps, or the suite
/// could not run.
#[derive(Debug, Clone)]
pub struct ModelFailure {
    pub(super) message: String,
    pub(super) seed: Option<u64>,
}

impl ModelFailure {
    /// The report: the first mismatch of the smallest failing sequence
    /// found, and that sequence step by step with the backend's answers.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The seed of the run, for [`ModelConfig::seed`] (or
    /// `DUALWRITE_MODEL_SEED`); `None` if the suite did not start.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }
}

impl fmt::Display for ModelFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ModelFailure {}
