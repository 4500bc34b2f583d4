//! Adaptive concurrency: the limit comes from a latency-driven algorithm
//! instead of a constant.
//!
//! Two algorithms, with the published defaults of Netflix's
//! `concurrency-limits`:
//!
//! - [`AimdLimit`]: additive increase while calls succeed and the limit is in
//!   use, multiplicative decrease on an error or a call slower than a timeout.
//! - [`Gradient2Limit`]: compares a short-term RTT with a long-term average
//!   and grows or shrinks the limit by their ratio, plus a small queue
//!   allowance so the limit probes upward.
//!
//! Both are bounded by a minimum and a maximum. Select one with
//! [`BoundedQueueConfigBuilder::adaptive`](crate::BoundedQueueConfigBuilder::adaptive).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use resilience_bounded_queue::adaptive::{AimdConfig, AimdLimit};
//!
//! let config = AimdConfig::builder().initial(10).min(5).max(20).build()?;
//! let mut limit = AimdLimit::new(config);
//! // A fast success with the limit in use: +1.
//! assert_eq!(limit.update(Duration::from_millis(5), 10, false), 11);
//! // An error: x0.9, never below the minimum.
//! assert_eq!(limit.update(Duration::from_millis(5), 11, true), 9);
//! # Ok::<_, resilience_core::ConfigError>(())
//! ```

use std::time::Duration;

use resilience_core::ConfigError;
use resilience_core::config::validate_positive_duration;

/// Which adaptive algorithm sets the limit.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum AdaptiveLimit {
    /// Additive increase, multiplicative decrease.
    Aimd(AimdConfig),
    /// Netflix's Gradient2.
    Gradient2(Gradient2Config),
}

/// Validated configuration of [`AimdLimit`].
#[derive(Debug, Clone, PartialEq)]
pub struct AimdConfig {
    initial: usize,
    min: usize,
    max: usize,
    backoff_ratio: f64,
    timeout: Duration,
}

/// Builds an [`AimdConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct AimdConfigBuilder {
    config: AimdConfig,
}

/// Validated configuration of [`Gradient2Limit`].
#[derive(Debug, Clone, PartialEq)]
pub struct Gradient2Config {
    initial: usize,
    min: usize,
    max: usize,
    smoothing: f64,
    rtt_tolerance: f64,
    long_window: usize,
    queue_size: usize,
}

/// Builds a [`Gradient2Config`].
#[derive(Debug, Clone)]
#[must_use]
pub struct Gradient2ConfigBuilder {
    config: Gradient2Config,
}

/// The AIMD algorithm's state.
#[derive(Debug, Clone)]
pub struct AimdLimit {
    config: AimdConfig,
    limit: usize,
}

/// The Gradient2 algorithm's state.
#[derive(Debug, Clone)]
pub struct Gradient2Limit {
    config: Gradient2Config,
    estimate: f64,
    long_rtt: ExpAvg,
}

#[derive(Debug, Clone)]
struct ExpAvg {
    value: f64,
    count: usize,
    window: usize,
    warmup: usize,
}

#[derive(Debug)]
pub(crate) enum LimitState {
    Aimd(AimdLimit),
    Gradient2(Gradient2Limit),
}

// === impl AdaptiveLimit ===

impl AdaptiveLimit {
    pub(crate) fn state(&self) -> LimitState {
        match self {
            AdaptiveLimit::Aimd(c) => LimitState::Aimd(AimdLimit::new(c.clone())),
            AdaptiveLimit::Gradient2(c) => LimitState::Gradient2(Gradient2Limit::new(c.clone())),
        }
    }

    pub(crate) fn bounds(&self) -> (usize, usize, usize) {
        match self {
            AdaptiveLimit::Aimd(c) => (c.initial, c.min, c.max),
            AdaptiveLimit::Gradient2(c) => (c.initial, c.min, c.max),
        }
    }
}

impl From<AimdConfig> for AdaptiveLimit {
    fn from(c: AimdConfig) -> Self {
        AdaptiveLimit::Aimd(c)
    }
}

impl From<Gradient2Config> for AdaptiveLimit {
    fn from(c: Gradient2Config) -> Self {
        AdaptiveLimit::Gradient2(c)
    }
}

// === impl LimitState ===

impl LimitState {
    #[cfg(test)]
    pub(crate) fn limit(&self) -> usize {
        match self {
            LimitState::Aimd(l) => l.limit(),
            LimitState::Gradient2(l) => l.limit(),
        }
    }

    pub(crate) fn update(&mut self, rtt: Duration, inflight: usize, dropped: bool) -> usize {
        match self {
            LimitState::Aimd(l) => l.update(rtt, inflight, dropped),
            LimitState::Gradient2(l) => l.update(rtt, inflight, dropped),
        }
    }
}

