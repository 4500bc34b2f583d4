//! [`ServerConfig`]: one configuration for the server stack.

use std::time::Duration;

use resilience_bounded_queue::BoundedQueueConfig;
use resilience_core::ConfigError;
use resilience_core::timeout::TimeoutConfig;
use resilience_correlation::CorrelationConfig;

/// The configuration of a [`ServerStackLayer`](super::ServerStackLayer):
/// the member crates' own configurations, validated by their own rules.
///
/// | part | default | remove with |
/// |---|---|---|
/// | correlation (context in, id echoed) | `CorrelationConfig::default()` | [`ServerPart::Correlation`] |
/// | timeout (or sooner, at the request's deadline) | [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT), named `server` | [`ServerPart::Timeout`] |
/// | bounded priority queue | `BoundedQueueConfig::default()` (100 running, 100 waiting, 1 s wait at most) | [`ServerPart::Queue`] |
/// | refusals mapped | `503` for overload (or `429`, [`overloaded_status`](ServerConfigBuilder::overloaded_status)), `429` throttled, `503` unavailable, `504` timeout | always on |
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use resilience::queue::BoundedQueueConfig;
/// use resilience::server::{ServerConfig, ServerPart};
/// use resilience::timeout::TimeoutConfig;
///
/// let config = ServerConfig::builder()
///     .timeout(TimeoutConfig::builder().timeout(Duration::from_secs(2)).build()?)
///     .queue(BoundedQueueConfig::builder().name("api").concurrency(32).build()?)
///     .overloaded_status(429)
///     .build()?;
/// assert_eq!(config.timeout().unwrap().timeout(), Duration::from_secs(2));
///
/// let bare = ServerConfig::builder().without(ServerPart::Queue).build()?;
/// assert!(bare.queue().is_none());
/// # Ok::<_, resilience::ConfigError>(())
/// ```
///
/// With the `serde` feature, from TOML (each table is the member crate's
/// own format; unknown keys are refused):
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use resilience::server::ServerConfig;
/// let config: ServerConfig = toml::from_str(r#"
///     overloaded_status = 429
///     without = ["correlation"]
///     [timeout]
///     timeout = "2s"
///     [queue]
///     name = "api"
///     concurrency = 32
///     capacity = 64
/// "#).unwrap();
/// assert_eq!(config.queue().unwrap().concurrency(), 32);
/// assert!(!config.correlation());
/// // the same rules as the builders
/// assert!(toml::from_str::<ServerConfig>("[queue]\nconcurrency = 0").is_err());
/// # }
/// ```
///
/// # Changing settings at run time
///
/// A running stack takes a new configuration through its
/// [`ReloadHandle`](crate::reload::ReloadHandle)
/// ([`ServerStackLayer::reload_handle`](super::ServerStackLayer::reload_handle)):
/// by hand, or following a file or an etcd key (see [`crate::reload`]).
/// What can change applies to the next requests; the queue keeps its running
/// and waiting requests and its counts.
///
/// | setting | at run time | how |
/// |---|---|---|
/// | `timeout.timeout`, `timeout.name`, `timeout.honor_deadline` | yes | each service rebuilds its timeout at its next request |
/// | `queue.concurrency` (a fixed limit) | yes | a higher limit admits waiters at once; a lower one admits nobody until enough running requests finish |
/// | `queue.capacity` | yes | a smaller one refuses arrivals until the queue is shorter; waiters stay |
/// | `queue.max_wait`, `queue.codel`, `queue.codel_target`, `queue.codel_interval`, `queue.lifo`, `queue.yield_margin`, `queue.target_service_times`, `queue.retry_after` | yes | read at each admission decision and each waiter's next check |
/// | `queue.name` | restart only | it labels the metrics |
/// | `queue.reserved` | restart only | the fast path's priority tracking |
/// | an adaptive limit (code only) | restart only | its algorithm's state |
/// | `overloaded_status` | restart only | |
/// | `without` (a part removed or added) | restart only | the stack's layers are fixed when built |
/// | correlation (code only) | restart only | |
///
/// A restart-only setting that differs keeps its old value: the change is
/// logged at warn and counted
/// ([`CONFIG_RESTART_ONLY_TOTAL`](crate::reload::CONFIG_RESTART_ONLY_TOTAL)),
/// and the rest is applied.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "ServerConfigBuilder"))]
pub struct ServerConfig {
    pub(crate) correlation: Option<CorrelationConfig>,
    pub(crate) timeout: Option<TimeoutConfig>,
    pub(crate) queue: Option<BoundedQueueConfig>,
    pub(crate) overloaded_status: http::StatusCode,
}

