use std::time::Duration;

use resilience_core::Priority;
use resilience_core::config::{
    ConfigError, validate_duration, validate_name, validate_positive_duration,
};

use crate::adaptive::AdaptiveLimit;

/// Validated configuration of a [`BoundedQueueLayer`](crate::BoundedQueueLayer).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use resilience_bounded_queue::{BoundedQueueConfig, BoundedQueueLayer};
/// use resilience_core::Priority;
///
/// let config = BoundedQueueConfig::builder()
///     .name("api")
///     .concurrency(32)
///     .capacity(64)
///     .max_wait(Duration::from_millis(500))
///     .reserve(Priority::Critical, 0.5)
///     .build()?;
/// let layer = BoundedQueueLayer::new(config);
/// # Ok::<_, resilience_core::ConfigError>(())
/// ```
///
/// With the `serde` feature it deserializes (same validation):
///
/// ```
/// # #[cfg(feature = "serde")] {
/// use resilience_bounded_queue::BoundedQueueConfig;
/// let config: BoundedQueueConfig =
///     serde_json::from_str(r#"{"name": "api", "concurrency": 8, "capacity": 16, "codel_target": "10ms"}"#).unwrap();
/// assert_eq!(config.concurrency(), 8);
/// assert!(serde_json::from_str::<BoundedQueueConfig>(r#"{"concurrency": 0}"#).is_err());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "BoundedQueueConfigBuilder"))]
pub struct BoundedQueueConfig {
    pub(crate) name: String,
    pub(crate) concurrency: usize,
    pub(crate) capacity: usize,
    pub(crate) max_wait: Duration,
    pub(crate) codel: bool,
    pub(crate) codel_target: Duration,
    pub(crate) codel_interval: Duration,
    pub(crate) lifo: bool,
    pub(crate) retry_after: Duration,
    pub(crate) reserved: ReservedShares,
    pub(crate) yield_margin: f64,
    pub(crate) target_service_times: f64,
    pub(crate) adaptive: Option<AdaptiveLimit>,
}

/// Builds a [`BoundedQueueConfig`]; see [`BoundedQueueConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct BoundedQueueConfigBuilder {
    name: String,
    concurrency: usize,
    capacity: usize,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    max_wait: Duration,
    codel: bool,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    codel_target: Duration,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    codel_interval: Duration,
    lifo: bool,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    retry_after: Duration,
    reserved: ReservedShares,
    yield_margin: f64,
    target_service_times: f64,
    #[cfg_attr(feature = "serde", serde(skip))]
    adaptive: Option<AdaptiveLimit>,
}

/// Shares of the concurrency limit reserved per priority, as fractions of
/// the limit (`0.0..=1.0`, summing to at most `1.0`).
///
/// Enforced only while saturated, in the spirit of Netflix's partitioned
/// limiter. A priority holding fewer slots than its share (rounded up):
///
/// - gets the next free slot ahead of every priority at or above its share
///   (the highest such priority first);
/// - keeps its place when the admission level sheds lower priorities: it is
///   neither refused on arrival nor shed from the queue for that;
/// - is refused for its deadline or the allowed wait only by the waiters it
///   cannot overtake;
/// - like any arrival, displaces a queued request of lower priority when the
///   queue is full.
///
/// A share never lets a priority past the limit: unlike Netflix's limiter,
/// which admits a partition under its share even with every slot taken,
/// here it waits for the next free slot. With no shares (the default), the
/// highest priority waiting is always served first.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct ReservedShares {
    /// Share of [`Priority::Sheddable`].
    pub sheddable: f64,
    /// Share of [`Priority::SheddablePlus`].
    pub sheddable_plus: f64,
    /// Share of [`Priority::Critical`].
    pub critical: f64,
    /// Share of [`Priority::CriticalPlus`].
    pub critical_plus: f64,
}

// === impl BoundedQueueConfig ===

