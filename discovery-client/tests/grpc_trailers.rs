//! Passive ejection counts a gRPC status that arrives in trailers, at the
//! end of the response body (tonic bodies built by hand, as a tonic
//! `Channel` returns them).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use resilience_core::{BoxError, GrpcCode, GrpcOutcome};
use resilience_discovery::{
    Endpoint, EndpointState, RoundRobin, RoundRobinBuilder, RoundRobinConfig,
};
use tonic::Status;
use tonic::body::Body;
use tower::{Service, ServiceExt, service_fn};

type Frame = http_body::Frame<Bytes>;
type Endpoints = tower::util::BoxCloneSyncService<Request<()>, Response<Body>, BoxError>;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

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

/// Three endpoints classified by gRPC status: the one on port 1 ends every
/// stream with UNAVAILABLE in trailers, the others with OK.
fn balancer() -> RoundRobin<Endpoints, GrpcOutcome> {
    let config = RoundRobinConfig::builder()
        .consecutive_failures(3)
        .base_ejection_time(Duration::from_secs(10))
        .max_ejection_percent(100)
        .build()
        .unwrap();
    RoundRobinBuilder::new()
        .config(config)
        .with_classifier(GrpcOutcome::new())
        .build_with_endpoints(
            (1..=3).map(|p| Endpoint::new(addr(p))).collect::<Vec<_>>(),
            |ep: &Endpoint| {
                let code = if ep.addr().port() == 1 {
                    GrpcCode::Unavailable
                } else {
                    GrpcCode::Ok
                };
                Endpoints::new(service_fn(move |_: Request<()>| async move {
                    Ok::<_, BoxError>(streamed(code))
                }))
            },
        )
}

async fn call(rr: &mut RoundRobin<Endpoints, GrpcOutcome>) -> Response<Body> {
    rr.ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap()
}

fn state(rr: &RoundRobin<Endpoints, GrpcOutcome>) -> EndpointState {
    rr.handle().snapshot().endpoints[0].state
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn unavailable_in_trailers_ejects() {
    let mut rr = balancer();
    // Headers only: nothing counted yet.
    let mut pending = Vec::new();
    for _ in 0..9 {
        pending.push(call(&mut rr).await);
    }
    assert_eq!(state(&rr), EndpointState::Healthy);
    // The streams end: three UNAVAILABLE in a row from port 1.
    for mut rsp in pending {
        while let Some(frame) = rsp.body_mut().frame().await {
            frame.unwrap();
        }
    }
    assert_eq!(state(&rr), EndpointState::Ejected);
    let snapshot = rr.handle().snapshot();
    assert_eq!(
        snapshot.count(EndpointState::Healthy),
        2,
        "OK in trailers is a success"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_body_dropped_early_does_not_eject() {
    let mut rr = balancer();
    for _ in 0..30 {
        let mut rsp = call(&mut rr).await;
        // One message, then the caller stops reading.
        assert!(rsp.body_mut().frame().await.unwrap().unwrap().is_data());
        drop(rsp);
    }
    assert_eq!(rr.handle().snapshot().count(EndpointState::Healthy), 3);
}
