//! The demo with `--etcd`: discovery and flags from a real etcd (Debian's
//! `etcd`, started here on free loopback ports). The instances register with
//! a lease, the shop finds them by watching the prefix, a killed instance
//! leaves the registry when its lease expires, and comes back when it
//! registers again.
//!
//! Without the binary the test says why it did not run and passes, unless
//! `RESILIENCE_REQUIRE_SERVERS=1` (CI) makes that a failure.

use std::time::Duration;

use resilience_discovery::EndpointState;
use resilience_examples::demo::{
    DemoSettings, Deployment, ETCD_FLAGS_PREFIX, ETCD_INVENTORY_PREFIX, StartOptions,
};
use resilience_examples::profile::NEW_FEATURE_FLAG;
use resilience_examples::wait_until;
use resilience_test_support::EtcdServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_register_in_etcd_and_a_dead_one_leaves_with_its_lease() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let options = StartOptions {
        etcd: Some(etcd.url().to_owned()),
        ..StartOptions::default()
    };
    // A key left by an earlier run (its process is gone) is cleared.
    etcd.client()
        .put(
            &format!("{ETCD_INVENTORY_PREFIX}inventory-9"),
            br#"{"address": "127.0.0.1:9"}"#,
            0,
        )
        .await
        .unwrap();
    let d = Deployment::start(&DemoSettings::quick(), &options)
        .await
        .unwrap();
    assert!(d.uses_etcd());
    let (_, keys) = etcd
        .client()
        .range_prefix(ETCD_INVENTORY_PREFIX)
        .await
        .unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert_eq!(d.shop.balancer().snapshot().endpoints.len(), 3);
    for (name, state) in d.instance_states() {
        assert_eq!(state, Some(EndpointState::Healthy), "{name}");
    }

    // The profile's flag comes from etcd.
    let (_, flags) = etcd.client().range_prefix(ETCD_FLAGS_PREFIX).await.unwrap();
    assert_eq!(flags.len(), 1);
    wait_until(
        "the flag store read etcd",
        Duration::from_millis(20),
        || async {
            d.profile.flags().flag_set().get(NEW_FEATURE_FLAG).is_some()
                && d.profile.flags().version() > 1
        },
    )
    .await;

    // Killed: out of rotation at once (it fails its checks), out of the
    // registry and the balancer once its lease expires.
    d.kill_instance(1);
    wait_until(
        "inventory-2 left the registry",
        Duration::from_millis(50),
        || async {
            let (_, keys) = etcd
                .client()
                .range_prefix(ETCD_INVENTORY_PREFIX)
                .await
                .unwrap();
            keys.len() == 2
        },
    )
    .await;
    wait_until(
        "the shop dropped inventory-2",
        Duration::from_millis(20),
        || async { d.shop.instance_state("inventory-2").is_none() },
    )
    .await;
    assert_eq!(d.shop.instances_in(EndpointState::Healthy), 2);

    // Back: registered again, found, healthy.
    d.recover().await.unwrap();
    wait_until("inventory-2 is back", Duration::from_millis(20), || async {
        d.shop.instance_state("inventory-2") == Some(EndpointState::Healthy)
    })
    .await;
    assert_eq!(d.shop.instances_in(EndpointState::Healthy), 3);
}
