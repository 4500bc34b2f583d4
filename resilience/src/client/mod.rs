//! The standard client stack: one cloneable `Service` per dependency.
//!
//! ```text
//! ClientStack
//!  └ overall deadline     the call's deadline: the request's own, or sooner (ClientConfig::deadline)
//!     └ PropagateContext  id, trace, priority and that deadline go along (x-deadline-ms, grpc-timeout)
//!        └ TimeoutLayer   the call as a whole ends at the deadline, tries and backoff included
//!           └ RetryLayer  another try, on another endpoint, within a retry budget; idempotent
//!              │          requests only; never a refusal of the layers below
//!              └ ThrottleLayer   adaptive: refuses locally a share of calls while the endpoints
//!                 │              refuse many (accept ratio)
//!                 └ RoundRobin   healthy endpoints only (active checks), passive ejection after
//!                    │           failures in a row; a try avoids the endpoints already tried
//!                    └ per endpoint:
//!                       CircuitBreaker   one per endpoint (EndpointBreakers): a dead endpoint's
//!                        │               circuit opens, the others' stay closed; an endpoint
//!                        │               whose circuit is open is not ready, so the balancer
//!                        │               picks another (and counts it towards ejection)
//!                        └ TimeoutLayer  the attempt timeout: a slow endpoint's failure
//!                           └ transport  hyper-util client (URI rewritten to the endpoint),
//!                                        or the endpoint's tonic Channel
//! ```
//!
//! # Why this order
//!
//! Polly's standard pipeline (`AddStandardResilienceHandler`: rate
//! limiter, total timeout, retry, circuit breaker, attempt timeout) and
//! Envoy's cluster (route timeout and retry policy above the load balancer,
//! outlier detection and circuit breaking per host, per-try timeout) agree
//! on the outline, and so does this stack:
//!
//! - **The deadline is outermost** (Polly's total timeout, Envoy's route
//!   timeout): it bounds the call, tries and backoff included, and it is
//!   what is propagated, so the next hop stops when the caller has given
//!   up. It is set before the context is propagated, so the header says it.
//! - **Retry above the balancer and the breakers**: each try picks an
//!   endpoint anew (one the call has not tried), as Envoy's retries go to
//!   another host. A breaker below the retry refuses in microseconds and
//!   the retry does not retry a refusal: an open circuit is never hammered.
//!   (Polly puts its breaker under the retry for the same reason.)
//! - **The throttle between retry and balancer**: it sees each try, so it
//!   learns the endpoints' accept ratio, and its refusals are local
//!   (`Throttled`), which the retry never retries. Polly's rate limiter is
//!   outermost because it limits the caller; the adaptive throttle limits
//!   what reaches a struggling dependency, so it sits where the tries are.
//! - **A breaker per endpoint, under the balancer** (Envoy's outlier
//!   detection is per host too): one dead instance opens its own circuit,
//!   and the balancer's passive ejection takes it out of rotation, while the
//!   others keep serving. A single breaker above the balancer would open for
//!   all of them.
//! - **The attempt timeout innermost** (Polly's attempt timeout, Envoy's
//!   per-try timeout): a slow try is a failure *of that endpoint*, counted
//!   by its breaker and its ejection; above the balancer it would drop the
//!   call's future and nobody would be blamed.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use resilience::client::{ClientConfig, ClientStack};
//! use resilience::discovery::Endpoint;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), resilience::BoxError> {
//! let config = ClientConfig::builder("inventory")
//!     .attempt_timeout(Duration::from_millis(300))
//!     .build()?;
//! let inventory = ClientStack::builder(config)
//!     .endpoints([Endpoint::new("127.0.0.1:3001".parse()?)])
//!     .build_http::<String>()?;
//! // `inventory` is a cloneable `Service<http::Request<String>>`; its
//! // handles show the retries, the breakers and the endpoints.
//! assert_eq!(inventory.handles().balancer().snapshot().endpoints.len(), 1);
//! # Ok(()) }
//! ```
//!
//! Other endpoint sources come from [`discovery::source`](resilience_discovery::source):
//! a file, DNS (feature `dns`), etcd (feature `etcd`), each given as
//! [`source`](ClientStackBuilder::source):
//!
//! ```ignore
//! let source = FileSource::new(FileSource::builder("inventory.toml").build()?);
//! let inventory = ClientStack::builder(config).source(source.into_stream()).build_http::<Body>()?;
//! ```
//!
//! # Clone semantics
//!
//! Clones share everything: the retry budget, the throttle, the balancer
//! with its health checks, the breakers and the connection pool.
//!
//! # Errors
//!
//! Calls fail with the member crates' errors, boxed: [`Rejected`] for a
//! refusal (throttled, circuit open, no healthy endpoint),
//! [`Elapsed`](resilience_core::Elapsed) for a timeout, the transport's
//! error otherwise. [`resilience_core::http::error_response`] maps them to
//! answers. Over gRPC they come inside a `tonic::Status` (their source).
//!
//! [`Rejected`]: resilience_core::Rejected

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use resilience_circuit_breaker::throttle::{ThrottleHandle, ThrottleLayer};
use resilience_circuit_breaker::{EndpointBreakers, EndpointBreakersHandle};
use resilience_core::config::MAX_DURATION;
use resilience_core::timeout::TimeoutConfig;
use resilience_core::{
    AttemptFromExtensions, BoxError, ClassifyOutcome, ConfigError, HttpOutcome, TimeoutLayer,
};
use resilience_correlation::PropagateContextLayer;
use resilience_discovery::health::HttpHealthCheck;
use resilience_discovery::source::SourceStream;
use resilience_discovery::{Endpoint, RoundRobin, RoundRobinBuilder, RoundRobinHandle};
use resilience_retry::{RetryBody, RetryHandle, RetryLayer};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;
use tower_layer::Layer;
use tower_service::Service;

