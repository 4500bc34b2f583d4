use std::time::Duration;

use resilience_core::config::{
    ConfigError, validate_duration, validate_name, validate_positive_duration,
};
use resilience_core::{GrpcCode, GrpcOutcome, HttpOutcome, Outcome, Priority};

/// The setters the retry and the hedge builders share (`name`,
/// `max_replay_body`, `grpc_method`, `budget`): one body, each type's own
/// docs.
macro_rules! shared_setters {
    (
        config: $config:ident,
        replay: $replay:literal,
        grpc: $grpc:literal,
        budget: $budget:literal $(,)?
    ) => {
        #[doc = concat!(
                                    "Names the layer: the `name` label of its metrics (default\n[`",
                                    stringify!($config),
                                    "::DEFAULT_NAME`])."
                                )]
        pub fn name(mut self, name: impl Into<String>) -> Self {
            self.name = name.into();
            self
        }

        #[doc = $replay]
        pub fn max_replay_body(mut self, bytes: usize) -> Self {
            self.max_replay_body = bytes;
            self
        }

        #[doc = $grpc]
        pub fn grpc_method(mut self, path: impl Into<String>) -> Self {
            self.grpc_methods.push(path.into());
            self
        }

        #[doc = $budget]
        pub fn budget(mut self, budget: RetryBudgetConfig) -> Self {
            self.budget = budget;
            self
        }
    };
}
pub(crate) use shared_setters;

/// How the backoff delay is randomised.
///
/// With an exponential cap `c = min(backoff_max, backoff_base × multiplier^(n-1))`
/// before the `n`-th retry:
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Jitter {
    /// Uniform in `[0, c)` ("full jitter", the default): spreads the retries
    /// of many clients that failed at once over the whole interval.
    #[default]
    Full,
    /// `c / 2` plus uniform in `[0, c / 2)` ("equal jitter").
    Equal,
    /// Exactly `c`: no randomness (tests, a single client).
    None,
}

/// Validated configuration of a [`RetryBudget`](crate::RetryBudget).
///
/// Retries may add at most `ratio` of the requests of the last `window`,
/// or `min_per_second × window` when that is more (a floor that lets a
/// quiet client retry at all); and within any `burst_window`, at most
/// `ratio` of that interval's requests, or `min_per_second ×
/// burst_window` when that is more, so that a burst of failures cannot
/// spend at once what the quiet seconds before it saved (see
/// [`RetryBudget`](crate::RetryBudget)). A lower priority stops
/// retrying while more of the budget is left than a higher one (see
/// [`RetryBudgetConfigBuilder::reserve`]).
///
/// ```
/// use std::time::Duration;
/// use resilience_retry::RetryBudgetConfig;
///
/// let budget = RetryBudgetConfig::builder()
///     .ratio(0.1)
///     .min_per_second(5)
///     .window(Duration::from_secs(30))
///     .burst_window(Duration::from_secs(2))
///     .build()?;
/// assert_eq!(budget.ratio(), 0.1);
/// assert_eq!(budget.burst_window(), Duration::from_secs(2));
///
/// let err = RetryBudgetConfig::builder().ratio(-1.0).build().unwrap_err();
/// assert_eq!(err.field(), "ratio");
/// # Ok::<_, resilience_core::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "RetryBudgetConfigBuilder"))]
pub struct RetryBudgetConfig {
    pub(crate) ratio: f64,
    pub(crate) min_per_second: u32,
    pub(crate) window: Duration,
    pub(crate) burst_window: Duration,
    pub(crate) reserve: [f64; 4],
}

/// Builds a [`RetryBudgetConfig`]; see [`RetryBudgetConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct RetryBudgetConfigBuilder {
    ratio: f64,
    min_per_second: u32,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    window: Duration,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    burst_window: Duration,
    #[cfg_attr(feature = "serde", serde(deserialize_with = "de::reserve"))]
    reserve: [f64; 4],
}

