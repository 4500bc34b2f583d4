//! Metric handles of a hedge layer, created once per layer.

#[cfg(feature = "metrics")]
use resilience_core::names::{LABEL_NAME, RETRY_HEDGES_TOTAL, RETRY_HEDGES_WON_TOTAL};

/// The layer's metric handles (no-ops without the `metrics` feature).
#[derive(Debug, Clone)]
pub(crate) struct HedgeMetrics {
    #[cfg(feature = "metrics")]
    hedges: metrics::Counter,
    #[cfg(feature = "metrics")]
    won: metrics::Counter,
}

// === impl HedgeMetrics ===

impl HedgeMetrics {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(name: &str) -> Self {
        #[cfg(feature = "metrics")]
        {
            metrics::describe_counter!(
                RETRY_HEDGES_TOTAL,
                metrics::Unit::Count,
                "Hedges sent: extra attempts of requests whose earlier attempts had not answered."
            );
            metrics::describe_counter!(
                RETRY_HEDGES_WON_TOTAL,
                metrics::Unit::Count,
                "Requests answered by a hedge rather than the first attempt."
            );
            Self {
                hedges: metrics::counter!(RETRY_HEDGES_TOTAL, LABEL_NAME => name.to_owned()),
                won: metrics::counter!(RETRY_HEDGES_WON_TOTAL, LABEL_NAME => name.to_owned()),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }

    pub(crate) fn hedge(&self) {
        #[cfg(feature = "metrics")]
        self.hedges.increment(1);
    }

    pub(crate) fn won(&self) {
        #[cfg(feature = "metrics")]
        self.won.increment(1);
    }
}
