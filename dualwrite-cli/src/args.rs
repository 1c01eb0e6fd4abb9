//! The command line: global options and subcommands (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use dualwrite_runtime::{Side, Stage};

use crate::location::Location;

const EXIT_CODES: &str = "\
Exit codes:
  0  done, nothing found
  1  done, differences found: `verify` found keys that differ, `status` saw dead letters
     (writes a store is known to miss)
  2  could not run: the command line is wrong (unknown stage, malformed URL, missing option)
  3  could not run: a store could not be opened, read or written (missing file, not a
     dualwrite queue, missing table or column, unreachable database)
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

/// The services' default server-queue prefix
/// (`dualwrite_runtime::queue::DEFAULT_TABLE_PREFIX`, which exists only with
/// a server feature; a test checks they agree).
pub(crate) const QUEUE_PREFIX: &str = "dualwrite_queue_";

/// Options every subcommand shares; each can also come from the
/// environment.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The reconciliation queue: `sqlite:<path>`, or the `postgres://` or
    /// `mysql://` (`mariadb://`) database holding a shared queue's tables.
    /// It must exist: the tool never creates a queue file or tables.
    #[arg(long, global = true, env = "DUALWRITE_QUEUE", value_name = "URL")]
    pub queue: Option<Location>,

    /// The table prefix of a PostgreSQL or MySQL queue (and of its stage
    /// tables), as the services open it.
    #[arg(
        long,
        global = true,
        env = "DUALWRITE_QUEUE_PREFIX",
        default_value = QUEUE_PREFIX,
        value_name = "PREFIX"
    )]
    pub queue_prefix: String,

    /// The shared stage source, if it is not the queue's file or database.
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
    /// Copies the old store's records to the new one, in key order and in
    /// batches, never over a newer copy.
    Backfill(BackfillArgs),
    /// Compares both stores key by key and reports the keys that differ
    /// (exit 1 when any does).
    Verify(VerifyArgs),
    /// Makes the target's record of each differing key what the other
    /// store holds (through the service's queue with --namespace and
    /// --records).
    Repair(RepairArgs),
}

/// The two stores of `backfill`, `verify` and `repair`: a table (or a
/// query) in a SQL database per side. Give the table and key once for both
/// sides, or per side when they differ.
#[derive(Debug, Clone, Args)]
pub struct StoresArgs {
    /// The old database: `sqlite:<path>` (the file must exist),
    /// `postgres://user@host/db` or `mysql://user@host/db` (also `mariadb://`).
    #[arg(long, env = "DUALWRITE_OLD", value_name = "URL")]
    pub old: Option<Location>,
    /// The new database, in the same forms as --old.
    #[arg(long, env = "DUALWRITE_NEW", value_name = "URL")]
    pub new: Option<Location>,
    /// The table on both sides.
    #[arg(long, value_name = "TABLE")]
    pub table: Option<String>,
    /// The old side's table (instead of --table).
    #[arg(long, value_name = "TABLE")]
    pub old_table: Option<String>,
    /// The new side's table (instead of --table).
    #[arg(long, value_name = "TABLE")]
    pub new_table: Option<String>,
    /// Read the old side through this SELECT (renamed columns, changed
    /// types), used as a subquery; with --old-table too, writes go there.
    #[arg(long, value_name = "SELECT")]
    pub old_query: Option<String>,
    /// Read the new side through this SELECT; with --new-table too, writes
    /// go there.
    #[arg(long, value_name = "SELECT")]
    pub new_query: Option<String>,
    /// The key column on both sides (integers or text).
    #[arg(long, value_name = "COLUMN")]
    pub key: Option<String>,
    /// The old side's key column (instead of --key).
    #[arg(long, value_name = "COLUMN")]
    pub old_key: Option<String>,
    /// The new side's key column (instead of --key).
    #[arg(long, value_name = "COLUMN")]
    pub new_key: Option<String>,
    /// The column whose greater value marks the newer record (an
    /// `updated_at` that sorts, a counter); without it a backfill writes
    /// only where the key is absent.
    #[arg(long, value_name = "COLUMN")]
    pub version_column: Option<String>,
    /// Only these columns are fields (comma-separated; default: every
    /// column but the key).
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',')]
    pub columns: Vec<String>,
}

