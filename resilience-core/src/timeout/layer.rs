use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::config::TimeoutConfig;
use super::service::{FromExtensions, Timeout};

/// Applies a [`Timeout`] to services.
///
/// Cloning the layer copies its settings; every service it makes times out
/// on its own.
#[derive(Debug, Clone)]
pub struct TimeoutLayer<D = FromExtensions> {
    timeout: Duration,
    read_deadline: D,
    name: Option<Arc<str>>,
}

// === impl TimeoutLayer ===

impl TimeoutLayer {
    /// Times requests out after `timeout`, or at their deadline if sooner.
    pub const fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            read_deadline: FromExtensions { enabled: true },
            name: None,
        }
    }

    /// A layer from a validated configuration; a named one counts elapsed
    /// requests in `resilience_timeout_elapsed_total{name}`.
    pub fn from_config(config: TimeoutConfig) -> TimeoutLayer<FromExtensions> {
        let name: Option<Arc<str>> = config.name.as_deref().map(Arc::from);
        #[cfg(feature = "metrics")]
        if name.is_some() {
            crate::names::describe_timeout_metrics();
        }
        Self {
            timeout: config.timeout,
            read_deadline: FromExtensions {
                enabled: config.honor_deadline,
            },
            name,
        }
    }
}

impl<D> TimeoutLayer<D> {
    /// Reads request deadlines with `read` instead: [`NoDeadline`](super::NoDeadline)
    /// ignores them, and a closure `Fn(&Req) -> Option<Deadline>` finds them
    /// elsewhere.
    pub fn with_deadline<D2>(self, read: D2) -> TimeoutLayer<D2> {
        TimeoutLayer {
            timeout: self.timeout,
            read_deadline: read,
            name: self.name,
        }
    }

    /// The configured timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl<S, D: Clone> Layer<S> for TimeoutLayer<D> {
    type Service = Timeout<S, D>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::with_parts(
            inner,
            self.timeout,
            self.read_deadline.clone(),
            self.name.clone(),
        )
    }
}
