//! The parts a [`ServerStack`](super::ServerStack)'s type is made of; not
//! for use on their own.
#![allow(missing_docs, missing_debug_implementations)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use pin_project_lite::pin_project;
use resilience_core::http::{ErrorResponder, retry_after_value};
use resilience_core::{BoxError, Classify as _, Rejected, RejectionKind};
use tower_service::Service;

use super::ResponseBody;

/// How refusals become answers.
#[derive(Debug, Clone, Copy)]
pub enum Refusals {
    Http(HttpRefusals),
    #[cfg(feature = "tonic")]
    Grpc,
}

/// An [`ErrorResponder`], and the status it gives each kind of
/// [`Rejected`], worked out once: a refusal is answered without asking it
/// again (see `Refusals::respond`).
#[derive(Debug, Clone, Copy)]
pub struct HttpRefusals {
    responder: ErrorResponder,
    statuses: [StatusCode; KINDS.len()],
}

/// The kinds of [`Rejected`] the fast path knows (the enum is
/// non-exhaustive: another kind takes the responder's own path).
const KINDS: [RejectionKind; 5] = [
    RejectionKind::Overloaded,
    RejectionKind::CircuitOpen,
    RejectionKind::Throttled,
    RejectionKind::NoHealthyEndpoint,
    RejectionKind::Disabled,
];

