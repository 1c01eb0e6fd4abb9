//! Turning a queue entry back into an operation the worker may replay, or
//! saying in words why it must not be.

use crate::op::Operation;
use crate::operation_id::{self, OperationId};
use crate::queue::ClaimedEntry;

/// An entry's operation and the id its writer gave it.
pub(super) struct Decoded<Op> {
    pub(super) op: Op,
    /// `None` for entries queued by a build without operation ids.
    pub(super) id: Option<OperationId>,
}

/// Why an entry is dead-lettered rather than replayed.
pub(super) struct Refused {
    /// What the log line says happened.
    pub(super) what: &'static str,
    /// The dead letter's error.
    pub(super) reason: String,
}

impl Refused {
    fn undecodable(reason: String) -> Self {
        Refused {
            what: "undecodable queue entry dead-lettered",
            reason,
        }
    }
}

/// Decodes an entry, or says why it cannot be replayed.
pub(super) fn decode<Op: Operation>(entry: &ClaimedEntry) -> Result<Decoded<Op>, Refused> {
    decode_parts(
        &entry.namespace,
        &entry.method,
        entry.version,
        &entry.payload,
    )
}

pub(super) fn decode_parts<Op: Operation>(
    namespace: &str,
    method: &str,
    version: u32,
    payload: &[u8],
) -> Result<Decoded<Op>, Refused> {
    if namespace != Op::NAMESPACE {
        return Err(Refused::undecodable(format!(
            "entry belongs to namespace `{namespace}`, but this worker decodes `{}`",
            Op::NAMESPACE
        )));
    }
    if version != Op::VERSION {
        return Err(Refused::undecodable(format!(
            "entry of method `{method}` was encoded with version {version}, but this build decodes version {} of `{}`",
            Op::VERSION,
            Op::NAMESPACE
        )));
    }
    let cannot_decode = |error: serde_json::Error| {
        Refused::undecodable(format!(
            "cannot decode entry of method `{method}` as `{}` version {}: {error}",
            Op::NAMESPACE,
            Op::VERSION
        ))
    };
    let op: Op = serde_json::from_slice(payload).map_err(cannot_decode)?;
    let id = operation_id::id_of(payload).map_err(cannot_decode)?;
    if let Some(refusal) = op.replay_refusal() {
        return Err(Refused {
            what: "queued operation that must not be replayed dead-lettered",
            reason: refusal.to_owned(),
        });
    }
    if op.needs_operation_id() && id.is_none() {
        return Err(Refused {
            what: "queued operation without an operation id dead-lettered: its method is not safe to replay blindly",
            reason: format!(
                "`{method}` is declared `idempotent = false`, and this entry carries no operation id (it was queued by a build without operation ids), so the store could not tell a replay from a new write and might apply it twice; it was not applied. Check the target store for this key, then apply the write by hand and drop the dead letter"
            ),
        });
    }
    Ok(Decoded { op, id })
}
