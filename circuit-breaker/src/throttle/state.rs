//! The throttle's shared state: the fixed share, the adaptive window and the
//! decision, as synchronous code taking `now`.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use resilience_core::Priority;
use tokio::time::Instant;

use super::config::{ThrottleConfig, ThrottleMode};
use crate::buckets::{COUNT_BITS, COUNT_MASK, Ring, Stamped, Tick, is_newer};
use crate::sync::{AtomicU64, Ordering};

/// Requests and accepts over a trailing window, in [stamped
/// buckets](crate::buckets).
///
/// The decision needs the window's totals on every call, and summing the
/// buckets is O(buckets). Only the current tick's bucket changes within a
/// tick (but for late accepts, below), so the sums of the other buckets are
/// taken once per tick, when a call first finds the tick changed, and kept
/// with the tick's stamp ([`AdaptiveWindow::earlier_requests`],
/// [`AdaptiveWindow::earlier_accepts`]); a call adds the current bucket's
/// counts, read live: two more loads, no lock, no write. So the totals a
/// call sees include every request and accept counted before it.
///
/// An accept is counted in its request's bucket. When a call completes in a
/// later tick than it started (a *late* accept), its bucket is one of the
/// earlier buckets: the accept is added to the kept sum as well, so it also
/// counts at once.
///
/// Single-threaded, the totals equal a full recount (a property test checks
/// it). Across threads, an event counted in the previous bucket while
/// another call takes the sums for the new tick (a request decided just
/// before the tick changed, a late accept) may be missed, or an accept
/// counted twice, until the next tick's sums: a passing error bounded by
/// the calls that race the tick change.
pub(crate) struct AdaptiveWindow {
    base: Instant,
    ring: Ring,
    requests: Box<[Stamped]>,
    accepts: Box<[Stamped]>,
    /// The requests of the buckets other than the current one, as of the
    /// tick stamped in the high bits: `stamp << COUNT_BITS | count`.
    earlier_requests: AtomicU64,
    /// The same for accepts (late accepts added as they come).
    earlier_accepts: AtomicU64,
}

/// The bucket a request was counted in, where its accept is counted too.
pub(crate) type Bucket = Tick;

