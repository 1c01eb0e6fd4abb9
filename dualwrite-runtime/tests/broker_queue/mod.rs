//! The tests every broker queue (RabbitMQ, NATS JetStream) passes, written
//! once against a [`Broker`] and instantiated per backend by
//! [`broker_queue_tests!`]: the conformance cases its capabilities cover
//! and the model-based suite on what they cover (both in `suites.rs`),
//! an append seen at once by `has_work` and `stats`, the builder refusing the settings it cannot serve, unkeyed writes, a
//! process SIGKILLed between the broker's acknowledgement of appends and
//! their delivery losing none of them, and the broker connection cut
//! mid-publish and mid-consume through the loopback fault proxy.
//!
//! Every queue opened here has a prefix of its own (see
//! [`unique_prefix`]) and is deleted afterwards (a case that panics leaves
//! its topology behind, under its unique prefix).

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dualwrite_runtime::queue::{ClaimedEntry, NewEntry};
use dualwrite_runtime::{
    BuildError, Delivery, DualWrite, Key, QueueError, ReconciliationQueue, Side,
};

/// One broker backend, as the shared tests open and delete its queues.
pub trait Broker: 'static {
    /// The queue type.
    type Queue: ReconciliationQueue + Clone;
    /// The backend's name in errors ([`QueueCapabilities::backend`](dualwrite_runtime::queue::QueueCapabilities::backend)).
    const BACKEND: &'static str;
    /// Separates the parts of a prefix (what the broker's names allow).
    const SEPARATOR: char;

    /// The broker's address (`127.0.0.1:5672`), for the fault proxy.
    fn address() -> String;

    /// The URL of a broker listening at `address`.
    fn url_at(address: &str) -> String;

    /// Opens a queue at `url` with names starting `prefix`, of
    /// `partitions` partitions, with `namespace` declared at open.
    fn open(
        url: String,
        prefix: String,
        partitions: u16,
        namespace: Option<&'static str>,
    ) -> impl Future<Output = Result<Self::Queue, QueueError>> + Send;

    /// Deletes the queue's topology with its messages.
    fn destroy(queue: Self::Queue) -> impl Future<Output = Result<(), QueueError>> + Send;
}

mod appended;
mod instances;
mod suites;

pub use appended::append_is_seen_at_once;
pub use instances::instances_appending_at_once;

