//! `dualwrite dead list | show | retry | drop` and `dualwrite queue key`:
//! the operator surface of the queue ([`QueueAdmin`]).

use dualwrite_runtime::queue::{DeadLetter, EntryId, QueuedEntry};
use dualwrite_runtime::{Key, QueueAdmin, QueueError};
use serde::Serialize;

use crate::args::{DeadCommand, GlobalArgs, QueueCommand};
use crate::error::{CliError, Outcome};
use crate::open;
use crate::output;

#[derive(Debug, Serialize)]
struct LetterView {
    id: u64,
    namespace: String,
    target: dualwrite_runtime::Side,
    key: String,
    method: String,
    version: u32,
    attempts: u32,
    error: String,
    enqueued_at: String,
    died_at: String,
    /// Only in `dead show`.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<serde_json::Value>,
}

impl LetterView {
    fn new(letter: &DeadLetter, with_payload: bool) -> Self {
        LetterView {
            id: letter.id.0,
            namespace: letter.namespace.clone(),
            target: letter.target,
            key: letter.key.to_string(),
            method: letter.method.clone(),
            version: letter.version,
            attempts: letter.attempts,
            error: letter.error.clone(),
            enqueued_at: output::time(letter.enqueued_at),
            died_at: output::time(letter.died_at),
            payload: with_payload.then(|| output::payload(&letter.payload)),
        }
    }
}

#[derive(Debug, Serialize)]
struct EntryView {
    id: u64,
    state: &'static str,
    method: String,
    version: u32,
    attempts: u32,
    last_error: String,
    enqueued_at: String,
    orphaned: bool,
    payload: serde_json::Value,
}

impl From<&QueuedEntry> for EntryView {
    fn from(entry: &QueuedEntry) -> Self {
        EntryView {
            id: entry.id.0,
            state: entry.state.as_str(),
            method: entry.method.clone(),
            version: entry.version,
            attempts: entry.attempts,
            last_error: entry.last_error.clone(),
            enqueued_at: output::time(entry.enqueued_at),
            orphaned: entry.orphaned,
            payload: output::payload(&entry.payload),
        }
    }
}

#[derive(Debug, Serialize)]
struct ActedOn {
    action: &'static str,
    ids: Vec<u64>,
}

pub(crate) async fn run(global: &GlobalArgs, command: &DeadCommand) -> Result<Outcome, CliError> {
    if let DeadCommand::Drop { yes: false, .. } = command {
        return Err(CliError::Usage(
            "`dead drop` loses those writes for good: their store never gets them; pass --yes to confirm".to_owned(),
        ));
    }
    let queue = open::queue(global).await?;
    let result = act(global, command, &queue.admin).await;
    queue.close().await;
    result
}

async fn act(
    global: &GlobalArgs,
    command: &DeadCommand,
    admin: &QueueAdmin,
) -> Result<Outcome, CliError> {
    match command {
        DeadCommand::List { namespace } => {
            let letters: Vec<DeadLetter> = admin
                .dead_letters()
                .await
                .map_err(CliError::store)?
                .into_iter()
                .filter(|letter| {
                    namespace
                        .as_ref()
                        .is_none_or(|name| &letter.namespace == name)
                })
                .collect();
            if global.json {
                let views: Vec<_> = letters.iter().map(|l| LetterView::new(l, false)).collect();
                output::json_line(&views)?;
            } else if letters.is_empty() {
                println!("no dead letters");
            } else {
                println!(
                    "{:>8}  {:<6} {:<16} {:<20} {:<20} {:>8}  {:<20}  error",
                    "id", "target", "namespace", "method", "key", "attempts", "died at"
                );
                for letter in &letters {
                    println!(
                        "{:>8}  {:<6} {:<16} {:<20} {:<20} {:>8}  {:<20}  {}",
                        letter.id.0,
                        letter.target.as_str(),
                        output::clipped(&letter.namespace, 16),
                        output::clipped(&letter.method, 20),
                        output::clipped(letter.key.as_str(), 20),
                        letter.attempts,
                        output::time(letter.died_at),
                        output::clipped(&letter.error, 80),
                    );
                }
            }
            Ok(Outcome::Clean)
        }
        DeadCommand::Show { id } => {
            let letter = admin
                .dead_letter(EntryId(*id))
                .await
                .map_err(CliError::store)?
                .ok_or_else(|| not_dead(*id))?;
            let view = LetterView::new(&letter, true);
            if global.json {
                output::json_line(&view)?;
            } else {
                println!("dead letter {}", view.id);
                println!("  namespace   {}", view.namespace);
                println!("  target      {} store", view.target.as_str());
                println!("  key         {}", view.key);
                println!(
                    "  method      {} (encoding version {})",
                    view.method, view.version
                );
                println!("  attempts    {}", view.attempts);
                println!("  enqueued at {}", view.enqueued_at);
                println!("  died at     {}", view.died_at);
                println!("  error       {}", view.error);
                let payload = view.payload.unwrap_or_default();
                let shown = serde_json::to_string_pretty(&payload).unwrap_or_default();
                println!("  operation   {}", shown.replace('\n', "\n              "));
            }
            Ok(Outcome::Clean)
        }
        DeadCommand::Retry {
            ids,
            all: true,
            namespace,
        } if ids.is_empty() => {
            let retried = admin
                .retry_all_dead(namespace.as_deref())
                .await
                .map_err(CliError::store)?;
            if global.json {
                output::json_line(&serde_json::json!({ "action": "retry", "retried": retried }))?;
            } else {
                println!("retried {retried} dead letters; the worker applies them next");
            }
            Ok(Outcome::Clean)
        }
        DeadCommand::Retry { ids, .. } => {
            each(global, "retry", ids, admin, |admin, id| async move {
                admin.retry_dead(id).await
            })
            .await
        }
        DeadCommand::Drop { ids, .. } => {
            each(global, "drop", ids, admin, |admin, id| async move {
                admin.drop_dead(id).await
            })
            .await
        }
    }
}

