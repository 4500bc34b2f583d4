//! Where the instances of a dependency are, and which one to call: endpoint
//! sources, health checks and a round-robin balancer.
//!
//! A [`RoundRobin`] is a `tower::Service` that sends each request to the
//! next healthy, ready endpoint in turn. Endpoint services are built by a
//! maker you supply (a [`MakeEndpoint`]: a closure or a plain function of
//! the endpoint, such as a hyper client per address or a tonic `Channel`
//! per endpoint). The endpoint set comes from a
//! [source](mod@source) (a fixed list, a file, DNS, etcd), and health from
//! passive ejection (real traffic, judged by resilience-core's
//! classifier) and optional active checks ([`health`]).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use resilience_core::{BoxError, HttpOutcome, TimeoutLayer};
//! use resilience_discovery::{Endpoint, RoundRobinBuilder, RoundRobinConfig};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! type Request = http::Request<()>;
//! type Response = http::Response<String>;
//!
//! /// The maker: one service per endpoint; here it answers with its address.
//! fn answer_with_address(
//!     ep: Endpoint,
//! ) -> impl Service<Request, Response = Response, Error = BoxError> + Clone {
//!     let addr = ep.addr();
//!     service_fn(move |_req: Request| async move {
//!         Ok::<_, BoxError>(Response::new(addr.to_string()))
//!     })
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let endpoints = ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]
//!     .map(|a| Endpoint::new(a.parse().unwrap()));
//! let config = RoundRobinConfig::builder()
//!     .name("inventory")
//!     .consecutive_failures(5) // 5 x 5xx in a row: ejected
//!     .build()?;
//! let balancer = RoundRobinBuilder::new()
//!     .config(config)
//!     .with_classifier(HttpOutcome::new()) // 5xx and errors count, 4xx never
//!     .build_with_endpoints(endpoints, answer_with_address);
//! let svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_secs(2)))
//!     .service(balancer);
//!
//! let mut seen = Vec::new();
//! for _ in 0..3 {
//!     let rsp = svc.clone().oneshot(Request::new(())).await?;
//!     seen.push(rsp.into_body());
//! }
//! seen.sort(); // each endpoint once, in turn
//! assert_eq!(seen, ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]);
//! # Ok(())
//! # }
//! ```
//!
//! Following a registry instead of a fixed list, with active checks
//! (requires the `etcd` and `http` features):
//!
//! ```no_run
//! # #[cfg(all(feature = "etcd", feature = "http"))]
//! # async fn run() -> Result<(), resilience_core::BoxError> {
//! use resilience_discovery::RoundRobinBuilder;
//! use resilience_discovery::health::{HealthCheckConfig, HttpHealthCheck};
//! use resilience_discovery::source::{EtcdConfig, EtcdSource};
//! # let maker = |_: &resilience_discovery::Endpoint| tower::service_fn(|()| async { Ok::<_, resilience_core::BoxError>(()) });
//!
//! let etcd = EtcdConfig::builder().endpoint("http://127.0.0.1:2379").build()?;
//! let source = EtcdSource::new(etcd, "/services/inventory/").into_stream();
//! let health = source.health(); // staleness, errors
//! let checks = HealthCheckConfig::default(); // GET /health every 10 s
//! let balancer = RoundRobinBuilder::new()
//!     .health_check(checks.clone(), HttpHealthCheck::from_config(&checks))
//!     .build_with_source(source, maker);
//! # Ok(())
//! # }
//! ```
//!
//! # How an endpoint is picked
//!
//! Picks take no lock: an atomic cursor over an `arc-swap`ped snapshot of
//! the endpoints (weights are honoured by a smooth weighted ring). The pick
//! skips endpoints that are pending their first health check, unhealthy,
//! ejected, or not ready (`poll_ready` pending); when none is left it
//! reports ready and the call fails with the typed no-healthy-endpoint
//! error. When fewer than the panic threshold (default 50%) of the
//! endpoints are healthy, traffic spreads over all of them, unhealthy
//! included, rather than crushing the few (Envoy's panic mode).
//!
//! A pick lasts until the `call` it is for. A balancer that polls ready
//! long before it calls (behind `Buffer`, a tonic client used through
//! `&mut`) has its kept pick checked again at each `poll_ready`, as
//! tower's balancer polls its chosen service again: an endpoint that left,
//! turned unhealthy or was ejected meanwhile, or whose service is no longer
//! ready, is dropped for a new pick; an earlier "no healthy endpoint" is
//! not kept either.
//!
//! A retry goes to another instance (Envoy's "previous hosts" rule) when
//! the balancer reads attempts
//! ([`RoundRobinBuilder::avoid_tried`] with
//! [`AttemptFromExtensions`](resilience_core::AttemptFromExtensions) for
//! `http::Request`s) and the request carries a
//! [`resilience_core::Attempt`] (a retry layer puts one on every retry; the
//! tries of one request share its record of the endpoints they went to;
//! the first try carries none, and the balancer reports its pick to the
//! retry layer watching the call instead, see
//! [`resilience_core::attempt::observe_first_try`]).
//! The pick is made in `poll_ready`, before the request is seen, so `call`
//! checks it: if the request already tried the picked endpoint, `call`
//! takes the next endpoint in the ring that it has not tried, is eligible
//! (as above) and whose service is ready at once (polled once, without
//! waiting); the turn then goes on after it. If every eligible endpoint
//! was tried, or the untried ones are busy, the pick stands: an attempt
//! never makes a call fail or wait. Either way the endpoint the request
//! goes to is recorded in its `Attempt`, for the next try (or a concurrent
//! hedge) to avoid. Costs: nothing without `avoid_tried` (the default, for
//! requests of any type); with it, a request without an `Attempt` costs
//! one extension lookup and a per-thread cell access, one with an `Attempt` one short uncontended lock
//! to check and record its endpoint, and only a pick already tried walks
//! the ring again (a second lock to copy the tried set, a `poll_ready` per
//! candidate).
//!
//! A new endpoint gets traffic as soon as it appears (with active checks:
//! after its first passing check). A removed endpoint gets no new requests;
//! its in-flight requests finish, as each response future holds its own
//! endpoint service. Then the balancer lets go of that service, so it is
//! dropped with whatever state it carries (a breaker per endpoint, a
//! connection pool). One exception: a clone of the balancer that has
//! polled before the removal and sits idle since keeps the endpoint set it
//! last saw until its next `poll_ready` (or until it is dropped); a clone
//! that never polled holds no endpoint service at all.
//!
//! Passive ejection: after `consecutive_failures` responses classified
//! [`Outcome::Failure`](resilience_core::Outcome::Failure) in a row, an
//! endpoint is ejected for `base_ejection_time` x the number of times it
//! has been ejected, capped at `max_ejection_time`; at most
//! `max_ejection_percent` of the endpoints (but always one) are ejected at
//! once. So after an instance dies, at most `consecutive_failures` requests
//! fail before it is ejected (with sequential traffic; concurrent requests
//! already in flight to it fail too).
//!
//! A response's outcome is counted when its headers arrive, unless the
//! classifier defers it to the end of the body:
//! [`GrpcOutcome`](resilience_core::GrpcOutcome) does for a gRPC status in
//! trailers (a tonic `Channel`'s responses), so a streamed `UNAVAILABLE`
//! counts when the stream ends, a stream the caller drops early does not
//! count against the endpoint, and one that ends without a status counts as
//! `INTERNAL` (a failure). See [`resilience_core::classify`] for what each
//! layer covers for streaming bodies.
//!
//! # Layers per endpoint
//!
//! Each endpoint service may carry its own layers, put on by the maker: a
//! timeout per attempt, a circuit breaker per endpoint. Mind what a layer's
//! clones share: every clone of one `CircuitBreakerLayer` is the same
//! breaker, so a maker
//! `|ep: &Endpoint| ServiceBuilder::new().layer(breaker.clone()).service(client_for(ep))`
//! puts one breaker in front of all the endpoints (one bad instance opens
//! it for every one), not one per endpoint. For a breaker per endpoint,
//! take each endpoint's layer from `resilience_circuit_breaker`'s
//! `EndpointBreakers`: its own state per endpoint, metrics and snapshot
//! labelled by endpoint, and that state dropped when the endpoint leaves
//! (the balancer lets go of a removed endpoint's service once its
//! in-flight calls end, see above):
//!
//! ```ignore
//! use resilience_circuit_breaker::{CircuitBreakerConfig, EndpointBreakers};
//!
//! let breakers = EndpointBreakers::new(CircuitBreakerConfig::builder().name("inventory").build()?);
//! let balancer = RoundRobinBuilder::new()
//!     .with_classifier(HttpOutcome::new())
//!     .build_with_endpoints(endpoints, move |ep: &Endpoint| {
//!         ServiceBuilder::new()
//!             .layer(breakers.layer_for(ep.to_string())) // this endpoint's own breaker
//!             .layer(TimeoutLayer::new(Duration::from_secs(1)))
//!             .service(client_for(ep))
//!     });
//! ```
//!
//! The balancer itself works as the inner service of a timeout or a
//! breaker for the whole dependency (as in the first example).
//!
//! # Clone semantics
//!
//! Every clone of a `RoundRobin` shares the endpoint set and the health
//! state: clone it freely (per connection, per task, per request). A clone
//! takes the next shared turn at its first pick and then goes round on its
//! own, so a clone per request still rotates, and long-lived clones on
//! different threads do not contend on one counter; over many clones the
//! spread stays even (each clone's share differs by at most one). A clone
//! does not share the endpoint reserved by a `poll_ready` that was not
//! followed by a `call`. [`RoundRobinHandle`]s
//! and [`SourceHealth`](source::SourceHealth)s are clones of shared state
//! too.
//!
//! # Errors
//!
//! The balancer's error type is `BoxError`. Endpoint errors pass through
//! unchanged (`err.is::<hyper_util::client::legacy::Error>()`, ...). When
//! no endpoint is healthy and ready (or there are none), the call fails
//! with [`Rejected`](resilience_core::Rejected) of kind
//! [`NoHealthyEndpoint`](resilience_core::RejectionKind::NoHealthyEndpoint),
//! which `resilience_core::http::error_response` maps to `503` and
//! `resilience_core::grpc::into_status` to `UNAVAILABLE`. A `call` without
//! a `poll_ready` before it (which picks the endpoint) fails the same way,
//! with a warning in the log, rather than panicking.
//!
//! Sources never fail the balancer: a registry that is unreachable, slow
//! or answers garbage leaves the last good set in place (see [`source`]).
//!
//! # Metrics
//!
//! Through the `metrics` facade (install the recorder before building the
//! balancer and the sources):
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `resilience_discovery_endpoints` | gauge | `name`, `state` = healthy\|unhealthy\|ejected\|pending |
//! | `resilience_discovery_updates_total` | counter | `name`, `change` = added\|removed |
//! | `resilience_discovery_ejections_total` | counter | `name` |
//! | `resilience_discovery_source_errors_total` | counter | `name` (of the source) |
//! | `resilience_discovery_staleness_seconds` | gauge | `name` (of the source) |
//!
//! Endpoint additions, removals, ejections and health changes are logged
//! with `tracing` at `info`, source failures at `warn`, per-request
//! decisions at `debug`/`trace`.
//!
//! # Feature flags
//!
//! - `metrics` (default): emit metrics through the `metrics` facade.
//! - `http` (default): [`HttpHealthCheck`](health::HttpHealthCheck),
//!   `GET /health` through a hyper-util client.
//! - `grpc`: [`GrpcHealthCheck`](health::GrpcHealthCheck),
//!   `grpc.health.v1` checks through tonic and tonic-health (0.14, used
//!   inside: no tonic type in this crate's API).
//! - `serde`: deserialize [`RoundRobinConfig`] and
//!   [`HealthCheckConfig`](health::HealthCheckConfig), through the builders'
//!   validation.
//! - `file`: [`FileSource`](source::FileSource), a TOML or JSON file.
//! - `dns`: [`DnsSource`](source::DnsSource), A/AAAA and SRV through
//!   `hickory-resolver` (used inside: no hickory type in the API).
//! - `etcd`: [`EtcdSource`](source::EtcdSource) and
//!   [`Registration`](source::Registration), through etcd's JSON gateway
//!   (why not gRPC: see [`source::etcd`]).
//! - `snapshot`: `resilience_core::snapshot::LayerSnapshot` for
//!   [`RoundRobinHandle`] (kind `round_robin`) and `serde::Serialize` for
//!   [`RoundRobinSnapshot`], so a `SnapshotRegistry` serves the balancer's
//!   endpoints in its `/resilience` document.
//!
//! # Public dependencies
//!
//! Beside the family's `http` 1, `tower-layer` / `tower-service` 0.3 and
//! `tokio` 1: sources are `futures_core::Stream`s (**futures-core 0.3**),
//! and [`Discovered`](source::Discovered) is a `tower::discover::Discover`
//! for tower's own balancers (**tower 0.5**). hyper, tonic and
//! hickory-resolver stay inside. A semver-incompatible upgrade of a crate
//! named here is a breaking release of this one.
//!
//! # A tonic channel balancer
//!
//! One `Channel` per endpoint (connected lazily), round robin over the
//! healthy ones; gRPC failures (`UNAVAILABLE`, ...) eject. Any generated
//! tonic client takes the balancer as its transport (this runs in
//! `tests/balancers.rs`):
//!
//! ```ignore
//! use resilience_core::GrpcOutcome;
//! use resilience_discovery::health::{GrpcHealthCheck, HealthCheckConfig};
//! use resilience_discovery::{Endpoint, RoundRobinBuilder};
//! use resilience_discovery::source::{DnsSource, DnsSourceConfig};
//! use tonic::transport::Channel;
//!
//! let dns = DnsSourceConfig::srv("_grpc._tcp.inventory.svc.cluster.local.").build()?;
//! let balancer = RoundRobinBuilder::new()
//!     .with_classifier(GrpcOutcome::new())
//!     // grpc.health.v1 checks (feature `grpc`): SERVING or out of rotation
//!     .health_check(HealthCheckConfig::default(), GrpcHealthCheck::new("inventory.v1.Inventory"))
//!     .build_with_source(DnsSource::new(dns).into_stream()?, |ep: &Endpoint| {
//!         Channel::from_shared(format!("http://{}", ep.addr()))
//!             .expect("valid uri")
//!             .connect_lazy()
//!     });
//! let mut client = InventoryClient::new(balancer);
//! let reply = client.get_item(request).await?;
//! ```
//!
//! # Under an axum proxy handler
//!
//! (This runs in `tests/balancers.rs`.)
//!
//! ```ignore
//! use axum::{Router, body::Body, extract::{Request, State}, response::Response};
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use resilience_core::HttpOutcome;
//! use resilience_discovery::{Endpoint, RoundRobin, RoundRobinBuilder};
//! use tower::util::BoxCloneSyncService;
//! use tower::{ServiceExt, service_fn};
//!
//! type Upstream = BoxCloneSyncService<Request, hyper::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>;
//!
//! let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
//! let upstreams: RoundRobin<Upstream, HttpOutcome> = RoundRobinBuilder::new()
//!     .with_classifier(HttpOutcome::new())
//!     .build_with_endpoints(endpoints, move |ep: &Endpoint| {
//!         let (client, authority) = (client.clone(), ep.addr().to_string());
//!         BoxCloneSyncService::new(service_fn(move |mut req: Request| {
//!             let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
//!             *req.uri_mut() = format!("http://{authority}{path}").parse().unwrap();
//!             client.request(req)
//!         }))
//!     });
//!
//! async fn forward(State(upstreams): State<RoundRobin<Upstream, HttpOutcome>>, req: Request) -> Response {
//!     match upstreams.oneshot(req).await {
//!         Ok(rsp) => rsp.map(Body::new),
//!         // No healthy upstream: 503.
//!         Err(err) => resilience_core::http::error_response(&*err).map(Body::from),
//!     }
//! }
//! let app = Router::new().fallback(forward).with_state(upstreams);
//! ```
//!
//! If the endpoint service's error type is `BoxError` itself, rustc may
//! fail to prove such a handler's future `Send` ("implementation of `From`
//! is not general enough", a known compiler limitation that tower's own
//! middleware shares); give the endpoint service a concrete error type, as
//! above, or box the call: `Box::pin(upstreams.oneshot(req)).await`.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod endpoint;
pub mod health;
#[cfg(feature = "metrics")]
mod metrics;
pub mod round_robin;
#[cfg(feature = "snapshot")]
mod snapshot;
pub mod source;

pub use crate::endpoint::{Change, Endpoint, MakeEndpoint};
#[allow(deprecated)]
pub use crate::round_robin::ErrorsAreFailures;
pub use crate::round_robin::{
    EndpointState, EndpointStatus, ErrorsAsFailures, RoundRobin, RoundRobinBuilder,
    RoundRobinConfig, RoundRobinConfigBuilder, RoundRobinHandle, RoundRobinSnapshot,
};
