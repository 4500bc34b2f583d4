//! The throttle's shared state: the fixed share, the adaptive window and the
//! decision, as synchronous code taking `now`.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use resilience_core::Priority;
use tokio::time::Instant;

use super::config::{ThrottleConfig, ThrottleMode};
use crate::buckets::{Divider, Ring, Stamped, Tick};
use crate::sync::{AtomicU64, Ordering};

/// Requests and accepts over a trailing window, in [stamped
/// buckets](crate::buckets).
pub(crate) struct AdaptiveWindow {
    base: Instant,
    ring: Ring,
    /// Division by `bucket_ns / SUBTICKS` (at least 1).
    per_subtick: Divider,
    requests: Box<[Stamped]>,
    accepts: Box<[Stamped]>,
}

/// The bucket a request was counted in, where its accept is counted too.
pub(crate) type Bucket = Tick;

impl AdaptiveWindow {
    pub(crate) fn new(base: Instant, window: Duration, buckets: u32) -> Self {
        let ring = Ring::new(window, buckets);
        Self {
            base,
            per_subtick: Divider::new(ring.bucket_ns() / SUBTICKS),
            ring,
            requests: (0..buckets).map(|_| Stamped::new()).collect(),
            accepts: (0..buckets).map(|_| Stamped::new()).collect(),
        }
    }

    /// Nanoseconds since the window's base: read once per call, then used
    /// for the decision, the request's bucket and its accept's.
    #[inline]
    pub(crate) fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counts a request (every request seen by the throttle); returns its
    /// bucket, for its accept.
    #[inline]
    pub(crate) fn request(&self, ns: u64) -> Bucket {
        let bucket = self.ring.locate(ns);
        self.requests[bucket.index].bump(bucket.stamp);
        bucket
    }

    /// Counts a request the backend accepted, in its request's bucket.
    #[inline]
    pub(crate) fn accept(&self, bucket: Bucket) {
        self.accepts[bucket.index].bump(bucket.stamp);
    }

    /// A time slot of 1/16 bucket, for caching.
    #[inline]
    fn subtick(&self, ns: u64) -> u64 {
        self.per_subtick.div(ns)
    }

    /// `(requests, accepts)` in the window.
    pub(crate) fn counts(&self, ns: u64) -> (u64, u64) {
        let now = self.ring.locate(ns).stamp;
        let sum = |v: &[Stamped]| v.iter().map(|c| c.read(&self.ring, now)).sum::<u64>();
        (sum(&self.requests), sum(&self.accepts))
    }
}

/// Recomputed probabilities are reused for 1/16 of a bucket.
const SUBTICKS: u64 = 16;

/// The SRE client-side throttling probability.
pub(crate) fn sre_probability(requests: u64, accepts: u64, k: f64) -> f64 {
    let r = requests as f64;
    ((r - k * accepts as f64) / (r + 1.0)).max(0.0)
}

/// The throttle's state, shared by its layer, services and handles.
pub(crate) struct ThrottleState {
    pub(crate) mode: ThrottleMode,
    /// Allowed share in fixed mode, as `f64` bits (a fraction in `[0, 1]`).
    allow: AtomicU64,
    k: f64,
    max_reject: f64,
    weights: [f64; 4],
    pub(crate) retry_after: Duration,
    pub(crate) window: AdaptiveWindow,
    /// The adaptive probability, cached per subtick:
    /// `(subtick + 1) << 32 | f32 bits`.
    cached: AtomicU64,
}

impl ThrottleState {
    pub(crate) fn new(config: &ThrottleConfig, now: Instant) -> Self {
        Self {
            mode: config.mode,
            allow: AtomicU64::new((config.allow_percent / 100.0).to_bits()),
            k: config.k,
            max_reject: config.max_reject_probability,
            weights: config.weights,
            retry_after: config.retry_after,
            window: AdaptiveWindow::new(now, config.window, config.buckets),
            cached: AtomicU64::new(0),
        }
    }

