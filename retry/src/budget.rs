//! The retry budget: retries may add at most a ratio of recent requests,
//! plus a floor per second.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience_core::Priority;
use tokio::time::Instant;

use crate::config::RetryBudgetConfig;

/// Buckets the window is split into. The ring holds one more, so that a
/// request is remembered for at least the whole window (between `window`
/// and `window + window / BUCKETS`).
pub(crate) const BUCKETS: u64 = 10;
/// Requests counted before the pending count is moved into the ring (one
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
/// withdraws from it ([`withdraw`](Self::withdraw)). Over the last
/// `window`, retries may add at most `ratio × requests + min_per_second ×
/// window`: under sustained failure, retries add at most `ratio` to the
/// load (plus the floor), so they can never turn a blip into an outage. A
/// request is never retried while the budget is empty, and when it runs
/// low lower priorities stop first (see
/// [`RetryBudgetConfigBuilder::reserve`](crate::RetryBudgetConfigBuilder::reserve)).
///
/// # Memory of the window
///
/// The window is kept in 10 buckets plus one: a request or retry counts for
/// at least the whole `window` after it happened and at most a tenth of a
/// window longer, wherever it falls within a bucket. (tower 0.5's
/// `TpsBudget` forgets early when calls do not land on its slot
/// boundaries.)
///
/// # Cost
///
/// [`deposit`](Self::deposit), on every request, is one atomic add to a
/// pending count; every 32nd request reads the clock and moves the pending
/// count into the current bucket (compare-and-swap, no lock). Requests
/// pending since the last move are counted in the bucket of the move: at
/// most 31 requests are remembered later than they happened, never earlier.
/// [`withdraw`](Self::withdraw), on the retry path only, reads the clock and
/// takes a mutex that only withdrawals take, so that concurrent retries
/// never overdraw the budget.
///
/// # Example
///
/// ```
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
    requests_total: u64,
    retries_total: u64,
}

#[repr(align(64))]
struct Padded(AtomicU64);

