use std::time::Duration;

use resilience_core::config::{
    ConfigError, validate_duration, validate_name, validate_positive_duration,
};

/// How the breaker remembers recent calls.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum SlidingWindow {
    /// The last `size` calls, truly sliding: each call pushes the oldest out.
    Count {
        /// Number of calls remembered.
        size: u32,
    },
    /// The calls of the last `length`, split into `buckets` buckets; the
    /// oldest bucket expires as a whole.
    Time {
        /// How far back the window reaches.
        length: Duration,
        /// Number of buckets (the window's resolution).
        buckets: u32,
    },
    /// No window: the circuit opens after `threshold` failures in a row.
    ConsecutiveFailures {
        /// Failures in a row that open the circuit.
        threshold: u32,
    },
}

/// Which window a configuration file selects (`window` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum WindowType {
    /// [`SlidingWindow::Count`].
    #[default]
    Count,
    /// [`SlidingWindow::Time`].
    Time,
    /// [`SlidingWindow::ConsecutiveFailures`].
    ConsecutiveFailures,
}

/// Validated configuration of a [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use resilience_circuit_breaker::CircuitBreakerConfig;
///
/// let config = CircuitBreakerConfig::builder()
///     .name("inventory")
///     .time_window(Duration::from_secs(30))
///     .failure_rate_threshold(25.0)
///     .slow_call_duration(Duration::from_millis(500))
///     .open_for(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(config.name(), "inventory");
///
/// let err = CircuitBreakerConfig::builder().half_open_probes(0).build().unwrap_err();
/// assert_eq!(err.field(), "half_open_probes");
/// # Ok::<_, resilience_core::ConfigError>(())
/// ```
///
/// With the `serde` feature it deserializes, through the same validation:
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use resilience_circuit_breaker::CircuitBreakerConfig;
/// let config: CircuitBreakerConfig = serde_json::from_str(
///     r#"{"name": "inventory", "window": "time", "window_duration": "30s", "open_for": "5s"}"#,
/// ).unwrap();
/// assert_eq!(config.open_for().as_secs(), 5);
/// assert!(serde_json::from_str::<CircuitBreakerConfig>(r#"{"open_for": "0s"}"#).is_err());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "CircuitBreakerConfigBuilder"))]
pub struct CircuitBreakerConfig {
    pub(crate) name: String,
    pub(crate) window: SlidingWindow,
    pub(crate) failure_rate_threshold: f64,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) minimum_calls: u32,
    pub(crate) open_for: Duration,
    pub(crate) max_open_for: Duration,
    pub(crate) backoff_multiplier: f64,
    pub(crate) jitter: f64,
    pub(crate) half_open_probes: u32,
    pub(crate) half_open_max_duration: Duration,
    pub(crate) recovery_ramp: Option<Duration>,
    pub(crate) recovery_start_percent: f64,
}

/// Builds a [`CircuitBreakerConfig`]; see [`CircuitBreakerConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct CircuitBreakerConfigBuilder {
    name: String,
    window: WindowType,
    window_size: u32,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    window_duration: Duration,
    window_buckets: u32,
    consecutive_failures: u32,
    failure_rate_threshold: f64,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize_option")
    )]
    slow_call_duration: Option<Duration>,
    slow_call_rate_threshold: f64,
    minimum_calls: u32,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    open_for: Duration,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    max_open_for: Duration,
    backoff_multiplier: f64,
    jitter: f64,
    half_open_probes: u32,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    half_open_max_duration: Duration,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize_option")
    )]
    recovery_ramp: Option<Duration>,
    recovery_start_percent: f64,
}

// === impl CircuitBreakerConfig ===

