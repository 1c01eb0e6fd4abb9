//! What a run generates and checks: the queue's
//! [capabilities](crate::queue::QueueCapabilities) and the backend's
//! [`IdOrder`], read once before the cases are generated.

use crate::queue::QueueCapabilities;

/// What a backend promises of its entry ids, beyond their being unique:
/// the model suite checks exactly that (see [`ModelBackend::id_order`]).
///
/// [`ModelBackend::id_order`]: super::ModelBackend::id_order
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IdOrder {
    /// Ids strictly increase in append order, also across restarts (a
    /// table's sequence). Dead letters are listed in id order. The
    /// default.
    #[default]
    Appended,
    /// Ids strictly increase in the append order of one open queue (one
    /// handle), and are unique across handles, but a handle opened later
    /// (after a restart, or in another process) starts anywhere, so ids say
    /// nothing of the order between handles (the broker queues: each handle
    /// counts up from a random start). Since ids say nothing of age, dead
    /// letters are listed oldest *dead* first: by `died_at`, ties by id.
    PerHandle,
}

/// How exactly a backend's [`stats`](crate::queue::ReconciliationQueue::stats)
/// count (see [`ModelBackend::stats_precision`]). `dead`, `blocked_keys`,
/// `is_empty` and the sum of `pending` and `in_flight` are always checked
/// exactly.
///
/// [`ModelBackend::stats_precision`]: super::ModelBackend::stats_precision
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StatsPrecision {
    /// `pending`, `in_flight` and `oldest_pending` exactly as modelled: a
    /// claimed entry is in flight until it is settled or claimed again,
    /// and `oldest_pending` is there whenever anything is pending or in
    /// flight. The default.
    #[default]
    Exact,
    /// As the broker queues count, from the leases this process holds: a
    /// claimed entry whose lease may have expired may count as pending
    /// instead of in flight, and `oldest_pending` may be missing (RabbitMQ
    /// knows it only of the entries this process has been delivered), but
    /// is never there when nothing is pending or in flight.
    Held,
}

/// What a run generates and checks.
#[derive(Debug, Clone, Copy)]
pub(super) struct Profile {
    /// `prepare`, `commit`, `commit_uncertain` and `abort` steps.
    pub(super) write_ahead: bool,
    /// A dead letter blocks its key ([`PoisonPolicy::Block`]); otherwise
    /// it does not ([`PoisonPolicy::Skip`]) and `retry_dead` appends it
    /// again behind its key's line.
    ///
    /// [`PoisonPolicy::Block`]: crate::queue::PoisonPolicy::Block
    /// [`PoisonPolicy::Skip`]: crate::queue::PoisonPolicy::Skip
    pub(super) blocking_dead_letters: bool,
    /// A claim hands out every ready head (up to its limit); otherwise it
    /// may hand out fewer (never one that is not ready).
    pub(super) key_independent_delays: bool,
    /// `has_work` and `has_later_entries` answer exactly; otherwise they
    /// may answer `true` when the model says `false` (never the reverse).
    pub(super) exact_key_work: bool,
    /// Entries of [`Key::unkeyed`](crate::op::Key::unkeyed) (and
    /// `has_work` of it).
    pub(super) unkeyed_order: bool,
    pub(super) ids: IdOrder,
    pub(super) stats: StatsPrecision,
    /// Restart steps ([`ModelBackend::durable`](super::ModelBackend::durable)).
    pub(super) restarts: bool,
}

impl Profile {
    pub(super) fn new(
        capabilities: &QueueCapabilities,
        ids: IdOrder,
        stats: StatsPrecision,
        restarts: bool,
    ) -> Self {
        Profile {
            write_ahead: capabilities.write_ahead,
            blocking_dead_letters: capabilities.blocking_dead_letters,
            key_independent_delays: capabilities.key_independent_delays,
            exact_key_work: capabilities.exact_key_work,
            unkeyed_order: capabilities.unkeyed_order,
            ids,
            stats,
            restarts,
        }
    }

    /// How many of [`KEYS`](super::steps::KEYS) a case uses: the unkeyed
    /// key (the last) only with unkeyed ordering.
    pub(super) fn keys(&self) -> usize {
        if self.unkeyed_order {
            super::steps::KEYS.len()
        } else {
            super::steps::UNKEYED
        }
    }
}
