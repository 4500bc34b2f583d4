//! A token-bucket rate limit ("N per second"), shared by every clone.
//!
//! Unlike tower's `RateLimit`, the service is `Clone` and every clone (and
//! every service the layer makes) draws from one bucket; it never makes a
//! caller wait and does not need a runtime to be built. The bucket is a
//! GCRA: one atomic compare-and-swap per request. A request over the rate
//! fails at once with [`Rejected`] (kind `Overloaded`, reason
//! `"rate limited"`) carrying the time until the next token as retry-after.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use resilience_bounded_queue::rate::{RateLimitConfig, RateLimitLayer};
//! use resilience_core::BoxError;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let config = RateLimitConfig::builder().rate(10, Duration::from_secs(1)).burst(2).build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(config))
//!     .service(service_fn(|_: ()| async { Ok::<_, BoxError>("ok") }));
//! let mut a = svc.clone();
//! let mut b = svc; // shares the bucket
//! assert!(a.ready().await?.call(()).await.is_ok());
//! assert!(b.ready().await?.call(()).await.is_ok());
//! assert!(a.ready().await?.call(()).await.is_err()); // burst of 2 spent
//! tokio::time::advance(Duration::from_millis(100)).await;
//! assert!(b.ready().await?.call(()).await.is_ok());
//! # Ok(())
//! # }
//! ```
//!
//! # Metrics
//!
//! `resilience_rate_limit_rejected_total{name}` (counter): requests refused.
//! Install the recorder before building the layer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use resilience_core::config::{
    ConfigError, MAX_DURATION, validate_name, validate_positive_duration,
};
use resilience_core::{BoxError, Rejected, RejectionKind};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::sync::{Arc, AtomicU64, Ordering};

/// Validated configuration of a [`RateLimitLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "RateLimitConfigBuilder"))]
pub struct RateLimitConfig {
    name: String,
    num: u64,
    per: Duration,
    burst: u64,
}

/// Builds a [`RateLimitConfig`]; see [`RateLimitConfig::builder`].
#[derive(Debug, Clone)]
#[must_use]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct RateLimitConfigBuilder {
    name: String,
    num: u64,
    #[cfg_attr(
        feature = "serde",
        serde(deserialize_with = "resilience_core::config::duration::deserialize")
    )]
    per: Duration,
    burst: u64,
}

/// Applies [`RateLimit`] to services. Cloning shares the bucket.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    bucket: Arc<Bucket>,
}

/// A read-only view of a rate limit, for dashboards and health checks:
/// from [`RateLimitLayer::handle`]. Cheap to clone; it shares the bucket.
#[derive(Debug, Clone)]
pub struct RateLimitHandle {
    bucket: Arc<Bucket>,
}

/// A rate limit's state now, from [`RateLimitHandle::snapshot`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RateLimitSnapshot {
    /// The configured rate, in requests per second.
    pub per_second: f64,
    /// Requests that may arrive at once.
    pub burst: u64,
    /// Requests that would be admitted if they arrived now, at once.
    pub available: u64,
    /// Requests refused since the layer was built.
    pub rejected: u64,
}

/// Refuses requests above a rate; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    bucket: Arc<Bucket>,
}

pin_project! {
    /// The response future of [`RateLimit`].
    #[derive(Debug)]
    pub struct RateLimitFuture<F> {
        #[pin]
        state: RateState<F>,
    }
}

pin_project! {
    #[project = RateLimitProj]
    #[derive(Debug)]
    enum RateState<F> {
        Called {
            #[pin]
            fut: F,
        },
        Rejected {
            error: Option<Rejected>,
        },
    }
}

struct Bucket {
    origin: Instant,
    /// The GCRA's theoretical arrival time, in nanoseconds since `origin`.
    tat: AtomicU64,
    interval: u64,
    tolerance: u64,
    burst: u64,
    per_second: f64,
    name: String,
    /// Requests refused (counted on the refusal path only).
    refused: AtomicU64,
    #[cfg(feature = "metrics")]
    rejected: metrics::Counter,
}

// === impl RateLimitConfig ===

impl RateLimitConfig {
    /// The `name` metric label: `"default"`.
    pub const DEFAULT_NAME: &'static str = "default";
    /// Requests per [`DEFAULT_PER`](Self::DEFAULT_PER): `100`.
    pub const DEFAULT_NUM: u64 = 100;
    /// The period of the rate: `1s`.
    pub const DEFAULT_PER: Duration = Duration::from_secs(1);
    /// Requests that may arrive at once: `1`.
    pub const DEFAULT_BURST: u64 = 1;
    /// The longest period, and the longest a burst may span: `365 days`
    /// ([`MAX_DURATION`], the longest duration any configuration of the
    /// family accepts).
    pub const MAX_PER: Duration = MAX_DURATION;

