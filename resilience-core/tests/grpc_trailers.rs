//! `GrpcOutcome` reads a gRPC status that arrives in trailers, through its
//! public API: hand-built tonic bodies, and a real tonic server streaming
//! through a real `Channel`.
#![cfg(feature = "grpc")]

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Response};
use http_body_util::{BodyExt, StreamBody};
use resilience_core::classify::{ClassifyOutcome, GrpcCode, GrpcOutcome, OnOutcome, Outcome};
use tonic::Status;
use tonic::body::Body;
use tower::Service as _;

type Frame = http_body::Frame<Bytes>;

/// Outcomes reported later, and how many callbacks were made.
#[derive(Clone, Default)]
struct Reported(Arc<Mutex<Vec<Outcome>>>);

impl Reported {
    fn later(&self) -> impl FnMut() -> OnOutcome + '_ {
        move || {
            let seen = self.0.clone();
            Box::new(move |outcome| {
                seen.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(outcome)
            })
        }
    }

    fn get(&self) -> Vec<Outcome> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn trailers(code: GrpcCode) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", (code as u8).to_string().parse().unwrap());
    t
}

/// A `200` response whose body is `frames`, as a tonic `Channel` returns it.
fn response(frames: Vec<Result<Frame, Status>>) -> Response<Body> {
    Response::new(Body::new(StreamBody::new(stream::iter(frames))))
}

fn data() -> Result<Frame, Status> {
    Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0")))
}

fn defer(classify: GrpcOutcome, rsp: &mut Response<Body>, reported: &Reported) -> Option<Outcome> {
    classify.classify_or_defer(rsp, &mut reported.later())
}

/// Reads the body to its end (errors included).
async fn drain(rsp: &mut Response<Body>) {
    while let Some(frame) = rsp.body_mut().frame().await {
        if frame.is_err() {
            break;
        }
    }
}

#[tokio::test]
async fn unavailable_in_trailers_is_a_failure_at_the_end_of_the_body() {
    let reported = Reported::default();
    let mut rsp = response(vec![
        data(),
        data(),
        Ok(Frame::trailers(trailers(GrpcCode::Unavailable))),
    ]);
    assert_eq!(defer(GrpcOutcome::new(), &mut rsp, &reported), None);
    // Not before the trailers.
    assert!(rsp.body_mut().frame().await.unwrap().unwrap().is_data());
    assert!(rsp.body_mut().frame().await.unwrap().unwrap().is_data());
    assert!(reported.get().is_empty());
    // The trailers reach the reader unchanged.
    let t = rsp.body_mut().frame().await.unwrap().unwrap();
    assert_eq!(t.trailers_ref().unwrap()["grpc-status"], "14");
    assert_eq!(reported.get(), [Outcome::Failure]);
    // Once, whatever happens next.
    assert!(rsp.body_mut().frame().await.is_none());
    drop(rsp);
    assert_eq!(reported.get(), [Outcome::Failure]);
}

#[tokio::test]
async fn ok_and_callers_codes_in_trailers() {
    for (code, want) in [
        (GrpcCode::Ok, Outcome::Success),
        (GrpcCode::NotFound, Outcome::CallerError),
        (GrpcCode::DeadlineExceeded, Outcome::Failure),
    ] {
        let reported = Reported::default();
        let mut rsp = response(vec![data(), Ok(Frame::trailers(trailers(code)))]);
        assert_eq!(defer(GrpcOutcome::new(), &mut rsp, &reported), None);
        drain(&mut rsp).await;
        assert_eq!(reported.get(), [want], "{code:?}");
    }
    // The classifier's own failure set applies.
    let reported = Reported::default();
    let lenient = GrpcOutcome::new().without_failure(GrpcCode::Unavailable);
    let mut rsp = response(vec![Ok(Frame::trailers(trailers(GrpcCode::Unavailable)))]);
    assert_eq!(defer(lenient, &mut rsp, &reported), None);
    drain(&mut rsp).await;
    assert_eq!(reported.get(), [Outcome::CallerError]);
}

