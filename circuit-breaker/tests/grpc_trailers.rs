//! The breaker and the adaptive throttle count a gRPC status that arrives
//! in trailers, at the end of the response body (tonic bodies built by
//! hand, as a tonic `Channel` returns them).

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Response};
use http_body_util::{BodyExt, StreamBody};
use resilience_circuit_breaker::throttle::{ThrottleConfig, ThrottleHandle, ThrottleLayer};
use resilience_circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerConfigBuilder, CircuitBreakerHandle, CircuitBreakerLayer,
    CircuitState,
};
use resilience_core::{BoxError, GrpcCode, GrpcOutcome};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt, service_fn};

type Frame = http_body::Frame<Bytes>;

/// A `200` response that streams a message, then `code` in trailers.
fn streamed(code: GrpcCode) -> Response<Body> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", (code as u8).to_string().parse().unwrap());
    let frames: Vec<Result<Frame, Status>> = vec![
        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
        Ok(Frame::trailers(trailers)),
    ];
    Response::new(Body::new(StreamBody::new(stream::iter(frames))))
}

fn base() -> CircuitBreakerConfigBuilder {
    CircuitBreakerConfig::builder()
        .name("grpc")
        .count_window(2)
        .minimum_calls(2)
        .failure_rate_threshold(50.0)
        .open_for(Duration::from_secs(1))
        .jitter(0.0)
}

/// A breaker with the gRPC classifier over a service that streams `code`.
fn breaker(
    config: CircuitBreakerConfig,
    code: GrpcCode,
) -> (
    impl Service<http::Request<()>, Response = Response<Body>, Error = BoxError>,
    CircuitBreakerHandle,
) {
    let layer = CircuitBreakerLayer::new(config).with_classifier(GrpcOutcome::new());
    let handle = layer.handle();
    let inner =
        service_fn(move |_: http::Request<()>| async move { Ok::<_, BoxError>(streamed(code)) });
    (layer.layer(inner), handle)
}

async fn call<S>(svc: &mut S) -> Response<Body>
where
    S: Service<http::Request<()>, Response = Response<Body>, Error = BoxError>,
{
    svc.ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap()
}

/// Reads the body to its end.
async fn drain(mut rsp: Response<Body>) {
    while let Some(frame) = rsp.body_mut().frame().await {
        frame.unwrap();
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn unavailable_in_trailers_opens_the_breaker() {
    let (mut svc, handle) = breaker(base().build().unwrap(), GrpcCode::Unavailable);
    let first = call(&mut svc).await;
    let second = call(&mut svc).await;
    // The headers said nothing: not counted yet.
    assert_eq!(handle.snapshot().calls(), 0);
    drain(first).await;
    assert_eq!(handle.snapshot().failures(), 1);
    drain(second).await;
    assert_eq!(handle.state(), CircuitState::Open);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap_err();
    assert!(err.is::<resilience_core::Rejected>());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn ok_in_trailers_is_a_success() {
    let (mut svc, handle) = breaker(base().build().unwrap(), GrpcCode::Ok);
    for _ in 0..4 {
        drain(call(&mut svc).await).await;
    }
    let snapshot = handle.snapshot();
    assert_eq!((snapshot.calls(), snapshot.failures()), (2, 0));
    assert_eq!(handle.state(), CircuitState::Closed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_body_dropped_early_is_not_a_failure() {
    let (mut svc, handle) = breaker(base().build().unwrap(), GrpcCode::Unavailable);
    for _ in 0..4 {
        let mut rsp = call(&mut svc).await;
        // One message, then the caller stops reading.
        assert!(rsp.body_mut().frame().await.unwrap().unwrap().is_data());
        drop(rsp);
    }
    let snapshot = handle.snapshot();
    assert_eq!((snapshot.calls(), snapshot.failures()), (2, 0));
    assert_eq!(handle.state(), CircuitState::Closed);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_half_open_probe_resolves_at_the_end_of_the_stream() {
    for (code, after) in [
        (GrpcCode::Ok, CircuitState::Closed),
        (GrpcCode::Unavailable, CircuitState::Open),
    ] {
        let config = base().half_open_probes(1).build().unwrap();
        let (mut svc, handle) = breaker(config, code);
        handle.trip();
        assert_eq!(handle.state(), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = call(&mut svc).await;
        // The probe's headers are in; its outcome is not.
        assert_eq!(handle.state(), CircuitState::HalfOpen, "{code:?}");
        assert_eq!(handle.snapshot().probes_in_use(), 1, "{code:?}");
        drain(probe).await;
        assert_eq!(handle.state(), after, "{code:?}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_slow_call_duration_is_measured_to_the_headers() {
    let config = base()
        .slow_call_duration(Duration::from_secs(1))
        .slow_call_rate_threshold(50.0)
        .build()
        .unwrap();
    let (mut svc, handle) = breaker(config, GrpcCode::Ok);
    for _ in 0..2 {
        let rsp = call(&mut svc).await;
        // The body takes long after quick headers: not a slow call.
        tokio::time::advance(Duration::from_secs(5)).await;
        drain(rsp).await;
    }
    let snapshot = handle.snapshot();
    assert_eq!((snapshot.calls(), snapshot.slow_calls()), (2, 0));
    assert_eq!(handle.state(), CircuitState::Closed);
}

// === The adaptive throttle ===

/// An adaptive throttle with the gRPC classifier over a service that
/// streams `code`.
fn throttle(
    code: GrpcCode,
) -> (
    impl Service<http::Request<()>, Response = Response<Body>, Error = BoxError>,
    ThrottleHandle,
) {
    let config = ThrottleConfig::builder()
        .name("grpc")
        .adaptive()
        .build()
        .unwrap();
    let layer = ThrottleLayer::new(config).with_classifier(GrpcOutcome::new());
    let handle = layer.handle();
    let inner =
        service_fn(move |_: http::Request<()>| async move { Ok::<_, BoxError>(streamed(code)) });
    (layer.layer(inner), handle)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_throttle_counts_a_status_in_trailers() {
    // UNAVAILABLE in trailers: requests, no accepts.
    let (mut svc, handle) = throttle(GrpcCode::Unavailable);
    for _ in 0..3 {
        drain(call(&mut svc).await).await;
    }
    assert_eq!(handle.counts(), (3, 0));

    // OK in trailers: accepted, at the end of the body.
    let (mut svc, handle) = throttle(GrpcCode::Ok);
    let rsp = call(&mut svc).await;
    assert_eq!(handle.counts(), (1, 0));
    drain(rsp).await;
    assert_eq!(handle.counts(), (1, 1));

    // Dropped early: the caller gave up, not a failure of the backend.
    let (mut svc, handle) = throttle(GrpcCode::Unavailable);
    drop(call(&mut svc).await);
    assert_eq!(handle.counts(), (1, 1));
}