/// Validated configuration of a [`RetryLayer`](crate::RetryLayer).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use resilience_retry::{RetryBudgetConfig, RetryConfig};
///
/// let config = RetryConfig::builder()
///     .name("inventory")
///     .max_attempts(3)
///     .backoff(Duration::from_millis(20), Duration::from_millis(500))
///     .attempt_timeout(Duration::from_millis(300))
///     .grpc_method("/shop.Inventory/GetStock")
///     .budget(RetryBudgetConfig::builder().ratio(0.1).build()?)
///     .build()?;
/// assert_eq!(config.max_attempts(), 3);
///
/// let err = RetryConfig::builder().retryable_status(404).build().unwrap_err();
/// assert_eq!(err.field(), "retryable_statuses");
/// # Ok::<_, resilience_core::ConfigError>(())
/// ```
///
/// With the `serde` feature it deserializes, through the same validation:
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use resilience_retry::RetryConfig;
/// let config: RetryConfig = serde_json::from_str(r#"{
///     "name": "inventory", "max_attempts": 2, "backoff_base": "10ms",
///     "grpc_methods": ["/shop.Inventory/*"],
///     "budget": { "ratio": 0.1, "window": "30s", "reserve": { "sheddable": 0.6 } }
/// }"#).unwrap();
/// assert_eq!(config.max_attempts(), 2);
/// assert!(serde_json::from_str::<RetryConfig>(r#"{"max_attempts": 0}"#).is_err());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "RetryConfigBuilder"))]
pub struct RetryConfig {
    pub(crate) name: String,
    pub(crate) max_attempts: u32,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) backoff_multiplier: f64,
    pub(crate) jitter: Jitter,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) max_pushback: Duration,
    pub(crate) max_replay_body: usize,
    pub(crate) retryable_statuses: Vec<u16>,
    pub(crate) retryable_grpc_codes: Vec<GrpcCode>,
    pub(crate) grpc_methods: Vec<String>,
    pub(crate) budget: RetryBudgetConfig,
}

/// Builds a [`RetryConfig`]; see [`RetryConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct RetryConfigBuilder {
    name: String,
    max_attempts: u32,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    backoff_base: Duration,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    backoff_max: Duration,
    backoff_multiplier: f64,
    jitter: Jitter,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize_option")
    )]
    attempt_timeout: Option<Duration>,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    max_pushback: Duration,
    max_replay_body: usize,
    retryable_statuses: Vec<u16>,
    #[cfg_attr(feature = "serde", serde(deserialize_with = "de::grpc_codes"))]
    retryable_grpc_codes: Vec<GrpcCode>,
    grpc_methods: Vec<String>,
    budget: RetryBudgetConfig,
}

// === impl RetryBudgetConfig ===

impl RetryBudgetConfig {
    /// Retries allowed per request of the window: `0.2` (20%, as Finagle's
    /// and tower's `TpsBudget`).
    pub const DEFAULT_RATIO: f64 = 0.2;
    /// Retries allowed per second whatever the traffic (a minimum, not an
    /// addition to the ratio): `10`.
    pub const DEFAULT_MIN_PER_SECOND: u32 = 10;
    /// How far back the budget remembers requests and retries: `10s`.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
    /// The shortest interval the ratio holds over: `1s`. Within any second,
    /// retries add at most 20% of that second's requests, or 10 if that is
    /// more.
    pub const DEFAULT_BURST_WINDOW: Duration = Duration::from_secs(1);
    /// The largest `ratio`: `10.0`.
    pub const MAX_RATIO: f64 = 10.0;
    /// The shortest `window`: `10ms`.
    pub const MIN_WINDOW: Duration = Duration::from_millis(10);
    /// The share of the budget that must be left for a retry, by priority
    /// (indexed by [`Priority::index`]): `[0.5, 0.25, 0.0, 0.0]`. A
    /// `sheddable` request retries only while more than half of the budget
    /// is left, a `sheddable-plus` one while more than a quarter is, a
    /// `critical` or `critical-plus` one while any is.
    pub const DEFAULT_RESERVE: [f64; 4] = [0.5, 0.25, 0.0, 0.0];

    /// A builder with the defaults.
    pub fn builder() -> RetryBudgetConfigBuilder {
        RetryBudgetConfigBuilder::default()
    }

    /// Retries allowed per request of the window.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Retries allowed per second of the window whatever the traffic.
    pub fn min_per_second(&self) -> u32 {
        self.min_per_second
    }

