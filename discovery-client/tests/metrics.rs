//! What a source and a balancer report through the `metrics` facade as the
//! endpoint set changes and the source breaks (ejections are covered in
//! `round_robin.rs`).
#![cfg(all(feature = "metrics", feature = "file"))]

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use resilience_core::BoxError;
use resilience_discovery::source::{Backoff, FileSource, FileSourceConfig};
use resilience_discovery::{Endpoint, RoundRobinBuilder, RoundRobinConfig};
use tower::{Service, ServiceExt, service_fn};

/// Every series as `name{label=value,...}` (labels sorted) and its value.
/// A snapshot drains the recorder: counters read as the change since the
/// previous snapshot, gauges as 0 unless set since.
fn series(snapshotter: &Snapshotter) -> HashMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let mut labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            (
                format!("{}{{{}}}", key.key().name(), labels.join(",")),
                value,
            )
        })
        .collect()
}

fn value(seen: &HashMap<String, DebugValue>, k: &str) -> f64 {
    match seen.get(k) {
        Some(DebugValue::Counter(n)) => *n as f64,
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("{k}: {other:?} in {seen:?}"),
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_source_and_its_balancer_report_changes_errors_and_staleness() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let dir = std::env::temp_dir().join(format!(
        "resilience-discovery-metrics-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("endpoints.toml");
    let write = |s: &str| std::fs::write(&path, s).unwrap();
    write(
        r#"endpoints = [{ address = "127.0.0.1:1" }, { address = "127.0.0.1:2" }, { address = "127.0.0.1:3" }]"#,
    );
    let source = FileSource::new(
        FileSourceConfig::builder(&path)
            .name("registry")
            .poll_interval(Duration::from_secs(1))
            .backoff(Backoff::new(Duration::from_millis(100), Duration::from_millis(400)).unwrap())
            .build()
            .unwrap(),
    )
    .into_stream();
    let mut rr = RoundRobinBuilder::new()
        .config(RoundRobinConfig::builder().name("users").build().unwrap())
        .build_with_source(source, |_: &Endpoint| {
            tower::util::BoxCloneSyncService::new(service_fn(|()| async { Ok::<_, BoxError>(()) }))
        });
    let mut call = async || rr.ready().await.unwrap().call(()).await.unwrap();

    tokio::time::sleep(Duration::from_millis(10)).await;
    call().await;
    let seen = series(&snapshotter);
    let v = |k: &str| value(&seen, k);
    assert_eq!(
        v("resilience_discovery_updates_total{change=added,name=users}"),
        3.0
    );
    assert_eq!(
        v("resilience_discovery_updates_total{change=removed,name=users}"),
        0.0
    );
    assert_eq!(
        v("resilience_discovery_endpoints{name=users,state=healthy}"),
        3.0
    );
    for state in ["unhealthy", "ejected", "pending"] {
        assert_eq!(
            v(&format!(
                "resilience_discovery_endpoints{{name=users,state={state}}}"
            )),
            0.0
        );
    }
    assert_eq!(
        v("resilience_discovery_source_errors_total{name=registry}"),
        0.0
    );
    assert_eq!(
        v("resilience_discovery_staleness_seconds{name=registry}"),
        0.0
    );

    // Two endpoints go away (counters below are changes since the last
    // snapshot).
    write(r#"endpoints = [{ address = "127.0.0.1:2" }]"#);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    call().await;
    let seen = series(&snapshotter);
    let v = |k: &str| value(&seen, k);
    assert_eq!(
        v("resilience_discovery_updates_total{change=removed,name=users}"),
        2.0
    );
    assert_eq!(
        v("resilience_discovery_endpoints{name=users,state=healthy}"),
        1.0
    );

    // Garbage: every failed read counts, and the staleness grows.
    write("[[endpoints]\naddress = ");
    tokio::time::sleep(Duration::from_secs(5)).await;
    call().await;
    let seen = series(&snapshotter);
    let v = |k: &str| value(&seen, k);
    assert!(v("resilience_discovery_source_errors_total{name=registry}") >= 2.0);
    assert!(v("resilience_discovery_staleness_seconds{name=registry}") >= 4.0);
    assert_eq!(
        v("resilience_discovery_updates_total{change=removed,name=users}"),
        0.0,
        "the last good set is kept"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
