//! Helpers shared by the integration tests: small axum instances, an HTTP
//! endpoint service, bounded waits, and whether real servers are required.
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

pub use resilience_core::etcd::{find_binary, servers_required};

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port free for both UDP and TCP (a DNS server listens on
/// both): a client connection's local port blocks the TCP listener.
pub fn free_dns_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A unique temporary directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::AtomicUsize;
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "resilience-discovery-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (and reaped) on drop.
pub struct Child(pub Option<std::process::Child>);

impl Child {
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real etcd on free loopback ports (shared with the other crates' tests).
pub use resilience_core::etcd::EtcdServer as Etcd;

/// A real dnsmasq answering on a free loopback port; killed on drop.
pub struct Dnsmasq {
    pub addr: SocketAddr,
    bin: std::path::PathBuf,
    child: Child,
}

impl Dnsmasq {
    /// How often a start is tried (on a fresh port each time) before the
    /// test fails: another process can take the port between the check and
    /// dnsmasq's bind.
    const ATTEMPTS: usize = 5;

    /// Starts dnsmasq with `records` (e.g. `--srv-host=...`), or `None`
    /// (after saying why) when it is not installed.
    pub async fn start(ttl: u32, records: &[String]) -> Option<Self> {
        let bin = find_binary("dnsmasq")?;
        let mut dns = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            bin,
            child: Child(None),
        };
        for _ in 0..Self::ATTEMPTS {
            dns.addr.set_port(free_dns_port());
            if dns.spawn(ttl, records).await {
                return Some(dns);
            }
        }
        panic!("dnsmasq exited at start {} times", Self::ATTEMPTS);
    }

    /// Stops it and starts it again on the same port with other records.
    pub async fn restart(&mut self, ttl: u32, records: &[String]) {
        self.child.kill();
        for _ in 0..Self::ATTEMPTS {
            if self.spawn(ttl, records).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "dnsmasq could not listen on {} again ({} attempts)",
            self.addr,
            Self::ATTEMPTS
        );
    }

    /// Spawns dnsmasq and waits until it answers; `false` if it exited
    /// first (its port was taken).
    async fn spawn(&mut self, ttl: u32, records: &[String]) -> bool {
        let child = std::process::Command::new(&self.bin)
            .arg("--no-daemon")
            .arg("--conf-file=/dev/null")
            .arg(format!("--port={}", self.addr.port()))
            .arg("--listen-address=127.0.0.1")
            .arg("--bind-interfaces")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--pid-file=")
            .arg(format!("--local-ttl={ttl}"))
            .args(records)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dnsmasq starts");
        self.child = Child(Some(child));
        let limit = Duration::from_secs(10);
        let start = std::time::SystemTime::now();
        loop {
            if self.answers().await {
                return true;
            }
            let exited = self
                .child
                .0
                .as_mut()
                .is_none_or(|c| c.try_wait().is_ok_and(|s| s.is_some()));
            if exited {
                self.child.kill();
                return false;
            }
            assert!(
                start.elapsed().unwrap_or_default() < limit,
                "timed out after {limit:?} waiting for dnsmasq to answer"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether it answers a query on UDP.
    async fn answers(&self) -> bool {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // A query for `. NS` is enough to see an answer.
        let q = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1];
        sock.send_to(&q, self.addr).await.unwrap();
        let mut buf = [0u8; 512];
        tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}