    /// How far back the budget remembers.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The shortest interval the ratio holds over (as set; when it is not
    /// shorter than [`window`](Self::window), only the window applies).
    pub fn burst_window(&self) -> Duration {
        self.burst_window
    }

    /// The share of the budget that must be left for `priority` to retry.
    pub fn reserve(&self, priority: Priority) -> f64 {
        self.reserve[priority.index()]
    }
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfigBuilder::default()
            .build()
            .expect("defaults are valid")
    }
}

// === impl RetryBudgetConfigBuilder ===

impl RetryBudgetConfigBuilder {
    /// Retries allowed per request of the window, in `[0, 10]` (default
    /// [`RetryBudgetConfig::DEFAULT_RATIO`]). `0.2` lets retries add at
    /// most 20% to the load.
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries allowed per second whatever the traffic, at most 1,000,000
    /// (default [`RetryBudgetConfig::DEFAULT_MIN_PER_SECOND`]): a minimum,
    /// not an addition. The window allows `ratio` of its requests or
    /// `min_per_second × window`, whichever is more; the burst window
    /// likewise.
    pub fn min_per_second(mut self, per_second: u32) -> Self {
        self.min_per_second = per_second;
        self
    }

    /// How far back the budget remembers, from
    /// [`RetryBudgetConfig::MIN_WINDOW`] to 365 days (default
    /// [`RetryBudgetConfig::DEFAULT_WINDOW`]).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The shortest interval the ratio holds over, from
    /// [`RetryBudgetConfig::MIN_WINDOW`] to 365 days (default
    /// [`RetryBudgetConfig::DEFAULT_BURST_WINDOW`]): within any
    /// `burst_window`, retries add at most `ratio` of that interval's
    /// requests (or `min_per_second × burst_window`, if more), whatever
    /// the window saved before it. A `burst_window` not shorter than `window` turns
    /// this off: a burst may then spend the whole window's allowance at
    /// once (as tower's `TpsBudget` and Finagle's budget do).
    pub fn burst_window(mut self, burst_window: Duration) -> Self {
        self.burst_window = burst_window;
        self
    }

    /// The share of the budget, in `[0, 1)`, that must be left for a
    /// request of `priority` to retry (defaults
    /// [`RetryBudgetConfig::DEFAULT_RESERVE`]). Give lower priorities a
    /// larger reserve so that they stop retrying first.
    pub fn reserve(mut self, priority: Priority, share: f64) -> Self {
        self.reserve[priority.index()] = share;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `ratio` is not in `[0, 10]`
    /// - `min_per_second` is above 1,000,000
    /// - `window` or `burst_window` is shorter than 10 ms or longer than
    ///   365 days
    /// - a `reserve` share is not in `[0, 1)`
    pub fn build(self) -> Result<RetryBudgetConfig, ConfigError> {
        if !(0.0..=RetryBudgetConfig::MAX_RATIO).contains(&self.ratio) {
            return Err(ConfigError::new("ratio", "must be in [0, 10]"));
        }
        if self.min_per_second > 1_000_000 {
            return Err(ConfigError::new(
                "min_per_second",
                "must be at most 1000000",
            ));
        }
        validate_positive_duration("window", self.window)?;
        if self.window < RetryBudgetConfig::MIN_WINDOW {
            return Err(ConfigError::new("window", "must be at least 10ms"));
        }
        validate_positive_duration("burst_window", self.burst_window)?;
        if self.burst_window < RetryBudgetConfig::MIN_WINDOW {
            return Err(ConfigError::new("burst_window", "must be at least 10ms"));
        }
        if !self.reserve.iter().all(|r| (0.0..1.0).contains(r)) {
            return Err(ConfigError::new("reserve", "must be in [0, 1)"));
        }
        Ok(RetryBudgetConfig {
            ratio: self.ratio,
            min_per_second: self.min_per_second,
            window: self.window,
            burst_window: self.burst_window,
            reserve: self.reserve,
        })
    }
}

impl Default for RetryBudgetConfigBuilder {
    fn default() -> Self {
        Self {
            ratio: RetryBudgetConfig::DEFAULT_RATIO,
            min_per_second: RetryBudgetConfig::DEFAULT_MIN_PER_SECOND,
            window: RetryBudgetConfig::DEFAULT_WINDOW,
            burst_window: RetryBudgetConfig::DEFAULT_BURST_WINDOW,
            reserve: RetryBudgetConfig::DEFAULT_RESERVE,
        }
    }
}

impl TryFrom<RetryBudgetConfigBuilder> for RetryBudgetConfig {
    type Error = ConfigError;

