//! [`FleetRateLimitConfig`] and its builder.

use std::time::Duration;

use resilience_core::config::{ConfigError, validate_name, validate_positive_duration};

/// What a fleet rate limit does while Redis is slow, down or answering
/// garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum WhenRedisFails {
    /// Admit against a local bucket per key holding this instance's share of
    /// the limit (`limit / instances`), so the fleet together stays near the
    /// limit; what it admits so is charged to Redis when Redis answers
    /// again (the last period of it). The default.
    #[default]
    LocalShare,
    /// Refuse every request that the tokens already leased do not cover.
    FailClosed,
}

/// Validated configuration of a
/// [`FleetRateLimitLayer`](super::FleetRateLimitLayer).
///
/// With the `serde` feature it deserializes (same validation as the
/// builder):
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use resilience_bounded_queue::fleet::FleetRateLimitConfig;
/// let c: FleetRateLimitConfig = serde_json::from_str(
///     r#"{"name": "payments", "num": 1000, "per": "1s", "batch": 20, "instances": 3,
///         "redis_timeout": "20ms", "when_redis_fails": "fail_closed"}"#,
/// ).unwrap();
/// assert_eq!(c.rate().0, 1000);
/// assert!(serde_json::from_str::<FleetRateLimitConfig>(r#"{"batch": 0}"#).is_err());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "FleetRateLimitConfigBuilder"))]
pub struct FleetRateLimitConfig {
    pub(crate) name: String,
    pub(crate) prefix: String,
    pub(crate) num: u64,
    pub(crate) per: Duration,
    pub(crate) burst: u64,
    pub(crate) batch: u64,
    pub(crate) reserve: u64,
    pub(crate) instances: u64,
    pub(crate) redis_timeout: Duration,
    pub(crate) probe_every: Duration,
    pub(crate) when_redis_fails: WhenRedisFails,
    pub(crate) max_keys: usize,
}

/// Builds a [`FleetRateLimitConfig`]; see [`FleetRateLimitConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct FleetRateLimitConfigBuilder {
    name: String,
    prefix: String,
    num: u64,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    per: Duration,
    burst: Option<u64>,
    batch: u64,
    reserve: u64,
    instances: u64,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    redis_timeout: Duration,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    probe_every: Duration,
    when_redis_fails: WhenRedisFails,
    max_keys: usize,
}

// === impl FleetRateLimitConfig ===

impl FleetRateLimitConfig {
    /// The `name` metric label and part of the Redis keys: `"default"`.
    pub const DEFAULT_NAME: &'static str = "default";
    /// The prefix of every Redis key: `"resilience:fleet:"` (then the name,
    /// `:`, and the request's key).
    pub const DEFAULT_PREFIX: &'static str = "resilience:fleet:";
    /// Requests per [`DEFAULT_PER`](Self::DEFAULT_PER) for the whole fleet,
    /// per key: `100`.
    pub const DEFAULT_NUM: u64 = 100;
    /// The period of the rate: `1s`.
    pub const DEFAULT_PER: Duration = Duration::from_secs(1);
    /// Tokens an instance leases from Redis at once: `10`.
    pub const DEFAULT_BATCH: u64 = 10;
    /// Tokens of the burst only critical requests may use: `0`.
    pub const DEFAULT_RESERVE: u64 = 0;
    /// Instances sharing the limit, for the local fallback share: `1`.
    pub const DEFAULT_INSTANCES: u64 = 1;
    /// The longest a request waits on Redis, and the timeout of each Redis
    /// command: `50ms`.
    pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);
    /// How often Redis is tried again while it is failing: `1s`.
    pub const DEFAULT_PROBE_EVERY: Duration = Duration::from_secs(1);
    /// Keys tracked locally at most (least recently leased go first):
    /// `10_000`.
    pub const DEFAULT_MAX_KEYS: usize = 10_000;

    /// A builder with the defaults.
    pub fn builder() -> FleetRateLimitConfigBuilder {
        FleetRateLimitConfigBuilder::default()
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests allowed per period for the fleet (per key), and the period.
    pub fn rate(&self) -> (u64, Duration) {
        (self.num, self.per)
    }

    /// Tokens the fleet may take at once in Redis (GCRA burst).
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Tokens leased at once.
    pub fn batch(&self) -> u64 {
        self.batch
    }

    /// Tokens of the burst reserved to critical requests.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// The most the fleet can admit beyond what Redis grants in any window
    /// while every instance reaches Redis: tokens leased but not yet spent,
    /// at most `batch` per instance for general traffic plus `batch` for
    /// the critical reserve, so `instances x 2 x batch` (`instances x batch`
    /// without a reserve). While some instances are cut off from Redis,
    /// each may admit its local share on top; see the
    /// [module docs](super#how-much-the-fleet-admits-in-every-mode).
    pub fn over_admission_bound(&self) -> u64 {
        let per_instance = if self.reserve > 0 {
            2 * self.batch
        } else {
            self.batch
        };
        self.instances.saturating_mul(per_instance)
    }
}

