//! [`RabbitMqOptions`]: how a [`RabbitMqQueue`](super::RabbitMqQueue) connects and names its topology.

/// How [`RabbitMqQueue::open`](super::RabbitMqQueue::open) connects and names its topology.
#[derive(Debug, Clone)]
pub struct RabbitMqOptions {
    pub(super) url: String,
    pub(super) prefix: String,
    pub(super) partitions: u16,
    pub(super) prefetch: u16,
    pub(super) namespaces: Vec<String>,
}

impl RabbitMqOptions {
    /// The broker at `url` (`amqp://user:password@host:port/vhost`), queue
    /// names starting `dualwrite.`, 16 partitions, 32 messages held per
    /// partition.
    pub fn new(url: impl Into<String>) -> Self {
        RabbitMqOptions {
            url: url.into(),
            prefix: "dualwrite".to_owned(),
            partitions: 16,
            prefetch: 32,
            namespaces: Vec::new(),
        }
    }

    /// The first part of every queue name (one per service or migration).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How many partition queues each namespace and target has. Keys are
    /// spread over them; more partitions let more keys be applied at once.
    /// Changing it for a queue that holds messages reorders keys: drain
    /// first. With 1, unkeyed writes are accepted (one line orders them).
    pub fn partitions(mut self, partitions: u16) -> Self {
        self.partitions = partitions;
        self
    }

    /// How many unacknowledged messages the consumer of one partition holds
    /// (AMQP prefetch): the most entries of a partition in flight or
    /// waiting out a retry delay at once.
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// A namespace whose queues are declared at open (others are declared
    /// on first use); [`stats`](crate::queue::ReconciliationQueue::stats) counts these.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespaces.push(namespace.into());
        self
    }
}