    fn try_from(builder: RetryBudgetConfigBuilder) -> Result<Self, Self::Error> {
        builder.build()
    }
}

// === impl RetryConfig ===

impl RetryConfig {
    /// The `name` metric label: `"default"`.
    pub const DEFAULT_NAME: &'static str = "default";
    /// Attempts per request, the first included: `3`.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
    /// The largest `max_attempts`: `10`.
    pub const MAX_ATTEMPTS: u32 = 10;
    /// The cap of the backoff before the first retry: `50ms`.
    pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(50);
    /// The largest backoff cap: `1s`.
    pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(1);
    /// Growth of the backoff cap at each retry: `2.0`.
    pub const DEFAULT_BACKOFF_MULTIPLIER: f64 = 2.0;
    /// The longest server pushback (`Retry-After`,
    /// `grpc-retry-pushback-ms`) the layer waits for; a longer one means no
    /// retry: `10s`.
    pub const DEFAULT_MAX_PUSHBACK: Duration = Duration::from_secs(10);
    /// The largest request body buffered for replay: `65536` bytes (64 KiB,
    /// as linkerd). A larger body is sent once and not retried.
    pub const DEFAULT_MAX_REPLAY_BODY: usize = 64 * 1024;
    /// The largest `max_replay_body`: `16777216` bytes (16 MiB).
    pub const MAX_REPLAY_BODY: usize = 16 * 1024 * 1024;
    /// HTTP statuses retried: `[502, 503, 504]`, the 5xx that say the
    /// request was not processed (a gateway could not reach the callee, or
    /// the callee refused it).
    pub const DEFAULT_RETRYABLE_STATUSES: [u16; 3] = [502, 503, 504];
    /// gRPC statuses retried: `[UNAVAILABLE]` (gRPC's own advice).
    pub const DEFAULT_RETRYABLE_GRPC_CODES: [GrpcCode; 1] = [GrpcCode::Unavailable];

    /// A builder with the defaults.
    pub fn builder() -> RetryConfigBuilder {
        RetryConfigBuilder::default()
    }

    /// The name used as the `name` metric label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Attempts per request, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff cap before the first retry.
    pub fn backoff_base(&self) -> Duration {
        self.backoff_base
    }

    /// The largest backoff cap.
    pub fn backoff_max(&self) -> Duration {
        self.backoff_max
    }

    /// Growth of the backoff cap at each retry.
    pub fn backoff_multiplier(&self) -> f64 {
        self.backoff_multiplier
    }

    /// How the backoff is randomised.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The timeout of each attempt, if set.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.attempt_timeout
    }

    /// The longest server pushback honoured.
    pub fn max_pushback(&self) -> Duration {
        self.max_pushback
    }

    /// The largest request body buffered for replay, in bytes.
    pub fn max_replay_body(&self) -> usize {
        self.max_replay_body
    }

    /// The HTTP statuses retried.
    pub fn retryable_statuses(&self) -> &[u16] {
        &self.retryable_statuses
    }

    /// The gRPC statuses retried.
    pub fn retryable_grpc_codes(&self) -> &[GrpcCode] {
        &self.retryable_grpc_codes
    }

    /// The gRPC methods opted in to retries.
    pub fn grpc_methods(&self) -> &[String] {
        &self.grpc_methods
    }

    /// The budget's configuration.
    pub fn budget(&self) -> &RetryBudgetConfig {
        &self.budget
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfigBuilder::default()
            .build()
            .expect("defaults are valid")
    }
}

// === impl RetryConfigBuilder ===

