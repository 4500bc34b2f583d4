use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use resilience_core::timeout::ReadDeadline;
use resilience_core::{
    BoxError, ClassifyOutcome, Outcome, Priority, ReadPriority, Rejected, RejectionKind,
};
use tokio::time::Instant;
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::ThrottleShared;
use crate::CircuitBreakerHandle;

/// Refuses a share of calls on the client side. See the [module docs](super).
///
/// Admission depends on the request (its priority), so the service reports
/// the inner service's readiness and decides in `call`.
pub struct Throttle<S, C, P, D> {
    inner: S,
    shared: Arc<ThrottleShared>,
    classify: C,
    read: P,
    read_deadline: D,
    breaker: Option<CircuitBreakerHandle>,
}

// === impl Throttle ===

impl<S, C, P, D> Throttle<S, C, P, D> {
    pub(crate) fn with_parts(
        inner: S,
        shared: Arc<ThrottleShared>,
        classify: C,
        read: P,
        read_deadline: D,
        breaker: Option<CircuitBreakerHandle>,
    ) -> Self {
        Self {
            inner,
            shared,
            classify,
            read,
            read_deadline,
            breaker,
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

impl<S, C, P, D, Req> Service<Req> for Throttle<S, C, P, D>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
    C: ClassifyOutcome<S::Response> + Clone + Send + 'static,
    P: ReadPriority<Req>,
    D: ReadDeadline<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, S::Response>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let priority = self.read.read_priority(&req);

        if let (Some(max_wait), Some(breaker)) = (self.shared.max_wait, &self.breaker) {
            if self.shared.state.is_throttled(priority) && !breaker.lets_every_call_through() {
                return self.wait(req, priority, max_wait, breaker.clone());
            }
        }

        match self.shared.admit(priority) {
            // An accept is counted in the bucket of its request.
            Ok(bucket) => {
                let accept =
                    bucket.map(|bucket| (self.shared.clone(), self.classify.clone(), bucket));
                ResponseFuture::new(self.inner.call(req), accept)
            }
            Err(rejected) => ResponseFuture::rejected(rejected),
        }
    }
}

impl<S, C, P, D> Throttle<S, C, P, D> {
    #[cold]
    fn wait<Req>(
        &mut self,
        req: Req,
        priority: Priority,
        max_wait: std::time::Duration,
        breaker: CircuitBreakerHandle,
    ) -> ResponseFuture<S::Future, C, S::Response>
    where
        S: Service<Req> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Response: Send + 'static,
        S::Error: Into<BoxError>,
        Req: Send + 'static,
        C: ClassifyOutcome<S::Response> + Clone + Send + 'static,
        D: ReadDeadline<Req>,
    {
        let shared = self.shared.clone();
        let Some(place) = shared.try_wait() else {
            shared.count_rejected(priority, "waiters_full");
            return ResponseFuture::rejected(
                Rejected::new(RejectionKind::Throttled, "too many waiting calls")
                    .with_retry_after(shared.state.retry_after),
            );
        };
        let now = Instant::now();
        // `max_wait` is at most 365 days (validated), which any instant can
        // take; should the sum still overflow, there is no limit but the
        // deadline.
        let mut limit = now.checked_add(max_wait);
        if let Some(d) = self.read_deadline.read_deadline(&req) {
            limit = Some(limit.map_or(d.instant(), |l| l.min(d.instant())));
        }
        // A fresh clone: it holds no readiness of its own, and is polled
        // again once the circuit has closed.
        let mut svc = self.inner.clone();
        let classify = self.classify.clone();
        tracing::debug!(name = %shared.name, priority = priority.as_str(), "waiting for the circuit to close");
        ResponseFuture::waiting(Box::pin(async move {
            let closed = match limit {
                Some(limit) => tokio::time::timeout_at(limit, breaker.closed())
                    .await
                    .is_ok(),
                None => {
                    breaker.closed().await;
                    true
                }
            };
            drop(place);
            if !closed {
                shared.count_rejected(priority, "wait_timeout");
                let r = Rejected::new(RejectionKind::Throttled, "circuit did not close in time")
                    .with_retry_after(shared.state.retry_after);
                return Err(r.into());
            }
            // Closed: the normal admission, counted in the adaptive window.
            let bucket = shared.admit(priority)?;
            std::future::poll_fn(|cx| svc.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            let result = svc.call(req).await.map_err(Into::into);
            if let Some(bucket) = bucket {
                if classify.classify(result.as_ref()) != Outcome::Failure {
                    shared.state.window.accept(bucket);
                }
            }
            result
        }))
    }
}

impl<S: Clone, C: Clone, P: Clone, D: Clone> Clone for Throttle<S, C, P, D> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            classify: self.classify.clone(),
            read: self.read.clone(),
            read_deadline: self.read_deadline.clone(),
            breaker: self.breaker.clone(),
        }
    }
}

impl<S: fmt::Debug, C, P, D> fmt::Debug for Throttle<S, C, P, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}
