use resilience_core::timeout::FromExtensions;
use tower_layer::Layer;

use crate::config::BoundedQueueConfig;
use crate::handle::BoundedQueueHandle;
use crate::service::{BoundedQueue, PriorityFromExtensions};
use crate::state::Shared;
use crate::sync::Arc;

/// Applies [`BoundedQueue`] to services.
///
/// Every service this layer produces, and every clone of the layer and of
/// those services, shares one queue and one limit: cloning does not create
/// a new queue. Build one layer per pool of work you want to bound.
#[derive(Debug, Clone)]
pub struct BoundedQueueLayer<P = PriorityFromExtensions, D = FromExtensions> {
    shared: Arc<Shared>,
    read_priority: P,
    read_deadline: D,
}

// === impl BoundedQueueLayer ===

impl BoundedQueueLayer {
    /// A queue with a validated configuration. Install a metrics recorder
    /// before calling this: metric handles are registered here.
    pub fn new(config: BoundedQueueConfig) -> Self {
        Self {
            shared: Arc::new(Shared::new(&config)),
            read_priority: PriorityFromExtensions,
            read_deadline: FromExtensions::new(),
        }
    }
}

impl Default for BoundedQueueLayer {
    /// [`BoundedQueueLayer::new`] with [`BoundedQueueConfig::default`].
    fn default() -> Self {
        Self::new(BoundedQueueConfig::default())
    }
}

impl<P, D> BoundedQueueLayer<P, D> {
    /// Reads request priorities with `read` instead:
    /// [`FixedPriority`](crate::FixedPriority) or a closure
    /// `Fn(&Req) -> Priority`.
    pub fn with_priority<P2>(self, read: P2) -> BoundedQueueLayer<P2, D> {
        BoundedQueueLayer {
            shared: self.shared,
            read_priority: read,
            read_deadline: self.read_deadline,
        }
    }

    /// Reads request deadlines with `read` instead:
    /// [`NoDeadline`](resilience_core::timeout::NoDeadline) or a closure
    /// `Fn(&Req) -> Option<Deadline>`.
    pub fn with_deadline<D2>(self, read: D2) -> BoundedQueueLayer<P, D2> {
        BoundedQueueLayer {
            shared: self.shared,
            read_priority: self.read_priority,
            read_deadline: read,
        }
    }

    /// A read-only handle on the queue's state.
    pub fn handle(&self) -> BoundedQueueHandle {
        BoundedQueueHandle::new(self.shared.clone())
    }
}

impl<S, P: Clone, D: Clone> Layer<S> for BoundedQueueLayer<P, D> {
    type Service = BoundedQueue<S, P, D>;

    fn layer(&self, inner: S) -> Self::Service {
        BoundedQueue::with_parts(
            inner,
            self.shared.clone(),
            self.read_priority.clone(),
            self.read_deadline.clone(),
        )
    }
}
