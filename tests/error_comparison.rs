//! When both stores answer `Err`, the errors are compared: equal errors
//! (both "not found") are agreement, never reported as a mismatch; errors
//! that differ are an `ErrorMismatch`. Through the attribute, in every way
//! the errors can be compared: `PartialEq`, `Display` text, `Debug` text, a
//! `compare_errors = path` comparator, concurrently, detached and blocking.

mod reads_support;

use std::future::Future;
use std::mem::discriminant;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dualwrite_runtime::observe::Observer;
use dualwrite_runtime::{dual_write, ComparisonOutcome, DualWrite, InMemoryQueue, Stage};
use reads_support::Collector;

/// An error with `PartialEq` (and `Clone`): compared with `==`. Its text
/// leaves the reason out, so comparing by text would not tell two
/// `Unavailable`s apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("not found")]
    NotFound,
    #[error("unavailable")]
    Unavailable(String),
}

/// An error with `Display` but neither `PartialEq` nor `Clone`: compared by
/// its text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TextError(String);

/// An error with only `Debug`: compared by its `Debug` text.
#[derive(Debug)]
pub struct DebugOnlyError(#[allow(dead_code)] u16);

/// Errors of the same kind agree, whatever their message.
fn same_kind(a: &LookupError, b: &LookupError) -> bool {
    discriminant(a) == discriminant(b)
}

#[dual_write(namespace = "lookups")]
pub trait Lookups: Send + Sync {
    #[dual_write(read, key = id)]
    fn find(&self, id: u32) -> impl Future<Output = Result<u32, LookupError>> + Send;

    #[dual_write(read, key = id, compare_errors = same_kind)]
    fn find_by_kind(&self, id: u32) -> impl Future<Output = Result<u32, LookupError>> + Send;

    #[dual_write(read, key = id, detached)]
    fn find_detached(&self, id: u32) -> impl Future<Output = Result<u32, LookupError>> + Send;

    #[dual_write(read, key = id, detached, compare_errors = same_kind)]
    fn find_detached_by_kind(
        &self,
        id: u32,
    ) -> impl Future<Output = Result<u32, LookupError>> + Send;

    #[dual_write(read, key = id)]
    fn find_text(&self, id: u32) -> impl Future<Output = Result<u32, TextError>> + Send;

    #[dual_write(read, key = id, detached)]
    fn find_text_detached(&self, id: u32) -> impl Future<Output = Result<u32, TextError>> + Send;

    #[dual_write(read, key = id)]
    fn find_debug(&self, id: u32) -> impl Future<Output = Result<u32, DebugOnlyError>> + Send;

    #[dual_write(read, key = id)]
    fn find_blocking(&self, id: u32) -> Result<u32, LookupError>;
}

/// A store whose every read fails with its error, or answers the id.
#[derive(Default)]
struct Store {
    failure: Mutex<Option<LookupError>>,
}

impl Store {
    fn failing_with(error: LookupError) -> Self {
        Store {
            failure: Mutex::new(Some(error)),
        }
    }

    fn answer(&self, id: u32) -> Result<u32, LookupError> {
        match self.failure.lock().unwrap().clone() {
            Some(error) => Err(error),
            None => Ok(id),
        }
    }
}

impl Lookups for Store {
    async fn find(&self, id: u32) -> Result<u32, LookupError> {
        self.answer(id)
    }
    async fn find_by_kind(&self, id: u32) -> Result<u32, LookupError> {
        self.answer(id)
    }
    async fn find_detached(&self, id: u32) -> Result<u32, LookupError> {
        self.answer(id)
    }
    async fn find_detached_by_kind(&self, id: u32) -> Result<u32, LookupError> {
        self.answer(id)
    }
    async fn find_text(&self, id: u32) -> Result<u32, TextError> {
        self.answer(id)
            .map_err(|error| TextError(format!("{error:?}")))
    }
    async fn find_text_detached(&self, id: u32) -> Result<u32, TextError> {
        self.answer(id)
            .map_err(|error| TextError(format!("{error:?}")))
    }
    async fn find_debug(&self, id: u32) -> Result<u32, DebugOnlyError> {
        self.answer(id).map_err(|error| match error {
            LookupError::NotFound => DebugOnlyError(404),
            LookupError::Unavailable(_) => DebugOnlyError(503),
        })
    }
    fn find_blocking(&self, id: u32) -> Result<u32, LookupError> {
        self.answer(id)
    }
}

type Repo = DualWrite<Store, Store>;

/// Which read a case calls.
#[derive(Debug, Clone, Copy)]
enum Read {
    Find,
    FindByKind,
    FindDetached,
    FindDetachedByKind,
    FindText,
    FindTextDetached,
    FindDebug,
    FindBlocking,
}

fn unavailable(why: &str) -> LookupError {
    LookupError::Unavailable(why.to_owned())
}

/// Reads once in `Shadow` with the old store failing with `old` and the new
/// with `new`; returns what the observer was told, once the comparison
/// (detached or not) has been counted.
async fn reported(read: Read, old: LookupError, new: LookupError) -> Vec<ComparisonOutcome> {
    let collector = Arc::new(Collector::default());
    let repo: Repo = DualWrite::builder(Store::failing_with(old), Store::failing_with(new))
        .queue(InMemoryQueue::new())
        .stage(Stage::Shadow)
        .compare_timeout(Duration::from_millis(100))
        .shared_observer(Arc::clone(&collector) as Arc<dyn Observer>)
        .build()
        .unwrap();
    let failed = match read {
        Read::Find => repo.find(1).await.is_err(),
        Read::FindByKind => repo.find_by_kind(1).await.is_err(),
        Read::FindDetached => repo.find_detached(1).await.is_err(),
        Read::FindDetachedByKind => repo.find_detached_by_kind(1).await.is_err(),
        Read::FindText => repo.find_text(1).await.is_err(),
        Read::FindTextDetached => repo.find_text_detached(1).await.is_err(),
        Read::FindDebug => repo.find_debug(1).await.is_err(),
        Read::FindBlocking => repo.find_blocking(1).is_err(),
    };
    assert!(failed, "{read:?}: the serving store's error is returned");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while repo.stage().mismatch_rate().comparisons == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{read:?}: never compared"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let outcomes = collector.outcomes();
    let disagreements = repo.stage().mismatch_rate().disagreements;
    assert_eq!(
        disagreements,
        outcomes.len() as u64,
        "{read:?}: the guardrail counts exactly what observers are told"
    );
    outcomes
}

const EVERY_READ: [Read; 8] = [
    Read::Find,
    Read::FindByKind,
    Read::FindDetached,
    Read::FindDetachedByKind,
    Read::FindText,
    Read::FindTextDetached,
    Read::FindDebug,
    Read::FindBlocking,
];

#[tokio::test]
async fn both_stores_not_finding_the_row_agree_in_every_form() {
    for read in EVERY_READ {
        let outcomes = reported(read, LookupError::NotFound, LookupError::NotFound).await;
        assert!(
            outcomes.is_empty(),
            "{read:?}: equal errors are not a mismatch: {outcomes:?}"
        );
    }
}

#[tokio::test]
async fn different_errors_are_an_error_mismatch_in_every_form() {
    for read in EVERY_READ {
        let outcomes = reported(read, LookupError::NotFound, unavailable("timeout")).await;
        assert_eq!(outcomes, [ComparisonOutcome::ErrorMismatch], "{read:?}");
    }
}

#[tokio::test]
async fn errors_with_partial_eq_are_compared_with_it() {
    // Same kind, different reason, same text: `==` tells them apart.
    let outcomes = reported(Read::Find, unavailable("timeout"), unavailable("reset")).await;
    assert_eq!(outcomes, [ComparisonOutcome::ErrorMismatch]);
    let outcomes = reported(
        Read::FindDetached,
        unavailable("timeout"),
        unavailable("reset"),
    )
    .await;
    assert_eq!(outcomes, [ComparisonOutcome::ErrorMismatch]);
}

#[tokio::test]
async fn errors_without_partial_eq_are_compared_by_their_text() {
    for read in [Read::FindText, Read::FindTextDetached] {
        let outcomes = reported(read, unavailable("timeout"), unavailable("reset")).await;
        assert_eq!(outcomes, [ComparisonOutcome::ErrorMismatch], "{read:?}");
        let outcomes = reported(read, unavailable("timeout"), unavailable("timeout")).await;
        assert!(outcomes.is_empty(), "{read:?}: {outcomes:?}");
    }
}

#[tokio::test]
async fn errors_with_only_debug_are_compared_by_their_debug_text() {
    // Both are `DebugOnlyError(503)`, whatever the message behind them.
    let outcomes = reported(
        Read::FindDebug,
        unavailable("timeout"),
        unavailable("reset"),
    )
    .await;
    assert!(outcomes.is_empty(), "{outcomes:?}");
}

#[tokio::test]
async fn a_compare_errors_comparator_decides_which_errors_agree() {
    for read in [Read::FindByKind, Read::FindDetachedByKind] {
        let outcomes = reported(read, unavailable("timeout"), unavailable("reset")).await;
        assert!(
            outcomes.is_empty(),
            "{read:?}: `same_kind` says these agree: {outcomes:?}"
        );
        let outcomes = reported(read, LookupError::NotFound, unavailable("reset")).await;
        assert_eq!(outcomes, [ComparisonOutcome::ErrorMismatch], "{read:?}");
    }
}
