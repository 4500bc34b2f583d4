//! The standard server stack: one layer in front of a whole service.
//!
//! ```text
//! ServerStackLayer
//!  └ CorrelationLayer     context in: id, trace, priority, deadline; the id echoed on every answer
//!     └ refusals mapped   every refusal below becomes its answer: 503/429 + Retry-After, 504
//!        │                (or the gRPC status); the error type is Infallible
//!        └ TimeoutLayer   the configured timeout, or sooner at the request's deadline
//!           └ BoundedQueue  a concurrency limit with a bounded priority queue (CoDel, LIFO
//!              │            under overload, lower priorities shed first)
//!              └ your service (an axum Router, tonic services)
//! ```
//!
//! **Why this order.** The context is read first so that everything below
//! sees the request's priority and deadline, and so that a refusal carries
//! the request's id like any answer. Refusals are mapped right under it: the
//! mapping sees every error of the layers below, and the answer it makes
//! still gets the id. The timeout is above the queue, so time spent waiting
//! in the queue counts against the request's deadline; a request that times
//! out while queued gives its place up at once (its future is dropped). The
//! queue is the last thing before the service: it limits what runs, not what
//! waits for a timer. This is the order of linkerd's server stack (its
//! `ServerRescue` maps `LoadShedError` and `FailFastError` above the
//! queue) and of ASP.NET Core's (exception handling, then the request
//! timeout, then the concurrency limiter, then the endpoint).
//!
//! # Example
//!
//! On an axum `Router`, in one line (no `HandleErrorLayer`):
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use axum::{Router, routing::get};
//! use resilience::server::{ServerConfig, ServerStackLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let stack = ServerStackLayer::http(ServerConfig::default());
//! let queue = stack.queue_handle().unwrap(); // depth, rejections, for /resilience
//! let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(stack);
//! # use tower::ServiceExt;
//! # let rsp = app.oneshot(http::Request::new(axum::body::Body::empty())).await.unwrap();
//! # assert_eq!(rsp.status(), 200);
//! # assert!(rsp.headers().contains_key("x-correlation-id"));
//! # }
//! # }
//! ```
//!
//! On a tonic server (feature `tonic`), refusals become statuses
//! (`RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`, `UNAVAILABLE`,
//! `DEADLINE_EXCEEDED`) in a trailers-only answer:
//!
//! ```ignore
//! tonic::transport::Server::builder()
//!     .layer(ServerStackLayer::grpc(config))
//!     .add_service(my_service)
//! ```
//!
//! # Clone semantics
//!
//! Cloning the layer shares its queue: every service it makes, and every
//! clone of those, is admitted by one queue and one limit. Build one layer
//! per pool of work.
//!
//! # Errors
//!
//! None: the stack's error type is [`Infallible`]. Every error of the layers
//! below, and of the service, becomes an answer: the family's refusals per
//! [`resilience_core::http`] (or [`grpc`](resilience_core::grpc)); any
//! other error a bare `500` (`UNKNOWN` over gRPC) whose text is never sent,
//! logged at debug.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use resilience_bounded_queue::{BoundedQueue, BoundedQueueHandle, BoundedQueueLayer};
use resilience_core::BoxError;
use resilience_core::http::ErrorResponder;
use resilience_correlation::{Correlation, CorrelationLayer};
use tower_layer::Layer;
use tower_service::Service;

mod body;
mod config;
#[doc(hidden)]
pub mod parts;

use self::parts::{BoxErrors, Either, MapRefusals, OuterFuture, Refusals};
use crate::reload::{ReloadHandle, prefixed};
use crate::retime::{RetimeLayer, Retimed, Tuning};

pub use self::body::ResponseBody;
pub use self::config::{ServerConfig, ServerConfigBuilder, ServerPart};