impl RetryConfigBuilder {
    shared_setters! {
        config: RetryConfig,
        replay: "The largest request body buffered for replay, in bytes, at most
[`RetryConfig::MAX_REPLAY_BODY`] (default
[`RetryConfig::DEFAULT_MAX_REPLAY_BODY`]). `0` retries only requests
without a body.",
        grpc: "Opts a gRPC method in to retries: its full path
(`/package.Service/Method`), or `/package.Service/*` for every method
of a service. gRPC requests (content type `application/grpc`) of
other methods are never retried.",
        budget: "The retry budget (default [`RetryBudgetConfig::default`]).",
    }

    /// Attempts per request, the first included, `1` (never retry) to
    /// [`RetryConfig::MAX_ATTEMPTS`] (default
    /// [`RetryConfig::DEFAULT_MAX_ATTEMPTS`]).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The backoff cap before the first retry and the largest cap (defaults
    /// [`RetryConfig::DEFAULT_BACKOFF_BASE`] and
    /// [`RetryConfig::DEFAULT_BACKOFF_MAX`]).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }

    /// Growth of the backoff cap at each retry, `>= 1.0` (default
    /// [`RetryConfig::DEFAULT_BACKOFF_MULTIPLIER`]).
    pub fn backoff_multiplier(mut self, multiplier: f64) -> Self {
        self.backoff_multiplier = multiplier;
        self
    }

    /// How the backoff is randomised (default [`Jitter::Full`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Fails each attempt that takes longer than `timeout` with
    /// [`Elapsed`](resilience_core::Elapsed), which is retried (default: no
    /// timeout of the layer's own). An attempt never outlives the
    /// request's [`Deadline`](resilience_core::Deadline): when the deadline
    /// comes first, the attempt fails with
    /// [`Elapsed::deadline_exceeded`](resilience_core::Elapsed::deadline_exceeded),
    /// which is not retried.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// The longest server pushback the layer waits for (default
    /// [`RetryConfig::DEFAULT_MAX_PUSHBACK`]); a longer one means no retry.
    pub fn max_pushback(mut self, max: Duration) -> Self {
        self.max_pushback = max;
        self
    }

    /// Adds an HTTP status to retry (5xx only; default
    /// [`RetryConfig::DEFAULT_RETRYABLE_STATUSES`]).
    pub fn retryable_status(mut self, status: u16) -> Self {
        if !self.retryable_statuses.contains(&status) {
            self.retryable_statuses.push(status);
        }
        self
    }

