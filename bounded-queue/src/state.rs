//! The queue's shared state: admission, the wait queue, hand-off, CoDel.
//!
//! The uncontended path is lock-free: a load of `waiting` and a CAS on
//! `in_service`. Everything else happens under one short mutex, never held
//! across an `.await`. A waiter that enqueues stores `waiting` and then
//! retries the CAS; a releaser decrements `in_service` and then loads
//! `waiting` (both `SeqCst`), so one of them always sees the other and no
//! wake-up is lost.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use resilience_core::{Priority, Rejected, RejectionKind};
use tokio::time::{Instant, Sleep};

use crate::adaptive::LimitState;
use crate::config::BoundedQueueConfig;
use crate::metrics::Metrics;
use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, lock, try_lock};

/// Why a request was refused; a bounded label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Full = 0,
    WaitTimeout = 1,
    Shed = 2,
    Deadline = 3,
}

pub(crate) struct Shared {
    in_service: AtomicUsize,
    waiting: AtomicUsize,
    /// Whether the in-service gauge was last published non-zero.
    published: AtomicBool,
    epoch: Instant,
    limit: AtomicUsize,
    track: bool,
    per_priority: [AtomicUsize; 4],
    shares: [f64; 4],
    ewma_nanos: AtomicU64,
    rejected: [AtomicU64; Reason::COUNT],
    // The settings below are atomics so that `Shared::reconfigure` changes
    // them in place; each is read with a relaxed load on the slow path.
    capacity: std::sync::atomic::AtomicUsize,
    /// Nanoseconds.
    max_wait: std::sync::atomic::AtomicU64,
    /// Whether CoDel is on.
    codel: std::sync::atomic::AtomicBool,
    /// The configured CoDel target in nanoseconds (also when CoDel is off:
    /// it still tells a standing queue, for LIFO).
    target: std::sync::atomic::AtomicU64,
    /// Nanoseconds.
    interval: std::sync::atomic::AtomicU64,
    lifo: std::sync::atomic::AtomicBool,
    /// [`BoundedQueueConfig::yield_margin`] as `f64` bits; `0.0` when off.
    yield_margin: std::sync::atomic::AtomicU64,
    /// [`BoundedQueueConfig::target_service_times`] as `f64` bits; `0.0`
    /// when off.
    target_service_times: std::sync::atomic::AtomicU64,
    /// Hand-offs that went to an older waiter ahead of a higher priority.
    yielded: AtomicU64,
    /// Nanoseconds.
    retry_after: std::sync::atomic::AtomicU64,
    /// The configuration in force (read when it changes, never per request).
    config: std::sync::Mutex<BoundedQueueConfig>,
    adaptive: Option<Mutex<LimitState>>,
    queue: Mutex<Queue>,
    pub(crate) name: Arc<str>,
    metrics: Metrics,
}

struct Queue {
    slots: Vec<Slot>,
    free: Vec<u32>,
    lanes: [VecDeque<(u64, u32)>; 4],
    len: usize,
    seq: u64,
    last_empty: Instant,
    /// When the oldest waiter was last seen younger than the standing
    /// target (see [`Shared::update_overload`]).
    last_short: Instant,
    /// The current interval's window: when it began, the arrivals that took
    /// the slow path in it, and the refusals counted before it.
    window_at: Instant,
    window_arrivals: u64,
    window_refused: u64,
    /// More than one arrival in ten was refused over the last window (a
    /// quarter of the interval): sustained overload.
    heavy: bool,
    overloaded: bool,
    /// While overloaded, priorities below this index are shed on arrival.
    level: usize,
    level_at: Instant,
    /// When a request of each priority last ran out of queue time (or was
    /// refused because it would have).
    timed_out_at: [Option<Instant>; 4],
}

enum Slot {
    Vacant,
    Waiting {
        priority: Priority,
        seq: u64,
        enqueued: Instant,
        waker: Option<Waker>,
    },
    Granted {
        enqueued: Instant,
        /// When the slot was handed over (the releaser's clock read).
        at: Instant,
    },
    Rejected(Reason),
}

/// The outcome of a slow-path admission.
pub(crate) enum Admit {
    Now(Permit),
    Queued(Waiter),
}

/// A slot in service; dropping it releases the slot (to the next waiter).
///
/// Two words, so the response future stays small on the fast path: `meta`
/// packs the priority (bits 0-1), whether the call is sampled (bit 2),
/// whether the slot was already released (bit 3), the requests in flight at
/// admission (bits 8-31) and the start time in microseconds since
/// `Shared::epoch`, wrapping (bits 32-63).
pub(crate) struct Permit {
    shared: Arc<Shared>,
    meta: u64,
}

/// A priority that lost a request to queue time stops yielding for this
/// many CoDel intervals (see [`Shared::yields_to`]).
const YIELD_HOLD: u32 = 10;

/// A standing queue that refuses few arrivals lets a waiter wait this many
/// times the standing target (see [`Shared::allowed_wait`]).
const LIGHT_STANDING: f64 = 4.0;

/// [`Permit::meta`]: the call's service time is sampled.
const SAMPLED: u64 = 0b100;
/// [`Permit::meta`]: the slot was released by [`Permit::finish`].
const RELEASED: u64 = 0b1000;

/// A queued request; dropping it leaves the queue.
pub(crate) struct Waiter {
    shared: Arc<Shared>,
    idx: u32,
    priority: Priority,
    deadline: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: Option<Instant>,
    done: bool,
}

enum Step {
    /// Granted: when enqueued, and when the slot was handed over.
    Granted(Instant, Instant),
    Rejected(Reason),
    /// Refused while queued (shed), already counted when it happened.
    Refused(Reason),
    /// Wait to be woken, or until the instant (`None`: no timer, as with
    /// `max_wait(Duration::MAX)` and no deadline).
    Wait(Option<Instant>),
}

/// A point-in-time view of a queue, from
/// [`BoundedQueueHandle::snapshot`](crate::BoundedQueueHandle::snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BoundedQueueSnapshot {
    /// Requests in service (slots taken, including slots just handed to a
    /// waiter that has not resumed yet).
    pub in_service: usize,
    /// Requests waiting.
    pub queued: usize,
    /// Requests waiting, indexed by [`Priority::index`].
    pub queued_by_priority: [usize; 4],
    /// The current concurrency limit.
    pub limit: usize,
    /// How many requests may wait.
    pub capacity: usize,
    /// Whether a standing queue exists (the standing target, and LIFO if
    /// configured, in force).
    pub overloaded: bool,
    /// While saturated, arrivals below this priority are shed at once
    /// ([`Priority::Sheddable`]: none are).
    pub admission_level: Priority,
    /// The smoothed service time of recent requests (zero before any).
    pub service_time: Duration,
    /// Slots handed to an older waiter ahead of a higher priority (see
    /// [`yield_margin`](crate::BoundedQueueConfigBuilder::yield_margin)).
    pub yielded: u64,
    /// Requests refused, by reason.
    pub rejected: RejectedCounts,
}

