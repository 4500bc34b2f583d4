//! Future types.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use resilience_core::classify::OnOutcome;
use resilience_core::{BoxError, ClassifyOutcome, Outcome, Rejected};

use super::layer::ThrottleShared;
use super::state::Bucket;

type Waiting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

pin_project! {
    /// Response future of [`Throttle`](super::Throttle).
    ///
    /// In adaptive mode, counts the call as accepted when the backend did
    /// not fail it (at the end of the response body when the classifier
    /// defers to it: a gRPC status in trailers). A call waiting for a paired breaker to close holds only
    /// its place among the waiting calls: dropping it gives that back and
    /// stops the wait.
    pub struct ResponseFuture<F, C, T> {
        #[pin]
        inner: Option<F>,
        waiting: Option<Waiting<T>>,
        rejected: Option<Rejected>,
        accept: Option<(Arc<ThrottleShared>, C, Bucket)>,
    }
}

// === impl ResponseFuture ===

impl<F, C, T> ResponseFuture<F, C, T> {
    pub(crate) fn new(inner: F, accept: Option<(Arc<ThrottleShared>, C, Bucket)>) -> Self {
        Self {
            inner: Some(inner),
            waiting: None,
            rejected: None,
            accept,
        }
    }

    pub(crate) fn rejected(rejected: Rejected) -> Self {
        Self {
            inner: None,
            waiting: None,
            rejected: Some(rejected),
            accept: None,
        }
    }

    pub(crate) fn waiting(waiting: Waiting<T>) -> Self {
        Self {
            inner: None,
            waiting: Some(waiting),
            rejected: None,
            accept: None,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: ClassifyOutcome<T>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(inner) = this.inner.as_pin_mut() {
            let mut result = ready!(inner.poll(cx)).map_err(Into::into);
            if let Some((shared, classify, bucket)) = this.accept.take() {
                let outcome = match &mut result {
                    // A status in trailers: accepted (or not) at the end of
                    // the body.
                    Ok(rsp) => classify.classify_or_defer(rsp, &mut || late(&shared, bucket)),
                    Err(e) => Some(classify.classify(Err(e))),
                };
                if outcome.is_some_and(|o| o != Outcome::Failure) {
                    shared.state.window.accept(bucket);
                }
            }
            return Poll::Ready(result);
        }
        if let Some(waiting) = this.waiting.as_mut() {
            return waiting.as_mut().poll(cx);
        }
        let rejected = this.rejected.take().expect("polled after completion");
        Poll::Ready(Err(rejected.into()))
    }
}

/// Counts the accept of a call whose outcome came with its body.
#[cold]
fn late(shared: &Arc<ThrottleShared>, bucket: Bucket) -> OnOutcome {
    let shared = shared.clone();
    Box::new(move |outcome| {
        if outcome != Outcome::Failure {
            shared.state.window.accept(bucket);
        }
    })
}

impl<F, C, T> fmt::Debug for ResponseFuture<F, C, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("waiting", &self.waiting.is_some())
            .field("rejected", &self.rejected)
            .finish_non_exhaustive()
    }
}
