use std::time::Duration;

use resilience_core::config::{
    ConfigError, validate_duration, validate_name, validate_positive_duration,
};

use crate::config::{RetryBudgetConfig, RetryConfig, validate_grpc_methods};

/// Validated configuration of a [`HedgeLayer`](crate::HedgeLayer).
///
/// ```
/// use std::time::Duration;
/// use resilience_retry::HedgeConfig;
///
/// let config = HedgeConfig::builder()
///     .name("inventory")
///     .delay(Duration::from_millis(20)) // until 50 responses are known
///     .percentile(0.95)
///     .min_samples(50)
///     .build()
///     .unwrap();
/// assert_eq!(config.max_hedges(), 1);
/// assert!(HedgeConfig::builder().delay(Duration::ZERO).build().is_err());
/// ```
///
/// With the `serde` feature it deserializes, through the same validation
/// (durations as `"20ms"`, `"1s"`; every field optional):
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use std::time::Duration;
/// use resilience_retry::HedgeConfig;
/// let config: HedgeConfig = serde_json::from_str(r#"{
///     "name": "inventory", "delay": "20ms", "percentile": 0.95, "min_samples": 50,
///     "grpc_methods": ["/shop.Inventory/*"], "budget": { "ratio": 0.05 }
/// }"#).unwrap();
/// assert_eq!(config.delay(), Duration::from_millis(20));
/// assert_eq!(config.percentile(), Some(0.95));
/// assert!(serde_json::from_str::<HedgeConfig>(r#"{"max_hedges": 0}"#).is_err());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "HedgeConfigBuilder"))]
pub struct HedgeConfig {
    pub(crate) name: String,
    pub(crate) delay: Duration,
    pub(crate) max_hedges: u32,
    pub(crate) percentile: Option<f64>,
    pub(crate) min_samples: usize,
    pub(crate) samples: usize,
    pub(crate) max_replay_body: usize,
    pub(crate) grpc_methods: Vec<String>,
    pub(crate) budget: RetryBudgetConfig,
}

/// Builds a [`HedgeConfig`]; [`build`](Self::build) validates it.
#[derive(Debug, Clone)]
#[must_use]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct HedgeConfigBuilder {
    name: String,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    delay: Duration,
    max_hedges: u32,
    percentile: Option<f64>,
    min_samples: usize,
    samples: usize,
    max_replay_body: usize,
    grpc_methods: Vec<String>,
    budget: RetryBudgetConfig,
}

// === impl HedgeConfig ===

impl HedgeConfig {
    /// The `name` metric label: `"default"`.
    pub const DEFAULT_NAME: &'static str = "default";
    /// How long the earlier attempts may take before a hedge is sent, while
    /// no percentile is learned (or none is configured): `50ms`.
    pub const DEFAULT_DELAY: Duration = Duration::from_millis(50);
    /// Hedges per request, the first attempt not included: `1`.
    pub const DEFAULT_MAX_HEDGES: u32 = 1;
    /// The largest `max_hedges`: `4`.
    pub const MAX_HEDGES: u32 = 4;
    /// Responses needed before a learned percentile replaces the fixed
    /// delay: `20`.
    pub const DEFAULT_MIN_SAMPLES: usize = 20;
    /// Recent latencies the percentile is taken over: `100`.
    pub const DEFAULT_SAMPLES: usize = 100;
    /// The largest `samples`: `1024`.
    pub const MAX_SAMPLES: usize = 1024;
    /// The largest request body buffered to send it again:
    /// [`RetryConfig::DEFAULT_MAX_REPLAY_BODY`] (64 KiB). A request with a
    /// larger body is not hedged.
    pub const DEFAULT_MAX_REPLAY_BODY: usize = RetryConfig::DEFAULT_MAX_REPLAY_BODY;

    /// A builder with the defaults.
    pub fn builder() -> HedgeConfigBuilder {
        HedgeConfigBuilder::default()
    }

    /// The name used as the `name` metric label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fixed hedge delay.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Hedges per request, the first attempt not included.
    pub fn max_hedges(&self) -> u32 {
        self.max_hedges
    }

    /// The latency percentile used as the delay once learned, if set.
    pub fn percentile(&self) -> Option<f64> {
        self.percentile
    }

    /// Responses needed before the percentile is used.
    pub fn min_samples(&self) -> usize {
        self.min_samples
    }

    /// Recent latencies the percentile is taken over.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The largest request body buffered to hedge it, in bytes.
    pub fn max_replay_body(&self) -> usize {
        self.max_replay_body
    }