impl Default for FleetRateLimitConfigBuilder {
    fn default() -> Self {
        Self {
            name: FleetRateLimitConfig::DEFAULT_NAME.to_owned(),
            prefix: FleetRateLimitConfig::DEFAULT_PREFIX.to_owned(),
            num: FleetRateLimitConfig::DEFAULT_NUM,
            per: FleetRateLimitConfig::DEFAULT_PER,
            burst: None,
            batch: FleetRateLimitConfig::DEFAULT_BATCH,
            reserve: FleetRateLimitConfig::DEFAULT_RESERVE,
            instances: FleetRateLimitConfig::DEFAULT_INSTANCES,
            redis_timeout: FleetRateLimitConfig::DEFAULT_REDIS_TIMEOUT,
            probe_every: FleetRateLimitConfig::DEFAULT_PROBE_EVERY,
            when_redis_fails: WhenRedisFails::LocalShare,
            max_keys: FleetRateLimitConfig::DEFAULT_MAX_KEYS,
        }
    }
}

impl FleetRateLimitConfigBuilder {
    /// Names the limit: the `name` metric label, and part of its Redis keys
    /// (instances sharing a limit use the same name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The prefix of the Redis keys (default
    /// [`FleetRateLimitConfig::DEFAULT_PREFIX`]).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Allows `num` requests per `per`, per key, for the whole fleet
    /// (default 100 per second).
    pub fn rate(mut self, num: u64, per: Duration) -> Self {
        self.num = num;
        self.per = per;
        self
    }

    /// Tokens the fleet may take at once (the GCRA's burst tolerance in
    /// Redis). Default: `instances x batch + reserve`, the least that lets
    /// every instance hold a full lease. Each of the `n` instances asking
    /// for a key has a fair share holding at most `(burst - reserve) / n`
    /// of it: below `batch`, a saturated instance leases less at a time (and
    /// asks Redis more often).
    pub fn burst(mut self, burst: u64) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Tokens an instance leases from Redis at once (default 10): a Redis
    /// command per `batch` requests, at most `batch` tokens held unspent.
    pub fn batch(mut self, batch: u64) -> Self {
        self.batch = batch;
        self
    }

    /// Tokens of the burst that only [`Priority::Critical`] and above may
    /// use (default 0).
    ///
    /// [`Priority::Critical`]: resilience_core::Priority::Critical
    pub fn reserve(mut self, reserve: u64) -> Self {
        self.reserve = reserve;
        self
    }

    /// How many instances share the limit (default 1); while Redis fails,
    /// each admits `limit / instances` on its own.
    pub fn instances(mut self, instances: u64) -> Self {
        self.instances = instances;
        self
    }

