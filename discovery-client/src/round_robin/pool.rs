//! The shared state of a balancer: endpoint snapshot, cursor, health counters.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use arc_swap::ArcSwap;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::config::RoundRobinConfig;
use crate::endpoint::{Change, Endpoint};
use crate::health::HealthChecker;

/// Not picked: its active health check failed.
pub(crate) const UNHEALTHY: u8 = 1;
/// Not picked: passively ejected.
pub(crate) const EJECTED: u8 = 2;
/// Not picked, not counted: waiting for its first passing health check.
pub(crate) const PENDING: u8 = 4;
/// Not in the set any more (finishing in-flight requests).
pub(crate) const REMOVED: u8 = 8;

/// Health and ejection state of one endpoint; shared with in-flight
/// response futures.
pub(crate) struct EndpointStats {
    pub(crate) addr: SocketAddr,
    flags: AtomicU8,
    consecutive_failures: AtomicU32,
    times_ejected: AtomicU32,
    /// Nanoseconds after `pool.epoch` when the ejection ends.
    ejected_until: AtomicU64,
    pub(crate) pool: Arc<Pool>,
}

/// Counters over the current set, shared by every endpoint's stats.
pub(crate) struct Pool {
    pub(crate) config: RoundRobinConfig,
    epoch: Instant,
    /// Distinct endpoints in the set.
    pub(crate) total: AtomicUsize,
    /// Endpoints (in the set) that are unhealthy or ejected.
    pub(crate) down: AtomicUsize,
    /// Endpoints (in the set) that are ejected.
    pub(crate) ejected: AtomicUsize,
    /// Endpoints (in the set) waiting for their first health check.
    pub(crate) pending: AtomicUsize,
    #[cfg(feature = "metrics")]
    metrics: crate::metrics::BalancerMetrics,
}

/// How many handles to an endpoint's stats a slot holds; see [`Stripe`].
pub(crate) const STRIPES: usize = 4;

/// A handle to an endpoint's stats that response futures clone. Each
/// balancer clone uses one stripe, so clones busy on different threads bump
/// different reference counts (each on its own cache line) rather than all
/// bouncing the endpoint's one.
#[repr(align(64))]
#[derive(Debug)]
pub(crate) struct Stripe {
    pub(crate) stats: Arc<EndpointStats>,
}

/// One endpoint of the set: its service and its stats.
pub(crate) struct Slot<S> {
    pub(crate) endpoint: Endpoint,
    pub(crate) service: S,
    pub(crate) stats: Arc<EndpointStats>,
    pub(crate) stripes: [Arc<Stripe>; STRIPES],
    health_task: OnceLock<AbortHandle>,
}

/// What the picker reads: the weighted ring of endpoints, inline so that a
/// pick walks contiguous memory.
pub(crate) struct Snapshot<S> {
    pub(crate) ring: Vec<Entry<S>>,
}

/// One place in the ring.
pub(crate) struct Entry<S> {
    pub(crate) service: S,
    pub(crate) stats: Arc<EndpointStats>,
    pub(crate) stripes: [Arc<Stripe>; STRIPES],
}

pub(crate) type Maker<S> = Box<dyn Fn(&Endpoint) -> S + Send + Sync>;

/// Everything a balancer and its clones share.
pub(crate) struct Shared<S> {
    pub(crate) snapshot: ArcSwap<Snapshot<S>>,
    /// Bumped after every new snapshot, so balancers reload their cached one
    /// only when it changed.
    pub(crate) generation: AtomicU64,
    /// Where the next clone starts its turn.
    pub(crate) cursor: AtomicUsize,
    pub(crate) pool: Arc<Pool>,
    /// Endpoints were added outside a tokio runtime: their health checks
    /// start at the next `poll_ready` (see [`Shared::start_deferred_checks`]).
    pub(crate) checks_deferred: AtomicBool,
    /// Serializes writers; readers never take it.
    writer: Mutex<Writer<S>>,
}

struct Writer<S> {
    slots: BTreeMap<SocketAddr, Arc<Slot<S>>>,
    maker: Maker<S>,
    health: Option<HealthChecker>,
    /// The runtime health checks run on: the last one an endpoint was added
    /// (or a balancer polled) in.
    runtime: Option<tokio::runtime::Handle>,
    /// Endpoints whose health checks wait for a runtime.
    deferred: Vec<Arc<Slot<S>>>,
    driver: Option<AbortHandle>,
}

