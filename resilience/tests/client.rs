//! The standard client stack against real loopback servers, HTTP and gRPC.
#![cfg(all(feature = "client", feature = "tonic", feature = "serde"))]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request as AxumRequest, State};
use axum::routing::get;
use http::{HeaderMap, Request, StatusCode};
use resilience::breaker::{CircuitBreakerConfig, CircuitState};
use resilience::client::{ClientConfig, ClientPart, ClientStack};
use resilience::correlation::RequestContext;
use resilience::discovery::health::HealthCheckConfig;
use resilience::discovery::{Endpoint, EndpointState, RoundRobinConfig};
use resilience::retry::RetryConfig;
use resilience::{BoxError, Deadline, Priority};
use tower::ServiceExt;

/// One loopback HTTP instance: answers `status` on `/` and `/path`,
/// `health` on `/health`, and remembers the headers and URI of each call.
#[derive(Clone)]
struct Instance {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    health: Arc<AtomicU16>,
    seen: Arc<Mutex<Vec<(String, HeaderMap)>>>,
}

impl Instance {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = Instance {
            addr: listener.local_addr().unwrap(),
            status: Arc::new(AtomicU16::new(200)),
            health: Arc::new(AtomicU16::new(200)),
            seen: Arc::default(),
        };
        async fn call(State(me): State<Instance>, req: AxumRequest) -> (StatusCode, String) {
            let uri = req.uri().to_string();
            me.seen.lock().unwrap().push((uri, req.headers().clone()));
            let status = StatusCode::from_u16(me.status.load(Ordering::Relaxed)).unwrap();
            (status, me.addr.to_string())
        }
        async fn health(State(me): State<Instance>) -> StatusCode {
            StatusCode::from_u16(me.health.load(Ordering::Relaxed)).unwrap()
        }
        let app = Router::new()
            .route("/health", get(health))
            .fallback(call)
            .with_state(me.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        me
    }

    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// An address nothing listens on.
async fn dead_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn get_req(path: &str) -> Request<String> {
    Request::get(path).body(String::new()).unwrap()
}

fn breaker_of_four() -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .name("inventory")
        .count_window(4)
        .minimum_calls(4)
        .failure_rate_threshold(50.0)
        .open_for(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn body_of(rsp: http::Response<hyper::body::Incoming>) -> String {
    use http_body_util::BodyExt;
    String::from_utf8(rsp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

async fn wait_for(mut ok: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 10 s");
}

#[tokio::test]
async fn the_context_is_carried_and_the_uri_rewritten() {
    let a = Instance::start().await;
    let config = ClientConfig::builder("inventory")
        .deadline(Duration::from_secs(1))
        .without(ClientPart::HealthCheck)
        .build()
        .unwrap();
    let client = ClientStack::builder(config)
        .endpoints([Endpoint::new(a.addr)])
        .build_http::<String>()
        .unwrap();
    let ctx = RequestContext::new_root()
        .with_priority(Priority::Critical)
        .with_deadline(Some(Deadline::after(Duration::from_secs(5))));
    let id = ctx.correlation_id().to_string();
    let rsp = ctx
        .scope(
            client
                .clone()
                .oneshot(get_req("http://somewhere.else/path?q=1")),
        )
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let (uri, headers) = a.seen.lock().unwrap()[0].clone();
    assert_eq!(uri, "/path?q=1");
    assert_eq!(headers["x-correlation-id"], id.as_str());
    assert_eq!(headers["x-priority"], "critical");
    let left: u64 = headers["x-deadline-ms"].to_str().unwrap().parse().unwrap();
    assert!(
        left <= 1000,
        "the call's own 1 s deadline, not the request's 5 s: {left}"
    );
    assert!(headers.contains_key("traceparent"));
}

#[tokio::test]
async fn a_dead_instance_is_ejected_its_breaker_opens_alone_and_retries_go_elsewhere() {
    let a = Instance::start().await;
    let b = Instance::start().await;
    let dead = dead_addr().await;
    let config = ClientConfig::builder("inventory")
        .breaker(breaker_of_four())
        .balancer(
            RoundRobinConfig::builder()
                .name("inventory")
                .consecutive_failures(5)
                .base_ejection_time(Duration::from_secs(60))
                .build()
                .unwrap(),
        )
        // The adaptive throttle stays in (the default): the dead
        // instance's first failures are under its minimum of requests, so
        // it refuses none of these sheddable calls.
        .without(ClientPart::HealthCheck)
        .build()
        .unwrap();
    // The dead instance first: a call's first try may land on it, a
    // failure in a window of one request.
    let client = ClientStack::builder(config)
        .endpoints([dead, a.addr, b.addr].map(Endpoint::new))
        .build_http::<String>()
        .unwrap();
    let ctx = RequestContext::new_root().with_priority(Priority::Sheddable);
    for _ in 0..30 {
        let rsp = ctx
            .clone()
            .scope(client.clone().oneshot(get_req("/")))
            .await
            .unwrap();
        assert_eq!(
            rsp.status(),
            200,
            "every call served, the dead instance's tries retried"
        );
    }
    let handles = client.handles();
    assert!(handles.retry().snapshot().retries_total() >= 1);
    let throttle = handles
        .throttle()
        .expect("the default stack has a throttle");
    let (tries, _) = throttle.counts();
    assert!(tries > 30, "the throttle saw every try: {tries}");
    let breakers = handles.breakers().unwrap();
    assert_eq!(
        breakers.get(&dead.to_string()).unwrap().state(),
        CircuitState::Open
    );
    assert_eq!(
        breakers.get(&a.addr.to_string()).unwrap().state(),
        CircuitState::Closed
    );
    assert_eq!(
        breakers.get(&b.addr.to_string()).unwrap().state(),
        CircuitState::Closed
    );
    let state = |addr: SocketAddr| {
        handles
            .balancer()
            .snapshot()
            .endpoints
            .into_iter()
            .find(|e| e.endpoint.addr() == addr)
            .unwrap()
            .state
    };
    assert_eq!(state(dead), EndpointState::Ejected);
    assert_eq!(state(a.addr), EndpointState::Healthy);
    assert_eq!(a.calls() + b.calls(), 30);
}

#[tokio::test]
async fn an_instance_failing_its_health_check_gets_no_calls() {
    let a = Instance::start().await;
    let sick = Instance::start().await;
    sick.health.store(503, Ordering::Relaxed);
    let config = ClientConfig::builder("inventory")
        .health_check(
            HealthCheckConfig::builder()
                .interval(Duration::from_millis(20))
                .healthy_threshold(1)
                .unhealthy_threshold(1)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let client = ClientStack::builder(config)
        .endpoints([a.addr, sick.addr].map(Endpoint::new))
        .build_http::<String>()
        .unwrap();
    let balancer = client.handles().balancer().clone();
    wait_for(|| balancer.snapshot().count(EndpointState::Healthy) == 1).await;
    for _ in 0..10 {
        let rsp = client.clone().oneshot(get_req("/")).await.unwrap();
        assert_eq!(body_of(rsp).await, a.addr.to_string());
    }
    assert_eq!(sick.calls(), 0);
}

#[tokio::test]
async fn an_open_circuit_is_a_503_refusal_made_without_a_call() {
    let a = Instance::start().await;
    a.status.store(503, Ordering::Relaxed);
    let config = ClientConfig::builder("inventory")
        .breaker(breaker_of_four())
        .retry(
            RetryConfig::builder()
                .name("inventory")
                .max_attempts(1)
                .build()
                .unwrap(),
        )
        .without(ClientPart::HealthCheck)
        .without(ClientPart::Throttle)
        .build()
        .unwrap();
    let client = ClientStack::builder(config)
        .endpoints([Endpoint::new(a.addr)])
        .build_http::<String>()
        .unwrap();
    for _ in 0..4 {
        let rsp = client.clone().oneshot(get_req("/")).await.unwrap();
        assert_eq!(rsp.status(), 503); // the instance's own answer, passed on
    }
    // the endpoint's circuit is open: not ready, so no endpoint is
    let err: BoxError = client.clone().oneshot(get_req("/")).await.unwrap_err();
    let rejected = err
        .downcast_ref::<resilience::Rejected>()
        .expect("a refusal");
    assert_eq!(
        rejected.kind(),
        resilience::RejectionKind::NoHealthyEndpoint
    );
    assert_eq!(resilience::http::error_response(&*err).status(), 503);
    assert_eq!(a.calls(), 4, "the open circuit refused without calling");
}

#[tokio::test]
async fn the_call_deadline_ends_a_hanging_call() {
    // an instance that accepts and never answers
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let config = ClientConfig::builder("inventory")
        .deadline(Duration::from_millis(200))
        .without(ClientPart::AttemptTimeout)
        .without(ClientPart::HealthCheck)
        .build()
        .unwrap();
    let client = ClientStack::builder(config)
        .endpoints([Endpoint::new(addr)])
        .build_http::<String>()
        .unwrap();
    let err = client.oneshot(get_req("/")).await.unwrap_err();
    assert_eq!(resilience::http::error_response(&*err).status(), 504);
}

#[test]
fn the_configuration_reads_from_toml_with_the_same_rules() {
    let config: ClientConfig = toml::from_str(
        r#"
        name = "inventory"
        deadline = "1s"
        attempt_timeout = "300ms"
        endpoints = ["127.0.0.1:3001"]
        without = ["throttle"]
        [breaker]
        name = "inventory"
        window_size = 10
        minimum_calls = 10
        [health_check]
        interval = "100ms"
        "#,
    )
    .unwrap();
    assert_eq!(config.deadline(), Some(Duration::from_secs(1)));
    assert_eq!(config.attempt_timeout(), Some(Duration::from_millis(300)));
    assert!(config.throttle().is_none());
    assert_eq!(
        config.health_check().unwrap().interval(),
        Duration::from_millis(100)
    );
    assert_eq!(config.retry().name(), "inventory");
    assert_eq!(ClientStack::named("").unwrap_err().field(), "name");
    assert_eq!(
        ClientConfig::builder("x")
            .attempt_timeout(Duration::from_secs(1))
            .without(ClientPart::AttemptTimeout)
            .build()
            .unwrap_err()
            .field(),
        "attempt_timeout"
    );
    for bad in [
        "name = \"\"",
        "name = \"x\"\ndeadline = \"0s\"",
        "name = \"x\"\n[breaker]\nwindow_size = 0",
        "name = \"x\"\nwithout = [\"breaker\"]\n[breaker]\nwindow_size = 3",
        "name = \"x\"\nunknown = 1",
    ] {
        assert!(toml::from_str::<ClientConfig>(bad).is_err(), "{bad}");
    }
}

// === gRPC ===

mod grpc {
    use super::*;
    use tonic::transport::Server;
    use tonic::transport::server::TcpIncoming;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    const CHECK: &str = "/grpc.health.v1.Health/Check";

    /// A tonic server with the health service, remembering each call's
    /// metadata.
    async fn serve(seen: Arc<Mutex<Vec<HeaderMap>>>) -> SocketAddr {
        let (_reporter, health) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let record = tower::ServiceBuilder::new().map_request(move |req: Request<_>| {
            seen.lock().unwrap().push(req.headers().clone());
            req
        });
        tokio::spawn(
            Server::builder()
                .layer(record)
                .add_service(health)
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        addr
    }

    #[tokio::test]
    async fn grpc_calls_carry_the_context_and_a_dead_instance_opens_only_its_breaker() {
        let seen_a = Arc::new(Mutex::new(Vec::new()));
        let seen_b = Arc::new(Mutex::new(Vec::new()));
        let a = serve(seen_a.clone()).await;
        let b = serve(seen_b.clone()).await;
        let dead = dead_addr().await;
        let config = ClientConfig::builder("health")
            .breaker(breaker_of_four())
            .retry(
                RetryConfig::builder()
                    .name("health")
                    .grpc_method(CHECK)
                    .build()
                    .unwrap(),
            )
            .balancer(
                RoundRobinConfig::builder()
                    .name("health")
                    .consecutive_failures(5)
                    .base_ejection_time(Duration::from_secs(60))
                    .build()
                    .unwrap(),
            )
            // The adaptive throttle stays in: see the HTTP test of a dead
            // instance.
            .without(ClientPart::HealthCheck)
            .build()
            .unwrap();
        let stack = ClientStack::builder(config)
            .endpoints([dead, a, b].map(Endpoint::new))
            .build_grpc()
            .unwrap();
        let handles = stack.handles().clone();
        let mut client = HealthClient::new(stack.into_service());
        let ctx = RequestContext::new_root()
            .with_priority(Priority::Sheddable)
            .with_deadline(Some(Deadline::after(Duration::from_secs(5))));
        let id = ctx.correlation_id().to_string();
        for _ in 0..20 {
            let req = tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            });
            ctx.clone()
                .scope(client.check(req))
                .await
                .expect("served, retried if need be");
        }
        assert!(handles.retry().snapshot().retries_total() >= 1);
        assert!(handles.throttle().is_some());
        let breakers = handles.breakers().unwrap();
        assert_eq!(
            breakers.get(&dead.to_string()).unwrap().state(),
            CircuitState::Open
        );
        assert_eq!(
            breakers.get(&a.to_string()).unwrap().state(),
            CircuitState::Closed
        );
        assert_eq!(
            breakers.get(&b.to_string()).unwrap().state(),
            CircuitState::Closed
        );
        let headers = seen_a.lock().unwrap().last().unwrap().clone();
        assert_eq!(headers["x-correlation-id"], id.as_str());
        assert_eq!(headers["x-priority"], "sheddable");
        assert!(headers.contains_key("grpc-timeout"));
        assert_eq!(
            seen_a.lock().unwrap().len() + seen_b.lock().unwrap().len(),
            20
        );
    }
}