mod config;
mod deadline;
mod skip;

use self::deadline::{TunedDeadlineLayer, nanos};
use self::skip::SkipOpen;
use crate::reload::{ReloadHandle, prefixed};
use crate::retime::{RetimeLayer, Tuning};

pub use self::config::{ClientConfig, ClientConfigBuilder, ClientPart};
pub use self::deadline::{CallDeadline, CallDeadlineLayer};

/// A client stack: a cloneable `Service` (`S`, boxed) and the handles of its
/// layers. Built by [`ClientStack::builder`].
pub struct ClientStack<S> {
    service: S,
    handles: ClientHandles,
}

/// The service of an HTTP [`ClientStack`] taking `http::Request<B>`.
pub type HttpService<B> = BoxCloneSyncService<Request<B>, Response<Incoming>, BoxError>;

/// The service of a gRPC [`ClientStack`]: give it to a tonic client
/// (`MyClient::new(stack)`). Errors are `tonic::Status`es with the stack's
/// error as their source.
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub type GrpcService =
    BoxCloneSyncService<Request<tonic::body::Body>, Response<tonic::body::Body>, tonic::Status>;

/// The handles of a [`ClientStack`]'s layers: snapshots for dashboards and
/// health, the balancer's endpoints.
#[derive(Clone)]
pub struct ClientHandles {
    name: String,
    retry: RetryHandle,
    throttle: Option<ThrottleHandle>,
    balancer: RoundRobinHandle,
    breakers: Option<EndpointBreakersHandle>,
    reload: ReloadHandle<ClientConfig>,
}

/// What a reload changes in a client stack.
struct Parts {
    deadline: Option<Arc<AtomicU64>>,
    attempt: Option<Arc<Tuning>>,
    retry: RetryHandle,
    throttle: Option<ThrottleHandle>,
    breakers: Option<EndpointBreakersHandle>,
}

/// Builds a [`ClientStack`]; see [`ClientStack::builder`].
#[must_use]
pub struct ClientStackBuilder {
    config: ClientConfig,
    endpoints: Endpoints,
    #[cfg(feature = "tonic")]
    grpc_health_service: String,
}

enum Endpoints {
    /// The configuration's static list.
    Config,
    Static(Vec<Endpoint>),
    Source(SourceStream),
}

/// Sends each request to one endpoint: its URI's scheme and authority
/// replaced by the endpoint's.
struct Forward<B> {
    client: Client<HttpConnector, B>,
    authority: http::uri::Authority,
}

// === impl ClientStack ===

