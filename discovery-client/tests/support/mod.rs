//! Helpers shared by the integration tests: small axum instances, an HTTP
//! endpoint service, bounded waits, and the real servers.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use resilience_core::BoxError;
use resilience_discovery::Endpoint;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt, service_fn};

/// One small HTTP instance: `GET /` answers its port, `GET /health` 200 or
/// 503 as told.
pub struct Instance {
    pub addr: SocketAddr,
    pub healthy: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Instance {
    pub async fn start() -> Self {
        let healthy = Arc::new(AtomicBool::new(true));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let h = healthy.clone();
        let app = Router::new()
            .route("/", get(move || async move { addr.port().to_string() }))
            .route(
                "/health",
                get(move || {
                    let ok = h.load(Ordering::Relaxed);
                    async move {
                        if ok {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        }
                    }
                }),
            );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            healthy,
            task,
        }
    }

    pub fn set_healthy(&self, yes: bool) {
        self.healthy.store(yes, Ordering::Relaxed);
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub type HttpService = BoxCloneSyncService<(), u16, BoxError>;

/// A maker of endpoint services: `GET http://<addr>/` through one shared
/// hyper-util client, answering the port the instance reports.
pub fn http_maker() -> impl Fn(&Endpoint) -> HttpService + Send + Sync + 'static {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    move |ep: &Endpoint| {
        let client = client.clone();
        let uri: http::Uri = format!("http://{}/", ep.addr()).parse().unwrap();
        BoxCloneSyncService::new(service_fn(move |()| {
            let client = client.clone();
            let uri = uri.clone();
            async move {
                let rsp = client.get(uri).await?;
                if !rsp.status().is_success() {
                    return Err(format!("status {}", rsp.status()).into());
                }
                let body = rsp.into_body().collect().await?.to_bytes();
                Ok(std::str::from_utf8(&body)?.parse::<u16>()?)
            }
        }))
    }
}

/// Sends `n` requests and counts answers per port; errors count under 0.
pub async fn spread<S>(svc: &mut S, n: usize) -> std::collections::BTreeMap<u16, usize>
where
    S: Service<(), Response = u16, Error = BoxError>,
{
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let port = match svc.ready().await {
            Ok(svc) => svc.call(()).await.unwrap_or(0),
            Err(_) => 0,
        };
        *counts.entry(port).or_default() += 1;
    }
    counts
}

/// Waits (real time, bounded) until `cond` holds.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let start = std::time::SystemTime::now();
    loop {
        if cond().await {
            return;
        }
        if start.elapsed().unwrap_or_default() > limit {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Real servers on loopback ports, shared with the other crates' tests.
pub use resilience_test_support::{DnsServer, EtcdServer as Etcd};
