//! Comparing the two stores record by record.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpoint;
use super::progress::Meter;
use super::{check_order, positive_batch, MigrateError, Normalizer, ProgressObserver, SyncQueue};
use crate::records::{Record, RecordKey, RecordStore};
use crate::vocabulary::Side;

/// How a [`Verify`] runs.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Records read per page from each store. Default: 1000.
    pub batch_size: usize,
    /// How many differences the report keeps (every one goes to
    /// [`keys_to`](Verify::keys_to)). Default: 20.
    pub sample_size: usize,
    /// The file recording how far the walk got; a killed run resumes after
    /// the last key it saved. Default: none.
    pub checkpoint: Option<PathBuf>,
    /// How often the checkpoint is saved. Default: 1 s.
    pub checkpoint_every: Duration,
    /// Ignore an unfinished checkpoint and start from the first key.
    pub restart: bool,
    /// How many times a differing key is read again before it is reported
    /// (0: report at once). Default: 3.
    pub recheck_attempts: u32,
    /// The pause before each re-check. Default: 200 ms.
    pub recheck_delay: Duration,
    /// How long a re-check waits for a key's queued work to drain (with
    /// [`live_writes`](Verify::live_writes)). Default: 30 s.
    pub drain_timeout: Duration,
    /// How many differing keys wait for their re-check at once; the walk
    /// pauses to re-check them when there are more (each pause costs the
    /// re-check delays once, for the whole group). Default: 10,000.
    pub max_pending_rechecks: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            batch_size: 1000,
            sample_size: 20,
            checkpoint: None,
            checkpoint_every: Duration::from_secs(1),
            restart: false,
            recheck_attempts: 3,
            recheck_delay: Duration::from_millis(200),
            drain_timeout: Duration::from_secs(30),
            max_pending_rechecks: 10_000,
        }
    }
}

/// How a key differs between the stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// Both stores hold the key, with different fields.
    Different,
    /// Only the old store holds it.
    MissingInNew,
    /// Only the new store holds it.
    ExtraInNew,
}

/// One key that differs. [`keys_to`](Verify::keys_to) writes one per line,
/// as JSON: `{"key":7,"kind":"different","fields":["email"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// The key.
    pub key: RecordKey,
    /// How it differs.
    pub kind: DifferenceKind,
    /// For [`DifferenceKind::Different`], the names of the fields that
    /// differ (never their values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// What a verify found, over every run of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Keys whose records agree (after normalising).
    pub matching: u64,
    /// Keys both stores hold, differently.
    pub different: u64,
    /// Keys only the old store holds.
    pub missing_in_new: u64,
    /// Keys only the new store holds.
    pub extra_in_new: u64,
    /// Keys that differed at first but agreed when re-checked (a live write
    /// was on its way); counted in `matching` too.
    pub settled_on_recheck: u64,
    /// The first differences found, up to the sample size.
    pub sample: Vec<Difference>,
    /// The key this run resumed after, if it resumed.
    pub resumed_after: Option<RecordKey>,
    /// Seconds this run took.
    pub elapsed_seconds: f64,
    /// Keys compared per second in this run.
    pub records_per_second: f64,
}

impl VerifyReport {
    /// Keys that differ, of every kind.
    pub fn differences(&self) -> u64 {
        self.different + self.missing_in_new + self.extra_in_new
    }

    /// Whether the stores agree on every key.
    pub fn is_clean(&self) -> bool {
        self.differences() == 0
    }

    fn count(&mut self, difference: Difference, sample_size: usize) {
        match difference.kind {
            DifferenceKind::Different => self.different += 1,
            DifferenceKind::MissingInNew => self.missing_in_new += 1,
            DifferenceKind::ExtraInNew => self.extra_in_new += 1,
        }
        if self.sample.len() < sample_size {
            self.sample.push(difference);
        }
    }

    fn compared(&self) -> u64 {
        self.matching + self.differences()
    }
}

#[derive(Serialize, Deserialize)]
struct State {
    cursor: Option<RecordKey>,
    report: VerifyReport,
}

