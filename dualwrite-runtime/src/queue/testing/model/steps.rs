//! Generated steps: what a case does, and the strategies that make them.

use super::*;

// ---------------------------------------------------------------------------
// Generated steps.

pub(super) const NAMESPACES: [&str; 2] = ["model-a", "model-b"];
/// The last one is the unkeyed key.
pub(super) const KEYS: [&str; 4] = ["k1", "k2", "k3", Key::UNKEYED];
pub(super) const UNKEYED: usize = 3;
pub(super) const METHODS: [&str; 3] = ["put", "delete_all", "rename_ünïcode"];
pub(super) const VERSIONS: [u32; 4] = [0, 1, 7, u32::MAX];
pub(super) const REASONS: [&str; 3] = ["follower down", "", "timed out ⏱"];
/// A deadline that does not pass during a run.
pub(super) const FAR: Duration = Duration::from_secs(3600);
/// An id no entry of a case reaches.
pub(super) const UNKNOWN_ID: EntryId = EntryId(1 << 40);

/// A prepare expiry, lease or delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    Now,
    Soon,
    Far,
}

impl Action {
    pub(super) fn name(self) -> &'static str {
        match self {
            Action::Complete => "complete",
            Action::Renew(_) => "renew",
            Action::RetryLater(_) => "retry_later",
            Action::Release => "release",
            Action::DeadLetter => "dead_letter",
            Action::HasLater => "has_later_entries",
            Action::SettleOrphan => "settle_orphan",
        }
    }
}

impl Wait {
    pub(super) fn name(self) -> &'static str {
        match self {
            Wait::Now => "0",
            Wait::Soon => "short",
            Wait::Far => "1h",
        }
    }
}

/// What a new entry holds.
#[derive(Debug, Clone)]
pub(super) struct Fields {
    pub(super) namespace: usize,
    pub(super) target: Side,
    pub(super) key: usize,
    pub(super) method: usize,
    pub(super) version: usize,
    pub(super) reason: usize,
    pub(super) payload: Vec<u8>,
}

impl Fields {
    pub(super) fn entry(&self, serial: usize, uncertain: bool) -> NewEntry {
        let mut payload = format!("{serial}:").into_bytes();
        payload.extend_from_slice(&self.payload);
        NewEntry {
            namespace: NAMESPACES[self.namespace].to_owned(),
            target: self.target,
            key: Key::from(KEYS[self.key]),
            method: METHODS[self.method].to_owned(),
            version: VERSIONS[self.version],
            payload,
            reason: REASONS[self.reason].to_owned(),
            uncertain,
        }
    }
}

impl fmt::Display for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            NAMESPACES[self.namespace], self.target, KEYS[self.key]
        )
    }
}

/// Chooses an entry or a lease when the step runs: among the preferred
/// candidates (live leases, prepared entries, dead letters) or among all.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pick {
    pub(super) preferred: bool,
    pub(super) index: Index,
}

/// What is done with a claim.
#[derive(Debug, Clone, Copy)]
pub(super) enum Action {
    Complete,
    Renew(Wait),
    RetryLater(Wait),
    Release,
    DeadLetter,
    HasLater,
    SettleOrphan,
}

#[derive(Debug, Clone)]
pub(super) enum Step {
    Append {
        fields: Fields,
        uncertain: bool,
    },
    Prepare {
        fields: Fields,
        expiry: Wait,
    },
    Commit(Pick),
    CommitUncertain(Pick),
    Abort(Pick),
    AbortUnknown,
    Claim {
        namespace: usize,
        limit: usize,
        lease: Wait,
    },
    /// Settles (or asks about) a claim picked when the step runs.
    Settle(Action, Pick),
    /// Claims, then does the action with every entry claimed: a worker's turn.
    Work {
        namespace: usize,
        limit: usize,
        lease: Wait,
        action: Action,
    },
    RetryDead(Pick),
    DropDead(Pick),
    SettleOrphan(Pick),
    HasWork {
        namespace: usize,
        target: Side,
        key: usize,
    },
    Stats,
    DeadLetters,
    Flush,
    TimePasses,
    Restart,
    /// `complete_and_claim`: completes claims picked when the step runs
    /// (held or lost, possibly one twice), then claims.
    Turnover {
        completes: Vec<Pick>,
        namespace: usize,
        limit: usize,
        lease: Wait,
    },
    /// Inserts, commits and completions sent at once, so that a backend
    /// that batches requests gets them together.
    Burst {
        inserts: Vec<Insert>,
        commits: Vec<Pick>,
        completes: Vec<Pick>,
    },
}

/// An entry appended or prepared in a [`Step::Burst`].
#[derive(Debug, Clone)]
pub(super) enum Insert {
    Append(Fields, bool),
    Prepare(Fields, Wait),
}

pub(super) fn weighted<T: fmt::Debug + 'static>(
    options: Vec<(u32, BoxedStrategy<T>)>,
) -> BoxedStrategy<T> {
    Union::new_weighted(options).boxed()
}

pub(super) fn wait(now: u32, soon: u32, far: u32) -> BoxedStrategy<Wait> {
    weighted(vec![
        (now, Just(Wait::Now).boxed()),
        (soon, Just(Wait::Soon).boxed()),
        (far, Just(Wait::Far).boxed()),
    ])
}

