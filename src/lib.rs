//! Test support for the dualwrite workspace: a small key-value repository
//! trait under `#[dual_write]`, and an in-memory store whose faults a test
//! scripts call by call (errors, panics, slowness, hangs, writes that land
//! and then time out).
//!
//! The integration tests in `tests/`, the examples and the benchmarks use it;
//! it is not published.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use dualwrite_runtime::dual_write;

/// A store's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// A key-value repository, the shape of many real ones.
#[dual_write(namespace = "kv")]
pub trait KvRepo: Send + Sync {
    /// Sets a key.
    #[dual_write(write, key = key)]
    fn put(&self, key: u32, value: u64) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes a key.
    #[dual_write(write, key = key)]
    fn delete(&self, key: u32) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads a key.
    #[dual_write(read, key = key)]
    fn get(&self, key: u32) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;
}

/// What a scripted call does instead of (or besides) succeeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Returns an error; the write is not applied.
    Error,
    /// Panics; the write is not applied.
    Panic,
    /// Sleeps, then applies the write (a timeout that drops the call first
    /// means it never lands).
    Slow(Duration),
    /// Applies the write, then sleeps: a write that lands but looks timed out.
    ApplyThenStall(Duration),
    /// Sleeps, then returns an error without applying: a slow failure.
    ErrorAfter(Duration),
}

/// One store's record of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `put(key, value)` reached the store.
    Put(u32, u64),
    /// `delete(key)` reached the store.
    Delete(u32),
    /// `get(key)` reached the store.
    Get(u32),
}

/// An in-memory [`KvRepo`] whose calls can be made to fail.
#[derive(Debug, Default)]
pub struct FaultyStore {
    data: Mutex<BTreeMap<u32, u64>>,
    /// Faults for the next calls, one each, in order.
    script: Mutex<VecDeque<Fault>>,
    /// A fault for every call while set (after the script is used up).
    standing: Mutex<Option<Fault>>,
    /// Keys whose writes are always rejected.
    rejected_keys: Mutex<Vec<u32>>,
    /// Random delays, up to this long, before each call.
    jitter: Mutex<Option<Duration>>,
    calls: Mutex<Vec<Call>>,
    call_count: AtomicUsize,
}

impl FaultyStore {
    /// A healthy, empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The faults of the next calls, in order.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.script.lock().unwrap().extend(faults);
    }

    /// A fault for every call until [`heal`](Self::heal).
    pub fn fail_always(&self, fault: Fault) {
        *self.standing.lock().unwrap() = Some(fault);
    }

    /// Clears the script and the standing fault.
    pub fn heal(&self) {
        self.script.lock().unwrap().clear();
        *self.standing.lock().unwrap() = None;
    }

    /// Rejects every write of `key` with an error.
    pub fn reject_key(&self, key: u32) {
        self.rejected_keys.lock().unwrap().push(key);
    }

    /// Accepts writes of every key again.
    pub fn accept_all_keys(&self) {
        self.rejected_keys.lock().unwrap().clear();
    }

    /// Sleeps a random time up to `max` before each call.
    pub fn jitter(&self, max: Duration) {
        *self.jitter.lock().unwrap() = Some(max);
    }

    /// A copy of the data.
    pub fn snapshot(&self) -> BTreeMap<u32, u64> {
        self.data.lock().unwrap().clone()
    }

    /// Every call that reached the store, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// How many calls reached the store.
    pub fn call_count(&self) -> usize {
        self.call_count.load(Ordering::SeqCst)
    }

    fn next_fault(&self) -> Option<Fault> {
        self.script
            .lock()
            .unwrap()
            .pop_front()
            .or(*self.standing.lock().unwrap())
    }

    async fn call(
        &self,
        call: Call,
        apply: impl FnOnce(&mut BTreeMap<u32, u64>),
    ) -> Result<(), StoreError> {
        self.call_count.fetch_add(1, Ordering::SeqCst);
        self.calls.lock().unwrap().push(call.clone());
        let jitter = *self.jitter.lock().unwrap();
        if let Some(max) = jitter {
            let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX).max(1);
            tokio::time::sleep(Duration::from_nanos(random_below(nanos))).await;
        }
        let key = match call {
            Call::Put(key, _) | Call::Delete(key) | Call::Get(key) => key,
        };
        if !matches!(call, Call::Get(_)) && self.rejected_keys.lock().unwrap().contains(&key) {
            return Err(StoreError(format!("key {key} is rejected by this store")));
        }
        match self.next_fault() {
            None => apply(&mut self.data.lock().unwrap()),
            Some(Fault::Error) => return Err(StoreError("store unavailable".into())),
            Some(Fault::Panic) => panic!("{INJECTED_PANIC} on {call:?}"),
            Some(Fault::Slow(delay)) => {
                tokio::time::sleep(delay).await;
                apply(&mut self.data.lock().unwrap());
            }
            Some(Fault::ErrorAfter(delay)) => {
                tokio::time::sleep(delay).await;
                return Err(StoreError("store failed after a delay".into()));
            }
            Some(Fault::ApplyThenStall(delay)) => {
                apply(&mut self.data.lock().unwrap());
                tokio::time::sleep(delay).await;
            }
        }
        Ok(())
    }
}

