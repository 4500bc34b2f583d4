//! Reference services built on the resilience layers, and the plumbing they
//! share.
//!
//! - [`quickstart`]: `shop` calls `inventory`; one id, a shrinking deadline,
//!   a degraded answer instead of a hung page.
//! - [`profile`]: reference service 1, a profile page rendered from three
//!   components, each behind a timeout and its own circuit breaker, that
//!   degrades one component at a time.
//! - [`shop`]: reference service 2, a shop calling several inventory
//!   instances found through discovery (round robin, health checks,
//!   ejection), behind a breaker and a timeout; 4xx against 5xx,
//!   correlation ids across both, and a synthetic "people can order CDs"
//!   check.
//! - [`grpc`]: the gRPC hop: inventory serves its reservations over gRPC
//!   too (correlation, queue and timeout layers on a tonic server,
//!   `grpc.health.v1`), and the shop can call it over gRPC (throttle,
//!   breaker, round robin with gRPC health checks, timeouts, context as
//!   metadata).
//! - [`ingest`]: reference service 3, event ingestion with one bounded
//!   queue per kind of operation: a full queue refuses at once (`429` with
//!   `Retry-After`), and a flood of bulk writes does not starve searches.
//!
//! - [`demo`]: the reference deployment, every service above at once under
//!   mixed-priority traffic through a chaos scenario, with a live
//!   dashboard, a summary table and a chart.
//! - [`soak`]: the server and client stacks over loopback for minutes at
//!   five times the fleet's capacity, an instance dying and coming back,
//!   checking that memory, file descriptors, tasks and queues do not grow.
//!
//! - [`serve`] binds an axum app on loopback and runs it in the background;
//!   [`serve_killable`] does the same with a kill switch (a crash: no more
//!   connections accepted, every open one closed).
//! - [`http_client`] is the outgoing-call stack every service uses:
//!   context propagation over a timeout over a hyper client;
//!   [`forward_to`] is the service a balancer makes for one endpoint.
//! - [`init_logging`] installs the log format that shows the correlation id
//!   on every line (binaries only: libraries never install a subscriber).

pub mod demo;
pub mod fleet;
pub mod grpc;
pub mod ingest;
pub mod profile;
pub mod quickstart;
pub mod shop;
pub mod soak;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use resilience_core::{BoxError, TimeoutLayer};
use resilience_correlation::PropagateContextLayer;
use tokio::task::{JoinHandle, JoinSet};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// The request body of outgoing calls.
pub type Body = Full<Bytes>;

/// An outgoing HTTP client with the family's client layers.
pub type HttpClient =
    BoxCloneSyncService<http::Request<Body>, http::Response<hyper::body::Incoming>, BoxError>;

/// Binds `app` on a free loopback port and serves it in the background.
///
/// # Errors
/// - the port cannot be bound
pub async fn serve(app: Router) -> std::io::Result<SocketAddr> {
    serve_on(app, 0).await
}

/// Binds `app` on loopback port `port` (any free one when `0`) and serves
/// it in the background.
///
/// # Errors
/// - the port cannot be bound
pub async fn serve_on(app: Router, port: u16) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "server stopped");
        }
    });
    Ok(addr)
}

/// An app served on loopback by [`serve_killable`]: its address and its
/// kill switch. Dropping it kills the server too.
#[derive(Debug)]
pub struct KillableServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

