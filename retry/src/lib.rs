//! When and how a failed call is tried again: retries that can never turn
//! a blip into an outage, and hedged requests that cut the tail latency
//! of a slow instance.
//!
//! # Example
//!
//! A client of a dependency that answers `503` now and then: the failed
//! `GET` is tried again after a short jittered backoff, while the budget
//! allows it; the `POST` is not, since sending it twice might do its work
//! twice.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use resilience_core::BoxError;
//! use resilience_retry::{RetryBody, RetryConfig, RetryLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! // Every other call fails with 503 Service Unavailable.
//! let dependency = service_fn(move |req: http::Request<RetryBody<String>>| {
//!     let n = seen.fetch_add(1, Ordering::Relaxed);
//!     let attempt = req.headers().get("x-attempt").cloned();
//!     async move {
//!         let status = if n % 2 == 0 { 503 } else { 200 };
//!         Ok::<_, BoxError>(http::Response::builder().status(status).body(attempt).unwrap())
//!     }
//! });
//! let retry = RetryLayer::new(RetryConfig::builder().name("inventory").build().unwrap());
//! let handle = retry.handle();
//! let mut client = ServiceBuilder::new().layer(retry).service(dependency);
//!
//! let get = http::Request::get("/stock/42").body(String::new()).unwrap();
//! let rsp = client.ready().await.unwrap().call(get).await.unwrap();
//! assert_eq!(rsp.status(), 200);
//! assert_eq!(rsp.body().as_ref().unwrap(), "2"); // the second attempt answered
//! assert_eq!(calls.load(Ordering::Relaxed), 2);
//!
//! let post = http::Request::post("/orders").body("{}".to_owned()).unwrap();
//! let rsp = client.ready().await.unwrap().call(post).await.unwrap();
//! assert_eq!(rsp.status(), 503); // not idempotent: returned as it is
//! assert_eq!(calls.load(Ordering::Relaxed), 3);
//! assert_eq!(handle.snapshot().retries_total(), 1);
//! # }
//! ```
//!
//! # The rules
//!
//! A failed attempt is tried again only if every one of these holds, in
//! this order:
//!
//! 1. **The request may be sent twice**
//!    ([`IdempotentRequests`], or your [`ClassifyRequest`]): HTTP `GET`,
//!    `HEAD`, `OPTIONS`, `PUT`, `DELETE`, `TRACE`, or any request carrying
//!    an `Idempotency-Key` header; over gRPC (content type
//!    `application/grpc`) only the methods opted in with
//!    [`RetryConfigBuilder::grpc_method`]. Decided before the first attempt:
//!    a request that may not be retried is passed through untouched.
//! 2. **The outcome says the request was not processed**, as the family
//!    classifies it ([`resilience_core::ClassifyOutcome`],
//!    [`resilience_core::error::find`]):
//!
//!    | outcome | retried? |
//!    |---|---|
//!    | HTTP `502`, `503`, `504` ([`RetryConfigBuilder::retryable_statuses`]) | yes |
//!    | other 5xx (`500`: the request may have been processed) | no (configurable, 5xx only) |
//!    | any 1xx-4xx, `429` included | never |
//!    | gRPC `UNAVAILABLE` in a trailers-only answer ([`RetryConfigBuilder::retryable_grpc_codes`]) | yes |
//!    | other gRPC codes, or a status sent after the response headers (the call was committed) | no |
//!    | a transport error, or any error the family does not own | yes |
//!    | [`Elapsed`](resilience_core::Elapsed): an attempt's timeout | yes |
//!    | [`Elapsed::deadline_exceeded`](resilience_core::Elapsed::deadline_exceeded): the request's own deadline | never |
//!    | any [`Rejected`](resilience_core::Rejected): a breaker open, a throttle, a bounded queue, a balancer without endpoints or a flag *below* this layer refused | never: retrying would amplify the overload it reports |
//! 3. **Attempts are left**: at most [`RetryConfigBuilder::max_attempts`]
//!    (default 3, the first included).
//! 4. **The server did not say no**: `grpc-retry-pushback-ms` (gRPC A6)
//!    negative or malformed means do not retry; a pushback (that header, or
//!    `Retry-After` in seconds or as an HTTP date) longer than
//!    [`RetryConfigBuilder::max_pushback`] means do not retry either. A
//!    valid pushback replaces the backoff; a malformed `Retry-After` is
//!    ignored (the backoff applies).
//! 5. **The body can be replayed** (see below).
//! 6. **The deadline leaves time**: if the request carries a
//!    [`Deadline`](resilience_core::Deadline) and the next attempt could
//!    only start at or after it (backoff or pushback included), the last
//!    outcome is returned at once. The deadline is checked again when the
//!    attempt is about to start.
//! 7. **The budget allows it** ([`RetryBudget`]).
//!
//! Otherwise the last attempt's outcome is returned as it is.
//!
//! # The budget
//!
//! One [`RetryBudget`] per destination, shared by every clone of the
//! layer and its services: over the last 10 s, retries may add at most
//! 20% of the requests; and within any second (the burst window), at most
//! 20% of *that second's* requests ([`RetryBudgetConfig`]). A floor of 10
//! retries per second applies instead when it is more (a client of fewer
//! than 50 requests per second). Under sustained failure the load is at
//! most 1.2 times what it would be without retries (or the floor), so when
//! a dependency slows down, retries cannot keep it down; and a short
//! slowdown after quiet seconds cannot spend at once the allowance those
//! seconds saved: every second of it sees at most 1.2 attempts per
//! request. While the budget is
//! empty nothing is retried; as it runs low, `sheddable` requests stop
//! retrying first (more than half must be left), then `sheddable-plus`
//! (more than a quarter), then `critical` and `critical-plus` (any). The
//! priority is the request's [`Priority`](resilience_core::Priority)
//! extension (default `critical`).
//!
//! # Backoff
//!
//! Exponential with full jitter by default: before the `n`-th retry, a
//! delay uniform in `[0, min(1 s, 50 ms × 2^(n-1)))` ([`Jitter`],
//! [`RetryConfigBuilder::backoff`]). The randomness is injectable:
//! [`RetryLayer::with_seed`] and [`RetryLayer::with_random`].
//!
//! # Per-attempt timeout
//!
//! [`RetryConfigBuilder::attempt_timeout`] fails an attempt that takes
//! too long with [`Elapsed`](resilience_core::Elapsed), which is retried;
//! the attempt's timer never runs past the request's deadline (then it
//! fails with `Elapsed::deadline_exceeded`, which is not). Without it, put
//! resilience-core's [`TimeoutLayer`](resilience_core::TimeoutLayer)
//! below this layer for a timeout per attempt, or above it for one over
//! all attempts.
//!
//! # Request bodies
//!
//! The inner service receives `http::Request<`[`RetryBody<B>`]`>`. A request
//! that may be retried and has a body streams it on the first attempt while
//! a copy of each chunk is kept, up to [`RetryConfigBuilder::max_replay_body`]
//! (default 64 KiB, as linkerd); nothing is collected before the first
//! attempt. A body whose size hint is over the cap, or that grows over it,
//! is sent once and not retried. A retry replays the copy, then reads on
//! from the original body if the first attempt stopped early. Requests
//! without a body copy nothing.
//!
//! # The attempt on the wire and in the logs
//!
//! Every retry carries a [`resilience_core::Attempt`] in its extensions
//! ([`Attempt::next`]: `2`, `3`, ...), all sharing one record of the
//! endpoints the tries went to (see "Another instance") and one counter of
//! attempt numbers (with a [`HedgeLayer`] below, hedges and retries never
//! carry the same number; `max_attempts` counts this layer's own tries).
//! The first try carries none: most requests succeed at once, and the
//! record is only made when a second try is (see "Another instance" for
//! how the second try still learns where the first went). Any `Attempt`
//! the caller put there is removed or replaced. A request passed through
//! untouched (rule 1, a body over the cap, `max_attempts(1)`) gets none.
//!
//! A retry carries its attempt number in
//! [`ATTEMPT_HEADER`](resilience_core::attempt::ATTEMPT_HEADER)
//! (`x-attempt: 2`, `3`, ...; the first attempt carries none), and on
//! gRPC
//! [`GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER`](resilience_core::attempt::GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER)
//! (`grpc-previous-rpc-attempts: 1`, ...), both written by
//! [`Attempt::write_headers`]. A request whose head carries deadline
//! headers (`x-deadline-ms`, `grpc-timeout`) has them set to the time
//! left. Each retry is logged with `debug!` ("retrying request", with
//! `name`, `attempt`, `reason` and `delay_ms`), each retryable failure
//! returned without a retry too ("not retrying request", with `declined`
//! and `priority`). A retry is called and polled inside an `info`-level
//! span named `attempt` (target `resilience_retry`, field `attempt`), so
//! whatever the layers below log about it says which attempt it is
//! (`resilience-correlation`'s log format prints `[id attempt=2]`); the
//! first try opens no span and costs nothing (and, carrying no
//! `Attempt`, shows no number in `resilience-correlation`'s lines either:
//! a line without one is about the first try).
//!
//! # Another instance
//!
//! A retry should go to another instance of the dependency than the
//! tries before it (Envoy's "previous hosts" rule): the one that failed
//! may well fail again. This layer does not pick endpoints; a balancer
//! below it does, and reads the request's [`Attempt`]. With
//! resilience-discovery's round robin, turn it on with
//! `RoundRobinBuilder::avoid_tried(AttemptFromExtensions)`
//! ([`AttemptFromExtensions`](resilience_core::AttemptFromExtensions)):
//! the balancer records the endpoint each try goes to, and sends a retry
//! to an eligible, ready endpoint the request has not tried yet when
//! there is one (else it picks as usual; an attempt never makes a call
//! fail or wait).
//!
//! The first try carries no `Attempt`: the layer calls the service below
//! inside [`observe_first_try`](resilience_core::attempt::observe_first_try),
//! the balancer reports the endpoint it picked for a request without one
//! (a per-thread slot, no allocation), and the second try's record starts
//! with that endpoint. (A [`HedgeLayer`] below makes its record at once
//! and reports it instead, so that both layers share it.) The slot only
//! sees a balancer called during this layer's `call`: behind a layer that
//! calls it later (tower's `Buffer`, a spawned task, a throttle holding a
//! call back), the first try's pick goes unseen and its retry may land on
//! the same endpoint. The layer notices (a retry recorded by a balancer
//! after a first try that reported nothing) and from then on puts an
//! [`Attempt::first`] on its first tries, as every try carried before:
//! the allocations of "Performance" on each first try, every retry on
//! another instance. An `info!` line says so once.
//!
//! The order matters: **retry above the balancer**, so that each retry
//! goes through the balancer again and picks anew. Below it, the retry
//! would resend to the endpoint it was given.
//!
//! ```
//! use resilience_core::{AttemptFromExtensions, BoxError};
//! use resilience_discovery::{Endpoint, RoundRobinBuilder};
//! use resilience_retry::{RetryBody, RetryConfig, RetryLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let endpoints = ["10.0.0.1:80", "10.0.0.2:80"].map(|a| Endpoint::new(a.parse().unwrap()));
//! let balancer = RoundRobinBuilder::new()
//!     .avoid_tried(AttemptFromExtensions)
//!     .build_with_endpoints(endpoints, |ep: &Endpoint| {
//!         let addr = ep.addr();
//!         // 10.0.0.1 is down.
//!         let status = if addr.ip().to_string() == "10.0.0.1" { 503 } else { 200 };
//!         service_fn(move |_: http::Request<RetryBody<String>>| async move {
//!             Ok::<_, BoxError>(http::Response::builder().status(status).body(addr).unwrap())
//!         })
//!     });
//! let client = ServiceBuilder::new()
//!     .layer(RetryLayer::new(RetryConfig::builder().name("inventory").build()?))
//!     .service(balancer); // retry above the balancer: each try picks again
//!
//! let rsp = client.oneshot(http::Request::get("/stock/42").body(String::new())?).await?;
//! assert_eq!(rsp.status(), 200);
//! assert_eq!(*rsp.body(), "10.0.0.2:80".parse()?);
//! # Ok(()) }
//! ```
//!
//! Without `avoid_tried` (the round robin's default), a retry simply
//! takes the balancer's next turn, which may come back to the endpoint
//! that failed.
//!
//! # With hyper, axum and tonic
//!
//! A hyper-util client takes [`RetryBody`] as it is:
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use resilience_retry::{RetryBody, RetryConfig, RetryLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), resilience_core::BoxError> {
//! let http: Client<_, RetryBody<Full<Bytes>>> = Client::builder(TokioExecutor::new()).build_http();
//! let client = ServiceBuilder::new()
//!     .layer(RetryLayer::new(RetryConfig::builder().name("inventory").build()?))
//!     .service(http);
//! let rsp = client
//!     .oneshot(http::Request::get("http://127.0.0.1:3000/stock/42").body(Full::default())?)
//!     .await?;
//! # drop(rsp); Ok(()) }
//! ```
//!
//! A tonic `Channel` takes `tonic::body::Body` only: convert with
//! `map_request`, and opt the idempotent methods in:
//!
//! ```no_run
//! use resilience_retry::{RetryBody, RetryConfig, RetryLayer};
//! use tonic::body::Body;
//! use tower::ServiceBuilder;
//!
//! # async fn run() -> Result<(), resilience_core::BoxError> {
//! let config = RetryConfig::builder()
//!     .name("inventory")
//!     .grpc_method("/grpc.health.v1.Health/Check")
//!     .build()?;
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051").connect_lazy();
//! let channel = ServiceBuilder::new()
//!     .layer(RetryLayer::new(config))
//!     .map_request(|req: http::Request<RetryBody<Body>>| req.map(Body::new))
//!     .service(channel);
//! let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
//! client.check(tonic_health::pb::HealthCheckRequest::default()).await?;
//! # Ok(()) }
//! ```
//!
//! # Where it goes in a client stack
//!
//! Outermost to innermost: context propagation and the request's deadline,
//! then **retry**, then a client-side throttle, the balancer (with
//! `avoid_tried`, see "Another instance"), a breaker per endpoint and the
//! attempt timeout. Below the retry, a refusal of the
//! throttle or a breaker is a [`Rejected`](resilience_core::Rejected): it is
//! returned at once, never retried, and each retry goes through the
//! throttle and the balancer again.
//!
//! # Clone semantics
//!
//! A [`RetryLayer`] owns one [`RetryBudget`] (behind an `Arc`). Cloning
//! the layer, or the services it makes, shares that budget; so do the
//! [`RetryHandle`]s. Each service clone has its own readiness; a request
//! that may be retried takes the ready inner service with it, and a clone
//! of it takes its place.
//!
//! # Cancellation
//!
//! Dropping the response future at any point, mid-attempt, mid-backoff or
//! mid-replay, drops the attempt in flight, the timer, the inner service's
//! clone and the copy of the body. A retry the budget paid for is not
//! refunded.
//!
//! # Errors
//!
//! The layer adds no error of its own to a request: it returns the last
//! attempt's response or error, as `BoxError`, inner errors unchanged. An
//! attempt's timeout fails with [`Elapsed`](resilience_core::Elapsed).
//! [`error::RetryError`] is the error of a stale copy of a request body.
//!
//! # Hedged requests
//!
//! [`HedgeLayer`] sends a request that may be sent twice once more when it
//! has not been answered after a delay (fixed, or a percentile of recent
//! latencies), to another instance with `avoid_tried`, and takes the first
//! good answer, cancelling the others. Hedges draw from a [`RetryBudget`]
//! (the retry layer's, with [`HedgeLayer::with_budget`]) and replay the
//! body as retries do. Put it below the retry layer. See [`hedge`].
//!
//! # Metrics
//!
//! With the `metrics` feature (install the recorder *before* building the
//! layer); the names are in [`resilience_core::names`] (re-exported in
//! [`names`]):
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `resilience_retry_attempts_total` | counter | `name` |
//! | `resilience_retry_retries_total` | counter | `name`, `reason` = `status`\|`grpc_status`\|`error`\|`timeout` |
//! | `resilience_retry_declined_total` | counter | `name`, `reason` = `budget_exhausted`\|`deadline`\|`pushback`\|`body`\|`max_attempts`, `priority` |
//! | `resilience_retry_hedges_total` | counter | `name` (of the [`HedgeLayer`]) |
//! | `resilience_retry_hedges_won_total` | counter | `name` (of the [`HedgeLayer`]) |
//!
//! # Performance
//!
//! A request's first attempt takes no lock and reads no clock: one atomic
//! add to the budget's pending count (every 32nd request also reads the
//! clock and moves the count into the current bucket, without a lock) and
//! the attempts counter (a no-op without a recorder). A request that may
//! be retried copies its head (method, URI, headers and extensions, as
//! tower's `Retry` clones its request: no allocation for a request without
//! headers or extensions, one for each map that has entries), clones the
//! inner service and watches the call for the balancer's pick (a
//! per-thread slot); its first try carries no [`Attempt`]. A request
//! without a body to buffer, headers or extensions therefore passes
//! through with no allocation. The record of the endpoints tried is made
//! when a second try is (one allocation, and `http`'s extension insert:
//! the boxed value, and the map and its table on a request that had no
//! extensions). Once the layer has learned that first tries reach the
//! balancer out of its sight (see "Another instance"), each first try
//! carries an `Attempt` again: four allocations for a request without
//! extensions. One that may not be retried is passed through with no
//! copy, no `Attempt` and no allocation. A body kept for replay adds the shared
//! copy (one allocation, and the original body boxed once), a growing
//! list of its chunks (no copy of their bytes) and an uncontended lock
//! per chunk. Retries read the clock and take the budget's withdrawal
//! lock. `cargo bench -p resilience-benches --bench retry` measures these
//! paths beside tower's `Retry` + `TpsBudget` and tower-resilience's
//! retry, with the allocations per call.
//!
//! # Feature flags
//!
//! - `metrics` (default): emit metrics through the `metrics` facade.
//! - `serde`: deserialize [`RetryConfig`], [`RetryBudgetConfig`] and
//!   [`HedgeConfig`], through the builders' validation.
//! - `snapshot`: `resilience_core::snapshot::LayerSnapshot` for
//!   [`RetryHandle`] (kind `retry`) and [`HedgeHandle`] (kind `hedge`),
//!   and `serde::Serialize` for [`RetryBudgetSnapshot`] and
//!   [`HedgeSnapshot`], so a `SnapshotRegistry` serves them in its
//!   `/resilience` document.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(doc)]
use resilience_core::Attempt;

mod backoff;
mod body;
mod budget;
mod classify;
mod config;
pub mod error;
pub mod future;
mod handle;
pub mod hedge;
mod layer;
mod metrics;
pub mod names;
mod pushback;
mod service;
#[cfg(feature = "snapshot")]
mod snapshot;

pub use crate::body::RetryBody;
pub use crate::budget::BudgetSnapshot as RetryBudgetSnapshot;
pub use crate::budget::RetryBudget;

/// The old name of [`RetryBudgetSnapshot`].
#[deprecated(since = "0.1.0", note = "use `RetryBudgetSnapshot`")]
pub type BudgetSnapshot = RetryBudgetSnapshot;
pub use crate::classify::{ClassifyRequest, IDEMPOTENCY_KEY, IdempotentRequests};
pub use crate::config::{
    Jitter, RetryBudgetConfig, RetryBudgetConfigBuilder, RetryConfig, RetryConfigBuilder,
};
#[allow(deprecated)]
pub use crate::future::{ATTEMPT_HEADER, GRPC_PREVIOUS_ATTEMPTS_HEADER};
pub use crate::handle::RetryHandle;
pub use crate::hedge::{
    Hedge, HedgeConfig, HedgeConfigBuilder, HedgeHandle, HedgeLayer, HedgeSnapshot,
};
pub use crate::layer::RetryLayer;
pub use crate::service::Retry;