impl AdaptiveWindow {
    pub(crate) fn new(base: Instant, window: Duration, buckets: u32) -> Self {
        Self {
            base,
            ring: Ring::new(window, buckets),
            requests: (0..buckets).map(|_| Stamped::new()).collect(),
            accepts: (0..buckets).map(|_| Stamped::new()).collect(),
            earlier_requests: AtomicU64::new(0),
            earlier_accepts: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the window's base: read once per call, then used
    /// for the decision, the request's bucket and its accept's.
    #[inline]
    pub(crate) fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The tick and bucket of `ns`.
    #[inline]
    pub(crate) fn locate(&self, ns: u64) -> Tick {
        self.ring.locate(ns)
    }

    /// Counts a request (every request seen by the throttle); returns its
    /// bucket, for its accept.
    #[cfg(test)]
    pub(crate) fn request(&self, ns: u64) -> Bucket {
        let bucket = self.ring.locate(ns);
        self.count_request(bucket);
        bucket
    }

    /// Counts a request in `bucket`, its tick's.
    #[inline]
    pub(crate) fn count_request(&self, bucket: Bucket) {
        self.requests[bucket.index].bump(bucket.stamp);
    }

    /// Counts a request the backend accepted, in its request's bucket.
    #[inline]
    pub(crate) fn accept(&self, bucket: Bucket) {
        if !self.accepts[bucket.index].bump(bucket.stamp) {
            return; // its bucket was reused since: out of the window
        }
        let kept = self.earlier_accepts.load(Ordering::Acquire);
        if kept >> COUNT_BITS != bucket.stamp {
            self.late_accept(kept, bucket.stamp);
        }
    }

    /// An accept counted in a bucket that may be among the earlier ones of
    /// the kept sums: add it there too.
    #[cold]
    fn late_accept(&self, mut kept: u64, stamp: u64) {
        loop {
            let tick = kept >> COUNT_BITS;
            // Kept for a later tick that still holds the request's bucket.
            if !(is_newer(tick, stamp) && self.ring.is_fresh(tick, stamp)) {
                return;
            }
            let next = (tick << COUNT_BITS) | ((kept & COUNT_MASK) + 1).min(COUNT_MASK);
            match self.earlier_accepts.compare_exchange_weak(
                kept,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => kept = actual,
            }
        }
    }

    /// `(requests, accepts)` in the window at `ns`, as the decision sees
    /// them: the kept sums of the earlier buckets (taken again when the
    /// tick changed) plus the current bucket's counts.
    #[cfg(test)]
    pub(crate) fn totals(&self, ns: u64) -> (u64, u64) {
        self.totals_at(self.ring.locate(ns))
    }

    /// [`AdaptiveWindow::totals`] at a tick located already.
    #[inline]
    pub(crate) fn totals_at(&self, Tick { stamp, index }: Tick) -> (u64, u64) {
        let requests = self.earlier_requests.load(Ordering::Acquire);
        let accepts = self.earlier_accepts.load(Ordering::Acquire);
        let (requests, accepts) =
            if requests >> COUNT_BITS == stamp && accepts >> COUNT_BITS == stamp {
                (requests & COUNT_MASK, accepts & COUNT_MASK)
            } else {
                self.sum_earlier(stamp, index)
            };
        (
            requests + self.requests[index].read_tick(stamp),
            accepts + self.accepts[index].read_tick(stamp),
        )
    }

    /// Sums the buckets of the window ending in the tick `stamp`, but the
    /// current one (`index`), and keeps the sums for the tick.
    #[cold]
    #[inline(never)]
    fn sum_earlier(&self, stamp: u64, index: usize) -> (u64, u64) {
        let sum = |counters: &[Stamped]| {
            let total: u64 = counters
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != index)
                .map(|(_, c)| c.read(&self.ring, stamp))
                .sum();
            total.min(COUNT_MASK)
        };
        (
            keep(&self.earlier_requests, stamp, sum(&self.requests)),
            keep(&self.earlier_accepts, stamp, sum(&self.accepts)),
        )
    }

    /// `(requests, accepts)` in the window, summed over every bucket.
    pub(crate) fn counts(&self, ns: u64) -> (u64, u64) {
        let now = self.ring.locate(ns).stamp;
        let sum = |v: &[Stamped]| v.iter().map(|c| c.read(&self.ring, now)).sum::<u64>();
        (sum(&self.requests), sum(&self.accepts))
    }
}

/// Keeps `count` in `word` for the tick `stamp`, unless the word already
/// holds this tick's (or a later tick's) sum; returns the count kept for
/// `stamp` (`count` if a later tick's is there).
fn keep(word: &AtomicU64, stamp: u64, count: u64) -> u64 {
    let next = (stamp << COUNT_BITS) | count;
    let mut cur = word.load(Ordering::Acquire);
    loop {
        let tick = cur >> COUNT_BITS;
        if tick == stamp {
            return cur & COUNT_MASK;
        }
        if is_newer(tick, stamp) {
            return count;
        }
        match word.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return count,
            Err(actual) => cur = actual,
        }
    }
}

/// The SRE client-side throttling probability.
#[inline]
pub(crate) fn sre_probability(requests: u64, accepts: u64, k: f64) -> f64 {
    let r = requests as f64;
    let excess = r - k * accepts as f64;
    if excess <= 0.0 {
        return 0.0; // the common, healthy case: no division
    }
    excess / (r + 1.0)
}

