//! Metric handles, created once per breaker.

use resilience_core::Outcome;

use crate::state::CircuitState;

#[cfg(feature = "metrics")]
use resilience_core::names::{
    CIRCUIT_BREAKER_CALLS_TOTAL, CIRCUIT_BREAKER_STATE, CIRCUIT_BREAKER_TRANSITIONS_TOTAL,
    LABEL_NAME, LABEL_OUTCOME, LABEL_STATE, LABEL_TO,
};

/// Label: the endpoint of a breaker kept per endpoint
/// ([`EndpointBreakers`](crate::EndpointBreakers)), beside `name`.
#[cfg(feature = "metrics")]
pub(crate) const LABEL_ENDPOINT: &str = "endpoint";

/// The breaker's metric handles (no-ops without the `metrics` feature).
#[derive(Debug)]
pub(crate) struct Metrics {
    #[cfg(feature = "metrics")]
    success: metrics::Counter,
    #[cfg(feature = "metrics")]
    failure: metrics::Counter,
    #[cfg(feature = "metrics")]
    rejected: metrics::Counter,
    #[cfg(feature = "metrics")]
    states: [metrics::Gauge; 6],
    #[cfg(feature = "metrics")]
    transitions: [metrics::Counter; 6],
}

impl Metrics {
    /// The handles of the breaker `name`, labelled with its `endpoint` too
    /// when it is kept per endpoint.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(name: &str, endpoint: Option<&str>, initial: CircuitState) -> Self {
        #[cfg(feature = "metrics")]
        {
            metrics::describe_gauge!(
                CIRCUIT_BREAKER_STATE,
                metrics::Unit::Count,
                "Circuit breaker state, one series per state set to 1 for the current one."
            );
            metrics::describe_counter!(
                CIRCUIT_BREAKER_TRANSITIONS_TOTAL,
                metrics::Unit::Count,
                "Circuit breaker state transitions, by target state."
            );
            metrics::describe_counter!(
                CIRCUIT_BREAKER_CALLS_TOTAL,
                metrics::Unit::Count,
                "Calls through a circuit breaker, by outcome (success, failure, rejected)."
            );
            let mut base = vec![metrics::Label::new(LABEL_NAME, name.to_owned())];
            if let Some(endpoint) = endpoint {
                base.push(metrics::Label::new(LABEL_ENDPOINT, endpoint.to_owned()));
            }
            let labels = |key: &'static str, value: &'static str| {
                let mut labels = base.clone();
                labels.push(metrics::Label::new(key, value));
                labels
            };
            let calls = |outcome| {
                metrics::counter!(CIRCUIT_BREAKER_CALLS_TOTAL, labels(LABEL_OUTCOME, outcome))
            };
            let m = Self {
                success: calls("success"),
                failure: calls("failure"),
                rejected: calls("rejected"),
                states: CircuitState::ALL.map(|s| {
                    metrics::gauge!(CIRCUIT_BREAKER_STATE, labels(LABEL_STATE, s.as_str()))
                }),
                transitions: CircuitState::ALL.map(|s| {
                    metrics::counter!(
                        CIRCUIT_BREAKER_TRANSITIONS_TOTAL,
                        labels(LABEL_TO, s.as_str())
                    )
                }),
            };
            m.set_state(initial);
            m
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    /// Counts a completed call (a caller error is a success for health).
    #[inline]
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn call(&self, outcome: Outcome) {
        #[cfg(feature = "metrics")]
        if outcome == Outcome::Failure {
            self.failure.increment(1);
        } else {
            self.success.increment(1);
        }
    }

    /// Counts a call refused by the breaker.
    #[inline]
    pub(crate) fn rejected(&self) {
        #[cfg(feature = "metrics")]
        self.rejected.increment(1);
    }

    /// Counts a transition to `to`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn transition(&self, to: CircuitState) {
        #[cfg(feature = "metrics")]
        self.transitions[to.index()].increment(1);
    }

    /// Sets every state gauge to 0: the breaker is gone (an endpoint's,
    /// after the endpoint left).
    pub(crate) fn clear_state(&self) {
        #[cfg(feature = "metrics")]
        for gauge in &self.states {
            gauge.set(0.0);
        }
    }

    /// Sets the one-hot state gauge.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn set_state(&self, current: CircuitState) {
        #[cfg(feature = "metrics")]
        for s in CircuitState::ALL {
            self.states[s.index()].set(if s == current { 1.0 } else { 0.0 });
        }
    }
}
