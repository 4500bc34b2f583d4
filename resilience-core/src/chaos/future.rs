//! Future types.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use super::error::ChaosError;
use crate::error::BoxError;

pin_project! {
    /// Response future of [`Chaos`](super::Chaos).
    ///
    /// Passing through, it polls the inner future and nothing else (no
    /// allocation, no timer). A delayed request boxes its timer; an aborted one holds
    /// nothing and never completes. Dropping it at any point releases
    /// everything it holds.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Passthrough {
            #[pin]
            inner: F,
        },
        Delayed {
            // `None` when the delay was too long to represent: never wakes.
            until: Option<Instant>,
            // Armed at the first poll, dropped when it fires.
            sleep: Option<Pin<Box<Sleep>>>,
            slept: bool,
            // `None`: fail with `ChaosError` once the delay is over.
            #[pin]
            inner: Option<F>,
        },
        Failed,
        Aborted,
    }
}

// === impl ResponseFuture ===

impl<F> ResponseFuture<F> {
    #[inline(always)]
    pub(crate) fn passthrough(inner: F) -> Self {
        Self {
            state: State::Passthrough { inner },
        }
    }

    pub(crate) fn delayed(until: Option<Instant>, inner: Option<F>) -> Self {
        Self {
            state: State::Delayed {
                until,
                sleep: None,
                slept: false,
                inner,
            },
        }
    }

    pub(crate) fn failed() -> Self {
        Self {
            state: State::Failed,
        }
    }

    pub(crate) fn aborted() -> Self {
        Self {
            state: State::Aborted,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Passthrough { inner } => inner.poll(cx).map_err(Into::into),
            StateProj::Delayed {
                until,
                sleep,
                slept,
                inner,
            } => {
                if !*slept {
                    let Some(until) = *until else {
                        return Poll::Pending;
                    };
                    let timer = sleep.get_or_insert_with(|| Box::pin(sleep_until(until)));
                    ready!(timer.as_mut().poll(cx));
                    *sleep = None;
                    *slept = true;
                }
                match inner.as_pin_mut() {
                    Some(inner) => inner.poll(cx).map_err(Into::into),
                    None => Poll::Ready(Err(ChaosError::new().into())),
                }
            }
            StateProj::Failed => Poll::Ready(Err(ChaosError::new().into())),
            // Never answers, and registers no waker: only the caller's
            // timeout (or its dropping the future) ends the request.
            StateProj::Aborted => Poll::Pending,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Passthrough { .. } => "passthrough",
            State::Delayed { slept: false, .. } => "delaying",
            State::Delayed { inner: Some(_), .. } => "called",
            State::Delayed { inner: None, .. } => "failed",
            State::Failed => "failed",
            State::Aborted => "aborted",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
