use std::time::Duration;

use resilience_core::Priority;
use resilience_core::config::{ConfigError, validate_name, validate_positive_duration};

/// How a throttle decides what share of calls to refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ThrottleMode {
    /// "Only allow xx% of calls": a fixed share, changeable at run time
    /// through the [`ThrottleHandle`](super::ThrottleHandle).
    #[default]
    Fixed,
    /// Client-side throttling from the accept ratio (Google SRE, "Handling
    /// Overload"): `P(reject) = max(0, (requests - K * accepts) / (requests + 1))`
    /// over a trailing window, once the window holds at least
    /// [`minimum_requests`](ThrottleConfigBuilder::minimum_requests).
    Adaptive,
}

/// Validated configuration of a [`ThrottleLayer`](super::ThrottleLayer).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use resilience_circuit_breaker::throttle::ThrottleConfig;
/// use resilience_core::Priority;
///
/// let config = ThrottleConfig::builder()
///     .name("inventory")
///     .adaptive()
///     .k(2.0)
///     .window(Duration::from_secs(60))
///     .priority_weight(Priority::SheddablePlus, 0.5)
///     .build()?;
/// assert_eq!(config.priority_weight(Priority::Critical), 0.0);
///
/// let err = ThrottleConfig::builder().allow_percent(120.0).build().unwrap_err();
/// assert_eq!(err.field(), "allow_percent");
/// # Ok::<_, resilience_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "ThrottleConfigBuilder"))]
pub struct ThrottleConfig {
    pub(crate) name: String,
    pub(crate) mode: ThrottleMode,
    pub(crate) allow_percent: f64,
    pub(crate) k: f64,
    pub(crate) window: Duration,
    pub(crate) buckets: u32,
    pub(crate) minimum_requests: u32,
    pub(crate) max_reject_probability: f64,
    pub(crate) weights: [f64; 4],
    pub(crate) retry_after: Duration,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) max_waiters: u32,
}

/// Builds a [`ThrottleConfig`]; see [`ThrottleConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct ThrottleConfigBuilder {
    name: String,
    mode: ThrottleMode,
    allow_percent: f64,
    k: f64,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    window: Duration,
    buckets: u32,
    minimum_requests: u32,
    max_reject_probability: f64,
    /// Weights by priority, lowest first (`sheddable`, `sheddable_plus`,
    /// `critical`, `critical_plus`).
    weights: [f64; 4],
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    retry_after: Duration,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize_option")
    )]
    max_wait: Option<Duration>,
    max_waiters: u32,
}

// === impl ThrottleConfig ===

impl ThrottleConfig {
    /// The `name` metric label: `"default"`.
    pub const DEFAULT_NAME: &'static str = "default";
    /// Share of calls allowed in fixed mode: `100.0` percent.
    pub const DEFAULT_ALLOW_PERCENT: f64 = 100.0;
    /// The SRE formula's `K`: `2.0` (accept up to twice as many requests as
    /// the backend accepts before throttling).
    pub const DEFAULT_K: f64 = 2.0;
    /// The adaptive trailing window: `120s` (two minutes, as in the SRE
    /// book).
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(120);
    /// Buckets of the adaptive window: `12`.
    pub const DEFAULT_BUCKETS: u32 = 12;
    /// Requests the adaptive window must hold before the throttle may
    /// refuse: `20`. With fewer, one or two failures would refuse about
    /// half the next calls (the formula gives `1/2` after one failed
    /// request), which at a client's start, or while a dead endpoint is
    /// being ejected, fails calls a healthy endpoint would have served.
    pub const DEFAULT_MINIMUM_REQUESTS: u32 = 20;
    /// The largest `minimum_requests`: `1_000_000`.
    pub const MAX_MINIMUM_REQUESTS: u32 = 1_000_000;
    /// The highest adaptive rejection probability: `0.9`, so that some
    /// requests still reach the backend and notice its recovery.
    pub const DEFAULT_MAX_REJECT_PROBABILITY: f64 = 0.9;
    /// Throttle weights by priority, lowest first: `[1.0, 1.0, 0.0, 0.0]`:
    /// sheddable levels take the full throttle, critical levels none.
    pub const DEFAULT_WEIGHTS: [f64; 4] = [1.0, 1.0, 0.0, 0.0];
    /// `retry_after` of a throttled call: `1s`.
    pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
    /// The longest `retry_after`: `1 day` (it becomes a `Retry-After`
    /// header and gRPC pushback metadata).
    pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);
    /// Calls that may wait at once for a paired breaker to close: `256`.
    pub const DEFAULT_MAX_WAITERS: u32 = 256;

    /// A builder with the defaults.
    pub fn builder() -> ThrottleConfigBuilder {
        ThrottleConfigBuilder::default()
    }

    /// The name used as the `name` metric label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The mode.
    pub fn mode(&self) -> ThrottleMode {
        self.mode
    }

    /// Requests the adaptive window must hold before the throttle may
    /// refuse.
    pub fn minimum_requests(&self) -> u32 {
        self.minimum_requests
    }

    /// The initial share allowed in fixed mode, in percent.
    pub fn allow_percent(&self) -> f64 {
        self.allow_percent
    }

    /// The weight of `priority`: its rejection probability is the base
    /// probability times this weight (capped at 1).
    pub fn priority_weight(&self, priority: Priority) -> f64 {
        self.weights[priority.index()]
    }

    /// How long a low-priority call may wait for a paired breaker to close.
    pub fn max_wait(&self) -> Option<Duration> {
        self.max_wait
    }

    /// How many calls may wait at once for a paired breaker to close.
    pub fn max_waiters(&self) -> u32 {
        self.max_waiters
    }
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfigBuilder::default()
            .build()
            .expect("defaults are valid")
    }
}

