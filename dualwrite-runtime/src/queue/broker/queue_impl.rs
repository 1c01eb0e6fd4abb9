//! [`broker_queue_impl!`](broker_queue_impl): the trait calls every broker
//! queue answers alike.

/// `impl ReconciliationQueue for $queue { $calls }` with the calls every
/// broker queue answers alike added to the backend's own `$calls`:
/// `capabilities`, the write-ahead calls (refused), the lease calls on the
/// held messages, `key_entries` (refused: a queue cannot be read without
/// consuming it) and `flush` (every append returned after the broker
/// stored it). The type needs `fn held(&self) -> MutexGuard<'_, Held<_>>`
/// and `fn partitions(&self) -> u16`. (A macro around the whole `impl`, so
/// that `async_trait` sees every call expanded.)
macro_rules! broker_queue_impl {
    ($queue:ty, $backend:expr, { $($calls:tt)* }) => {
        #[::async_trait::async_trait]
        impl $crate::queue::ReconciliationQueue for $queue {
        $($calls)*

        fn capabilities(&self) -> $crate::queue::QueueCapabilities {
            $crate::queue::broker::capabilities($backend, self.partitions())
        }

        async fn prepare(
            &self,
            _entry: $crate::queue::NewEntry,
            _expiry: ::std::time::Duration,
        ) -> Result<$crate::queue::EntryId, $crate::queue::QueueError> {
            Err($crate::queue::broker::refused(
                $backend,
                "write ahead (prepare): use Delivery::Sync",
            ))
        }

        async fn commit(
            &self,
            _id: $crate::queue::EntryId,
        ) -> Result<(), $crate::queue::QueueError> {
            Err($crate::queue::broker::refused(
                $backend,
                "write ahead (commit): use Delivery::Sync",
            ))
        }

        async fn commit_uncertain(
            &self,
            _id: $crate::queue::EntryId,
        ) -> Result<(), $crate::queue::QueueError> {
            Err($crate::queue::broker::refused(
                $backend,
                "write ahead (commit_uncertain): use Delivery::Sync",
            ))
        }

        async fn abort(&self, _id: $crate::queue::EntryId) -> Result<(), $crate::queue::QueueError> {
            Err($crate::queue::broker::refused(
                $backend,
                "write ahead (abort): use Delivery::Sync",
            ))
        }

        async fn settle_orphan(
            &self,
            id: $crate::queue::EntryId,
        ) -> Result<(), $crate::queue::QueueError> {
            self.held().settle_orphan(id);
            Ok(())
        }

        async fn renew(
            &self,
            lease: $crate::queue::Lease,
            duration: ::std::time::Duration,
        ) -> Result<(), $crate::queue::QueueError> {
            self.held().renew(lease, duration)
        }

        async fn retry_later(
            &self,
            lease: $crate::queue::Lease,
            error: &str,
            delay: ::std::time::Duration,
        ) -> Result<(), $crate::queue::QueueError> {
            self.held().retry_later(lease, error, delay)
        }

        async fn release(&self, lease: $crate::queue::Lease) -> Result<(), $crate::queue::QueueError> {
            self.held().release(lease)
        }

        async fn key_entries(
            &self,
            _namespace: &str,
            _target: $crate::vocabulary::Side,
            _key: &$crate::op::Key,
        ) -> Result<Vec<$crate::queue::QueuedEntry>, $crate::queue::QueueError> {
            Err($crate::queue::broker::refused(
                $backend,
                "list a key's entries: a queue cannot be read without consuming it (see `stats` and `dead_letters`)",
            ))
        }

        async fn flush(&self) -> Result<(), $crate::queue::QueueError> {
            // Every append returned after the broker stored it; settles are
            // acknowledgements, which a lost connection turns into
            // redeliveries.
            Ok(())
        }
        }
    };
}
pub(in crate::queue) use broker_queue_impl;
