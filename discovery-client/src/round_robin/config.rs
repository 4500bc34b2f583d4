use std::time::Duration;

use resilience_core::ConfigError;
use resilience_core::config::{validate_duration, validate_name};

/// Validated configuration of a [`RoundRobin`](super::RoundRobin): passive
/// ejection and the panic threshold.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use resilience_discovery::RoundRobinConfig;
///
/// let config = RoundRobinConfig::builder()
///     .name("inventory")
///     .consecutive_failures(3)
///     .base_ejection_time(Duration::from_secs(10))
///     .panic_threshold_percent(50)
///     .build()?;
/// assert_eq!(config.consecutive_failures(), 3);
/// # Ok::<_, resilience_core::ConfigError>(())
/// ```
///
/// With the `serde` feature it deserializes, through the same validation
/// (durations as `"30s"`, `"250ms"` or milliseconds):
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use resilience_discovery::RoundRobinConfig;
/// let config: RoundRobinConfig = toml::from_str(r#"
///     name = "inventory"
///     consecutive_failures = 3
///     base_ejection_time = "10s"
/// "#).unwrap();
/// assert_eq!(config.base_ejection_time().as_secs(), 10);
/// assert!(toml::from_str::<RoundRobinConfig>("panic_threshold_percent = 101").is_err());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "RoundRobinConfigFile"))]
pub struct RoundRobinConfig {
    pub(crate) name: String,
    pub(crate) consecutive_failures: u32,
    pub(crate) base_ejection_time: Duration,
    pub(crate) max_ejection_time: Duration,
    pub(crate) max_ejection_percent: u8,
    pub(crate) panic_threshold_percent: u8,
}

/// Builds a [`RoundRobinConfig`]; see [`RoundRobinConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RoundRobinConfigBuilder {
    config: RoundRobinConfig,
}

/// The file form of a [`RoundRobinConfig`], validated by the builder.
#[cfg(feature = "serde")]
#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RoundRobinConfigFile {
    name: String,
    consecutive_failures: u32,
    #[serde(deserialize_with = "resilience_core::config::duration::deserialize")]
    base_ejection_time: Duration,
    #[serde(deserialize_with = "resilience_core::config::duration::deserialize")]
    max_ejection_time: Duration,
    max_ejection_percent: u8,
    panic_threshold_percent: u8,
}

#[cfg(feature = "serde")]
impl Default for RoundRobinConfigFile {
    fn default() -> Self {
        let c = RoundRobinConfig::builder().config;
        Self {
            name: c.name,
            consecutive_failures: c.consecutive_failures,
            base_ejection_time: c.base_ejection_time,
            max_ejection_time: c.max_ejection_time,
            max_ejection_percent: c.max_ejection_percent,
            panic_threshold_percent: c.panic_threshold_percent,
        }
    }
}

#[cfg(feature = "serde")]
impl TryFrom<RoundRobinConfigFile> for RoundRobinConfig {
    type Error = ConfigError;

    fn try_from(f: RoundRobinConfigFile) -> Result<Self, ConfigError> {
        RoundRobinConfig::builder()
            .name(f.name)
            .consecutive_failures(f.consecutive_failures)
            .base_ejection_time(f.base_ejection_time)
            .max_ejection_time(f.max_ejection_time)
            .max_ejection_percent(f.max_ejection_percent)
            .panic_threshold_percent(f.panic_threshold_percent)
            .build()
    }
}

// === impl RoundRobinConfig ===

