use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use resilience_core::{BoxError, Rejected, RejectionKind};
use tower_service::Service;

use super::active;
use super::future::{FlagGateFuture, RequireFlagFuture};

/// Refuses requests for which a boolean flag is off, with
/// `Rejected` of kind `Disabled`; see [`RequireFlagLayer`](super::RequireFlagLayer).
#[derive(Debug, Clone)]
pub struct RequireFlag<S> {
    inner: S,
    flag: Arc<str>,
}

/// Routes each request by a boolean flag: on to one service, off to the
/// other; see [`FlagGateLayer`](super::FlagGateLayer).
///
/// Ready when both services are ready (like tower's `Steer`, it cannot know
/// the route before the request).
#[derive(Debug, Clone)]
pub struct FlagGate<Off, On> {
    off: Off,
    on: On,
    flag: Arc<str>,
}

const REFUSED: Rejected = Rejected::new(RejectionKind::Disabled, "flag off");

// === impl RequireFlag ===

impl<S> RequireFlag<S> {
    pub(crate) fn new(inner: S, flag: Arc<str>) -> Self {
        Self { inner, flag }
    }

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

impl<S, B> Service<Request<B>> for RequireFlag<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = RequireFlagFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if active(&self.flag, &req) {
            RequireFlagFuture::inner(self.inner.call(req))
        } else {
            tracing::debug!(flag = %self.flag, "request refused: flag off");
            RequireFlagFuture::refused(REFUSED)
        }
    }
}

// === impl FlagGate ===

impl<Off, On> FlagGate<Off, On> {
    pub(crate) fn new(off: Off, on: On, flag: Arc<str>) -> Self {
        Self { off, on, flag }
    }

    /// The service for requests with the flag off.
    pub fn off(&self) -> &Off {
        &self.off
    }

    /// The service for requests with the flag on.
    pub fn on(&self) -> &On {
        &self.on
    }
}

impl<Off, On, B> Service<Request<B>> for FlagGate<Off, On>
where
    Off: Service<Request<B>>,
    Off::Error: Into<BoxError>,
    On: Service<Request<B>, Response = Off::Response>,
    On::Error: Into<BoxError>,
{
    type Response = Off::Response;
    type Error = BoxError;
    type Future = FlagGateFuture<Off::Future, On::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let off = self.off.poll_ready(cx).map_err(Into::into)?;
        let on = self.on.poll_ready(cx).map_err(Into::into)?;
        if off.is_ready() && on.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if active(&self.flag, &req) {
            FlagGateFuture::on(self.on.call(req))
        } else {
            FlagGateFuture::off(self.off.call(req))
        }
    }
}
