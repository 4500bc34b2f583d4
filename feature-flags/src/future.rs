//! The [`FlagsService`](crate::FlagsService) response future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use resilience_correlation::{RequestContext, Scoped};
use tokio::task::futures::TaskLocalFuture;

use crate::flags::Flags;

pin_project! {
    /// Runs the inner future with the request's [`Flags`] as the current
    /// ones (and, when overrides were accepted, the request context that
    /// forwards them as the current context).
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Plain { #[pin] fut: TaskLocalFuture<Flags, F> },
        Forwarding { #[pin] fut: TaskLocalFuture<Flags, Scoped<F>> },
    }
}

// === impl ResponseFuture ===

impl<F: Future> ResponseFuture<F> {
    pub(crate) fn new(flags: Flags, ctx: Option<RequestContext>, fut: F) -> Self {
        let state = match ctx {
            None => State::Plain {
                fut: flags.scope(fut),
            },
            Some(ctx) => State::Forwarding {
                fut: flags.scope(ctx.scope(fut)),
            },
        };
        Self { state }
    }
}

impl<F: Future> Future for ResponseFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Plain { fut } => fut.poll(cx),
            StateProj::Forwarding { fut } => fut.poll(cx),
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
