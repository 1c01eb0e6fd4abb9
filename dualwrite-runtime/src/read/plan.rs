//! One read, as the generated code drives it.
//!
//! [`DualWrite::__read`](crate::DualWrite) makes a [`ReadPlan`]: the stage
//! the call is routed by (the base stage, or the rollout's for a key in
//! it), the serving store, and the store to compare against if this call is
//! compared (the stage compares and the call was sampled). The generated
//! code then calls exactly one of the plan's methods:
//!
//! - [`ReadPlan::serve`] when nothing is compared;
//! - [`ReadPlan::compare`] for a concurrent comparison (every async form,
//!   and `detached` native `async fn`);
//! - [`ReadPlan::detach`] (in `detached.rs`) for a detached comparison (`impl Future + Send`
//!   and `#[async_trait]` methods marked `detached`);
//! - the `_blocking` twins for plain `fn` methods.
//!
//! Every one of them returns the serving store's result untouched.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{select, Either};
use futures::FutureExt;
use tokio::time::Instant;
use tracing::Instrument;

use super::generated::KeptError;
use super::Reads;
use super::{judge, Answer};
use crate::guarded;
use crate::observe::{self, CallOutcome, ComparisonReport};
use crate::op::Key;
use crate::vocabulary::{Side, Stage};

/// How one read is routed. Made by generated code; not part of the API.
#[doc(hidden)]
#[must_use = "a read plan does nothing until one of its methods runs the read"]
pub struct ReadPlan<'a> {
    pub(super) shared: &'a Arc<Reads>,
    pub(super) call: Call,
    pub(super) span: tracing::Span,
}

/// One store's blocking read, boxed so that either store can be first.
pub(super) type BlockingRead<'f, R> = Box<dyn FnOnce() -> R + 'f>;

/// What identifies a call in metrics and reports.
#[derive(Clone)]
pub(super) struct Call {
    pub(super) namespace: &'static str,
    pub(super) method: &'static str,
    pub(super) key: Option<Key>,
    pub(super) stage: Stage,
    pub(super) serving: Side,
    pub(super) compared: Option<Side>,
    /// For a compared read without `key`: its arguments' hash and, with
    /// `report_values`, the arguments.
    pub(super) arguments: Option<ReadArguments>,
}

/// What an argument list is rendered as when rendering one of them panicked.
const PANICKED_ARGUMENT: &str = "\"<an argument's Serialize or Debug implementation panicked>\"";

/// What identifies the call of a read without `key` in a mismatch report.
#[derive(Clone)]
pub(super) struct ReadArguments {
    hash: u64,
    text: Option<String>,
}

impl ReadArguments {
    /// The arguments rendered one by one (see
    /// [`ArgumentProbe`](super::generated::ArgumentProbe)), as the JSON
    /// array that is hashed; the text is kept when `reveal`.
    fn new(rendered: &[String], reveal: bool) -> Self {
        let text = format!("[{}]", rendered.join(","));
        ReadArguments {
            hash: crate::op::stable_hash(text.as_bytes()),
            text: reveal.then_some(text),
        }
    }
}

/// The serving store's answer, kept for a comparison that outlives the call.
pub(super) struct Served<T, K = ()> {
    pub(super) value: Option<T>,
    /// Its error as kept for a detached comparison (`Option<KeptError<E>>`),
    /// or nothing when the comparison has the serving result at hand.
    pub(super) error: K,
    pub(super) shown: Option<String>,
    pub(super) elapsed: Duration,
}

impl<'a> ReadPlan<'a> {
    pub(crate) fn new(
        shared: &'a Arc<Reads>,
        namespace: &'static str,
        method: &'static str,
        key: impl FnOnce() -> Option<Key>,
    ) -> Self {
        let mut key = Some(key);
        let mut take_key = || key.take().and_then(|key| key());
        let (stage, rollout_key) = shared.stage.read_stage(&mut take_key);
        let compared = stage
            .compared()
            .filter(|_| super::sample::is_sampled(shared.sampling));
        let key = match (rollout_key, compared) {
            (Some(key), _) => key,
            (None, Some(_)) => take_key(),
            (None, None) => None,
        };
        let serving = stage.serving();
        let span = tracing::info_span!(
            "dualwrite.read",
            namespace,
            method,
            stage = stage.as_str(),
            side = serving.as_str(),
            compared = compared.map_or("none", Side::as_str),
        );
        ReadPlan {
            shared,
            call: Call {
                namespace,
                method,
                key,
                stage,
                serving,
                compared,
                arguments: None,
            },
            span,
        }
    }

