//! Watching a gRPC response body for the status in its trailers.

use std::any::Any;
use std::error::Error;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::{GrpcOutcome, OnOutcome, Outcome};

/// What [`watch`] did with a body.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Watch {
    /// Wrapped in place: the callback reports the outcome.
    Watching,
    /// The body has already ended: no status will come.
    Ended,
    /// Not a body type that can be replaced in place.
    Unknown,
}

pin_project! {
    /// A response body that reports the outcome of its call once: from the
    /// `grpc-status` trailer, or how it ended without one.
    struct TrailersBody<B>
    where
        B: Body,
    {
        #[pin]
        inner: B,
        done: Option<OnOutcome>,
        classify: GrpcOutcome,
    }

    impl<B> PinnedDrop for TrailersBody<B>
    where
        B: Body,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(done) = this.done.take() {
                // A reader that stops at `is_end_stream` saw the whole body;
                // any other drop before the end is the caller giving up.
                let outcome = if this.inner.is_end_stream() {
                    this.classify.missing_status()
                } else {
                    Outcome::CallerError
                };
                done(outcome);
            }
        }
    }
}

/// Wraps `body` in place so that `later()`'s callback reports the status in
/// its trailers, if it is a body type that can be replaced: a
/// `tonic::body::Body` (feature `grpc`) or an `axum::body::Body` (feature
/// `axum`).
pub(super) fn watch<B: 'static>(
    body: &mut B,
    classify: GrpcOutcome,
    later: &mut dyn FnMut() -> OnOutcome,
) -> Watch {
    let any: &mut dyn Any = body;
    #[cfg(feature = "grpc")]
    if let Some(body) = any.downcast_mut::<tonic::body::Body>() {
        if body.is_end_stream() {
            return Watch::Ended;
        }
        let inner = std::mem::take(body);
        *body = tonic::body::Body::new(TrailersBody::new(inner, later(), classify));
        return Watch::Watching;
    }
    #[cfg(feature = "axum")]
    if let Some(body) = any.downcast_mut::<axum::body::Body>() {
        if body.is_end_stream() {
            return Watch::Ended;
        }
        let inner = std::mem::take(body);
        *body = axum::body::Body::new(TrailersBody::new(inner, later(), classify));
        return Watch::Watching;
    }
    let _ = (any, classify, later);
    Watch::Unknown
}

// === impl TrailersBody ===

impl<B: Body> TrailersBody<B> {
    fn new(inner: B, done: OnOutcome, classify: GrpcOutcome) -> Self {
        Self {
            inner,
            done: Some(done),
            classify,
        }
    }
}

impl<B> Body for TrailersBody<B>
where
    B: Body,
    B::Error: Error + 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if this.done.is_some() {
            let outcome = match &frame {
                Some(Ok(frame)) => frame.trailers_ref().map(|trailers| {
                    this.classify
                        .classify_headers(trailers)
                        .unwrap_or_else(|| this.classify.missing_status())
                }),
                Some(Err(err)) => Some(this.classify.classify_body_error(err)),
                None => Some(this.classify.missing_status()),
            };
            if let Some(outcome) = outcome {
                if let Some(done) = this.done.take() {
                    done(outcome);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