// === impl ThrottleConfigBuilder ===

impl ThrottleConfigBuilder {
    /// Names the throttle: the `name` label of its metrics (default
    /// [`ThrottleConfig::DEFAULT_NAME`]).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Fixed mode (the default), allowing `percent` of the throttled calls
    /// (default [`ThrottleConfig::DEFAULT_ALLOW_PERCENT`]).
    pub fn allow_percent(mut self, percent: f64) -> Self {
        self.mode = ThrottleMode::Fixed;
        self.allow_percent = percent;
        self
    }

    /// Adaptive mode: throttles from the backend's accept ratio.
    pub fn adaptive(mut self) -> Self {
        self.mode = ThrottleMode::Adaptive;
        self
    }

    /// The SRE formula's `K`, `>= 1` (default [`ThrottleConfig::DEFAULT_K`]).
    /// Lower is more aggressive.
    pub fn k(mut self, k: f64) -> Self {
        self.k = k;
        self
    }

    /// The adaptive trailing window (default [`ThrottleConfig::DEFAULT_WINDOW`]).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Buckets of the adaptive window (default [`ThrottleConfig::DEFAULT_BUCKETS`]).
    pub fn buckets(mut self, buckets: u32) -> Self {
        self.buckets = buckets;
        self
    }

    /// Requests (admitted or refused) the adaptive window must hold before
    /// the throttle may refuse one (default
    /// [`ThrottleConfig::DEFAULT_MINIMUM_REQUESTS`], at most
    /// [`ThrottleConfig::MAX_MINIMUM_REQUESTS`]; `0` decides from the first
    /// request on). Below it the rejection probability is `0`: a window of
    /// a few calls says little about the backend, as a breaker's
    /// `minimum_calls` says. Fixed mode ignores it.
    pub fn minimum_requests(mut self, requests: u32) -> Self {
        self.minimum_requests = requests;
        self
    }

    /// The highest adaptive rejection probability, in `(0, 1]` (default
    /// [`ThrottleConfig::DEFAULT_MAX_REJECT_PROBABILITY`]).
    pub fn max_reject_probability(mut self, p: f64) -> Self {
        self.max_reject_probability = p;
        self
    }

    /// The weight of `priority`, `>= 0`: `0` never throttles it, `1` applies
    /// the throttle as is, more throttles it harder (default
    /// [`ThrottleConfig::DEFAULT_WEIGHTS`]).
    pub fn priority_weight(mut self, priority: Priority, weight: f64) -> Self {
        self.weights[priority.index()] = weight;
        self
    }