fn check_bounds(initial: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if min == 0 {
        return Err(ConfigError::new("min", "must be at least 1"));
    }
    if max < min {
        return Err(ConfigError::new("max", "must not be below min"));
    }
    if !(min..=max).contains(&initial) {
        return Err(ConfigError::new("initial", "must be within min..=max"));
    }
    Ok(())
}

// === impl AimdConfig ===

impl AimdConfig {
    /// The initial limit: `20`.
    pub const DEFAULT_INITIAL: usize = 20;
    /// The smallest limit: `20`.
    pub const DEFAULT_MIN: usize = 20;
    /// The largest limit: `200`.
    pub const DEFAULT_MAX: usize = 200;
    /// The factor applied on a drop: `0.9`.
    pub const DEFAULT_BACKOFF_RATIO: f64 = 0.9;
    /// A call slower than this counts as a drop: `5s`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A builder with the defaults.
    pub fn builder() -> AimdConfigBuilder {
        AimdConfigBuilder {
            config: AimdConfig {
                initial: Self::DEFAULT_INITIAL,
                min: Self::DEFAULT_MIN,
                max: Self::DEFAULT_MAX,
                backoff_ratio: Self::DEFAULT_BACKOFF_RATIO,
                timeout: Self::DEFAULT_TIMEOUT,
            },
        }
    }
}

impl Default for AimdConfig {
    fn default() -> Self {
        Self::builder().build().expect("defaults are valid")
    }
}

impl AimdConfigBuilder {
    /// The initial limit (default [`AimdConfig::DEFAULT_INITIAL`]).
    pub fn initial(mut self, n: usize) -> Self {
        self.config.initial = n;
        self
    }

    /// The smallest limit (default [`AimdConfig::DEFAULT_MIN`]).
    pub fn min(mut self, n: usize) -> Self {
        self.config.min = n;
        self
    }

    /// The largest limit (default [`AimdConfig::DEFAULT_MAX`]).
    pub fn max(mut self, n: usize) -> Self {
        self.config.max = n;
        self
    }

    /// The factor applied on a drop (default
    /// [`AimdConfig::DEFAULT_BACKOFF_RATIO`]).
    pub fn backoff_ratio(mut self, r: f64) -> Self {
        self.config.backoff_ratio = r;
        self
    }

    /// A call slower than this counts as a drop (default
    /// [`AimdConfig::DEFAULT_TIMEOUT`], at most 365 days).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.config.timeout = d;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `min` is zero, `max` is below `min`, `initial` is outside them
    /// - `backoff_ratio` is not within `0.5..1.0`
    /// - `timeout` is zero or longer than
    ///   [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365 days)
    pub fn build(self) -> Result<AimdConfig, ConfigError> {
        let c = self.config;
        check_bounds(c.initial, c.min, c.max)?;
        if !(0.5..1.0).contains(&c.backoff_ratio) {
            return Err(ConfigError::new("backoff_ratio", "must be within 0.5..1.0"));
        }
        validate_positive_duration("timeout", c.timeout)?;
        Ok(c)
    }
}

// === impl AimdLimit ===

