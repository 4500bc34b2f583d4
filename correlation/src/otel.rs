//! OpenTelemetry (feature `opentelemetry`): the `request` span joins the
//! caller's trace, and outgoing calls carry the current span's context.
//!
//! Everything goes through `tracing-opentelemetry`'s
//! [`OpenTelemetrySpanExt`]: without its layer in the subscriber, each
//! function here finds no OpenTelemetry context and the layers behave as
//! without the feature.

use std::str::FromStr;

use http::HeaderValue;
use opentelemetry::Context;
use opentelemetry::trace::{
    SpanContext, SpanId as OtelSpanId, TraceContextExt, TraceFlags, TraceId as OtelTraceId,
    TraceState,
};
use tracing_opentelemetry::{OpenTelemetrySpanExt, SetParentError};

use crate::trace::TraceContext;

/// What an outgoing call sends when the current span has an OpenTelemetry
/// context: its `traceparent`, and its `tracestate` if it has one.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) traceparent: HeaderValue,
    pub(crate) tracestate: Option<HeaderValue>,
    /// The trace the span belongs to (to tell whether the request
    /// context's own `tracestate` belongs to it too).
    pub(crate) trace_id: [u8; 16],
}

/// Makes the server's `request` span a child of the inbound trace context
/// (when the request came with a valid `traceparent`) and returns this
/// hop's trace context as OpenTelemetry sees it: the same trace, the
/// OpenTelemetry span's id as this hop's span id (so a call made outside any
/// span, with the request context alone, is still a child of this span),
/// and the sampler's flags. `None` when the span is disabled or the
/// subscriber has no OpenTelemetry layer: then `trace` stays as it is.
///
/// Call it before the span is entered: once started, an OpenTelemetry span
/// cannot change its parent.
pub(crate) fn join(span: &tracing::Span, trace: &TraceContext) -> Option<TraceContext> {
    if span.is_none() {
        return None;
    }
    if let Some(parent) = trace.parent_id() {
        let remote = SpanContext::new(
            OtelTraceId::from_bytes(trace.trace_id().to_bytes()),
            OtelSpanId::from_bytes(parent.to_bytes()),
            TraceFlags::new(trace.flags()),
            true,
            trace_state(trace.tracestate()),
        );
        match span.set_parent(Context::new().with_remote_span_context(remote)) {
            Ok(()) => {}
            // No OpenTelemetry layer: nothing to join.
            Err(SetParentError::LayerNotFound) => return None,
            Err(error) => tracing::debug!(%error, "cannot set the request span's parent"),
        }
    }
    // Without a parent from the caller, the layer decides (a child of the
    // current span, or a new trace); the context says which.
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    if !sc.is_valid() {
        return None;
    }
    Some(TraceContext::from_parts(
        sc.trace_id().to_bytes(),
        sc.span_id().to_bytes(),
        trace.parent_id(),
        sc.trace_flags().to_u8(),
        trace.tracestate().cloned(),
    ))
}

/// The context of `span` (the current span when `span` is disabled) for an
/// outgoing call, if it has a valid OpenTelemetry one.
///
/// For the current span, the OpenTelemetry context that
/// `tracing-opentelemetry` makes current while a span is entered (its
/// default, "context activation"): one thread-local read, and nothing found
/// without the layer. For a layer built without context activation, see
/// [`outgoing_from_current_span`].
pub(crate) fn outgoing(span: &tracing::Span) -> Option<Outgoing> {
    if span.is_none() {
        Context::map_current(outgoing_of)
    } else {
        outgoing_of(&span.context())
    }
}

/// The current span's own context, found through the subscriber (a few
/// hundred instructions, so only for a call outside any request context,
/// where a layer built without context activation leaves nothing else).
pub(crate) fn outgoing_from_current_span() -> Option<Outgoing> {
    // The current span, without cloning it (no reference count).
    let cx = tracing::dispatcher::get_default(|dispatch| {
        let current = dispatch.current_span();
        tracing_opentelemetry::get_otel_context(current.id()?, dispatch)
    })?;
    outgoing_of(&cx)
}

fn outgoing_of(cx: &Context) -> Option<Outgoing> {
    let otel = cx.span();
    let sc = otel.span_context();
    if !sc.is_valid() {
        return None;
    }
    let trace_id = sc.trace_id().to_bytes();
    let traceparent = crate::value::carve(&crate::trace::traceparent_bytes(
        &trace_id,
        &sc.span_id().to_bytes(),
        sc.trace_flags().to_u8(),
    ));
    let state = sc.trace_state();
    let tracestate = if *state == TraceState::NONE {
        None
    } else {
        HeaderValue::try_from(state.header()).ok()
    };
    Some(Outgoing {
        traceparent,
        tracestate,
        trace_id,
    })
}

/// An inbound `tracestate` (already checked for length and printable ASCII)
/// as OpenTelemetry's; one it does not accept is left out of the span
/// context (the request context still passes it on as it came).
fn trace_state(value: Option<&HeaderValue>) -> TraceState {
    let Some(value) = value else {
        return TraceState::NONE;
    };
    value
        .to_str()
        .ok()
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_else(|| {
            tracing::debug!("tracestate not accepted by OpenTelemetry; passed on as it came");
            TraceState::NONE
        })
}
