//! Exponential backoff with jitter, and the randomness it draws from.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::{Jitter, RetryConfig};

/// The golden-ratio increment of splitmix64.
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// Where jitter comes from: uniform numbers in `[0, 1)`.
///
/// By default a splitmix64 sequence seeded from the process's random hasher
/// keys; [`RetryLayer::with_seed`](crate::RetryLayer::with_seed) makes it
/// reproducible, [`RetryLayer::with_random`](crate::RetryLayer::with_random)
/// replaces it. Shared by every clone of a layer's services; drawn from
/// only when a retry is scheduled.
#[derive(Clone)]
pub(crate) struct Random(Arc<dyn Fn() -> f64 + Send + Sync>);

/// The backoff schedule of a configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    multiplier: f64,
    jitter: Jitter,
}

// === impl Random ===

impl Random {
    /// A splitmix64 sequence from `seed`.
    pub(crate) fn seeded(seed: u64) -> Self {
        let state = AtomicU64::new(seed);
        Self(Arc::new(move || {
            let x = state
                .fetch_add(GAMMA, Ordering::Relaxed)
                .wrapping_add(GAMMA);
            to_unit(mix(x))
        }))
    }

    /// A sequence seeded from the process's random hasher keys.
    pub(crate) fn from_entropy() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(GAMMA);
        Self::seeded(h.finish())
    }

    /// Draws through `f`; values outside `[0, 1)` are clamped into it.
    pub(crate) fn from_fn(f: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// A uniform number in `[0, 1)`.
    pub(crate) fn next(&self) -> f64 {
        let x = (self.0)();
        if x.is_nan() {
            0.0
        } else {
            x.clamp(0.0, 1.0 - f64::EPSILON)
        }
    }
}

impl fmt::Debug for Random {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Random").finish_non_exhaustive()
    }
}

/// splitmix64's output function (Steele, Lea, Flood 2014).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The top 53 bits as a float in `[0, 1)`.
fn to_unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

// === impl Backoff ===

impl Backoff {
    /// A schedule from its parts (as changed at run time).
    pub(crate) fn from_parts(
        base: Duration,
        max: Duration,
        multiplier: f64,
        jitter: Jitter,
    ) -> Self {
        Self {
            base,
            max,
            multiplier,
            jitter,
        }
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn new(config: &RetryConfig) -> Self {
        Self {
            base: config.backoff_base,
            max: config.backoff_max,
            multiplier: config.backoff_multiplier,
            jitter: config.jitter,
        }
    }

    /// The cap before retry number `retry` (1 for the first retry):
    /// `min(max, base × multiplier^(retry - 1))`.
    pub(crate) fn cap(&self, retry: u32) -> Duration {
        let exp = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.base.as_secs_f64() * self.multiplier.powi(exp);
        if secs.is_finite() && secs < self.max.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.max
        }
    }

    /// The delay before retry number `retry`, drawing on `random`.
    pub(crate) fn delay(&self, retry: u32, random: &Random) -> Duration {
        let cap = self.cap(retry);
        match self.jitter {
            Jitter::Full => cap.mul_f64(random.next()),
            Jitter::Equal => cap / 2 + (cap / 2).mul_f64(random.next()),
            Jitter::None => cap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backoff(jitter: Jitter) -> Backoff {
        Backoff::new(
            &RetryConfig::builder()
                .backoff(Duration::from_millis(100), Duration::from_secs(1))
                .jitter(jitter)
                .build()
                .unwrap(),
        )
    }

    #[test]
    fn exponential_and_capped() {
        let b = backoff(Jitter::None);
        let r = Random::seeded(1);
        let delays: Vec<u128> = (1..=6).map(|n| b.delay(n, &r).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.cap(u32::MAX), Duration::from_secs(1));
        assert_eq!(b.cap(0), Duration::from_millis(100));
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_interval() {
        let b = backoff(Jitter::Full);
        let r = Random::seeded(7);
        let d: Vec<Duration> = (0..2000).map(|_| b.delay(3, &r)).collect();
        assert!(d.iter().all(|d| *d < Duration::from_millis(400)));
        assert!(d.iter().any(|d| *d < Duration::from_millis(40)));
        assert!(d.iter().any(|d| *d > Duration::from_millis(360)));
        let mean = d.iter().sum::<Duration>() / 2000;
        assert!(mean > Duration::from_millis(180) && mean < Duration::from_millis(220));
    }

    #[test]
    fn equal_jitter_keeps_half() {
        let b = backoff(Jitter::Equal);
        let r = Random::from_entropy();
        for _ in 0..100 {
            let d = b.delay(1, &r);
            assert!(d >= Duration::from_millis(50) && d < Duration::from_millis(100));
        }
    }

    #[test]
    fn injected_randomness_is_clamped() {
        let b = backoff(Jitter::Full);
        assert_eq!(
            b.delay(1, &Random::from_fn(|| 0.5)),
            Duration::from_millis(50)
        );
        assert!(b.delay(1, &Random::from_fn(|| 7.0)) <= Duration::from_millis(100));
        assert_eq!(b.delay(1, &Random::from_fn(|| -1.0)), Duration::ZERO);
        assert_eq!(b.delay(1, &Random::from_fn(|| f64::NAN)), Duration::ZERO);
    }

    #[test]
    fn seeds_are_reproducible() {
        let (a, b) = (Random::seeded(42), Random::seeded(42));
        let xs: Vec<f64> = (0..10).map(|_| a.next()).collect();
        let ys: Vec<f64> = (0..10).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], Random::seeded(43).next());
    }

    proptest! {
        #[test]
        fn delay_never_above_cap(n in 0u32..100, seed in any::<u64>(), base_ms in 1u64..1000, mult in 1.0f64..10.0) {
            let b = Backoff::new(&RetryConfig::builder()
                .backoff(Duration::from_millis(base_ms), Duration::from_secs(5))
                .backoff_multiplier(mult)
                .build().unwrap());
            let d = b.delay(n, &Random::seeded(seed));
            prop_assert!(d <= Duration::from_secs(5));
            prop_assert!(d <= b.cap(n));
        }
    }
}
