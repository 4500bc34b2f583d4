//! The client layer: stamps outgoing calls with the current context.

use std::task::{Context, Poll};

use http::header::CONTENT_TYPE;
use http::{HeaderName, Request};
use resilience_core::Deadline;
use resilience_core::deadline::{
    DEADLINE_HEADER, GRPC_TIMEOUT_HEADER, parse_grpc_timeout, parse_millis,
};
use resilience_core::priority::PRIORITY_HEADER;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::context::RequestContext;
use crate::server::CorrelationConfig;
use crate::trace::{TRACEPARENT, TRACESTATE};

/// Applies [`PropagateContext`] to a client service (a hyper client, a tonic
/// `Channel`, anything that is a `Service<http::Request<B>>`).
///
/// Cloning the layer copies its header name.
#[derive(Debug, Clone)]
pub struct PropagateContextLayer {
    id_header: HeaderName,
}

/// Adds the current request's context to each outgoing request: the same
/// correlation id, a `traceparent` with the same trace id and this hop's
/// span as parent, the priority, the remaining deadline (`x-deadline-ms`,
/// and `grpc-timeout` for gRPC calls; see [Deadline](#deadline)), and any
/// forwarded headers.
///
/// The context comes from the outgoing request's extensions if it has one,
/// else from the task-local scope set by the server layer, so a handler calls
/// downstream services without passing anything by hand. Outside any request
/// (no context) the request is left unchanged.
///
/// Headers the caller already set (id, priority, forwarded headers) are left
/// as they are; `traceparent` always comes from the context.
///
/// # Deadline
///
/// The call leaves with the smallest of: the context's deadline, a
/// [`Deadline`] in the outgoing request's extensions, and a `grpc-timeout` or
/// `x-deadline-ms` the caller already set (tonic's
/// `Request::set_timeout` writes `grpc-timeout`). A caller can tighten the
/// deadline of one call, never loosen it; a malformed header of the caller's
/// is ignored (logged at debug) and overwritten. The result is written to
/// both headers on a gRPC call (`content-type: application/grpc*`, or a
/// `grpc-timeout` already present), to `x-deadline-ms` otherwise, and put in
/// the outgoing request's extensions, so a
/// [`TimeoutLayer`](resilience_core::TimeoutLayer) placed below this layer
/// enforces it, and fails a call whose deadline has already passed without
/// sending it. With neither a context deadline nor an extension, the
/// caller's own headers are left as they are.
///
/// ```
/// use std::time::Duration;
/// use http::{Request, Response};
/// use resilience_correlation::{Deadline, PropagateContextLayer, RequestContext};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let client = PropagateContextLayer::new().layer(service_fn(|req: Request<()>| async move {
///     Ok::<_, std::convert::Infallible>(Response::new(req.headers()["x-deadline-ms"].clone()))
/// }));
/// let inbound = RequestContext::new_root().with_deadline(Some(Deadline::after(Duration::from_secs(1))));
/// // This call may take 100 ms at most, within the request's 1 s.
/// let req = Request::builder().header("x-deadline-ms", "100").body(()).unwrap();
/// let rsp = inbound.scope(client.oneshot(req)).await.unwrap();
/// assert_eq!(rsp.body(), "100");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PropagateContext<S> {
    inner: S,
    id_header: HeaderName,
}

// === impl PropagateContextLayer ===

impl PropagateContextLayer {
    /// Sends the id in `x-correlation-id`.
    pub fn new() -> Self {
        Self {
            id_header: HeaderName::from_static(CorrelationConfig::DEFAULT_ID_HEADER),
        }
    }

    /// Sends the id in `name` instead.
    #[must_use]
    pub fn id_header(mut self, name: HeaderName) -> Self {
        self.id_header = name;
        self
    }
}

impl Default for PropagateContextLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for PropagateContextLayer {
    type Service = PropagateContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateContext {
            inner,
            id_header: self.id_header.clone(),
        }
    }
}

// === impl PropagateContext ===

impl<S> PropagateContext<S> {
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

impl<S, B> Service<Request<B>> for PropagateContext<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(ctx) = req.extensions().get::<RequestContext>().cloned() {
            stamp(&ctx, &self.id_header, &mut req);
        } else {
            RequestContext::with_current(|ctx| {
                if let Some(ctx) = ctx {
                    stamp(ctx, &self.id_header, &mut req);
                }
            });
        }
        self.inner.call(req)
    }
}

fn stamp<B>(ctx: &RequestContext, id_header: &HeaderName, req: &mut Request<B>) {
    let headers = req.headers_mut();
    headers
        .entry(id_header)
        .or_insert_with(|| ctx.correlation_id().to_header_value());
    headers.insert(TRACEPARENT, ctx.outgoing_traceparent());
    if let Some(state) = ctx.trace().tracestate() {
        headers.entry(TRACESTATE).or_insert_with(|| state.clone());
    }
    headers
        .entry(PRIORITY_HEADER)
        .or_insert_with(|| ctx.priority().to_header_value());
    for (name, value) in ctx.forwarded_headers() {
        headers.entry(name).or_insert_with(|| value.clone());
    }
    stamp_deadline(ctx.deadline(), req);
    // Readers treat a missing priority as the default, so only a
    // non-default one costs an extension insert (three allocations on a
    // request without extensions).
    let priority = ctx.priority();
    if priority != resilience_core::Priority::default()
        && req
            .extensions()
            .get::<resilience_core::Priority>()
            .is_none()
    {
        req.extensions_mut().insert(priority);
    }
}

/// Sends the smallest of the inbound deadline, the request's own
/// [`Deadline`] extension and any `grpc-timeout` / `x-deadline-ms` the
/// caller already set (tonic's `Request::set_timeout` writes
/// `grpc-timeout`), in both places: the headers and the extensions.
///
/// A malformed header the caller set is ignored (logged at debug) and
/// overwritten. Without an inbound deadline or an extension, the caller's
/// own headers are left as they are: they are the smallest already.
fn stamp_deadline<B>(inbound: Option<Deadline>, req: &mut Request<B>) {
    let own = Deadline::from_extensions(req.extensions());
    let mut deadline = match (inbound, own) {
        (Some(a), Some(b)) => a.min(b),
        (Some(d), None) | (None, Some(d)) => d,
        (None, None) => return,
    };
    let now = Instant::now();
    // One pass over the (few) headers of an outgoing request.
    let mut grpc = false;
    for (name, value) in req.headers() {
        let (header, parsed) = if *name == GRPC_TIMEOUT_HEADER {
            // Rewritten even on a plain request: servers read it first.
            grpc = true;
            ("grpc-timeout", parse_grpc_timeout(value.as_bytes()))
        } else if *name == DEADLINE_HEADER {
            ("x-deadline-ms", parse_millis(value.as_bytes()))
        } else {
            if *name == CONTENT_TYPE {
                grpc |= value.as_bytes().starts_with(b"application/grpc");
            }
            continue;
        };
        match parsed {
            Ok(left) => deadline = deadline.min(Deadline::after_at(now, left)),
            Err(error) => tracing::debug!(
                header,
                %error,
                "ignoring a malformed deadline the caller set"
            ),
        }
    }
    deadline.write_headers(req.headers_mut(), now, grpc);
    req.extensions_mut().insert(deadline);
}
