use std::time::Duration;

use crate::config::{ConfigError, validate_name, validate_positive_duration};

/// Validated configuration of a [`TimeoutLayer`](super::TimeoutLayer).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use resilience_core::timeout::{TimeoutConfig, TimeoutLayer};
///
/// let config = TimeoutConfig::builder()
///     .name("inventory")
///     .timeout(Duration::from_millis(300))
///     .build()?;
/// let layer = TimeoutLayer::new(config);
/// # Ok::<_, resilience_core::ConfigError>(())
/// ```
///
/// With the `serde` feature it deserializes (same validation):
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use resilience_core::timeout::TimeoutConfig;
/// let config: TimeoutConfig = serde_json::from_str(r#"{"name": "inventory", "timeout": "300ms"}"#).unwrap();
/// assert_eq!(config.timeout().as_millis(), 300);
/// assert!(serde_json::from_str::<TimeoutConfig>(r#"{"timeout": "0ms"}"#).is_err());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "TimeoutConfigBuilder"))]
pub struct TimeoutConfig {
    pub(super) timeout: Duration,
    pub(super) name: Option<String>,
    pub(super) honor_deadline: bool,
}

/// Builds a [`TimeoutConfig`]; see [`TimeoutConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct TimeoutConfigBuilder {
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "crate::config::duration::deserialize")
    )]
    timeout: Duration,
    name: Option<String>,
    honor_deadline: bool,
}

// === impl TimeoutConfig ===

impl TimeoutConfig {
    /// The timeout: `10s`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Whether the request's own deadline is honoured: `true`.
    pub const DEFAULT_HONOR_DEADLINE: bool = true;

    /// A builder with the defaults.
    pub fn builder() -> TimeoutConfigBuilder {
        TimeoutConfigBuilder::default()
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The name used as the `name` metric label, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Whether the request's own deadline is honoured.
    pub fn honor_deadline(&self) -> bool {
        self.honor_deadline
    }
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfigBuilder::default()
            .build()
            .expect("defaults are valid")
    }
}

impl From<Duration> for TimeoutConfig {
    /// The defaults with `timeout`, taken as it is (not validated, as
    /// [`TimeoutLayer::new`](crate::TimeoutLayer::new) with a duration
    /// always took it: zero times every request out at once).
    fn from(timeout: Duration) -> Self {
        Self {
            timeout,
            name: None,
            honor_deadline: Self::DEFAULT_HONOR_DEADLINE,
        }
    }
}

// === impl TimeoutConfigBuilder ===

impl TimeoutConfigBuilder {
    /// Sets the timeout (default [`TimeoutConfig::DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Names the layer: the `name` label of its metrics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Whether to honour the request's own deadline when it is sooner
    /// (default `true`).
    pub fn honor_deadline(mut self, yes: bool) -> Self {
        self.honor_deadline = yes;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `timeout` is zero or longer than
    ///   [`MAX_DURATION`](crate::config::MAX_DURATION) (365 days)
    /// - `name` is not 1 to 64 characters of `[A-Za-z0-9_.-]`
    pub fn build(self) -> Result<TimeoutConfig, ConfigError> {
        validate_positive_duration("timeout", self.timeout)?;
        if let Some(name) = &self.name {
            validate_name("name", name)?;
        }
        Ok(TimeoutConfig {
            timeout: self.timeout,
            name: self.name,
            honor_deadline: self.honor_deadline,
        })
    }
}

impl Default for TimeoutConfigBuilder {
    fn default() -> Self {
        Self {
            timeout: TimeoutConfig::DEFAULT_TIMEOUT,
            name: None,
            honor_deadline: TimeoutConfig::DEFAULT_HONOR_DEADLINE,
        }
    }
}

impl TryFrom<TimeoutConfigBuilder> for TimeoutConfig {
    type Error = ConfigError;

    fn try_from(builder: TimeoutConfigBuilder) -> Result<Self, Self::Error> {
        builder.build()
    }
}