    /// Replaces the HTTP statuses retried (5xx only; an empty list retries
    /// no response, only errors).
    pub fn retryable_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.retryable_statuses = statuses.into_iter().collect();
        self
    }

    /// Replaces the gRPC statuses retried (default
    /// [`RetryConfig::DEFAULT_RETRYABLE_GRPC_CODES`]); each must be a
    /// failure of the callee for [`GrpcOutcome`] (never `OK` or a caller's
    /// error such as `INVALID_ARGUMENT`).
    pub fn retryable_grpc_codes(mut self, codes: impl IntoIterator<Item = GrpcCode>) -> Self {
        self.retryable_grpc_codes = codes.into_iter().collect();
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `name` is not 1 to 64 characters of `[A-Za-z0-9_.-]`
    /// - `max_attempts` is not 1 to 10
    /// - `backoff_base` or `backoff_max` is zero or longer than 365 days,
    ///   or `backoff_max` is smaller than `backoff_base`
    /// - `backoff_multiplier` is below 1 or not finite
    /// - `attempt_timeout` is zero or longer than 365 days
    /// - `max_pushback` is longer than 365 days
    /// - `max_replay_body` is above 16 MiB
    /// - `retryable_statuses` holds a status that is not 5xx
    /// - `retryable_grpc_codes` holds a code that is not a failure of the
    ///   callee
    /// - `grpc_methods` holds a path that does not start with `/` or has a
    ///   character outside visible ASCII
    pub fn build(self) -> Result<RetryConfig, ConfigError> {
        validate_name("name", &self.name)?;
        if !(1..=RetryConfig::MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(ConfigError::new("max_attempts", "must be 1 to 10"));
        }
        validate_positive_duration("backoff_base", self.backoff_base)?;
        validate_positive_duration("backoff_max", self.backoff_max)?;
        if self.backoff_max < self.backoff_base {
            return Err(ConfigError::new(
                "backoff_max",
                "must not be smaller than backoff_base",
            ));
        }
        if !(self.backoff_multiplier.is_finite() && self.backoff_multiplier >= 1.0) {
            return Err(ConfigError::new("backoff_multiplier", "must be at least 1"));
        }
        if let Some(timeout) = self.attempt_timeout {
            validate_positive_duration("attempt_timeout", timeout)?;
        }
        validate_duration("max_pushback", self.max_pushback)?;
        if self.max_replay_body > RetryConfig::MAX_REPLAY_BODY {
            return Err(ConfigError::new(
                "max_replay_body",
                "must be at most 16777216 bytes",
            ));
        }
        let http = HttpOutcome::new();
        for &status in &self.retryable_statuses {
            let ok = http::StatusCode::from_u16(status)
                .is_ok_and(|s| s.is_server_error() && http.classify_status(s) == Outcome::Failure);
            if !ok {
                return Err(ConfigError::new(
                    "retryable_statuses",
                    "may only hold 5xx statuses",
                ));
            }
        }
        let grpc = GrpcOutcome::new();
        if !self
            .retryable_grpc_codes
            .iter()
            .all(|&c| grpc.classify_code(c) == Outcome::Failure)
        {
            return Err(ConfigError::new(
                "retryable_grpc_codes",
                "may only hold failures of the callee (UNAVAILABLE, DEADLINE_EXCEEDED, ...)",
            ));
        }
        validate_grpc_methods(&self.grpc_methods)?;
        let mut retryable_statuses = self.retryable_statuses;
        retryable_statuses.sort_unstable();
        retryable_statuses.dedup();
        let mut retryable_grpc_codes = self.retryable_grpc_codes;
        retryable_grpc_codes.sort_unstable();
        retryable_grpc_codes.dedup();
        Ok(RetryConfig {
            name: self.name,
            max_attempts: self.max_attempts,
            backoff_base: self.backoff_base,
            backoff_max: self.backoff_max,
            backoff_multiplier: self.backoff_multiplier,
            jitter: self.jitter,
            attempt_timeout: self.attempt_timeout,
            max_pushback: self.max_pushback,
            max_replay_body: self.max_replay_body,
            retryable_statuses,
            retryable_grpc_codes,
            grpc_methods: self.grpc_methods,
            budget: self.budget,
        })
    }
}

impl Default for RetryConfigBuilder {
    fn default() -> Self {
        Self {
            name: RetryConfig::DEFAULT_NAME.to_owned(),
            max_attempts: RetryConfig::DEFAULT_MAX_ATTEMPTS,
            backoff_base: RetryConfig::DEFAULT_BACKOFF_BASE,
            backoff_max: RetryConfig::DEFAULT_BACKOFF_MAX,
            backoff_multiplier: RetryConfig::DEFAULT_BACKOFF_MULTIPLIER,
            jitter: Jitter::Full,
            attempt_timeout: None,
            max_pushback: RetryConfig::DEFAULT_MAX_PUSHBACK,
            max_replay_body: RetryConfig::DEFAULT_MAX_REPLAY_BODY,
            retryable_statuses: RetryConfig::DEFAULT_RETRYABLE_STATUSES.to_vec(),
            retryable_grpc_codes: RetryConfig::DEFAULT_RETRYABLE_GRPC_CODES.to_vec(),
            grpc_methods: Vec::new(),
            budget: RetryBudgetConfig::default(),
        }
    }
}

impl TryFrom<RetryConfigBuilder> for RetryConfig {
    type Error = ConfigError;

    fn try_from(builder: RetryConfigBuilder) -> Result<Self, Self::Error> {
        builder.build()
    }
}

#[cfg(feature = "serde")]
mod de {
    use resilience_core::{GrpcCode, Priority};
    use serde::Deserialize;

    use super::RetryBudgetConfig;

