use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use resilience_core::{Outcome, Rejected, RejectionKind};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::config::CircuitBreakerConfig;
use crate::endpoints::Registry;
use crate::metrics::Metrics;
use crate::state::{CircuitState, Core, Permit, Recorded, Refusal, Transition};

/// Capacity of the transition event channel.
const EVENTS_CAPACITY: usize = 64;

/// State shared by a layer, its services and handles.
pub(crate) struct Shared {
    pub(crate) core: Core,
    name: Arc<str>,
    metrics: Metrics,
    state_tx: watch::Sender<CircuitState>,
    /// The epoch of the last transition published to `state_tx` and the
    /// state gauge (only written under the watch's lock).
    published_epoch: AtomicU64,
    events: broadcast::Sender<Transition>,
    /// Set for a breaker kept per endpoint: its key, and the registry that
    /// forgets it when this state is dropped.
    endpoint: Option<Endpoint>,
}

/// The endpoint a breaker's state is kept for.
pub(crate) struct Endpoint {
    pub(crate) key: Arc<str>,
    pub(crate) registry: Arc<Registry>,
}

/// A breaker's shared state with the classifier its services use (one per
/// layer; what a response future holds).
pub(crate) struct Breaker<C> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) classify: C,
}

/// Reads and steers a circuit breaker: a snapshot of its state, transition
/// events, and the operator's switches (force open, disable, metrics only).
///
/// Cheap to clone; every clone refers to the same breaker.
///
/// # Example
///
/// ```
/// use resilience_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, CircuitState};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
/// let handle = layer.handle();
/// let mut events = handle.subscribe();
///
/// handle.force_open();
/// assert_eq!(handle.state(), CircuitState::ForcedOpen);
/// assert_eq!(events.recv().await.unwrap().to(), CircuitState::ForcedOpen);
///
/// handle.reset();
/// assert_eq!(handle.snapshot().state(), CircuitState::Closed);
/// # }
/// ```
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    pub(crate) shared: Arc<Shared>,
}

/// A point-in-time view of a breaker, for dashboards and health checks.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreakerSnapshot {
    state: CircuitState,
    calls: u64,
    failures: u64,
    slow_calls: u64,
    time_until_half_open: Option<Duration>,
    consecutive_opens: u32,
    probes_in_use: u32,
    ramping: bool,
}

// === impl Shared ===

impl Shared {
    /// A breaker's state; `endpoint` when it is kept per endpoint.
    pub(crate) fn new(config: &CircuitBreakerConfig, endpoint: Option<Endpoint>) -> Self {
        let (state_tx, _) = watch::channel(CircuitState::Closed);
        let (events, _) = broadcast::channel(EVENTS_CAPACITY);
        let key = endpoint.as_ref().map(|e| &*e.key);
        Self {
            core: Core::new(config, Instant::now()),
            name: Arc::from(config.name()),
            metrics: Metrics::new(config.name(), key, CircuitState::Closed),
            state_tx,
            published_epoch: AtomicU64::new(0),
            events,
            endpoint,
        }
    }