    /// Sets the share allowed in fixed mode, clamped to `[0, 100]` percent.
    pub(crate) fn set_allow_percent(&self, percent: f64) {
        let fraction = if percent.is_nan() {
            1.0
        } else {
            (percent / 100.0).clamp(0.0, 1.0)
        };
        self.allow.store(fraction.to_bits(), Ordering::Release);
    }

    pub(crate) fn allow_percent(&self) -> f64 {
        f64::from_bits(self.allow.load(Ordering::Acquire)) * 100.0
    }

    /// Whether `priority` is throttled at all.
    #[inline]
    pub(crate) fn is_throttled(&self, priority: Priority) -> bool {
        self.weights[priority.index()] > 0.0
    }

    /// The base rejection probability (before the priority weight).
    #[inline]
    fn base_probability(&self, now: &impl Fn() -> Instant) -> f64 {
        match self.mode {
            ThrottleMode::Fixed => 1.0 - f64::from_bits(self.allow.load(Ordering::Relaxed)),
            ThrottleMode::Adaptive => self.adaptive_probability(self.window.nanos(now())),
        }
    }

    /// The SRE probability over the window, recomputed at most once per
    /// 1/16 of a bucket (summing the buckets is O(buckets)).
    #[inline]
    fn adaptive_probability(&self, ns: u64) -> f64 {
        let tag = (self.window.subtick(ns) + 1) & 0xffff_ffff;
        let cached = self.cached.load(Ordering::Relaxed);
        if cached >> 32 == tag {
            return f64::from(f32::from_bits(cached as u32));
        }
        self.adaptive_probability_now(ns, tag)
    }

    #[cold]
    fn adaptive_probability_now(&self, ns: u64, tag: u64) -> f64 {
        let (requests, accepts) = self.window.counts(ns);
        let p = sre_probability(requests, accepts, self.k).min(self.max_reject);
        self.cached.store(
            (tag << 32) | u64::from((p as f32).to_bits()),
            Ordering::Relaxed,
        );
        p
    }

    /// The current rejection probability of `priority`, from the window as
    /// it is now (no cache).
    pub(crate) fn current_reject_probability(&self, priority: Priority, now: Instant) -> f64 {
        let base = match self.mode {
            ThrottleMode::Fixed => return self.reject_probability(priority, &|| now),
            ThrottleMode::Adaptive => {
                let ns = self.window.nanos(now);
                let tag = (self.window.subtick(ns) + 1) & 0xffff_ffff;
                self.adaptive_probability_now(ns, tag)
            }
        };
        self.weighted(priority, base)
    }

    fn weighted(&self, priority: Priority, base: f64) -> f64 {
        let weight = self.weights[priority.index()];
        if weight == 0.0 || base <= 0.0 {
            return 0.0;
        }
        let cap = match self.mode {
            ThrottleMode::Fixed => 1.0,
            ThrottleMode::Adaptive => self.max_reject,
        };
        (base * weight).min(cap)
    }

    /// The probability that a call of `priority` is refused now.
    #[inline]
    pub(crate) fn reject_probability(&self, priority: Priority, now: &impl Fn() -> Instant) -> f64 {
        if self.weights[priority.index()] == 0.0 {
            return 0.0;
        }
        self.weighted(priority, self.base_probability(now))
    }

    /// Decides a call: `true` to admit. `random` is uniform in `[0, 1)`.
    #[inline]
    pub(crate) fn admit(
        &self,
        priority: Priority,
        now: &impl Fn() -> Instant,
        random: impl FnOnce() -> f64,
    ) -> bool {
        let p = self.reject_probability(priority, now);
        p <= 0.0 || random() >= p
    }

