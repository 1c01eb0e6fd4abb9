//! The service-extraction example's stores under the faults a service has:
//! a deploy (503, then no listener), a write whose answer comes too late,
//! and a permanent rejection. Needs PostgreSQL (see
//! `examples/local_services`); run with `--features services`.

#[path = "../examples/extract_service/client.rs"]
mod client;
#[path = "../examples/local_services/mod.rs"]
mod local_services;
#[path = "../examples/extract_service/monolith.rs"]
mod monolith;
#[path = "../examples/extract_service/profiles.rs"]
mod profiles;
#[path = "../examples/extract_service/service.rs"]
mod service;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::{DualWrite, Stage, WorkerHandle};
use reqwest::StatusCode;

use client::{classify, Disposition, ProfilesClient, ServiceError};
use local_services::wait_for;
use monolith::MonolithProfiles;
use profiles::{Profile, ProfileError, ProfileRepository};
use service::ProfilesService;

const PATIENCE: Duration = Duration::from_secs(30);

/// One extraction: the monolith's table, the service, the wrapper and its
/// running worker, all unique to the test.
struct Extraction {
    repo: DualWrite<MonolithProfiles, ProfilesClient>,
    service: ProfilesService,
    worker: Option<WorkerHandle>,
    dir: PathBuf,
}

impl Extraction {
    async fn start(name: &str) -> Extraction {
        let run = local_services::run_name(name);
        let dir = local_services::scratch_dir(&run);
        let pool = local_services::postgres().await.unwrap();
        let monolith = MonolithProfiles::create(pool, &run).await.unwrap();
        let service = ProfilesService::start(&dir).await.unwrap();
        let client = ProfilesClient::new(&service.base_url(), Duration::from_secs(2)).unwrap();
        let queue = SqliteQueue::open(dir.join("queue.db")).await.unwrap();
        let repo = DualWrite::builder(monolith, client)
            .queue(queue)
            .stage(Stage::DualWrite)
            .follower_timeout(Duration::from_millis(300))
            .retry(client::retry_policy())
            .build()
            .unwrap();
        let worker = Some(repo.spawn_worker());
        Extraction {
            repo,
            service,
            worker,
            dir,
        }
    }

    async fn caught_up(&self) {
        wait_for("the queue to empty", PATIENCE, || async {
            self.repo
                .queue()
                .stats()
                .await
                .ok()?
                .is_empty()
                .then_some(())
        })
        .await
        .unwrap();
    }

    /// What waits for the service (pending and in flight).
    async fn waiting(&self) -> u64 {
        let stats = self.repo.queue().stats().await.unwrap().new;
        stats.pending + stats.in_flight
    }

    async fn monolith(&self) -> Vec<Profile> {
        self.repo.old_store().list_profiles().await.unwrap()
    }

    async fn extracted(&self) -> Vec<Profile> {
        self.repo.new_store().list_profiles().await.unwrap()
    }

