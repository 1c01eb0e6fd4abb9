//! `dualwrite backfill | verify | repair`: the runtime's migration tasks
//! between two stores, with progress and a report.

use std::fs::OpenOptions;
use std::sync::Arc;

use dualwrite_runtime::migrate::{
    read_differences, Backfill, BackfillOptions, MigrateError, Normalize, Repair, SyncQueue,
    Verify, VerifyOptions,
};
use dualwrite_runtime::records::{RecordKey, RecordPair, RecordStore};
use dualwrite_runtime::Side;

use crate::args::{BackfillArgs, GlobalArgs, LiveArgs, RepairArgs, StoresArgs, VerifyArgs};
use crate::error::{CliError, Outcome};
use crate::open::{self, OpenQueue};
use crate::output;
use crate::progress::Reporter;
use crate::stores::{self, Access};

/// The stores a task runs on: the embedding binary's, or the SQL tables
/// the options name.
async fn pair(
    given: Option<&RecordPair>,
    args: &StoresArgs,
    old: Access,
    new: Access,
) -> Result<RecordPair, CliError> {
    match given {
        Some(_) if stores::names_any(args) => Err(CliError::Usage(
            "this binary supplies its own record stores; --old, --new, --table and --*-query are not used".to_owned(),
        )),
        Some(pair) => Ok(pair.clone()),
        None => stores::open(args, old, new).await,
    }
}

/// The service's queue, when the task runs beside live dual writes.
async fn live(
    global: &GlobalArgs,
    live: &LiveArgs,
) -> Result<Option<(OpenQueue, SyncQueue)>, CliError> {
    match (&live.namespace, &live.records) {
        (None, None) => Ok(None),
        (Some(namespace), Some(records)) => {
            let queue = open::queue(global).await?;
            let link = SyncQueue::new(queue.shared(), namespace, records).target(live.target);
            Ok(Some((queue, link)))
        }
        _ => Err(CliError::Usage(
            "--namespace and --records go together: the trait's namespace in the queue, and the name its wrapper registered with `.sync_records(..)`".to_owned(),
        )),
    }
}

fn failed(error: MigrateError) -> CliError {
    match error {
        MigrateError::Invalid { .. } => CliError::Usage(crate::error::one_line(&error.to_string())),
        other => CliError::store(other),
    }
}

async fn close(queue: Option<(OpenQueue, SyncQueue)>) {
    if let Some((queue, _)) = queue {
        queue.close().await;
    }
}

/// Ends a task, however it went: clears its progress, closes the queue,
/// and turns a failure into the tool's error.
async fn ended<T>(
    reporter: &Reporter,
    link: Option<(OpenQueue, SyncQueue)>,
    result: Result<T, MigrateError>,
) -> Result<T, CliError> {
    reporter.finish();
    close(link).await;
    result.map_err(failed)
}

pub(crate) async fn backfill(
    global: &GlobalArgs,
    args: &BackfillArgs,
    given: Option<&RecordPair>,
) -> Result<Outcome, CliError> {
    if args.live.target != Side::New {
        return Err(CliError::Usage(
            "backfill copies the old store to the new one; --target old is for verify and repair"
                .to_owned(),
        ));
    }
    let pair = pair(given, &args.stores, Access::Read, Access::Write).await?;
    let link = live(global, &args.live).await?;
    let options = BackfillOptions {
        batch_size: args.resume.batch_size,
        max_records_per_second: args.rate,
        checkpoint: args.resume.checkpoint.clone(),
        restart: args.resume.restart,
        ..BackfillOptions::default()
    };
    let reporter = Reporter::new("backfill");
    let mut task = Backfill::new(
        Arc::clone(pair.side(Side::Old)),
        Arc::clone(pair.side(Side::New)),
        options,
    )
    .progress(reporter.observer());
    if let Some((_, link)) = &link {
        task = task.live_writes(link.clone());
    }
    let report = ended(&reporter, link, task.run().await).await?;
    if global.json {
        output::json_line(&report)?;
    } else {
        println!(
            "backfill: read {}, wrote {}, skipped {} (the new store held the same or a newer copy), resynced {} (changed while copied), {} clashed on a unique column (stale copies, synced from the old store) in {:.1}s, {:.0} records/s",
            report.read, report.written, report.skipped, report.resynced, report.conflicted, report.elapsed_seconds, report.records_per_second
        );
    }
    Ok(Outcome::Clean)
}

fn normalizer(args: &VerifyArgs) -> Normalize {
    let mut normalize = Normalize::new();
    if args.trim_end_all {
        normalize = normalize.trim_end_all();
    }
    for column in &args.trim_end {
        normalize = normalize.trim_end(column);
    }
    for column in &args.lowercase {
        normalize = normalize.lowercase(column);
    }
    for (column, digits) in &args.timestamp_precision {
        normalize = normalize.timestamp_precision(column, *digits);
    }
    for (column, scale) in &args.decimal_scale {
        normalize = normalize.decimal_scale(column, *scale);
    }
    for column in &args.ignore {
        normalize = normalize.ignore(column);
    }
    normalize
}

