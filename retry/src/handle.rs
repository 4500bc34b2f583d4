use std::fmt;
use std::sync::Arc;

use crate::budget::{BudgetSnapshot, RetryBudget};

/// A read-only handle on a [`RetryLayer`](crate::RetryLayer)'s budget and
/// counters, for dashboards and health checks.
///
/// Cheap to clone; every clone sees the same state.
///
/// ```
/// use resilience_retry::{RetryConfig, RetryLayer};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let layer = RetryLayer::new(RetryConfig::builder().name("inventory").build().unwrap());
/// let handle = layer.handle();
/// let snap = handle.snapshot();
/// assert_eq!(handle.name(), "inventory");
/// assert_eq!(snap.level(), 1.0); // nothing spent
/// assert_eq!(snap.available(), 100.0); // the floor: 10/s over 10 s
/// assert_eq!(snap.burst_available(), 10.0); // 10/s within the burst window (1 s)
/// assert_eq!(snap.attempts_total(), 0);
/// # }
/// ```
#[derive(Clone)]
pub struct RetryHandle {
    pub(crate) name: Arc<str>,
    pub(crate) budget: RetryBudget,
}

// === impl RetryHandle ===

impl RetryHandle {
    /// The layer's name (its `name` metric label).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The budget the layer draws retries from.
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// The budget and counters now. The counters are the budget's: with a
    /// budget shared between layers, they count the requests and retries of
    /// all of them.
    pub fn snapshot(&self) -> BudgetSnapshot {
        self.budget.snapshot()
    }
}

impl fmt::Debug for RetryHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryHandle")
            .field("name", &self.name)
            .field("budget", &self.budget)
            .finish()
    }
}
