//! Copying the records that existed before dual writing began.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpoint;
use super::progress::{Meter, Pacer};
use super::{check_order, positive_batch, MigrateError, ProgressObserver, SyncQueue};
use crate::records::{PutCondition, Record, RecordKey, RecordStore};

/// How a [`Backfill`] runs.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// Records read and written per batch (one page, one write
    /// transaction). Default: 1000.
    pub batch_size: usize,
    /// At most this many records per second, to spare a production
    /// database. Default: unlimited.
    pub max_records_per_second: Option<f64>,
    /// The file recording how far the copy got; a run killed at any point
    /// resumes after the last key it saved. Default: none (start over).
    pub checkpoint: Option<PathBuf>,
    /// How often the checkpoint is saved (at most once per batch). A resumed
    /// run copies again at most this much, harmlessly. Default: 1 s.
    pub checkpoint_every: Duration,
    /// Ignore an unfinished checkpoint and start from the first key.
    pub restart: bool,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        BackfillOptions {
            batch_size: 1000,
            max_records_per_second: None,
            checkpoint: None,
            checkpoint_every: Duration::from_secs(1),
            restart: false,
        }
    }
}

/// What a backfill did, over every run of it (a resumed run adds to the
/// counts it resumed from).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackfillReport {
    /// Records read from the source.
    pub read: u64,
    /// Records written to the target (absent there, or older there).
    pub written: u64,
    /// Records the target already held at the same or a newer version:
    /// dual writing got there first.
    pub skipped: u64,
    /// Keys that changed in the source while they were being copied, each
    /// queued for a key-level sync (only with
    /// [`live_writes`](Backfill::live_writes)).
    pub resynced: u64,
    /// Records the target refused because they clashed with another of
    /// its rows on a unique column other than the key (the copy was stale:
    /// a live write had moved the value), each queued for a key-level sync
    /// instead (only with [`live_writes`](Backfill::live_writes); without
    /// it a clash stops the backfill, naming the records).
    #[serde(default)]
    pub conflicted: u64,
    /// The last key copied.
    pub last_key: Option<RecordKey>,
    /// The key this run resumed after, if it resumed.
    pub resumed_after: Option<RecordKey>,
    /// Seconds this run took.
    pub elapsed_seconds: f64,
    /// Records read per second in this run.
    pub records_per_second: f64,
}

/// Copies the source's records to the target in key order, in batches,
/// never replacing a record with an older copy.
///
/// Each batch is one page of the source written with
/// [`PutCondition::IfAbsentOrNewer`]: a record dual writing already put in
/// the target stays (and with a version column, an older one is
/// replaced). One race remains, which no condition on the write can close:
/// a live write that *deletes* or updates a key between the page's read and
/// its write (the copy brings back a deleted record, or writes a stale one
/// where the live update did not land). With
/// [`live_writes`](Self::live_writes), the backfill reads each batch's range
/// again after writing it and queues a key-level sync for every key that
/// changed meanwhile; the service's worker applies it after the key's own
/// queued writes, from the authoritative store. A stale copy can also clash
/// with another row of the target on a unique column other than the key
/// (a live write moved an email from this key to another one): with
/// `live_writes` such records are synced the same way instead of written
/// ([`BackfillReport::conflicted`]). Without it, run the backfill only
/// while nothing writes the keys, or verify and repair after; a clash then
/// stops it, naming the records.
///
/// # Cancel safety
///
/// Dropping the future stops the copy; the checkpoint holds what was
/// saved, and a new run resumes there (records written since are written
/// again, which changes nothing).
pub struct Backfill {
    source: Arc<dyn RecordStore>,
    target: Arc<dyn RecordStore>,
    options: BackfillOptions,
    live: Option<SyncQueue>,
    progress: Option<Arc<dyn ProgressObserver>>,
}

