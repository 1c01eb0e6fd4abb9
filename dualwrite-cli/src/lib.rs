//! The `dualwrite` command-line tool: look at and operate a dual-write
//! migration from a shell, or from your own binary.
//!
//! ```text
//! $ export DUALWRITE_QUEUE=sqlite:/var/lib/orders/dualwrite-queue.db
//! $ dualwrite status
//! $ dualwrite status --watch --interval 5s
//! $ dualwrite dead list
//! $ dualwrite dead show 42
//! $ dualwrite dead retry 42 43        # or: dualwrite dead retry --all --namespace orders
//! $ dualwrite dead drop 44 --yes
//! $ dualwrite queue key orders new 1001
//! $ dualwrite stage get
//! $ dualwrite stage set shadow
//! $ dualwrite stage set live --observed-mismatch-rate 0.0004
//! $ dualwrite stage set dual_write --force --reason "new store returns stale rows, INC-2211"
//!
//! $ export DUALWRITE_OLD=sqlite:/var/lib/orders/legacy.db DUALWRITE_NEW=sqlite:/var/lib/orders/orders.db
//! $ dualwrite backfill --old-table legacy_orders --new-table orders --key id \
//!       --version-column updated_at --rate 5000 --checkpoint backfill.json
//! $ dualwrite verify --old-query "SELECT order_no AS id, amount AS total_cents FROM legacy_orders" \
//!       --new-table orders --key id --columns total_cents --keys-to differences.jsonl
//! $ dualwrite repair --table orders --key id --keys differences.jsonl \
//!       --namespace orders --records orders     # through the service's queue
//! ```
//!
//! Every command takes `--json` (one JSON object or array per line, for
//! scripts). The operator's runbook (`docs/runbook.md` in the repository)
//! says which command to run at each stage.
//!
//! # Where it looks
//!
//! | option | environment | meaning |
//! |---|---|---|
//! | `--queue URL` | `DUALWRITE_QUEUE` | the reconciliation queue: `sqlite:<path>` (PostgreSQL and MySQL queues are refused as not supported yet) |
//! | `--stage-source URL` | `DUALWRITE_STAGE_SOURCE` | the shared stage, if it is not in the queue's file |
//! | `--migration NAME` | `DUALWRITE_MIGRATION` | the stage row (`SqliteStageSource::open_named`; default `default`) |
//!
//! The tool never creates a file and never touches one that is not
//! dualwrite's: a missing path, an empty file, a file that is not SQLite or
//! a SQLite database that is not a queue (its `application_id`) is an error
//! naming the path, and nothing is written. Each check runs through a
//! read-only connection before the runtime opens the file.
//!
//! # What `status` can and cannot know
//!
//! From the queue file: the stored stage (version, rollout, last forced
//! reason), the pending, in-flight and dead operations per store, the keys
//! blocked behind dead letters and the age of the oldest pending operation.
//! Not the recent mismatch rate: each service instance counts its compared
//! reads in its own memory and publishes them as metrics
//! (`dualwrite_comparisons_total`, `dualwrite_mismatches_total`); `status`
//! says so rather than print a number it does not have.
//!
//! # Backfill, verify, repair
//!
//! They run the runtime's [`migrate`](dualwrite_runtime::migrate) tasks
//! between two SQL databases of any kind: `sqlite:<path>`,
//! `postgres://..` and `mysql://..` (or `mariadb://..`) per side, the
//! server drivers behind the default features `postgres` and `mysql`; a table or a query per side
//! (`--table`, or `--old-table` / `--new-table`; `--old-query` /
//! `--new-query` read through a `SELECT` of your own, so renamed columns and
//! changed types line up; `--key` or `--old-key` / `--new-key` name the key
//! column). Each side is checked before any work starts: a missing file
//! (never created), table or column is an error naming it, and nothing is
//! written. Progress goes to standard error: a bar on a terminal, a line a
//! second otherwise; the report goes to standard output (`--json` for the
//! report as JSON).
//!
//! - `backfill` copies old to new in key order, `--batch-size` records a
//!   transaction, at most `--rate` a second, never over a newer copy
//!   (`--version-column`; without one, only where the key is absent), and
//!   resumes from `--checkpoint` after a kill.
//! - `verify` walks both sides by key, one page of each in memory, and
//!   reports matching, different, missing-in-new and extra-in-new keys: a
//!   sample on screen, every key to `--keys-to`. Normalisers even out
//!   representations: `--trim-end`, `--trim-end-all`, `--lowercase`,
//!   `--timestamp-precision COLUMN=DIGITS`, `--decimal-scale COLUMN=SCALE`,
//!   `--ignore`. It exits 1 when any key differs.
//! - `repair` makes the target's record of each key (`--keys FILE` from
//!   verify, or keys as arguments) what the other store holds.
//!
//! Beside a live service, give `--queue`, `--namespace` (the trait's) and
//! `--records` (the name its wrapper registered with `.sync_records(..)`):
//! backfill then queues a key-level sync for each key that changed while
//! it was copied, verify re-checks a differing key after its queued work
//! drains, and repair queues key-level syncs for the service's worker
//! instead of writing the store itself. `--target old` points verify's
//! syncs and repair at the old store (from `live` on).
//!
//! # Stage moves and their guardrails
//!
//! `stage set` moves the shared stage through a [`StageHandle`] on the same
//! source the services poll, with the queue attached
//! ([`StageHandle::watch_queue`]), so it is refused exactly when a service's
//! own move would be for its backlog: a store that would become
//! authoritative, or stop being written, while it has queued work. The
//! mismatch-rate guardrail needs the services' comparisons, so a move that
//! makes the new store serve reads (into `live`, `ramp_down` or `complete`)
//! asks for the rate the dashboard shows (`--observed-mismatch-rate`,
//! checked against `--max-mismatch-rate`, default 1%). `--force --reason`
//! overrides every guardrail; the reason is stored with the move and every
//! instance reports it. A source with no stored stage yet (no service has
//! started with it) is only written by a forced move.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done, nothing found |
//! | 1 | done, differences found: `verify` found keys that differ, `status` saw dead letters (writes a store is known to miss) |
//! | 2 | could not run: the command line is wrong (unknown stage, malformed URL, missing option) |
//! | 3 | could not run: a store could not be opened, read or written (a missing file, table or column) |
//! | 4 | refused: the store was reached but the operation refused (a guardrail, an id that is not a dead letter, no stage stored) |
//!
//! Errors are one line on standard error, starting with `dualwrite:`.
//!
//! # In your own binary
//!
//! The command line is a clap parser ([`Cli`]) you can mount in your
//! service's own, next to your subcommands. [`run_with_records`] runs it
//! with your record stores ([`RecordStore`](dualwrite_runtime::records::RecordStore)
//! implementations: a store only your code can read, a schema per side),
//! which `backfill`, `verify` and `repair` then use instead of SQL tables;
//! [`run`] runs it with the tables its options name.
//!
//! ```no_run
//! use clap::Parser;
//! use dualwrite_runtime::records::{RecordPair, SqliteTable};
//!
//! #[derive(Parser)]
//! enum Admin {
//!     /// The service itself.
//!     Serve,
//!     /// The migration's tools: status, dead letters, stages, backfill, verify, repair.
//!     Dualwrite(dualwrite_cli::Cli),
//! }
//!
//! # async fn serve() {}
//! # async fn stores() -> (SqliteTable, SqliteTable) { unimplemented!() }
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     match Admin::parse() {
//!         Admin::Serve => { serve().await; std::process::ExitCode::SUCCESS }
//!         Admin::Dualwrite(cli) => {
//!             let (old, new) = stores().await; // your RecordStore implementations
//!             dualwrite_cli::run_with_records(cli, RecordPair::new(old, new)).await
//!         }
//!     }
//! }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod args;
mod dead;
mod error;
mod location;
mod metrics;
mod migrate;
mod open;
mod output;
mod progress;
mod stage;
mod status;
mod stores;

use std::process::ExitCode;

use clap::Parser;
use dualwrite_runtime::records::RecordPair;
#[cfg(doc)]
use dualwrite_runtime::StageHandle;

pub use args::{
    BackfillArgs, Cli, Command, DeadCommand, GlobalArgs, LiveArgs, QueueCommand, RepairArgs,
    ResumeArgs, StageCommand, StageSetArgs, StatusArgs, StoresArgs, VerifyArgs,
};
pub use error::{CliError, Outcome};
pub use location::{Location, LocationError};

/// Runs a parsed command line: prints its output on standard output and,
/// if it fails, one line on standard error; returns the exit code (see the
/// [crate docs](crate#exit-codes)). `backfill`, `verify` and `repair` run
/// on the SQL tables their options name.
pub async fn run(cli: Cli) -> ExitCode {
    exit_code(execute(&cli, None).await)
}

/// Like [`run`], with your own record stores for `backfill`, `verify` and
/// `repair` (stores only your code can read: another database client, an
/// API, a different schema per side). The options naming SQL tables are
/// then refused.
pub async fn run_with_records(cli: Cli, records: RecordPair) -> ExitCode {
    exit_code(execute(&cli, Some(&records)).await)
}

fn exit_code(result: Result<Outcome, CliError>) -> ExitCode {
    match result {
        Ok(outcome) => outcome.exit_code(),
        Err(error) => {
            eprintln!("dualwrite: {error}");
            error.exit_code()
        }
    }
}

/// Runs a parsed command line and returns how it ended, printing only its
/// output (for callers that report errors their own way); `records`, if
/// given, are the stores of `backfill`, `verify` and `repair`.
///
/// # Errors
///
/// [`CliError`] when the command could not run or was refused.
pub async fn execute(cli: &Cli, records: Option<&RecordPair>) -> Result<Outcome, CliError> {
    let global = &cli.global;
    match &cli.command {
        Command::Status(args) => status::run(global, args).await,
        Command::Dead(command) => dead::run(global, command).await,
        Command::Queue(command) => dead::run_queue(global, command).await,
        Command::Stage(command) => stage::run(global, command).await,
        Command::Backfill(args) => migrate::backfill(global, args, records).await,
        Command::Verify(args) => migrate::verify(global, args, records).await,
        Command::Repair(args) => migrate::repair(global, args, records).await,
    }
}

/// What the `dualwrite` binary does: parses the process's arguments (exit 2
/// on a bad command line, with clap's message) and runs them on a
/// single-threaded runtime.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dualwrite: cannot start the async runtime: {error}");
            return ExitCode::from(3);
        }
    };
    runtime.block_on(run(cli))
}