/// Walks the old and the new store side by side in key order and reports
/// every key that differs.
///
/// Memory stays at one page of each store plus the differing keys awaiting
/// their re-check, whatever the stores hold. Each record is normalised (see
/// [`normalizer`](Self::normalizer)) before it is compared. A key that
/// differs is not reported at once: the live service may be between its two
/// writes of it, or have it queued. It is read again after
/// [`recheck_delay`](VerifyOptions::recheck_delay) (with
/// [`live_writes`](Self::live_writes): once the key's queued work has
/// drained), up to [`recheck_attempts`](VerifyOptions::recheck_attempts)
/// times, and reported only if it still differs.
///
/// # Cancel safety
///
/// Dropping the future stops the walk; a new run resumes at the checkpoint.
/// Keys written to [`keys_to`](Self::keys_to) since the last checkpoint are
/// written again by the resumed run (open the file to append).
pub struct Verify {
    old: Arc<dyn RecordStore>,
    new: Arc<dyn RecordStore>,
    options: VerifyOptions,
    normalizer: Option<Arc<dyn Normalizer>>,
    live: Option<SyncQueue>,
    keys: Option<Mutex<Box<dyn Write + Send>>>,
    progress: Option<Arc<dyn ProgressObserver>>,
}

/// One store's side of the walk: a page in memory, read on demand.
struct Walk<'a> {
    role: &'static str,
    store: &'a dyn RecordStore,
    page: VecDeque<Record>,
    after: Option<RecordKey>,
    exhausted: bool,
    batch_size: usize,
}

impl<'a> Walk<'a> {
    fn new(
        role: &'static str,
        store: &'a dyn RecordStore,
        after: Option<RecordKey>,
        batch_size: usize,
    ) -> Self {
        Walk {
            role,
            store,
            page: VecDeque::new(),
            after,
            exhausted: false,
            batch_size,
        }
    }

    /// The next record, reading a page when the last one is used up.
    async fn peek(&mut self) -> Result<Option<&Record>, MigrateError> {
        if self.page.is_empty() && !self.exhausted {
            let page = self
                .store
                .page(self.after.as_ref(), self.batch_size)
                .await
                .map_err(MigrateError::store(self.role))?;
            check_order(self.role, self.store, self.after.as_ref(), &page)?;
            self.exhausted = page.len() < self.batch_size;
            if let Some(last) = page.last() {
                self.after = Some(last.key.clone());
            }
            self.page = page.into();
        }
        Ok(self.page.front())
    }

    fn take(&mut self) -> Option<Record> {
        self.page.pop_front()
    }
}

impl Verify {
    /// A comparison of `old` and `new`.
    pub fn new(old: impl RecordStore, new: impl RecordStore, options: VerifyOptions) -> Self {
        Verify {
            old: Arc::new(old),
            new: Arc::new(new),
            options,
            normalizer: None,
            live: None,
            keys: None,
            progress: None,
        }
    }

    /// Rewrites every record before it is compared (see [`Normalize`](super::Normalize)).
    #[must_use]
    pub fn normalizer(mut self, normalizer: impl Normalizer + 'static) -> Self {
        self.normalizer = Some(Arc::new(normalizer));
        self
    }

    /// Re-checks a differing key only once the key's queued work has
    /// drained from `queue` (the service's).
    #[must_use]
    pub fn live_writes(mut self, queue: SyncQueue) -> Self {
        self.live = Some(queue);
        self
    }

    /// Writes every [`Difference`] to `writer`, one JSON object a line
    /// (read them back with [`read_differences`]).
    #[must_use]
    pub fn keys_to(mut self, writer: impl Write + Send + 'static) -> Self {
        self.keys = Some(Mutex::new(Box::new(std::io::BufWriter::new(writer))));
        self
    }

    /// Tells `observer` how far the walk got after every page.
    #[must_use]
    pub fn progress(mut self, observer: impl ProgressObserver + 'static) -> Self {
        self.progress = Some(Arc::new(observer));
        self
    }

