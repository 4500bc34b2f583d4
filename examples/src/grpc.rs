//! The gRPC hop: `inventory` serves its reservations over gRPC too, and the
//! [`shop`](crate::shop) calls it over gRPC instead of HTTP
//! ([`Shop::new_grpc`](crate::shop::Shop::new_grpc),
//! [`Demo::start_grpc`](crate::shop::Demo::start_grpc), `--grpc` on the
//! `shop` binary). The same layers as over HTTP, on a tonic server and
//! around tonic channels.
//!
//! The service, with messages as `prost`-derived structs and the tonic glue
//! written by hand (no `protoc`, no build script):
//!
//! ```text
//! package inventory.v1;
//! service Inventory { rpc Reserve(ReserveRequest) returns (ReserveReply); }
//! message ReserveRequest { string item = 1; string country = 2; string order_id = 3; }
//! message ReserveReply { string instance = 1; uint32 left = 2; string message = 3; }
//! ```
//!
//! # Server: an instance
//!
//! [`routes`] puts [`CorrelationLayer`] (id, `traceparent`, `x-priority` and
//! the deadline from `grpc-timeout`, validated, into the request's
//! extensions and scope), a [`BoundedQueueLayer`] (admission by priority
//! and deadline) and a [`TimeoutLayer`] (the smaller of its own timeout and
//! the caller's `grpc-timeout`) in front of the inventory service, and
//! [`WithStatus`] maps their refusals to statuses with
//! `resilience_core::grpc::into_status`; [`serve`] serves them with tonic's
//! `Server`:
//!
//! ```ignore
//! let reserve = ServiceBuilder::new()
//!     .layer(CorrelationLayer::new())
//!     .layer(BoundedQueueLayer::new(queue_config))
//!     .layer(TimeoutLayer::new(Duration::from_secs(1)))
//!     .service(InventoryServer::new(inventory));
//! Server::builder().add_service(health).add_service(WithStatus::new(reserve))
//! ```
//!
//! (The layers sit on the inventory service rather than on the whole
//! `Server` so that health checks skip the queue; `Server::builder().layer(..)`
//! with `.map_err(into_status)` outermost works too.) The deadline the
//! queue and the timeout enforce is the caller's less [`ANSWER_MARGIN`]:
//! tonic's `Server` also starts a timer at the caller's `grpc-timeout`,
//! outside every layer, and answers `CANCELLED` when it fires first.
//!
//! | refusal | status | metadata |
//! |---|---|---|
//! | queue full, shed by priority, waited too long | `RESOURCE_EXHAUSTED` | `grpc-retry-pushback-ms` |
//! | the deadline (own, or `grpc-timeout` less [`ANSWER_MARGIN`]) passed | `DEADLINE_EXCEEDED` | |
//! | the instance is failing ([`Mode::Failing`]) | `UNAVAILABLE` | `x-served-by` |
//! | unknown item / invalid country | `NOT_FOUND` / `INVALID_ARGUMENT` | `x-served-by` |
//!
//! Bad metadata never fails a call: a malformed or too large `grpc-timeout`
//! is ignored (the server's own timeout still bounds the call), an invalid
//! id (too long, non-ASCII, spaces) is replaced by a fresh one, and an
//! unknown priority counts as the default, `critical`.
//!
//! The `grpc.health.v1` service (tonic-health's messages) sits beside the
//! inventory service, not behind its queue: a busy instance is busy, not
//! dead, and its health checks keep passing. It answers `SERVING` unless
//! the instance is [`Mode::Draining`] (`NOT_SERVING`), for the whole server
//! (`""`) and for [`SERVICE_NAME`]; other names are `NOT_FOUND`.
//!
//! # Client: the shop
//!
//! The standard client stack of the facade
//! ([`ClientStackBuilder::build_grpc`](resilience::client::ClientStackBuilder::build_grpc)),
//! from the shop's file ([`client_config`](crate::shop::client_config)):
//!
//! ```ignore
//! let inventory = ClientStack::builder(client_config())
//!     .endpoints(endpoints)
//!     .grpc_health_service(SERVICE_NAME)
//!     .build_grpc()?;
//! let client = InventoryClient::new(inventory.into_service());
//! ```
//!
//! ```text
//! call deadline + PropagateContext  id, priority, traceparent, grpc-timeout (the time left) as metadata
//!  └ RetryLayer               Reserve opted in: UNAVAILABLE, a timeout or a transport error again
//!     └ ThrottleLayer         adaptive: backs off sheddable calls while inventory answers RESOURCE_EXHAUSTED
//!        └ RoundRobin         the next healthy instance the call has not tried;
//!           │                 grpc.health.v1 checks, passive ejection
//!           └ a breaker per instance  an instance whose circuit is open is skipped
//!              └ TimeoutLayer per instance and try: a timeout counts against the slow instance
//!                 └ Channel   one tonic channel per instance (connected lazily)
//! ```
//!
//! A gRPC call is retried only if its method is opted in
//! ([`RetryConfigBuilder::grpc_method`](resilience_retry::RetryConfigBuilder::grpc_method)):
//! the shop opts [`RESERVE_PATH`] in, since a [`ReserveRequest`] carries its
//! order id and inventory's reservations are idempotent per order id (the
//! same order reserved twice, on one instance or two, answers the same and
//! reserves nothing more). The retry layer takes the body as its
//! `RetryBody` and hands the layers below a `tonic::body::Body` again.
//!
//! How a call's outcome counts is the shared classification,
//! [`GrpcOutcome`]: statuses are read from the trailers-only answer
//! (`grpc-status`) under the balancer, the breaker and the throttle.
//! The breaker and the balancer leave `RESOURCE_EXHAUSTED` to the throttle
//! (`GrpcOutcome::new().without_failure(GrpcCode::ResourceExhausted)`): an
//! overloaded instance is alive, and cutting every call (critical ones
//! included) or shifting its load onto the others would make the overload
//! worse; the throttle sheds sheddable calls first.
//!
//! | outcome of a call | breaker | ejection | throttle (accept?) |
//! |---|---|---|---|
//! | `OK` | success | success | accept |
//! | `NOT_FOUND`, `INVALID_ARGUMENT`, `ALREADY_EXISTS`, `PERMISSION_DENIED`, `UNAUTHENTICATED`, `FAILED_PRECONDITION`, `OUT_OF_RANGE`, `UNIMPLEMENTED`, `CANCELLED`, `ABORTED` | caller's error: not counted | not counted | accept |
//! | `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `INTERNAL`, `UNKNOWN`, `DATA_LOSS` | failure | failure | not an accept |
//! | `RESOURCE_EXHAUSTED` | not counted | not counted | not an accept |
//! | client timeout, transport error (connection refused) | failure | failure | not an accept |
//! | circuit open, no healthy instance | (refused by it) | (refused by it) | not an accept |
//!
//! # Example
//!
//! ```
//! use resilience_examples::shop::{Demo, client_config};
//! use resilience_examples::grpc::GrpcServerSettings;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), resilience_core::BoxError> {
//! let demo = Demo::start_grpc(client_config(), &GrpcServerSettings::DEMO).await?;
//! let order = demo.order("cd", "DE", "123-gda").await?;
//! assert_eq!(order.status, 200);
//! let seen = demo.instance(order.served_by.as_deref().unwrap()).seen("123-gda").unwrap();
//! assert_eq!(seen.over, "grpc");
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use resilience_bounded_queue::{BoundedQueueConfig, BoundedQueueHandle, BoundedQueueLayer};
use resilience_core::timeout::TimeoutConfig;
use resilience_core::{BoxError, ConfigError, Deadline, GrpcOutcome, TimeoutLayer};
use resilience_correlation::CorrelationLayer;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::tokio_stream::Stream;
use tonic::codegen::{Body as HttpBody, StdError};
use tonic::metadata::MetadataValue;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::{IntoRequest, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder};
use tracing::Instrument;

