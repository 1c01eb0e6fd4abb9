//! Migration stages: which store is authoritative, which follows, which serves
//! reads.
//!
//! | stage | write goes to (authoritative, then follower) | read served by | read compared against |
//! |---|---|---|---|
//! | [`Off`](Stage::Off) | old | old | - |
//! | [`DualWrite`](Stage::DualWrite) | old, then new | old | - |
//! | [`Shadow`](Stage::Shadow) | old, then new | old | new |
//! | [`Live`](Stage::Live) | new, then old | new | old |
//! | [`RampDown`](Stage::RampDown) | new, then old | new | - |
//! | [`Complete`](Stage::Complete) | new | new | - |
//!
//! In `Shadow` and `Live`, reads are compared as [`read`](crate::read)
//! describes; a [`Rollout`](crate::Rollout) moves a share of keys'
//! reads one stage ahead.
//!
//! A [`StageHandle`] holds the current stage. Every call of a wrapped method
//! reads it once, so a change takes effect on the next call. Wrappers built
//! with the same handle move together; handles tied to one
//! [`StageSource`] (with the `sqlite` feature, [`SqliteStageSource`], a
//! table in the queue's SQLite file) move every instance together.
//!
//! Guardrails refuse a move that makes a store authoritative while it has
//! queued work, and a move that makes the new store serve reads while too
//! many recent comparisons disagreed ([`MismatchGuard`]).
//! [`StageHandle::force`] overrides them with a reason.

mod handle;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
mod source;
#[cfg(feature = "sqlite")]
mod sqlite;
mod window;

pub use crate::observe::StageChange;
pub use handle::Fence;
pub use handle::{StageError, StageHandle};
#[cfg(feature = "mysql")]
pub(crate) use mysql::stage_ddl as mysql_stage_ddl;
#[cfg(feature = "mysql")]
pub use mysql::MySqlStageSource;
#[cfg(feature = "postgres")]
pub(crate) use postgres::stage_ddl as postgres_stage_ddl;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStageSource;
pub use source::{
    Acknowledgement, SourceStatus, StageRecord, StageSource, StageSourceError, StoredStage,
};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStageSource;
pub use window::{MismatchGuard, MismatchRate};

pub use crate::vocabulary::{ParseStageError, Side, Stage};