impl RoundRobinConfig {
    /// The `name` metric label: `"default"`.
    pub const DEFAULT_NAME: &'static str = "default";
    /// Consecutive failures (per resilience-core's classifier) that eject an
    /// endpoint: `5` (Envoy's `consecutive_5xx`).
    pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
    /// The first ejection lasts this long; the n-th lasts n times as long: `30s`.
    pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
    /// The longest an ejection lasts: `300s`.
    pub const DEFAULT_MAX_EJECTION_TIME: Duration = Duration::from_secs(300);
    /// The largest share of endpoints ejected at once, in percent; one
    /// endpoint may always be ejected: `10`.
    pub const DEFAULT_MAX_EJECTION_PERCENT: u8 = 10;
    /// Below this share of healthy endpoints, in percent, traffic spreads over
    /// all of them (Envoy's panic threshold): `50`.
    pub const DEFAULT_PANIC_THRESHOLD_PERCENT: u8 = 50;

    /// A builder with the defaults.
    pub fn builder() -> RoundRobinConfigBuilder {
        RoundRobinConfigBuilder {
            config: RoundRobinConfig {
                name: Self::DEFAULT_NAME.to_owned(),
                consecutive_failures: Self::DEFAULT_CONSECUTIVE_FAILURES,
                base_ejection_time: Self::DEFAULT_BASE_EJECTION_TIME,
                max_ejection_time: Self::DEFAULT_MAX_EJECTION_TIME,
                max_ejection_percent: Self::DEFAULT_MAX_EJECTION_PERCENT,
                panic_threshold_percent: Self::DEFAULT_PANIC_THRESHOLD_PERCENT,
            },
        }
    }

    /// The `name` metric label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Consecutive failures that eject an endpoint (0: passive ejection off).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The base ejection time.
    pub fn base_ejection_time(&self) -> Duration {
        self.base_ejection_time
    }

    /// The longest ejection.
    pub fn max_ejection_time(&self) -> Duration {
        self.max_ejection_time
    }

    /// The largest share of endpoints ejected at once, in percent.
    pub fn max_ejection_percent(&self) -> u8 {
        self.max_ejection_percent
    }

    /// The panic threshold, in percent.
    pub fn panic_threshold_percent(&self) -> u8 {
        self.panic_threshold_percent
    }

    /// How long the `times`-th ejection lasts: base × times, capped.
    pub(crate) fn ejection_time(&self, times: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(times.max(1))
            .min(self.max_ejection_time)
    }
}

impl Default for RoundRobinConfig {
    fn default() -> Self {
        Self::builder().build().expect("defaults are valid")
    }
}

// === impl RoundRobinConfigBuilder ===