    /// The endpoint of a breaker kept per endpoint.
    pub(crate) fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_ref().map(|e| &*e.key)
    }

    /// Asks to make a call; `Ok(Some(permit))` for a tracked call, `Ok(None)`
    /// when the breaker is disabled.
    #[inline(always)]
    pub(crate) fn acquire(&self) -> Result<Option<Permit>, Rejected> {
        let (result, transition) = self.core.acquire(&Instant::now);
        if let Some(t) = transition {
            self.emit(t);
        }
        match result {
            Ok(p) if p.is_tracked() => Ok(Some(p)),
            Ok(_) => Ok(None),
            Err(refusal) => Err(self.rejected(refusal)),
        }
    }

    #[cold]
    fn rejected(&self, refusal: Refusal) -> Rejected {
        self.metrics.rejected();
        tracing::debug!(name = %self.name, endpoint = self.endpoint(), reason = refusal.reason, "circuit breaker rejected a call");
        Rejected::new(RejectionKind::CircuitOpen, refusal.reason)
            .with_retry_after(refusal.retry_after)
    }

    /// The rejection of a call whose `poll_ready` did not poll the inner
    /// service (the circuit was failing fast then).
    #[cold]
    pub(crate) fn refused_when_polled(&self, now: Instant) -> Rejected {
        let refusal = self.core.fails_fast(now).unwrap_or(Refusal {
            // It stopped failing fast since: ask again.
            reason: "circuit open when polled",
            retry_after: Duration::ZERO,
        });
        self.rejected(refusal)
    }

    /// Records the outcome of a tracked call. The common case (a success
    /// into a count window) is inlined and reports nothing.
    #[inline(always)]
    pub(crate) fn record(&self, permit: Permit, outcome: Outcome) {
        self.metrics.call(outcome);
        match self.core.record_fast(permit, outcome.is_failure()) {
            Recorded::Done => {}
            Recorded::Evaluate(ctrl) => {
                if let Some(t) = self.core.evaluate_count(ctrl, &Instant::now) {
                    self.emit(t);
                }
            }
            Recorded::Not => self.record_slow(permit, outcome),
        }
    }

    #[inline]
    fn record_slow(&self, permit: Permit, outcome: Outcome) {
        let slow = self.core.is_slow(&permit, &Instant::now);
        if let Some(t) = self
            .core
            .record_slow(&permit, outcome.is_failure(), slow, &Instant::now)
        {
            self.emit(t);
        }
    }

    /// Records the outcome of a tracked call that was known only after its
    /// response (a status in trailers): `slow` was measured when the
    /// response came.
    pub(crate) fn record_late(&self, permit: Permit, outcome: Outcome, slow: bool) {
        self.metrics.call(outcome);
        let failure = outcome.is_failure();
        let transition = match self.core.record_fast(permit, failure) {
            Recorded::Done => None,
            Recorded::Evaluate(ctrl) => self.core.evaluate_count(ctrl, &Instant::now),
            Recorded::Not => self.core.record_slow(&permit, failure, slow, &Instant::now),
        };
        if let Some(t) = transition {
            self.emit(t);
        }
    }

    /// Gives back a cancelled call's probe slot.
    pub(crate) fn release(&self, permit: &Permit) {
        self.core.release(permit);
    }

    /// The breaker's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    #[cold]
    pub(crate) fn emit(&self, t: Transition) {
        tracing::info!(
            name = %self.name,
            endpoint = self.endpoint(),
            from = t.from().as_str(),
            to = t.to().as_str(),
            reason = t.reason(),
            "circuit breaker state changed"
        );
        self.metrics.transition(t.to());
        // Reports run after the transition lock is released, so two of them
        // may arrive out of order: the watch and the state gauge keep the
        // newest state. Both are updated under the watch's lock, and only by
        // a transition newer than the last one published.
        self.state_tx.send_if_modified(|state| {
            let published = self.published_epoch.load(Ordering::Relaxed);
            if t.epoch() <= published {
                return false;
            }
            self.published_epoch.store(t.epoch(), Ordering::Relaxed);
            self.metrics.set_state(t.to());
            let changed = *state != t.to();
            *state = t.to();
            changed
        });
        let _ = self.events.send(t);
    }

    fn set_state(&self, to: CircuitState) {
        if let Some(t) = self.core.set_state(to, Instant::now()) {
            self.emit(t);
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // An endpoint's breaker: its registry forgets it (unless the key has
        // a new state already) and its state gauges go to 0.
        if let Some(endpoint) = &self.endpoint {
            endpoint.registry.forget(&endpoint.key, &self.metrics);
        }
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint())
            .field("state", &self.core.state())
            .finish_non_exhaustive()
    }
}

// === impl CircuitBreakerHandle ===

impl CircuitBreakerHandle {
    /// The breaker's name (its `name` metric label).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The endpoint of a breaker kept per endpoint by
    /// [`EndpointBreakers`](crate::EndpointBreakers) (its `endpoint` metric
    /// label); `None` for a [`CircuitBreakerLayer`](crate::CircuitBreakerLayer)'s own.
    pub fn endpoint(&self) -> Option<&str> {
        self.shared.endpoint()
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        self.shared.core.state()
    }