/// Requests refused since the queue was built, by reason.
///
/// Each refusal is counted when it is decided: a waiter shed from the queue
/// (displaced, or below a raised admission level) counts at once, before
/// its future learns it (and also when the future is dropped unpolled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RejectedCounts {
    /// The queue was full.
    pub full: u64,
    /// The request waited longer than allowed.
    pub wait_timeout: u64,
    /// Shed for a request of higher priority: displaced from a full queue,
    /// shed from the queue when a higher priority starved, or refused on
    /// arrival below the admission level.
    pub shed: u64,
    /// Its deadline could not be met.
    pub deadline: u64,
}

/// `d` in nanoseconds, saturating (a valid configuration's durations are
/// at most 365 days).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// === impl Reason ===

impl Reason {
    pub(crate) const COUNT: usize = 4;
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const ALL: [Reason; Self::COUNT] = [
        Reason::Full,
        Reason::WaitTimeout,
        Reason::Shed,
        Reason::Deadline,
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Reason::Full => "full",
            Reason::WaitTimeout => "wait_timeout",
            Reason::Shed => "shed",
            Reason::Deadline => "deadline",
        }
    }

    const fn message(self) -> &'static str {
        match self {
            Reason::Full => "queue full",
            Reason::WaitTimeout => "queue time exceeded",
            Reason::Shed => "shed for higher priority",
            Reason::Deadline => "deadline cannot be met",
        }
    }
}

// === impl Shared ===

impl Shared {
    pub(crate) fn new(config: &BoundedQueueConfig) -> Self {
        let (limit, adaptive) = match &config.adaptive {
            Some(a) => (a.bounds().0, Some(Mutex::new(a.state()))),
            None => (config.concurrency, None),
        };
        let metrics = Metrics::new(&config.name);
        metrics.limit.set(limit as f64);
        Self {
            in_service: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            published: AtomicBool::new(false),
            epoch: Instant::now(),
            limit: AtomicUsize::new(limit),
            track: !config.reserved.is_empty(),
            per_priority: std::array::from_fn(|_| AtomicUsize::new(0)),
            shares: config.reserved.as_array(),
            ewma_nanos: AtomicU64::new(0),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            capacity: std::sync::atomic::AtomicUsize::new(config.capacity),
            max_wait: std::sync::atomic::AtomicU64::new(nanos(config.max_wait)),
            codel: std::sync::atomic::AtomicBool::new(config.codel),
            target: std::sync::atomic::AtomicU64::new(nanos(config.codel_target)),
            interval: std::sync::atomic::AtomicU64::new(nanos(config.codel_interval)),
            lifo: std::sync::atomic::AtomicBool::new(config.lifo),
            yield_margin: std::sync::atomic::AtomicU64::new(config.yield_margin.to_bits()),
            target_service_times: std::sync::atomic::AtomicU64::new(
                config.target_service_times.to_bits(),
            ),
            yielded: AtomicU64::new(0),
            retry_after: std::sync::atomic::AtomicU64::new(nanos(config.retry_after)),
            config: std::sync::Mutex::new(config.clone()),
            adaptive,
            queue: Mutex::new(Queue {
                slots: Vec::with_capacity(config.capacity.min(4096)),
                free: Vec::new(),
                lanes: std::array::from_fn(|_| VecDeque::new()),
                len: 0,
                seq: 0,
                last_empty: Instant::now(),
                last_short: Instant::now(),
                window_at: Instant::now(),
                window_arrivals: 0,
                window_refused: 0,
                heavy: false,
                overloaded: false,
                level: 0,
                level_at: Instant::now(),
                timed_out_at: [None; 4],
            }),
            name: Arc::from(config.name.as_str()),
            metrics,
        }
    }

