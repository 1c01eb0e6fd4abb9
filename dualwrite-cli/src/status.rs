//! `dualwrite status`: the stage, the queued work per store, the oldest
//! pending age and the dead letters; `--watch` refreshes it.

use std::io::{IsTerminal, Write};
use std::time::SystemTime;

use dualwrite_runtime::queue::TargetStats;
use serde::Serialize;

use crate::args::{GlobalArgs, StatusArgs};
use crate::error::{CliError, Outcome};
use crate::metrics::{self, Comparisons};
use crate::open::{self, OpenQueue, StageFile};
use crate::output;
use crate::stage::StageView;

/// Why the status has no mismatch rate without `--metrics`.
const MISMATCH_RATE_NOTE: &str = "compared reads are counted by each service instance in its own memory, not in the queue; pass each instance's Prometheus endpoint with --metrics, or see dualwrite_mismatches_total / dualwrite_comparisons_total on the dashboard";

#[derive(Debug, Serialize)]
struct Status {
    queue: String,
    stage_source: String,
    /// `None` when no stage is stored yet.
    stage: Option<StageView>,
    old: TargetView,
    new: TargetView,
    dead_letters: u64,
    /// Mismatches per compared read over `mismatch_window`, from the
    /// instances' metrics (`--metrics`); `None` without them, or before any
    /// comparison.
    mismatch_rate: Option<f64>,
    /// What the rate covers: "since the instances started", "the last 2s";
    /// or, without a rate, why there is none.
    mismatch_rate_note: String,
    /// The compared reads and mismatches the rate is of.
    compared: Option<f64>,
    mismatched: Option<f64>,
    taken_at: String,
}

#[derive(Debug, Serialize)]
struct TargetView {
    pending: u64,
    in_flight: u64,
    dead: u64,
    blocked_keys: u64,
    oldest_pending_age_seconds: Option<f64>,
}

impl From<&TargetStats> for TargetView {
    fn from(stats: &TargetStats) -> Self {
        TargetView {
            pending: stats.pending,
            in_flight: stats.in_flight,
            dead: stats.dead,
            blocked_keys: stats.blocked_keys,
            oldest_pending_age_seconds: stats
                .oldest_pending
                .map(|at| output::age(at).as_secs_f64()),
        }
    }
}

pub(crate) async fn run(global: &GlobalArgs, args: &StatusArgs) -> Result<Outcome, CliError> {
    let queue = open::queue(global).await?;
    let result = watch(global, args, &queue).await;
    queue.close().await;
    result
}

async fn watch(
    global: &GlobalArgs,
    args: &StatusArgs,
    queue: &OpenQueue,
) -> Result<Outcome, CliError> {
    let stage_file = StageFile::find(global).await?;
    let in_place = args.watch && !global.json && std::io::stdout().is_terminal();
    let mut refreshes = 0u64;
    let mut previous: Option<Comparisons> = None;
    loop {
        let mut status = collect(global, queue, &stage_file).await?;
        if !args.metrics.is_empty() {
            let now = metrics::scrape(&args.metrics).await?;
            let (window, note) = match previous {
                Some(earlier) => (
                    now.since(earlier),
                    format!(
                        "over the last {}",
                        humantime::format_duration(args.interval)
                    ),
                ),
                None => (now, "since the instances started".to_owned()),
            };
            status.mismatch_rate = window.rate();
            status.mismatch_rate_note = match window.rate() {
                Some(_) => format!("{note}, {} instance(s)", args.metrics.len()),
                None => format!("no compared reads {note}: are shadow reads on?"),
            };
            status.compared = Some(window.compared);
            status.mismatched = Some(window.mismatched);
            previous = Some(now);
        }
        if global.json {
            output::json_line(&status)?;
        } else {
            if in_place {
                // Home the cursor and clear the screen, so the figures stay put.
                print!("\x1b[H\x1b[2J");
            } else if refreshes > 0 {
                println!();
            }
            print!("{}", render(&status));
            let _ = std::io::stdout().flush();
        }
        refreshes += 1;
        let outcome = if status.dead_letters > 0 {
            Outcome::DifferencesFound
        } else {
            Outcome::Clean
        };
        if !args.watch || args.count.is_some_and(|count| refreshes >= count) {
            return Ok(outcome);
        }
        tokio::select! {
            () = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(outcome),
        }
    }
}

async fn collect(
    global: &GlobalArgs,
    queue: &OpenQueue,
    stage_file: &StageFile,
) -> Result<Status, CliError> {
    let stats = queue.admin.stats().await.map_err(CliError::store)?;
    let stage = stage_file
        .load()
        .await?
        .map(|stored| StageView::from(&stored));
    Ok(Status {
        queue: global
            .queue
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        stage_source: stage_file.describe(),
        stage,
        old: TargetView::from(&stats.old),
        new: TargetView::from(&stats.new),
        dead_letters: stats.old.dead + stats.new.dead,
        mismatch_rate: None,
        mismatch_rate_note: MISMATCH_RATE_NOTE.to_owned(),
        compared: None,
        mismatched: None,
        taken_at: output::time(SystemTime::now()),
    })
}

fn render(status: &Status) -> String {
    let mut text = format!("queue        {}\n", status.queue);
    match &status.stage {
        Some(stage) => text.push_str(&format!("stage        {}\n", stage.summary())),
        None => text.push_str(&format!(
            "stage        none stored in {} (a service stores its initial stage when it starts)\n",
            status.stage_source
        )),
    }
    text.push_str("\n             pending  in flight  dead  blocked keys  oldest pending\n");
    for (name, target) in [("old store", &status.old), ("new store", &status.new)] {
        let oldest = target.oldest_pending_age_seconds.map_or_else(
            || "-".to_owned(),
            |age| output::duration(std::time::Duration::from_secs_f64(age)),
        );
        text.push_str(&format!(
            "{name:<12} {:>7}  {:>9}  {:>4}  {:>12}  {oldest}\n",
            target.pending, target.in_flight, target.dead, target.blocked_keys
        ));
    }
    text.push('\n');
    if status.dead_letters > 0 {
        text.push_str(&format!(
            "dead letters {}: writes a store is missing until they are retried (`dualwrite dead list`)\n",
            status.dead_letters
        ));
    } else {
        text.push_str("dead letters 0\n");
    }
    match (status.mismatch_rate, status.compared, status.mismatched) {
        (Some(rate), Some(compared), Some(mismatched)) => text.push_str(&format!(
            "mismatches   {:.2}% ({mismatched} of {compared} compared reads) {}\n",
            rate * 100.0,
            status.mismatch_rate_note
        )),
        (None, Some(_), _) => {
            text.push_str(&format!("mismatches   {}\n", status.mismatch_rate_note))
        }
        _ => text.push_str(&format!(
            "mismatches   unknown here: {}\n",
            status.mismatch_rate_note
        )),
    }
    text.push_str(&format!("taken at     {}\n", status.taken_at));
    text
}