    /// Changes the breaker's settings in place, for the calls that come
    /// next: the failure and slow-call thresholds, the slow-call duration,
    /// the minimum of calls, the open duration and its backoff, the
    /// half-open probes and period, the recovery ramp, and the threshold of
    /// a consecutive-failures window.
    ///
    /// Nothing else is touched: the window keeps its counts, the state stays
    /// (an open period already running ends when it was due to; the next
    /// one uses the new duration), the switches and the events stay. The
    /// window is judged by the new thresholds at the next recorded failure
    /// (a success never opens a circuit). A call deciding while the change
    /// lands may see some old and some new values.
    ///
    /// Returns the settings that differ but cannot change at run time: the
    /// `name` (its metric labels) and the `window`'s kind and size (its
    /// counts would be lost). They keep their old values; build a new
    /// breaker to change them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
    ///
    /// let layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
    /// let stricter = CircuitBreakerConfig::builder()
    ///     .failure_rate_threshold(20.0)
    ///     .open_for(Duration::from_secs(5))
    ///     .build()?;
    /// assert!(layer.handle().reconfigure(&stricter).is_empty());
    /// # Ok::<_, resilience_core::ConfigError>(())
    /// ```
    pub fn reconfigure(&self, config: &CircuitBreakerConfig) -> Vec<&'static str> {
        let mut restart_only = Vec::new();
        if config.name() != &*self.shared.name {
            restart_only.push("name");
        }
        restart_only.extend(self.shared.core.reconfigure(config));
        restart_only
    }

    /// A snapshot of the state and the window's counts.
    pub fn snapshot(&self) -> CircuitBreakerSnapshot {
        let now = Instant::now();
        let core = &self.shared.core;
        let stats = core.stats(now);
        CircuitBreakerSnapshot {
            state: core.state(),
            calls: stats.calls,
            failures: stats.failures,
            slow_calls: stats.slow,
            time_until_half_open: core.time_until_half_open(now),
            consecutive_opens: core.consecutive_opens(),
            probes_in_use: core.probes_in_use(),
            ramping: core.is_ramping(),
        }
    }

    /// Subscribes to transition events (the last 64 are buffered per
    /// receiver; a slow receiver sees `Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.shared.events.subscribe()
    }

    /// Watches the current state (only the latest value is kept).
    pub fn watch(&self) -> watch::Receiver<CircuitState> {
        self.shared.state_tx.subscribe()
    }

    /// Waits until the circuit lets every call through: closed and past its
    /// recovery ramp (if any), disabled, or metrics-only.
    pub async fn closed(&self) {
        let mut rx = self.watch();
        loop {
            let closed = rx
                .wait_for(|s| {
                    matches!(
                        s,
                        CircuitState::Closed | CircuitState::Disabled | CircuitState::MetricsOnly
                    )
                })
                .await
                .map(|s| *s);
            if closed.is_err() {
                return; // the breaker is gone
            }
            if self.lets_every_call_through() {
                return;
            }
            // Ramping: wait for its end, or for a change of state.
            if let Some(left) = self.shared.core.ramp_remaining(Instant::now()) {
                let _ = tokio::time::timeout(left, rx.changed()).await;
            }
        }
    }

    /// Whether every call goes through right now: closed and not ramping,
    /// disabled, or metrics-only. Reads the clock only while ramping.
    pub(crate) fn lets_every_call_through(&self) -> bool {
        let core = &self.shared.core;
        match core.state() {
            CircuitState::Closed => core.ramp_remaining(Instant::now()).is_none(),
            CircuitState::Disabled | CircuitState::MetricsOnly => true,
            _ => false,
        }
    }

    /// Holds the circuit open until [`reset`](Self::reset) or another switch:
    /// every call fails fast, with the configured first open period
    /// ([`open_for`](crate::CircuitBreakerConfigBuilder::open_for)) as its
    /// `retry_after` (an HTTP 503 carries it as `Retry-After`).
    pub fn force_open(&self) {
        self.shared.set_state(CircuitState::ForcedOpen);
    }

    /// Lets every call through and records nothing.
    pub fn disable(&self) {
        self.shared.set_state(CircuitState::Disabled);
    }

    /// Records calls (metrics, snapshot) but never opens.
    pub fn metrics_only(&self) {
        self.shared.set_state(CircuitState::MetricsOnly);
    }

    /// Back to normal operation: closed, with an empty window and the
    /// backoff reset.
    pub fn reset(&self) {
        self.shared.set_state(CircuitState::Closed);
    }

    /// Opens the circuit now, as if the threshold had been crossed (it will
    /// half-open after the open period).
    pub fn trip(&self) {
        self.shared.set_state(CircuitState::Open);
    }
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("name", &self.shared.name)
            .field("endpoint", &self.endpoint())
            .field("state", &self.state())
            .finish()
    }
}