    /// The gRPC methods opted in to hedging.
    pub fn grpc_methods(&self) -> &[String] {
        &self.grpc_methods
    }

    /// The budget's configuration (used unless the layer draws from
    /// another layer's budget, [`HedgeLayer::with_budget`](crate::HedgeLayer::with_budget)).
    pub fn budget(&self) -> &RetryBudgetConfig {
        &self.budget
    }
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfigBuilder::default()
            .build()
            .expect("defaults are valid")
    }
}

// === impl HedgeConfigBuilder ===

impl HedgeConfigBuilder {
    crate::config::shared_setters! {
        config: HedgeConfig,
        replay: "The largest request body buffered to send it again, in bytes, at
most [`RetryConfig::MAX_REPLAY_BODY`] (default
[`HedgeConfig::DEFAULT_MAX_REPLAY_BODY`]). A request with a larger
body is sent once, never hedged.",
        grpc: "Opts a gRPC method in to hedging: its full path
(`/package.Service/Method`), or `/package.Service/*` for every method
of a service. Other gRPC methods are never hedged.",
        budget: "The budget of a layer with its own (default
    [`RetryBudgetConfig::default`]).",
    }

    /// How long the earlier attempts may take before a hedge is sent
    /// (default [`HedgeConfig::DEFAULT_DELAY`]); with a
    /// [`percentile`](Self::percentile), the delay until enough latencies
    /// are known.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Hedges per request, the first attempt not included, `1` to
    /// [`HedgeConfig::MAX_HEDGES`] (default
    /// [`HedgeConfig::DEFAULT_MAX_HEDGES`]): at most `1 + max_hedges`
    /// attempts of a request are in flight at once. Each hedge is sent one
    /// delay after the one before.
    pub fn max_hedges(mut self, hedges: u32) -> Self {
        self.max_hedges = hedges;
        self
    }

    /// Hedges after the `percentile` (in `(0, 1]`, e.g. `0.95`) of the
    /// latencies of recent good answers, once
    /// [`min_samples`](Self::min_samples) are known; the fixed
    /// [`delay`](Self::delay) before that (default: always the fixed
    /// delay).
    pub fn percentile(mut self, percentile: f64) -> Self {
        self.percentile = Some(percentile);
        self
    }

    /// Responses needed before the percentile replaces the fixed delay, `1`
    /// to [`samples`](Self::samples) (default
    /// [`HedgeConfig::DEFAULT_MIN_SAMPLES`]).
    pub fn min_samples(mut self, samples: usize) -> Self {
        self.min_samples = samples;
        self
    }

    /// Recent latencies the percentile is taken over, `1` to
    /// [`HedgeConfig::MAX_SAMPLES`] (default
    /// [`HedgeConfig::DEFAULT_SAMPLES`]).
    pub fn samples(mut self, samples: usize) -> Self {
        self.samples = samples;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `name` is not 1 to 64 characters of `[A-Za-z0-9_.-]`
    /// - `delay` is zero or longer than 365 days
    /// - `max_hedges` is not 1 to 4
    /// - `percentile` is not in `(0, 1]`
    /// - `samples` is not 1 to 1024, or `min_samples` not 1 to `samples`
    /// - `max_replay_body` is above 16 MiB
    /// - `grpc_methods` holds a path that does not start with `/` or has a
    ///   character outside visible ASCII
    pub fn build(self) -> Result<HedgeConfig, ConfigError> {
        validate_name("name", &self.name)?;
        validate_positive_duration("delay", self.delay)?;
        validate_duration("delay", self.delay)?;
        if !(1..=HedgeConfig::MAX_HEDGES).contains(&self.max_hedges) {
            return Err(ConfigError::new("max_hedges", "must be 1 to 4"));
        }
        if let Some(p) = self.percentile {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ConfigError::new("percentile", "must be in (0, 1]"));
            }
        }
        if !(1..=HedgeConfig::MAX_SAMPLES).contains(&self.samples) {
            return Err(ConfigError::new("samples", "must be 1 to 1024"));
        }
        if !(1..=self.samples).contains(&self.min_samples) {
            return Err(ConfigError::new("min_samples", "must be 1 to samples"));
        }
        if self.max_replay_body > RetryConfig::MAX_REPLAY_BODY {
            return Err(ConfigError::new(
                "max_replay_body",
                "must be at most 16777216 bytes",
            ));
        }
        validate_grpc_methods(&self.grpc_methods)?;
        Ok(HedgeConfig {
            name: self.name,
            delay: self.delay,
            max_hedges: self.max_hedges,
            percentile: self.percentile,
            min_samples: self.min_samples,
            samples: self.samples,
            max_replay_body: self.max_replay_body,
            grpc_methods: self.grpc_methods,
            budget: self.budget,
        })
    }
}

