use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use resilience_core::timeout::FromExtensions;
use resilience_core::{HttpOutcome, Priority, PriorityFromExtensions, Rejected, RejectionKind};
use tokio::time::Instant;
use tower_layer::Layer;

use super::config::{ThrottleConfig, ThrottleMode};
use super::service::Throttle;
use super::state::{Bucket, ThrottleState, random};
use crate::CircuitBreakerHandle;

/// State shared by a throttle layer, its services and handles.
pub(crate) struct ThrottleShared {
    pub(crate) state: ThrottleState,
    /// The configuration in force (read when it changes, never per call).
    config: std::sync::Mutex<ThrottleConfig>,
    pub(crate) name: Arc<str>,
    pub(crate) max_wait: Option<std::time::Duration>,
    max_waiters: usize,
    waiters: AtomicUsize,
    #[cfg(feature = "metrics")]
    rejected: [metrics::Counter; 4],
}

impl ThrottleShared {
    fn new(config: &ThrottleConfig) -> Self {
        #[cfg(feature = "metrics")]
        let rejected = {
            use resilience_core::names::{LABEL_NAME, LABEL_PRIORITY, THROTTLE_REJECTED_TOTAL};
            metrics::describe_counter!(
                THROTTLE_REJECTED_TOTAL,
                metrics::Unit::Count,
                "Calls refused by a client-side throttle, by priority."
            );
            [
                Priority::Sheddable,
                Priority::SheddablePlus,
                Priority::Critical,
                Priority::CriticalPlus,
            ]
            .map(|p| {
                metrics::counter!(THROTTLE_REJECTED_TOTAL, LABEL_NAME => config.name.clone(), LABEL_PRIORITY => p.as_str())
            })
        };
        Self {
            state: ThrottleState::new(config, Instant::now()),
            config: std::sync::Mutex::new(config.clone()),
            name: Arc::from(config.name.as_str()),
            max_wait: config.max_wait,
            max_waiters: usize::try_from(config.max_waiters).unwrap_or(usize::MAX),
            waiters: AtomicUsize::new(0),
            #[cfg(feature = "metrics")]
            rejected,
        }
    }

    /// Decides a call of `priority` now: `Ok(Some(bucket))` when admitted
    /// in adaptive mode (the request's bucket, where its accept is counted
    /// too), `Ok(None)` when admitted in fixed mode.
    #[inline]
    pub(crate) fn admit(&self, priority: Priority) -> Result<Option<Bucket>, Rejected> {
        let state = &self.state;
        let (admitted, bucket) = match state.mode {
            ThrottleMode::Fixed => (state.admit(priority, &Instant::now, random), None),
            ThrottleMode::Adaptive => {
                let (admitted, bucket) = state.admit_adaptive(priority, Instant::now(), random);
                (admitted, Some(bucket))
            }
        };
        if admitted {
            Ok(bucket)
        } else {
            self.count_rejected(priority, "throttled");
            Err(
                Rejected::new(RejectionKind::Throttled, "client-side throttling")
                    .with_retry_after(state.retry_after),
            )
        }
    }

    /// A place among the waiting calls, if one is free.
    pub(crate) fn try_wait(self: &Arc<Self>) -> Option<WaiterGuard> {
        let prev = self.waiters.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max_waiters {
            self.waiters.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(WaiterGuard(self.clone()))
    }

    /// Calls waiting now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiters.load(Ordering::Acquire)
    }

    #[cold]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn count_rejected(&self, priority: Priority, reason: &'static str) {
        tracing::debug!(name = %self.name, priority = priority.as_str(), reason, "throttle refused a call");
        #[cfg(feature = "metrics")]
        self.rejected[priority.index()].increment(1);
    }
}

/// A waiting call's place; given back on drop.
pub(crate) struct WaiterGuard(Arc<ThrottleShared>);

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.0.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Applies a [`Throttle`] to services.
///
/// Cloning this layer will not create a new throttle: the layer, its
/// services, their clones and the [`ThrottleHandle`]s share one state.
///
/// `W` says whether refused calls may wait for a paired breaker:
/// [`NoWait`] (the default) or [`WaitFor`] (after
/// [`wait_for`](Self::wait_for)); see [`Throttle`] for what each asks of the
/// inner service.
#[derive(Clone)]
pub struct ThrottleLayer<
    C = HttpOutcome,
    P = PriorityFromExtensions,
    D = FromExtensions,
    W = NoWait,
> {
    shared: Arc<ThrottleShared>,
    classify: C,
    read: P,
    read_deadline: D,
    wait: W,
}

