//! Progress of a running task, for a command-line tool's bars or a log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::records::RecordKey;

/// How far a backfill, verify or repair has got. Handed to a
/// [`ProgressObserver`] after every batch.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// `"backfill"`, `"verify"` or `"repair"`.
    pub task: &'static str,
    /// Records handled so far, including those of the runs this one
    /// resumed.
    pub done: u64,
    /// How many there are in all, when the store can count them (the
    /// source's count for a backfill, the old store's for a verify).
    pub total: Option<u64>,
    /// Records per second in this run.
    pub per_second: f64,
    /// The time left at this run's rate, when `total` is known.
    #[serde(serialize_with = "seconds")]
    pub eta: Option<Duration>,
    /// The last key handled.
    pub cursor: Option<RecordKey>,
}

fn seconds<S: serde::Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => s.serialize_some(&value.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// Receives [`Progress`]. Any `Fn(&Progress) + Send + Sync` is one:
///
/// ```
/// # use dualwrite_runtime::migrate::Progress;
/// let print = |progress: &Progress| eprintln!("{} records, {:.0}/s", progress.done, progress.per_second);
/// # let _: &dyn dualwrite_runtime::migrate::ProgressObserver = &print;
/// ```
pub trait ProgressObserver: Send + Sync {
    /// Called after each batch, on the task's own thread: return quickly.
    fn progress(&self, progress: &Progress);
}

impl<F: Fn(&Progress) + Send + Sync> ProgressObserver for F {
    fn progress(&self, progress: &Progress) {
        self(progress);
    }
}

/// Measures one run's rate and tells the observer.
pub(crate) struct Meter {
    task: &'static str,
    started: Instant,
    done_before: u64,
    total: Option<u64>,
    observer: Option<Arc<dyn ProgressObserver>>,
}

impl Meter {
    pub(crate) fn new(
        task: &'static str,
        done_before: u64,
        total: Option<u64>,
        observer: Option<Arc<dyn ProgressObserver>>,
    ) -> Self {
        Meter {
            task,
            started: Instant::now(),
            done_before,
            total,
            observer,
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records per second in this run, given everything done so far.
    pub(crate) fn rate(&self, done: u64) -> f64 {
        let seconds = self.started.elapsed().as_secs_f64();
        if seconds > 0.0 {
            done.saturating_sub(self.done_before) as f64 / seconds
        } else {
            0.0
        }
    }

    pub(crate) fn report(&self, done: u64, cursor: Option<&RecordKey>) {
        let Some(observer) = &self.observer else {
            return;
        };
        let per_second = self.rate(done);
        let eta = self.total.and_then(|total| {
            (per_second > 0.0)
                .then(|| Duration::from_secs_f64(total.saturating_sub(done) as f64 / per_second))
        });
        observer.progress(&Progress {
            task: self.task,
            done,
            total: self.total,
            per_second,
            eta,
            cursor: cursor.cloned(),
        });
    }
}

/// Keeps a task under a number of records per second.
pub(crate) struct Pacer {
    per_second: Option<f64>,
    started: tokio::time::Instant,
    done: u64,
}

impl Pacer {
    pub(crate) fn new(per_second: Option<f64>) -> Self {
        Pacer {
            per_second,
            started: tokio::time::Instant::now(),
            done: 0,
        }
    }

    /// Counts `records` and sleeps until the rate allows the next batch.
    pub(crate) async fn pace(&mut self, records: usize) {
        self.done += records as u64;
        if let Some(per_second) = self.per_second {
            let due = self.started + Duration::from_secs_f64(self.done as f64 / per_second);
            tokio::time::sleep_until(due).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_pacer_holds_a_task_to_its_rate() {
        let mut pacer = Pacer::new(Some(100.0));
        let started = tokio::time::Instant::now();
        for _ in 0..5 {
            pacer.pace(50).await;
        }
        assert_eq!(started.elapsed(), Duration::from_millis(2_500));
    }

    #[test]
    fn progress_reports_an_eta_from_the_rate_of_this_run() {
        let seen = Arc::new(std::sync::Mutex::new(None));
        let sink = Arc::clone(&seen);
        let meter = Meter::new(
            "backfill",
            100,
            Some(1_100),
            Some(Arc::new(move |progress: &Progress| {
                *sink.lock().unwrap() = Some(progress.clone());
            })),
        );
        std::thread::sleep(Duration::from_millis(20));
        meter.report(200, None);
        let progress = seen.lock().unwrap().clone().unwrap();
        assert_eq!(progress.done, 200);
        let eta = progress.eta.unwrap();
        // 100 records in >= 20 ms, 900 left: at least 9 times as long again.
        assert!(eta >= Duration::from_millis(170), "{eta:?}");
    }
}
