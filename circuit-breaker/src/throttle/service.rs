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
use super::layer::{NoWait, ThrottleShared, WaitFor};
use crate::CircuitBreakerHandle;

/// Refuses a share of calls on the client side. See the [module docs](super).
///
/// Admission depends on the request (its priority), so the service reports
/// the inner service's readiness and decides in `call`.
///
/// `W` is [`NoWait`] (the default: a refused call fails at once) or
/// [`WaitFor`] (paired with a breaker by
/// [`ThrottleLayer::wait_for`](super::ThrottleLayer::wait_for)). Only the
/// latter asks the inner service to be `Clone + Send + 'static` (a waiting
/// call polls a clone of it from a boxed, `Send` future), its future and
/// response to be `Send + 'static`, and the request to be `Send + 'static`;
/// a throttle that never waits works over any service.
pub struct Throttle<S, C, P, D, W = NoWait> {
    inner: S,
    shared: Arc<ThrottleShared>,
    classify: C,
    read: P,
    read_deadline: D,
    wait: W,
}

// === impl Throttle ===

impl<S, C, P, D, W> Throttle<S, C, P, D, W> {
    pub(crate) fn with_parts(
        inner: S,
        shared: Arc<ThrottleShared>,
        classify: C,
        read: P,
        read_deadline: D,
        wait: W,
    ) -> Self {
        Self {
            inner,
            shared,
            classify,
            read,
            read_deadline,
            wait,
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

    /// The throttle's admission of a call of `priority` now: the inner
    /// call, or the refusal.
    #[inline]
    fn admit<Req>(
        &mut self,
        req: Req,
        priority: Priority,
    ) -> ResponseFuture<S::Future, C, S::Response>
    where
        S: Service<Req>,
        C: Clone,
    {
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

impl<S, C, P, D, Req> Service<Req> for Throttle<S, C, P, D, NoWait>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: ClassifyOutcome<S::Response> + Clone,
    P: ReadPriority<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, S::Response>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let priority = self.read.read_priority(&req);
        self.admit(req, priority)
    }
}

impl<S, C, P, D, Req> Service<Req> for Throttle<S, C, P, D, WaitFor>
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
        if let Some(max_wait) = self.shared.max_wait {
            let breaker = &self.wait.0;
            if self.shared.state.is_throttled(priority) && !breaker.lets_every_call_through() {
                let breaker = breaker.clone();
                return self.wait(req, priority, max_wait, breaker);
            }
        }
        self.admit(req, priority)
    }
}

impl<S, C, P, D> Throttle<S, C, P, D, WaitFor> {
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

impl<S: Clone, C: Clone, P: Clone, D: Clone, W: Clone> Clone for Throttle<S, C, P, D, W> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            classify: self.classify.clone(),
            read: self.read.clone(),
            read_deadline: self.read_deadline.clone(),
            wait: self.wait.clone(),
        }
    }
}

impl<S: fmt::Debug, C, P, D, W> fmt::Debug for Throttle<S, C, P, D, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}