    /// Identifies a compared call of a read without `key` by its
    /// arguments: `render` (called only then) gives each argument's JSON;
    /// reports carry their stable hash and, when `reveal` (the method's
    /// `report_values`), the arguments themselves.
    pub fn with_arguments<const N: usize>(
        mut self,
        reveal: bool,
        render: impl FnOnce() -> [String; N],
    ) -> Self {
        if self.call.compared.is_some() && self.call.key.is_none() {
            let arguments = match guarded::caught_blocking(render) {
                Ok(rendered) => ReadArguments::new(&rendered, reveal),
                Err(_) => ReadArguments::new(&[PANICKED_ARGUMENT.to_owned()], reveal),
            };
            self.call.arguments = Some(arguments);
        }
        self
    }

    /// The store whose result the caller gets.
    pub fn serving(&self) -> Side {
        self.call.serving
    }

    /// The store to compare against, if this call is compared.
    pub fn compared(&self) -> Option<Side> {
        self.call.compared
    }

    /// The stage this call is routed by.
    pub fn stage(&self) -> Stage {
        self.call.stage
    }

    /// Awaits the serving store alone.
    pub async fn serve<R, T: ?Sized, E: ?Sized>(
        self,
        read: impl Future<Output = R>,
        view: fn(&R) -> Result<&T, &E>,
    ) -> R {
        let call = self.call;
        async move {
            let start = Instant::now();
            let result = read.await;
            record_served(&call, view(&result).is_ok(), start.elapsed());
            result
        }
        .instrument(self.span)
        .await
    }

    /// Calls the serving store alone, for blocking methods.
    pub fn serve_blocking<R, T: ?Sized, E: ?Sized>(
        self,
        read: impl FnOnce() -> R,
        view: fn(&R) -> Result<&T, &E>,
    ) -> R {
        let _entered = self.span.enter();
        let start = Instant::now();
        let result = read();
        record_served(&self.call, view(&result).is_ok(), start.elapsed());
        result
    }

    /// Reads both stores concurrently within the caller's future and
    /// compares; returns the serving store's result. The caller waits for
    /// the serving store, then at most the compare timeout for the other.
    /// A panic in the other store or the comparators is caught; a panic in
    /// the serving store reaches the caller as it would without dualwrite.
    /// `compare_errors` decides whether two `Err`s agree.
    #[allow(clippy::too_many_arguments)]
    pub async fn compare<R, T: ?Sized, E: ?Sized>(
        self,
        old: impl Future<Output = R>,
        new: impl Future<Output = R>,
        view: fn(&R) -> Result<&T, &E>,
        compare: impl Fn(&T, &T) -> bool,
        compare_errors: impl Fn(&E, &E) -> bool,
        show: Option<fn(&R) -> String>,
    ) -> R {
        let ReadPlan { shared, call, span } = self;
        let Some(_) = call.compared else {
            let read = match call.serving {
                Side::Old => Either::Left(old),
                Side::New => Either::Right(new),
            };
            return ReadPlan { shared, call, span }.serve(read, view).await;
        };
        let (serving, other) = match call.serving {
            Side::Old => (Either::Left(old), Either::Right(new)),
            Side::New => (Either::Right(new), Either::Left(old)),
        };
        let timeout = shared.timeout;
        async move {
            let start = Instant::now();
            let serving = pin!(serving.map(|result| (result, start.elapsed())));
            let other = pin!(caught(other, start));
            let (result, serving_elapsed, other) = match select(serving, other).await {
                Either::Left(((result, elapsed), other)) => {
                    let other = match tokio::time::timeout(timeout, other).await {
                        Ok(other) => other,
                        Err(_) => (Err(None), None),
                    };
                    (result, elapsed, other)
                }
                Either::Right((other, serving)) => {
                    let (result, elapsed) = serving.await;
                    (result, elapsed, other)
                }
            };
            let (answer, other_elapsed) = other;
            let served = Served {
                value: view(&result).ok(),
                error: (),
                shown: shown(show, &result),
                elapsed: serving_elapsed,
            };
            record_served(&call, served.value.is_some(), serving_elapsed);
            conclude(
                shared,
                &call,
                served,
                answer,
                other_elapsed,
                view,
                &compare,
                &|other| serving_error_agrees(view(&result), other, &compare_errors),
                show,
                false,
            );
            result
        }
        .instrument(span)
        .await
    }

