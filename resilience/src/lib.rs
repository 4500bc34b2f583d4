//! One dependency for the resilience layers, and the standard stacks.
//!
//! The member crates (`resilience-circuit-breaker`, `-bounded-queue`,
//! `-retry`, `-discovery`, `-correlation`, `-flags`) stay usable on their
//! own; this crate re-exports them by feature, under short module names,
//! and puts the right composition of them in one layer per side:
//!
//! - [`server::ServerStackLayer`] (feature `server`, on with `axum` or
//!   `tonic`): the request context in, the deadline-aware timeout, the
//!   bounded priority queue, and every refusal mapped to its HTTP response
//!   (`503`/`429` + `Retry-After`, `504`) or gRPC status. Its error is
//!   [`Infallible`](std::convert::Infallible): it goes straight into axum's
//!   `Router::layer` and a tonic `Server::layer`, no `HandleErrorLayer`.
//! - [`client::ClientStack`] (feature `client`): a name, an endpoint source
//!   and a transport give a cloneable `Service` with context propagation,
//!   an overall deadline, retries with a budget, an adaptive throttle, a
//!   health-checked round robin with passive ejection, a breaker per
//!   endpoint and a per-attempt timeout, each request's URI rewritten to the
//!   endpoint it goes to.
//!
//! Each stack takes one configuration ([`server::ServerConfig`],
//! [`client::ClientConfig`]) made of the member crates' own configurations
//! and validated by the same rules; with `serde` it is read from TOML, JSON
//! or YAML.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use axum::{Router, routing::get};
//! use resilience::server::ServerStackLayer;
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(ServerStackLayer::http_default()); // context, timeout, queue, 503/429/504
//! # }
//! ```
//!
//! A client (feature `client`):
//!
//! ```no_run
//! # #[cfg(feature = "client")]
//! # async fn run() -> Result<(), resilience::BoxError> {
//! use resilience::client::{ClientConfig, ClientStack};
//! use resilience::discovery::Endpoint;
//! use tower::ServiceExt;
//!
//! let inventory = ClientStack::builder(ClientConfig::builder("inventory").build()?)
//!     .endpoints(["127.0.0.1:3001".parse()?, "127.0.0.1:3002".parse()?].map(Endpoint::new))
//!     .build_http::<String>()?;
//! let rsp = inventory.oneshot(http::Request::new(String::new())).await?;
//! # Ok(()) }
//! ```
//!
//! # Changing settings at run time
//!
//! A running stack takes a new configuration without losing its state: the
//! settings that can change (timeouts, the deadline, queue limits and
//! waits, breaker thresholds and open durations, the throttle's ratio, retry
//! tries, backoff and budget ratio) apply to the next requests, while
//! breaker windows, retry budgets, queue contents and endpoint health are
//! kept. Each stack has a [`reload::ReloadHandle`]
//! (`ServerStackLayer::reload_handle`, `ClientHandles::reload`): call
//! `apply(config)` with a configuration of your own source, or let it follow
//! a file (`follow_file`, feature `serde`) or an etcd key (`follow_etcd`,
//! features `serde` and `etcd`) through the flags crate's sources. An
//! invalid configuration is refused, logged and counted, and the last good
//! one stays; a restart-only setting (names, window sizes, removing a
//! part, the endpoint source...) keeps its old value, with a warning. The
//! tables of what changes are on `ServerConfig` and `ClientConfig`; see
//! [`reload`].
//!
//! # Feature flags
//!
//! | feature | what it turns on |
//! |---|---|
//! | `metrics` (default) | metrics in every member crate turned on |
//! | `breaker` | [`breaker`]: circuit breakers, client-side throttles |
//! | `queue` | [`queue`]: bounded priority queues, rate limits |
//! | `retry` | [`retry`]: retries with a budget, hedging |
//! | `discovery` | [`discovery`]: endpoint sources, health checks, round robin |
//! | `correlation` | [`correlation`]: correlation id, trace context, request context |
//! | `flags` | [`flags`]: per-request flags |
//! | `opentelemetry` | `correlation`; the `request` span joins the caller's OpenTelemetry trace, outgoing calls carry the current span's context ([OpenTelemetry](#opentelemetry)); tracing-opentelemetry 0.34 |
//! | `server` | [`server`]: the standard server stack (`correlation`, `queue`) |
//! | `client` | [`client`]: the standard client stack over hyper-util (`correlation`, `retry`, `breaker`, `discovery`) |
//! | `axum` | `server`, the `/resilience` snapshot route, the flags extractor; axum 0.8 |
//! | `tonic` | `server` with gRPC statuses, gRPC outcomes and health checks, and with `client` the gRPC client stack over tonic `Channel`s; tonic 0.14 |
//! | `etcd` | etcd discovery and registration, flags from etcd; with `serde`, a stack follows an etcd key |
//! | `dns` | DNS A/AAAA/SRV discovery |
//! | `redis` | the fleet-wide rate limit in Redis |
//! | `serde` | every configuration deserializes, the stacks' included; a stack follows a file at run time |
//!
//! The vocabulary every crate shares ([`BoxError`], [`Priority`],
//! [`Deadline`], [`Rejected`], the [`http`] and [`grpc`](mod@grpc) error
//! mappings, the [`TimeoutLayer`]) is always here, at the root.
//!
//! # OpenTelemetry
//!
//! With the `opentelemetry` feature and a `tracing-opentelemetry` 0.34
//! layer in the application's subscriber, each hop's `request` span (opened
//! by the server stack's correlation layer) is a child of the caller's span
//! named by the inbound `traceparent`, and each call the client stack makes
//! carries the context of the span it is made from (the next hop's
//! `request` span is its child), so a chain of services exports one trace. No code changes: the pipeline is
//! the application's. Details: [`correlation`'s docs](resilience_correlation#opentelemetry).
//!
//! ```
//! # #[cfg(all(feature = "opentelemetry", feature = "axum"))]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use axum::{Router, routing::get};
//! use opentelemetry::trace::TracerProvider as _;
//! use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
//! use resilience::server::ServerStackLayer;
//! use tower::ServiceExt;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! // The application's pipeline (an OTLP exporter in production).
//! let exporter = InMemorySpanExporter::default();
//! let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
//! let _guard = tracing::subscriber::set_default(
//!     tracing_subscriber::registry()
//!         .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("shop"))),
//! );
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(ServerStackLayer::http_default());
//! let req = http::Request::get("/")
//!     .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
//!     .body(axum::body::Body::empty())
//!     .unwrap();
//! app.oneshot(req).await.unwrap();
//!
//! let spans = exporter.get_finished_spans().unwrap();
//! let request = spans.iter().find(|s| s.name == "request").unwrap();
//! assert_eq!(request.span_context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
//! assert_eq!(request.parent_span_id.to_string(), "00f067aa0ba902b7");
//! # }
//! # #[cfg(not(all(feature = "opentelemetry", feature = "axum")))]
//! # fn main() {}
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod prelude;