/// The text of each of [`KINDS`] (its `Display`), made once per process.
fn kind_texts() -> &'static [&'static str; KINDS.len()] {
    static TEXTS: OnceLock<[&'static str; KINDS.len()]> = OnceLock::new();
    TEXTS.get_or_init(|| KINDS.map(|k| &*Box::leak(k.to_string().into_boxed_str())))
}

/// `Retry-After` values up to this many seconds are made once.
const STATIC_SECS: usize = 60;

/// [`retry_after_value`], without formatting the common values (whole
/// seconds, rounded up, at least 1) each time.
fn retry_after_header(after: Duration) -> HeaderValue {
    static SECS: OnceLock<[&'static str; STATIC_SECS + 1]> = OnceLock::new();
    let secs = after
        .as_secs()
        .saturating_add(u64::from(after.subsec_nanos() > 0))
        .max(1);
    match usize::try_from(secs) {
        Ok(s) if s <= STATIC_SECS => HeaderValue::from_static(
            SECS.get_or_init(|| {
                std::array::from_fn(|n| &*Box::leak(n.to_string().into_boxed_str()))
            })[s],
        ),
        _ => retry_after_value(after),
    }
}

fn kind_index(kind: RejectionKind) -> Option<usize> {
    KINDS.iter().position(|k| *k == kind)
}

/// Maps every error of the inner service to an answer.
#[derive(Debug)]
pub struct MapRefusals<S> {
    pub(crate) inner: S,
    pub(crate) refusals: Refusals,
    /// An error `poll_ready` met, answered by the next `call`.
    pub(crate) failed: Option<BoxError>,
}

/// Boxes a service's error, so the optional layers above agree on one type.
#[derive(Debug, Clone)]
pub struct BoxErrors<S>(pub(crate) S);

/// One of two services with the same request, response and error.
#[derive(Debug, Clone)]
pub enum Either<A, B> {
    A(A),
    B(B),
}

pin_project! {
    #[project = OuterFutureProj]
    pub enum OuterFuture<A, B> {
        Correlated { #[pin] fut: A },
        Plain { #[pin] fut: B },
    }
}

pin_project! {
    #[project = MapFutureProj]
    pub enum MapFuture<F> {
        Called { #[pin] fut: F, refusals: Refusals },
        Refused { response: Option<BoxError>, refusals: Refusals },
    }
}

pin_project! {
    #[project = EitherFutureProj]
    pub enum EitherFuture<A, B> {
        A { #[pin] fut: A },
        B { #[pin] fut: B },
    }
}

pin_project! {
    pub struct BoxErrorsFuture<F> {
        #[pin]
        fut: F,
    }
}

impl<A, B, T, E> Future for OuterFuture<A, B>
where
    A: Future<Output = Result<T, E>>,
    B: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            OuterFutureProj::Correlated { fut } => fut.poll(cx),
            OuterFutureProj::Plain { fut } => fut.poll(cx),
        }
    }
}

// === impl Refusals ===

impl Refusals {
    /// Refusals answered over HTTP by `responder`.
    pub(crate) fn http(responder: ErrorResponder) -> Self {
        let statuses = KINDS.map(|k| responder.respond(&Rejected::new(k, "")).status());
        Refusals::Http(HttpRefusals {
            responder,
            statuses,
        })
    }

    /// The answer to `err`.
    ///
    /// A [`Rejected`] (what the queue refuses with) is answered as the
    /// responder answers it, without formatting anything: the status
    /// worked out when the stack was built, the body the same text made of
    /// static pieces, `Retry-After` when it carries one. Anything else
    /// goes through the responder.
    pub(crate) fn respond<B>(&self, err: &BoxError) -> Response<ResponseBody<B>> {
        match self {
            Refusals::Http(http) => {
                let fast = err.downcast_ref::<Rejected>().and_then(|rejected| {
                    let i = kind_index(rejected.kind())?;
                    Some(refusal(http.statuses[i], kind_texts()[i], rejected))
                });
                let rsp = fast.unwrap_or_else(|| {
                    http.responder
                        .respond(&**err)
                        .map(|text| ResponseBody::refusal(text))
                });
                tracing::debug!(error = %err, status = %rsp.status(), "request refused");
                rsp
            }
            #[cfg(feature = "tonic")]
            Refusals::Grpc => {
                let status = resilience_core::grpc::try_status(&**err)
                    .unwrap_or_else(|| tonic::Status::new(tonic::Code::Unknown, "internal error"));
                tracing::debug!(error = %err, code = ?status.code(), "request refused");
                status.into_http()
            }
        }
    }
}

/// The answer to `rejected`, with the body `"{kind}: {reason}\n"` (what
/// the responder writes for it) from static pieces.
fn refusal<B>(
    status: StatusCode,
    kind: &'static str,
    rejected: &Rejected,
) -> Response<ResponseBody<B>> {
    let reason = rejected.reason();
    let sep = if reason.is_empty() { "" } else { ": " };
    let mut rsp = Response::new(ResponseBody::refusal_static([kind, sep, reason, "\n"]));
    *rsp.status_mut() = status;
    // Room for the correlation id added above, without growing.
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(after) = rejected.retry_after() {
        headers.insert(RETRY_AFTER, retry_after_header(after));
    }
    *rsp.headers_mut() = headers;
    rsp
}

// === impl MapRefusals ===

impl<S: Clone> Clone for MapRefusals<S> {
    fn clone(&self) -> Self {
        // A readiness error belongs to the service that met it.
        Self {
            inner: self.inner.clone(),
            refusals: self.refusals,
            failed: None,
        }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for MapRefusals<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>, Error = BoxError>,
    ResB: Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = Infallible;
    type Future = MapFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.failed.is_some() {
            return Poll::Ready(Ok(()));
        }
        if let Err(err) = ready!(self.inner.poll_ready(cx)) {
            // Answered by the next call, like a refusal of the call itself.
            self.failed = Some(err);
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        match self.failed.take() {
            Some(err) => MapFuture::Refused {
                response: Some(err),
                refusals: self.refusals,
            },
            None => MapFuture::Called {
                fut: self.inner.call(req),
                refusals: self.refusals,
            },
        }
    }
}

impl<F, ResB> Future for MapFuture<F>
where
    F: Future<Output = Result<Response<ResB>, BoxError>>,
    ResB: Body<Data = Bytes>,
{
    type Output = Result<Response<ResponseBody<ResB>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            MapFutureProj::Called { fut, refusals } => {
                Poll::Ready(Ok(match ready!(fut.poll(cx)) {
                    Ok(rsp) => rsp.map(ResponseBody::inner),
                    Err(err) => refusals.respond(&err),
                }))
            }
            MapFutureProj::Refused { response, refusals } => {
                let err = response
                    .take()
                    .unwrap_or_else(|| "polled after completion".into());
                Poll::Ready(Ok(refusals.respond(&err)))
            }
        }
    }
}

// === impl BoxErrors ===

impl<S, Req> Service<Req> for BoxErrors<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxErrorsFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        BoxErrorsFuture {
            fut: self.0.call(req),
        }
    }
}

impl<F, T, E> Future for BoxErrorsFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().fut.poll(cx).map_err(Into::into)
    }
}

