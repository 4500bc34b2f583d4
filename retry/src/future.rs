//! The response future of [`Retry`](crate::Retry).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Extensions, HeaderMap, HeaderName, Method, Request, Response, Uri, Version};
use pin_project_lite::pin_project;
use resilience_core::attempt::{self, FirstTryReport};
use resilience_core::deadline::{DEADLINE_HEADER, GRPC_TIMEOUT_HEADER};
use resilience_core::{Attempt, BoxError, Deadline, Elapsed, Priority};
use tokio::time::{Instant, Sleep, sleep_until};
use tower_service::Service;

use crate::body::{ReplaySource, RetryBody};
use crate::classify::{Verdict, is_grpc};
use crate::layer::Policy;
use crate::metrics::Decline;
use crate::pushback::Pushback;

/// The header carrying the attempt number: `x-attempt`.
#[deprecated(note = "use `resilience_core::attempt::ATTEMPT_HEADER`, the same header")]
pub const ATTEMPT_HEADER: HeaderName = resilience_core::attempt::ATTEMPT_HEADER;
/// The gRPC header carrying the number of attempts before this one:
/// `grpc-previous-rpc-attempts` (gRPC A6).
#[deprecated(
    note = "use `resilience_core::attempt::GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER`, the same header"
)]
pub const GRPC_PREVIOUS_ATTEMPTS_HEADER: HeaderName =
    resilience_core::attempt::GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER;

pin_project! {
    /// The response future of [`Retry`](crate::Retry).
    ///
    /// Dropping it at any point (mid-attempt, mid-backoff, mid-replay)
    /// drops the attempt in flight, the timer, the service clone and the
    /// buffered body.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<RetryBody<B>>>,
    {
        #[pin]
        state: State<S::Future>,
        // The attempt timer, then the backoff.
        #[pin]
        sleep: Option<Sleep>,
        timer: Timer,
        retry: Option<Retrying<S, B>>,
        // The last attempt's outcome, kept while waiting to retry: returned
        // if the retry cannot start after all.
        // (Boxed: kept only while waiting to retry, it would otherwise
        // make every first try's future larger to move.)
        last: Option<Box<Result<S::Response, BoxError>>>,
        // The `attempt` span of a retry (none for the first try, which
        // costs nothing): entered while the retry is called and polled, so
        // its log lines say which attempt they are about.
        span: Option<tracing::Span>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Attempt { #[pin] fut: F },
        Backoff,
        Ready,
        Done,
    }
}

/// The per-attempt timeout.
#[derive(Debug, Clone, Copy)]
struct Timer {
    timeout: Option<Duration>,
    deadline: Option<Deadline>,
    armed: bool,
    at_deadline: bool,
}

/// What a retryable request keeps to send itself again.
pub(crate) struct Retrying<S, B> {
    svc: S,
    head: Head,
    template: Template<B>,
    next: Option<RetryBody<B>>,
    /// The attempts of the request (see [`Tries`]).
    tries: Tries,
    /// This layer's tries so far, the first included (a hedge layer below
    /// may have sent more, with numbers of their own).
    sent: u32,
    /// The first try reported nothing: checked once the second try ends.
    first_unseen: bool,
    policy: Arc<Policy>,
}

/// The attempts of a request that may be sent again: none made yet (the
/// first try went without one: it costs nothing), or the last one sent (or
/// about to be), whose record is shared by every try.
pub(crate) enum Tries {
    /// The first try carried no attempt; what the layers below reported
    /// about it, to start the record with when a second try is made.
    First(FirstTryReport),
    /// The last attempt made.
    Made(Attempt),
}

/// A copy of the request's head.
pub(crate) struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    /// The headers, if there were any (an empty map is not copied).
    headers: Option<HeaderMap>,
    extensions: Extensions,
    grpc: bool,
    deadline: Option<Deadline>,
}

/// Where a retry's body comes from.
pub(crate) enum Template<B> {
    /// The request had no body.
    Empty,
    /// The body is replayed.
    Replay(ReplaySource<B>),
}

/// What a request that may be sent again keeps after its first try left:
/// the service it was sent with, a copy of its head, where the next
/// bodies come from and the first try's attempt. Shared by the retry and
/// the hedge layers.
pub(crate) struct FirstTry<S, B> {
    pub(crate) svc: S,
    pub(crate) head: Head,
    pub(crate) template: Template<B>,
    pub(crate) tries: Tries,
}