/// Locks `m`, ignoring poisoning: a panic under the lock (in a user's
/// maker) leaves the endpoint set as it was before the change.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl EndpointStats ===

impl EndpointStats {
    fn new(addr: SocketAddr, pool: Arc<Pool>, initial: u8) -> Self {
        Self {
            addr,
            flags: AtomicU8::new(initial),
            consecutive_failures: AtomicU32::new(0),
            times_ejected: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            pool,
        }
    }

    #[inline]
    pub(crate) fn flags(&self) -> u8 {
        self.flags.load(Ordering::Acquire)
    }

    pub(crate) fn set(&self, bit: u8) {
        let prev = self.flags.fetch_or(bit, Ordering::AcqRel);
        self.pool.transition(prev, prev | bit);
    }

    pub(crate) fn clear(&self, bit: u8) -> bool {
        let prev = self.flags.fetch_and(!bit, Ordering::AcqRel);
        self.pool.transition(prev, prev & !bit);
        prev & bit != 0
    }

    /// Ends the ejection if its time is up; returns whether it is still ejected.
    pub(crate) fn still_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until.load(Ordering::Acquire);
        if self.pool.nanos_since_epoch(now) < until {
            return true;
        }
        if self.clear(EJECTED) {
            self.consecutive_failures.store(0, Ordering::Release);
            tracing::info!(peer.addr = %self.addr, "endpoint back from ejection");
            self.pool.record_gauges();
        }
        false
    }

    /// Records a call's outcome (passive health).
    #[inline]
    pub(crate) fn record(&self, failure: bool) {
        if !failure {
            if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let threshold = self.pool.config.consecutive_failures;
        if threshold == 0 {
            return;
        }
        let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= threshold {
            self.try_eject(n);
        }
    }

    fn try_eject(&self, failures: u32) {
        let flags = self.flags();
        if flags & (EJECTED | REMOVED) != 0 {
            return;
        }
        let pool = &self.pool;
        let total = pool.total.load(Ordering::Acquire);
        let cap = (total * usize::from(pool.config.max_ejection_percent) / 100).max(1);
        if pool.ejected.load(Ordering::Acquire) >= cap {
            tracing::debug!(peer.addr = %self.addr, "ejection skipped: too many endpoints ejected");
            return;
        }
        let now = Instant::now();
        let last_until = self.ejected_until.load(Ordering::Acquire);
        let quiet = pool.nanos_since_epoch(now).saturating_sub(last_until);
        if last_until != 0 && u128::from(quiet) >= pool.config.max_ejection_time.as_nanos() {
            // Well behaved for a long time: the multiplier starts over.
            self.times_ejected.store(0, Ordering::Release);
        }
        let times = self.times_ejected.fetch_add(1, Ordering::AcqRel) + 1;
        let for_ = pool.config.ejection_time(times);
        // Saturating: an ejection time too long to represent lasts "forever".
        let for_ns = u64::try_from(for_.as_nanos()).unwrap_or(u64::MAX);
        let until = pool.nanos_since_epoch(now).saturating_add(for_ns);
        self.ejected_until.store(until, Ordering::Release);
        self.set(EJECTED);
        self.consecutive_failures.store(0, Ordering::Release);
        tracing::info!(peer.addr = %self.addr, failures, times, ejected_for = ?for_, "endpoint ejected");
        #[cfg(feature = "metrics")]
        pool.metrics.ejections.increment(1);
        pool.record_gauges();
    }
}

impl fmt::Debug for EndpointStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointStats")
            .field("addr", &self.addr)
            .field("flags", &self.flags())
            .finish_non_exhaustive()
    }
}

// === impl Pool ===

impl Pool {
    pub(crate) fn new(config: RoundRobinConfig) -> Self {
        #[cfg(feature = "metrics")]
        let metrics = crate::metrics::BalancerMetrics::new(&config.name);
        Self {
            config,
            epoch: Instant::now(),
            total: AtomicUsize::new(0),
            down: AtomicUsize::new(0),
            ejected: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            #[cfg(feature = "metrics")]
            metrics,
        }
    }

