//! The family's common names: `Default` layers, the one `ErrorsAsFailures`,
//! and the deprecated old names, which still compile and behave the same.

use http::{Request, Response};
use resilience_circuit_breaker::throttle::{ThrottleConfig, ThrottleLayer};
use resilience_circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerLayer, CircuitBreakerSnapshot, CircuitState,
    EndpointBreakers, ErrorsAsFailures,
};
use resilience_core::BoxError;
use resilience_core::classify::{ClassifyOutcome, Outcome};
use tower::{Layer, ServiceExt, service_fn};

fn failing()
-> impl tower::Service<Request<()>, Response = Response<()>, Error = BoxError, Future: Send> + Clone
{
    service_fn(|_: Request<()>| async {
        Ok::<_, BoxError>(Response::builder().status(503).body(()).unwrap())
    })
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn default_layers_use_the_default_configs() {
    let layer = CircuitBreakerLayer::default();
    assert_eq!(layer.handle().name(), CircuitBreakerConfig::DEFAULT_NAME);
    let svc = layer.layer(failing());
    for _ in 0..CircuitBreakerConfig::DEFAULT_MINIMUM_CALLS {
        let rsp = svc.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(rsp.status(), 503);
    }
    // Default: HTTP classification, a count window that opens once its
    // minimum of calls has a failure rate at or above 50%.
    assert_eq!(layer.handle().state(), CircuitState::Open);
    let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
    assert!(err.is::<resilience_core::Rejected>());

    let breakers = EndpointBreakers::default();
    assert_eq!(breakers.handle().name(), CircuitBreakerConfig::DEFAULT_NAME);
    let throttle = ThrottleLayer::default();
    let handle = throttle.handle();
    assert_eq!(handle.name(), ThrottleConfig::DEFAULT_NAME);
    assert_eq!(handle.mode(), ThrottleConfig::default().mode());
}

#[test]
fn errors_as_failures_is_the_core_classifier() {
    let ours: resilience_core::ErrorsAsFailures = ErrorsAsFailures;
    let err: BoxError = "connection reset".into();
    assert_eq!(
        ClassifyOutcome::<u8>::classify(&ours, Err(&err)),
        Outcome::Failure
    );
    assert_eq!(
        ClassifyOutcome::<u8>::classify(&ours, Ok(&0)),
        Outcome::Success
    );
}

#[test]
#[allow(deprecated)]
fn the_old_snapshot_name_is_the_same_type() {
    let handle = CircuitBreakerLayer::default().handle();
    let old: resilience_circuit_breaker::Snapshot = handle.snapshot();
    let new: CircuitBreakerSnapshot = handle.snapshot();
    assert_eq!(old, new);
    assert_eq!(old.state(), CircuitState::Closed);
}
