//! Which calls are compared.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

/// Whether to compare this call, for a fraction from 0 to 1. Independent
/// per call (not per key), so a pattern in the traffic cannot hide a method
/// from the sample.
pub(crate) fn is_sampled(fraction: f64) -> bool {
    if fraction >= 1.0 {
        return true;
    }
    if fraction <= 0.0 {
        return false;
    }
    // 53 random bits as a number in [0, 1).
    (next_random() >> 11) as f64 / (1u64 << 53) as f64 <= fraction
}

/// xorshift64*, one state per thread, seeded from the standard library's
/// per-process random keys.
fn next_random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u8(0);
            hasher.finish() | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ends_of_the_range_are_exact() {
        assert!((0..1000).all(|_| is_sampled(1.0)));
        assert!((0..1000).all(|_| !is_sampled(0.0)));
    }

    #[test]
    fn a_fraction_samples_about_that_share() {
        let sampled = (0..100_000).filter(|_| is_sampled(0.25)).count();
        // Binomial with sd ~137: 2000 either side is over 14 sd.
        assert!((23_000..27_000).contains(&sampled), "{sampled}");
    }
}