// === impl CircuitBreakerSnapshot ===

impl CircuitBreakerSnapshot {
    /// The state.
    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// Calls in the window (in consecutive mode: the current failure run).
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Failures in the window.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Slow calls in the window.
    pub fn slow_calls(&self) -> u64 {
        self.slow_calls
    }

    /// Failure rate in percent, if the window holds any call.
    pub fn failure_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.failures as f64 * 100.0 / self.calls as f64)
    }

    /// Slow-call rate in percent, if the window holds any call.
    pub fn slow_call_rate(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.slow_calls as f64 * 100.0 / self.calls as f64)
    }

    /// While open: the time left before the circuit half-opens.
    pub fn time_until_half_open(&self) -> Option<Duration> {
        self.time_until_half_open
    }

    /// Opens since the circuit last closed (drives the backoff).
    pub fn consecutive_opens(&self) -> u32 {
        self.consecutive_opens
    }

    /// While half-open: probe slots in use.
    pub fn probes_in_use(&self) -> u32 {
        self.probes_in_use
    }

    /// Whether the recovery ramp is running.
    pub fn is_ramping(&self) -> bool {
        self.ramping
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    /// The state gauges' values, from one snapshot (taking one resets what
    /// it read).
    fn gauges(snapshotter: &Snapshotter) -> impl Fn(&str) -> Option<f64> {
        let snapshot = snapshotter.snapshot().into_vec();
        move |state| {
            snapshot.iter().find_map(|(k, _, _, v)| {
                let found = k.key().name() == "resilience_circuit_breaker_state"
                    && k.key()
                        .labels()
                        .any(|l| l.key() == "state" && l.value() == state);
                match v {
                    DebugValue::Gauge(g) if found => Some(g.into_inner()),
                    _ => None,
                }
            })
        }
    }

    /// A probe's close races with `force_open`: the force-open is published
    /// first, the close's report arrives late. The watch and the gauge keep
    /// the newer state.
    #[tokio::test(start_paused = true)]
    async fn late_reports_do_not_overwrite_newer_states() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _guard = metrics::set_default_local_recorder(&recorder);

        let config = CircuitBreakerConfig::builder()
            .half_open_probes(1)
            .build()
            .unwrap();
        let shared = Shared::new(&config, None);
        let now = Instant::now();
        shared.emit(shared.core.set_state(CircuitState::HalfOpen, now).unwrap());
        // the probe closes the circuit (its report is delayed)...
        let probe = shared.core.acquire(&|| now).0.unwrap();
        let close = shared.core.record(&probe, false, false, &|| now).unwrap();
        assert_eq!(close.to(), CircuitState::Closed);
        // ...while the operator forces it open, reported first
        let forced = shared
            .core
            .set_state(CircuitState::ForcedOpen, now)
            .unwrap();
        shared.emit(forced);
        shared.emit(close);

        assert_eq!(shared.core.state(), CircuitState::ForcedOpen);
        assert_eq!(*shared.state_tx.borrow(), CircuitState::ForcedOpen);
        if cfg!(feature = "metrics") {
            let gauge = gauges(&snapshotter);
            assert_eq!(gauge("forced_open"), Some(1.0));
            assert_eq!(gauge("closed"), Some(0.0));
        }
    }
}
