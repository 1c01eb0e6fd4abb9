//! A read without `key = ..` has no key to find a mismatch by, so its
//! report carries a stable hash of its arguments (and, with
//! `report_values`, the arguments themselves); the default observer logs
//! the hash, and the arguments only with `log_keys(true)`.

// Each test holds a lock for its whole run (see `one_at_a_time`), across
// its awaits: every test has a runtime of its own, so nothing else on that
// runtime waits for the lock.
#![allow(clippy::await_holding_lock)]

mod reads_support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dualwrite_runtime::observe::{ComparisonReport, Observer};
use dualwrite_runtime::{dual_write, ComparisonOutcome, DualWrite, InMemoryQueue, Key, Stage};
use reads_support::Collector;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CatalogError(String);

/// A filter the stores take by reference; serialisable, so it is hashed
/// (and shown) as its JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Filter {
    tag: String,
    limit: u32,
}

/// A cursor that is `Debug` but not `Serialize`: hashed as its `Debug` text.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor(u64);

/// A hint that is neither `Serialize` nor `Debug`: it does not take part.
#[derive(Clone, PartialEq)]
pub struct Hint(u8);

#[dual_write(namespace = "catalog")]
pub trait Catalog: Send + Sync {
    #[dual_write(read)]
    fn search(
        &self,
        tag: &str,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<u32>, CatalogError>> + Send;

    #[dual_write(read, report_values)]
    fn search_reported(
        &self,
        tag: &str,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<u32>, CatalogError>> + Send;

    #[dual_write(read, report_values)]
    fn page(
        &self,
        filter: &Filter,
        cursor: Cursor,
        hint: Hint,
    ) -> impl Future<Output = Result<Vec<u32>, CatalogError>> + Send;

    #[dual_write(read, key = tag)]
    fn search_keyed(
        &self,
        tag: &str,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<u32>, CatalogError>> + Send;

    #[dual_write(read, detached, report_values)]
    fn search_detached(
        &self,
        tag: &str,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<u32>, CatalogError>> + Send;

    #[dual_write(read, report_values)]
    fn search_blocking(&self, tag: &str, limit: u32) -> Result<Vec<u32>, CatalogError>;
}

/// A store that answers every search with its own list of ids.
struct Store {
    ids: Vec<u32>,
}

impl Catalog for Store {
    async fn search(&self, _tag: &str, _limit: u32) -> Result<Vec<u32>, CatalogError> {
        Ok(self.ids.clone())
    }
    async fn search_reported(&self, _tag: &str, _limit: u32) -> Result<Vec<u32>, CatalogError> {
        Ok(self.ids.clone())
    }
    async fn page(
        &self,
        _filter: &Filter,
        _cursor: Cursor,
        _hint: Hint,
    ) -> Result<Vec<u32>, CatalogError> {
        Ok(self.ids.clone())
    }
    async fn search_keyed(&self, _tag: &str, _limit: u32) -> Result<Vec<u32>, CatalogError> {
        Ok(self.ids.clone())
    }
    async fn search_detached(&self, _tag: &str, _limit: u32) -> Result<Vec<u32>, CatalogError> {
        Ok(self.ids.clone())
    }
    fn search_blocking(&self, _tag: &str, _limit: u32) -> Result<Vec<u32>, CatalogError> {
        Ok(self.ids.clone())
    }
}

type Repo = DualWrite<Store, Store>;

/// A wrapper in `Shadow` whose stores disagree on every search (or agree,
/// with `agree`), built with `log_keys`.
fn wrapper(agree: bool, log_keys: bool) -> (Repo, Arc<Collector>) {
    let collector = Arc::new(Collector::default());
    let new_ids = if agree { vec![1, 2] } else { vec![1, 3] };
    let repo = DualWrite::builder(Store { ids: vec![1, 2] }, Store { ids: new_ids })
        .queue(InMemoryQueue::new())
        .stage(Stage::Shadow)
        .compare_timeout(Duration::from_millis(100))
        .log_keys(log_keys)
        .shared_observer(Arc::clone(&collector) as Arc<dyn Observer>)
        .build()
        .unwrap();
    (repo, collector)
}

/// The documented hash of an argument list: the one `Key::fingerprint`
/// gives its JSON text.
/// The tests of this file run one at a time: tracing decides once, for
/// every thread, whether a log line has a listener, so a test logging on
/// another thread while the log test installs its capture can leave that
/// line unheard (the log test saw nothing, once, on a loaded machine).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn hash_of(arguments_json: &str) -> u64 {
    Key::from(arguments_json).fingerprint()
}

fn only_report(collector: &Collector) -> ComparisonReport {
    let reports = collector.mismatches.lock().unwrap().clone();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    reports.into_iter().next().unwrap()
}

#[tokio::test]
async fn a_keyless_mismatch_carries_its_arguments_hash_and_not_the_arguments() {
    let _serial = one_at_a_time();
    let (repo, collector) = wrapper(false, false);
    assert_eq!(repo.search("red", 10).await, Ok(vec![1, 2]));
    let report = only_report(&collector);
    assert_eq!(report.outcome, ComparisonOutcome::ValueMismatch);
    assert_eq!(report.key, None);
    assert_eq!(report.arguments_hash, Some(hash_of(r#"["red",10]"#)));
    assert_eq!(
        report.arguments, None,
        "arguments are not reported unless asked for"
    );
}

#[tokio::test]
async fn the_hash_tells_calls_apart_and_is_the_same_for_the_same_arguments() {
    let _serial = one_at_a_time();
    let (repo, collector) = wrapper(false, false);
    repo.search("red", 10).await.unwrap();
    repo.search("red", 10).await.unwrap();
    repo.search("red", 11).await.unwrap();
    repo.search("blue", 10).await.unwrap();
    let hashes: Vec<Option<u64>> = collector
        .mismatches
        .lock()
        .unwrap()
        .iter()
        .map(|report| report.arguments_hash)
        .collect();
    assert_eq!(hashes[0], hashes[1]);
    assert_ne!(hashes[0], hashes[2]);
    assert_ne!(hashes[0], hashes[3]);
    assert_ne!(hashes[2], hashes[3]);
    // Another wrapper (as another process would) hashes them alike.
    let (other, other_collector) = wrapper(false, false);
    other.search("red", 10).await.unwrap();
    assert_eq!(only_report(&other_collector).arguments_hash, hashes[0]);
}

#[tokio::test]
async fn with_report_values_a_keyless_mismatch_carries_its_arguments() {
    let _serial = one_at_a_time();
    let (repo, collector) = wrapper(false, false);
    repo.search_reported("red", 10).await.unwrap();
    let report = only_report(&collector);
    assert_eq!(report.arguments.as_deref(), Some(r#"["red",10]"#));
    assert_eq!(report.arguments_hash, Some(hash_of(r#"["red",10]"#)));
    assert_eq!(report.serving_value.as_deref(), Some("Ok([1, 2])"));
}

#[tokio::test]
async fn arguments_are_json_else_debug_text_else_null() {
    let _serial = one_at_a_time();
    let (repo, collector) = wrapper(false, false);
    let filter = Filter {
        tag: "red".into(),
        limit: 3,
    };
    repo.page(&filter, Cursor(7), Hint(1)).await.unwrap();
    let report = only_report(&collector);
    let expected = r#"[{"tag":"red","limit":3},"Cursor(7)",null]"#;
    assert_eq!(report.arguments.as_deref(), Some(expected));
    assert_eq!(report.arguments_hash, Some(hash_of(expected)));
}

#[tokio::test]
async fn a_keyed_mismatch_is_found_by_its_key_and_carries_no_hash() {
    let _serial = one_at_a_time();
    let (repo, collector) = wrapper(false, false);
    repo.search_keyed("red", 10).await.unwrap();
    let report = only_report(&collector);
    assert_eq!(report.key, Some(Key::from("red")));
    assert_eq!(report.arguments_hash, None);
    assert_eq!(report.arguments, None);
}

#[tokio::test]
async fn detached_and_blocking_reads_carry_the_hash_too() {
    let _serial = one_at_a_time();
    let (repo, collector) = wrapper(false, false);
    repo.search_detached("red", 10).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while collector.mismatches.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never compared");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let report = only_report(&collector);
    assert!(report.detached);
    assert_eq!(report.arguments.as_deref(), Some(r#"["red",10]"#));
    assert_eq!(report.arguments_hash, Some(hash_of(r#"["red",10]"#)));

    let (repo, collector) = wrapper(false, false);
    repo.search_blocking("red", 10).unwrap();
    let report = only_report(&collector);
    assert_eq!(report.arguments.as_deref(), Some(r#"["red",10]"#));
    assert_eq!(report.arguments_hash, Some(hash_of(r#"["red",10]"#)));
}

#[tokio::test]
async fn agreeing_keyless_reads_report_nothing() {
    let _serial = one_at_a_time();
    let (repo, collector) = wrapper(true, false);
    repo.search("red", 10).await.unwrap();
    repo.search_reported("red", 10).await.unwrap();
    assert!(collector.outcomes().is_empty());
    assert_eq!(repo.stage().mismatch_rate().comparisons, 2);
}

/// What is logged while a keyless read of an email address mismatches.
fn logs_of(log_keys: bool) -> String {
    reads_support::logs_while(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let (repo, _collector) = wrapper(false, log_keys);
                repo.search_reported("ada@example.com", 10).await.unwrap();
            });
    })
}

#[test]
fn the_warn_log_shows_the_hash_and_the_arguments_only_with_log_keys() {
    let _serial = one_at_a_time();
    let hash = format!("#{:016x}", hash_of(r#"["ada@example.com",10]"#));
    let logs = logs_of(false);
    let warning = logs
        .lines()
        .find(|line| line.contains("WARN") && line.contains("the stores disagree"))
        .unwrap_or_else(|| panic!("no mismatch warning in:\n{logs}"));
    assert!(warning.contains(&hash), "{warning}");
    assert!(
        !logs.contains("ada@example.com"),
        "arguments reached the log without log_keys:\n{logs}"
    );
    let logs = logs_of(true);
    assert!(logs.contains(&hash), "{logs}");
    assert!(logs.contains("ada@example.com"), "{logs}");
}
