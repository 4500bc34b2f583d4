//! The breaker's state machine: synchronous, lock-free on the closed path,
//! with the clock passed in.
//!
//! All state lives in atomics. A control word packs the state and an epoch
//! that changes on every transition: a call remembers the epoch it was
//! admitted in, and its outcome is only recorded if the epoch is still the
//! same, so late results of an old state never leak into a new one.
//! Transitions take a mutex (never held by the closed path) and return a
//! [`Transition`] for the caller to report after the lock is released.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;

use crate::buckets::{COUNT_BITS, Ring, Stamped, Tick};
use crate::config::{CircuitBreakerConfig, SlidingWindow};
use crate::sync::{AtomicU8, AtomicU32, AtomicU64, CachePadded, Mutex, Ordering, lock};

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls pass and are recorded.
    Closed,
    /// Calls fail fast until the open period ends.
    Open,
    /// A few probe calls pass; their outcome closes or re-opens the circuit.
    HalfOpen,
    /// Held open by the operator: every call fails fast.
    ForcedOpen,
    /// Every call passes and nothing is recorded.
    Disabled,
    /// Calls pass and are recorded, but the circuit never opens.
    MetricsOnly,
}

/// A change of [`CircuitState`], as reported to subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    from: CircuitState,
    to: CircuitState,
    reason: &'static str,
    at: Instant,
    /// The epoch the transition started (orders concurrent reports).
    epoch: u64,
}

// === impl CircuitState ===

// The states that admit every call come first, so the closed path's tests
// are one comparison: `<= METRICS_ONLY` (a window permit), `<= DISABLED`
// (no reservation).
const CLOSED: u64 = 0;
const METRICS_ONLY: u64 = 1;
const DISABLED: u64 = 2;
const OPEN: u64 = 3;
const HALF_OPEN: u64 = 4;
const FORCED_OPEN: u64 = 5;
/// Flag on `CLOSED`: the recovery ramp is running.
const RAMP: u64 = 0x80;
const STATE_MASK: u64 = 0x7f;
const EPOCH_SHIFT: u32 = 8;

impl CircuitState {
    /// Every state, in the order of [`CircuitState::index`].
    pub const ALL: [CircuitState; 6] = [
        CircuitState::Closed,
        CircuitState::Open,
        CircuitState::HalfOpen,
        CircuitState::ForcedOpen,
        CircuitState::Disabled,
        CircuitState::MetricsOnly,
    ];

    /// The state as a bounded, lowercase label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
            CircuitState::ForcedOpen => "forced_open",
            CircuitState::Disabled => "disabled",
            CircuitState::MetricsOnly => "metrics_only",
        }
    }

    /// A dense index, `0..6`, in the order of [`CircuitState::ALL`].
    pub const fn index(self) -> usize {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
            CircuitState::ForcedOpen => 3,
            CircuitState::Disabled => 4,
            CircuitState::MetricsOnly => 5,
        }
    }

    /// Whether calls currently fail fast (open or forced open).
    pub const fn is_open(self) -> bool {
        matches!(self, CircuitState::Open | CircuitState::ForcedOpen)
    }

    const fn code(self) -> u64 {
        match self {
            CircuitState::Closed => CLOSED,
            CircuitState::Open => OPEN,
            CircuitState::HalfOpen => HALF_OPEN,
            CircuitState::ForcedOpen => FORCED_OPEN,
            CircuitState::Disabled => DISABLED,
            CircuitState::MetricsOnly => METRICS_ONLY,
        }
    }

    const fn from_ctrl(ctrl: u64) -> Self {
        match ctrl & STATE_MASK {
            OPEN => CircuitState::Open,
            HALF_OPEN => CircuitState::HalfOpen,
            FORCED_OPEN => CircuitState::ForcedOpen,
            DISABLED => CircuitState::Disabled,
            METRICS_ONLY => CircuitState::MetricsOnly,
            _ => CircuitState::Closed,
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Transition ===

impl Transition {
    /// The state before.
    pub fn from(&self) -> CircuitState {
        self.from
    }

    /// The state after.
    pub fn to(&self) -> CircuitState {
        self.to
    }

    /// Why, e.g. `"failure rate above threshold"`.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// When it happened.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// The epoch of the state it moved to: later transitions have larger
    /// epochs.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// Why a call was refused, and when trying again makes sense: every
/// refusal carries a hint (an HTTP 503 gets its `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) reason: &'static str,
    pub(crate) retry_after: Duration,
}

/// What an admitted call must do when it completes, packed in one word:
/// `epoch (low 30 bits) << 34 | start (32 bits) << 2 | kind (2 bits)`.
///
/// `start` is the call's start in microseconds since the core's base, plus
/// one, wrapping (0: not measured); slow calls are detected for calls up to
/// about 71 minutes long.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Permit(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    /// Record into the window (closed, metrics-only).
    Window = 0,
    /// A half-open probe: holds a slot.
    Probe = 1,
    /// Disabled: record nothing (the value 3 is not issued).
    Untracked = 2,
}

/// The low bits of the epoch kept in permits and probe words.
const EPOCH_MASK: u64 = (1 << 30) - 1;

impl Permit {
    #[inline]
    fn new(epoch: u64, kind: PermitKind, start: u32) -> Self {
        Self(((epoch & EPOCH_MASK) << 34) | (u64::from(start) << 2) | kind as u64)
    }

    #[inline]
    fn epoch(self) -> u64 {
        self.0 >> 34
    }

    #[inline]
    fn start(self) -> u32 {
        (self.0 >> 2) as u32
    }

    #[inline]
    fn kind(self) -> PermitKind {
        match self.0 & 3 {
            0 => PermitKind::Window,
            1 => PermitKind::Probe,
            _ => PermitKind::Untracked,
        }
    }

    #[inline]
    pub(crate) fn is_tracked(&self) -> bool {
        self.0 & 3 < PermitKind::Untracked as u64
    }

    #[inline]
    pub(crate) fn is_probe(&self) -> bool {
        self.0 & 3 == PermitKind::Probe as u64
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("epoch", &self.epoch())
            .field("kind", &self.kind())
            .finish()
    }
}

/// What [`Core::record_fast`] did with an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// Recorded (or ignored as stale): nothing left to do.
    Done,
    /// Recorded: the count window must be evaluated
    /// ([`Core::evaluate_count`]), if the state is still `ctrl`.
    Evaluate(u64),
    /// Not recorded: use [`Core::record_slow`].
    Not,
}

/// Counts of the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Stats {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

const BAD_FAILURE: u8 = 1;
const BAD_SLOW: u8 = 2;

/// The outcome bits of one call.
pub(crate) const fn bad_bits(failure: bool, slow: bool) -> u8 {
    ((failure as u8) * BAD_FAILURE) | ((slow as u8) * BAD_SLOW)
}

// === windows ===

/// The last `N` calls: a ring of outcome slots and running counts.
///
/// Each call takes the next index with one `fetch_add`; a slot is only
/// written when its value changes, and then with a `swap`, so the counts
/// always equal the sum of the slots. A success into a full window of
/// successes takes no index ([`CountWindow::record_success`]).
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    /// `u64::MAX / len + 1`, for a division-free `i mod len` (Lemire's
    /// fastmod) on the low 32 bits of the index. At the 2^32 wrap the ring
    /// order jumps once; the counts stay exact.
    fastmod: u64,
    head: CachePadded<AtomicU64>,
    /// The failures (low 32 bits) and slow calls (high 32 bits) in the
    /// slots, each a two's-complement half: one load tells whether the
    /// window holds only successes. See [`CountWindow::counts`].
    bad: AtomicU64,
}

