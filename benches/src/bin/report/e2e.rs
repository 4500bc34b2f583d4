//! End to end: an axum service on loopback, bare, with the server-side
//! stack (correlation + timeout + bounded queue, as in the `stack` bench)
//! and with tower-http + tower's nearest equivalent,
//! each in its own child process (`report --serve bare|stack`), driven by a
//! hyper client at fixed concurrency for a fixed time, in interleaved paired
//! rounds so the machine's noise hits both alike. Server CPU is the child's
//! utime + stime from `/proc/PID/stat` over the round.

// Wall-clock time is what a load generator measures (tokio's pausable
// clock is for code under test).
#![allow(clippy::disallowed_types)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use resilience_bounded_queue::{BoundedQueueConfig, BoundedQueueLayer};
use resilience_core::TimeoutLayer;
use resilience_correlation::CorrelationLayer;
use tower::ServiceBuilder;

/// The servers: bare, ours, and the closest stack users build from tower
/// and tower-http (request-id pair, `Timeout`, `ConcurrencyLimit`).
pub(crate) const KINDS: [&str; 3] = ["bare", "stack", "tower"];
/// Requests in flight at once.
pub(crate) const CONCURRENCY: usize = 16;

/// `report --serve KIND`: serves until stdin closes; prints the port first.
pub(crate) fn serve(kind: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("server runtime: {e}"))?;
    // The parent closes our stdin when it is done (or dies).
    std::thread::spawn(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        std::process::exit(0);
    });
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        println!("{port}");
        // One small JSON answer, as an API handler gives.
        let app = Router::new().route(
            "/",
            get(|| async { axum::Json(serde_json::json!({ "ok": true, "items": [1, 2, 3] })) }),
        );
        let served = match kind {
            "bare" => axum::serve(listener, app).await,
            "stack" => {
                let queue = BoundedQueueConfig::builder()
                    .name("e2e")
                    .concurrency(100)
                    .capacity(100)
                    .build()
                    .map_err(|e| e.to_string())?;
                let app = app.layer(
                    ServiceBuilder::new()
                        .layer(CorrelationLayer::new())
                        .layer(HandleErrorLayer::new(resilience_core::http::handle_error))
                        .layer(TimeoutLayer::new(Duration::from_secs(1)))
                        .layer(BoundedQueueLayer::new(queue)),
                );
                axum::serve(listener, app).await
            }
            "tower" => {
                use tower_http::request_id::{
                    MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer,
                };
                let app = app.layer(
                    ServiceBuilder::new()
                        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                        .layer(PropagateRequestIdLayer::x_request_id())
                        .layer(HandleErrorLayer::new(resilience_core::http::handle_error))
                        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(1)))
                        .layer(tower::limit::ConcurrencyLimitLayer::new(100)),
                );
                axum::serve(listener, app).await
            }
            other => {
                return Err(format!(
                    "unknown server kind `{other}` (bare, stack or tower)"
                ));
            }
        };
        served.map_err(|e| format!("serve: {e}"))
    })
}

/// A server child process and its port.
pub(crate) struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// `exe --serve KIND` (`exe`: a copy of this binary).
    pub(crate) fn start(exe: &Path, kind: &str) -> Result<Self, String> {
        Self::spawn(exe, kind, ["--serve", kind])
    }

    /// `exe ARGS`, a server of `kind` that prints its port on its first line.
    pub(crate) fn spawn<I, A>(exe: &Path, kind: &str, args: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = A>,
        A: AsRef<std::ffi::OsStr>,
    {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting the {kind} server: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("reading the {kind} server's port: {e}"))?;
        let port = line
            .trim()
            .parse()
            .map_err(|_| format!("the {kind} server printed `{}`, not a port", line.trim()))?;
        Ok(Server { child, port })
    }

    /// Its loopback address.
    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// utime + stime of the child, in seconds.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (ticks(11) + ticks(12)) / clock_ticks()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// One round against one server.
#[derive(Debug, Clone)]
pub(crate) struct Round {
    pub(crate) kind: &'static str,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) per_second: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) cpu_us_per_request: f64,
    /// The server's CPU time over the round's wall time (1.0: one core
    /// busy all along, all its single worker can give).
    pub(crate) server_busy: f64,
}

/// `rounds` interleaved pairs of `secs`-second rounds (the order within a
/// pair alternates), after one short warm-up round each.
pub(crate) fn run(exe: &Path, rounds: usize, secs: f64) -> Result<Vec<Round>, String> {
    let servers = KINDS
        .iter()
        .map(|k| Server::start(exe, k))
        .collect::<Result<Vec<_>, _>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("client runtime: {e}"))?;
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for (i, server) in servers.iter().enumerate() {
        // The stack is really there (and only there): it answers with an id.
        let uri: http::Uri = format!("http://127.0.0.1:{}/", server.port)
            .parse()
            .map_err(|e| format!("uri: {e}"))?;
        let resp = rt
            .block_on(client.get(uri))
            .map_err(|e| format!("the {} server did not answer: {e}", KINDS[i]))?;
        let header = match KINDS[i] {
            "stack" => Some("x-correlation-id"),
            "tower" => Some("x-request-id"),
            _ => None,
        };
        let has = |h: &str| resp.headers().contains_key(h);
        if header.is_some_and(|h| !has(h)) || (header.is_none() && has("x-correlation-id")) {
            return Err(format!(
                "the {} server's answer does not show its stack (headers: {:?})",
                KINDS[i],
                resp.headers().keys().collect::<Vec<_>>()
            ));
        }
        rt.block_on(round(&client, server, KINDS[i], secs.min(0.5)))?;
    }
    let mut out = Vec::new();
    for r in 0..rounds {
        // Rotate the order every round so no server always runs first.
        let order = (0..KINDS.len()).map(|j| (j + r) % KINDS.len());
        for i in order {
            out.push(rt.block_on(round(&client, &servers[i], KINDS[i], secs))?);
        }
    }
    Ok(out)
}

async fn round(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    server: &Server,
    kind: &'static str,
    secs: f64,
) -> Result<Round, String> {
    let uri: http::Uri = format!("http://127.0.0.1:{}/", server.port)
        .parse()
        .map_err(|e| format!("uri: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let client = client.clone();
        let uri = uri.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = match client.get(uri.clone()).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        ok && resp.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                };
                if ok {
                    latencies.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.map_err(|e| format!("load task: {e}"))?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
    };
    let requests = latencies.len() as u64;
    Ok(Round {
        kind,
        requests,
        errors,
        per_second: requests as f64 / elapsed,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        cpu_us_per_request: cpu * 1e6 / (requests + errors).max(1) as f64,
        server_busy: cpu / elapsed,
    })
}
