//! [`NatsOptions`]: how a [`NatsQueue`](super::NatsQueue) connects, names its
//! topology and has its messages redelivered.

use std::time::Duration;

use super::BACKEND;
use crate::queue::broker::{check_options, invalid_option};
use crate::queue::QueueError;

/// How [`NatsQueue::open`](super::NatsQueue::open) connects, names its
/// streams and consumers, and has the server redeliver.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    pub(super) url: String,
    pub(super) prefix: String,
    pub(super) partitions: u16,
    pub(super) prefetch: u16,
    pub(super) ack_wait: Duration,
    pub(super) max_deliver: u16,
    pub(super) inactive_threshold: Duration,
    pub(super) namespaces: Vec<String>,
}

impl NatsOptions {
    /// The server at `url` (`nats://host:port`), names starting
    /// `dualwrite`, 16 partitions, 32 messages held per partition, an ack
    /// wait of 30 s, 10 deliveries at most, and a consumer whose process
    /// is gone deleted after 10 s.
    pub fn new(url: impl Into<String>) -> Self {
        NatsOptions {
            url: url.into(),
            prefix: "dualwrite".to_owned(),
            partitions: 16,
            prefetch: 32,
            ack_wait: Duration::from_secs(30),
            max_deliver: 10,
            inactive_threshold: Duration::from_secs(10),
            namespaces: Vec::new(),
        }
    }

    /// What every stream, subject and consumer name starts with (one
    /// prefix per service or migration): letters, digits, `-` and `_` only.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The number of subjects (`…p0`, `…p1`, …) a key of a namespace and
    /// target can be published on; each is consumed by one process at a
    /// time, in order, so more of them spread the keys over more
    /// consumers. A queue holding messages must be drained before this
    /// changes (a key would move to another subject). Unkeyed writes need
    /// exactly 1.
    pub fn partitions(mut self, partitions: u16) -> Self {
        self.partitions = partitions;
        self
    }

    /// The consumers' `max_ack_pending`: at most this many messages of a
    /// partition are delivered to its process and not yet acknowledged
    /// (claimed, or waiting out a retry delay).
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// The consumers' `ack_wait`: how long the server waits for a held
    /// message's acknowledgement or progress before delivering it again.
    /// A live queue sends progress for every held message well within it;
    /// it matters when a process stalls. Redeliveries back off from it
    /// (the consumers' `backoff`: 1, 2 and 4 times it).
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// The consumers' `max_deliver`: the delivery budget. A message
    /// delivered this many times without being settled (its holders kept
    /// stalling or dying) is dead-lettered on its last delivery, with the
    /// count as its error, instead of being left undeliverable. At least 2.
    pub fn max_deliver(mut self, max_deliver: u16) -> Self {
        self.max_deliver = max_deliver;
        self
    }

    /// The consumers' `inactive_threshold`: how soon after its process
    /// died (or lost its connection) a partition's consumer is deleted by
    /// the server, so that another process can take the partition over.
    /// Its unacknowledged messages stay in the stream and are delivered to
    /// the next consumer, in order.
    pub fn inactive_threshold(mut self, inactive_threshold: Duration) -> Self {
        self.inactive_threshold = inactive_threshold;
        self
    }

    /// Adds a namespace to those [`stats`](crate::queue::ReconciliationQueue::stats)
    /// counts from the start; a namespace first used by a call is added
    /// then.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespaces.push(namespace.into());
        self
    }

    /// Refuses options the queue cannot open with, naming the option.
    pub(super) fn validate(&self) -> Result<(), QueueError> {
        check_options(BACKEND, self.partitions, self.prefetch, &self.prefix)?;
        let name_safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if !self.prefix.chars().all(name_safe) {
            return Err(invalid_option(
                BACKEND,
                "`prefix` may hold only letters, digits, `-` and `_`",
            ));
        }
        if self.max_deliver < 2 {
            return Err(invalid_option(BACKEND, "`max_deliver` must be at least 2"));
        }
        if self.ack_wait.is_zero() || self.inactive_threshold.is_zero() {
            return Err(invalid_option(
                BACKEND,
                "`ack_wait` and `inactive_threshold` must be longer than 0",
            ));
        }
        Ok(())
    }
}
