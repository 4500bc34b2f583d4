//! [`ClientConfig`]: one configuration for the client stack.

use std::net::SocketAddr;
use std::time::Duration;

use resilience_circuit_breaker::CircuitBreakerConfig;
use resilience_circuit_breaker::throttle::ThrottleConfig;
use resilience_core::ConfigError;
use resilience_core::config::{validate_name, validate_positive_duration};
use resilience_discovery::RoundRobinConfig;
use resilience_discovery::health::HealthCheckConfig;
use resilience_retry::RetryConfig;

/// The configuration of a [`ClientStack`](super::ClientStack): the member
/// crates' own configurations, validated by their own rules.
///
/// | part | default | remove with |
/// |---|---|---|
/// | overall deadline (tries and backoff included) | [`DEFAULT_DEADLINE`](Self::DEFAULT_DEADLINE), or sooner at the request's own | [`ClientPart::Deadline`] |
/// | retries with a budget | `RetryConfig::default()` named after the client (3 tries, idempotent requests only, budget 20% + 10/s) | [`ClientPart::Retry`] (one try) |
/// | adaptive throttle | `ThrottleConfig` adaptive, named after the client | [`ClientPart::Throttle`] |
/// | round robin, passive ejection | `RoundRobinConfig::default()` (5 failures in a row eject for 30 s) | always on |
/// | active health checks | `HealthCheckConfig::default()` (`GET /health`, or `grpc.health.v1`) | [`ClientPart::HealthCheck`] |
/// | a breaker per endpoint | `CircuitBreakerConfig::default()` named after the client | [`ClientPart::Breaker`] |
/// | attempt timeout | [`DEFAULT_ATTEMPT_TIMEOUT`](Self::DEFAULT_ATTEMPT_TIMEOUT) | [`ClientPart::AttemptTimeout`] |
///
/// A sub-configuration you give keeps its own `name`; the defaults are
/// named after the client.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use resilience::client::{ClientConfig, ClientPart};
///
/// let config = ClientConfig::builder("inventory")
///     .deadline(Duration::from_secs(1))
///     .attempt_timeout(Duration::from_millis(300))
///     .without(ClientPart::Throttle)
///     .build()?;
/// assert_eq!(config.attempt_timeout(), Some(Duration::from_millis(300)));
/// assert!(config.throttle().is_none());
/// # Ok::<_, resilience::ConfigError>(())
/// ```
///
/// With the `serde` feature, from TOML (each table is the member crate's
/// own format; unknown keys are refused):
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use resilience::client::ClientConfig;
/// let config: ClientConfig = toml::from_str(r#"
///     name = "inventory"
///     deadline = "1s"
///     attempt_timeout = "300ms"
///     endpoints = ["127.0.0.1:3001", "127.0.0.1:3002"]
///     [retry]
///     name = "inventory"
///     max_attempts = 3
///     [breaker]
///     name = "inventory"
///     failure_rate_threshold = 50.0
/// "#).unwrap();
/// assert_eq!(config.endpoints().len(), 2);
/// assert!(toml::from_str::<ClientConfig>("name = \"x\"\nattempt_timeout = \"0s\"").is_err());
/// # }
/// ```
///
/// # Changing settings at run time
///
/// A running stack takes a new configuration through its
/// [`ReloadHandle`](crate::reload::ReloadHandle)
/// ([`ClientHandles::reload`](super::ClientHandles::reload)): by hand, or
/// following a file or an etcd key (see [`crate::reload`]). What can change
/// applies to the next calls (a call under way finishes its tries with the
/// settings its next decision reads); the breakers keep their windows and
/// states, the retry budget and the throttle their counts, the balancer its
/// endpoints and their health.
///
/// | setting | at run time | how |
/// |---|---|---|
/// | `deadline` | yes | set on each call as it starts |
/// | `attempt_timeout` | yes | each endpoint's service rebuilds its timeout at its next try |
/// | `retry.max_attempts`, `retry.backoff_*`, `retry.jitter`, `retry.attempt_timeout`, `retry.max_pushback` | yes | read at each decision (atomics) |
/// | `retry.budget.ratio`, `retry.budget.min_per_second`, `retry.budget.reserve` | yes | the budget keeps the requests and retries it counted |
/// | `breaker.*` thresholds: `failure_rate_threshold`, `slow_call_rate_threshold`, `slow_call_duration`, `minimum_calls`, `consecutive_failures` | yes | every endpoint's breaker, and those of endpoints that come later; judged at the next recorded failure |
/// | `breaker.open_for`, `max_open_for`, `backoff_multiplier`, `jitter`, `half_open_probes`, `half_open_max_duration`, `recovery_ramp`, `recovery_start_percent` | yes | from the next transition (an open period already running ends when it was due to) |
/// | `throttle.k`, `throttle.max_reject_probability`, `throttle.weights`, `throttle.allow_percent` | yes | the adaptive window keeps its counts |
/// | `name`, and the names inside (`retry.name`, `breaker.name`, `throttle.name`) | restart only | they label the metrics |
/// | `breaker.window` (kind, size, length, buckets), `retry.budget.window`, `retry.budget.burst_window`, `throttle.window`, `throttle.buckets` | restart only | their counts would be lost |
/// | `throttle.mode`, `throttle.retry_after`, `throttle.max_wait`, `throttle.max_waiters` | restart only | |
/// | `retry.retryable_statuses`, `retry.retryable_grpc_codes`, `retry.grpc_methods`, `retry.max_replay_body` | restart only | fixed in the request classifier and the body buffers |
/// | `balancer` (passive ejection), `health_check` | restart only | the endpoints' health is kept as it is |
/// | `endpoints` (and the endpoint source's kind) | restart only | change a source's endpoints through the source (a file, etcd, a `StaticSource`) or [`RoundRobinHandle`](resilience_discovery::RoundRobinHandle) |
/// | `without` (a part removed or added) | restart only | the stack's layers are fixed when built |
///
/// A restart-only setting that differs keeps its old value: the change is
/// logged at warn and counted
/// ([`CONFIG_RESTART_ONLY_TOTAL`](crate::reload::CONFIG_RESTART_ONLY_TOTAL)),
/// and the rest is applied.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "ClientConfigBuilder"))]
pub struct ClientConfig {
    pub(crate) name: String,
    pub(crate) deadline: Option<Duration>,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) retry: RetryConfig,
    pub(crate) throttle: Option<ThrottleConfig>,
    pub(crate) balancer: RoundRobinConfig,
    pub(crate) health_check: Option<HealthCheckConfig>,
    pub(crate) breaker: Option<CircuitBreakerConfig>,
    pub(crate) endpoints: Vec<SocketAddr>,
}