    /// The longest a request waits on Redis and the timeout of every Redis
    /// command (default 50 ms, at most 365 days).
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.redis_timeout = timeout;
        self
    }

    /// How often Redis is tried again while failing (default 1 s, at most
    /// 365 days).
    pub fn probe_every(mut self, every: Duration) -> Self {
        self.probe_every = every;
        self
    }

    /// What to do while Redis fails (default
    /// [`WhenRedisFails::LocalShare`]).
    pub fn when_redis_fails(mut self, policy: WhenRedisFails) -> Self {
        self.when_redis_fails = policy;
        self
    }

    /// Keys tracked locally at most (default 10,000), rounded up to a
    /// multiple of 16; beyond it the least recently leased key is forgotten
    /// (its unspent tokens are lost: the fleet admits less, never more).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `name` is not 1 to 64 characters of `[A-Za-z0-9_.-]`
    /// - `prefix` is empty or longer than 64 bytes
    /// - `num` (the rate) is zero
    /// - `per` is zero, longer than a day, or `per / num` is below a
    ///   microsecond (Redis counts in microseconds)
    /// - `batch` is zero or larger than `num`
    /// - `burst` is smaller than `batch + reserve`, or larger than `num`
    ///   (when `num` is at least `batch + reserve`)
    /// - `instances` is zero
    /// - `redis_timeout` or `probe_every` is zero or longer than
    ///   [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365 days),
    ///   the one rule for every configured duration
    /// - `max_keys` is zero
    pub fn build(self) -> Result<FleetRateLimitConfig, ConfigError> {
        let mut c = FleetRateLimitConfig {
            name: self.name,
            prefix: self.prefix,
            num: self.num,
            per: self.per,
            burst: 0,
            batch: self.batch,
            reserve: self.reserve,
            instances: self.instances,
            redis_timeout: self.redis_timeout,
            probe_every: self.probe_every,
            when_redis_fails: self.when_redis_fails,
            max_keys: self.max_keys,
        };
        validate_name("name", &c.name)?;
        if c.prefix.is_empty() || c.prefix.len() > 64 {
            return Err(ConfigError::new("prefix", "must be 1 to 64 bytes"));
        }
        if c.num == 0 {
            return Err(ConfigError::new("num", "must be at least 1"));
        }
        validate_positive_duration("per", c.per)?;
        if c.per > Duration::from_secs(86_400) {
            return Err(ConfigError::new("per", "must be between 1us and a day"));
        }
        if c.per.as_micros() < u128::from(c.num) {
            return Err(ConfigError::new(
                "per",
                "must be at least a microsecond per request",
            ));
        }
        if c.batch == 0 {
            return Err(ConfigError::new("batch", "must be at least 1"));
        }
        if c.batch > c.num {
            return Err(ConfigError::new("batch", "must not exceed the limit"));
        }
        if c.instances == 0 {
            return Err(ConfigError::new("instances", "must be at least 1"));
        }
        let least = c.batch.saturating_add(c.reserve);
        c.burst = self.burst.unwrap_or_else(|| {
            c.instances
                .saturating_mul(c.batch)
                .saturating_add(c.reserve)
                .min(c.num.max(least))
        });
        if c.burst < least {
            return Err(ConfigError::new(
                "burst",
                "must be at least batch + reserve",
            ));
        }
        if c.burst > c.num.max(least) {
            return Err(ConfigError::new("burst", "must not exceed the limit"));
        }
        validate_positive_duration("redis_timeout", c.redis_timeout)?;
        validate_positive_duration("probe_every", c.probe_every)?;
        if c.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        Ok(c)
    }
}

impl TryFrom<FleetRateLimitConfigBuilder> for FleetRateLimitConfig {
    type Error = ConfigError;

    fn try_from(b: FleetRateLimitConfigBuilder) -> Result<Self, Self::Error> {
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(b: FleetRateLimitConfigBuilder) -> &'static str {
        b.build().unwrap_err().field()
    }

    #[test]
    fn invalid_configs_fail_at_build() {
        let b = FleetRateLimitConfig::builder;
        assert_eq!(field(b().rate(0, Duration::from_secs(1))), "num");
        assert_eq!(field(b().rate(1, Duration::ZERO)), "per");
        assert_eq!(field(b().rate(1000, Duration::from_micros(10))), "per");
        assert_eq!(field(b().batch(0)), "batch");
        assert_eq!(field(b().rate(5, Duration::from_secs(1)).batch(6)), "batch");
        assert_eq!(field(b().name("")), "name");
        assert_eq!(field(b().prefix("")), "prefix");
        assert_eq!(field(b().instances(0)), "instances");
        assert_eq!(field(b().batch(10).reserve(5).burst(12)), "burst");
        assert_eq!(
            field(b().rate(100, Duration::from_secs(1)).burst(101)),
            "burst"
        );
        assert_eq!(field(b().redis_timeout(Duration::ZERO)), "redis_timeout");
        assert_eq!(field(b().probe_every(Duration::ZERO)), "probe_every");
        // One rule for every duration: at most 365 days, checked here rather
        // than overflowing an instant on the request path.
        let over = resilience_core::config::MAX_DURATION + Duration::from_nanos(1);
        assert_eq!(field(b().redis_timeout(over)), "redis_timeout");
        assert_eq!(field(b().redis_timeout(Duration::MAX)), "redis_timeout");
        assert_eq!(field(b().probe_every(over)), "probe_every");
        assert_eq!(field(b().probe_every(Duration::MAX)), "probe_every");
        assert_eq!(field(b().rate(1, Duration::MAX)), "per");
        assert_eq!(field(b().max_keys(0)), "max_keys");
    }

    #[test]
    fn default_burst_holds_every_lease() {
        let c = FleetRateLimitConfig::builder()
            .rate(1000, Duration::from_secs(1))
            .batch(20)
            .instances(3)
            .reserve(10)
            .build()
            .unwrap();
        assert_eq!(c.burst(), 70);
        assert_eq!(c.over_admission_bound(), 120);
        let c = FleetRateLimitConfig::builder()
            .rate(10, Duration::from_secs(1))
            .batch(10)
            .instances(3)
            .build()
            .unwrap();
        assert_eq!(c.burst(), 10, "capped at the limit");
        assert_eq!(c.over_admission_bound(), 30);
    }
}