    /// Asserts both sides hold exactly `expected` and that the worker
    /// dead-lettered `dead` writes, then removes everything.
    async fn finish(mut self, expected: &BTreeMap<i64, Profile>, dead: u64) {
        self.caught_up().await;
        let report = self.worker.take().unwrap().shutdown().await.unwrap();
        self.repo.shutdown().await.unwrap();
        let expected: Vec<Profile> = expected.values().cloned().collect();
        let (monolith, extracted) = (self.monolith().await, self.extracted().await);
        assert_eq!(monolith, expected, "the monolith lost or changed a write");
        assert_eq!(extracted, expected, "the service lost or changed a write");
        assert!(profiles::differences(monolith, extracted).is_empty());
        assert_eq!(report.dead_lettered, dead, "{report:?}");
        self.repo.old_store().drop_tables().await.unwrap();
        self.service.close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The profiles a run of acknowledged writes leaves, by id.
#[derive(Default)]
struct Expected(BTreeMap<i64, Profile>);

impl Expected {
    async fn save(&mut self, repo: &impl ProfileRepository, id: i64, email: &str) {
        let name = format!("Customer {id}");
        repo.save_profile(Profile::new(id, email, &name))
            .await
            .unwrap();
        let entry = self
            .0
            .entry(id)
            .or_insert_with(|| Profile::new(id, email, &name));
        entry.email = email.to_owned();
    }

    async fn delete(&mut self, repo: &impl ProfileRepository, id: i64) {
        repo.delete_profile(id).await.unwrap();
        self.0.remove(&id);
    }

    async fn add_points(&mut self, repo: &impl ProfileRepository, id: i64, points: i64) {
        repo.add_loyalty_points(id, points).await.unwrap();
        self.0.get_mut(&id).unwrap().points += points;
    }
}

#[test]
fn status_codes_map_to_retryable_or_permanent() {
    let retryable = [500, 502, 503, 504, 408, 429];
    let permanent = [400, 401, 403, 404, 409, 410, 422];
    for code in retryable {
        let status = StatusCode::from_u16(code).unwrap();
        assert_eq!(classify(status), Disposition::Retryable, "{status}");
    }
    for code in permanent {
        let status = StatusCode::from_u16(code).unwrap();
        assert_eq!(classify(status), Disposition::Permanent, "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_a_deploy_reach_the_service_once_it_is_back() {
    let run = Extraction::start("extract_deploy").await;
    let (repo, mut expected) = (&run.repo, Expected::default());
    for id in 1..=4 {
        expected.save(repo, id, &format!("c{id}@example.com")).await;
        expected.add_points(repo, id, 10).await;
    }
    assert_eq!(run.waiting().await, 0);

    // The old version drains: 503 to everything.
    run.service.set_ready(false);
    let error = run.repo.new_store().get_profile(1).await.unwrap_err();
    let ProfileError::Service(error @ ServiceError::Unavailable { .. }) = error else {
        panic!("a 503 is not Unavailable: {error}");
    };
    assert!(error.is_retryable());
    expected.save(repo, 5, "c5@example.com").await;
    expected.add_points(repo, 2, 7).await;
    expected.save(repo, 1, "first@example.com").await;
    // The listener is down: connections are refused.
    run.service.stop().await;
    let error = run.repo.new_store().get_profile(1).await.unwrap_err();
    let ProfileError::Service(error @ ServiceError::Unreachable(_)) = error else {
        panic!("a refused connection is not Unreachable: {error}");
    };
    assert!(error.is_retryable());
    expected.delete(repo, 4).await;
    expected.add_points(repo, 1, 3).await;
    expected.add_points(repo, 5, 1).await;
    expected.save(repo, 6, "c6@example.com").await;
    // Every write was acknowledged, and every one waits for the service.
    assert_eq!(run.waiting().await, 7);
    assert_eq!(run.monolith().await.len(), 5);

    run.service.restart().await.unwrap();
    run.service.set_ready(true);
    run.finish(&expected.0, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_write_is_applied_once_by_its_idempotency_key() {
    let run = Extraction::start("extract_replay").await;
    let (repo, mut expected) = (&run.repo, Expected::default());
    expected.save(repo, 1, "ada@example.com").await;
    // The service applies the write, then answers after the monolith's
    // follower timeout: the write is queued although it landed.
    run.service.set_answer_delay(Duration::from_secs(1));
    expected.add_points(repo, 1, 20).await;
    run.service.set_answer_delay(Duration::ZERO);
    run.caught_up().await;
    // Only a replay repeats a key: the write was queued, replayed once,
    // and the service did not apply it again.
    assert_eq!(run.service.repeats_skipped(), 1);
    run.finish(&expected.0, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_applies_an_idempotency_key_once_and_refuses_it_for_another_request() {
    let run = Extraction::start("extract_keys").await;
    let mut expected = Expected::default();
    expected.save(&run.repo, 1, "ada@example.com").await;
    let http = reqwest::Client::new();
    let url = format!("{}/profiles/1/points", run.service.base_url());
    let send = |points: i64| {
        let request = http.post(&url).header(service::IDEMPOTENCY_KEY, "key-1");
        request.json(&service::PointsBody { points }).send()
    };
    for _ in 0..3 {
        assert_eq!(send(5).await.unwrap().status(), StatusCode::NO_CONTENT);
    }
    let reused = send(6).await.unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(run.service.repeats_skipped(), 2);
    let profile = run.repo.new_store().get_profile(1).await.unwrap().unwrap();
    assert_eq!(profile.points, 5);
    // The monolith got no points: make it agree before the comparison.
    run.repo.old_store().add_loyalty_points(1, 5).await.unwrap();
    expected.0.get_mut(&1).unwrap().points = 5;
    run.finish(&expected.0, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_write_is_dead_lettered_and_its_key_waits_for_the_operator() {
    let run = Extraction::start("extract_reject").await;
    let (repo, mut expected) = (&run.repo, Expected::default());
    expected.save(repo, 1, "ada@example.com").await;
    expected.save(repo, 2, "brian@example.com").await;

    // The monolith accepts an email the service refuses with 422.
    expected.save(repo, 1, "ada at example.com").await;
    let dead = wait_for("the rejection to be dead-lettered", PATIENCE, || async {
        repo.queue().dead_letters().await.ok()?.into_iter().next()
    })
    .await
    .unwrap();
    assert_eq!(
        dead.attempts, 1,
        "marked permanent, it spends no retries: {dead:?}"
    );
    assert!(dead.error.contains("422"), "{}", dead.error);
    assert!(dead.error.contains("permanent"), "{}", dead.error);
    assert_eq!(dead.method, "save_profile");

    // Its key waits behind it; other keys go on.
    expected.add_points(repo, 1, 5).await;
    expected.add_points(repo, 2, 9).await;
    let brian = wait_for("profile 2 to reach the service", PATIENCE, || async {
        let profile = repo.new_store().get_profile(2).await.ok()??;
        (profile.points == 9).then_some(profile)
    })
    .await
    .unwrap();
    assert_eq!(brian.email, "brian@example.com");
    let ada = repo.new_store().get_profile(1).await.unwrap().unwrap();
    assert_eq!((ada.email.as_str(), ada.points), ("ada@example.com", 0));
    assert_eq!(run.waiting().await, 1);

    // The operator fixes the data, then drops the rejected write.
    expected.save(repo, 1, "ada@example.com").await;
    repo.queue().drop_dead(dead.id).await.unwrap();
    run.finish(&expected.0, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extraction_walks_to_complete_where_reads_go_to_the_service() {
    let run = Extraction::start("extract_stages").await;
    let (repo, mut expected) = (&run.repo, Expected::default());
    let mut id = 0;
    for stage in [Stage::Shadow, Stage::Live, Stage::RampDown] {
        run.caught_up().await;
        repo.stage().set(stage).await.unwrap();
        id += 1;
        expected.save(repo, id, "gus@example.com").await;
        expected.add_points(repo, id, id).await;
        assert!(repo.get_profile(id).await.unwrap().is_some());
    }
    let rate = repo.stage().mismatch_rate();
    assert!(rate.comparisons >= 2, "{rate:?}");
    assert_eq!(rate.disagreements, 0, "{rate:?}");
    run.caught_up().await;
    repo.stage().set(Stage::Complete).await.unwrap();
    let read: Vec<Profile> = repo.list_profiles().await.unwrap();
    assert_eq!(read, expected.0.values().cloned().collect::<Vec<_>>());
    // Reads are the service's now: with it down they fail.
    run.service.stop().await;
    assert!(repo.get_profile(1).await.is_err());
    run.service.restart().await.unwrap();
    run.finish(&expected.0, 0).await;
}