/// Applies the [`ServerStack`] to a service (an axum `Router`, tonic's
/// routes); see the [module docs](self) for what it does and in which order.
#[derive(Clone)]
pub struct ServerStackLayer {
    correlation: Option<CorrelationLayer>,
    timeout: Option<RetimeLayer>,
    queue: Option<BoundedQueueLayer>,
    refusals: Refusals,
    reload: ReloadHandle<ServerConfig>,
}

/// The standard server stack around a service `S`; made by
/// [`ServerStackLayer`].
pub struct ServerStack<S> {
    inner: Outer<S>,
}

enum Outer<S> {
    Correlated(Correlation<MapRefusals<Timed<S>>>),
    Plain(MapRefusals<Timed<S>>),
}

/// The queue, or the service alone, with its error boxed.
type Queued<S> = Either<BoundedQueue<BoxErrors<S>>, BoxErrors<S>>;
/// The timeout over [`Queued`], or [`Queued`] alone.
type Timed<S> = Either<Retimed<Queued<S>>, Queued<S>>;

pin_project! {
    /// The response future of a [`ServerStack`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
    }
}

// === impl ServerStackLayer ===

impl ServerStackLayer {
    /// The stack for an HTTP server: refusals become HTTP answers
    /// (`503`/`429` + `Retry-After`, `504`, ...).
    ///
    /// With the `metrics` feature, install the recorder first: the queue's
    /// metric handles are registered here.
    pub fn http(config: ServerConfig) -> Self {
        let responder = ErrorResponder::new().overloaded_status(config.overloaded_status);
        Self::with_refusals(config, Refusals::http(responder))
    }

    /// [`http`](Self::http) with [`ServerConfig::default`].
    pub fn http_default() -> Self {
        Self::http(ServerConfig::default())
    }

    /// The stack for a tonic server: refusals become gRPC statuses
    /// (`RESOURCE_EXHAUSTED` + `grpc-retry-pushback-ms`, `UNAVAILABLE`,
    /// `DEADLINE_EXCEEDED`) in a trailers-only answer; other errors
    /// `UNKNOWN`. `overloaded_status` does not apply.
    #[cfg(feature = "tonic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
    pub fn grpc(config: ServerConfig) -> Self {
        Self::with_refusals(config, Refusals::Grpc)
    }

    fn with_refusals(config: ServerConfig, refusals: Refusals) -> Self {
        let timeout = config.timeout.clone().map(RetimeLayer::new);
        let queue = config.queue.clone().map(BoundedQueueLayer::new);
        let parts = Parts {
            timeout: timeout.as_ref().map(RetimeLayer::tuning),
            queue: queue.as_ref().map(BoundedQueueLayer::handle),
        };
        let name = config
            .queue
            .as_ref()
            .map_or(ServerConfig::DEFAULT_NAME, |q| q.name())
            .to_owned();
        let reload = ReloadHandle::new(
            name,
            config.clone(),
            Box::new(move |current, new| parts.reconfigure(current, new)),
        );
        Self {
            correlation: config.correlation.map(CorrelationLayer::with_config),
            timeout,
            queue,
            refusals,
            reload,
        }
    }

    /// The handle that changes this stack's settings at run time, without
    /// losing its state (the queue's waiters and counts): see
    /// [`crate::reload`] and the table on [`ServerConfig`]. Its name (the
    /// `name` label of its metrics) is the queue's, or `server` without a
    /// queue.
    pub fn reload_handle(&self) -> ReloadHandle<ServerConfig> {
        self.reload.clone()
    }

    /// Maps refusals with `responder` instead (HTTP only: e.g.
    /// [`ErrorResponder::serving`] for `408` rather than `504` on a
    /// timeout).
    #[must_use]
    pub fn with_responder(mut self, responder: ErrorResponder) -> Self {
        self.refusals = Refusals::http(responder);
        self
    }

    /// The queue's handle (snapshot: depth, running, rejections), unless the
    /// queue is removed.
    pub fn queue_handle(&self) -> Option<BoundedQueueHandle> {
        self.queue.as_ref().map(BoundedQueueLayer::handle)
    }
}

