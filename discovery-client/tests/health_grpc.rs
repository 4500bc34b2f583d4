//! Active gRPC `grpc.health.v1` checks against real tonic servers.
#![cfg(feature = "grpc")]

mod support;

use std::time::Duration;

use resilience_discovery::health::{GrpcHealthCheck, HealthCheckConfig};
use resilience_discovery::{Endpoint, EndpointState, RoundRobinBuilder};
use support::wait_until;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

async fn grpc_server() -> (
    std::net::SocketAddr,
    HealthReporter,
    tokio::task::JoinHandle<()>,
) {
    let (reporter, service) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream_from(listener);
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    (addr, reporter, task)
}

fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_instance_gets_no_traffic_then_comes_back() {
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(grpc_server().await);
    }
    for (_, reporter, _) in &servers {
        reporter
            .set_service_status("users", ServingStatus::Serving)
            .await;
    }
    let config = HealthCheckConfig::builder()
        .interval(Duration::from_millis(100))
        .timeout(Duration::from_secs(1))
        .unhealthy_threshold(2)
        .build()
        .unwrap();
    let rr = RoundRobinBuilder::new()
        .health_check(config, GrpcHealthCheck::new("users"))
        .build_with_endpoints(
            servers.iter().map(|(a, _, _)| Endpoint::new(*a)),
            |_: &Endpoint| tower::service_fn(|()| async { Ok::<_, resilience_core::BoxError>(()) }),
        );
    let handle = rr.handle();
    let healthy = |n: usize| {
        let handle = handle.clone();
        async move || handle.snapshot().count(EndpointState::Healthy) == n
    };
    wait_until("three serving", Duration::from_secs(10), healthy(3)).await;
    servers[1]
        .1
        .set_service_status("users", ServingStatus::NotServing)
        .await;
    wait_until("one not serving", Duration::from_secs(10), healthy(2)).await;
    assert_eq!(
        handle
            .snapshot()
            .endpoints
            .iter()
            .find(|e| e.endpoint.addr() == servers[1].0)
            .unwrap()
            .state,
        EndpointState::Unhealthy
    );
    servers[1]
        .1
        .set_service_status("users", ServingStatus::Serving)
        .await;
    wait_until("serving again", Duration::from_secs(10), healthy(3)).await;
    // A server that is gone fails its checks too.
    servers[2].2.abort();
    wait_until("gone", Duration::from_secs(10), healthy(2)).await;
}
