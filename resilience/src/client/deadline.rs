//! [`CallDeadlineLayer`]: a call's overall deadline, set on the request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use resilience_core::Deadline;
use tower_layer::Layer;
use tower_service::Service;

/// Applies [`CallDeadline`] to a client service.
///
/// Cloning the layer copies its duration.
#[derive(Debug, Clone, Copy)]
pub struct CallDeadlineLayer {
    total: Option<Duration>,
}

/// Puts a call's overall deadline in the request's extensions: `total`
/// from now, or the request's own [`Deadline`] if that is sooner (a
/// deadline is only ever tightened). Layers below read it: the context
/// propagation sends it, the retry starts no try it cannot cover, and a
/// [`TimeoutLayer`](resilience_core::TimeoutLayer) enforces it.
///
/// With no duration the request is left as it is.
///
/// ```
/// use std::time::Duration;
/// use resilience::Deadline;
/// use resilience::client::CallDeadlineLayer;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let svc = CallDeadlineLayer::new(Some(Duration::from_secs(1))).layer(service_fn(
///     |req: http::Request<()>| async move {
///         Ok::<_, std::convert::Infallible>(Deadline::from_extensions(req.extensions()))
///     },
/// ));
/// let left = svc.oneshot(http::Request::new(())).await.unwrap().unwrap().remaining();
/// assert_eq!(left, Duration::from_secs(1));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CallDeadline<S> {
    inner: S,
    total: Option<Duration>,
}

// === impl CallDeadlineLayer ===

impl CallDeadlineLayer {
    /// A layer giving each call `total` at most (`None`: no deadline).
    pub const fn new(total: Option<Duration>) -> Self {
        Self { total }
    }
}

impl<S> Layer<S> for CallDeadlineLayer {
    type Service = CallDeadline<S>;

    fn layer(&self, inner: S) -> CallDeadline<S> {
        CallDeadline {
            inner,
            total: self.total,
        }
    }
}

// === impl CallDeadline ===

impl<S, B> Service<Request<B>> for CallDeadline<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        if let Some(total) = self.total {
            tighten(&mut req, total);
        }
        self.inner.call(req)
    }
}

/// [`CallDeadlineLayer`] whose duration changes at run time (the client
/// stack's): one relaxed atomic load per call.
#[derive(Debug, Clone)]
pub(crate) struct TunedDeadlineLayer {
    /// Nanoseconds.
    total: Arc<AtomicU64>,
}

/// [`CallDeadline`] with the duration of a [`TunedDeadlineLayer`].
#[derive(Debug, Clone)]
pub(crate) struct TunedDeadline<S> {
    inner: S,
    total: Arc<AtomicU64>,
}

// === impl TunedDeadlineLayer ===

impl TunedDeadlineLayer {
    pub(crate) fn new(total: Duration) -> Self {
        Self {
            total: Arc::new(AtomicU64::new(nanos(total))),
        }
    }

    /// The duration, shared with every service: storing into it changes
    /// the deadline of the next calls.
    pub(crate) fn total(&self) -> Arc<AtomicU64> {
        self.total.clone()
    }
}

/// `d` in nanoseconds (a valid deadline is at most 365 days).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl<S> Layer<S> for TunedDeadlineLayer {
    type Service = TunedDeadline<S>;

    fn layer(&self, inner: S) -> TunedDeadline<S> {
        TunedDeadline {
            inner,
            total: self.total.clone(),
        }
    }
}

// === impl TunedDeadline ===

impl<S, B> Service<Request<B>> for TunedDeadline<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        tighten(
            &mut req,
            Duration::from_nanos(self.total.load(Ordering::Relaxed)),
        );
        self.inner.call(req)
    }
}

/// Gives the request the earlier of its deadline and `total` from now.
fn tighten<B>(req: &mut Request<B>, total: Duration) {
    let own = Deadline::after(total);
    let deadline = match Deadline::from_extensions(req.extensions()) {
        Some(earlier) => earlier.min(own),
        None => own,
    };
    req.extensions_mut().insert(deadline);
}