/// The throttle's state, shared by its layer, services and handles.
pub(crate) struct ThrottleState {
    pub(crate) mode: ThrottleMode,
    /// Allowed share in fixed mode, as `f64` bits (a fraction in `[0, 1]`).
    allow: AtomicU64,
    /// `k`, as `f64` bits (changed in place by [`ThrottleState::reconfigure`]).
    k: AtomicU64,
    /// Requests the window must hold before a refusal.
    minimum_requests: AtomicU64,
    /// The largest rejection probability, as `f64` bits.
    max_reject: AtomicU64,
    /// The weight of each priority, as `f64` bits.
    weights: [AtomicU64; 4],
    pub(crate) retry_after: Duration,
    pub(crate) window: AdaptiveWindow,
}

impl ThrottleState {
    pub(crate) fn new(config: &ThrottleConfig, now: Instant) -> Self {
        Self {
            mode: config.mode,
            allow: AtomicU64::new((config.allow_percent / 100.0).to_bits()),
            k: AtomicU64::new(config.k.to_bits()),
            minimum_requests: AtomicU64::new(u64::from(config.minimum_requests)),
            max_reject: AtomicU64::new(config.max_reject_probability.to_bits()),
            weights: config.weights.map(|w| AtomicU64::new(w.to_bits())),
            retry_after: config.retry_after,
            window: AdaptiveWindow::new(now, config.window, config.buckets),
        }
    }