    fn nanos_since_epoch(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Keeps the counters in step with one endpoint's flags going from
    /// `prev` to `new`. A removed endpoint counts nowhere.
    fn transition(&self, prev: u8, new: u8) {
        let adjust = |counter: &AtomicUsize, mask: u8| {
            let was = prev & mask != 0 && prev & REMOVED == 0;
            let is = new & mask != 0 && new & REMOVED == 0;
            match (was, is) {
                (false, true) => {
                    counter.fetch_add(1, Ordering::AcqRel);
                }
                (true, false) => {
                    counter.fetch_sub(1, Ordering::AcqRel);
                }
                _ => {}
            }
        };
        adjust(&self.down, UNHEALTHY | EJECTED);
        adjust(&self.ejected, EJECTED);
        adjust(&self.pending, PENDING);
    }

    /// Healthy, down, ejected and pending endpoint counts.
    pub(crate) fn counts(&self) -> (usize, usize, usize, usize) {
        let total = self.total.load(Ordering::Acquire);
        let pending = self.pending.load(Ordering::Acquire);
        let down = self.down.load(Ordering::Acquire);
        let ejected = self.ejected.load(Ordering::Acquire);
        let healthy = total.saturating_sub(pending).saturating_sub(down);
        (healthy, down, ejected, pending)
    }

    /// Whether fewer than the panic threshold of the endpoints (not counting
    /// those pending a first check) are healthy.
    pub(crate) fn in_panic(&self) -> bool {
        let (healthy, _, _, pending) = self.counts();
        let active = self.total.load(Ordering::Acquire).saturating_sub(pending);
        healthy * 100 < usize::from(self.config.panic_threshold_percent) * active
    }

    pub(crate) fn record_gauges(&self) {
        #[cfg(feature = "metrics")]
        {
            let (healthy, down, ejected, pending) = self.counts();
            self.metrics.set_endpoints(healthy, down, ejected, pending);
        }
    }

    #[cfg(feature = "metrics")]
    fn record_update(&self, added: bool) {
        if added {
            self.metrics.added.increment(1);
        } else {
            self.metrics.removed.increment(1);
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (healthy, down, ejected, pending) = self.counts();
        f.debug_struct("Pool")
            .field("name", &self.config.name)
            .field("healthy", &healthy)
            .field("down", &down)
            .field("ejected", &ejected)
            .field("pending", &pending)
            .finish()
    }
}

// === impl Slot ===

impl<S> Slot<S> {
    /// Marks the endpoint gone and stops its health checks.
    fn retire(&self) {
        self.stats.set(REMOVED);
        if let Some(task) = self.health_task.get() {
            task.abort();
        }
    }
}

impl<S> Drop for Slot<S> {
    fn drop(&mut self) {
        if let Some(task) = self.health_task.get() {
            task.abort();
        }
    }
}

// === impl Shared ===

impl<S: Clone + Send + Sync + 'static> Shared<S> {
    pub(crate) fn new(
        config: RoundRobinConfig,
        maker: Maker<S>,
        health: Option<HealthChecker>,
    ) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(Snapshot { ring: Vec::new() }),
            generation: AtomicU64::new(0),
            cursor: AtomicUsize::new(0),
            pool: Arc::new(Pool::new(config)),
            checks_deferred: AtomicBool::new(false),
            writer: Mutex::new(Writer {
                slots: BTreeMap::new(),
                maker,
                health,
                runtime: None,
                deferred: Vec::new(),
                driver: None,
            }),
        }
    }

    pub(crate) fn set_driver(&self, driver: AbortHandle) {
        lock(&self.writer).driver = Some(driver);
    }

    /// Applies changes and publishes a new snapshot.
    pub(crate) fn apply(&self, changes: impl IntoIterator<Item = Change>) {
        let mut log = Vec::new();
        {
            let mut w = lock(&self.writer);
            let w = &mut *w;
            let mut changed = false;
            for change in changes {
                match change {
                    Change::Insert(endpoint) => {
                        let addr = endpoint.addr();
                        if let Some(old) = w.slots.get(&addr) {
                            if old.endpoint == endpoint {
                                continue;
                            }
                        }
                        let slot = self.make_slot(w, endpoint);
                        if let Some(old) = w.slots.insert(addr, slot) {
                            w.retire(&old);
                        } else {
                            self.pool.total.fetch_add(1, Ordering::AcqRel);
                        }
                        log.push((addr, true));
                        changed = true;
                    }
                    Change::Remove(addr) => {
                        if let Some(old) = w.slots.remove(&addr) {
                            w.retire(&old);
                            self.pool.total.fetch_sub(1, Ordering::AcqRel);
                            log.push((addr, false));
                            changed = true;
                        }
                    }
                }
            }
            if changed {
                let ring = weighted_ring(&w.slots)
                    .into_iter()
                    .map(|slot| Entry {
                        service: slot.service.clone(),
                        stats: slot.stats.clone(),
                        stripes: slot.stripes.clone(),
                    })
                    .collect();
                self.snapshot.store(Arc::new(Snapshot { ring }));
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
        }
        for (addr, added) in log {
            if added {
                tracing::info!(peer.addr = %addr, name = %self.pool.config.name, "endpoint added");
            } else {
                tracing::info!(peer.addr = %addr, name = %self.pool.config.name, "endpoint removed");
            }
            #[cfg(feature = "metrics")]
            self.pool.record_update(added);
        }
        self.pool.record_gauges();
    }

    fn make_slot(&self, w: &mut Writer<S>, endpoint: Endpoint) -> Arc<Slot<S>> {
        // The user's maker first: if it panics, nothing has changed yet.
        let service = (w.maker)(&endpoint);
        let initial = if w.health.is_some() { PENDING } else { 0 };
        let stats = Arc::new(EndpointStats::new(
            endpoint.addr(),
            self.pool.clone(),
            initial,
        ));
        // The new endpoint is not counted yet (`total` moves after), but its
        // flags must be: count it as pending/down from the start.
        self.pool.transition(0, initial);
        let stripes = std::array::from_fn(|_| {
            Arc::new(Stripe {
                stats: stats.clone(),
            })
        });
        let slot = Arc::new(Slot {
            endpoint,
            service,
            stripes,
            stats,
            health_task: OnceLock::new(),
        });
        if w.health.is_some() && !self.start_checks(w, &slot) {
            tracing::warn!(
                peer.addr = %slot.endpoint,
                name = %self.pool.config.name,
                "endpoint added outside a tokio runtime: its health checks start at the balancer's next poll_ready"
            );
            w.deferred.push(slot.clone());
            self.checks_deferred.store(true, Ordering::Release);
        }
        slot
    }

    /// The endpoints in the set, with their state.
    pub(crate) fn endpoints(&self) -> Vec<(Endpoint, u8)> {
        let w = lock(&self.writer);
        w.slots
            .values()
            .map(|s| (s.endpoint.clone(), s.stats.flags()))
            .collect()
    }
}