/// Builds a [`ServerConfig`]; see [`ServerConfig::builder`].
#[derive(Debug, Clone, Default)]
#[must_use]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct ServerConfigBuilder {
    #[cfg_attr(feature = "serde", serde(skip))]
    correlation: Option<CorrelationConfig>,
    timeout: Option<TimeoutConfig>,
    queue: Option<BoundedQueueConfig>,
    without: Vec<ServerPart>,
    overloaded_status: Option<u16>,
}

/// A removable part of the server stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ServerPart {
    /// The correlation layer: no context is read, no id echoed (an outer
    /// layer of yours does it, or nobody).
    Correlation,
    /// The timeout: requests run as long as they take (the queue still
    /// refuses a request whose deadline has passed).
    Timeout,
    /// The bounded queue: no admission control.
    Queue,
}

// === impl ServerConfig ===

impl ServerConfig {
    /// The server's timeout: `10s`, or sooner at the request's deadline.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// The name of the default timeout's metrics: `server`.
    pub const DEFAULT_NAME: &'static str = "server";

    /// A builder with the defaults of the table above.
    pub fn builder() -> ServerConfigBuilder {
        ServerConfigBuilder::default()
    }

    /// Whether the correlation layer is on.
    pub fn correlation(&self) -> bool {
        self.correlation.is_some()
    }

    /// The timeout, unless removed.
    pub fn timeout(&self) -> Option<&TimeoutConfig> {
        self.timeout.as_ref()
    }

    /// The queue, unless removed.
    pub fn queue(&self) -> Option<&BoundedQueueConfig> {
        self.queue.as_ref()
    }

    /// The HTTP status of an overload refusal: `503` or `429`.
    pub fn overloaded_status(&self) -> http::StatusCode {
        self.overloaded_status
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        // The defaults are valid: a builder with nothing set cannot fail.
        match ServerConfig::builder().build() {
            Ok(config) => config,
            Err(e) => unreachable!("the default server configuration is invalid: {e}"),
        }
    }
}

// === impl ServerConfigBuilder ===

impl ServerConfigBuilder {
    /// The correlation layer's configuration (headers, priority and deadline
    /// policies; code only, not read from a file).
    pub fn correlation(mut self, config: CorrelationConfig) -> Self {
        self.correlation = Some(config);
        self
    }

    /// The timeout (default [`ServerConfig::DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, config: TimeoutConfig) -> Self {
        self.timeout = Some(config);
        self
    }

    /// The bounded queue (default `BoundedQueueConfig::default()`).
    pub fn queue(mut self, config: BoundedQueueConfig) -> Self {
        self.queue = Some(config);
        self
    }

    /// Removes a part of the stack.
    pub fn without(mut self, part: ServerPart) -> Self {
        self.without.push(part);
        self
    }

    /// The status of an overload refusal (queue full, shed): `503`
    /// (default) or `429`. A throttle's refusal is always `429`.
    pub fn overloaded_status(mut self, status: u16) -> Self {
        self.overloaded_status = Some(status);
        self
    }

    /// Validates the configuration. The sub-configurations were validated
    /// when they were built (or read).
    ///
    /// # Errors
    /// - `overloaded_status` is neither `503` nor `429`
    /// - a part is both configured and removed
    pub fn build(self) -> Result<ServerConfig, ConfigError> {
        let overloaded_status = match self.overloaded_status.unwrap_or(503) {
            503 => http::StatusCode::SERVICE_UNAVAILABLE,
            429 => http::StatusCode::TOO_MANY_REQUESTS,
            _ => return Err(ConfigError::new("overloaded_status", "must be 503 or 429")),
        };
        let off = |part| self.without.contains(&part);
        if off(ServerPart::Timeout) && self.timeout.is_some() {
            return Err(ConfigError::new("timeout", "configured and removed"));
        }
        if off(ServerPart::Queue) && self.queue.is_some() {
            return Err(ConfigError::new("queue", "configured and removed"));
        }
        let timeout = match (off(ServerPart::Timeout), self.timeout) {
            (true, _) => None,
            (false, Some(config)) => Some(config),
            (false, None) => Some(
                TimeoutConfig::builder()
                    .name(ServerConfig::DEFAULT_NAME)
                    .timeout(ServerConfig::DEFAULT_TIMEOUT)
                    .build()?,
            ),
        };
        let queue = match (off(ServerPart::Queue), self.queue) {
            (true, _) => None,
            (false, Some(config)) => Some(config),
            (false, None) => Some(BoundedQueueConfig::default()),
        };
        let correlation = if off(ServerPart::Correlation) {
            None
        } else {
            Some(self.correlation.unwrap_or_default())
        };
        Ok(ServerConfig {
            correlation,
            timeout,
            queue,
            overloaded_status,
        })
    }
}

#[cfg(feature = "serde")]
impl TryFrom<ServerConfigBuilder> for ServerConfig {
    type Error = ConfigError;

    fn try_from(builder: ServerConfigBuilder) -> Result<Self, ConfigError> {
        builder.build()
    }
}
