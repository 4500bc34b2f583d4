//! The parts a [`ServerStack`](super::ServerStack)'s type is made of; not
//! for use on their own.
#![allow(missing_docs, missing_debug_implementations)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use resilience_core::BoxError;
use resilience_core::http::ErrorResponder;
use tower_service::Service;

use super::ResponseBody;

/// How refusals become answers.
#[derive(Debug, Clone, Copy)]
pub enum Refusals {
    Http(ErrorResponder),
    #[cfg(feature = "tonic")]
    Grpc,
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
    /// The answer to `err`.
    pub(crate) fn respond<B>(&self, err: &BoxError) -> Response<ResponseBody<B>> {
        match self {
            Refusals::Http(responder) => {
                let rsp = responder.respond(&**err);
                tracing::debug!(error = %err, status = %rsp.status(), "request refused");
                rsp.map(ResponseBody::refusal)
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