impl ClientStack<()> {
    /// A builder of the stack `config` describes.
    pub fn builder(config: ClientConfig) -> ClientStackBuilder {
        ClientStackBuilder {
            config,
            endpoints: Endpoints::Config,
            #[cfg(feature = "tonic")]
            grpc_health_service: String::new(),
        }
    }

    /// A builder of the stack with the defaults, for the client `name`.
    ///
    /// # Errors
    /// - `name` is not a valid name (1 to 64 of `[A-Za-z0-9_.-]`)
    pub fn named(name: impl Into<String>) -> Result<ClientStackBuilder, ConfigError> {
        Ok(Self::builder(ClientConfig::builder(name).build()?))
    }
}

impl<S> ClientStack<S> {
    /// The handles of the stack's layers.
    pub fn handles(&self) -> &ClientHandles {
        &self.handles
    }

    /// The service, without the handles.
    pub fn into_service(self) -> S {
        self.service
    }
}

impl<S: Clone> Clone for ClientStack<S> {
    fn clone(&self) -> Self {
        Self {
            service: self.service.clone(),
            handles: self.handles.clone(),
        }
    }
}

impl<S> fmt::Debug for ClientStack<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStack")
            .field("handles", &self.handles)
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for ClientStack<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.service.call(req)
    }
}

// === impl ClientHandles ===

impl ClientHandles {
    /// The client's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The retries: budget and counters.
    pub fn retry(&self) -> &RetryHandle {
        &self.retry
    }

    /// The adaptive throttle, unless removed.
    pub fn throttle(&self) -> Option<&ThrottleHandle> {
        self.throttle.as_ref()
    }

    /// The balancer: endpoints and their states; insert and remove at run
    /// time.
    pub fn balancer(&self) -> &RoundRobinHandle {
        &self.balancer
    }

    /// The breakers, one per live endpoint, unless removed.
    pub fn breakers(&self) -> Option<&EndpointBreakersHandle> {
        self.breakers.as_ref()
    }

    /// The handle that changes this stack's settings at run time, without
    /// losing its state (breaker windows, the retry budget, the throttle's
    /// window, endpoint health): see [`crate::reload`] and the table on
    /// [`ClientConfig`]. Its name (the `name` label of its metrics) is the
    /// client's.
    pub fn reload(&self) -> &ReloadHandle<ClientConfig> {
        &self.reload
    }
}

// === impl Parts ===

impl Parts {
    /// Applies `new` over `current` in place; see [`crate::reload`].
    fn reconfigure(
        &self,
        current: &ClientConfig,
        new: &ClientConfig,
    ) -> (ClientConfig, Vec<&'static str>) {
        let mut restart_only = Vec::new();
        let mut in_force = current.clone();
        if new.name != current.name {
            restart_only.push("name");
        }
        match (&self.deadline, new.deadline) {
            (Some(total), Some(d)) => {
                total.store(nanos(d), Ordering::Relaxed);
                in_force.deadline = Some(d);
            }
            (None, None) => {}
            _ => restart_only.push("deadline"),
        }
        match (&self.attempt, new.attempt_timeout) {
            (Some(tuning), Some(d)) => match attempt_config(&current.name, d) {
                Ok(config) => {
                    tuning.set(&config);
                    in_force.attempt_timeout = Some(d);
                }
                // A valid duration always makes a valid configuration.
                Err(_) => restart_only.push("attempt_timeout"),
            },
            (None, None) => {}
            _ => restart_only.push("attempt_timeout"),
        }
        restart_only.extend(prefixed("retry", self.retry.reconfigure(&new.retry)));
        in_force.retry = self.retry.config();
        match (&self.throttle, &new.throttle) {
            (Some(throttle), Some(config)) => {
                restart_only.extend(prefixed("throttle", throttle.reconfigure(config)));
                in_force.throttle = Some(throttle.config());
            }
            (None, None) => {}
            _ => restart_only.push("throttle"),
        }
        match (&self.breakers, &new.breaker) {
            (Some(breakers), Some(config)) => {
                restart_only.extend(prefixed("breaker", breakers.reconfigure(config)));
                in_force.breaker = Some(breakers.config());
            }
            (None, None) => {}
            _ => restart_only.push("breaker"),
        }
        if new.balancer != current.balancer {
            restart_only.push("balancer");
        }
        if new.health_check != current.health_check {
            restart_only.push("health_check");
        }
        if new.endpoints != current.endpoints {
            restart_only.push("endpoints");
        }
        (in_force, restart_only)
    }
}

