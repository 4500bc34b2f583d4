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
//!
//! - [`serve`] binds an axum app on loopback and runs it in the background.
//! - [`http_client`] is the outgoing-call stack every service uses:
//!   context propagation over a timeout over a hyper client.
//! - [`init_logging`] installs the log format that shows the correlation id
//!   on every line (binaries only: libraries never install a subscriber).

pub mod demo;
pub mod fleet;
pub mod grpc;
pub mod ingest;
pub mod profile;
pub mod quickstart;
pub mod shop;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use resilience_core::{BoxError, TimeoutLayer};
use resilience_correlation::PropagateContextLayer;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

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
