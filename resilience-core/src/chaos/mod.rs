//! Injects faults on purpose, switched at run time: the latency monkey and
//! the chaos monkey, as a layer.
//!
//! Put a [`ChaosLayer`] in front of a dependency (or a handler), keep its
//! [`ChaosHandle`], and [`set`](ChaosHandle::set) a [`Fault`] while the
//! service runs: added latency (fixed or uniform in a range), errors
//! ([`ChaosError`], the inner service never called), or no answer at all
//! ([`Fault::abort`]), for all requests, a [`fraction`](Fault::fraction) of
//! them, or [`only`](Fault::only) those of one [`Priority`](crate::Priority).
//! [`clear`](ChaosHandle::clear) turns it off. Then watch the timeouts,
//! breakers and queues above it do their work.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use resilience_core::{BoxError, Priority, TimeoutLayer};
//! use resilience_core::chaos::{ChaosError, ChaosLayer, Fault};
//! use resilience_core::timeout::Elapsed;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let chaos = ChaosLayer::new("publications").with_seed(42);
//! let handle = chaos.handle();
//! let mut svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(1)))
//!     .layer(chaos)
//!     .service(service_fn(|_: http::Request<()>| async { Ok::<_, BoxError>("ok") }));
//!
//! // Off: requests pass through.
//! assert_eq!(svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap(), "ok");
//!
//! // 300 ms more for every request.
//! handle.set(Fault::latency(Duration::from_millis(300)));
//! let start = tokio::time::Instant::now();
//! svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
//! assert_eq!(start.elapsed(), Duration::from_millis(300));
//!
//! // Every sheddable request fails; the others pass.
//! handle.set(Fault::errors(1.0).only(Priority::Sheddable));
//! let mut sheddable = http::Request::new(());
//! sheddable.extensions_mut().insert(Priority::Sheddable);
//! let err = svc.ready().await.unwrap().call(sheddable).await.unwrap_err();
//! assert!(err.is::<ChaosError>());
//! assert!(svc.ready().await.unwrap().call(http::Request::new(())).await.is_ok());
//!
//! // No answer at all: the timeout above decides.
//! handle.set(Fault::abort());
//! let err = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap_err();
//! assert!(err.is::<Elapsed>());
//!
//! handle.clear();
//! assert!(!handle.is_active());
//! let injected = handle.injected();
//! assert_eq!((injected.delayed, injected.failed, injected.aborted), (1, 1, 1));
//! # }
//! ```
//!
//! # Cost when off
//!
//! With no fault set, a call is one relaxed load of an `AtomicBool` and the
//! inner call: no lock, no allocation, no clock read, no timer. With a
//! fault set, a call also loads the fault (an
//! `ArcSwap`, no lock) and takes one draw (an atomic increment and a hash);
//! a delayed request allocates its timer.
//!
//! # Decisions
//!
//! Every decision is made in `call`, in call order. Draw `i` after a
//! [`set`](ChaosHandle::set) is splitmix64 of the seed and `i`, so with the
//! same seed ([`ChaosLayer::with_seed`]; a fixed
//! [default](ChaosLayer::DEFAULT_SEED) otherwise) the same sequence of
//! requests gets the same delays and errors in every run. Each `set`
//! restarts the sequence. Requests outside [`only`](Fault::only) take no
//! draw. See [`Fault`] for the order in which abort, latency and errors
//! apply.
//!
//! Latency is a `tokio::time` timer, so tests with a paused clock are exact.
//! The delay is counted from `call`; the inner service is called in `call`
//! too (as the `poll_ready` contract asks) and its future is polled only
//! once the delay is over. An injected error or an abort does not call the
//! inner service at all (whatever its `poll_ready` reserved is kept for the
//! next call, as with a load-shedding layer).
//!
//! # Priorities
//!
//! [`Fault::only`] reads the request's priority from `http::Request`
//! extensions ([`PriorityFromExtensions`](crate::PriorityFromExtensions),
//! where the correlation layer puts it; a request without one is
//! `critical`). For other request types, give the layer a reader with
//! [`ChaosLayer::with_priority`]. The priority is read only when the fault
//! set has an `only`.
//!
//! # Clone semantics
//!
//! The layer, its services and their clones, and every [`ChaosHandle`]
//! share one state.
//!
//! # Errors
//!
//! [`ChaosError`], class [`Unavailable`](crate::ErrorClass::Unavailable): it
//! counts against the callee; [`http::error_response`](crate::http::error_response)
//! answers `503` (without `Retry-After`), `grpc::into_status` gives
//! `UNAVAILABLE`. Inner errors pass through unchanged as `BoxError`. An aborted request never
//! completes: put a [`TimeoutLayer`](crate::TimeoutLayer) above.
//!
//! # Metrics
//!
//! `resilience_chaos_injected_total{name, fault}`, a counter, `fault` one of
//! `latency`, `error`, `abort` ([`names::CHAOS_INJECTED_TOTAL`](crate::names::CHAOS_INJECTED_TOTAL)).
//! A request given latency and an error counts in both. The counters are
//! registered in [`ChaosLayer::new`]: install the recorder first.
//! [`ChaosHandle::injected`] gives the same counts without a recorder.
//!
//! Each `set` and `clear` is logged at `info`, each injection at `debug`.
//!
//! # Feature flags
//!
//! This module needs the `chaos` feature. With `snapshot` too,
//! [`ChaosHandle`] implements `snapshot::LayerSnapshot` (kind `chaos`:
//! whether a fault is set, the fault, and the [`Injected`] counts).

pub mod error;
mod fault;
pub mod future;
mod handle;
mod layer;
mod service;

pub use self::error::ChaosError;
pub use self::fault::Fault;
pub use self::handle::{ChaosHandle, Injected};
#[cfg(feature = "snapshot")]
#[cfg_attr(docsrs, doc(cfg(all(feature = "chaos", feature = "snapshot"))))]
pub use self::handle::{ChaosSnapshot, FaultSnapshot};
pub use self::layer::ChaosLayer;
pub use self::service::Chaos;
