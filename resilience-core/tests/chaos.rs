//! The chaos layer through its public API, with paused time.
#![cfg(feature = "chaos")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use resilience_core::chaos::{ChaosError, ChaosHandle, ChaosLayer, Fault};
use resilience_core::timeout::Elapsed;
use resilience_core::{BoxError, Classify, ErrorClass, FixedPriority, Priority, TimeoutLayer};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

const MS: Duration = Duration::from_millis(1);

/// An inner service that answers at once and counts its calls.
fn counting() -> (
    impl Service<Request<()>, Response = &'static str, Error = BoxError> + Clone,
    Arc<AtomicUsize>,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = service_fn(move |_: Request<()>| {
        c.fetch_add(1, Ordering::Relaxed);
        async { Ok::<_, BoxError>("ok") }
    });
    (svc, calls)
}

fn with_priority(p: Priority) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(p);
    req
}

/// Sends `n` requests one after the other; returns which failed.
async fn failures<S>(svc: &mut S, n: usize) -> Vec<bool>
where
    S: Service<Request<()>, Error = BoxError>,
{
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let rsp = svc.ready().await.unwrap().call(Request::new(())).await;
        if let Err(e) = &rsp {
            assert!(e.is::<ChaosError>(), "{e}");
        }
        out.push(rsp.is_err());
    }
    out
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn off_passes_through() {
    let layer = ChaosLayer::new("publications");
    let handle = layer.handle();
    let (inner, calls) = counting();
    let mut svc = layer.layer(inner);
    assert!(!handle.is_active());
    assert_eq!(handle.fault(), None);
    assert_eq!(handle.name(), "publications");
    let start = Instant::now();
    for _ in 0..10 {
        assert_eq!(
            svc.ready()
                .await
                .unwrap()
                .call(Request::new(()))
                .await
                .unwrap(),
            "ok"
        );
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.load(Ordering::Relaxed), 10);
    assert_eq!(handle.injected(), Default::default());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inner_errors_pass_through_unchanged() {
    let layer = ChaosLayer::new("x");
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|_: Request<()>| async {
        Err::<(), _>(std::io::Error::other("boom"))
    }));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    assert!(err.is::<std::io::Error>());
    handle.set(Fault::latency(MS));
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    assert!(err.is::<std::io::Error>());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn fixed_latency_delays_by_exactly_that() {
    let layer = ChaosLayer::new("publications");
    let handle: ChaosHandle = layer.handle();
    let (inner, calls) = counting();
    let mut svc = layer.layer(inner);
    handle.set(Fault::latency(300 * MS));
    assert!(handle.is_active());
    for _ in 0..3 {
        let start = Instant::now();
        svc.ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), 300 * MS);
    }
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    assert_eq!(handle.injected().delayed, 3);
    assert_eq!(handle.injected().failed, 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn latency_between_stays_in_range_and_spreads() {
    let layer = ChaosLayer::new("x").with_seed(7);
    let handle = layer.handle();
    let (inner, _) = counting();
    let mut svc = layer.layer(inner);
    handle.set(Fault::latency_between(100 * MS, 500 * MS));
    let mut seen = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        svc.ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
        let took = start.elapsed();
        assert!(took >= 100 * MS && took <= 500 * MS, "{took:?}");
        seen.push(took);
    }
    assert!(seen.iter().any(|d| *d < 200 * MS));
    assert!(seen.iter().any(|d| *d > 400 * MS));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn errors_half_with_a_seed_are_reproducible() {
    async fn run(seed: u64) -> Vec<bool> {
        let layer = ChaosLayer::new("publications").with_seed(seed);
        let handle = layer.handle();
        let (inner, calls) = counting();
        let mut svc = layer.layer(inner);
        handle.set(Fault::errors(0.5));
        let failed = failures(&mut svc, 1000).await;
        let n = failed.iter().filter(|f| **f).count();
        assert_eq!(calls.load(Ordering::Relaxed), 1000 - n);
        assert_eq!(handle.injected().failed, n as u64);
        failed
    }
    let first = run(42).await;
    let n = first.iter().filter(|f| **f).count();
    assert!((430..=570).contains(&n), "{n} of 1000 failed");
    assert_eq!(run(42).await, first, "same seed, same decisions");
    assert_ne!(run(43).await, first, "another seed, other decisions");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn each_set_restarts_the_sequence() {
    let layer = ChaosLayer::new("x").with_seed(5);
    let handle = layer.handle();
    let (inner, _) = counting();
    let mut svc = layer.layer(inner);
    handle.set(Fault::errors(0.5));
    let a = failures(&mut svc, 100).await;
    handle.set(Fault::errors(0.5));
    let b = failures(&mut svc, 100).await;
    assert_eq!(a, b);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn errors_never_call_the_inner_service() {
    let (mut svc, mut inner) = mock::spawn_layer::<Request<()>, &str, _>(ChaosLayer::new("x"));
    let layer_handle = svc.get_ref().handle();
    layer_handle.set(Fault::errors(1.0));
    for _ in 0..5 {
        assert_ready_ok!(svc.poll_ready());
        let err = svc.call(Request::new(())).await.unwrap_err();
        let chaos = err.downcast_ref::<ChaosError>().expect("a ChaosError");
        assert_eq!(chaos.error_class(), ErrorClass::Unavailable);
        assert_eq!(err.to_string(), "injected fault");
    }
    assert_pending!(inner.poll_request());
    assert_eq!(layer_handle.injected().failed, 5);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn error_maps_by_its_class() {
    let err: BoxError = ChaosError::new().into();
    let found = resilience_core::error::find(&*err).expect("the family knows it");
    assert_eq!(found.error_class(), ErrorClass::Unavailable);
    let rsp = resilience_core::http::error_response(&*err);
    assert_eq!(rsp.status(), 503);
    assert_eq!(rsp.body(), "injected fault\n");
    assert!(rsp.headers().get("retry-after").is_none());
    #[cfg(feature = "grpc")]
    assert_eq!(
        resilience_core::grpc::into_status(ChaosError::new().into()).code(),
        tonic::Code::Unavailable
    );
    assert!(
        resilience_core::ClassifyErrors::new()
            .classify_error(&err)
            .is_failure()
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn errors_and_latency_combine() {
    let layer = ChaosLayer::new("x");
    let handle = layer.handle();
    let (inner, calls) = counting();
    let mut svc = layer.layer(inner);
    handle.set(Fault::errors(1.0).and_latency(200 * MS));
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    assert!(err.is::<ChaosError>());
    assert_eq!(start.elapsed(), 200 * MS);
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    let injected = handle.injected();
    assert_eq!((injected.delayed, injected.failed), (1, 1));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn abort_stays_pending_until_a_timeout() {
    let (svc, mut inner) = mock::spawn_layer::<Request<()>, &str, _>(ChaosLayer::new("x"));
    let handle = svc.get_ref().handle();
    handle.set(Fault::abort());
    let mut bare = svc;
    assert_ready_ok!(bare.poll_ready());
    let mut fut = tokio_test::task::spawn(bare.call(Request::new(())));
    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert_pending!(fut.poll());
    assert!(!fut.is_woken());
    drop(fut);
    assert_pending!(inner.poll_request());

    let mut timed = TimeoutLayer::new(Duration::from_secs(2)).layer(bare.into_inner());
    let start = Instant::now();
    let err = timed
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    assert!(err.is::<Elapsed>());
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(handle.injected().aborted, 2);
    assert_pending!(inner.poll_request());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn fraction_affects_a_share() {
    let layer = ChaosLayer::new("x").with_seed(1);
    let handle = layer.handle();
    let (inner, calls) = counting();
    let mut svc = layer.layer(inner);
    handle.set(Fault::errors(1.0).fraction(0.2));
    let n = failures(&mut svc, 1000)
        .await
        .iter()
        .filter(|f| **f)
        .count();
    assert!((150..=250).contains(&n), "{n}");
    assert_eq!(calls.load(Ordering::Relaxed), 1000 - n);

    handle.set(Fault::errors(1.0).fraction(0.0));
    assert!(failures(&mut svc, 100).await.iter().all(|f| !f));
    handle.set(Fault::latency(MS).fraction(0.2));
    let before = handle.injected().delayed;
    failures(&mut svc, 1000).await;
    let delayed = handle.injected().delayed - before;
    assert!((150..=250).contains(&delayed), "{delayed}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn only_affects_that_priority() {
    let layer = ChaosLayer::new("x");
    let handle = layer.handle();
    let (inner, calls) = counting();
    let mut svc = layer.layer(inner);
    handle.set(Fault::latency(300 * MS).only(Priority::Sheddable));
    for p in Priority::ALL {
        let start = Instant::now();
        svc.ready()
            .await
            .unwrap()
            .call(with_priority(p))
            .await
            .unwrap();
        let want = if p == Priority::Sheddable {
            300 * MS
        } else {
            Duration::ZERO
        };
        assert_eq!(start.elapsed(), want, "{p}");
    }
    // No priority in the extensions: `critical`, not affected.
    let start = Instant::now();
    svc.ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.load(Ordering::Relaxed), 5);
    assert_eq!(handle.injected().delayed, 1);

    handle.set(Fault::errors(1.0).only(Priority::Critical));
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .is_err()
    );
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(with_priority(Priority::Sheddable))
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn other_request_types_read_priority_with_a_reader() {
    let layer = ChaosLayer::new("x").with_priority(|req: &u32| {
        if *req == 0 {
            Priority::Sheddable
        } else {
            Priority::Critical
        }
    });
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|_: u32| async { Ok::<_, BoxError>(()) }));
    handle.set(Fault::errors(1.0).only(Priority::Sheddable));
    assert!(svc.ready().await.unwrap().call(0).await.is_err());
    assert!(svc.ready().await.unwrap().call(1).await.is_ok());

    let layer = ChaosLayer::new("y").with_priority(FixedPriority(Priority::Critical));
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|_: &str| async { Ok::<_, BoxError>(()) }));
    handle.set(Fault::errors(1.0).only(Priority::Sheddable));
    assert!(svc.ready().await.unwrap().call("a").await.is_ok());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn clear_turns_it_off_for_the_next_request() {
    let layer = ChaosLayer::new("x");
    let handle = layer.handle();
    let (inner, calls) = counting();
    let mut svc = layer.layer(inner);
    let clone = handle.clone();
    clone.set(Fault::errors(1.0));
    assert_eq!(handle.fault(), Some(Fault::errors(1.0)));
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .is_err()
    );
    handle.clear();
    assert!(!clone.is_active());
    assert_eq!(clone.fault(), None);
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .is_ok()
    );
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    handle.clear(); // twice is fine
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropping_a_delayed_future_mid_sleep_is_fine() {
    let (mut svc, mut inner) = mock::spawn_layer::<Request<()>, &str, _>(ChaosLayer::new("x"));
    let handle = svc.get_ref().handle();
    handle.set(Fault::latency(Duration::from_secs(1)));
    assert_ready_ok!(svc.poll_ready());
    let mut fut = tokio_test::task::spawn(svc.call(Request::new(())));
    assert_pending!(fut.poll());
    tokio::time::advance(500 * MS).await;
    assert_pending!(fut.poll());
    drop(fut);
    // The inner service's request was made in `call`, then dropped with the
    // future: the mock sees the request with its responder gone.
    let (_req, send) = inner.next_request().await.unwrap();
    drop(send);
    tokio::time::advance(Duration::from_secs(1)).await;

    // And the service still works.
    handle.clear();
    assert_ready_ok!(svc.poll_ready());
    let rsp = svc.call(Request::new(()));
    inner.next_request().await.unwrap().1.send_response("ok");
    assert_eq!(rsp.await.unwrap(), "ok");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_delayed_request_polls_the_inner_only_after_the_delay() {
    let (mut svc, mut inner) = mock::spawn_layer::<Request<()>, &str, _>(ChaosLayer::new("x"));
    svc.get_ref().handle().set(Fault::latency(100 * MS));
    assert_ready_ok!(svc.poll_ready());
    let mut fut = tokio_test::task::spawn(svc.call(Request::new(())));
    let (_req, send) = inner.next_request().await.unwrap();
    send.send_response("ok");
    assert_pending!(fut.poll()); // answered, but the delay is not over
    tokio::time::advance(100 * MS).await;
    assert!(fut.is_woken());
    assert_eq!(fut.await.unwrap(), "ok");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn huge_latency_does_not_panic() {
    let layer = ChaosLayer::new("x");
    let handle = layer.handle();
    let (inner, _) = counting();
    let svc = layer.layer(inner);
    handle.set(Fault::latency(Duration::MAX));
    let mut fut = tokio_test::task::spawn(svc.clone().oneshot(Request::new(())));
    assert_pending!(fut.poll());
    tokio::time::advance(Duration::from_secs(86_400)).await;
    assert_pending!(fut.poll());
}

#[test]
fn fault_validation() {
    assert!(Fault::try_errors(0.0).is_ok());
    assert!(Fault::try_errors(1.0).is_ok());
    for bad in [-0.01, 1.01, f64::NAN, f64::INFINITY] {
        let err = Fault::try_errors(bad).unwrap_err();
        assert_eq!(err.field(), "error_rate");
        assert!(err.to_string().contains("from 0 to 1"), "{err}");
        assert!(Fault::latency(MS).try_fraction(bad).is_err());
    }
    assert_eq!(Fault::errors(f64::NAN).error_rate(), 0.0);
    assert_eq!(Fault::errors(-3.0).error_rate(), 0.0);
    assert_eq!(Fault::errors(3.0).error_rate(), 1.0);
    assert_eq!(
        Fault::latency(MS).fraction(f64::NAN).affected_fraction(),
        0.0
    );
    let err = Fault::try_latency_between(500 * MS, 100 * MS).unwrap_err();
    assert_eq!(err.field(), "latency");
    assert_eq!(
        Fault::latency_between(500 * MS, 100 * MS).latency_range(),
        Some((100 * MS, 500 * MS))
    );
    assert!(ChaosLayer::try_new("bad name!").is_err());
    assert!(ChaosLayer::try_new("").is_err());
    assert_eq!(ChaosLayer::try_new("ok-name").unwrap().name(), "ok-name");
}

#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn injections_are_counted_in_metrics() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let layer = ChaosLayer::new("publications");
    let handle = layer.handle();
    let (inner, _) = counting();
    let svc = layer.layer(inner);
    handle.set(Fault::latency(MS));
    for _ in 0..3 {
        svc.clone().oneshot(Request::new(())).await.unwrap();
    }
    handle.set(Fault::errors(1.0));
    for _ in 0..2 {
        svc.clone().oneshot(Request::new(())).await.unwrap_err();
    }
    handle.set(Fault::abort());
    let mut fut = tokio_test::task::spawn(svc.clone().oneshot(Request::new(())));
    assert_pending!(fut.poll());

    let mut counts = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if key.key().name() != "resilience_chaos_injected_total" {
            continue;
        }
        let labels: Vec<_> = key.key().labels().collect();
        assert!(
            labels
                .iter()
                .any(|l| l.key() == "name" && l.value() == "publications")
        );
        let fault = labels
            .iter()
            .find(|l| l.key() == "fault")
            .expect("a fault label")
            .value()
            .to_owned();
        let DebugValue::Counter(n) = value else {
            panic!("{value:?}")
        };
        counts.insert(fault, n);
    }
    let want: std::collections::BTreeMap<String, u64> =
        [("abort", 1), ("error", 2), ("latency", 3)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
    assert_eq!(counts, want);
}

#[cfg(feature = "snapshot")]
#[test]
fn snapshot_describes_the_fault() {
    use resilience_core::snapshot::{LayerSnapshot, SnapshotRegistry};
    let layer = ChaosLayer::new("publications");
    let handle = layer.handle();
    assert_eq!(LayerSnapshot::kind(&handle), "chaos");
    let json = |h: &ChaosHandle| serde_json::to_value(LayerSnapshot::snapshot(h)).unwrap();

    let off = json(&handle);
    assert_eq!(off["active"], false);
    assert!(off["fault"].is_null());
    assert_eq!(off["injected"]["delayed"], 0);

    handle.set(
        Fault::latency(300 * MS)
            .fraction(0.25)
            .only(Priority::Sheddable),
    );
    let on = json(&handle);
    assert_eq!(on["active"], true);
    assert_eq!(on["fault"]["latency_ms"], 300);
    assert!(on["fault"].get("latency_min_ms").is_none());
    assert_eq!(on["fault"]["fraction"], 0.25);
    assert_eq!(on["fault"]["only"], "sheddable");
    assert_eq!(on["fault"]["abort"], false);
    assert_eq!(on["fault"]["error_rate"], 0.0);

    handle.set(Fault::latency_between(100 * MS, 500 * MS).and_errors(0.5));
    let range = json(&handle);
    assert_eq!(range["fault"]["latency_min_ms"], 100);
    assert_eq!(range["fault"]["latency_max_ms"], 500);
    assert!(range["fault"].get("latency_ms").is_none());
    assert_eq!(range["fault"]["error_rate"], 0.5);
    assert!(range["fault"]["only"].is_null());

    handle.set(Fault::abort());
    assert_eq!(json(&handle)["fault"]["abort"], true);

    let registry = SnapshotRegistry::new("shop");
    registry.register(handle.clone());
    let doc = registry.to_json();
    assert_eq!(doc["layers"][0]["kind"], "chaos");
    assert_eq!(doc["layers"][0]["name"], "publications");
    assert_eq!(doc["layers"][0]["state"]["active"], true);
}