impl BoundedQueueConfig {
    /// The `name` metric label: `"default"`.
    pub const DEFAULT_NAME: &'static str = "default";
    /// Requests in service at once: `100`.
    pub const DEFAULT_CONCURRENCY: usize = 100;
    /// Requests that may wait for a slot: `100`.
    pub const DEFAULT_CAPACITY: usize = 100;
    /// The longest a request waits while there is no standing queue: `1s`.
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(1);
    /// Whether CoDel queue-time control is on: `true`.
    pub const DEFAULT_CODEL: bool = true;
    /// The longest a request waits while a standing queue exists: `5ms`.
    pub const DEFAULT_CODEL_TARGET: Duration = Duration::from_millis(5);
    /// A queue whose oldest waiter stays older than the standing target for
    /// this long is a standing queue: `200ms`.
    pub const DEFAULT_CODEL_INTERVAL: Duration = Duration::from_millis(200);
    /// Whether the queue turns LIFO while a standing queue exists: `false`
    /// (oldest first: with waits bounded by the standing target, no waiter
    /// is stale, and oldest first loses the fewest to queue time).
    pub const DEFAULT_LIFO: bool = false;
    /// Higher priorities never yield a slot to an older waiter: `0.0`
    /// (strict priority order; see
    /// [`yield_margin`](BoundedQueueConfigBuilder::yield_margin)).
    pub const DEFAULT_YIELD_MARGIN: f64 = 0.0;
    /// The retry-after hint on rejections: `1s`.
    pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
    /// The longest retry-after hint: `1 day` (it becomes a `Retry-After`
    /// header and gRPC pushback metadata).
    pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

    /// Under a standing queue a waiter may wait at least this many smoothed
    /// service times, however short the CoDel target: `1.5`.
    pub const DEFAULT_TARGET_SERVICE_TIMES: f64 = 1.5;
    /// The largest [`target_service_times`](BoundedQueueConfigBuilder::target_service_times):
    /// `1000.0`.
    pub const MAX_TARGET_SERVICE_TIMES: f64 = 1000.0;

    /// The largest yield margin: `1000.0` (beyond it a higher priority
    /// would practically never yield).
    pub const MAX_YIELD_MARGIN: f64 = 1000.0;

    /// A builder with the defaults.
    pub fn builder() -> BoundedQueueConfigBuilder {
        BoundedQueueConfigBuilder::default()
    }

    /// The `name` metric label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests in service at once (the initial limit when adaptive).
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Requests that may wait.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The longest wait without a standing queue.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The CoDel target, if CoDel is on.
    pub fn codel_target(&self) -> Option<Duration> {
        self.codel.then_some(self.codel_target)
    }

    /// The CoDel interval.
    pub fn codel_interval(&self) -> Duration {
        self.codel_interval
    }

    /// Whether the queue turns LIFO under a standing queue.
    pub fn lifo(&self) -> bool {
        self.lifo
    }

    /// The retry-after hint on rejections.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The reserved shares.
    pub fn reserved(&self) -> ReservedShares {
        self.reserved
    }

    /// The yield margin, if yielding is on (see
    /// [`yield_margin`](BoundedQueueConfigBuilder::yield_margin)).
    pub fn yield_margin(&self) -> Option<f64> {
        (self.yield_margin > 0.0).then_some(self.yield_margin)
    }

    /// The CoDel target in smoothed service times, if on (see
    /// [`target_service_times`](BoundedQueueConfigBuilder::target_service_times)).
    pub fn target_service_times(&self) -> Option<f64> {
        (self.target_service_times > 0.0).then_some(self.target_service_times)
    }

    /// The adaptive limit algorithm, if any.
    pub fn adaptive(&self) -> Option<&AdaptiveLimit> {
        self.adaptive.as_ref()
    }
}

impl Default for BoundedQueueConfig {
    fn default() -> Self {
        BoundedQueueConfigBuilder::default()
            .build()
            .expect("defaults are valid")
    }
}

// === impl BoundedQueueConfigBuilder ===

