//! Store calls with a timeout and panic isolation, as the write path, the
//! worker and the read path all make them: [`call`] (a timeout and a caught
//! panic), [`caught`] (a caught panic, the time bounded by the caller) and
//! [`caught_blocking`] (a blocking call, which nothing can interrupt). A
//! failure reads `panicked: <message>` or `timed out after <duration>`.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;

/// Why a guarded call did not return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// It panicked, with this message.
    Panicked(String),
    /// It ran longer than this.
    TimedOut(Duration),
}

impl Failure {
    /// The metric outcome of this failure.
    pub(crate) fn outcome(&self) -> crate::observe::CallOutcome {
        match self {
            Failure::Panicked(_) => crate::observe::CallOutcome::Panic,
            Failure::TimedOut(_) => crate::observe::CallOutcome::Timeout,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Panicked(message) => write!(f, "panicked: {message}"),
            Failure::TimedOut(after) => write!(f, "timed out after {after:?}"),
        }
    }
}

/// Runs `call` for at most `timeout`, catching a panic.
pub(crate) async fn call<F: Future>(timeout: Duration, call: F) -> Result<F::Output, Failure> {
    match tokio::time::timeout(timeout, caught(call)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Failure::TimedOut(timeout)),
    }
}

/// Awaits `call`, catching a panic (for calls whose time is bounded
/// elsewhere, such as a compared read racing the serving one).
pub(crate) fn caught<F: Future>(call: F) -> impl Future<Output = Result<F::Output, Failure>> {
    AssertUnwindSafe(call)
        .catch_unwind()
        .map(|outcome| outcome.map_err(|panic| Failure::Panicked(crate::panic_message(&*panic))))
}

/// Runs a blocking `call` (which no timeout can interrupt), catching a panic.
pub(crate) fn caught_blocking<T>(call: impl FnOnce() -> T) -> Result<T, Failure> {
    std::panic::catch_unwind(AssertUnwindSafe(call))
        .map_err(|panic| Failure::Panicked(crate::panic_message(&*panic)))
}

/// Sleeps on the runtime's timer, or blocks the thread when there is no
/// runtime (the blocking write path runs its async parts with `block_on`).
pub(crate) async fn pause(duration: Duration) {
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::time::sleep(duration).await;
    } else {
        std::thread::sleep(duration);
    }
}
