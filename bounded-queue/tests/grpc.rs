//! The queue in front of a real tonic server on loopback: a refusal reaches
//! the client as RESOURCE_EXHAUSTED with a retry pushback.

use std::pin::Pin;
use std::sync::Arc;

use resilience_bounded_queue::{BoundedQueueConfig, BoundedQueueLayer};
use tokio::sync::Notify;
use tonic::codegen::tokio_stream::Stream;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::ServiceBuilder;

/// Answers once released: `entered` says a call is in service, `release`
/// lets it finish.
struct Held {
    entered: Arc<Notify>,
    release: Arc<Notify>,
}

#[tonic::async_trait]
impl Health for Held {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.entered.notify_one();
        self.release.notified().await;
        Ok(Response::new(HealthCheckResponse { status: 1 }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("not used"))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_answers_resource_exhausted_with_pushback() {
    let queue = BoundedQueueLayer::new(
        BoundedQueueConfig::builder()
            .name("grpc")
            .concurrency(1)
            .capacity(0)
            .build()
            .unwrap(),
    );
    let handle = queue.handle();
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .layer(
                ServiceBuilder::new()
                    .map_err(resilience_core::grpc::into_status)
                    .layer(queue),
            )
            .add_service(HealthServer::new(Held {
                entered: entered.clone(),
                release: release.clone(),
            }))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = HealthClient::new(channel);

    // One slow call takes the only slot...
    let mut first = client.clone();
    let slow = tokio::spawn(async move { first.check(HealthCheckRequest::default()).await });
    entered.notified().await;
    assert_eq!(handle.snapshot().in_service, 1);

    // ...so the next one is refused at once, with a pushback.
    let status = client
        .clone()
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(status.message(), "service overloaded: queue full");
    let pushback = BoundedQueueConfig::DEFAULT_RETRY_AFTER
        .as_millis()
        .to_string();
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        pushback.as_str()
    );
    assert_eq!(handle.snapshot().rejected.full, 1);

    // The slow call completes and frees its slot for the next caller.
    release.notify_one();
    let rsp = slow.await.unwrap().unwrap();
    assert_eq!(rsp.get_ref().status, 1);
    release.notify_one();
    let rsp = client
        .clone()
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(rsp.get_ref().status, 1);
    assert_eq!(handle.snapshot().in_service, 0);
}