impl AimdLimit {
    /// Starts at the configured initial limit.
    pub fn new(config: AimdConfig) -> Self {
        let limit = config.initial;
        Self { config, limit }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes one sample (a call's RTT, the requests in flight when it
    /// started, whether it failed) and returns the new limit.
    pub fn update(&mut self, rtt: Duration, inflight: usize, dropped: bool) -> usize {
        let c = &self.config;
        if dropped || rtt > c.timeout {
            let next = (self.limit as f64 * c.backoff_ratio) as usize;
            self.limit = next.clamp(c.min, c.max);
        } else if inflight.saturating_mul(2) >= self.limit {
            self.limit = self.limit.saturating_add(1).clamp(c.min, c.max);
        }
        self.limit
    }
}

// === impl Gradient2Config ===

impl Gradient2Config {
    /// The initial limit: `20`.
    pub const DEFAULT_INITIAL: usize = 20;
    /// The smallest limit: `20`.
    pub const DEFAULT_MIN: usize = 20;
    /// The largest limit: `200`.
    pub const DEFAULT_MAX: usize = 200;
    /// How much of each new estimate is taken: `0.2`.
    pub const DEFAULT_SMOOTHING: f64 = 0.2;
    /// How much slower than the long-term RTT is still fine: `1.5`.
    pub const DEFAULT_RTT_TOLERANCE: f64 = 1.5;
    /// Samples in the long-term RTT average: `600`.
    pub const DEFAULT_LONG_WINDOW: usize = 600;
    /// Extra requests allowed above the estimate, to probe upward: `4`.
    pub const DEFAULT_QUEUE_SIZE: usize = 4;

    /// A builder with the defaults.
    pub fn builder() -> Gradient2ConfigBuilder {
        Gradient2ConfigBuilder {
            config: Gradient2Config {
                initial: Self::DEFAULT_INITIAL,
                min: Self::DEFAULT_MIN,
                max: Self::DEFAULT_MAX,
                smoothing: Self::DEFAULT_SMOOTHING,
                rtt_tolerance: Self::DEFAULT_RTT_TOLERANCE,
                long_window: Self::DEFAULT_LONG_WINDOW,
                queue_size: Self::DEFAULT_QUEUE_SIZE,
            },
        }
    }
}

impl Default for Gradient2Config {
    fn default() -> Self {
        Self::builder().build().expect("defaults are valid")
    }
}

impl Gradient2ConfigBuilder {
    /// The initial limit (default [`Gradient2Config::DEFAULT_INITIAL`]).
    pub fn initial(mut self, n: usize) -> Self {
        self.config.initial = n;
        self
    }

    /// The smallest limit (default [`Gradient2Config::DEFAULT_MIN`]).
    pub fn min(mut self, n: usize) -> Self {
        self.config.min = n;
        self
    }

    /// The largest limit (default [`Gradient2Config::DEFAULT_MAX`]).
    pub fn max(mut self, n: usize) -> Self {
        self.config.max = n;
        self
    }

    /// How much of each new estimate is taken (default
    /// [`Gradient2Config::DEFAULT_SMOOTHING`]).
    pub fn smoothing(mut self, s: f64) -> Self {
        self.config.smoothing = s;
        self
    }

    /// RTT tolerance (default [`Gradient2Config::DEFAULT_RTT_TOLERANCE`]).
    pub fn rtt_tolerance(mut self, t: f64) -> Self {
        self.config.rtt_tolerance = t;
        self
    }

    /// Samples in the long-term average (default
    /// [`Gradient2Config::DEFAULT_LONG_WINDOW`]).
    pub fn long_window(mut self, n: usize) -> Self {
        self.config.long_window = n;
        self
    }

    /// Queue allowance (default [`Gradient2Config::DEFAULT_QUEUE_SIZE`]).
    pub fn queue_size(mut self, n: usize) -> Self {
        self.config.queue_size = n;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `min` is zero, `max` is below `min`, `initial` is outside them
    /// - `smoothing` is not within `(0, 1]`
    /// - `rtt_tolerance` is below `1`
    /// - `long_window` is zero
    pub fn build(self) -> Result<Gradient2Config, ConfigError> {
        let c = self.config;
        check_bounds(c.initial, c.min, c.max)?;
        if !(c.smoothing > 0.0 && c.smoothing <= 1.0) {
            return Err(ConfigError::new("smoothing", "must be within (0, 1]"));
        }
        if c.rtt_tolerance.is_nan() || c.rtt_tolerance < 1.0 {
            return Err(ConfigError::new("rtt_tolerance", "must be at least 1"));
        }
        if c.long_window == 0 {
            return Err(ConfigError::new("long_window", "must be at least 1"));
        }
        Ok(c)
    }
}

// === impl Gradient2Limit ===

impl Gradient2Limit {
    /// Starts at the configured initial limit.
    pub fn new(config: Gradient2Config) -> Self {
        let long_rtt = ExpAvg {
            value: 0.0,
            count: 0,
            window: config.long_window,
            warmup: 10,
        };
        Self {
            estimate: config.initial as f64,
            config,
            long_rtt,
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.estimate as usize
    }

    /// Takes one sample (a call's RTT, the requests in flight when it
    /// started, whether it failed) and returns the new limit.
    pub fn update(&mut self, rtt: Duration, inflight: usize, _dropped: bool) -> usize {
        let c = &self.config;
        let short = rtt.as_secs_f64().max(1e-9);
        let long = self.long_rtt.add(short);
        // Drift the long average down after a latency drop, so it recovers.
        if long / short > 2.0 {
            self.long_rtt.value *= 0.95;
        }
        // Don't grow the limit while it is not in use.
        if (inflight as f64) < self.estimate / 2.0 {
            return self.limit();
        }
        let gradient = (c.rtt_tolerance * long / short).clamp(0.5, 1.0);
        let next = self.estimate * gradient + c.queue_size as f64;
        let next = self.estimate * (1.0 - c.smoothing) + next * c.smoothing;
        self.estimate = next.clamp(c.min as f64, c.max as f64);
        self.limit()
    }
}

// === impl ExpAvg ===

impl ExpAvg {
    fn add(&mut self, sample: f64) -> f64 {
        if self.count < self.warmup {
            self.count += 1;
            self.value += (sample - self.value) / self.count as f64;
        } else {
            let factor = 2.0 / (self.window as f64 + 1.0);
            self.value = self.value * (1.0 - factor) + sample * factor;
        }
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn aimd_grows_only_when_used_and_backs_off() {
        let c = AimdConfig::builder()
            .initial(10)
            .min(2)
            .max(12)
            .build()
            .unwrap();
        let mut l = AimdLimit::new(c);
        let ms = Duration::from_millis(1);
        assert_eq!(l.update(ms, 1, false), 10, "idle: no growth");
        assert_eq!(l.update(ms, 5, false), 11);
        assert_eq!(l.update(ms, 11, false), 12);
        assert_eq!(l.update(ms, 12, false), 12, "bounded by max");
        assert_eq!(
            l.update(Duration::from_secs(6), 12, false),
            10,
            "slow = drop"
        );
        for _ in 0..50 {
            l.update(ms, 1, true);
        }
        assert_eq!(l.limit(), 2, "bounded by min");
    }

    #[test]
    fn aimd_timeout_is_positive_and_at_most_365_days() {
        use resilience_core::config::MAX_DURATION;
        let field = |d: Duration| {
            AimdConfig::builder()
                .timeout(d)
                .build()
                .unwrap_err()
                .field()
        };
        assert_eq!(field(Duration::ZERO), "timeout");
        assert_eq!(field(MAX_DURATION + Duration::from_nanos(1)), "timeout");
        assert_eq!(field(Duration::MAX), "timeout");
        let c = AimdConfig::builder().timeout(MAX_DURATION).build().unwrap();
        assert_eq!(AimdLimit::new(c).update(Duration::MAX, 1, false), 20);
    }

    #[test]
    fn gradient2_shrinks_when_latency_rises_and_recovers() {
        let c = Gradient2Config::builder()
            .initial(50)
            .min(5)
            .max(100)
            .build()
            .unwrap();
        let mut l = Gradient2Limit::new(c);
        for _ in 0..200 {
            l.update(Duration::from_millis(10), 50, false);
        }
        let steady = l.limit();
        assert!(
            steady >= 50,
            "steady latency grows by the queue allowance: {steady}"
        );
        for _ in 0..30 {
            l.update(Duration::from_millis(100), 100, false);
        }
        let congested = l.limit();
        assert!(congested < steady, "{congested} < {steady}");
        for _ in 0..300 {
            l.update(Duration::from_millis(10), 100, false);
        }
        assert!(l.limit() > congested);
    }

    #[test]
    fn configs_validate() {
        assert_eq!(
            AimdConfig::builder().min(0).build().unwrap_err().field(),
            "min"
        );
        assert_eq!(
            AimdConfig::builder()
                .min(10)
                .max(5)
                .initial(7)
                .build()
                .unwrap_err()
                .field(),
            "max"
        );
        assert_eq!(
            AimdConfig::builder()
                .initial(500)
                .build()
                .unwrap_err()
                .field(),
            "initial"
        );
        assert_eq!(
            AimdConfig::builder()
                .backoff_ratio(1.0)
                .build()
                .unwrap_err()
                .field(),
            "backoff_ratio"
        );
        assert_eq!(
            Gradient2Config::builder()
                .smoothing(0.0)
                .build()
                .unwrap_err()
                .field(),
            "smoothing"
        );
        assert_eq!(
            Gradient2Config::builder()
                .rtt_tolerance(0.5)
                .build()
                .unwrap_err()
                .field(),
            "rtt_tolerance"
        );
        assert_eq!(
            Gradient2Config::builder()
                .long_window(0)
                .build()
                .unwrap_err()
                .field(),
            "long_window"
        );
    }

    proptest! {
        #[test]
        fn limits_stay_within_bounds(samples in proptest::collection::vec((0u64..10_000, 0usize..300, any::<bool>()), 1..200)) {
            let mut a = AimdLimit::new(AimdConfig::builder().initial(10).min(5).max(50).build().unwrap());
            let mut g = Gradient2Limit::new(Gradient2Config::builder().initial(10).min(5).max(50).build().unwrap());
            for (us, inflight, dropped) in samples {
                let rtt = Duration::from_micros(us);
                let la = a.update(rtt, inflight, dropped);
                let lg = g.update(rtt, inflight, dropped);
                prop_assert!((5..=50).contains(&la));
                prop_assert!((5..=50).contains(&lg));
            }
        }
    }
}
