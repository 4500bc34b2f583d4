//! The client-side throttle through its public API, with tower-test mocks
//! and paused time.

use std::time::Duration;

use http::{Request, Response};
use resilience_circuit_breaker::throttle::{
    FixedPriority, ThrottleConfig, ThrottleLayer, ThrottleMode,
};
use resilience_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use resilience_core::{Classify, Deadline, Priority, Rejected, RejectionKind};
use tokio::time::{Instant, advance};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Service, ServiceExt, service_fn};
use tower_test::mock;

type Req = Request<()>;
type Rsp = Response<()>;

fn req(p: Option<Priority>) -> Req {
    let mut r = Request::new(());
    if let Some(p) = p {
        r.extensions_mut().insert(p);
    }
    r
}

fn ok_service() -> impl Service<Req, Response = Rsp, Error = resilience_core::BoxError, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(|_: Req| async { Ok(Response::new(())) })
}

fn status_service(
    status: u16,
) -> impl Service<Req, Response = Rsp, Error = resilience_core::BoxError, Future: Send>
+ Clone
+ Send
+ 'static {
    service_fn(
        move |_: Req| async move { Ok(Response::builder().status(status).body(()).unwrap()) },
    )
}

/// Sends `n` requests of priority `p`; returns how many passed.
async fn passed<S>(svc: &mut S, p: Option<Priority>, n: usize) -> usize
where
    S: Service<Req, Error = resilience_core::BoxError>,
{
    let mut ok = 0;
    for _ in 0..n {
        match svc.ready().await.unwrap().call(req(p)).await {
            Ok(_) => ok += 1,
            Err(e) => {
                let r = e.downcast_ref::<Rejected>().expect("a rejection");
                assert_eq!(r.kind(), RejectionKind::Throttled);
                assert_eq!(r.retry_after(), Some(Duration::from_secs(1)));
            }
        }
    }
    ok
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn fixed_share_is_applied_to_sheddable_levels_only() {
    let layer = ThrottleLayer::new(
        ThrottleConfig::builder()
            .allow_percent(10.0)
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(ok_service());
    let shed = passed(&mut svc, Some(Priority::Sheddable), 2000).await;
    assert!((140..=260).contains(&shed), "about 10%: {shed}");
    let shed_plus = passed(&mut svc, Some(Priority::SheddablePlus), 2000).await;
    assert!((140..=260).contains(&shed_plus), "about 10%: {shed_plus}");
    assert_eq!(passed(&mut svc, Some(Priority::Critical), 500).await, 500);
    assert_eq!(
        passed(&mut svc, Some(Priority::CriticalPlus), 500).await,
        500
    );
    assert_eq!(
        passed(&mut svc, None, 500).await,
        500,
        "no priority: critical"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_share_changes_at_run_time() {
    let layer = ThrottleLayer::new(ThrottleConfig::default());
    let handle = layer.handle();
    assert_eq!(handle.mode(), ThrottleMode::Fixed);
    let mut svc = layer.layer(ok_service());
    assert_eq!(passed(&mut svc, Some(Priority::Sheddable), 200).await, 200);
    handle.set_allow_percent(0.0);
    assert_eq!(handle.reject_probability(Priority::Sheddable), 1.0);
    assert_eq!(handle.reject_probability(Priority::Critical), 0.0);
    assert_eq!(passed(&mut svc, Some(Priority::Sheddable), 200).await, 0);
    handle.set_allow_percent(250.0); // clamped
    assert_eq!(handle.allow_percent(), 100.0);
    assert_eq!(passed(&mut svc, Some(Priority::Sheddable), 200).await, 200);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn priority_weights_scale_the_throttle() {
    let config = ThrottleConfig::builder()
        .allow_percent(0.0)
        .priority_weight(Priority::SheddablePlus, 0.5)
        .priority_weight(Priority::Critical, 0.1)
        .build()
        .unwrap();
    let layer = ThrottleLayer::new(config);
    let h = layer.handle();
    assert_eq!(h.reject_probability(Priority::Sheddable), 1.0);
    assert_eq!(h.reject_probability(Priority::SheddablePlus), 0.5);
    assert_eq!(h.reject_probability(Priority::Critical), 0.1);
    assert_eq!(h.reject_probability(Priority::CriticalPlus), 0.0);
    let mut svc = layer.layer(ok_service());
    let half = passed(&mut svc, Some(Priority::SheddablePlus), 2000).await;
    assert!((880..=1120).contains(&half), "about 50%: {half}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn priority_from_a_closure() {
    let layer = ThrottleLayer::new(
        ThrottleConfig::builder()
            .allow_percent(0.0)
            .build()
            .unwrap(),
    )
    .with_priority(|r: &&'static str| {
        if r.starts_with("batch") {
            Priority::Sheddable
        } else {
            Priority::Critical
        }
    })
    .with_classifier(resilience_circuit_breaker::ErrorsAsFailures)
    // not an `http::Request`: no deadline in extensions either
    .with_deadline(resilience_core::timeout::NoDeadline);
    let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call("batch-1").await.unwrap_err();
    assert!(err.is::<Rejected>());
    assert_pending!(handle.poll_request());
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call("user");
    handle.next_request().await.unwrap().1.send_response("ok");
    assert_eq!(fut.await.unwrap(), "ok");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn requests_without_a_priority_need_a_reader() {
    let config = ThrottleConfig::builder()
        .allow_percent(0.0)
        .build()
        .unwrap();
    // no priority: critical, never throttled by default
    let mut svc = ThrottleLayer::new(config.clone()).layer(ok_service());
    assert_eq!(passed(&mut svc, None, 10).await, 10);
    // the core's readers: one trait for the throttle and the queue
    let read: Box<dyn resilience_core::ReadPriority<Req> + Send> =
        Box::new(FixedPriority(Priority::Sheddable));
    assert_eq!(read.read_priority(&req(None)), Priority::Sheddable);
    let mut svc = ThrottleLayer::new(config)
        .with_priority(FixedPriority(Priority::Sheddable))
        .layer(ok_service());
    assert_eq!(passed(&mut svc, None, 10).await, 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn adaptive_follows_the_sre_formula() {
    let config = ThrottleConfig::builder()
        .adaptive()
        .k(2.0)
        .window(Duration::from_secs(10))
        .buckets(10)
        .max_reject_probability(0.9)
        .build()
        .unwrap();
    let layer = ThrottleLayer::new(config);
    let h = layer.handle();
    // a healthy backend: nothing throttled
    let mut healthy = layer.clone().layer(ok_service());
    assert_eq!(
        passed(&mut healthy, Some(Priority::Sheddable), 100).await,
        100
    );
    assert_eq!(h.counts(), (100, 100));
    assert_eq!(h.reject_probability(Priority::Sheddable), 0.0);

    // 4xx are accepts
    let mut not_found = layer.clone().layer(status_service(404));
    passed(&mut not_found, Some(Priority::Sheddable), 100).await;
    assert_eq!(h.counts(), (200, 200));

    advance(Duration::from_secs(11)).await;
    assert_eq!(h.counts(), (0, 0), "the window trails");

    // a failing backend: critical calls still pass and count
    let mut failing = layer.clone().layer(status_service(503));
    assert_eq!(
        passed(&mut failing, Some(Priority::Critical), 100).await,
        100
    );
    assert_eq!(h.counts(), (100, 0));
    let want = (100.0f64 / 101.0).min(0.9);
    assert!((h.reject_probability(Priority::Sheddable) - want).abs() < 1e-9);
    assert_eq!(h.reject_probability(Priority::Critical), 0.0);
    let shed = passed(&mut failing, Some(Priority::Sheddable), 1000).await;
    assert!(
        (60..=150).contains(&shed),
        "about 10% pass at the cap: {shed}"
    );

    // half the calls accepted with K = 2: no throttling
    advance(Duration::from_secs(11)).await;
    passed(&mut healthy, Some(Priority::Critical), 50).await;
    passed(&mut failing, Some(Priority::Critical), 50).await;
    assert_eq!(h.counts(), (100, 50));
    assert_eq!(h.reject_probability(Priority::Sheddable), 0.0);
    // a quarter accepted: (100 - 2*25) / 101 ... after 100 more failures
    passed(&mut failing, Some(Priority::Critical), 100).await;
    let (r, a) = h.counts();
    let want = (r as f64 - 2.0 * a as f64) / (r as f64 + 1.0);
    assert!((h.reject_probability(Priority::Sheddable) - want).abs() < 1e-9);
}

/// Against a backend that answers only 503, a burst of sheddable calls in
/// one instant (no time passes, nobody reads the handle) is throttled as
/// the handle reports: the decision follows the window call by call.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_burst_against_a_failing_backend_is_throttled_at_once() {
    let layer = ThrottleLayer::new(ThrottleConfig::builder().adaptive().build().unwrap())
        .with_priority(FixedPriority(Priority::Sheddable));
    let h = layer.handle();
    let mut failing = layer.layer(status_service(503));
    let mut passed = 0;
    for _ in 0..2000 {
        let req = Request::new(());
        if failing.ready().await.unwrap().call(req).await.is_ok() {
            passed += 1;
        }
    }
    // the first 20 calls pass (the minimum the window must hold), then the
    // probability is at its 0.9 cap (20 / 21 is above it): about 1 in 10
    assert!((100..=350).contains(&passed), "about 10% pass: {passed}");
    assert_eq!(h.counts(), (2000, 0));
    assert_eq!(h.reject_probability(Priority::Sheddable), 0.9);
}

/// At a client's start, a few failures refuse nothing: the adaptive
/// throttle decides once its window holds `minimum_requests` (default 20),
/// as a breaker waits for `minimum_calls`. Without the minimum, the formula
/// refuses half the calls after one failure (`1 / (1 + 1)`).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_few_failures_at_the_start_refuse_nothing() {
    let layer = ThrottleLayer::new(ThrottleConfig::builder().adaptive().build().unwrap())
        .with_priority(FixedPriority(Priority::Sheddable));
    let h = layer.handle();
    let mut failing = layer.clone().layer(status_service(503));
    let mut healthy = layer.layer(ok_service());
    // one failure, then 18 calls to a healthy backend: none refused
    assert!(
        failing
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .is_ok()
    );
    assert_eq!(h.reject_probability(Priority::Sheddable), 0.0);
    assert_eq!(
        passed(&mut healthy, Some(Priority::Sheddable), 18).await,
        18
    );
    assert_eq!(h.counts(), (19, 18));
    // five failures in a row: still under the minimum until the 20th request
    assert!(
        failing
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .is_ok()
    );
    assert_eq!(h.counts(), (20, 18));
    assert_eq!(
        h.reject_probability(Priority::Sheddable),
        0.0,
        "(20 - 36) / 21 < 0"
    );

    // a window of failures: decided from the 20th request on
    advance(Duration::from_secs(121)).await;
    for _ in 0..20 {
        failing
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
    }
    assert_eq!(h.counts(), (20, 0));
    assert_eq!(h.reject_probability(Priority::Sheddable), 0.9);

    // with `minimum_requests(0)`, one failure refuses about half
    let eager = ThrottleLayer::new(
        ThrottleConfig::builder()
            .adaptive()
            .minimum_requests(0)
            .build()
            .unwrap(),
    );
    let mut failing = eager.clone().layer(status_service(503));
    failing
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(eager.handle().reject_probability(Priority::Sheddable), 0.5);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn waits_for_the_paired_breaker_to_close() {
    let breaker = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
    let cb = breaker.handle();
    cb.force_open();
    let layer = ThrottleLayer::new(
        ThrottleConfig::builder()
            .max_wait(Duration::from_secs(10))
            .build()
            .unwrap(),
    )
    .wait_for(cb.clone());
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(layer);

    assert_ready_ok!(svc.poll_ready());
    let mut waiting = tokio_test::task::spawn(svc.call(req(Some(Priority::Sheddable))));
    assert_pending!(waiting.poll());
    advance(Duration::from_secs(3)).await;
    assert_pending!(waiting.poll());
    assert_pending!(handle.poll_request(), "not sent while open");

    // critical calls do not wait
    assert_ready_ok!(svc.poll_ready());
    let critical = svc.call(req(Some(Priority::Critical)));
    handle
        .next_request()
        .await
        .unwrap()
        .1
        .send_response(Response::new(()));
    critical.await.unwrap();

    cb.reset();
    assert!(waiting.is_woken());
    assert_pending!(waiting.poll());
    let (_, send) = handle.next_request().await.expect("sent once closed");
    send.send_response(Response::new(()));
    waiting.await.unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn released_waiters_go_through_admission() {
    let cb = CircuitBreakerLayer::new(CircuitBreakerConfig::default()).handle();
    cb.force_open();
    let layer = ThrottleLayer::new(
        ThrottleConfig::builder()
            .allow_percent(0.0)
            .max_wait(Duration::from_secs(10))
            .build()
            .unwrap(),
    )
    .wait_for(cb.clone());
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut waiting = tokio_test::task::spawn(svc.call(req(Some(Priority::Sheddable))));
    assert_pending!(waiting.poll());
    cb.reset();
    // closed: the fixed share (0%) still applies
    let err = waiting.await.unwrap_err();
    let r = err.downcast_ref::<Rejected>().unwrap();
    assert_eq!(r.reason(), "client-side throttling");
    assert_pending!(handle.poll_request());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn released_waiters_are_counted_in_the_adaptive_window() {
    let cb = CircuitBreakerLayer::new(CircuitBreakerConfig::default()).handle();
    cb.force_open();
    let layer = ThrottleLayer::new(
        ThrottleConfig::builder()
            .adaptive()
            .max_wait(Duration::from_secs(10))
            .build()
            .unwrap(),
    )
    .wait_for(cb.clone());
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut waiting = tokio_test::task::spawn(svc.call(req(Some(Priority::Sheddable))));
    assert_pending!(waiting.poll());
    assert_eq!(h.counts(), (0, 0), "not counted while waiting");
    cb.reset();
    assert_pending!(waiting.poll());
    assert_eq!(h.counts(), (1, 0), "counted when admitted");
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(()));
    waiting.await.unwrap();
    assert_eq!(h.counts(), (1, 1));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn waiters_are_capped() {
    let cb = CircuitBreakerLayer::new(CircuitBreakerConfig::default()).handle();
    cb.force_open();
    let layer = ThrottleLayer::new(
        ThrottleConfig::builder()
            .max_wait(Duration::from_secs(10))
            .max_waiters(2)
            .build()
            .unwrap(),
    )
    .wait_for(cb.clone());
    let h = layer.handle();
    let (mut svc, _handle) = mock::spawn_layer::<Req, Rsp, _>(layer);
    let mut waiters = vec![];
    for _ in 0..2 {
        assert_ready_ok!(svc.poll_ready());
        let mut w = tokio_test::task::spawn(svc.call(req(Some(Priority::Sheddable))));
        assert_pending!(w.poll());
        waiters.push(w);
    }
    assert_eq!(h.waiting(), 2);
    // the third is refused at once
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call(req(Some(Priority::Sheddable))).await.unwrap_err();
    let r = err.downcast_ref::<Rejected>().unwrap();
    assert_eq!(r.kind(), RejectionKind::Throttled);
    assert_eq!(r.reason(), "too many waiting calls");
    // a cancelled waiter gives its place back
    waiters.pop();
    assert_eq!(h.waiting(), 1);
    assert_ready_ok!(svc.poll_ready());
    let mut w = tokio_test::task::spawn(svc.call(req(Some(Priority::Sheddable))));
    assert_pending!(w.poll());
    assert_eq!(h.waiting(), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn waiters_wait_out_the_recovery_ramp() {
    let breaker = CircuitBreakerLayer::new(
        CircuitBreakerConfig::builder()
            .consecutive_failures(1)
            .half_open_probes(1)
            .open_for(Duration::from_secs(1))
            .jitter(0.0)
            .recovery_ramp(Duration::from_secs(10))
            .build()
            .unwrap(),
    );
    let cb = breaker.handle();
    let mut guarded = breaker.layer(ok_service());
    let layer = ThrottleLayer::new(
        ThrottleConfig::builder()
            .max_wait(Duration::from_secs(60))
            .build()
            .unwrap(),
    )
    .wait_for(cb.clone());
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(layer);

    cb.trip();
    assert_ready_ok!(svc.poll_ready());
    let mut waiting = tokio_test::task::spawn(svc.call(req(Some(Priority::Sheddable))));
    assert_pending!(waiting.poll());
    // a probe closes the breaker: the ramp starts
    advance(Duration::from_secs(1)).await;
    guarded
        .ready()
        .await
        .unwrap()
        .call(req(None))
        .await
        .unwrap();
    assert!(cb.snapshot().is_ramping());
    assert_pending!(waiting.poll());
    assert_pending!(handle.poll_request(), "not released while ramping");
    advance(Duration::from_secs(10)).await;
    assert_pending!(waiting.poll());
    let (_, send) = handle
        .next_request()
        .await
        .expect("released after the ramp");
    send.send_response(Response::new(()));
    waiting.await.unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_wait_is_bounded_by_max_wait_and_deadline() {
    let breaker = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
    let cb = breaker.handle();
    cb.trip();
    let layer = ThrottleLayer::new(
        ThrottleConfig::builder()
            .max_wait(Duration::from_secs(2))
            .build()
            .unwrap(),
    )
    .wait_for(cb);
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(layer);

    let start = Instant::now();
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call(req(Some(Priority::Sheddable))).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let r = err.downcast_ref::<Rejected>().unwrap();
    assert_eq!(r.kind(), RejectionKind::Throttled);
    assert_eq!(r.reason(), "circuit did not close in time");
    assert_pending!(handle.poll_request());

    let start = Instant::now();
    let mut with_deadline = req(Some(Priority::SheddablePlus));
    with_deadline
        .extensions_mut()
        .insert(Deadline::after(Duration::from_millis(300)));
    assert_ready_ok!(svc.poll_ready());
    assert!(svc.call(with_deadline).await.is_err());
    assert_eq!(start.elapsed(), Duration::from_millis(300));

    // cancelling a wait leaves nothing behind
    assert_ready_ok!(svc.poll_ready());
    let mut fut = tokio_test::task::spawn(svc.call(req(Some(Priority::Sheddable))));
    assert_pending!(fut.poll());
    drop(fut);
    assert_pending!(handle.poll_request());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_longest_max_wait_does_not_panic() {
    let breaker = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
    let cb = breaker.handle();
    cb.force_open();
    let layer = ThrottleLayer::new(
        ThrottleConfig::builder()
            .max_wait(resilience_core::config::MAX_DURATION)
            .build()
            .unwrap(),
    )
    .wait_for(cb.clone());
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(layer);

    // bounded by the deadline alone
    let start = Instant::now();
    let mut with_deadline = req(Some(Priority::Sheddable));
    with_deadline
        .extensions_mut()
        .insert(Deadline::after(Duration::from_millis(300)));
    assert_ready_ok!(svc.poll_ready());
    assert!(svc.call(with_deadline).await.is_err());
    assert_eq!(start.elapsed(), Duration::from_millis(300));

    // no deadline: waits until the circuit closes
    assert_ready_ok!(svc.poll_ready());
    let mut waiting = tokio_test::task::spawn(svc.call(req(Some(Priority::Sheddable))));
    assert_pending!(waiting.poll());
    advance(Duration::from_secs(3600)).await;
    assert_pending!(waiting.poll());
    cb.reset();
    assert_pending!(waiting.poll());
    let (_, send) = handle.next_request().await.expect("sent once closed");
    send.send_response(Response::new(()));
    waiting.await.unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn throttled_maps_to_429_and_throttle_composes_with_the_breaker() {
    use tower::ServiceBuilder;
    let cb_layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
    let throttle = ThrottleLayer::new(
        ThrottleConfig::builder()
            .allow_percent(0.0)
            .build()
            .unwrap(),
    );
    let mut svc = ServiceBuilder::new()
        .layer(throttle)
        .layer(cb_layer)
        .service(ok_service());
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(req(Some(Priority::Sheddable)))
        .await
        .unwrap_err();
    let rsp = resilience_core::http::error_response(&*err);
    assert_eq!(rsp.status(), 429);
    assert_eq!(rsp.headers()["retry-after"], "1");
    svc.ready()
        .await
        .unwrap()
        .call(req(Some(Priority::Critical)))
        .await
        .unwrap();
}

#[test]
fn config_validation_errors() {
    let err = ThrottleConfig::builder().k(0.0).build().unwrap_err();
    assert_eq!(err.field(), "k");
    let err = ThrottleConfig::builder()
        .priority_weight(Priority::Sheddable, f64::INFINITY)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "weights");
    for after in [
        Duration::ZERO,
        Duration::MAX,
        ThrottleConfig::MAX_RETRY_AFTER * 2,
    ] {
        let err = ThrottleConfig::builder()
            .retry_after(after)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "retry_after", "{after:?}");
    }
    ThrottleConfig::builder()
        .retry_after(ThrottleConfig::MAX_RETRY_AFTER)
        .build()
        .unwrap();
}

#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn counts_rejections_by_priority() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let layer = ThrottleLayer::new(
        ThrottleConfig::builder()
            .name("metered")
            .allow_percent(0.0)
            .build()
            .unwrap(),
    );
    let mut svc = layer.layer(ok_service());
    passed(&mut svc, Some(Priority::Sheddable), 3).await;
    let found = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(k, _, _, _)| {
            k.key().name() == "resilience_throttle_rejected_total"
                && k.key()
                    .labels()
                    .any(|l| l.key() == "priority" && l.value() == "sheddable")
        })
        .map(|(_, _, _, v)| v);
    assert_eq!(found, Some(DebugValue::Counter(3)));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn axum_router_maps_throttled_to_429() {
    use axum::{Router, body::Body, error_handling::HandleErrorLayer, routing::get};
    use tower::ServiceBuilder;

    let throttle = ThrottleLayer::new(
        ThrottleConfig::builder()
            .allow_percent(0.0)
            .build()
            .unwrap(),
    );
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(resilience_core::http::handle_error))
            .layer(throttle),
    );
    let mut shed = Request::new(Body::empty());
    shed.extensions_mut().insert(Priority::Sheddable);
    let rsp = app.clone().oneshot(shed).await.unwrap();
    assert_eq!(rsp.status(), 429);
    assert_eq!(rsp.headers()["retry-after"], "1");
    let rsp = app.oneshot(Request::new(Body::empty())).await.unwrap();
    assert_eq!(rsp.status(), 200, "critical by default");
}

use tower::Layer;

/// A service that is neither `Clone` nor `Send`, whose futures and requests
/// are not `Send` either (a connection kept in an `Rc`, say).
struct Local {
    calls: std::rc::Rc<std::cell::Cell<usize>>,
}

type LocalReq = Request<std::rc::Rc<()>>;

impl Service<LocalReq> for Local {
    type Response = Rsp;
    type Error = resilience_core::BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Rsp, Self::Error>>>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: LocalReq) -> Self::Future {
        let calls = self.calls.clone();
        Box::pin(async move {
            let _body: std::rc::Rc<()> = req.into_body();
            tokio::task::yield_now().await;
            calls.set(calls.get() + 1);
            Ok(Response::new(()))
        })
    }
}

/// A throttle that never waits asks nothing of its inner service but being
/// a `Service`: here one that is not `Clone`, with `!Send` futures and
/// requests, in fixed and adaptive mode.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_throttle_without_wait_for_works_over_any_service() {
    let calls = std::rc::Rc::new(std::cell::Cell::new(0));
    let local_req = |p: Priority| {
        let mut r = Request::new(std::rc::Rc::new(()));
        r.extensions_mut().insert(p);
        r
    };

    let fixed = ThrottleLayer::new(
        ThrottleConfig::builder()
            .allow_percent(0.0)
            .build()
            .unwrap(),
    );
    let mut svc = fixed.layer(Local {
        calls: calls.clone(),
    });
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(local_req(Priority::Sheddable))
        .await
        .unwrap_err();
    assert!(err.is::<Rejected>());
    svc.ready()
        .await
        .unwrap()
        .call(local_req(Priority::Critical))
        .await
        .unwrap();
    assert_eq!(calls.get(), 1);

    let adaptive = ThrottleLayer::new(ThrottleConfig::builder().adaptive().build().unwrap());
    let handle = adaptive.handle();
    let mut svc = adaptive.layer(Local {
        calls: calls.clone(),
    });
    for _ in 0..3 {
        svc.ready()
            .await
            .unwrap()
            .call(local_req(Priority::Sheddable))
            .await
            .unwrap();
    }
    assert_eq!(calls.get(), 4);
    assert_eq!(handle.counts(), (3, 3));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_reconfiguration_changes_the_share_and_the_weights_in_place() {
    let layer = ThrottleLayer::new(ThrottleConfig::default());
    let handle = layer.handle();
    let mut svc = layer.layer(ok_service());
    let none = ThrottleConfig::builder()
        .allow_percent(0.0)
        .build()
        .unwrap();
    assert!(handle.reconfigure(&none).is_empty());
    assert_eq!(handle.allow_percent(), 0.0);
    assert_eq!(passed(&mut svc, Some(Priority::Sheddable), 100).await, 0);
    assert_eq!(handle.config().allow_percent(), 0.0);
    // Critical calls are throttled too once their weight says so.
    let critical = ThrottleConfig::builder()
        .allow_percent(0.0)
        .priority_weight(Priority::Critical, 1.0)
        .build()
        .unwrap();
    assert!(handle.reconfigure(&critical).is_empty());
    assert_eq!(passed(&mut svc, Some(Priority::Critical), 100).await, 0);
    // The mode cannot change: listed, kept.
    let adaptive = ThrottleConfig::builder().adaptive().build().unwrap();
    assert_eq!(handle.reconfigure(&adaptive), ["mode"]);
    assert_eq!(handle.mode(), ThrottleMode::Fixed);
}
