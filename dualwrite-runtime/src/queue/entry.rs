//! The life of a queue entry, which every backend implements the same way.
//!
//! ```text
//!                 prepare                     append
//!                    │                           │
//!                    ▼                           │
//!              ┌──────────┐  commit              │
//!              │ prepared │──────────────┐       │
//!              └──────────┘              ▼       ▼
//!               │   │ expiry /     ┌─────────────────┐ ◄──── retry_later (after the delay)
//!         abort │   │ commit_      │     pending     │ ◄──── release (no attempt counted)
//!               │   │ uncertain    └─────────────────┘ ◄──── retry_dead (attempts reset)
//!               ▼   │ (orphaned)         │ claim: the head of its key,      ▲
//!            (gone) │                    │ ready, past every barrier        │
//!                   ▼                    ▼                                  │
//!              ┌────────────────────────────────┐  lease expires           │
//!              │ in flight (leased, token n)    │──► claimable again (n+1) │
//!              └────────────────────────────────┘                          │
//!                │ complete         │ dead_letter                          │
//!                ▼                  ▼                                      │
//!             (gone)           ┌──────────┐ ───────────────────────────────┘
//!                              │   dead   │ drop_dead ──► (gone)
//!                              └──────────┘
//! ```
//!
//! The rules every backend keeps (the conformance and model-based suites in
//! [`queue::testing`](crate::queue) hold each one to them):
//!
//! - **One line per key.** Entries of one `(namespace, target, key)` form a
//!   FIFO in id order. Only the head may be claimed; the next entry becomes
//!   the head when the one ahead of it is completed, dropped, or (under
//!   [`PoisonPolicy::Skip`](super::PoisonPolicy::Skip)) dead-lettered.
//! - **Unkeyed barrier.** An entry of the unkeyed key (`*`) is ordered
//!   against every key of its namespace and target by id.
//! - **Prepared entries wait for their writer.** A prepared entry is never
//!   claimed before its expiry, wherever it sits in its line; claimed after
//!   it (or after `commit_uncertain`), it is *orphaned*: the worker applies
//!   it to the store that was authoritative first.
//! - **Leases fence settles.** Every claim increments the entry's token; a
//!   completion, retry, release, dead-letter or renewal with an older token
//!   is refused with [`QueueError::LeaseLost`](super::QueueError::LeaseLost)
//!   and changes nothing.
//! - **Dead letters block.** A dead head keeps its key's later entries
//!   waiting (under the default [`PoisonPolicy::Block`](super::PoisonPolicy::Block))
//!   until an operator retries or drops it.
//!
//! What differs between backends is only how they store this: the SQLite
//! queue keeps each entry as a row with a `state` column ([`EntryState::as_str`]
//! spells its values) and a link to the entry ahead of it; the in-memory
//! queue keeps a map and a deque per key.

use std::fmt;
use std::time::SystemTime;

use super::EntryId;

/// Where an entry is in its life (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryState {
    /// Written ahead of an authoritative write still in progress; not
    /// claimed before its writer commits it, or its expiry passes.
    Prepared,
    /// Waiting for a worker, possibly until a retry delay ends or the
    /// entries ahead of it are applied.
    Pending,
    /// Claimed by a worker under a lease.
    InFlight,
    /// Its retry budget ran out, or it could not be decoded; waits for an
    /// operator.
    Dead,
}

impl EntryState {
    /// Every state, in the order of an entry's life.
    pub const ALL: [EntryState; 4] = [
        EntryState::Prepared,
        EntryState::Pending,
        EntryState::InFlight,
        EntryState::Dead,
    ];

    /// The state as backends store it and tools print it: `prepared`,
    /// `pending`, `leased` (in flight) or `dead`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EntryState::Prepared => "prepared",
            EntryState::Pending => "pending",
            EntryState::InFlight => "leased",
            EntryState::Dead => "dead",
        }
    }

    /// The state stored as `text`, if it is one of [`as_str`](Self::as_str)'s.
    pub fn from_stored(text: &str) -> Option<EntryState> {
        EntryState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

impl fmt::Display for EntryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a key's line, as an operator sees it
/// ([`QueueAdmin::key_entries`](super::QueueAdmin::key_entries)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEntry {
    /// The entry.
    pub id: EntryId,
    /// Where it is in its life.
    pub state: EntryState,
    /// The write method.
    pub method: String,
    /// The encoding version of the payload.
    pub version: u32,
    /// The serialised operation.
    pub payload: Vec<u8>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The last attempt's error, or why it was queued.
    pub last_error: String,
    /// When it was appended.
    pub enqueued_at: SystemTime,
    /// Whether the worker will apply it to the store that was authoritative
    /// first (its writer died or was cancelled during the authoritative
    /// write).
    pub orphaned: bool,
}

#[cfg(test)]
mod tests {
    use super::EntryState;

    #[test]
    fn every_state_reads_back_from_its_stored_spelling() {
        for state in EntryState::ALL {
            assert_eq!(EntryState::from_stored(state.as_str()), Some(state));
        }
        assert_eq!(EntryState::from_stored("in_flight"), None);
    }
}
