use std::task::{Context, Poll};

use resilience_core::timeout::{FromExtensions, ReadDeadline};
use resilience_core::{BoxError, Deadline, Priority};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::handle::BoundedQueueHandle;
use crate::state::{Admit, Shared};
use crate::sync::Arc;

pub use resilience_core::priority::{FixedPriority, PriorityFromExtensions, ReadPriority};

/// Admits each request at once, queues it within bounds, or rejects it at
/// once with a reason. See the [crate docs](crate).
///
/// Cloning shares the queue: every clone admits against the same limit.
#[derive(Debug, Clone)]
pub struct BoundedQueue<S, P = PriorityFromExtensions, D = FromExtensions> {
    inner: S,
    shared: Arc<Shared>,
    read_priority: P,
    read_deadline: D,
}

// === impl BoundedQueue ===

impl<S, P, D> BoundedQueue<S, P, D> {
    pub(crate) fn with_parts(
        inner: S,
        shared: Arc<Shared>,
        read_priority: P,
        read_deadline: D,
    ) -> Self {
        Self {
            inner,
            shared,
            read_priority,
            read_deadline,
        }
    }

    /// A read-only handle on the queue's state.
    pub fn handle(&self) -> BoundedQueueHandle {
        BoundedQueueHandle::new(self.shared.clone())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, P, D, Req> Service<Req> for BoundedQueue<S, P, D>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: ReadPriority<Req>,
    D: ReadDeadline<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Admission is decided per request, in `call` and the response
        // future; only the inner service's own readiness is passed on.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline(always)]
    fn call(&mut self, req: Req) -> Self::Future {
        call(
            &self.shared,
            &mut self.inner,
            &self.read_priority,
            &self.read_deadline,
            req,
        )
    }
}

/// Admission for one request against `shared`, then the inner call.
#[inline(always)]
pub(crate) fn call<S, P, D, Req>(
    shared: &Arc<Shared>,
    inner: &mut S,
    read_priority: &P,
    read_deadline: &D,
    req: Req,
) -> ResponseFuture<S, Req>
where
    S: Service<Req> + Clone,
    P: ReadPriority<Req>,
    D: ReadDeadline<Req>,
{
    // The priority matters on the fast path only for reserved shares.
    let fast_priority = if shared.tracks_priority() {
        read_priority.read_priority(&req)
    } else {
        Priority::Critical
    };
    match shared.try_fast(fast_priority) {
        Some(permit) => ResponseFuture::called(inner.call(req), permit),
        None => call_slow(shared, inner, read_priority, read_deadline, req),
    }
}

/// Admission when a slot is not free at once: kept out of line so the
/// request is not copied around on the fast path.
#[inline(never)]
fn call_slow<S, P, D, Req>(
    shared: &Arc<Shared>,
    inner: &mut S,
    read_priority: &P,
    read_deadline: &D,
    req: Req,
) -> ResponseFuture<S, Req>
where
    S: Service<Req> + Clone,
    P: ReadPriority<Req>,
    D: ReadDeadline<Req>,
{
    let priority = read_priority.read_priority(&req);
    let deadline = read_deadline.read_deadline(&req).map(Deadline::instant);
    match shared.admit(priority, deadline) {
        Err(rejected) => ResponseFuture::rejected(rejected),
        Ok(Admit::Now(permit)) => ResponseFuture::called(inner.call(req), permit),
        Ok(Admit::Queued(waiter)) => {
            // The ready service goes with the request; `self` keeps a fresh
            // clone, to be polled ready before the next call.
            let fresh = inner.clone();
            let ready = std::mem::replace(inner, fresh);
            ResponseFuture::waiting(waiter, ready, req)
        }
    }
}