#[tokio::test]
async fn a_body_dropped_before_its_end_is_the_callers_doing() {
    let reported = Reported::default();
    let mut rsp = response(vec![
        data(),
        Ok(Frame::trailers(trailers(GrpcCode::Unavailable))),
    ]);
    assert_eq!(defer(GrpcOutcome::new(), &mut rsp, &reported), None);
    assert!(rsp.body_mut().frame().await.unwrap().unwrap().is_data());
    drop(rsp);
    assert_eq!(reported.get(), [Outcome::CallerError]);

    // Never read at all.
    let reported = Reported::default();
    let mut rsp = response(vec![data()]);
    assert_eq!(defer(GrpcOutcome::new(), &mut rsp, &reported), None);
    drop(rsp);
    assert_eq!(reported.get(), [Outcome::CallerError]);
}

#[tokio::test]
async fn a_body_that_ends_without_a_status_is_internal() {
    // No trailers at all.
    let reported = Reported::default();
    let mut rsp = response(vec![data()]);
    assert_eq!(defer(GrpcOutcome::new(), &mut rsp, &reported), None);
    drain(&mut rsp).await;
    assert_eq!(reported.get(), [Outcome::Failure]);

    // Trailers without grpc-status; INTERNAL is the code: dropping it from
    // the failures makes it the caller's.
    let reported = Reported::default();
    let mut rsp = response(vec![data(), Ok(Frame::trailers(HeaderMap::new()))]);
    let lenient = GrpcOutcome::new().without_failure(GrpcCode::Internal);
    assert_eq!(defer(lenient, &mut rsp, &reported), None);
    drain(&mut rsp).await;
    assert_eq!(reported.get(), [Outcome::CallerError]);

    // An empty body has ended already: classified at once, nothing wrapped.
    let mut rsp = Response::new(Body::empty());
    let mut later = || -> OnOutcome { panic!("nothing to defer") };
    assert_eq!(
        GrpcOutcome::new().classify_or_defer(&mut rsp, &mut later),
        Some(Outcome::Failure)
    );
}

#[tokio::test]
async fn a_body_error_is_classified_by_its_status() {
    for (status, want) in [
        (Status::unavailable("reset"), Outcome::Failure),
        (Status::internal("protocol"), Outcome::Failure),
        (
            Status::cancelled("reset by the caller"),
            Outcome::CallerError,
        ),
    ] {
        let reported = Reported::default();
        let mut rsp = response(vec![data(), Err(status.clone())]);
        assert_eq!(defer(GrpcOutcome::new(), &mut rsp, &reported), None);
        drain(&mut rsp).await;
        assert_eq!(reported.get(), [want], "{status:?}");
    }
}

#[tokio::test]
async fn known_at_the_headers_is_not_deferred() {
    let mut later = || -> OnOutcome { panic!("known at the headers") };
    // trailers-only: grpc-status in the headers
    let mut rsp = response(vec![data()]);
    rsp.headers_mut()
        .insert("grpc-status", "14".parse().unwrap());
    assert_eq!(
        GrpcOutcome::new().classify_or_defer(&mut rsp, &mut later),
        Some(Outcome::Failure)
    );
    // not a gRPC answer: HTTP status
    let mut rsp = response(vec![data()]);
    *rsp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    assert_eq!(
        GrpcOutcome::new().classify_or_defer(&mut rsp, &mut later),
        Some(Outcome::Failure)
    );
    // a body that cannot be wrapped in place: as at the headers
    let mut rsp = Response::new(String::from("x"));
    assert_eq!(
        GrpcOutcome::new().classify_or_defer(&mut rsp, &mut later),
        Some(Outcome::Success)
    );
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_bodies_are_watched_too() {
    let reported = Reported::default();
    let frames: Vec<Result<Frame, Status>> =
        vec![data(), Ok(Frame::trailers(trailers(GrpcCode::Unavailable)))];
    let mut rsp = Response::new(axum::body::Body::new(StreamBody::new(stream::iter(frames))));
    assert_eq!(
        GrpcOutcome::new().classify_or_defer(&mut rsp, &mut reported.later()),
        None
    );
    while rsp.body_mut().frame().await.is_some() {}
    assert_eq!(reported.get(), [Outcome::Failure]);
}

// === A real tonic server, streaming, through a real Channel ===

/// `/test.Streamer/<code>`: streams two empty messages, then ends with the
/// status `<code>` (in trailers).
#[derive(Clone)]
struct Streamer;

impl tonic::server::NamedService for Streamer {
    const NAME: &'static str = "test.Streamer";
}

type Messages = Pin<Box<dyn futures_util::Stream<Item = Result<(), Status>> + Send>>;

impl tower::Service<http::Request<Body>> for Streamer {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The code to end with is in the path: /test.Streamer/<code>.
        let code: i32 = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<(), ()>::default());
            Ok(grpc.server_streaming(Ends(code), req).await)
        })
    }
}

