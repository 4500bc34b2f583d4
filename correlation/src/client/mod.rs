//! The client layer: stamps outgoing calls with the current context.

use std::task::{Context, Poll};

use http::header::CONTENT_TYPE;
use http::{HeaderName, Request};
use resilience_core::Deadline;
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
/// and `grpc-timeout` for gRPC calls), and any forwarded headers.
///
/// The context comes from the outgoing request's extensions if it has one,
/// else from the task-local scope set by the server layer, so a handler calls
/// downstream services without passing anything by hand. Outside any request
/// (no context) the request is left unchanged.
///
/// Headers the caller already set (id, priority, forwarded headers) are left
/// as they are; `traceparent` and the deadline always come from the context.
/// The deadline is also put in the outgoing request's extensions, so a
/// [`TimeoutLayer`](resilience_core::TimeoutLayer) placed below this layer
/// enforces it, and fails a call whose deadline has already passed without
/// sending it.
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
    if let Some(deadline) = ctx.deadline() {
        let deadline = match Deadline::from_extensions(req.extensions()) {
            Some(own) => own.min(deadline),
            None => deadline,
        };
        let grpc = req
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        deadline.write_headers(req.headers_mut(), Instant::now(), grpc);
        req.extensions_mut().insert(deadline);
    }
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