// === impl ResponseFuture ===

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<RetryBody<B>>>,
{
    /// A request sent once.
    #[inline]
    pub(crate) fn once(
        fut: S::Future,
        timeout: Option<Duration>,
        deadline: Option<Deadline>,
    ) -> Self {
        Self {
            state: State::Attempt { fut },
            sleep: None,
            timer: Timer::new(timeout, deadline),
            retry: None,
            last: None,
            span: None,
        }
    }

    /// A request that may be retried.
    #[inline]
    pub(crate) fn retrying(fut: S::Future, retry: Retrying<S, B>) -> Self {
        Self {
            state: State::Attempt { fut },
            sleep: None,
            timer: Timer::new(retry.policy.attempt_timeout(), retry.head.deadline),
            retry: Some(retry),
            last: None,
            span: None,
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
        loop {
            match this.state.as_mut().project() {
                StateProj::Attempt { fut } => {
                    let polled = match this.span {
                        None => fut.poll(cx),
                        Some(span) => span.in_scope(|| fut.poll(cx)),
                    };
                    let result = match polled {
                        Poll::Ready(result) => result.map_err(Into::into),
                        Poll::Pending => {
                            // The timer starts at the attempt's first
                            // `Pending`: an attempt that completes at once
                            // never reads the clock.
                            if let Some(at) = this.timer.arm() {
                                arm(this.sleep.as_mut(), at);
                            }
                            if !this.timer.armed {
                                return Poll::Pending;
                            }
                            let sleep = this.sleep.as_mut().as_pin_mut().expect("armed");
                            ready!(sleep.poll(cx));
                            Err(this.timer.elapsed().into())
                        }
                    };
                    this.timer.armed = false;
                    // Drop the finished attempt before deciding: it may
                    // still hold a copy of the body that holds the rest of
                    // the original (a layer below, such as the hedge
                    // layer, wraps the copy in a replay body of its own),
                    // which must be handed back for a retry to replay it.
                    this.state.set(State::Done);
                    let Some(retry) = this.retry.as_mut() else {
                        return Poll::Ready(result);
                    };
                    match retry.decide(&result) {
                        None => return Poll::Ready(result),
                        Some(delay) => {
                            *this.last = Some(Box::new(result));
                            if delay.is_zero() {
                                this.state.set(State::Ready);
                            } else {
                                arm(this.sleep.as_mut(), Instant::now() + delay);
                                this.state.set(State::Backoff);
                            }
                        }
                    }
                }
                StateProj::Backoff => {
                    let sleep = this.sleep.as_mut().as_pin_mut().expect("backoff armed");
                    ready!(sleep.poll(cx));
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    let retry = this.retry.as_mut().expect("only retries wait");
                    let ready = match retry.svc.poll_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(ready) => ready,
                    };
                    let late = retry
                        .head
                        .deadline
                        .is_some_and(|d| d.is_expired_at(Instant::now()));
                    let failed = match ready {
                        Ok(()) => false,
                        Err(error) => {
                            let error: BoxError = error.into();
                            tracing::debug!(name = %retry.policy.name, %error, "inner service failed while waiting to retry");
                            true
                        }
                    };
                    if failed || late {
                        if late {
                            retry.decline(Decline::Deadline);
                        }
                        this.state.set(State::Done);
                        return Poll::Ready(*this.last.take().expect("kept while waiting"));
                    }
                    let req = retry.next_request();
                    let span = tracing::info_span!(
                        target: "resilience_retry",
                        "attempt",
                        attempt = retry.tries.number()
                    );
                    let fut = span.in_scope(|| retry.svc.call(req));
                    *this.span = Some(span);
                    *this.last = None;
                    this.state.set(State::Attempt { fut });
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<RetryBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Attempt { .. } => "attempt",
            State::Backoff => "backoff",
            State::Ready => "ready",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempts", &self.retry.as_ref().map_or(1, |r| r.sent))
            .finish_non_exhaustive()
    }
}

/// Sets the sleep to fire at `at`, reusing the timer entry if there is one.
pub(crate) fn arm(mut sleep: Pin<&mut Option<Sleep>>, at: Instant) {
    match sleep.as_mut().as_pin_mut() {
        Some(s) => s.reset(at),
        None => sleep.set(Some(sleep_until(at))),
    }
}

// === impl Timer ===

impl Timer {
    fn new(timeout: Option<Duration>, deadline: Option<Deadline>) -> Self {
        Self {
            timeout,
            deadline,
            armed: false,
            at_deadline: false,
        }
    }

    /// When the attempt's timer should fire, if it is to be armed now.
    fn arm(&mut self) -> Option<Instant> {
        let timeout = self.timeout?;
        if self.armed {
            return None;
        }
        self.armed = true;
        let mut at = Instant::now() + timeout;
        self.at_deadline = false;
        if let Some(d) = self.deadline {
            if d.instant() <= at {
                at = d.instant();
                self.at_deadline = true;
            }
        }
        Some(at)
    }

    fn elapsed(&self) -> Elapsed {
        if self.at_deadline {
            Elapsed::deadline_exceeded()
        } else {
            Elapsed::new()
        }
    }
}

// === impl Head ===

impl Head {
    #[inline]
    pub(crate) fn new(parts: &http::request::Parts, grpc: bool) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: (!parts.headers.is_empty()).then(|| parts.headers.clone()),
            extensions: parts.extensions.clone(),
            grpc,
            deadline: Deadline::from_extensions(&parts.extensions),
        }
    }
}

impl Head {
    /// Whether the request is a gRPC call.
    pub(crate) fn grpc(&self) -> bool {
        self.grpc
    }

    /// The request's deadline, if it carries one.
    pub(crate) fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    /// The request's priority (default `critical`).
    pub(crate) fn priority(&self) -> Priority {
        Priority::from_extensions(&self.extensions).unwrap_or_default()
    }

    /// The request of another try: the head again, with `attempt` (sharing
    /// the first try's record of tried endpoints), the attempt headers,
    /// and the deadline headers (if any) set to the time left.
    pub(crate) fn request<B>(
        &self,
        body: RetryBody<B>,
        attempt: &Attempt,
    ) -> Request<RetryBody<B>> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.extensions_mut() = self.extensions.clone();
        req.extensions_mut().insert(attempt.clone());
        let mut headers = self.headers.clone().unwrap_or_default();
        attempt.write_headers(&mut headers, self.grpc);
        if let Some(deadline) = self.deadline {
            let http = headers.contains_key(DEADLINE_HEADER);
            let grpc = headers.contains_key(GRPC_TIMEOUT_HEADER);
            if http || grpc {
                deadline.write_headers(&mut headers, Instant::now(), grpc);
                if !http {
                    headers.remove(DEADLINE_HEADER);
                }
            }
        }
        *req.headers_mut() = headers;
        req
    }
}