/// Builds a [`ClientConfig`]; see [`ClientConfig::builder`].
#[derive(Debug, Clone, Default)]
#[must_use]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct ClientConfigBuilder {
    name: String,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize_option")
    )]
    deadline: Option<Duration>,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize_option")
    )]
    attempt_timeout: Option<Duration>,
    retry: Option<RetryConfig>,
    throttle: Option<ThrottleConfig>,
    balancer: Option<RoundRobinConfig>,
    health_check: Option<HealthCheckConfig>,
    breaker: Option<CircuitBreakerConfig>,
    endpoints: Vec<SocketAddr>,
    without: Vec<ClientPart>,
}

/// A removable part of the client stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum ClientPart {
    /// The overall deadline: a call lasts as long as its tries (and the
    /// request's own deadline) allow.
    Deadline,
    /// Retries: one try per call.
    Retry,
    /// The adaptive throttle.
    Throttle,
    /// Active health checks: endpoints are healthy until passive ejection
    /// says otherwise.
    HealthCheck,
    /// The breakers.
    Breaker,
    /// The attempt timeout: a try lasts until the overall deadline.
    AttemptTimeout,
}

// === impl ClientConfig ===

impl ClientConfig {
    /// How long a call may take as a whole, tries and backoff included:
    /// `10s` (or less: the request's own deadline).
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
    /// How long one try may take on one endpoint: `2s`.
    pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

    /// A builder for the client called `name` (its metrics, logs and
    /// snapshots say it).
    pub fn builder(name: impl Into<String>) -> ClientConfigBuilder {
        ClientConfigBuilder {
            name: name.into(),
            ..ClientConfigBuilder::default()
        }
    }

    /// The client's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The overall deadline, unless removed.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The attempt timeout, unless removed.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.attempt_timeout
    }

    /// The retries (one try when removed).
    pub fn retry(&self) -> &RetryConfig {
        &self.retry
    }

    /// The throttle, unless removed.
    pub fn throttle(&self) -> Option<&ThrottleConfig> {
        self.throttle.as_ref()
    }

    /// The balancer's passive ejection.
    pub fn balancer(&self) -> &RoundRobinConfig {
        &self.balancer
    }

    /// The active health checks, unless removed.
    pub fn health_check(&self) -> Option<&HealthCheckConfig> {
        self.health_check.as_ref()
    }

    /// The configuration of each endpoint's breaker, unless removed.
    pub fn breaker(&self) -> Option<&CircuitBreakerConfig> {
        self.breaker.as_ref()
    }

    /// The static endpoints of the configuration (used when the builder is
    /// given no other source).
    pub fn endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
    }
}