use crate::shop::{Inventory, Mode, Reservation, SERVED_BY_HEADER};

/// The gRPC service's full name.
pub const SERVICE_NAME: &str = "inventory.v1.Inventory";

/// The path of the `Reserve` method.
pub const RESERVE_PATH: &str = "/inventory.v1.Inventory/Reserve";

/// The request of `Reserve`: one `item` to ship to `country`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ReserveRequest {
    /// The item, e.g. `cd`.
    #[prost(string, tag = "1")]
    pub item: String,
    /// The country, e.g. `DE`.
    #[prost(string, tag = "2")]
    pub country: String,
    /// The order's id (the shop sends its correlation id); empty if the
    /// caller has none. Reserving is idempotent per order id, so a call
    /// carrying one may be sent twice (see the [module docs](self)).
    #[prost(string, tag = "3")]
    pub order_id: String,
}

/// The answer of `Reserve`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ReserveReply {
    /// The instance that reserved it.
    #[prost(string, tag = "1")]
    pub instance: String,
    /// How many are left in stock.
    #[prost(uint32, tag = "2")]
    pub left: u32,
    /// A sentence saying so.
    #[prost(string, tag = "3")]
    pub message: String,
}

/// A client of the inventory gRPC service over any transport `T`: a tonic
/// `Channel`, or a stack of layers around channels ([`GrpcTransport`]).
#[derive(Debug, Clone)]
pub struct InventoryClient<T> {
    inner: tonic::client::Grpc<T>,
}

