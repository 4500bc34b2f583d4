//! The same chain over gRPC: three tonic services, edge -> A -> B, each
//! behind `CorrelationLayer` on the server and calling the next through a
//! `Channel` wrapped in `PropagateContextLayer`.

mod support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use resilience_core::Priority;
use resilience_correlation::{CorrelationLayer, PropagateContext, PropagateContextLayer};
use support::{Log, assert_chain, assert_deadline_shrinks};
use tonic::codegen::tokio_stream::Stream;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::ServiceBuilder;

struct Hop {
    name: &'static str,
    log: Log,
    next: Option<HealthClient<PropagateContext<Channel>>>,
}

#[tonic::async_trait]
impl Health for Hop {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let wire = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| resilience_core::deadline::parse_grpc_timeout(v.as_bytes()).ok())
            .map(|d| u64::try_from(d.as_micros()).unwrap());
        self.log.record(self.name, wire);
        match &self.next {
            None => Ok(Response::new(HealthCheckResponse { status: 1 })),
            Some(next) => next.clone().check(HealthCheckRequest::default()).await,
        }
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not used"))
    }
}

async fn serve(hop: Hop) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        Server::builder()
            .layer(CorrelationLayer::new())
            .add_service(HealthServer::new(hop))
            .serve_with_incoming(incoming),
    );
    addr
}

async fn client(addr: SocketAddr) -> HealthClient<PropagateContext<Channel>> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    HealthClient::new(
        ServiceBuilder::new()
            .layer(PropagateContextLayer::new())
            .service(channel),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_chain_carries_id_trace_priority_and_deadline() {
    let log = Log::default();
    let b = serve(Hop {
        name: "b",
        log: log.clone(),
        next: None,
    })
    .await;
    let a = serve(Hop {
        name: "a",
        log: log.clone(),
        next: Some(client(b).await),
    })
    .await;
    let edge = serve(Hop {
        name: "edge",
        log: log.clone(),
        next: Some(client(a).await),
    })
    .await;

    let channel = Channel::from_shared(format!("http://{edge}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut plain = HealthClient::new(channel);
    let mut req = Request::new(HealthCheckRequest::default());
    req.set_timeout(Duration::from_millis(1500));
    req.metadata_mut()
        .insert("x-correlation-id", "123-gda".parse().unwrap());
    req.metadata_mut()
        .insert("x-priority", "sheddable-plus".parse().unwrap());
    req.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let rsp = plain.check(req).await.unwrap();
    assert_eq!(rsp.metadata().get("x-correlation-id").unwrap(), "123-gda");
    assert_eq!(rsp.get_ref().status, 1);

    let seen = log.take();
    assert_chain(
        &seen,
        Some("123-gda"),
        Some("00f067aa0ba902b7"),
        Priority::SheddablePlus,
    );
    assert_deadline_shrinks(&seen, 1_500_000);

    // A malformed id over gRPC is replaced too.
    let mut req = Request::new(HealthCheckRequest::default());
    req.metadata_mut()
        .insert("x-correlation-id", "no spaces allowed".parse().unwrap());
    let rsp = plain.check(req).await.unwrap();
    let id = rsp
        .metadata()
        .get("x-correlation-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36);
    assert_chain(&log.take(), Some(&id), None, Priority::Critical);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn family_errors_become_grpc_statuses_with_one_map_err() {
    use resilience_core::{Rejected, RejectionKind};
    // A server whose admission layer refuses everything: one `map_err`
    // turns the refusal into RESOURCE_EXHAUSTED with a retry pushback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refuse = ServiceBuilder::new()
        .map_err(resilience_core::grpc::into_status)
        .filter(|_req: http::Request<tonic::body::Body>| {
            Err::<http::Request<tonic::body::Body>, _>(
                Rejected::new(RejectionKind::Overloaded, "queue full")
                    .with_retry_after(Duration::from_millis(250)),
            )
        })
        .into_inner();
    tokio::spawn(
        Server::builder()
            .layer(refuse)
            .add_service(HealthServer::new(Hop {
                name: "b",
                log: Log::default(),
                next: None,
            }))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let mut client = HealthClient::new(
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let status = client
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(status.message(), "service overloaded: queue full");
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "250"
    );
}
