//! The set of observers a wrapper reports to, and the default one.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use super::StageChange;
use super::{ComparisonReport, DeadLetterReport, Observer, StageSourceReport};

/// The default observer: mismatches become `warn` events, dead letters
/// `error` events. Stage changes and stage-source errors are logged by the
/// [`StageHandle`](crate::StageHandle) itself, so this observer leaves them
/// out.
///
/// Keys appear by their stable [fingerprint](crate::Key::fingerprint)
/// unless it is made with `TracingObserver::new(true)` (the builder does
/// that with [`log_keys(true)`](crate::Builder::log_keys)). A read without
/// `key` appears by its arguments' hash; its arguments (reported for
/// `report_values` methods) are logged only with `log_keys(true)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingObserver {
    log_keys: bool,
}

impl TracingObserver {
    /// An observer that logs keys as written when `log_keys`, else by
    /// fingerprint.
    pub fn new(log_keys: bool) -> Self {
        TracingObserver { log_keys }
    }
}

impl Observer for TracingObserver {
    fn on_mismatch(&self, report: &ComparisonReport) {
        tracing::warn!(
            namespace = report.namespace,
            method = report.method,
            key = report
                .key
                .as_ref()
                .map(|key| key.shown(self.log_keys))
                .as_ref()
                .map(|key| key.as_str()),
            stage = report.stage.as_str(),
            serving = report.serving.as_str(),
            compared = report.compared.as_str(),
            outcome = report.outcome.as_str(),
            detached = report.detached,
            arguments_hash = report
                .arguments_hash
                .map(|hash| format!("#{hash:016x}"))
                .as_deref(),
            arguments = report.arguments.as_deref().filter(|_| self.log_keys),
            serving_value = report.serving_value.as_deref(),
            compared_value = report.compared_value.as_deref(),
            "dualwrite read comparison: the stores disagree"
        );
    }

    fn on_dead_letter(&self, report: &DeadLetterReport) {
        tracing::error!(
            namespace = %report.namespace,
            method = %report.method,
            target = report.target.as_str(),
            key = %report.key.shown(self.log_keys),
            attempts = report.attempts,
            error = %report.error,
            "dualwrite operation dead-lettered"
        );
    }
}

/// The observers of one wrapper (or stage handle). Cheap to clone. A
/// panicking observer is caught and logged; the others still run.
#[derive(Clone, Default)]
pub(crate) struct Observers {
    list: Arc<[Arc<dyn Observer>]>,
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observers")
            .field("count", &self.list.len())
            .finish()
    }
}

impl Observers {
    pub(crate) fn new(list: Vec<Arc<dyn Observer>>) -> Self {
        Observers { list: list.into() }
    }

    pub(crate) fn mismatch(&self, report: &ComparisonReport) {
        self.each("on_mismatch", |observer| observer.on_mismatch(report));
    }

    /// Reports a dead letter to the observers and counts it.
    pub(crate) fn dead_letter(&self, report: &DeadLetterReport) {
        super::metrics::record_dead_letter(&report.namespace, &report.method, report.target);
        self.each("on_dead_letter", |observer| observer.on_dead_letter(report));
    }

    pub(crate) fn stage_change(&self, change: &StageChange) {
        self.each("on_stage_change", |observer| {
            observer.on_stage_change(change)
        });
    }

    pub(crate) fn stage_source_error(&self, report: &StageSourceReport) {
        self.each("on_stage_source_error", |observer| {
            observer.on_stage_source_error(report)
        });
    }

    fn each(&self, event: &'static str, call: impl Fn(&dyn Observer)) {
        for observer in self.list.iter() {
            if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| call(&**observer))) {
                tracing::error!(
                    event,
                    panic = %crate::panic_message(&*panic),
                    "a dualwrite observer panicked; the panic was caught"
                );
            }
        }
    }
}

/// Every observer of `a`, then those of `b` not already in `a`.
pub(crate) fn merged(a: &Observers, b: &Observers) -> Observers {
    let mut list: Vec<Arc<dyn Observer>> = a.list.to_vec();
    for observer in b.list.iter() {
        if !list.iter().any(|known| same(known, observer)) {
            list.push(Arc::clone(observer));
        }
    }
    Observers::new(list)
}

fn same(a: &Arc<dyn Observer>, b: &Arc<dyn Observer>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}