impl KvRepo for FaultyStore {
    async fn put(&self, key: u32, value: u64) -> Result<(), StoreError> {
        self.call(Call::Put(key, value), |data| {
            data.insert(key, value);
        })
        .await
    }

    async fn delete(&self, key: u32) -> Result<(), StoreError> {
        self.call(Call::Delete(key), |data| {
            data.remove(&key);
        })
        .await
    }

    async fn get(&self, key: u32) -> Result<Option<u64>, StoreError> {
        let mut value = None;
        self.call(Call::Get(key), |data| value = data.get(&key).copied())
            .await?;
        Ok(value)
    }
}

/// A [`KvRepo`] in a SQLite file (WAL, `synchronous = FULL`), for tests that
/// kill processes and reopen stores.
#[derive(Debug, Clone)]
pub struct SqliteKv {
    pool: sqlx::SqlitePool,
}

impl SqliteKv {
    /// Opens (creating if needed) the store at `path`.
    pub async fn open(path: &std::path::Path) -> Result<Self, sqlx::Error> {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS kv (key INTEGER PRIMARY KEY, value INTEGER NOT NULL)",
        )
        .execute(&pool)
        .await?;
        Ok(SqliteKv { pool })
    }

    /// Every row, by key.
    pub async fn snapshot(&self) -> Result<BTreeMap<u32, u64>, sqlx::Error> {
        let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT key, value FROM kv ORDER BY key")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(key, value)| (key as u32, value as u64))
            .collect())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn sql_error(error: sqlx::Error) -> StoreError {
    StoreError(error.to_string())
}

impl KvRepo for SqliteKv {
    async fn put(&self, key: u32, value: u64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(i64::from(key))
            .bind(value as i64)
            .execute(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(())
    }

    async fn delete(&self, key: u32) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM kv WHERE key = ?")
            .bind(i64::from(key))
            .execute(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(())
    }

    async fn get(&self, key: u32) -> Result<Option<u64>, StoreError> {
        let value: Option<(i64,)> = sqlx::query_as("SELECT value FROM kv WHERE key = ?")
            .bind(i64::from(key))
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_error)?;
        Ok(value.map(|(value,)| value as u64))
    }
}

/// Keeps the panics [`Fault::Panic`] injects out of the test output (they
/// are caught by dualwrite and expected); every other panic is reported as
/// usual. Call it at the start of a test; calling it again does nothing.
pub fn silence_injected_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or_default();
            if !message.starts_with(INJECTED_PANIC) {
                previous(info);
            }
        }));
    });
}

const INJECTED_PANIC: &str = "injected store panic";

/// A small, fast, non-cryptographic random number below `bound`, for test
/// jitter (seeded per thread from the clock).
pub fn random_below(bound: u64) -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x9e37_79b9_7f4a_7c15, |elapsed| elapsed.as_nanos() as u64)
                | 1,
        );
    }
    STATE.with(|state| {
        // xorshift64*
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound.max(1)
    })
}
