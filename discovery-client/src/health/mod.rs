//! Active health checks, apart from user traffic.
//!
//! Each endpoint is checked on its own schedule (interval with jitter, each
//! check bounded by a timeout). After `unhealthy_threshold` consecutive
//! failed checks it gets no traffic; after `healthy_threshold` consecutive
//! passing checks it gets traffic again. A new endpoint gets traffic after
//! its first passing check.

mod config;
#[cfg(feature = "grpc")]
mod grpc;
#[cfg(feature = "http")]
mod http;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rand::Rng;
use resilience_core::BoxError;
use tokio::task::AbortHandle;

pub use self::config::{HealthCheckConfig, HealthCheckConfigBuilder};
#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub use self::grpc::GrpcHealthCheck;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use self::http::HttpHealthCheck;

use crate::endpoint::Endpoint;
use crate::round_robin::pool::{EndpointStats, PENDING, UNHEALTHY};

/// The future of one health check: `Ok(())` when the endpoint is healthy.
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// Checks whether one endpoint is healthy.
///
/// [`HttpHealthCheck`] (feature `http`) does `GET /health`,
/// [`GrpcHealthCheck`] (feature `grpc`) asks `grpc.health.v1`; [`check_fn`]
/// turns a closure into a check.
pub trait CheckHealth: Send + Sync + 'static {
    /// Runs one check of `endpoint`. The caller bounds it with the
    /// configured timeout.
    fn check(&self, endpoint: &Endpoint) -> CheckFuture;
}

/// A [`CheckHealth`] made from a closure; see [`check_fn`].
#[derive(Clone, Copy)]
pub struct CheckFn<F> {
    f: F,
}

/// Turns a closure returning a future of `Result<(), BoxError>` into a
/// [`CheckHealth`].
pub fn check_fn<F, Fut>(f: F) -> CheckFn<F>
where
    F: Fn(&Endpoint) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    CheckFn { f }
}

/// Runs the checks of a balancer's endpoints.
#[derive(Clone)]
pub(crate) struct HealthChecker {
    config: HealthCheckConfig,
    check: Arc<dyn CheckHealth>,
}

// === impl CheckFn ===

impl<F, Fut> CheckHealth for CheckFn<F>
where
    F: Fn(&Endpoint) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    fn check(&self, endpoint: &Endpoint) -> CheckFuture {
        Box::pin((self.f)(endpoint))
    }
}

impl<F> fmt::Debug for CheckFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckFn").finish_non_exhaustive()
    }
}

// === impl HealthChecker ===

impl HealthChecker {
    pub(crate) fn new(config: HealthCheckConfig, check: impl CheckHealth) -> Self {
        Self {
            config,
            check: Arc::new(check),
        }
    }

    /// Starts checking `endpoint` on `runtime`; the task ends when aborted.
    pub(crate) fn spawn(
        &self,
        runtime: &tokio::runtime::Handle,
        endpoint: Endpoint,
        stats: Arc<EndpointStats>,
    ) -> AbortHandle {
        let this = self.clone();
        runtime
            .spawn(async move { this.run(endpoint, stats).await })
            .abort_handle()
    }

    async fn run(self, endpoint: Endpoint, stats: Arc<EndpointStats>) {
        let cfg = &self.config;
        let (mut passes, mut fails) = (0u32, 0u32);
        loop {
            let result = match tokio::time::timeout(cfg.timeout, self.check.check(&endpoint)).await
            {
                Ok(result) => result,
                Err(_) => Err("health check timed out".into()),
            };
            let flags = stats.flags();
            match result {
                Ok(()) => {
                    fails = 0;
                    passes = passes.saturating_add(1);
                    if flags & PENDING != 0 {
                        stats.clear(PENDING);
                        stats.clear(UNHEALTHY);
                        tracing::info!(peer.addr = %endpoint, "endpoint passed its first health check");
                        stats.pool.record_gauges();
                    } else if flags & UNHEALTHY != 0 && passes >= cfg.healthy_threshold {
                        stats.clear(UNHEALTHY);
                        tracing::info!(peer.addr = %endpoint, passes, "endpoint healthy again");
                        stats.pool.record_gauges();
                    }
                }
                Err(err) => {
                    passes = 0;
                    fails = fails.saturating_add(1);
                    tracing::debug!(peer.addr = %endpoint, error = %err, fails, "health check failed");
                    if flags & UNHEALTHY == 0 && fails >= cfg.unhealthy_threshold {
                        // A pending endpoint that keeps failing now counts as
                        // unhealthy (for the panic threshold).
                        stats.set(UNHEALTHY);
                        stats.clear(PENDING);
                        tracing::info!(peer.addr = %endpoint, fails, error = %err, "endpoint unhealthy");
                        stats.pool.record_gauges();
                    }
                }
            }
            let next = cfg.next_interval(&mut rand::rng());
            tokio::time::sleep(next).await;
        }
    }
}

impl fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthChecker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// `base` ± `percent`% uniformly.
pub(crate) fn jittered(
    base: std::time::Duration,
    percent: u8,
    rng: &mut impl Rng,
) -> std::time::Duration {
    if percent == 0 || base.is_zero() {
        return base;
    }
    let spread = base.as_secs_f64() * f64::from(percent) / 100.0;
    let offset = rng.random_range(-spread..=spread);
    // Configured intervals are at most `MAX_DURATION`, so this always
    // converts; were it not to, the interval goes unjittered.
    std::time::Duration::try_from_secs_f64((base.as_secs_f64() + offset).max(0.0)).unwrap_or(base)
}