/// Streams two messages, then ends with `code`.
struct Ends(i32);

impl tonic::server::ServerStreamingService<()> for Ends {
    type Response = ();
    type ResponseStream = Messages;
    type Future = std::future::Ready<Result<tonic::Response<Messages>, Status>>;

    fn call(&mut self, _: tonic::Request<()>) -> Self::Future {
        let end = match tonic::Code::from_i32(self.0) {
            tonic::Code::Ok => None,
            code => Some(Err(Status::new(code, "ended"))),
        };
        let messages = stream::iter([Ok(()), Ok(())].into_iter().chain(end));
        std::future::ready(Ok(tonic::Response::new(Box::pin(messages) as Messages)))
    }
}

#[tokio::test]
async fn a_real_channel_reports_the_status_a_server_streams_in_trailers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Streamer)
            .serve_with_incoming(tokio_stream_of(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    // A minimal outcome-counting layer: what the breaker, the throttle and
    // the round robin do with `classify_or_defer`.
    let reported = Reported::default();
    let at_headers = Reported::default();
    let svc = {
        let (reported, at_headers) = (reported.clone(), at_headers.clone());
        tower::service_fn(move |req: http::Request<Body>| {
            let mut channel = channel.clone();
            let (reported, at_headers) = (reported.clone(), at_headers.clone());
            async move {
                let mut rsp = tower::ServiceExt::ready(&mut channel)
                    .await?
                    .call(req)
                    .await?;
                if let Some(outcome) =
                    GrpcOutcome::new().classify_or_defer(&mut rsp, &mut reported.later())
                {
                    at_headers.0.lock().unwrap().push(outcome);
                }
                Ok::<_, tonic::transport::Error>(rsp)
            }
        })
    };
    let mut client = tonic::client::Grpc::new(svc);

    for (code, want) in [
        (tonic::Code::Unavailable, Outcome::Failure),
        (tonic::Code::Ok, Outcome::Success),
        (tonic::Code::InvalidArgument, Outcome::CallerError),
    ] {
        let before = reported.get().len();
        client.ready().await.unwrap();
        let path = format!("/test.Streamer/{}", code as i32).parse().unwrap();
        let mut stream = client
            .server_streaming(
                tonic::Request::new(()),
                path,
                tonic_prost::ProstCodec::<(), ()>::default(),
            )
            .await
            .unwrap()
            .into_inner();
        // Headers came first: nothing reported yet.
        assert_eq!(stream.message().await.unwrap(), Some(()));
        assert_eq!(reported.get().len(), before, "{code:?}");
        assert_eq!(stream.message().await.unwrap(), Some(()));
        // The status, in trailers.
        match stream.message().await {
            Ok(None) => assert_eq!(code, tonic::Code::Ok),
            Ok(Some(())) => panic!("a third message"),
            Err(status) => assert_eq!(status.code(), code),
        }
        assert_eq!(reported.get()[before..], [want], "{code:?}");
    }
    assert!(at_headers.get().is_empty(), "every status came in trailers");

    // A caller that stops reading after the first message gave up: not a
    // failure of the server.
    client.ready().await.unwrap();
    let path = format!("/test.Streamer/{}", tonic::Code::Unavailable as i32)
        .parse()
        .unwrap();
    let mut stream = client
        .server_streaming(
            tonic::Request::new(()),
            path,
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap(), Some(()));
    drop(stream);
    assert_eq!(reported.get().last(), Some(&Outcome::CallerError));
    server.abort();
}

/// The listener's connections, as the stream tonic's server takes.
fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    stream::unfold(listener, |listener| async move {
        let conn = listener.accept().await.map(|(conn, _)| conn);
        Some((conn, listener))
    })
}
