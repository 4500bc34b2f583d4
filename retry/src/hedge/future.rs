//! The response future of [`Hedge`](crate::Hedge).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use resilience_core::BoxError;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::layer::HedgePolicy;
use crate::body::RetryBody;
use crate::classify::Verdict;
use crate::future::{FirstTry, Head, Template, Tries, arm};

pin_project! {
    /// The response future of [`Hedge`](crate::Hedge).
    ///
    /// Dropping it drops every attempt in flight (the first and the
    /// hedges), the timer, the service clone and the buffered body. When
    /// an attempt gives a good answer, the others are dropped before it is
    /// returned.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<RetryBody<B>>>,
    {
        // The first attempt, until it finishes.
        #[pin]
        first: Option<S::Future>,
        // The hedge delay.
        #[pin]
        sleep: Option<Sleep>,
        // `None`: a request that is not hedged, passed through.
        hedging: Option<Hedging<S, B>>,
    }
}

/// What a hedged request keeps to send itself again, and its hedges.
pub(crate) struct Hedging<S, B>
where
    S: Service<Request<RetryBody<B>>>,
{
    svc: S,
    head: Head,
    template: Template<B>,
    /// The attempts of the request: none yet (the first try went without
    /// one), or the last one sent; its record is shared by every try.
    tries: Tries,
    policy: Arc<HedgePolicy>,
    hedges: Vec<InFlight<S::Future>>,
    /// Hedges sent so far.
    sent: u32,
    /// When the first attempt was first found pending.
    started: Option<Instant>,
    /// The delay has passed: a hedge waits for the service to be ready.
    due: bool,
    /// No more hedges for this request.
    stopped: bool,
    /// The last outcome that was not a good answer, returned if no
    /// attempt gives one.
    last: Option<Result<S::Response, BoxError>>,
}

struct InFlight<F> {
    fut: Pin<Box<F>>,
    sent: Instant,
}

// === impl ResponseFuture ===

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<RetryBody<B>>>,
{
    /// A request sent once.
    #[inline]
    pub(crate) fn once(fut: S::Future) -> Self {
        Self {
            first: Some(fut),
            sleep: None,
            hedging: None,
        }
    }

    /// A request that may be hedged.
    #[inline]
    pub(crate) fn hedging(fut: S::Future, hedging: Hedging<S, B>) -> Self {
        Self {
            first: Some(fut),
            sleep: None,
            hedging: Some(hedging),
        }
    }
}

