//! Hot reload from a real etcd (Debian's `etcd` binary), started here on free
//! loopback ports with a temporary data directory and killed at the end.
//!
//! Without the binary the test says why it did not run and passes, unless
//! `RESILIENCE_REQUIRE_SERVERS=1` (CI) makes that a failure.
#![cfg(feature = "etcd")]

use std::time::Duration;

use resilience_core::etcd::EtcdClient;
use resilience_flags::source::EtcdSource;
use resilience_flags::{ErrorCode, FlagContext, FlagSet, FlagStore};
use resilience_test_support::EtcdServer;

async fn put(kv: &EtcdClient, key: &str, value: &str) {
    kv.put(key, value.as_bytes(), 0).await.expect("etcd put");
}

async fn delete(kv: &EtcdClient, key: &str) {
    kv.delete(key).await.expect("etcd delete");
}

/// Polls `cond` every 20 ms for at most 10 s of real time (etcd is real).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_a_prefix_and_keeps_the_last_good_set() {
    let Some(mut etcd) = EtcdServer::start().await else {
        return;
    };
    let kv = etcd.client().clone();

    put(&kv, "/flags/new-checkout", r#"{"rollout": 100}"#).await;
    put(&kv, "/other/ignored", "not json at all").await;
    let source = EtcdSource::builder(etcd.url(), "/flags/")
        .retry_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    assert_eq!(source.load().await.unwrap().len(), 1);

    let store = FlagStore::new(FlagSet::empty());
    let handle = source.spawn(store.clone());
    let ctx = FlagContext::new().with_key("user-1");
    eventually("initial range", || store.is_active("new-checkout", &ctx)).await;

    // A put is seen through the watch.
    put(&kv, "/flags/new-checkout", r#"{"enabled": false}"#).await;
    eventually("update", || !store.is_active("new-checkout", &ctx)).await;
    put(&kv, "/flags/color", r#"{"default": "blue", "on": "green"}"#).await;
    eventually("new key", || store.flag_set().len() == 2).await;
    assert_eq!(handle.snapshot().errors, 0);
    eventually("three updates", || handle.snapshot().updates == 3).await;

    // Garbage keeps the last good set.
    put(&kv, "/flags/new-checkout", r#"{"rollout": "lots"}"#).await;
    eventually("garbage rejected", || handle.snapshot().errors == 1).await;
    assert_eq!(store.flag_set().len(), 2);
    assert!(!store.flag_set().get("new-checkout").unwrap().is_enabled());
    assert!(
        handle
            .snapshot()
            .last_error
            .unwrap()
            .contains("new-checkout")
    );

    // Fixed, then a delete.
    put(&kv, "/flags/new-checkout", r#"{}"#).await;
    eventually("fixed", || store.is_active("new-checkout", &ctx)).await;
    // The status is updated just after the store (another thread).
    eventually("fresh again", || {
        handle.snapshot().staleness == Duration::ZERO
    })
    .await;
    assert_eq!(handle.snapshot().last_error, None);
    delete(&kv, "/flags/color").await;
    eventually("delete", || store.flag_set().get("color").is_none()).await;
    let e = store.evaluate_variant("color", &ctx, "blue");
    assert_eq!(e.error_code(), Some(ErrorCode::FlagNotFound));

    // etcd goes away: the set stays, the source reports the failure.
    etcd.stop();
    eventually("outage noticed", || handle.snapshot().last_error.is_some()).await;
    eventually("staleness grows", || {
        handle.snapshot().staleness >= Duration::from_millis(200)
    })
    .await;
    assert!(handle.snapshot().errors >= 2);
    assert!(store.is_active("new-checkout", &ctx));
    handle.stop();
}
