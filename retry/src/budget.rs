//! The retry budget: retries may add at most a ratio of recent requests
//! (or a floor per second, when that is more), over a window and over any
//! shorter burst.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience_core::Priority;
use tokio::time::Instant;

use crate::config::RetryBudgetConfig;

/// Buckets a ring's span is split into. The ring holds one more, so that a
/// request is remembered for at least the whole window (between `window`
/// and `window + window / BUCKETS`).
pub(crate) const BUCKETS: u64 = 10;
/// Requests counted before the pending count is moved into the rings (one
/// clock read per this many requests on the first-attempt path).
pub(crate) const BATCH: u64 = 32;

/// Bits of a bucket word's count; the stamp (tick + 1) takes the rest.
const COUNT_BITS: u32 = 36;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const STAMP_MASK: u64 = (1 << (64 - COUNT_BITS)) - 1;
/// Fixed-point unit of the budget arithmetic: millionths of a retry.
const UNIT: u128 = 1_000_000;

/// A retry budget, shared by every clone: one per destination.
///
/// Every request deposits into it ([`deposit`](Self::deposit)); every retry
/// withdraws from it ([`withdraw`](Self::withdraw)). A retry may go only
/// if both rules allow it:
///
/// 1. **The window**: over the last `window` (default 10 s), retries add at
///    most `ratio` of the window's requests (default 20%), or
///    `min_per_second × window` (default 10/s) when that is more.
/// 2. **The burst window**: within any `burst_window` (default 1 s),
///    retries add at most `ratio` of *that interval's* requests, or
///    `min_per_second × burst_window` when that is more.
///
/// Under sustained failure, retries add at most `ratio` to the load (or the
/// floor, for a client too quiet for the ratio to allow a retry), so they
/// can never turn a blip into an outage. Rule 2 keeps it so over short
/// stretches too: the window's allowance is saved up in the quiet seconds
/// before a failure, and without rule 2 a burst of failures could spend it
/// all at once (after 9 quiet seconds at 800 requests per second, 1,600
/// retries for the 800 requests of the tenth): in the retry-storm
/// benchmark, a 2 s slowdown drew 1.6 attempts per request through tower's
/// `TpsBudget`, 1.3 through this budget without rule 2, 1.2 with it. With
/// it, at every retry the attempts of the last second are at most
/// `1 + ratio` times its requests (at more than `min_per_second / ratio`
/// requests per second: 50 by default).
///
/// The floor is a minimum, not an addition: a client may always retry
/// `min_per_second` times per second, even beyond the ratio (as linkerd
/// describes its `min_retries_per_second`), but at a rate where the ratio
/// allows more, the ratio alone applies.
///
/// A request is never retried while either allowance is spent, and when
/// either runs low lower priorities stop first (see
/// [`RetryBudgetConfigBuilder::reserve`](crate::RetryBudgetConfigBuilder::reserve)):
/// a `sheddable` retry needs more than half of both allowances left.
/// Setting `burst_window` to `window` or more turns rule 2 off.
///
/// # Memory of the windows
///
/// Each window is kept in 10 buckets plus one. In the window, a request or
/// retry counts for at least the whole `window` after it happened and at
/// most a tenth of a window longer, wherever it falls within a bucket.
/// (tower 0.5's `TpsBudget` forgets early when calls do not land on its
/// slot boundaries.) In the burst window the counting is on the safe side
/// for the server: a request counts for between nine tenths of a
/// `burst_window` and a whole one, a retry for between a whole one and
/// eleven tenths, so that at every retry, the retries of the last
/// `burst_window` (that one included) are at most `ratio` times its
/// requests, or `min_per_second × burst_window` if that is more. Under
/// sustained failure retries therefore add slightly less than `ratio`
/// (about 95% of it).
///
/// # Cost
///
/// [`deposit`](Self::deposit), on every request, is one atomic add to a
/// pending count; every 32nd request reads the clock and moves the pending
/// count into the current buckets (compare-and-swap, no lock). Requests
/// pending since the last move are counted in the buckets of the move: at
/// most 31 requests are remembered later than they happened, never earlier
/// (so a burst window may count up to 31 requests that came before it).
/// [`withdraw`](Self::withdraw), on the retry path only, reads the clock and
/// takes a mutex that only withdrawals take, so that concurrent retries
/// never overdraw the budget.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use resilience_core::Priority;
/// use resilience_retry::{RetryBudget, RetryBudgetConfig};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let budget = RetryBudget::new(
///     RetryBudgetConfig::builder().ratio(0.5).min_per_second(0).build().unwrap(),
/// );
/// for _ in 0..4 {
///     budget.deposit();
/// }
/// // 50% of 4 requests: 2 retries.
/// assert!(budget.withdraw(Priority::Critical));
/// assert!(budget.withdraw(Priority::Critical));
/// assert!(!budget.withdraw(Priority::Critical));
/// assert_eq!(budget.snapshot().available(), 0.0);
///
/// // 2 s later, 64 requests that need no retry...
/// tokio::time::advance(Duration::from_secs(2)).await;
/// for _ in 0..64 {
///     budget.deposit();
/// }
/// tokio::time::advance(Duration::from_secs(2)).await;
/// // ...and 2 s later, 4 that fail. The window's 72 requests fund 36
/// // retries, but within the burst window (1 s) only its own 4 count.
/// for _ in 0..4 {
///     budget.deposit();
/// }
/// let mut retried = 0;
/// while budget.withdraw(Priority::Critical) {
///     retried += 1;
/// }
/// assert_eq!(retried, 2);
/// let snap = budget.snapshot();
/// assert_eq!((snap.allowance(), snap.available()), (36.0, 32.0));
/// assert_eq!((snap.burst_allowance(), snap.burst_available()), (2.0, 0.0));
/// # }
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    state: Arc<BudgetState>,
}