    /// Changes `k`, the largest rejection probability, the priorities'
    /// weights and the share allowed in fixed mode in place; the window and
    /// its counts are kept. Returns the settings that differ but cannot
    /// change at run time (they keep their old values).
    pub(crate) fn reconfigure(
        &self,
        config: &ThrottleConfig,
        current: &ThrottleConfig,
    ) -> Vec<&'static str> {
        let mut restart_only = Vec::new();
        if config.mode != current.mode {
            restart_only.push("mode");
        }
        if (config.window, config.buckets) != (current.window, current.buckets) {
            restart_only.push("window");
        }
        if config.retry_after != current.retry_after {
            restart_only.push("retry_after");
        }
        if (config.max_wait, config.max_waiters) != (current.max_wait, current.max_waiters) {
            restart_only.push("max_wait");
        }
        self.k.store(config.k.to_bits(), Ordering::Relaxed);
        self.minimum_requests
            .store(u64::from(config.minimum_requests), Ordering::Relaxed);
        self.max_reject
            .store(config.max_reject_probability.to_bits(), Ordering::Relaxed);
        for (w, v) in self.weights.iter().zip(config.weights) {
            w.store(v.to_bits(), Ordering::Relaxed);
        }
        if config.allow_percent != current.allow_percent {
            self.set_allow_percent(config.allow_percent);
        }
        restart_only
    }

    #[inline(always)]
    fn weight(&self, priority: Priority) -> f64 {
        f64::from_bits(self.weights[priority.index()].load(Ordering::Relaxed))
    }

    #[inline(always)]
    fn max_reject(&self) -> f64 {
        f64::from_bits(self.max_reject.load(Ordering::Relaxed))
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
        self.weight(priority) > 0.0
    }

    /// The base rejection probability (before the priority weight).
    #[inline]
    fn base_probability(&self, now: &impl Fn() -> Instant) -> f64 {
        match self.mode {
            ThrottleMode::Fixed => 1.0 - f64::from_bits(self.allow.load(Ordering::Relaxed)),
            ThrottleMode::Adaptive => {
                self.adaptive_probability(self.window.locate(self.window.nanos(now())))
            }
        }
    }

    /// The SRE probability over the window as it is at `ns`: every request
    /// and accept counted so far included, in O(1) (see
    /// [`AdaptiveWindow::totals`]); `0` while the window holds fewer than
    /// `minimum_requests`.
    #[inline]
    fn adaptive_probability(&self, tick: Tick) -> f64 {
        let (requests, accepts) = self.window.totals_at(tick);
        if requests < self.minimum_requests.load(Ordering::Relaxed) {
            return 0.0;
        }
        sre_probability(
            requests,
            accepts,
            f64::from_bits(self.k.load(Ordering::Relaxed)),
        )
        .min(self.max_reject())
    }

    /// The current rejection probability of `priority`: what the admission
    /// of a call now uses.
    pub(crate) fn current_reject_probability(&self, priority: Priority, now: Instant) -> f64 {
        self.reject_probability(priority, &|| now)
    }

    fn weighted(&self, priority: Priority, base: f64) -> f64 {
        let weight = self.weight(priority);
        if weight == 0.0 || base <= 0.0 {
            return 0.0;
        }
        let cap = match self.mode {
            ThrottleMode::Fixed => 1.0,
            ThrottleMode::Adaptive => self.max_reject(),
        };
        (base * weight).min(cap)
    }

    /// The probability that a call of `priority` is refused now.
    #[inline]
    pub(crate) fn reject_probability(&self, priority: Priority, now: &impl Fn() -> Instant) -> f64 {
        if self.weight(priority) == 0.0 {
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
    /// The clock reading is turned into a tick once for all three.
    #[inline]
    pub(crate) fn admit_adaptive(
        &self,
        priority: Priority,
        now: Instant,
        random: impl FnOnce() -> f64,
    ) -> (bool, Bucket) {
        let tick = self.window.locate(self.window.nanos(now));
        let admitted = self.weight(priority) == 0.0 || {
            let p = self.weighted(priority, self.adaptive_probability(tick));
            p <= 0.0 || random() >= p
        };
        self.window.count_request(tick);
        (admitted, tick)
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

    fn adaptive(window: Duration, buckets: u32) -> ThrottleState {
        let config = ThrottleConfig::builder()
            .adaptive()
            .window(window)
            .buckets(buckets)
            .minimum_requests(0)
            .build()
            .unwrap();
        ThrottleState::new(&config, Instant::now())
    }

    /// Below `minimum_requests` in the window nothing is refused, however
    /// many of them failed, even with the smallest random draw; from the
    /// minimum on, the formula decides (on the window as it was before the
    /// call).
    #[tokio::test(start_paused = true)]
    async fn nothing_is_refused_below_the_minimum_requests() {
        let config = ThrottleConfig::builder().adaptive().build().unwrap();
        assert_eq!(config.minimum_requests(), 20);
        let s = ThrottleState::new(&config, Instant::now());
        let now = Instant::now();
        for i in 0..20 {
            assert_eq!(
                s.current_reject_probability(Priority::Sheddable, now),
                0.0,
                "call {i}"
            );
            let (admitted, _) = s.admit_adaptive(Priority::Sheddable, now, || 0.0);
            assert!(admitted, "call {i}: {i} failed requests in the window");
        }
        // 20 requests, none accepted: 20 / 21, capped at 0.9
        assert_eq!(s.current_reject_probability(Priority::Sheddable, now), 0.9);
        assert!(!s.admit_adaptive(Priority::Sheddable, now, || 0.0).0);
        // the window moves on: empty again, under the minimum
        let later = now + Duration::from_secs(121);
        assert_eq!(
            s.current_reject_probability(Priority::Sheddable, later),
            0.0
        );
        assert!(s.admit_adaptive(Priority::Sheddable, later, || 0.0).0);
    }

    /// Without a minimum, one failed request refuses about half the next
    /// calls (`1 / 2`): what the minimum is for.
    #[tokio::test(start_paused = true)]
    async fn without_a_minimum_one_failure_refuses_half() {
        let s = adaptive(Duration::from_secs(120), 12);
        let now = Instant::now();
        assert!(s.admit_adaptive(Priority::Sheddable, now, || 0.0).0);
        assert_eq!(s.current_reject_probability(Priority::Sheddable, now), 0.5);
        assert!(!s.admit_adaptive(Priority::Sheddable, now, || 0.49).0);
    }

    /// Call by call, within one tick, the admission uses exactly the
    /// probability the handle reports, computed from every request and
    /// accept counted before: `random() >= p` admits.
    #[tokio::test(start_paused = true)]
    async fn admission_and_the_reported_probability_agree_on_every_call() {
        let s = adaptive(Duration::from_secs(120), 12);
        let now = Instant::now();
        let (mut refused, mut admitted) = (0, 0);
        for i in 0..200u32 {
            let p = s.current_reject_probability(Priority::Sheddable, now);
            let (requests, accepts) = s.window.counts(s.window.nanos(now));
            assert_eq!(
                p,
                sre_probability(requests, accepts, 2.0).min(0.9),
                "call {i}"
            );
            let bucket = if i % 2 == 0 && p > 0.0 {
                // just below p: refused
                let (ok, bucket) = s.admit_adaptive(Priority::Sheddable, now, || p - f64::EPSILON);
                assert!(!ok, "call {i}: p = {p}");
                refused += 1;
                bucket
            } else {
                // at p: admitted
                let (ok, bucket) = s.admit_adaptive(Priority::Sheddable, now, || p);
                assert!(ok, "call {i}: p = {p}");
                admitted += 1;
                bucket
            };
            // one call in three is accepted
            if i % 3 == 0 {
                s.window.accept(bucket);
            }
        }
        assert!(
            refused > 50 && admitted > 50,
            "{refused} refused, {admitted} admitted"
        );
    }

    /// A change of the accept ratio acts on the very next call: a window of
    /// failures refuses at the cap; once enough accepts come in (late ones,
    /// of calls that started in an earlier tick), the next call passes even
    /// with the smallest random draw.
    #[tokio::test(start_paused = true)]
    async fn a_change_of_the_accept_ratio_acts_on_the_next_call() {
        let s = adaptive(Duration::from_secs(120), 12);
        let t0 = Instant::now();
        let buckets: Vec<_> = (0..100)
            .map(|_| s.admit_adaptive(Priority::Sheddable, t0, || 0.99).1)
            .collect();
        let later = t0 + Duration::from_secs(15); // two ticks later
        assert!(!s.admit_adaptive(Priority::Sheddable, later, || 0.0).0);
        assert_eq!(
            s.current_reject_probability(Priority::Sheddable, later),
            0.9
        );
        // the calls of t0 complete now, accepted
        for bucket in &buckets[..51] {
            s.window.accept(*bucket);
        }
        // the next call decides on them (before anything reads the state)
        assert!(s.admit_adaptive(Priority::Sheddable, later, || 0.0).0);
        assert_eq!(
            s.current_reject_probability(Priority::Sheddable, later),
            0.0
        );
        let (requests, accepts) = s.window.counts(s.window.nanos(later));
        assert_eq!((requests, accepts), (102, 51));
        assert_eq!(s.window.totals(s.window.nanos(later)), (102, 51));
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
        /// The totals the decision uses (kept sums of the earlier buckets
        /// plus the current one) equal a full recount after every event:
        /// requests, accepts of any earlier request (late ones included,
        /// and ones whose bucket has expired), time moving on.
        #[test]
        fn totals_match_the_recount(
            buckets in 1u32..8,
            seq in proptest::collection::vec((0u8..3, 0u64..300, any::<prop::sample::Index>()), 0..200),
        ) {
            let t0 = Instant::now();
            let w = AdaptiveWindow::new(t0, Duration::from_secs(1), buckets);
            let mut now_ms = 0u64;
            let mut requests = vec![];
            for (op, dt, pick) in seq {
                match op {
                    0 => now_ms += dt,
                    1 => requests.push(w.request(w.nanos(t0 + Duration::from_millis(now_ms)))),
                    _ if !requests.is_empty() => w.accept(*pick.get(&requests)),
                    _ => {}
                }
                let ns = w.nanos(t0 + Duration::from_millis(now_ms));
                prop_assert_eq!(w.totals(ns), w.counts(ns));
            }
        }

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
