//! Extracting a service: the profiles the monolith keeps in PostgreSQL move
//! to a new profiles service that owns them from then on.
//!
//! The new store is not a database but an HTTP API (`service.rs`, an `axum`
//! service with its own SQLite database, started here on a loopback port),
//! and the monolith's new implementation of its `ProfileRepository` trait is
//! a `reqwest` client of it (`client.rs`). `#[dual_write]` on the trait
//! (`profiles.rs`) is the one line the migration adds to the monolith. What
//! this changes, compared with moving between two databases:
//!
//! - **The follower fails the way services fail**: `503` while it deploys,
//!   refused connections while its listener is down, timeouts. The
//!   monolith's writes keep succeeding; what the service missed is queued
//!   and the worker replays it when the service is back (phase 2).
//! - **Replays need idempotency keys.** A write whose answer came too late
//!   is queued and replayed although it landed. Every write carries an
//!   operation id, the same in the request and every replay; the client
//!   sends it as the `Idempotency-Key` header and the service applies a key
//!   once, so an increment is not counted twice (phase 3).
//! - **The service can refuse data the monolith accepted.** A `4xx` is a
//!   permanent rejection: the client maps status codes to retryable or
//!   permanent (`client::classify`) and marks a permanent one with
//!   `reject_permanently()`, so the worker dead-letters it on its first
//!   replay with the service's reason instead of retrying, and its key waits
//!   until an operator has fixed the data and dropped it (phase 4).
//!
//! Then it walks the stages to `Complete`, where the monolith reads through
//! the service, and compares both sides record by record: the exit code is
//! 1 if they differ.
//!
//! ```text
//! cargo run --features services --example extract_service
//! ```
//!
//! It needs PostgreSQL on 127.0.0.1:5432 (database `test`, user `postgres`;
//! `DUALWRITE_POSTGRES_URL` to point elsewhere): `bash .ci/services` starts
//! it. Its tables are named for the run and dropped at the end.

mod client;
#[path = "../local_services/mod.rs"]
mod local_services;
mod monolith;
mod profiles;
mod service;

use std::error::Error;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::{DualWrite, Side, Stage};

use client::ProfilesClient;
use local_services::wait_for;
use monolith::MonolithProfiles;
use profiles::{Profile, ProfileError, ProfileRepository};
use service::ProfilesService;

type Repo = DualWrite<MonolithProfiles, ProfilesClient>;

/// How long the example waits for the worker before calling it a failure.
const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> ExitCode {
    local_services::run_example("extract", |dir| async move { run(&dir).await }).await
}

/// Sets up both sides, runs the extraction, and compares them; `Ok(true)`
/// if they agree.
async fn run(dir: &Path) -> Result<bool, Box<dyn Error>> {
    let table = local_services::run_name("extract_profiles");
    let monolith = MonolithProfiles::create(local_services::postgres().await?, &table).await?;
    let service = ProfilesService::start(dir).await?;
    println!("The monolith's profiles are in PostgreSQL (table {table}); the new profiles");
    println!("service listens on {}.", service.base_url());
    let client = ProfilesClient::new(&service.base_url(), Duration::from_secs(2))?;

    let queue = SqliteQueue::open(dir.join("queue.db")).await?;
    let repo = DualWrite::builder(monolith, client)
        .queue(queue)
        .stage(Stage::DualWrite)
        // A service that does not answer holds a request up this long, then
        // the write is queued.
        .follower_timeout(Duration::from_millis(300))
        .retry(client::retry_policy())
        .build()?;
    // The worker runs from here to the end, as it would in the monolith.
    let worker = repo.spawn_worker();

    let walked = extract(&repo, &service).await;
    let stopped = worker.shutdown().await;
    repo.shutdown().await?;
    walked?;
    stopped?;

    let agree = compare(&repo).await?;
    if agree {
        repo.old_store().drop_tables().await?;
    } else {
        println!("The table {table} is kept to look into.");
    }
    service.close().await;
    Ok(agree)
}

async fn save(repo: &Repo, id: i64, email: &str, name: &str) -> Result<(), ProfileError> {
    println!("  saved profile {id} ({name} <{email}>)");
    repo.save_profile(Profile::new(id, email, name)).await
}

async fn add_points(repo: &Repo, id: i64, points: i64) -> Result<(), ProfileError> {
    println!("  profile {id} earned {points} points");
    repo.add_loyalty_points(id, points).await
}

/// Prints what waits for the service, and returns how many writes wait.
async fn show_queue(repo: &Repo) -> Result<u64, Box<dyn Error>> {
    let waiting = repo.queue().stats().await?.new;
    let (pending, dead) = (waiting.pending + waiting.in_flight, waiting.dead);
    match (pending, dead) {
        (0, 0) => println!("  queue: nothing waits for the service"),
        _ => println!("  queue: {pending} writes wait for the service, {dead} dead-lettered"),
    }
    Ok(pending)
}

/// Waits until the worker has applied everything queued.
async fn caught_up(repo: &Repo) -> Result<(), Box<dyn Error>> {
    Ok(local_services::drained(&repo.queue(), PATIENCE).await?)
}