impl BoundedQueueConfigBuilder {
    /// Names the queue: the `name` label of its metrics (default
    /// [`BoundedQueueConfig::DEFAULT_NAME`]).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Requests in service at once (default
    /// [`BoundedQueueConfig::DEFAULT_CONCURRENCY`]).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Requests that may wait; `0` sheds at once when all slots are busy
    /// (default [`BoundedQueueConfig::DEFAULT_CAPACITY`]).
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n;
        self
    }

    /// The longest a request waits while there is no standing queue (default
    /// [`BoundedQueueConfig::DEFAULT_MAX_WAIT`]), at most
    /// [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365 days).
    /// A wait that long is in effect no queue timeout: a waiter is then
    /// bounded only by its deadline, the CoDel target under a standing
    /// queue, and displacement by higher priorities.
    pub fn max_wait(mut self, d: Duration) -> Self {
        self.max_wait = d;
        self
    }

    /// Turns CoDel queue-time control on or off (default on).
    pub fn codel(mut self, on: bool) -> Self {
        self.codel = on;
        self
    }

    /// The longest a request waits while a standing queue exists (default
    /// [`BoundedQueueConfig::DEFAULT_CODEL_TARGET`], at most 365 days),
    /// raised to [`target_service_times`](Self::target_service_times)
    /// smoothed service times; four times that while the standing queue
    /// refuses at most one arrival in ten over an interval (see the crate
    /// docs, "How a request is handled").
    pub fn codel_target(mut self, d: Duration) -> Self {
        self.codel_target = d;
        self
    }

    /// How long the queue's oldest waiter must stay older than the standing
    /// target (the CoDel target, raised by
    /// [`target_service_times`](Self::target_service_times)) for the queue
    /// to count as standing (default
    /// [`BoundedQueueConfig::DEFAULT_CODEL_INTERVAL`], at most 365 days).
    pub fn codel_interval(mut self, d: Duration) -> Self {
        self.codel_interval = d;
        self
    }

    /// Serve newest first while a standing queue exists (default off: see
    /// [`BoundedQueueConfig::DEFAULT_LIFO`]).
    pub fn lifo(mut self, on: bool) -> Self {
        self.lifo = on;
        self
    }

    /// The retry-after hint on rejections (default
    /// [`BoundedQueueConfig::DEFAULT_RETRY_AFTER`], at most
    /// [`BoundedQueueConfig::MAX_RETRY_AFTER`]).
    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = d;
        self
    }

    /// Reserves `share` (`0.0..=1.0`) of the limit for `priority` while
    /// saturated; see [`ReservedShares`].
    pub fn reserve(mut self, priority: Priority, share: f64) -> Self {
        match priority {
            Priority::Sheddable => self.reserved.sheddable = share,
            Priority::SheddablePlus => self.reserved.sheddable_plus = share,
            Priority::Critical => self.reserved.critical = share,
            Priority::CriticalPlus => self.reserved.critical_plus = share,
        }
        self
    }

    /// Lets an older waiter of a critical priority go ahead of higher
    /// priorities that can spare the time (default
    /// [`BoundedQueueConfig::DEFAULT_YIELD_MARGIN`]: off, strict priority
    /// order).
    ///
    /// Strict priority order makes a lower priority lose its wait to a
    /// higher one that could have waited: when the critical priorities
    /// together fill the service, serving [`Priority::CriticalPlus`] first
    /// times out [`Priority::Critical`] requests a FIFO order would have
    /// served in time, and fewer requests succeed overall. With a margin
    /// `m`, a released slot goes to the oldest waiter of
    /// [`Priority::Critical`] or above instead of the highest priority
    /// waiting, provided every waiter of a higher priority keeps `m`
    /// expected hand-offs of slack per place in the line: the `i`-th oldest
    /// of them could still start within its allowed wait if slots kept
    /// freeing every `m` x (smoothed service time / limit). Otherwise the
    /// highest priority is served, as without a margin. Priority still
    /// decides who is shed and who waits when it matters; it no longer
    /// decides the order when the order costs nobody their wait.
    ///
    /// Sheddable priorities ([`Priority::Sheddable`],
    /// [`Priority::SheddablePlus`]) never go ahead of a higher priority, a
    /// priority below its [reserved share](ReservedShares) is served first
    /// as always, and nothing changes while the queue serves newest first
    /// (adaptive LIFO) or before any service time has been measured.
    /// A larger margin yields less often and protects the higher priority
    /// more (against bursts, and service times that vary).
    ///
    /// A priority yields only while it can spare the slot: never for ten
    /// CoDel intervals after one of its requests ran out of queue time (or
    /// was refused because it would have), so a priority that alone fills
    /// the service keeps strict order. The workspace's overload harness
    /// (`benches/benches/overload.rs`) runs a margin of `3.0` beside strict
    /// order; its figures are in the
    /// [benchmark report](https://github.com/resilience-rs/resilience/blob/main/benches/REPORT.md).
    ///
    /// ```
    /// use resilience_bounded_queue::BoundedQueueConfig;
    ///
    /// let config = BoundedQueueConfig::builder().yield_margin(4.0).build()?;
    /// assert_eq!(config.yield_margin(), Some(4.0));
    /// assert!(BoundedQueueConfig::builder().yield_margin(0.5).build().is_err());
    /// # Ok::<_, resilience_core::ConfigError>(())
    /// ```
    pub fn yield_margin(mut self, margin: f64) -> Self {
        self.yield_margin = margin;
        self
    }

    /// Raises the CoDel target to `n` smoothed service times (default
    /// [`BoundedQueueConfig::DEFAULT_TARGET_SERVICE_TIMES`]; `0.0` turns it
    /// off and the target is the fixed
    /// [`codel_target`](Self::codel_target) alone).
    ///
    /// Under a standing queue a waiter may wait the larger of the CoDel
    /// target and `n` x the smoothed service time (never more than
    /// [`max_wait`](Self::max_wait)). A fixed target suits a service of one
    /// speed; this one follows the service: a 5 ms target in front of a
    /// 10 ms service refuses work that would start within one service time,
    /// at loads the service handles (see the crate docs, "Choosing the
    /// settings"). Before any service time has been measured, the fixed
    /// target applies.
    ///
    /// ```
    /// use resilience_bounded_queue::BoundedQueueConfig;
    ///
    /// let config = BoundedQueueConfig::builder().target_service_times(2.0).build()?;
    /// assert_eq!(config.target_service_times(), Some(2.0));
    /// let fixed = BoundedQueueConfig::builder().target_service_times(0.0).build()?;
    /// assert_eq!(fixed.target_service_times(), None);
    /// assert!(BoundedQueueConfig::builder().target_service_times(-1.0).build().is_err());
    /// # Ok::<_, resilience_core::ConfigError>(())
    /// ```
    pub fn target_service_times(mut self, n: f64) -> Self {
        self.target_service_times = n;
        self
    }

    /// Takes the limit from a latency-driven algorithm instead of the
    /// constant [`concurrency`](Self::concurrency), which is then ignored.
    pub fn adaptive(mut self, limit: impl Into<AdaptiveLimit>) -> Self {
        self.adaptive = Some(limit.into());
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `name` is not 1 to 64 characters of `[A-Za-z0-9_.-]`
    /// - `concurrency` is zero
    /// - `max_wait` is zero while `capacity` is not
    /// - `codel_target` or `codel_interval` is zero, or the target is longer
    ///   than the interval
    /// - `max_wait`, `codel_target` or `codel_interval` is longer than
    ///   [`MAX_DURATION`](resilience_core::config::MAX_DURATION) (365 days),
    ///   the one rule for every configured duration
    /// - `retry_after` is zero or longer than
    ///   [`BoundedQueueConfig::MAX_RETRY_AFTER`]
    /// - a reserved share is not within `0.0..=1.0`, or they sum above `1.0`
    /// - `yield_margin` is neither `0.0` (off) nor a finite number from `1.0`
    ///   to [`BoundedQueueConfig::MAX_YIELD_MARGIN`]
    /// - `target_service_times` is not a number from `0.0` to
    ///   [`BoundedQueueConfig::MAX_TARGET_SERVICE_TIMES`]
    pub fn build(self) -> Result<BoundedQueueConfig, ConfigError> {
        validate_name("name", &self.name)?;
        if self.concurrency == 0 {
            return Err(ConfigError::new("concurrency", "must be at least 1"));
        }
        if self.capacity > 0 {
            validate_positive_duration("max_wait", self.max_wait)?;
        } else {
            validate_duration("max_wait", self.max_wait)?;
        }
        validate_positive_duration("codel_target", self.codel_target)?;
        validate_positive_duration("codel_interval", self.codel_interval)?;
        if self.codel_target > self.codel_interval {
            return Err(ConfigError::new(
                "codel_target",
                "must not be longer than codel_interval",
            ));
        }
        validate_positive_duration("retry_after", self.retry_after)?;
        if self.retry_after > BoundedQueueConfig::MAX_RETRY_AFTER {
            return Err(ConfigError::new("retry_after", "must be at most 1 day"));
        }
        let r = self.reserved.as_array();
        if r.iter().any(|s| !(0.0..=1.0).contains(s)) {
            return Err(ConfigError::new(
                "reserved",
                "each share must be within 0..=1",
            ));
        }
        if r.iter().sum::<f64>() > 1.0 + f64::EPSILON {
            return Err(ConfigError::new("reserved", "shares must sum to at most 1"));
        }
        let m = self.yield_margin;
        if m != 0.0 && !(1.0..=BoundedQueueConfig::MAX_YIELD_MARGIN).contains(&m) {
            return Err(ConfigError::new(
                "yield_margin",
                "must be 0 (off) or within 1..=1000",
            ));
        }
        let n = self.target_service_times;
        if !(0.0..=BoundedQueueConfig::MAX_TARGET_SERVICE_TIMES).contains(&n) {
            return Err(ConfigError::new(
                "target_service_times",
                "must be within 0..=1000",
            ));
        }
        Ok(BoundedQueueConfig {
            name: self.name,
            concurrency: self.concurrency,
            capacity: self.capacity,
            max_wait: self.max_wait,
            codel: self.codel,
            codel_target: self.codel_target,
            codel_interval: self.codel_interval,
            lifo: self.lifo,
            retry_after: self.retry_after,
            reserved: self.reserved,
            yield_margin: self.yield_margin,
            target_service_times: self.target_service_times,
            adaptive: self.adaptive,
        })
    }
}

