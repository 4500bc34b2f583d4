//! Client-side throttles: refuse a share of calls before they reach a
//! struggling dependency.
//!
//! - **Fixed**: "only allow xx% of calls", changeable at run time through
//!   the [`ThrottleHandle`].
//! - **Adaptive**: client-side throttling from the accept ratio (Google SRE,
//!   "Handling Overload"): over a trailing window, `P(reject) = max(0,
//!   (requests - K * accepts) / (requests + 1))`, capped at a maximum
//!   probability, and `0` while the window holds fewer than
//!   [`minimum_requests`](ThrottleConfigBuilder::minimum_requests) (default
//!   20: a few failures at a client's start refuse nothing). Requests are counted above the throttle (refused ones
//!   included); accepts are calls the backend did not fail, per the
//!   classifier (a 4xx is an accept). A gRPC status in trailers is read at
//!   the end of the response body, as by the breaker (see the
//!   [crate docs](crate#streaming-responses)): the accept is counted then,
//!   and a body the caller drops early is an accept.
//!   Each call decides on the window as it
//!   is then, every request and accept counted before it included, and
//!   [`ThrottleHandle::reject_probability`] reports the probability the
//!   next call gets: a change in the accept ratio acts on the next call.
//!   The decision costs a clock read and a few loads; the buckets are
//!   summed only once per bucket of time.
//! - **Per priority**: each [`Priority`](resilience_core::Priority) has a
//!   weight multiplying the rejection probability; by default the
//!   sheddable levels take the full throttle and critical, critical-plus
//!   none. The priority comes from the request's extensions (where the
//!   correlation layer puts it, [`PriorityFromExtensions`]), from a closure
//!   or [`FixedPriority`] ([`ThrottleLayer::with_priority`]); the readers
//!   are resilience-core's, shared with the bounded queue.
//! - **Wait until everything is ok**: paired with a breaker
//!   ([`ThrottleLayer::wait_for`]) and with a
//!   [`max_wait`](ThrottleConfigBuilder::max_wait), throttled priorities
//!   wait while the breaker is open, half-open or ramping up after a
//!   close, bounded by the wait and their deadline. When it lets every call
//!   through again they go through the normal admission (and are counted
//!   in the adaptive window then), so they are not all released at once.
//!   At most [`max_waiters`](ThrottleConfigBuilder::max_waiters) calls wait;
//!   more are refused at once. A waiting call runs in a boxed future on a
//!   clone of the inner service, so only a layer paired this way
//!   ([`WaitFor`]) needs an inner service that is `Clone + Send + 'static`
//!   (with `Send + 'static` futures, responses and requests); without
//!   `wait_for` ([`NoWait`], the default) the throttle works over any
//!   service.
//!
//! # Requests without a priority are not throttled
//!
//! A request that carries no [`Priority`](resilience_core::Priority) is
//! [`Critical`](resilience_core::Priority::Critical), and with the default
//! weights critical traffic is never throttled. **A throttle in front of
//! requests that carry no priority does nothing.** Do one of:
//!
//! - put a `Priority` in the request's extensions (the correlation layer
//!   does, from the `x-priority` header or the caller's context), as below;
//! - read it another way: `.with_priority(|req: &Req| ...)` or
//!   `.with_priority(FixedPriority(Priority::Sheddable))` for a client whose
//!   calls are all sheddable;
//! - or give critical traffic a weight:
//!   [`priority_weight(Priority::Critical, w)`](ThrottleConfigBuilder::priority_weight).
//!
//! # Example
//!
//! Only 10% of sheddable traffic passes; critical traffic always does.
//!
//! ```
//! use resilience_circuit_breaker::throttle::{ThrottleConfig, ThrottleLayer};
//! use resilience_core::{BoxError, Priority, Rejected, RejectionKind, http::error_response};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let throttle = ThrottleLayer::new(ThrottleConfig::builder().allow_percent(10.0).build().unwrap());
//! let handle = throttle.handle();
//! let mut svc = ServiceBuilder::new().layer(throttle).service(service_fn(|_: http::Request<()>| async {
//!     Ok::<_, BoxError>(http::Response::new(()))
//! }));
//!
//! let mut passed = 0;
//! for _ in 0..1000 {
//!     let mut req = http::Request::new(());
//!     req.extensions_mut().insert(Priority::Sheddable);
//!     match svc.ready().await.unwrap().call(req).await {
//!         Ok(_) => passed += 1,
//!         Err(err) => {
//!             assert_eq!(err.downcast_ref::<Rejected>().unwrap().kind(), RejectionKind::Throttled);
//!             assert_eq!(error_response(&*err).status(), 429);
//!         }
//!     }
//! }
//! assert!((50..150).contains(&passed), "about 10%: {passed}");
//!
//! // critical (the default when the request says nothing) is never throttled
//! svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//!
//! handle.set_allow_percent(100.0);
//! # }
//! ```
//!
//! # With axum and tonic
//!
//! On an axum router (429 + `Retry-After` through the core mapping), paired
//! with a breaker that sheddable calls wait for:
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, error_handling::HandleErrorLayer, routing::get};
//! use resilience_circuit_breaker::throttle::{ThrottleConfig, ThrottleLayer};
//! use resilience_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
//! use tower::ServiceBuilder;
//!
//! let breaker = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
//! let throttle = ThrottleLayer::new(
//!     ThrottleConfig::builder().adaptive().max_wait(Duration::from_secs(2)).build().unwrap(),
//! )
//! .wait_for(breaker.handle());
//! let app: Router = Router::new().route("/", get(|| async { "ok" })).layer(
//!     ServiceBuilder::new()
//!         .layer(HandleErrorLayer::new(resilience_core::http::handle_error))
//!         .layer(throttle)
//!         .layer(breaker),
//! );
//! # drop(app);
//! ```
//!
//! On a tonic client channel. The requests a channel sees carry no
//! priority unless something puts one there, and then they are critical and
//! never throttled: give the channel's requests a level explicitly.
//!
//! ```ignore
//! use resilience_circuit_breaker::throttle::{FixedPriority, ThrottleConfig, ThrottleLayer};
//! use resilience_core::{GrpcOutcome, Priority};
//!
//! let channel = tonic::transport::Endpoint::from_static("http://[::1]:50051").connect_lazy();
//! let channel = tower::ServiceBuilder::new()
//!     .layer(
//!         ThrottleLayer::new(ThrottleConfig::builder().adaptive().build()?)
//!             .with_classifier(GrpcOutcome::new())
//!             // every call of this client is sheddable; or per request:
//!             // .with_priority(|req: &http::Request<tonic::body::Body>| {
//!             //     Priority::from_extensions(req.extensions()).unwrap_or(Priority::Sheddable)
//!             // })
//!             .with_priority(FixedPriority(Priority::Sheddable)),
//!     )
//!     .service(channel);
//! // or per call, in the request's extensions:
//! // let mut request = tonic::Request::new(msg);
//! // request.extensions_mut().insert(Priority::SheddablePlus);
//! // errors: map with resilience_core::grpc::into_status
//! ```
//!
//! # Clone semantics
//!
//! A [`ThrottleLayer`] owns one state (behind an `Arc`), shared by its
//! services, their clones and its handles.
//!
//! # Errors
//!
//! [`Rejected`](resilience_core::Rejected) of kind
//! [`Throttled`](resilience_core::RejectionKind::Throttled) with a
//! `retry_after` (HTTP 429, gRPC `RESOURCE_EXHAUSTED` through the core
//! mapping); inner errors pass through unchanged.
//!
//! # Metrics
//!
//! `resilience_throttle_rejected_total{name, priority}`, a counter.

mod config;
pub mod future;
mod layer;
mod service;
mod state;

pub use self::config::{ThrottleConfig, ThrottleConfigBuilder, ThrottleMode};
pub use self::layer::{NoWait, ThrottleHandle, ThrottleLayer, ThrottleSnapshot, WaitFor};
pub use self::service::Throttle;
pub use resilience_core::priority::{FixedPriority, PriorityFromExtensions, ReadPriority};