/// The transport under the shop's [`InventoryClient`]: the client layers
/// over the balanced channels, their errors as statuses (with the error as
/// the status's source).
pub type GrpcTransport = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    Status,
>;

/// A gRPC client or server service behind layers: errors are the family's.
pub type BoxGrpcService = BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    BoxError,
>;

/// The server side of the inventory service, for one instance: decodes
/// `Reserve` calls and hands them to the [`Inventory`].
#[derive(Debug, Clone)]
pub struct InventoryServer {
    inventory: Inventory,
}

/// A tonic service made of `inner` and layers whose errors are the
/// family's: each error becomes a status (`resilience_core::grpc::into_status`),
/// so tonic's router takes it.
#[derive(Debug, Clone)]
pub struct WithStatus {
    inner: BoxGrpcService,
}

/// How an instance's gRPC server admits calls.
#[derive(Debug, Clone)]
pub struct GrpcServerSettings {
    /// Calls served at once.
    pub concurrency: usize,
    /// Calls waiting for a slot; more are refused at once
    /// (`RESOURCE_EXHAUSTED`).
    pub capacity: usize,
    /// The longest a call may take, whatever its `grpc-timeout` says.
    pub timeout: Duration,
}

/// One inventory instance served over gRPC on loopback.
#[derive(Debug)]
pub struct GrpcInstance {
    inventory: Inventory,
    addr: SocketAddr,
    queue: BoundedQueueHandle,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: AbortHandle,
}

/// The health service of one instance.
struct InventoryHealth {
    inventory: Inventory,
}

// === impl GrpcServerSettings ===

impl GrpcServerSettings {
    /// 8 calls at once, 32 waiting, at most 1 s each.
    pub const DEMO: GrpcServerSettings = GrpcServerSettings {
        concurrency: 8,
        capacity: 32,
        timeout: Duration::from_secs(1),
    };

    /// The queue of the instance called `name`.
    ///
    /// # Errors
    /// - `concurrency` is zero
    pub fn queue_config(&self, name: &str) -> Result<BoundedQueueConfig, ConfigError> {
        BoundedQueueConfig::builder()
            .name(name)
            .concurrency(self.concurrency)
            .capacity(self.capacity)
            .build()
    }
}

// === impl InventoryServer ===

impl InventoryServer {
    /// Serves `inventory`'s reservations.
    pub fn new(inventory: Inventory) -> Self {
        Self { inventory }
    }
}

impl NamedService for InventoryServer {
    const NAME: &'static str = SERVICE_NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl Service<http::Request<tonic::body::Body>> for InventoryServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let inventory = self.inventory.clone();
        Box::pin(async move {
            if req.uri().path() != RESERVE_PATH {
                return Ok(
                    Status::unimplemented(format!("no method {}", req.uri().path())).into_http(),
                );
            }
            let method = tower::service_fn(move |req: tonic::Request<ReserveRequest>| {
                let inventory = inventory.clone();
                async move {
                    let ReserveRequest {
                        item,
                        country,
                        order_id,
                    } = req.into_inner();
                    let order_id = (!order_id.is_empty()).then_some(order_id);
                    reserve(inventory, item, country, order_id)
                        .instrument(tracing::info_span!("warehouse"))
                        .await
                }
            });
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(method, req).await)
        })
    }
}

