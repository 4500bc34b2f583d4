use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::layer::HedgePolicy;
use crate::budget::{BudgetSnapshot, RetryBudget};

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
/// let snap = handle.snapshot();
/// assert_eq!(snap.hedges_total(), 0);
/// assert_eq!(snap.budget().level(), 1.0); // nothing spent
/// ```
#[derive(Clone)]
pub struct HedgeHandle {
    pub(crate) policy: Arc<HedgePolicy>,
}

/// A [`HedgeLayer`](crate::HedgeLayer)'s state at one point in time:
/// the delay, the hedges sent and won, and the budget hedges draw from.
/// From [`HedgeHandle::snapshot`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgeSnapshot {
    delay: Duration,
    delay_learned: bool,
    hedges_total: u64,
    hedges_won_total: u64,
    budget: BudgetSnapshot,
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

    /// The delay, the counters and the budget now. The budget's figures
    /// are the budget's own: shared with a retry layer
    /// ([`HedgeLayer::with_budget`](crate::HedgeLayer::with_budget)), they
    /// count that layer's requests and retries too.
    pub fn snapshot(&self) -> HedgeSnapshot {
        HedgeSnapshot {
            delay: self.delay(),
            delay_learned: self.is_delay_learned(),
            hedges_total: self.hedges_total(),
            hedges_won_total: self.hedges_won_total(),
            budget: self.policy.budget.snapshot(),
        }
    }
}

// === impl HedgeSnapshot ===

impl HedgeSnapshot {
    /// The delay after which a hedge was sent at that time.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Whether [`delay`](Self::delay) was a learned percentile (else the
    /// fixed delay).
    pub fn is_delay_learned(&self) -> bool {
        self.delay_learned
    }

    /// Hedges sent since the layer was built.
    pub fn hedges_total(&self) -> u64 {
        self.hedges_total
    }

    /// Requests answered by a hedge rather than their first attempt.
    pub fn hedges_won_total(&self) -> u64 {
        self.hedges_won_total
    }

    /// The budget hedges draw from: its [`level`](crate::RetryBudgetSnapshot::level),
    /// what is [`available`](crate::RetryBudgetSnapshot::available), its window.
    pub fn budget(&self) -> &BudgetSnapshot {
        &self.budget
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
