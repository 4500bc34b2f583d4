//! A circuit breaker per endpoint, through the public API.

use std::time::Duration;

use http::{Request, Response};
use resilience_circuit_breaker::{
    CircuitBreakerConfig, CircuitState, EndpointBreakers, ErrorsAsFailures,
};
use resilience_core::{BoxError, Rejected, RejectionKind};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

type Req = Request<()>;
type Rsp = Response<()>;

fn config() -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .name("inventory")
        .count_window(4)
        .minimum_calls(4)
        .open_for(Duration::from_secs(10))
        .jitter(0.0)
        .build()
        .unwrap()
}

fn rsp(status: u16) -> Rsp {
    Response::builder().status(status).body(()).unwrap()
}

/// An endpoint answering every call with `status`.
fn endpoint(
    status: u16,
) -> impl Service<Req, Response = Rsp, Error = BoxError, Future: Send> + Clone {
    service_fn(move |_: Req| async move { Ok::<_, BoxError>(rsp(status)) })
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn one_failing_endpoint_opens_only_its_own_breaker() {
    let breakers = EndpointBreakers::new(config());
    let (mut a, mut a_handle) = mock::spawn_layer::<Req, Rsp, _>(breakers.layer_for("a:80"));
    let (mut b, mut b_handle) = mock::spawn_layer::<Req, Rsp, _>(breakers.layer_for("b:80"));

    for _ in 0..4 {
        assert_ready_ok!(a.poll_ready());
        let fut = a.call(Request::new(()));
        let (_, send) = a_handle.next_request().await.unwrap();
        send.send_response(rsp(503));
        assert_eq!(fut.await.unwrap().status(), 503);

        assert_ready_ok!(b.poll_ready());
        let fut = b.call(Request::new(()));
        let (_, send) = b_handle.next_request().await.unwrap();
        send.send_response(rsp(200));
        assert_eq!(fut.await.unwrap().status(), 200);
    }

    let handle = breakers.handle();
    assert_eq!(handle.get("a:80").unwrap().state(), CircuitState::Open);
    assert_eq!(handle.get("b:80").unwrap().state(), CircuitState::Closed);

    // a fails fast...
    assert_ready_ok!(a.poll_ready());
    let err = a.call(Request::new(())).await.unwrap_err();
    let r = err.downcast_ref::<Rejected>().unwrap();
    assert_eq!(r.kind(), RejectionKind::CircuitOpen);
    assert_pending!(a_handle.poll_request());
    // ...b still calls its endpoint
    assert_ready_ok!(b.poll_ready());
    let fut = b.call(Request::new(()));
    let (_, send) = b_handle.next_request().await.unwrap();
    send.send_response(rsp(200));
    assert!(fut.await.is_ok());

    let snapshot = handle.snapshot();
    assert_eq!(snapshot.name(), "inventory");
    assert_eq!(snapshot.len(), 2);
    assert_eq!(snapshot.count(CircuitState::Open), 1);
    assert_eq!(snapshot.get("a:80").unwrap().failures(), 4);
    assert_eq!(snapshot.get("b:80").unwrap().failures(), 0);
    let keys: Vec<_> = snapshot.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["a:80", "b:80"]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_live_key_keeps_its_state_and_a_dropped_one_starts_over() {
    let breakers = EndpointBreakers::new(config());
    let handle = breakers.handle();
    let mut svc = breakers.layer_for("a:80").layer(endpoint(503));
    for _ in 0..4 {
        let _ = svc.ready().await.unwrap().call(Request::new(())).await;
    }
    assert_eq!(handle.get("a:80").unwrap().state(), CircuitState::Open);

    // the balancer remakes the endpoint's service while the old one lives:
    // same breaker
    let again = breakers.layer_for("a:80");
    assert_eq!(again.handle().state(), CircuitState::Open);
    let mut remade = again.layer(endpoint(200));
    let err = remade
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    assert!(err.is::<Rejected>());
    // a clone of the registry gives the same state too
    assert_eq!(
        breakers.clone().layer_for("a:80").handle().state(),
        CircuitState::Open
    );

    // an in-flight call keeps the state alive after its services are gone
    let (inner, mut inner_handle) = mock::pair::<Req, Rsp>();
    let mut in_flight_svc = breakers.layer_for("a:80").layer(inner);
    handle.get("a:80").unwrap().reset();
    let in_flight = in_flight_svc.ready().await.unwrap().call(Request::new(()));
    drop((svc, again, remade, in_flight_svc));
    assert_eq!(handle.len(), 1);
    let (_, send) = inner_handle.next_request().await.unwrap();
    send.send_response(rsp(200));
    assert!(in_flight.await.is_ok());

    // the endpoint left: nothing holds its state any more
    assert!(handle.is_empty());
    assert!(handle.get("a:80").is_none());
    assert!(handle.endpoints().is_empty());

    // it comes back: a new, closed breaker
    let back = breakers.layer_for("a:80");
    let snapshot = back.handle().snapshot();
    assert_eq!(snapshot.state(), CircuitState::Closed);
    assert_eq!(snapshot.calls(), 0);
    assert_eq!(handle.len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn handles_name_their_endpoint_and_keep_it_alive() {
    let breakers = EndpointBreakers::new(config()).with_classifier(ErrorsAsFailures);
    let failing = service_fn(|_: ()| async { Err::<(), BoxError>("down".into()) });
    let mut svc = breakers.layer_for("a:80").layer(failing);
    let _other = breakers.layer_for("b:80");
    for _ in 0..4 {
        let _ = svc.ready().await.unwrap().call(()).await;
    }
    let endpoints = breakers.handle().endpoints();
    let names: Vec<_> = endpoints
        .iter()
        .map(|h| (h.name(), h.endpoint().unwrap(), h.state()))
        .collect();
    assert_eq!(
        names,
        [
            ("inventory", "a:80", CircuitState::Open),
            ("inventory", "b:80", CircuitState::Closed),
        ]
    );
    // a handle holds the state
    drop(svc);
    assert_eq!(breakers.handle().len(), 2);
    drop(endpoints);
    assert_eq!(breakers.handle().len(), 1);
    // a plain breaker has no endpoint
    let plain = resilience_circuit_breaker::CircuitBreakerLayer::new(config());
    assert_eq!(plain.handle().endpoint(), None);
}

#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn metrics_are_labelled_by_endpoint_and_cleared_when_it_leaves() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    // One snapshot per check (taking one resets what it read).
    let read = || {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(k, _, _, v)| {
                let key = k.key();
                let labels: Vec<_> = key
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                (format!("{}{{{}}}", key.name(), labels.join(",")), v)
            })
            .collect::<std::collections::HashMap<_, _>>()
    };
    let state = |endpoint: &str, state: &str| {
        format!(
            "resilience_circuit_breaker_state{{name=inventory,endpoint={endpoint},state={state}}}"
        )
    };
    let on = DebugValue::Gauge(1.0.into());
    let off = DebugValue::Gauge(0.0.into());

    let breakers = EndpointBreakers::new(config());
    let mut a = breakers.layer_for("a:80").layer(endpoint(503));
    let b = breakers.layer_for("b:80").layer(endpoint(200));
    for _ in 0..4 {
        let _ = a.ready().await.unwrap().call(Request::new(())).await;
    }
    let m = read();
    assert_eq!(m[&state("a:80", "open")], on);
    assert_eq!(m[&state("b:80", "closed")], on);
    assert_eq!(m[&state("b:80", "open")], off);
    assert_eq!(
        m["resilience_circuit_breaker_calls_total{name=inventory,endpoint=a:80,outcome=failure}"],
        DebugValue::Counter(4)
    );

    // forced open, then a leaves: its state gauges go to 0 (no breaker of
    // an endpoint that left stays "forced_open")
    breakers.handle().get("a:80").unwrap().force_open();
    drop(a);
    let m = read();
    assert_eq!(m[&state("a:80", "forced_open")], off);
    assert_eq!(m[&state("a:80", "closed")], off);
    assert_eq!(
        m[&state("b:80", "closed")],
        off,
        "read before: reset by the read"
    );
    // and comes back closed
    let _a = breakers.layer_for("a:80");
    assert_eq!(read()[&state("a:80", "closed")], on);
    drop(b);
}
