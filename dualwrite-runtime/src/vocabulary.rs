//! The words every layer speaks: which of the two stores (`Side`), and
//! which stage of the migration (`Stage`, whose table is in
//! [`stage`](crate::stage)). They live below every module that uses them,
//! so that the queue and the observers need not import the stage handle.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the two stores being migrated between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The store the data lives in today.
    Old,
    /// The store the data is moving to.
    New,
}

impl Side {
    /// The other store.
    pub fn other(self) -> Side {
        match self {
            Side::Old => Side::New,
            Side::New => Side::Old,
        }
    }

    /// `"old"` or `"new"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Old => "old",
            Side::New => "new",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A migration stage. See [`stage`](crate::stage) for the routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Only the old store is used.
    Off,
    /// Writes go to the old store, then the new one; reads come from the old.
    DualWrite,
    /// Like `DualWrite`; reads are also compared against the new store.
    Shadow,
    /// Writes go to the new store, then the old one; reads come from the new
    /// store and are compared against the old.
    Live,
    /// Like `Live` without the comparison.
    RampDown,
    /// Only the new store is used. Leaving it needs
    /// [`StageHandle::force`](crate::StageHandle::force), because the old store stopped receiving writes.
    Complete,
}

impl Stage {
    /// Every stage, in migration order.
    pub const ALL: [Stage; 6] = [
        Stage::Off,
        Stage::DualWrite,
        Stage::Shadow,
        Stage::Live,
        Stage::RampDown,
        Stage::Complete,
    ];

    /// The store whose write result the caller gets.
    pub fn authoritative(self) -> Side {
        match self {
            Stage::Off | Stage::DualWrite | Stage::Shadow => Side::Old,
            Stage::Live | Stage::RampDown | Stage::Complete => Side::New,
        }
    }

    /// The store that receives each write after the authoritative one, if any.
    pub fn follower(self) -> Option<Side> {
        match self {
            Stage::Off | Stage::Complete => None,
            Stage::DualWrite | Stage::Shadow => Some(Side::New),
            Stage::Live | Stage::RampDown => Some(Side::Old),
        }
    }

    /// The store that serves reads (always the authoritative one).
    pub fn serving(self) -> Side {
        self.authoritative()
    }

    /// The store reads are compared against, if any.
    pub fn compared(self) -> Option<Side> {
        match self {
            Stage::Shadow => Some(Side::New),
            Stage::Live => Some(Side::Old),
            _ => None,
        }
    }

    /// The stage's name in snake case, as accepted by [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Off => "off",
            Stage::DualWrite => "dual_write",
            Stage::Shadow => "shadow",
            Stage::Live => "live",
            Stage::RampDown => "ramp_down",
            Stage::Complete => "complete",
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_u8(value: u8) -> Stage {
        Stage::ALL[usize::from(value).min(Stage::ALL.len() - 1)]
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Stage`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stage `{0}`; expected one of off, dual_write, shadow, live, ramp_down, complete")]
pub struct ParseStageError(pub String);

impl FromStr for Stage {
    type Err = ParseStageError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let normalised = text.trim().to_ascii_lowercase().replace('-', "_");
        Stage::ALL
            .into_iter()
            .find(|stage| {
                stage.as_str() == normalised || stage.as_str().replace('_', "") == normalised
            })
            .ok_or_else(|| ParseStageError(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_matches_the_design_table() {
        use Side::*;
        let table = [
            (Stage::Off, Old, None, None),
            (Stage::DualWrite, Old, Some(New), None),
            (Stage::Shadow, Old, Some(New), Some(New)),
            (Stage::Live, New, Some(Old), Some(Old)),
            (Stage::RampDown, New, Some(Old), None),
            (Stage::Complete, New, None, None),
        ];
        for (stage, authoritative, follower, compared) in table {
            assert_eq!(stage.authoritative(), authoritative, "{stage}");
            assert_eq!(stage.serving(), authoritative, "{stage}");
            assert_eq!(stage.follower(), follower, "{stage}");
            assert_eq!(stage.compared(), compared, "{stage}");
        }
    }

    #[test]
    fn stage_names_round_trip() {
        for stage in Stage::ALL {
            assert_eq!(stage.as_str().parse::<Stage>(), Ok(stage));
            assert_eq!(Stage::from_u8(stage.to_u8()), stage);
        }
        assert_eq!("DualWrite".parse::<Stage>(), Ok(Stage::DualWrite));
        assert_eq!("ramp-down".parse::<Stage>(), Ok(Stage::RampDown));
        assert!("sideways"
            .parse::<Stage>()
            .unwrap_err()
            .to_string()
            .contains("sideways"));
    }
}

/// How a write reaches the follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// The follower is called in the request, with the follower timeout; on
    /// error, timeout or panic the operation is queued. Write latency is both
    /// stores' latency (the follower's bounded by the timeout).
    #[default]
    Sync,
    /// The operation is appended to the queue before the call returns and the
    /// worker applies it; the caller never waits for the follower. Write
    /// latency is the authoritative write plus one queue append (group
    /// committed by durable queues).
    Journaled,
}