    /// `{ "sheddable": 0.5, "critical": 0.1 }`: missing levels keep their
    /// default.
    pub(super) fn reserve<'de, D: serde::Deserializer<'de>>(de: D) -> Result<[f64; 4], D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Reserve {
            sheddable: Option<f64>,
            sheddable_plus: Option<f64>,
            critical: Option<f64>,
            critical_plus: Option<f64>,
        }
        let r = Reserve::deserialize(de)?;
        let mut out = RetryBudgetConfig::DEFAULT_RESERVE;
        for (p, v) in [
            (Priority::Sheddable, r.sheddable),
            (Priority::SheddablePlus, r.sheddable_plus),
            (Priority::Critical, r.critical),
            (Priority::CriticalPlus, r.critical_plus),
        ] {
            if let Some(v) = v {
                out[p.index()] = v;
            }
        }
        Ok(out)
    }

    /// gRPC codes by name (`"UNAVAILABLE"`, `"unavailable"`) or number.
    pub(super) fn grpc_codes<'de, D: serde::Deserializer<'de>>(
        de: D,
    ) -> Result<Vec<GrpcCode>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Code {
            Number(u8),
            Name(String),
        }
        let codes = Vec::<Code>::deserialize(de)?;
        codes
            .into_iter()
            .map(|c| match c {
                Code::Number(n) => GrpcCode::from_u8(n),
                Code::Name(name) => code_by_name(&name),
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| serde::de::Error::custom("unknown gRPC status code"))
    }

    fn code_by_name(name: &str) -> Option<GrpcCode> {
        const NAMES: [&str; 17] = [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ];
        NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .and_then(|i| GrpcCode::from_u8(i as u8))
    }
}