pub(super) fn namespace() -> BoxedStrategy<usize> {
    weighted(vec![(5, Just(0).boxed()), (1, Just(1).boxed())])
}

pub(super) fn side() -> BoxedStrategy<Side> {
    weighted(vec![
        (1, Just(Side::Old).boxed()),
        (1, Just(Side::New).boxed()),
    ])
}

pub(super) fn fields(keys: usize) -> BoxedStrategy<Fields> {
    (
        namespace(),
        side(),
        0..keys,
        0..METHODS.len(),
        0..VERSIONS.len(),
        0..REASONS.len(),
        vec(any::<u8>(), 0..4),
    )
        .prop_map(
            |(namespace, target, key, method, version, reason, payload)| Fields {
                namespace,
                target,
                key,
                method,
                version,
                reason,
                payload,
            },
        )
        .boxed()
}

pub(super) fn pick() -> BoxedStrategy<Pick> {
    (proptest::bool::weighted(0.75), any::<Index>())
        .prop_map(|(preferred, index)| Pick { preferred, index })
        .boxed()
}

pub(super) fn insert(profile: &Profile) -> BoxedStrategy<Insert> {
    let keys = profile.keys();
    let mut options = vec![(
        3,
        (fields(keys), proptest::bool::weighted(0.2))
            .prop_map(|(fields, uncertain)| Insert::Append(fields, uncertain))
            .boxed(),
    )];
    if profile.write_ahead {
        options.push((
            2,
            (fields(keys), wait(1, 2, 3))
                .prop_map(|(fields, expiry)| Insert::Prepare(fields, expiry))
                .boxed(),
        ));
    }
    weighted(options)
}

pub(super) fn action() -> BoxedStrategy<Action> {
    weighted(vec![
        (6, Just(Action::Complete).boxed()),
        (2, wait(1, 2, 2).prop_map(Action::Renew).boxed()),
        (3, wait(3, 2, 1).prop_map(Action::RetryLater).boxed()),
        (2, Just(Action::Release).boxed()),
        (4, Just(Action::DeadLetter).boxed()),
        (2, Just(Action::HasLater).boxed()),
        (2, Just(Action::SettleOrphan).boxed()),
    ])
}

/// The steps a run generates: only those of the queue's capabilities (no
/// write-ahead steps without `write_ahead`, no unkeyed entries without
/// `unkeyed_order`, no restarts unless durable).
pub(super) fn step_strategy(profile: &Profile) -> BoxedStrategy<Step> {
    let keys = profile.keys();
    let mut options: Vec<(u32, BoxedStrategy<Step>)> = vec![(
        14,
        (fields(keys), proptest::bool::weighted(0.2))
            .prop_map(|(fields, uncertain)| Step::Append { fields, uncertain })
            .boxed(),
    )];
    if profile.write_ahead {
        options.extend([
            (
                8,
                (fields(keys), wait(1, 2, 3))
                    .prop_map(|(fields, expiry)| Step::Prepare { fields, expiry })
                    .boxed(),
            ),
            (4, pick().prop_map(Step::Commit).boxed()),
            (2, pick().prop_map(Step::CommitUncertain).boxed()),
            (3, pick().prop_map(Step::Abort).boxed()),
            (1, Just(Step::AbortUnknown).boxed()),
        ]);
    }
    let commits = if profile.write_ahead { 0..3 } else { 0..1 };
    options.extend([
        (
            6,
            (namespace(), 1..=4usize, wait(1, 2, 4))
                .prop_map(|(namespace, limit, lease)| Step::Claim {
                    namespace,
                    limit,
                    lease,
                })
                .boxed(),
        ),
        (
            10,
            (action(), pick())
                .prop_map(|(action, pick)| Step::Settle(action, pick))
                .boxed(),
        ),
        (
            8,
            (namespace(), 1..=4usize, wait(1, 2, 4), action())
                .prop_map(|(namespace, limit, lease, action)| Step::Work {
                    namespace,
                    limit,
                    lease,
                    action,
                })
                .boxed(),
        ),
        (
            8,
            (vec(pick(), 0..4), namespace(), 0..=4usize, wait(1, 2, 4))
                .prop_map(|(completes, namespace, limit, lease)| Step::Turnover {
                    completes,
                    namespace,
                    limit,
                    lease,
                })
                .boxed(),
        ),
        (2, pick().prop_map(Step::RetryDead).boxed()),
        (2, pick().prop_map(Step::DropDead).boxed()),
        (2, pick().prop_map(Step::SettleOrphan).boxed()),
        (
            2,
            (namespace(), side(), 0..keys)
                .prop_map(|(namespace, target, key)| Step::HasWork {
                    namespace,
                    target,
                    key,
                })
                .boxed(),
        ),
        (1, Just(Step::Stats).boxed()),
        (1, Just(Step::DeadLetters).boxed()),
        (1, Just(Step::Flush).boxed()),
        (4, Just(Step::TimePasses).boxed()),
        (
            4,
            (
                vec(insert(profile), 0..4),
                vec(pick(), commits),
                vec(pick(), 0..4),
            )
                .prop_map(|(inserts, commits, completes)| Step::Burst {
                    inserts,
                    commits,
                    completes,
                })
                .boxed(),
        ),
    ]);
    if profile.restarts {
        options.push((2, Just(Step::Restart).boxed()));
    }
    weighted(options)
}
