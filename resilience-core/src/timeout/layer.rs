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
    /// A layer from a validated configuration, or from just a timeout:
    /// requests time out after it, or at their deadline if sooner (unless
    /// the configuration says not to honour deadlines). A named
    /// configuration counts elapsed requests in
    /// `resilience_timeout_elapsed_total{name}`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_core::TimeoutLayer;
    /// use resilience_core::timeout::TimeoutConfig;
    ///
    /// let plain = TimeoutLayer::new(Duration::from_secs(2));
    /// let config = TimeoutConfig::builder().timeout(Duration::from_secs(2)).name("db").build()?;
    /// let named = TimeoutLayer::new(config);
    /// assert_eq!(plain.timeout(), named.timeout());
    /// assert_eq!(TimeoutLayer::default().timeout(), TimeoutConfig::DEFAULT_TIMEOUT);
    /// # Ok::<(), resilience_core::ConfigError>(())
    /// ```
    pub fn new(config: impl Into<TimeoutConfig>) -> Self {
        let config = config.into();
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

    /// A layer from a validated configuration.
    #[deprecated(since = "0.1.0", note = "use `TimeoutLayer::new(config)`")]
    pub fn from_config(config: TimeoutConfig) -> TimeoutLayer<FromExtensions> {
        Self::new(config)
    }
}

impl Default for TimeoutLayer {
    /// [`TimeoutLayer::new`] with [`TimeoutConfig::default`].
    fn default() -> Self {
        Self::new(TimeoutConfig::default())
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
