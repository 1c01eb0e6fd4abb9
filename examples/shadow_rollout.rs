//! Shadow reads catch a bug in the new store before it serves anyone.
//!
//! The service reads customer profiles through a `ProfileRepository`. The
//! new store has a bug in one method: its `find` maps the row with the
//! display name cut to 16 characters (a column declared too narrow in the
//! new schema). The example:
//!
//! 1. dual-writes 200 profiles;
//! 2. moves to `Shadow` and serves read traffic from the old store while
//!    every read is compared with the new one, printing the mismatches
//!    found, with their keys and values;
//! 3. tries to move to `Live` and is refused by the mismatch-rate guardrail;
//! 4. deploys the fix, resets the comparisons and shadows again, then rolls
//!    `Live` out to 10% of keys and finally to all of them;
//! 5. prints the metrics in Prometheus text format.
//!
//! ```text
//! cargo run --example shadow_rollout
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dualwrite_runtime::observe::{ComparisonReport, Observer};
use dualwrite_runtime::{dual_write, DualWrite, InMemoryQueue, Rollout, Stage};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::{Deserialize, Serialize};

/// A customer profile, whichever store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    id: u64,
    email: String,
    display_name: String,
}

/// A store's failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RepoError(String);

/// The repository trait the service already had; the attribute is the one
/// line the migration adds.
#[dual_write(namespace = "profiles")]
pub trait ProfileRepository: Send + Sync {
    /// Creates or replaces a profile.
    #[dual_write(write, key = profile.id)]
    fn save(&self, profile: Profile) -> impl Future<Output = Result<(), RepoError>> + Send;

    /// Reads a profile. `report_values`: mismatch reports carry both
    /// stores' results (profiles are not secret in this example).
    #[dual_write(read, key = id, report_values)]
    fn find(&self, id: u64) -> impl Future<Output = Result<Option<Profile>, RepoError>> + Send;

    /// How many profiles there are (no key: follows the base stage).
    #[dual_write(read)]
    fn count(&self) -> impl Future<Output = Result<usize, RepoError>> + Send;
}

/// The store the data lives in today.
#[derive(Default)]
struct OldStore(Mutex<BTreeMap<u64, Profile>>);

impl ProfileRepository for OldStore {
    async fn save(&self, profile: Profile) -> Result<(), RepoError> {
        self.0.lock().unwrap().insert(profile.id, profile);
        Ok(())
    }
    async fn find(&self, id: u64) -> Result<Option<Profile>, RepoError> {
        Ok(self.0.lock().unwrap().get(&id).cloned())
    }
    async fn count(&self) -> Result<usize, RepoError> {
        Ok(self.0.lock().unwrap().len())
    }
}

/// The store the data moves to: rows keyed by id with the columns apart.
#[derive(Default)]
struct NewStore {
    rows: Mutex<BTreeMap<u64, (String, String)>>,
    /// Whether the fix for the narrow column has been deployed.
    fixed: AtomicBool,
}

impl ProfileRepository for NewStore {
    async fn save(&self, profile: Profile) -> Result<(), RepoError> {
        let row = (profile.email, profile.display_name);
        self.rows.lock().unwrap().insert(profile.id, row);
        Ok(())
    }
    async fn find(&self, id: u64) -> Result<Option<Profile>, RepoError> {
        let row = self.rows.lock().unwrap().get(&id).cloned();
        Ok(row.map(|(email, mut display_name)| {
            if !self.fixed.load(Ordering::SeqCst) {
                // The bug: the new schema's column holds 16 characters.
                display_name = display_name.chars().take(16).collect();
            }
            Profile {
                id,
                email,
                display_name,
            }
        }))
    }
    async fn count(&self) -> Result<usize, RepoError> {
        Ok(self.rows.lock().unwrap().len())
    }
}

/// Keeps the mismatches for the report at the end of each phase.
#[derive(Default)]
struct Mismatches(Mutex<Vec<ComparisonReport>>);

impl Observer for Mismatches {
    fn on_mismatch(&self, report: &ComparisonReport) {
        self.0.lock().unwrap().push(report.clone());
    }
}