/// A point-in-time view of a [`RetryBudget`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetSnapshot {
    requests: u64,
    retries: u64,
    allowance: f64,
    available: f64,
    burst_allowance: f64,
    burst_available: f64,
    requests_total: u64,
    retries_total: u64,
}

#[repr(align(64))]
struct Padded(AtomicU64);

struct BudgetState {
    /// Requests not yet moved into the rings.
    pending: Padded,
    /// The window's buckets.
    window: Ring,
    /// The burst window's buckets and floor, if shorter than the window.
    burst: Option<Burst>,
    base: Instant,
    /// Millionths of a retry per request (changed in place by
    /// [`RetryBudget::reconfigure`], as are the floors and reserves).
    ratio: AtomicU64,
    /// Millionths of a retry always available over the window.
    floor: AtomicU64,
    /// Millionths of the allowance that must be left, by priority.
    reserve: [AtomicU64; 4],
    withdraw: Mutex<()>,
    /// Requests moved into the rings, ever.
    requests_total: AtomicU64,
    retries_total: AtomicU64,
    config: RetryBudgetConfig,
}

struct Burst {
    ring: Ring,
    /// Millionths of a retry always available over the burst window.
    floor: AtomicU64,
}

/// `BUCKETS + 1` buckets, indexed by tick modulo the ring's length.
struct Ring {
    buckets: Box<[Bucket]>,
    bucket_ns: u64,
}

/// Requests and retries of one tick, each word `stamp << COUNT_BITS | count`.
struct Bucket {
    requests: AtomicU64,
    retries: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    requests: u64,
    retries: u64,
}

/// What a window allows: its allowance and what is left of it, in
/// millionths of a retry.
#[derive(Debug, Clone, Copy)]
struct Allowed {
    allowance: u128,
    left: u128,
}

/// `x` in millionths.
fn millionths(x: f64) -> u64 {
    (x * UNIT as f64).round() as u64
}

/// Millionths of a retry always available over `span_ns`.
fn floor_over(config: &RetryBudgetConfig, span_ns: u64) -> u64 {
    let floor = u128::from(config.min_per_second) * u128::from(span_ns) * UNIT
        / u128::from(Duration::from_secs(1).as_nanos() as u64);
    u64::try_from(floor).unwrap_or(u64::MAX)
}

// === impl RetryBudget ===

impl RetryBudget {
    /// A budget with `config`, empty but for its floor.
    pub fn new(config: RetryBudgetConfig) -> Self {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let floor_over = |span_ns: u64| AtomicU64::new(floor_over(&config, span_ns));
        let window_ns = ns(config.window);
        let burst = (config.burst_window < config.window).then(|| {
            let burst_ns = ns(config.burst_window);
            Burst {
                ring: Ring::new(burst_ns),
                floor: floor_over(burst_ns),
            }
        });
        let ratio = AtomicU64::new(millionths(config.ratio));
        let reserve = config.reserve.map(|r| AtomicU64::new(millionths(r)));
        Self {
            state: Arc::new(BudgetState {
                pending: Padded(AtomicU64::new(0)),
                window: Ring::new(window_ns),
                burst,
                base: Instant::now(),
                ratio,
                floor: floor_over(window_ns),
                reserve,
                withdraw: Mutex::new(()),
                requests_total: AtomicU64::new(0),
                retries_total: AtomicU64::new(0),
                config,
            }),
        }
    }

