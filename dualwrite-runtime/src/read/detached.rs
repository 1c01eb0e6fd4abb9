//! Detached comparisons: the caller gets the serving store's answer at
//! once, and the other store's read and the comparison finish in a task of
//! their own (or on the blocking pool, for blocking methods).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;

use futures::future::{select, Either};
use tokio::time::Instant;
use tracing::Instrument;

use super::generated::KeptError;
use super::plan::{
    caught, conclude, kept_error_agrees, record_served, shown, Call, ReadPlan, Served,
};
use super::Reads;
use crate::guarded;
use crate::observe;

impl ReadPlan<'_> {
    /// Awaits the serving store and returns its result; the other store's
    /// read (`other`, already a `'static` future owning its arguments)
    /// runs in a task of its own, which compares once both have answered.
    /// When [`detached_concurrency`](crate::Builder::detached_concurrency)
    /// comparisons are running already, or there is no tokio runtime, the
    /// comparison is dropped and counted. The serving store's error is
    /// kept by `keep_error` (a copy, or its text) for `compare_errors`.
    #[allow(clippy::too_many_arguments)]
    pub async fn detach<R, T, E, C, CE>(
        self,
        serving: impl Future<Output = R>,
        other: impl Future<Output = R> + Send + 'static,
        view: fn(&R) -> Result<&T, &E>,
        compare: C,
        compare_errors: CE,
        keep_error: fn(&E) -> KeptError<E>,
        show: Option<fn(&R) -> String>,
    ) -> R
    where
        R: Send + 'static,
        T: Clone + Send + 'static,
        E: Send + 'static,
        C: Fn(&T, &T) -> bool + Send + 'static,
        CE: Fn(&E, &E) -> bool + Send + 'static,
    {
        let ReadPlan { shared, call, span } = self;
        let Some(_) = call.compared else {
            return ReadPlan { shared, call, span }.serve(serving, view).await;
        };
        let Some(permit) = detached_permit(shared, &call) else {
            return ReadPlan { shared, call, span }.serve(serving, view).await;
        };
        let (sender, receiver) = tokio::sync::oneshot::channel::<Served<T, Option<KeptError<E>>>>();
        let start = Instant::now();
        let task_span = comparison_span(&call, &span);
        let task_shared = Arc::clone(shared);
        let task_call = call.clone();
        let timeout = shared.timeout;
        tokio::spawn(
            async move {
                let _permit = permit;
                let other = pin!(caught(other, start));
                let (served, other) = match select(receiver, other).await {
                    Either::Left((served, other)) => match served {
                        Ok(served) => match tokio::time::timeout(timeout, other).await {
                            Ok(other) => (served, other),
                            Err(_) => (served, (Err(None), None)),
                        },
                        Err(_) => return cancelled(&task_call),
                    },
                    Either::Right((other, receiver)) => match receiver.await {
                        Ok(served) => (served, other),
                        Err(_) => return cancelled(&task_call),
                    },
                };
                let (answer, other_elapsed) = other;
                let mut served = served;
                let kept = served.error.take();
                conclude(
                    &task_shared,
                    &task_call,
                    served,
                    answer,
                    other_elapsed,
                    view,
                    &compare,
                    &|other| kept_error_agrees(kept.as_ref(), other, keep_error, &compare_errors),
                    show,
                    true,
                );
            }
            .instrument(task_span),
        );
        async move {
            let result = serving.await;
            let elapsed = start.elapsed();
            let viewed = view(&result);
            record_served(&call, viewed.is_ok(), elapsed);
            let _ = sender.send(Served {
                value: viewed.ok().cloned(),
                error: viewed.err().map(keep_error),
                shown: shown(show, &result),
                elapsed,
            });
            result
        }
        .instrument(span)
        .await
    }

    /// [`Self::detach`] for blocking methods: the serving store is called
    /// on the caller's thread, then the other store on tokio's blocking
    /// pool (or a thread of its own outside a runtime), where the
    /// comparison runs.
    #[allow(clippy::too_many_arguments)]
    pub fn detach_blocking<R, T, E, C, CE>(
        self,
        serving: impl FnOnce() -> R,
        other: impl FnOnce() -> R + Send + 'static,
        view: fn(&R) -> Result<&T, &E>,
        compare: C,
        compare_errors: CE,
        keep_error: fn(&E) -> KeptError<E>,
        show: Option<fn(&R) -> String>,
    ) -> R
    where
        R: Send + 'static,
        T: Clone + Send + 'static,
        E: Send + 'static,
        C: Fn(&T, &T) -> bool + Send + 'static,
        CE: Fn(&E, &E) -> bool + Send + 'static,
    {
        let _entered = self.span.enter();
        let start = Instant::now();
        let result = serving();
        let elapsed = start.elapsed();
        let viewed = view(&result);
        record_served(&self.call, viewed.is_ok(), elapsed);
        if self.call.compared.is_none() {
            return result;
        }
        let Some(permit) = unsaturated_permit(self.shared, &self.call) else {
            return result;
        };
        let kept = viewed.err().map(keep_error);
        let served = Served {
            value: viewed.ok().cloned(),
            error: (),
            shown: shown(show, &result),
            elapsed,
        };
        let shared = Arc::clone(self.shared);
        let call = self.call.clone();
        let task_span = comparison_span(&call, &self.span);
        let job = move || {
            let _permit = permit;
            let _entered = task_span.enter();
            let other_start = Instant::now();
            let answer = guarded::caught_blocking(other).map_err(|panic| Some(panic.to_string()));
            let other_elapsed = Some(other_start.elapsed());
            conclude(
                &shared,
                &call,
                served,
                answer,
                other_elapsed,
                view,
                &compare,
                &|other| kept_error_agrees(kept.as_ref(), other, keep_error, &compare_errors),
                show,
                true,
            );
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(job);
            }
            Err(_) => {
                let spawned = std::thread::Builder::new()
                    .name("dualwrite-compare".into())
                    .spawn(job);
                if spawned.is_err() {
                    observe::record_dropped(self.call.namespace, self.call.method, "no_runtime");
                }
            }
        }
        result
    }
}

/// A permit for a detached comparison, or `None` (counted) when they are
/// saturated or there is no runtime to run one on.
fn detached_permit(shared: &Arc<Reads>, call: &Call) -> Option<tokio::sync::OwnedSemaphorePermit> {
    if tokio::runtime::Handle::try_current().is_err() {
        observe::record_dropped(call.namespace, call.method, "no_runtime");
        return None;
    }
    unsaturated_permit(shared, call)
}

/// A permit for a detached comparison, or `None` (counted) when
/// [`detached_concurrency`](crate::Builder::detached_concurrency) of them
/// run already.
fn unsaturated_permit(
    shared: &Arc<Reads>,
    call: &Call,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    match Arc::clone(&shared.detached).try_acquire_owned() {
        Ok(permit) => Some(permit),
        Err(_) => {
            observe::record_dropped(call.namespace, call.method, "saturated");
            tracing::debug!(
                namespace = call.namespace,
                method = call.method,
                "detached comparisons saturated; this call is not compared"
            );
            None
        }
    }
}

/// The span of a detached comparison: a root of its own (it outlives the
/// request), linked to the read's span.
fn comparison_span(call: &Call, read: &tracing::Span) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "dualwrite.detached_compare",
        namespace = call.namespace,
        method = call.method,
        stage = call.stage.as_str(),
        side = call.serving.as_str(),
    );
    span.follows_from(read);
    span
}

fn cancelled(call: &Call) {
    observe::record_dropped(call.namespace, call.method, "cancelled");
}
