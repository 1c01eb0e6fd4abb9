//! Sticky percentage rollout by key.

use std::fmt;

use crate::op::Key;
use crate::vocabulary::Stage;

/// Buckets a key's hash is spread over: rollouts are set in hundredths of a
/// percent.
pub const BUCKETS: u64 = 10_000;

/// Moves a fixed share of keys one stage ahead of the base stage, for reads.
///
/// `Rollout::new(Stage::Live, 10.0)` makes the reads of 10% of keys behave
/// as in `Live` (served by the new store, compared against the old) while
/// the base stage is `Shadow`; the other keys read as in `Shadow`. Which
/// keys are in is decided by [`bucket`] of the key: the same keys on every
/// instance and after every restart, and a key in at 10% is still in at
/// 20%, so widening a rollout only adds keys.
///
/// A rollout applies only while the base stage is the one just before its
/// stage ([`Stage::ALL`] order). Moving the base stage on makes it moot;
/// rolling the base stage back (say to `DualWrite`) takes every key back
/// with it, so a rollback is never undone by a rollout left in place.
///
/// Rollout routes reads only. Writes follow the base stage: which store is
/// authoritative changes for every key at once, under the stage guardrails.
/// Methods without a `key` follow the base stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rollout {
    stage: Stage,
    basis_points: u16,
}

/// A rollout that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RolloutError {
    /// The share is not a number from 0 to 100.
    #[error("a rollout's percentage must be from 0 to 100, not {0}")]
    Percent(f64),
    /// `Off` has no stage before it.
    #[error("`off` cannot be rolled out to: it is the first stage")]
    FirstStage,
}

impl Rollout {
    /// `percent` of keys (0 to 100, in steps of 0.01) read as in `stage`
    /// while the base stage is the one before it.
    ///
    /// # Errors
    ///
    /// [`RolloutError`] when `percent` is out of range or `stage` is `Off`.
    pub fn new(stage: Stage, percent: f64) -> Result<Self, RolloutError> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(RolloutError::Percent(percent));
        }
        if stage == Stage::Off {
            return Err(RolloutError::FirstStage);
        }
        let basis_points = (percent * 100.0).round() as u16;
        Ok(Rollout {
            stage,
            basis_points,
        })
    }

    /// The stage keys in the rollout read as.
    pub fn stage(self) -> Stage {
        self.stage
    }

    /// The base stage the rollout applies in.
    pub fn base(self) -> Stage {
        Stage::ALL[usize::from(self.stage.to_u8()) - 1]
    }

    /// The share of keys in the rollout, in percent.
    pub fn percent(self) -> f64 {
        f64::from(self.basis_points) / 100.0
    }

    /// The share of keys in the rollout, in hundredths of a percent.
    pub fn basis_points(self) -> u16 {
        self.basis_points
    }

    /// Whether `key` is in the rollout.
    pub fn includes(self, key: &Key) -> bool {
        bucket(key) < u64::from(self.basis_points)
    }

    /// The stage a read of `key` (if it has one) is routed by under `base`.
    pub fn stage_for(self, base: Stage, key: Option<&Key>) -> Stage {
        match key {
            Some(key) if base == self.base() && self.includes(key) => self.stage,
            _ => base,
        }
    }

    /// Packs the rollout into a non-zero `u32` (stage in the high half).
    pub(crate) fn to_bits(self) -> u32 {
        (u32::from(self.stage.to_u8()) + 1) << 16 | u32::from(self.basis_points)
    }

    pub(crate) fn from_bits(bits: u32) -> Option<Self> {
        let stage = (bits >> 16).checked_sub(1)?;
        Some(Rollout {
            stage: Stage::from_u8(u8::try_from(stage).ok()?),
            basis_points: (bits & 0xffff) as u16,
        })
    }

    /// Builds a rollout from stored parts, clamping the share (for the
    /// SQLite stage source).
    #[cfg(feature = "sqlite")]
    pub(crate) fn from_parts(stage: Stage, basis_points: u16) -> Option<Self> {
        (stage != Stage::Off).then_some(Rollout {
            stage,
            basis_points: basis_points.min(BUCKETS as u16),
        })
    }
}

impl fmt::Display for Rollout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}% of keys at `{}`", self.percent(), self.stage)
    }
}

/// The bucket (0 to 9999) of a key: 64-bit FNV-1a of the key's text (its
/// `Display` form, as `key = ..` produced it), finished with MurmurHash3's
/// 64-bit mixer, modulo 10 000.
///
/// The function is fixed: it depends on nothing but the key's text, not on
/// the process, the platform or this crate's version, so that every
/// instance puts a key in the same bucket and tools in other languages can
/// compute it.
pub fn bucket(key: &Key) -> u64 {
    key.fingerprint() % BUCKETS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::stable_hash;

    #[test]
    fn the_hash_is_fixed() {
        // These values must never change, or keys would change buckets on
        // upgrade (computed independently, with a few lines of Python).
        assert_eq!(stable_hash(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(stable_hash(b"1"), 0x7c38_32dd_e020_d3d6);
        assert_eq!(bucket(&Key::from("1")), 9782);
        assert_eq!(bucket(&Key::from("order-42")), 5654);
    }

    #[test]
    fn rollout_bits_round_trip() {
        for stage in &Stage::ALL[1..] {
            for percent in [0.0, 0.01, 10.0, 99.99, 100.0] {
                let rollout = Rollout::new(*stage, percent).unwrap();
                assert_eq!(Rollout::from_bits(rollout.to_bits()), Some(rollout));
            }
        }
        assert_eq!(Rollout::from_bits(0), None);
    }

    #[test]
    fn a_rollout_applies_only_from_the_stage_before_it() {
        let rollout = Rollout::new(Stage::Live, 100.0).unwrap();
        let key = Key::from("7");
        assert_eq!(rollout.stage_for(Stage::Shadow, Some(&key)), Stage::Live);
        assert_eq!(rollout.stage_for(Stage::Shadow, None), Stage::Shadow);
        assert_eq!(
            rollout.stage_for(Stage::DualWrite, Some(&key)),
            Stage::DualWrite
        );
        assert_eq!(
            rollout.stage_for(Stage::RampDown, Some(&key)),
            Stage::RampDown
        );
    }

    #[test]
    fn invalid_rollouts_are_refused() {
        assert_eq!(
            Rollout::new(Stage::Live, 100.5),
            Err(RolloutError::Percent(100.5))
        );
        assert!(Rollout::new(Stage::Live, f64::NAN).is_err());
        assert_eq!(Rollout::new(Stage::Off, 5.0), Err(RolloutError::FirstStage));
    }

    #[test]
    fn buckets_are_spread_evenly() {
        let mut counts = [0u32; 10];
        for id in 0..100_000u32 {
            counts[(bucket(&Key::from_display(&id)) / 1000) as usize] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
    }
}
