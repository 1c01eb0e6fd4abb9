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
//! | `--queue URL` | `DUALWRITE_QUEUE` | the reconciliation queue: `sqlite:<path>` (`postgres:` and `mysql:` are refused as not supported yet) |
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
//! | 1 | done, differences found: `status` saw dead letters (writes a store is known to miss) |
//! | 2 | could not run: the command line is wrong (unknown stage, malformed URL, missing option) |
//! | 3 | could not run: a store could not be opened, read or written |
//! | 4 | refused: the store was reached but the operation refused (a guardrail, an id that is not a dead letter, no stage stored) |
//!
//! Errors are one line on standard error, starting with `dualwrite:`.
//!
//! # In your own binary
//!
//! The subcommands are a clap [`Command`] you can mount in your service's
//! own command line, next to your subcommands, and run with [`run`]:
//!
//! ```no_run
//! use clap::Parser;
//!
//! #[derive(Parser)]
//! enum Admin {
//!     /// The service itself.
//!     Serve,
//!     /// The migration's tools.
//!     Dualwrite(dualwrite_cli::Cli),
//! }
//!
//! # async fn serve() {}
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     match Admin::parse() {
//!         Admin::Serve => { serve().await; std::process::ExitCode::SUCCESS }
//!         Admin::Dualwrite(cli) => dualwrite_cli::run(cli).await,
//!     }
//! }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod args;
mod dead;
mod error;
mod location;
mod open;
mod output;
mod stage;
mod status;

use std::process::ExitCode;

use clap::Parser;
#[cfg(doc)]
use dualwrite_runtime::StageHandle;

pub use args::{
    Cli, Command, DeadCommand, GlobalArgs, QueueCommand, StageCommand, StageSetArgs, StatusArgs,
};
pub use error::{CliError, Outcome};
pub use location::{Location, LocationError};

/// Runs a parsed command line: prints its output on standard output and,
/// if it fails, one line on standard error; returns the exit code (see the
/// [crate docs](crate#exit-codes)).
pub async fn run(cli: Cli) -> ExitCode {
    match execute(&cli).await {
        Ok(outcome) => outcome.exit_code(),
        Err(error) => {
            eprintln!("dualwrite: {error}");
            error.exit_code()
        }
    }
}

/// Runs a parsed command line and returns how it ended, printing only its
/// output (for callers that report errors their own way).
///
/// # Errors
///
/// [`CliError`] when the command could not run or was refused.
pub async fn execute(cli: &Cli) -> Result<Outcome, CliError> {
    let global = &cli.global;
    match &cli.command {
        Command::Status(args) => status::run(global, args).await,
        Command::Dead(command) => dead::run(global, command).await,
        Command::Queue(command) => dead::run_queue(global, command).await,
        Command::Stage(command) => stage::run(global, command).await,
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
