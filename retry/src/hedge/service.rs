use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use resilience_core::attempt;
use resilience_core::{Attempt, BoxError};
use tower_service::Service;

use super::future::{Hedging, ResponseFuture};
use super::layer::HedgePolicy;
use crate::body::RetryBody;
use crate::classify::{ClassifyRequest, IdempotentRequests};
use crate::future::FirstTry;
use crate::layer::Shared;

/// Sends a slow idempotent request again, and takes the first good answer.
/// See [`HedgeLayer`](crate::HedgeLayer).
///
/// Cloning the service shares its layer's budget and learned delay; the
/// clone gets its own readiness (the inner service's clone).
pub struct Hedge<S, C = IdempotentRequests> {
    inner: S,
    shared: Arc<Shared<HedgePolicy, C>>,
}

// === impl Hedge ===

impl<S, C> Hedge<S, C> {
    pub(crate) fn with_shared(inner: S, shared: Arc<Shared<HedgePolicy, C>>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, B, ResB> Service<Request<B>> for Hedge<S, C>
where
    S: Service<Request<RetryBody<B>>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    C: ClassifyRequest,
    B: Body,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let policy = &self.shared.policy;
        if policy.deposits {
            policy.budget.deposit();
        }
        let (parts, body) = req.into_parts();
        if !self.shared.classify.is_retryable(&parts) {
            let fut = self
                .inner
                .call(Request::from_parts(parts, RetryBody::plain(body)));
            return ResponseFuture::once(fut);
        }
        // Continue the attempts of a retry layer above, if any, so that
        // every try shares one record of the endpoints tried (and one
        // counter of attempt numbers). A first try (no attempt) that a
        // layer above watches gets a record now, reported to that layer
        // for the same reason; one nobody watches goes without (it costs
        // nothing), and the record starts with the first hedge.
        let attempt = match Attempt::from_extensions(&parts.extensions) {
            Some(attempt) => Some(attempt.clone()),
            None if attempt::first_try_observed() => {
                let first = Attempt::first();
                attempt::report_first_attempt(&first);
                Some(first)
            }
            None => None,
        };
        let cap = policy.config.max_replay_body;
        match FirstTry::send(&mut self.inner, parts, body, cap, attempt) {
            Ok((fut, first)) => ResponseFuture::hedging(fut, Hedging::new(first, policy.clone())),
            Err((parts, body)) => {
                tracing::debug!(
                    cap,
                    "request body over the replay cap: it is sent once, not hedged"
                );
                let fut = self
                    .inner
                    .call(Request::from_parts(parts, RetryBody::plain(body)));
                ResponseFuture::once(fut)
            }
        }
    }
}

impl<S: Clone, C> Clone for Hedge<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Hedge<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .field("name", &self.shared.policy.name)
            .finish_non_exhaustive()
    }
}
