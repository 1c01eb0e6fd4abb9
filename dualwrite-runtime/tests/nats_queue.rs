//! The NATS JetStream reconciliation queue against the server at
//! `DUALWRITE_NATS_ADDRESS` (default `127.0.0.1:4222`, JetStream on): the
//! shared broker suite (`broker_queue/mod.rs`: conformance cases of its
//! capabilities, the model-based suite on what they cover, journaled
//! delivery refused, unkeyed writes, SIGKILL between acknowledgement and
//! delivery, the connection cut mid-publish and mid-consume), then what is NATS's own: the topology it declares, one
//! process consuming a partition at a time with take-over once it is gone,
//! stats across processes, and the options it refuses.
//!
//! `cargo test -p dualwrite-runtime --features nats,testing --test nats_queue`
//!
//! Every queue opened here has a prefix of its own (`dwtest_<pid>_<n>_...`)
//! and its streams are deleted afterwards.

mod broker_queue;

use std::time::{Duration, Instant};

use dualwrite_runtime::queue::{NatsOptions, NatsQueue};
use dualwrite_runtime::{Key, QueueError, ReconciliationQueue, Side};

use broker_queue::{entry, unique_prefix};

struct Nats;

/// How soon a dead process's partitions are taken over in these tests.
const TAKE_OVER: Duration = Duration::from_secs(3);

fn options(url: String, prefix: String, partitions: u16) -> NatsOptions {
    NatsOptions::new(url)
        .prefix(prefix)
        .partitions(partitions)
        .inactive_threshold(TAKE_OVER)
}

impl broker_queue::Broker for Nats {
    type Queue = NatsQueue;
    const BACKEND: &'static str = "NATS JetStream";
    const SEPARATOR: char = '_';

    fn address() -> String {
        std::env::var("DUALWRITE_NATS_ADDRESS").unwrap_or_else(|_| "127.0.0.1:4222".to_owned())
    }

    fn url_at(address: &str) -> String {
        format!("nats://{address}")
    }

    async fn open(
        url: String,
        prefix: String,
        partitions: u16,
        namespace: Option<&'static str>,
    ) -> Result<NatsQueue, QueueError> {
        let mut options = options(url, prefix, partitions);
        if let Some(namespace) = namespace {
            options = options.namespace(namespace);
        }
        NatsQueue::open(options).await
    }

    async fn destroy(queue: NatsQueue) -> Result<(), QueueError> {
        queue.destroy().await
    }
}

broker_queue_tests!(Nats);

fn url() -> String {
    use broker_queue::Broker;
    Nats::url_at(&Nats::address())
}

async fn open(prefix: &str, partitions: u16) -> NatsQueue {
    NatsQueue::open(options(url(), prefix.to_owned(), partitions).namespace("ns"))
        .await
        .unwrap()
}

#[tokio::test]
async fn names_follow_the_prefix_and_partition_subjects_carry_the_keys() {
    let prefix = unique_prefix::<Nats>("names");
    let queue = open(&prefix, 4).await;
    assert_eq!(queue.entries_stream(), format!("{prefix}_entries"));
    assert_eq!(queue.dead_stream(), format!("{prefix}_dead"));
    assert_eq!(queue.dead_subject(), format!("{prefix}.dead"));
    assert_eq!(
        queue.partition_subject("ns", Side::New, 3),
        format!("{prefix}.ns.new.p3")
    );
    assert!(queue
        .consumer_name("ns", Side::Old, 0)
        .starts_with("ns_old_p0_"));
    // Opening again uses the streams as they are (idempotent).
    let again = open(&prefix, 4).await;
    queue
        .append(entry("ns", &Key::from("a"), b"1".to_vec()))
        .await
        .unwrap();
    assert!(again
        .has_work("ns", Side::New, &Key::from("a"))
        .await
        .unwrap());
    let claim = again.claim("ns", 8, Duration::from_secs(30)).await.unwrap();
    assert_eq!(claim.entries.len(), 1);
    again.complete(claim.entries[0].lease).await.unwrap();
    assert!(!queue
        .has_work("ns", Side::New, &Key::from("a"))
        .await
        .unwrap());
    drop(again);
    queue.destroy().await.unwrap();
}