impl<S, B, ResB> Future for ResponseFuture<S, B>
where
    S: Service<Request<RetryBody<B>>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(h) = this.hedging.as_mut() else {
            let fut = this
                .first
                .as_mut()
                .as_pin_mut()
                .expect("ResponseFuture polled after completion");
            let result = ready!(fut.poll(cx)).map_err(Into::into);
            this.first.set(None);
            return Poll::Ready(result);
        };
        loop {
            // The first attempt.
            if let Some(fut) = this.first.as_mut().as_pin_mut() {
                if let Poll::Ready(result) = fut.poll(cx) {
                    this.first.set(None);
                    let result = result.map_err(Into::into);
                    if h.is_answer(&result) {
                        // An attempt that answered at its first poll reads
                        // no clock: its latency counts as zero.
                        if h.policy.latencies.learns() {
                            let latency = h.started.map_or(Duration::ZERO, |s| s.elapsed());
                            h.policy.latencies.record(latency);
                        }
                        h.hedges.clear();
                        return Poll::Ready(result);
                    }
                    h.last = Some(result);
                }
            }
            // The hedges.
            let mut i = 0;
            while i < h.hedges.len() {
                let Poll::Ready(result) = h.hedges[i].fut.as_mut().poll(cx) else {
                    i += 1;
                    continue;
                };
                let done = h.hedges.swap_remove(i);
                let result = result.map_err(Into::into);
                if h.is_answer(&result) {
                    if h.policy.latencies.learns() {
                        h.policy.latencies.record(done.sent.elapsed());
                    }
                    h.policy.hedge_won();
                    tracing::debug!(name = %h.policy.name, "a hedge answered first");
                    // Cancel the others.
                    this.first.set(None);
                    h.hedges.clear();
                    return Poll::Ready(result);
                }
                h.last = Some(result);
            }
            if this.first.is_none() && h.hedges.is_empty() {
                // Every attempt finished without a good answer.
                return Poll::Ready(h.last.take().expect("an attempt finished"));
            }
            if h.stopped {
                return Poll::Pending;
            }
            // The delay. The timer starts at the first attempt's first
            // `Pending`: an attempt that completes at once reads no clock.
            if !h.due {
                if h.started.is_none() {
                    let now = Instant::now();
                    h.started = Some(now);
                    arm(this.sleep.as_mut(), now + h.policy.latencies.delay());
                }
                let sleep = this.sleep.as_mut().as_pin_mut().expect("armed");
                if sleep.poll(cx).is_pending() {
                    return Poll::Pending;
                }
                h.due = true;
            }
            // A hedge.
            match h.svc.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => {
                    let error: BoxError = error.into();
                    tracing::debug!(name = %h.policy.name, %error, "inner service failed while waiting to hedge");
                    h.stopped = true;
                    return Poll::Pending;
                }
            }
            h.due = false;
            let Some(req) = h.next_request() else {
                h.stopped = true;
                return Poll::Pending;
            };
            let fut = h.svc.call(req);
            let now = Instant::now();
            h.hedges.push(InFlight {
                fut: Box::pin(fut),
                sent: now,
            });
            h.sent += 1;
            h.policy.hedge_sent();
            if h.sent >= h.policy.config.max_hedges {
                h.stopped = true;
            } else {
                arm(this.sleep.as_mut(), now + h.policy.latencies.delay());
            }
            // Poll the new hedge, so that it can wake this future.
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<RetryBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("first_in_flight", &self.first.is_some())
            .field(
                "hedges_in_flight",
                &self.hedging.as_ref().map_or(0, |h| h.hedges.len()),
            )
            .finish_non_exhaustive()
    }
}

// === impl Hedging ===

impl<S, B> Hedging<S, B>
where
    S: Service<Request<RetryBody<B>>>,
{
    #[inline]
    pub(crate) fn new(first: FirstTry<S, B>, policy: Arc<HedgePolicy>) -> Self {
        Self {
            svc: first.svc,
            head: first.head,
            template: first.template,
            tries: first.tries,
            policy,
            hedges: Vec::new(),
            sent: 0,
            started: None,
            due: false,
            stopped: false,
            last: None,
        }
    }

    /// Whether `result` ends the race: a response the retry rules would
    /// not retry. An error never does while another attempt may still
    /// answer (a hedge refused by a breaker below must not cancel the
    /// first attempt); it is returned when every attempt has finished.
    fn is_answer<ResB>(&self, result: &Result<Response<ResB>, BoxError>) -> bool {
        result.is_ok()
            && matches!(
                self.policy.outcomes.classify(self.head.grpc(), result),
                Verdict::Return
            )
    }

    /// The request of the next hedge, if one may go now: the deadline has
    /// not passed, the body can be sent again (it is not over the cap, and
    /// no attempt is reading the original body), and the budget pays for
    /// it.
    fn next_request(&mut self) -> Option<Request<RetryBody<B>>> {
        let name = &self.policy.name;
        if self
            .head
            .deadline()
            .is_some_and(|d| d.is_expired_at(Instant::now()))
        {
            tracing::debug!(%name, "not hedging request: its deadline has passed");
            return None;
        }
        if !self.template.can_send_again() {
            tracing::debug!(%name, "not hedging request: its body cannot be sent again");
            return None;
        }
        let priority = self.head.priority();
        if !self.policy.budget.withdraw(priority) {
            tracing::debug!(%name, priority = priority.as_str(), "not hedging request: budget exhausted");
            return None;
        }
        let body = self.template.next_body()?;
        let attempt = self.tries.next();
        tracing::debug!(%name, attempt = attempt.number(), "hedging request");
        Some(self.head.request(body, attempt))
    }
}
