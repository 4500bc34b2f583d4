use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use resilience_core::{BoxError, ClassifyOutcome, Deadline, Priority, Rejected, RejectionKind};
use tokio::time::Instant;
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::ThrottleShared;
use super::state::random;
use crate::{CircuitBreakerHandle, CircuitState};

use super::config::ThrottleMode;

/// Refuses a share of calls on the client side. See the [module docs](super).
///
/// Admission depends on the request (its priority), so the service reports
/// the inner service's readiness and decides in `call`.
pub struct Throttle<S, C, P> {
    inner: S,
    shared: Arc<ThrottleShared>,
    classify: C,
    read: P,
    breaker: Option<CircuitBreakerHandle>,
}

/// Finds a request's [`Priority`] (and, for waiting, its [`Deadline`]).
///
/// Implemented by [`PriorityFromExtensions`] (for `http::Request<B>`) and by
/// closures `Fn(&Req) -> Priority`.
pub trait ReadPriority<Req> {
    /// The request's priority.
    fn priority(&self, req: &Req) -> Priority;

    /// The request's deadline, if known (bounds a wait).
    fn deadline(&self, req: &Req) -> Option<Deadline> {
        let _ = req;
        None
    }
}

/// Reads [`Priority`] and [`Deadline`] from `http::Request` extensions (where
/// the correlation layer puts them); a request without one is
/// [`Priority::Critical`], the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct PriorityFromExtensions;

// === impl Throttle ===

impl<S, C, P> Throttle<S, C, P> {
    pub(crate) fn with_parts(
        inner: S,
        shared: Arc<ThrottleShared>,
        classify: C,
        read: P,
        breaker: Option<CircuitBreakerHandle>,
    ) -> Self {
        Self {
            inner,
            shared,
            classify,
            read,
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

fn lets_calls_through(state: CircuitState) -> bool {
    matches!(
        state,
        CircuitState::Closed | CircuitState::Disabled | CircuitState::MetricsOnly
    )
}

impl<S, C, P, Req> Service<Req> for Throttle<S, C, P>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
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

    fn call(&mut self, req: Req) -> Self::Future {
        let priority = self.read.priority(&req);
        let state = &self.shared.state;

        if let (Some(max_wait), Some(breaker)) = (self.shared.max_wait, &self.breaker) {
            if state.is_throttled(priority) && !lets_calls_through(breaker.state()) {
                return self.wait(req, priority, max_wait, breaker.clone());
            }
        }

        let (admitted, now) = match state.mode {
            ThrottleMode::Fixed => (state.admit(priority, &Instant::now, random), None),
            ThrottleMode::Adaptive => {
                // Decide on the window as it was, then count this request
                // (refused or not): a cold window never throttles its first
                // call.
                let now = Instant::now();
                let admitted = state.admit(priority, &|| now, random);
                state.window.request(now);
                (admitted, Some(now))
            }
        };
        if !admitted {
            self.shared.count_rejected(priority, "throttled");
            return ResponseFuture::rejected(
                Rejected::new(RejectionKind::Throttled, "client-side throttling")
                    .with_retry_after(state.retry_after),
            );
        }
        // An accept is counted in the bucket of its request.
        let accept = now.map(|now| (self.shared.clone(), self.classify.clone(), now));
        ResponseFuture::new(self.inner.call(req), accept)
    }
}

impl<S, C, P> Throttle<S, C, P> {
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
        P: ReadPriority<Req>,
    {
        let now = Instant::now();
        // A huge `max_wait` (up to `Duration::MAX`) saturates: no limit but
        // the deadline.
        let mut limit = now.checked_add(max_wait);
        if let Some(d) = self.read.deadline(&req) {
            limit = Some(limit.map_or(d.instant(), |l| l.min(d.instant())));
        }
        // A fresh clone: it holds no readiness (nor admission) of its own, and
        // is polled again once the circuit has closed.
        let mut svc = self.inner.clone();
        let shared = self.shared.clone();
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
            if !closed {
                shared.count_rejected(priority, "wait_timeout");
                let r = Rejected::new(RejectionKind::Throttled, "circuit did not close in time")
                    .with_retry_after(shared.state.retry_after);
                return Err(r.into());
            }
            std::future::poll_fn(|cx| svc.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            svc.call(req).await.map_err(Into::into)
        }))
    }
}

impl<S: Clone, C: Clone, P: Clone> Clone for Throttle<S, C, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            classify: self.classify.clone(),
            read: self.read.clone(),
            breaker: self.breaker.clone(),
        }
    }
}

impl<S: fmt::Debug, C, P> fmt::Debug for Throttle<S, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

// === impl PriorityFromExtensions ===

impl<B> ReadPriority<http::Request<B>> for PriorityFromExtensions {
    #[inline]
    fn priority(&self, req: &http::Request<B>) -> Priority {
        req.extensions()
            .get::<Priority>()
            .copied()
            .unwrap_or_default()
    }

    fn deadline(&self, req: &http::Request<B>) -> Option<Deadline> {
        Deadline::from_extensions(req.extensions())
    }
}

impl<F, Req> ReadPriority<Req> for F
where
    F: Fn(&Req) -> Priority,
{
    #[inline]
    fn priority(&self, req: &Req) -> Priority {
        self(req)
    }
}