/// One slow call in [`CountWindow::bad`].
const SLOW_ONE: u64 = 1 << 32;

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        Self {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            fastmod: (u64::MAX / u64::from(size.max(1))).wrapping_add(1),
            head: CachePadded(AtomicU64::new(0)),
            bad: AtomicU64::new(0),
        }
    }

    /// Whether a success would change nothing: the window is full and
    /// every slot already holds a success. Which slot it would overwrite
    /// does not matter then (they are all alike), nor does the number of
    /// calls (the window holds its size): [`CountWindow::record_success`]
    /// skips the write, so a healthy breaker's closed path writes no shared
    /// state but the response future's reference count.
    #[inline]
    fn all_successes(&self) -> bool {
        self.bad.load(Ordering::Acquire) == 0
            && self.head.load(Ordering::Acquire) >= self.slots.len() as u64
    }

    /// Records a success; returns how many calls were recorded so far (this
    /// one included), or `None` when it changed nothing (see
    /// [`CountWindow::all_successes`]: the window is full, past any
    /// minimum of calls that fits in it).
    ///
    /// A skipped success is ordered before any outcome it races with: the
    /// counts it read were the window's then, and it leaves them as they
    /// were. A failure recorded later still leaves the window after exactly
    /// `len` more calls.
    #[inline]
    pub(crate) fn record_success(&self) -> Option<u64> {
        if self.all_successes() {
            return None;
        }
        Some(self.record(0))
    }

    /// Records one outcome; returns how many calls were recorded so far
    /// (this one included).
    #[inline]
    pub(crate) fn record(&self, bits: u8) -> u64 {
        let head = self.head.fetch_add(1, Ordering::Relaxed);
        let i = head as u32;
        let low = self.fastmod.wrapping_mul(u64::from(i));
        let index = ((u128::from(low) * self.slots.len() as u128) >> 64) as usize;
        let slot = &self.slots[index];
        if slot.load(Ordering::Relaxed) != bits {
            let old = slot.swap(bits, Ordering::AcqRel);
            self.adjust(old, bits);
        }
        head.wrapping_add(1)
    }

    #[inline]
    fn adjust(&self, old: u8, new: u8) {
        let changed = old ^ new;
        let mut delta = 0u64;
        if changed & BAD_FAILURE != 0 {
            delta = if new & BAD_FAILURE != 0 {
                1
            } else {
                1u64.wrapping_neg()
            };
        }
        if changed & BAD_SLOW != 0 {
            let slow = if new & BAD_SLOW != 0 {
                SLOW_ONE
            } else {
                SLOW_ONE.wrapping_neg()
            };
            delta = delta.wrapping_add(slow);
        }
        if delta != 0 {
            self.bad.fetch_add(delta, Ordering::AcqRel);
        }
    }

    /// The failures and slow calls in `bad`. Either may be transiently
    /// below zero while a racing swap has not adjusted it yet: the low half
    /// is read as signed, so a negative failure count does not borrow from
    /// the slow calls.
    fn counts(bad: u64) -> (i32, i32) {
        let failures = bad as u32 as i32;
        let slow = (bad.wrapping_sub(i64::from(failures) as u64) >> 32) as u32 as i32;
        (failures, slow)
    }

    pub(crate) fn stats(&self) -> Stats {
        let calls = self
            .head
            .load(Ordering::Acquire)
            .min(self.slots.len() as u64);
        // A count may be transiently below zero while a racing swap has not
        // adjusted it yet: clamp.
        let clamp = |v: i32| v.clamp(0, calls as i32) as u64;
        let (failures, slow) = Self::counts(self.bad.load(Ordering::Acquire));
        Stats {
            calls,
            failures: clamp(failures),
            slow: clamp(slow),
        }
    }

    pub(crate) fn reset(&self) {
        for slot in self.slots.iter() {
            let old = slot.swap(0, Ordering::AcqRel);
            self.adjust(old, 0);
        }
        self.head.store(0, Ordering::Release);
    }
}

/// The calls of the last `length`, in [stamped buckets](crate::buckets).
///
/// A bucket is two counters: calls, and failures and slow calls packed into
/// one word (two halves of [`COUNT_BITS`] bits). Recording a success is one
/// load and one `fetch_add` while the bucket is current.
pub(crate) struct TimeWindow {
    ring: Ring,
    buckets: Box<[Bucket]>,
    /// The last evaluation of the thresholds: `stamp << 1 | below_minimum`.
    /// Within one tick no bucket expires, so a success can only lower the
    /// rates: it needs no new evaluation unless the window was below the
    /// minimum of calls (see [`Core::record`]).
    evaluated: AtomicU64,
}

struct Bucket {
    calls: Stamped,
    bad: Stamped,
}

const HALF_BITS: u32 = COUNT_BITS / 2;
const HALF_MASK: u64 = (1 << HALF_BITS) - 1;

impl TimeWindow {
    pub(crate) fn new(length: Duration, buckets: u32) -> Self {
        Self {
            ring: Ring::new(length, buckets),
            buckets: (0..buckets)
                .map(|_| Bucket {
                    calls: Stamped::new(),
                    bad: Stamped::new(),
                })
                .collect(),
            evaluated: AtomicU64::new(0),
        }
    }

    /// Whether a success recorded with `stamp` may change the decision.
    #[inline]
    fn needs_evaluation(&self, stamp: u64) -> bool {
        let e = self.evaluated.load(Ordering::Relaxed);
        e >> 1 != stamp || e & 1 != 0
    }

    fn evaluated(&self, stamp: u64, below_minimum: bool) {
        self.evaluated
            .store((stamp << 1) | u64::from(below_minimum), Ordering::Relaxed);
    }

    /// Records one outcome at `now_ns`; returns the stamp of its tick.
    #[inline]
    pub(crate) fn record(&self, now_ns: u64, bits: u8) -> u64 {
        let Tick { stamp, index } = self.ring.locate(now_ns);
        let bucket = &self.buckets[index];
        bucket.calls.bump(stamp);
        if bits != 0 {
            let failure = u64::from(bits & BAD_FAILURE != 0);
            let slow = u64::from(bits & BAD_SLOW != 0);
            bucket.bad.update(stamp, |cur| {
                let f = ((cur & HALF_MASK) + failure).min(HALF_MASK);
                let s = ((cur >> HALF_BITS & HALF_MASK) + slow).min(HALF_MASK);
                (s << HALF_BITS) | f
            });
        }
        stamp
    }

    pub(crate) fn stats(&self, now_ns: u64) -> Stats {
        let now = self.ring.locate(now_ns).stamp;
        let mut stats = Stats::default();
        for b in self.buckets.iter() {
            stats.calls += b.calls.read(&self.ring, now);
            let bad = b.bad.read(&self.ring, now);
            stats.failures += bad & HALF_MASK;
            stats.slow += bad >> HALF_BITS & HALF_MASK;
        }
        stats.failures = stats.failures.min(stats.calls);
        stats.slow = stats.slow.min(stats.calls);
        stats
    }

    pub(crate) fn reset(&self) {
        for b in self.buckets.iter() {
            b.calls.reset();
            b.bad.reset();
        }
        self.evaluated.store(0, Ordering::Relaxed);
    }
}

/// `d` in nanoseconds, saturating at `u64::MAX` (about 584 years).
#[inline]
fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// One per breaker, behind an `Arc`: the padded count window's size is fine.
#[allow(clippy::large_enum_variant)]
enum Window {
    Count(CountWindow),
    Time(TimeWindow),
    Consecutive {
        threshold: AtomicU32,
        run: AtomicU32,
    },
}

// === the core ===

/// Probe accounting words: `epoch (low 32 bits) << 32 | count`.
const PROBE_EPOCH_SHIFT: u32 = 32;
/// Probe results: `epoch (low 24 bits) << 40 | slow << 26 | failures << 13 | done`.
const RESULT_BITS: u32 = 13;
const RESULT_MASK: u64 = (1 << RESULT_BITS) - 1;
const RESULT_EPOCH_SHIFT: u32 = 40;
const RESULT_EPOCH_MASK: u64 = (1 << 24) - 1;

/// Parameters copied out of the configuration, as read by one decision.
#[derive(Debug, Clone, Copy)]
struct ParamValues {
    open_for: Duration,
    max_open_for: Duration,
    multiplier: f64,
    jitter: f64,
}

/// Parameters copied out of the configuration, each in an atomic so that
/// [`Core::reconfigure`] changes them in place: a decision reads each one
/// once, with a relaxed load (a plain load on x86 and ARM), and never a
/// lock. A decision racing a change may see some old and some new values.
struct Params {
    failure_rate: std::sync::atomic::AtomicU64,
    slow_rate: std::sync::atomic::AtomicU64,
    minimum_calls: std::sync::atomic::AtomicU64,
    open_for: std::sync::atomic::AtomicU64,
    max_open_for: std::sync::atomic::AtomicU64,
    multiplier: std::sync::atomic::AtomicU64,
    jitter: std::sync::atomic::AtomicU64,
    probes: std::sync::atomic::AtomicU32,
    half_open_max: std::sync::atomic::AtomicU64,
    /// Nanoseconds; `u64::MAX`: off.
    slow_call: std::sync::atomic::AtomicU64,
    /// Nanoseconds; `u64::MAX`: off.
    ramp: std::sync::atomic::AtomicU64,
    ramp_start: std::sync::atomic::AtomicU64,
}

