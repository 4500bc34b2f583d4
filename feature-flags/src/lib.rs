//! Which code path a request takes: per-request runtime flags with stable
//! rollouts, trusted overrides and hot-reloaded sources.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response};
//! use resilience_flags::{Flag, FlagSet, FlagStore, Flags, FlagsConfig, FlagsLayer};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Flags defined in code (a file or etcd can replace them at run time).
//! let store = FlagStore::new(
//!     FlagSet::builder()
//!         .flag(Flag::boolean("new-checkout").rollout(20.0).allow(["qa-team"]).overridable(true))
//!         .flag(Flag::variant("checkout-color", "blue", "green").when_path_prefix("/eu/", "red"))
//!         .build()?,
//! );
//! // Staff traffic may switch overridable flags with `x-flag-<name>` headers.
//! let config = FlagsConfig::builder()
//!     .trust_overrides(|req| req.headers.get("x-staff-token").is_some_and(|t| t == "s3cret"))
//!     .build()?;
//!
//! let svc = FlagsLayer::with_config(store, config).layer(service_fn(|req: Request<()>| async move {
//!     // From the request's extensions, or `Flags::current()` deeper down.
//!     let flags = req.extensions().get::<Flags>().unwrap();
//!     let page = if flags.is_active("new-checkout") { "new" } else { "old" };
//!     Ok::<_, std::convert::Infallible>(Response::new(page))
//! }));
//!
//! let req = Request::get("/cart").header("x-user-id", "qa-team").body(())?;
//! assert_eq!(*svc.clone().oneshot(req).await?.body(), "new"); // allow-listed
//!
//! let req = Request::get("/cart")
//!     .header("x-user-id", "user-1")
//!     .header("x-flag-new-checkout", "0") // ignored: not a trusted request
//!     .body(())?;
//! let _ = svc.clone().oneshot(req).await?; // "new" for 20% of users, stably
//!
//! let req = Request::get("/cart")
//!     .header("x-user-id", "qa-team")
//!     .header("x-staff-token", "s3cret")
//!     .header("x-flag-new-checkout", "0") // trusted: honoured
//!     .body(())?;
//! assert_eq!(*svc.oneshot(req).await?.body(), "old");
//! # Ok(()) }
//! ```
//!
//! With axum (feature `axum`), `Flags` is an extractor:
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use axum::{Router, routing::get};
//! use resilience_correlation::CorrelationLayer;
//! use resilience_flags::{Flag, FlagSet, FlagStore, Flags, FlagsLayer};
//!
//! async fn checkout(flags: Flags) -> &'static str {
//!     if flags.is_active("new-checkout") { "new checkout" } else { "old checkout" }
//! }
//!
//! let store = FlagStore::new(FlagSet::builder().flag(Flag::boolean("new-checkout").rollout(20.0))
//!     .build().unwrap());
//! let app: Router = Router::new()
//!     .route("/checkout", get(checkout))
//!     .layer(FlagsLayer::new(store))
//!     // Outermost, so the flags layer finds the request context and
//!     // forwards accepted overrides on outgoing calls.
//!     .layer(CorrelationLayer::new());
//! # }
//! ```
//!
//! On a tonic server the layer is the same, and a method reads
//! [`Flags::current`] (overrides come from `x-flag-<name>` metadata):
//!
//! ```ignore
//! Server::builder().layer(CorrelationLayer::new()).layer(FlagsLayer::new(store)).add_service(svc)
//! // in a method: Flags::current().is_some_and(|f| f.is_active("new-checkout"))
//! ```
//!
//! # Flags
//!
//! A [`Flag`] is a boolean or a string variant with a default. It can be
//! switched off (everyone gets the default), give the `on` value to allow
//! listed keys, the default to deny listed keys, a chosen value to requests
//! matching an attribute rule (header value, path prefix), and the `on`
//! value to a percentage of targeting keys. The percentage is stable: a key's
//! [bucket](hash) depends only on the flag name and the key (a fixed hash,
//! never seeded), so every process and every restart gives a key the same
//! answer, and raising 20% to 30% keeps every key that was on at 20% on.
//!
//! Evaluation never panics and never fails a request: an unknown flag, a
//! type mismatch or a missing key serves the default with
//! [`Reason::Error`] (OpenFeature semantics: value, variant, reason). It reads
//! a lock-free snapshot of the [`FlagStore`]; evaluating a boolean flag
//! takes no lock and allocates nothing.
//!
//! # Per request
//!
//! [`FlagsLayer`] takes the targeting key from a header (`x-user-id` by
//! default) or a closure, and gives the handler a [`Flags`]: in the request
//! extensions, as an axum extractor, and as [`Flags::current`] (a task-local)
//! for code without the request.
//!
//! Overrides: a request may send `x-flag-<name>: 1|0|<variant>`. It is
//! honoured only when the flag is declared
//! [overridable](FlagBuilder::overridable) **and** the request passes the
//! trust predicate ([`FlagsConfigBuilder::trust_overrides`], default: no
//! request is trusted). An untrusted request can never flip a protected
//! flag, and a variant override must be one of the flag's own variants.
//! Accepted overrides are added to the correlation crate's
//! `RequestContext` as forwarded headers, so `PropagateContextLayer` sends
//! them on every outgoing call: put `CorrelationLayer` outside `FlagsLayer`.
//!
//! [`gate::RequireFlagLayer`] refuses requests for which a flag is off
//! (`404`), and [`gate::FlagGateLayer`] routes them to one of two services
//! (dark launch, A/B).
//!
//! # Sources
//!
//! Flags come from code ([`FlagSet::builder`]), from a TOML/JSON file
//! reloaded when it changes ([`source::FileSource`], feature `file`) or from
//! an etcd key prefix ([`source::EtcdSource`], feature `etcd`). A source
//! that breaks or reads garbage keeps the last good set and reports its
//! staleness ([`source::SourceHandle::snapshot`]).
//!
//! # Clone semantics
//!
//! [`FlagStore`], [`FlagsLayer`], its services and [`Flags`] are cheap to
//! clone and share their state: replacing the set through one clone of a
//! store is seen by every layer and handler using it.
//!
//! # Errors
//!
//! Evaluation has no error path (see [`Reason::Error`]); the layer passes the
//! inner service's errors through unchanged. Configuration is validated when
//! it is built ([`resilience_core::ConfigError`]). To refuse a request
//! because a flag is off, return
//! `resilience_core::Rejected::new(RejectionKind::Disabled, reason)`, which
//! `resilience_core::http::handle_error` maps to 404.
//!
//! # Metrics
//!
//! Through the `metrics` facade (feature `metrics`, on by default); install
//! the recorder before building the store:
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `resilience_flags_evaluations_total` | counter | `name` (the store's), `reason` |
//! | `resilience_flags_source_errors_total` | counter | `name` |
//!
//! `reason` is one of `static`, `targeting_match`, `split`, `disabled`,
//! `override`, `error`. Flag names are not labels (a request could name any
//! flag). Per-request decisions are `debug!` events; a source failure is a
//! `warn!`, a replaced set an `info!`.
//!
//! # Feature flags
//!
//! - `metrics` (default): emit metrics.
//! - `file` (default): TOML/JSON flag sets and [`source::FileSource`].
//! - `etcd`: [`source::EtcdSource`], through etcd's JSON gateway over plain
//!   HTTP (hyper), so no gRPC stack is pulled in; off by default to keep the
//!   default build lean.
//! - `axum`: [`Flags`] as an axum extractor. Public dependency: **axum
//!   0.8** (its `FromRequestParts` and `OptionalFromRequestParts` traits).
//! - `snapshot`: `resilience_core::snapshot::LayerSnapshot` for
//!   [`FlagStore`] (kind `flags`; the state is a `FlagStoreSnapshot`: the
//!   store's version and a summary of each flag), so a `SnapshotRegistry`
//!   serves the flags in its `/resilience` document.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod eval;
mod flag;
mod flags;
pub mod future;
pub mod gate;
pub mod hash;
mod layer;
mod service;
mod set;
#[cfg(feature = "snapshot")]
mod snapshot;
#[cfg(feature = "file")]
#[cfg_attr(docsrs, doc(cfg(feature = "file")))]
pub mod source;
mod store;

pub use crate::config::{FlagsConfig, FlagsConfigBuilder};
pub use crate::eval::{ErrorCode, FlagContext, FlagEvaluation, Reason};
pub use crate::flag::{Condition, Flag, FlagBuilder, FlagKind, FlagValue};
pub use crate::flags::Flags;
#[cfg(feature = "axum")]
pub use crate::flags::MissingFlags;
pub use crate::layer::FlagsLayer;
pub use crate::service::FlagsService;
pub use crate::set::{FlagSet, FlagSetBuilder};
#[cfg(feature = "snapshot")]
#[cfg_attr(docsrs, doc(cfg(feature = "snapshot")))]
pub use crate::snapshot::FlagStoreSnapshot;
pub use crate::store::FlagStore;