#[tokio::test]
async fn one_process_consumes_a_partition_and_another_takes_it_over_once_it_is_gone() {
    let prefix = unique_prefix::<Nats>("owner");
    let first = open(&prefix, 1).await;
    let second = open(&prefix, 1).await;
    for n in 0..3 {
        first
            .append(entry("ns", &Key::from(format!("k{n}")), vec![n]))
            .await
            .unwrap();
    }
    let held = first.claim("ns", 8, Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        held.entries.len(),
        3,
        "the first handle holds the partition"
    );
    // The second handle is refused the partition by the server: it sees
    // nothing of it, while the first holds its messages.
    let none = second
        .claim("ns", 8, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(none.entries.is_empty(), "{:?}", none.entries);
    let stats = second.stats().await.unwrap();
    assert_eq!(stats.new.pending, 3, "{stats:?}");
    assert!(stats.new.oldest_pending.is_some());
    // The first handle goes away without settling anything: the server
    // deletes its consumer after the inactive threshold, and the second
    // handle receives every message, in order.
    drop(held);
    drop(first);
    let deadline = Instant::now() + TAKE_OVER * 4;
    let mut taken = Vec::new();
    while taken.len() < 3 && Instant::now() < deadline {
        let claim = second
            .claim("ns", 8, Duration::from_secs(30))
            .await
            .unwrap();
        for claimed in claim.entries {
            taken.push(claimed.payload[0]);
            second.complete(claimed.lease).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(taken, vec![0, 1, 2]);
    assert!(second.stats().await.unwrap().is_empty());
    second.destroy().await.unwrap();
}

#[tokio::test]
async fn stats_count_depth_per_target_in_flight_dead_and_the_oldest_pending() {
    let prefix = unique_prefix::<Nats>("stats");
    let queue = open(&prefix, 2).await;
    let before = std::time::SystemTime::now();
    let mut old = entry("ns", &Key::from("o"), b"o".to_vec());
    old.target = Side::Old;
    queue.append(old).await.unwrap();
    for n in 0..3u8 {
        queue
            .append(entry("ns", &Key::from(format!("n{n}")), vec![n]))
            .await
            .unwrap();
    }
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.old.pending, stats.new.pending), (1, 3), "{stats:?}");
    let oldest = stats.old.oldest_pending.unwrap();
    assert!(oldest + Duration::from_secs(1) >= before, "{oldest:?}");
    let claim = queue.claim("ns", 2, Duration::from_secs(30)).await.unwrap();
    assert_eq!(claim.entries.len(), 2);
    let stats = queue.stats().await.unwrap();
    assert_eq!(
        stats.old.in_flight + stats.new.in_flight,
        2,
        "leased here: {stats:?}"
    );
    assert_eq!(
        stats.old.pending + stats.new.pending,
        2,
        "the rest: {stats:?}"
    );
    let dead = &claim.entries[0];
    queue.dead_letter(dead.lease, "rejected").await.unwrap();
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.target(dead.target).dead, 1, "{stats:?}");
    let letters = queue.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].error, "rejected");
    assert_eq!(letters[0].attempts, 1);
    queue.drop_dead(letters[0].id).await.unwrap();
    assert!(queue.dead_letters().await.unwrap().is_empty());
    queue.destroy().await.unwrap();
}

#[tokio::test]
async fn invalid_options_and_namespaces_are_refused_naming_nats_and_the_setting() {
    let refusal = |result: Result<NatsQueue, QueueError>| result.unwrap_err().to_string();
    let error = refusal(NatsQueue::open(NatsOptions::new(url()).prefix("a.b")).await);
    assert!(
        error.contains("NATS JetStream") && error.contains("`prefix`"),
        "{error}"
    );
    let error = refusal(
        NatsQueue::open(
            NatsOptions::new(url())
                .prefix(unique_prefix::<Nats>("opts"))
                .max_deliver(1),
        )
        .await,
    );
    assert!(error.contains("`max_deliver`"), "{error}");
    let error = refusal(NatsQueue::open(NatsOptions::new(url()).partitions(0)).await);
    assert!(error.contains("`partitions`"), "{error}");
    let prefix = unique_prefix::<Nats>("namespace");
    let queue = NatsQueue::open(NatsOptions::new(url()).prefix(prefix))
        .await
        .unwrap();
    let error = queue
        .append(entry("a.b", &Key::from("k"), b"x".to_vec()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("NATS JetStream") && error.contains("\"a.b\""),
        "{error}"
    );
    queue.destroy().await.unwrap();
}
