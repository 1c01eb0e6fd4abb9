//! `dualwrite stage get | set`: the shared stage, moved under the same
//! guardrails a service's own [`StageHandle`] applies.

use std::time::Duration;

use dualwrite_runtime::stage::{StageRecord, StageSource, StoredStage};
use dualwrite_runtime::{Side, Stage, StageError, StageHandle};
use serde::Serialize;

use crate::args::{GlobalArgs, StageCommand, StageSetArgs};
use crate::error::{CliError, Outcome};
use crate::metrics;
use crate::open::{self, StageFile};
use crate::output;

/// A stored stage as the tool prints it.
#[derive(Debug, Serialize)]
pub(crate) struct StageView {
    stage: Stage,
    version: u64,
    rollout: Option<RolloutView>,
    /// The reason of the last move, if it was forced.
    reason: Option<String>,
    changed_at: Option<String>,
    changed_at_unix_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
struct RolloutView {
    stage: Stage,
    percent: f64,
}

impl From<&StoredStage> for StageView {
    fn from(stored: &StoredStage) -> Self {
        StageView {
            stage: stored.record.stage,
            version: stored.version,
            rollout: stored.record.rollout.map(|rollout| RolloutView {
                stage: rollout.stage(),
                percent: rollout.percent(),
            }),
            reason: stored.record.reason.clone(),
            changed_at: stored.changed_at.map(output::time),
            changed_at_unix_ms: stored.changed_at.map(output::unix_ms),
        }
    }
}

impl StageView {
    /// One line: the stage, its version, when, its rollout and reason.
    pub(crate) fn summary(&self) -> String {
        let mut text = format!("{} (version {}", self.stage, self.version);
        if let Some(at) = &self.changed_at {
            text.push_str(&format!(", since {at}"));
        }
        if let Some(rollout) = &self.rollout {
            text.push_str(&format!(
                ", {}% of keys at `{}`",
                rollout.percent, rollout.stage
            ));
        }
        if let Some(reason) = &self.reason {
            text.push_str(&format!(", forced: {reason}"));
        }
        text.push(')');
        text
    }
}

#[derive(Debug, Serialize)]
struct MoveView {
    from: Option<Stage>,
    to: Stage,
    forced: bool,
    reason: Option<String>,
    version: Option<u64>,
    changed: bool,
}

pub(crate) async fn run(global: &GlobalArgs, command: &StageCommand) -> Result<Outcome, CliError> {
    let stage_file = StageFile::find(global).await?;
    match command {
        StageCommand::Get => get(global, &stage_file).await,
        StageCommand::Set(args) => set(global, &stage_file, args).await,
    }
}

async fn get(global: &GlobalArgs, stage_file: &StageFile) -> Result<Outcome, CliError> {
    let stored = stage_file.load().await?;
    let view = stored.as_ref().map(StageView::from);
    if global.json {
        output::json_line(&view)?;
    } else {
        match view {
            Some(view) => println!("{}", view.summary()),
            None => println!(
                "no stage stored in {} (a service stores its initial stage when it starts)",
                stage_file.describe()
            ),
        }
    }
    Ok(Outcome::Clean)
}

async fn set(
    global: &GlobalArgs,
    stage_file: &StageFile,
    args: &StageSetArgs,
) -> Result<Outcome, CliError> {
    let to = args.stage;
    let forced = match (args.force, &args.reason) {
        (true, Some(reason)) if !reason.trim().is_empty() => Some(reason.clone()),
        (true, _) => {
            return Err(CliError::Usage(
                "--force needs a --reason that says why; it is stored with the move".to_owned(),
            ))
        }
        (false, Some(_)) => {
            return Err(CliError::Usage(
                "--reason goes with --force; a move under the guardrails needs none".to_owned(),
            ))
        }
        (false, None) => None,
    };
    let Some(stored) = stage_file.load().await? else {
        return store_first(global, stage_file, to, forced).await;
    };
    let from = stored.record.stage;
    if from == to && forced.is_none() {
        return print_move(
            global,
            &MoveView {
                from: Some(from),
                to,
                forced: false,
                reason: None,
                version: Some(stored.version),
                changed: false,
            },
        );
    }
    let queue = match &forced {
        Some(_) => None,
        None => {
            check_mismatch_rate(from, to, args).await?;
            Some(open::queue(global).await.map_err(|error| match error {
                CliError::Usage(_) => CliError::Usage(
                    "moving the stage without --force needs the queue, to check its backlog: pass --queue (sqlite:<path>, postgres:// or mysql://) or set DUALWRITE_QUEUE".to_owned(),
                ),
                other => other,
            })?)
        }
    };
    let result = move_stage(stage_file, from, to, forced.as_deref(), queue.as_ref()).await;
    if let Some(queue) = queue {
        queue.close().await;
    }
    result?;
    let version = stage_file.load().await?.map(|stored| stored.version);
    print_move(
        global,
        &MoveView {
            from: Some(from),
            to,
            forced: forced.is_some(),
            reason: forced,
            version,
            changed: true,
        },
    )
}

/// The mismatch-rate guardrail, judged from the rate the operator read off
/// the dashboard, or measured from the instances' metrics: only the
/// services see their comparisons.
async fn check_mismatch_rate(from: Stage, to: Stage, args: &StageSetArgs) -> Result<(), CliError> {
    if to.serving() != Side::New || to <= from {
        return Ok(());
    }
    let rate = match (args.observed_mismatch_rate, args.metrics.is_empty()) {
        (Some(rate), _) => Some(rate),
        (None, true) => None,
        (None, false) => {
            let before = metrics::scrape(&args.metrics).await?;
            tokio::time::sleep(args.metrics_window).await;
            let window = metrics::scrape(&args.metrics).await?.since(before);
            match window.rate() {
                Some(rate) => Some(rate),
                None => {
                    return Err(CliError::refused(format!(
                        "refusing to move from `{from}` to `{to}`: no compared reads in the last {} on {} instance(s), so the mismatch-rate guardrail has nothing to judge; shadow reads for longer (or a longer --metrics-window), or --force --reason",
                        humantime::format_duration(args.metrics_window),
                        args.metrics.len()
                    )))
                }
            }
        }
    };
    match rate {
        None => Err(CliError::refused(format!(
            "refusing to move from `{from}` to `{to}`: the new store would serve reads, and the mismatch-rate guardrail needs the services' comparisons, which this tool cannot see; pass the rate the dashboard shows with --observed-mismatch-rate, the instances' endpoints with --metrics, or --force --reason"
        ))),
        Some(rate) if rate > args.max_mismatch_rate => Err(CliError::refused(format!(
            "refusing to move from `{from}` to `{to}`: the observed mismatch rate {:.2}% is above the bound of {:.2}%; fix the cause and shadow again, or --force --reason",
            rate * 100.0,
            args.max_mismatch_rate * 100.0
        ))),
        Some(_) => Ok(()),
    }
}

/// Moves through a [`StageHandle`] on the shared source, so the backlog
/// guardrail, the version check against other writers and the stored
/// reason are the services' own.
async fn move_stage(
    stage_file: &StageFile,
    from: Stage,
    to: Stage,
    forced: Option<&str>,
    queue: Option<&open::OpenQueue>,
) -> Result<(), CliError> {
    let source = stage_file
        .open(false)
        .await?
        .ok_or_else(|| CliError::store("the stage table vanished"))?;
    // The handle only needs the source at start; it is dropped (and stops
    // polling) when the command ends.
    let handle = StageHandle::with_source(source, from, Duration::from_secs(3600))
        .await
        .map_err(CliError::store)?;
    if let Some(queue) = queue {
        handle.watch_queue(queue.shared());
    }
    let moved = match forced {
        Some(reason) => handle.force(to, reason).await,
        None => handle.set(to).await,
    };
    moved.map_err(|error| match error {
        StageError::Queue { .. } | StageError::Source { .. } => CliError::store(error),
        other => CliError::refused(other),
    })?;
    Ok(())
}

/// A forced first move into a source that holds no stage yet.
async fn store_first(
    global: &GlobalArgs,
    stage_file: &StageFile,
    to: Stage,
    forced: Option<String>,
) -> Result<Outcome, CliError> {
    let Some(reason) = forced else {
        return Err(CliError::refused(format!(
            "no stage is stored in {} yet, so there is no stage to move from: start a service with this stage source (it stores its initial stage), or store one with --force --reason",
            stage_file.describe()
        )));
    };
    let source = stage_file
        .open(true)
        .await?
        .ok_or_else(|| CliError::store("the stage table could not be created"))?;
    let record = StageRecord {
        reason: Some(reason.clone()),
        ..StageRecord::new(to)
    };
    let version = source
        .store(None, &record)
        .await
        .map_err(CliError::store)?
        .ok_or_else(|| {
            CliError::refused(format!(
                "another process stored a stage in {} meanwhile; decide again (`dualwrite stage get`)",
                source.describe()
            ))
        })?;
    print_move(
        global,
        &MoveView {
            from: None,
            to,
            forced: true,
            reason: Some(reason),
            version: Some(version),
            changed: true,
        },
    )
}

fn print_move(global: &GlobalArgs, view: &MoveView) -> Result<Outcome, CliError> {
    if global.json {
        output::json_line(view)?;
    } else if !view.changed {
        println!("already at `{}`; nothing changed", view.to);
    } else {
        let from = view
            .from
            .map_or_else(|| "no stored stage".to_owned(), |from| format!("`{from}`"));
        let version = view
            .version
            .map_or_else(String::new, |version| format!(" (version {version})"));
        match &view.reason {
            Some(reason) => println!("forced from {from} to `{}`{version}: {reason}", view.to),
            None => println!("moved from {from} to `{}`{version}", view.to),
        }
    }
    Ok(Outcome::Clean)
}
