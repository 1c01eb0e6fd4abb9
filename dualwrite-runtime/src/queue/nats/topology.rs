//! The topology: connecting, declaring the two streams, names, publishing
//! with acknowledgements, and tearing it down.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use tokio::sync::Notify;

use super::{
    backend, Consuming, Envelope, Held, IdClock, Inner, NatsOptions, NatsQueue, BACKEND, HEADER,
};
use crate::op::Key;
use crate::queue::broker::partition;
use crate::queue::QueueError;
use crate::vocabulary::Side;

impl NatsQueue {
    /// Connects, declares the entries stream and the dead-letter stream
    /// (using them as they are if they exist), and starts the task that
    /// keeps held messages from being redelivered.
    ///
    /// # Errors
    ///
    /// [`QueueError::Backend`] when the options are invalid (0 partitions
    /// or prefetch, a `max_deliver` below 2, a zero ack wait or inactive
    /// threshold, a prefix empty or with other characters than letters,
    /// digits, `-` and `_`, a namespace with `.`, `*`, `>`, slashes or
    /// whitespace), the server cannot be reached or has no JetStream, or a
    /// stream cannot be created (its subjects overlap another stream's).
    pub async fn open(options: NatsOptions) -> Result<Self, QueueError> {
        options.validate()?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .ignore_discovered_servers()
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((50 * attempts as u64).min(1000))
            })
            .connect(&options.url)
            .await
            .map_err(backend)?;
        let jetstream = jetstream::new(client);
        let prefix = &options.prefix;
        let entries = jetstream
            .get_or_create_stream(stream::Config {
                name: format!("{prefix}_entries"),
                subjects: vec![format!("{prefix}.*.*.*")],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(backend)?;
        let dead = jetstream
            .get_or_create_stream(stream::Config {
                name: format!("{prefix}_dead"),
                subjects: vec![format!("{prefix}.dead")],
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(backend)?;
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let queue = NatsQueue {
            inner: Arc::new(Inner {
                namespaces: Mutex::new(Vec::new()),
                instance: format!(
                    "{:x}{:x}{:x}",
                    std::process::id(),
                    since.as_secs(),
                    since.subsec_nanos()
                ),
                options: options.clone(),
                jetstream,
                entries,
                dead,
                held: Mutex::new(Held::default()),
                consumers: Mutex::new(HashMap::new()),
                starting: tokio::sync::Mutex::new(()),
                arrived: Notify::new(),
                ids: IdClock::new(),
                generation: AtomicU64::new(0),
                keeper: Mutex::new(None),
            }),
        };
        for namespace in &options.namespaces {
            queue.learn(namespace)?;
        }
        queue.keep_held();
        Ok(queue)
    }

    pub(super) fn partition(&self, key: &Key) -> u16 {
        partition(key, self.inner.options.partitions)
    }

    /// The subject of `namespace`, `target` and partition `n`.
    pub fn partition_subject(&self, namespace: &str, target: Side, n: u16) -> String {
        format!(
            "{}.{namespace}.{}.p{n}",
            self.inner.options.prefix,
            target.as_str()
        )
    }

    /// The subject of the dead letters.
    pub fn dead_subject(&self) -> String {
        format!("{}.dead", self.inner.options.prefix)
    }

    /// The name of the stream of the entries.
    pub fn entries_stream(&self) -> String {
        format!("{}_entries", self.inner.options.prefix)
    }

    /// The name of the stream of the dead letters.
    pub fn dead_stream(&self) -> String {
        format!("{}_dead", self.inner.options.prefix)
    }

    /// The name of this handle's consumer of `namespace`, `target` and
    /// partition `n` (another process's has another instance suffix).
    pub fn consumer_name(&self, namespace: &str, target: Side, n: u16) -> String {
        format!(
            "{namespace}_{}_p{n}_{}",
            target.as_str(),
            self.inner.instance
        )
    }

    /// Publishes on `subject` and waits for the server's acknowledgement
    /// that the stream stored the message.
    pub(super) async fn publish(
        &self,
        subject: &str,
        meta: &Envelope,
        payload: Vec<u8>,
    ) -> Result<(), QueueError> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, meta.encode()?.as_str());
        let acknowledgement = self
            .inner
            .jetstream
            .publish_with_headers(subject.to_owned(), headers, payload.into())
            .await
            .map_err(backend)?
            .await
            .map_err(backend)?;
        let expected = if subject == self.dead_subject() {
            self.dead_stream()
        } else {
            self.entries_stream()
        };
        if acknowledgement.stream != expected {
            return Err(QueueError::Backend(
                format!(
                    "{BACKEND} stored the message for `{subject}` in the stream `{}`, not `{expected}` (another stream has the subject)",
                    acknowledgement.stream
                )
                .into(),
            ));
        }
        Ok(())
    }

    /// Deletes both streams with their messages and consumers (every
    /// process's), and stops this handle's consumers: for tests and tools
    /// that delete a queue's topology.
    pub async fn destroy(self) -> Result<(), QueueError> {
        for consuming in self.inner.consumers.lock().unwrap().values_mut() {
            if let Consuming::Running { task, .. } = consuming {
                task.abort();
            }
        }
        for name in [self.entries_stream(), self.dead_stream()] {
            self.inner
                .jetstream
                .delete_stream(&name)
                .await
                .map_err(backend)?;
        }
        Ok(())
    }
}
