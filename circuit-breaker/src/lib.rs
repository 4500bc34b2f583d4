//! How a client protects itself from a failing dependency: a circuit breaker
//! and the client-side throttles.
//!
//! # Example
//!
//! A breaker in front of an HTTP dependency: after 3 server errors among the
//! last 4 calls, it fails fast without calling the dependency.
//!
//! ```
//! use std::time::Duration;
//! use resilience_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, CircuitState};
//! use resilience_core::{BoxError, Rejected, RejectionKind, http::error_response};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let config = CircuitBreakerConfig::builder()
//!     .name("inventory")
//!     .count_window(4)
//!     .minimum_calls(4)
//!     .open_for(Duration::from_secs(10))
//!     .jitter(0.0) // default: ±10%
//!     .build()
//!     .unwrap();
//! let breaker = CircuitBreakerLayer::new(config);
//! let handle = breaker.handle();
//!
//! let failing = service_fn(|_: http::Request<()>| async {
//!     Ok::<_, BoxError>(http::Response::builder().status(503).body(()).unwrap())
//! });
//! let mut svc = ServiceBuilder::new().layer(breaker).service(failing);
//!
//! for _ in 0..4 {
//!     let rsp = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//!     assert_eq!(rsp.status(), 503);
//! }
//! assert_eq!(handle.state(), CircuitState::Open);
//!
//! // Open: fails fast with a typed rejection carrying retry-after.
//! let err = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap_err();
//! let rejected = err.downcast_ref::<Rejected>().unwrap();
//! assert_eq!(rejected.kind(), RejectionKind::CircuitOpen);
//! let rsp = error_response(&*err);
//! assert_eq!(rsp.status(), 503);
//! assert_eq!(rsp.headers()["retry-after"], "10");
//! # }
//! ```
//!
//! # The breaker
//!
//! - **Closed**: calls pass; their outcomes, as classified by a
//!   [`resilience_core::ClassifyOutcome`] (default
//!   [`HttpOutcome`](resilience_core::HttpOutcome): 5xx, timeouts and
//!   transport errors fail, 4xx do not), go into a window:
//!   the last N calls ([`CircuitBreakerConfigBuilder::count_window`]), the
//!   last T in buckets ([`CircuitBreakerConfigBuilder::time_window`]), or a
//!   run of consecutive failures
//!   ([`CircuitBreakerConfigBuilder::consecutive_failures`]). The
//!   thresholds are evaluated after every recorded call, success or
//!   failure: once the window holds the minimum number of calls, a failure
//!   rate or slow-call rate at or above its threshold opens the circuit (so
//!   with a minimum of 10, nine failures then one success open it).
//!
//!   What counts as a failure is the classifier's call. With the defaults
//!   of resilience-core, a [`Rejected`](resilience_core::Rejected) of kind
//!   `Throttled` or `Overloaded` produced by one of *our own* layers below
//!   the breaker (a throttle, a bounded queue) is
//!   [`Outcome::CallerError`](resilience_core::Outcome::CallerError): the callee never saw the request, so it
//!   does not count against it (nor for it: a caller error is recorded as
//!   a success). To count them, classify with
//!   [`ClassifyErrors::local_rejections_are_failures(true)`](resilience_core::ClassifyErrors::local_rejections_are_failures),
//!   e.g. `HttpOutcome::new().errors(ClassifyErrors::new().local_rejections_are_failures(true))`
//!   (or the same on [`GrpcOutcome`](resilience_core::GrpcOutcome)). A
//!   circuit-open rejection of a breaker further down, a timeout
//!   ([`Elapsed`](resilience_core::Elapsed)) or a transport error is a
//!   failure.
//! - **Open**: calls fail fast with [`Rejected`](resilience_core::Rejected)
//!   of kind [`CircuitOpen`](resilience_core::RejectionKind::CircuitOpen),
//!   carrying the time until half-open as `retry_after`; the inner service
//!   is neither polled nor called. The open period grows with each re-open
//!   without a close in between (exponential, jittered, capped).
//! - **Half-open**: exactly N probe calls are admitted at once; a cancelled
//!   probe gives its slot back. Their outcomes close the circuit or open it
//!   again. Other calls are refused with the time left of the half-open
//!   period as `retry_after`; once that period
//!   ([`CircuitBreakerConfigBuilder::half_open_max_duration`]) is over,
//!   probes still out count as hung: the circuit opens again. A probe
//!   slot is taken in `call`, never reserved by `poll_ready`, so a caller
//!   that gets readiness and does not call holds none.
//! - Optionally, after closing, a **recovery ramp** admits a share of
//!   traffic rising from a start share to 100%.
//! - An operator can **force open** (every call fails fast, with the
//!   first open period,
//!   [`open_for`](CircuitBreakerConfigBuilder::open_for), as `retry_after`),
//!   **disable** (pass everything, record nothing) or switch to
//!   **metrics-only** (record, never open) at run time through a
//!   [`CircuitBreakerHandle`], which also gives a [`CircuitBreakerSnapshot`] and
//!   transition events.
//!
//! # Performance
//!
//! The closed path takes no lock and makes no allocation: one load of the
//! state word, one `fetch_add` for the count window's index (a slot is only
//! written when its outcome changes; a success into a full window of
//! successes, which would change nothing, writes nothing), and the
//! reference count of the response future's handle on the shared state. A
//! count-based window does not read the clock (unless slow calls are
//! detected); a time-based window reads it once per call and costs
//! O(buckets) only when a failure is recorded (or a success is the first
//! of a new bucket, or the window is still below the minimum of calls). Hot
//! atomics sit on their own cache lines. Transitions take a mutex, and
//! report (metrics, tracing, events) after releasing it. What that costs
//! beside other breakers (recloser, failsafe, tower-resilience) is measured
//! in the
//! [benchmark report](https://github.com/resilience-rs/resilience/blob/main/benches/REPORT.md).
//!
//! Use [`ErrorsAsFailures`] for responses that are not `http::Response`s
//! (only errors count as failures), [`GrpcOutcome`](resilience_core::GrpcOutcome)
//! for gRPC, or any closure with
//! [`classify_fn`](resilience_core::classify::classify_fn).
//!
//! # With axum and tonic
//!
//! On an axum router, with the family's error mapping (503 +
//! `Retry-After`):
//!
//! ```
//! use axum::{Router, error_handling::HandleErrorLayer, routing::get};
//! use resilience_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
//! use tower::ServiceBuilder;
//!
//! let breaker = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
//! let app: Router = Router::new().route("/", get(|| async { "ok" })).layer(
//!     ServiceBuilder::new()
//!         .layer(HandleErrorLayer::new(resilience_core::http::handle_error))
//!         .layer(breaker),
//! );
//! # drop(app);
//! ```
//!
//! On a tonic client channel (gRPC status classification):
//!
//! ```ignore
//! use resilience_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
//! use resilience_core::GrpcOutcome;
//!
//! let channel = tonic::transport::Endpoint::from_static("http://[::1]:50051").connect_lazy();
//! let channel = tower::ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(CircuitBreakerConfig::default()).with_classifier(GrpcOutcome::new()))
//!     .service(channel);
//! let client = GreeterClient::new(channel);
//! // errors: map with resilience_core::grpc::into_status
//! ```
//!
//! # Streaming responses
//!
//! A call's outcome is recorded when its response's headers arrive, unless
//! the classifier defers it to the end of the body:
//! [`GrpcOutcome`](resilience_core::GrpcOutcome) does for a gRPC response
//! whose status is not in the headers but in the trailers (a tonic
//! `Channel`'s responses; see its docs for the bodies it can watch). Then:
//!
//! - the outcome is recorded when the body ends, from the status in its
//!   trailers; a body that ends without a status counts as `INTERNAL` (a
//!   failure), one the caller drops before its end as a caller error (not
//!   the callee's failure);
//! - a half-open probe resolves then: its slot stays taken until the body
//!   ends (a body nobody reads holds it until the half-open period is over,
//!   as a hung probe does);
//! - the slow-call duration is still measured to the headers: a long stream
//!   is not a slow call.
//!
//! Deferring costs two allocations per such call (the callback and the
//! wrapping body); calls classified at their headers cost none. See
//! [`resilience_core::classify`] for what each layer of the family covers
//! for streaming bodies.
//!
//! # One breaker per endpoint
//!
//! A [`CircuitBreakerLayer`] is one breaker, however often it is cloned:
//! in front of a balancer, it protects the caller from the dependency as a
//! whole. To protect each instance separately (one bad instance opens only
//! its own circuit), make each endpoint's service with
//! [`EndpointBreakers::layer_for`], which keeps one state per endpoint,
//! drops it when the endpoint's service is gone, and lists them all
//! ([`EndpointBreakersHandle`]).
//!
//! # Throttles
//!
//! [`throttle::ThrottleLayer`] refuses a share of calls on the client side:
//! a fixed "only xx%", or adaptively from the accept ratio, per priority,
//! optionally waiting for a paired breaker to close. See [`throttle`].
//!
//! # Clone semantics
//!
//! A [`CircuitBreakerLayer`] owns one breaker state (behind an `Arc`).
//! Cloning the layer, or the services it makes, shares that state; so do
//! [`CircuitBreakerHandle`]s. A service clone holds no admission of its own.
//! [`EndpointBreakers`] keeps one state per endpoint key; its clones share
//! the registry of those states.
//!
//! # Errors
//!
//! Rejections are [`resilience_core::Rejected`] (kind `CircuitOpen` for the
//! breaker, `Throttled` for the throttle), always with a `retry_after`;
//! services return `BoxError` and pass inner errors through unchanged. Map
//! them with [`resilience_core::http::handle_error`] or
//! `resilience_core::grpc::into_status`. A breaker called without a ready
//! `poll_ready` first (a bug in the caller) fails with
//! [`error::NotPolled`], which it does not count.
//!
//! # Metrics
//!
//! With the `metrics` feature (install the recorder *before* building the
//! layer):
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `resilience_circuit_breaker_state` | gauge, one-hot | `name`, `state` |
//! | `resilience_circuit_breaker_transitions_total` | counter | `name`, `to` |
//! | `resilience_circuit_breaker_calls_total` | counter | `name`, `outcome` = `success`\|`failure`\|`rejected` |
//! | `resilience_throttle_rejected_total` | counter | `name`, `priority` |
//!
//! The breakers of an [`EndpointBreakers`] add an `endpoint` label (the
//! endpoint's key) to the breaker metrics; when an endpoint's state is
//! dropped, its state gauges are set to 0.
//!
//! Every transition is also logged with `tracing::info!`; rejections with
//! `debug!`.
//!
//! # Feature flags
//!
//! - `metrics` (default): emit metrics through the `metrics` facade.
//! - `serde`: deserialize configurations, through the builders' validation.
//! - `snapshot`: `resilience_core::snapshot::LayerSnapshot` for
//!   [`CircuitBreakerHandle`] (kind `circuit_breaker`),
//!   [`EndpointBreakersHandle`] (kind `endpoint_breakers`) and
//!   [`ThrottleHandle`](throttle::ThrottleHandle) (kind `throttle`), and
//!   `serde::Serialize` for their snapshots, so a `SnapshotRegistry` serves
//!   them in its `/resilience` document.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod buckets;
mod config;
mod endpoints;
pub mod error;
pub mod future;
mod handle;
mod layer;
mod metrics;
mod service;
#[cfg(feature = "snapshot")]
mod snapshot;
mod state;
mod sync;
pub mod throttle;

pub use crate::config::{
    CircuitBreakerConfig, CircuitBreakerConfigBuilder, SlidingWindow, WindowType,
};
pub use crate::endpoints::{EndpointBreakers, EndpointBreakersHandle, EndpointBreakersSnapshot};
pub use crate::handle::{CircuitBreakerHandle, CircuitBreakerSnapshot};

/// The old name of [`CircuitBreakerSnapshot`].
#[deprecated(since = "0.1.0", note = "use `CircuitBreakerSnapshot`")]
pub type Snapshot = CircuitBreakerSnapshot;
pub use crate::layer::CircuitBreakerLayer;
pub use crate::service::CircuitBreaker;
pub use crate::state::{CircuitState, Transition};

/// A classifier for any response type: every response is a success, errors
/// are classified by [`classify_error`](resilience_core::classify::classify_error)
/// with resilience-core's defaults (the family's one `ErrorsAsFailures`,
/// re-exported).
pub use resilience_core::classify::ErrorsAsFailures;
