//! Future types.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use resilience_core::{BoxError, ClassifyOutcome, Rejected};

use crate::handle::Shared;
use crate::state::Permit;

pin_project! {
    /// Response future of [`CircuitBreaker`](crate::CircuitBreaker).
    ///
    /// Records the call's outcome when it completes; if it is dropped before
    /// (cancelled), nothing is recorded and a half-open probe slot it held
    /// is given back.
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: Option<F>,
        state: State<C>,
    }
}

enum State<C> {
    /// Admitted: record the outcome.
    Tracked(Recorder, C),
    /// Admitted while disabled: record nothing.
    Untracked,
    /// Refused.
    Rejected(Rejected),
    Done,
}

/// Records an admitted call's outcome, or releases its probe slot on drop.
pub(crate) struct Recorder {
    shared: Arc<Shared>,
    permit: Permit,
    completed: bool,
}

// === impl Recorder ===

impl Recorder {
    pub(crate) fn new(shared: Arc<Shared>, permit: Permit) -> Self {
        Self {
            shared,
            permit,
            completed: false,
        }
    }

    #[inline]
    fn complete(mut self, outcome: resilience_core::Outcome) {
        self.completed = true;
        self.shared.record(&self.permit, outcome);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.completed && self.permit.is_probe() {
            self.shared.release(&self.permit);
        }
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("permit", &self.permit)
            .finish()
    }
}

// === impl ResponseFuture ===

impl<F, C> ResponseFuture<F, C> {
    #[inline]
    pub(crate) fn new(inner: F, recorder: Option<Recorder>, classify: C) -> Self {
        Self {
            inner: Some(inner),
            state: match recorder {
                Some(r) => State::Tracked(r, classify),
                None => State::Untracked,
            },
        }
    }

    pub(crate) fn rejected(rejected: Rejected) -> Self {
        Self {
            inner: None,
            state: State::Rejected(rejected),
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: ClassifyOutcome<T>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return match std::mem::replace(this.state, State::Done) {
                State::Rejected(r) => Poll::Ready(Err(r.into())),
                _ => panic!("polled after completion"),
            };
        };
        let result = ready!(inner.poll(cx)).map_err(Into::into);
        if let State::Tracked(recorder, classify) = std::mem::replace(this.state, State::Done) {
            let outcome = classify.classify(result.as_ref());
            recorder.complete(outcome);
        }
        Poll::Ready(result)
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Tracked(r, _) => format!("{r:?}"),
            State::Untracked => "untracked".to_owned(),
            State::Rejected(r) => format!("{r:?}"),
            State::Done => "done".to_owned(),
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