    /// Calls both stores, serving store first, on the caller's thread, and
    /// compares; returns the serving store's result. Blocking calls cannot
    /// be raced or interrupted, so the caller pays the other store's time.
    #[allow(clippy::too_many_arguments)]
    pub fn compare_blocking<R, T: ?Sized, E: ?Sized>(
        self,
        old: impl FnOnce() -> R,
        new: impl FnOnce() -> R,
        view: fn(&R) -> Result<&T, &E>,
        compare: impl Fn(&T, &T) -> bool,
        compare_errors: impl Fn(&E, &E) -> bool,
        show: Option<fn(&R) -> String>,
    ) -> R {
        let _entered = self.span.enter();
        let (serving, other): (BlockingRead<'_, R>, BlockingRead<'_, R>) = match self.call.serving {
            Side::Old => (Box::new(old), Box::new(new)),
            Side::New => (Box::new(new), Box::new(old)),
        };
        if self.call.compared.is_none() {
            drop(other);
            let start = Instant::now();
            let result = serving();
            record_served(&self.call, view(&result).is_ok(), start.elapsed());
            return result;
        }
        let start = Instant::now();
        let result = serving();
        let serving_elapsed = start.elapsed();
        let other_start = Instant::now();
        let answer = guarded::caught_blocking(other).map_err(|panic| Some(panic.to_string()));
        let other_elapsed = Some(other_start.elapsed());
        let served = Served {
            value: view(&result).ok(),
            error: (),
            shown: shown(show, &result),
            elapsed: serving_elapsed,
        };
        record_served(&self.call, served.value.is_some(), serving_elapsed);
        conclude(
            self.shared,
            &self.call,
            served,
            answer,
            other_elapsed,
            view,
            &compare,
            &|other| serving_error_agrees(view(&result), other, &compare_errors),
            show,
            false,
        );
        result
    }
}

/// The other store's read with its panic caught and its time taken from
/// `start`: `Ok(result)`, or `Err(Some(panic))`; `Err(None)` is kept for a
/// timeout.
pub(super) type OtherAnswer<R> = (Result<R, Option<String>>, Option<Duration>);

pub(super) fn caught<R>(
    read: impl Future<Output = R>,
    start: Instant,
) -> impl Future<Output = OtherAnswer<R>> {
    guarded::caught(read).map(move |answer| {
        let elapsed = Some(start.elapsed());
        (answer.map_err(|panic| Some(panic.to_string())), elapsed)
    })
}

/// The result as text for a report, if the method reports values; a
/// panicking `Debug` implementation is caught.
pub(super) fn shown<R>(show: Option<fn(&R) -> String>, result: &R) -> Option<String> {
    let show = show?;
    Some(
        guarded::caught_blocking(|| show(result))
            .unwrap_or_else(|_| "<its Debug implementation panicked>".to_owned()),
    )
}

/// Whether the other store's error agrees with the serving store's (which
/// is an error whenever this is asked).
fn serving_error_agrees<T: ?Sized, E: ?Sized>(
    serving: Result<&T, &E>,
    other: &E,
    compare_errors: &impl Fn(&E, &E) -> bool,
) -> bool {
    serving
        .err()
        .is_some_and(|serving| compare_errors(serving, other))
}

