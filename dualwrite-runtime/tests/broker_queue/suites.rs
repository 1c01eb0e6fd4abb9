//! The conformance and model-based suites on a broker queue: what its
//! capabilities cover of each (the conformance cases it cannot pass are
//! skipped by name; the model suite reads the capabilities itself).

use std::marker::PhantomData;
use std::time::Duration;

use dualwrite_runtime::queue::testing::conformance::check_conformance;
use dualwrite_runtime::queue::testing::model::{
    check_backend, IdOrder, ModelBackend, ModelConfig, StatsPrecision,
};
use dualwrite_runtime::queue::PoisonPolicy;
use dualwrite_runtime::QueueError;

use super::{unique_prefix, url, Broker};

struct Fresh<B>(PhantomData<B>);

impl<B: Broker> ModelBackend for Fresh<B> {
    type Queue = B::Queue;

    async fn open(&mut self) -> Result<B::Queue, QueueError> {
        B::open(
            url::<B>(),
            unique_prefix::<B>("conformance"),
            4,
            Some("conformance"),
        )
        .await
    }

    async fn open_with_policy(
        &mut self,
        policy: PoisonPolicy,
    ) -> Result<Option<B::Queue>, QueueError> {
        match policy {
            PoisonPolicy::Skip => self.open().await.map(Some),
            PoisonPolicy::Block => Ok(None),
        }
    }

    async fn finish(&mut self, queue: B::Queue) {
        B::destroy(queue).await.expect("delete the test queues");
    }
}

/// The cases a broker queue declares it cannot pass: write-ahead, blocking
/// dead letters, per-key (not per-partition) delays and work checks, the
/// unkeyed barrier over several partitions, key listings.
const SKIPPED: &[&str] = &[
    "block/retry_delay_blocks_only_its_key",
    "block/dead_letter_blocks_its_key_only",
    "block/retry_dead_resets_and_goes_first",
    "block/drop_dead_unblocks",
    "block/fair_across_keys",
    "block/fair_when_keys_exceed_the_limit",
    "block/has_work_follows_entries",
    "block/prepared_entry_waits_for_commit",
    "block/aborted_entry_disappears",
    "block/expired_prepared_entry_is_claimed_as_orphan",
    "block/has_later_entries_sees_the_rest_of_the_key",
    "block/key_entries_shows_a_keys_line_in_order",
    "block/complete_and_claim_keeps_the_unkeyed_barrier",
    "block/complete_and_claim_leaves_prepared_and_dead_entries",
    "skip/fair_across_keys",
    "skip/has_work_follows_entries",
    "skip/prepared_entry_waits_for_commit",
];

pub fn conformance<B: Broker>() {
    match check_conformance(Fresh::<B>(PhantomData)) {
        Ok(report) => {
            let mut skipped: Vec<&str> = report.skipped().iter().map(String::as_str).collect();
            skipped.sort_unstable();
            let mut expected = SKIPPED.to_vec();
            expected.sort_unstable();
            assert_eq!(skipped, expected);
            assert_eq!(
                report.passed().len(),
                43 - SKIPPED.len(),
                "{:?}",
                report.passed()
            );
        }
        Err(failure) => panic!("{failure}"),
    }
}

// ---------------------------------------------------------------------------
// The model-based suite.

/// A fresh queue of 4 partitions per generated case, under a prefix of its
/// own, deleted after the case. No restarts: a broker queue is durable,
/// but its leases, attempt counts and last errors live in the process
/// (after a reopen the broker delivers every held entry again, with the
/// attempts of its delivery count), which the model does not follow; a
/// process dying is the crash and connection-cut tests' business.
struct ModelBroker<B> {
    partitions: u16,
    broker: PhantomData<B>,
}

impl<B: Broker> ModelBackend for ModelBroker<B> {
    type Queue = B::Queue;

    async fn open(&mut self) -> Result<B::Queue, QueueError> {
        B::open(
            url::<B>(),
            unique_prefix::<B>("model"),
            self.partitions,
            None,
        )
        .await
    }

    /// Each handle counts up from a random start.
    fn id_order(&self) -> IdOrder {
        IdOrder::PerHandle
    }

    /// In flight means leased by this process, lease not expired; RabbitMQ
    /// knows `oldest_pending` only of the entries delivered to it.
    fn stats_precision(&self) -> StatsPrecision {
        StatsPrecision::Held
    }

    async fn finish(&mut self, queue: B::Queue) {
        B::destroy(queue).await.expect("delete the test queues");
    }
}

/// The model suite over 4 partitions, generating and checking what the
/// queue's capabilities cover (no write-ahead, dead letters that do not
/// block, delays and work checks per partition, no unkeyed entries, ids
/// ordered per handle). A modest number of cases: every case declares and
/// deletes a topology, and a claim may wait up to 250 ms for deliveries.
/// `DUALWRITE_MODEL_CASES` overrides the count.
pub fn model<B: Broker>() {
    model_with::<B>(4, 24);
}

/// The model suite over one partition: unkeyed entries too, ordered
/// against every key.
pub fn model_of_one_partition<B: Broker>() {
    model_with::<B>(1, 12);
}

fn model_with<B: Broker>(partitions: u16, cases: u32) {
    let config = ModelConfig::new()
        .cases(cases)
        .max_steps(30)
        .max_shrink_time(Duration::from_secs(60))
        .with_env();
    if let Err(failure) = check_backend(
        &config,
        ModelBroker::<B> {
            partitions,
            broker: PhantomData,
        },
    ) {
        panic!("{failure}");
    }
}
