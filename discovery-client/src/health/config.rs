use std::time::Duration;

use rand::Rng;
use resilience_core::ConfigError;
use resilience_core::config::validate_positive_duration;

/// Validated configuration of active health checks.
///
/// Defaults are in the spirit of Marathon's: every 10 s, a 10 s timeout,
/// unhealthy after 3 consecutive failures.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use resilience_discovery::health::HealthCheckConfig;
///
/// let config = HealthCheckConfig::builder()
///     .path("/ready")
///     .interval(Duration::from_secs(5))
///     .timeout(Duration::from_secs(1))
///     .unhealthy_threshold(2)
///     .build()?;
/// assert_eq!(config.path(), "/ready");
/// # Ok::<_, resilience_core::ConfigError>(())
/// ```
///
/// With the `serde` feature it deserializes, through the same validation:
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use resilience_discovery::health::HealthCheckConfig;
/// let config: HealthCheckConfig =
///     serde_json::from_str(r#"{"path": "/ready", "interval": "5s", "unhealthy_threshold": 2}"#).unwrap();
/// assert_eq!(config.interval().as_secs(), 5);
/// assert!(serde_json::from_str::<HealthCheckConfig>(r#"{"timeout": "0s"}"#).is_err());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "HealthCheckConfigFile"))]
pub struct HealthCheckConfig {
    pub(crate) path: String,
    pub(crate) interval: Duration,
    pub(crate) jitter_percent: u8,
    pub(crate) timeout: Duration,
    pub(crate) unhealthy_threshold: u32,
    pub(crate) healthy_threshold: u32,
}

/// Builds a [`HealthCheckConfig`]; see [`HealthCheckConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct HealthCheckConfigBuilder {
    config: HealthCheckConfig,
}

/// The file form of a [`HealthCheckConfig`], validated by the builder.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HealthCheckConfigFile {
    path: String,
    #[serde(deserialize_with = "resilience_core::config::duration::deserialize")]
    interval: Duration,
    jitter_percent: u8,
    #[serde(deserialize_with = "resilience_core::config::duration::deserialize")]
    timeout: Duration,
    unhealthy_threshold: u32,
    healthy_threshold: u32,
}

#[cfg(feature = "serde")]
impl Default for HealthCheckConfigFile {
    fn default() -> Self {
        let c = HealthCheckConfig::builder().config;
        Self {
            path: c.path,
            interval: c.interval,
            jitter_percent: c.jitter_percent,
            timeout: c.timeout,
            unhealthy_threshold: c.unhealthy_threshold,
            healthy_threshold: c.healthy_threshold,
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<HealthCheckConfigFile> for HealthCheckConfig {
    type Error = ConfigError;

    fn try_from(f: HealthCheckConfigFile) -> Result<Self, ConfigError> {
        HealthCheckConfig::builder()
            .path(f.path)
            .interval(f.interval)
            .jitter_percent(f.jitter_percent)
            .timeout(f.timeout)
            .unhealthy_threshold(f.unhealthy_threshold)
            .healthy_threshold(f.healthy_threshold)
            .build()
    }
}

// === impl HealthCheckConfig ===

impl HealthCheckConfig {
    /// The path an HTTP check requests: `/health`.
    pub const DEFAULT_PATH: &'static str = "/health";
    /// Time between two checks of one endpoint: `10s`.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    /// Random spread of the interval, ± percent: `10`.
    pub const DEFAULT_JITTER_PERCENT: u8 = 10;
    /// Longest a check may take before it counts as failed: `10s`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Consecutive failed checks that make an endpoint unhealthy: `3`.
    pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
    /// Consecutive passing checks that make an unhealthy endpoint healthy
    /// again: `1`.
    pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 1;

    /// A builder with the defaults.
    pub fn builder() -> HealthCheckConfigBuilder {
        HealthCheckConfigBuilder {
            config: HealthCheckConfig {
                path: Self::DEFAULT_PATH.to_owned(),
                interval: Self::DEFAULT_INTERVAL,
                jitter_percent: Self::DEFAULT_JITTER_PERCENT,
                timeout: Self::DEFAULT_TIMEOUT,
                unhealthy_threshold: Self::DEFAULT_UNHEALTHY_THRESHOLD,
                healthy_threshold: Self::DEFAULT_HEALTHY_THRESHOLD,
            },
        }
    }

    /// The path an HTTP check requests.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The interval between checks.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The jitter, ± percent of the interval.
    pub fn jitter_percent(&self) -> u8 {
        self.jitter_percent
    }

    /// The timeout of one check.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Consecutive failures that make an endpoint unhealthy.
    pub fn unhealthy_threshold(&self) -> u32 {
        self.unhealthy_threshold
    }

    /// Consecutive passes that make an endpoint healthy again.
    pub fn healthy_threshold(&self) -> u32 {
        self.healthy_threshold
    }

    pub(crate) fn next_interval(&self, rng: &mut impl Rng) -> Duration {
        super::jittered(self.interval, self.jitter_percent, rng)
    }
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self::builder().build().expect("defaults are valid")
    }
}

// === impl HealthCheckConfigBuilder ===

impl HealthCheckConfigBuilder {
    /// The path an HTTP check requests (default
    /// [`HealthCheckConfig::DEFAULT_PATH`]).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.config.path = path.into();
        self
    }

    /// The interval between checks (default
    /// [`HealthCheckConfig::DEFAULT_INTERVAL`]).
    pub fn interval(mut self, d: Duration) -> Self {
        self.config.interval = d;
        self
    }

    /// The jitter, ± percent of the interval (default
    /// [`HealthCheckConfig::DEFAULT_JITTER_PERCENT`]).
    pub fn jitter_percent(mut self, percent: u8) -> Self {
        self.config.jitter_percent = percent;
        self
    }

    /// The timeout of one check (default
    /// [`HealthCheckConfig::DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.config.timeout = d;
        self
    }

