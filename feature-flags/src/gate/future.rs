//! Response futures of the gate services.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use resilience_core::{BoxError, Rejected};

pin_project! {
    /// Response future of [`RequireFlag`](super::RequireFlag).
    #[derive(Debug)]
    pub struct RequireFlagFuture<F> {
        #[pin]
        state: RequireState<F>,
    }
}

pin_project! {
    #[project = RequireProj]
    #[derive(Debug)]
    enum RequireState<F> {
        Inner { #[pin] fut: F },
        Refused { err: Option<Rejected> },
    }
}

pin_project! {
    /// Response future of [`FlagGate`](super::FlagGate).
    #[derive(Debug)]
    pub struct FlagGateFuture<Off, On> {
        #[pin]
        state: GateState<Off, On>,
    }
}

pin_project! {
    #[project = GateProj]
    #[derive(Debug)]
    enum GateState<Off, On> {
        Off { #[pin] fut: Off },
        On { #[pin] fut: On },
    }
}

// === impl RequireFlagFuture ===

impl<F> RequireFlagFuture<F> {
    pub(crate) fn inner(fut: F) -> Self {
        Self {
            state: RequireState::Inner { fut },
        }
    }

    pub(crate) fn refused(err: Rejected) -> Self {
        Self {
            state: RequireState::Refused { err: Some(err) },
        }
    }
}

impl<F, T, E> Future for RequireFlagFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            RequireProj::Inner { fut } => fut.poll(cx).map_err(Into::into),
            RequireProj::Refused { err } => {
                let err = err.take().expect("polled after completion");
                Poll::Ready(Err(err.into()))
            }
        }
    }
}

// === impl FlagGateFuture ===

impl<Off, On> FlagGateFuture<Off, On> {
    pub(crate) fn off(fut: Off) -> Self {
        Self {
            state: GateState::Off { fut },
        }
    }

    pub(crate) fn on(fut: On) -> Self {
        Self {
            state: GateState::On { fut },
        }
    }
}

impl<Off, On, T, E1, E2> Future for FlagGateFuture<Off, On>
where
    Off: Future<Output = Result<T, E1>>,
    On: Future<Output = Result<T, E2>>,
    E1: Into<BoxError>,
    E2: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            GateProj::Off { fut } => fut.poll(cx).map_err(Into::into),
            GateProj::On { fut } => fut.poll(cx).map_err(Into::into),
        }
    }
}