/// What a reload changes in a server stack.
struct Parts {
    timeout: Option<Arc<Tuning>>,
    queue: Option<BoundedQueueHandle>,
}

impl Parts {
    /// Applies `new` over `current` in place; see [`crate::reload`].
    fn reconfigure(
        &self,
        current: &ServerConfig,
        new: &ServerConfig,
    ) -> (ServerConfig, Vec<&'static str>) {
        let mut restart_only = Vec::new();
        let mut in_force = current.clone();
        if new.correlation.is_some() != current.correlation.is_some() {
            restart_only.push("correlation");
        }
        if new.overloaded_status != current.overloaded_status {
            restart_only.push("overloaded_status");
        }
        match (&self.timeout, &new.timeout) {
            (Some(tuning), Some(config)) => {
                tuning.set(config);
                in_force.timeout = Some(config.clone());
            }
            (None, None) => {}
            _ => restart_only.push("timeout"),
        }
        match (&self.queue, &new.queue) {
            (Some(queue), Some(config)) => {
                restart_only.extend(prefixed("queue", queue.reconfigure(config)));
                in_force.queue = Some(queue.config());
            }
            (None, None) => {}
            _ => restart_only.push("queue"),
        }
        (in_force, restart_only)
    }
}

impl fmt::Debug for ServerStackLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStackLayer")
            .field("correlation", &self.correlation.is_some())
            .field("timeout", &self.timeout.as_ref().map(RetimeLayer::timeout))
            .field(
                "queue",
                &self.queue.as_ref().map(|q| q.handle().name().to_owned()),
            )
            .field("refusals", &self.refusals)
            .finish()
    }
}

impl<S> Layer<S> for ServerStackLayer {
    type Service = ServerStack<S>;

    fn layer(&self, inner: S) -> ServerStack<S> {
        let queued = match &self.queue {
            Some(queue) => Either::A(queue.layer(BoxErrors(inner))),
            None => Either::B(BoxErrors(inner)),
        };
        let timed = match &self.timeout {
            Some(timeout) => Either::A(timeout.layer(queued)),
            None => Either::B(queued),
        };
        let mapped = MapRefusals {
            inner: timed,
            refusals: self.refusals,
            failed: None,
        };
        let inner = match &self.correlation {
            Some(correlation) => Outer::Correlated(correlation.layer(mapped)),
            None => Outer::Plain(mapped),
        };
        ServerStack { inner }
    }
}

// === impl ServerStack ===

impl<S: Clone> Clone for ServerStack<S> {
    fn clone(&self) -> Self {
        let inner = match &self.inner {
            Outer::Correlated(svc) => Outer::Correlated(svc.clone()),
            Outer::Plain(svc) => Outer::Plain(svc.clone()),
        };
        Self { inner }
    }
}

impl<S> fmt::Debug for ServerStack<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStack").finish_non_exhaustive()
    }
}

type MappedFuture<S, ReqB> = <MapRefusals<Timed<S>> as Service<Request<ReqB>>>::Future;
type CorrelatedFuture<S, ReqB> =
    <Correlation<MapRefusals<Timed<S>>> as Service<Request<ReqB>>>::Future;

impl<S, ReqB, ResB> Service<Request<ReqB>> for ServerStack<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    ResB: Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = Infallible;
    type Future = ResponseFuture<OuterFuture<CorrelatedFuture<S, ReqB>, MappedFuture<S, ReqB>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match &mut self.inner {
            Outer::Correlated(svc) => svc.poll_ready(cx),
            Outer::Plain(svc) => svc.poll_ready(cx),
        }
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let inner = match &mut self.inner {
            Outer::Correlated(svc) => OuterFuture::Correlated { fut: svc.call(req) },
            Outer::Plain(svc) => OuterFuture::Plain { fut: svc.call(req) },
        };
        ResponseFuture { inner }
    }
}

impl<F, T> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, Infallible>>,
{
    type Output = Result<T, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
