//! An endpoint whose breaker is open is not ready: the balancer takes
//! another.

use std::task::{Context, Poll};

use resilience_circuit_breaker::{CircuitBreakerHandle, CircuitState};
use resilience_core::{BoxError, Rejected, RejectionKind};
use tower_service::Service;

/// Wraps one endpoint's breaker: while the circuit is open (and not yet due
/// for a probe) or forced open, `poll_ready` fails, so the round robin
/// skips the endpoint (counting it as a failure towards its ejection) and
/// picks another. A breaker refuses in `call` by design (it never makes a
/// caller wait); under a balancer, the refusal must come before the pick,
/// or a call picked for an open endpoint would fail although others are
/// fine, and the retry above never retries a breaker's refusal.
#[derive(Clone, Debug)]
pub(crate) struct SkipOpen<S> {
    inner: S,
    breaker: CircuitBreakerHandle,
}

impl<S> SkipOpen<S> {
    pub(crate) fn new(inner: S, breaker: CircuitBreakerHandle) -> Self {
        Self { inner, breaker }
    }
}

impl<S, Req> Service<Req> for SkipOpen<S>
where
    S: Service<Req, Error = BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let open = match self.breaker.state() {
            CircuitState::ForcedOpen => true,
            CircuitState::Open => self
                .breaker
                .snapshot()
                .time_until_half_open()
                .is_some_and(|left| !left.is_zero()),
            _ => false,
        };
        if open {
            return Poll::Ready(Err(Rejected::new(
                RejectionKind::CircuitOpen,
                "endpoint circuit open",
            )
            .into()));
        }
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> S::Future {
        self.inner.call(req)
    }
}
