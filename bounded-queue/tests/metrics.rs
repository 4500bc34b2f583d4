//! What the per-kind queues and the rate limit report through the `metrics`
//! facade (the single queue's rejection counter is covered in
//! `bounded_queue.rs`).
#![cfg(feature = "metrics")]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use resilience_bounded_queue::kind::KindQueuesLayer;
use resilience_bounded_queue::rate::{RateLimitConfig, RateLimitLayer};
use resilience_bounded_queue::{BoundedQueueConfig, FixedPriority};
use resilience_core::timeout::NoDeadline;
use resilience_core::{BoxError, Priority};
use support::reason;
use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_test::mock;

/// Every series as `name{label=value,...}` (labels sorted) and its value.
/// A snapshot drains the recorder: counters read as the change since the
/// previous snapshot, gauges as 0 unless set since, histograms as the new
/// samples.
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

fn counter(n: u64) -> DebugValue {
    DebugValue::Counter(n)
}

fn gauge(v: f64) -> DebugValue {
    DebugValue::Gauge(v.into())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_rate_limit_counts_its_refusals_under_its_own_name() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let layer = RateLimitLayer::new(
        RateLimitConfig::builder()
            .name("api")
            .rate(10, Duration::from_secs(1))
            .burst(1)
            .build()
            .unwrap(),
    );
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: ()| async { Ok::<_, BoxError>("ok") }));
    assert!(svc.ready().await.unwrap().call(()).await.is_ok());
    for _ in 0..2 {
        let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
        assert_eq!(reason(&err), "rate limited");
    }
    advance(Duration::from_millis(100)).await;
    assert!(svc.ready().await.unwrap().call(()).await.is_ok());

    let seen = series(&snapshotter);
    assert_eq!(
        seen.get("resilience_rate_limit_rejected_total{name=api}"),
        Some(&counter(2)),
        "{seen:?}"
    );
    assert!(
        !seen
            .keys()
            .any(|k| k.starts_with("resilience_bounded_queue_")),
        "a rate limit is not a queue: {seen:?}"
    );
}

fn kind_of(r: &&'static str) -> &'static str {
    if r.starts_with("bulk") {
        "bulk"
    } else {
        "search"
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn each_kind_queue_reports_under_its_kind() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let queue = |name: &str, concurrency: usize| {
        BoundedQueueConfig::builder()
            .name(name)
            .concurrency(concurrency)
            .capacity(1)
            .build()
            .unwrap()
    };
    let layer = KindQueuesLayer::builder()
        .queue(queue("search", 1))
        .queue(queue("bulk", 3))
        .build(kind_of as fn(&&'static str) -> &'static str)
        .unwrap()
        .with_priority(FixedPriority(Priority::SheddablePlus))
        .with_deadline(NoDeadline);
    let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    let mut call = |r: &'static str| {
        assert_ready_ok!(svc.poll_ready());
        task::spawn(svc.call(r))
    };

    // One search in service, one waiting, the third refused: full.
    let mut a = call("search");
    assert_pending!(a.poll());
    let (_, send_a) = handle.next_request().await.unwrap();
    let mut b = call("search");
    assert_pending!(b.poll());
    let mut c = call("search");
    assert_eq!(reason(&assert_ready!(c.poll()).unwrap_err()), "queue full");

    let seen = series(&snapshotter);
    let get = |k: &str| seen.get(k).unwrap_or_else(|| panic!("{k} in {seen:?}"));
    assert_eq!(
        get(
            "resilience_bounded_queue_rejected_total{name=search,priority=sheddable-plus,reason=full}"
        ),
        &counter(1)
    );
    assert_eq!(
        get(
            "resilience_bounded_queue_rejected_total{name=bulk,priority=sheddable-plus,reason=full}"
        ),
        &counter(0)
    );
    assert_eq!(
        get("resilience_bounded_queue_depth{name=search}"),
        &gauge(1.0)
    );
    assert_eq!(
        get("resilience_bounded_queue_in_service{name=search}"),
        &gauge(1.0)
    );
    assert_eq!(
        get("resilience_bounded_queue_limit{name=search}"),
        &gauge(1.0)
    );
    assert_eq!(
        get("resilience_bounded_queue_limit{name=bulk}"),
        &gauge(3.0)
    );

    // The waiting search gets the slot after 50 ms: one wait recorded.
    advance(Duration::from_millis(50)).await;
    send_a.send_response("a");
    assert_ready_ok!(a.poll());
    assert_pending!(b.poll()); // admitted: calls the inner service
    let (_, send_b) = handle.next_request().await.unwrap();
    send_b.send_response("b");
    assert_ready_ok!(b.poll());
    let seen = series(&snapshotter);
    let Some(DebugValue::Histogram(waits)) =
        seen.get("resilience_bounded_queue_wait_seconds{name=search}")
    else {
        panic!("no wait histogram in {seen:?}")
    };
    assert_eq!(waits.len(), 1, "{waits:?}");
    assert!((waits[0].into_inner() - 0.05).abs() < 1e-3, "{waits:?}");
}