struct BudgetState {
    /// Requests not yet moved into the ring.
    pending: Padded,
    /// `BUCKETS + 1` buckets, indexed by tick modulo the ring's length.
    ring: Box<[Bucket]>,
    base: Instant,
    bucket_ns: u64,
    /// Millionths of a retry per request.
    ratio: u128,
    /// Millionths of a retry always available over the window.
    floor: u128,
    /// Millionths of the allowance that must be left, by priority.
    reserve: [u128; 4],
    withdraw: Mutex<()>,
    /// Requests moved into the ring, ever.
    requests_total: AtomicU64,
    retries_total: AtomicU64,
    config: RetryBudgetConfig,
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

// === impl RetryBudget ===

impl RetryBudget {
    /// A budget with `config`, empty but for its floor.
    pub fn new(config: RetryBudgetConfig) -> Self {
        let window_ns = u64::try_from(config.window.as_nanos()).unwrap_or(u64::MAX);
        let bucket_ns = (window_ns / BUCKETS).max(1);
        let ratio = (config.ratio * UNIT as f64).round() as u128;
        let floor = u128::from(config.min_per_second) * u128::from(window_ns) * UNIT
            / u128::from(Duration::from_secs(1).as_nanos() as u64);
        let reserve = config.reserve.map(|r| (r * UNIT as f64).round() as u128);
        let ring = (0..=BUCKETS)
            .map(|_| Bucket {
                requests: AtomicU64::new(0),
                retries: AtomicU64::new(0),
            })
            .collect();
        Self {
            state: Arc::new(BudgetState {
                pending: Padded(AtomicU64::new(0)),
                ring,
                base: Instant::now(),
                bucket_ns,
                ratio,
                floor,
                reserve,
                withdraw: Mutex::new(()),
                requests_total: AtomicU64::new(0),
                retries_total: AtomicU64::new(0),
                config,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.state.config
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
    /// at least one retry is left, and more than the priority's reserve.
    /// Returns whether the retry may go.
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
        let w = s.window(s.tick(now));
        let allowance = s.allowance(w.requests);
        let spent = u128::from(w.retries) * UNIT;
        BudgetSnapshot {
            requests: w.requests,
            retries: w.retries,
            allowance: allowance as f64 / UNIT as f64,
            available: allowance.saturating_sub(spent) as f64 / UNIT as f64,
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

    /// Retries the window allows in all: `ratio × requests + min_per_second
    /// × window`.
    pub fn allowance(&self) -> f64 {
        self.allowance
    }

    /// Retries still available (the allowance minus the window's retries).
    pub fn available(&self) -> f64 {
        self.available
    }

    /// The share of the allowance still available, `0.0` to `1.0` (`0.0`
    /// when nothing is allowed).
    pub fn level(&self) -> f64 {
        if self.allowance > 0.0 {
            self.available / self.allowance
        } else {
            0.0
        }
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
    fn tick(&self, now: Instant) -> u64 {
        let ns =
            u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        ns / self.bucket_ns
    }

    fn bucket(&self, tick: u64) -> &Bucket {
        &self.ring[(tick % (BUCKETS + 1)) as usize]
    }

    /// Moves the pending requests into the bucket of `now`.
    fn commit(&self, now: Instant) {
        let n = self.pending.0.swap(0, Ordering::AcqRel);
        if n == 0 {
            return;
        }
        let tick = self.tick(now);
        add(&self.bucket(tick).requests, stamp(tick), n);
        self.requests_total.fetch_add(n, Ordering::Relaxed);
    }

    /// The requests and retries of the window that ends in `tick`.
    fn window(&self, tick: u64) -> Window {
        let now = stamp(tick);
        let mut w = Window {
            requests: 0,
            retries: 0,
        };
        for b in self.ring.iter() {
            w.requests += read(&b.requests, now);
            w.retries += read(&b.retries, now);
        }
        w
    }

    /// The window's allowance, in millionths of a retry.
    fn allowance(&self, requests: u64) -> u128 {
        self.floor + self.ratio * u128::from(requests)
    }

    /// Must be called with the `withdraw` lock held.
    fn withdraw_at(&self, priority: Priority, now: Instant) -> bool {
        self.commit(now);
        let tick = self.tick(now);
        let w = self.window(tick);
        let allowance = self.allowance(w.requests);
        let left = allowance.saturating_sub(u128::from(w.retries) * UNIT);
        let reserve = self.reserve[priority.index()];
        if left < UNIT || left * UNIT <= reserve * allowance {
            return false;
        }
        add(&self.bucket(tick).retries, stamp(tick), 1);
        self.retries_total.fetch_add(1, Ordering::Relaxed);
        true
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

/// The count of a bucket word if its tick lies within the window ending in
/// the tick stamped `now`, else `0`.
fn read(word: &AtomicU64, now: u64) -> u64 {
    let w = word.load(Ordering::Acquire);
    let s = w >> COUNT_BITS;
    if s != 0 && (now.wrapping_sub(s) & STAMP_MASK) <= BUCKETS {
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

    fn drain(b: &RetryBudget, p: Priority, now: Instant) -> u32 {
        let mut n = 0;
        while b.withdraw_at(p, now) {
            n += 1;
        }
        n
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
        let b = budget(0.2, 10, Duration::from_secs(10));
        let now = Instant::now();
        assert_eq!(drain(&b, Priority::Critical, now), 100);
    }

    /// Requests made at times that do not land on bucket boundaries are
    /// remembered for the whole window, and forgotten at most a bucket
    /// later. (tower 0.5.3's `TpsBudget` forgets them after about 6 s of
    /// its 10.)
    #[tokio::test(start_paused = true)]
    async fn remembers_the_whole_window() {
        let window = Duration::from_secs(10);
        let slack = window / BUCKETS as u32;
        let b = budget(1.0, 0, window);
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
            let remembered = b.state.window(b.state.tick(probe)).requests as usize;
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
        assert_eq!(b.state.window(b.state.tick(gone)).requests, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn whole_window_of_deposits_funds_retries() {
        // With ratio 1, the requests of the last window fund as many
        // retries, even 9.9 s after the first of them.
        let b = budget(1.0, 0, Duration::from_secs(10));
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
    /// get), the retries of any window never exceed `ratio × requests +
    /// floor`, counting the requests of the window and one bucket before.
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
            let bound = ratio * funded as f64 + f64::from(floor) * window.as_secs_f64();
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
        assert_eq!(read(&w, max), 3);
        assert_eq!(read(&w, 1), 3); // one tick later, across the wrap
        assert_eq!(read(&w, (max + BUCKETS + 1) & STAMP_MASK), 0);
        add(&w, 1, 1); // a newer tick restarts the bucket
        assert_eq!(read(&w, 1), 1);
        add(&w, max, 5); // an older tick leaves it alone
        assert_eq!(read(&w, 1), 1);
    }

    proptest! {
        /// Whatever the order of requests and retries in time, the
        /// retries granted within any window never exceed what the
        /// requests of that window (and one bucket before) fund.
        #[test]
        fn never_above_ratio_plus_floor(
            gaps in proptest::collection::vec(0u64..400, 1..300),
            asks in proptest::collection::vec(0u32..4, 300),
            ratio in 0.0f64..1.5,
            floor in 0u32..3,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let window = Duration::from_secs(1);
                let b = budget(ratio, floor, window);
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
                    let bound = ratio * funded as f64 + f64::from(floor) * window.as_secs_f64();
                    prop_assert!(in_window as f64 <= bound + 1e-3, "{} > {}", in_window, bound);
                }
                Ok(())
            })?;
        }
    }
}