    /// `retry_after` of a throttled call (default
    /// [`ThrottleConfig::DEFAULT_RETRY_AFTER`], at most
    /// [`ThrottleConfig::MAX_RETRY_AFTER`]).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// "Wait until everything is ok": while the paired breaker (see
    /// [`ThrottleLayer::wait_for`](super::ThrottleLayer::wait_for)) is not
    /// closed, throttled priorities wait for it to close, at most `max_wait`
    /// and never past the request's deadline, instead of failing at once
    /// (default: no waiting).
    ///
    /// A waiting call is not yet counted anywhere. When the breaker lets
    /// every call through again (closed and past its recovery ramp), it goes
    /// through the throttle's normal admission (the fixed share or the
    /// adaptive probability, counted in the adaptive window) and may still
    /// be refused. At most [`max_waiters`](Self::max_waiters) calls wait at
    /// once; more are refused at once.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// The most calls that wait at once for the paired breaker (default
    /// [`ThrottleConfig::DEFAULT_MAX_WAITERS`]); a call beyond it is refused
    /// at once (`Throttled`, reason "too many waiting calls").
    pub fn max_waiters(mut self, max_waiters: u32) -> Self {
        self.max_waiters = max_waiters;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `name` is not 1 to 64 characters of `[A-Za-z0-9_.-]`
    /// - `allow_percent` is not in `[0, 100]`
    /// - `k` is below 1 or not finite
    /// - `window` is shorter than 1 ms per bucket or longer than
    ///   [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365 days);
    ///   `buckets` is not 1 to 1,000
    /// - `minimum_requests` is above
    ///   [`ThrottleConfig::MAX_MINIMUM_REQUESTS`]
    /// - `max_reject_probability` is not in `(0, 1]`
    /// - a `weights` entry is negative or not finite
    /// - `max_wait` is zero or longer than 365 days
    /// - `max_waiters` is zero
    /// - `retry_after` is zero or longer than
    ///   [`ThrottleConfig::MAX_RETRY_AFTER`]
    pub fn build(self) -> Result<ThrottleConfig, ConfigError> {
        validate_name("name", &self.name)?;
        if !(0.0..=100.0).contains(&self.allow_percent) {
            return Err(ConfigError::new("allow_percent", "must be in [0, 100]"));
        }
        if !(self.k.is_finite() && self.k >= 1.0) {
            return Err(ConfigError::new("k", "must be at least 1"));
        }
        validate_positive_duration("window", self.window)?;
        if !(1..=1000).contains(&self.buckets) {
            return Err(ConfigError::new("buckets", "must be 1 to 1000"));
        }
        if self.window < Duration::from_millis(1) * self.buckets {
            return Err(ConfigError::new(
                "window",
                "must be at least 1ms per bucket",
            ));
        }
        if self.minimum_requests > ThrottleConfig::MAX_MINIMUM_REQUESTS {
            return Err(ConfigError::new(
                "minimum_requests",
                "must be at most 1000000",
            ));
        }
        if !(self.max_reject_probability > 0.0 && self.max_reject_probability <= 1.0) {
            return Err(ConfigError::new(
                "max_reject_probability",
                "must be in (0, 1]",
            ));
        }
        if self.weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err(ConfigError::new(
                "weights",
                "must be finite and not negative",
            ));
        }
        if let Some(d) = self.max_wait {
            validate_positive_duration("max_wait", d)?;
        }
        if self.max_waiters == 0 {
            return Err(ConfigError::new("max_waiters", "must be at least 1"));
        }
        validate_positive_duration("retry_after", self.retry_after)?;
        if self.retry_after > ThrottleConfig::MAX_RETRY_AFTER {
            return Err(ConfigError::new("retry_after", "must be at most 1 day"));
        }
        Ok(ThrottleConfig {
            name: self.name,
            mode: self.mode,
            allow_percent: self.allow_percent,
            k: self.k,
            window: self.window,
            buckets: self.buckets,
            minimum_requests: self.minimum_requests,
            max_reject_probability: self.max_reject_probability,
            weights: self.weights,
            retry_after: self.retry_after,
            max_wait: self.max_wait,
            max_waiters: self.max_waiters,
        })
    }
}

