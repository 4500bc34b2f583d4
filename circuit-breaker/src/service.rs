use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use resilience_core::{BoxError, ClassifyOutcome, Rejected};
use tokio::time::Instant;
use tower_service::Service;

use crate::future::{Recorder, ResponseFuture};
use crate::handle::{Breaker, CircuitBreakerHandle};

/// Fails fast while its dependency is failing. See the [crate docs](crate).
///
/// Admission is decided in `poll_ready`: when the circuit refuses, the
/// service reports ready without polling the inner service, and `call`
/// returns the rejection without calling it.
pub struct CircuitBreaker<S, C> {
    inner: S,
    breaker: Arc<Breaker<C>>,
    /// The decision of the last `poll_ready` (when not closed), spent by
    /// `call`.
    admitted: Option<Result<Option<Recorder<C>>, Rejected>>,
}

// === impl CircuitBreaker ===

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn with_breaker(inner: S, breaker: Arc<Breaker<C>>) -> Self {
        Self {
            inner,
            breaker,
            admitted: None,
        }
    }

    /// A handle on the breaker's shared state.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle {
            shared: self.breaker.shared.clone(),
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

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: ClassifyOutcome<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Closed (the common case): nothing to reserve, the permit is taken
        // in `call`. Otherwise decide now, so that a refused call neither
        // polls nor calls the inner service, and a probe holds its slot.
        if self.admitted.is_none() && !self.breaker.shared.core.admits_all() {
            let decision = self
                .breaker
                .shared
                .acquire()
                .map(|p| p.map(|p| Recorder::new(self.breaker.clone(), p)));
            self.admitted = Some(decision);
        }
        if let Some(Err(_)) = self.admitted {
            // Refused: ready to fail fast, without polling the inner service.
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                self.admitted = None; // gives a probe slot back
                Poll::Ready(Err(e.into()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        if self.admitted.is_none() {
            // Ready while closed: take the permit now.
            if let Some(permit) = self.breaker.shared.core.acquire_closed(&Instant::now) {
                let recorder = Recorder::new(self.breaker.clone(), permit);
                return ResponseFuture::new(self.inner.call(req), Some(recorder));
            }
        }
        let decision = match self.admitted.take() {
            Some(decision) => decision,
            // The state changed since `poll_ready`: decide now.
            None => self
                .breaker
                .shared
                .acquire()
                .map(|p| p.map(|p| Recorder::new(self.breaker.clone(), p))),
        };
        match decision {
            Ok(recorder) => ResponseFuture::new(self.inner.call(req), recorder),
            Err(rejected) => ResponseFuture::rejected(rejected),
        }
    }
}

impl<S: Clone, C> Clone for CircuitBreaker<S, C> {
    /// Shares the breaker's state; the clone holds no admission of its own.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            admitted: None,
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("state", &self.breaker.shared.core.state())
            .finish_non_exhaustive()
    }
}
