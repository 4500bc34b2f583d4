use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;

use super::future::ResponseFuture;
use super::handle::{ChaosHandle, Decision, Shared};
use crate::error::BoxError;
use crate::priority::{PriorityFromExtensions, ReadPriority};

/// Injects the fault its [`ChaosHandle`] sets: latency, errors, or no
/// answer. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct Chaos<S, P = PriorityFromExtensions> {
    inner: S,
    shared: Arc<Shared>,
    read_priority: P,
}

// === impl Chaos ===

impl<S, P> Chaos<S, P> {
    pub(super) fn with_parts(inner: S, shared: Arc<Shared>, read_priority: P) -> Self {
        Self {
            inner,
            shared,
            read_priority,
        }
    }

    /// The handle that switches this service's fault (shared with its
    /// layer).
    pub fn handle(&self) -> ChaosHandle {
        ChaosHandle {
            shared: self.shared.clone(),
        }
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

impl<S, P, Req> Service<Req> for Chaos<S, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: ReadPriority<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        if !self.shared.is_active() {
            return ResponseFuture::passthrough(self.inner.call(req));
        }
        self.call_active(req)
    }
}

impl<S, P> Chaos<S, P> {
    /// A fault is set: draw, then inject or pass through.
    #[inline(never)]
    fn call_active<Req>(&mut self, req: Req) -> ResponseFuture<S::Future>
    where
        S: Service<Req>,
        P: ReadPriority<Req>,
    {
        let read = &self.read_priority;
        match self.shared.decide(|| read.read_priority(&req)) {
            Decision::Pass => ResponseFuture::passthrough(self.inner.call(req)),
            Decision::Abort => ResponseFuture::aborted(),
            Decision::Inject { delay: None, .. } => ResponseFuture::failed(),
            Decision::Inject {
                delay: Some(delay),
                fail,
            } => {
                let until = Instant::now().checked_add(delay);
                let inner = (!fail).then(|| self.inner.call(req));
                ResponseFuture::delayed(until, inner)
            }
        }
    }
}
