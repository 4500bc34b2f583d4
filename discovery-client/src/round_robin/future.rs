//! The response future of [`RoundRobin`](super::RoundRobin).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use resilience_core::classify::{ClassifyOutcome, OnOutcome};
use resilience_core::{BoxError, Rejected, RejectionKind};

use super::pool::Stripe;

pin_project! {
    /// The response of the endpoint a request went to; on completion its
    /// outcome feeds that endpoint's passive health (at the end of the
    /// response body when the classifier defers to it: a gRPC status in
    /// trailers).
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Called {
            #[pin]
            fut: F,
            stripe: Option<Arc<Stripe>>,
            classify: C,
        },
        Rejected { reason: &'static str },
    }
}

// === impl ResponseFuture ===

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(fut: F, stripe: Option<Arc<Stripe>>, classify: C) -> Self {
        Self {
            kind: Kind::Called {
                fut,
                stripe,
                classify,
            },
        }
    }

    /// Fails with [`RejectionKind::NoHealthyEndpoint`] and `reason`.
    pub(crate) fn rejected(reason: &'static str) -> Self {
        Self {
            kind: Kind::Rejected { reason },
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                fut,
                stripe,
                classify,
            } => {
                let mut res = ready!(fut.poll(cx)).map_err(Into::into);
                if let Some(held) = stripe.take() {
                    // A status in trailers: the body records it when it ends.
                    let mut held = Some(held);
                    let outcome = match &mut res {
                        Ok(rsp) => classify.classify_or_defer(rsp, &mut || late(&mut held)),
                        Err(e) => Some(classify.classify(Err(e))),
                    };
                    if let (Some(outcome), Some(stripe)) = (outcome, held) {
                        stripe.stats.record(outcome.is_failure());
                    }
                }
                Poll::Ready(res)
            }
            KindProj::Rejected { reason } => {
                Poll::Ready(Err(
                    Rejected::new(RejectionKind::NoHealthyEndpoint, reason).into()
                ))
            }
        }
    }
}

/// Records the outcome of a call that came with its body, in the stats of
/// the endpoint it went to.
#[cold]
fn late(held: &mut Option<Arc<Stripe>>) -> OnOutcome {
    let stripe = held.take();
    Box::new(move |outcome| {
        if let Some(stripe) = stripe {
            stripe.stats.record(outcome.is_failure());
        }
    })
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
