//! A repository trait under `#[dw::dual_write]`, where `dw` is
//! `dualwrite-runtime` renamed in Cargo.toml. Nothing here names
//! `dualwrite_runtime`, and the crate has no `serde` dependency: the
//! generated code must reach everything through `::dw::__private`.

#![deny(warnings, missing_docs)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;

/// A counter store.
#[dw::dual_write(namespace = "counters")]
pub trait Counters: Send + Sync {
    /// Sets a counter.
    #[dual_write(write, key = name)]
    fn set(&self, name: &str, value: u64) -> impl Future<Output = Result<(), String>> + Send;

    /// Reads a counter.
    #[dual_write(read, key = name)]
    fn get(&self, name: &str) -> impl Future<Output = Result<Option<u64>, String>> + Send;
}

/// An in-memory [`Counters`] that can be switched off.
#[derive(Debug, Default)]
pub struct MemoryCounters {
    values: Mutex<BTreeMap<String, u64>>,
    down: Mutex<bool>,
}

impl MemoryCounters {
    /// Makes every call fail (`true`) or succeed again (`false`).
    pub fn set_down(&self, down: bool) {
        *self.down.lock().unwrap() = down;
    }

    /// A copy of the counters.
    pub fn values(&self) -> BTreeMap<String, u64> {
        self.values.lock().unwrap().clone()
    }
}

impl Counters for MemoryCounters {
    async fn set(&self, name: &str, value: u64) -> Result<(), String> {
        if *self.down.lock().unwrap() {
            return Err("down".to_owned());
        }
        self.values.lock().unwrap().insert(name.to_owned(), value);
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Option<u64>, String> {
        Ok(self.values.lock().unwrap().get(name).copied())
    }
}
