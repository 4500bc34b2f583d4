//! Against a real DNS server (Debian `dnsmasq-base` on a loopback port).
#![cfg(feature = "dns")]

mod support;

use std::time::Duration;

use resilience_discovery::RoundRobinBuilder;
use resilience_discovery::source::{Backoff, DnsSource, DnsSourceConfig};
use support::{DnsServer, Instance, http_maker, spread, wait_until};

const SRV: &str = "_http._tcp.users.test";

fn srv_records(ports: &[(u16, u16, u16)]) -> Vec<String> {
    let mut records = vec!["--host-record=inst.users.test,127.0.0.1".to_owned()];
    for (port, priority, weight) in ports {
        records.push(format!(
            "--srv-host={SRV},inst.users.test,{port},{priority},{weight}"
        ));
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_spread_traffic_and_changes_are_picked_up_after_the_ttl() {
    let instances = [
        Instance::start().await,
        Instance::start().await,
        Instance::start().await,
        Instance::start().await,
    ];
    let port = |i: usize| instances[i].addr.port();
    // Three instances at priority 0; a backup at priority 10 gets nothing.
    let Some(mut dns) = DnsServer::start(
        1,
        &srv_records(&[
            (port(0), 0, 1),
            (port(1), 0, 1),
            (port(2), 0, 1),
            (port(3), 10, 1),
        ]),
    )
    .await
    else {
        return;
    };
    let config = DnsSourceConfig::srv(SRV)
        .name("dns-test")
        .nameserver(dns.addr())
        .min_ttl(Duration::from_secs(1))
        .max_ttl(Duration::from_secs(5))
        .timeout(Duration::from_millis(500))
        .backoff(Backoff::new(Duration::from_millis(100), Duration::from_millis(300)).unwrap())
        .build()
        .unwrap();
    let source = DnsSource::new(config).into_stream().unwrap();
    let status = source.health();
    let mut rr = RoundRobinBuilder::new().build_with_source(source, http_maker());
    let handle = rr.handle();
    wait_until("three endpoints", Duration::from_secs(10), async || {
        handle.snapshot().endpoints.len() == 3
    })
    .await;
    let counts = spread(&mut rr, 3000).await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    for i in 0..3 {
        let n = counts[&port(i)];
        assert!(n.abs_diff(1000) <= 1, "{counts:?}");
    }

    // The record set changes: instance 0 goes, instance 3 joins with
    // weight 2. While the server restarts, lookups fail and the last good
    // set stays.
    dns.restart(
        1,
        &srv_records(&[(port(1), 0, 1), (port(2), 0, 1), (port(3), 0, 2)]),
    )
    .await;
    wait_until("changed set", Duration::from_secs(10), async || {
        let snap = handle.snapshot();
        snap.endpoints.len() == 3
            && snap
                .endpoints
                .iter()
                .any(|e| e.endpoint.addr().port() == port(3))
    })
    .await;
    let counts = spread(&mut rr, 400).await;
    assert_eq!(counts.get(&port(0)), None, "{counts:?}");
    assert_eq!(counts[&port(1)], 100, "{counts:?}");
    assert_eq!(counts[&port(3)], 200, "weight 2: {counts:?}");

    // The server goes away: the last good set keeps serving. (Errors of
    // lookups made while it restarted do not count: a later success
    // cleared them.)
    let errors_before = status.errors();
    drop(dns);
    wait_until("lookup errors", Duration::from_secs(10), async || {
        status.errors() > errors_before && status.last_error().is_some()
    })
    .await;
    let counts = spread(&mut rr, 400).await;
    assert_eq!(counts[&port(3)], 200, "{counts:?}");
    assert!(status.last_error().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_resolve_to_endpoints() {
    let Some(dns) = DnsServer::start(
        1,
        &[
            "--host-record=users.test,127.0.0.1".to_owned(),
            "--host-record=users.test,127.0.0.2".to_owned(),
        ],
    )
    .await
    else {
        return;
    };
    let config = DnsSourceConfig::host("users.test:8080")
        .nameserver(dns.addr())
        .build()
        .unwrap();
    let source = DnsSource::new(config).into_stream().unwrap();
    let rr = RoundRobinBuilder::new().build_with_source(source, http_maker());
    let handle = rr.handle();
    wait_until("two addresses", Duration::from_secs(10), async || {
        handle.snapshot().endpoints.len() == 2
    })
    .await;
    let mut addrs: Vec<String> = handle
        .snapshot()
        .endpoints
        .iter()
        .map(|e| e.endpoint.addr().to_string())
        .collect();
    addrs.sort();
    assert_eq!(addrs, ["127.0.0.1:8080", "127.0.0.2:8080"]);
}