impl Default for BoundedQueueConfigBuilder {
    fn default() -> Self {
        Self {
            name: BoundedQueueConfig::DEFAULT_NAME.to_owned(),
            concurrency: BoundedQueueConfig::DEFAULT_CONCURRENCY,
            capacity: BoundedQueueConfig::DEFAULT_CAPACITY,
            max_wait: BoundedQueueConfig::DEFAULT_MAX_WAIT,
            codel: BoundedQueueConfig::DEFAULT_CODEL,
            codel_target: BoundedQueueConfig::DEFAULT_CODEL_TARGET,
            codel_interval: BoundedQueueConfig::DEFAULT_CODEL_INTERVAL,
            lifo: BoundedQueueConfig::DEFAULT_LIFO,
            retry_after: BoundedQueueConfig::DEFAULT_RETRY_AFTER,
            reserved: ReservedShares::default(),
            yield_margin: BoundedQueueConfig::DEFAULT_YIELD_MARGIN,
            target_service_times: BoundedQueueConfig::DEFAULT_TARGET_SERVICE_TIMES,
            adaptive: None,
        }
    }
}

impl TryFrom<BoundedQueueConfigBuilder> for BoundedQueueConfig {
    type Error = ConfigError;

    fn try_from(builder: BoundedQueueConfigBuilder) -> Result<Self, Self::Error> {
        builder.build()
    }
}

