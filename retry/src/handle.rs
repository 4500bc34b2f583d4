use std::fmt;
use std::sync::Arc;

use crate::budget::{BudgetSnapshot, RetryBudget};
use crate::config::RetryConfig;
use crate::layer::Tunables;

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
    pub(crate) tunables: Arc<Tunables>,
}

// === impl RetryHandle ===

impl RetryHandle {
    /// The layer's name (its `name` metric label).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Changes the layer's settings in place, for the requests and retries
    /// that come next: `max_attempts`, the backoff (base, max, multiplier,
    /// jitter), the attempt timeout, `max_pushback`, and the budget's
    /// `ratio`, `min_per_second` and reserves. The budget keeps the requests
    /// and retries it counted; a request already retrying finishes with the
    /// settings of its next decision.
    ///
    /// Returns the settings that differ but cannot change at run time:
    /// `name`, `max_replay_body`, `retryable` (statuses and gRPC codes),
    /// `grpc_methods`, `budget.window` (with the burst window). They keep
    /// their old values.
    ///
    /// ```
    /// use resilience_retry::{RetryConfig, RetryLayer};
    ///
    /// let layer = RetryLayer::new(RetryConfig::default());
    /// let fewer = RetryConfig::builder().max_attempts(2).build()?;
    /// assert!(layer.handle().reconfigure(&fewer).is_empty());
    /// # Ok::<_, resilience_core::ConfigError>(())
    /// ```
    pub fn reconfigure(&self, config: &RetryConfig) -> Vec<&'static str> {
        self.tunables.reconfigure(config, &self.budget)
    }

    /// The configuration in force: the one the layer was built with, or
    /// the last given to [`reconfigure`](Self::reconfigure) with its
    /// restart-only settings at their old values.
    pub fn config(&self) -> RetryConfig {
        self.tunables.config()
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
