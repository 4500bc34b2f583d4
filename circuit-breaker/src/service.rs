use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use resilience_core::{BoxError, ClassifyOutcome};
use tokio::time::Instant;
use tower_service::Service;

use crate::error::NotPolled;
use crate::future::{Recorder, ResponseFuture};
use crate::handle::{Breaker, CircuitBreakerHandle};
use crate::state::Permit;

/// Fails fast while its dependency is failing. See the [crate docs](crate).
///
/// `poll_ready` reserves nothing: while the circuit fails fast (open, forced
/// open) it reports ready without polling the inner service, otherwise it
/// reports the inner service's readiness. The permit (a half-open probe
/// slot, a share of a recovery ramp) is taken in `call`, which returns the
/// rejection at once when it is refused. A caller that gets readiness and
/// never calls (a throttle's refusal, a queue's rejection, tower's
/// `ReadyCache`) therefore holds no probe slot.
///
/// A `call` without a `poll_ready` that returned ready just before (a
/// broken `Service` contract) fails with [`NotPolled`], which the breaker
/// does not count.
pub struct CircuitBreaker<S, C> {
    inner: S,
    breaker: Arc<Breaker<C>>,
    /// What the last `poll_ready` found (spent by `call`).
    ready: Ready,
}

/// What the last `poll_ready` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    /// Not polled ready (never polled, or `Pending`, or an error): a call
    /// breaks the contract.
    No,
    /// The inner service is ready.
    Inner,
    /// The circuit failed fast: ready without polling the inner service,
    /// the call is refused.
    FailingFast,
}

// === impl CircuitBreaker ===

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn with_breaker(inner: S, breaker: Arc<Breaker<C>>) -> Self {
        Self {
            inner,
            breaker,
            ready: Ready::No,
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
        // Closed (the common case): one load. While the circuit fails fast,
        // be ready without polling the inner service: `call` rejects.
        if !self.breaker.shared.core.admits_all()
            && self
                .breaker
                .shared
                .core
                .fails_fast(Instant::now())
                .is_some()
        {
            self.ready = Ready::FailingFast;
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.ready = Ready::Inner;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                self.ready = Ready::No;
                Poll::Ready(Err(e.into()))
            }
            Poll::Pending => {
                self.ready = Ready::No;
                Poll::Pending
            }
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let permit = match self.admit() {
            Ok(permit) => permit,
            Err(refused) => return ResponseFuture::rejected(refused),
        };
        // One call site, reached only once admitted: the request goes to
        // the inner service in place. If that `call` panics (and something
        // above catches it and keeps the service), a probe's slot goes back.
        let unwind = ReleaseOnUnwind {
            breaker: &self.breaker,
            permit,
        };
        let inner = self.inner.call(req);
        std::mem::forget(unwind);
        let recorder = permit.map(|p| Recorder::new(self.breaker.clone(), p));
        ResponseFuture::new(inner, recorder)
    }
}

/// Gives a probe's slot back when dropped: only on a panic in the inner
/// service's `call` (it is forgotten otherwise).
struct ReleaseOnUnwind<'a, C> {
    breaker: &'a Breaker<C>,
    permit: Option<Permit>,
}

impl<C> Drop for ReleaseOnUnwind<'_, C> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.filter(Permit::is_probe) {
            self.breaker.shared.release(&permit);
        }
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// Decides whether a call may go through: `Ok(Some(permit))` for a
    /// tracked call, `Ok(None)` when the breaker is disabled.
    #[inline(always)]
    fn admit(&mut self) -> Result<Option<Permit>, BoxError> {
        match std::mem::replace(&mut self.ready, Ready::No) {
            Ready::Inner => {}
            // `poll_ready` saw the circuit failing fast and did not poll the
            // inner service: it may not be called now, whatever the state.
            Ready::FailingFast => {
                return Err(self
                    .breaker
                    .shared
                    .refused_when_polled(Instant::now())
                    .into());
            }
            Ready::No => return Err(self.not_polled()),
        }
        // Closed: the permit, without a clock read (unless slow calls are
        // detected) or a lock.
        if let Some(permit) = self.breaker.shared.core.acquire_closed(&Instant::now) {
            return Ok(Some(permit));
        }
        // Anything else (a probe, a ramp share, open since `poll_ready`):
        // decide now; a refusal does not call the inner service.
        self.breaker.shared.acquire().map_err(Into::into)
    }

    /// The error of a call without `poll_ready` first: not the breaker's
    /// refusal, and not counted.
    #[cold]
    fn not_polled(&self) -> BoxError {
        tracing::debug!(
            name = self.breaker.shared.name(),
            "circuit breaker called without poll_ready"
        );
        NotPolled::new().into()
    }
}

impl<S: Clone, C> Clone for CircuitBreaker<S, C> {
    /// Shares the breaker's state; the clone holds no admission of its own.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            ready: Ready::No,
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