    /// A builder with the defaults.
    pub fn builder() -> RateLimitConfigBuilder {
        RateLimitConfigBuilder::default()
    }

    /// Requests allowed per period, and the period.
    pub fn rate(&self) -> (u64, Duration) {
        (self.num, self.per)
    }

    /// Requests that may arrive at once.
    pub fn burst(&self) -> u64 {
        self.burst
    }
}

impl Default for RateLimitConfigBuilder {
    fn default() -> Self {
        Self {
            name: RateLimitConfig::DEFAULT_NAME.to_owned(),
            num: RateLimitConfig::DEFAULT_NUM,
            per: RateLimitConfig::DEFAULT_PER,
            burst: RateLimitConfig::DEFAULT_BURST,
        }
    }
}

impl RateLimitConfigBuilder {
    /// Names the limit: the `name` metric label.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Allows `num` requests per `per` (default 100 per second).
    pub fn rate(mut self, num: u64, per: Duration) -> Self {
        self.num = num;
        self.per = per;
        self
    }

    /// Requests that may arrive at once (default 1).
    pub fn burst(mut self, burst: u64) -> Self {
        self.burst = burst;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// - `name` is not 1 to 64 characters of `[A-Za-z0-9_.-]`
    /// - `num` or `burst` is zero
    /// - `per` is zero, or `per / num` is below a nanosecond
    /// - `per` is longer than [`RateLimitConfig::MAX_PER`]
    /// - `burst` requests span more than [`RateLimitConfig::MAX_PER`] at the
    ///   rate (`burst * per / num`)
    pub fn build(self) -> Result<RateLimitConfig, ConfigError> {
        validate_name("name", &self.name)?;
        if self.num == 0 {
            return Err(ConfigError::new("num", "must be at least 1"));
        }
        if self.burst == 0 {
            return Err(ConfigError::new("burst", "must be at least 1"));
        }
        validate_positive_duration("per", self.per)?;
        if self.per.as_nanos() < u128::from(self.num) {
            return Err(ConfigError::new(
                "per",
                "must be at least a nanosecond per request",
            ));
        }
        let span = self.per.as_nanos() / u128::from(self.num) * u128::from(self.burst);
        if span > RateLimitConfig::MAX_PER.as_nanos() {
            return Err(ConfigError::new(
                "burst",
                "must not span more than 365 days at the rate",
            ));
        }
        Ok(RateLimitConfig {
            name: self.name,
            num: self.num,
            per: self.per,
            burst: self.burst,
        })
    }
}

impl TryFrom<RateLimitConfigBuilder> for RateLimitConfig {
    type Error = ConfigError;

    fn try_from(b: RateLimitConfigBuilder) -> Result<Self, Self::Error> {
        b.build()
    }
}

// === impl RateLimitLayer ===

impl RateLimitLayer {
    /// One bucket for every service this layer makes. Works outside a
    /// runtime.
    pub fn new(config: RateLimitConfig) -> Self {
        let interval =
            (config.per.as_nanos() / u128::from(config.num)).min(u64::MAX as u128) as u64;
        #[cfg(feature = "metrics")]
        let rejected = {
            use resilience_core::names::{LABEL_NAME, RATE_LIMIT_REJECTED_TOTAL};
            metrics::describe_counter!(
                RATE_LIMIT_REJECTED_TOTAL,
                metrics::Unit::Count,
                "Requests refused by a rate limit."
            );
            metrics::counter!(RATE_LIMIT_REJECTED_TOTAL, LABEL_NAME => config.name.clone())
        };
        Self {
            bucket: Arc::new(Bucket {
                origin: Instant::now(),
                tat: AtomicU64::new(0),
                interval,
                tolerance: interval.saturating_mul(config.burst),
                burst: config.burst,
                per_second: config.num as f64 / config.per.as_secs_f64(),
                name: config.name,
                refused: AtomicU64::new(0),
                #[cfg(feature = "metrics")]
                rejected,
            }),
        }
    }
}

impl RateLimitLayer {
    /// A handle on the bucket this layer's services share.
    pub fn handle(&self) -> RateLimitHandle {
        RateLimitHandle {
            bucket: self.bucket.clone(),
        }
    }
}

// === impl RateLimitHandle ===

impl RateLimitHandle {
    /// The limit's name (its `name` metric label).
    pub fn name(&self) -> &str {
        &self.bucket.name
    }

