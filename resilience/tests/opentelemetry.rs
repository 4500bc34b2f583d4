//! The standard stacks under an OpenTelemetry pipeline (feature
//! `opentelemetry`): a caller's span, then A and B on loopback behind
//! `ServerStackLayer`, A calling B through a `ClientStack`, export one
//! trace, each hop's `request` span a child of its caller's span.
#![cfg(all(feature = "opentelemetry", feature = "axum", feature = "client"))]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use http::{HeaderMap, Request};
use opentelemetry::trace::{SpanId, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use resilience::client::{ClientConfig, ClientPart, ClientStack};
use resilience::discovery::Endpoint;
use resilience::server::ServerStackLayer;
use tower::ServiceExt;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

type Client = ClientStack<resilience::client::HttpService<String>>;

/// A hop's name, the id of its current OpenTelemetry span and the
/// `traceparent` it received.
type Sighting = (&'static str, SpanId, String);

/// What the hops saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Sighting>>>);

#[derive(Clone)]
struct Hop {
    name: &'static str,
    seen: Seen,
    next: Option<Client>,
}

async fn handler(State(hop): State<Hop>, headers: HeaderMap) -> String {
    let span = tracing::Span::current()
        .context()
        .span()
        .span_context()
        .span_id();
    let traceparent = headers["traceparent"].to_str().unwrap().to_owned();
    hop.seen
        .0
        .lock()
        .unwrap()
        .push((hop.name, span, traceparent));
    match hop.next {
        None => hop.name.to_owned(),
        Some(client) => {
            let rsp = client.oneshot(get_req("http://b/")).await.unwrap();
            format!("{} <- {}", hop.name, body_of(rsp).await)
        }
    }
}

async fn serve(hop: Hop) -> SocketAddr {
    let app = Router::new()
        .route("/", get(handler))
        .with_state(hop)
        .layer(ServerStackLayer::http_default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn client(name: &str, to: SocketAddr) -> Client {
    let config = ClientConfig::builder(name)
        .without(ClientPart::HealthCheck)
        .build()
        .unwrap();
    ClientStack::builder(config)
        .endpoints([Endpoint::new(to)])
        .build_http::<String>()
        .unwrap()
}

fn get_req(uri: &str) -> Request<String> {
    Request::get(uri).body(String::new()).unwrap()
}

async fn body_of(rsp: http::Response<hyper::body::Incoming>) -> String {
    use http_body_util::BodyExt;
    String::from_utf8(rsp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

async fn finished(exporter: &InMemorySpanExporter, n: usize) -> Vec<SpanData> {
    for _ in 0..100_000 {
        let spans = exporter.get_finished_spans().unwrap();
        if spans.iter().filter(|s| s.name == "request").count() >= n {
            return spans;
        }
        tokio::task::yield_now().await;
    }
    panic!("{n} request spans expected");
}

#[tokio::test]
async fn the_stacks_export_one_trace_across_two_hops() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("stacks"))),
    );
    let seen = Seen::default();
    let b = serve(Hop {
        name: "b",
        seen: seen.clone(),
        next: None,
    })
    .await;
    let a = serve(Hop {
        name: "a",
        seen: seen.clone(),
        next: Some(client("b", b)),
    })
    .await;

    let caller = tracing::info_span!("caller");
    let rsp = client("a", a)
        .oneshot(get_req("http://a/"))
        .instrument(caller.clone())
        .await
        .unwrap();
    assert_eq!(body_of(rsp).await, "a <- b");
    let caller_sc = caller.context().span().span_context().clone();
    drop(caller);

    let spans = finished(&exporter, 2).await;
    let trace = caller_sc.trace_id();
    assert!(
        spans.iter().all(|s| s.span_context.trace_id() == trace),
        "one trace: {spans:?}"
    );
    let seen = seen.0.lock().unwrap().clone();
    let span = |id: SpanId| {
        spans
            .iter()
            .find(|s| s.span_context.span_id() == id)
            .unwrap()
    };
    let (a_span, b_span) = (span(seen[0].1), span(seen[1].1));
    assert_eq!(
        (a_span.name.as_ref(), b_span.name.as_ref()),
        ("request", "request")
    );
    assert_eq!(a_span.parent_span_id, caller_sc.span_id());
    assert_eq!(b_span.parent_span_id, a_span.span_context.span_id());
    assert!(a_span.parent_span_is_remote && b_span.parent_span_is_remote);
    assert_eq!(
        seen[1].2,
        format!("00-{trace}-{}-01", a_span.span_context.span_id())
    );
}