    /// The configuration the budget was built with (the ratio, floor and
    /// reserves in force may differ after [`reconfigure`](Self::reconfigure)).
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.state.config
    }

    /// Changes the ratio, `min_per_second` and the reserves in place, for
    /// the retries asked for next; the requests and retries counted in the
    /// windows are kept.
    ///
    /// Returns the settings that differ but cannot change at run time (the
    /// `window` and `burst_window`, whose buckets would be lost): they keep
    /// their old values.
    pub fn reconfigure(&self, config: &RetryBudgetConfig) -> Vec<&'static str> {
        let s = &self.state;
        let mut restart_only = Vec::new();
        if (config.window, config.burst_window) != (s.config.window, s.config.burst_window) {
            restart_only.push("budget.window");
        }
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        s.ratio.store(millionths(config.ratio), Ordering::Relaxed);
        s.floor
            .store(floor_over(config, ns(s.config.window)), Ordering::Relaxed);
        if let Some(b) = &s.burst {
            b.floor.store(
                floor_over(config, ns(s.config.burst_window)),
                Ordering::Relaxed,
            );
        }
        for (r, v) in s.reserve.iter().zip(config.reserve) {
            r.store(millionths(v), Ordering::Relaxed);
        }
        restart_only
    }

    /// Counts one request (a first attempt). The layer calls it for every
    /// request it sees.
    #[inline]
    pub fn deposit(&self) {
        let s = &self.state;
        if s.pending.0.fetch_add(1, Ordering::Relaxed) + 1 >= BATCH {
            s.commit(Instant::now());
        }
    }

    /// Takes one retry for a request of `priority`, if the budget allows it:
    /// in the window and in the burst window, at least one retry is left,
    /// and more than the priority's reserve. Returns whether the retry may
    /// go.
    pub fn withdraw(&self, priority: Priority) -> bool {
        let _guard = self
            .state
            .withdraw
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.state.withdraw_at(priority, Instant::now())
    }

    /// The budget now.
    pub fn snapshot(&self) -> BudgetSnapshot {
        let now = Instant::now();
        let s = &self.state;
        s.commit(now);
        let ns = s.elapsed_ns(now);
        let (w, window) = s.in_window(ns);
        let burst = s.in_burst(ns).unwrap_or(window);
        let retries = |a: Allowed| a.left as f64 / UNIT as f64;
        BudgetSnapshot {
            requests: w.requests,
            retries: w.retries,
            allowance: window.allowance as f64 / UNIT as f64,
            available: retries(window),
            burst_allowance: burst.allowance as f64 / UNIT as f64,
            burst_available: retries(burst),
            requests_total: s.requests_total.load(Ordering::Relaxed)
                + s.pending.0.load(Ordering::Relaxed),
            retries_total: s.retries_total.load(Ordering::Relaxed),
        }
    }

    #[cfg(test)]
    pub(crate) fn deposit_at(&self, now: Instant) {
        self.state.pending.0.fetch_add(1, Ordering::Relaxed);
        self.state.commit(now);
    }

    #[cfg(test)]
    pub(crate) fn withdraw_at(&self, priority: Priority, now: Instant) -> bool {
        let _guard = self.state.withdraw.lock().unwrap();
        self.state.withdraw_at(priority, now)
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("config", &self.state.config)
            .finish_non_exhaustive()
    }
}

// === impl BudgetSnapshot ===

impl BudgetSnapshot {
    /// Requests remembered in the window.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Retries remembered in the window.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// Retries the window allows in all: `ratio × requests`, or
    /// `min_per_second × window` if that is more.
    pub fn allowance(&self) -> f64 {
        self.allowance
    }

    /// Retries still available in the window (the allowance minus the
    /// window's retries). A retry may go only if this and
    /// [`burst_available`](Self::burst_available) are both at least 1.
    pub fn available(&self) -> f64 {
        self.available
    }

    /// Retries the burst window allows now in all: `ratio` times the
    /// requests it counts, or `min_per_second × burst_window` if that is
    /// more (the
    /// window's [`allowance`](Self::allowance) when the burst window is
    /// off).
    pub fn burst_allowance(&self) -> f64 {
        self.burst_allowance
    }

    /// Retries still available in the burst window (its allowance minus
    /// the retries it counts; the window's
    /// [`available`](Self::available) when the burst window is off).
    pub fn burst_available(&self) -> f64 {
        self.burst_available
    }

    /// The share still available of the tighter of the two allowances,
    /// `0.0` to `1.0` (`0.0` when nothing is allowed): the smaller of
    /// `available / allowance` and `burst_available / burst_allowance`.
    pub fn level(&self) -> f64 {
        let level = |available: f64, allowance: f64| {
            if allowance > 0.0 {
                available / allowance
            } else {
                0.0
            }
        };
        level(self.available, self.allowance).min(level(self.burst_available, self.burst_allowance))
    }

    /// Retries per request in the window (`None` without requests).
    pub fn retry_ratio(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.retries as f64 / self.requests as f64)
    }

    /// Requests counted since the budget was made.
    pub fn requests_total(&self) -> u64 {
        self.requests_total
    }

    /// Retries taken since the budget was made.
    pub fn retries_total(&self) -> u64 {
        self.retries_total
    }

    /// Attempts since the budget was made: requests plus retries.
    pub fn attempts_total(&self) -> u64 {
        self.requests_total + self.retries_total
    }
}