/// The phases, start to `Complete`.
async fn extract(repo: &Repo, service: &ProfilesService) -> Result<(), Box<dyn Error>> {
    println!("\nPhase 1: both sides are up; writes go to PostgreSQL, then the service");
    save(repo, 1, "ada@example.com", "Ada").await?;
    save(repo, 2, "brian@example.com", "Brian").await?;
    save(repo, 3, "chloe@example.com", "Chloe").await?;
    save(repo, 4, "dmitri@example.com", "Dmitri").await?;
    add_points(repo, 1, 100).await?;
    add_points(repo, 2, 50).await?;
    show_queue(repo).await?;

    println!("\nPhase 2: the service deploys; the monolith keeps working");
    service.set_ready(false);
    println!("  (the old version drains: it answers 503 Service Unavailable)");
    save(repo, 5, "esther@example.com", "Esther").await?;
    add_points(repo, 3, 30).await?;
    service.stop().await;
    println!("  (the listener is down: connections are refused)");
    println!("  profile 4 deleted");
    repo.delete_profile(4).await?;
    add_points(repo, 1, 25).await?;
    if let Some(profile) = repo.get_profile(1).await? {
        println!("  every call succeeded, and reads (from PostgreSQL) still work: {profile}");
    }
    show_queue(repo).await?;
    service.restart().await?;
    service.set_ready(true);
    println!("  (the new version is up on the same port)");
    caught_up(repo).await?;
    println!("  the worker replayed what the service missed");
    show_queue(repo).await?;
    if let Some(profile) = repo.new_store().get_profile(1).await? {
        println!("  the service now has {profile}");
    }

    println!("\nPhase 3: a write lands, but its answer comes after the monolith gave up");
    service.set_answer_delay(Duration::from_secs(1));
    add_points(repo, 2, 20).await?;
    service.set_answer_delay(Duration::ZERO);
    println!("  the write timed out in the request and was queued; the worker replays it");
    caught_up(repo).await?;
    let skipped = service.repeats_skipped();
    println!("  the service saw its Idempotency-Key again and skipped {skipped} repeat(s)");
    let monolith = repo.old_store().get_profile(2).await?;
    let extracted = repo.new_store().get_profile(2).await?;
    if let (Some(monolith), Some(extracted)) = (monolith, extracted) {
        let (old, new) = (monolith.points, extracted.points);
        println!("  points of profile 2: {old} in PostgreSQL, {new} in the service (counted once)");
    }

    println!("\nPhase 4: the service rejects data the monolith accepted");
    save(repo, 1, "ada at example.com", "Ada").await?;
    let dead = wait_for(
        "the rejected write to be dead-lettered",
        PATIENCE,
        || async { repo.queue().dead_letters().await.ok()?.into_iter().next() },
    )
    .await?;
    println!(
        "  after {} attempts the worker dead-lettered it:\n    {}",
        dead.attempts, dead.error
    );
    add_points(repo, 1, 5).await?;
    println!("  later writes of profile 1 wait behind it, in order:");
    show_queue(repo).await?;
    println!("  the operator fixes the data in the monolith, then drops the rejected write:");
    save(repo, 1, "ada@example.com", "Ada").await?;
    repo.queue().drop_dead(dead.id).await?;
    caught_up(repo).await?;
    show_queue(repo).await?;

    walk_stages(repo).await
}

/// Moves through the stages after `DualWrite`, writing and reading at each.
async fn walk_stages(repo: &Repo) -> Result<(), Box<dyn Error>> {
    println!("\nWalking the stages to `complete`:");
    let mut id = 100;
    for stage in [Stage::Shadow, Stage::Live, Stage::RampDown] {
        // The stage refuses to make the service authoritative while writes
        // still wait for it.
        caught_up(repo).await?;
        repo.stage().set(stage).await?;
        id += 1;
        let name = format!("Gus {}", stage.as_str());
        repo.save_profile(Profile::new(id, "gus@example.com", &name))
            .await?;
        let found = repo.get_profile(id).await?;
        let wrote = std::iter::once(stage.authoritative()).chain(stage.follower());
        let wrote: Vec<_> = wrote.map(side_name).collect();
        let found = if found.is_some() { "found" } else { "MISSING" };
        println!(
            "  {:<10} writes: {:<24} reads: {} ({found})",
            stage.as_str(),
            wrote.join(", then "),
            side_name(stage.serving()),
        );
        if stage == Stage::Shadow {
            // Every profile read through the wrapper is compared.
            for id in 1..=5 {
                repo.get_profile(id).await?;
            }
            let rate = repo.stage().mismatch_rate();
            let (compared, differed) = (rate.comparisons, rate.disagreements);
            println!("             {compared} shadow reads compared, {differed} differed");
        }
    }
    caught_up(repo).await?;
    repo.stage().set(Stage::Complete).await?;
    let profiles = repo.list_profiles().await?;
    println!(
        "  complete   the monolith reads through the service: {} profiles",
        profiles.len()
    );
    println!("  PostgreSQL gets no more profile writes: remove #[dual_write] and the old");
    println!("  implementation, and drop the monolith's table when you are ready.");
    Ok(())
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Old => "PostgreSQL",
        Side::New => "service",
    }
}

/// Reads both sides in full and prints every profile on which they differ.
async fn compare(repo: &Repo) -> Result<bool, Box<dyn Error>> {
    println!("\nComparing PostgreSQL and the service record by record");
    let monolith = repo.old_store().list_profiles().await?;
    let extracted = repo.new_store().list_profiles().await?;
    let count = monolith.len().max(extracted.len());
    let differences = profiles::differences(monolith, extracted);
    let show = |profile: &Option<Profile>| {
        profile
            .as_ref()
            .map_or("nothing".into(), Profile::to_string)
    };
    for (id, monolith, extracted) in &differences {
        println!("  profile {id} differs:");
        println!("    PostgreSQL: {}", show(monolith));
        println!("    service:    {}", show(extracted));
    }
    let left = repo.queue().stats().await?;
    if !left.is_empty() {
        println!("  writes are still queued or dead-lettered: {left:?}");
    }
    let agree = differences.is_empty() && left.is_empty();
    match agree {
        true => println!("  Both sides agree: {count} profiles are the same in both."),
        false => println!("  The sides DISAGREE on {} profiles.", differences.len()),
    }
    Ok(agree)
}
