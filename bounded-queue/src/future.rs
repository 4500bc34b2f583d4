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
            // Released when the state is replaced or dropped.
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Rejected { error } => {
                    let error = error.take().expect("polled after completion");
                    return Poll::Ready(Err(error));
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
                    Err(rejected) => State::Rejected {
                        error: Some(rejected.into()),
                    },
                },
                StateProj::Called { fut, permit } => {
                    let out = ready!(fut.poll(cx));
                    permit.finish(out.is_err());
                    this.state.set(State::Done);
                    return Poll::Ready(out.map_err(Into::into));
                }
                StateProj::Done => panic!("polled after completion"),
            };
            this.state.set(next);
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Rejected { .. } => "rejected",
            State::Waiting { .. } => "waiting",
            State::Called { .. } => "called",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
