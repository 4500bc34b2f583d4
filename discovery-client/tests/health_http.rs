//! Active HTTP health checks against three real loopback servers.
#![cfg(feature = "http")]

mod support;

use std::time::Duration;

use resilience_discovery::health::{HealthCheckConfig, HttpHealthCheck};
use resilience_discovery::{Endpoint, EndpointState, RoundRobinBuilder};
use support::{Instance, http_maker, spread, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_whose_health_turns_503_gets_no_traffic_then_comes_back() {
    let instances = [
        Instance::start().await,
        Instance::start().await,
        Instance::start().await,
    ];
    let config = HealthCheckConfig::builder()
        .interval(Duration::from_millis(100))
        .timeout(Duration::from_secs(1))
        .unhealthy_threshold(2)
        .healthy_threshold(2)
        .build()
        .unwrap();
    let mut rr = RoundRobinBuilder::new()
        .health_check(config.clone(), HttpHealthCheck::from_config(&config))
        .build_with_endpoints(
            instances.iter().map(|i| Endpoint::new(i.addr)),
            http_maker(),
        );
    let handle = rr.handle();
    let healthy = |n: usize| {
        let handle = handle.clone();
        async move || handle.snapshot().count(EndpointState::Healthy) == n
    };
    wait_until("three healthy", Duration::from_secs(10), healthy(3)).await;
    let counts = spread(&mut rr, 300).await;
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![100; 3],
        "{counts:?}"
    );

    instances[0].set_healthy(false);
    wait_until("first unhealthy", Duration::from_secs(10), healthy(2)).await;
    let counts = spread(&mut rr, 300).await;
    assert_eq!(counts.get(&instances[0].addr.port()), None, "{counts:?}");
    assert_eq!(counts.get(&0), None, "no failed request: {counts:?}");
    assert_eq!(counts.len(), 2);

    instances[0].set_healthy(true);
    wait_until("back", Duration::from_secs(10), healthy(3)).await;
    let counts = spread(&mut rr, 300).await;
    assert_eq!(
        counts.get(&instances[0].addr.port()),
        Some(&100),
        "{counts:?}"
    );
}
