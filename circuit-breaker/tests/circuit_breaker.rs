//! The circuit breaker through its public API, with tower-test mocks and
//! paused time.

use std::time::Duration;

use http::{Request, Response};
use resilience_circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerConfigBuilder, CircuitBreakerHandle,
    CircuitBreakerLayer, CircuitState, ErrorsAsFailures,
};
use resilience_core::{BoxError, Classify, HttpOutcome, Rejected, RejectionKind, timeout::Elapsed};
use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready_ok};
use tower_test::mock::{self, Handle, Mock, Spawn};

type Req = Request<()>;
type Rsp = Response<()>;
type Svc = Spawn<CircuitBreaker<Mock<Req, Rsp>, HttpOutcome>>;

fn rsp(status: u16) -> Rsp {
    Response::builder().status(status).body(()).unwrap()
}

fn base() -> CircuitBreakerConfigBuilder {
    CircuitBreakerConfig::builder()
        .name("test")
        .count_window(4)
        .minimum_calls(4)
        .failure_rate_threshold(50.0)
        .open_for(Duration::from_secs(1))
        .jitter(0.0)
}

fn spawn(config: CircuitBreakerConfig) -> (Svc, Handle<Req, Rsp>, CircuitBreakerHandle) {
    let layer = CircuitBreakerLayer::new(config);
    let cb = layer.handle();
    let (svc, handle) = mock::spawn_layer(layer);
    (svc, handle, cb)
}

enum Reply {
    Status(u16),
    Error(BoxError),
}

/// One call that reaches the inner service and gets `reply`.
async fn call(svc: &mut Svc, handle: &mut Handle<Req, Rsp>, reply: Reply) -> Result<Rsp, BoxError> {
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(Request::new(()));
    let (_, send) = handle
        .next_request()
        .await
        .expect("the call reached the inner service");
    match reply {
        Reply::Status(s) => send.send_response(rsp(s)),
        Reply::Error(e) => send.send_error(e),
    }
    fut.await
}

/// One call that must be rejected without reaching the inner service.
async fn rejected(svc: &mut Svc, handle: &mut Handle<Req, Rsp>) -> Rejected {
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call(Request::new(())).await.unwrap_err();
    assert_pending!(handle.poll_request());
    err.downcast_ref::<Rejected>().expect("a rejection").clone()
}

