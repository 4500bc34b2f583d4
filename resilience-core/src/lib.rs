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
//! - [`carried`]: how the readers of priority and deadline also find them
//!   inside a request context (`resilience-correlation`'s), in a request's
//!   extensions or in scope.
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
//! - `grpc`: [`grpc`] mapping to `tonic::Status`, `tonic::Code`
//!   conversions, and [`GrpcOutcome`] reading the status in the trailers of
//!   a `tonic::body::Body`. Puts **tonic 0.14** types in the API (see
//!   below).
//! - `serde`: deserialize configurations (serde 1), with the builders'
//!   validation.
//! - `etcd`: [`etcd`], a client of etcd v3's JSON gateway (range, watch,
//!   leases, put), shared by the discovery and flag sources. Its generic
//!   [`call`](etcd::EtcdClient::call) takes and returns a
//!   `serde_json::Value` (**serde_json 1**).
//! - `snapshot`: [`snapshot`], the trait every layer's handle implements to
//!   report its state (a `serde::Serialize` view, serde 1), and the
//!   registry that renders them as one JSON document (a `serde_json::Value`,
//!   **serde_json 1**).
//! - `axum`: `SnapshotRegistry::router`, the `/resilience` route (an
//!   `axum::Router`), and [`GrpcOutcome`] reading the status in the trailers
//!   of an `axum::body::Body`. Puts **axum 0.8** types in the API.
//! - `chaos`: the chaos layer: latency, errors and abort, switched at run
//!   time.
//!
//! # Public dependencies
//!
//! With no feature on, the API shows types of `http` 1, `http-body` 1,
//! `tower-layer` 0.3, `tower-service` 0.3 and `tokio` 1 (its `Instant`)
//! only. The features above add the crates they name, at the versions they
//! name; moving to a semver-incompatible version of any of them is a
//! breaking release of this crate (the README's version policy).
//!
//! tonic and axum types are recognised by their Rust type, which belongs to
//! one version of the crate: [`GrpcOutcome`] finds a `tonic::Status` (an
//! error, or in the error chain of a failed body) and replaces a
//! `tonic::body::Body` or `axum::body::Body` to watch its trailers only
//! when they come from **tonic 0.14** and **axum 0.8**, the versions this
//! crate is built with (cargo makes every `0.14.x` one crate). An
//! application on another tonic (0.13, 0.15) or axum has different types:
//! its statuses are classified like any other error ([`ClassifyErrors`]: a
//! failure by default), and its bodies at their headers (a `grpc-status`
//! header, as in a trailers-only answer, is read whatever the version).
//! Use the same tonic and axum minor versions as this crate, or box your
//! errors into a [`Classified`] with the class you mean.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod attempt;
pub mod carried;
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
#[cfg(feature = "snapshot")]
#[cfg_attr(docsrs, doc(cfg(feature = "snapshot")))]
pub mod snapshot;
pub mod timeout;

pub use crate::attempt::{
    Attempt, AttemptFromExtensions, FirstTryReport, IgnoreAttempt, ReadAttempt,
};
pub use crate::classify::{
    ClassifyErrors, ClassifyOutcome, ErrorsAsFailures, GrpcCode, GrpcOutcome, HttpOutcome, Outcome,
};
pub use crate::config::ConfigError;
pub use crate::deadline::{Deadline, DeadlinePolicy};
pub use crate::error::{BoxError, Classified, Classify, ErrorClass, Rejected, RejectionKind};
pub use crate::priority::{
    FixedPriority, Priority, PriorityFromExtensions, PriorityPolicy, ReadPriority,
};
pub use crate::timeout::{Elapsed, TimeoutLayer};
