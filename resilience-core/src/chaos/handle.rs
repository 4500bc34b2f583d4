use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use super::fault::Fault;
use crate::priority::Priority;

/// Switches a [`ChaosLayer`](super::ChaosLayer)'s fault on and off at run
/// time, and counts what it injected.
///
/// Cheap to clone; every clone, the layer, and every service the layer made
/// share one state: a [`set`](ChaosHandle::set) applies to the next request
/// of all of them.
#[derive(Clone)]
pub struct ChaosHandle {
    pub(super) shared: Arc<Shared>,
}

/// How many requests a chaos layer affected, by kind of fault, since it was
/// built.
///
/// A request given both latency and an error counts in `delayed` and in
/// `failed`. Counted when the decision is made (in `call`), so a delayed
/// request dropped before its delay ended still counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Injected {
    /// Requests given added latency.
    pub delayed: u64,
    /// Requests failed with [`ChaosError`](super::ChaosError).
    pub failed: u64,
    /// Requests never answered.
    pub aborted: u64,
}

/// The state one layer's services and handles share.
pub(super) struct Shared {
    name: Box<str>,
    /// Set while a fault is set: the one load of the pass-through path.
    active: AtomicBool,
    fault: ArcSwapOption<Fault>,
    seed: AtomicU64,
    /// Index of the next draw; restarts at each `set`.
    draws: AtomicU64,
    delayed: AtomicU64,
    failed: AtomicU64,
    aborted: AtomicU64,
    #[cfg(feature = "metrics")]
    metrics: Metrics,
}

#[cfg(feature = "metrics")]
struct Metrics {
    latency: metrics::Counter,
    error: metrics::Counter,
    abort: metrics::Counter,
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    Pass,
    Abort,
    /// Wait `delay` (if any), then fail (`true`) or call the inner service.
    Inject {
        delay: Option<Duration>,
        fail: bool,
    },
}

/// The golden-ratio increment of splitmix64.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

// === impl ChaosHandle ===

impl ChaosHandle {
    /// Sets the fault every following request is subject to (replacing the
    /// one set before), and restarts the sequence of random draws, so that
    /// the same requests after the same `set` get the same decisions.
    pub fn set(&self, fault: Fault) {
        tracing::info!(name = %self.shared.name, %fault, "chaos fault set");
        self.shared.fault.store(Some(Arc::new(fault)));
        self.shared.draws.store(0, Ordering::Relaxed);
        self.shared.active.store(true, Ordering::Release);
    }

    /// Turns the fault off: following requests pass through untouched.
    /// Requests already delayed finish their delay.
    pub fn clear(&self) {
        self.shared.active.store(false, Ordering::Release);
        if self.shared.fault.swap(None).is_some() {
            tracing::info!(name = %self.shared.name, "chaos fault cleared");
        }
    }

    /// The fault set now, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.shared.fault.load_full().map(|f| Fault::clone(&f))
    }

    /// Whether a fault is set.
    pub fn is_active(&self) -> bool {
        self.shared.active.load(Ordering::Acquire)
    }

    /// The layer's name (its `name` metric label).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The seed of the random draws.
    pub fn seed(&self) -> u64 {
        self.shared.seed.load(Ordering::Relaxed)
    }

    /// How many requests were delayed, failed and aborted so far.
    pub fn injected(&self) -> Injected {
        Injected {
            delayed: self.shared.delayed.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
            aborted: self.shared.aborted.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for ChaosHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

// === impl Shared ===

impl Shared {
    pub(super) fn new(name: String, seed: u64) -> Self {
        #[cfg(feature = "metrics")]
        let metrics = {
            use crate::names::{CHAOS_INJECTED_TOTAL, LABEL_FAULT, LABEL_NAME};
            metrics::describe_counter!(
                CHAOS_INJECTED_TOTAL,
                metrics::Unit::Count,
                "Requests a chaos layer delayed, failed or never answered, by fault."
            );
            let counter = |fault: &'static str| metrics::counter!(CHAOS_INJECTED_TOTAL, LABEL_NAME => name.clone(), LABEL_FAULT => fault);
            Metrics {
                latency: counter("latency"),
                error: counter("error"),
                abort: counter("abort"),
            }
        };
        Self {
            name: name.into_boxed_str(),
            active: AtomicBool::new(false),
            fault: ArcSwapOption::empty(),
            seed: AtomicU64::new(seed),
            draws: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            metrics,
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn set_seed(&self, seed: u64) {
        self.seed.store(seed, Ordering::Relaxed);
        self.draws.store(0, Ordering::Relaxed);
    }

    /// The pass-through test: one relaxed load.
    #[inline(always)]
    pub(super) fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Decides the fate of one request, `priority` read only if the fault
    /// asks for it; counts what it injects.
    pub(super) fn decide(&self, priority: impl FnOnce() -> Priority) -> Decision {
        let guard = self.fault.load();
        let Some(fault) = guard.as_deref() else {
            return Decision::Pass;
        };
        if let Some(only) = fault.only_priority() {
            if priority() != only {
                return Decision::Pass;
            }
        }
        let i = self.draws.fetch_add(1, Ordering::Relaxed);
        let draw = splitmix64(
            self.seed
                .load(Ordering::Relaxed)
                .wrapping_add(i.wrapping_mul(GAMMA)),
        );
        // Independent sub-draws for the three questions.
        let unit = |k: u64| to_unit(splitmix64(draw ^ k.wrapping_mul(GAMMA)));
        if unit(1) >= fault.affected_fraction() {
            return Decision::Pass;
        }
        if fault.is_abort() {
            self.aborted.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "metrics")]
            self.metrics.abort.increment(1);
            tracing::debug!(name = %self.name, "chaos: request will never be answered");
            return Decision::Abort;
        }
        let delay = fault.delay(unit(2));
        let fail = unit(3) < fault.error_rate();
        if let Some(delay) = delay {
            self.delayed.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "metrics")]
            self.metrics.latency.increment(1);
            tracing::debug!(name = %self.name, delay_ms = delay.as_millis() as u64, "chaos: delaying request");
        }
        if fail {
            self.failed.fetch_add(1, Ordering::Relaxed);
            #[cfg(feature = "metrics")]
            self.metrics.error.increment(1);
            tracing::debug!(name = %self.name, "chaos: failing request");
        }
        if delay.is_none() && !fail {
            return Decision::Pass;
        }
        Decision::Inject { delay, fail }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosState")
            .field("name", &self.name)
            .field("fault", &self.fault.load().as_deref())
            .field("seed", &self.seed.load(Ordering::Relaxed))
            .finish()
    }
}

