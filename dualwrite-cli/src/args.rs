//! The command line: global options and subcommands (clap derive).

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use dualwrite_runtime::{Side, Stage};

use crate::location::Location;

const EXIT_CODES: &str = "\
Exit codes:
  0  done, nothing found
  1  done, differences found: `status` saw dead letters (writes a store is known to miss)
  2  could not run: the command line is wrong (unknown stage, malformed URL, missing option)
  3  could not run: a store could not be opened, read or written (missing file, not a
     dualwrite queue, unreachable database)
  4  refused: the store was reached but the operation was refused (a stage guardrail, an id
     that is not a dead letter, no stage stored yet)";

/// The `dualwrite` command: look at and operate a dual-write migration.
#[derive(Debug, Parser)]
#[command(name = "dualwrite", version, about, after_long_help = EXIT_CODES, after_help = EXIT_CODES)]
pub struct Cli {
    /// Where the migration's queue and stage are.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand shares; each can also come from the
/// environment.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The reconciliation queue: `sqlite:<path>` (`postgres:` and `mysql:`
    /// are not supported yet). The file must exist: the tool never creates
    /// one.
    #[arg(long, global = true, env = "DUALWRITE_QUEUE", value_name = "URL")]
    pub queue: Option<Location>,

    /// The shared stage source, if it is not the queue's file.
    #[arg(
        long,
        global = true,
        env = "DUALWRITE_STAGE_SOURCE",
        value_name = "URL"
    )]
    pub stage_source: Option<Location>,

    /// The migration's name in the stage source (the services'
    /// `SqliteStageSource::open_named`).
    #[arg(
        long,
        global = true,
        env = "DUALWRITE_MIGRATION",
        default_value = "default",
        value_name = "NAME"
    )]
    pub migration: String,

    /// Print JSON (one object per line) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A subcommand.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// The stage, queued work per store, the oldest pending age and dead
    /// letters.
    Status(StatusArgs),
    /// Dead letters: operations the worker gave up on.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// Queued work of one key.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// The shared stage.
    #[command(subcommand)]
    Stage(StageCommand),
}

/// `status` options.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Refresh until interrupted (in place on a terminal; one snapshot after
    /// another otherwise).
    #[arg(long)]
    pub watch: bool,
    /// How often `--watch` refreshes.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub interval: Duration,
    /// Stop `--watch` after this many refreshes.
    #[arg(long, value_name = "N", requires = "watch")]
    pub count: Option<u64>,
}

/// `dead` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum DeadCommand {
    /// Every dead letter, oldest first.
    List {
        /// Only this namespace (the trait's).
        #[arg(long)]
        namespace: Option<String>,
    },
    /// One dead letter with its operation.
    Show {
        /// The entry id, as `dead list` shows it.
        id: u64,
    },
    /// Makes dead letters pending again (after fixing the cause); the
    /// worker applies them next.
    Retry {
        /// Entry ids.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<u64>,
        /// Every dead letter (of `--namespace`, if given).
        #[arg(long)]
        all: bool,
        /// With `--all`: only this namespace.
        #[arg(long, requires = "all")]
        namespace: Option<String>,
    },
    /// Deletes dead letters for good: their stores never get those writes.
    Drop {
        /// Entry ids.
        #[arg(required = true)]
        ids: Vec<u64>,
        /// Confirms that the writes are to be lost (repair the rows by hand,
        /// or let verify and repair find them).
        #[arg(long)]
        yes: bool,
    },
}

/// `queue` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum QueueCommand {
    /// The entries waiting for one key, in the order the worker applies
    /// them.
    Key {
        /// The namespace (the trait's, or its `namespace = ".."`).
        namespace: String,
        /// The store they are for: `old` or `new`.
        #[arg(value_parser = parse_side)]
        target: Side,
        /// The key, as `key = ..` displays it.
        key: String,
    },
}

/// `stage` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum StageCommand {
    /// The stored stage.
    Get,
    /// Moves the shared stage, under the guardrails (every instance follows
    /// on its next poll).
    Set(StageSetArgs),
}

/// `stage set` options.
#[derive(Debug, Clone, Args)]
pub struct StageSetArgs {
    /// The stage: off, dual_write, shadow, live, ramp_down or complete.
    pub stage: Stage,
    /// Move whatever the guardrails say (needs `--reason`).
    #[arg(long)]
    pub force: bool,
    /// Why the move is forced; stored with it and shown to every instance.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// For a move that makes the new store serve reads: the share of
    /// compared reads that disagreed recently (0 to 1), as the dashboard
    /// shows it. The services count comparisons in their own memory, so the
    /// tool cannot see them.
    #[arg(long, value_name = "FRACTION", value_parser = parse_fraction)]
    pub observed_mismatch_rate: Option<f64>,
    /// The bound `--observed-mismatch-rate` is held to (the services'
    /// default guardrail: 0.01).
    #[arg(long, value_name = "FRACTION", default_value = "0.01", value_parser = parse_fraction)]
    pub max_mismatch_rate: f64,
}

fn parse_side(text: &str) -> Result<Side, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "old" => Ok(Side::Old),
        "new" => Ok(Side::New),
        _ => Err(format!("expected `old` or `new`, not `{text}`")),
    }
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a number from 0 to 1, not `{text}`"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("expected a number from 0 to 1, not `{text}`"))
    }
}