/// Data guarded by the transition lock.
struct Locked {
    /// Opens since the circuit last closed (drives the backoff).
    opens: u32,
    rng: u64,
}

/// The shared state machine. See the [module docs](self).
pub(crate) struct Core {
    base: Instant,
    params: Params,
    ctrl: CachePadded<AtomicU64>,
    open_until: AtomicU64,
    /// While half-open: when the probes still out count as failures.
    half_open_until: AtomicU64,
    ramp_start: AtomicU64,
    ramp_calls: AtomicU64,
    probes_admitted: AtomicU64,
    probe_results: AtomicU64,
    window: Window,
    /// The window as configured (its kind and size cannot change).
    shape: SlidingWindow,
    locked: Mutex<Locked>,
}

// === impl Params ===

fn nanos_of(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)
}

impl Params {
    fn new(config: &CircuitBreakerConfig) -> Self {
        let params = Self {
            failure_rate: std::sync::atomic::AtomicU64::new(0),
            slow_rate: std::sync::atomic::AtomicU64::new(0),
            minimum_calls: std::sync::atomic::AtomicU64::new(0),
            open_for: std::sync::atomic::AtomicU64::new(0),
            max_open_for: std::sync::atomic::AtomicU64::new(0),
            multiplier: std::sync::atomic::AtomicU64::new(0),
            jitter: std::sync::atomic::AtomicU64::new(0),
            probes: std::sync::atomic::AtomicU32::new(0),
            half_open_max: std::sync::atomic::AtomicU64::new(0),
            slow_call: std::sync::atomic::AtomicU64::new(u64::MAX),
            ramp: std::sync::atomic::AtomicU64::new(u64::MAX),
            ramp_start: std::sync::atomic::AtomicU64::new(0),
        };
        params.store(config);
        params
    }

    /// Stores every parameter of `config`.
    fn store(&self, config: &CircuitBreakerConfig) {
        let f = |a: &std::sync::atomic::AtomicU64, v: f64| {
            a.store(v.to_bits(), std::sync::atomic::Ordering::Relaxed)
        };
        let d = |a: &std::sync::atomic::AtomicU64, v: Duration| {
            a.store(nanos_of(v), std::sync::atomic::Ordering::Relaxed)
        };
        let o = |a: &std::sync::atomic::AtomicU64, v: Option<Duration>| {
            a.store(
                v.map_or(u64::MAX, nanos_of),
                std::sync::atomic::Ordering::Relaxed,
            );
        };
        f(&self.failure_rate, config.failure_rate_threshold);
        f(&self.slow_rate, config.slow_call_rate_threshold);
        self.minimum_calls.store(
            u64::from(config.minimum_calls),
            std::sync::atomic::Ordering::Relaxed,
        );
        d(&self.open_for, config.open_for);
        d(&self.max_open_for, config.max_open_for);
        f(&self.multiplier, config.backoff_multiplier);
        f(&self.jitter, config.jitter);
        self.probes.store(
            config.half_open_probes,
            std::sync::atomic::Ordering::Relaxed,
        );
        d(&self.half_open_max, config.half_open_max_duration);
        o(&self.slow_call, config.slow_call_duration);
        o(&self.ramp, config.recovery_ramp);
        f(&self.ramp_start, config.recovery_start_percent / 100.0);
    }

    fn values(&self) -> ParamValues {
        ParamValues {
            open_for: self.open_for(),
            max_open_for: self.max_open_for(),
            multiplier: self.multiplier(),
            jitter: self.jitter(),
        }
    }

    #[inline(always)]
    fn f64(a: &std::sync::atomic::AtomicU64) -> f64 {
        f64::from_bits(a.load(std::sync::atomic::Ordering::Relaxed))
    }

    #[inline(always)]
    fn duration(a: &std::sync::atomic::AtomicU64) -> Duration {
        Duration::from_nanos(a.load(std::sync::atomic::Ordering::Relaxed))
    }