impl RoundRobinConfigBuilder {
    /// Names the balancer: the `name` label of its metrics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Consecutive failures that eject an endpoint (default
    /// [`RoundRobinConfig::DEFAULT_CONSECUTIVE_FAILURES`]; 0 turns passive
    /// ejection off).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = n;
        self
    }

    /// The first ejection's length (default
    /// [`RoundRobinConfig::DEFAULT_BASE_EJECTION_TIME`]).
    pub fn base_ejection_time(mut self, d: Duration) -> Self {
        self.config.base_ejection_time = d;
        self
    }

    /// The cap on an ejection's length (default
    /// [`RoundRobinConfig::DEFAULT_MAX_EJECTION_TIME`]).
    pub fn max_ejection_time(mut self, d: Duration) -> Self {
        self.config.max_ejection_time = d;
        self
    }

    /// The largest share ejected at once, in percent (default
    /// [`RoundRobinConfig::DEFAULT_MAX_EJECTION_PERCENT`]).
    pub fn max_ejection_percent(mut self, percent: u8) -> Self {
        self.config.max_ejection_percent = percent;
        self
    }

    /// The panic threshold, in percent (default
    /// [`RoundRobinConfig::DEFAULT_PANIC_THRESHOLD_PERCENT`]; 0 never panics).
    pub fn panic_threshold_percent(mut self, percent: u8) -> Self {
        self.config.panic_threshold_percent = percent;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `name` is not 1 to 64 characters of `[A-Za-z0-9_.-]`
    /// - `base_ejection_time` or `max_ejection_time` is longer than
    ///   [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365 days)
    /// - `base_ejection_time` is zero while passive ejection is on
    /// - `max_ejection_time` is shorter than `base_ejection_time`
    /// - `max_ejection_percent` or `panic_threshold_percent` is above 100
    pub fn build(self) -> Result<RoundRobinConfig, ConfigError> {
        let c = self.config;
        validate_name("name", &c.name)?;
        validate_duration("base_ejection_time", c.base_ejection_time)?;
        validate_duration("max_ejection_time", c.max_ejection_time)?;
        if c.consecutive_failures > 0 && c.base_ejection_time.is_zero() {
            return Err(ConfigError::new(
                "base_ejection_time",
                "must be greater than zero",
            ));
        }
        if c.max_ejection_time < c.base_ejection_time {
            return Err(ConfigError::new(
                "max_ejection_time",
                "must be at least base_ejection_time",
            ));
        }
        if c.max_ejection_percent > 100 {
            return Err(ConfigError::new(
                "max_ejection_percent",
                "must be at most 100",
            ));
        }
        if c.panic_threshold_percent > 100 {
            return Err(ConfigError::new(
                "panic_threshold_percent",
                "must be at most 100",
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented() {
        let c = RoundRobinConfig::default();
        assert_eq!(c.consecutive_failures(), 5);
        assert_eq!(c.panic_threshold_percent(), 50);
        assert_eq!(c.ejection_time(1), Duration::from_secs(30));
        assert_eq!(c.ejection_time(3), Duration::from_secs(90));
        assert_eq!(c.ejection_time(100), Duration::from_secs(300));
    }

    #[test]
    fn rejects_bad_values() {
        let field = |b: RoundRobinConfigBuilder| b.build().unwrap_err().field();
        assert_eq!(field(RoundRobinConfig::builder().name("")), "name");
        assert_eq!(field(RoundRobinConfig::builder().name("a b")), "name");
        assert_eq!(
            field(RoundRobinConfig::builder().base_ejection_time(Duration::ZERO)),
            "base_ejection_time"
        );
        assert_eq!(
            field(RoundRobinConfig::builder().max_ejection_time(Duration::from_secs(1))),
            "max_ejection_time"
        );
        let too_long = resilience_core::config::MAX_DURATION + Duration::from_nanos(1);
        assert_eq!(
            field(
                RoundRobinConfig::builder()
                    .base_ejection_time(too_long)
                    .max_ejection_time(too_long)
            ),
            "base_ejection_time"
        );
        assert_eq!(
            field(RoundRobinConfig::builder().max_ejection_time(too_long)),
            "max_ejection_time"
        );
        assert!(
            RoundRobinConfig::builder()
                .base_ejection_time(resilience_core::config::MAX_DURATION)
                .max_ejection_time(resilience_core::config::MAX_DURATION)
                .build()
                .is_ok()
        );
        assert_eq!(
            field(RoundRobinConfig::builder().max_ejection_percent(101)),
            "max_ejection_percent"
        );
        assert_eq!(
            field(RoundRobinConfig::builder().panic_threshold_percent(101)),
            "panic_threshold_percent"
        );
        assert!(
            RoundRobinConfig::builder()
                .consecutive_failures(0)
                .base_ejection_time(Duration::ZERO)
                .build()
                .is_ok()
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn deserializes_through_the_builder() {
        let c: RoundRobinConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, RoundRobinConfig::default());
        let c: RoundRobinConfig =
            serde_json::from_str(r#"{"max_ejection_time": 60000, "base_ejection_time": "1m"}"#)
                .unwrap();
        assert_eq!(c.max_ejection_time(), Duration::from_secs(60));
        for bad in [
            r#"{"unknown": 1}"#,
            r#"{"base_ejection_time": "ten"}"#,
            r#"{"name": "a b"}"#,
            r#"{"max_ejection_time": "1s"}"#,
            r#"{"max_ejection_time": "8761h"}"#,
        ] {
            assert!(
                serde_json::from_str::<RoundRobinConfig>(bad).is_err(),
                "{bad}"
            );
        }
    }
}