// === impl BudgetState ===

impl BudgetState {
    fn elapsed_ns(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Moves the pending requests into the buckets of `now`.
    fn commit(&self, now: Instant) {
        let n = self.pending.0.swap(0, Ordering::AcqRel);
        if n == 0 {
            return;
        }
        let ns = self.elapsed_ns(now);
        self.window.add_requests(ns, n);
        if let Some(b) = &self.burst {
            b.ring.add_requests(ns, n);
        }
        self.requests_total.fetch_add(n, Ordering::Relaxed);
    }

    /// The window's counts and what it allows at `ns`: requests and
    /// retries of the last `BUCKETS + 1` buckets.
    fn in_window(&self, ns: u64) -> (Window, Allowed) {
        let w = self.window.sum(ns, BUCKETS, BUCKETS);
        (
            w,
            self.allowed(u128::from(self.floor.load(Ordering::Relaxed)), w),
        )
    }

    /// What the burst window allows at `ns`: requests of the last
    /// `BUCKETS` buckets (this one included), retries of the last
    /// `BUCKETS + 1`.
    fn in_burst(&self, ns: u64) -> Option<Allowed> {
        let b = self.burst.as_ref()?;
        let floor = u128::from(b.floor.load(Ordering::Relaxed));
        Some(self.allowed(floor, b.ring.sum(ns, BUCKETS - 1, BUCKETS)))
    }

    /// Whether every stretch of the burst window that ends now and starts
    /// on one of its buckets (the current bucket alone, the last two, ...,
    /// the last `BUCKETS`) has room for one more retry: its retries are
    /// below `ratio` times its own requests, or the burst window's floor.
    /// (The priorities' reserves apply to the whole windows only.)
    fn every_stretch_allows(&self, ns: u64) -> bool {
        let Some(b) = &self.burst else {
            return true;
        };
        let tick = b.ring.tick(ns);
        let floor = u128::from(b.floor.load(Ordering::Relaxed));
        let mut w = Window {
            requests: 0,
            retries: 0,
        };
        for age in 0..BUCKETS.min(tick + 1) {
            let bucket = b.ring.at(tick - age);
            w.requests += bucket.requests;
            w.retries += bucket.retries;
            if self.allowed(floor, w).left < UNIT {
                return false;
            }
        }
        true
    }

    fn allowed(&self, floor: u128, w: Window) -> Allowed {
        // The floor is a minimum, not an addition.
        let ratio = u128::from(self.ratio.load(Ordering::Relaxed));
        let allowance = floor.max(ratio * u128::from(w.requests));
        Allowed {
            allowance,
            left: allowance.saturating_sub(u128::from(w.retries) * UNIT),
        }
    }

    /// Must be called with the `withdraw` lock held.
    fn withdraw_at(&self, priority: Priority, now: Instant) -> bool {
        self.commit(now);
        let ns = self.elapsed_ns(now);
        let reserve = u128::from(self.reserve[priority.index()].load(Ordering::Relaxed));
        let allows = |a: Allowed| a.left >= UNIT && a.left * UNIT > reserve * a.allowance;
        if !allows(self.in_window(ns).1)
            || !self.in_burst(ns).is_none_or(allows)
            || !self.every_stretch_allows(ns)
        {
            return false;
        }
        self.window.add_retry(ns);
        if let Some(b) = &self.burst {
            b.ring.add_retry(ns);
        }
        self.retries_total.fetch_add(1, Ordering::Relaxed);
        true
    }
}

// === impl Ring ===

impl Ring {
    /// A ring over `span_ns`.
    fn new(span_ns: u64) -> Self {
        Ring {
            buckets: (0..=BUCKETS)
                .map(|_| Bucket {
                    requests: AtomicU64::new(0),
                    retries: AtomicU64::new(0),
                })
                .collect(),
            bucket_ns: (span_ns / BUCKETS).max(1),
        }
    }

    fn tick(&self, ns: u64) -> u64 {
        ns / self.bucket_ns
    }

    fn bucket(&self, tick: u64) -> &Bucket {
        &self.buckets[(tick % (BUCKETS + 1)) as usize]
    }

    /// The counts of tick `tick` (zero if its bucket holds another).
    fn at(&self, tick: u64) -> Window {
        let b = self.bucket(tick);
        let stamp = stamp(tick);
        let count = |word: &AtomicU64| {
            let w = word.load(Ordering::Acquire);
            if w >> COUNT_BITS == stamp {
                w & COUNT_MASK
            } else {
                0
            }
        };
        Window {
            requests: count(&b.requests),
            retries: count(&b.retries),
        }
    }

    fn add_requests(&self, ns: u64, n: u64) {
        let tick = self.tick(ns);
        add(&self.bucket(tick).requests, stamp(tick), n);
    }

    fn add_retry(&self, ns: u64) {
        let tick = self.tick(ns);
        add(&self.bucket(tick).retries, stamp(tick), 1);
    }

