//! A store that knows a write can never succeed says so with
//! `reject_permanently()`: the worker dead-letters the operation on that
//! attempt instead of spending its retry budget, while a failure without
//! the mark is retried until the budget is spent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dualwrite_runtime::{dual_write, reject_permanently, DualWrite, InMemoryQueue, RetryPolicy};

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

fn repo(new: Service) -> DualWrite<Service, Service> {
    DualWrite::builder(Service::default(), new)
        .queue(InMemoryQueue::new())
        .retry(
            RetryPolicy::default()
                .max_attempts(5)
                .min_delay(Duration::from_millis(1))
                .max_delay(Duration::from_millis(5)),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_permanently_rejected_write_is_dead_lettered_on_its_first_replay() {
    let new = Service {
        strict: true,
        mark_permanent: true,
        ..Service::default()
    };
    let repo = repo(new.clone());
    repo.save(1, "ada at example.com".into()).await.unwrap();
    repo.save(2, "bob@example.com".into()).await.unwrap();
    assert_eq!(repo.queue().stats().await.unwrap().new.pending, 1);

    let report = repo.worker::<ProfilesOp>().drain().await;
    assert_eq!((report.dead_lettered, report.retried), (1, 0), "{report:?}");
    let dead = repo.queue().dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 1, "no retry was spent on it");
    assert!(
        dead[0].error.contains("rejected permanently"),
        "{}",
        dead[0].error
    );
    assert!(dead[0].error.contains("invalid email"), "{}", dead[0].error);
    // The request's own call had no worker listening; the replay had.
    assert_eq!(*new.listened.lock().unwrap(), [false, true]);
    assert_eq!(
        new.rows.lock().unwrap().get(&2).map(String::as_str),
        Some("bob@example.com")
    );
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
