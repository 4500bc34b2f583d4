//! `Flags`: the flags of one request, as handlers see them.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tokio::task::futures::TaskLocalFuture;

use crate::eval::{FlagContext, FlagEvaluation};
use crate::flag::FlagValue;
use crate::store::FlagStore;

tokio::task_local! {
    static CURRENT: Flags;
}

/// The flags of one request: the store, the request's evaluation context
/// and the overrides accepted from it.
///
/// [`FlagsLayer`](crate::FlagsLayer) puts one in the request's extensions and
/// in a task-local scope around the inner service ([`Flags::current`]); with
/// the `axum` feature it is also an extractor. Every call reads the store's
/// current snapshot, so a flag switched off mid-request is seen at once.
///
/// # Clone semantics
///
/// Cloning is one reference-count increment; clones share everything.
#[derive(Clone)]
pub struct Flags {
    inner: Arc<Inner>,
}

struct Inner {
    store: FlagStore,
    ctx: FlagContext,
    overrides: Vec<(Arc<str>, FlagValue)>,
}

// === impl Flags ===

impl Flags {
    /// The flags of `store` evaluated for `ctx`, without overrides (for work
    /// outside a request: jobs, tests).
    ///
    /// ```
    /// use resilience_flags::{Flag, FlagContext, FlagSet, FlagStore, Flags};
    /// let store = FlagStore::new(FlagSet::builder().flag(Flag::boolean("beta")).build()?);
    /// let flags = Flags::new(store, FlagContext::new().with_key("job-7"));
    /// assert!(flags.is_active("beta"));
    /// # Ok::<_, resilience_core::ConfigError>(())
    /// ```
    pub fn new(store: FlagStore, ctx: FlagContext) -> Self {
        Self::with_overrides(store, ctx, Vec::new())
    }

    pub(crate) fn with_overrides(
        store: FlagStore,
        ctx: FlagContext,
        overrides: Vec<(Arc<str>, FlagValue)>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                ctx,
                overrides,
            }),
        }
    }

    /// Whether the boolean flag `name` is on for this request (`false` if it
    /// does not exist). Takes no lock and allocates nothing.
    #[inline]
    pub fn is_active(&self, name: &str) -> bool {
        self.evaluate_bool(name, false).into_value()
    }

    /// Evaluates the boolean flag `name`, serving `default` on error.
    ///
    /// [`FlagStore::evaluate_bool(name, ctx, default)`](crate::FlagStore::evaluate_bool)
    /// with this request's context (and its trusted overrides): the same
    /// order, `name` first and `default` last, with no `ctx` to pass.
    #[inline]
    pub fn evaluate_bool(&self, name: &str, default: bool) -> FlagEvaluation<bool> {
        let i = &*self.inner;
        i.store
            .evaluate_bool_with(name, &i.ctx, &i.overrides, default)
    }

    /// The variant of flag `name` for this request, `default` on error.
    pub fn variant(&self, name: &str, default: &str) -> Arc<str> {
        self.evaluate_variant(name, default).into_value()
    }

    /// Evaluates the variant flag `name`, serving `default` on error.
    pub fn evaluate_variant(&self, name: &str, default: &str) -> FlagEvaluation<Arc<str>> {
        let i = &*self.inner;
        i.store
            .evaluate_variant_with(name, &i.ctx, &i.overrides, default)
    }

    /// The request's evaluation context.
    pub fn context(&self) -> &FlagContext {
        &self.inner.ctx
    }

    /// The store the flags come from.
    pub fn store(&self) -> &FlagStore {
        &self.inner.store
    }

    /// The overrides accepted from this request (trusted, overridable flags
    /// only).
    pub fn overrides(&self) -> impl Iterator<Item = (&str, &FlagValue)> {
        self.inner.overrides.iter().map(|(n, v)| (&**n, v))
    }

    /// The flags of the request being handled on this task, if any.
    ///
    /// Set by [`FlagsLayer`](crate::FlagsLayer) around the inner service's
    /// future and by [`Flags::scope`]. A spawned task does not inherit it:
    /// pass the `Flags` along and call `scope` there.
    pub fn current() -> Option<Flags> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Whether the boolean flag `name` is on for the current request
    /// (`false` outside one). No clone, no lock, no allocation.
    pub fn is_active_now(name: &str) -> bool {
        CURRENT.try_with(|f| f.is_active(name)).unwrap_or(false)
    }

    /// Runs `fut` with `self` as the current flags.
    pub fn scope<F: Future>(self, fut: F) -> TaskLocalFuture<Flags, F> {
        CURRENT.scope(self, fut)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flags")
            .field("store", &self.inner.store)
            .field("key", &self.inner.ctx.key())
            .field("overrides", &self.inner.overrides)
            .finish()
    }
}

#[cfg(feature = "axum")]
mod extract {
    use axum::extract::{FromRequestParts, OptionalFromRequestParts};
    use axum::response::{IntoResponse, Response};
    use http::StatusCode;
    use http::request::Parts;

    use super::Flags;

    /// Rejection of the [`Flags`] extractor: the request did not go through
    /// a [`FlagsLayer`](crate::FlagsLayer) (a server bug, so `500`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    pub struct MissingFlags;

    impl std::fmt::Display for MissingFlags {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("flags missing: is FlagsLayer installed?")
        }
    }

    impl std::error::Error for MissingFlags {}

    impl IntoResponse for MissingFlags {
        fn into_response(self) -> Response {
            (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
        }
    }

    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    impl<S: Send + Sync> FromRequestParts<S> for Flags {
        type Rejection = MissingFlags;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
            parts.extensions.get::<Flags>().cloned().ok_or(MissingFlags)
        }
    }

    /// `Option<Flags>`: `None` when no [`FlagsLayer`](crate::FlagsLayer) ran.
    #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
    impl<S: Send + Sync> OptionalFromRequestParts<S> for Flags {
        type Rejection = std::convert::Infallible;

        async fn from_request_parts(
            parts: &mut Parts,
            _: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            Ok(parts.extensions.get::<Flags>().cloned())
        }
    }
}

#[cfg(feature = "axum")]
pub use extract::MissingFlags;
