//! The client layer: stamps outgoing calls with the current context.

use std::task::{Context, Poll};
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use resilience_core::deadline::{
    DEADLINE_HEADER, GRPC_TIMEOUT_HEADER, parse_grpc_timeout, parse_millis,
};
use resilience_core::priority::PRIORITY_HEADER;
use resilience_core::{Attempt, Deadline};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;
use tracing::instrument::Instrumented;

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
    insert: bool,
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
/// Headers the caller already set (id, priority, forwarded headers,
/// `tracestate`) are left as they are; `traceparent` always comes from the
/// context.
///
/// # OpenTelemetry
///
/// With the `opentelemetry` feature and a `tracing-opentelemetry` layer in
/// the subscriber, the `traceparent` (and `tracestate`) come from the
/// OpenTelemetry context of the span the call is made from: the `attempt`
/// span below (see [Attempts](#attempts)), else the current span (the
/// context `tracing-opentelemetry` makes current while it is entered; for
/// a layer without context activation, see the crate docs). The next
/// hop's span is then a child of that span. Outside any request context, a
/// call made inside such a span carries its `traceparent` and `tracestate`
/// (nothing else). Without an OpenTelemetry context, the context's own
/// trace is sent, as without the feature. See the
/// [crate docs](crate#opentelemetry).
///
/// # Extensions
///
/// The layers below read the call's priority and deadline where the family
/// reads them ([`Priority::from_extensions`](resilience_core::Priority::from_extensions),
/// [`Deadline::from_extensions`]): from the outgoing request's extensions,
/// else from the context in scope, which is the caller's while the layers
/// below run their `call` and poll their futures (as long as no layer in
/// between moves the call to another task, as tower's `Buffer` does). So
/// by default nothing is put into the outgoing request's extensions (a
/// request without extensions pays three allocations for the first one),
/// except a [`Deadline`] when a header the caller set made the call's
/// deadline tighter than the context's. For layers below that run outside
/// the caller's scope, [`PropagateContextLayer::insert_context`] also puts
/// the context (with the call's deadline) into the request's extensions.
///
/// # Attempts
///
/// Placed below a retry layer (`resilience-retry`'s `RetryLayer`, which
/// puts the [`Attempt`] into each retry's extensions; its first try
/// carries none), this layer runs once per attempt: each leaves with the
/// time left when it starts, and the inner service's call runs inside an
/// `attempt` span whose `attempt` field is the attempt number (`1` for a
/// first try that carries an [`Attempt`]), which
/// `fmt::CorrelationFormat` (feature `fmt`) shows on every log
/// line after the id (`[123-gda attempt=2]`). The span is only built while
/// a subscriber enables `INFO`, and only for a request carrying an
/// [`Attempt`].
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
    insert: bool,
}

// === impl PropagateContextLayer ===

impl PropagateContextLayer {
    /// Sends the id in `x-correlation-id`.
    pub fn new() -> Self {
        crate::context::register_reader();
        Self {
            id_header: HeaderName::from_static(CorrelationConfig::DEFAULT_ID_HEADER),
            insert: false,
        }
    }

    /// Also puts the context (with the call's deadline) into each outgoing
    /// request that has none in its extensions (default `false`), for
    /// layers below that do not run inside the caller's scope (behind a
    /// `Buffer`, in a spawned task); see [Extensions](PropagateContext#extensions).
    /// It costs an extension insert per call.
    #[must_use]
    pub fn insert_context(mut self, yes: bool) -> Self {
        self.insert = yes;
        self
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
            insert: self.insert,
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
    type Future = Instrumented<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let span = match Attempt::from_extensions(req.extensions()) {
            Some(attempt) if tracing::level_enabled!(tracing::Level::INFO) => {
                attempt_span(attempt.number())
            }
            _ => tracing::Span::none(),
        };
        // With OpenTelemetry, the call leaves as a child of the attempt
        // span, or else of the current span.
        let otel = current_otel(&span);
        if let Some(ctx) = req.extensions().get::<RequestContext>().cloned() {
            // Already where the readers find it.
            stamp(&ctx, &self.id_header, &mut req, false, otel);
        } else {
            RequestContext::with_current(|ctx| match ctx {
                Some(ctx) => stamp(ctx, &self.id_header, &mut req, self.insert, otel),
                None => stamp_otel_only(req.headers_mut(), otel),
            });
        }
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        fut.instrument(span)
    }
}

