//! `dualwrite-bench`: every cost dualwrite adds, each beside the floor it
//! cannot beat (and, for one write, beside LaunchDarkly's migrator), measured
//! in one process with each scenario and its floor run in alternation.
//!
//! ```sh
//! cargo run --release -p dualwrite-bench                 # the whole report
//! cargo run --release -p dualwrite-bench -- --quick      # about a minute
//! cargo run --release -p dualwrite-bench -- --only drain # one scenario
//! ```
//!
//! Each scenario prints `name: ratio=R this=X floor=Y unit=U`, then a
//! summary says which met their targets. The growth tables follow, and the
//! chart is written to `docs/bench.svg` (`--chart` to move it, `--no-chart`
//! to skip it).

mod growth;
mod scenarios;
mod stats;
mod store;

use std::path::PathBuf;

use clap::Parser;

/// The report's flags.
#[derive(Debug, Parser)]
#[command(
    name = "dualwrite-bench",
    about = "dualwrite's costs beside their floors"
)]
pub struct Args {
    /// Shorter runs (about a minute in all), the same lines.
    #[arg(long)]
    pub quick: bool,
    /// Runs only this scenario (its line; `growth` for the growth tables).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(scenarios::NAMES))]
    pub only: Option<String>,
    /// Where the chart of the growth table is written.
    #[arg(long, default_value = "docs/bench.svg")]
    pub chart: PathBuf,
    /// Writes no chart.
    #[arg(long)]
    pub no_chart: bool,
}

fn main() {
    let args = Args::parse();
    store::calibrate();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(scenarios::run(&args));
}