/// The service's queue, for tasks that run beside live dual writes.
#[derive(Debug, Clone, Args)]
pub struct LiveArgs {
    /// The trait's namespace in the queue: with --records (and --queue),
    /// the task runs beside the live service and routes its fixes through
    /// the service's queue.
    #[arg(long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The name the service registered its record stores under
    /// (`Builder::sync_records`).
    #[arg(long, value_name = "NAME")]
    pub records: Option<String>,
    /// The store fixes are written to: the stage's follower (`new` until
    /// `live`, `old` from then on).
    #[arg(long, value_name = "SIDE", default_value = "new", value_parser = parse_side)]
    pub target: Side,
}

/// Checkpointing, for tasks that resume.
#[derive(Debug, Clone, Args)]
pub struct ResumeArgs {
    /// Records per page (and per write transaction).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub batch_size: usize,
    /// A file recording how far the task got; a killed run resumes there.
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// Ignore an unfinished checkpoint and start from the first key.
    #[arg(long)]
    pub restart: bool,
}

/// `backfill` options.
#[derive(Debug, Clone, Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub stores: StoresArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub live: LiveArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub resume: ResumeArgs,
    /// At most this many records per second.
    #[arg(long, value_name = "N")]
    pub rate: Option<f64>,
}

/// `verify` options.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub stores: StoresArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub live: LiveArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub resume: ResumeArgs,
    /// Write every differing key to this file, one JSON object a line (what
    /// `repair --keys` reads).
    #[arg(long, value_name = "PATH")]
    pub keys_to: Option<PathBuf>,
    /// How many differing keys to show.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub sample: usize,
    /// Normalise: ignore trailing spaces in this column (repeatable).
    #[arg(long, value_name = "COLUMN")]
    pub trim_end: Vec<String>,
    /// Normalise: ignore trailing spaces in every text column.
    #[arg(long)]
    pub trim_end_all: bool,
    /// Normalise: compare this column case-insensitively (repeatable).
    #[arg(long, value_name = "COLUMN")]
    pub lowercase: Vec<String>,
    /// Normalise: compare timestamps to this many fractional digits
    /// (`COLUMN=DIGITS`, repeatable).
    #[arg(long, value_name = "COLUMN=DIGITS", value_parser = parse_column_number)]
    pub timestamp_precision: Vec<(String, usize)>,
    /// Normalise: compare decimals at this scale (`COLUMN=SCALE`,
    /// repeatable).
    #[arg(long, value_name = "COLUMN=SCALE", value_parser = parse_column_number)]
    pub decimal_scale: Vec<(String, usize)>,
    /// Normalise: leave this column out of the comparison (repeatable).
    #[arg(long, value_name = "COLUMN")]
    pub ignore: Vec<String>,
}

/// `repair` options.
#[derive(Debug, Clone, Args)]
pub struct RepairArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub stores: StoresArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub live: LiveArgs,
    /// The differing keys, as `verify --keys-to` wrote them.
    #[arg(long, value_name = "PATH")]
    pub keys: Option<PathBuf>,
    /// Keys to repair, besides those of --keys (digits make an integer
    /// key).
    #[arg(value_name = "KEY")]
    pub key_values: Vec<String>,
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
    /// A service instance's Prometheus endpoint (`http://host:9000/metrics`),
    /// repeated (or comma-separated in the variable) for every instance: the
    /// mismatch rate is summed over them, since they started, or over each
    /// `--watch` interval.
    #[arg(
        long,
        env = "DUALWRITE_METRICS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub metrics: Vec<String>,
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
    /// shows it (or measure it with `--metrics`).
    #[arg(long, value_name = "FRACTION", value_parser = parse_fraction, conflicts_with = "metrics")]
    pub observed_mismatch_rate: Option<f64>,
    /// Instead of `--observed-mismatch-rate`: every service instance's
    /// Prometheus endpoint (repeated, or comma-separated in the variable);
    /// the rate is measured over `--metrics-window`.
    #[arg(
        long,
        env = "DUALWRITE_METRICS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub metrics: Vec<String>,
    /// How long `--metrics` watches the comparisons before the move.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub metrics_window: Duration,
    /// The bound the observed mismatch rate is held to (the services'
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

fn parse_column_number(text: &str) -> Result<(String, usize), String> {
    let expected = || format!("expected `COLUMN=NUMBER`, not `{text}`");
    let (column, number) = text.split_once('=').ok_or_else(expected)?;
    let number = number.trim().parse().map_err(|_| expected())?;
    if column.trim().is_empty() {
        return Err(expected());
    }
    Ok((column.trim().to_owned(), number))
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