/// The OpenTelemetry context of the span an outgoing call leaves from, if
/// it has one (feature `opentelemetry`).
#[cfg(feature = "opentelemetry")]
type Otel = Option<crate::otel::Outgoing>;

/// Without the `opentelemetry` feature: nothing.
#[cfg(not(feature = "opentelemetry"))]
#[derive(Clone, Copy)]
struct Otel;

#[cfg(feature = "opentelemetry")]
fn current_otel(span: &tracing::Span) -> Otel {
    crate::otel::outgoing(span)
}

#[cfg(not(feature = "opentelemetry"))]
#[inline(always)]
fn current_otel(_: &tracing::Span) -> Otel {
    Otel
}

/// The span around one attempt of an outgoing call: one callsite, so that
/// the formatter finds it by its metadata (see `attempt_span_metadata`).
fn attempt_span(number: u32) -> tracing::Span {
    let span = tracing::info_span!("attempt", attempt = number);
    #[cfg(feature = "fmt")]
    if let Some(meta) = span.metadata() {
        ATTEMPT_SPAN.get_or_init(|| meta);
    }
    span
}

#[cfg(feature = "fmt")]
static ATTEMPT_SPAN: std::sync::OnceLock<&'static tracing::Metadata<'static>> =
    std::sync::OnceLock::new();

/// The metadata of the attempt spans, once one was built.
#[cfg(feature = "fmt")]
pub(crate) fn attempt_span_metadata() -> Option<&'static tracing::Metadata<'static>> {
    ATTEMPT_SPAN.get().copied()
}

fn stamp<B>(
    ctx: &RequestContext,
    id_header: &HeaderName,
    req: &mut Request<B>,
    insert: bool,
    otel: Otel,
) {
    let headers = req.headers_mut();
    headers
        .entry(id_header)
        .or_insert_with(|| ctx.correlation_id().to_header_value());
    stamp_trace(ctx, headers, otel);
    headers
        .entry(PRIORITY_HEADER)
        .or_insert_with(|| ctx.priority().to_header_value());
    for (name, value) in ctx.forwarded_headers() {
        headers.entry(name).or_insert_with(|| value.clone());
    }
    let deadline = stamp_deadline(ctx.deadline(), req);
    if insert && req.extensions().get::<RequestContext>().is_none() {
        let ctx = ctx.clone().with_deadline(deadline.or(ctx.deadline()));
        req.extensions_mut().insert(ctx);
    }
}

/// `traceparent` (this hop's span as the parent) and the `tracestate`
/// passed through, unless the caller set one.
#[cfg(not(feature = "opentelemetry"))]
#[inline(always)]
fn stamp_trace(ctx: &RequestContext, headers: &mut HeaderMap, _: Otel) {
    headers.insert(TRACEPARENT, ctx.outgoing_traceparent());
    if let Some(state) = ctx.trace().tracestate() {
        headers.entry(TRACESTATE).or_insert_with(|| state.clone());
    }
}

/// With an OpenTelemetry context: its `traceparent` (the span the call
/// leaves from as the parent) and its `tracestate`, or else the request
/// context's if it is of the same trace (unless the caller set one).
/// Without: the request context's, as without the feature.
#[cfg(feature = "opentelemetry")]
#[inline(always)]
fn stamp_trace(ctx: &RequestContext, headers: &mut HeaderMap, otel: Otel) {
    let trace = ctx.trace();
    let (traceparent, state) = match otel {
        Some(otel) => {
            let state = otel.tracestate.or_else(|| {
                (trace.trace_id().to_bytes() == otel.trace_id)
                    .then(|| trace.tracestate().cloned())
                    .flatten()
            });
            (otel.traceparent, state)
        }
        None => (ctx.outgoing_traceparent(), trace.tracestate().cloned()),
    };
    headers.insert(TRACEPARENT, traceparent);
    if let Some(state) = state {
        headers.entry(TRACESTATE).or_insert(state);
    }
}

