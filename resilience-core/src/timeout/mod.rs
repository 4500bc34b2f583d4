//! Fails a request that takes longer than a timeout, or than the time left
//! before the request's own [`Deadline`](crate::Deadline), whichever is
//! smaller.
//!
//! "It is impossible to tell a failure from slowness unless you set a maximum
//! timeout": put a [`TimeoutLayer`] on every outgoing call, and make it the
//! layer closest to the inner service, under the circuit breaker, so that a
//! timeout counts as a failure.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use resilience_core::{BoxError, Deadline, timeout::{Elapsed, TimeoutLayer}};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let slow = service_fn(|_req: http::Request<()>| async {
//!     tokio::time::sleep(Duration::from_secs(10)).await;
//!     Ok::<_, BoxError>("done")
//! });
//! let mut svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(2)))
//!     .service(slow);
//!
//! // The request's deadline (1 s) is tighter than the layer's 2 s.
//! let mut req = http::Request::new(());
//! req.extensions_mut().insert(Deadline::after(Duration::from_secs(1)));
//! let start = tokio::time::Instant::now();
//! let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
//! assert!(err.is::<Elapsed>());
//! assert_eq!(start.elapsed(), Duration::from_secs(1));
//! # }
//! ```
//!
//! # Where the deadline comes from
//!
//! By default, from the request's extensions, for `http::Request<B>`
//! ([`FromExtensions`]). For other request types use [`NoDeadline`] or a
//! closure ([`TimeoutLayer::with_deadline`]).
//!
//! # When the clock starts
//!
//! The timer starts when the response future first returns `Pending`, not in
//! `call`: a call that completes at its first poll never reads the clock or
//! touches the timer wheel, which is what keeps this layer cheaper than
//! `tower::timeout`. A request whose deadline has already passed fails in
//! `call`, without reaching the inner service.
//!
//! # Streaming bodies
//!
//! The timeout covers the call up to its response's headers: once they have
//! arrived the response future is done, and a body that streams (or stalls)
//! after that is not timed out by this layer. Bound a streaming body on its
//! own (a gRPC client's deadline, a body timeout). See
//! [`classify`](crate::classify#streaming-bodies) for what each layer covers.
//!
//! # Clone semantics
//!
//! The layer and the service are plain values: cloning copies the timeout.
//!
//! # Errors
//!
//! [`Elapsed`] (class [`Timeout`](crate::ErrorClass::Timeout)); inner
//! errors pass through unchanged as `BoxError`.
//!
//! # Metrics
//!
//! `resilience_timeout_elapsed_total{name}`, a counter, when a named layer's
//! timeout fires (see [`TimeoutConfig`]).

mod config;
pub mod error;
pub mod future;
mod layer;
mod service;

pub use self::config::{TimeoutConfig, TimeoutConfigBuilder};
pub use self::error::Elapsed;
pub use self::layer::TimeoutLayer;
pub use self::service::{FromExtensions, NoDeadline, ReadDeadline, Timeout};