// === impl Writer ===

impl<S> Writer<S> {
    /// Takes `slot` out of service: no new requests, no health checks, and
    /// no reference to it kept here, so that its endpoint service is dropped
    /// once the snapshots and in-flight calls that hold it are gone.
    fn retire(&mut self, slot: &Arc<Slot<S>>) {
        slot.retire();
        if !self.deferred.is_empty() {
            self.deferred.retain(|s| !Arc::ptr_eq(s, slot));
        }
    }
}

impl<S> Shared<S> {
    /// Starts `slot`'s health checks on the current runtime, or the one
    /// checks ran on before; `false` if there is none.
    fn start_checks(&self, w: &mut Writer<S>, slot: &Arc<Slot<S>>) -> bool {
        let Some(health) = &w.health else {
            return true;
        };
        if let Ok(current) = tokio::runtime::Handle::try_current() {
            w.runtime = Some(current);
        }
        let Some(runtime) = &w.runtime else {
            return false;
        };
        let task = health.spawn(runtime, slot.endpoint.clone(), slot.stats.clone());
        if let Err(task) = slot.health_task.set(task) {
            task.abort();
        }
        true
    }

    /// Starts the health checks of endpoints added outside a runtime; called
    /// from `poll_ready` while [`Shared::checks_deferred`] is set.
    #[cold]
    pub(crate) fn start_deferred_checks(&self) {
        let mut w = lock(&self.writer);
        let w = &mut *w;
        let deferred = std::mem::take(&mut w.deferred);
        for slot in deferred {
            if slot.stats.flags() & REMOVED == 0 && !self.start_checks(w, &slot) {
                w.deferred.push(slot);
            }
        }
        self.checks_deferred
            .store(!w.deferred.is_empty(), Ordering::Release);
    }
}

impl<S> Drop for Shared<S> {
    fn drop(&mut self) {
        let w = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(driver) = w.driver.take() {
            driver.abort();
        }
    }
}