/// Outside any request context: only the OpenTelemetry context, if the
/// call leaves from a span that has one (a job, a client of its own);
/// otherwise the request is left unchanged.
#[cfg(feature = "opentelemetry")]
fn stamp_otel_only(headers: &mut HeaderMap, otel: Otel) {
    if let Some(otel) = otel.or_else(crate::otel::outgoing_from_current_span) {
        headers.insert(TRACEPARENT, otel.traceparent);
        if let Some(state) = otel.tracestate {
            headers.entry(TRACESTATE).or_insert(state);
        }
    }
}

#[cfg(not(feature = "opentelemetry"))]
#[inline(always)]
fn stamp_otel_only(_: &mut HeaderMap, _: Otel) {}

/// Sends the smallest of the inbound deadline, the request's own
/// [`Deadline`] extension and any `grpc-timeout` / `x-deadline-ms` the
/// caller already set (tonic's `Request::set_timeout` writes
/// `grpc-timeout`); returns it.
///
/// A malformed header the caller set is ignored (logged at debug) and
/// overwritten. Without an inbound deadline or an extension, the caller's
/// own headers are left as they are: they are the smallest already. When a
/// header of the caller's is the smallest, it also goes into the request's
/// extensions, so the layers below enforce it.
fn stamp_deadline<B>(inbound: Option<Deadline>, req: &mut Request<B>) -> Option<Deadline> {
    let own = req.extensions().get::<Deadline>().copied();
    let found = match (inbound, own) {
        (Some(a), Some(b)) => a.min(b),
        (Some(d), None) | (None, Some(d)) => d,
        (None, None) => return None,
    };
    let mut deadline = found;
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
    write_deadline(req.headers_mut(), deadline.remaining_at(now), grpc);
    if deadline < found {
        req.extensions_mut().insert(deadline);
    }
    Some(deadline)
}

/// Writes the time left: `x-deadline-ms` (whole milliseconds, rounded
/// down) always, `grpc-timeout` (the finest unit that fits 8 digits,
/// rounded down) too on a gRPC call; values cut from the per-thread
/// buffer, not allocated per call.
fn write_deadline(headers: &mut HeaderMap, left: Duration, grpc: bool) {
    let millis = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
    headers.insert(DEADLINE_HEADER, number_value(millis, None));
    if grpc {
        const MAX: u128 = 99_999_999;
        let (n, unit) = if left.as_micros() <= MAX {
            (left.as_micros(), b'u')
        } else if left.as_millis() <= MAX {
            (left.as_millis(), b'm')
        } else if u128::from(left.as_secs()) <= MAX {
            (u128::from(left.as_secs()), b'S')
        } else if u128::from(left.as_secs() / 60) <= MAX {
            (u128::from(left.as_secs() / 60), b'M')
        } else {
            (u128::from(left.as_secs() / 3600).min(MAX), b'H')
        };
        let n = u64::try_from(n).unwrap_or(99_999_999);
        headers.insert(GRPC_TIMEOUT_HEADER, number_value(n, Some(unit)));
    }
}

/// `n` in decimal, then `unit` if any, as a header value cut from the
/// per-thread buffer.
fn number_value(mut n: u64, unit: Option<u8>) -> HeaderValue {
    let mut buf = [0u8; 21];
    let mut at = buf.len();
    if let Some(unit) = unit {
        at -= 1;
        buf[at] = unit;
    }
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    crate::value::carve(&buf[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_the_time_left_as_the_core_formatters_do() {
        use resilience_core::deadline::{format_grpc_timeout, format_millis};
        for left in [
            Duration::ZERO,
            Duration::from_nanos(999),
            Duration::from_micros(1),
            Duration::from_millis(250),
            Duration::from_secs(99),
            Duration::from_secs(100),
            Duration::from_secs(86_400 * 365),
            Duration::from_secs(u64::MAX / 4),
        ] {
            let mut h = HeaderMap::new();
            write_deadline(&mut h, left, true);
            assert_eq!(h[DEADLINE_HEADER], format_millis(left), "{left:?}");
            assert_eq!(
                h[GRPC_TIMEOUT_HEADER],
                format_grpc_timeout(left),
                "{left:?}"
            );
        }
        assert_eq!(number_value(u64::MAX, None), u64::MAX.to_string().as_str());
    }
}