/// The `warehouse` step over gRPC.
async fn reserve(
    inventory: Inventory,
    item: String,
    country: String,
    order_id: Option<String>,
) -> Result<tonic::Response<ReserveReply>, Status> {
    let name = inventory.name().to_owned();
    let status = |mut status: Status| {
        if let Ok(value) = MetadataValue::try_from(name.as_str()) {
            status.metadata_mut().insert(SERVED_BY_HEADER, value);
        }
        status
    };
    match inventory
        .take_order(&item, &country, order_id, "grpc")
        .await
    {
        Reservation::Reserved { left } => {
            let message = format!("reserved 1 {item} for {country}, {left} in stock");
            Ok(tonic::Response::new(ReserveReply {
                instance: name,
                left,
                message,
            }))
        }
        Reservation::Failing => Err(status(Status::unavailable("failing"))),
        Reservation::InvalidCountry => {
            Err(status(Status::invalid_argument("invalid country code")))
        }
        Reservation::UnknownItem => Err(status(Status::not_found("unknown item"))),
    }
}

// === impl WithStatus ===

impl WithStatus {
    /// Wraps `inner`, the inventory service behind layers.
    pub fn new<S>(inner: S) -> Self
    where
        S: Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = BoxError,
            > + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self {
            inner: BoxCloneSyncService::new(inner),
        }
    }
}

impl NamedService for WithStatus {
    const NAME: &'static str = SERVICE_NAME;
}

impl Service<http::Request<tonic::body::Body>> for WithStatus {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The layers below admit per request (in the response future).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let svc = self.inner.clone();
        Box::pin(async move {
            use tower::ServiceExt;
            Ok(match svc.oneshot(req).await {
                Ok(rsp) => rsp,
                Err(err) => resilience_core::grpc::into_status(err).into_http(),
            })
        })
    }
}

// === impl InventoryHealth ===

#[tonic::async_trait]
impl Health for InventoryHealth {
    async fn check(
        &self,
        req: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        let mode = self.inventory.count_health_check();
        let service = &req.get_ref().service;
        if !service.is_empty() && service != SERVICE_NAME {
            return Err(Status::not_found("unknown service"));
        }
        let status = match mode {
            Mode::Draining => ServingStatus::NotServing,
            _ => ServingStatus::Serving,
        };
        Ok(tonic::Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("checks only"))
    }
}

/// How long before the caller's deadline the server gives up, so that its
/// `DEADLINE_EXCEEDED` reaches the caller in time: 5 ms.
///
/// It also puts the server's timer ahead of the one tonic's `Server` starts
/// for every call with a `grpc-timeout` (outside every layer), which would
/// answer `CANCELLED` instead.
pub const ANSWER_MARGIN: Duration = Duration::from_millis(5);

/// Moves the request's deadline (for the queue and the timeout, not the
/// context the handler sees) [`ANSWER_MARGIN`] earlier.
fn answer_before_deadline<B>(mut req: http::Request<B>) -> http::Request<B> {
    if let Some(deadline) = Deadline::from_extensions(req.extensions()) {
        let at = deadline.instant();
        let earlier = at.checked_sub(ANSWER_MARGIN).unwrap_or(at);
        req.extensions_mut().insert(Deadline::at(earlier));
    }
    req
}

// === impl GrpcInstance ===

/// The gRPC services of one instance: the inventory service behind
/// correlation, queue and timeout layers, and `grpc.health.v1` beside it;
/// and the handle of its queue. Serve them with tonic's `Server`
/// ([`serve`] does) or, merged into an axum router
/// (`Routes::into_axum_router`), on the same port as HTTP routes.
///
/// # Errors
/// - the settings are invalid
pub fn routes(
    inventory: &Inventory,
    settings: &GrpcServerSettings,
) -> Result<(Routes, BoundedQueueHandle), ConfigError> {
    let queue = BoundedQueueLayer::new(settings.queue_config(inventory.name())?);
    let queue_handle = queue.handle();
    let timeout = TimeoutLayer::new(
        TimeoutConfig::builder()
            .name(inventory.name())
            .timeout(settings.timeout)
            .build()?,
    );
    let reserve = ServiceBuilder::new()
        .layer(CorrelationLayer::new())
        .map_request(answer_before_deadline)
        .layer(queue)
        .layer(timeout)
        .service(InventoryServer::new(inventory.clone()));
    let health = HealthServer::new(InventoryHealth {
        inventory: inventory.clone(),
    });
    let routes = Routes::new(health).add_service(WithStatus::new(reserve));
    Ok((routes, queue_handle))
}