/// [`serving_error_agrees`] for a detached comparison, whose serving error
/// was kept: a copy is compared with `compare_errors`, a text with the other
/// error's text.
pub(super) fn kept_error_agrees<E>(
    kept: Option<&KeptError<E>>,
    other: &E,
    keep_error: fn(&E) -> KeptError<E>,
    compare_errors: &impl Fn(&E, &E) -> bool,
) -> bool {
    match kept {
        Some(KeptError::Value(serving)) => compare_errors(serving, other),
        Some(KeptError::Text(serving)) => {
            matches!(keep_error(other), KeptError::Text(other) if other == *serving)
        }
        Some(KeptError::Opaque) => true,
        None => false,
    }
}

pub(super) fn record_served(call: &Call, ok: bool, elapsed: Duration) {
    let outcome = if ok {
        CallOutcome::Ok
    } else {
        CallOutcome::Error
    };
    observe::record_call(
        call.namespace,
        call.method,
        call.serving,
        outcome,
        Some(elapsed),
    );
}

/// Judges, records and reports one comparison. Nothing here may panic out:
/// the comparator, the formatter and the observers are each caught.
#[allow(clippy::too_many_arguments)]
pub(super) fn conclude<R, T: ?Sized, E: ?Sized, V: std::borrow::Borrow<T>, K>(
    shared: &Reads,
    call: &Call,
    served: Served<V, K>,
    answer: Result<R, Option<String>>,
    other_elapsed: Option<Duration>,
    view: fn(&R) -> Result<&T, &E>,
    compare: &dyn Fn(&T, &T) -> bool,
    serving_error_agrees: &dyn Fn(&E) -> bool,
    show: Option<fn(&R) -> String>,
    detached: bool,
) {
    let Some(compared) = call.compared else {
        return;
    };
    let other_outcome = match &answer {
        Ok(result) if view(result).is_ok() => CallOutcome::Ok,
        Ok(_) => CallOutcome::Error,
        Err(Some(_)) => CallOutcome::Panic,
        Err(None) => CallOutcome::Timeout,
    };
    let other_elapsed = other_elapsed.filter(|_| other_outcome != CallOutcome::Timeout);
    observe::record_call(
        call.namespace,
        call.method,
        compared,
        other_outcome,
        other_elapsed,
    );
    let (other, other_error) = match &answer {
        Ok(result) => match view(result) {
            Ok(value) => (Answer::Value(value), None),
            Err(error) => (Answer::Errored, Some(error)),
        },
        Err(Some(_)) => (Answer::Panicked, None),
        Err(None) => (Answer::TimedOut, None),
    };
    let serving = served.value.as_ref().map(|value| value.borrow());
    let errors_agree = || other_error.is_some_and(serving_error_agrees);
    let outcome = judge(serving, other, compare, &errors_agree);
    observe::record_comparison(call.namespace, call.method, outcome);
    shared.stage.record_comparison(outcome);
    if !outcome.is_disagreement() {
        tracing::debug!(
            namespace = call.namespace,
            method = call.method,
            outcome = outcome.as_str(),
            "dualwrite read comparison: the stores agree"
        );
        return;
    }
    let compared_value = match &answer {
        Ok(result) => shown(show, result),
        Err(Some(panic)) => show.map(|_| panic.clone()),
        Err(None) => show.map(|_| "<no answer within the compare timeout>".to_owned()),
    };
    let report = ComparisonReport {
        namespace: call.namespace,
        method: call.method,
        key: call.key.clone(),
        stage: call.stage,
        serving: call.serving,
        compared,
        outcome,
        serving_elapsed: served.elapsed,
        compared_elapsed: other_elapsed,
        detached,
        serving_value: served.shown,
        compared_value,
        arguments_hash: call.arguments.as_ref().map(|arguments| arguments.hash),
        arguments: call
            .arguments
            .as_ref()
            .and_then(|arguments| arguments.text.clone()),
    };
    shared.observers.mismatch(&report);
}