// === impl Template ===

impl<B> Template<B> {
    /// Whether another try's body can be had now (see
    /// [`ReplaySource::replay`]).
    pub(crate) fn can_send_again(&self) -> bool {
        match self {
            Template::Empty => true,
            Template::Replay(source) => source.can_replay(),
        }
    }

    /// The body of another try, if the body can be sent again.
    pub(crate) fn next_body(&self) -> Option<RetryBody<B>> {
        match self {
            Template::Empty => Some(RetryBody::empty()),
            Template::Replay(source) => source.replay(),
        }
    }
}

// === impl FirstTry ===

impl<S, B> FirstTry<S, B> {
    /// Sends the first try of a request that may be sent again, keeping
    /// what the next tries need: the request carries `attempt`, if any
    /// (inserted after the head's copy, so that each later try inserts
    /// its own), else none, and the call is watched
    /// ([`attempt::observe_first_try`]) for what the layers below report
    /// about it; its body streams while a copy of it is kept (up to `cap`
    /// bytes), and the ready `inner` service goes with it (a clone takes
    /// its place).
    ///
    /// A body whose size hint is over `cap` cannot be sent again: the
    /// request's parts and body are handed back, to be sent once.
    // The request goes back by value, as it came: boxing it would
    // allocate on the path of a body over the cap.
    #[allow(clippy::type_complexity, clippy::result_large_err)]
    #[inline]
    pub(crate) fn send(
        inner: &mut S,
        mut parts: http::request::Parts,
        body: B,
        cap: usize,
        attempt: Option<Attempt>,
    ) -> Result<(S::Future, Self), (http::request::Parts, B)>
    where
        S: Service<Request<RetryBody<B>>> + Clone,
        B: http_body::Body,
    {
        let (first, template) = if body.is_end_stream() {
            (RetryBody::plain(body), Template::Empty)
        } else if body.size_hint().lower() > cap as u64 {
            return Err((parts, body));
        } else {
            let source = ReplaySource::new(body, cap);
            (source.first(), Template::Replay(source))
        };
        let head = Head::new(&parts, is_grpc(&parts.headers));
        let clone = inner.clone();
        let mut svc = std::mem::replace(inner, clone);
        let (fut, tries) = match attempt {
            Some(attempt) => {
                parts.extensions.insert(attempt.clone());
                let fut = svc.call(Request::from_parts(parts, first));
                (fut, Tries::Made(attempt))
            }
            None => {
                let req = Request::from_parts(parts, first);
                let (fut, report) = attempt::observe_first_try(|| svc.call(req));
                (fut, Tries::First(report))
            }
        };
        let first = FirstTry {
            svc,
            head,
            template,
            tries,
        };
        Ok((fut, first))
    }
}

// === impl Tries ===

impl Tries {
    /// The number of the last try made.
    pub(crate) fn number(&self) -> u32 {
        match self {
            Tries::First(_) => 1,
            Tries::Made(attempt) => attempt.number(),
        }
    }