impl Default for ThrottleConfigBuilder {
    fn default() -> Self {
        Self {
            name: ThrottleConfig::DEFAULT_NAME.to_owned(),
            mode: ThrottleMode::Fixed,
            allow_percent: ThrottleConfig::DEFAULT_ALLOW_PERCENT,
            k: ThrottleConfig::DEFAULT_K,
            window: ThrottleConfig::DEFAULT_WINDOW,
            buckets: ThrottleConfig::DEFAULT_BUCKETS,
            minimum_requests: ThrottleConfig::DEFAULT_MINIMUM_REQUESTS,
            max_reject_probability: ThrottleConfig::DEFAULT_MAX_REJECT_PROBABILITY,
            weights: ThrottleConfig::DEFAULT_WEIGHTS,
            retry_after: ThrottleConfig::DEFAULT_RETRY_AFTER,
            max_wait: None,
            max_waiters: ThrottleConfig::DEFAULT_MAX_WAITERS,
        }
    }
}

impl TryFrom<ThrottleConfigBuilder> for ThrottleConfig {
    type Error = ConfigError;

    fn try_from(builder: ThrottleConfigBuilder) -> Result<Self, Self::Error> {
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_each_bad_field() {
        let b = ThrottleConfig::builder;
        let cases: Vec<(ThrottleConfigBuilder, &str)> = vec![
            (b().name(""), "name"),
            (b().allow_percent(-1.0), "allow_percent"),
            (b().allow_percent(f64::NAN), "allow_percent"),
            (b().k(0.5), "k"),
            (b().buckets(0), "buckets"),
            (b().window(Duration::from_millis(3)).buckets(4), "window"),
            (b().max_reject_probability(0.0), "max_reject_probability"),
            (b().max_reject_probability(1.5), "max_reject_probability"),
            (b().priority_weight(Priority::Critical, -1.0), "weights"),
            (b().max_wait(Duration::ZERO), "max_wait"),
            (b().max_waiters(0), "max_waiters"),
            (b().minimum_requests(1_000_001), "minimum_requests"),
        ];
        for (builder, field) in cases {
            assert_eq!(builder.build().expect_err(field).field(), field);
        }
        assert!(b().allow_percent(0.0).build().is_ok());
        assert_eq!(b().build().unwrap().minimum_requests(), 20);
        assert_eq!(
            b().minimum_requests(0).build().unwrap().minimum_requests(),
            0
        );
        assert!(b().minimum_requests(1_000_000).build().is_ok());
    }

    /// Every configured duration is at most 365 days.
    #[test]
    fn rejects_over_long_durations() {
        use resilience_core::config::MAX_DURATION;
        let b = ThrottleConfig::builder;
        let long = MAX_DURATION + Duration::from_secs(1);
        let cases: Vec<(ThrottleConfigBuilder, &str)> = vec![
            (b().window(long), "window"),
            (b().window(Duration::MAX), "window"),
            (b().max_wait(long), "max_wait"),
            (b().max_wait(Duration::MAX), "max_wait"),
            (b().retry_after(long), "retry_after"),
        ];
        for (builder, field) in cases {
            assert_eq!(builder.build().expect_err(field).field(), field);
        }
        let ok = b()
            .window(MAX_DURATION)
            .max_wait(MAX_DURATION)
            .build()
            .unwrap();
        assert_eq!(ok.max_wait(), Some(MAX_DURATION));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn deserializes_through_build() {
        let c: ThrottleConfig =
            serde_json::from_str(r#"{"mode": "adaptive", "k": 1.5, "max_wait": "2s"}"#).unwrap();
        assert_eq!(c.mode(), ThrottleMode::Adaptive);
        assert_eq!(c.max_wait(), Some(Duration::from_secs(2)));
        assert!(serde_json::from_str::<ThrottleConfig>(r#"{"k": 0.1}"#).is_err());
        let c: ThrottleConfig = serde_json::from_str(r#"{"max_waiters": 5}"#).unwrap();
        assert_eq!(c.max_waiters(), 5);
        assert!(serde_json::from_str::<ThrottleConfig>(r#"{"max_waiters": 0}"#).is_err());
        let c: ThrottleConfig = serde_json::from_str(r#"{"minimum_requests": 5}"#).unwrap();
        assert_eq!(c.minimum_requests(), 5);
        let err = serde_json::from_str::<ThrottleConfig>(r#"{"minimum_requests": 2000000}"#);
        assert!(err.unwrap_err().to_string().contains("minimum_requests"));
    }
}