pub(crate) async fn verify(
    global: &GlobalArgs,
    args: &VerifyArgs,
    given: Option<&RecordPair>,
) -> Result<Outcome, CliError> {
    let pair = pair(given, &args.stores, Access::Read, Access::Read).await?;
    let link = live(global, &args.live).await?;
    let options = VerifyOptions {
        batch_size: args.resume.batch_size,
        sample_size: args.sample,
        checkpoint: args.resume.checkpoint.clone(),
        restart: args.resume.restart,
        ..VerifyOptions::default()
    };
    let mut task = Verify::new(
        Arc::clone(pair.side(Side::Old)),
        Arc::clone(pair.side(Side::New)),
        options,
    )
    .normalizer(normalizer(args));
    if let Some(path) = &args.keys_to {
        // A resumed run appends: the keys before its checkpoint are there.
        let resuming = !args.resume.restart
            && args
                .resume
                .checkpoint
                .as_ref()
                .is_some_and(|path| path.exists());
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(resuming)
            .truncate(!resuming)
            .open(path)
            .map_err(|error| {
                CliError::store(format!(
                    "keys file {}: cannot open it: {error}",
                    path.display()
                ))
            });
        let file = match file {
            Ok(file) => file,
            Err(error) => {
                close(link).await;
                return Err(error);
            }
        };
        task = task.keys_to(file);
    }
    if let Some((_, link)) = &link {
        task = task.live_writes(link.clone());
    }
    let reporter = Reporter::new("verify");
    task = task.progress(reporter.observer());
    let report = ended(&reporter, link, task.run().await).await?;
    if global.json {
        output::json_line(&report)?;
    } else {
        println!(
            "verify: {} matching ({} settled on re-check), {} different, {} missing in new, {} extra in new; {:.1}s, {:.0} records/s",
            report.matching,
            report.settled_on_recheck,
            report.different,
            report.missing_in_new,
            report.extra_in_new,
            report.elapsed_seconds,
            report.records_per_second
        );
        for difference in &report.sample {
            let fields = if difference.fields.is_empty() {
                String::new()
            } else {
                format!(" ({})", difference.fields.join(", "))
            };
            let kind = serde_json::to_value(difference.kind)
                .ok()
                .and_then(|kind| kind.as_str().map(str::to_owned))
                .unwrap_or_default();
            println!("  key {}: {kind}{fields}", difference.key);
        }
        if report.differences() > report.sample.len() as u64 {
            match &args.keys_to {
                Some(path) => println!("  ... every key is in {}", path.display()),
                None => println!("  ... pass --keys-to FILE for every key"),
            }
        }
    }
    Ok(if report.is_clean() {
        Outcome::Clean
    } else {
        Outcome::DifferencesFound
    })
}

/// A key given on the command line: digits make an integer key.
fn key(text: &str) -> RecordKey {
    text.parse::<i64>()
        .map_or_else(|_| RecordKey::Text(text.to_owned()), RecordKey::Int)
}

pub(crate) async fn repair(
    global: &GlobalArgs,
    args: &RepairArgs,
    given: Option<&RecordPair>,
) -> Result<Outcome, CliError> {
    let mut keys: Vec<RecordKey> = args.key_values.iter().map(|text| key(text)).collect();
    if let Some(path) = &args.keys {
        let file = std::fs::File::open(path).map_err(|error| {
            CliError::store(format!(
                "keys file {}: cannot open it: {error}",
                path.display()
            ))
        })?;
        for difference in read_differences(file) {
            let difference = difference.map_err(|error| {
                CliError::Usage(format!("keys file {}: {error}", path.display()))
            })?;
            keys.push(difference.key);
        }
    }
    if keys.is_empty() {
        return Err(CliError::Usage(
            "no keys to repair: pass --keys FILE (what `verify --keys-to` wrote) or keys"
                .to_owned(),
        ));
    }
    let link = live(global, &args.live).await?;
    let target = args.live.target;
    let task = match &link {
        Some((_, link)) => Repair::through_queue(link.clone()),
        None => {
            let (old, new) = match target {
                Side::New => (Access::Read, Access::Write),
                Side::Old => (Access::Write, Access::Read),
            };
            let pair = pair(given, &args.stores, old, new).await?;
            let (old, new): (Arc<dyn RecordStore>, Arc<dyn RecordStore>) = (
                Arc::clone(pair.side(Side::Old)),
                Arc::clone(pair.side(Side::New)),
            );
            Repair::direct(old, new, target)
        }
    };
    let reporter = Reporter::new("repair");
    let result = task.progress(reporter.observer()).run(keys).await;
    let report = ended(&reporter, link, result).await?;
    if global.json {
        output::json_line(&report)?;
    } else if report.queued > 0 {
        println!(
            "repair: queued {} key-level syncs to the {} store; the service's worker applies them, then verify again",
            report.queued,
            target.as_str()
        );
    } else {
        println!(
            "repair: wrote {}, deleted {}, {} already absent in both, in the {} store",
            report.written,
            report.deleted,
            report.already_absent,
            target.as_str()
        );
    }
    Ok(Outcome::Clean)
}
