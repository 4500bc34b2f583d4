//! Counters over a trailing window of time: a ring of buckets, each counter
//! stamped with the tick it counts for.
//!
//! The breaker's time window and the adaptive throttle both count this way.
//! A counter is one word, `stamp << COUNT_BITS | count`: counting in the
//! current tick is a load and a `fetch_add`; a counter still holding an
//! older tick is restarted with a compare-and-swap, so buckets expire
//! without anybody clearing them. Reading sums the counters whose stamp lies
//! within the ring: O(buckets), independent of traffic.
//!
//! Finding the bucket needs `now / bucket` and `tick % buckets` on every
//! call; [`Divider`] does both without a `div` instruction (tens of cycles
//! each).

use std::time::Duration;

use crate::sync::{AtomicU64, Ordering};

/// Bits of a counter's count; the stamp takes the rest.
pub(crate) const COUNT_BITS: u32 = 36;
/// The count of a counter word.
pub(crate) const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// Stamps wrap at this mask (`2^28` ticks); `0` marks a counter never used.
pub(crate) const STAMP_MASK: u64 = (1 << (64 - COUNT_BITS)) - 1;

/// Where an instant counts: its tick's stamp and its bucket's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tick {
    pub(crate) stamp: u64,
    pub(crate) index: usize,
}

/// The ring's geometry: how long a bucket lasts and how many there are.
#[derive(Debug)]
pub(crate) struct Ring {
    per_bucket: Divider,
    per_ring: Divider,
}

impl Ring {
    /// `length` split into `buckets` (at least one nanosecond each).
    pub(crate) fn new(length: Duration, buckets: u32) -> Self {
        let bucket_ns = (length.as_nanos() / u128::from(buckets.max(1))).max(1);
        Self {
            per_bucket: Divider::new(u64::try_from(bucket_ns).unwrap_or(u64::MAX)),
            per_ring: Divider::new(u64::from(buckets.max(1))),
        }
    }

    /// The tick and bucket of `ns` (nanoseconds since the window's base).
    #[inline]
    pub(crate) fn locate(&self, ns: u64) -> Tick {
        let tick = self.per_bucket.div(ns);
        Tick {
            stamp: (tick + 1) & STAMP_MASK,
            index: self.per_ring.rem(tick) as usize,
        }
    }

    /// Whether a counter stamped `stamp` is within the window that ends in
    /// the tick stamped `now`.
    #[inline]
    pub(crate) fn is_fresh(&self, now: u64, stamp: u64) -> bool {
        stamp != 0 && (now.wrapping_sub(stamp) & STAMP_MASK) < self.per_ring.d
    }
}

/// A counter stamped with the tick it counts for.
pub(crate) struct Stamped(AtomicU64);

