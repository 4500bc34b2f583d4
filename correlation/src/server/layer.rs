use std::sync::Arc;

use tower_layer::Layer;

use super::config::CorrelationConfig;
use super::service::Correlation;

/// Applies [`Correlation`] to services: the server side of context
/// propagation.
///
/// Cloning the layer shares its configuration.
#[derive(Debug, Clone)]
pub struct CorrelationLayer {
    config: Arc<CorrelationConfig>,
}

// === impl CorrelationLayer ===

impl CorrelationLayer {
    /// A layer with the default configuration.
    pub fn new() -> Self {
        Self::with_config(CorrelationConfig::default())
    }

    /// A layer with a validated configuration.
    pub fn with_config(config: CorrelationConfig) -> Self {
        crate::context::register_reader();
        #[cfg(feature = "metrics")]
        metrics::describe_counter!(
            resilience_core::names::CORRELATION_INVALID_TOTAL,
            metrics::Unit::Count,
            "Inbound context values that were invalid and replaced (a deadline: ignored)."
        );
        Self {
            config: Arc::new(config),
        }
    }
}

impl Default for CorrelationLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for CorrelationLayer {
    type Service = Correlation<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Correlation::new(inner, self.config.clone())
    }
}