// === impl Either ===

impl<A, B, Req> Service<Req> for Either<A, B>
where
    A: Service<Req, Error = BoxError>,
    B: Service<Req, Response = A::Response, Error = BoxError>,
{
    type Response = A::Response;
    type Error = BoxError;
    type Future = EitherFuture<A::Future, B::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Either::A(svc) => svc.poll_ready(cx),
            Either::B(svc) => svc.poll_ready(cx),
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self {
            Either::A(svc) => EitherFuture::A { fut: svc.call(req) },
            Either::B(svc) => EitherFuture::B { fut: svc.call(req) },
        }
    }
}

impl<A, B, T> Future for EitherFuture<A, B>
where
    A: Future<Output = Result<T, BoxError>>,
    B: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            EitherFutureProj::A { fut } => fut.poll(cx),
            EitherFutureProj::B { fut } => fut.poll(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt as _, Empty};

    use super::*;

    /// Status, headers and body of an answer.
    async fn parts<B>(rsp: Response<B>) -> (StatusCode, HeaderMap, Bytes)
    where
        B: Body<Data = Bytes>,
        B::Error: std::fmt::Debug,
    {
        let (head, body) = rsp.into_parts();
        let hint = body.size_hint().exact();
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(hint, Some(bytes.len() as u64), "size hint is exact");
        (head.status, head.headers, bytes)
    }

    /// Every refusal the stack answers on its fast path is the answer the
    /// responder gives: same status, headers and body.
    #[tokio::test]
    async fn a_rejection_is_answered_as_the_responder_answers_it() {
        let responders = [
            ErrorResponder::new(),
            ErrorResponder::new().overloaded_status(StatusCode::TOO_MANY_REQUESTS),
            ErrorResponder::new()
                .serving()
                .disabled_status(StatusCode::FORBIDDEN),
        ];
        for responder in responders {
            let refusals = Refusals::http(responder);
            for kind in KINDS {
                for reason in ["", "queue full"] {
                    for after in [
                        None,
                        Some(Duration::ZERO),
                        Some(Duration::from_millis(1500)),
                        Some(Duration::from_secs(60)),
                        Some(Duration::from_millis(60_001)),
                        Some(Duration::MAX),
                    ] {
                        let mut rejected = Rejected::new(kind, reason);
                        if let Some(after) = after {
                            rejected = rejected.with_retry_after(after);
                        }
                        let err: BoxError = rejected.into();
                        let ours = parts(refusals.respond::<Empty<Bytes>>(&err)).await;
                        let theirs = parts(responder.respond(&*err)).await;
                        assert_eq!(ours, theirs, "{kind:?} {reason:?} {after:?}");
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn other_errors_go_through_the_responder() {
        let refusals = Refusals::http(ErrorResponder::new());
        let errors: Vec<BoxError> = vec![
            std::io::Error::other("secret detail").into(),
            resilience_core::timeout::error::Elapsed::new().into(),
        ];
        for err in errors {
            let ours = parts(refusals.respond::<Empty<Bytes>>(&err)).await;
            let theirs = parts(ErrorResponder::new().respond(&*err)).await;
            assert_eq!(ours, theirs);
        }
        let (status, _, body) =
            parts(refusals.respond::<Empty<Bytes>>(&std::io::Error::other("secret detail").into()))
                .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!String::from_utf8_lossy(&body).contains("secret"));
    }

    #[tokio::test]
    async fn the_static_body_skips_empty_pieces() {
        let body = ResponseBody::<Empty<Bytes>>::refusal_static(["a", "", "b", ""]);
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(2));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"ab");
        let empty = ResponseBody::<Empty<Bytes>>::refusal_static(["", "", "", ""]);
        assert!(empty.is_end_stream());
    }
}