/// Serves `inventory` over gRPC on a free loopback port, in the background
/// (the services of [`routes`]).
///
/// # Errors
/// - the port cannot be bound, or the settings are invalid
pub async fn serve(
    inventory: &Inventory,
    settings: &GrpcServerSettings,
) -> Result<GrpcInstance, BoxError> {
    let (routes, queue_handle) = routes(inventory, settings)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            async move {
                // Sent or dropped: stop either way.
                let _ = stopped.await;
            },
        );
    let task = tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "grpc server stopped");
        }
    });
    Ok(GrpcInstance {
        inventory: inventory.clone(),
        addr,
        queue: queue_handle,
        stop: Mutex::new(Some(stop)),
        task: task.abort_handle(),
    })
}

impl GrpcInstance {
    /// The instance.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its queue: calls in service, waiting, refused.
    pub fn queue(&self) -> &BoundedQueueHandle {
        &self.queue
    }

    /// Stops the server: it accepts no connection any more, and tells the
    /// clients of the connections it had to go away (`GOAWAY`; calls in
    /// flight finish). Its clients' next calls fail to connect.
    pub fn kill(&self) {
        let stop = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
    }
}

impl Drop for GrpcInstance {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === impl InventoryClient ===

impl<T> InventoryClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: HttpBody<Data = Bytes> + Send + 'static,
    <T::ResponseBody as HttpBody>::Error: Into<StdError> + Send,
{
    /// A client sending its calls through `transport`.
    pub fn new(transport: T) -> Self {
        Self {
            inner: tonic::client::Grpc::new(transport),
        }
    }

    /// `Reserve`: one item for a country.
    ///
    /// # Errors
    /// - the status the instance answered, or the transport's error as a
    ///   status (`UNKNOWN` with the error as its source, `UNAVAILABLE` when
    ///   the connection failed)
    pub async fn reserve(
        &mut self,
        request: impl IntoRequest<ReserveRequest>,
    ) -> Result<tonic::Response<ReserveReply>, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::from_error(e.into()))?;
        let path = PathAndQuery::from_static(RESERVE_PATH);
        self.inner
            .unary(
                request.into_request(),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await
    }
}

/// The classification of the shop's breaker and balancer: the shared
/// [`GrpcOutcome`], leaving `RESOURCE_EXHAUSTED` to the throttle (see the
/// [module docs](self)).
pub fn breaker_outcome() -> GrpcOutcome {
    GrpcOutcome::new().without_failure(resilience_core::classify::GrpcCode::ResourceExhausted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use resilience_core::Outcome;
    use resilience_core::classify::GrpcCode;

    #[test]
    fn the_breaker_leaves_resource_exhausted_to_the_throttle() {
        let breaker = breaker_outcome();
        let throttle = GrpcOutcome::new();
        for (code, for_breaker, for_throttle) in [
            (GrpcCode::Ok, Outcome::Success, Outcome::Success),
            (
                GrpcCode::NotFound,
                Outcome::CallerError,
                Outcome::CallerError,
            ),
            (
                GrpcCode::InvalidArgument,
                Outcome::CallerError,
                Outcome::CallerError,
            ),
            (GrpcCode::Unavailable, Outcome::Failure, Outcome::Failure),
            (
                GrpcCode::DeadlineExceeded,
                Outcome::Failure,
                Outcome::Failure,
            ),
            (
                GrpcCode::ResourceExhausted,
                Outcome::CallerError,
                Outcome::Failure,
            ),
        ] {
            assert_eq!(breaker.classify_code(code), for_breaker, "{code:?}");
            assert_eq!(throttle.classify_code(code), for_throttle, "{code:?}");
        }
    }

    #[test]
    fn a_queue_without_slots_is_refused() {
        let settings = GrpcServerSettings {
            concurrency: 0,
            ..GrpcServerSettings::DEMO
        };
        assert!(settings.queue_config("inventory-1").is_err());
        assert!(routes(&Inventory::new("inventory-1"), &settings).is_err());
        assert!(GrpcServerSettings::DEMO.queue_config("inventory-1").is_ok());
    }

    #[test]
    fn the_margin_moves_the_deadline_earlier_and_leaves_requests_without_one() {
        let now = tokio::time::Instant::now();
        let mut req = http::Request::new(());
        req.extensions_mut()
            .insert(Deadline::at(now + Duration::from_millis(100)));
        let req = answer_before_deadline(req);
        assert_eq!(
            Deadline::from_extensions(req.extensions()),
            Some(Deadline::at(
                now + Duration::from_millis(100) - ANSWER_MARGIN
            ))
        );
        let req = answer_before_deadline(http::Request::new(()));
        assert_eq!(Deadline::from_extensions(req.extensions()), None);
    }
}