impl fmt::Debug for ClientHandles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandles")
            .field("name", &self.name)
            .field("retry", &self.retry)
            .field("throttle", &self.throttle)
            .field("balancer", &self.balancer)
            .field("breakers", &self.breakers.as_ref().map(|b| b.len()))
            .field("reload", &self.reload)
            .finish()
    }
}

// === impl ClientStackBuilder ===

impl ClientStackBuilder {
    /// A fixed list of endpoints (instead of the configuration's).
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        self.endpoints = Endpoints::Static(endpoints.into_iter().collect());
        self
    }

    /// Endpoints from a source of
    /// [`resilience_discovery::source`]: a file, DNS, etcd, or a
    /// `StaticSource` changed at run time. Endpoints that appear take calls
    /// once healthy; endpoints that go are dropped (and their breakers with
    /// them).
    pub fn source(mut self, source: SourceStream) -> Self {
        self.endpoints = Endpoints::Source(source);
        self
    }

    /// The gRPC service whose `grpc.health.v1` status the health checks
    /// ask for (default `""`: the server as a whole).
    #[cfg(feature = "tonic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
    pub fn grpc_health_service(mut self, service: impl Into<String>) -> Self {
        self.grpc_health_service = service.into();
        self
    }

    /// The stack over HTTP/1 with a new hyper-util client (one connection
    /// pool for every endpoint). Requests go to `http://<endpoint><path>`:
    /// only the path and query of a request's URI are kept.
    ///
    /// Call it inside a tokio runtime: the health checks start at once, and
    /// an endpoint takes calls once its first check passes.
    ///
    /// # Errors
    /// - the attempt timeout makes an invalid timeout configuration
    ///   (the rest was validated with the [`ClientConfig`])
    ///
    /// # Panics
    /// - outside a tokio runtime
    pub fn build_http<B>(self) -> Result<ClientStack<HttpService<B>>, ConfigError>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let client = Client::builder(TokioExecutor::new()).build_http::<RetryBody<B>>();
        self.build_http_with(client)
    }

    /// [`build_http`](Self::build_http) over your hyper-util client (its
    /// pool, timeouts, HTTP/2).
    ///
    /// # Errors
    /// - as [`build_http`](Self::build_http)
    ///
    /// # Panics
    /// - outside a tokio runtime
    pub fn build_http_with<B>(
        self,
        client: Client<HttpConnector, RetryBody<B>>,
    ) -> Result<ClientStack<HttpService<B>>, ConfigError>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let config = self.config;
        let attempt_timeout = attempt_timeout(&config)?;
        let attempt_tuning = attempt_timeout.as_ref().map(RetimeLayer::tuning);
        let breakers = config.breaker.clone().map(EndpointBreakers::new);
        let breakers_handle = breakers.as_ref().map(EndpointBreakers::handle);
        let maker = move |ep: &Endpoint| -> EndpointService<RetryBody<B>> {
            let forward = Forward {
                client: client.clone(),
                authority: authority(ep),
            };
            endpoint_service(ep, forward, attempt_timeout.as_ref(), breakers.as_ref())
        };
        let mut balancer = RoundRobinBuilder::new()
            .config(config.balancer.clone())
            .with_classifier(HttpOutcome::new())
            .avoid_tried(AttemptFromExtensions);
        if let Some(health) = &config.health_check {
            balancer = balancer.health_check(health.clone(), HttpHealthCheck::from_config(health));
        }
        let balancer = match self.endpoints {
            Endpoints::Config => balancer
                .build_with_endpoints(config.endpoints.iter().copied().map(Endpoint::new), maker),
            Endpoints::Static(endpoints) => balancer.build_with_endpoints(endpoints, maker),
            Endpoints::Source(source) => balancer.build_with_source(source, maker),
        };
        let throttle = config.throttle.clone().map(ThrottleLayer::new);
        let retry = RetryLayer::new(config.retry.clone());
        let deadline = config.deadline.map(TunedDeadlineLayer::new);
        let handles = handles(
            &config,
            &retry,
            &balancer,
            throttle.as_ref().map(ThrottleLayer::handle),
            breakers_handle,
            deadline.as_ref(),
            attempt_tuning,
        );
        let service = ServiceBuilder::new()
            .option_layer(deadline)
            .layer(PropagateContextLayer::new())
            .option_layer(overall_timeout(&config))
            .layer(retry)
            .option_layer(throttle)
            .service(balancer);
        Ok(ClientStack {
            service: BoxCloneSyncService::new(service),
            handles,
        })
    }

    /// The stack over gRPC: one lazily connected tonic `Channel` per
    /// endpoint, `grpc.health.v1` health checks, outcomes judged by gRPC
    /// status ([`GrpcOutcome`](resilience_core::GrpcOutcome), the status in
    /// the trailers included). The breakers and the ejection leave
    /// `RESOURCE_EXHAUSTED` to the throttle: an overloaded endpoint is
    /// alive. Give the service to a tonic client: `MyClient::new(stack)`.
    ///
    /// Retries over gRPC apply to the methods the retry configuration opts
    /// in (`grpc_methods`).
    ///
    /// # Errors
    /// - as [`build_http`](Self::build_http); the health check's timeout is
    ///   invalid as a connect timeout
    ///
    /// # Panics
    /// - outside a tokio runtime
    #[cfg(feature = "tonic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
    pub fn build_grpc(self) -> Result<ClientStack<GrpcService>, ConfigError> {
        use resilience_core::GrpcOutcome;
        use resilience_core::classify::GrpcCode;
        use resilience_discovery::health::GrpcHealthCheck;

        let config = self.config;
        let attempt_timeout = attempt_timeout(&config)?;
        let attempt_tuning = attempt_timeout.as_ref().map(RetimeLayer::tuning);
        let outcome = GrpcOutcome::new().without_failure(GrpcCode::ResourceExhausted);
        let breakers = config
            .breaker
            .clone()
            .map(|c| EndpointBreakers::new(c).with_classifier(outcome));
        let breakers_handle = breakers.as_ref().map(EndpointBreakers::handle);
        let connect_timeout = config
            .attempt_timeout
            .or(config.deadline)
            .unwrap_or(ClientConfig::DEFAULT_ATTEMPT_TIMEOUT);
        let maker = move |ep: &Endpoint| -> EndpointService<tonic::body::Body, tonic::body::Body> {
            // A socket address always makes a valid URI; the fallback (port
            // 0: every call fails, and counts) keeps the maker infallible.
            let channel = tonic::transport::Endpoint::from(
                Uri::try_from(format!("http://{}", ep.addr()))
                    .unwrap_or_else(|_| Uri::from_static("http://127.0.0.1:0")),
            )
            .connect_timeout(connect_timeout)
            .connect_lazy();
            endpoint_service(ep, channel, attempt_timeout.as_ref(), breakers.as_ref())
        };
        let mut balancer = RoundRobinBuilder::new()
            .config(config.balancer.clone())
            .with_classifier(outcome)
            .avoid_tried(AttemptFromExtensions);
        if let Some(health) = &config.health_check {
            let check =
                GrpcHealthCheck::new(self.grpc_health_service).connect_timeout(health.timeout())?;
            balancer = balancer.health_check(health.clone(), check);
        }
        let balancer = match self.endpoints {
            Endpoints::Config => balancer
                .build_with_endpoints(config.endpoints.iter().copied().map(Endpoint::new), maker),
            Endpoints::Static(endpoints) => balancer.build_with_endpoints(endpoints, maker),
            Endpoints::Source(source) => balancer.build_with_source(source, maker),
        };
        let throttle = config
            .throttle
            .clone()
            .map(|c| ThrottleLayer::new(c).with_classifier(GrpcOutcome::new()));
        let retry = RetryLayer::new(config.retry.clone());
        let deadline = config.deadline.map(TunedDeadlineLayer::new);
        let handles = handles(
            &config,
            &retry,
            &balancer,
            throttle.as_ref().map(|t| t.handle()),
            breakers_handle,
            deadline.as_ref(),
            attempt_tuning,
        );
        let service = ServiceBuilder::new()
            // A concrete error type for tonic's client (with `BoxError`
            // rustc cannot prove the call's future `Send`); the status
            // keeps the error as its source.
            .map_err(tonic::Status::from_error)
            .option_layer(deadline)
            .layer(PropagateContextLayer::new())
            .option_layer(overall_timeout(&config))
            .layer(retry)
            .map_request(|req: Request<RetryBody<tonic::body::Body>>| {
                req.map(tonic::body::Body::new)
            })
            .option_layer(throttle)
            .service(balancer);
        Ok(ClientStack {
            service: BoxCloneSyncService::new(service),
            handles,
        })
    }
}

