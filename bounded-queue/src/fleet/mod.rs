//! A rate limit shared by every instance of a service, kept in Redis
//! (feature `redis`).
//!
//! [`FleetRateLimitLayer`] admits requests against a limit per key (the
//! route, a tenant header, the priority, or any function of the request:
//! [`KeyBy`], [`KeyFn`], [`MakeKey`]) that holds for the whole fleet: the
//! instances together admit the configured rate, as Envoy's global rate
//! limit service does with Redis.
//!
//! # How it works
//!
//! - **In Redis**, each key is a GCRA (generic cell rate algorithm) kept by
//!   one Lua script, run atomically by Redis on its own clock: the
//!   instances' clocks do not matter. The script grants up to the tokens
//!   asked for, or none and the time until one is free.
//! - **No round trip per request.** Each instance leases `batch` tokens per
//!   key at once and spends them locally (an atomic decrement, no lock, no
//!   clock read). When fewer than `batch / 2` are left, one background task
//!   per key leases more, so a busy key rarely waits. A request that finds
//!   no token waits for the lease in flight, at most `redis_timeout`.
//! - **A saturated limit is shared evenly.** Redis keeps, per key, the
//!   instances that asked for it within the last two periods, and a fair
//!   share for each: `limit / n` of the `n` live instances, holding at most
//!   `(burst - reserve) / n` tokens. A lease takes the instance's share, and
//!   beyond it only what the key holds above what the other shares have
//!   accrued: an instance with less demand leaves its share to the others,
//!   but never loses what it has accrued. Behind a load balancer that
//!   spreads traffic evenly, each instance of a saturated fleet admits
//!   close to `limit / n` (the fleet test checks within 20%).
//! - **Refused requests mostly never reach Redis.** Every answer says when
//!   the instance's next full lease will fit (its share refilled, or spare
//!   tokens left over); until then, a request the held tokens do not cover
//!   is refused at once with that retry-after. A saturated instance sends
//!   about one lease command (one `EVALSHA`) per `batch` requests it admits
//!   (the commands per 1,000 requests of the last full run are in the
//!   [benchmark report](https://github.com/resilience-rs/resilience/blob/main/benches/REPORT.md)).
//! - **A reserve for critical requests.** The last `reserve` tokens of the
//!   burst are leased only to requests of [`Priority::Critical`] and above
//!   (read from `http::Request` extensions like the bounded queue, or with
//!   [`FleetRateLimitLayer::with_priority`]); lower priorities are refused
//!   when only the reserve is left. Critical tokens are not split into
//!   shares.
//!
//! # How much the fleet admits, in every mode
//!
//! Over any stretch of time `T`, the fleet admits at most:
//!
//! - **Every instance on Redis** ([`FleetMode::Shared`]): what Redis grants
//!   in `T`, `limit x T / per + burst`, plus the tokens leased before `T`
//!   and spent in it, at most `batch` per instance (`2 x batch` with a
//!   reserve): [`FleetRateLimitConfig::over_admission_bound`].
//! - **Every instance cut off** ([`FleetMode::Local`]): each admits its
//!   local share, `limit / instances x T / per + burst / instances`, so the
//!   fleet the limit plus its burst (set `instances` to the fleet's size).
//! - **Some instances cut off, the others on Redis** (Redis slow or
//!   unreachable for some only): both, so up to one local share per cut-off
//!   instance beyond the limit while the split lasts. An instance that
//!   reaches Redis again first charges what it admitted on its own in the
//!   last period (as if leased at an even pace then, so nothing when the
//!   key was idle meanwhile; at most the local share's burst plus one
//!   period of its rate), and the fleet admits that much less right after:
//!   over a stretch that takes in the instance's return, its last period's
//!   excess is paid back. The charge is made once, even when a lease
//!   reaches Redis after the instance gave up on it.
//!
//! [`Priority::Critical`]: resilience_core::Priority::Critical
//!
//! # When Redis is slow, down or answers garbage
//!
//! A lease that fails, times out (`redis_timeout`, default 50 ms) or
//! answers anything but the script's three integers in range switches the
//! layer out of [`FleetMode::Shared`]:
//!
//! - [`WhenRedisFails::LocalShare`] (default): [`FleetMode::Local`], each
//!   instance admits `limit / instances` per key on its own (set
//!   `instances` to the fleet's size), after spending the tokens it
//!   still holds.
//! - [`WhenRedisFails::FailClosed`]: [`FleetMode::Closed`], requests the
//!   held tokens do not cover are refused.
//!
//! No request waits on Redis longer than `redis_timeout`: one that would
//! is decided by the policy. While failing, one lease every `probe_every`
//! (default 1 s) tries Redis again; the `redis` crate's `ConnectionManager`
//! reconnects by itself; the first lease that succeeds switches back to
//! [`FleetMode::Shared`]. Every change of mode is logged once (`info!`) and
//! counted.
//!
//! # Hostile keys
//!
//! Keys are bytes (non-UTF-8 is fine; Redis keys are binary-safe); a key
//! longer than [`MAX_KEY_LEN`] is cut to 96 bytes plus a hash of the whole;
//! an empty or missing key is `_`. Each key is two Redis keys,
//! `<prefix><name>:<key>` (its GCRA) and `<prefix><name>#i:<key>` (its
//! instances' shares, one field per instance): a name has neither `:` nor
//! `#`, so no key can reach another's state. At most `max_keys` keys are
//! tracked locally: beyond it the least recently leased key is forgotten
//! (with what it admitted alone and has not charged yet). Keys are
//! hashed with SipHash (std's `HashMap`), so chosen keys cannot degrade the
//! lookups.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use http::{HeaderName, Request};
//! use resilience_bounded_queue::fleet::{FleetRateLimitConfig, FleetRateLimitLayer, KeyBy};
//! use resilience_core::BoxError;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let config = FleetRateLimitConfig::builder()
//!     .name("payments")
//!     .rate(1_000, Duration::from_secs(1)) // for the whole fleet, per tenant
//!     .batch(20)
//!     .instances(3)
//!     .build()?;
//! let layer = FleetRateLimitLayer::from_url(config, "redis://127.0.0.1:6379/")?
//!     .with_key(KeyBy::Header(HeaderName::from_static("x-tenant")));
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|_: Request<()>| async { Ok::<_, BoxError>("ok") }));
//! let req = Request::get("/pay").header("x-tenant", "acme").body(())?;
//! let rsp = svc.ready().await?.call(req).await;
//! # let _ = rsp;
//! # Ok(())
//! # }
//! ```
//!
//! # Clone semantics
//!
//! The layer keeps its state behind an `Arc`: cloning it or its services
//! shares the leased tokens and the connection. Each instance of the
//! service builds its own layer (and connection); instances share the limit
//! through Redis by using the same `name` and `prefix`; each layer has its
//! own random id in Redis (for its fair share). The inner service must be
//! `Clone`: a request that waits for a lease takes the ready service with
//! it. Nothing else is asked of it: what waits on Redis never holds the
//! service, so it need not be `Send` or `'static`.
//!
//! # Errors
//!
//! A refusal is a [`Rejected`](resilience_core::Rejected) of kind
//! [`Throttled`](resilience_core::RejectionKind::Throttled) (reason
//! `"fleet rate limited"`) with a retry-after: `429` with `Retry-After`
//! through [`resilience_core::http`], `RESOURCE_EXHAUSTED` through
//! `resilience_core::grpc`. Inner errors pass through unchanged.
//!
//! # Metrics
//!
//! `resilience_fleet_rate_limit_mode{name, mode}` (gauge, one-hot),
//! `_mode_changes_total{name, mode}`, `_rejected_total{name, priority}` and
//! `_redis_calls_total{name, outcome}` (counters). Install the recorder
//! before building the layer. [`FleetRateLimitHandle::snapshot`] gives the
//! mode, the keys tracked, the Redis commands sent, the tokens leased, the
//! requests refused and the changes of mode.

mod config;
mod key;
mod service;
mod shared;
#[cfg(feature = "snapshot")]
mod snapshot;

pub use config::{FleetRateLimitConfig, FleetRateLimitConfigBuilder, WhenRedisFails};
pub use key::{KeyBy, KeyFn, MAX_KEY_LEN, MakeKey};
pub use service::{
    FleetRateLimit, FleetRateLimitFuture, FleetRateLimitHandle, FleetRateLimitLayer,
    FleetRateLimitSnapshot,
};
pub use shared::FleetMode;
