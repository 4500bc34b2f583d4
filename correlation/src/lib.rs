//! What travels with a request from hop to hop: correlation id, W3C trace
//! context, priority and deadline, over HTTP and gRPC.
//!
//! - [`CorrelationLayer`] (server side) reads `x-correlation-id` (or
//!   `x-request-id`), `traceparent`, `x-priority` and `grpc-timeout` /
//!   `x-deadline-ms`; validates them, replacing anything invalid (never
//!   echoing it); generates a UUIDv7 id when there is none; and puts one
//!   [`RequestContext`] into the request's extensions, into a task-local
//!   scope around the handler, and onto a `request` tracing span. It returns
//!   the id on the response. The context is the request's only extension
//!   of ours: the [`Priority`] and the [`Deadline`] travel inside it, and
//!   the other layers of the family read them from it
//!   ([`Priority::from_extensions`], [`Deadline::from_extensions`],
//!   [`resilience_core::carried`]).
//! - [`PropagateContextLayer`] (client side) stamps every outgoing call with
//!   the current context: the same id, a `traceparent` with the same trace id
//!   and this hop's span as parent, the priority, and the time left (the
//!   smaller of the request's and any the caller set on the call itself).
//!   The layers below it (retry, throttle, timeout) read the call's
//!   priority and deadline from the context in scope, so by default it puts
//!   nothing into the outgoing request's extensions
//!   ([Extensions](PropagateContext#extensions)).
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use resilience_correlation::{CorrelationLayer, RequestContext};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! async fn handler() -> String {
//!     // No request in sight: the context is in scope.
//!     let ctx = RequestContext::current().expect("inside a request");
//!     tracing::info!("handling"); // carries correlation_id on its span
//!     format!("{} {:?}", ctx.correlation_id(), ctx.priority())
//! }
//!
//! let app = Router::new().route("/", get(handler)).layer(CorrelationLayer::new());
//! let req = http::Request::builder()
//!     .uri("/")
//!     .header("x-correlation-id", "123-gda")
//!     .header("x-priority", "critical-plus") // untrusted: capped at critical
//!     .body(axum::body::Body::empty())
//!     .unwrap();
//! let rsp = app.oneshot(req).await.unwrap();
//! assert_eq!(rsp.headers()["x-correlation-id"], "123-gda");
//! # let body = axum::body::to_bytes(rsp.into_body(), 1024).await.unwrap();
//! # assert_eq!(body, "123-gda Critical");
//! # }
//! ```
//!
//! And the client side of a handler that calls another service:
//!
//! ```ignore
//! let client = ServiceBuilder::new()
//!     .layer(PropagateContextLayer::new())
//!     .layer(TimeoutLayer::new(Duration::from_secs(2))) // enforces the deadline too
//!     .service(hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http());
//! // In any handler behind CorrelationLayer: the call carries the same id.
//! client.clone().oneshot(Request::get(url).body(body)?).await?;
//! ```
//!
//! For gRPC the same layers go on a tonic server and around a client
//! `Channel`; the context is read from and written to metadata, and the
//! deadline travels as `grpc-timeout` (the time left):
//!
//! ```no_run
//! # use resilience_correlation::{CorrelationLayer, PropagateContextLayer};
//! # async fn run(health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>) -> Result<(), Box<dyn std::error::Error>> {
//! let server = tonic::transport::Server::builder().layer(CorrelationLayer::new()).add_service(health);
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051").connect_lazy();
//! let client = tonic_health::pb::health_client::HealthClient::new(
//!     tower::ServiceBuilder::new().layer(PropagateContextLayer::new()).service(channel));
//! server.serve("127.0.0.1:50052".parse()?).await?;
//! # drop(client); Ok(()) }
//! ```
//!
//! # Layer order
//!
//! Put [`CorrelationLayer`] outermost (before axum's or tower-http's
//! `TraceLayer`, rate limits and queues), so that every layer and every log
//! line below it sees the context: the inner service's `call`, its future's
//! polls and its future's drop all run inside the context's scope and the
//! span. The span it opens is named `request` and has the fields
//! `correlation_id` and `trace_id`: to show `[id]` on every log line, format
//! events with [`fmt::CorrelationFormat`] (feature `fmt`), which tells our
//! span from others named `request` (tower-http's `TraceLayer` opens one),
//! or any formatter that prints span fields. The span is only built while a
//! tracing subscriber enables `INFO` (so the `log` fallback of tracing's
//! `log` feature does not see it).
//!
//! # OpenTelemetry
//!
//! With the `opentelemetry` feature, and a `tracing-opentelemetry` layer in
//! the application's subscriber, the two layers join the application's
//! OpenTelemetry traces:
//!
//! - the server's `request` span becomes a child of the caller's span named
//!   by the inbound `traceparent` (and carries its `tracestate`), set with
//!   `OpenTelemetrySpanExt::set_parent` before the span starts. Without a
//!   valid `traceparent`, the layer decides as for any span: a child of the
//!   current span if there is one, else the root of a new trace. Either
//!   way the [`RequestContext`]'s trace context then holds the
//!   OpenTelemetry span's trace id, span id and flags (so whether the
//!   sampler kept the trace), and the span's `trace_id` field (so every log
//!   line) names the trace that is exported;
//! - an outgoing call ([`PropagateContextLayer`]) leaves with the context
//!   of the span it is made from: the `attempt` span under a retry layer,
//!   else the current span (the handler's own span, or the `request`
//!   span), read from the OpenTelemetry context `tracing-opentelemetry`
//!   makes current while a span is entered (its default, context
//!   activation). Its trace id and span id are the `traceparent` sent, so
//!   the next hop's span is a child of that span; its `tracestate` goes
//!   too. A call made outside any request but inside a span (a job, a
//!   client of its own) carries that span's `traceparent` and `tracestate`
//!   and nothing else; with no OpenTelemetry context the call leaves as
//!   without the feature. With context activation turned off
//!   (`with_context_activation(false)`), a call inside a request leaves as
//!   a child of the `request` span (whose ids the request context holds),
//!   not of a span the handler opened below it.
//!
//! Without an OpenTelemetry layer (no subscriber, or one without it) both
//! layers behave as without the feature. Without the feature nothing of
//! this is built. The `request` span's kind is OpenTelemetry's default
//! (internal). Keep [`CorrelationLayer`] outermost, as always: a span opened
//! outside it (tower-http's `TraceLayer` put first) would not be the
//! parent of the `request` span of a request that came with a
//! `traceparent`, since that span's parent is the caller's.
//!
//! The application installs the pipeline; the layers need nothing more.
//! Its `tracing-opentelemetry` must be **0.34** (with `opentelemetry`
//! **0.33**), the version this crate is built with: the span extension
//! finds only its own version's layer, and with another one nothing joins.
//!
//! ```
//! # #[cfg(feature = "opentelemetry")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use opentelemetry::trace::TracerProvider as _;
//! use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
//! use resilience_correlation::CorrelationLayer;
//! use tower::{Layer, ServiceExt, service_fn};
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! // The application's pipeline (an OTLP exporter in production).
//! let exporter = InMemorySpanExporter::default();
//! let provider = SdkTracerProvider::builder()
//!     .with_simple_exporter(exporter.clone())
//!     .build();
//! let subscriber = tracing_subscriber::registry()
//!     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("shop")));
//! let _guard = tracing::subscriber::set_default(subscriber);
//!
//! let svc = CorrelationLayer::new().layer(service_fn(|_: http::Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(()))
//! }));
//! let req = http::Request::builder()
//!     .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
//!     .body(())
//!     .unwrap();
//! svc.oneshot(req).await.unwrap();
//!
//! // The hop's span: in the caller's trace, the caller's span its parent.
//! let spans = exporter.get_finished_spans().unwrap();
//! assert_eq!(spans[0].name, "request");
//! assert_eq!(spans[0].span_context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert_eq!(spans[0].parent_span_id.to_string(), "00f067aa0ba902b7");
//! assert!(spans[0].parent_span_is_remote);
//! # }
//! # #[cfg(not(feature = "opentelemetry"))]
//! # fn main() {}
//! ```
//!
//! What it costs, counted in instructions per call with callgrind through
//! the `correlation` bench's profile mode (steadier than time on a shared
//! machine): without the feature, nothing (the count of the code before
//! it). With the feature and no OpenTelemetry layer: the server layer
//! about 50 more instructions with no subscriber, about 740 more (+7%)
//! under a `fmt` subscriber (the `trace_id` field is recorded once the
//! trace is known), the client layer about 150 more (+3%). Under an
//! OpenTelemetry pipeline, joining the trace adds about 1,900 instructions
//! (+10%) and 2 allocations to a request that came with a `traceparent`,
//! about 1,400 (+8%) and 1 allocation to one that did not, and about 190
//! (+2%) to an outgoing call; for scale, a bare service opening one span
//! per request under the same pipeline costs about 13,200.
//!
//! # Trust
//!
//! Inbound values are input from the network. Ids are at most 128
//! characters of `[A-Za-z0-9._:-]`; `traceparent` follows the W3C rules; a
//! priority above the policy's ceiling (default `critical`) is only honoured
//! for requests the configured trust predicate accepts (default: none); a
//! deadline above the policy's maximum is ignored.
//!
//! # Clone semantics
//!
//! Layers and services share their configuration through an `Arc`.
//!
//! # Errors
//!
//! None of its own: both services pass the inner service's errors through.
//!
//! # Metrics
//!
//! `resilience_correlation_invalid_total{header}` (counter): inbound values
//! that were invalid, so replaced (or, for a deadline, ignored); `header` is
//! `correlation_id` (whichever header carried it), `traceparent`,
//! `x-priority` or `deadline` (`grpc-timeout` or `x-deadline-ms`). There is
//! no per-request counter: count requests in the application's own layer.
//!
//! # Feature flags
//!
//! - `metrics` (default): the counter above.
//! - `fmt`: [`fmt::CorrelationFormat`], a `tracing-subscriber` event format.
//!   Public dependency: **tracing-subscriber 0.3** (its `FormatEvent` trait).
//! - `opentelemetry`: the layers join OpenTelemetry traces
//!   ([OpenTelemetry](#opentelemetry)). Public dependencies:
//!   **tracing-opentelemetry 0.34** and **opentelemetry 0.33** (the
//!   application's OpenTelemetry layer must be of these versions).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod context;
#[cfg(feature = "fmt")]
#[cfg_attr(docsrs, doc(cfg(feature = "fmt")))]
pub mod fmt;
pub mod id;
#[cfg(feature = "opentelemetry")]
mod otel;
mod rng;
pub mod server;
pub mod trace;
mod value;

pub use crate::client::{PropagateContext, PropagateContextLayer};
pub use crate::context::{RequestContext, Scoped};
pub use crate::id::CorrelationId;
pub use crate::server::{Correlation, CorrelationConfig, CorrelationLayer};
pub use crate::trace::TraceContext;

#[doc(no_inline)]
pub use resilience_core::{Deadline, Priority};
