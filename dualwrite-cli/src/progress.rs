//! Progress of a backfill, verify or repair on standard error: a bar on a
//! terminal, a plain line at most once a second otherwise (logs, CI).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dualwrite_runtime::migrate::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output;

/// How often a plain progress line is printed.
const LINE_EVERY: Duration = Duration::from_secs(1);

/// Shows a task's progress; cheap to share with the task's observer.
pub(crate) struct Reporter {
    task: &'static str,
    bar: Option<ProgressBar>,
    last_line: Mutex<Option<Instant>>,
}

impl Reporter {
    /// A bar when standard error is a terminal, plain lines otherwise.
    pub(crate) fn new(task: &'static str) -> Arc<Reporter> {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(task);
            bar
        });
        Arc::new(Reporter {
            task,
            bar,
            last_line: Mutex::new(None),
        })
    }

    /// The observer to hand to the task.
    pub(crate) fn observer(self: &Arc<Self>) -> impl Fn(&Progress) + Send + Sync + 'static {
        let reporter = Arc::clone(self);
        move |progress: &Progress| reporter.show(progress)
    }

    fn show(&self, progress: &Progress) {
        let eta = progress
            .eta
            .map(|eta| format!(", {} left", output::duration(eta)))
            .unwrap_or_default();
        let rate = format!("{:.0}/s{eta}", progress.per_second);
        if let Some(bar) = &self.bar {
            if let Some(total) = progress.total {
                bar.set_length(total.max(progress.done));
            }
            bar.set_position(progress.done);
            bar.set_message(rate);
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| at.elapsed() < LINE_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let of_total = progress
            .total
            .map(|total| format!(" of {total}"))
            .unwrap_or_default();
        let cursor = progress
            .cursor
            .as_ref()
            .map(|key| format!(", at key {key}"))
            .unwrap_or_default();
        eprintln!(
            "{}: {}{of_total} records, {rate}{cursor}",
            self.task, progress.done
        );
    }

    /// Clears the bar once the task ended.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