impl fmt::Debug for ClientStackBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStackBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// One endpoint's service, under the balancer.
type EndpointService<ReqB, ResB = Incoming> =
    BoxCloneSyncService<Request<ReqB>, Response<ResB>, BoxError>;

/// One endpoint's service, the same over every transport: the attempt
/// timeout around `transport`, under the endpoint's own breaker (keyed by
/// its address), which makes it unready while open ([`SkipOpen`]).
fn endpoint_service<T, C, ReqB, ResB>(
    ep: &Endpoint,
    transport: T,
    attempt_timeout: Option<&RetimeLayer>,
    breakers: Option<&EndpointBreakers<C>>,
) -> EndpointService<ReqB, ResB>
where
    T: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
    T::Error: Into<BoxError>,
    T::Future: Send + 'static,
    C: ClassifyOutcome<Response<ResB>> + Clone + Send + Sync + 'static,
    ReqB: 'static,
    ResB: 'static,
{
    let attempt = ServiceBuilder::new()
        .option_layer(attempt_timeout.cloned())
        .map_err(Into::<BoxError>::into)
        .service(transport);
    match breakers {
        Some(breakers) => {
            let breaker = breakers.layer_for(ep.addr().to_string());
            let handle = breaker.handle();
            BoxCloneSyncService::new(SkipOpen::new(breaker.layer(attempt), handle))
        }
        None => BoxCloneSyncService::new(attempt),
    }
}