#[derive(Serialize, Deserialize)]
struct State {
    cursor: Option<RecordKey>,
    read: u64,
    written: u64,
    skipped: u64,
    resynced: u64,
    #[serde(default)]
    conflicted: u64,
}

impl Backfill {
    /// A copy from `source` to `target` (usually the old store and the new).
    pub fn new(
        source: impl RecordStore,
        target: impl RecordStore,
        options: BackfillOptions,
    ) -> Self {
        Backfill {
            source: Arc::new(source),
            target: Arc::new(target),
            options,
            live: None,
            progress: None,
        }
    }

    /// Makes the copy safe beside live dual writes: keys that change while
    /// copied are queued on `queue` for a key-level sync (see above).
    #[must_use]
    pub fn live_writes(mut self, queue: SyncQueue) -> Self {
        self.live = Some(queue);
        self
    }

    /// Tells `observer` how far the copy got after every batch.
    #[must_use]
    pub fn progress(mut self, observer: impl ProgressObserver + 'static) -> Self {
        self.progress = Some(Arc::new(observer));
        self
    }

    fn job(&self) -> String {
        format!("{} -> {}", self.source.describe(), self.target.describe())
    }

    /// Copies every record, from the checkpoint on (if one is saved), and
    /// returns the counts.
    ///
    /// # Errors
    ///
    /// [`MigrateError`] when a store or the queue fails, the checkpoint
    /// cannot be used, or the source lists its keys out of order. What was
    /// copied stays copied, and the checkpoint says up to where.
    pub async fn run(&self) -> Result<BackfillReport, MigrateError> {
        let options = &self.options;
        positive_batch(options.batch_size)?;
        if let Some(rate) = options.max_records_per_second {
            if !(rate > 0.0 && rate.is_finite()) {
                return Err(MigrateError::Invalid {
                    setting: "max_records_per_second",
                    message: format!("{rate} is not a positive number"),
                });
            }
        }
        let mut checkpoint = Checkpoint::new(
            options.checkpoint.as_deref(),
            "backfill",
            self.job(),
            options.checkpoint_every,
        );
        let resumed = checkpoint.resume::<State>(options.restart)?;
        let resumed_after = resumed.as_ref().and_then(|state| state.cursor.clone());
        let mut state = resumed.unwrap_or(State {
            cursor: None,
            read: 0,
            written: 0,
            skipped: 0,
            resynced: 0,
            conflicted: 0,
        });
        let total = self
            .source
            .count()
            .await
            .map_err(MigrateError::store("source"))?;
        let meter = Meter::new("backfill", state.read, total, self.progress.clone());
        let mut pacer = Pacer::new(options.max_records_per_second);
        let batch = options.batch_size;
        let mut page = self
            .source
            .page(state.cursor.as_ref(), batch)
            .await
            .map_err(MigrateError::store("source"))?;
        loop {
            let before = state.cursor.clone();
            let Some(last) = page.last().map(|record| record.key.clone()) else {
                break;
            };
            check_order("source", self.source.as_ref(), before.as_ref(), &page)?;
            // The next page is read while this one is written (with live
            // writes: while this one is written and then read again; the
            // re-read must follow the write, the next page need not).
            let next = self.source.page(Some(&last), batch);
            let (written, clashing, changed, next) = if self.live.is_some() {
                let copy = async {
                    let (written, clashing) = self.write_page(&page).await?;
                    let changed = self.changed_since(before.as_ref(), &page).await?;
                    Ok::<_, MigrateError>((written, clashing, changed))
                };
                let (copied, next) = tokio::join!(copy, next);
                let (written, clashing, changed) = copied?;
                (written, clashing, changed, next)
            } else {
                let (written, next) =
                    tokio::join!(self.target.put(&page, PutCondition::IfAbsentOrNewer), next);
                (
                    written.map_err(MigrateError::store("target"))?,
                    Vec::new(),
                    Vec::new(),
                    next,
                )
            };
            if let Some(live) = &self.live {
                for key in &clashing {
                    live.queue_sync(
                        key,
                        "the backfill's copy clashed with another row of the target on a unique column",
                    )
                    .await?;
                    state.conflicted += 1;
                }
                for key in changed.into_iter().filter(|key| !clashing.contains(key)) {
                    live.queue_sync(&key, "changed in the source while the backfill copied it")
                        .await?;
                    state.resynced += 1;
                }
            }
            let read = page.len() as u64;
            state.read += read;
            state.written += written.min(read);
            state.skipped += read.saturating_sub(written + clashing.len() as u64);
            state.cursor = Some(last);
            checkpoint.save(&state, false)?;
            meter.report(state.read, state.cursor.as_ref());
            pacer.pace(page.len()).await;
            page = next.map_err(MigrateError::store("source"))?;
        }
        checkpoint.save(&state, true)?;
        Ok(BackfillReport {
            read: state.read,
            written: state.written,
            skipped: state.skipped,
            resynced: state.resynced,
            conflicted: state.conflicted,
            last_key: state.cursor,
            resumed_after,
            elapsed_seconds: meter.elapsed().as_secs_f64(),
            records_per_second: meter.rate(state.read),
        })
    }

