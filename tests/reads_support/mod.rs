//! Shared by the read tests (`comparison_outcomes`, `shadow_panic_isolation`,
//! `shadow_latency_bound`, `compare_sampling`, `rollout_stickiness`,
//! `stage_guardrails`, `read_metrics`, `detached_compare`, `error_comparison`,
//! `keyless_read_reports`, `key_privacy`): a wrapper of two `FaultyStore`s,
//! an observer that keeps what it is told, and the logs of a run.

// Each test file uses a different part of it.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dualwrite_runtime::observe::{ComparisonReport, Observer, StageSourceReport};
use dualwrite_runtime::{Builder, ComparisonOutcome, DualWrite, InMemoryQueue, Stage, StageChange};
use dualwrite_suite::{FaultyStore, KvRepo};

pub type Repo = DualWrite<FaultyStore, FaultyStore>;

/// Keeps every report it is given.
#[derive(Default)]
pub struct Collector {
    pub mismatches: Mutex<Vec<ComparisonReport>>,
    pub stage_changes: Mutex<Vec<StageChange>>,
    pub source_errors: Mutex<Vec<StageSourceReport>>,
}

impl Observer for Collector {
    fn on_mismatch(&self, report: &ComparisonReport) {
        self.mismatches.lock().unwrap().push(report.clone());
    }
    fn on_stage_change(&self, change: &StageChange) {
        self.stage_changes.lock().unwrap().push(change.clone());
    }
    fn on_stage_source_error(&self, report: &StageSourceReport) {
        self.source_errors.lock().unwrap().push(report.clone());
    }
}

impl Collector {
    pub fn outcomes(&self) -> Vec<ComparisonOutcome> {
        self.mismatches
            .lock()
            .unwrap()
            .iter()
            .map(|report| report.outcome)
            .collect()
    }

    pub fn last(&self) -> ComparisonReport {
        self.mismatches
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a mismatch was reported")
    }
}

/// A builder of two healthy stores in `stage`, reporting to `collector`,
/// with a 100 ms compare timeout.
pub fn builder(stage: Stage, collector: &Arc<Collector>) -> Builder<FaultyStore, FaultyStore> {
    DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(InMemoryQueue::new())
        .stage(stage)
        .compare_timeout(Duration::from_millis(100))
        .shared_observer(Arc::clone(collector) as Arc<dyn Observer>)
}

pub fn wrapper(stage: Stage) -> (Repo, Arc<Collector>) {
    let collector = Arc::new(Collector::default());
    (builder(stage, &collector).build().unwrap(), collector)
}

/// Writes `value` under `key` in one store only, behind the wrapper's back.
pub async fn seed(store: &FaultyStore, key: u32, value: u64) {
    store.put(key, value).await.unwrap();
}

use dualwrite_runtime::__private::{equal, keep_cloned_error, result_view};
use dualwrite_runtime::Key;
use dualwrite_suite::StoreError;

/// `repo.get(key)`: the code `#[dual_write]` generated for `KvRepo::get`.
pub async fn get(repo: &Repo, key: u32) -> Result<Option<u64>, StoreError> {
    repo.get(key).await
}

/// How a test asks for values in reports.
pub type Show = fn(&Result<Option<u64>, StoreError>) -> String;

/// `get` with a comparator and, optionally, values in reports, driving the
/// runtime's read plan by hand as the generated code does (the macro fixes
/// both per method; `read_options` covers them through the attribute).
pub async fn get_with(
    repo: &Repo,
    key: u32,
    compare: impl Fn(&Option<u64>, &Option<u64>) -> bool,
    show: Option<Show>,
) -> Result<Option<u64>, StoreError> {
    get_judged(repo, key, compare, equal, show).await
}

/// `get` whose errors agree when `compare_errors` says so (as with the
/// method option `compare_errors = path`).
pub async fn get_with_error_comparator(
    repo: &Repo,
    key: u32,
    compare_errors: impl Fn(&StoreError, &StoreError) -> bool,
) -> Result<Option<u64>, StoreError> {
    get_judged(repo, key, equal, compare_errors, None).await
}

async fn get_judged(
    repo: &Repo,
    key: u32,
    compare: impl Fn(&Option<u64>, &Option<u64>) -> bool,
    compare_errors: impl Fn(&StoreError, &StoreError) -> bool,
    show: Option<Show>,
) -> Result<Option<u64>, StoreError> {
    let plan = repo.__read("kv", "get", || Some(Key::from_display(&key)));
    plan.compare(
        repo.old_store().get(key),
        repo.new_store().get(key),
        result_view,
        compare,
        compare_errors,
        show,
    )
    .await
}

/// `get` as a `detached` method: the other store's read runs in a task
/// (by hand, as the generated code of a `detached` method does).
pub async fn get_detached(repo: &Repo, key: u32) -> Result<Option<u64>, StoreError> {
    let plan = repo.__read("kv", "get", || Some(Key::from_display(&key)));
    match plan.compared() {
        None => {
            let serving = plan.serving();
            plan.serve(
                async move {
                    match serving {
                        dualwrite_runtime::Side::Old => repo.old_store().get(key).await,
                        dualwrite_runtime::Side::New => repo.new_store().get(key).await,
                    }
                },
                result_view,
            )
            .await
        }
        Some(dualwrite_runtime::Side::New) => {
            let store = repo.__new_arc();
            plan.detach(
                repo.old_store().get(key),
                async move { store.get(key).await },
                result_view,
                equal,
                equal,
                keep_cloned_error,
                None,
            )
            .await
        }
        Some(dualwrite_runtime::Side::Old) => {
            let store = repo.__old_arc();
            plan.detach(
                repo.new_store().get(key),
                async move { store.get(key).await },
                result_view,
                equal,
                equal,
                keep_cloned_error,
                None,
            )
            .await
        }
    }
}

/// Everything logged, at every level and without colours, while `run` runs
/// on this thread.
pub fn logs_while(run: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, run);
    let bytes = captured.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}
