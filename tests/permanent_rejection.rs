//! A store that knows a write can never succeed says so with
//! `reject_permanently()`: the worker dead-letters the operation on that
//! attempt instead of spending its retry budget, while a failure without
//! the mark is retried until the budget is spent. The first property is
//! checked on every queue x delivery x stage with a follower.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dualwrite_runtime::queue::SqliteQueue;
use dualwrite_runtime::{
    dual_write, reject_permanently, Delivery, DualWrite, InMemoryQueue, ReconciliationQueue,
    RetryPolicy, Side, Stage,
};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    #[error("invalid email {0:?}")]
    Invalid(String),
}

#[dual_write]
pub trait Profiles: Send + Sync {
    #[dual_write(write, key = id)]
    async fn save(&self, id: u32, email: String) -> Result<(), ProfileError>;
}

/// A store that, when `strict`, refuses emails without an `@`
/// (permanently, when told to mark it). The old store is not strict: the
/// monolith took such emails.
#[derive(Clone, Default)]
struct Service {
    rows: Arc<Mutex<BTreeMap<u32, String>>>,
    strict: bool,
    mark_permanent: bool,
    /// What `reject_permanently` answered, per call.
    listened: Arc<Mutex<Vec<bool>>>,
}

impl Profiles for Service {
    async fn save(&self, id: u32, email: String) -> Result<(), ProfileError> {
        if self.strict && !email.contains('@') {
            if self.mark_permanent {
                let listening = reject_permanently();
                self.listened.lock().unwrap().push(listening);
            }
            return Err(ProfileError::Invalid(email));
        }
        self.rows.lock().unwrap().insert(id, email);
        Ok(())
    }
}

fn retry() -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(5)
        .min_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(5))
}

fn repo(new: Service) -> DualWrite<Service, Service> {
    DualWrite::builder(Service::default(), new)
        .queue(InMemoryQueue::new())
        .retry(retry())
        .build()
        .unwrap()
}

/// Both queues.
async fn queues(dir: &std::path::Path) -> [(&'static str, Arc<dyn ReconciliationQueue>); 2] {
    let sqlite = SqliteQueue::open(dir.join("queue.db")).await.unwrap();
    [
        ("in-memory", Arc::new(InMemoryQueue::new())),
        ("sqlite", Arc::new(sqlite)),
    ]
}

/// On every queue x delivery x stage with a follower (the old store is the
/// follower from `live` on): a write the follower rejects permanently is
/// dead-lettered on its first replay, spending no retry, and the key's
/// neighbour lands.
#[tokio::test]
async fn a_permanently_rejected_write_is_dead_lettered_on_its_first_replay() {
    let root = std::env::temp_dir().join(format!("dualwrite-permanent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for stage in Stage::ALL
        .into_iter()
        .filter(|stage| stage.follower().is_some())
    {
        for delivery in [Delivery::Sync, Delivery::Journaled] {
            let dir = root.join(format!("{stage:?}-{delivery:?}"));
            std::fs::create_dir_all(&dir).unwrap();
            for (queue_name, queue) in queues(&dir).await {
                let cell = format!("{queue_name} / {delivery:?} / {stage:?}");
                let follower = Service {
                    strict: true,
                    mark_permanent: true,
                    ..Service::default()
                };
                let (old, new) = match stage.follower() {
                    Some(Side::New) => (Service::default(), follower.clone()),
                    _ => (follower.clone(), Service::default()),
                };
                let repo = DualWrite::builder(old, new)
                    .shared_queue(queue)
                    .stage(stage)
                    .delivery(delivery)
                    .retry(retry())
                    .build()
                    .unwrap();
                repo.save(1, "ada at example.com".into()).await.unwrap();
                repo.save(2, "bob@example.com".into()).await.unwrap();

                let report = repo.worker::<ProfilesOp>().drain().await;
                assert_eq!(
                    (report.dead_lettered, report.retried),
                    (1, 0),
                    "{cell}: {report:?}"
                );
                let dead = repo.queue().dead_letters().await.unwrap();
                assert_eq!(dead.len(), 1, "{cell}");
                assert_eq!(dead[0].attempts, 1, "{cell}: no retry was spent on it");
                assert!(
                    dead[0].error.contains("rejected permanently"),
                    "{cell}: {}",
                    dead[0].error
                );
                assert!(
                    dead[0].error.contains("invalid email"),
                    "{cell}: {}",
                    dead[0].error
                );
                // In sync delivery the request's own call comes first, and
                // no worker listens to it; the replay does.
                let listened = follower.listened.lock().unwrap().clone();
                let expected: &[bool] = match delivery {
                    Delivery::Sync => &[false, true],
                    Delivery::Journaled => &[true],
                };
                assert_eq!(listened, expected, "{cell}");
                assert_eq!(
                    follower.rows.lock().unwrap().get(&2).map(String::as_str),
                    Some("bob@example.com"),
                    "{cell}"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn an_unmarked_failure_spends_the_retry_budget() {
    let repo = repo(Service {
        strict: true,
        ..Service::default()
    });
    repo.save(1, "ada at example.com".into()).await.unwrap();
    let report = repo.worker::<ProfilesOp>().drain().await;
    assert_eq!((report.dead_lettered, report.retried), (1, 4), "{report:?}");
    let dead = repo.queue().dead_letters().await.unwrap();
    assert_eq!(dead[0].attempts, 5);
    assert!(!dead[0].error.contains("rejected permanently"));
}

#[test]
fn outside_a_replay_nothing_listens() {
    assert!(!reject_permanently());
}