impl Default for HedgeConfigBuilder {
    fn default() -> Self {
        Self {
            name: HedgeConfig::DEFAULT_NAME.to_owned(),
            delay: HedgeConfig::DEFAULT_DELAY,
            max_hedges: HedgeConfig::DEFAULT_MAX_HEDGES,
            percentile: None,
            min_samples: HedgeConfig::DEFAULT_MIN_SAMPLES,
            samples: HedgeConfig::DEFAULT_SAMPLES,
            max_replay_body: HedgeConfig::DEFAULT_MAX_REPLAY_BODY,
            grpc_methods: Vec::new(),
            budget: RetryBudgetConfig::default(),
        }
    }
}

impl TryFrom<HedgeConfigBuilder> for HedgeConfig {
    type Error = ConfigError;

    fn try_from(builder: HedgeConfigBuilder) -> Result<Self, Self::Error> {
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = HedgeConfig::default();
        assert_eq!(c.name(), "default");
        assert_eq!(c.delay(), HedgeConfig::DEFAULT_DELAY);
        assert_eq!(c.max_hedges(), 1);
        assert_eq!(c.percentile(), None);
        assert_eq!(c.min_samples(), 20);
        assert_eq!(c.samples(), 100);
    }

    #[test]
    fn rejects_invalid_values() {
        let b = HedgeConfig::builder;
        let field = |r: Result<HedgeConfig, ConfigError>| r.unwrap_err().field();
        assert_eq!(field(b().name("").build()), "name");
        assert_eq!(field(b().delay(Duration::ZERO).build()), "delay");
        assert_eq!(
            field(b().delay(Duration::from_secs(366 * 24 * 3600)).build()),
            "delay"
        );
        assert_eq!(field(b().max_hedges(0).build()), "max_hedges");
        assert_eq!(field(b().max_hedges(5).build()), "max_hedges");
        for p in [0.0, -0.5, 1.5, f64::NAN] {
            assert_eq!(field(b().percentile(p).build()), "percentile");
        }
        assert!(b().percentile(1.0).build().is_ok());
        assert_eq!(field(b().samples(0).build()), "samples");
        assert_eq!(field(b().samples(1025).build()), "samples");
        assert_eq!(field(b().min_samples(0).build()), "min_samples");
        assert_eq!(
            field(b().samples(10).min_samples(11).build()),
            "min_samples"
        );
        assert_eq!(
            field(
                b().max_replay_body(RetryConfig::MAX_REPLAY_BODY + 1)
                    .build()
            ),
            "max_replay_body"
        );
        assert_eq!(field(b().grpc_method("nope").build()), "grpc_methods");
    }

    #[cfg(feature = "serde")]
    #[test]
    fn deserializes_through_the_builder() {
        let c: HedgeConfig = serde_json::from_str(
            r#"{"name": "inventory", "delay": "20ms", "max_hedges": 2, "percentile": 0.9,
                "min_samples": 5, "samples": 10, "max_replay_body": 1024,
                "grpc_methods": ["/shop.Inventory/Get"],
                "budget": {"ratio": 0.1, "min_per_second": 1}}"#,
        )
        .unwrap();
        let expected = HedgeConfig::builder()
            .name("inventory")
            .delay(Duration::from_millis(20))
            .max_hedges(2)
            .percentile(0.9)
            .min_samples(5)
            .samples(10)
            .max_replay_body(1024)
            .grpc_method("/shop.Inventory/Get")
            .budget(
                RetryBudgetConfig::builder()
                    .ratio(0.1)
                    .min_per_second(1)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert_eq!(c, expected);
        let empty: HedgeConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, HedgeConfig::default());
        for (bad, field) in [
            (r#"{"delay": "0s"}"#, "delay"),
            (r#"{"max_hedges": 5}"#, "max_hedges"),
            (r#"{"percentile": 1.5}"#, "percentile"),
            (r#"{"samples": 10, "min_samples": 11}"#, "min_samples"),
            (r#"{"max_replay_body": 16777217}"#, "max_replay_body"),
            (r#"{"grpc_methods": ["nope"]}"#, "grpc_methods"),
            (r#"{"budget": {"window": "0s"}}"#, "window"),
            (r#"{"delay": "soon"}"#, ""),
            (r#"{"unknown": 1}"#, "unknown"),
        ] {
            let err = serde_json::from_str::<HedgeConfig>(bad).unwrap_err();
            assert!(err.to_string().contains(field), "{bad}: {err}");
        }
    }
}