/// A throttle that never waits (the default of [`ThrottleLayer`] and
/// [`Throttle`]): a refused call fails at once. Its services ask nothing of
/// the inner service beyond being a `Service`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWait;

/// A throttle paired with a breaker by [`ThrottleLayer::wait_for`]: with
/// [`max_wait`](super::ThrottleConfigBuilder::max_wait) set, throttled
/// priorities wait for the breaker to close. Its services need an inner
/// service that is `Clone + Send + 'static` (see [`Throttle`]).
#[derive(Debug, Clone)]
pub struct WaitFor(pub(crate) CircuitBreakerHandle);

/// Reads and steers a throttle: the fixed share, the current rejection
/// probabilities, the adaptive window's counts.
#[derive(Clone)]
pub struct ThrottleHandle {
    shared: Arc<ThrottleShared>,
}

/// A point-in-time view of a throttle, from [`ThrottleHandle::snapshot`],
/// for dashboards and health checks.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ThrottleSnapshot {
    /// The mode.
    pub mode: ThrottleMode,
    /// The share allowed in fixed mode, in percent.
    pub allow_percent: f64,
    /// Requests in the adaptive window (refused ones included).
    pub requests: u64,
    /// Accepts in the adaptive window.
    pub accepts: u64,
    /// The probability that a call is refused now, indexed by
    /// [`Priority::index`].
    pub reject_probability: [f64; 4],
    /// Calls waiting now for the paired breaker to close.
    pub waiting: usize,
}

// === impl ThrottleLayer ===

impl ThrottleLayer {
    /// A throttle for HTTP calls: priority from the request's extensions,
    /// accepts counted with [`HttpOutcome`].
    ///
    /// With the `metrics` feature, install the metrics recorder before
    /// calling this.
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            shared: Arc::new(ThrottleShared::new(&config)),
            classify: HttpOutcome::new(),
            read: PriorityFromExtensions,
            read_deadline: FromExtensions::new(),
            wait: NoWait,
        }
    }
}

impl Default for ThrottleLayer {
    /// [`ThrottleLayer::new`] with [`ThrottleConfig::default`].
    fn default() -> Self {
        Self::new(ThrottleConfig::default())
    }
}

impl<C, P, D, W> ThrottleLayer<C, P, D, W> {
    /// Counts accepts (adaptive mode) with `classify` instead: a call is
    /// accepted unless it is an [`Outcome::Failure`](resilience_core::Outcome::Failure).
    pub fn with_classifier<C2>(self, classify: C2) -> ThrottleLayer<C2, P, D, W> {
        ThrottleLayer {
            shared: self.shared,
            classify,
            read: self.read,
            read_deadline: self.read_deadline,
            wait: self.wait,
        }
    }

    /// Reads priorities with `read` instead: a closure
    /// `Fn(&Req) -> Priority`, [`FixedPriority`](super::FixedPriority), or
    /// any [`ReadPriority`](super::ReadPriority). Requests for which the
    /// reader finds nothing should get a throttled level if the throttle is
    /// to act on them: the default level, `Critical`, is not throttled.
    ///
    /// For requests that are not `http::Request`s, also set a deadline
    /// reader ([`with_deadline`](Self::with_deadline)), e.g.
    /// [`NoDeadline`](resilience_core::timeout::NoDeadline).
    pub fn with_priority<P2>(self, read: P2) -> ThrottleLayer<C, P2, D, W> {
        ThrottleLayer {
            shared: self.shared,
            classify: self.classify,
            read,
            read_deadline: self.read_deadline,
            wait: self.wait,
        }
    }

    /// Reads the deadline that bounds a wait (see
    /// [`max_wait`](super::ThrottleConfigBuilder::max_wait)) with `read`
    /// instead of from `http::Request` extensions:
    /// [`NoDeadline`](resilience_core::timeout::NoDeadline), a closure
    /// `Fn(&Req) -> Option<Deadline>`, or any
    /// [`ReadDeadline`](resilience_core::timeout::ReadDeadline).
    pub fn with_deadline<D2>(self, read: D2) -> ThrottleLayer<C, P, D2, W> {
        ThrottleLayer {
            shared: self.shared,
            classify: self.classify,
            read: self.read,
            read_deadline: read,
            wait: self.wait,
        }
    }

    /// Pairs the throttle with a breaker: with
    /// [`max_wait`](super::ThrottleConfigBuilder::max_wait) set, throttled
    /// priorities wait for it to close instead of failing at once.
    ///
    /// A waiting call polls a clone of the inner service from a boxed
    /// future: the services of this layer need an inner service that is
    /// `Clone + Send + 'static`, with `Send + 'static` futures, responses
    /// and requests (a layer without `wait_for` asks none of this).
    pub fn wait_for(self, breaker: CircuitBreakerHandle) -> ThrottleLayer<C, P, D, WaitFor> {
        ThrottleLayer {
            shared: self.shared,
            classify: self.classify,
            read: self.read,
            read_deadline: self.read_deadline,
            wait: WaitFor(breaker),
        }
    }