/// Checks gRPC method paths: `/package.Service/Method` or
/// `/package.Service/*`, visible ASCII.
pub(crate) fn validate_grpc_methods(methods: &[String]) -> Result<(), ConfigError> {
    for path in methods {
        if !path.starts_with('/') || path.len() < 2 || !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                "grpc_methods",
                "must be paths such as /package.Service/Method or /package.Service/*",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use resilience_core::config::MAX_DURATION;

    const TOO_LONG: Duration = MAX_DURATION.saturating_add(Duration::from_secs(1));

    #[test]
    fn defaults_are_valid() {
        let c = RetryConfig::default();
        assert_eq!(c.name(), "default");
        assert_eq!(c.max_attempts(), 3);
        assert_eq!(c.retryable_statuses(), &[502, 503, 504]);
        assert_eq!(c.retryable_grpc_codes(), &[GrpcCode::Unavailable]);
        assert_eq!(c.max_replay_body(), 65536);
        assert_eq!(c.budget().ratio(), 0.2);
        assert_eq!(c.budget().min_per_second(), 10);
        assert_eq!(c.budget().window(), Duration::from_secs(10));
        assert_eq!(c.budget().burst_window(), Duration::from_secs(1));
        assert_eq!(c.budget().reserve(Priority::Sheddable), 0.5);
        assert_eq!(c.budget().reserve(Priority::Critical), 0.0);
    }

    #[test]
    fn rejects_invalid_fields() {
        let b = RetryConfig::builder;
        let cases: Vec<(RetryConfigBuilder, &str)> = vec![
            (b().name(""), "name"),
            (b().max_attempts(0), "max_attempts"),
            (b().max_attempts(11), "max_attempts"),
            (
                b().backoff(Duration::ZERO, Duration::from_secs(1)),
                "backoff_base",
            ),
            (
                b().backoff(Duration::from_millis(1), Duration::ZERO),
                "backoff_max",
            ),
            (
                b().backoff(Duration::from_secs(2), Duration::from_secs(1)),
                "backoff_max",
            ),
            (b().backoff_multiplier(0.5), "backoff_multiplier"),
            (b().backoff_multiplier(f64::NAN), "backoff_multiplier"),
            (b().attempt_timeout(Duration::ZERO), "attempt_timeout"),
            (b().max_replay_body(16 * 1024 * 1024 + 1), "max_replay_body"),
            (b().retryable_status(404), "retryable_statuses"),
            (b().retryable_status(429), "retryable_statuses"),
            (b().retryable_status(200), "retryable_statuses"),
            (b().retryable_status(999), "retryable_statuses"),
            (
                b().retryable_grpc_codes([GrpcCode::InvalidArgument]),
                "retryable_grpc_codes",
            ),
            (
                b().retryable_grpc_codes([GrpcCode::Ok]),
                "retryable_grpc_codes",
            ),
            (b().grpc_method("pkg.Svc/Method"), "grpc_methods"),
            (b().grpc_method("/pkg Svc/Method"), "grpc_methods"),
            (b().grpc_method("/"), "grpc_methods"),
        ];
        for (builder, field) in cases {
            assert_eq!(builder.build().unwrap_err().field(), field);
        }
        let ok = b()
            .retryable_status(500)
            .retryable_grpc_codes([GrpcCode::Unavailable, GrpcCode::ResourceExhausted])
            .grpc_method("/pkg.Svc/*")
            .max_attempts(1)
            .max_replay_body(0)
            .build()
            .unwrap();
        assert_eq!(ok.retryable_statuses(), &[500, 502, 503, 504]);
    }

    #[test]
    fn over_long_durations_are_rejected() {
        let b = RetryConfig::builder;
        let day = Duration::from_secs(86400);
        let cases: Vec<(RetryConfigBuilder, &str)> = vec![
            (b().backoff(TOO_LONG, TOO_LONG), "backoff_base"),
            (b().backoff(day, TOO_LONG), "backoff_max"),
            (b().attempt_timeout(TOO_LONG), "attempt_timeout"),
            (b().max_pushback(TOO_LONG), "max_pushback"),
        ];
        for (builder, field) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!(err.field(), field);
            assert_eq!(err.reason(), "must be at most 365 days");
        }
        assert!(b().backoff(day, MAX_DURATION).build().is_ok());
        assert!(b().max_pushback(MAX_DURATION).build().is_ok());
        assert!(b().max_pushback(Duration::ZERO).build().is_ok());
        let err = RetryBudgetConfig::builder()
            .window(TOO_LONG)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "window");
        assert_eq!(err.reason(), "must be at most 365 days");
    }

    #[test]
    fn budget_rejects_invalid_fields() {
        let b = RetryBudgetConfig::builder;
        for (builder, field) in [
            (b().ratio(-0.1), "ratio"),
            (b().ratio(10.5), "ratio"),
            (b().ratio(f64::NAN), "ratio"),
            (b().min_per_second(1_000_001), "min_per_second"),
            (b().window(Duration::ZERO), "window"),
            (b().window(Duration::from_millis(9)), "window"),
            (b().burst_window(Duration::ZERO), "burst_window"),
            (b().burst_window(Duration::from_millis(9)), "burst_window"),
            (b().burst_window(TOO_LONG), "burst_window"),
            (b().reserve(Priority::Sheddable, 1.0), "reserve"),
            (b().reserve(Priority::Critical, -0.1), "reserve"),
        ] {
            assert_eq!(builder.build().unwrap_err().field(), field);
        }
        assert!(b().ratio(0.0).min_per_second(0).build().is_ok());
        // A burst window longer than the window is valid: only the window
        // applies then.
        assert!(
            b().window(Duration::from_millis(500))
                .burst_window(Duration::from_secs(1))
                .build()
                .is_ok()
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn deserializes_through_the_builder() {
        let c: RetryConfig = serde_json::from_str(
            r#"{"retryable_grpc_codes": ["unavailable", 8], "attempt_timeout": "250ms",
                "budget": {"min_per_second": 1, "burst_window": "2s", "reserve": {"critical": 0.1}}}"#,
        )
        .unwrap();
        assert_eq!(
            c.retryable_grpc_codes(),
            &[GrpcCode::ResourceExhausted, GrpcCode::Unavailable]
        );
        assert_eq!(c.attempt_timeout(), Some(Duration::from_millis(250)));
        assert_eq!(c.budget().reserve(Priority::Critical), 0.1);
        assert_eq!(c.budget().reserve(Priority::Sheddable), 0.5);
        assert_eq!(c.budget().burst_window(), Duration::from_secs(2));
        for bad in [
            r#"{"retryable_statuses": [404]}"#,
            r#"{"retryable_grpc_codes": ["NOPE"]}"#,
            r#"{"budget": {"window": "0s"}}"#,
            r#"{"budget": {"burst_window": "1ms"}}"#,
            r#"{"budget": {"reserve": {"urgent": 0.1}}}"#,
            r#"{"unknown": 1}"#,
            r#"{"max_pushback": "9000h"}"#,
        ] {
            assert!(serde_json::from_str::<RetryConfig>(bad).is_err(), "{bad}");
        }
    }
}