impl CircuitBreakerConfig {
    /// The `name` metric label: `"default"`.
    pub const DEFAULT_NAME: &'static str = "default";
    /// Size of the count-based window: `100` calls.
    pub const DEFAULT_WINDOW_SIZE: u32 = 100;
    /// Length of the time-based window: `60s`.
    pub const DEFAULT_WINDOW_DURATION: Duration = Duration::from_secs(60);
    /// Buckets of the time-based window: `10`.
    pub const DEFAULT_WINDOW_BUCKETS: u32 = 10;
    /// Failures in a row that open the circuit in consecutive mode: `5`.
    pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
    /// Failure rate (percent) at or above which the circuit opens: `50.0`.
    pub const DEFAULT_FAILURE_RATE_THRESHOLD: f64 = 50.0;
    /// Slow-call rate (percent) at or above which the circuit opens: `100.0`.
    pub const DEFAULT_SLOW_CALL_RATE_THRESHOLD: f64 = 100.0;
    /// Calls in the window before any decision: `20`.
    pub const DEFAULT_MINIMUM_CALLS: u32 = 20;
    /// How long the circuit stays open the first time: `30s`.
    pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(30);
    /// The longest the circuit stays open after repeated opens: `300s`.
    pub const DEFAULT_MAX_OPEN_FOR: Duration = Duration::from_secs(300);
    /// Growth of the open duration at each re-open: `2.0`.
    pub const DEFAULT_BACKOFF_MULTIPLIER: f64 = 2.0;
    /// Random spread of the open duration, as a fraction: `0.1` (±10%).
    pub const DEFAULT_JITTER: f64 = 0.1;
    /// Probe calls admitted in half-open: `3`.
    pub const DEFAULT_HALF_OPEN_PROBES: u32 = 3;
    /// The longest the circuit stays half-open waiting for its probes:
    /// `60s`. Then probes still outstanding count as failures and the
    /// circuit opens again.
    pub const DEFAULT_HALF_OPEN_MAX_DURATION: Duration = Duration::from_secs(60);
    /// The longest `slow_call_duration`: `4294s` (about 71 minutes, the
    /// range of the 32-bit microsecond stamps calls are timed with).
    pub const MAX_SLOW_CALL_DURATION: Duration = Duration::from_secs(4294);
    /// Share of traffic admitted at the start of a recovery ramp: `10.0`
    /// percent.
    pub const DEFAULT_RECOVERY_START_PERCENT: f64 = 10.0;

    /// A builder with the defaults.
    pub fn builder() -> CircuitBreakerConfigBuilder {
        CircuitBreakerConfigBuilder::default()
    }

    /// The name used as the `name` metric label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The window.
    pub fn window(&self) -> SlidingWindow {
        self.window
    }

    /// The failure rate threshold, in percent.
    pub fn failure_rate_threshold(&self) -> f64 {
        self.failure_rate_threshold
    }

    /// Calls at least this long are slow, if set.
    pub fn slow_call_duration(&self) -> Option<Duration> {
        self.slow_call_duration
    }

    /// The slow-call rate threshold, in percent.
    pub fn slow_call_rate_threshold(&self) -> f64 {
        self.slow_call_rate_threshold
    }

    /// Calls in the window before any decision.
    pub fn minimum_calls(&self) -> u32 {
        self.minimum_calls
    }

    /// How long the circuit stays open the first time.
    pub fn open_for(&self) -> Duration {
        self.open_for
    }

    /// The longest the circuit stays open.
    pub fn max_open_for(&self) -> Duration {
        self.max_open_for
    }

    /// Probe calls admitted in half-open.
    pub fn half_open_probes(&self) -> u32 {
        self.half_open_probes
    }

    /// How long the circuit waits in half-open for its probes.
    pub fn half_open_max_duration(&self) -> Duration {
        self.half_open_max_duration
    }

    /// The recovery ramp after closing, if any.
    pub fn recovery_ramp(&self) -> Option<Duration> {
        self.recovery_ramp
    }
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfigBuilder::default()
            .build()
            .expect("defaults are valid")
    }
}

// === impl CircuitBreakerConfigBuilder ===

impl CircuitBreakerConfigBuilder {
    /// Names the breaker: the `name` label of its metrics (default
    /// [`CircuitBreakerConfig::DEFAULT_NAME`]).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Uses a count-based window over the last `size` calls (the default,
    /// [`CircuitBreakerConfig::DEFAULT_WINDOW_SIZE`]).
    pub fn count_window(mut self, size: u32) -> Self {
        self.window = WindowType::Count;
        self.window_size = size;
        self
    }

