//! Routing and refusing requests by flag: [`RequireFlagLayer`] refuses a
//! request when a boolean flag is off for it; [`FlagGateLayer`] sends it to
//! one of two services (dark launch, A/B).
//!
//! Both read the request's [`Flags`], so put them inside a
//! [`FlagsLayer`](crate::FlagsLayer). A request without `Flags` sees every
//! flag off.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response};
//! use resilience_core::{BoxError, http::error_response};
//! use resilience_flags::{Flag, FlagSet, FlagStore, FlagsLayer};
//! use resilience_flags::gate::{FlagGateLayer, RequireFlagLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let store = FlagStore::new(FlagSet::builder()
//!     .flag(Flag::boolean("beta-api").allow(["ann"]).rollout(0.0))
//!     .flag(Flag::boolean("new-search").allow(["ann"]).rollout(0.0))
//!     .build()?);
//! let new_search = service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new("new")) });
//! let old_search = service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new("old")) });
//! let svc = ServiceBuilder::new()
//!     .layer(FlagsLayer::new(store))
//!     .layer(RequireFlagLayer::new("beta-api"))
//!     .layer(FlagGateLayer::new("new-search", new_search))
//!     .service(old_search);
//!
//! let req = Request::get("/search").header("x-user-id", "ann").body(())?;
//! assert_eq!(*svc.clone().oneshot(req).await?.body(), "new");
//! let req = Request::get("/search").header("x-user-id", "bob").body(())?;
//! let err = svc.oneshot(req).await.unwrap_err();
//! assert_eq!(error_response(&*err).status(), 404);
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! [`RequireFlag`] fails with
//! `resilience_core::Rejected` of kind `Disabled` ("disabled by flag: flag
//! off"), which `resilience_core::http` maps to `404` and
//! `resilience_core::grpc` to `NOT_FOUND`. Both services box inner errors
//! into `BoxError` unchanged.

mod future;
mod layer;
mod service;

pub use self::future::{FlagGateFuture, RequireFlagFuture};
pub use self::layer::{FlagGateLayer, RequireFlagLayer};
pub use self::service::{FlagGate, RequireFlag};

use std::sync::Arc;

use http::Request;

use crate::Flags;

/// Whether the boolean flag `name` is on for `req` (off without `Flags`).
fn active<B>(name: &Arc<str>, req: &Request<B>) -> bool {
    match req.extensions().get::<Flags>() {
        Some(flags) => flags.is_active(name),
        None => {
            tracing::debug!(flag = %name, "no Flags in the request: is FlagsLayer outside?");
            false
        }
    }
}
