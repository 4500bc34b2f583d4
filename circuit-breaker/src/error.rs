//! Error types.
//!
//! A call the breaker or the throttle refuses on purpose fails with the
//! family's [`Rejected`](resilience_core::Rejected) (kind `CircuitOpen` or
//! `Throttled`). This module holds the one error of a broken contract.

use std::error::Error;
use std::fmt;

/// A [`CircuitBreaker`](crate::CircuitBreaker) was called without a
/// `poll_ready` that returned `Poll::Ready(Ok(()))` just before (the
/// `tower::Service` contract: a bug in the caller, e.g. a `call` on a fresh
/// clone, or after `poll_ready` returned `Pending` or an error).
///
/// The call reaches neither the inner service nor the breaker's books: it
/// is not a rejection (the `rejected` outcome of
/// `resilience_circuit_breaker_calls_total` and the state are untouched) and
/// records no outcome. It is not a
/// [`Classify`](resilience_core::Classify) error: the family's HTTP and
/// gRPC mappings answer it as an error they do not own (500, `UNKNOWN`).
///
/// # Example
///
/// ```
/// use resilience_circuit_breaker::{
///     CircuitBreakerConfig, CircuitBreakerLayer, ErrorsAsFailures, error::NotPolled,
/// };
/// use resilience_core::BoxError;
/// use tower::{Layer, Service, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default()).with_classifier(ErrorsAsFailures);
/// let handle = layer.handle();
/// let mut svc = layer.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
///
/// // no `poll_ready` before the call
/// let err = svc.call(()).await.unwrap_err();
/// assert!(err.is::<NotPolled>());
/// assert_eq!(handle.snapshot().calls(), 0);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotPolled(());

// === impl NotPolled ===

impl NotPolled {
    pub(crate) const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for NotPolled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("service called without poll_ready returning ready first")
    }
}

impl Error for NotPolled {}
