//! Against a real etcd (Debian `etcd-server`): registration, watch,
//! lease expiry, an outage and its end.
#![cfg(feature = "etcd")]

mod support;

use std::time::Duration;

use resilience_discovery::source::{Backoff, EtcdConfig, EtcdSource, Registration};
use resilience_discovery::{Endpoint, RoundRobinBuilder, RoundRobinConfig};
use support::{Etcd, Instance, http_maker, spread, wait_until};

const PREFIX: &str = "/services/users/";

fn config(etcd: &Etcd) -> EtcdConfig {
    EtcdConfig::builder()
        .endpoint(etcd.url())
        .name("etcd-test")
        .request_timeout(Duration::from_secs(1))
        .backoff(Backoff::new(Duration::from_millis(100), Duration::from_millis(500)).unwrap())
        .build()
        .unwrap()
}

async fn register(config: &EtcdConfig, i: usize, inst: &Instance) -> Registration {
    register_for(config, i, inst, Duration::from_secs(2)).await
}

async fn register_for(
    config: &EtcdConfig,
    i: usize,
    inst: &Instance,
    ttl: Duration,
) -> Registration {
    Registration::register(
        config,
        format!("{PREFIX}instance-{i}"),
        &Endpoint::new(inst.addr).with_metadata("zone", "a"),
        ttl,
    )
    .await
    .expect("registered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_registration_watch_outage_and_resume() {
    let Some(mut etcd) = Etcd::start().await else {
        return;
    };
    let config = config(&etcd);
    let instances = [
        Instance::start().await,
        Instance::start().await,
        Instance::start().await,
    ];
    let mut regs = Vec::new();
    for (i, inst) in instances.iter().enumerate() {
        regs.push(Some(register(&config, i, inst).await));
    }
    // Garbage under the prefix is skipped alone.
    etcd.client()
        .put(&format!("{PREFIX}garbage"), b"{not json", 0)
        .await
        .unwrap();
    etcd.client()
        .put(
            &format!("{PREFIX}no-port"),
            br#"{"address": "127.0.0.1"}"#,
            0,
        )
        .await
        .unwrap();

    let source = EtcdSource::new(config.clone(), PREFIX).into_stream();
    let status = source.health();
    let rr_config = RoundRobinConfig::builder().name("users").build().unwrap();
    let mut rr = RoundRobinBuilder::new()
        .config(rr_config)
        .build_with_source(source, http_maker());
    let handle = rr.handle();
    let count = |n: usize| {
        let handle = handle.clone();
        async move || handle.snapshot().endpoints.len() == n
    };
    wait_until("three registered", Duration::from_secs(10), count(3)).await;
    let snap = handle.snapshot();
    assert_eq!(snap.endpoints[0].endpoint.metadata()["zone"], "a");

    let counts = spread(&mut rr, 3000).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (port, n) in &counts {
        assert!(n.abs_diff(1000) <= 1, "{port} got {n}: {counts:?}");
    }

    // Instance 0's keep-alive dies (a crash): it stops getting traffic once
    // its lease expires.
    drop(regs[0].take());
    wait_until("lease expired", Duration::from_secs(15), count(2)).await;
    let counts = spread(&mut rr, 300).await;
    assert_eq!(counts.get(&instances[0].addr.port()), None, "{counts:?}");
    assert_eq!(counts.get(&0), None, "no failed request: {counts:?}");

    // A new instance registers and gets traffic.
    let fresh = Instance::start().await;
    let fresh_reg = register(&config, 3, &fresh).await;
    wait_until("new instance", Duration::from_secs(10), count(3)).await;
    let counts = spread(&mut rr, 300).await;
    assert_eq!(counts.get(&fresh.addr.port()), Some(&100), "{counts:?}");

    // etcd stops: traffic keeps flowing to the last good set.
    etcd.stop();
    wait_until("source noticed", Duration::from_secs(10), async || {
        status.errors() > 0
    })
    .await;
    let counts = spread(&mut rr, 300).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|n| *n == 100), "{counts:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        status.staleness() >= Duration::from_millis(500),
        "{status:?}"
    );

    // etcd is back: the watch resumes (a new registration shows up).
    etcd.restart().await;
    let later = Instance::start().await;
    // A long lease, so that only the revocation can remove it in time.
    let later_reg = register_for(&config, 4, &later, Duration::from_secs(60)).await;
    wait_until("watch resumed", Duration::from_secs(20), count(4)).await;
    assert_eq!(status.staleness(), Duration::ZERO, "{status:?}");
    let counts = spread(&mut rr, 400).await;
    assert_eq!(counts.get(&later.addr.port()), Some(&100), "{counts:?}");

    // Graceful shutdown removes the key at once, without waiting for the TTL.
    later_reg.deregister().await.unwrap();
    wait_until("deregistered", Duration::from_secs(10), count(3)).await;
    drop((fresh_reg, regs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_is_replaced_and_the_key_written_again() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let config = config(&etcd);
    let inst = Instance::start().await;
    let reg = register(&config, 0, &inst).await;
    let source = EtcdSource::new(config.clone(), PREFIX).into_stream();
    let rr = RoundRobinBuilder::new().build_with_source(source, http_maker());
    let handle = rr.handle();
    wait_until("registered", Duration::from_secs(10), async || {
        handle.snapshot().endpoints.len() == 1
    })
    .await;
    let first = reg.lease_id();
    etcd.client().revoke(first).await.unwrap();
    wait_until("new lease", Duration::from_secs(10), async || {
        reg.lease_id() != first && handle.snapshot().endpoints.len() == 1
    })
    .await;
    assert_eq!(handle.snapshot().endpoints[0].endpoint.addr(), inst.addr);
}
