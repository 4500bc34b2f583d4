use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::layer::HedgePolicy;
use crate::budget::RetryBudget;

/// A read-only handle on a [`HedgeLayer`](crate::HedgeLayer)'s counters,
/// delay and budget, for dashboards and tests.
///
/// Cheap to clone; every clone sees the same state.
///
/// ```
/// use std::time::Duration;
/// use resilience_retry::{HedgeConfig, HedgeLayer};
///
/// let layer = HedgeLayer::new(HedgeConfig::builder().name("inventory").build().unwrap());
/// let handle = layer.handle();
/// assert_eq!(handle.name(), "inventory");
/// assert_eq!(handle.delay(), Duration::from_millis(50));
/// assert_eq!(handle.hedges_total(), 0);
/// assert_eq!(handle.hedges_won_total(), 0);
/// ```
#[derive(Clone)]
pub struct HedgeHandle {
    pub(crate) policy: Arc<HedgePolicy>,
}

// === impl HedgeHandle ===

impl HedgeHandle {
    /// The layer's name (its `name` metric label).
    pub fn name(&self) -> &str {
        &self.policy.name
    }

    /// The delay after which a hedge is sent now: the learned percentile,
    /// or the fixed delay.
    pub fn delay(&self) -> Duration {
        self.policy.latencies.delay()
    }

    /// Whether [`delay`](Self::delay) is a learned percentile (else the
    /// fixed delay).
    pub fn is_delay_learned(&self) -> bool {
        self.policy.latencies.is_learned()
    }

    /// Hedges sent since the layer was built.
    pub fn hedges_total(&self) -> u64 {
        self.policy.hedges.load(Ordering::Relaxed)
    }

    /// Requests answered by a hedge rather than their first attempt.
    pub fn hedges_won_total(&self) -> u64 {
        self.policy.won.load(Ordering::Relaxed)
    }

    /// The budget the layer draws hedges from.
    pub fn budget(&self) -> &RetryBudget {
        &self.policy.budget
    }
}

impl fmt::Debug for HedgeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeHandle")
            .field("name", &self.policy.name)
            .field("delay", &self.delay())
            .field("hedges_total", &self.hedges_total())
            .field("hedges_won_total", &self.hedges_won_total())
            .finish()
    }
}