    #[inline(always)]
    fn option(a: &std::sync::atomic::AtomicU64) -> Option<Duration> {
        match a.load(std::sync::atomic::Ordering::Relaxed) {
            u64::MAX => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    #[inline(always)]
    fn failure_rate(&self) -> f64 {
        Self::f64(&self.failure_rate)
    }

    #[inline(always)]
    fn slow_rate(&self) -> f64 {
        Self::f64(&self.slow_rate)
    }

    #[inline(always)]
    fn minimum_calls(&self) -> u64 {
        self.minimum_calls
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn open_for(&self) -> Duration {
        Self::duration(&self.open_for)
    }

    fn max_open_for(&self) -> Duration {
        Self::duration(&self.max_open_for)
    }

    fn multiplier(&self) -> f64 {
        Self::f64(&self.multiplier)
    }

    fn jitter(&self) -> f64 {
        Self::f64(&self.jitter)
    }

    #[inline(always)]
    fn probes(&self) -> u32 {
        self.probes.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn half_open_max(&self) -> Duration {
        Self::duration(&self.half_open_max)
    }

    #[inline(always)]
    fn slow_call(&self) -> Option<Duration> {
        Self::option(&self.slow_call)
    }

    fn ramp(&self) -> Option<Duration> {
        Self::option(&self.ramp)
    }

    fn ramp_start(&self) -> f64 {
        Self::f64(&self.ramp_start)
    }
}

/// The result of asking to make a call.
pub(crate) type Acquired = (Result<Permit, Refusal>, Option<Transition>);

impl Core {
    pub(crate) fn new(config: &CircuitBreakerConfig, now: Instant) -> Self {
        let window = match config.window {
            SlidingWindow::Count { size } => Window::Count(CountWindow::new(size)),
            SlidingWindow::Time { length, buckets } => {
                Window::Time(TimeWindow::new(length, buckets))
            }
            SlidingWindow::ConsecutiveFailures { threshold } => Window::Consecutive {
                threshold: AtomicU32::new(threshold),
                run: AtomicU32::new(0),
            },
        };
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            base: now,
            params: Params::new(config),
            ctrl: CachePadded(AtomicU64::new(CLOSED)),
            open_until: AtomicU64::new(0),
            half_open_until: AtomicU64::new(u64::MAX),
            ramp_start: AtomicU64::new(0),
            ramp_calls: AtomicU64::new(0),
            probes_admitted: AtomicU64::new(0),
            probe_results: AtomicU64::new(0),
            window,
            shape: config.window,
            locked: Mutex::new(Locked {
                opens: 0,
                rng: seed | 1,
            }),
        }
    }

    /// Changes the thresholds, durations and probes in place: the window,
    /// its counts, the state and the open period already running are kept.
    /// Returns the settings that differ but cannot change without a new
    /// breaker (the window's kind and size); they keep their old values.
    pub(crate) fn reconfigure(&self, config: &CircuitBreakerConfig) -> Vec<&'static str> {
        let mut restart_only = Vec::new();
        match (&self.window, config.window) {
            (
                Window::Consecutive { threshold: t, .. },
                SlidingWindow::ConsecutiveFailures { threshold },
            ) => t.store(threshold, Ordering::Relaxed),
            (_, window) if window == self.shape => {}
            _ => restart_only.push("window"),
        }
        self.params.store(config);
        restart_only
    }

    #[inline]
    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether every call is admitted right now without a reservation:
    /// closed (not ramping), metrics-only or disabled.
    #[inline]
    pub(crate) fn admits_all(&self) -> bool {
        // CLOSED | METRICS_ONLY | DISABLED, not ramping
        self.ctrl.load(Ordering::Acquire) & 0xff <= DISABLED
    }

    /// The refusal a call would get now without changing any state, if
    /// the circuit fails fast (forced open, or open and not yet due to
    /// half-open).
    pub(crate) fn fails_fast(&self, now: Instant) -> Option<Refusal> {
        match self.ctrl.load(Ordering::Acquire) & 0xff {
            FORCED_OPEN => Some(self.forced_open()),
            OPEN => {
                let until = self.open_until.load(Ordering::Acquire);
                let now_ns = self.nanos(now);
                (now_ns < until).then(|| Refusal {
                    reason: "failure threshold exceeded",
                    retry_after: Duration::from_nanos(until - now_ns),
                })
            }
            _ => None,
        }
    }

    /// The refusal of a call while forced open. The operator's switch has
    /// no end the breaker knows of: the hint is the first open period
    /// ([`CircuitBreakerConfigBuilder::open_for`](crate::CircuitBreakerConfigBuilder::open_for)),
    /// what a tripped breaker would ask of its callers.
    fn forced_open(&self) -> Refusal {
        Refusal {
            reason: "forced open",
            retry_after: self.params.open_for(),
        }
    }

    /// The current state.
    pub(crate) fn state(&self) -> CircuitState {
        CircuitState::from_ctrl(self.ctrl.load(Ordering::Acquire))
    }

    /// Asks to make a call. The closed path reads neither the clock (unless
    /// slow calls are detected) nor any lock.
    #[inline(always)]
    pub(crate) fn acquire(&self, clock: &impl Fn() -> Instant) -> Acquired {
        let ctrl = self.ctrl.load(Ordering::Acquire);
        let epoch = ctrl >> EPOCH_SHIFT;
        match ctrl & 0xff {
            CLOSED | METRICS_ONLY => (Ok(self.permit(epoch, PermitKind::Window, clock)), None),
            DISABLED => (Ok(Permit::new(epoch, PermitKind::Untracked, 0)), None),
            _ => self.acquire_slow(ctrl, clock),
        }
    }

    /// The closed path alone: a permit if the circuit is closed (not
    /// ramping) or metrics-only, else `None` (ask [`Core::acquire`]).
    #[inline(always)]
    pub(crate) fn acquire_closed(&self, clock: &impl Fn() -> Instant) -> Option<Permit> {
        let ctrl = self.ctrl.load(Ordering::Acquire);
        // CLOSED | METRICS_ONLY, not ramping
        if ctrl & 0xff > METRICS_ONLY {
            return None;
        }
        let epoch = ctrl >> EPOCH_SHIFT;
        if self.params.slow_call().is_some() {
            return Some(self.timed_permit(epoch, PermitKind::Window, clock));
        }
        Some(Permit::new(epoch, PermitKind::Window, 0))
    }

    #[inline(always)]
    fn permit(&self, epoch: u64, kind: PermitKind, clock: &impl Fn() -> Instant) -> Permit {
        match self.params.slow_call() {
            Some(_) => self.timed_permit(epoch, kind, clock),
            None => Permit::new(epoch, kind, 0),
        }
    }

    /// A permit that remembers when the call started (slow calls are
    /// detected).
    #[inline(never)]
    fn timed_permit(&self, epoch: u64, kind: PermitKind, clock: &impl Fn() -> Instant) -> Permit {
        let start = self.micros(clock()).wrapping_add(1).max(1);
        Permit::new(epoch, kind, start)
    }

    /// Microseconds since the base, wrapping at 32 bits.
    #[inline]
    fn micros(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.base).as_micros() as u32
    }

    #[cold]
    fn acquire_slow(&self, mut ctrl: u64, clock: &impl Fn() -> Instant) -> Acquired {
        let now = clock();
        let now_ns = self.nanos(now);
        let mut transition = None;
        // At most: open -> half-open, then one probe attempt.
        for _ in 0..4 {
            let epoch = ctrl >> EPOCH_SHIFT;
            match ctrl & 0xff {
                CLOSED | METRICS_ONLY => {
                    return (
                        Ok(self.permit(epoch, PermitKind::Window, clock)),
                        transition,
                    );
                }
                DISABLED => {
                    let p = Permit::new(epoch, PermitKind::Untracked, 0);
                    return (Ok(p), transition);
                }
                FORCED_OPEN => return (Err(self.forced_open()), transition),
                OPEN => {
                    let until = self.open_until.load(Ordering::Acquire);
                    if now_ns < until {
                        let r = Refusal {
                            reason: "failure threshold exceeded",
                            retry_after: Duration::from_nanos(until - now_ns),
                        };
                        return (Err(r), transition);
                    }
                    if let Some(t) = self.to_half_open(ctrl, now) {
                        transition = Some(t);
                    }
                }
                HALF_OPEN => match self.acquire_probe(epoch, now_ns, clock) {
                    // Every slot taken past the half-open period: the
                    // probes still out are hung; they count as failures.
                    Err(_)
                        if transition.is_none()
                            && now_ns >= self.half_open_until.load(Ordering::Acquire) =>
                    {
                        transition = self.trip(ctrl, now, "half-open probes timed out");
                    }
                    result => return (result, transition),
                },
                _ => return (self.acquire_ramp(ctrl, now_ns, clock), transition),
            }
            ctrl = self.ctrl.load(Ordering::Acquire);
        }
        // The state kept changing under this call: ask again at once.
        let r = Refusal {
            reason: "state changing",
            retry_after: Duration::ZERO,
        };
        (Err(r), transition)
    }

    fn acquire_probe(
        &self,
        epoch: u64,
        now_ns: u64,
        clock: &impl Fn() -> Instant,
    ) -> Result<Permit, Refusal> {
        let tag = (epoch & EPOCH_MASK) << PROBE_EPOCH_SHIFT;
        let mut cur = self.probes_admitted.load(Ordering::Acquire);
        loop {
            if cur & !0xffff_ffff != tag || (cur & 0xffff_ffff) >= u64::from(self.params.probes()) {
                // At the latest when the half-open period ends, the probes
                // have decided (or count as failures).
                let until = self.half_open_until.load(Ordering::Acquire);
                return Err(Refusal {
                    reason: "half-open, probes in flight",
                    retry_after: Duration::from_nanos(until.saturating_sub(now_ns)),
                });
            }
            match self.probes_admitted.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(self.permit(epoch, PermitKind::Probe, clock)),
                Err(actual) => cur = actual,
            }
        }
    }

    fn acquire_ramp(
        &self,
        ctrl: u64,
        now_ns: u64,
        clock: &impl Fn() -> Instant,
    ) -> Result<Permit, Refusal> {
        let epoch = ctrl >> EPOCH_SHIFT;
        let ramp = self.params.ramp().map_or(0, saturating_nanos);
        let elapsed = now_ns.saturating_sub(self.ramp_start.load(Ordering::Acquire));
        if elapsed >= ramp {
            // Ramp over: clear the flag (a failed exchange means someone else
            // did, or the state changed).
            let _ =
                self.ctrl
                    .compare_exchange(ctrl, ctrl & !RAMP, Ordering::AcqRel, Ordering::Relaxed);
            return Ok(self.permit(epoch, PermitKind::Window, clock));
        }
        let start = self.params.ramp_start();
        let share = start + (1.0 - start) * (elapsed as f64 / ramp as f64);
        // Deterministic admission of exactly `share` of the calls.
        let n = self.ramp_calls.fetch_add(1, Ordering::AcqRel) as f64;
        if ((n + 1.0) * share).floor() > (n * share).floor() {
            Ok(self.permit(epoch, PermitKind::Window, clock))
        } else {
            Err(Refusal {
                reason: "recovering",
                retry_after: Duration::from_nanos(ramp - elapsed).min(Duration::from_secs(1)),
            })
        }
    }

