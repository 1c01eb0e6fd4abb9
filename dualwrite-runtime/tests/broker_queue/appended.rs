//! An append is seen at once by `has_work` and `stats` of the process
//! that consumes its partition. The model suite found RabbitMQ missing it
//! (a message the broker has pushed to the consumer is no longer counted
//! as ready, and is not held until its delivery arrives): RabbitMQ fails
//! this case, which is ignored there (see `rabbitmq_queue.rs`).

use std::time::Duration;

use dualwrite_runtime::{Key, ReconciliationQueue, Side};

use super::{entry, unique_prefix, url, Broker};

pub async fn append_is_seen_at_once<B: Broker>() {
    const APPENDS: u64 = 150;
    let queue = B::open(url::<B>(), unique_prefix::<B>("seen"), 1, Some("ns"))
        .await
        .unwrap();
    // Starts this process's consumer of the partition.
    let claim = queue.claim("ns", 1, Duration::from_secs(60)).await.unwrap();
    assert!(claim.entries.is_empty());
    for n in 0..APPENDS {
        let key = Key::from(format!("k{n}"));
        queue
            .append(entry("ns", &key, n.to_string().into_bytes()))
            .await
            .unwrap();
        assert!(
            queue.has_work("ns", Side::New, &key).await.unwrap(),
            "append {n}: has_work of its key is false right after it"
        );
        let stats = queue.stats().await.unwrap();
        assert_eq!(
            stats.new.pending + stats.new.in_flight,
            n + 1,
            "append {n}: stats right after it: {stats:?}"
        );
    }
    B::destroy(queue).await.unwrap();
}
