//! The retry layer in front of real loopback servers: an axum server called
//! through hyper-util's client, and a tonic server called through a
//! `Channel`. Real time, with a 1 ms backoff; no timing is asserted.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use resilience_retry::{HedgeConfig, HedgeLayer, RetryBody, RetryConfig, RetryLayer};
use support::Chunks;
use tonic::codegen::tokio_stream::Stream;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::{ServiceBuilder, ServiceExt};

/// What the axum server saw: per path, the attempts' `x-attempt` headers
/// and bodies.
type Seen = Arc<Mutex<HashMap<String, Vec<(Option<String>, Bytes)>>>>;

/// Answers `503` to the first attempt of each path, then echoes the body.
async fn flaky(
    State(seen): State<Seen>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Bytes) {
    let attempt = headers
        .get("x-attempt")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut seen = seen.lock().unwrap();
    let calls = seen.entry(uri.path().to_owned()).or_default();
    calls.push((attempt, body.clone()));
    if calls.len() == 1 {
        (StatusCode::SERVICE_UNAVAILABLE, Bytes::new())
    } else {
        (StatusCode::OK, body)
    }
}

async fn axum_server() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/{*path}", put(flaky).post(flaky))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn fast() -> RetryConfig {
    RetryConfig::builder()
        .name("loopback")
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .max_replay_body(16)
        .build()
        .unwrap()
}

#[tokio::test]
async fn hyper_client_retries_an_axum_server_with_the_body_replayed() {
    let (addr, seen) = axum_server().await;
    let http: Client<_, RetryBody<Chunks>> = Client::builder(TokioExecutor::new()).build_http();
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(fast()))
        .service(http);

    // A streamed body, of unknown length: kept while it is sent.
    let (body, _) = Chunks::new(&[b"hello ", b"world"]);
    let req = http::Request::put(format!("http://{addr}/doc"))
        .body(body)
        .unwrap();
    let rsp = client.clone().oneshot(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(
        rsp.into_body().collect().await.unwrap().to_bytes(),
        "hello world"
    );
    let doc = seen.lock().unwrap()["/doc"].clone();
    assert_eq!(
        doc,
        [
            (None, Bytes::from_static(b"hello world")),
            (Some("2".to_owned()), Bytes::from_static(b"hello world")),
        ]
    );

    // A POST without an idempotency key: sent once.
    let (body, _) = Chunks::new(&[b"{}"]);
    let req = http::Request::post(format!("http://{addr}/orders"))
        .body(body)
        .unwrap();
    assert_eq!(client.clone().oneshot(req).await.unwrap().status(), 503);
    assert_eq!(seen.lock().unwrap()["/orders"].len(), 1);

    // Over the cap (16 bytes): sent once, whole.
    let (body, _) = Chunks::new(&[b"0123456789", b"abcdefghij"]);
    let req = http::Request::put(format!("http://{addr}/big"))
        .body(body)
        .unwrap();
    assert_eq!(client.clone().oneshot(req).await.unwrap().status(), 503);
    let big = seen.lock().unwrap()["/big"].clone();
    assert_eq!(big, [(None, Bytes::from_static(b"0123456789abcdefghij"))]);
}

#[tokio::test]
async fn hyper_client_with_full_bodies() {
    let (addr, seen) = axum_server().await;
    let http: Client<_, RetryBody<Full<Bytes>>> =
        Client::builder(TokioExecutor::new()).build_http();
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(fast()))
        .service(http);
    let req = http::Request::post(format!("http://{addr}/pay"))
        .header("idempotency-key", "pay-1")
        .body(Full::new(Bytes::from_static(b"42 EUR")))
        .unwrap();
    let rsp = client.oneshot(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(seen.lock().unwrap()["/pay"].len(), 2);
}

#[tokio::test]
async fn hyper_client_retries_through_a_hedge_layer_with_the_body_replayed() {
    let (addr, seen) = axum_server().await;
    // Below a retry layer and a hedge layer, hyper's client takes the
    // hedge layer's body, wrapping the retry layer's.
    let http: Client<_, RetryBody<RetryBody<Chunks>>> =
        Client::builder(TokioExecutor::new()).build_http();
    let retry = RetryLayer::new(fast());
    let hedge = HedgeLayer::new(
        HedgeConfig::builder()
            .name("loopback")
            .delay(Duration::from_secs(30)) // no hedge: the server answers first
            .build()
            .unwrap(),
    )
    .with_budget(retry.budget().clone());
    let client = ServiceBuilder::new()
        .layer(retry)
        .layer(hedge)
        .service(http);
    let (body, _) = Chunks::new(&[b"12 ", b"apples"]);
    let req = http::Request::put(format!("http://{addr}/basket"))
        .body(body)
        .unwrap();
    let rsp = client.oneshot(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let echoed = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed, "12 apples", "the retry sent the whole body again");
    let seen = seen.lock().unwrap()["/basket"].clone();
    assert_eq!(
        seen,
        [
            (None, Bytes::from_static(b"12 apples")),
            (Some("2".to_owned()), Bytes::from_static(b"12 apples")),
        ]
    );
}

/// A health service that is `UNAVAILABLE` on its first call, and records
/// the `grpc-previous-rpc-attempts` of every call.
#[derive(Clone, Default)]
struct FlakyHealth {
    calls: Arc<Mutex<Vec<Option<String>>>>,
}

#[tonic::async_trait]
impl Health for FlakyHealth {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let previous = req
            .metadata()
            .get("grpc-previous-rpc-attempts")
            .map(|v| v.to_str().unwrap().to_owned());
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(previous);
            calls.len()
        };
        if n == 1 {
            Err(Status::unavailable("warming up"))
        } else {
            Ok(Response::new(HealthCheckResponse { status: 1 }))
        }
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unavailable("not yet"))
    }
}

#[tokio::test]
async fn tonic_channel_retries_an_opted_in_method() {
    let health = FlakyHealth::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(HealthServer::new(health.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let config = RetryConfig::builder()
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .grpc_method("/grpc.health.v1.Health/Check")
        .build()
        .unwrap();
    let layer = RetryLayer::new(config);
    let handle = layer.handle();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let channel = ServiceBuilder::new()
        .layer(layer)
        .map_request(|req: http::Request<RetryBody<tonic::body::Body>>| {
            req.map(tonic::body::Body::new)
        })
        .service(channel);
    let mut client = HealthClient::new(channel);

    let rsp = client.check(HealthCheckRequest::default()).await.unwrap();
    assert_eq!(rsp.into_inner().status, 1);
    assert_eq!(
        *health.calls.lock().unwrap(),
        [None, Some("1".to_owned())],
        "the retry says it is one"
    );
    assert_eq!(handle.snapshot().retries_total(), 1);

    // Watch is not opted in: its UNAVAILABLE comes back as it is.
    let err = client
        .watch(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(handle.snapshot().retries_total(), 1);
}
