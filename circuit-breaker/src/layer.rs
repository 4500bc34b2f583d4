use std::sync::Arc;

use resilience_core::HttpOutcome;
use tower_layer::Layer;

use crate::config::CircuitBreakerConfig;
use crate::handle::{Breaker, CircuitBreakerHandle, Shared};
use crate::service::CircuitBreaker;

/// Applies a [`CircuitBreaker`] to services.
///
/// Cloning this layer will not create a new breaker: the layer, every
/// service it makes and every clone of those share one state, as do the
/// [`CircuitBreakerHandle`]s it hands out. Build one layer per dependency;
/// for one breaker per endpoint of a dependency (each instance's failures
/// opening only its own circuit), use
/// [`EndpointBreakers::layer_for`](crate::EndpointBreakers::layer_for).
pub struct CircuitBreakerLayer<C = HttpOutcome> {
    breaker: Arc<Breaker<C>>,
}

// === impl CircuitBreakerLayer ===

impl CircuitBreakerLayer {
    /// A breaker for HTTP responses ([`HttpOutcome`]: 5xx and errors fail,
    /// 4xx do not).
    ///
    /// With the `metrics` feature, install the metrics recorder before
    /// calling this: the breaker's metric handles are registered here.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self::with_shared(Arc::new(Shared::new(&config, None)), HttpOutcome::new())
    }
}

impl Default for CircuitBreakerLayer {
    /// [`CircuitBreakerLayer::new`] with [`CircuitBreakerConfig::default`].
    fn default() -> Self {
        Self::new(CircuitBreakerConfig::default())
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// A layer over an existing breaker state.
    pub(crate) fn with_shared(shared: Arc<Shared>, classify: C) -> Self {
        Self {
            breaker: Arc::new(Breaker { shared, classify }),
        }
    }

    /// Classifies outcomes with `classify` instead, e.g.
    /// [`GrpcOutcome`](resilience_core::GrpcOutcome),
    /// [`ErrorsAsFailures`](crate::ErrorsAsFailures) for any response type,
    /// or [`classify_fn`](resilience_core::classify::classify_fn).
    pub fn with_classifier<C2>(self, classify: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer::with_shared(self.breaker.shared.clone(), classify)
    }

    /// A handle on the shared state.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle {
            shared: self.breaker.shared.clone(),
        }
    }
}

impl<S, C> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::with_breaker(inner, self.breaker.clone())
    }
}

impl<C> Clone for CircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        Self {
            breaker: self.breaker.clone(),
        }
    }
}

impl<C> std::fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("shared", &self.breaker.shared)
            .finish_non_exhaustive()
    }
}