    /// Consecutive failures that make an endpoint unhealthy (default
    /// [`HealthCheckConfig::DEFAULT_UNHEALTHY_THRESHOLD`]).
    pub fn unhealthy_threshold(mut self, n: u32) -> Self {
        self.config.unhealthy_threshold = n;
        self
    }

    /// Consecutive passes that make an endpoint healthy again (default
    /// [`HealthCheckConfig::DEFAULT_HEALTHY_THRESHOLD`]).
    pub fn healthy_threshold(mut self, n: u32) -> Self {
        self.config.healthy_threshold = n;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `path` does not start with `/`
    /// - `interval` or `timeout` is zero or longer than
    ///   [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365 days)
    /// - `jitter_percent` is above 100
    /// - `unhealthy_threshold` or `healthy_threshold` is zero
    pub fn build(self) -> Result<HealthCheckConfig, ConfigError> {
        let c = self.config;
        if !c.path.starts_with('/') {
            return Err(ConfigError::new("path", "must start with /"));
        }
        validate_positive_duration("interval", c.interval)?;
        validate_positive_duration("timeout", c.timeout)?;
        if c.jitter_percent > 100 {
            return Err(ConfigError::new("jitter_percent", "must be at most 100"));
        }
        if c.unhealthy_threshold == 0 {
            return Err(ConfigError::new(
                "unhealthy_threshold",
                "must be at least 1",
            ));
        }
        if c.healthy_threshold == 0 {
            return Err(ConfigError::new("healthy_threshold", "must be at least 1"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_issue() {
        let c = HealthCheckConfig::default();
        assert_eq!(c.interval(), Duration::from_secs(10));
        assert_eq!(c.timeout(), Duration::from_secs(10));
        assert_eq!(c.unhealthy_threshold(), 3);
        assert_eq!(c.path(), "/health");
    }

    #[test]
    fn rejects_bad_values() {
        let field = |b: HealthCheckConfigBuilder| b.build().unwrap_err().field();
        let b = HealthCheckConfig::builder;
        assert_eq!(field(b().path("health")), "path");
        assert_eq!(field(b().interval(Duration::ZERO)), "interval");
        assert_eq!(field(b().timeout(Duration::ZERO)), "timeout");
        let too_long = resilience_core::config::MAX_DURATION + Duration::from_nanos(1);
        assert_eq!(field(b().interval(too_long)), "interval");
        assert_eq!(field(b().timeout(too_long)), "timeout");
        assert_eq!(field(b().jitter_percent(101)), "jitter_percent");
        assert_eq!(field(b().unhealthy_threshold(0)), "unhealthy_threshold");
        assert_eq!(field(b().healthy_threshold(0)), "healthy_threshold");
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let c = HealthCheckConfig::builder()
            .jitter_percent(20)
            .build()
            .unwrap();
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let d = c.next_interval(&mut rng);
            assert!(
                d >= Duration::from_secs(8) && d <= Duration::from_secs(12),
                "{d:?}"
            );
        }
        let none = HealthCheckConfig::builder()
            .jitter_percent(0)
            .build()
            .unwrap();
        assert_eq!(none.next_interval(&mut rng), Duration::from_secs(10));
    }

    /// The longest interval accepted is jittered like any other.
    #[test]
    fn the_longest_interval_is_jittered_within_bounds() {
        let max = resilience_core::config::MAX_DURATION;
        let c = HealthCheckConfig::builder().interval(max).build().unwrap();
        let mut rng = rand::rng();
        for _ in 0..100 {
            let d = c.next_interval(&mut rng);
            assert!(d >= max.mul_f64(0.9) && d <= max.mul_f64(1.1), "{d:?}");
        }
    }
}
