//! Future types.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use resilience_core::classify::OnOutcome;
use resilience_core::{BoxError, ClassifyOutcome, Outcome};
use tokio::time::Instant;

use crate::handle::{Breaker, Shared};
use crate::state::Permit;

pin_project! {
    /// Response future of [`CircuitBreaker`](crate::CircuitBreaker).
    ///
    /// Records the call's outcome when it completes (or, when the classifier
    /// defers it to the end of the response body, a gRPC status in
    /// trailers, the body records it then); if it is dropped before
    /// (cancelled), nothing is recorded and a half-open probe slot it held
    /// is given back.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }

    impl<F, C> PinnedDrop for ResponseFuture<F, C> {
        fn drop(this: Pin<&mut Self>) {
            // Cancelled before it completed: a probe gives its slot back.
            if let KindProj::Called { recorder: Some(recorder), .. } = this.project().kind.project() {
                recorder.cancel();
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        /// Admitted: the inner call, and its recorder (none when disabled).
        Called {
            #[pin]
            inner: F,
            recorder: Option<Recorder<C>>,
        },
        /// Refused (or called without `poll_ready`).
        Rejected { rejected: Option<BoxError> },
    }
}

/// Records an admitted call's outcome ([`Recorder::complete`]), or gives
/// back its probe slot ([`Recorder::cancel`], when the future is dropped
/// before completing).
pub(crate) struct Recorder<C> {
    breaker: Arc<Breaker<C>>,
    permit: Permit,
}

/// The outcome of a call whose response did not tell it (a gRPC status in
/// trailers): recorded when the body reports it, with the slow-call verdict
/// taken when the response came.
struct LateOutcome {
    shared: Arc<Shared>,
    permit: Permit,
    slow: bool,
}

// === impl Recorder ===

impl<C> Recorder<C> {
    #[inline]
    pub(crate) fn new(breaker: Arc<Breaker<C>>, permit: Permit) -> Self {
        Self { breaker, permit }
    }

    /// Records the outcome of `result`, or, when the classifier defers it
    /// to the end of the response body, hands the permit to the body.
    #[inline]
    fn complete<T>(&self, result: &mut Result<T, BoxError>)
    where
        C: ClassifyOutcome<T>,
    {
        let outcome = match result {
            Ok(rsp) => self
                .breaker
                .classify
                .classify_or_defer(rsp, &mut || self.late()),
            Err(e) => Some(self.breaker.classify.classify(Err(e))),
        };
        if let Some(outcome) = outcome {
            self.breaker.shared.record(self.permit, outcome);
        }
    }

    /// The callback that records a deferred outcome.
    #[cold]
    fn late(&self) -> OnOutcome {
        let shared = self.breaker.shared.clone();
        let slow = shared.core.is_slow(&self.permit, &Instant::now);
        let late = LateOutcome {
            shared,
            permit: self.permit,
            slow,
        };
        Box::new(move |outcome| late.record(outcome))
    }

    /// The call was cancelled: a probe gives its slot back.
    #[inline]
    fn cancel(&self) {
        if self.permit.is_probe() {
            self.breaker.shared.release(&self.permit);
        }
    }
}

// === impl LateOutcome ===

impl LateOutcome {
    fn record(self, outcome: Outcome) {
        self.shared.record_late(self.permit, outcome, self.slow);
    }
}

impl<C> fmt::Debug for Recorder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("permit", &self.permit)
            .finish()
    }
}

// === impl ResponseFuture ===

impl<F, C> ResponseFuture<F, C> {
    #[inline]
    pub(crate) fn new(inner: F, recorder: Option<Recorder<C>>) -> Self {
        Self {
            kind: Kind::Called { inner, recorder },
        }
    }

    pub(crate) fn rejected(rejected: BoxError) -> Self {
        Self {
            kind: Kind::Rejected {
                rejected: Some(rejected),
            },
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
        match self.project().kind.project() {
            KindProj::Called { inner, recorder } => {
                let mut result = ready!(inner.poll(cx)).map_err(Into::into);
                if let Some(r) = recorder {
                    // Recorded while still held: if the classifier or a
                    // metrics recorder panics, the drop gives a probe's
                    // slot back. A deferred outcome is the body's to
                    // record.
                    r.complete(&mut result);
                    *recorder = None;
                }
                Poll::Ready(result)
            }
            KindProj::Rejected { rejected } => {
                let rejected = rejected.take().expect("polled after completion");
                Poll::Ready(Err(rejected))
            }
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Called { recorder, .. } => f
                .debug_struct("ResponseFuture")
                .field("recorder", recorder)
                .finish_non_exhaustive(),
            Kind::Rejected { rejected } => f
                .debug_struct("ResponseFuture")
                .field("rejected", rejected)
                .finish(),
        }
    }
}
