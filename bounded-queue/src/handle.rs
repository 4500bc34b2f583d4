use std::fmt;

use crate::config::BoundedQueueConfig;
use crate::state::{BoundedQueueSnapshot, Shared};
use crate::sync::Arc;

/// A read-only view of a queue's state, for dashboards and health checks.
///
/// Cheap to clone; it shares the queue with the layer and every service.
#[derive(Clone)]
pub struct BoundedQueueHandle {
    shared: Arc<Shared>,
}

// === impl BoundedQueueHandle ===

impl BoundedQueueHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The queue's name (its `name` metric label).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Changes the queue's settings in place, for the requests that come
    /// next: the concurrency limit (unless the limit is adaptive), the
    /// capacity, `max_wait`, CoDel (on or off, target, interval), LIFO,
    /// `yield_margin`, `target_service_times` and `retry_after`.
    ///
    /// The requests running and waiting are kept: a higher limit admits
    /// waiters at once; a lower one admits nobody until enough running
    /// requests finish; a smaller capacity refuses new arrivals until the
    /// queue is shorter but leaves the waiters in it; a shorter `max_wait`
    /// applies to every waiter from its next check (at the latest when its
    /// timer fires).
    ///
    /// Returns the settings that differ but cannot change at run time:
    /// `name` (its metric labels), `reserved` (the fast path's priority
    /// tracking) and whether the limit is adaptive. They keep their old
    /// values.
    ///
    /// ```
    /// use resilience_bounded_queue::{BoundedQueueConfig, BoundedQueueLayer};
    ///
    /// let layer = BoundedQueueLayer::new(BoundedQueueConfig::default());
    /// let wider = BoundedQueueConfig::builder().concurrency(200).build()?;
    /// assert!(layer.handle().reconfigure(&wider).is_empty());
    /// assert_eq!(layer.handle().snapshot().limit, 200);
    /// # Ok::<_, resilience_core::ConfigError>(())
    /// ```
    pub fn reconfigure(&self, config: &BoundedQueueConfig) -> Vec<&'static str> {
        self.shared.reconfigure(config)
    }

    /// The configuration in force: the one the queue was built with, or
    /// the last given to [`reconfigure`](Self::reconfigure) with its
    /// restart-only settings at their old values.
    pub fn config(&self) -> BoundedQueueConfig {
        self.shared.config()
    }

    /// The state now: slots taken, waiters, limit, overload, rejections.
    ///
    /// Reads atomics, and holds the queue's lock for a few reads of its
    /// lengths: a request admitted at once never takes that lock, and a
    /// queued one waits at most that long.
    pub fn snapshot(&self) -> BoundedQueueSnapshot {
        self.shared.snapshot()
    }
}

impl fmt::Debug for BoundedQueueHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BoundedQueueHandle")
            .field(&self.shared)
            .finish()
    }
}