async fn open_it(svc: &mut Svc, handle: &mut Handle<Req, Rsp>) {
    for _ in 0..4 {
        let _ = call(svc, handle, Reply::Status(500)).await;
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_count_window_slides() {
    let (mut svc, mut handle, cb) = spawn(base().build().unwrap());
    // 1 failure in 4: stays closed
    for s in [500, 200, 200, 200] {
        call(&mut svc, &mut handle, Reply::Status(s)).await.unwrap();
    }
    assert_eq!(cb.state(), CircuitState::Closed);
    // the first failure slides out as a new one comes in: still 1 in 4
    call(&mut svc, &mut handle, Reply::Status(500))
        .await
        .unwrap();
    let snap = cb.snapshot();
    assert_eq!((snap.calls(), snap.failures()), (4, 1));
    assert_eq!(cb.state(), CircuitState::Closed);
    // after many successes, the last N calls decide: 2 failures in 4 open
    for _ in 0..20 {
        call(&mut svc, &mut handle, Reply::Status(200))
            .await
            .unwrap();
    }
    call(&mut svc, &mut handle, Reply::Status(500))
        .await
        .unwrap();
    assert_eq!(cb.state(), CircuitState::Closed);
    call(&mut svc, &mut handle, Reply::Status(500))
        .await
        .unwrap();
    assert_eq!(
        cb.state(),
        CircuitState::Open,
        "2 of the last 4 failed (50%)"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_success_that_completes_the_minimum_opens() {
    let config = base().count_window(10).minimum_calls(10).build().unwrap();
    let (mut svc, mut handle, cb) = spawn(config);
    for _ in 0..9 {
        call(&mut svc, &mut handle, Reply::Status(500))
            .await
            .unwrap();
    }
    assert_eq!(cb.state(), CircuitState::Closed, "9 calls < minimum");
    call(&mut svc, &mut handle, Reply::Status(200))
        .await
        .unwrap();
    assert_eq!(cb.state(), CircuitState::Open, "9 failures of 10 calls");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn open_fails_fast_with_retry_after_and_half_opens() {
    let (mut svc, mut handle, cb) = spawn(base().half_open_probes(1).build().unwrap());
    open_it(&mut svc, &mut handle).await;
    assert_eq!(cb.state(), CircuitState::Open);

    let r = rejected(&mut svc, &mut handle).await;
    assert_eq!(r.kind(), RejectionKind::CircuitOpen);
    assert_eq!(r.retry_after(), Some(Duration::from_secs(1)));
    advance(Duration::from_millis(400)).await;
    let r = rejected(&mut svc, &mut handle).await;
    assert_eq!(r.retry_after(), Some(Duration::from_millis(600)));
    assert_eq!(
        cb.snapshot().time_until_half_open(),
        Some(Duration::from_millis(600))
    );

    advance(Duration::from_millis(600)).await;
    // half-open: one probe goes through; it succeeds and closes the circuit
    call(&mut svc, &mut handle, Reply::Status(200))
        .await
        .unwrap();
    assert_eq!(cb.state(), CircuitState::Closed);
    assert_eq!(cb.snapshot().calls(), 0, "the window starts empty");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn open_does_not_poll_the_inner_service() {
    let (mut svc, mut handle, cb) = spawn(base().build().unwrap());
    open_it(&mut svc, &mut handle).await;
    handle.allow(0); // the inner service is not ready
    // ...yet the breaker is: it fails fast without polling it
    let r = rejected(&mut svc, &mut handle).await;
    assert_eq!(r.kind(), RejectionKind::CircuitOpen);
    assert_eq!(cb.state(), CircuitState::Open);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_storm_of_4xx_never_opens() {
    let (mut svc, mut handle, cb) = spawn(base().build().unwrap());
    for s in [400, 404, 429, 401, 403, 404, 422, 409, 404, 400] {
        let rsp = call(&mut svc, &mut handle, Reply::Status(s)).await.unwrap();
        assert_eq!(rsp.status(), s);
    }
    assert_eq!(cb.state(), CircuitState::Closed);
    assert_eq!(cb.snapshot().failures(), 0);
    assert_eq!(cb.snapshot().failure_rate(), Some(0.0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn server_errors_timeouts_and_transport_errors_open() {
    let (mut svc, mut handle, cb) = spawn(base().build().unwrap());
    call(&mut svc, &mut handle, Reply::Status(200))
        .await
        .unwrap();
    call(&mut svc, &mut handle, Reply::Status(502))
        .await
        .unwrap();
    let err = call(&mut svc, &mut handle, Reply::Error(Elapsed::new().into()))
        .await
        .unwrap_err();
    assert!(err.is::<Elapsed>(), "inner errors pass through unchanged");
    assert_eq!(cb.state(), CircuitState::Closed, "3 calls < minimum");
    let err = call(
        &mut svc,
        &mut handle,
        Reply::Error(std::io::Error::other("connection reset").into()),
    )
    .await
    .unwrap_err();
    assert!(err.is::<std::io::Error>());
    assert_eq!(cb.state(), CircuitState::Open, "3 failures of 4");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn half_open_admits_exactly_n_probes() {
    let (mut svc, mut handle, cb) = spawn(base().half_open_probes(2).build().unwrap());
    open_it(&mut svc, &mut handle).await;
    advance(Duration::from_secs(1)).await;

    let mut svc2 = Spawn::new(svc.get_ref().clone());
    let mut svc3 = Spawn::new(svc.get_ref().clone());
    assert_ready_ok!(svc.poll_ready());
    let p1 = svc.call(Request::new(()));
    assert_eq!(cb.state(), CircuitState::HalfOpen);
    assert_ready_ok!(svc2.poll_ready());
    let p2 = svc2.call(Request::new(()));
    assert_eq!(cb.snapshot().probes_in_use(), 2);
    // the third caller is refused
    assert_ready_ok!(svc3.poll_ready());
    let err = svc3.call(Request::new(())).await.unwrap_err();
    let r = err.downcast_ref::<Rejected>().unwrap();
    assert_eq!(r.reason(), "half-open, probes in flight");

    for _ in 0..2 {
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(rsp(200));
    }
    p1.await.unwrap();
    assert_eq!(cb.state(), CircuitState::HalfOpen, "one probe still out");
    p2.await.unwrap();
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hung_probes_time_out_and_reopen() {
    let config = base()
        .half_open_probes(1)
        .half_open_max_duration(Duration::from_secs(5))
        .build()
        .unwrap();
    let (mut svc, mut handle, cb) = spawn(config);
    open_it(&mut svc, &mut handle).await;
    advance(Duration::from_secs(1)).await;

    // the probe hangs
    assert_ready_ok!(svc.poll_ready());
    let hung = svc.call(Request::new(()));
    let (_, late) = handle.next_request().await.unwrap();
    assert_eq!(cb.state(), CircuitState::HalfOpen);

    // others are refused with a retry-after: the end of the half-open period
    advance(Duration::from_secs(2)).await;
    let r = rejected(&mut svc, &mut handle).await;
    assert_eq!(r.reason(), "half-open, probes in flight");
    assert_eq!(r.retry_after(), Some(Duration::from_secs(3)));

    // past it, the hung probe counts as a failure: open again (backoff: 2s)
    advance(Duration::from_secs(3)).await;
    let mut events = cb.subscribe();
    let r = rejected(&mut svc, &mut handle).await;
    assert_eq!(r.kind(), RejectionKind::CircuitOpen);
    assert_eq!(r.retry_after(), Some(Duration::from_secs(2)));
    assert_eq!(cb.state(), CircuitState::Open);
    let t = events.try_recv().unwrap();
    assert_eq!(
        (t.from(), t.to(), t.reason()),
        (
            CircuitState::HalfOpen,
            CircuitState::Open,
            "half-open probes timed out"
        )
    );

    // its late success is ignored
    late.send_response(rsp(200));
    hung.await.unwrap();
    assert_eq!(cb.state(), CircuitState::Open);

    // the next half-open period probes afresh
    advance(Duration::from_secs(2)).await;
    call(&mut svc, &mut handle, Reply::Status(200))
        .await
        .unwrap();
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_cancelled_probe_frees_its_slot() {
    let (mut svc, mut handle, cb) = spawn(base().half_open_probes(1).build().unwrap());
    open_it(&mut svc, &mut handle).await;
    advance(Duration::from_secs(1)).await;

    // cancelled after the call
    assert_ready_ok!(svc.poll_ready());
    let probe = svc.call(Request::new(()));
    assert_eq!(cb.snapshot().probes_in_use(), 1);
    let _ = handle.next_request().await.unwrap();
    drop(probe);
    assert_eq!(cb.snapshot().probes_in_use(), 0);

    // ready but never called, then dropped: no slot was ever taken
    let mut other = Spawn::new(svc.get_ref().clone());
    assert_ready_ok!(other.poll_ready());
    assert_eq!(cb.snapshot().probes_in_use(), 0);
    drop(other);
    assert_eq!(cb.snapshot().probes_in_use(), 0);

    // the slot serves a new probe, whose failure re-opens the circuit
    let rsp = call(&mut svc, &mut handle, Reply::Status(500))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 500);
    assert_eq!(cb.state(), CircuitState::Open);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_probe_whose_inner_call_panics_frees_its_slot() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::{Layer, Service, ServiceExt};

    // An inner service whose `call` panics while `boom` is set.
    let boom = Arc::new(AtomicBool::new(false));
    let flag = boom.clone();
    let layer = CircuitBreakerLayer::new(base().half_open_probes(1).build().unwrap());
    let cb = layer.handle();
    let mut svc = layer.layer(tower::service_fn(move |_: Req| {
        assert!(!flag.load(Ordering::SeqCst), "inner call panicked");
        async { Ok::<_, BoxError>(rsp(500)) }
    }));
    for _ in 0..4 {
        let _ = svc.ready().await.unwrap().call(Request::new(())).await;
    }
    assert_eq!(cb.state(), CircuitState::Open);
    advance(Duration::from_secs(1)).await;

    // The probe's inner call panics; a caller above catches it.
    boom.store(true, Ordering::SeqCst);
    svc.ready().await.unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _never_made = svc.call(Request::new(()));
    }));
    assert!(caught.is_err());
    assert_eq!(cb.snapshot().probes_in_use(), 0, "the slot went back");

    // The next probe goes through.
    boom.store(false, Ordering::SeqCst);
    let rsp = svc.ready().await.unwrap().call(Request::new(())).await;
    assert_eq!(rsp.unwrap().status(), 500);
    assert_eq!(
        cb.state(),
        CircuitState::Open,
        "the probe failed: open again"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn readiness_without_a_call_holds_no_probe() {
    let (mut svc, mut handle, cb) = spawn(base().half_open_probes(2).build().unwrap());
    open_it(&mut svc, &mut handle).await;
    advance(Duration::from_secs(1)).await;

    // three idle clients get readiness and never call (a throttle refused
    // them, a ready cache keeps them): they hold no probe slot
    let mut idle: Vec<_> = (0..3).map(|_| Spawn::new(svc.get_ref().clone())).collect();
    for s in &mut idle {
        assert_ready_ok!(s.poll_ready());
    }
    assert_eq!(cb.snapshot().probes_in_use(), 0);

    // the probes go to callers that do call
    call(&mut svc, &mut handle, Reply::Status(200))
        .await
        .unwrap();
    assert_eq!(cb.state(), CircuitState::HalfOpen);
    call(&mut svc, &mut handle, Reply::Status(200))
        .await
        .unwrap();
    assert_eq!(cb.state(), CircuitState::Closed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_clone_ready_while_closed_is_rejected_once_open() {
    let (mut svc, mut handle, cb) = spawn(base().build().unwrap());
    let mut stale = Spawn::new(svc.get_ref().clone());
    assert_ready_ok!(stale.poll_ready());
    open_it(&mut svc, &mut handle).await;
    assert_eq!(cb.state(), CircuitState::Open);

    let err = stale.call(Request::new(())).await.unwrap_err();
    let r = err.downcast_ref::<Rejected>().expect("a rejection");
    assert_eq!(r.kind(), RejectionKind::CircuitOpen);
    assert_eq!(r.retry_after(), Some(Duration::from_secs(1)));
    assert_pending!(handle.poll_request(), "the inner service was not called");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_clone_ready_while_half_open_is_rejected_once_reopened() {
    let (mut svc, mut handle, cb) = spawn(base().half_open_probes(2).build().unwrap());
    open_it(&mut svc, &mut handle).await;
    advance(Duration::from_secs(1)).await;
    // made ready in half-open: no permit is held...
    let mut stale = Spawn::new(svc.get_ref().clone());
    assert_ready_ok!(stale.poll_ready());
    // ...so a failing probe re-opens the circuit (50% of 2 probes)
    call(&mut svc, &mut handle, Reply::Status(500))
        .await
        .unwrap();
    assert_eq!(cb.state(), CircuitState::Open);
    let err = stale.call(Request::new(())).await.unwrap_err();
    let r = err.downcast_ref::<Rejected>().expect("a rejection");
    assert_eq!(r.kind(), RejectionKind::CircuitOpen);
    assert_pending!(handle.poll_request(), "the inner service was not called");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn ready_while_open_then_called_after_half_open_is_rejected() {
    let (mut svc, mut handle, cb) = spawn(base().half_open_probes(1).build().unwrap());
    open_it(&mut svc, &mut handle).await;
    handle.allow(0);
    // open: ready without polling the (not ready) inner service
    assert_ready_ok!(svc.poll_ready());
    advance(Duration::from_secs(1)).await;
    // the inner service was never polled ready: it may not be called
    let err = svc.call(Request::new(())).await.unwrap_err();
    let r = err.downcast_ref::<Rejected>().expect("a rejection");
    assert_eq!(r.retry_after(), Some(Duration::ZERO));
    assert_eq!(cb.snapshot().probes_in_use(), 0);
    // polled again: half-open, waits for the inner service
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    call(&mut svc, &mut handle, Reply::Status(200))
        .await
        .unwrap();
    assert_eq!(cb.state(), CircuitState::Closed);
}

/// A call without a ready `poll_ready` first (never polled, a fresh clone,
/// polled `Pending`) is the caller's bug: its own error, not the breaker's
/// rejection, not recorded, and the inner service is not called.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_call_without_poll_ready_is_not_a_rejection() {
    use resilience_circuit_breaker::error::NotPolled;
    let (mut svc, mut handle, cb) = spawn(base().build().unwrap());
    let err = svc.call(Request::new(())).await.unwrap_err();
    assert!(err.is::<NotPolled>(), "{err}");
    assert!(
        resilience_core::error::find(&*err).is_none(),
        "not a rejection"
    );
    assert_pending!(handle.poll_request(), "the inner service was not called");

    // a fresh clone holds no readiness of its own
    assert_ready_ok!(svc.poll_ready());
    let mut clone = Spawn::new(svc.get_ref().clone());
    let err = clone.call(Request::new(())).await.unwrap_err();
    assert!(err.is::<NotPolled>(), "{err}");

    // polled, but the inner service was not ready
    handle.allow(0);
    let mut other = Spawn::new(svc.get_ref().clone());
    assert_pending!(other.poll_ready());
    let err = other.call(Request::new(())).await.unwrap_err();
    assert!(err.is::<NotPolled>(), "{err}");
    assert_pending!(handle.poll_request(), "the inner service was not called");

    handle.allow(1);
    call(&mut svc, &mut handle, Reply::Status(200))
        .await
        .unwrap();
    let snap = cb.snapshot();
    assert_eq!((snap.state(), snap.calls()), (CircuitState::Closed, 1));
}

/// ... and it does not count as a rejection in the metrics.
#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_call_without_poll_ready_is_not_counted() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let (mut svc, mut handle, cb) = spawn(base().name("misused").build().unwrap());
    for _ in 0..3 {
        assert!(svc.call(Request::new(())).await.is_err());
    }
    cb.force_open();
    rejected(&mut svc, &mut handle).await;
    let calls = |outcome: &str| {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(k, _, _, _)| {
                k.key().name() == "resilience_circuit_breaker_calls_total"
                    && k.key()
                        .labels()
                        .any(|l| l.key() == "outcome" && l.value() == outcome)
            })
            .map(|(_, _, _, v)| v)
    };
    assert_eq!(
        calls("rejected"),
        Some(DebugValue::Counter(1)),
        "the forced-open call only"
    );
    assert_eq!(calls("success"), Some(DebugValue::Counter(0)));
    assert_eq!(calls("failure"), Some(DebugValue::Counter(0)));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn reopens_with_growing_capped_backoff_and_closes() {
    let config = base()
        .half_open_probes(1)
        .open_for(Duration::from_secs(1))
        .max_open_for(Duration::from_secs(5))
        .build()
        .unwrap();
    let (mut svc, mut handle, cb) = spawn(config);
    let mut events = cb.subscribe();
    open_it(&mut svc, &mut handle).await;
    let mut open_periods = vec![];
    for _ in 0..4 {
        let wait = cb.snapshot().time_until_half_open().unwrap();
        open_periods.push(wait.as_secs());
        advance(wait).await;
        call(&mut svc, &mut handle, Reply::Status(503))
            .await
            .unwrap();
        assert_eq!(cb.state(), CircuitState::Open);
    }
    assert_eq!(open_periods, [1, 2, 4, 5]);
    assert_eq!(cb.snapshot().consecutive_opens(), 5);

    advance(Duration::from_secs(5)).await;
    call(&mut svc, &mut handle, Reply::Status(200))
        .await
        .unwrap();
    assert_eq!(cb.state(), CircuitState::Closed);
    assert_eq!(
        cb.snapshot().consecutive_opens(),
        0,
        "backoff resets on close"
    );

    let mut seen = vec![];
    while let Ok(t) = events.try_recv() {
        seen.push((t.from(), t.to()));
    }
    assert_eq!(seen.len(), 1 + 4 * 2 + 2);
    assert_eq!(seen[0], (CircuitState::Closed, CircuitState::Open));
    assert_eq!(seen[1], (CircuitState::Open, CircuitState::HalfOpen));
    assert_eq!(seen[2], (CircuitState::HalfOpen, CircuitState::Open));
    assert_eq!(
        *seen.last().unwrap(),
        (CircuitState::HalfOpen, CircuitState::Closed)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn jitter_spreads_the_open_period_within_bounds() {
    let mut seen = std::collections::BTreeSet::new();
    for cap in [300, 11] {
        for _ in 0..10 {
            let config = base()
                .jitter(0.5)
                .open_for(Duration::from_secs(10))
                .max_open_for(Duration::from_secs(cap))
                .build()
                .unwrap();
            let (mut svc, mut handle, cb) = spawn(config);
            open_it(&mut svc, &mut handle).await;
            let d = cb.snapshot().time_until_half_open().unwrap();
            let max = Duration::from_secs(cap.min(15));
            assert!(
                d >= Duration::from_secs(5) && d <= max,
                "{d:?} (cap {cap}s)"
            );
            seen.insert(d);
        }
    }
    assert!(seen.len() > 5, "jittered: {seen:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn forced_open_disabled_and_metrics_only() {
    let (mut svc, mut handle, cb) = spawn(base().build().unwrap());

    cb.force_open();
    let r = rejected(&mut svc, &mut handle).await;
    assert_eq!(r.reason(), "forced open");
    advance(Duration::from_secs(3600)).await;
    rejected(&mut svc, &mut handle).await; // stays open

    cb.disable();
    for _ in 0..10 {
        call(&mut svc, &mut handle, Reply::Status(500))
            .await
            .unwrap();
    }
    assert_eq!(cb.state(), CircuitState::Disabled);
    assert_eq!(cb.snapshot().calls(), 0, "nothing recorded");

    cb.metrics_only();
    for _ in 0..10 {
        call(&mut svc, &mut handle, Reply::Status(500))
            .await
            .unwrap();
    }
    assert_eq!(cb.state(), CircuitState::MetricsOnly, "never opens");
    assert_eq!(cb.snapshot().failure_rate(), Some(100.0), "but records");

    cb.reset();
    assert_eq!(cb.state(), CircuitState::Closed);
    assert_eq!(cb.snapshot().calls(), 0);
    open_it(&mut svc, &mut handle).await;
    assert_eq!(cb.state(), CircuitState::Open);
    cb.reset();
    call(&mut svc, &mut handle, Reply::Status(200))
        .await
        .unwrap();

    cb.trip();
    let r = rejected(&mut svc, &mut handle).await;
    assert_eq!(r.retry_after(), Some(Duration::from_secs(1)));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn slow_calls_open_the_circuit() {
    let config = base()
        .slow_call_duration(Duration::from_millis(100))
        .slow_call_rate_threshold(75.0)
        .build()
        .unwrap();
    let (mut svc, mut handle, cb) = spawn(config);
    for i in 0..4 {
        assert_ready_ok!(svc.poll_ready());
        let fut = svc.call(Request::new(()));
        let (_, send) = handle.next_request().await.unwrap();
        advance(Duration::from_millis(if i == 0 { 10 } else { 150 })).await;
        send.send_response(rsp(200));
        fut.await.unwrap();
    }
    assert_eq!(cb.snapshot().slow_calls(), 3);
    assert_eq!(cb.state(), CircuitState::Open);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn time_window_forgets_old_failures() {
    let config = base()
        .time_window(Duration::from_secs(10))
        .time_window_buckets(10)
        .minimum_calls(3)
        .build()
        .unwrap();
    let (mut svc, mut handle, cb) = spawn(config);
    call(&mut svc, &mut handle, Reply::Status(500))
        .await
        .unwrap();
    call(&mut svc, &mut handle, Reply::Status(500))
        .await
        .unwrap();
    advance(Duration::from_secs(11)).await;
    assert_eq!(cb.snapshot().calls(), 0, "expired");
    call(&mut svc, &mut handle, Reply::Status(200))
        .await
        .unwrap();
    call(&mut svc, &mut handle, Reply::Status(200))
        .await
        .unwrap();
    call(&mut svc, &mut handle, Reply::Status(500))
        .await
        .unwrap();
    assert_eq!(cb.state(), CircuitState::Closed, "1 of 3 within the window");
    call(&mut svc, &mut handle, Reply::Status(500))
        .await
        .unwrap();
    assert_eq!(cb.state(), CircuitState::Open, "2 of 4 within the window");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn consecutive_failures_mode() {
    let (mut svc, mut handle, cb) = spawn(base().consecutive_failures(3).build().unwrap());
    for s in [500, 500, 200, 500, 500] {
        call(&mut svc, &mut handle, Reply::Status(s)).await.unwrap();
    }
    assert_eq!(cb.state(), CircuitState::Closed, "a success breaks the run");
    assert_eq!(cb.snapshot().failures(), 2);
    call(&mut svc, &mut handle, Reply::Status(500))
        .await
        .unwrap();
    assert_eq!(cb.state(), CircuitState::Open);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn recovery_ramp_admits_a_rising_share() {
    let config = base()
        .half_open_probes(1)
        .recovery_ramp(Duration::from_secs(10))
        .recovery_start_percent(10.0)
        .build()
        .unwrap();
    let (mut svc, mut handle, cb) = spawn(config);
    open_it(&mut svc, &mut handle).await;
    advance(Duration::from_secs(1)).await;
    call(&mut svc, &mut handle, Reply::Status(200))
        .await
        .unwrap();
    assert_eq!(cb.state(), CircuitState::Closed);
    assert!(cb.snapshot().is_ramping());

    let early = admitted(&mut svc, &mut handle, 100).await;
    assert!((9..=11).contains(&early), "about 10% at the start: {early}");
    advance(Duration::from_secs(5)).await;
    let mid = admitted(&mut svc, &mut handle, 100).await;
    assert!((50..=60).contains(&mid), "about 55% half way: {mid}");
    advance(Duration::from_secs(5)).await;
    assert_eq!(admitted(&mut svc, &mut handle, 100).await, 100);
    assert!(!cb.snapshot().is_ramping());
}

/// Makes `n` calls; returns how many were admitted (the others must be
/// rejected without reaching the inner service).
async fn admitted(svc: &mut Svc, handle: &mut Handle<Req, Rsp>, n: usize) -> usize {
    let mut count = 0;
    for _ in 0..n {
        assert_ready_ok!(svc.poll_ready());
        let mut fut = tokio_test::task::spawn(svc.call(Request::new(())));
        match fut.poll() {
            std::task::Poll::Ready(Err(e)) => {
                assert!(e.is::<Rejected>());
                assert_pending!(handle.poll_request());
            }
            std::task::Poll::Pending => {
                let (_, send) = handle.next_request().await.unwrap();
                send.send_response(rsp(200));
                fut.await.unwrap();
                count += 1;
            }
            std::task::Poll::Ready(Ok(_)) => panic!("answered without the inner service"),
        }
    }
    count
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn works_on_any_response_type_with_errors_as_failures() {
    let layer = CircuitBreakerLayer::new(base().build().unwrap()).with_classifier(ErrorsAsFailures);
    let cb = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    for _ in 0..4 {
        assert_ready_ok!(svc.poll_ready());
        let fut = svc.call("req");
        handle.next_request().await.unwrap().1.send_error("boom");
        assert!(fut.await.is_err());
    }
    assert_eq!(cb.state(), CircuitState::Open);
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call("req").await.unwrap_err();
    assert!(err.is::<Rejected>());
    assert_pending!(handle.poll_request());
}

#[test]
fn config_validation_errors() {
    let err = CircuitBreakerConfig::builder()
        .count_window(5)
        .minimum_calls(6)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "minimum_calls");
    let err = CircuitBreakerConfig::builder()
        .open_for(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid configuration: open_for: must be greater than zero"
    );
    let err = CircuitBreakerConfig::builder()
        .name("no spaces")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "name");
}

#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn emits_metrics() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let (mut svc, mut handle, _cb) = spawn(base().name("metered").build().unwrap());
    open_it(&mut svc, &mut handle).await;
    rejected(&mut svc, &mut handle).await;

    let mut seen = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        seen.insert(
            format!("{}{{{}}}", key.key().name(), labels.join(",")),
            value,
        );
    }
    let get = |k: &str| seen.get(k).unwrap_or_else(|| panic!("{k} in {seen:?}"));
    assert_eq!(
        get("resilience_circuit_breaker_calls_total{name=metered,outcome=failure}"),
        &DebugValue::Counter(4)
    );
    assert_eq!(
        get("resilience_circuit_breaker_calls_total{name=metered,outcome=rejected}"),
        &DebugValue::Counter(1)
    );
    assert_eq!(
        get("resilience_circuit_breaker_transitions_total{name=metered,to=open}"),
        &DebugValue::Counter(1)
    );
    assert_eq!(
        get("resilience_circuit_breaker_state{name=metered,state=open}"),
        &DebugValue::Gauge(1.0.into())
    );
    assert_eq!(
        get("resilience_circuit_breaker_state{name=metered,state=closed}"),
        &DebugValue::Gauge(0.0.into())
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn axum_router_maps_open_to_503_with_retry_after() {
    use axum::{Router, body::Body, error_handling::HandleErrorLayer, routing::get};
    use tower::{ServiceBuilder, ServiceExt};

    let breaker =
        CircuitBreakerLayer::new(base().open_for(Duration::from_secs(7)).build().unwrap());
    let cb = breaker.handle();
    let app = Router::new()
        .route(
            "/",
            get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "down") }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(resilience_core::http::handle_error))
                .layer(breaker),
        );
    for _ in 0..4 {
        let rsp = app
            .clone()
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(rsp.status(), 500);
    }
    assert_eq!(cb.state(), CircuitState::Open);
    let rsp = app.oneshot(Request::new(Body::empty())).await.unwrap();
    assert_eq!(rsp.status(), 503);
    assert_eq!(rsp.headers()["retry-after"], "7");
}

/// Forced open through the handle, a call gets the same answer as from a
/// tripped breaker: 503 with a `Retry-After` (the first open period).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn forced_open_maps_to_503_with_retry_after() {
    let config = base().open_for(Duration::from_secs(7)).build().unwrap();
    let (mut svc, mut handle, cb) = spawn(config);
    cb.force_open();
    let r = rejected(&mut svc, &mut handle).await;
    assert_eq!(r.kind(), RejectionKind::CircuitOpen);
    assert_eq!(r.retry_after(), Some(Duration::from_secs(7)));
    let rsp = resilience_core::http::error_response(&r);
    assert_eq!(rsp.status(), 503);
    assert_eq!(rsp.headers()["retry-after"], "7");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn grpc_status_codes_are_classified() {
    let layer = CircuitBreakerLayer::new(base().build().unwrap())
        .with_classifier(resilience_core::GrpcOutcome::new());
    let cb = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, Rsp, _>(layer);
    let grpc = |code: &'static str| {
        Response::builder()
            .header("grpc-status", code)
            .body(())
            .unwrap()
    };
    // NOT_FOUND and INVALID_ARGUMENT are the caller's: never open
    for code in ["5", "3", "5", "3", "0"] {
        assert_ready_ok!(svc.poll_ready());
        let fut = svc.call(Request::new(()));
        handle
            .next_request()
            .await
            .unwrap()
            .1
            .send_response(grpc(code));
        fut.await.unwrap();
    }
    assert_eq!(cb.snapshot().failures(), 0);
    // UNAVAILABLE counts
    for _ in 0..2 {
        assert_ready_ok!(svc.poll_ready());
        let fut = svc.call(Request::new(()));
        handle
            .next_request()
            .await
            .unwrap()
            .1
            .send_response(grpc("14"));
        fut.await.unwrap();
    }
    assert_eq!(cb.state(), CircuitState::Open);
    assert!(cb.state().is_open());
    assert_eq!(cb.state().as_str(), "open");
    assert_eq!(CircuitState::ALL[cb.state().index()], CircuitState::Open);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn our_own_throttled_rejections_count_only_when_configured() {
    use resilience_circuit_breaker::throttle::{ThrottleConfig, ThrottleLayer};
    use resilience_core::{ClassifyErrors, Priority};
    use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

    async fn four_throttled_calls(classify: HttpOutcome) -> CircuitState {
        let breaker = CircuitBreakerLayer::new(base().build().unwrap()).with_classifier(classify);
        let cb = breaker.handle();
        let throttle = ThrottleLayer::new(
            ThrottleConfig::builder()
                .allow_percent(0.0)
                .build()
                .unwrap(),
        );
        let mut svc = ServiceBuilder::new()
            .layer(breaker)
            .layer(throttle)
            .service(service_fn(|_: Req| async { Ok::<_, BoxError>(rsp(200)) }));
        for _ in 0..4 {
            let mut req = Request::new(());
            req.extensions_mut().insert(Priority::Sheddable);
            let err = svc.ready().await.unwrap().call(req).await.unwrap_err();
            let r = err.downcast_ref::<Rejected>().unwrap();
            assert_eq!(r.kind(), RejectionKind::Throttled);
        }
        cb.state()
    }

    // default: the callee never saw them, they are not its failures
    assert_eq!(
        four_throttled_calls(HttpOutcome::new()).await,
        CircuitState::Closed
    );
    let strict =
        HttpOutcome::new().errors(ClassifyErrors::new().local_rejections_are_failures(true));
    assert_eq!(four_throttled_calls(strict).await, CircuitState::Open);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_reconfiguration_keeps_the_window_and_applies_to_the_next_calls() {
    let config = base().count_window(10).minimum_calls(10).build().unwrap();
    let (mut svc, mut handle, cb) = spawn(config);
    // 3 failures in 10 calls: 30%, under the 50% threshold.
    for i in 0..10 {
        let status = if i < 3 { 500 } else { 200 };
        let _ = call(&mut svc, &mut handle, Reply::Status(status)).await;
    }
    let before = cb.snapshot();
    assert_eq!((before.calls(), before.failures()), (10, 3));
    assert_eq!(cb.state(), CircuitState::Closed);

    let stricter = base()
        .count_window(10)
        .minimum_calls(10)
        .failure_rate_threshold(20.0)
        .open_for(Duration::from_secs(7))
        .build()
        .unwrap();
    assert!(cb.reconfigure(&stricter).is_empty());
    let after = cb.snapshot();
    assert_eq!(
        (after.calls(), after.failures()),
        (10, 3),
        "the window is kept"
    );
    assert_eq!(cb.state(), CircuitState::Closed);

    // The next failure is judged by the new threshold: 30% (the oldest
    // failure out, this one in) opens, where 50% would not.
    let _ = call(&mut svc, &mut handle, Reply::Status(500)).await;
    assert_eq!(cb.state(), CircuitState::Open);
    // ... and the circuit stays open for the new duration.
    advance(Duration::from_secs(6)).await;
    assert!(svc.poll_ready().is_ready());
    assert!(svc.call(Request::new(())).await.is_err());
    assert_pending!(handle.poll_request());
    advance(Duration::from_secs(1)).await;
    let _ = call(&mut svc, &mut handle, Reply::Status(200)).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_change_of_window_is_restart_only() {
    let (_svc, _handle, cb) = spawn(base().build().unwrap());
    let other = base().count_window(8).minimum_calls(4).build().unwrap();
    assert_eq!(cb.reconfigure(&other), ["window"]);
    let renamed = base()
        .name("other")
        .time_window(Duration::from_secs(10))
        .build()
        .unwrap();
    assert_eq!(cb.reconfigure(&renamed), ["name", "window"]);
    assert_eq!(cb.name(), "test");
}
