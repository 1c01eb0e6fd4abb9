//! The repository the report measures and its in-process stores.

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dualwrite_runtime::dual_write;

/// A store's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub &'static str);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for StoreError {}

/// Account balances: one write and one read, the shape of many real
/// repositories.
#[dual_write(namespace = "bench")]
pub trait Accounts: Send + Sync {
    /// Sets an account's balance.
    #[dual_write(write, key = id)]
    fn put(&self, id: u64, balance: u64) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads an account's balance.
    #[dual_write(read, key = id)]
    fn get(&self, id: u64) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
}

/// Iterations of [`spin`] that take about one microsecond on this machine,
/// set once by [`calibrate`].
static SPIN_PER_MICRO: AtomicU64 = AtomicU64::new(0);

/// CPU work the optimiser cannot remove: `iterations` rounds of a
/// multiply-xorshift.
fn spin(iterations: u64) -> u64 {
    let mut x = black_box(0x9E37_79B9_7F4A_7C15_u64);
    for _ in 0..iterations {
        x = x.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (x >> 29);
    }
    black_box(x)
}

/// Measures how many [`spin`] iterations make a microsecond (best of five).
pub fn calibrate() {
    let iterations = 2_000_000;
    let best = (0..5)
        .map(|_| {
            let started = Instant::now();
            spin(iterations);
            started.elapsed()
        })
        .min()
        .unwrap_or(Duration::from_millis(1));
    let per_micro = (iterations as f64 / (best.as_secs_f64() * 1e6)).max(1.0);
    SPIN_PER_MICRO.store(per_micro as u64, Ordering::Relaxed);
}

/// An in-memory store doing about 1 µs of CPU work per call (the fastest
/// store a user could have), optionally slowed by a timer on reads, or down.
#[derive(Debug, Default)]
pub struct Store {
    data: Mutex<HashMap<u64, u64>>,
    read_latency: Option<Duration>,
    down: bool,
}

impl Store {
    /// A healthy store.
    pub fn new() -> Self {
        Store::default()
    }

    /// A store whose reads take `latency` (a timer, not CPU).
    pub fn with_read_latency(latency: Duration) -> Self {
        Store {
            read_latency: Some(latency),
            ..Store::default()
        }
    }

    /// A store that refuses every call at once, as a server refusing
    /// connections does.
    pub fn down() -> Self {
        Store {
            down: true,
            ..Store::default()
        }
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.data.lock().expect("store lock").len()
    }
}

impl Accounts for Store {
    async fn put(&self, id: u64, balance: u64) -> Result<(), StoreError> {
        if self.down {
            return Err(StoreError("connection refused"));
        }
        spin(SPIN_PER_MICRO.load(Ordering::Relaxed));
        self.data.lock().expect("store lock").insert(id, balance);
        Ok(())
    }

    async fn get(&self, id: u64) -> Result<Option<u64>, StoreError> {
        if self.down {
            return Err(StoreError("connection refused"));
        }
        if let Some(latency) = self.read_latency {
            tokio::time::sleep(latency).await;
        } else {
            spin(SPIN_PER_MICRO.load(Ordering::Relaxed));
        }
        Ok(self.data.lock().expect("store lock").get(&id).copied())
    }
}