    /// Makes the attempt of another try: the next number of the record,
    /// which the second try starts (from what was reported about the
    /// first, one allocation).
    pub(crate) fn next(&mut self) -> &Attempt {
        let next = match std::mem::replace(self, Tries::First(FirstTryReport::default())) {
            Tries::First(report) => report.into_second(),
            Tries::Made(attempt) => attempt.next(),
        };
        *self = Tries::Made(next);
        match self {
            Tries::Made(attempt) => attempt,
            Tries::First(_) => unreachable!("just made"),
        }
    }

    /// The last attempt made, if any.
    pub(crate) fn made(&self) -> Option<&Attempt> {
        match self {
            Tries::First(_) => None,
            Tries::Made(attempt) => Some(attempt),
        }
    }

    /// Whether the first try went unseen: it reported nothing (no balancer
    /// below, or one behind a layer that calls it later).
    pub(crate) fn first_unseen(&self) -> bool {
        matches!(self, Tries::First(report) if report.is_empty())
    }
}

// === impl Retrying ===

impl<S, B> Retrying<S, B> {
    #[inline]
    pub(crate) fn new(first: FirstTry<S, B>, policy: Arc<Policy>) -> Self {
        Self {
            svc: first.svc,
            head: first.head,
            template: first.template,
            next: None,
            first_unseen: first.tries.first_unseen(),
            tries: first.tries,
            sent: 1,
            policy,
        }
    }

    fn priority(&self) -> Priority {
        self.head.priority()
    }

    fn decline(&self, why: Decline) {
        let priority = self.priority();
        tracing::debug!(
            name = %self.policy.name,
            attempt = self.tries.number(),
            declined = why.as_str(),
            priority = priority.as_str(),
            "not retrying request"
        );
        self.policy.metrics.declined(why, priority);
    }

    /// Whether and after how long to retry after `result`. On `Some`, the
    /// budget has paid for the retry and its body is ready.
    fn decide<ResB>(&mut self, result: &Result<Response<ResB>, BoxError>) -> Option<Duration> {
        self.learn_first_unseen();
        let Verdict::Retry { reason, pushback } =
            self.policy.outcomes.classify(self.head.grpc, result)
        else {
            return None;
        };
        let policy = self.policy.clone();
        if self.sent >= policy.max_attempts() {
            self.decline(Decline::MaxAttempts);
            return None;
        }
        let delay = match pushback {
            Pushback::Stop => {
                self.decline(Decline::Pushback);
                return None;
            }
            Pushback::Delay(d) if d > policy.max_pushback() => {
                self.decline(Decline::Pushback);
                return None;
            }
            Pushback::Delay(d) => d,
            Pushback::None => policy.backoff().delay(self.sent, &policy.random),
        };
        if !self.template.can_send_again() {
            self.decline(Decline::Body);
            return None;
        }
        if let Some(deadline) = self.head.deadline {
            let start = Instant::now().checked_add(delay);
            if start.is_none_or(|s| deadline.is_expired_at(s)) {
                self.decline(Decline::Deadline);
                return None;
            }
        }
        if !policy.budget.withdraw(self.priority()) {
            self.decline(Decline::Budget);
            return None;
        }
        let Some(body) = self.template.next_body() else {
            self.decline(Decline::Body);
            return None;
        };
        self.next = Some(body);
        self.sent += 1;
        let attempt = self.tries.next().number();
        policy.metrics.retry(reason);
        tracing::debug!(
            name = %policy.name,
            attempt,
            reason = reason.as_str(),
            delay_ms = delay.as_millis() as u64,
            "retrying request"
        );
        Some(delay)
    }

    /// After a second try: if the first went unseen but a balancer
    /// recorded the second, the balancer sits behind a layer that hides
    /// first tries (see [`resilience_core::attempt`]): from now on the
    /// layer's first tries carry their attempt.
    fn learn_first_unseen(&mut self) {
        if !self.first_unseen || self.sent < 2 {
            return;
        }
        self.first_unseen = false;
        let recorded = self.tries.made().is_some_and(|a| !a.tried().is_empty());
        if recorded && self.policy.first_tries.learn() {
            tracing::info!(
                name = %self.policy.name,
                "first tries reach the balancer out of sight: they carry their attempt from now on"
            );
        }
    }

    /// The request of the next attempt (see [`Head::request`]).
    fn next_request(&mut self) -> Request<RetryBody<B>> {
        let body = self.next.take().expect("decided to retry");
        let attempt = self.tries.made().expect("decided to retry");
        let req = self.head.request(body, attempt);
        self.policy.metrics.attempt();
        req
    }
}
