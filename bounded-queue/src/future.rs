//! The response future of [`BoundedQueue`](crate::BoundedQueue) and
//! [`KindQueues`](crate::kind::KindQueues).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use resilience_core::{BoxError, Rejected};
use tower_service::Service;

use crate::state::{Permit, Waiter};

pin_project! {
    /// Resolves to the inner service's response once the request is
    /// admitted, or to a [`Rejected`] (kind `Overloaded`).
    ///
    /// Dropping it at any point leaves the queue or releases the slot.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Rejected {
            error: Option<BoxError>,
        },
        Waiting {
            // Boxed: only queued requests pay for carrying the request, and
            // the future stays small on the uncontended path.
            waiting: Box<Queued<S, Req>>,
        },
        Called {
            #[pin]
            fut: S::Future,
            // Released when the response is ready (or when dropped before).
            permit: Permit,
        },
        Done,
    }
}

struct Queued<S, Req> {
    waiter: Waiter,
    svc: Option<S>,
    req: Option<Req>,
}

// === impl ResponseFuture ===

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    #[inline]
    pub(crate) fn called(fut: S::Future, permit: Permit) -> Self {
        Self {
            state: State::Called { fut, permit },
        }
    }

    pub(crate) fn rejected(error: Rejected) -> Self {
        Self {
            state: State::Rejected {
                error: Some(error.into()),
            },
        }
    }

    pub(crate) fn waiting(waiter: Waiter, svc: S, req: Req) -> Self {
        Self {
            state: State::Waiting {
                waiting: Box::new(Queued {
                    waiter,
                    svc: Some(svc),
                    req: Some(req),
                }),
            },
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            // The admitted request, the only state on the uncontended path:
            // kept small so it inlines into the caller.
            // The slot is released as soon as the response is ready; the
            // spent inner future is dropped with this one (as tower's
            // futures do), which saves a state change per call.
            if let StateProj::Called { fut, permit } = state.as_mut().project() {
                assert!(!permit.is_released(), "polled after completion");
                let out = ready!(fut.poll(cx));
                permit.finish(out.is_err());
                return Poll::Ready(out.map_err(Into::into));
            }
            if let Some(out) = ready!(poll_other(state.as_mut(), cx)) {
                return Poll::Ready(out);
            }
        }
    }
}

/// Every state but `Called`, out of line: `Ready(None)` once admitted (the
/// state is then `Called`).
#[inline(never)]
fn poll_other<S, Req>(
    mut state: Pin<&mut State<S, Req>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<S::Response, BoxError>>>
where
    S: Service<Req>,
{
    let next = match state.as_mut().project() {
        StateProj::Rejected { error } => {
            let error = error.take().expect("polled after completion");
            return Poll::Ready(Some(Err(error)));
        }
        StateProj::Waiting { waiting } => match ready!(waiting.waiter.poll_admit(cx)) {
            Ok(permit) => {
                let mut svc = waiting.svc.take().expect("polled after completion");
                let req = waiting.req.take().expect("polled after completion");
                State::Called {
                    fut: svc.call(req),
                    permit,
                }
            }
            Err(rejected) => {
                state.set(State::Done);
                return Poll::Ready(Some(Err(rejected.into())));
            }
        },
        StateProj::Called { .. } => return Poll::Ready(None),
        StateProj::Done => panic!("polled after completion"),
    };
    state.set(next);
    Poll::Ready(None)
}

impl<S: Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Rejected { .. } => "rejected",
            State::Waiting { .. } => "waiting",
            State::Called { permit, .. } if permit.is_released() => "done",
            State::Called { .. } => "called",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
