//! Latency of shadow reads, printed as figures (a benchmark, not a test: it
//! asserts nothing about speed).
//!
//! ```sh
//! cargo bench --bench shadow_reads            # or: -- 500 (rounds)
//! ```
//!
//! Two simulated stores answer every read after a fixed delay: the old one
//! 2 ms, the new one 3 ms (tokio timers, so each takes its delay rounded up
//! to the timer's millisecond). In one run, interleaving the four kinds of
//! call round by round so that drift hits them alike, it measures:
//!
//! 1. the old store alone, 2. the new store alone (the floors);
//! 3. a concurrent shadow read in `Shadow` (old serves, new compared), whose
//!    target is at most 1.1 x the slower store alone, not the sum;
//! 4. a `detached` shadow read, whose target is at most 1.1 x the serving
//!    store alone.

use std::future::Future;
use std::time::{Duration, Instant};

use dualwrite_runtime::{dual_write, DualWrite, InMemoryQueue, Stage};

/// A store's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError;

/// A repository with one read, compared concurrently, and the same read
/// marked `detached`.
#[dual_write(namespace = "bench")]
pub trait Lookup: Send + Sync {
    /// Compared within the caller's future.
    #[dual_write(read, key = id)]
    fn get(&self, id: u64) -> impl Future<Output = Result<u64, SimError>> + Send;

    /// Compared in a task of its own, after the caller has its result.
    #[dual_write(read, key = id, detached)]
    fn get_detached(&self, id: u64) -> impl Future<Output = Result<u64, SimError>> + Send;
}

/// Answers every read after `latency`.
struct SimStore {
    latency: Duration,
}

impl Lookup for SimStore {
    async fn get(&self, id: u64) -> Result<u64, SimError> {
        tokio::time::sleep(self.latency).await;
        Ok(id)
    }

    async fn get_detached(&self, id: u64) -> Result<u64, SimError> {
        self.get(id).await
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

async fn timed<F: Future>(call: F) -> Duration {
    let start = Instant::now();
    std::hint::black_box(call.await);
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(300);
    let old = || SimStore {
        latency: Duration::from_millis(2),
    };
    let new = || SimStore {
        latency: Duration::from_millis(3),
    };
    let repo = DualWrite::builder(old(), new())
        .queue(InMemoryQueue::new())
        .stage(Stage::Shadow)
        .compare_timeout(Duration::from_millis(100))
        .without_tracing_observer()
        .build()
        .expect("valid settings");

    // Warm up the runtime, the timers and the detached task path.
    for id in 0..20 {
        repo.get(id).await.unwrap();
        repo.get_detached(id).await.unwrap();
    }

    let (mut old_alone, mut new_alone, mut concurrent, mut detached) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds as u64 {
        old_alone.push(timed(repo.old_store().get(round)).await);
        new_alone.push(timed(repo.new_store().get(round)).await);
        concurrent.push(timed(repo.get(round)).await);
        detached.push(timed(repo.get_detached(round)).await);
    }
    // Let the last detached comparisons finish before reading the counts.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let compared = repo.stage().mismatch_rate();

    let old_alone = median(&mut old_alone);
    let new_alone = median(&mut new_alone);
    let concurrent = median(&mut concurrent);
    let detached = median(&mut detached);
    let slower = old_alone.max(new_alone);
    println!("shadow reads, {rounds} rounds each, medians (old store 2 ms, new store 3 ms)");
    println!(
        "  old store alone                       {:>7.3} ms",
        millis(old_alone)
    );
    println!(
        "  new store alone                       {:>7.3} ms",
        millis(new_alone)
    );
    println!(
        "  concurrent shadow read                {:>7.3} ms   {:.3} x the slower store alone ({:.3} ms; target <= 1.1)",
        millis(concurrent),
        concurrent.as_secs_f64() / slower.as_secs_f64(),
        millis(slower)
    );
    println!(
        "  detached shadow read                  {:>7.3} ms   {:.3} x the serving store alone ({:.3} ms; target <= 1.1)",
        millis(detached),
        detached.as_secs_f64() / old_alone.as_secs_f64(),
        millis(old_alone)
    );
    println!(
        "  comparisons made: {} ({} disagreed)",
        compared.comparisons, compared.disagreements
    );
}