impl Mismatches {
    fn take(&self) -> Vec<ComparisonReport> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

const NAMES: [&str; 5] = [
    "Ada Lovelace",
    "Grace Brewster Murray Hopper",
    "Alan Turing",
    "Margaret Heafield Hamilton",
    "Edsger Wybe Dijkstra",
];

type Repo = DualWrite<OldStore, NewStore>;

/// Reads every profile through the wrapper, as the service's traffic
/// would, and counts the profiles callers got wrong.
async fn read_traffic(repo: &Repo) -> Result<usize, RepoError> {
    let mut wrong = 0;
    for id in 0..200 {
        let profile = repo.find(id).await?;
        let expected = NAMES[(id % 5) as usize];
        wrong += usize::from(profile.is_none_or(|profile| profile.display_name != expected));
    }
    repo.count().await?;
    Ok(wrong)
}

async fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let mismatches = Arc::new(Mismatches::default());
    let repo = DualWrite::builder(OldStore::default(), NewStore::default())
        .queue(InMemoryQueue::new())
        .stage(Stage::DualWrite)
        .compare_timeout(Duration::from_millis(50))
        .without_tracing_observer()
        .shared_observer(Arc::clone(&mismatches) as Arc<dyn Observer>)
        .build()?;

    println!("1. Dual-writing 200 profiles (stage `dual_write`).");
    for id in 0..200u64 {
        let name = NAMES[(id % 5) as usize];
        repo.save(Profile {
            id,
            email: format!("user{id}@example.com"),
            display_name: name.to_owned(),
        })
        .await?;
    }

    println!(
        "\n2. Moving to `shadow`: the old store serves, every read is compared with the new one."
    );
    repo.stage().set(Stage::Shadow).await?;
    let wrong_in_shadow = read_traffic(&repo).await?;
    let found = mismatches.take();
    let rate = repo.stage().mismatch_rate();
    println!(
        "   {} of {} compared reads disagreed. The first three, with their keys:",
        rate.disagreements, rate.comparisons
    );
    for report in found.iter().take(3) {
        println!(
            "   - {}::{} key {}: {} ({} served)\n       old: {}\n       new: {}",
            report.namespace,
            report.method,
            report.key.as_ref().map_or("-", |key| key.as_str()),
            report.outcome,
            report.serving,
            report.serving_value.as_deref().unwrap_or("-"),
            report.compared_value.as_deref().unwrap_or("-"),
        );
    }
    println!("   Callers got {wrong_in_shadow} wrong profiles: the old store served them all.");

    println!("\n3. Trying to move to `live` (the new store would serve reads):");
    match repo.stage().set(Stage::Live).await {
        Err(refused) => println!("   refused: {refused}"),
        Ok(_) => {
            println!("   the move was NOT refused, which is wrong");
            return Ok(false);
        }
    }

    println!(
        "\n4. Deploying the fix for the narrow column, resetting the comparisons, shadowing again."
    );
    repo.new_store().fixed.store(true, Ordering::SeqCst);
    repo.stage().reset_comparisons();
    let mut wrong = read_traffic(&repo).await?;
    let rate = repo.stage().mismatch_rate();
    println!(
        "   {} of {} compared reads disagreed.",
        rate.disagreements, rate.comparisons
    );
    let rollout = Rollout::new(Stage::Live, 10.0)?;
    repo.stage().set_rollout(Some(rollout)).await?;
    wrong += read_traffic(&repo).await?;
    println!("   Rolled out: {rollout}; those keys are now served by the new store, compared with the old.");
    repo.stage().set(Stage::Live).await?;
    repo.stage().set_rollout(None).await?;
    wrong += read_traffic(&repo).await?;
    println!(
        "   Moved to `{}`: every read is served by the new store.",
        repo.stage().get()
    );
    let late = mismatches.take();
    repo.record_queue_metrics().await?;

    println!("\n5. Metrics (Prometheus text format; latency quantiles left out, sums and counts kept):\n");
    for line in prometheus.render().lines() {
        if line.contains("dualwrite_") && !line.contains("quantile=") {
            println!("{line}");
        }
    }
    Ok(late.is_empty() && !found.is_empty() && wrong_in_shadow == 0 && wrong == 0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("the example did not go as described");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