/// Checks that every id is a dead letter before acting on any, so that a
/// mistyped id changes nothing; then acts on each in turn.
async fn each<F, Fut>(
    global: &GlobalArgs,
    action: &'static str,
    ids: &[u64],
    admin: &QueueAdmin,
    act: F,
) -> Result<Outcome, CliError>
where
    F: Fn(QueueAdmin, EntryId) -> Fut,
    Fut: std::future::Future<Output = Result<(), QueueError>>,
{
    let letters = admin.dead_letters().await.map_err(CliError::store)?;
    if let Some(missing) = ids
        .iter()
        .find(|id| !letters.iter().any(|letter| letter.id.0 == **id))
    {
        return Err(not_dead(*missing));
    }
    let mut done = Vec::new();
    for id in ids {
        match act(admin.clone(), EntryId(*id)).await {
            Ok(()) => done.push(*id),
            // Another operator acted on it between the check and now.
            Err(QueueError::NotDead(_)) if !done.is_empty() => {
                return Err(CliError::refused(format!(
                    "{action}: entry {id} stopped being a dead letter meanwhile; done with {done:?}"
                )))
            }
            Err(QueueError::NotDead(_)) => return Err(not_dead(*id)),
            Err(error) => {
                return Err(CliError::store(format!(
                    "{action} of entry {id} failed (done with {done:?}): {error}"
                )))
            }
        }
    }
    if global.json {
        output::json_line(&ActedOn { action, ids: done })?;
    } else if action == "retry" {
        println!("retried {done:?}; the worker applies them next");
    } else {
        println!("dropped {done:?}");
    }
    Ok(Outcome::Clean)
}

fn not_dead(id: u64) -> CliError {
    CliError::refused(format!(
        "entry {id} is not a dead letter (no such entry, or it is pending or in flight); `dualwrite dead list` shows the dead letters"
    ))
}

pub(crate) async fn run_queue(
    global: &GlobalArgs,
    command: &QueueCommand,
) -> Result<Outcome, CliError> {
    let QueueCommand::Key {
        namespace,
        target,
        key,
    } = command;
    let queue = open::queue(global).await?;
    let entries = queue
        .admin
        .key_entries(namespace, *target, &Key::from_display(key))
        .await
        .map_err(CliError::store);
    queue.close().await;
    let entries = entries?;
    if global.json {
        let views: Vec<_> = entries.iter().map(EntryView::from).collect();
        output::json_line(&views)?;
    } else if entries.is_empty() {
        println!(
            "nothing queued for key `{key}` of `{namespace}` in the {} store",
            target.as_str()
        );
    } else {
        for entry in entries.iter().map(EntryView::from) {
            let error = if entry.last_error.is_empty() {
                String::new()
            } else {
                format!("  {}", output::clipped(&entry.last_error, 80))
            };
            println!(
                "{:>8}  {:<8} {:<20} attempts {:>3}  {}{}{error}",
                entry.id,
                entry.state,
                output::clipped(&entry.method, 20),
                entry.attempts,
                entry.enqueued_at,
                if entry.orphaned { "  orphaned" } else { "" },
            );
        }
    }
    Ok(Outcome::Clean)
}
