//! Permanent failures: a store that knows a write can never succeed (a
//! validation error, `422 Unprocessable Entity`) says so, and the worker
//! dead-letters the operation at once instead of spending its retry budget.

use std::cell::Cell;
use std::future::Future;

tokio::task_local! {
    static PERMANENT: Cell<bool>;
}

/// Marks the failure the store is about to return as permanent: retrying
/// the same operation cannot help, so the [`Worker`](crate::Worker)
/// dead-letters it after this attempt, with the store's error, rather than
/// retrying it until its [retry budget](crate::RetryPolicy::max_attempts)
/// is spent. The key then waits behind the dead letter, as for any other
/// (under the default [`PoisonPolicy`](crate::queue::PoisonPolicy)).
///
/// Call it in a write method, just before returning the error, when the
/// error says the request itself is wrong (not that the store is down or
/// slow):
///
/// ```
/// # #[derive(Debug)] struct Rejected(u16);
/// # fn status_of_the_answer() -> u16 { 422 }
/// fn answer(status: u16) -> Result<(), Rejected> {
///     if (400..500).contains(&status) && ![408, 429].contains(&status) {
///         dualwrite_runtime::reject_permanently();
///         return Err(Rejected(status));
///     }
///     Ok(())
/// }
/// # let _ = answer(status_of_the_answer());
/// ```
///
/// Returns whether a worker's replay is listening: outside a replay (the
/// request's own call to the follower, which queues the operation as
/// usual, or a call made without the wrapper) it does nothing and returns
/// `false`. A failure marked permanent is dead-lettered on the replay that
/// returns it, so a write refused in the request is dead-lettered by its
/// first replay.
pub fn reject_permanently() -> bool {
    PERMANENT.try_with(|permanent| permanent.set(true)).is_ok()
}

/// Runs a replay, and says whether the store called [`reject_permanently`]
/// during it.
pub(crate) async fn watching<F: Future>(replay: F) -> (F::Output, bool) {
    PERMANENT
        .scope(Cell::new(false), async {
            let output = replay.await;
            (output, PERMANENT.with(Cell::get))
        })
        .await
}
