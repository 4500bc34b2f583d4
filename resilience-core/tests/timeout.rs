//! The timeout layer through its public API, with paused time.

use std::time::Duration;

use http::Request;
use resilience_core::timeout::{Elapsed, NoDeadline, TimeoutConfig, TimeoutLayer};
use resilience_core::{BoxError, Deadline};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

/// Sends `req` through `layer` to an inner service that never answers;
/// returns the error and how long it took to come.
async fn never_answered<L>(layer: L, req: Request<()>) -> (Elapsed, Duration)
where
    L: tower::Layer<mock::Mock<Request<()>, &'static str>>,
    L::Service: Service<Request<()>, Response = &'static str, Error = resilience_core::BoxError>,
{
    let (mut svc, mut handle) = mock::spawn_layer::<Request<()>, &str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let start = Instant::now();
    let rsp = svc.call(req);
    let _pending = handle.next_request().await.unwrap(); // never answered
    let err = rsp.await.unwrap_err();
    let elapsed = *err.downcast_ref::<Elapsed>().expect("typed Elapsed");
    (elapsed, start.elapsed())
}

fn with_deadline(after: Duration) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(Deadline::after(after));
    req
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn times_out_after_the_layer_timeout() {
    let (elapsed, took) = never_answered(
        TimeoutLayer::new(Duration::from_millis(100)),
        Request::new(()),
    )
    .await;
    assert!(!elapsed.is_deadline());
    assert_eq!(took, Duration::from_millis(100));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn answers_in_time_pass_through() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<()>, &str, _>(TimeoutLayer::new(Duration::from_millis(100)));
    assert_ready_ok!(svc.poll_ready());
    let rsp = svc.call(Request::new(()));
    let (_, send) = handle.next_request().await.unwrap();
    tokio::time::advance(Duration::from_millis(99)).await;
    send.send_response("ok");
    assert_eq!(rsp.await.unwrap(), "ok");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inner_errors_pass_through_unchanged() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<()>, &str, _>(TimeoutLayer::new(Duration::from_secs(1)));
    assert_ready_ok!(svc.poll_ready());
    let rsp = svc.call(Request::new(()));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(std::io::Error::other("boom"));
    let err = rsp.await.unwrap_err();
    assert!(err.downcast_ref::<std::io::Error>().is_some(), "{err}");
    assert!(!err.is::<Elapsed>());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_request_deadline_wins_when_sooner() {
    let req = with_deadline(Duration::from_millis(300));
    let (elapsed, took) = never_answered(TimeoutLayer::new(Duration::from_secs(10)), req).await;
    assert!(elapsed.is_deadline());
    assert_eq!(took, Duration::from_millis(300));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_layer_timeout_wins_when_sooner_than_the_deadline() {
    let req = with_deadline(Duration::from_secs(5));
    let (elapsed, took) = never_answered(TimeoutLayer::new(Duration::from_millis(50)), req).await;
    assert!(!elapsed.is_deadline());
    assert_eq!(took, Duration::from_millis(50));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_expired_deadline_fails_without_calling_the_inner_service() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<()>, &str, _>(TimeoutLayer::new(Duration::from_secs(10)));
    let req = with_deadline(Duration::from_millis(10));
    tokio::time::advance(Duration::from_millis(20)).await;
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call(req).await.unwrap_err();
    assert!(err.downcast_ref::<Elapsed>().unwrap().is_deadline());
    assert_pending!(handle.poll_request());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn deadlines_can_be_ignored() {
    let layer = TimeoutLayer::new(Duration::from_millis(200)).with_deadline(NoDeadline);
    let (elapsed, took) = never_answered(layer, with_deadline(Duration::from_millis(10))).await;
    assert!(!elapsed.is_deadline());
    assert_eq!(took, Duration::from_millis(200));

    let config = TimeoutConfig::builder()
        .timeout(Duration::from_millis(200))
        .honor_deadline(false)
        .build()
        .unwrap();
    let layer = TimeoutLayer::new(config);
    let (elapsed, took) = never_answered(layer, with_deadline(Duration::from_millis(10))).await;
    assert!(!elapsed.is_deadline());
    assert_eq!(took, Duration::from_millis(200));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_closure_can_find_the_deadline() {
    let layer = TimeoutLayer::new(Duration::from_secs(10))
        .with_deadline(|req: &u64| Some(Deadline::after(Duration::from_millis(*req))));
    let slow = tower::service_fn(|_: u64| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, BoxError>(())
    });
    let start = Instant::now();
    let err = layer.layer(slow).oneshot(70).await.unwrap_err();
    assert!(err.is::<Elapsed>());
    assert_eq!(start.elapsed(), Duration::from_millis(70));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropping_the_response_future_releases_the_inner_call() {
    let held = std::sync::Arc::new(());
    let probe = held.clone();
    let svc = tower::service_fn(move |_: Request<()>| {
        let guard = probe.clone();
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok::<_, BoxError>(())
        }
    });
    let mut svc = TimeoutLayer::new(Duration::from_secs(1)).layer(svc);
    let mut rsp = tokio_test::task::spawn(svc.call(Request::new(())));
    assert_pending!(rsp.poll()); // timer armed, inner future running
    assert_eq!(std::sync::Arc::strong_count(&held), 3);
    drop(rsp);
    assert_eq!(
        std::sync::Arc::strong_count(&held),
        2,
        "inner future dropped with ours"
    );
    drop(svc);
    assert_eq!(std::sync::Arc::strong_count(&held), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn backpressure_passes_through() {
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<()>, &str, _>(TimeoutLayer::new(Duration::from_secs(1)));
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
}

#[test]
fn config_validation() {
    assert_eq!(
        TimeoutConfig::builder()
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err()
            .field(),
        "timeout"
    );
    assert_eq!(
        TimeoutConfig::builder()
            .name("bad name")
            .build()
            .unwrap_err()
            .field(),
        "name"
    );
    // Over the family's longest duration (365 days).
    let long = resilience_core::config::MAX_DURATION + Duration::from_secs(1);
    let err = TimeoutConfig::builder().timeout(long).build().unwrap_err();
    assert_eq!(err.field(), "timeout");
    assert_eq!(err.reason(), "must be at most 365 days");
    assert!(
        TimeoutConfig::builder()
            .timeout(Duration::MAX)
            .build()
            .is_err()
    );
    assert!(
        TimeoutConfig::builder()
            .timeout(resilience_core::config::MAX_DURATION)
            .build()
            .is_ok()
    );
    let ok = TimeoutConfig::builder().name("inventory").build().unwrap();
    assert_eq!(ok.timeout(), TimeoutConfig::DEFAULT_TIMEOUT);
    assert_eq!(ok.name(), Some("inventory"));
    assert!(ok.honor_deadline());
}

#[cfg(feature = "serde")]
#[test]
fn config_deserializes_with_the_same_validation() {
    let c: TimeoutConfig = toml::from_str("timeout = \"250ms\"\nname = \"inventory\"").unwrap();
    assert_eq!(c.timeout(), Duration::from_millis(250));
    let c: TimeoutConfig = serde_json::from_str(r#"{"timeout": 1500}"#).unwrap();
    assert_eq!(c.timeout(), Duration::from_millis(1500));
    for bad in [
        r#"{"timeout": "0s"}"#,
        r#"{"timeout": "8761h"}"#,
        r#"{"timeout": -1}"#,
        r#"{"timeout": "5 parsecs"}"#,
        r#"{"name": "a b"}"#,
        r#"{"timout": "1s"}"#,
    ] {
        assert!(serde_json::from_str::<TimeoutConfig>(bad).is_err(), "{bad}");
    }
}

#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_named_timeout_counts_what_elapsed() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let config = TimeoutConfig::builder()
        .name("inventory")
        .timeout(Duration::from_millis(10))
        .build()
        .unwrap();
    let slow = tower::service_fn(|_: Request<()>| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, BoxError>(())
    });
    let svc = TimeoutLayer::new(config).layer(slow);
    for _ in 0..3 {
        svc.clone().oneshot(Request::new(())).await.unwrap_err();
    }
    let counted: u64 = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "resilience_timeout_elapsed_total")
        .map(|(key, _, _, value)| {
            assert!(
                key.key()
                    .labels()
                    .any(|l| l.key() == "name" && l.value() == "inventory")
            );
            match value {
                DebugValue::Counter(n) => n,
                other => panic!("{other:?}"),
            }
        })
        .sum();
    assert_eq!(counted, 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn new_takes_a_duration_or_a_config_and_default_is_the_config_default() {
    let from_duration = TimeoutLayer::new(Duration::from_millis(200));
    let (elapsed, took) =
        never_answered(from_duration, with_deadline(Duration::from_secs(5))).await;
    assert!(!elapsed.is_deadline());
    assert_eq!(took, Duration::from_millis(200));

    let config = TimeoutConfig::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let from_config = TimeoutLayer::new(config);
    assert_eq!(from_config.timeout(), Duration::from_millis(300));
    // The request's deadline is honoured by both, as before.
    let (elapsed, took) =
        never_answered(from_config, with_deadline(Duration::from_millis(40))).await;
    assert!(elapsed.is_deadline());
    assert_eq!(took, Duration::from_millis(40));

    assert_eq!(
        TimeoutLayer::default().timeout(),
        TimeoutConfig::DEFAULT_TIMEOUT
    );
    let (_, took) = never_answered(TimeoutLayer::default(), Request::new(())).await;
    assert_eq!(took, TimeoutConfig::DEFAULT_TIMEOUT);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
#[allow(deprecated)]
async fn the_deprecated_from_config_still_builds_the_same_layer() {
    let config = TimeoutConfig::builder()
        .timeout(Duration::from_millis(250))
        .honor_deadline(false)
        .build()
        .unwrap();
    let old = TimeoutLayer::from_config(config.clone());
    assert_eq!(old.timeout(), TimeoutLayer::new(config).timeout());
    let (elapsed, took) = never_answered(old, with_deadline(Duration::from_millis(10))).await;
    assert!(!elapsed.is_deadline()); // the config's honor_deadline(false) kept
    assert_eq!(took, Duration::from_millis(250));
}
