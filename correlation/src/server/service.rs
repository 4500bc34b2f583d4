use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;
use tracing::Instrument;

use super::config::CorrelationConfig;
use super::future::ResponseFuture;
use crate::context::RequestContext;

/// Builds the [`RequestContext`](crate::RequestContext) of each inbound
/// request and runs the inner service inside it. See the [crate docs](crate).
#[derive(Debug, Clone)]
pub struct Correlation<S> {
    inner: S,
    config: Arc<CorrelationConfig>,
}

// === impl Correlation ===

impl<S> Correlation<S> {
    pub(super) fn new(inner: S, config: Arc<CorrelationConfig>) -> Self {
        Self { inner, config }
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

impl<S, ReqB, ResB> Service<Request<ReqB>> for Correlation<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let config = &*self.config;
        #[cfg_attr(not(feature = "opentelemetry"), allow(unused_mut))]
        let mut ctx = config.context_for(&req);
        // `level_enabled!` is one relaxed load; without it, a build with
        // tracing's `log` feature (axum's default) formats the fields for
        // the `log` fallback on every request even when nothing listens.
        let span = if config.span && tracing::level_enabled!(tracing::Level::INFO) {
            request_span(&ctx)
        } else {
            tracing::Span::none()
        };
        #[cfg(feature = "opentelemetry")]
        if !span.is_none() {
            // Before the span is entered: then it starts, and its parent is
            // fixed. The context takes the OpenTelemetry span's ids, so the
            // `trace_id` field and the logs name the trace that is exported.
            if let Some(trace) = crate::otel::join(&span, ctx.trace()) {
                ctx.set_trace(trace);
            }
            span.record("trace_id", tracing::field::display(ctx.trace().trace_id()));
        }
        let echo = config.echo.then(|| config.id_header.clone());
        // One extension: the context carries the priority and the deadline
        // for the other layers' readers (`resilience_core::carried`).
        req.extensions_mut().insert(ctx.clone());
        // The inner service's `call` runs in the span and the scope too: a
        // layer below that logs there (tower-http's `TraceLayer` logs the
        // request's start) sees the id.
        let mut slot = Some(ctx);
        let fut = {
            let _entered = span.enter();
            crate::context::enter(&mut slot, || self.inner.call(req))
        };
        let ctx = slot.expect("enter puts the context back");
        ResponseFuture::new(ctx.scope(fut.instrument(span)), echo)
    }
}

/// The span around every request: one callsite, so that a formatter can
/// tell it from any other span named `request` by its metadata's identity
/// (see `request_span_metadata`).
fn request_span(ctx: &RequestContext) -> tracing::Span {
    // With OpenTelemetry, the trace id is only known once the span joined
    // the trace: recorded then, by the caller.
    #[cfg(not(feature = "opentelemetry"))]
    let trace_id = tracing::field::display(ctx.trace().trace_id());
    #[cfg(feature = "opentelemetry")]
    let trace_id = tracing::field::Empty;
    let span = tracing::info_span!(
        "request",
        correlation_id = %ctx.correlation_id(),
        trace_id = trace_id,
    );
    #[cfg(feature = "fmt")]
    if let Some(meta) = span.metadata() {
        // One load once set.
        REQUEST_SPAN.get_or_init(|| meta);
    }
    span
}

/// The metadata of the spans [`request_span`] makes (one `'static` value
/// for all of them), recorded by the first one.
#[cfg(feature = "fmt")]
static REQUEST_SPAN: std::sync::OnceLock<&'static tracing::Metadata<'static>> =
    std::sync::OnceLock::new();

/// The metadata of the request spans, once one was built (before, there is
/// no such span to find).
#[cfg(feature = "fmt")]
pub(crate) fn request_span_metadata() -> Option<&'static tracing::Metadata<'static>> {
    REQUEST_SPAN.get().copied()
}