    /// Uses a time-based window over the last `length` (default length
    /// [`CircuitBreakerConfig::DEFAULT_WINDOW_DURATION`]).
    pub fn time_window(mut self, length: Duration) -> Self {
        self.window = WindowType::Time;
        self.window_duration = length;
        self
    }

    /// Buckets of the time-based window (default
    /// [`CircuitBreakerConfig::DEFAULT_WINDOW_BUCKETS`]).
    pub fn time_window_buckets(mut self, buckets: u32) -> Self {
        self.window_buckets = buckets;
        self
    }

    /// Opens after `threshold` failures in a row, without a window (default
    /// threshold [`CircuitBreakerConfig::DEFAULT_CONSECUTIVE_FAILURES`]).
    pub fn consecutive_failures(mut self, threshold: u32) -> Self {
        self.window = WindowType::ConsecutiveFailures;
        self.consecutive_failures = threshold;
        self
    }

    /// Failure rate in percent, `(0, 100]`, at or above which the circuit
    /// opens (default [`CircuitBreakerConfig::DEFAULT_FAILURE_RATE_THRESHOLD`]).
    pub fn failure_rate_threshold(mut self, percent: f64) -> Self {
        self.failure_rate_threshold = percent;
        self
    }

    /// Calls taking at least `duration` are slow (default: no slow-call
    /// detection), at most [`CircuitBreakerConfig::MAX_SLOW_CALL_DURATION`].
    /// In consecutive mode a slow call counts as a failure.
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.slow_call_duration = Some(duration);
        self
    }

    /// Slow-call rate in percent, `(0, 100]`, at or above which the circuit
    /// opens (default [`CircuitBreakerConfig::DEFAULT_SLOW_CALL_RATE_THRESHOLD`]).
    pub fn slow_call_rate_threshold(mut self, percent: f64) -> Self {
        self.slow_call_rate_threshold = percent;
        self
    }

    /// Calls in the window before any decision (default
    /// [`CircuitBreakerConfig::DEFAULT_MINIMUM_CALLS`]).
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls;
        self
    }

    /// How long the circuit stays open the first time (default
    /// [`CircuitBreakerConfig::DEFAULT_OPEN_FOR`]).
    pub fn open_for(mut self, duration: Duration) -> Self {
        self.open_for = duration;
        self
    }

    /// The cap of the open duration (default
    /// [`CircuitBreakerConfig::DEFAULT_MAX_OPEN_FOR`]).
    pub fn max_open_for(mut self, duration: Duration) -> Self {
        self.max_open_for = duration;
        self
    }

    /// Growth of the open duration at each re-open without a close in
    /// between, `>= 1.0` (default [`CircuitBreakerConfig::DEFAULT_BACKOFF_MULTIPLIER`]).
    pub fn backoff_multiplier(mut self, multiplier: f64) -> Self {
        self.backoff_multiplier = multiplier;
        self
    }

    /// Random spread of the open duration, a fraction in `[0, 1)` (default
    /// [`CircuitBreakerConfig::DEFAULT_JITTER`]).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Probe calls admitted at once in half-open (default
    /// [`CircuitBreakerConfig::DEFAULT_HALF_OPEN_PROBES`]).
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.half_open_probes = probes;
        self
    }

    /// The longest the circuit stays half-open while all its probe slots
    /// are taken (default
    /// [`CircuitBreakerConfig::DEFAULT_HALF_OPEN_MAX_DURATION`]). After it,
    /// the next call finds the outstanding probes hung: they count as
    /// failures and the circuit opens again (their late outcomes are
    /// ignored). Calls refused while the probes are out carry the time left
    /// of this period as `retry_after`.
    pub fn half_open_max_duration(mut self, duration: Duration) -> Self {
        self.half_open_max_duration = duration;
        self
    }

    /// After closing, admits a share of traffic rising linearly from the
    /// start share to 100% over `ramp` (default: no ramp).
    pub fn recovery_ramp(mut self, ramp: Duration) -> Self {
        self.recovery_ramp = Some(ramp);
        self
    }

    /// The share admitted at the start of the recovery ramp, in percent
    /// `(0, 100]` (default [`CircuitBreakerConfig::DEFAULT_RECOVERY_START_PERCENT`]).
    pub fn recovery_start_percent(mut self, percent: f64) -> Self {
        self.recovery_start_percent = percent;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `name` is not 1 to 64 characters of `[A-Za-z0-9_.-]`
    /// - `window_size` is not 1 to 1,000,000
    /// - `window_duration` is zero, shorter than 1 ms per bucket, or longer
    ///   than [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365
    ///   days), as is every duration below
    /// - `window_buckets` is not 1 to 1,000
    /// - `consecutive_failures` is zero
    /// - `failure_rate_threshold`, `slow_call_rate_threshold` or
    ///   `recovery_start_percent` is not in `(0, 100]`
    /// - `slow_call_duration` or `recovery_ramp` is zero or longer than 365
    ///   days
    /// - `slow_call_duration` is above
    ///   [`CircuitBreakerConfig::MAX_SLOW_CALL_DURATION`]
    /// - `minimum_calls` is zero, or larger than a count window
    /// - `open_for` is zero or longer than 365 days, or `max_open_for` is
    ///   smaller than `open_for` or longer than 365 days
    /// - `backoff_multiplier` is below 1 or not finite
    /// - `jitter` is not in `[0, 1)`
    /// - `half_open_probes` is not 1 to 1,000
    /// - `half_open_max_duration` is zero or longer than 365 days
    pub fn build(self) -> Result<CircuitBreakerConfig, ConfigError> {
        validate_name("name", &self.name)?;
        let window = match self.window {
            WindowType::Count => {
                if !(1..=1_000_000).contains(&self.window_size) {
                    return Err(ConfigError::new("window_size", "must be 1 to 1000000"));
                }
                if self.minimum_calls > self.window_size {
                    return Err(ConfigError::new(
                        "minimum_calls",
                        "must not exceed window_size",
                    ));
                }
                SlidingWindow::Count {
                    size: self.window_size,
                }
            }
            WindowType::Time => {
                validate_positive_duration("window_duration", self.window_duration)?;
                if !(1..=1000).contains(&self.window_buckets) {
                    return Err(ConfigError::new("window_buckets", "must be 1 to 1000"));
                }
                if self.window_duration < Duration::from_millis(1) * self.window_buckets {
                    return Err(ConfigError::new(
                        "window_duration",
                        "must be at least 1ms per bucket",
                    ));
                }
                SlidingWindow::Time {
                    length: self.window_duration,
                    buckets: self.window_buckets,
                }
            }
            WindowType::ConsecutiveFailures => {
                if self.consecutive_failures == 0 {
                    return Err(ConfigError::new(
                        "consecutive_failures",
                        "must be at least 1",
                    ));
                }
                SlidingWindow::ConsecutiveFailures {
                    threshold: self.consecutive_failures,
                }
            }
        };
        percent("failure_rate_threshold", self.failure_rate_threshold)?;
        percent("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        percent("recovery_start_percent", self.recovery_start_percent)?;
        if let Some(d) = self.slow_call_duration {
            validate_positive_duration("slow_call_duration", d)?;
        }
        if self
            .slow_call_duration
            .is_some_and(|d| d > CircuitBreakerConfig::MAX_SLOW_CALL_DURATION)
        {
            return Err(ConfigError::new(
                "slow_call_duration",
                "must be at most 4294s (about 71 minutes)",
            ));
        }
        if let Some(d) = self.recovery_ramp {
            validate_positive_duration("recovery_ramp", d)?;
        }
        if self.minimum_calls == 0 {
            return Err(ConfigError::new("minimum_calls", "must be at least 1"));
        }
        validate_positive_duration("open_for", self.open_for)?;
        validate_duration("max_open_for", self.max_open_for)?;
        if self.max_open_for < self.open_for {
            return Err(ConfigError::new(
                "max_open_for",
                "must not be smaller than open_for",
            ));
        }
        if !(self.backoff_multiplier.is_finite() && self.backoff_multiplier >= 1.0) {
            return Err(ConfigError::new("backoff_multiplier", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(ConfigError::new("jitter", "must be in [0, 1)"));
        }
        if !(1..=1000).contains(&self.half_open_probes) {
            return Err(ConfigError::new("half_open_probes", "must be 1 to 1000"));
        }
        validate_positive_duration("half_open_max_duration", self.half_open_max_duration)?;
        Ok(CircuitBreakerConfig {
            name: self.name,
            window,
            failure_rate_threshold: self.failure_rate_threshold,
            slow_call_duration: self.slow_call_duration,
            slow_call_rate_threshold: self.slow_call_rate_threshold,
            minimum_calls: self.minimum_calls,
            open_for: self.open_for,
            max_open_for: self.max_open_for,
            backoff_multiplier: self.backoff_multiplier,
            jitter: self.jitter,
            half_open_probes: self.half_open_probes,
            half_open_max_duration: self.half_open_max_duration,
            recovery_ramp: self.recovery_ramp,
            recovery_start_percent: self.recovery_start_percent,
        })
    }
}

fn percent(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if value > 0.0 && value <= 100.0 {
        Ok(())
    } else {
        Err(ConfigError::new(field, "must be in (0, 100]"))
    }
}

impl Default for CircuitBreakerConfigBuilder {
    fn default() -> Self {
        Self {
            name: CircuitBreakerConfig::DEFAULT_NAME.to_owned(),
            window: WindowType::Count,
            window_size: CircuitBreakerConfig::DEFAULT_WINDOW_SIZE,
            window_duration: CircuitBreakerConfig::DEFAULT_WINDOW_DURATION,
            window_buckets: CircuitBreakerConfig::DEFAULT_WINDOW_BUCKETS,
            consecutive_failures: CircuitBreakerConfig::DEFAULT_CONSECUTIVE_FAILURES,
            failure_rate_threshold: CircuitBreakerConfig::DEFAULT_FAILURE_RATE_THRESHOLD,
            slow_call_duration: None,
            slow_call_rate_threshold: CircuitBreakerConfig::DEFAULT_SLOW_CALL_RATE_THRESHOLD,
            minimum_calls: CircuitBreakerConfig::DEFAULT_MINIMUM_CALLS,
            open_for: CircuitBreakerConfig::DEFAULT_OPEN_FOR,
            max_open_for: CircuitBreakerConfig::DEFAULT_MAX_OPEN_FOR,
            backoff_multiplier: CircuitBreakerConfig::DEFAULT_BACKOFF_MULTIPLIER,
            jitter: CircuitBreakerConfig::DEFAULT_JITTER,
            half_open_probes: CircuitBreakerConfig::DEFAULT_HALF_OPEN_PROBES,
            half_open_max_duration: CircuitBreakerConfig::DEFAULT_HALF_OPEN_MAX_DURATION,
            recovery_ramp: None,
            recovery_start_percent: CircuitBreakerConfig::DEFAULT_RECOVERY_START_PERCENT,
        }
    }
}

impl TryFrom<CircuitBreakerConfigBuilder> for CircuitBreakerConfig {
    type Error = ConfigError;

    fn try_from(builder: CircuitBreakerConfigBuilder) -> Result<Self, Self::Error> {
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_are_valid() {
        let c = CircuitBreakerConfig::default();
        assert_eq!(c.window(), SlidingWindow::Count { size: 100 });
        assert_eq!(c.open_for(), CircuitBreakerConfig::DEFAULT_OPEN_FOR);
    }

    #[test]
    fn rejects_each_bad_field() {
        let b = CircuitBreakerConfig::builder;
        let cases: Vec<(CircuitBreakerConfigBuilder, &str)> = vec![
            (b().name(""), "name"),
            (b().name("a b"), "name"),
            (b().count_window(0), "window_size"),
            (b().count_window(10).minimum_calls(11), "minimum_calls"),
            (b().minimum_calls(0), "minimum_calls"),
            (b().time_window(Duration::ZERO), "window_duration"),
            (
                b().time_window(Duration::from_millis(5))
                    .time_window_buckets(10),
                "window_duration",
            ),
            (
                b().time_window(Duration::from_secs(1))
                    .time_window_buckets(0),
                "window_buckets",
            ),
            (b().consecutive_failures(0), "consecutive_failures"),
            (b().failure_rate_threshold(0.0), "failure_rate_threshold"),
            (b().failure_rate_threshold(100.5), "failure_rate_threshold"),
            (
                b().failure_rate_threshold(f64::NAN),
                "failure_rate_threshold",
            ),
            (
                b().slow_call_rate_threshold(-1.0),
                "slow_call_rate_threshold",
            ),
            (b().slow_call_duration(Duration::ZERO), "slow_call_duration"),
            (
                b().slow_call_duration(Duration::from_secs(4295)),
                "slow_call_duration",
            ),
            (b().slow_call_duration(Duration::MAX), "slow_call_duration"),
            (b().recovery_ramp(Duration::ZERO), "recovery_ramp"),
            (b().recovery_start_percent(0.0), "recovery_start_percent"),
            (b().open_for(Duration::ZERO), "open_for"),
            (
                b().open_for(Duration::from_secs(10))
                    .max_open_for(Duration::from_secs(5)),
                "max_open_for",
            ),
            (b().backoff_multiplier(0.5), "backoff_multiplier"),
            (b().backoff_multiplier(f64::INFINITY), "backoff_multiplier"),
            (b().jitter(1.0), "jitter"),
            (b().jitter(-0.1), "jitter"),
            (b().half_open_probes(0), "half_open_probes"),
            (b().half_open_probes(1001), "half_open_probes"),
            (
                b().half_open_max_duration(Duration::ZERO),
                "half_open_max_duration",
            ),
        ];
        for (builder, field) in cases {
            let err = builder.build().expect_err(field);
            assert_eq!(err.field(), field);
        }
    }

    /// Every configured duration is at most 365 days.
    #[test]
    fn rejects_over_long_durations() {
        use resilience_core::config::MAX_DURATION;
        let b = CircuitBreakerConfig::builder;
        let long = MAX_DURATION + Duration::from_secs(1);
        let cases: Vec<(CircuitBreakerConfigBuilder, &str)> = vec![
            (b().time_window(long), "window_duration"),
            (b().time_window(Duration::MAX), "window_duration"),
            (b().slow_call_duration(long), "slow_call_duration"),
            (b().recovery_ramp(long), "recovery_ramp"),
            (b().open_for(long).max_open_for(long), "open_for"),
            (b().max_open_for(long), "max_open_for"),
            (b().max_open_for(Duration::MAX), "max_open_for"),
            (b().half_open_max_duration(long), "half_open_max_duration"),
        ];
        for (builder, field) in cases {
            let err = builder.build().expect_err(field);
            assert_eq!(err.field(), field);
        }
    }

    proptest! {
        #[test]
        fn valid_thresholds_build(rate in 0.001f64..=100.0, probes in 1u32..=1000, size in 1u32..10_000) {
            let c = CircuitBreakerConfig::builder()
                .failure_rate_threshold(rate)
                .half_open_probes(probes)
                .count_window(size)
                .minimum_calls(size.min(20))
                .build();
            prop_assert!(c.is_ok());
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn deserializes_through_build() {
        let c: CircuitBreakerConfig = serde_json::from_str(
            r#"{"window": "consecutive_failures", "consecutive_failures": 3, "slow_call_duration": "2s"}"#,
        )
        .unwrap();
        assert_eq!(
            c.window(),
            SlidingWindow::ConsecutiveFailures { threshold: 3 }
        );
        assert_eq!(c.slow_call_duration(), Some(Duration::from_secs(2)));
        let c: CircuitBreakerConfig =
            serde_json::from_str(r#"{"half_open_max_duration": "10s"}"#).unwrap();
        assert_eq!(c.half_open_max_duration(), Duration::from_secs(10));
        assert!(
            serde_json::from_str::<CircuitBreakerConfig>(r#"{"half_open_max_duration": 0}"#)
                .is_err()
        );
        let err = serde_json::from_str::<CircuitBreakerConfig>(r#"{"jitter": 2.0}"#).unwrap_err();
        assert!(err.to_string().contains("jitter"), "{err}");
        assert!(serde_json::from_str::<CircuitBreakerConfig>(r#"{"bogus": 1}"#).is_err());
        let err = serde_json::from_str::<CircuitBreakerConfig>(r#"{"slow_call_duration": "2h"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("slow_call_duration"), "{err}");
    }
}
