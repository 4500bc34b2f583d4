//! A [`TimeoutLayer`] whose configuration changes at run time.
//!
//! Each service keeps its own [`Timeout`] and a version number; a call
//! compares the version with the shared one (one relaxed atomic load) and,
//! only after a change, rebuilds its `Timeout` around the same inner
//! service from the new configuration (under a lock taken then alone).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use resilience_core::BoxError;
use resilience_core::timeout::{Timeout, TimeoutConfig, TimeoutLayer};
use tower_layer::Layer;
use tower_service::Service;

/// The timeout's configuration in force, shared by a layer, its services
/// and the stack's reload handle.
pub(crate) struct Tuning {
    version: AtomicU64,
    layer: Mutex<TimeoutLayer>,
    config: Mutex<TimeoutConfig>,
}

/// Applies [`Retimed`] to services.
#[derive(Clone)]
pub(crate) struct RetimeLayer {
    tuning: Arc<Tuning>,
}

/// A [`Timeout`] that follows its configuration, changed at run time (a
/// part of the standard stacks' types).
pub struct Retimed<S> {
    inner: Option<Timeout<S>>,
    seen: u64,
    tuning: Arc<Tuning>,
}

// === impl Tuning ===

impl Tuning {
    /// Sets the configuration of the next calls (every service rebuilds
    /// its timeout at its next call).
    pub(crate) fn set(&self, config: &TimeoutConfig) {
        let mut current = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        if *current == *config {
            return;
        }
        *current = config.clone();
        *self.layer.lock().unwrap_or_else(PoisonError::into_inner) =
            TimeoutLayer::new(config.clone());
        drop(current);
        self.version.fetch_add(1, Ordering::Release);
    }

    fn layer(&self) -> TimeoutLayer {
        self.layer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

// === impl RetimeLayer ===

impl RetimeLayer {
    pub(crate) fn new(config: TimeoutConfig) -> Self {
        Self {
            tuning: Arc::new(Tuning {
                version: AtomicU64::new(0),
                layer: Mutex::new(TimeoutLayer::new(config.clone())),
                config: Mutex::new(config),
            }),
        }
    }

    pub(crate) fn tuning(&self) -> Arc<Tuning> {
        self.tuning.clone()
    }

    /// The configured timeout now.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn timeout(&self) -> std::time::Duration {
        self.tuning.layer().timeout()
    }
}

impl<S> Layer<S> for RetimeLayer {
    type Service = Retimed<S>;

    fn layer(&self, inner: S) -> Retimed<S> {
        // The version first: a change racing this is picked up at the
        // first call.
        let seen = self.tuning.version.load(Ordering::Acquire);
        Retimed {
            inner: Some(self.tuning.layer().layer(inner)),
            seen,
            tuning: self.tuning.clone(),
        }
    }
}

// === impl Retimed ===

impl<S: Clone> Clone for Retimed<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            seen: self.seen,
            tuning: self.tuning.clone(),
        }
    }
}

impl<S, Req> Service<Req> for Retimed<S>
where
    Timeout<S>: Service<Req, Error = BoxError>,
{
    type Response = <Timeout<S> as Service<Req>>::Response;
    type Error = BoxError;
    type Future = <Timeout<S> as Service<Req>>::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &mut self.inner {
            Some(inner) => inner.poll_ready(cx),
            None => unreachable!("a Retimed service always holds its timeout"),
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let version = self.tuning.version.load(Ordering::Acquire);
        if version != self.seen {
            self.retime(version);
        }
        match &mut self.inner {
            Some(inner) => inner.call(req),
            None => unreachable!("a Retimed service always holds its timeout"),
        }
    }
}

impl<S> std::fmt::Debug for Retimed<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retimed")
            .field("version", &self.seen)
            .finish_non_exhaustive()
    }
}

impl<S> Retimed<S> {
    /// Rebuilds the timeout around the same inner service (its readiness
    /// is kept: `Timeout::poll_ready` is the inner service's).
    #[cold]
    fn retime(&mut self, version: u64) {
        if let Some(timeout) = self.inner.take() {
            self.inner = Some(self.tuning.layer().layer(timeout.into_inner()));
        }
        self.seen = version;
    }
}