impl Stamped {
    pub(crate) fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Counts one event of tick `stamp`, saturating; returns whether it
    /// was counted.
    ///
    /// A counter already holding a newer tick (its bucket was reused since
    /// the event's tick, e.g. by the time a slow call that started then
    /// completes) is left alone: the event is older than the window it
    /// would land in.
    #[inline]
    pub(crate) fn bump(&self, stamp: u64) -> bool {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let s = cur >> COUNT_BITS;
            if s == stamp {
                if cur & COUNT_MASK == COUNT_MASK {
                    return false;
                }
                self.0.fetch_add(1, Ordering::AcqRel);
                return true;
            }
            if s != 0 && is_newer(s, stamp) {
                return false;
            }
            match self.0.compare_exchange_weak(
                cur,
                (stamp << COUNT_BITS) | 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Replaces the count of tick `stamp` by `add(count)` (the count is `0`
    /// if the counter held an older tick), for counts packed into one word.
    /// `add` must return at most [`COUNT_MASK`]. A counter holding a newer
    /// tick is left alone, as with [`Stamped::bump`].
    #[inline]
    pub(crate) fn update(&self, stamp: u64, add: impl Fn(u64) -> u64) {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let s = cur >> COUNT_BITS;
            let count = if s == stamp {
                cur & COUNT_MASK
            } else if s != 0 && is_newer(s, stamp) {
                return;
            } else {
                0
            };
            let next = (stamp << COUNT_BITS) | (add(count) & COUNT_MASK);
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// The count, if the counter is within the window that ends in the tick
    /// stamped `now`; else `0`.
    #[inline]
    pub(crate) fn read(&self, ring: &Ring, now: u64) -> u64 {
        let w = self.0.load(Ordering::Acquire);
        if ring.is_fresh(now, w >> COUNT_BITS) {
            w & COUNT_MASK
        } else {
            0
        }
    }

    /// The count of tick `stamp` exactly (`0` if the counter holds another
    /// tick): the current bucket's count, without the window arithmetic.
    #[inline]
    pub(crate) fn read_tick(&self, stamp: u64) -> u64 {
        let w = self.0.load(Ordering::Acquire);
        if w >> COUNT_BITS == stamp {
            w & COUNT_MASK
        } else {
            0
        }
    }

    /// Forgets every count.
    pub(crate) fn reset(&self) {
        self.0.store(0, Ordering::Release);
    }
}

/// Whether stamp `a` is later than stamp `b`, in wrapping stamp arithmetic.
#[inline]
pub(crate) fn is_newer(a: u64, b: u64) -> bool {
    let d = a.wrapping_sub(b) & STAMP_MASK;
    d != 0 && d < STAMP_MASK / 2
}

/// Exact division by a divisor fixed at construction: a multiply by its
/// precomputed reciprocal, then at most one correction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Divider {
    d: u64,
    /// `floor((2^64 - 1) / d)`.
    m: u64,
}

impl Divider {
    /// Division by `d` (at least 1).
    pub(crate) fn new(d: u64) -> Self {
        let d = d.max(1);
        Self { d, m: u64::MAX / d }
    }

    /// `(n / d, n % d)`. With `m` at most `2^64 / d` and more than
    /// `2^64 / d - 1`, the estimate `n * m / 2^64` is `n / d` or one less.
    #[inline]
    pub(crate) fn div_rem(self, n: u64) -> (u64, u64) {
        let q = ((u128::from(n) * u128::from(self.m)) >> 64) as u64;
        let r = n - q * self.d;
        if r >= self.d {
            (q + 1, r - self.d)
        } else {
            (q, r)
        }
    }

    #[inline]
    pub(crate) fn div(self, n: u64) -> u64 {
        self.div_rem(n).0
    }

    #[inline]
    pub(crate) fn rem(self, n: u64) -> u64 {
        self.div_rem(n).1
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn divider_divides_exactly() {
        let ds = [
            1u64,
            2,
            3,
            7,
            10,
            1000,
            1_000_000_007,
            u64::MAX / 3,
            u64::MAX - 1,
            u64::MAX,
        ];
        let ns = [
            0u64,
            1,
            2,
            999,
            1 << 32,
            u64::MAX / 2,
            u64::MAX - 1,
            u64::MAX,
        ];
        for d in ds {
            for n in ns
                .into_iter()
                .chain([d - 1, d, d.saturating_add(1), d.saturating_mul(3)])
            {
                assert_eq!(Divider::new(d).div_rem(n), (n / d, n % d), "{n} / {d}");
            }
        }
    }

    proptest! {
        #[test]
        fn divider_matches_div(n in any::<u64>(), d in 1u64..) {
            prop_assert_eq!(Divider::new(d).div_rem(n), (n / d, n % d));
        }

        /// The ring places an instant where `/` and `%` would.
        #[test]
        fn ring_locates_like_div(ns in any::<u64>(), bucket_ns in 1u64..1 << 40, buckets in 1u32..64) {
            let ring = Ring::new(Duration::from_nanos(bucket_ns) * buckets, buckets);
            let tick = ns / bucket_ns;
            prop_assert_eq!(ring.locate(ns), Tick {
                stamp: (tick + 1) & STAMP_MASK,
                index: (tick % u64::from(buckets)) as usize,
            });
        }
    }

    #[test]
    fn counts_expire_with_their_window() {
        let ring = Ring::new(Duration::from_secs(4), 4);
        let c = Stamped::new();
        let at = |s: u64| ring.locate(s * 1_000_000_000).stamp;
        assert_eq!(c.read(&ring, at(0)), 0);
        c.bump(at(1));
        c.bump(at(1));
        assert_eq!(c.read(&ring, at(1)), 2);
        assert_eq!(c.read(&ring, at(4)), 2, "still within the 4 buckets");
        assert_eq!(c.read(&ring, at(5)), 0, "expired");
        // A later tick restarts the counter.
        c.bump(at(5));
        assert_eq!(c.read(&ring, at(5)), 1);
    }

    #[test]
    fn an_older_event_leaves_a_newer_count_alone() {
        let ring = Ring::new(Duration::from_secs(2), 2);
        let c = Stamped::new();
        let at = |s: u64| ring.locate(s * 1_000_000_000).stamp;
        assert!(c.bump(at(3)));
        assert!(!c.bump(at(1)), "not counted");
        c.update(at(1), |n| n + 5);
        assert_eq!(c.read(&ring, at(3)), 1);
        c.update(at(3), |n| n + 5);
        assert_eq!(c.read(&ring, at(3)), 6);
        c.update(at(4), |n| n + 2);
        assert_eq!(c.read(&ring, at(4)), 2, "an older tick counts as zero");
    }

    #[test]
    fn stamps_compare_across_the_wrap() {
        assert!(is_newer(1, STAMP_MASK));
        assert!(!is_newer(STAMP_MASK, 1));
        assert!(!is_newer(7, 7));
        let ring = Ring::new(Duration::from_secs(3), 3);
        assert!(ring.is_fresh(1, STAMP_MASK), "one tick after the wrap");
        assert!(!ring.is_fresh(1, 0), "never used");
        assert!(!ring.is_fresh(3, STAMP_MASK - 1), "four ticks back");
    }

    #[test]
    fn counts_saturate() {
        let ring = Ring::new(Duration::from_secs(1), 1);
        let c = Stamped::new();
        let stamp = ring.locate(0).stamp;
        c.update(stamp, |_| COUNT_MASK);
        assert!(!c.bump(stamp), "saturated: not counted");
        assert_eq!(c.read(&ring, stamp), COUNT_MASK);
        assert_eq!(ring.locate(0).stamp, stamp, "the stamp is intact");
    }
}