impl<S> fmt::Debug for Shared<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// Builds the ring with smooth weighted round robin (nginx), so heavier
/// endpoints are interleaved rather than bunched. Weights are reduced by
/// their gcd and capped at 100.
fn weighted_ring<S>(slots: &BTreeMap<SocketAddr, Arc<Slot<S>>>) -> Vec<Arc<Slot<S>>> {
    const MAX_WEIGHT: u32 = 100;
    let weights: Vec<u32> = slots
        .values()
        .map(|s| s.endpoint.weight().clamp(1, MAX_WEIGHT))
        .collect();
    let g = weights.iter().copied().fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    let weights: Vec<i64> = weights.iter().map(|w| i64::from(w / g)).collect();
    let sum: i64 = weights.iter().sum();
    if weights.iter().all(|w| *w == 1) {
        return slots.values().cloned().collect();
    }
    let slots: Vec<&Arc<Slot<S>>> = slots.values().collect();
    let mut current = vec![0i64; slots.len()];
    let mut ring = Vec::with_capacity(usize::try_from(sum).unwrap_or(0));
    for _ in 0..sum {
        let mut best = 0;
        for i in 0..slots.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= sum;
        ring.push(slots[best].clone());
    }
    ring
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn stats(pool: &Arc<Pool>, initial: u8) -> EndpointStats {
        pool.transition(0, initial);
        pool.total.fetch_add(1, Ordering::AcqRel);
        EndpointStats::new(SocketAddr::from(([127, 0, 0, 1], 1)), pool.clone(), initial)
    }

    proptest! {
        /// Whatever the order of health changes, ejections and removals, the
        /// pool's counters equal a recount of the endpoints' flags.
        #[test]
        fn counters_match_a_recount(
            initial in proptest::collection::vec(prop_oneof![Just(0u8), Just(PENDING)], 1..6),
            ops in proptest::collection::vec((0usize..6, 0u8..7), 0..60),
        ) {
            let pool = Arc::new(Pool::new(RoundRobinConfig::default()));
            let eps: Vec<EndpointStats> = initial.iter().map(|i| stats(&pool, *i)).collect();
            for (i, op) in ops {
                let ep = &eps[i % eps.len()];
                match op {
                    0 => ep.set(UNHEALTHY),
                    1 => { ep.clear(UNHEALTHY); }
                    2 => ep.set(EJECTED),
                    3 => { ep.clear(EJECTED); }
                    4 => { ep.clear(PENDING); }
                    5 => {
                        if ep.flags() & REMOVED == 0 {
                            ep.set(REMOVED);
                            pool.total.fetch_sub(1, Ordering::AcqRel);
                        }
                    }
                    _ => ep.set(PENDING),
                }
                let live = eps.iter().map(EndpointStats::flags).filter(|f| f & REMOVED == 0);
                let (mut down, mut ejected, mut pending, mut total) = (0, 0, 0, 0);
                for f in live {
                    total += 1;
                    down += usize::from(f & (UNHEALTHY | EJECTED) != 0);
                    ejected += usize::from(f & EJECTED != 0);
                    pending += usize::from(f & PENDING != 0);
                }
                prop_assert_eq!(pool.total.load(Ordering::Acquire), total);
                prop_assert_eq!(pool.down.load(Ordering::Acquire), down);
                prop_assert_eq!(pool.ejected.load(Ordering::Acquire), ejected);
                prop_assert_eq!(pool.pending.load(Ordering::Acquire), pending);
            }
        }

        /// The weighted ring holds each endpoint weight / gcd times.
        #[test]
        fn ring_honours_weights(weights in proptest::collection::vec(1u32..20, 1..8)) {
            let pool = Arc::new(Pool::new(RoundRobinConfig::default()));
            let slots: BTreeMap<SocketAddr, Arc<Slot<()>>> = weights
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let addr = SocketAddr::from(([127, 0, 0, 1], u16::try_from(i + 1).unwrap()));
                    let stats = Arc::new(EndpointStats::new(addr, pool.clone(), 0));
                    let stripes = std::array::from_fn(|_| Arc::new(Stripe { stats: stats.clone() }));
                    let slot = Slot {
                        endpoint: Endpoint::new(addr).with_weight(*w),
                        service: (),
                        stats,
                        stripes,
                        health_task: OnceLock::new(),
                    };
                    (addr, Arc::new(slot))
                })
                .collect();
            let ring = weighted_ring(&slots);
            let g = weights.iter().copied().fold(0, gcd);
            prop_assert_eq!(ring.len() as u32, weights.iter().sum::<u32>() / g);
            for (i, w) in weights.iter().enumerate() {
                let port = u16::try_from(i + 1).unwrap();
                let n = ring.iter().filter(|s| s.endpoint.addr().port() == port).count();
                prop_assert_eq!(n as u32, w / g);
            }
        }
    }
}