/// Binds `app` on loopback port `port` (any free one when `0`) and serves
/// it over HTTP/1.1 in the background, like [`serve_on`], but killable:
/// [`KillableServer::kill`] stops it the way a crash would. The socket is
/// bound with `SO_REUSEADDR`, so a killed server's port can be bound again
/// at once (the instance "comes back" where its clients expect it).
///
/// # Errors
/// - the port cannot be bound
pub async fn serve_killable(app: Router, port: u16) -> std::io::Result<KillableServer> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let listener = socket.listen(1024)?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        // The connections live in this set: when the accept loop is
        // aborted, the set is dropped with it, which aborts every
        // connection's task and so closes its socket.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        let service = TowerToHyperService::new(app.clone());
                        connections.spawn(async move {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Err(error) => {
                        // Out of file descriptors, say: back off a little
                        // instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                // Reap finished connections, so the set holds only open ones.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    });
    Ok(KillableServer { addr, task })
}

impl KillableServer {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills the server as a crash would: it accepts no connection any
    /// more, and every open connection is closed at once (requests in
    /// flight get no answer; their handlers' futures are dropped). Returns
    /// once the listening socket is closed, so the port can be bound again.
    pub async fn kill(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for KillableServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The service a balancer makes for one endpoint: sends each request to
/// `addr` through `hyper`, whatever authority its URI names (its path and
/// query are kept), so callers can write `http://inventory/reserve/cd`.
///
/// Any request body hyper can send: [`Body`], or a retry layer's
/// [`RetryBody<Body>`](resilience_retry::RetryBody) under a retry.
pub fn forward_to<B>(
    hyper: Client<HttpConnector, B>,
    addr: SocketAddr,
) -> impl Service<
    http::Request<B>,
    Response = http::Response<Incoming>,
    Error = BoxError,
    Future: Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let authority: Arc<str> = Arc::from(addr.to_string());
    service_fn(move |mut req: http::Request<B>| {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let uri = format!("http://{authority}{path}").parse::<http::Uri>();
        let hyper = hyper.clone();
        async move {
            *req.uri_mut() = uri?;
            Ok::<_, BoxError>(hyper.request(req).await?)
        }
    })
}

/// The client stack: the current request's context is propagated, and every
/// call times out after `timeout` or at the request's deadline.
pub fn http_client(timeout: Duration) -> HttpClient {
    let hyper = Client::builder(TokioExecutor::new()).build_http::<Body>();
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(PropagateContextLayer::new())
            .layer(TimeoutLayer::new(timeout))
            .service(hyper),
    )
}

/// GETs `url` through `client` and returns the status and body text.
///
/// # Errors
/// - the call failed or timed out, or the body could not be read
pub async fn get_text(
    client: &HttpClient,
    url: &str,
) -> Result<(http::StatusCode, String), BoxError> {
    let req = http::Request::get(url).body(Body::default())?;
    let rsp = client.clone().oneshot(req).await?;
    let status = rsp.status();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Installs a subscriber that prints `HH:MM:SS [service] LEVEL [id] message`,
/// naming each line after the service span it comes from; INFO and above
/// from the examples, DEBUG from the resilience crates.
pub fn init_logging(default_service: &str) {
    init_logging_at(default_service, tracing::Level::DEBUG);
}

/// [`init_logging`], with the resilience crates at `resilience_level` (a
/// flood of requests at DEBUG would bury a demo's output).
pub fn init_logging_at(default_service: &str, resilience_level: tracing::Level) {
    init_logging_to(default_service, resilience_level, std::io::stdout);
}

/// [`init_logging_at`], writing to `writer` (a file, say) instead of
/// standard output.
pub fn init_logging_to<W>(default_service: &str, resilience_level: tracing::Level, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing::Level;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let format =
        resilience_correlation::fmt::CorrelationFormat::new(default_service).with_span_names(true);
    let filter = Targets::new()
        .with_target("resilience", resilience_level)
        .with_default(Level::INFO)
        .with_target("hyper", Level::WARN)
        .with_target("hyper_util", Level::WARN)
        .with_target("h2", Level::WARN)
        .with_target("tower", Level::WARN);
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(writer)
                .event_format(format),
        )
        .with(filter)
        .try_init();
}

/// The README's example, compiled as a doctest so it cannot rot.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Polls `check` every `every` until it holds; panics after 10 s, naming
/// `what`. For tests and demos over real sockets: waits for a state
/// instead of sleeping a fixed time.
pub async fn wait_until<F, Fut>(what: &str, every: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(every).await;
    }
}