    /// Changes the queue's settings in place, for the requests that come
    /// next; see [`BoundedQueueHandle::reconfigure`](crate::BoundedQueueHandle::reconfigure).
    pub(crate) fn reconfigure(&self, config: &BoundedQueueConfig) -> Vec<&'static str> {
        let mut current = self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut restart_only = Vec::new();
        if config.name != current.name {
            restart_only.push("name");
        }
        if config.reserved != current.reserved {
            restart_only.push("reserved");
        }
        let adaptive = self.adaptive.is_some();
        if config.adaptive.is_some() != adaptive {
            restart_only.push("adaptive");
        }
        self.capacity.store(config.capacity, Ordering::Relaxed);
        self.max_wait
            .store(nanos(config.max_wait), Ordering::Relaxed);
        self.codel.store(config.codel, Ordering::Relaxed);
        self.target
            .store(nanos(config.codel_target), Ordering::Relaxed);
        self.interval
            .store(nanos(config.codel_interval), Ordering::Relaxed);
        self.lifo.store(config.lifo, Ordering::Relaxed);
        self.yield_margin
            .store(config.yield_margin.to_bits(), Ordering::Relaxed);
        self.target_service_times
            .store(config.target_service_times.to_bits(), Ordering::Relaxed);
        self.retry_after
            .store(nanos(config.retry_after), Ordering::Relaxed);
        let name = std::mem::take(&mut current.name);
        let reserved = current.reserved;
        let adaptive_config = current.adaptive.take();
        *current = config.clone();
        current.name = name;
        current.reserved = reserved;
        current.adaptive = adaptive_config;
        drop(current);
        if !adaptive && config.concurrency != self.limit.load(Ordering::Relaxed) {
            let prev = self.limit.swap(config.concurrency, Ordering::SeqCst);
            self.metrics.limit.set(config.concurrency as f64);
            tracing::info!(name = %self.name, limit = config.concurrency, "limit changed");
            if config.concurrency > prev && self.waiting.load(Ordering::SeqCst) > 0 {
                self.dispatch(None);
            }
        }
        restart_only
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> BoundedQueueConfig {
        self.config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    #[inline]
    fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    #[inline]
    fn max_wait(&self) -> Duration {
        Duration::from_nanos(self.max_wait.load(Ordering::Relaxed))
    }

    #[inline]
    fn codel(&self) -> Option<Duration> {
        self.codel.load(Ordering::Relaxed).then(|| self.target())
    }

    #[inline]
    fn target(&self) -> Duration {
        Duration::from_nanos(self.target.load(Ordering::Relaxed))
    }

    #[inline]
    fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval.load(Ordering::Relaxed))
    }

    #[inline]
    fn lifo(&self) -> bool {
        self.lifo.load(Ordering::Relaxed)
    }

    #[inline]
    fn yield_margin(&self) -> f64 {
        f64::from_bits(self.yield_margin.load(Ordering::Relaxed))
    }

    #[inline]
    fn target_service_times(&self) -> f64 {
        f64::from_bits(self.target_service_times.load(Ordering::Relaxed))
    }

    #[inline]
    fn retry_after(&self) -> Duration {
        Duration::from_nanos(self.retry_after.load(Ordering::Relaxed))
    }

    /// Whether admission needs the priority on the fast path.
    #[inline]
    pub(crate) fn tracks_priority(&self) -> bool {
        self.track
    }

    /// Takes a slot if one is free and nobody waits. Lock-free.
    #[inline(always)]
    pub(crate) fn try_fast(self: &Arc<Self>, priority: Priority) -> Option<Permit> {
        if self.waiting.load(Ordering::SeqCst) != 0 {
            return None;
        }
        let prev = self.try_acquire()?;
        Some(self.permit(priority, prev, None))
    }

    #[inline(always)]
    fn try_acquire(&self) -> Option<usize> {
        let limit = self.limit.load(Ordering::Relaxed);
        // SeqCst reads: the enqueue re-check depends on them (see the
        // module docs).
        let mut cur = self.in_service.load(Ordering::SeqCst);
        loop {
            if cur >= limit {
                return None;
            }
            match self.in_service.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Some(cur),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Wraps a freshly acquired slot (`prev` = slots taken before it).
    #[inline(always)]
    fn permit(self: &Arc<Self>, priority: Priority, prev: usize, now: Option<Instant>) -> Permit {
        if self.track {
            self.per_priority[priority.index()].fetch_add(1, Ordering::Relaxed);
        }
        // Sample service times only when they matter: when the limit is
        // adaptive, or once saturated (they predict queueing delay). This
        // keeps the clock off the uncontended path.
        let start = if self.adaptive.is_some() || prev + 1 >= self.limit.load(Ordering::Relaxed) {
            Some(now.unwrap_or_else(Instant::now))
        } else {
            None
        };
        self.claimed(priority, start, prev + 1)
    }

    #[inline(always)]
    fn claimed(
        self: &Arc<Self>,
        priority: Priority,
        start: Option<Instant>,
        inflight: usize,
    ) -> Permit {
        let mut meta = priority.index() as u64;
        if let Some(start) = start {
            let us = start.saturating_duration_since(self.epoch).as_micros() as u32;
            meta |= SAMPLED | (inflight.min(0xff_ffff) as u64) << 8 | u64::from(us) << 32;
        }
        Permit {
            shared: self.clone(),
            meta,
        }
    }

    /// The slow path: admits, queues or rejects.
    pub(crate) fn admit(
        self: &Arc<Self>,
        priority: Priority,
        deadline: Option<Instant>,
    ) -> Result<Admit, Rejected> {
        let now = Instant::now();
        if deadline.is_some_and(|d| d <= now) {
            return Err(self.reject(Reason::Deadline, priority));
        }
        let mut q = lock(&self.queue);
        q.window_arrivals += 1;
        if q.len == 0 {
            if let Some(prev) = self.try_acquire() {
                drop(q);
                tracing::debug!(name = %self.name, "admitted at once");
                return Ok(Admit::Now(self.permit(priority, prev, Some(now))));
            }
        }
        let mut transition = self.update_overload(&mut q, now);
        // Saturated: priorities below the admission level are shed at once,
        // unless below their reserved share (they keep it).
        if !self.under_share(priority.index()) && self.below_level(&mut q, priority, now) {
            drop(q);
            log_transition(&self.name, transition);
            return Err(self.reject(Reason::Shed, priority));
        }
        let lifo = self.lifo() && q.overloaded;
        let expected = self.expected_wait(self.ahead(&q, priority, lifo) + 1);
        if deadline.is_some_and(|d| d.saturating_duration_since(now) < expected) {
            drop(q);
            log_transition(&self.name, transition);
            return Err(self.reject(Reason::Deadline, priority));
        }
        // It would time out in the queue anyway: say so now.
        let allowed = self.allowed_wait(&q);
        if expected > allowed {
            q.timed_out_at[priority.index()] = Some(now);
            drop(q);
            log_transition(&self.name, transition);
            return Err(self.reject(Reason::WaitTimeout, priority));
        }
        if q.len >= self.capacity() {
            let victim = (0..priority.index()).find(|&p| !q.lanes[p].is_empty());
            match victim {
                Some(p) => {
                    let (_, idx) = q.lanes[p].pop_front().expect("lane is not empty");
                    q.len -= 1;
                    self.shed_waiting(&mut q.slots[idx as usize]);
                }
                None => {
                    drop(q);
                    log_transition(&self.name, transition);
                    return Err(self.reject(Reason::Full, priority));
                }
            }
        }
        let idx = q.push(priority, now);
        self.waiting.store(q.len, Ordering::SeqCst);
        sc_fence();
        // A slot may have been released between the CAS and the store.
        self.dispatch_locked(&mut q, now);
        let granted = matches!(q.slots[idx as usize], Slot::Granted { .. });
        if granted {
            q.free_slot(idx);
        }
        transition = transition.or(self.update_overload(&mut q, now));
        let depth = q.len;
        drop(q);
        self.publish(depth);
        log_transition(&self.name, transition);
        if granted {
            tracing::debug!(name = %self.name, "admitted at once");
            let inflight = self.in_service.load(Ordering::Relaxed);
            return Ok(Admit::Now(self.claimed(priority, Some(now), inflight)));
        }
        tracing::debug!(name = %self.name, priority = priority.as_str(), depth, "queued");
        Ok(Admit::Queued(Waiter {
            shared: self.clone(),
            idx,
            priority,
            deadline,
            sleep: None,
            armed: None,
            done: false,
        }))
    }

    /// Whether an arrival of `priority` is below the admission level (after
    /// letting the level decay by one step per quiet interval in which
    /// nothing at or above the level is waiting).
    fn below_level(&self, q: &mut Queue, priority: Priority, now: Instant) -> bool {
        if q.level > 0
            && now.saturating_duration_since(q.level_at) >= self.interval()
            && q.lanes[q.level..].iter().all(VecDeque::is_empty)
        {
            q.level -= 1;
            q.level_at = now;
            tracing::debug!(name = %self.name, level = q.level, "admission level lowered");
        }
        priority.index() < q.level
    }

    /// A waiter of `priority` ran out of queue time: lower priorities are
    /// taking slots it needs. Shed everything below it (a DAGOR-style
    /// admission level), queued now and arriving while saturated, lowering
    /// the level one step per interval without such a timeout.
    fn raise_level(&self, q: &mut Queue, priority: Priority, now: Instant) {
        let level = priority.index();
        if level == 0 {
            return;
        }
        q.level_at = now;
        if level <= q.level {
            return;
        }
        q.level = level;
        for p in (0..level).filter(|&p| !self.under_share(p)) {
            while let Some((_, idx)) = q.lanes[p].pop_front() {
                q.len -= 1;
                self.shed_waiting(&mut q.slots[idx as usize]);
            }
        }
        tracing::debug!(name = %self.name, level, "admission level raised");
    }

    /// Sheds a waiter taken off its lane: counted now (its future may be
    /// polled much later, or only dropped), then woken to learn it.
    fn shed_waiting(&self, slot: &mut Slot) {
        if let Slot::Waiting {
            priority, waker, ..
        } = std::mem::replace(slot, Slot::Rejected(Reason::Shed))
        {
            self.count_rejection(Reason::Shed, priority);
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    fn expected_wait(&self, position: usize) -> Duration {
        let ewma = self.ewma_nanos.load(Ordering::Relaxed) as u128;
        let limit = self.limit.load(Ordering::Relaxed).max(1) as u128;
        let nanos = ewma * position as u128 / limit;
        Duration::from_nanos(nanos.min(u64::MAX as u128) as u64)
    }

    /// The longest a waiter may wait: `max_wait`, and under a standing
    /// queue the CoDel target, raised to `target_service_times` smoothed
    /// service times (a target shorter than the service itself turns away
    /// work the service could still do in time).
    ///
    /// A standing queue that refused at most one arrival in ten over the
    /// last quarter interval (the load is about what the service can take) keeps
    /// [`LIGHT_STANDING`] x that target: there, waiting a little longer
    /// still finds a slot before the deadline (the service goes idle now
    /// and then and the waiter would have used it); refusing costs the
    /// request. Beyond it (sustained overload) a longer wait only adds
    /// latency: the slot would have gone to the next arrival anyway.
    fn allowed_wait(&self, q: &Queue) -> Duration {
        match self.codel() {
            Some(_) if q.overloaded && q.heavy => self.standing_target(),
            Some(_) if q.overloaded => {
                Duration::try_from_secs_f64(self.standing_target().as_secs_f64() * LIGHT_STANDING)
                    .map_or(self.max_wait(), |d| d.min(self.max_wait()))
            }
            _ => self.max_wait(),
        }
    }

    /// The CoDel target raised to `target_service_times` smoothed service
    /// times, at most `max_wait`: a queue whose oldest waiter stays older
    /// than this for an interval is standing.
    fn standing_target(&self) -> Duration {
        let ewma = self.ewma_nanos.load(Ordering::Relaxed) as f64;
        let relative = Duration::from_nanos((ewma * self.target_service_times()) as u64);
        self.target().max(relative).min(self.max_wait())
    }

    /// Grants free slots to waiters, best first.
    fn dispatch_locked(&self, q: &mut Queue, now: Instant) {
        while q.len > 0 {
            if self.try_acquire().is_none() {
                break;
            }
            self.grant_next(q, now);
        }
    }

    /// Gives an already-taken slot to the next waiter (`q.len > 0`).
    fn grant_next(&self, q: &mut Queue, now: Instant) {
        let p = self.pick_lane(q, now);
        let lane = &mut q.lanes[p];
        let (_, idx) = if self.lifo() && q.overloaded {
            lane.pop_back()
        } else {
            lane.pop_front()
        }
        .expect("picked lane is not empty");
        q.len -= 1;
        self.waiting.store(q.len, Ordering::SeqCst);
        if q.len == 0 {
            q.last_empty = now;
        }
        if self.track {
            self.per_priority[p].fetch_add(1, Ordering::Relaxed);
        }
        let slot = &mut q.slots[idx as usize];
        if let Slot::Waiting {
            enqueued, waker, ..
        } = slot
        {
            let enqueued = *enqueued;
            let waker = waker.take();
            *slot = Slot::Granted { enqueued, at: now };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// The next waiter's lane: the highest priority below its reserved
    /// share, else the highest priority, unless it yields to an older
    /// waiter (see [`Shared::yields_to`]).
    fn pick_lane(&self, q: &Queue, now: Instant) -> usize {
        if self.track {
            if let Some(p) = (0..4)
                .rev()
                .find(|&p| !q.lanes[p].is_empty() && self.under_share(p))
            {
                return p;
            }
        }
        let top = (0..4)
            .rev()
            .find(|&p| !q.lanes[p].is_empty())
            .expect("the queue is not empty");
        if self.yield_margin() > 0.0 && !(self.lifo() && q.overloaded) {
            if let Some(p) = self.yields_to(q, top, now) {
                self.yielded.fetch_add(1, Ordering::Relaxed);
                return p;
            }
        }
        top
    }

    /// The yield margin (FIFO only): the lane of the oldest waiter of
    /// [`Priority::Critical`] or above, below `top`, if it is older than
    /// `top`'s oldest and every priority above it can spare the slot: none
    /// of its requests ran out of queue time (or was refused because it
    /// would have) within the last [`YIELD_HOLD`] CoDel intervals,
    /// and the `i`-th oldest waiter above could still start within its
    /// allowed wait if slots kept freeing every margin x (service time /
    /// limit).
    fn yields_to(&self, q: &Queue, top: usize, now: Instant) -> Option<usize> {
        let floor = Priority::Critical.index();
        let front = |p: usize| q.enqueued(*q.lanes[p].front()?);
        let (lane, oldest) = (floor..top)
            .filter_map(|p| Some((p, front(p)?)))
            .min_by_key(|&(_, at)| at)?;
        if oldest >= front(top)? {
            return None;
        }
        // A priority losing requests to queue timeouts needs every slot.
        let recent = |at: &Option<Instant>| {
            at.is_some_and(|at| now.saturating_duration_since(at) < self.interval() * YIELD_HOLD)
        };
        if q.timed_out_at[lane + 1..].iter().any(recent) {
            return None;
        }
        let ewma = self.ewma_nanos.load(Ordering::Relaxed);
        if ewma == 0 {
            return None;
        }
        let limit = self.limit.load(Ordering::Relaxed).max(1) as f64;
        let gap = Duration::from_secs_f64(self.yield_margin() * ewma as f64 * 1e-9 / limit);
        let allowed = self.allowed_wait(q);
        // Merge the lanes above by age: each lane is oldest first.
        let mut next = [0usize; 4];
        let mut slack = Duration::ZERO;
        loop {
            let Some((p, at)) = (lane + 1..4)
                .filter_map(|p| Some((p, q.enqueued(*q.lanes[p].get(next[p])?)?)))
                .min_by_key(|&(_, at)| at)
            else {
                return Some(lane);
            };
            next[p] += 1;
            slack = slack.saturating_add(gap);
            // A wait too long to represent never runs out; a slack too long
            // to represent (an absurd service time) never yields.
            let by = now.checked_add(slack)?;
            if at.checked_add(allowed).is_some_and(|until| until < by) {
                return None;
            }
        }
    }

    /// Whether priority `p` holds fewer slots than its reserved share of the
    /// limit (never without shares).
    fn under_share(&self, p: usize) -> bool {
        if !self.track || self.shares[p] == 0.0 {
            return false;
        }
        let limit = self.limit.load(Ordering::Relaxed) as f64;
        let reserved = (self.shares[p] * limit).ceil() as usize;
        self.per_priority[p].load(Ordering::Relaxed) < reserved
    }

    /// Waiters that would be served before a new arrival of `priority`. One
    /// below its reserved share waits only behind its own lane (FIFO) and
    /// higher priorities also below theirs.
    fn ahead(&self, q: &Queue, priority: Priority, lifo: bool) -> usize {
        let p = priority.index();
        if !self.under_share(p) {
            return q.ahead(priority, lifo);
        }
        let own = if lifo { 0 } else { q.lanes[p].len() };
        own + (p + 1..4)
            .filter(|&h| self.under_share(h))
            .map(|h| q.lanes[h].len())
            .sum::<usize>()
    }

    /// Tracks whether a standing queue exists; returns a transition.
    fn update_overload(&self, q: &mut Queue, now: Instant) -> Option<bool> {
        if now.saturating_duration_since(q.window_at) >= self.interval() / 4 {
            let refused: u64 = self
                .rejected
                .iter()
                .map(|r| r.load(Ordering::Relaxed))
                .sum();
            let n = refused.wrapping_sub(q.window_refused);
            let heavy = n.saturating_mul(10) > q.window_arrivals;
            if heavy && !q.heavy && q.overloaded && self.codel().is_some() {
                // Waiters re-arm their timers with the (shorter) target.
                wake_waiters(q);
            }
            q.heavy = heavy;
            q.window_at = now;
            q.window_arrivals = 0;
            q.window_refused = refused;
        }
        if q.len == 0 {
            q.last_empty = now;
        } else if !q.overloaded {
            let oldest = (0..4)
                .filter_map(|p| q.enqueued(*q.lanes[p].front()?))
                .min();
            if oldest.is_some_and(|at| now.saturating_duration_since(at) < self.standing_target()) {
                q.last_short = now;
            }
        }
        // Standing: not empty for a whole interval, and its oldest waiter
        // older than the standing target all along (CoDel's "sojourn above
        // target for an interval"): a queue that drains as fast as it fills
        // (load at or below capacity) is not standing, however long it stays
        // non-empty. A queue refusing more than one arrival in ten stands at
        // once. Once standing, it stays so until it empties and no
        // priority is shed on arrival (the admission level is down): a
        // queue that empties only because lower priorities are refused is
        // still overloaded.
        let since = q.last_empty.max(q.last_short);
        let over = (q.len > 0 || q.level > 0)
            && (q.overloaded || q.heavy || now.saturating_duration_since(since) >= self.interval());
        if over == q.overloaded {
            return None;
        }
        q.overloaded = over;
        if over && self.codel().is_some() {
            // Waiters re-arm their timers with the (shorter) target.
            wake_waiters(q);
        }
        Some(over)
    }

    /// Releases a slot: hands it to the next waiter, or frees it.
    #[inline(always)]
    fn release_slot(&self, priority: Priority, now: Option<Instant>) {
        if self.track {
            self.per_priority[priority.index()].fetch_sub(1, Ordering::Relaxed);
        }
        if self.waiting.load(Ordering::SeqCst) > 0 && self.hand_off(now) {
            return;
        }
        let prev = self.in_service.fetch_sub(1, Ordering::SeqCst);
        sc_fence();
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.dispatch(now);
        } else if cfg!(feature = "metrics") && prev == 1 {
            self.went_idle();
        }
    }

    /// The last slot was released: a gauge published non-zero on the slow
    /// path drops back to zero (once, not per request).
    #[inline(always)]
    fn went_idle(&self) {
        if self.published.load(Ordering::Relaxed) {
            self.published.store(false, Ordering::Relaxed);
            self.metrics.in_service.set(0.0);
        }
    }

    /// Publishes the depth and in-service gauges. Called on the slow path
    /// only (queueing, hand-off, rejection, snapshot): the uncontended path
    /// does no metrics work.
    fn publish(&self, depth: usize) {
        self.metrics.depth.set(depth as f64);
        self.publish_in_service();
    }

    fn publish_in_service(&self) {
        let n = self.in_service.load(Ordering::Relaxed);
        self.published.store(n != 0, Ordering::Relaxed);
        self.metrics.in_service.set(n as f64);
    }

    /// Gives the releasing slot straight to the next waiter, if any.
    #[cold]
    #[inline(never)]
    fn hand_off(&self, now: Option<Instant>) -> bool {
        let now = now.unwrap_or_else(Instant::now);
        let mut q = lock(&self.queue);
        if q.len == 0 || self.in_service.load(Ordering::SeqCst) > self.limit.load(Ordering::Relaxed)
        {
            return false;
        }
        let t = self.update_overload(&mut q, now);
        self.grant_next(&mut q, now);
        let t = t.or(self.update_overload(&mut q, now));
        let depth = q.len;
        drop(q);
        self.publish(depth);
        log_transition(&self.name, t);
        true
    }

    #[cold]
    #[inline(never)]
    fn dispatch(&self, now: Option<Instant>) {
        let now = now.unwrap_or_else(Instant::now);
        let mut q = lock(&self.queue);
        let t = self.update_overload(&mut q, now);
        self.dispatch_locked(&mut q, now);
        let t = t.or(self.update_overload(&mut q, now));
        let depth = q.len;
        drop(q);
        self.publish(depth);
        log_transition(&self.name, t);
    }

    /// Reads the clock only while the waiter is still waiting: a granted
    /// waiter starts at the hand-off's clock read.
    fn check(&self, idx: u32, deadline: Option<Instant>, waker: &Waker) -> Step {
        let mut q = lock(&self.queue);
        let allowed = self.allowed_wait(&q);
        let mut timed_out = None;
        let mut now = None;
        let step = match &mut q.slots[idx as usize] {
            Slot::Granted { enqueued, at } => Step::Granted(*enqueued, *at),
            Slot::Rejected(r) => Step::Refused(*r),
            Slot::Vacant => Step::Rejected(Reason::WaitTimeout),
            Slot::Waiting {
                enqueued,
                waker: w,
                priority,
                ..
            } => {
                timed_out = Some(*priority);
                // Under a standing queue a waiter may wait only the
                // standing target (see `allowed_wait`).
                let wait = allowed;
                // A wait too long to represent (`Duration::MAX`) is bounded
                // only by the deadline.
                let mut until = enqueued.checked_add(wait);
                let mut reason = Reason::WaitTimeout;
                if let Some(d) = deadline {
                    if until.is_none_or(|u| d < u) {
                        until = Some(d);
                        reason = Reason::Deadline;
                    }
                }
                if until.is_some_and(|u| *now.insert(Instant::now()) >= u) {
                    Step::Rejected(reason)
                } else {
                    match w {
                        Some(w) if w.will_wake(waker) => {}
                        _ => *w = Some(waker.clone()),
                    }
                    return Step::Wait(until);
                }
            }
        };
        let mut t = None;
        if let (Slot::Waiting { .. }, Some(now)) = (&q.slots[idx as usize], now) {
            q.remove_waiting(idx, now);
            if let (Step::Rejected(Reason::WaitTimeout), Some(p)) = (&step, timed_out) {
                q.timed_out_at[p.index()] = Some(now);
                self.raise_level(&mut q, p, now);
            }
            self.waiting.store(q.len, Ordering::SeqCst);
            t = self.update_overload(&mut q, now);
        }
        q.free_slot(idx);
        let depth = q.len;
        drop(q);
        self.publish(depth);
        log_transition(&self.name, t);
        step
    }

    /// A waiter went away before it was served.
    fn cancel(&self, idx: u32, priority: Priority) {
        let now = Instant::now();
        let mut q = lock(&self.queue);
        let granted = match q.slots[idx as usize] {
            Slot::Waiting { .. } => {
                q.remove_waiting(idx, now);
                self.waiting.store(q.len, Ordering::SeqCst);
                false
            }
            Slot::Granted { .. } => true,
            Slot::Rejected(_) | Slot::Vacant => false,
        };
        q.free_slot(idx);
        let t = self.update_overload(&mut q, now);
        let depth = q.len;
        drop(q);
        self.publish(depth);
        log_transition(&self.name, t);
        if granted {
            self.release_slot(priority, Some(now));
        }
        tracing::debug!(name = %self.name, "queued request cancelled");
    }

    fn on_sample(&self, rtt: Duration, inflight: usize, failed: bool, now: Instant) {
        // The EWMA is a lock-free load and store: a completion racing
        // another may overwrite its update, which only drops one sample.
        let s = rtt.as_nanos().min(u64::MAX as u128) as u64;
        let old = self.ewma_nanos.load(Ordering::Relaxed);
        let new = if old == 0 {
            s.max(1)
        } else {
            ((old as u128 * 4 + s as u128) / 5) as u64
        };
        self.ewma_nanos.store(new.max(1), Ordering::Relaxed);
        if let Some(a) = &self.adaptive {
            // Never wait for the algorithm: while another completion updates
            // it, this sample is skipped (the algorithms are statistical; the
            // next sample counts). The new limit is stored under the lock, so
            // concurrent samples store their limits in the order they computed
            // them and an older limit never overwrites a newer one.
            let Some(mut state) = try_lock(a) else {
                return;
            };
            let next = state.update(rtt, inflight, failed).max(1);
            let prev = self.limit.swap(next, Ordering::SeqCst);
            drop(state);
            if next != prev {
                // The latest limit, whichever sample stored it.
                self.metrics
                    .limit
                    .set(self.limit.load(Ordering::Relaxed) as f64);
                tracing::debug!(name = %self.name, limit = next, "limit changed");
                if next > prev && self.waiting.load(Ordering::SeqCst) > 0 {
                    self.dispatch(Some(now));
                }
            }
        }
    }

    /// Counts and builds a rejection.
    pub(crate) fn reject(&self, reason: Reason, priority: Priority) -> Rejected {
        self.count_rejection(reason, priority);
        self.rejection(reason)
    }

    /// Counts a rejection in the snapshot and the metrics, when it happens.
    /// Lock-free: also called under the queue's lock.
    fn count_rejection(&self, reason: Reason, priority: Priority) {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
        self.metrics.rejected(reason, priority);
        self.publish_in_service();
        tracing::debug!(
            name = %self.name,
            reason = reason.as_str(),
            priority = priority.as_str(),
            "rejected"
        );
    }

    /// The error for a rejection already counted.
    fn rejection(&self, reason: Reason) -> Rejected {
        Rejected::new(RejectionKind::Overloaded, reason.message())
            .with_retry_after(self.retry_after())
    }

    pub(crate) fn snapshot(&self) -> BoundedQueueSnapshot {
        let q = lock(&self.queue);
        let queued_by_priority = std::array::from_fn(|p| q.lanes[p].len());
        let queued = q.len;
        let overloaded = q.overloaded;
        let admission_level = Priority::from_index(q.level).unwrap_or_default();
        drop(q);
        self.publish(queued);
        let r = |reason: Reason| self.rejected[reason as usize].load(Ordering::Relaxed);
        BoundedQueueSnapshot {
            in_service: self.in_service.load(Ordering::SeqCst),
            queued,
            queued_by_priority,
            limit: self.limit.load(Ordering::Relaxed),
            capacity: self.capacity(),
            overloaded,
            admission_level,
            service_time: Duration::from_nanos(self.ewma_nanos.load(Ordering::Relaxed)),
            yielded: self.yielded.load(Ordering::Relaxed),
            rejected: RejectedCounts {
                full: r(Reason::Full),
                wait_timeout: r(Reason::WaitTimeout),
                shed: r(Reason::Shed),
                deadline: r(Reason::Deadline),
            },
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("limit", &self.limit.load(Ordering::Relaxed))
            .field("capacity", &self.capacity())
            .field("in_service", &self.in_service.load(Ordering::Relaxed))
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Loom treats `SeqCst` accesses as `AcqRel`, which would report the
/// store-buffering pattern above as a lost wake-up; a `SeqCst` fence restores
/// the semantics the real program has. Outside loom, nothing.
#[inline(always)]
fn sc_fence() {
    #[cfg(loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// Wakes every waiter, to re-arm its timer with a shorter allowed wait.
fn wake_waiters(q: &Queue) {
    for slot in &q.slots {
        if let Slot::Waiting { waker: Some(w), .. } = slot {
            w.wake_by_ref();
        }
    }
}

fn log_transition(name: &str, t: Option<bool>) {
    match t {
        Some(true) => tracing::info!(name, "standing queue: entering overload (standing target)"),
        Some(false) => tracing::info!(name, "queue drained: leaving overload"),
        None => {}
    }
}

// === impl Queue ===

impl Queue {
    fn push(&mut self, priority: Priority, now: Instant) -> u32 {
        let seq = self.seq;
        self.seq += 1;
        let slot = Slot::Waiting {
            priority,
            seq,
            enqueued: now,
            waker: None,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.lanes[priority.index()].push_back((seq, idx));
        self.len += 1;
        idx
    }

    /// When the waiter of a lane entry was queued.
    fn enqueued(&self, (_, idx): (u64, u32)) -> Option<Instant> {
        match self.slots[idx as usize] {
            Slot::Waiting { enqueued, .. } => Some(enqueued),
            _ => None,
        }
    }

    fn free_slot(&mut self, idx: u32) {
        self.slots[idx as usize] = Slot::Vacant;
        self.free.push(idx);
    }

    fn remove_waiting(&mut self, idx: u32, now: Instant) {
        if let Slot::Waiting { priority, seq, .. } = self.slots[idx as usize] {
            let lane = &mut self.lanes[priority.index()];
            if let Ok(pos) = lane.binary_search_by_key(&seq, |e| e.0) {
                lane.remove(pos);
                self.len -= 1;
                if self.len == 0 {
                    self.last_empty = now;
                }
            }
        }
    }

    /// Waiters that would be served before a new arrival of `priority`.
    fn ahead(&self, priority: Priority, lifo: bool) -> usize {
        let p = priority.index();
        let higher: usize = self.lanes[p + 1..].iter().map(VecDeque::len).sum();
        if lifo {
            higher
        } else {
            higher + self.lanes[p].len()
        }
    }
}

// === impl Permit ===

impl Permit {
    /// Releases the slot (once), first recording a sampled call's service
    /// time for the EWMA and the adaptive limit and reusing that clock read
    /// for the hand-off: a sampled call reads the clock once at admission
    /// and once here, an unsampled one never.
    #[inline(always)]
    pub(crate) fn finish(&mut self, failed: bool) {
        if self.meta & RELEASED != 0 {
            return;
        }
        let now = if self.meta & SAMPLED != 0 {
            Some(self.sample(failed))
        } else {
            None
        };
        self.meta |= RELEASED;
        self.shared.release_slot(self.priority(), now);
    }

    /// Whether [`finish`](Self::finish) released the slot.
    #[inline(always)]
    pub(crate) fn is_released(&self) -> bool {
        self.meta & RELEASED != 0
    }

    #[cold]
    fn sample(&self, failed: bool) -> Instant {
        let now = Instant::now();
        let since = now.saturating_duration_since(self.shared.epoch);
        let start = (self.meta >> 32) as u32;
        let rtt = Duration::from_micros(u64::from((since.as_micros() as u32).wrapping_sub(start)));
        let inflight = ((self.meta >> 8) & 0xff_ffff) as usize;
        self.shared.on_sample(rtt, inflight, failed, now);
        now
    }

    fn priority(&self) -> Priority {
        Priority::from_index((self.meta & 0b11) as usize).unwrap_or_default()
    }
}

impl Drop for Permit {
    #[inline(always)]
    fn drop(&mut self) {
        if self.meta & RELEASED == 0 {
            self.shared.release_slot(self.priority(), None);
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("priority", &self.priority())
            .finish_non_exhaustive()
    }
}

// === impl Waiter ===

impl Waiter {
    /// Waits for a slot, a rejection, or the end of the allowed wait.
    pub(crate) fn poll_admit(&mut self, cx: &mut Context<'_>) -> Poll<Result<Permit, Rejected>> {
        loop {
            match self.shared.check(self.idx, self.deadline, cx.waker()) {
                Step::Granted(enqueued, now) => {
                    self.done = true;
                    let waited = now.saturating_duration_since(enqueued);
                    self.shared.metrics.wait.record(waited.as_secs_f64());
                    tracing::debug!(name = %self.shared.name, waited_ms = waited.as_millis() as u64, "admitted from the queue");
                    let inflight = self.shared.in_service.load(Ordering::Relaxed);
                    return Poll::Ready(Ok(self.shared.claimed(
                        self.priority,
                        Some(now),
                        inflight,
                    )));
                }
                Step::Rejected(reason) => {
                    self.done = true;
                    return Poll::Ready(Err(self.shared.reject(reason, self.priority)));
                }
                Step::Refused(reason) => {
                    self.done = true;
                    return Poll::Ready(Err(self.shared.rejection(reason)));
                }
                Step::Wait(None) => {
                    // Woken by a grant, a rejection or an overload change.
                    self.armed = None;
                    self.sleep = None;
                    return Poll::Pending;
                }
                Step::Wait(Some(until)) => {
                    if self.armed != Some(until) {
                        match &mut self.sleep {
                            Some(s) => s.as_mut().reset(until),
                            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(until))),
                        }
                        self.armed = Some(until);
                    }
                    let sleep = self.sleep.as_mut().expect("armed above");
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if !self.done {
            self.shared.cancel(self.idx, self.priority);
        }
    }
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter")
            .field("priority", &self.priority)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::task::{Context, Poll, Waker};

    use proptest::prelude::*;

    use super::*;
    use crate::AimdConfig;

    fn adaptive(initial: usize) -> Arc<Shared> {
        let aimd = AimdConfig::builder()
            .initial(initial)
            .min(1)
            .max(100)
            .build()
            .unwrap();
        let config = BoundedQueueConfig::builder()
            .adaptive(aimd)
            .build()
            .unwrap();
        Arc::new(Shared::new(&config))
    }

    /// A completion never waits for the adaptive algorithm's lock: while
    /// another sample holds it, this one is skipped (the EWMA still counts).
    #[test]
    fn a_sample_never_waits_for_the_adaptive_lock() {
        let shared = adaptive(5);
        let held = lock(shared.adaptive.as_ref().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = shared.clone();
        std::thread::spawn(move || {
            s2.on_sample(Duration::from_millis(2), 5, false, Instant::now());
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the sample waited for the lock");
        drop(held);
        assert_eq!(shared.limit.load(Ordering::SeqCst), 5, "skipped");
        assert_eq!(
            shared.ewma_nanos.load(Ordering::Relaxed),
            2_000_000,
            "the EWMA took the sample"
        );
        shared.on_sample(Duration::from_millis(2), 5, false, Instant::now());
        assert_eq!(shared.limit.load(Ordering::SeqCst), 6, "uncontended: taken");
        assert_eq!(lock(shared.adaptive.as_ref().unwrap()).limit(), 6);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Call(u8, bool),
        Finish(usize, bool),
        DropWaiter(usize),
        Poll,
        Advance(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..4, any::<bool>()).prop_map(|(p, d)| Op::Call(p, d)),
            3 => (any::<usize>(), any::<bool>()).prop_map(|(i, f)| Op::Finish(i, f)),
            1 => any::<usize>().prop_map(Op::DropWaiter),
            2 => Just(Op::Poll),
            2 => (0u16..300).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Whatever happens, slots never exceed the limit, waiters never
        /// exceed the capacity, and once everything is dropped nothing is
        /// left taken or queued.
        #[test]
        fn never_leaks_or_overflows(
            ops in proptest::collection::vec(op(), 1..120),
            limit in 1usize..4,
            capacity in 0usize..4,
            shares in any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut b = BoundedQueueConfig::builder()
                    .concurrency(limit)
                    .capacity(capacity)
                    .max_wait(Duration::from_millis(200))
                    .codel_target(Duration::from_millis(5))
                    .codel_interval(Duration::from_millis(50));
                if shares {
                    b = b.reserve(Priority::Sheddable, 0.3).reserve(Priority::CriticalPlus, 0.3);
                }
                if capacity % 2 == 1 {
                    b = b.yield_margin(1.0);
                }
                let shared = Arc::new(Shared::new(&b.build().unwrap()));
                let mut permits: Vec<Permit> = Vec::new();
                let mut waiters: Vec<Waiter> = Vec::new();
                let mut cx = Context::from_waker(Waker::noop());
                for op in ops {
                    match op {
                        Op::Call(p, with_deadline) => {
                            let p = Priority::from_index(p as usize).unwrap();
                            let deadline = with_deadline
                                .then(|| Instant::now() + Duration::from_millis(100));
                            let fast = if deadline.is_none() { shared.try_fast(p) } else { None };
                            match fast {
                                Some(permit) => permits.push(permit),
                                None => match shared.admit(p, deadline) {
                                    Ok(Admit::Now(permit)) => permits.push(permit),
                                    Ok(Admit::Queued(w)) => waiters.push(w),
                                    Err(_) => {}
                                },
                            }
                        }
                        Op::Finish(i, failed) => {
                            if !permits.is_empty() {
                                let mut permit = permits.remove(i % permits.len());
                                permit.finish(failed);
                                drop(permit);
                            }
                        }
                        Op::DropWaiter(i) => {
                            if !waiters.is_empty() {
                                drop(waiters.remove(i % waiters.len()));
                            }
                        }
                        Op::Poll => {
                            let mut still = Vec::new();
                            for mut w in waiters.drain(..) {
                                match w.poll_admit(&mut cx) {
                                    Poll::Ready(Ok(permit)) => permits.push(permit),
                                    Poll::Ready(Err(_)) => {}
                                    Poll::Pending => still.push(w),
                                }
                            }
                            waiters = still;
                        }
                        Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms.into())).await,
                    }
                    let s = shared.snapshot();
                    prop_assert!(s.in_service <= limit, "{s:?}");
                    prop_assert!(s.queued <= capacity, "{s:?}");
                    prop_assert!(permits.len() <= s.in_service, "{} > {s:?}", permits.len());
                    prop_assert!(s.queued <= waiters.len(), "{s:?} vs {} waiters", waiters.len());
                }
                drop(permits);
                drop(waiters);
                let s = shared.snapshot();
                prop_assert_eq!((s.in_service, s.queued), (0, 0), "{:?}", s);
                Ok(())
            })?;
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use std::task::Waker;

    use super::*;

    fn shared(concurrency: usize, capacity: usize) -> Arc<Shared> {
        let config = BoundedQueueConfig::builder()
            .concurrency(concurrency)
            .capacity(capacity)
            .build()
            .unwrap();
        Arc::new(Shared::new(&config))
    }

    /// A release racing an enqueue never loses the slot: the waiter is
    /// granted, or admitted at once.
    #[test]
    fn release_racing_enqueue_hands_the_slot_over() {
        loom::model(|| {
            let s = shared(1, 1);
            let held = s.try_fast(Priority::Critical).expect("free");
            let s2 = s.clone();
            let t = loom::thread::spawn(move || drop(held));
            let admitted = match s2.admit(Priority::Critical, None).unwrap() {
                Admit::Now(p) => Some(p),
                Admit::Queued(mut w) => {
                    t.join().unwrap();
                    let waker = Waker::noop();
                    let mut cx = std::task::Context::from_waker(waker);
                    match w.poll_admit(&mut cx) {
                        std::task::Poll::Ready(Ok(p)) => Some(p),
                        other => panic!("slot lost: {:?}", other.map(|r| r.err())),
                    }
                }
            };
            drop(admitted);
            let snap = s.snapshot();
            assert_eq!((snap.in_service, snap.queued), (0, 0));
        });
    }

    /// Concurrent samples store the limit under the algorithm's lock: the
    /// limit in force is always the algorithm's latest, never an older one
    /// stored late.
    #[test]
    fn concurrent_samples_never_store_an_older_limit() {
        loom::model(|| {
            let aimd = crate::AimdConfig::builder()
                .initial(5)
                .min(1)
                .max(100)
                .build()
                .unwrap();
            let config = BoundedQueueConfig::builder()
                .adaptive(aimd)
                .build()
                .unwrap();
            let s = Arc::new(Shared::new(&config));
            let s2 = s.clone();
            let ms = Duration::from_millis(1);
            let t = loom::thread::spawn(move || s2.on_sample(ms, 5, false, Instant::now()));
            s.on_sample(ms, 5, false, Instant::now());
            t.join().unwrap();
            let algorithm = lock(s.adaptive.as_ref().unwrap()).limit();
            assert_eq!(s.limit.load(Ordering::SeqCst), algorithm);
            assert!((6..=7).contains(&algorithm), "{algorithm}");
        });
    }

    /// A waiter cancelled while a slot is handed to it passes the slot on.
    #[test]
    fn cancel_racing_hand_off_releases() {
        loom::model(|| {
            let s = shared(1, 2);
            let held = s.try_fast(Priority::Critical).expect("free");
            let w = match s.admit(Priority::Critical, None).unwrap() {
                Admit::Queued(w) => w,
                Admit::Now(_) => panic!("the slot is taken"),
            };
            let t = loom::thread::spawn(move || drop(held));
            drop(w);
            t.join().unwrap();
            let snap = s.snapshot();
            assert_eq!((snap.in_service, snap.queued), (0, 0));
        });
    }
}
