//! The balancer in the two places the docs show: under an axum proxy
//! handler, and as a tonic channel balancer.

mod support;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use resilience_core::HttpOutcome;
use resilience_discovery::{Endpoint, RoundRobin, RoundRobinBuilder};
use support::Instance;
use tower::util::BoxCloneSyncService;
use tower::{ServiceExt, service_fn};

/// An upstream with a concrete error type. (With `BoxError` itself as the
/// endpoint's error, rustc cannot prove the handler's future `Send`:
/// "implementation of `From` is not general enough"; boxing the call's
/// future, `Box::pin(svc.oneshot(req))`, works around that.)
type Upstream = BoxCloneSyncService<
    Request,
    hyper::Response<hyper::body::Incoming>,
    hyper_util::client::legacy::Error,
>;

/// A proxy that forwards every request to the next healthy upstream.
fn proxy(upstreams: RoundRobin<Upstream, HttpOutcome>) -> Router {
    async fn forward(
        State(upstreams): State<RoundRobin<Upstream, HttpOutcome>>,
        req: Request,
    ) -> Response {
        match upstreams.oneshot(req).await {
            Ok(rsp) => rsp.map(Body::new),
            // No healthy upstream: 503; a transport error: 500.
            Err(err) => resilience_core::http::error_response(&*err).map(Body::from),
        }
    }
    Router::new().fallback(forward).with_state(upstreams)
}

fn upstream_maker() -> impl Fn(&Endpoint) -> Upstream + Send + Sync + 'static {
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    move |ep: &Endpoint| {
        let (client, authority) = (client.clone(), ep.addr().to_string());
        BoxCloneSyncService::new(service_fn(move |mut req: Request| {
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            *req.uri_mut() = format!("http://{authority}{path}")
                .parse()
                .expect("an address and a path make a valid uri");
            client.request(req)
        }))
    }
}

async fn get(app: &Router) -> (u16, String) {
    let rsp = app
        .clone()
        .oneshot(Request::new(Body::empty()))
        .await
        .unwrap();
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_an_axum_proxy_handler() {
    let instances = [
        Instance::start().await,
        Instance::start().await,
        Instance::start().await,
    ];
    let upstreams = RoundRobinBuilder::new()
        .with_classifier(HttpOutcome::new())
        .build_with_endpoints(
            instances.iter().map(|i| Endpoint::new(i.addr)),
            upstream_maker(),
        );
    let handle = upstreams.handle();
    let app = proxy(upstreams);
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..300 {
        let (status, body) = get(&app).await;
        assert_eq!(status, 200);
        *counts.entry(body).or_default() += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [100; 3],
        "{counts:?}"
    );

    for i in &instances {
        handle.remove(i.addr);
    }
    let (status, body) = get(&app).await;
    assert_eq!(status, 503, "{body}");
}

#[cfg(feature = "grpc")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_tonic_channel_balancer() {
    use resilience_core::GrpcOutcome;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tonic::transport::Channel;
    use tonic_health::ServingStatus;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    // Three gRPC servers, each counting the calls it serves.
    let mut addrs = Vec::new();
    let mut counters = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let count = tower::layer::layer_fn(move |inner| {
            let c = c.clone();
            tower::util::MapRequest::new(inner, move |req: http::Request<tonic::body::Body>| {
                c.fetch_add(1, Ordering::Relaxed);
                req
            })
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(listener.local_addr().unwrap());
        let incoming = futures_util::stream::unfold(listener, |l| async move {
            Some((l.accept().await.map(|(s, _)| s), l))
        });
        tasks.push(tokio::spawn(async move {
            tonic::transport::Server::builder()
                .layer(count)
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        }));
        counters.push((calls, reporter));
    }
    let balancer = RoundRobinBuilder::new()
        .with_classifier(GrpcOutcome::new())
        .build_with_endpoints(addrs.iter().map(|a| Endpoint::new(*a)), |ep: &Endpoint| {
            Channel::from_shared(format!("http://{}", ep.addr()))
                .expect("valid uri")
                .connect_lazy()
        });
    let mut client = HealthClient::new(balancer);
    for _ in 0..30 {
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
    }
    let served: Vec<usize> = counters
        .iter()
        .map(|(c, _)| c.load(Ordering::Relaxed))
        .collect();
    assert_eq!(served, [10, 10, 10]);
    for t in tasks {
        t.abort();
    }
}
