//! A small in-memory table with an outage switch, shared by the macro's
//! behaviour tests (`native_async`, `async_trait_form`, `impl_future_form`,
//! `blocking_form`, `without_attribute`). Each test file wraps it in a store
//! implementing its own trait, written in the form that file covers.

// Each test file uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use dualwrite_runtime::Stage;

/// A table's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TableError(pub String);

/// Notes by id, with counters and an outage switch.
#[derive(Debug, Default)]
pub struct Table {
    rows: Mutex<BTreeMap<u64, String>>,
    down: AtomicBool,
    reads: AtomicUsize,
    writes: AtomicUsize,
}

impl Table {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call fails until [`Table::come_back`].
    pub fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
    }

    pub fn come_back(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    fn check_up(&self) -> Result<(), TableError> {
        if self.down.load(Ordering::SeqCst) {
            Err(TableError("table is down".to_owned()))
        } else {
            Ok(())
        }
    }

    pub fn put(&self, id: u64, text: &str) -> Result<(), TableError> {
        self.check_up()?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.rows.lock().unwrap().insert(id, text.to_owned());
        Ok(())
    }

    pub fn delete(&self, id: u64) -> Result<bool, TableError> {
        self.check_up()?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(self.rows.lock().unwrap().remove(&id).is_some())
    }

    pub fn get(&self, id: u64) -> Result<Option<String>, TableError> {
        self.check_up()?;
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(self.rows.lock().unwrap().get(&id).cloned())
    }

    /// Writes a row behind the wrapper's back (to make the stores differ).
    pub fn seed(&self, id: u64, text: &str) {
        self.rows.lock().unwrap().insert(id, text.to_owned());
    }

    pub fn rows(&self) -> BTreeMap<u64, String> {
        self.rows.lock().unwrap().clone()
    }

    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }
}

/// Every stage with the store that serves its reads ("old" or "new").
pub const SERVING: [(Stage, &str); 6] = [
    (Stage::Off, "old"),
    (Stage::DualWrite, "old"),
    (Stage::Shadow, "old"),
    (Stage::Live, "new"),
    (Stage::RampDown, "new"),
    (Stage::Complete, "new"),
];