    /// The requests of the buckets at most `request_age` ticks older than
    /// the one of `ns`, and the retries at most `retry_age` older (both at
    /// most `BUCKETS`).
    fn sum(&self, ns: u64, request_age: u64, retry_age: u64) -> Window {
        let now = stamp(self.tick(ns));
        let mut w = Window {
            requests: 0,
            retries: 0,
        };
        for b in self.buckets.iter() {
            w.requests += read(&b.requests, now, request_age);
            w.retries += read(&b.retries, now, retry_age);
        }
        w
    }
}

fn stamp(tick: u64) -> u64 {
    (tick.wrapping_add(1)) & STAMP_MASK
}

/// Whether stamp `a` is later than stamp `b`, in wrapping arithmetic.
fn is_newer(a: u64, b: u64) -> bool {
    let d = a.wrapping_sub(b) & STAMP_MASK;
    d != 0 && d < STAMP_MASK / 2
}

/// Adds `n` to the count of tick `stamp` (restarting a bucket that holds
/// an older tick; leaving alone one that holds a newer tick).
fn add(word: &AtomicU64, stamp: u64, n: u64) {
    let mut cur = word.load(Ordering::Relaxed);
    loop {
        let s = cur >> COUNT_BITS;
        let count = if s == stamp {
            cur & COUNT_MASK
        } else if s != 0 && is_newer(s, stamp) {
            return;
        } else {
            0
        };
        let next = (stamp << COUNT_BITS) | count.saturating_add(n).min(COUNT_MASK);
        match word.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return,
            Err(actual) => cur = actual,
        }
    }
}

