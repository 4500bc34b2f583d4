//! The shared vocabulary of the resilience layers.
//!
//! Every crate of the family speaks this language:
//!
//! - [`classify`]: is a response a success, a failure that counts against the
//!   callee, or the caller's fault ([`Outcome`], [`ClassifyOutcome`])?
//! - [`priority`]: four ordered levels of [`Priority`] and the
//!   [`PriorityPolicy`] that decides how far a caller may choose its own.
//! - [`deadline`]: an absolute [`Deadline`] carried in request extensions and
//!   on the wire (`grpc-timeout`, `x-deadline-ms`).
//! - [`timeout`]: the [`TimeoutLayer`], which honours the smaller of its own
//!   timeout and the request's deadline.
//! - [`attempt`]: which try of a request this is and the endpoints earlier
//!   tries went to ([`Attempt`], in request extensions; `x-attempt` and
//!   `grpc-previous-rpc-attempts` on the wire), written by a retry layer and
//!   read by a balancer so that a retry goes to another instance.
//! - [`error`]: the rejection vocabulary ([`Rejected`], [`Elapsed`],
//!   [`ErrorClass`]; your own errors through [`Classify`] and
//!   [`Classified`]) and, in [`http`] and [`grpc`], its mapping to responses.
//! - [`names`]: metric and span names; [`config`]: the configuration pattern.
//!
//! # Example
//!
//! A call with a 2-second timeout whose errors become HTTP responses:
//!
//! ```
//! use std::time::Duration;
//! use resilience_core::{BoxError, TimeoutLayer, http::error_response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let dependency = service_fn(|_: http::Request<()>| async {
//!     tokio::time::sleep(Duration::from_secs(60)).await; // hangs
//!     Ok::<_, BoxError>(http::Response::new(String::from("ok")))
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(2)))
//!     .service(dependency);
//!
//! let rsp = match svc.oneshot(http::Request::new(())).await {
//!     Ok(rsp) => rsp,
//!     Err(err) => error_response(&*err),
//! };
//! assert_eq!(rsp.status(), 504);
//! # }
//! ```
//!
//! On a tonic server (feature `grpc`), the same layer: the deadline comes
//! from `grpc-timeout` once `resilience-correlation`'s `CorrelationLayer`
//! has read it, and errors become statuses (`DEADLINE_EXCEEDED`, ...):
//!
//! ```ignore
//! Server::builder()
//!     .layer(ServiceBuilder::new().map_err(resilience_core::grpc::into_status)
//!         .layer(TimeoutLayer::new(Duration::from_secs(2))))
//!     .add_service(svc)
//! ```
//!
//! # Feature flags
//!
//! - `metrics` (default): emit metrics through the `metrics` facade.
//! - `grpc`: [`grpc`] mapping to `tonic::Status`, and `tonic::Code`
//!   conversions.
//! - `serde`: deserialize configurations, with the builders' validation.
//! - `etcd`: [`etcd`], a client of etcd v3's JSON gateway (range, watch,
//!   leases, put), shared by the discovery and flag sources.
//! - `etcd-server`: `etcd::EtcdServer`, a real etcd on loopback ports for
//!   tests of code that reads or writes etcd.
//! - `snapshot`: [`snapshot`], the trait every layer's handle implements to
//!   report its state, and the registry that renders them as one JSON
//!   document.
//! - `axum`: `SnapshotRegistry::router`, the `/resilience` route.
//! - `chaos`: the chaos layer: latency, errors and abort, switched at run
//!   time.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod attempt;
#[cfg(feature = "chaos")]
#[cfg_attr(docsrs, doc(cfg(feature = "chaos")))]
pub mod chaos;
pub mod classify;
pub mod config;
pub mod deadline;
pub mod error;
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub mod etcd;
#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub mod grpc;
pub mod http;
pub mod names;
pub mod priority;
#[cfg(feature = "redis-server")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-server")))]
pub mod redis;
#[cfg(any(feature = "etcd-server", feature = "redis-server"))]
mod servers;
#[cfg(feature = "snapshot")]
#[cfg_attr(docsrs, doc(cfg(feature = "snapshot")))]
pub mod snapshot;
pub mod timeout;

pub use crate::attempt::{Attempt, AttemptFromExtensions, IgnoreAttempt, ReadAttempt};
pub use crate::classify::{
    ClassifyErrors, ClassifyOutcome, GrpcCode, GrpcOutcome, HttpOutcome, Outcome,
};
pub use crate::config::ConfigError;
pub use crate::deadline::{Deadline, DeadlinePolicy};
pub use crate::error::{BoxError, Classified, Classify, ErrorClass, Rejected, RejectionKind};
pub use crate::priority::{
    FixedPriority, Priority, PriorityFromExtensions, PriorityPolicy, ReadPriority,
};
pub use crate::timeout::{Elapsed, TimeoutLayer};