/// The attempt timeout, changed at run time by the stack's reload handle.
fn attempt_timeout(config: &ClientConfig) -> Result<Option<RetimeLayer>, ConfigError> {
    config
        .attempt_timeout
        .map(|d| Ok(RetimeLayer::new(attempt_config(&config.name, d)?)))
        .transpose()
}

fn attempt_config(name: &str, d: Duration) -> Result<TimeoutConfig, ConfigError> {
    TimeoutConfig::builder().name(name).timeout(d).build()
}

/// The timeout that ends a call at its deadline: the deadline itself is
/// set on the request (by the [`TunedDeadlineLayer`] above), so that a
/// change of it applies to the next calls; the timeout honours it.
fn overall_timeout(config: &ClientConfig) -> Option<TimeoutLayer> {
    config.deadline.map(|_| TimeoutLayer::new(MAX_DURATION))
}

fn handles<S, C, A>(
    config: &ClientConfig,
    retry: &RetryLayer,
    balancer: &RoundRobin<S, C, A>,
    throttle: Option<ThrottleHandle>,
    breakers: Option<EndpointBreakersHandle>,
    deadline: Option<&TunedDeadlineLayer>,
    attempt: Option<Arc<Tuning>>,
) -> ClientHandles
where
    S: Clone + Send + Sync + 'static,
{
    let parts = Parts {
        deadline: deadline.map(TunedDeadlineLayer::total),
        attempt,
        retry: retry.handle(),
        throttle: throttle.clone(),
        breakers: breakers.clone(),
    };
    let reload = ReloadHandle::new(
        config.name.clone(),
        config.clone(),
        Box::new(move |current, new| parts.reconfigure(current, new)),
    );
    ClientHandles {
        name: config.name.clone(),
        retry: retry.handle(),
        throttle,
        balancer: balancer.handle(),
        breakers,
        reload,
    }
}

fn authority(ep: &Endpoint) -> http::uri::Authority {
    // A socket address is always a valid authority.
    ep.addr()
        .to_string()
        .parse()
        .unwrap_or_else(|_| http::uri::Authority::from_static("127.0.0.1:0"))
}

// === impl Forward ===

impl<B> Clone for Forward<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            authority: self.authority.clone(),
        }
    }
}

impl<B> Service<Request<B>> for Forward<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        let client = self.client.clone();
        Box::pin(async move {
            *req.uri_mut() = Uri::from_parts(parts)?;
            Ok(client.request(req).await?)
        })
    }
}