    /// A handle on the shared state.
    pub fn handle(&self) -> ThrottleHandle {
        ThrottleHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S, C: Clone, P: Clone, D: Clone, W: Clone> Layer<S> for ThrottleLayer<C, P, D, W> {
    type Service = Throttle<S, C, P, D, W>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttle::with_parts(
            inner,
            self.shared.clone(),
            self.classify.clone(),
            self.read.clone(),
            self.read_deadline.clone(),
            self.wait.clone(),
        )
    }
}

impl<C, P, D, W: fmt::Debug> fmt::Debug for ThrottleLayer<C, P, D, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleLayer")
            .field("name", &self.shared.name)
            .field("mode", &self.shared.state.mode)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

// === impl ThrottleHandle ===

impl ThrottleHandle {
    /// The throttle's name (its `name` metric label).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The mode.
    pub fn mode(&self) -> ThrottleMode {
        self.shared.state.mode
    }

    /// Sets the share of throttled calls allowed in fixed mode ("only allow
    /// xx%"), clamped to `[0, 100]`; `NaN` allows everything.
    pub fn set_allow_percent(&self, percent: f64) {
        self.shared.state.set_allow_percent(percent);
    }

    /// Changes the throttle's settings in place, for the calls that come
    /// next: `k` (the accept ratio's multiplier), `minimum_requests`, the largest rejection
    /// probability, the priorities' weights, and the share allowed in fixed
    /// mode (when it differs from the configuration in force, so a share set
    /// with [`set_allow_percent`](Self::set_allow_percent) stays otherwise).
    /// The adaptive window keeps its counts.
    ///
    /// Returns the settings that differ but cannot change at run time:
    /// `name`, `mode`, `window` (length and buckets), `retry_after`,
    /// `max_wait` (with `max_waiters`). They keep their old values.
    pub fn reconfigure(&self, config: &ThrottleConfig) -> Vec<&'static str> {
        let mut current = self
            .shared
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut restart_only = Vec::new();
        if config.name != *self.shared.name {
            restart_only.push("name");
        }
        restart_only.extend(self.shared.state.reconfigure(config, &current));
        current.k = config.k;
        current.minimum_requests = config.minimum_requests;
        current.max_reject_probability = config.max_reject_probability;
        current.weights = config.weights;
        current.allow_percent = config.allow_percent;
        restart_only
    }

    /// The configuration in force: the one the throttle was built with,
    /// or the last given to [`reconfigure`](Self::reconfigure) with its
    /// restart-only settings at their old values.
    pub fn config(&self) -> ThrottleConfig {
        self.shared
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The share allowed in fixed mode, in percent.
    pub fn allow_percent(&self) -> f64 {
        self.shared.state.allow_percent()
    }

    /// The probability that a call of `priority` is refused now: the one
    /// the next call's admission uses.
    pub fn reject_probability(&self, priority: Priority) -> f64 {
        self.shared
            .state
            .current_reject_probability(priority, Instant::now())
    }

    /// `(requests, accepts)` in the adaptive window.
    pub fn counts(&self) -> (u64, u64) {
        self.shared
            .state
            .window
            .counts(self.shared.state.window.nanos(Instant::now()))
    }

    /// Calls waiting now for the paired breaker to close.
    pub fn waiting(&self) -> usize {
        self.shared.waiting()
    }

    /// The state now: mode, fixed share, window counts, rejection
    /// probability per priority, waiters. Reads atomics only.
    pub fn snapshot(&self) -> ThrottleSnapshot {
        let (requests, accepts) = self.counts();
        ThrottleSnapshot {
            mode: self.mode(),
            allow_percent: self.allow_percent(),
            requests,
            accepts,
            reject_probability: Priority::ALL.map(|p| self.reject_probability(p)),
            waiting: self.waiting(),
        }
    }
}

// === impl ThrottleSnapshot ===

impl ThrottleSnapshot {
    /// Accepts over requests in the adaptive window, if it holds any.
    pub fn accept_ratio(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.accepts as f64 / self.requests as f64)
    }
}

impl fmt::Debug for ThrottleHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleHandle")
            .field("name", &self.shared.name)
            .field("mode", &self.shared.state.mode)
            .finish_non_exhaustive()
    }
}
