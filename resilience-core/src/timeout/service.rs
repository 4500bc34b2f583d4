use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower_service::Service;

use super::future::ResponseFuture;
use crate::deadline::Deadline;
use crate::error::BoxError;

/// Times out requests after a duration or at their deadline, whichever is
/// sooner. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct Timeout<S, D = FromExtensions> {
    inner: S,
    timeout: Duration,
    read_deadline: D,
    name: Option<Arc<str>>,
}

/// Finds a request's [`Deadline`].
///
/// Implemented by [`FromExtensions`] (for `http::Request<B>`), [`NoDeadline`],
/// and closures `Fn(&Req) -> Option<Deadline>`.
pub trait ReadDeadline<Req> {
    /// The request's deadline, if it has one.
    fn read_deadline(&self, req: &Req) -> Option<Deadline>;
}

/// Reads the request's deadline with [`Deadline::from_extensions`]: its
/// `Deadline` extension or its request context's (the default).
#[derive(Debug, Clone, Copy)]
pub struct FromExtensions {
    pub(super) enabled: bool,
}

/// Ignores request deadlines: only the layer's timeout applies.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDeadline;

// === impl Timeout ===

impl<S> Timeout<S> {
    /// Wraps `inner`, reading deadlines from request extensions.
    pub const fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            read_deadline: FromExtensions { enabled: true },
            name: None,
        }
    }
}

impl<S, D> Timeout<S, D> {
    pub(super) fn with_parts(
        inner: S,
        timeout: Duration,
        read_deadline: D,
        name: Option<Arc<str>>,
    ) -> Self {
        Self {
            inner,
            timeout,
            read_deadline,
            name,
        }
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

impl<S, D, Req> Service<Req> for Timeout<S, D>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    D: ReadDeadline<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let deadline = self.read_deadline.read_deadline(&req);
        if let Some(d) = deadline {
            if d.is_expired_at(Instant::now()) {
                tracing::debug!("deadline already passed, not calling the inner service");
                return ResponseFuture::expired(self.name.clone());
            }
        }
        ResponseFuture::new(
            self.inner.call(req),
            self.timeout,
            deadline.map(Deadline::instant),
            self.name.clone(),
        )
    }
}

// === impl FromExtensions ===

impl FromExtensions {
    /// Reads the deadline from request extensions.
    pub const fn new() -> Self {
        Self { enabled: true }
    }
}

impl Default for FromExtensions {
    fn default() -> Self {
        Self::new()
    }
}

impl<B> ReadDeadline<http::Request<B>> for FromExtensions {
    #[inline]
    fn read_deadline(&self, req: &http::Request<B>) -> Option<Deadline> {
        if self.enabled {
            Deadline::from_extensions(req.extensions())
        } else {
            None
        }
    }
}

// === impl NoDeadline ===

impl<Req> ReadDeadline<Req> for NoDeadline {
    #[inline]
    fn read_deadline(&self, _: &Req) -> Option<Deadline> {
        None
    }
}

impl<F, Req> ReadDeadline<Req> for F
where
    F: Fn(&Req) -> Option<Deadline>,
{
    fn read_deadline(&self, req: &Req) -> Option<Deadline> {
        self(req)
    }
}