/// The count of a bucket word if its tick is at most `max_age` ticks older
/// than the tick stamped `now`, else `0`.
fn read(word: &AtomicU64, now: u64, max_age: u64) -> u64 {
    let w = word.load(Ordering::Acquire);
    let s = w >> COUNT_BITS;
    if s != 0 && (now.wrapping_sub(s) & STAMP_MASK) <= max_age {
        w & COUNT_MASK
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn budget(ratio: f64, per_second: u32, window: Duration) -> RetryBudget {
        RetryBudget::new(
            RetryBudgetConfig::builder()
                .ratio(ratio)
                .min_per_second(per_second)
                .window(window)
                .build()
                .unwrap(),
        )
    }

    /// A budget without the burst window: a burst may spend the whole
    /// window's allowance at once.
    fn whole(ratio: f64, per_second: u32, window: Duration) -> RetryBudget {
        RetryBudget::new(
            RetryBudgetConfig::builder()
                .ratio(ratio)
                .min_per_second(per_second)
                .window(window)
                .burst_window(window)
                .build()
                .unwrap(),
        )
    }

    fn drain(b: &RetryBudget, p: Priority, now: Instant) -> u32 {
        let mut n = 0;
        while b.withdraw_at(p, now) {
            n += 1;
        }
        n
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn empty_budget_never_retries() {
        let b = budget(0.2, 0, Duration::from_secs(10));
        assert!(!b.withdraw(Priority::CriticalPlus));
        // 4 requests at 20% are 0.8 of a retry: still nothing.
        for _ in 0..4 {
            b.deposit();
        }
        assert!(!b.withdraw(Priority::CriticalPlus));
        b.deposit();
        assert!(b.withdraw(Priority::CriticalPlus));
        assert!(!b.withdraw(Priority::CriticalPlus));
    }

    #[tokio::test(start_paused = true)]
    async fn floor_alone_allows_min_per_second_times_window() {
        let b = whole(0.2, 10, Duration::from_secs(10));
        let now = Instant::now();
        assert_eq!(drain(&b, Priority::Critical, now), 100);
    }

    /// With the burst window, the floor is spent at most
    /// `min_per_second × burst_window` at a time, and still at most
    /// `min_per_second × window` over the window.
    #[tokio::test(start_paused = true)]
    async fn the_floor_is_paced_by_the_burst_window() {
        let b = budget(0.2, 10, Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(drain(&b, Priority::Critical, start), 10);
        // a retry counts in the burst window for up to 1.1 s
        assert_eq!(drain(&b, Priority::Critical, start + ms(1000)), 0);
        // then 10 more per burst window, up to the window's 100
        let mut total = 10;
        for i in 1..=9 {
            total += drain(&b, Priority::Critical, start + ms(1100) * i);
        }
        assert_eq!(total, 100);
        // the window is spent: nothing until its first retries are forgotten
        assert_eq!(drain(&b, Priority::Critical, start + ms(10_500)), 0);
        assert_eq!(drain(&b, Priority::Critical, start + ms(11_100)), 10);
    }

    /// After a quiet period, a burst of failures gets at most `ratio` times
    /// the burst's own requests (or the floor's share), not the allowance
    /// the quiet seconds saved. (Without the burst window it gets about
    /// 1,600 retries here, for 1,600 requests.)
    #[tokio::test(start_paused = true)]
    async fn a_burst_after_a_quiet_period_gets_only_its_own_share() {
        let (ratio, floor) = (0.2, 10);
        let burst = Duration::from_secs(1);
        let b = budget(ratio, floor, Duration::from_secs(10));
        let old = whole(ratio, floor, Duration::from_secs(10));
        let start = Instant::now();
        let step = Duration::from_micros(1250); // 800 requests per second
        let mut now = start;
        let mut quiet = Vec::new();
        // 8 quiet seconds
        while now < start + Duration::from_secs(8) {
            b.deposit_at(now);
            old.deposit_at(now);
            quiet.push(now);
            now += step;
        }
        // then 2 s in which every request asks for two retries
        let failing = now;
        let (mut requests, mut retries, mut old_retries) = (Vec::new(), Vec::new(), 0);
        while now < failing + Duration::from_secs(2) {
            b.deposit_at(now);
            old.deposit_at(now);
            requests.push(now);
            for _ in 0..2 {
                if b.withdraw_at(Priority::Critical, now) {
                    retries.push(now);
                }
                if old.withdraw_at(Priority::Critical, now) {
                    old_retries += 1;
                }
            }
            now += step;
        }
        let bound = ratio * requests.len() as f64;
        assert!(
            retries.len() as f64 <= bound,
            "{} retries for {} requests, bound {bound}",
            retries.len(),
            requests.len()
        );
        // the budget is still used: close to ratio of the burst
        assert!(retries.len() as f64 >= 0.9 * ratio * requests.len() as f64);
        // what the whole window alone allows
        assert!(old_retries as f64 > 2.0 * bound, "{old_retries}");
        // and at every retry, the last burst window holds at most ratio x
        // its requests (quiet ones included), or the floor's share
        for &t in &retries {
            let within = |v: &[Instant]| v.iter().filter(|&&r| r <= t && r + burst > t).count();
            let funded = within(&requests) + within(&quiet);
            let bound = (ratio * funded as f64).max(f64::from(floor));
            assert!(within(&retries) as f64 <= bound, "at {:?}", t - start);
        }
    }

    /// Failures that start on a bucket boundary after quiet requests (a
    /// slowdown starting): over every stretch from that boundary, retries
    /// stay within `ratio` of the stretch's own requests, even when the
    /// stretch is shorter than the burst window, whose earlier requests
    /// would otherwise pay for the first retries. (Under the rule of the
    /// whole burst window alone, the first 500 ms here get 150 retries for
    /// 400 requests.)
    #[tokio::test(start_paused = true)]
    async fn retries_from_a_boundary_on_stay_within_the_ratio_of_its_requests() {
        let (ratio, floor) = (0.2, 10);
        let b = budget(ratio, floor, Duration::from_secs(10));
        let start = Instant::now();
        let step = Duration::from_micros(1250); // 800 requests per second
        let mut now = start;
        while now < start + Duration::from_secs(2) {
            b.deposit_at(now);
            now += step;
        }
        // From 2 s on (a boundary of the burst window's buckets), every
        // request asks for two retries.
        let failing = now;
        let (mut requests, mut retries) = (0u32, 0u32);
        let mut worst: f64 = 0.0;
        while now < failing + Duration::from_secs(3) {
            b.deposit_at(now);
            requests += 1;
            for _ in 0..2 {
                if b.withdraw_at(Priority::Critical, now) {
                    retries += 1;
                }
            }
            let bound = (ratio * f64::from(requests)).max(f64::from(floor));
            worst = worst.max(f64::from(retries) / bound);
            assert!(
                f64::from(retries) <= bound,
                "{retries} retries for {requests} requests at {:?}",
                now - failing
            );
            now += step;
        }
        // and the budget is still used: close to the ratio
        assert!(
            f64::from(retries) >= 0.85 * ratio * f64::from(requests),
            "{retries} for {requests}"
        );
        assert!(worst > 0.9, "{worst}");
    }

    /// Lower priorities stop first within a burst too, while the window
    /// still has plenty.
    #[tokio::test(start_paused = true)]
    async fn lower_priorities_stop_first_within_a_burst() {
        let b = budget(1.0, 0, Duration::from_secs(10));
        let start = Instant::now();
        for _ in 0..100 {
            b.deposit_at(start);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        let now = Instant::now();
        for _ in 0..10 {
            b.deposit_at(now);
        }
        // 10 in the burst window: sheddable while more than 5 are left
        assert_eq!(drain(&b, Priority::Sheddable, now), 5);
        // sheddable-plus while more than 2.5 are left
        assert_eq!(drain(&b, Priority::SheddablePlus, now), 3);
        assert_eq!(drain(&b, Priority::Critical, now), 2);
        let snap = b.snapshot();
        assert_eq!(snap.burst_available(), 0.0);
        assert_eq!(snap.available(), 100.0);
        assert_eq!(snap.level(), 0.0);
        // a burst window later, 10 more requests fund 10 more retries
        tokio::time::advance(ms(1100)).await;
        let later = Instant::now();
        for _ in 0..10 {
            b.deposit_at(later);
        }
        assert_eq!(drain(&b, Priority::Critical, later), 10);
    }

    /// Requests made at times that do not land on bucket boundaries are
    /// remembered for the whole window, and forgotten at most a bucket
    /// later. (tower 0.5.3's `TpsBudget` forgets them after about 6 s of
    /// its 10.)
    #[tokio::test(start_paused = true)]
    async fn remembers_the_whole_window() {
        let window = Duration::from_secs(10);
        let slack = window / BUCKETS as u32;
        let b = whole(1.0, 0, window);
        let start = Instant::now();
        // 20 requests spread over 2.6 s at odd offsets.
        let times: Vec<Instant> = (0..20u64)
            .map(|i| start + Duration::from_millis(373 + i * 131))
            .collect();
        let mut made = 0;
        let mut probe = start;
        while probe < *times.last().unwrap() + window + slack * 2 {
            while made < times.len() && times[made] <= probe {
                b.deposit_at(times[made]);
                made += 1;
            }
            let remembered = b.state.in_window(b.state.elapsed_ns(probe)).0.requests as usize;
            let younger_than_window = times
                .iter()
                .filter(|&&t| t <= probe && t + window > probe)
                .count();
            let within_slack = times
                .iter()
                .filter(|&&t| t <= probe && t + window + slack > probe)
                .count();
            assert!(
                remembered >= younger_than_window,
                "at {:?}: {remembered} remembered, {younger_than_window} within the window",
                probe - start
            );
            assert!(remembered <= within_slack, "at {:?}", probe - start);
            probe += Duration::from_millis(7);
        }
        // The first request is still remembered just before it is a window
        // old, with all the others: 20 retries funded.
        let at = times[0] + window - Duration::from_millis(1);
        assert_eq!(drain(&b, Priority::Critical, at), 20);
        // And all are forgotten a window and a bucket after the last.
        let gone = *times.last().unwrap() + window + slack;
        assert_eq!(b.state.in_window(b.state.elapsed_ns(gone)).0.requests, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn whole_window_of_deposits_funds_retries() {
        // With ratio 1, the requests of the last window fund as many
        // retries, even 9.9 s after the first of them (with the burst
        // window off, all at once).
        let b = whole(1.0, 0, Duration::from_secs(10));
        let start = Instant::now();
        for i in 0..10u64 {
            b.deposit_at(start + Duration::from_millis(450 + i * 910));
        }
        let at = start + Duration::from_millis(450 + 9_900);
        assert_eq!(drain(&b, Priority::Critical, at), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn lower_priorities_stop_first() {
        let b = budget(1.0, 0, Duration::from_secs(10));
        let now = Instant::now();
        for _ in 0..100 {
            b.deposit_at(now);
        }
        // sheddable: while more than half is left
        assert_eq!(drain(&b, Priority::Sheddable, now), 50);
        // sheddable-plus: while more than a quarter is left
        assert_eq!(drain(&b, Priority::SheddablePlus, now), 25);
        assert_eq!(drain(&b, Priority::Sheddable, now), 0);
        // critical: while any is left
        assert_eq!(drain(&b, Priority::Critical, now), 25);
        assert_eq!(drain(&b, Priority::CriticalPlus, now), 0);
        let snap = b.snapshot();
        assert_eq!(snap.available(), 0.0);
        assert_eq!(snap.level(), 0.0);
        assert_eq!(snap.retries(), 100);
        assert_eq!(snap.retries_total(), 100);
        assert_eq!(snap.requests_total(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_are_batched_without_losing_any() {
        let b = budget(0.5, 0, Duration::from_secs(10));
        for _ in 0..(BATCH * 3 + 5) {
            b.deposit();
        }
        // 3 batches moved, 5 pending
        assert_eq!(b.state.requests_total.load(Ordering::Relaxed), BATCH * 3);
        assert_eq!(b.state.pending.0.load(Ordering::Relaxed), 5);
        let snap = b.snapshot();
        assert_eq!(snap.requests(), BATCH * 3 + 5);
        assert_eq!(snap.allowance(), (BATCH * 3 + 5) as f64 * 0.5);
        // a withdrawal moves the pending ones too
        b.deposit();
        assert!(b.withdraw(Priority::Critical));
        assert_eq!(b.snapshot().requests(), BATCH * 3 + 6);
    }

    /// Under sustained failure (every request wants every retry it can
    /// get), the retries of any window never exceed `ratio × requests` (or
    /// the floor, if more; so never `ratio × requests + floor`), counting
    /// the requests of the window and one bucket before.
    #[tokio::test(start_paused = true)]
    async fn sustained_failure_stays_within_ratio_and_floor() {
        let window = Duration::from_secs(10);
        let (ratio, floor) = (0.2, 2);
        let b = budget(ratio, floor, window);
        let start = Instant::now();
        let step = Duration::from_millis(7); // ~143 requests/s, off the bucket grid
        let mut requests = Vec::new();
        let mut retries = Vec::new();
        let mut now = start;
        for _ in 0..10_000 {
            now += step;
            b.deposit_at(now);
            requests.push(now);
            // each failed request asks for two retries
            for _ in 0..2 {
                if b.withdraw_at(Priority::Critical, now) {
                    retries.push(now);
                }
            }
        }
        let slack = window / BUCKETS as u32;
        for &t in retries.iter().step_by(17) {
            let in_window = retries
                .iter()
                .filter(|&&r| r <= t && r + window > t)
                .count();
            let funded = requests
                .iter()
                .filter(|&&r| r <= t && r + window + slack > t)
                .count();
            let bound = (ratio * funded as f64).max(f64::from(floor) * window.as_secs_f64());
            assert!(
                in_window as f64 <= bound,
                "{in_window} retries in the window ending {:?}, bound {bound}",
                t - start
            );
        }
        // and the budget was used: amplification close to 1 + ratio
        let amplification = (requests.len() + retries.len()) as f64 / requests.len() as f64;
        assert!(
            amplification > 1.15 && amplification <= 1.0 + ratio + 0.05,
            "{amplification}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn zero_ratio_and_floor_never_retries() {
        let b = budget(0.0, 0, Duration::from_secs(1));
        for _ in 0..1000 {
            b.deposit();
        }
        assert!(!b.withdraw(Priority::CriticalPlus));
        assert_eq!(b.snapshot().level(), 0.0);
    }

    #[test]
    fn stamps_wrap() {
        let max = STAMP_MASK;
        assert!(is_newer(1, max));
        assert!(!is_newer(max, 1));
        let w = AtomicU64::new(0);
        add(&w, max, 3);
        assert_eq!(read(&w, max, BUCKETS), 3);
        assert_eq!(read(&w, 1, BUCKETS), 3); // one tick later, across the wrap
        assert_eq!(read(&w, (max + BUCKETS + 1) & STAMP_MASK, BUCKETS), 0);
        add(&w, 1, 1); // a newer tick restarts the bucket
        assert_eq!(read(&w, 1, BUCKETS), 1);
        add(&w, max, 5); // an older tick leaves it alone
        assert_eq!(read(&w, 1, BUCKETS), 1);
    }

    proptest! {
        /// Whatever the order of requests and retries in time, the
        /// retries granted within any window never exceed what the
        /// requests of that window (and one bucket before) fund, or the
        /// floor: never above ratio plus floor. Nor do those of any burst
        /// window exceed what its own requests fund, or its floor.
        #[test]
        fn never_above_ratio_plus_floor(
            gaps in proptest::collection::vec(0u64..400, 1..300),
            asks in proptest::collection::vec(0u32..4, 300),
            ratio in 0.0f64..1.5,
            floor in 0u32..3,
            burst_ms in 10u64..1500,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let window = Duration::from_secs(1);
                let burst = Duration::from_millis(burst_ms);
                let b = RetryBudget::new(
                    RetryBudgetConfig::builder()
                        .ratio(ratio)
                        .min_per_second(floor)
                        .window(window)
                        .burst_window(burst)
                        .build()
                        .unwrap(),
                );
                let mut now = Instant::now();
                let (mut requests, mut retries) = (Vec::new(), Vec::new());
                for (gap, ask) in gaps.iter().zip(&asks) {
                    now += Duration::from_millis(*gap);
                    b.deposit_at(now);
                    requests.push(now);
                    for _ in 0..*ask {
                        if b.withdraw_at(Priority::Critical, now) {
                            retries.push(now);
                        }
                    }
                }
                let slack = window / BUCKETS as u32;
                for &t in &retries {
                    let in_window = retries.iter().filter(|&&r| r <= t && r + window > t).count();
                    let funded = requests.iter().filter(|&&r| r <= t && r + window + slack > t).count();
                    let bound = (ratio * funded as f64).max(f64::from(floor) * window.as_secs_f64());
                    prop_assert!(in_window as f64 <= bound + 1e-3, "{} > {}", in_window, bound);
                    if burst < window {
                        // the last burst window, exactly: no slack
                        let in_burst = retries.iter().filter(|&&r| r <= t && r + burst > t).count();
                        let funded = requests.iter().filter(|&&r| r <= t && r + burst > t).count();
                        let bound = (ratio * funded as f64).max(f64::from(floor) * burst.as_secs_f64());
                        prop_assert!(in_burst as f64 <= bound + 1e-3, "burst: {} > {}", in_burst, bound);
                    }
                }
                Ok(())
            })?;
        }
    }
}
