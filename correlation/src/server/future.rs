//! Future types.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderName, Response};
use pin_project_lite::pin_project;
use tracing::instrument::Instrumented;

use crate::context::Scoped;

pin_project! {
    /// Response future of [`Correlation`](super::Correlation): runs the inner
    /// future inside the request's context and span, then returns the id on
    /// the response.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Scoped<Instrumented<F>>,
        echo: Option<HeaderName>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: Scoped<Instrumented<F>>, echo: Option<HeaderName>) -> Self {
        Self { inner, echo }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut rsp = ready!(this.inner.as_mut().poll(cx))?;
        if let Some(name) = this.echo.take() {
            // The scope is over: take the context back instead of cloning.
            if let Some(ctx) = this.inner.take_context() {
                rsp.headers_mut()
                    .insert(name, ctx.correlation_id().to_header_value());
            }
        }
        Poll::Ready(Ok(rsp))
    }
}
