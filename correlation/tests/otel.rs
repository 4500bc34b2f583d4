//! OpenTelemetry (feature `opentelemetry`): two axum servers on loopback,
//! A calling B through `PropagateContextLayer`, each behind
//! `CorrelationLayer`, under a `tracing-opentelemetry` pipeline exporting
//! to memory. One trace: the same trace id everywhere, each `request` span
//! a child of its caller's span.
#![cfg(feature = "opentelemetry")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{SpanId, TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use resilience_core::Attempt;
use resilience_correlation::{CorrelationLayer, PropagateContextLayer, RequestContext};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};
use tracing::Instrument;
use tracing::subscriber::DefaultGuard;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

type HttpClient = BoxCloneSyncService<
    http::Request<Empty<Bytes>>,
    http::Response<hyper::body::Incoming>,
    resilience_core::BoxError,
>;

/// An OpenTelemetry pipeline for this thread: the tests run on a
/// current-thread runtime, so every hop's spans go through it.
struct Pipeline {
    exporter: InMemorySpanExporter,
    _provider: SdkTracerProvider,
    _guard: DefaultGuard,
}

fn pipeline() -> Pipeline {
    pipeline_with(true)
}

/// With or without context activation (the OpenTelemetry context made
/// current while a span is entered; on by default).
fn pipeline_with(context_activation: bool) -> Pipeline {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_context_activation(context_activation)
            .with_tracer(provider.tracer("otel-test")),
    );
    Pipeline {
        exporter,
        _provider: provider,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

impl Pipeline {
    /// The finished spans, once there are `n` of them (a server's span ends
    /// when its response future is dropped, on this thread).
    async fn spans(&self, n: usize) -> Vec<SpanData> {
        for _ in 0..100_000 {
            let spans = self.exporter.get_finished_spans().unwrap();
            if spans.len() >= n {
                return spans;
            }
            tokio::task::yield_now().await;
        }
        panic!(
            "{n} spans expected, got {:?}",
            self.exporter.get_finished_spans().unwrap()
        );
    }
}

/// What one hop saw: its request context and its current OpenTelemetry
/// span, and the trace headers it received.
#[derive(Clone, Debug)]
struct Seen {
    hop: &'static str,
    ctx_trace: String,
    ctx_span: String,
    ctx_parent: Option<String>,
    otel_trace: TraceId,
    otel_span: SpanId,
    traceparent: Option<String>,
    tracestate: Option<String>,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[derive(Clone)]
struct Hop {
    name: &'static str,
    log: Log,
    next: Option<(HttpClient, String)>,
}

fn client() -> HttpClient {
    let hyper: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(PropagateContextLayer::new())
            .service(hyper)
            .map_err(resilience_core::BoxError::from),
    )
}

async fn handler(State(hop): State<Hop>, headers: HeaderMap) -> Result<String, String> {
    let ctx = RequestContext::current().expect("inside a request");
    let cx = tracing::Span::current().context();
    let header = |name| {
        headers
            .get(name)
            .map(|v: &http::HeaderValue| v.to_str().unwrap().to_owned())
    };
    hop.log.0.lock().unwrap().push(Seen {
        hop: hop.name,
        ctx_trace: ctx.trace().trace_id().to_string(),
        ctx_span: ctx.trace().span_id().to_string(),
        ctx_parent: ctx.trace().parent_id().map(|p| p.to_string()),
        otel_trace: cx.span().span_context().trace_id(),
        otel_span: cx.span().span_context().span_id(),
        traceparent: header("traceparent"),
        tracestate: header("tracestate"),
    });
    let Some((client, url)) = hop.next else {
        return Ok(hop.name.to_owned());
    };
    let req = http::Request::get(url).body(Empty::new()).unwrap();
    let rsp = client.oneshot(req).await.map_err(|e| e.to_string())?;
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    Ok(format!(
        "{} <- {}",
        hop.name,
        String::from_utf8_lossy(&body)
    ))
}

async fn serve(hop: Hop) -> SocketAddr {
    let app = Router::new()
        .route("/", get(handler))
        .with_state(hop)
        .layer(CorrelationLayer::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// B, then A calling B; returns A.
async fn two_hops(log: &Log) -> SocketAddr {
    let b = serve(Hop {
        name: "b",
        log: log.clone(),
        next: None,
    })
    .await;
    serve(Hop {
        name: "a",
        log: log.clone(),
        next: Some((client(), format!("http://{b}/"))),
    })
    .await
}

/// Calls A through `client`, with `headers`; returns the body.
async fn call_a(client: HttpClient, a: SocketAddr, headers: &[(&str, &str)]) -> String {
    let mut req = http::Request::get(format!("http://{a}/"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = client
        .oneshot(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

fn plain_client() -> HttpClient {
    let hyper: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    BoxCloneSyncService::new(hyper.map_err(resilience_core::BoxError::from))
}

fn request_spans(spans: &[SpanData]) -> Vec<&SpanData> {
    spans.iter().filter(|s| s.name == "request").collect()
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// The request span whose span id a hop saw as current in its handler.
fn span_of<'a>(spans: &[&'a SpanData], seen: &Seen) -> &'a SpanData {
    spans
        .iter()
        .find(|s| s.span_context.span_id() == seen.otel_span)
        .unwrap_or_else(|| panic!("no exported span for {seen:?} in {spans:?}"))
}

#[tokio::test]
async fn a_caller_span_and_two_hops_make_one_trace() {
    caller_span_and_two_hops(pipeline()).await;
}

#[tokio::test]
async fn without_context_activation_the_span_s_own_context_is_sent() {
    caller_span_and_two_hops(pipeline_with(false)).await;
}

async fn caller_span_and_two_hops(otel: Pipeline) {
    let log = Log::default();
    let a = two_hops(&log).await;

    // The caller: a span of its own, no request context. The client layer
    // sends the span's context.
    let caller = tracing::info_span!("caller");
    let body = call_a(client(), a, &[]).instrument(caller.clone()).await;
    let caller_cx = caller.context();
    let caller_sc = caller_cx.span().span_context().clone();
    drop(caller);
    assert_eq!(body, "a <- b");

    let spans = otel.spans(3).await;
    let trace = caller_sc.trace_id();
    assert!(caller_sc.is_valid());
    assert!(
        spans.iter().all(|s| s.span_context.trace_id() == trace),
        "one trace: {spans:?}"
    );
    let requests = request_spans(&spans);
    assert_eq!(requests.len(), 2, "{spans:?}");
    let seen = log.take();
    let [seen_a, seen_b] = [&seen[0], &seen[1]];
    assert_eq!((seen_a.hop, seen_b.hop), ("a", "b"));
    let (span_a, span_b) = (span_of(&requests, seen_a), span_of(&requests, seen_b));

    // A is a child of the caller's span, B of A's request span; both
    // parents came over the network.
    assert_eq!(span_a.parent_span_id, caller_sc.span_id());
    assert!(span_a.parent_span_is_remote);
    assert_eq!(span_b.parent_span_id, span_a.span_context.span_id());
    assert!(span_b.parent_span_is_remote);
    assert_eq!(
        seen_a.traceparent.as_deref(),
        Some(format!("00-{trace}-{}-01", caller_sc.span_id()).as_str())
    );
    assert_eq!(
        seen_b.traceparent.as_deref(),
        Some(format!("00-{trace}-{}-01", span_a.span_context.span_id()).as_str())
    );

    // The request context names the same trace and spans as OpenTelemetry,
    // and so does the span's `trace_id` field.
    for (seen, span, parent) in [
        (seen_a, span_a, caller_sc.span_id()),
        (seen_b, span_b, span_a.span_context.span_id()),
    ] {
        assert_eq!(seen.ctx_trace, trace.to_string());
        assert_eq!(seen.otel_trace, trace);
        assert_eq!(seen.ctx_span, span.span_context.span_id().to_string());
        assert_eq!(seen.ctx_parent, Some(parent.to_string()));
        assert_eq!(attribute(span, "trace_id"), Some(trace.to_string()));
        assert!(attribute(span, "correlation_id").is_some());
    }
}

#[tokio::test]
async fn a_request_without_traceparent_starts_the_trace_that_is_exported() {
    let otel = pipeline();
    let log = Log::default();
    let a = two_hops(&log).await;

    assert_eq!(call_a(plain_client(), a, &[]).await, "a <- b");

    let spans = otel.spans(2).await;
    let requests = request_spans(&spans);
    let seen = log.take();
    let (span_a, span_b) = (span_of(&requests, &seen[0]), span_of(&requests, &seen[1]));
    let trace = span_a.span_context.trace_id();
    // A is the root: the trace OpenTelemetry made is the one the request
    // context (and its logs) name, not one of its own.
    assert_eq!(span_a.parent_span_id, SpanId::INVALID);
    assert_eq!(seen[0].ctx_trace, trace.to_string());
    assert_eq!(seen[0].ctx_parent, None);
    assert_eq!(attribute(span_a, "trace_id"), Some(trace.to_string()));
    assert_eq!(span_b.span_context.trace_id(), trace);
    assert_eq!(span_b.parent_span_id, span_a.span_context.span_id());
    assert_eq!(seen[1].ctx_trace, trace.to_string());
}

#[tokio::test]
async fn an_invalid_traceparent_starts_a_new_trace() {
    let otel = pipeline();
    let log = Log::default();
    let a = two_hops(&log).await;

    let zeros = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    call_a(plain_client(), a, &[("traceparent", zeros)]).await;

    let spans = otel.spans(2).await;
    let requests = request_spans(&spans);
    let seen = log.take();
    let span_a = span_of(&requests, &seen[0]);
    assert_eq!(span_a.parent_span_id, SpanId::INVALID, "not a child of it");
    assert_ne!(span_a.span_context.trace_id(), TraceId::INVALID);
    assert_eq!(
        seen[0].ctx_trace,
        span_a.span_context.trace_id().to_string()
    );
}

#[tokio::test]
async fn an_inbound_parent_and_tracestate_go_through_both_hops() {
    let otel = pipeline();
    let log = Log::default();
    let a = two_hops(&log).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";

    call_a(
        plain_client(),
        a,
        &[
            ("traceparent", &format!("00-{trace}-{parent}-01")),
            ("tracestate", "vendor=abc,other=1"),
        ],
    )
    .await;

    let spans = otel.spans(2).await;
    let requests = request_spans(&spans);
    let seen = log.take();
    let (span_a, span_b) = (span_of(&requests, &seen[0]), span_of(&requests, &seen[1]));
    assert_eq!(span_a.span_context.trace_id().to_string(), trace);
    assert_eq!(span_a.parent_span_id.to_string(), parent);
    assert!(span_a.parent_span_is_remote);
    assert_eq!(
        span_a.span_context.trace_state().header(),
        "vendor=abc,other=1"
    );
    assert_eq!(span_b.parent_span_id, span_a.span_context.span_id());
    assert_eq!(seen[1].tracestate.as_deref(), Some("vendor=abc,other=1"));
    assert_eq!(
        span_b.span_context.trace_state().header(),
        "vendor=abc,other=1"
    );
}

#[tokio::test]
async fn an_unsampled_caller_stays_unsampled_and_exports_nothing() {
    let otel = pipeline();
    let log = Log::default();
    let a = two_hops(&log).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";

    call_a(
        plain_client(),
        a,
        &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-00"))],
    )
    .await;

    let seen = log.take();
    // The parent-based sampler follows the caller: A's span is not sampled,
    // and B hears so, as a child of A's span all the same.
    assert_eq!(seen[0].otel_trace.to_string(), trace);
    assert_eq!(
        seen[1].traceparent.as_deref(),
        Some(format!("00-{trace}-{}-00", seen[0].otel_span).as_str())
    );
    assert_eq!(seen[0].ctx_span, seen[0].otel_span.to_string());
    assert_eq!(seen[1].otel_trace.to_string(), trace);
    tokio::task::yield_now().await;
    assert!(otel.exporter.get_finished_spans().unwrap().is_empty());
}

#[tokio::test]
async fn each_attempt_is_a_span_and_the_parent_of_its_call() {
    attempts(pipeline()).await;
}

#[tokio::test]
async fn without_context_activation_each_attempt_is_the_parent_of_its_call() {
    attempts(pipeline_with(false)).await;
}

async fn attempts(otel: Pipeline) {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = sent.clone();
    let client = PropagateContextLayer::new().layer(service_fn(move |req: http::Request<()>| {
        record
            .lock()
            .unwrap()
            .push(req.headers()["traceparent"].to_str().unwrap().to_owned());
        async { Ok::<_, Infallible>(http::Response::new(())) }
    }));
    let handler = tracing::info_span!("handler");
    async {
        for attempt in [Attempt::first(), Attempt::first().next()] {
            let mut req = http::Request::new(());
            req.extensions_mut().insert(attempt);
            client.clone().oneshot(req).await.unwrap();
        }
    }
    .instrument(handler.clone())
    .await;
    drop(handler);

    let spans = otel.spans(3).await;
    let handler = spans.iter().find(|s| s.name == "handler").unwrap();
    let attempts: Vec<_> = spans.iter().filter(|s| s.name == "attempt").collect();
    assert_eq!(attempts.len(), 2);
    let sent = sent.lock().unwrap();
    for (attempt, traceparent) in attempts.iter().zip(sent.iter()) {
        assert_eq!(attempt.parent_span_id, handler.span_context.span_id());
        assert_eq!(
            *traceparent,
            format!(
                "00-{}-{}-01",
                handler.span_context.trace_id(),
                attempt.span_context.span_id()
            )
        );
    }
}

#[tokio::test]
async fn without_an_opentelemetry_layer_the_request_context_is_sent() {
    // A subscriber that builds the spans, without OpenTelemetry.
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry());
    let log = Log::default();
    let a = two_hops(&log).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";

    call_a(
        plain_client(),
        a,
        &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))],
    )
    .await;

    let seen = log.take();
    assert_eq!(seen[0].otel_trace, TraceId::INVALID);
    assert_eq!(seen[0].ctx_trace, trace);
    assert_eq!(seen[0].ctx_parent.as_deref(), Some("00f067aa0ba902b7"));
    assert_eq!(
        seen[1].traceparent.as_deref(),
        Some(format!("00-{trace}-{}-01", seen[0].ctx_span).as_str())
    );
}

#[tokio::test]
async fn outside_a_request_and_a_span_the_call_is_left_unchanged() {
    let _otel = pipeline();
    let client =
        PropagateContextLayer::new().layer(service_fn(|req: http::Request<()>| async move {
            Ok::<_, Infallible>(http::Response::new(req.headers().clone()))
        }));
    let rsp = client.oneshot(http::Request::new(())).await.unwrap();
    assert!(rsp.body().is_empty(), "{:?}", rsp.body());
}

/// A handler that calls downstream from a span of its own (`work`); returns
/// the exported `work` and `request` spans and the `traceparent` sent.
async fn call_from_inner_span(otel: &Pipeline) -> (SpanData, SpanData, String) {
    let sent = Arc::new(Mutex::new(String::new()));
    let record = sent.clone();
    let downstream =
        PropagateContextLayer::new().layer(service_fn(move |req: http::Request<()>| {
            *record.lock().unwrap() = req.headers()["traceparent"].to_str().unwrap().to_owned();
            async { Ok::<_, Infallible>(http::Response::new(())) }
        }));
    let server = CorrelationLayer::new().layer(service_fn(move |_: http::Request<()>| {
        let downstream = downstream.clone();
        async move {
            let work = async { downstream.oneshot(http::Request::new(())).await.unwrap() };
            work.instrument(tracing::info_span!("work")).await;
            Ok::<_, Infallible>(http::Response::new(()))
        }
    }));
    server.oneshot(http::Request::new(())).await.unwrap();
    let spans = otel.spans(2).await;
    let named = |name: &str| spans.iter().find(|s| s.name == name).unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    (named("work"), named("request"), sent)
}

#[tokio::test]
async fn a_call_from_a_span_inside_the_handler_is_its_child() {
    let otel = pipeline();
    let (work, request, sent) = call_from_inner_span(&otel).await;
    assert_eq!(work.parent_span_id, request.span_context.span_id());
    let trace = request.span_context.trace_id();
    assert_eq!(
        sent,
        format!("00-{trace}-{}-01", work.span_context.span_id())
    );
}

#[tokio::test]
async fn without_context_activation_a_call_inside_a_request_is_the_request_span_s_child() {
    // As documented: the request context's trace, which names the
    // `request` span.
    let otel = pipeline_with(false);
    let (_, request, sent) = call_from_inner_span(&otel).await;
    let trace = request.span_context.trace_id();
    assert_eq!(
        sent,
        format!("00-{trace}-{}-01", request.span_context.span_id())
    );
}
