//! Hedged requests: when a request that may be sent twice has not been
//! answered after a delay, send it once more, to another instance, and
//! take the first good answer (Finagle's backup requests, Polly's hedging,
//! gRPC's hedging policy).
//!
//! A slow instance (a GC pause, a cold cache, a noisy neighbour) makes the
//! tail latency of every client that lands on it. A hedge, sent after
//! about the 95th percentile of recent latencies, costs about 5% more
//! requests and cuts that tail: whichever attempt answers first wins, and
//! the others are cancelled (their futures dropped).
//!
//! # Example
//!
//! The first instance stalls; the hedge, sent after 20 ms, answers from the
//! second:
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use resilience_core::{Attempt, BoxError};
//! use resilience_retry::{HedgeConfig, HedgeLayer, RetryBody};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! let dependency = service_fn(move |req: http::Request<RetryBody<String>>| {
//!     seen.fetch_add(1, Ordering::Relaxed);
//!     // The first try carries no attempt; a hedge carries its number.
//!     let attempt = Attempt::from_extensions(req.extensions()).map_or(1, Attempt::number);
//!     async move {
//!         if attempt == 1 {
//!             tokio::time::sleep(Duration::from_secs(2)).await; // a stalled instance
//!         }
//!         Ok::<_, BoxError>(http::Response::new(attempt))
//!     }
//! });
//! let hedge = HedgeLayer::new(
//!     HedgeConfig::builder().name("inventory").delay(Duration::from_millis(20)).build()?,
//! );
//! let handle = hedge.handle();
//! let client = ServiceBuilder::new().layer(hedge).service(dependency);
//!
//! let started = tokio::time::Instant::now();
//! let rsp = client.oneshot(http::Request::get("/stock/42").body(String::new())?).await?;
//! assert_eq!(*rsp.body(), 2); // the hedge answered
//! assert_eq!(started.elapsed(), Duration::from_millis(20));
//! assert_eq!(calls.load(Ordering::Relaxed), 2);
//! assert_eq!((handle.hedges_total(), handle.hedges_won_total()), (1, 1));
//! # Ok(()) }
//! ```
//!
//! # The rules
//!
//! - **Only requests that may be sent twice**, as the retry layer decides
//!   ([`IdempotentRequests`](crate::IdempotentRequests), or your
//!   [`ClassifyRequest`](crate::ClassifyRequest) with
//!   [`HedgeLayer::with_request_classifier`]); gRPC methods opt in with
//!   [`HedgeConfigBuilder::grpc_method`]. Any other request is passed
//!   through untouched, with no timer.
//! - **The delay**: fixed ([`HedgeConfigBuilder::delay`], default 50 ms),
//!   or with [`HedgeConfigBuilder::percentile`] the percentile of the
//!   latencies of the last [`samples`](HedgeConfigBuilder::samples) good
//!   answers, once [`min_samples`](HedgeConfigBuilder::min_samples) are
//!   known (the fixed delay before). It is counted from the first
//!   attempt's first `Pending`; each further hedge
//!   ([`max_hedges`](HedgeConfigBuilder::max_hedges), default 1) goes one
//!   delay after the one before. At most `1 + max_hedges` attempts of a
//!   request are in flight.
//! - **The budget**: every hedge is paid for by a [`RetryBudget`]
//!   (the request's [`Priority`](resilience_core::Priority) decides, as for
//!   a retry). Share the one of the destination's retry layer with
//!   [`HedgeLayer::with_budget`], so that retries and hedges together stay
//!   within one allowance. An empty budget sends no hedge.
//! - **The deadline**: no hedge starts after the request's
//!   [`Deadline`](resilience_core::Deadline) has passed.
//! - **The body**: kept for replay as by the retry layer, up to
//!   [`max_replay_body`](HedgeConfigBuilder::max_replay_body) (64 KiB). A
//!   request whose body is over the cap is not hedged; nor is one whose
//!   first attempt is still sending its body when the delay ends.
//! - **The answer**: the first response the retry rules would not retry
//!   (a `200`, a `404`, a `500`; not a `503`) wins, and every other attempt
//!   is dropped. An attempt that fails otherwise (a `503`, an error) does
//!   not end the race while another attempt is in flight; if every
//!   attempt fails, the last outcome is returned. A hedge is not a retry:
//!   a first attempt that fails before the delay is returned at once (put
//!   a [`RetryLayer`](crate::RetryLayer) above for that).
//!
//! # Another instance
//!
//! Every hedge carries a [`resilience_core::Attempt`] and the attempt
//! headers, sharing one record of the endpoints tried (and one counter of
//! attempt numbers) with the other tries of its request. The first try
//! carries the one a retry layer above put there (a retry), else none: the
//! layer watches the call
//! ([`observe_first_try`](resilience_core::attempt::observe_first_try))
//! and the balancer below reports the endpoint it picked, and the first
//! hedge starts the record with it. Below a retry layer that watches its
//! own first try, the first try gets an
//! [`Attempt::first`](resilience_core::Attempt::first) at once, reported
//! to the retry layer, so that the hedges and the retries of one request
//! share one record and never carry the same number. With
//! resilience-discovery's round robin built with
//! `avoid_tried(AttemptFromExtensions)` below this layer, a hedge goes to
//! an endpoint the request has not tried yet (see
//! [`resilience_core::attempt`] for a balancer that the first try reaches
//! out of sight).
//!
//! # Where it goes
//!
//! Below the retry layer (a retry is hedged too; the inner service then
//! takes `http::Request<RetryBody<RetryBody<B>>>`: the hedge layer keeps
//! its own copy of the retry layer's replayable body, and a retry replays
//! the whole body whatever an attempt below read of it) and above the
//! balancer:
//! context and deadline, **retry**, **hedge**, throttle, balancer, a
//! breaker per endpoint, the attempt timeout. A hedge's refusal by a
//! throttle or a breaker does not cancel the first attempt.
//!
//! # Cancellation
//!
//! Dropping the response future drops every attempt in flight, the timer,
//! the service clone and the body copy. A hedge the budget paid for is not
//! refunded.
//!
//! # Metrics
//!
//! With the `metrics` feature, in [`resilience_core::names`]:
//! `resilience_retry_hedges_total` (hedges sent) and
//! `resilience_retry_hedges_won_total` (requests a hedge answered), both
//! labelled `name`. [`HedgeHandle`] reads the same counts and the current
//! delay; [`HedgeHandle::snapshot`] takes them with the budget's state.
//! With the `snapshot` feature, a `SnapshotRegistry` serves it in its
//! `/resilience` document (kind `hedge`; see [`HedgeSnapshot`]'s
//! `Serialize`).
//!
//! # Performance
//!
//! A request that may not be hedged is passed through: one atomic add to
//! the budget, no allocation. One that may be hedged also copies its head
//! (no allocation for a request without headers or extensions) and clones
//! the inner service; its first try carries no `Attempt` (none is made
//! until a hedge is sent), except below a retry layer (see "Another
//! instance": the record and `http`'s extension insert, up to four
//! allocations, or the retry's `Attempt` continued on a retry, only the
//! extension's boxed value new); if it is still pending at its first poll, it reads the
//! clock and arms a timer (the hedge delay cannot be waited without one).
//! With a percentile, each good answer is recorded without a lock (two
//! atomic writes; every 8th also selects the percentile over a copy of the
//! ring on the stack). A hedge allocates its boxed future.
//!
//! [`RetryBudget`]: crate::RetryBudget

mod config;
pub mod future;
mod handle;
mod latency;
mod layer;
mod metrics;
mod service;

pub use self::config::{HedgeConfig, HedgeConfigBuilder};
pub use self::handle::{HedgeHandle, HedgeSnapshot};
pub use self::layer::HedgeLayer;
pub use self::service::Hedge;
