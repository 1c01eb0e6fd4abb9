//! The read options of the attribute, through the code it generates:
//! `normalize`, `compare`, `report_values` and `detached` in every method
//! form (native `async fn` falls back to a concurrent comparison).

mod reads_support;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dualwrite_runtime::observe::Observer;
use dualwrite_runtime::{dual_write, ComparisonOutcome, DualWrite, InMemoryQueue, Stage};
use reads_support::Collector;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SensorError(String);

/// A temperature reading; the old store keeps time in microseconds, the
/// new one in milliseconds (multiplied back), so raw values differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reading {
    at_micros: u64,
    celsius: i32,
}

fn to_millis(reading: &Option<Reading>) -> Option<(u64, i32)> {
    reading
        .as_ref()
        .map(|reading| (reading.at_micros / 1000, reading.celsius))
}

fn within_a_degree(a: &Option<Reading>, b: &Option<Reading>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.celsius.abs_diff(b.celsius) <= 1,
        _ => a == b,
    }
}

#[dual_write(namespace = "sensors")]
pub trait Sensors: Send + Sync {
    #[dual_write(read, key = id, normalize = to_millis)]
    fn latest(&self, id: u32) -> impl Future<Output = Result<Option<Reading>, SensorError>> + Send;

    #[dual_write(read, key = id, compare = within_a_degree)]
    fn latest_roughly(
        &self,
        id: u32,
    ) -> impl Future<Output = Result<Option<Reading>, SensorError>> + Send;

    #[dual_write(read, key = id, report_values)]
    fn latest_reported(
        &self,
        id: u32,
    ) -> impl Future<Output = Result<Option<Reading>, SensorError>> + Send;

    #[dual_write(read, key = name, detached)]
    fn by_name(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Reading>, SensorError>> + Send;
}

/// Readings by id; sensor `n` is named `sensor-n`. Answers after `delay`.
#[derive(Default)]
struct Table {
    rows: Mutex<BTreeMap<u32, Reading>>,
    delay: Mutex<Duration>,
}

impl Table {
    fn with(rows: &[(u32, u64, i32)]) -> Self {
        let table = Table::default();
        for (id, at_micros, celsius) in rows {
            table.rows.lock().unwrap().insert(
                *id,
                Reading {
                    at_micros: *at_micros,
                    celsius: *celsius,
                },
            );
        }
        table
    }

    async fn get(&self, id: u32) -> Result<Option<Reading>, SensorError> {
        let delay = *self.delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        Ok(self.rows.lock().unwrap().get(&id).cloned())
    }
}

impl Sensors for Table {
    async fn latest(&self, id: u32) -> Result<Option<Reading>, SensorError> {
        self.get(id).await
    }
    async fn latest_roughly(&self, id: u32) -> Result<Option<Reading>, SensorError> {
        self.get(id).await
    }
    async fn latest_reported(&self, id: u32) -> Result<Option<Reading>, SensorError> {
        self.get(id).await
    }
    async fn by_name(&self, name: &str) -> Result<Option<Reading>, SensorError> {
        let id = name
            .trim_start_matches("sensor-")
            .parse()
            .unwrap_or(u32::MAX);
        self.get(id).await
    }
}

fn wrapper(old: Table, new: Table) -> (DualWrite<Table, Table>, Arc<Collector>) {
    let collector = Arc::new(Collector::default());
    let repo = DualWrite::builder(old, new)
        .queue(InMemoryQueue::new())
        .stage(Stage::Shadow)
        .compare_timeout(Duration::from_millis(100))
        .shared_observer(Arc::clone(&collector) as Arc<dyn Observer>)
        .build()
        .unwrap();
    (repo, collector)
}

#[tokio::test]
async fn normalize_compares_what_it_makes_of_each_value() {
    let old = Table::with(&[(1, 1_500_123, 20), (2, 2_000_000, 20)]);
    let new = Table::with(&[(1, 1_500_000, 20), (2, 2_000_000, 25)]);
    let (repo, collector) = wrapper(old, new);
    assert_eq!(repo.latest(1).await.unwrap().unwrap().at_micros, 1_500_123);
    assert!(
        collector.outcomes().is_empty(),
        "same millisecond, same reading"
    );
    repo.latest(2).await.unwrap();
    assert_eq!(collector.outcomes(), [ComparisonOutcome::ValueMismatch]);
}

#[tokio::test]
async fn compare_decides_what_matches() {
    let old = Table::with(&[(1, 0, 20), (2, 0, 20)]);
    let new = Table::with(&[(1, 0, 21), (2, 0, 23)]);
    let (repo, collector) = wrapper(old, new);
    repo.latest_roughly(1).await.unwrap();
    assert!(collector.outcomes().is_empty());
    repo.latest_roughly(2).await.unwrap();
    assert_eq!(collector.outcomes(), [ComparisonOutcome::ValueMismatch]);
}

#[tokio::test]
async fn report_values_puts_both_results_in_the_report_and_others_do_not() {
    let old = Table::with(&[(1, 0, 20)]);
    let new = Table::with(&[(1, 0, 30)]);
    let (repo, collector) = wrapper(old, new);
    repo.latest_roughly(1).await.unwrap();
    assert_eq!(collector.last().serving_value, None);
    repo.latest_reported(1).await.unwrap();
    let report = collector.last();
    assert_eq!(
        report.serving_value.as_deref(),
        Some("Ok(Some(Reading { at_micros: 0, celsius: 20 }))")
    );
    assert_eq!(
        report.compared_value.as_deref(),
        Some("Ok(Some(Reading { at_micros: 0, celsius: 30 }))")
    );
    assert_eq!(report.key.unwrap().as_str(), "1");
}

#[tokio::test(start_paused = true)]
async fn a_detached_read_returns_at_the_serving_store_s_time_and_reports_later() {
    let old = Table::with(&[(7, 0, 20)]);
    let new = Table::with(&[(7, 0, 21)]);
    *old.delay.lock().unwrap() = Duration::from_millis(2);
    *new.delay.lock().unwrap() = Duration::from_millis(50);
    let (repo, collector) = wrapper(old, new);
    let start = Instant::now();
    let name = String::from("sensor-7");
    assert_eq!(repo.by_name(&name).await.unwrap().unwrap().celsius, 20);
    drop(name); // the detached call owns a copy of its argument
    assert!(
        start.elapsed() <= Duration::from_millis(3),
        "{:?}",
        start.elapsed()
    );
    assert!(collector.outcomes().is_empty());
    tokio::time::sleep(Duration::from_millis(60)).await;
    let report = collector.last();
    assert_eq!(report.outcome, ComparisonOutcome::ValueMismatch);
    assert!(report.detached);
    assert_eq!(report.key.unwrap().as_str(), "sensor-7");
}

/// The same read in the three other forms, each marked `detached`.
mod forms {
    use super::*;

