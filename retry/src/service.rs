use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use resilience_core::{Attempt, BoxError, Deadline};
use tower_service::Service;

use crate::body::RetryBody;
use crate::classify::{ClassifyRequest, IdempotentRequests};
use crate::future::{FirstTry, ResponseFuture, Retrying};
use crate::layer::{Policy, Shared};

/// Retries failed requests within a budget, a deadline and the server's
/// pushback. See the [crate docs](crate).
///
/// Cloning the service shares its layer's budget; the clone gets its own
/// readiness (the inner service's clone).
pub struct Retry<S, C = IdempotentRequests> {
    inner: S,
    shared: Arc<Shared<Policy, C>>,
}

// === impl Retry ===

impl<S, C> Retry<S, C> {
    pub(crate) fn with_shared(inner: S, shared: Arc<Shared<Policy, C>>) -> Self {
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

impl<S, C, B, ResB> Service<Request<B>> for Retry<S, C>
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
        policy.budget.deposit();
        policy.metrics.attempt();
        let timeout = policy.attempt_timeout();
        let deadline = |ext: &http::Extensions| {
            if timeout.is_some() {
                Deadline::from_extensions(ext)
            } else {
                None
            }
        };
        if policy.max_attempts() <= 1 {
            let deadline = deadline(req.extensions());
            let fut = self.inner.call(req.map(RetryBody::plain));
            return ResponseFuture::once(fut, timeout, deadline);
        }
        let (parts, body) = req.into_parts();
        let once = |inner: &mut S, parts: http::request::Parts, body: B| {
            let deadline = deadline(&parts.extensions);
            let fut = inner.call(Request::from_parts(parts, RetryBody::plain(body)));
            ResponseFuture::once(fut, timeout, deadline)
        };
        if !self.shared.classify.is_retryable(&parts) {
            return once(&mut self.inner, parts, body);
        }
        // The first try carries no attempt (it costs nothing): a balancer
        // below reports its pick while the call is watched, and a retry
        // starts the record from it, so that it goes elsewhere. Every
        // retry carries its attempt; any attempt the caller put there is
        // replaced. Once a balancer is found out of sight, first tries
        // carry theirs too.
        let cap = policy.max_replay_body;
        let first = policy.first_tries.carry().then(Attempt::first);
        let mut parts = parts;
        if first.is_none() {
            parts.extensions.remove::<Attempt>();
        }
        match FirstTry::send(&mut self.inner, parts, body, cap, first) {
            Ok((fut, first)) => ResponseFuture::retrying(fut, Retrying::new(first, policy.clone())),
            Err((parts, body)) => {
                tracing::debug!(
                    cap,
                    "request body over the replay cap: it is sent once, not retried"
                );
                once(&mut self.inner, parts, body)
            }
        }
    }
}

impl<S: Clone, C> Clone for Retry<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Retry<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("name", &self.shared.policy.name)
            .finish_non_exhaustive()
    }
}