    /// Compares every key, from the checkpoint on, and reports.
    ///
    /// # Errors
    ///
    /// [`MigrateError`] when a store, the queue or the keys' writer fails,
    /// the checkpoint cannot be used, or a store lists its keys out of
    /// order. Differences are never an error: see
    /// [`VerifyReport::is_clean`].
    pub async fn run(&self) -> Result<VerifyReport, MigrateError> {
        let options = &self.options;
        positive_batch(options.batch_size)?;
        let job = format!("{} <-> {}", self.old.describe(), self.new.describe());
        let mut checkpoint = Checkpoint::new(
            options.checkpoint.as_deref(),
            "verify",
            job,
            options.checkpoint_every,
        );
        let resumed = checkpoint.resume::<State>(options.restart)?;
        let resumed_after = resumed.as_ref().and_then(|state| state.cursor.clone());
        let mut state = resumed.unwrap_or(State {
            cursor: None,
            report: VerifyReport::default(),
        });
        state.report.resumed_after = resumed_after.clone();
        let total = self.old.count().await.map_err(MigrateError::store("old"))?;
        let meter = Meter::new(
            "verify",
            state.report.compared(),
            total,
            self.progress.clone(),
        );
        let mut old = Walk::new(
            "old",
            self.old.as_ref(),
            resumed_after.clone(),
            options.batch_size,
        );
        let mut new = Walk::new("new", self.new.as_ref(), resumed_after, options.batch_size);
        let mut suspects: Vec<RecordKey> = Vec::new();
        let mut since_report = 0usize;
        loop {
            let order = match (
                old.peek().await?.map(|r| &r.key),
                new.peek().await?.map(|r| &r.key),
            ) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(a), Some(b)) => a.cmp(b),
            };
            let (old_record, new_record) = match order {
                std::cmp::Ordering::Less => (old.take(), None),
                std::cmp::Ordering::Greater => (None, new.take()),
                std::cmp::Ordering::Equal => (old.take(), new.take()),
            };
            let key = old_record
                .as_ref()
                .or(new_record.as_ref())
                .map(|record| record.key.clone())
                .expect("one side had a record");
            match self.compare(old_record, new_record) {
                None => state.report.matching += 1,
                Some(_) if options.recheck_attempts > 0 => suspects.push(key.clone()),
                Some(difference) => self.found(&mut state.report, difference)?,
            }
            state.cursor = Some(key);
            since_report += 1;
            let page_done = since_report >= options.batch_size;
            // Re-checks wait (the delays, the queue), so differing keys are
            // re-checked in groups: when the group is full, or when a
            // checkpoint is due (it may only count settled keys).
            let recheck = suspects.len() >= options.max_pending_rechecks
                || (page_done && !suspects.is_empty() && checkpoint.is_due());
            if recheck {
                self.recheck(&mut state.report, std::mem::take(&mut suspects))
                    .await?;
            }
            if suspects.is_empty() && (recheck || page_done) {
                // Everything up to the cursor is counted: safe to resume after it.
                self.flush_keys()?;
                checkpoint.save(&state, false)?;
            }
            if page_done {
                meter.report(state.report.compared(), state.cursor.as_ref());
                since_report = 0;
            }
        }
        self.recheck(&mut state.report, suspects).await?;
        self.flush_keys()?;
        state.report.elapsed_seconds = meter.elapsed().as_secs_f64();
        state.report.records_per_second = meter.rate(state.report.compared());
        meter.report(state.report.compared(), state.cursor.as_ref());
        checkpoint.save(&state, true)?;
        Ok(state.report)
    }

    /// How the two normalised records differ, if they do.
    fn compare(&self, old: Option<Record>, new: Option<Record>) -> Option<Difference> {
        let normalised = |side: Side, record: Option<Record>| {
            record.map(|mut record| {
                if let Some(normalizer) = &self.normalizer {
                    normalizer.normalize(side, &mut record);
                }
                record
            })
        };
        match (normalised(Side::Old, old), normalised(Side::New, new)) {
            (Some(old), Some(new)) if old.fields == new.fields => None,
            (Some(old), Some(new)) => Some(Difference {
                fields: old.differing_fields(&new),
                key: old.key,
                kind: DifferenceKind::Different,
            }),
            (Some(old), None) => Some(Difference {
                key: old.key,
                kind: DifferenceKind::MissingInNew,
                fields: Vec::new(),
            }),
            (None, Some(new)) => Some(Difference {
                key: new.key,
                kind: DifferenceKind::ExtraInNew,
                fields: Vec::new(),
            }),
            (None, None) => None,
        }
    }

    fn found(&self, report: &mut VerifyReport, difference: Difference) -> Result<(), MigrateError> {
        if let Some(keys) = &self.keys {
            let mut keys = keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let written = serde_json::to_writer(&mut *keys, &difference)
                .map_err(|error| Box::new(error) as Box<dyn std::error::Error + Send + Sync>)
                .and_then(|()| keys.write_all(b"\n").map_err(Into::into));
            written.map_err(|source| MigrateError::Keys {
                what: "written",
                source,
            })?;
        }
        report.count(difference, self.options.sample_size);
        Ok(())
    }

    fn flush_keys(&self) -> Result<(), MigrateError> {
        if let Some(keys) = &self.keys {
            let mut keys = keys.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            keys.flush().map_err(|error| MigrateError::Keys {
                what: "written",
                source: Box::new(error),
            })?;
        }
        Ok(())
    }

    /// Reads each suspect again, after its queued work drained, until it
    /// agrees or the attempts run out; reports the ones that still differ.
    async fn recheck(
        &self,
        report: &mut VerifyReport,
        mut suspects: Vec<RecordKey>,
    ) -> Result<(), MigrateError> {
        let mut last: Vec<Difference> = Vec::new();
        for _ in 0..self.options.recheck_attempts {
            if suspects.is_empty() {
                break;
            }
            tokio::time::sleep(self.options.recheck_delay).await;
            self.wait_for_queued_work(&suspects).await?;
            last.clear();
            let mut still = Vec::new();
            for key in suspects {
                let old = self
                    .old
                    .get(&key)
                    .await
                    .map_err(MigrateError::store("old"))?;
                let new = self
                    .new
                    .get(&key)
                    .await
                    .map_err(MigrateError::store("new"))?;
                match self.compare(old, new) {
                    None => {
                        report.matching += 1;
                        report.settled_on_recheck += 1;
                    }
                    Some(difference) => {
                        still.push(key);
                        last.push(difference);
                    }
                }
            }
            suspects = still;
        }
        for difference in last {
            self.found(report, difference)?;
        }
        Ok(())
    }

    /// Waits, up to the drain timeout, until none of `keys` has queued work.
    async fn wait_for_queued_work(&self, keys: &[RecordKey]) -> Result<(), MigrateError> {
        let Some(live) = &self.live else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + self.options.drain_timeout;
        let mut waiting: Vec<&RecordKey> = keys.iter().collect();
        loop {
            let mut busy = Vec::new();
            for key in waiting {
                if live.has_work(key).await? {
                    busy.push(key);
                }
            }
            if busy.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            waiting = busy;
            tokio::time::sleep(self.options.recheck_delay).await;
        }
    }
}

/// Reads back what [`Verify::keys_to`] wrote: one [`Difference`] a line
/// (blank lines skipped), for [`Repair::run`](super::Repair::run).
pub fn read_differences(
    reader: impl std::io::Read,
) -> impl Iterator<Item = Result<Difference, MigrateError>> {
    std::io::BufReader::new(reader)
        .lines()
        .enumerate()
        .filter(|(_, line)| !matches!(line, Ok(text) if text.trim().is_empty()))
        .map(|(number, line)| {
            let line = line.map_err(|error| MigrateError::Keys {
                what: "read",
                source: Box::new(error),
            })?;
            serde_json::from_str(&line).map_err(|error| MigrateError::Keys {
                what: "read",
                source: format!("line {}: {error}", number + 1).into(),
            })
        })
}