    #[dual_write(namespace = "native")]
    pub trait Native: Send + Sync {
        #[dual_write(read, key = id, detached)]
        async fn latest(&self, id: u32) -> Result<Option<Reading>, SensorError>;
    }

    impl Native for Table {
        async fn latest(&self, id: u32) -> Result<Option<Reading>, SensorError> {
            self.get(id).await
        }
    }

    #[dual_write(namespace = "boxed")]
    #[async_trait::async_trait]
    pub trait Boxed: Send + Sync {
        #[dual_write(read, key = id, detached)]
        async fn latest(&self, id: u32) -> Result<Option<Reading>, SensorError>;
    }

    #[async_trait::async_trait]
    impl Boxed for Table {
        async fn latest(&self, id: u32) -> Result<Option<Reading>, SensorError> {
            self.get(id).await
        }
    }

    #[dual_write(namespace = "blocking")]
    pub trait Blocking: Send + Sync {
        #[dual_write(read, key = id, detached)]
        fn latest(&self, id: u32) -> Result<Option<Reading>, SensorError>;

        #[dual_write(read, key = id)]
        fn latest_serially(&self, id: u32) -> Result<Option<Reading>, SensorError>;
    }

    impl Blocking for Table {
        fn latest(&self, id: u32) -> Result<Option<Reading>, SensorError> {
            Ok(self.rows.lock().unwrap().get(&id).cloned())
        }
        fn latest_serially(&self, id: u32) -> Result<Option<Reading>, SensorError> {
            Ok(self.rows.lock().unwrap().get(&id).cloned())
        }
    }
}

fn slow_new_store() -> (DualWrite<Table, Table>, Arc<Collector>) {
    let old = Table::with(&[(1, 0, 20)]);
    let new = Table::with(&[(1, 0, 21)]);
    *old.delay.lock().unwrap() = Duration::from_millis(2);
    *new.delay.lock().unwrap() = Duration::from_secs(3600);
    wrapper(old, new)
}

#[tokio::test(start_paused = true)]
async fn async_trait_detached_reads_do_not_wait_for_the_other_store() {
    let (repo, collector) = slow_new_store();
    let start = Instant::now();
    forms::Boxed::latest(&repo, 1).await.unwrap();
    assert!(
        start.elapsed() <= Duration::from_millis(3),
        "{:?}",
        start.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = collector.last();
    assert_eq!(report.outcome, ComparisonOutcome::ComparedTimedOut);
    assert!(report.detached);
}

#[tokio::test(start_paused = true)]
async fn native_async_detached_reads_fall_back_to_a_bounded_concurrent_comparison() {
    let (repo, collector) = slow_new_store();
    let start = Instant::now();
    forms::Native::latest(&repo, 1).await.unwrap();
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(102) && elapsed <= Duration::from_millis(103),
        "serving time + timeout: {elapsed:?}"
    );
    let report = collector.last();
    assert_eq!(report.outcome, ComparisonOutcome::ComparedTimedOut);
    assert!(!report.detached);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_reads_compare_serially_or_on_the_blocking_pool() {
    let (repo, collector) = wrapper(Table::with(&[(1, 0, 20)]), Table::with(&[(1, 0, 21)]));
    let repo = Arc::new(repo);
    let serial = Arc::clone(&repo);
    tokio::task::spawn_blocking(move || forms::Blocking::latest_serially(&*serial, 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        collector.outcomes(),
        [ComparisonOutcome::ValueMismatch],
        "judged before returning"
    );
    assert!(!collector.last().detached);

    let detached = Arc::clone(&repo);
    tokio::task::spawn_blocking(move || forms::Blocking::latest(&*detached, 1))
        .await
        .unwrap()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while collector.outcomes().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the detached comparison never ran"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(collector.last().detached);
}
