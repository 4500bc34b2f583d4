//! The standard server stack on a real axum router and a real tonic server.
#![cfg(all(feature = "axum", feature = "tonic"))]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use resilience::Priority;
use resilience::correlation::RequestContext;
use resilience::queue::BoundedQueueConfig;
use resilience::server::{ServerConfig, ServerPart, ServerStackLayer};
use resilience::timeout::TimeoutConfig;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// A handler that waits for a permit of `gate` (none at first), then says
/// what context it saw.
async fn held(State(gate): State<Arc<Semaphore>>) -> String {
    gate.acquire().await.expect("gate open").forget();
    seen()
}

fn seen() -> String {
    let ctx = RequestContext::current().expect("the stack sets the context");
    format!(
        "{} {:?} {}",
        ctx.correlation_id(),
        ctx.priority(),
        ctx.deadline()
            .map_or(-1, |d| d.remaining().as_millis() as i64)
    )
}

fn app(stack: ServerStackLayer, gate: Arc<Semaphore>) -> Router {
    Router::new()
        .route("/", get(|| async { seen() }))
        .route("/held", get(held))
        .with_state(gate)
        .layer(stack) // straight into Router::layer: the error is Infallible
}

fn one_at_a_time() -> ServerConfig {
    ServerConfig::builder()
        .queue(
            BoundedQueueConfig::builder()
                .name("test")
                .concurrency(1)
                .capacity(0)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

async fn text(rsp: http::Response<Body>) -> String {
    String::from_utf8(rsp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn the_context_comes_in_and_the_id_goes_back() {
    let app = app(
        ServerStackLayer::http_default(),
        Arc::new(Semaphore::new(0)),
    );
    let req = Request::get("/")
        .header("x-correlation-id", "order-17")
        .header("x-priority", "sheddable")
        .header("x-deadline-ms", "800")
        .body(Body::empty())
        .unwrap();
    let rsp = app.oneshot(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["x-correlation-id"], "order-17");
    let body = text(rsp).await;
    let mut words = body.split(' ');
    assert_eq!(words.next(), Some("order-17"));
    assert_eq!(
        words.next(),
        Some(format!("{:?}", Priority::Sheddable).as_str())
    );
    let left: i64 = words.next().unwrap().parse().unwrap();
    assert!(
        (1..=800).contains(&left),
        "deadline carried: {left} ms left"
    );
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_and_the_id() {
    let gate = Arc::new(Semaphore::new(0));
    let stack = ServerStackLayer::http(one_at_a_time());
    let queue = stack.queue_handle().unwrap();
    let app = app(stack, gate.clone());
    let first = tokio::spawn(
        app.clone()
            .oneshot(Request::get("/held").body(Body::empty()).unwrap()),
    );
    while queue.snapshot().in_service == 0 {
        tokio::task::yield_now().await;
    }
    let req = Request::get("/held")
        .header("x-correlation-id", "order-18")
        .body(Body::empty())
        .unwrap();
    let rsp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(rsp.headers().contains_key("retry-after"));
    assert_eq!(rsp.headers()["x-correlation-id"], "order-18");
    gate.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    // the slot was given back: the next request is served
    gate.add_permits(1);
    let rsp = app
        .oneshot(Request::get("/held").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
}

#[tokio::test]
async fn overload_can_answer_429() {
    let gate = Arc::new(Semaphore::new(0));
    let config = ServerConfig::builder()
        .queue(
            BoundedQueueConfig::builder()
                .concurrency(1)
                .capacity(0)
                .build()
                .unwrap(),
        )
        .overloaded_status(429)
        .build()
        .unwrap();
    let stack = ServerStackLayer::http(config);
    let queue = stack.queue_handle().unwrap();
    let app = app(stack, gate.clone());
    let first = tokio::spawn(
        app.clone()
            .oneshot(Request::get("/held").body(Body::empty()).unwrap()),
    );
    while queue.snapshot().in_service == 0 {
        tokio::task::yield_now().await;
    }
    let rsp = app
        .oneshot(Request::get("/held").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(rsp.headers().contains_key("retry-after"));
    gate.add_permits(1);
    first.await.unwrap().unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_slow_handler_times_out_with_504_and_frees_its_slot() {
    let gate = Arc::new(Semaphore::new(0));
    let config = ServerConfig::builder()
        .timeout(
            TimeoutConfig::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
        )
        .queue(
            BoundedQueueConfig::builder()
                .concurrency(1)
                .capacity(0)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let stack = ServerStackLayer::http(config);
    let queue = stack.queue_handle().unwrap();
    let app = app(stack, gate);
    let rsp = app
        .clone()
        .oneshot(Request::get("/held").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(queue.snapshot().in_service, 0);
    // the request's own deadline, shorter, decides
    let started = tokio::time::Instant::now();
    let req = Request::get("/held")
        .header("x-deadline-ms", "300")
        .body(Body::empty())
        .unwrap();
    let rsp = app.oneshot(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn parts_can_be_removed() {
    let config = ServerConfig::builder()
        .without(ServerPart::Correlation)
        .without(ServerPart::Timeout)
        .without(ServerPart::Queue)
        .build()
        .unwrap();
    let stack = ServerStackLayer::http(config);
    assert!(stack.queue_handle().is_none());
    let app = Router::new()
        .route(
            "/",
            get(|| async { RequestContext::current().is_none().to_string() }),
        )
        .layer(stack);
    let rsp = app
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert!(!rsp.headers().contains_key("x-correlation-id"));
    assert_eq!(text(rsp).await, "true");
}

#[test]
fn invalid_configurations_are_refused() {
    assert!(
        ServerConfig::builder()
            .overloaded_status(500)
            .build()
            .is_err()
    );
    let queue = BoundedQueueConfig::default();
    let err = ServerConfig::builder()
        .queue(queue)
        .without(ServerPart::Queue)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "queue");
}

#[test]
fn the_configuration_reads_from_toml_with_the_same_rules() {
    let config: ServerConfig = toml::from_str(
        r#"
        overloaded_status = 429
        [timeout]
        timeout = "2s"
        [queue]
        name = "api"
        concurrency = 8
        "#,
    )
    .unwrap();
    assert_eq!(config.overloaded_status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(config.queue().unwrap().concurrency(), 8);
    assert_eq!(config.timeout().unwrap().timeout(), Duration::from_secs(2));
    for bad in [
        "overloaded_status = 500",
        "[queue]\nconcurrency = 0",
        "[timeout]\ntimeout = \"0s\"",
        "unknown = 1",
        "without = [\"queue\"]\n[queue]\nconcurrency = 2",
    ] {
        assert!(toml::from_str::<ServerConfig>(bad).is_err(), "{bad}");
    }
}

// === gRPC ===

mod grpc {
    use super::*;
    use std::net::SocketAddr;
    use tonic::transport::{Channel, Server};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    /// Holds every call until the gate opens (a permit per call).
    #[derive(Clone)]
    struct Hold<S> {
        inner: S,
        gate: Arc<Semaphore>,
    }

    impl<S, B> tower::Service<Request<B>> for Hold<S>
    where
        S: tower::Service<Request<B>> + Clone + Send + 'static,
        S::Future: Send,
        B: Send + 'static,
    {
        type Response = S::Response;
        type Error = S::Error;
        type Future = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>,
        >;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), S::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<B>) -> Self::Future {
            let inner = self.inner.clone();
            let gate = self.gate.clone();
            Box::pin(async move {
                gate.acquire().await.expect("gate open").forget();
                inner.oneshot(req).await
            })
        }
    }

    async fn serve(config: ServerConfig, gate: Arc<Semaphore>) -> (SocketAddr, ServerStackLayer) {
        let stack = ServerStackLayer::grpc(config);
        let (_reporter, health) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let layer =
            tower::ServiceBuilder::new()
                .layer(stack.clone())
                .layer(tower::layer::layer_fn(move |inner| Hold {
                    inner,
                    gate: gate.clone(),
                }));
        tokio::spawn(
            Server::builder()
                .layer(layer)
                .add_service(health)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (addr, stack)
    }

    async fn client(addr: SocketAddr) -> HealthClient<Channel> {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        HealthClient::new(channel)
    }

    fn check() -> tonic::Request<HealthCheckRequest> {
        tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        })
    }

    #[tokio::test]
    async fn a_full_queue_is_resource_exhausted_with_pushback() {
        let gate = Arc::new(Semaphore::new(0));
        let (addr, stack) = serve(one_at_a_time(), gate.clone()).await;
        let queue = stack.queue_handle().unwrap();
        let mut first_client = client(addr).await;
        let first = tokio::spawn(async move { first_client.check(check()).await });
        while queue.snapshot().in_service == 0 {
            tokio::task::yield_now().await;
        }
        let mut second = client(addr).await;
        let mut req = check();
        req.metadata_mut()
            .insert("x-correlation-id", "order-19".parse().unwrap());
        let status = second.check(req).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status.metadata().contains_key("grpc-retry-pushback-ms"));
        assert_eq!(
            status.metadata().get("x-correlation-id").unwrap(),
            "order-19"
        );
        gate.add_permits(1);
        assert!(first.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_deadline_exceeded() {
        let gate = Arc::new(Semaphore::new(0)); // never opens
        let config = ServerConfig::builder()
            .timeout(
                TimeoutConfig::builder()
                    .timeout(Duration::from_millis(50))
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let (addr, _stack) = serve(config, gate).await;
        let status = client(addr).await.check(check()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    }
}