    /// Writes `page` to the target (with live writes), and returns how many
    /// records it wrote and the keys of those it refused on a unique
    /// column other than the key. Such a clash means the copy is stale: a
    /// live write moved the value (an email) to another key after the page
    /// was read, and the row holding it is that key's. The clashing keys
    /// are left to a key-level sync, which copies the source's record as it
    /// is then; a clash that outlives that is retried by the worker until
    /// the other key's sync frees the value.
    async fn write_page(&self, page: &[Record]) -> Result<(u64, Vec<RecordKey>), MigrateError> {
        let refused = match self.target.put(page, PutCondition::IfAbsentOrNewer).await {
            Ok(written) => return Ok((written, Vec::new())),
            Err(error) if error.conflicting_keys().is_some() => error,
            Err(error) => return Err(MigrateError::store("target")(error)),
        };
        tracing::debug!(error = %refused, "a backfill page clashed on a unique column; writing it record by record");
        // Nothing of the page was kept: one record at a time, to find the
        // ones that clash (the database may not say which).
        let mut written = 0;
        let mut clashing = Vec::new();
        for record in page {
            match self
                .target
                .put(std::slice::from_ref(record), PutCondition::IfAbsentOrNewer)
                .await
            {
                Ok(count) => written += count,
                Err(error) if error.conflicting_keys().is_some() => {
                    clashing.push(record.key.clone())
                }
                Err(error) => return Err(MigrateError::store("target")(error)),
            }
        }
        Ok((written, clashing))
    }

    /// The keys of `copied` (a page read after `after`) whose source record
    /// is no longer the one copied: deleted or changed since.
    async fn changed_since(
        &self,
        after: Option<&RecordKey>,
        copied: &[Record],
    ) -> Result<Vec<RecordKey>, MigrateError> {
        let Some(last) = copied.last().map(|record| &record.key) else {
            return Ok(Vec::new());
        };
        let mut now: BTreeMap<RecordKey, Record> = BTreeMap::new();
        let mut cursor = after.cloned();
        loop {
            let page = self
                .source
                .page(cursor.as_ref(), self.options.batch_size)
                .await
                .map_err(MigrateError::store("source"))?;
            let full = page.len() >= self.options.batch_size;
            let Some(end) = page.last().map(|record| record.key.clone()) else {
                break;
            };
            for record in page {
                if record.key <= *last {
                    now.insert(record.key.clone(), record);
                }
            }
            if !full || end >= *last {
                break;
            }
            cursor = Some(end);
        }
        Ok(copied
            .iter()
            .filter(|record| now.get(&record.key) != Some(record))
            .map(|record| record.key.clone())
            .collect())
    }
}