// === impl ReservedShares ===

impl ReservedShares {
    /// The shares indexed by [`Priority::index`].
    pub fn as_array(&self) -> [f64; 4] {
        [
            self.sheddable,
            self.sheddable_plus,
            self.critical,
            self.critical_plus,
        ]
    }

    /// Whether any share is reserved.
    pub fn is_empty(&self) -> bool {
        self.as_array().iter().all(|s| *s == 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_are_valid() {
        let c = BoundedQueueConfig::default();
        assert_eq!(c.concurrency(), BoundedQueueConfig::DEFAULT_CONCURRENCY);
        assert_eq!(c.codel_target(), Some(Duration::from_millis(5)));
        assert!(c.reserved().is_empty());
        assert_eq!(c.yield_margin(), None);
        assert!(!c.lifo());
        assert_eq!(c.target_service_times(), Some(1.5));
    }

    #[test]
    fn target_service_times_is_within_0_and_1000() {
        let build = |n: f64| {
            BoundedQueueConfig::builder()
                .target_service_times(n)
                .build()
        };
        assert_eq!(build(0.0).unwrap().target_service_times(), None);
        assert_eq!(build(0.5).unwrap().target_service_times(), Some(0.5));
        assert_eq!(build(1000.0).unwrap().target_service_times(), Some(1000.0));
        for bad in [-0.1, 1000.5, f64::NAN, f64::INFINITY] {
            let e = build(bad).unwrap_err();
            assert_eq!(e.field(), "target_service_times", "{bad}: {e}");
        }
    }

    #[test]
    fn yield_margin_is_off_or_at_least_one() {
        let build = |m: f64| BoundedQueueConfig::builder().yield_margin(m).build();
        assert_eq!(build(0.0).unwrap().yield_margin(), None);
        assert_eq!(build(1.0).unwrap().yield_margin(), Some(1.0));
        assert_eq!(build(1000.0).unwrap().yield_margin(), Some(1000.0));
        for bad in [0.5, -1.0, 1000.5, f64::NAN, f64::INFINITY] {
            let e = build(bad).unwrap_err();
            assert_eq!(e.field(), "yield_margin", "{bad}: {e}");
        }
    }

    #[test]
    fn every_duration_is_at_most_365_days() {
        use resilience_core::config::MAX_DURATION;
        let over = MAX_DURATION + Duration::from_nanos(1);
        let b = BoundedQueueConfig::builder;
        let field = |b: BoundedQueueConfigBuilder| b.build().unwrap_err().field();
        assert_eq!(field(b().max_wait(over)), "max_wait");
        assert_eq!(field(b().capacity(0).max_wait(Duration::MAX)), "max_wait");
        assert_eq!(
            field(b().codel_target(over).codel_interval(over)),
            "codel_target"
        );
        assert_eq!(field(b().codel_interval(over)), "codel_interval");
        assert_eq!(field(b().retry_after(over)), "retry_after");
        let c = b()
            .max_wait(MAX_DURATION)
            .codel_target(MAX_DURATION)
            .codel_interval(MAX_DURATION)
            .build()
            .unwrap();
        assert_eq!(c.max_wait(), MAX_DURATION);
    }

    proptest! {
        #[test]
        fn build_never_panics_and_checks_shares(
            conc in 0usize..4, cap in 0usize..4, wait in 0u64..3,
            target in 0u64..300, interval in 0u64..300, a in -0.5f64..1.5, b in -0.5f64..1.5,
        ) {
            let r = BoundedQueueConfig::builder()
                .concurrency(conc)
                .capacity(cap)
                .max_wait(Duration::from_millis(wait))
                .codel_target(Duration::from_millis(target))
                .codel_interval(Duration::from_millis(interval))
                .reserve(Priority::Critical, a)
                .reserve(Priority::Sheddable, b)
                .build();
            let valid = conc > 0
                && (cap == 0 || wait > 0)
                && target > 0 && interval > 0 && target <= interval
                && (0.0..=1.0).contains(&a) && (0.0..=1.0).contains(&b)
                && a + b <= 1.0 + f64::EPSILON;
            prop_assert_eq!(r.is_ok(), valid);
        }
    }
}
