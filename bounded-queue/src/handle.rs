use std::fmt;

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