/// splitmix64's output function (Steele, Lea, Flood 2014).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The top 53 bits as a float in `0.0..1.0`.
fn to_unit(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(feature = "snapshot")]
mod snapshot {
    use serde::Serialize;

    use super::{ChaosHandle, Injected};
    use crate::snapshot::LayerSnapshot;

    /// The state of a chaos layer, as its [`LayerSnapshot`] reports it.
    #[derive(Debug, Clone, Serialize)]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "chaos", feature = "snapshot"))))]
    #[non_exhaustive]
    pub struct ChaosSnapshot {
        /// Whether a fault is set.
        pub active: bool,
        /// The fault set, if any.
        pub fault: Option<FaultSnapshot>,
        /// What was injected so far.
        pub injected: Injected,
    }

    /// A [`Fault`](super::Fault) in a [`ChaosSnapshot`]: `latency_ms` for a
    /// fixed latency, `latency_min_ms` and `latency_max_ms` for a range.
    #[derive(Debug, Clone, Serialize)]
    #[cfg_attr(docsrs, doc(cfg(all(feature = "chaos", feature = "snapshot"))))]
    #[non_exhaustive]
    pub struct FaultSnapshot {
        /// A fixed added latency, in milliseconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub latency_ms: Option<u64>,
        /// The lower bound of a latency range, in milliseconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub latency_min_ms: Option<u64>,
        /// The upper bound of a latency range, in milliseconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub latency_max_ms: Option<u64>,
        /// The probability that an affected request fails.
        pub error_rate: f64,
        /// Whether affected requests are never answered.
        pub abort: bool,
        /// The share of requests affected.
        pub fraction: f64,
        /// The only priority affected, if any.
        pub only: Option<&'static str>,
    }

    impl ChaosHandle {
        /// The state now, as [`LayerSnapshot::snapshot`] reports it.
        #[cfg_attr(docsrs, doc(cfg(all(feature = "chaos", feature = "snapshot"))))]
        pub fn snapshot(&self) -> ChaosSnapshot {
            let fault = self.fault().map(|f| {
                let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                let (fixed, range) = match f.latency_range() {
                    Some((min, max)) if min == max => (Some(ms(min)), None),
                    Some((min, max)) => (None, Some((ms(min), ms(max)))),
                    None => (None, None),
                };
                FaultSnapshot {
                    latency_ms: fixed,
                    latency_min_ms: range.map(|r| r.0),
                    latency_max_ms: range.map(|r| r.1),
                    error_rate: f.error_rate(),
                    abort: f.is_abort(),
                    fraction: f.affected_fraction(),
                    only: f.only_priority().map(|p| p.as_str()),
                }
            });
            ChaosSnapshot {
                active: self.is_active(),
                fault,
                injected: self.injected(),
            }
        }
    }

    #[cfg_attr(docsrs, doc(cfg(all(feature = "chaos", feature = "snapshot"))))]
    impl LayerSnapshot for ChaosHandle {
        type Snapshot = ChaosSnapshot;

        fn kind(&self) -> &'static str {
            "chaos"
        }

        fn name(&self) -> &str {
            ChaosHandle::name(self)
        }

        fn snapshot(&self) -> ChaosSnapshot {
            ChaosHandle::snapshot(self)
        }
    }
}

#[cfg(feature = "snapshot")]
pub use self::snapshot::{ChaosSnapshot, FaultSnapshot};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_uniform_enough_and_fixed() {
        // Known splitmix64 outputs for state 0 (seed 0, first draws).
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(GAMMA), 0x6E78_9E6A_A1B9_65F4);
        let mean = (0..10_000u64)
            .map(|i| to_unit(splitmix64(i.wrapping_mul(GAMMA))))
            .sum::<f64>()
            / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert!(to_unit(u64::MAX) < 1.0);
        assert_eq!(to_unit(0), 0.0);
    }

    #[test]
    fn abort_wins_and_empty_fault_passes() {
        let shared = Shared::new("t".into(), 1);
        shared
            .fault
            .store(Some(Arc::new(Fault::abort().and_errors(1.0))));
        assert_eq!(shared.decide(|| Priority::Critical), Decision::Abort);
        shared.fault.store(Some(Arc::new(Fault::errors(0.0))));
        assert_eq!(shared.decide(|| Priority::Critical), Decision::Pass);
        shared.fault.store(None);
        assert_eq!(shared.decide(|| unreachable!()), Decision::Pass);
    }
}