// === impl ClientConfigBuilder ===

impl ClientConfigBuilder {
    /// The overall deadline (default [`ClientConfig::DEFAULT_DEADLINE`]).
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }

    /// The attempt timeout (default
    /// [`ClientConfig::DEFAULT_ATTEMPT_TIMEOUT`]).
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.attempt_timeout = Some(d);
        self
    }

    /// The retries.
    pub fn retry(mut self, config: RetryConfig) -> Self {
        self.retry = Some(config);
        self
    }

    /// The throttle.
    pub fn throttle(mut self, config: ThrottleConfig) -> Self {
        self.throttle = Some(config);
        self
    }

    /// The balancer's passive ejection.
    pub fn balancer(mut self, config: RoundRobinConfig) -> Self {
        self.balancer = Some(config);
        self
    }

    /// The active health checks.
    pub fn health_check(mut self, config: HealthCheckConfig) -> Self {
        self.health_check = Some(config);
        self
    }

    /// The configuration of each endpoint's breaker.
    pub fn breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.breaker = Some(config);
        self
    }

    /// Static endpoints.
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.endpoints.extend(endpoints);
        self
    }

    /// Removes a part of the stack.
    pub fn without(mut self, part: ClientPart) -> Self {
        self.without.push(part);
        self
    }

    /// Validates the configuration. The sub-configurations were validated
    /// when they were built (or read).
    ///
    /// # Errors
    /// - `name` is not a valid name
    /// - `deadline` or `attempt_timeout` is zero or above 365 days
    /// - a part is both configured and removed
    pub fn build(self) -> Result<ClientConfig, ConfigError> {
        validate_name("name", &self.name)?;
        let off = |part| self.without.contains(&part);
        let both = |part, set: bool, field| {
            if off(part) && set {
                Err(ConfigError::new(field, "configured and removed"))
            } else {
                Ok(())
            }
        };
        both(ClientPart::Deadline, self.deadline.is_some(), "deadline")?;
        both(
            ClientPart::AttemptTimeout,
            self.attempt_timeout.is_some(),
            "attempt_timeout",
        )?;
        both(ClientPart::Retry, self.retry.is_some(), "retry")?;
        both(ClientPart::Throttle, self.throttle.is_some(), "throttle")?;
        both(
            ClientPart::HealthCheck,
            self.health_check.is_some(),
            "health_check",
        )?;
        both(ClientPart::Breaker, self.breaker.is_some(), "breaker")?;
        let deadline = if off(ClientPart::Deadline) {
            None
        } else {
            let d = self.deadline.unwrap_or(ClientConfig::DEFAULT_DEADLINE);
            validate_positive_duration("deadline", d)?;
            Some(d)
        };
        let attempt_timeout = if off(ClientPart::AttemptTimeout) {
            None
        } else {
            let d = self
                .attempt_timeout
                .unwrap_or(ClientConfig::DEFAULT_ATTEMPT_TIMEOUT);
            validate_positive_duration("attempt_timeout", d)?;
            Some(d)
        };
        let name = self.name;
        let retry = match (off(ClientPart::Retry), self.retry) {
            (true, _) => RetryConfig::builder().name(&name).max_attempts(1).build()?,
            (false, Some(config)) => config,
            (false, None) => RetryConfig::builder().name(&name).build()?,
        };
        let throttle = match (off(ClientPart::Throttle), self.throttle) {
            (true, _) => None,
            (false, Some(config)) => Some(config),
            (false, None) => Some(ThrottleConfig::builder().name(&name).adaptive().build()?),
        };
        let balancer = match self.balancer {
            Some(config) => config,
            None => RoundRobinConfig::builder().name(&name).build()?,
        };
        let health_check = match (off(ClientPart::HealthCheck), self.health_check) {
            (true, _) => None,
            (false, config) => Some(config.unwrap_or_default()),
        };
        let breaker = match (off(ClientPart::Breaker), self.breaker) {
            (true, _) => None,
            (false, Some(config)) => Some(config),
            (false, None) => Some(CircuitBreakerConfig::builder().name(&name).build()?),
        };
        Ok(ClientConfig {
            name,
            deadline,
            attempt_timeout,
            retry,
            throttle,
            balancer,
            health_check,
            breaker,
            endpoints: self.endpoints,
        })
    }
}

#[cfg(feature = "serde")]
impl TryFrom<ClientConfigBuilder> for ClientConfig {
    type Error = ConfigError;

    fn try_from(builder: ClientConfigBuilder) -> Result<Self, ConfigError> {
        builder.build()
    }
}