    /// The state now: rate, burst, requests available at once, refusals.
    pub fn snapshot(&self) -> RateLimitSnapshot {
        RateLimitSnapshot {
            per_second: self.bucket.per_second,
            burst: self.bucket.burst,
            available: self.bucket.available(Instant::now()),
            rejected: self.bucket.refused.load(Ordering::Relaxed),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            bucket: self.bucket.clone(),
        }
    }
}

// === impl RateLimit ===

impl<S> RateLimit<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for RateLimit<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = RateLimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.bucket.acquire(Instant::now()) {
            Ok(()) => RateLimitFuture {
                state: RateState::Called {
                    fut: self.inner.call(req),
                },
            },
            Err(wait) => {
                self.bucket.refused.fetch_add(1, Ordering::Relaxed);
                #[cfg(feature = "metrics")]
                self.bucket.rejected.increment(1);
                tracing::debug!(name = %self.bucket.name, "rate limited");
                RateLimitFuture {
                    state: RateState::Rejected {
                        error: Some(
                            Rejected::new(RejectionKind::Overloaded, "rate limited")
                                .with_retry_after(wait),
                        ),
                    },
                }
            }
        }
    }
}

impl<F, T, E> Future for RateLimitFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            RateLimitProj::Called { fut } => fut.poll(cx).map_err(Into::into),
            RateLimitProj::Rejected { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion").into()))
            }
        }
    }
}

// === impl Bucket ===

impl Bucket {
    /// Requests that would be admitted at once at `now`.
    fn available(&self, now: Instant) -> u64 {
        if self.interval == 0 {
            return self.burst;
        }
        let t = now
            .saturating_duration_since(self.origin)
            .as_nanos()
            .min(u64::MAX as u128) as u64;
        let ahead = self.tat.load(Ordering::Relaxed).saturating_sub(t);
        (self.tolerance.saturating_sub(ahead) / self.interval).min(self.burst)
    }

    /// Takes a token at `now`, or says how long until one is free.
    fn acquire(&self, now: Instant) -> Result<(), Duration> {
        let t = now
            .saturating_duration_since(self.origin)
            .as_nanos()
            .min(u64::MAX as u128) as u64;
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(t).saturating_add(self.interval);
            let ahead = next - t;
            if ahead > self.tolerance {
                return Err(Duration::from_nanos(ahead - self.tolerance));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("name", &self.name)
            .field("interval_ns", &self.interval)
            .field("tolerance_ns", &self.tolerance)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn config_validates() {
        let e = |b: RateLimitConfigBuilder| b.build().unwrap_err().field();
        assert_eq!(
            e(RateLimitConfig::builder().rate(0, Duration::from_secs(1))),
            "num"
        );
        assert_eq!(e(RateLimitConfig::builder().rate(1, Duration::ZERO)), "per");
        assert_eq!(
            e(RateLimitConfig::builder().rate(10, Duration::from_nanos(5))),
            "per"
        );
        assert_eq!(e(RateLimitConfig::builder().burst(0)), "burst");
        assert_eq!(e(RateLimitConfig::builder().rate(1, Duration::MAX)), "per");
        let over = RateLimitConfig::MAX_PER + Duration::from_nanos(1);
        assert_eq!(e(RateLimitConfig::builder().rate(1, over)), "per");
        assert_eq!(
            e(RateLimitConfig::builder()
                .rate(1, RateLimitConfig::MAX_PER)
                .burst(2)),
            "burst"
        );
        assert_eq!(
            e(RateLimitConfig::builder()
                .rate(1, Duration::from_secs(1))
                .burst(u64::MAX)),
            "burst"
        );
        assert_eq!(e(RateLimitConfig::builder().name("a b")), "name");
    }

    /// The longest period allowed still limits: the bucket's arithmetic
    /// does not saturate into "always allowed".
    #[test]
    fn the_longest_period_still_limits() {
        let layer = RateLimitLayer::new(
            RateLimitConfig::builder()
                .rate(1, RateLimitConfig::MAX_PER)
                .build()
                .unwrap(),
        );
        let b = &layer.bucket;
        let t0 = b.origin + Duration::from_secs(1);
        assert!(b.acquire(t0).is_ok());
        assert_eq!(
            b.acquire(t0),
            Err(RateLimitConfig::MAX_PER),
            "one per period"
        );
        assert!(b.acquire(t0 + Duration::from_secs(3600)).is_err());
        assert!(b.acquire(t0 + RateLimitConfig::MAX_PER).is_ok());
    }

    #[test]
    fn gcra_allows_burst_then_rate() {
        let layer = RateLimitLayer::new(
            RateLimitConfig::builder()
                .rate(1, Duration::from_millis(10))
                .burst(3)
                .build()
                .unwrap(),
        );
        let b = &layer.bucket;
        let t0 = b.origin + Duration::from_secs(1);
        for _ in 0..3 {
            assert!(b.acquire(t0).is_ok());
        }
        assert_eq!(b.acquire(t0), Err(Duration::from_millis(10)));
        assert!(b.acquire(t0 + Duration::from_millis(10)).is_ok());
        assert!(b.acquire(t0 + Duration::from_millis(10)).is_err());
        // idle for long: only the burst accumulates
        let later = t0 + Duration::from_secs(10);
        for _ in 0..3 {
            assert!(b.acquire(later).is_ok());
        }
        assert!(b.acquire(later).is_err());
    }
}