#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub mod client;
#[cfg(any(feature = "server", feature = "client"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "server", feature = "client"))))]
pub mod reload;
#[cfg(any(feature = "server", feature = "client"))]
#[doc(hidden)]
pub mod retime;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;

pub use resilience_core::{
    Attempt, BoxError, Classified, Classify, ClassifyOutcome, ConfigError, Deadline, Elapsed,
    ErrorClass, GrpcOutcome, HttpOutcome, Outcome, Priority, Rejected, RejectionKind, TimeoutLayer,
};
pub use resilience_core::{
    attempt, classify, config, deadline, error, http, names, priority, timeout,
};

#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub use resilience_core::grpc;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use resilience_core::snapshot;

/// Circuit breakers and client-side throttles: the
/// [`resilience-circuit-breaker`](resilience_circuit_breaker) crate.
#[cfg(feature = "breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
pub mod breaker {
    pub use resilience_circuit_breaker::*;
}

/// Server-side admission: the
/// [`resilience-bounded-queue`](resilience_bounded_queue) crate.
#[cfg(feature = "queue")]
#[cfg_attr(docsrs, doc(cfg(feature = "queue")))]
pub mod queue {
    pub use resilience_bounded_queue::*;
}

/// Retries with a budget and hedging: the
/// [`resilience-retry`](resilience_retry) crate.
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub mod retry {
    pub use resilience_retry::*;
}

/// Endpoint sources, health checks and the round robin: the
/// [`resilience-discovery`](resilience_discovery) crate.
#[cfg(feature = "discovery")]
#[cfg_attr(docsrs, doc(cfg(feature = "discovery")))]
pub mod discovery {
    pub use resilience_discovery::*;
}

/// What travels with a request: the
/// [`resilience-correlation`](resilience_correlation) crate.
#[cfg(feature = "correlation")]
#[cfg_attr(docsrs, doc(cfg(feature = "correlation")))]
pub mod correlation {
    pub use resilience_correlation::*;
}

/// Per-request flags: the [`resilience-flags`](resilience_flags) crate.
#[cfg(feature = "flags")]
#[cfg_attr(docsrs, doc(cfg(feature = "flags")))]
pub mod flags {
    pub use resilience_flags::*;
}
