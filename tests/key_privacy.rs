//! Keys are made from arguments (here an email address), so what the
//! runtime logs, and the message of a queue refusal, show a key by its
//! stable fingerprint, never the key itself, unless the wrapper is built
//! with `log_keys(true)`. Observers the user registers still get the key.

mod reads_support;

use std::time::Duration;

use dualwrite_runtime::{dual_write, DualWrite, InMemoryQueue, Key, Stage};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
struct UserError(String);

#[dual_write(namespace = "users")]
trait Users: Send + Sync {
    #[dual_write(write, key = email)]
    async fn set_name(&self, email: String, name: String) -> Result<(), UserError>;
}

struct Store {
    down: bool,
}

impl Users for Store {
    async fn set_name(&self, _email: String, _name: String) -> Result<(), UserError> {
        if self.down {
            Err(UserError("down".into()))
        } else {
            Ok(())
        }
    }
}

/// Everything logged while a write misses the follower and the worker
/// retries it.
fn logs_of(log_keys: bool) -> String {
    reads_support::logs_while(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(async {
                let repo = DualWrite::builder(Store { down: false }, Store { down: true })
                    .queue(InMemoryQueue::new())
                    .stage(Stage::DualWrite)
                    .follower_timeout(Duration::from_millis(10))
                    .log_keys(log_keys)
                    .build()
                    .unwrap();
                repo.set_name("ada@example.com".into(), "Ada".into())
                    .await
                    .unwrap();
                // The follower stays down: the worker retries and logs.
                let worker = repo.worker::<UsersOp>();
                let _ = tokio::time::timeout(Duration::from_millis(500), worker.drain()).await;
            });
    })
}

#[test]
fn logs_show_keys_by_fingerprint_unless_asked() {
    let logs = logs_of(false);
    let fingerprint = Key::from("ada@example.com").shown(false).to_string();
    assert!(logs.contains("queued for reconciliation"), "{logs}");
    assert!(
        !logs.contains("ada@example.com"),
        "the key leaked into the logs:\n{logs}"
    );
    assert!(
        logs.contains(&fingerprint),
        "the fingerprint is logged:\n{logs}"
    );
    assert!(
        !logs.contains("Ada"),
        "argument values never appear:\n{logs}"
    );
}

#[test]
fn log_keys_shows_them_as_written() {
    let logs = logs_of(true);
    assert!(logs.contains("ada@example.com"), "{logs}");
}

#[test]
fn a_fingerprint_is_stable_across_processes() {
    // The same function as rollout buckets: fixed, documented, and so the
    // same in every process and release.
    assert_eq!(
        Key::from("ada@example.com").shown(false).to_string(),
        format!("#{:016x}", Key::from("ada@example.com").fingerprint())
    );
    assert_eq!(Key::from("1").fingerprint(), 0x7c38_32dd_e020_d3d6);
}