    /// Gives back a probe slot whose call was cancelled.
    pub(crate) fn release(&self, permit: &Permit) {
        if permit.kind() != PermitKind::Probe {
            return;
        }
        let tag = permit.epoch() << PROBE_EPOCH_SHIFT;
        let mut cur = self.probes_admitted.load(Ordering::Acquire);
        while cur & !0xffff_ffff == tag && cur & 0xffff_ffff > 0 {
            match self.probes_admitted.compare_exchange_weak(
                cur,
                cur - 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Whether a call that started at `permit.start` and ends now was slow.
    #[inline]
    pub(crate) fn is_slow(&self, permit: &Permit, clock: &impl Fn() -> Instant) -> bool {
        let start = permit.start();
        if start == 0 {
            return false; // not measured
        }
        match self.params.slow_call() {
            None => false,
            Some(limit) => {
                let now = self.micros(clock()).wrapping_add(1).max(1);
                u128::from(now.wrapping_sub(start)) >= limit.as_micros()
            }
        }
    }

    /// Records the outcome of a call admitted with `permit`.
    #[cfg(test)]
    pub(crate) fn record(
        &self,
        permit: &Permit,
        failure: bool,
        slow: bool,
        clock: &impl Fn() -> Instant,
    ) -> Option<Transition> {
        match self.record_fast(*permit, failure | slow) {
            Recorded::Done => None,
            Recorded::Evaluate(ctrl) => self.evaluate_count(ctrl, clock),
            Recorded::Not => self.record_slow(permit, failure, slow, clock),
        }
    }

    /// The common case of recording, inlined: a success (not timed) into a
    /// count window, which costs one load of the control word, the window's
    /// `fetch_add` and a load of the slot. A success only lowers the rates
    /// of a window that did not call for opening before: it is only
    /// evaluated when it completes the minimum of calls.
    #[inline(always)]
    pub(crate) fn record_fast(&self, permit: Permit, bad: bool) -> Recorded {
        let Window::Count(w) = &self.window else {
            return Recorded::Not;
        };
        if bad {
            return Recorded::Not;
        }
        let ctrl = self.ctrl.load(Ordering::Acquire);
        // One comparison: a window permit, not timed, of the current epoch.
        // Anything else (a probe, a timed call, a late outcome of an old
        // state) takes the slow path, which sorts them out.
        if permit != Permit::new(ctrl >> EPOCH_SHIFT, PermitKind::Window, 0) {
            return Recorded::Not;
        }
        match w.record_success() {
            Some(recorded) if recorded == self.params.minimum_calls() => Recorded::Evaluate(ctrl),
            _ => Recorded::Done,
        }
    }

    /// Evaluates the count window after a success completed the minimum
    /// of calls ([`Recorded::Evaluate`]), if the circuit is closed
    /// (metrics-only never trips).
    #[cold]
    #[inline(never)]
    pub(crate) fn evaluate_count(
        &self,
        ctrl: u64,
        clock: &impl Fn() -> Instant,
    ) -> Option<Transition> {
        match &self.window {
            Window::Count(w) if ctrl & STATE_MASK == CLOSED => {
                self.evaluate(ctrl, w.stats(), clock)
            }
            _ => None,
        }
    }

    /// [`Core::record`] for everything but a success into a count window.
    #[inline(never)]
    pub(crate) fn record_slow(
        &self,
        permit: &Permit,
        failure: bool,
        slow: bool,
        clock: &impl Fn() -> Instant,
    ) -> Option<Transition> {
        let ctrl = self.ctrl.load(Ordering::Acquire);
        if (ctrl >> EPOCH_SHIFT) & EPOCH_MASK != permit.epoch() {
            return None;
        }
        if !permit.is_tracked() {
            return None;
        }
        if permit.is_probe() {
            return self.record_probe(ctrl, failure, slow, clock);
        }
        let bits = bad_bits(failure, slow);
        // The thresholds are evaluated after every recorded outcome once the
        // window holds the minimum of calls. A success only lowers the rates
        // of a window that did not call for opening before, so it is only
        // evaluated when it may change the decision: when it completes the
        // minimum, or (time window) when buckets expired since the last
        // evaluation.
        let closed = ctrl & STATE_MASK == CLOSED; // metrics-only never trips
        let stats = match &self.window {
            Window::Count(w) => {
                let recorded = w.record(bits);
                if !closed || (bits == 0 && recorded != self.params.minimum_calls()) {
                    return None;
                }
                w.stats()
            }
            Window::Time(w) => {
                let now_ns = self.nanos(clock());
                let stamp = w.record(now_ns, bits);
                if !closed || (bits == 0 && !w.needs_evaluation(stamp)) {
                    return None;
                }
                let stats = w.stats(now_ns);
                w.evaluated(stamp, stats.calls < self.params.minimum_calls());
                stats
            }
            Window::Consecutive { threshold, run } => {
                if bits == 0 {
                    if run.load(Ordering::Relaxed) != 0 {
                        run.store(0, Ordering::Relaxed);
                    }
                    return None;
                }
                let n = run.fetch_add(1, Ordering::AcqRel) + 1;
                if n < threshold.load(Ordering::Relaxed) || ctrl & STATE_MASK != CLOSED {
                    return None;
                }
                return self.trip(ctrl, clock(), "consecutive failures");
            }
        };
        self.evaluate(ctrl, stats, clock)
    }

    /// Opens the circuit (still in `ctrl`) if the window's `stats` call
    /// for it.
    #[cold]
    #[inline(never)]
    fn evaluate(
        &self,
        ctrl: u64,
        stats: Stats,
        clock: &impl Fn() -> Instant,
    ) -> Option<Transition> {
        let reason = self.exceeded(stats)?;
        self.trip(ctrl, clock(), reason)
    }

    /// Whether the window's rates call for opening.
    fn exceeded(&self, s: Stats) -> Option<&'static str> {
        if s.calls == 0 || s.calls < self.params.minimum_calls() {
            return None;
        }
        let calls = s.calls as f64;
        if s.failures as f64 * 100.0 >= self.params.failure_rate() * calls {
            Some("failure rate above threshold")
        } else if self.params.slow_call().is_some()
            && s.slow as f64 * 100.0 >= self.params.slow_rate() * calls
        {
            Some("slow call rate above threshold")
        } else {
            None
        }
    }

    fn record_probe(
        &self,
        ctrl: u64,
        failure: bool,
        slow: bool,
        clock: &impl Fn() -> Instant,
    ) -> Option<Transition> {
        let epoch = ctrl >> EPOCH_SHIFT;
        let tag = (epoch & RESULT_EPOCH_MASK) << RESULT_EPOCH_SHIFT;
        let add = 1 | (u64::from(failure) << RESULT_BITS) | (u64::from(slow) << (2 * RESULT_BITS));
        let mut cur = self.probe_results.load(Ordering::Acquire);
        let next = loop {
            if cur & !((1 << RESULT_EPOCH_SHIFT) - 1) != tag {
                return None;
            }
            let next = cur + add;
            match self.probe_results.compare_exchange_weak(
                cur,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break next,
                Err(actual) => cur = actual,
            }
        };
        let done = next & RESULT_MASK;
        let failures = next >> RESULT_BITS & RESULT_MASK;
        let slows = next >> (2 * RESULT_BITS) & RESULT_MASK;
        let n = f64::from(self.params.probes());
        let reopen = if failures as f64 * 100.0 >= self.params.failure_rate() * n {
            Some("probe failed")
        } else if self.params.slow_call().is_some()
            && slows as f64 * 100.0 >= self.params.slow_rate() * n
        {
            Some("probe slow")
        } else {
            None
        };
        if reopen.is_none() && done < u64::from(self.params.probes()) {
            return None;
        }
        match reopen {
            Some(reason) => self.trip(ctrl, clock(), reason),
            None => self.close(ctrl, clock()),
        }
    }

    // === transitions (under the lock) ===

    fn publish(&self, from_ctrl: u64, to: u64) -> u64 {
        let epoch = (from_ctrl >> EPOCH_SHIFT) + 1;
        let ctrl = (epoch << EPOCH_SHIFT) | to;
        self.ctrl.store(ctrl, Ordering::Release);
        ctrl
    }

    /// Opens the circuit if it is still in `ctrl`.
    fn trip(&self, ctrl: u64, now: Instant, reason: &'static str) -> Option<Transition> {
        let mut locked = lock(&self.locked);
        // The end of a recovery ramp (clearing `RAMP`) does not matter here.
        let current = self.ctrl.load(Ordering::Acquire);
        if current & !RAMP != ctrl & !RAMP {
            return None;
        }
        let open_for = self.backoff(&mut locked);
        locked.opens = locked.opens.saturating_add(1);
        let until = self.nanos(now).saturating_add(saturating_nanos(open_for));
        self.open_until.store(until, Ordering::Release);
        let epoch = self.publish(ctrl, OPEN) >> EPOCH_SHIFT;
        drop(locked);
        Some(Transition {
            from: CircuitState::from_ctrl(ctrl),
            to: CircuitState::Open,
            reason,
            at: now,
            epoch,
        })
    }

    /// Resets the probe accounting for the half-open period that follows
    /// `ctrl` (under the lock, before publishing).
    fn start_half_open(&self, ctrl: u64, now: Instant) {
        let epoch = (ctrl >> EPOCH_SHIFT) + 1;
        let until = self
            .nanos(now)
            .saturating_add(saturating_nanos(self.params.half_open_max()));
        self.half_open_until.store(until, Ordering::Release);
        self.probes_admitted
            .store((epoch & EPOCH_MASK) << PROBE_EPOCH_SHIFT, Ordering::Release);
        self.probe_results.store(
            (epoch & RESULT_EPOCH_MASK) << RESULT_EPOCH_SHIFT,
            Ordering::Release,
        );
    }

    fn to_half_open(&self, ctrl: u64, now: Instant) -> Option<Transition> {
        let locked = lock(&self.locked);
        if self.ctrl.load(Ordering::Acquire) != ctrl {
            return None;
        }
        self.start_half_open(ctrl, now);
        let epoch = self.publish(ctrl, HALF_OPEN) >> EPOCH_SHIFT;
        drop(locked);
        Some(Transition {
            from: CircuitState::Open,
            to: CircuitState::HalfOpen,
            reason: "open period over",
            at: now,
            epoch,
        })
    }

    fn close(&self, ctrl: u64, now: Instant) -> Option<Transition> {
        let mut locked = lock(&self.locked);
        if self.ctrl.load(Ordering::Acquire) != ctrl {
            return None;
        }
        locked.opens = 0;
        self.reset_window();
        let to = if self.params.ramp().is_some() {
            self.ramp_start.store(self.nanos(now), Ordering::Release);
            self.ramp_calls.store(0, Ordering::Release);
            CLOSED | RAMP
        } else {
            CLOSED
        };
        let epoch = self.publish(ctrl, to) >> EPOCH_SHIFT;
        drop(locked);
        Some(Transition {
            from: CircuitState::from_ctrl(ctrl),
            to: CircuitState::Closed,
            reason: "probes succeeded",
            at: now,
            epoch,
        })
    }

    fn reset_window(&self) {
        match &self.window {
            Window::Count(w) => w.reset(),
            Window::Time(w) => w.reset(),
            Window::Consecutive { run, .. } => run.store(0, Ordering::Release),
        }
    }

    /// The open duration for the next open: exponential, jittered, capped.
    fn backoff(&self, locked: &mut Locked) -> Duration {
        let p = self.params.values();
        let base = p.open_for.as_secs_f64()
            * p.multiplier
                .powi(i32::try_from(locked.opens).unwrap_or(i32::MAX));
        let max = p.max_open_for.as_secs_f64();
        let mut secs = base.min(max);
        if p.jitter > 0.0 {
            // splitmix64
            locked.rng = locked.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = locked.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let u = (z >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
            secs *= 1.0 + p.jitter * (2.0 * u - 1.0);
            secs = secs.min(max);
        }
        // Huge open periods (a configured 365 days times a large multiplier)
        // saturate at the cap rather than panic.
        Duration::try_from_secs_f64(secs.max(1e-6))
            .unwrap_or(p.max_open_for)
            .min(p.max_open_for)
    }

    /// Moves to `to` (an operator's choice), whatever the state.
    pub(crate) fn set_state(&self, to: CircuitState, now: Instant) -> Option<Transition> {
        let mut locked = lock(&self.locked);
        let ctrl = self.ctrl.load(Ordering::Acquire);
        let from = CircuitState::from_ctrl(ctrl);
        if from == to && ctrl & RAMP == 0 {
            return None;
        }
        match to {
            CircuitState::Closed | CircuitState::MetricsOnly | CircuitState::Disabled => {
                locked.opens = 0;
                self.reset_window();
            }
            CircuitState::Open => {
                let open_for = self.backoff(&mut locked);
                locked.opens = locked.opens.saturating_add(1);
                let until = self.nanos(now).saturating_add(saturating_nanos(open_for));
                self.open_until.store(until, Ordering::Release);
            }
            CircuitState::HalfOpen => self.start_half_open(ctrl, now),
            CircuitState::ForcedOpen => {}
        }
        let epoch = self.publish(ctrl, to.code()) >> EPOCH_SHIFT;
        drop(locked);
        Some(Transition {
            from,
            to,
            reason: "set by operator",
            at: now,
            epoch,
        })
    }

    /// The window's counts (for consecutive mode: the failure run).
    pub(crate) fn stats(&self, now: Instant) -> Stats {
        match &self.window {
            Window::Count(w) => w.stats(),
            Window::Time(w) => w.stats(self.nanos(now)),
            Window::Consecutive { run, .. } => {
                let n = u64::from(run.load(Ordering::Acquire));
                Stats {
                    calls: n,
                    failures: n,
                    slow: 0,
                }
            }
        }
    }

    /// Time left until the circuit may half-open, while open.
    pub(crate) fn time_until_half_open(&self, now: Instant) -> Option<Duration> {
        if self.ctrl.load(Ordering::Acquire) & 0xff != OPEN {
            return None;
        }
        let until = self.open_until.load(Ordering::Acquire);
        Some(Duration::from_nanos(until.saturating_sub(self.nanos(now))))
    }

    /// Opens since the circuit last closed.
    pub(crate) fn consecutive_opens(&self) -> u32 {
        lock(&self.locked).opens
    }

    /// Probes admitted (in flight or done) in the current half-open period.
    pub(crate) fn probes_in_use(&self) -> u32 {
        let ctrl = self.ctrl.load(Ordering::Acquire);
        if ctrl & 0xff != HALF_OPEN {
            return 0;
        }
        (self.probes_admitted.load(Ordering::Acquire) & 0xffff_ffff) as u32
    }

    /// While the recovery ramp runs: the time left of it.
    pub(crate) fn ramp_remaining(&self, now: Instant) -> Option<Duration> {
        if !self.is_ramping() {
            return None;
        }
        let ramp = self.params.ramp().map_or(0, saturating_nanos);
        let elapsed = self
            .nanos(now)
            .saturating_sub(self.ramp_start.load(Ordering::Acquire));
        (elapsed < ramp).then(|| Duration::from_nanos(ramp - elapsed))
    }

    /// Whether the recovery ramp is running.
    pub(crate) fn is_ramping(&self) -> bool {
        self.ctrl.load(Ordering::Acquire) & RAMP != 0
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn core(b: crate::config::CircuitBreakerConfigBuilder, now: Instant) -> Core {
        Core::new(&b.jitter(0.0).build().unwrap(), now)
    }

    #[test]
    fn fastmod_is_modulo() {
        for size in [1u32, 2, 3, 7, 100, 1000, 65_537, 1_000_000] {
            let w = CountWindow::new(size);
            for i in [
                0u32,
                1,
                2,
                size - 1,
                size,
                size + 1,
                12345,
                u32::MAX - 1,
                u32::MAX,
            ] {
                let low = w.fastmod.wrapping_mul(u64::from(i));
                let got = ((u128::from(low) * u128::from(size)) >> 64) as u32;
                assert_eq!(got, i % size, "{i} mod {size}");
            }
        }
    }

    #[test]
    fn count_window_slides() {
        let w = CountWindow::new(3);
        w.record(BAD_FAILURE);
        w.record(BAD_FAILURE);
        w.record(0);
        assert_eq!(
            w.stats(),
            Stats {
                calls: 3,
                failures: 2,
                slow: 0
            }
        );
        w.record(0); // pushes out the first failure
        assert_eq!(w.stats().failures, 1);
        w.record(BAD_SLOW);
        assert_eq!(
            w.stats(),
            Stats {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
        w.reset();
        assert_eq!(w.stats(), Stats::default());
    }

    #[test]
    fn packed_counts_decode_transient_negatives() {
        let at = |f: i64, s: i64| (s as u64).wrapping_mul(SLOW_ONE).wrapping_add(f as u64);
        assert_eq!(CountWindow::counts(at(3, 2)), (3, 2));
        assert_eq!(CountWindow::counts(at(-1, 2)), (-1, 2));
        assert_eq!(CountWindow::counts(at(2, -1)), (2, -1));
        assert_eq!(CountWindow::counts(at(-1, -1)), (-1, -1));
        assert_eq!(CountWindow::counts(at(0, 0)), (0, 0));
    }

    /// A success into a full window of successes writes nothing; a failure
    /// that follows still leaves the window after exactly `len` more calls.
    #[test]
    fn successes_into_a_full_healthy_window_are_skipped_and_it_still_slides() {
        let w = CountWindow::new(3);
        assert_eq!(w.record_success(), Some(1));
        assert_eq!(w.record_success(), Some(2));
        assert_eq!(w.record_success(), Some(3), "counted until full");
        assert_eq!(w.record_success(), None, "full of successes: skipped");
        assert_eq!(w.head.load(Ordering::Relaxed), 3);
        assert_eq!(w.stats().calls, 3);

        w.record(BAD_FAILURE);
        for i in 0..2 {
            assert!(w.record_success().is_some(), "{i}: not skipped");
            assert_eq!(w.stats().failures, 1, "{i}: the failure is in the last 3");
        }
        assert!(w.record_success().is_some());
        assert_eq!(w.stats().failures, 0, "3 calls later, it has left");
        assert_eq!(w.record_success(), None);

        w.record(BAD_SLOW);
        assert_eq!(w.record_success().map(|_| w.stats().slow), Some(1));
        w.reset();
        assert_eq!(w.record_success(), Some(1), "empty again: counted");
    }

    #[test]
    fn time_window_expires_buckets() {
        let w = TimeWindow::new(Duration::from_secs(10), 10);
        let s = 1_000_000_000u64;
        w.record(0, BAD_FAILURE);
        w.record(5 * s, 0);
        assert_eq!(
            w.stats(5 * s),
            Stats {
                calls: 2,
                failures: 1,
                slow: 0
            }
        );
        assert_eq!(w.stats(10 * s).calls, 1, "first bucket expired");
        assert_eq!(w.stats(16 * s), Stats::default());
        // the bucket of tick 0 is reused for tick 20
        w.record(20 * s, BAD_SLOW);
        assert_eq!(
            w.stats(20 * s),
            Stats {
                calls: 1,
                failures: 0,
                slow: 1
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn closed_open_half_open_closed() {
        let t0 = Instant::now();
        let c = core(
            CircuitBreakerConfig::builder()
                .count_window(4)
                .minimum_calls(4)
                .half_open_probes(2)
                .open_for(Duration::from_secs(1)),
            t0,
        );
        let clock = || t0;
        for i in 0..4 {
            let (p, _) = c.acquire(&clock);
            let t = c.record(&p.unwrap(), i % 2 == 1, false, &clock);
            assert_eq!(t.is_some(), i == 3, "opens at the 4th call (50%)");
        }
        assert_eq!(c.state(), CircuitState::Open);
        let (r, _) = c.acquire(&clock);
        assert_eq!(r.unwrap_err().retry_after, Duration::from_secs(1));

        let later = || t0 + Duration::from_secs(1);
        let (p1, t) = c.acquire(&later);
        assert_eq!(t.unwrap().to(), CircuitState::HalfOpen);
        let (p2, _) = c.acquire(&later);
        assert!(c.acquire(&later).0.is_err(), "only two probes");
        let (p1, p2) = (p1.unwrap(), p2.unwrap());
        c.release(&p2); // cancelled: slot back
        let p3 = c.acquire(&later).0.unwrap();
        assert!(c.record(&p1, false, false, &later).is_none());
        let t = c.record(&p3, false, false, &later).unwrap();
        assert_eq!(
            (t.from(), t.to()),
            (CircuitState::HalfOpen, CircuitState::Closed)
        );
        // a stale outcome of the old epoch is ignored
        assert!(c.record(&p2, true, false, &later).is_none());
        assert_eq!(c.stats(t0), Stats::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_after_old_successes_expired_opens() {
        let t0 = Instant::now();
        let c = core(
            CircuitBreakerConfig::builder()
                .time_window(Duration::from_secs(2))
                .time_window_buckets(2)
                .minimum_calls(2),
            t0,
        );
        let at = |s: u64| move || t0 + Duration::from_secs(s);
        for _ in 0..3 {
            let p = c.acquire(&at(0)).0.unwrap();
            assert!(c.record(&p, false, false, &at(0)).is_none());
        }
        let p = c.acquire(&at(1)).0.unwrap();
        assert!(c.record(&p, true, false, &at(1)).is_none(), "1 of 4");
        // the successes of second 0 expire: 1 failure and 1 success
        let p = c.acquire(&at(2)).0.unwrap();
        let t = c.record(&p, false, false, &at(2)).expect("opens");
        assert_eq!(t.to(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_during_the_ramp_reopen() {
        let t0 = Instant::now();
        let c = core(
            CircuitBreakerConfig::builder()
                .count_window(2)
                .minimum_calls(2)
                .recovery_ramp(Duration::from_secs(10))
                .recovery_start_percent(100.0),
            t0,
        );
        c.set_state(CircuitState::HalfOpen, t0);
        let clock = || t0;
        for _ in 0..3 {
            let p = c.acquire(&clock).0.unwrap();
            c.record(&p, false, false, &clock);
        }
        assert!(c.is_ramping());
        let p1 = c.acquire(&clock).0.unwrap();
        let p2 = c.acquire(&clock).0.unwrap();
        // the ramp ends between the two failures
        let late = || t0 + Duration::from_secs(11);
        assert!(c.acquire(&late).0.is_ok());
        assert!(!c.is_ramping());
        assert!(c.record(&p1, true, false, &clock).is_none());
        let t = c.record(&p2, true, false, &clock).unwrap();
        assert_eq!(t.to(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_and_caps() {
        let t0 = Instant::now();
        let c = core(
            CircuitBreakerConfig::builder()
                .consecutive_failures(1)
                .half_open_probes(1)
                .open_for(Duration::from_secs(1))
                .max_open_for(Duration::from_secs(5)),
            t0,
        );
        let mut now = t0;
        let mut seen = vec![];
        for _ in 0..5 {
            let clock = || now;
            let p = c.acquire(&clock).0.unwrap();
            assert!(c.record(&p, true, false, &clock).is_some());
            let d = c.time_until_half_open(now).unwrap();
            seen.push(d.as_secs());
            now += d;
        }
        assert_eq!(seen, [1, 2, 4, 5, 5]);
    }

    #[tokio::test(start_paused = true)]
    async fn huge_durations_saturate() {
        use resilience_core::config::MAX_DURATION;
        let t0 = Instant::now();
        let c = core(
            CircuitBreakerConfig::builder()
                .consecutive_failures(1)
                .half_open_probes(1)
                .open_for(MAX_DURATION)
                .max_open_for(MAX_DURATION)
                .recovery_ramp(MAX_DURATION),
            t0,
        );
        let clock = || t0;
        for _ in 0..3 {
            let p = c.acquire(&clock).0.unwrap();
            c.record(&p, true, false, &clock).unwrap();
            let left = c.time_until_half_open(t0).unwrap();
            assert!(left > MAX_DURATION - Duration::from_secs(1), "{left:?}");
            assert!(c.acquire(&clock).0.is_err());
            // the ramp saturates too: half-open, close, ramp
            c.set_state(CircuitState::HalfOpen, t0);
            let p = c.acquire(&clock).0.unwrap();
            assert_eq!(
                c.record(&p, false, false, &clock).unwrap().to(),
                CircuitState::Closed
            );
            assert!(c.is_ramping());
            let _ = c.acquire(&|| t0 + MAX_DURATION / 2);
            assert!(c.is_ramping());
            c.set_state(CircuitState::Closed, t0);
        }
        // with jitter and a huge multiplier as well
        let c = Core::new(
            &CircuitBreakerConfig::builder()
                .consecutive_failures(1)
                .open_for(MAX_DURATION / 2)
                .max_open_for(MAX_DURATION)
                .backoff_multiplier(1e300)
                .jitter(0.5)
                .build()
                .unwrap(),
            t0,
        );
        for _ in 0..3 {
            let p = c.acquire(&clock).0.unwrap();
            c.record(&p, true, false, &clock);
            c.set_state(CircuitState::HalfOpen, t0);
        }
    }

    /// Naive reference: recompute over all outcomes kept in a Vec.
    #[derive(Default)]
    struct Model {
        events: Vec<(u64, u8)>,
    }

    impl Model {
        fn count(&self, n: usize) -> Stats {
            let tail = &self.events[self.events.len().saturating_sub(n)..];
            stats_of(tail.iter().map(|e| e.1))
        }
        fn time(&self, now_ns: u64, bucket_ns: u64, buckets: u64) -> Stats {
            let tick = now_ns / bucket_ns;
            stats_of(
                self.events
                    .iter()
                    .filter(|(t, _)| t / bucket_ns + buckets > tick)
                    .map(|e| e.1),
            )
        }
    }

    fn stats_of(it: impl Iterator<Item = u8>) -> Stats {
        let mut s = Stats::default();
        for b in it {
            s.calls += 1;
            s.failures += u64::from(b & BAD_FAILURE != 0);
            s.slow += u64::from(b & BAD_SLOW != 0);
        }
        s
    }

    fn outcome() -> impl Strategy<Value = (u8, u64)> {
        (0u8..4, prop_oneof![Just(0u64), 0u64..300, 0u64..3000])
    }

    proptest! {
        #[test]
        fn count_window_matches_model(size in 1u32..20, seq in proptest::collection::vec(outcome(), 0..200)) {
            let w = CountWindow::new(size);
            let mut m = Model::default();
            for (bits, _) in seq {
                // successes as the closed path records them (skipped into a
                // full window of successes)
                if bits == 0 {
                    w.record_success();
                } else {
                    w.record(bits);
                }
                m.events.push((0, bits));
                prop_assert_eq!(w.stats(), m.count(size as usize));
            }
        }

        #[test]
        fn time_window_matches_model(buckets in 1u32..12, seq in proptest::collection::vec(outcome(), 0..200)) {
            // 1 s window; times in ms
            let w = TimeWindow::new(Duration::from_secs(1), buckets);
            let bucket_ns = 1_000_000_000 / u64::from(buckets);
            let mut m = Model::default();
            let mut now = 0u64;
            for (bits, dt_ms) in seq {
                now += dt_ms * 1_000_000;
                w.record(now, bits);
                m.events.push((now, bits));
                prop_assert_eq!(w.stats(now), m.time(now, bucket_ns, u64::from(buckets)));
            }
        }

        /// The breaker opens exactly when the model's rate over the window
        /// first reaches the threshold with enough calls, for both windows.
        #[test]
        fn same_decisions_as_model(
            size in 2u32..30,
            min_calls in 1u32..30,
            rate in 1u32..=100,
            time_based in any::<bool>(),
            seq in proptest::collection::vec(outcome(), 1..150),
        ) {
            let min_calls = min_calls.min(size);
            let t0 = Instant::now();
            let b = CircuitBreakerConfig::builder()
                .failure_rate_threshold(f64::from(rate))
                .slow_call_duration(Duration::from_millis(100))
                .slow_call_rate_threshold(f64::from(rate))
                .minimum_calls(min_calls);
            let b = if time_based {
                b.time_window(Duration::from_millis(u64::from(size) * 100)).time_window_buckets(size)
            } else {
                b.count_window(size)
            };
            let c = core(b, t0);
            let mut m = Model::default();
            let mut now = t0;
            for (bits, dt_ms) in seq {
                now += Duration::from_millis(dt_ms);
                let clock = || now;
                let p = c.acquire(&clock).0.unwrap();
                let t = c.record(&p, bits & BAD_FAILURE != 0, bits & BAD_SLOW != 0, &clock);
                let ns = u64::try_from((now - t0).as_nanos()).unwrap();
                m.events.push((ns, bits));
                let s = if time_based {
                    m.time(ns, 100_000_000, u64::from(size))
                } else {
                    m.count(size as usize)
                };
                // the documented rule: after every outcome, once the window
                // holds the minimum of calls
                let want = s.calls >= u64::from(min_calls)
                    && (s.failures * 100 >= u64::from(rate) * s.calls
                        || s.slow * 100 >= u64::from(rate) * s.calls);
                prop_assert_eq!(t.is_some(), want, "stats {:?}", s);
                if want {
                    prop_assert_eq!(c.state(), CircuitState::Open);
                    break;
                }
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    fn config(probes: u32) -> CircuitBreakerConfig {
        CircuitBreakerConfig::builder()
            .consecutive_failures(1)
            .half_open_probes(probes)
            .open_for(Duration::from_secs(1))
            .jitter(0.0)
            .build()
            .unwrap()
    }

    /// A success skipped into a full window of successes races with a
    /// failure: the failure is counted, and leaves after exactly the
    /// window's size of calls more.
    #[test]
    fn a_skipped_success_races_with_a_failure() {
        loom::model(|| {
            let w = Arc::new(CountWindow::new(2));
            w.record(0);
            w.record(0);
            let w2 = w.clone();
            let th = loom::thread::spawn(move || {
                w2.record_success();
            });
            w.record(BAD_FAILURE);
            th.join().unwrap();
            let s = w.stats();
            assert_eq!((s.calls, s.failures), (2, 1));
            w.record_success();
            w.record_success();
            assert_eq!(w.stats().failures, 0, "2 calls later, it has left");
        });
    }

    /// Two callers race for one probe slot: exactly one wins; when the
    /// winner is cancelled, the slot comes back.
    #[test]
    fn one_probe_slot() {
        loom::model(|| {
            let t0 = Instant::now();
            let core = Arc::new(Core::new(&config(1), t0));
            core.set_state(CircuitState::HalfOpen, t0);
            let clock = move || t0;
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let core = core.clone();
                    loom::thread::spawn(move || {
                        let clock = move || t0;
                        core.acquire(&clock).0.ok()
                    })
                })
                .collect();
            let permits: Vec<_> = handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .collect();
            assert_eq!(permits.len(), 1);
            core.release(&permits[0]);
            assert!(core.acquire(&clock).0.is_ok());
        });
    }

    /// Two failures recorded at once in the closed state: the circuit opens
    /// exactly once.
    #[test]
    fn concurrent_failures_trip_once() {
        loom::model(|| {
            let t0 = Instant::now();
            let config = CircuitBreakerConfig::builder()
                .count_window(2)
                .minimum_calls(2)
                .jitter(0.0)
                .build()
                .unwrap();
            let core = Arc::new(Core::new(&config, t0));
            let clock = move || t0;
            let permits = [
                core.acquire(&clock).0.unwrap(),
                core.acquire(&clock).0.unwrap(),
            ];
            let handles: Vec<_> = permits
                .into_iter()
                .map(|p| {
                    let core = core.clone();
                    loom::thread::spawn(move || {
                        let clock = move || t0;
                        core.record(&p, true, false, &clock).is_some()
                    })
                })
                .collect();
            let trips = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|t| *t)
                .count();
            assert_eq!(trips, 1);
            assert_eq!(core.state(), CircuitState::Open);
        });
    }

    /// A cancelled probe's release races with the re-open decided by another
    /// probe: the next half-open period starts with all its slots free.
    #[test]
    fn stale_release_does_not_leak_into_the_next_period() {
        loom::model(|| {
            let t0 = Instant::now();
            let core = Arc::new(Core::new(&config(2), t0));
            core.set_state(CircuitState::HalfOpen, t0);
            let clock = move || t0;
            let p1 = core.acquire(&clock).0.unwrap();
            let p2 = core.acquire(&clock).0.unwrap();
            let c2 = core.clone();
            let th = loom::thread::spawn(move || c2.release(&p1));
            core.record(&p2, true, false, &clock);
            th.join().unwrap();
            assert_eq!(core.state(), CircuitState::Open);
            core.set_state(CircuitState::HalfOpen, t0);
            assert_eq!(core.probes_in_use(), 0);
            assert!(core.acquire(&clock).0.is_ok());
            assert!(core.acquire(&clock).0.is_ok());
            assert!(core.acquire(&clock).0.is_err());
        });
    }

    /// A hung probe's timeout (found by a caller past the half-open
    /// period) races with the probe's own late success: exactly one of them
    /// moves the circuit out of half-open.
    #[test]
    fn half_open_timeout_races_with_the_probe_result() {
        loom::model(|| {
            let t0 = Instant::now();
            let config = CircuitBreakerConfig::builder()
                .consecutive_failures(1)
                .half_open_probes(1)
                .half_open_max_duration(Duration::from_secs(1))
                .jitter(0.0)
                .build()
                .unwrap();
            let core = Arc::new(Core::new(&config, t0));
            core.set_state(CircuitState::HalfOpen, t0);
            let probe = core.acquire(&move || t0).0.unwrap();
            let late = t0 + Duration::from_secs(1);
            let c2 = core.clone();
            let th = loom::thread::spawn(move || c2.acquire(&move || late));
            let closed = core.record(&probe, false, false, &move || late);
            let (caller, timed_out) = th.join().unwrap();
            assert!(closed.is_some() != timed_out.is_some());
            if closed.is_some() {
                assert_eq!(core.state(), CircuitState::Closed);
            } else {
                assert_eq!(timed_out.unwrap().to(), CircuitState::Open);
                assert_eq!(core.state(), CircuitState::Open);
                assert!(caller.is_err());
            }
        });
    }

    /// A probe's success races with a caller: the circuit closes exactly
    /// once, and the caller gets either a probe refusal or a closed permit.
    #[test]
    fn probe_result_races_with_acquire() {
        loom::model(|| {
            let t0 = Instant::now();
            let core = Arc::new(Core::new(&config(1), t0));
            core.set_state(CircuitState::HalfOpen, t0);
            let clock = move || t0;
            let probe = core.acquire(&clock).0.unwrap();
            let c2 = core.clone();
            let th = loom::thread::spawn(move || {
                let clock = move || t0;
                c2.acquire(&clock).0
            });
            let t = core.record(&probe, false, false, &clock);
            assert_eq!(t.map(|t| t.to()), Some(CircuitState::Closed));
            match th.join().unwrap() {
                Ok(p) => assert!(!p.is_probe()),
                Err(r) => assert_eq!(r.reason, "half-open, probes in flight"),
            }
            assert_eq!(core.state(), CircuitState::Closed);
        });
    }
}
