//! Sync delivery with a broker queue, on each broker: RabbitMQ (a server at
//! `DUALWRITE_AMQP_URL`, default 127.0.0.1:5672 guest/guest) and NATS
//! JetStream (`DUALWRITE_NATS_URL`, default nats://127.0.0.1:4222). Writes
//! the follower refused are queued on the broker, later writes of their
//! keys are queued behind them (`has_work`), and the worker applies them in
//! order once the follower is back, so both stores agree.
//!
//! `cargo test --features rabbitmq,nats --test broker_delivery`

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dualwrite_runtime::queue::{NatsOptions, NatsQueue, RabbitMqOptions, RabbitMqQueue};
use dualwrite_runtime::{DualWrite, ReconciliationQueue, RetryPolicy, Stage};
use dualwrite_suite::{Fault, FaultyStore, KvRepo, KvRepoOp};

/// A prefix of this run's own, joined by `separator`.
fn prefix(separator: char) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "dwtest{separator}{}{separator}{nanos}{separator}delivery",
        std::process::id()
    )
}

/// 100 writes of 20 keys queued while the follower refuses them, one more
/// queued behind them once it is back, then the worker's drain.
async fn queued_writes_reach_the_follower_in_order<Q>(queue: Q)
where
    Q: ReconciliationQueue + Clone + 'static,
{
    let repo = DualWrite::builder(FaultyStore::new(), FaultyStore::new())
        .queue(queue)
        .stage(Stage::DualWrite)
        .retry(
            RetryPolicy::default()
                .min_delay(Duration::from_millis(10))
                .max_delay(Duration::from_millis(50)),
        )
        .without_circuit_breaker()
        .build()
        .unwrap();
    repo.new_store().fail_always(Fault::Error);
    for round in 0..5u64 {
        for key in 0..20 {
            repo.put(key, round * 100 + u64::from(key)).await.unwrap();
        }
    }
    assert_eq!(
        repo.new_store().snapshot().len(),
        0,
        "the follower took nothing"
    );
    repo.new_store().heal();
    // Queued behind the key's earlier writes, not applied directly.
    repo.put(0, 999).await.unwrap();
    assert_eq!(
        repo.new_store().snapshot().get(&0),
        None,
        "the write of a key with queued work was queued"
    );
    let report = tokio::time::timeout(Duration::from_secs(60), repo.worker::<KvRepoOp>().drain())
        .await
        .expect("the drain finished");
    assert_eq!(report.applied, 101, "{report:?}");
    assert_eq!(repo.new_store().snapshot(), repo.old_store().snapshot());
    assert_eq!(repo.new_store().snapshot().get(&0), Some(&999));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_queued_on_rabbitmq_while_the_follower_is_down_reach_it_in_order() {
    let url = std::env::var("DUALWRITE_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let queue = RabbitMqQueue::open(RabbitMqOptions::new(url).prefix(prefix('.')).partitions(4))
        .await
        .unwrap();
    queued_writes_reach_the_follower_in_order(queue.clone()).await;
    queue.destroy().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_queued_on_nats_while_the_follower_is_down_reach_it_in_order() {
    let url =
        std::env::var("DUALWRITE_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let queue = NatsQueue::open(NatsOptions::new(url).prefix(prefix('_')).partitions(4))
        .await
        .unwrap();
    queued_writes_reach_the_follower_in_order(queue.clone()).await;
    queue.destroy().await.unwrap();
}