    /// Decides an adaptive call at `now` on the window as it was, then
    /// counts its request (refused or not: a cold window never throttles
    /// its first call). Returns the decision and the request's bucket.
    /// The clock reading is turned into nanoseconds once for all three.
    #[inline]
    pub(crate) fn admit_adaptive(
        &self,
        priority: Priority,
        now: Instant,
        random: impl FnOnce() -> f64,
    ) -> (bool, Bucket) {
        let ns = self.window.nanos(now);
        let admitted = self.weights[priority.index()] == 0.0 || {
            let p = self.weighted(priority, self.adaptive_probability(ns));
            p <= 0.0 || random() >= p
        };
        (admitted, self.window.request(ns))
    }
}

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// A uniform random number in `[0, 1)` from a per-thread xorshift generator.
pub(crate) fn random() -> f64 {
    RNG.with(|cell| {
        let mut x = cell.get();
        if x == 0 {
            x = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
                | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        cell.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The window's events at instants, as the throttle records them: an
    /// accept lands in the bucket of its request's instant.
    impl AdaptiveWindow {
        fn request_at(&self, at: Instant) {
            self.request(self.nanos(at));
        }

        fn accept_at(&self, at: Instant) {
            self.accept(self.ring.locate(self.nanos(at)));
        }

        fn counts_at(&self, at: Instant) -> (u64, u64) {
            self.counts(self.nanos(at))
        }
    }

    #[test]
    fn sre_formula() {
        assert_eq!(sre_probability(0, 0, 2.0), 0.0);
        assert_eq!(sre_probability(100, 100, 2.0), 0.0);
        assert_eq!(sre_probability(100, 50, 2.0), 0.0);
        assert!((sre_probability(100, 25, 2.0) - 50.0 / 101.0).abs() < 1e-12);
        assert!((sre_probability(100, 0, 2.0) - 100.0 / 101.0).abs() < 1e-12);
    }

    #[tokio::test(start_paused = true)]
    async fn window_counts_and_expires() {
        let t0 = Instant::now();
        let w = AdaptiveWindow::new(t0, Duration::from_secs(10), 10);
        for _ in 0..5 {
            w.request_at(t0);
        }
        w.accept_at(t0);
        w.request_at(t0 + Duration::from_secs(5));
        assert_eq!(w.counts_at(t0 + Duration::from_secs(5)), (6, 1));
        assert_eq!(w.counts_at(t0 + Duration::from_secs(10)), (1, 0));
        assert_eq!(w.counts_at(t0 + Duration::from_secs(20)), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_event_does_not_reset_a_reused_bucket() {
        let t0 = Instant::now();
        let w = AdaptiveWindow::new(t0, Duration::from_secs(10), 10);
        let now = t0 + Duration::from_secs(10); // reuses the bucket of t0
        for _ in 0..5 {
            w.request_at(now);
            w.accept_at(now);
        }
        // a slow call that started at t0 completes now: its accept is
        // counted at its start, in a bucket that has been reused since
        w.accept_at(t0);
        assert_eq!(w.counts_at(now), (5, 5));
    }

    #[test]
    fn random_is_in_range() {
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let r = random();
            assert!((0.0..1.0).contains(&r));
            sum += r;
        }
        assert!((sum / 10_000.0 - 0.5).abs() < 0.05);
    }

    proptest! {
        /// The window agrees with a naive recount of the events of the
        /// current and previous `buckets - 1` buckets.
        #[test]
        fn window_matches_model(buckets in 1u32..10, seq in proptest::collection::vec((any::<bool>(), 0u64..400), 0..150)) {
            let t0 = Instant::now();
            let w = AdaptiveWindow::new(t0, Duration::from_secs(1), buckets);
            let bucket_ms = 1000 / u64::from(buckets);
            let mut events = vec![];
            let mut now_ms = 0u64;
            for (accepted, dt) in seq {
                now_ms += dt;
                let now = t0 + Duration::from_millis(now_ms);
                w.request_at(now);
                if accepted { w.accept_at(now); }
                events.push((now_ms, accepted));
                let tick = now_ms * 1_000_000 / (1_000_000_000 / u64::from(buckets));
                let live = |t: u64| t * 1_000_000 / (1_000_000_000 / u64::from(buckets)) + u64::from(buckets) > tick;
                let req = events.iter().filter(|e| live(e.0)).count() as u64;
                let acc = events.iter().filter(|e| live(e.0) && e.1).count() as u64;
                prop_assert_eq!(w.counts_at(now), (req, acc), "bucket {}ms", bucket_ms);
            }
        }
    }
}