pub use suites::{conformance, model, model_of_one_partition};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A prefix no other run uses: `dwtest`, the process, a counter, the
/// clock's nanoseconds and `what`, joined by the broker's separator.
pub fn unique_prefix<B: Broker>(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let s = B::SEPARATOR;
    format!(
        "dwtest{s}{}{s}{}{s}{nanos}{s}{what}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

fn url<B: Broker>() -> String {
    B::url_at(&B::address())
}

pub fn entry(namespace: &str, key: &Key, payload: Vec<u8>) -> NewEntry {
    NewEntry {
        namespace: namespace.to_owned(),
        target: Side::New,
        key: key.clone(),
        method: "put".to_owned(),
        version: 1,
        payload,
        reason: "follower down".to_owned(),
        uncertain: false,
    }
}

/// Drains `namespace`: claims (up to 64, so one entry per key) and
/// completes each claim's entries together (distinct keys: their order
/// holds), handing each to `take`, which says whether it is one not taken
/// before. Stops once `expected` new ones were taken, or when none came for
/// `stall` (a partition never taken over, or entries gone): the test, not a
/// fixed deadline, then says what is missing. Returns how many new ones
/// were taken.
pub async fn drain<Q: ReconciliationQueue>(
    queue: &Q,
    namespace: &str,
    expected: usize,
    stall: Duration,
    mut take: impl FnMut(ClaimedEntry) -> bool,
) -> usize {
    let mut taken = 0;
    let mut progress = Instant::now();
    while taken < expected && progress.elapsed() < stall {
        let claim = queue
            .claim(namespace, 64, Duration::from_secs(60))
            .await
            .unwrap();
        let leases: Vec<_> = claim.entries.iter().map(|claimed| claimed.lease).collect();
        for claimed in claim.entries {
            if take(claimed) {
                taken += 1;
                progress = Instant::now();
            }
        }
        for completed in
            futures::future::join_all(leases.into_iter().map(|lease| queue.complete(lease))).await
        {
            completed.unwrap();
        }
    }
    taken
}

/// Every test of the suite, as `#[test]`s of the calling test crate, for
/// the [`Broker`] `$broker`.
#[macro_export]
///
/// `seen_at_once: [#[ignore = "why"]]` puts attributes on the two tests a
/// backend that misses a just-appended entry in `has_work` and `stats`
/// fails (see `appended.rs`): the deterministic case and the model suite
/// over one partition, where the miss shows most.
macro_rules! broker_queue_tests {
    ($broker:ty) => {
        broker_queue_tests!($broker, seen_at_once: []);
    };
    ($broker:ty, seen_at_once: [$(#[$seen:meta])*]) => {
        #[test]
        fn queue_passes_the_conformance_cases_of_its_capabilities() {
            broker_queue::conformance::<$broker>();
        }

        #[test]
        fn queue_matches_the_model_in_what_its_capabilities_cover() {
            broker_queue::model::<$broker>();
        }

        #[test]
        $(#[$seen])*
        fn queue_of_one_partition_matches_the_model_with_unkeyed_entries() {
            broker_queue::model_of_one_partition::<$broker>();
        }

        #[tokio::test]
        async fn journaled_delivery_is_refused_at_build_naming_the_backend_and_sync_builds() {
            broker_queue::journaled_delivery_is_refused::<$broker>().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$seen])*
        async fn an_append_is_seen_at_once_by_has_work_and_stats_of_its_consumer() {
            broker_queue::append_is_seen_at_once::<$broker>().await;
        }

        #[tokio::test]
        async fn unkeyed_writes_are_refused_over_several_partitions_and_accepted_over_one() {
            broker_queue::unkeyed_writes::<$broker>().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn appends_of_instances_writing_at_once_are_each_delivered_once_in_order() {
            broker_queue::instances_appending_at_once::<$broker>().await;
        }

        #[tokio::test]
        async fn child_appends_until_killed() {
            broker_queue::child_appends_until_killed::<$broker>().await;
        }

        #[tokio::test]
        async fn sigkill_between_acknowledgement_and_delivery_loses_no_acknowledged_append() {
            broker_queue::sigkill_loses_no_acknowledged_append::<$broker>().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn connection_cut_mid_publish_and_mid_consume_loses_nothing_acknowledged_and_keeps_key_order(
        ) {
            broker_queue::connection_cut_loses_nothing::<$broker>().await;
        }
    };
}

// ---------------------------------------------------------------------------
// What the broker refuses.

pub async fn journaled_delivery_is_refused<B: Broker>() {
    let queue = B::open(url::<B>(), unique_prefix::<B>("build"), 16, None)
        .await
        .unwrap();
    let error = DualWrite::builder((), ())
        .queue(queue.clone())
        .delivery(Delivery::Journaled)
        .build()
        .map(|_| ())
        .unwrap_err();
    match &error {
        BuildError::Invalid { setting, reason } => {
            assert_eq!(*setting, "delivery");
            assert!(reason.contains(B::BACKEND), "{reason}");
            assert!(reason.contains("write ahead"), "{reason}");
        }
        other => panic!("expected an invalid `delivery`, got {other}"),
    }
    // Sync delivery (the default) builds.
    DualWrite::builder((), ())
        .queue(queue.clone())
        .build()
        .map(|_| ())
        .unwrap();
    B::destroy(queue).await.unwrap();
}

pub async fn unkeyed_writes<B: Broker>() {
    let many = B::open(url::<B>(), unique_prefix::<B>("unkeyed4"), 4, None)
        .await
        .unwrap();
    let error = many
        .append(entry("ns", &Key::unkeyed(), b"x".to_vec()))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("partitions(1)"), "{error}");
    assert!(error.to_string().contains(B::BACKEND), "{error}");
    assert!(!many.capabilities().unkeyed_order);
    assert_eq!(many.capabilities().backend, B::BACKEND);
    B::destroy(many).await.unwrap();
    let one = B::open(url::<B>(), unique_prefix::<B>("unkeyed1"), 1, None)
        .await
        .unwrap();
    assert!(one.capabilities().unkeyed_order);
    one.append(entry("ns", &Key::unkeyed(), b"x".to_vec()))
        .await
        .unwrap();
    B::destroy(one).await.unwrap();
}

// ---------------------------------------------------------------------------
// SIGKILL between acknowledgement and delivery.

const CRASH_PREFIX: &str = "DUALWRITE_BROKER_CRASH_PREFIX";
const CRASH_LOG: &str = "DUALWRITE_BROKER_CRASH_LOG";
const CRASH_ROUND: &str = "DUALWRITE_BROKER_CRASH_ROUND";
const CRASH_KEYS: u32 = 48;
/// A writer of the crash test: (child round, writer in it).
type Writer = (u32, u32);
const CRASH_WRITERS: u32 = 8;

/// The child: writers append `key/seq` entries and log each one once the
/// broker has acknowledged it; a consumer claims and holds (never
/// completes) entries, as a worker killed mid-attempt does. It runs until
/// killed.
pub async fn child_appends_until_killed<B: Broker>() {
    let (Ok(prefix), Ok(log)) = (std::env::var(CRASH_PREFIX), std::env::var(CRASH_LOG)) else {
        return; // only run as the crash test's child
    };
    let round: u32 = std::env::var(CRASH_ROUND).unwrap().parse().unwrap();
    let queue = B::open(url::<B>(), prefix, 4, None).await.unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)
            .unwrap(),
    ));
    let holder = queue.clone();
    tokio::spawn(async move {
        loop {
            // Claims entries and never settles them.
            let _ = holder.claim("crash", 8, Duration::from_secs(600)).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let mut writers = Vec::new();
    for writer in 0..CRASH_WRITERS {
        let queue = queue.clone();
        let log = log.clone();
        writers.push(tokio::spawn(async move {
            for seq in 0u32.. {
                let key = format!("k{}", (writer + seq) % CRASH_KEYS);
                let value = format!("{key}/{round}/{writer}/{seq}");
                queue
                    .append(entry(
                        "crash",
                        &Key::from(key.as_str()),
                        value.clone().into_bytes(),
                    ))
                    .await
                    .unwrap();
                // One write per line (O_APPEND): a kill never tears one.
                log.lock()
                    .unwrap()
                    .write_all(format!("{value}\n").as_bytes())
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
}

pub async fn sigkill_loses_no_acknowledged_append<B: Broker>() {
    if std::env::var(CRASH_PREFIX).is_ok() {
        return;
    }
    let prefix = unique_prefix::<B>("crash");
    let dir = std::env::temp_dir().join(format!("{prefix}.dir"));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("acknowledged.log");
    for round in 0..3u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_appends_until_killed", "--nocapture"])
            .env(CRASH_PREFIX, &prefix)
            .env(CRASH_LOG, &log)
            .env(CRASH_ROUND, round.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500 + 500 * round));
        // SIGKILL: no destructor, no connection close.
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let acknowledged = std::fs::read_to_string(&log).unwrap();
    let acknowledged: Vec<&str> = acknowledged.lines().collect();
    assert!(
        acknowledged.len() > 100,
        "the children acknowledged only {} appends",
        acknowledged.len()
    );

    // Drain what the broker has: every acknowledged append, each key's in
    // order. A claim hands out one entry per key (the next waits for its
    // completion), so the drain of ~10^5 entries takes a while in a debug
    // build on a loaded machine: it stops when nothing new arrives for
    // STALL, not at a fixed time.
    const STALL: Duration = Duration::from_secs(30);
    let queue = B::open(url::<B>(), prefix, 4, Some("crash")).await.unwrap();
    let mut delivered: BTreeMap<String, Vec<(Writer, u32)>> = BTreeMap::new();
    let mut missing: std::collections::HashSet<&str> = acknowledged.iter().copied().collect();
    let started = Instant::now();
    drain(&queue, "crash", missing.len(), STALL, |claimed| {
        let text = String::from_utf8(claimed.payload).unwrap();
        let mut parts = text.split('/');
        let key = parts.next().unwrap().to_owned();
        let round: u32 = parts.next().unwrap().parse().unwrap();
        let writer: u32 = parts.next().unwrap().parse().unwrap();
        let seq: u32 = parts.next().unwrap().parse().unwrap();
        delivered
            .entry(key)
            .or_default()
            .push(((round, writer), seq));
        missing.remove(text.as_str())
    })
    .await;
    if !missing.is_empty() {
        let lost: Vec<&&str> = acknowledged
            .iter()
            .filter(|value| missing.contains(**value))
            .collect();
        let mut by_key: BTreeMap<&str, usize> = BTreeMap::new();
        for value in &lost {
            *by_key.entry(value.split('/').next().unwrap()).or_default() += 1;
        }
        panic!(
            "{} of {} acknowledged appends never delivered (nothing new for {STALL:?}, {:?} into the drain), by key {by_key:?}, e.g. {:?}",
            lost.len(),
            acknowledged.len(),
            started.elapsed(),
            &lost[..lost.len().min(5)]
        );
    }
    // Per key, each writer's entries arrive in its append order (a
    // redelivered entry may arrive twice: at-least-once).
    for (key, values) in &delivered {
        let mut last: BTreeMap<Writer, u32> = BTreeMap::new();
        for (writer, seq) in values {
            if let Some(previous) = last.get(writer) {
                assert!(
                    seq >= previous,
                    "key {key}: writer {writer:?}'s {seq} came after its {previous}"
                );
            }
            last.insert(*writer, *seq);
        }
    }
    B::destroy(queue).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------
// The broker connection cut mid-publish and mid-consume.

/// Keys written by one writer each, sequentially, through the fault proxy.
const FAULT_KEYS: u32 = 8;
const FAULT_WRITES: u32 = 60;

pub async fn connection_cut_loses_nothing<B: Broker>() {
    use dualwrite_runtime::fault_proxy::FaultProxy;
    use std::sync::{Arc, Mutex};

    let proxy = FaultProxy::start(B::address().parse().unwrap())
        .await
        .unwrap();
    let proxied = B::url_at(&proxy.addr().to_string());
    let prefix = unique_prefix::<B>("faults");
    let queue = B::open(proxied, prefix.clone(), 4, Some("faults"))
        .await
        .unwrap();
    // Per key: the acknowledged sequence numbers, and the applied ones in
    // the order the consumer applied them.
    let acknowledged: Arc<Mutex<BTreeMap<u32, Vec<u32>>>> = Arc::default();
    let applied: Arc<Mutex<BTreeMap<u32, Vec<u32>>>> = Arc::default();
    let call = Duration::from_secs(10);

    // The writers go on past FAULT_WRITES until at least three open
    // connections have been cut.
    let enough_cuts = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for key in 0..FAULT_KEYS {
        let queue = queue.clone();
        let acknowledged = acknowledged.clone();
        let enough_cuts = enough_cuts.clone();
        writers.push(tokio::spawn(async move {
            for seq in 0.. {
                if seq >= FAULT_WRITES && enough_cuts.load(Ordering::SeqCst) {
                    break;
                }
                let value = format!("{key}/{seq}").into_bytes();
                // An append that failed was not acknowledged: the writer
                // retries it (a lost acknowledgement may store it twice).
                loop {
                    let appended = tokio::time::timeout(
                        call,
                        queue.append(entry(
                            "faults",
                            &Key::from(format!("k{key}")),
                            value.clone(),
                        )),
                    )
                    .await;
                    if let Ok(Ok(_)) = appended {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                acknowledged
                    .lock()
                    .unwrap()
                    .entry(key)
                    .or_default()
                    .push(seq);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let consumer = {
        let queue = queue.clone();
        let applied = applied.clone();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        let task = tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let Ok(Ok(claim)) =
                    tokio::time::timeout(call, queue.claim("faults", 16, Duration::from_secs(30)))
                        .await
                else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                for claimed in claim.entries {
                    let text = String::from_utf8(claimed.payload.clone()).unwrap();
                    let (key, seq) = text.split_once('/').unwrap();
                    applied
                        .lock()
                        .unwrap()
                        .entry(key.parse().unwrap())
                        .or_default()
                        .push(seq.parse().unwrap());
                    // A completion lost in a cut is redelivered: applied again.
                    let _ = tokio::time::timeout(call, queue.complete(claimed.lease)).await;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        (done, task)
    };
    // Cut the connection every 300 ms while the writers and the consumer run.
    let mut cuts = 0;
    while !writers.iter().all(|writer| writer.is_finished()) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.cut();
        cuts += 1;
        if proxy.cut_connections() >= 3 {
            enough_cuts.store(true, Ordering::SeqCst);
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(cuts >= 3, "only {cuts} cuts happened during the writes");
    assert!(
        proxy.cut_connections() >= 3,
        "the cuts met no open connection"
    );
    // Drain: wait until every acknowledged write was applied.
    let deadline = Instant::now() + Duration::from_secs(60);
    let all_applied = || {
        let acknowledged = acknowledged.lock().unwrap();
        let applied = applied.lock().unwrap();
        acknowledged.iter().all(|(key, seqs)| {
            let got = applied.get(key).cloned().unwrap_or_default();
            seqs.iter().all(|seq| got.contains(seq)) && got.last() == seqs.last()
        })
    };
    while !all_applied() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consumer.0.store(true, Ordering::SeqCst);
    consumer.1.await.unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let applied = applied.lock().unwrap().clone();
    for (key, seqs) in &acknowledged {
        let got = applied.get(key).cloned().unwrap_or_default();
        let lost: Vec<&u32> = seqs.iter().filter(|seq| !got.contains(seq)).collect();
        assert!(
            lost.is_empty(),
            "key {key}: acknowledged writes {lost:?} never applied"
        );
        // Order: when a write is applied, every earlier acknowledged write
        // of its key was applied before it (replays after a cut repeat a
        // run in order; none overtakes an earlier write).
        for (at, seq) in got.iter().enumerate() {
            let before = &got[..at];
            for earlier in seqs.iter().filter(|earlier| *earlier < seq) {
                assert!(
                    before.contains(earlier),
                    "key {key}: {seq} applied before {earlier}: {got:?}"
                );
            }
        }
        assert_eq!(
            got.last(),
            seqs.last(),
            "key {key}: the last write applied is not the last acknowledged: {got:?}"
        );
    }
    eprintln!(
        "{cuts} cuts ({} connections cut); {} writes acknowledged, {} applications (replays included)",
        proxy.cut_connections(),
        acknowledged.values().map(Vec::len).sum::<usize>(),
        applied.values().map(Vec::len).sum::<usize>()
    );
    drop(queue);
    // Delete the topology over a direct connection.
    let direct = B::open(url::<B>(), prefix, 4, Some("faults"))
        .await
        .unwrap();
    B::destroy(direct).await.unwrap();
}
