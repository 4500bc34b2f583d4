//! Overload end to end: an axum server of known capacity on loopback, bare,
//! behind tower's `LoadShed` + `ConcurrencyLimit`, and behind our standard
//! server stack (`resilience::server::ServerStackLayer`, the queue at its
//! defaults with only the concurrency set), each round in a fresh child
//! process (`report --serve-overload KIND SLOTS SERVICE_US SLICE_US`, one
//! tokio worker), driven from this process (its own runtime, one worker):
//!
//! - **open loop**: a Poisson schedule at 1x, 2x and 5x the server's
//!   capacity over a fixed pool of HTTP/1 connections; every request
//!   carries its deadline (`x-deadline-ms`, the time it has left when it
//!   is sent, as our clients send it), and its latency is measured from
//!   its *scheduled* time, so a generator that falls behind shows as
//!   latency rather than hiding it (no coordinated omission); a request
//!   whose deadline passed before a connection was free is not sent and
//!   counts as missed.
//! - **flood**: 256 closed-loop connections that resend at once whatever
//!   the answer (they ignore `Retry-After`), as `wrk` does, against a 1 ms
//!   handler with 2 slots; served and refused per second and the server's
//!   CPU per answer; then the same callers through our client stack
//!   (`resilience::client::ClientStack`), which honours `Retry-After`.
//!
//! Run this case alone with
//! `cargo run -p resilience-benches --release --bin report -- --only e2e_overload,refusal`
//! (`refusal`: the criterion bench of the refusal path the section quotes;
//! add `--quick` for one short round of each).
//!
//! The handler's work is CPU time done in slices with a `yield_now`
//! between (so the runtime keeps reading requests): each slice spins on
//! the clock, so one request holds the worker for the service time however
//! fast the machine is, and the capacity is one over the service time.

// Wall-clock time is what a load generator measures (tokio's pausable
// clock is for code under test).
#![allow(clippy::disallowed_types)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::e2e::Server;
use axum::Router;
use axum::ServiceExt;
use axum::error_handling::HandleErrorLayer;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use resilience::queue::BoundedQueueConfig;
use resilience::server::{ServerConfig, ServerStackLayer};
use tower::ServiceBuilder;

/// The servers, in report order.
pub(crate) const KINDS: [&str; 3] = ["bare", "tower", "stack"];
/// How each kind is described in the report.
pub(crate) fn label(kind: &str) -> &'static str {
    match kind {
        "bare" => "bare router",
        "tower" => "tower `LoadShed` + `ConcurrencyLimit`",
        "stack" => "ours (`ServerStackLayer`, queue defaults)",
        _ => "?",
    }
}

/// The open loop's handler: 10 ms of CPU in 20 slices of 500 us, so a
/// capacity of 100 requests per second on the server's one worker (the
/// service time of the simulated harness, `benches/overload`).
pub(crate) const SERVICE: Duration = Duration::from_millis(10);
const SLICE: Duration = Duration::from_micros(500);
/// Requests in service at once (tower's limit, our queue's concurrency):
/// one, what the server's one worker can run of a CPU-bound handler.
pub(crate) const SLOTS: usize = 1;
/// Each request's deadline: 20 service times, as in the simulated harness.
pub(crate) const DEADLINE: Duration = Duration::from_millis(200);
/// The loads, as multiples of the capacity.
pub(crate) const LOADS: [f64; 3] = [1.0, 2.0, 5.0];
/// Connections of the open-loop generator.
const OPEN_CONNECTIONS: usize = 256;

/// The flood's handler: 1 ms in 4 slices, 2 slots, 256 connections.
pub(crate) const FLOOD_SERVICE: Duration = Duration::from_millis(1);
const FLOOD_SLICE: Duration = Duration::from_micros(250);
pub(crate) const FLOOD_SLOTS: usize = 2;
pub(crate) const FLOOD_CONNECTIONS: usize = 256;

/// The capacity of the open loop's server, requests per second.
pub(crate) fn capacity() -> f64 {
    1.0 / SERVICE.as_secs_f64()
}

// === servers ===

/// `report --serve-overload KIND SLOTS SERVICE_US SLICE_US`: serves until
/// stdin closes; prints the port first.
pub(crate) fn serve(args: &[String]) -> Result<(), String> {
    let arg = |i: usize| -> Result<u64, String> {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("argument {i}: expected a number, got {:?}", args.get(i)))
    };
    let kind = args.first().map_or("", String::as_str).to_owned();
    let slots = usize::try_from(arg(1)?).map_err(|e| e.to_string())?;
    let service = Duration::from_micros(arg(2)?);
    let slice = Duration::from_micros(arg(3)?.max(1));
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
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        println!("{port}");
        let app = Router::new().route("/", get(move || work(service, slice)));
        let served = match kind.as_str() {
            "bare" => axum::serve(listener, app).await,
            "tower" => {
                // Around the whole router, built once: added with
                // `Router::layer`, axum applies the layer again each time
                // it turns the handlers into routes, which `axum::serve`
                // does for every connection (`Router::with_state`), so
                // each connection had a limit of its own and nothing was
                // ever refused.
                let svc = ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(tower_refusal))
                    .load_shed()
                    .concurrency_limit(slots)
                    .service(app);
                axum::serve(
                    listener,
                    ServiceExt::<axum::extract::Request>::into_make_service(svc),
                )
                .await
            }
            "stack" => {
                let queue = BoundedQueueConfig::builder()
                    .name("e2e")
                    .concurrency(slots)
                    .build()
                    .map_err(|e| e.to_string())?;
                let config = ServerConfig::builder()
                    .queue(queue)
                    .build()
                    .map_err(|e| e.to_string())?;
                axum::serve(listener, app.layer(ServerStackLayer::http(config))).await
            }
            other => {
                return Err(format!(
                    "unknown server kind `{other}` (bare, tower or stack)"
                ));
            }
        };
        served.map_err(|e| format!("serve: {e}"))
    })
}

/// The handler: `service` of CPU in `slice`s, yielding between them.
async fn work(service: Duration, slice: Duration) -> &'static str {
    let mut left = service;
    while !left.is_zero() {
        let this = left.min(slice);
        let until = Instant::now() + this;
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        left -= this;
        tokio::task::yield_now().await;
    }
    "ok"
}

/// tower's refusal as the answer users map it to: `503` + `Retry-After`.
async fn tower_refusal(err: tower::BoxError) -> http::Response<axum::body::Body> {
    let overloaded = err.is::<tower::load_shed::error::Overloaded>();
    let mut rsp = http::Response::new(axum::body::Body::from(if overloaded {
        "overloaded\n"
    } else {
        "internal error\n"
    }));
    *rsp.status_mut() = if overloaded {
        http::StatusCode::SERVICE_UNAVAILABLE
    } else {
        http::StatusCode::INTERNAL_SERVER_ERROR
    };
    if overloaded {
        rsp.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    rsp
}

/// `exe --serve-overload KIND SLOTS SERVICE_US SLICE_US`.
fn start_server(
    exe: &Path,
    kind: &str,
    slots: usize,
    service: Duration,
    slice: Duration,
) -> Result<Server, String> {
    Server::spawn(
        exe,
        kind,
        [
            "--serve-overload".to_owned(),
            kind.to_owned(),
            slots.to_string(),
            service.as_micros().to_string(),
            slice.as_micros().to_string(),
        ],
    )
}

// === the generator's connections ===

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request on `sender`: the status and whether the body was read.
async fn send(sender: &mut Sender, deadline_ms: Option<u64>) -> Option<(u16, bool)> {
    sender.ready().await.ok()?;
    let mut req = http::Request::get("/").header(http::header::HOST, "127.0.0.1");
    if let Some(ms) = deadline_ms {
        req = req.header("x-deadline-ms", ms);
    }
    let req = req.body(Empty::new()).ok()?;
    let rsp = sender.send_request(req).await.ok()?;
    let status = rsp.status().as_u16();
    let has_id = rsp.headers().contains_key("x-correlation-id");
    rsp.into_body().collect().await.ok()?;
    Some((status, has_id))
}

/// A small deterministic generator (splitmix64) for the Poisson schedule.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An exponential gap of mean `1 / rate` seconds.
    fn gap(&mut self, rate: f64) -> Duration {
        let u = 1.0 - self.next_f64(); // (0, 1]
        Duration::from_secs_f64(-u.ln() / rate)
    }
}

// === open loop ===

/// One open-loop round against one server.
#[derive(Debug, Clone)]
pub(crate) struct OpenRound {
    pub(crate) kind: &'static str,
    /// Offered load, as a multiple of the capacity.
    pub(crate) load: f64,
    pub(crate) seed: u64,
    pub(crate) offered_per_s: f64,
    /// Answered `200` within the deadline, per second.
    pub(crate) goodput_per_s: f64,
    /// Answered `200` after the deadline (by the end of the round), per
    /// second.
    pub(crate) late_per_s: f64,
    /// Every `200` answer that arrived during the round (in time or late)
    /// over the round's wall time: the server's throughput.
    pub(crate) served_per_s: f64,
    /// Refused (any other status), per second.
    pub(crate) refused_per_s: f64,
    /// Not sent (the deadline passed waiting for a connection) or not
    /// answered before the round ended, per second.
    pub(crate) missed_per_s: f64,
    /// Latency of the `200` answers, from the scheduled time, in ms.
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// The server's CPU over the round's wall time.
    pub(crate) server_busy: f64,
}

/// `rounds` runs of every kind at every load, `secs` seconds each, every
/// kind on the same seeds; the order of the kinds rotates every round.
pub(crate) fn run_open(exe: &Path, rounds: usize, secs: f64) -> Result<Vec<OpenRound>, String> {
    let rt = client_runtime()?;
    let mut out = Vec::new();
    for r in 0..rounds {
        for load in LOADS {
            for j in 0..KINDS.len() {
                let kind = KINDS[(j + r) % KINDS.len()];
                let seed = 0x5eed_0000 + r as u64;
                let server = start_server(exe, kind, SLOTS, SERVICE, SLICE)?;
                let round = rt.block_on(open_round(&server, kind, load, seed, secs))?;
                eprintln!(
                    "report: e2e overload {kind} {load}x seed {seed:#x}: goodput {:.0}/s, refused {:.0}/s, missed {:.0}/s, p50 {:.1} ms, p99 {:.1} ms",
                    round.goodput_per_s,
                    round.refused_per_s,
                    round.missed_per_s,
                    round.p50_ms,
                    round.p99_ms
                );
                out.push(round);
            }
        }
    }
    Ok(out)
}

fn client_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("client runtime: {e}"))
}

/// What became of one scheduled request.
#[derive(Debug, Clone, Copy)]
struct Shot {
    status: u16,
    latency: Duration,
}

async fn open_round(
    server: &Server,
    kind: &'static str,
    load: f64,
    seed: u64,
    secs: f64,
) -> Result<OpenRound, String> {
    let addr = server.addr();
    let mut senders = Vec::with_capacity(OPEN_CONNECTIONS);
    for _ in 0..OPEN_CONNECTIONS {
        senders.push(connect(addr).await?);
    }
    // The stack is really there (and only there): it answers with an id.
    let (status, has_id) = send(&mut senders[0], None)
        .await
        .ok_or_else(|| format!("the {kind} server did not answer"))?;
    if status != 200 || has_id != (kind == "stack") {
        return Err(format!(
            "the {kind} server answered {status}, correlation id {has_id}"
        ));
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let shots = Arc::new(Mutex::new(Vec::<Shot>::new()));
    let mut tasks = Vec::new();
    for mut sender in senders {
        let rx = rx.clone();
        let shots = shots.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(at) = rx.lock().await.recv().await else {
                    return;
                };
                let now = Instant::now();
                let Some(left) = (at + DEADLINE).checked_duration_since(now) else {
                    continue; // expired before it could be sent: missed
                };
                let ms = (left.as_millis() as u64).max(1);
                let answer = send(&mut sender, Some(ms)).await;
                if let Some((status, _)) = answer {
                    shots.lock().expect("not poisoned").push(Shot {
                        status,
                        latency: at.elapsed(),
                    });
                }
                if answer.is_none() {
                    return; // connection lost: the rest count as missed
                }
            }
        }));
    }
    let rate = capacity() * load;
    let mut rng = Rng(seed);
    let cpu_before = server.cpu_seconds();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut next = start + rng.gap(rate);
    let mut offered = 0u64;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        let now = Instant::now();
        while next <= now && next < end {
            let _ = tx.send(next);
            offered += 1;
            next += rng.gap(rate);
        }
    }
    drop(tx);
    // Every request has its deadline to be answered; a little more for the
    // answers on their way.
    tokio::time::sleep(DEADLINE + Duration::from_millis(50)).await;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    for t in &tasks {
        t.abort();
    }
    let shots = std::mem::take(&mut *shots.lock().expect("not poisoned"));
    let mut served: Vec<Duration> = shots
        .iter()
        .filter(|s| s.status == 200)
        .map(|s| s.latency)
        .collect();
    served.sort_unstable();
    let good = served.iter().filter(|l| **l <= DEADLINE).count() as f64;
    let refused = shots.iter().filter(|s| s.status != 200).count() as f64;
    let late = served.len() as f64 - good;
    let missed = offered as f64 - shots.len() as f64;
    Ok(OpenRound {
        kind,
        load,
        seed,
        offered_per_s: offered as f64 / secs,
        goodput_per_s: good / secs,
        late_per_s: late / secs,
        served_per_s: served.len() as f64 / elapsed,
        refused_per_s: refused / secs,
        missed_per_s: missed / secs,
        p50_ms: percentile_ms(&served, 0.5),
        p99_ms: percentile_ms(&served, 0.99),
        server_busy: cpu / elapsed,
    })
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

// === flood ===

/// One closed-loop flood round against one server.
#[derive(Debug, Clone)]
pub(crate) struct FloodRound {
    pub(crate) kind: &'static str,
    pub(crate) served_per_s: f64,
    pub(crate) refused_per_s: f64,
    /// Latency of the `200` answers, in ms.
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// The server's CPU per answer (served or refused), in us.
    pub(crate) cpu_us_per_answer: f64,
    /// The server's CPU over the round's wall time.
    pub(crate) server_busy: f64,
}

/// `rounds` flood rounds of `secs` seconds per kind, the order rotating.
pub(crate) fn run_flood(exe: &Path, rounds: usize, secs: f64) -> Result<Vec<FloodRound>, String> {
    let rt = client_runtime()?;
    let mut out = Vec::new();
    for r in 0..rounds {
        for j in 0..KINDS.len() {
            let kind = KINDS[(j + r) % KINDS.len()];
            let server = start_server(exe, kind, FLOOD_SLOTS, FLOOD_SERVICE, FLOOD_SLICE)?;
            let round = rt.block_on(flood_round(&server, kind, secs))?;
            eprintln!(
                "report: e2e flood {kind}: served {:.0}/s, refused {:.0}/s, p50 {:.1} ms, server CPU {:.1} us per answer",
                round.served_per_s, round.refused_per_s, round.p50_ms, round.cpu_us_per_answer
            );
            out.push(round);
        }
    }
    Ok(out)
}

async fn flood_round(server: &Server, kind: &'static str, secs: f64) -> Result<FloodRound, String> {
    let addr = server.addr();
    let mut senders = Vec::with_capacity(FLOOD_CONNECTIONS);
    for _ in 0..FLOOD_CONNECTIONS {
        senders.push(connect(addr).await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    // (served latencies, refused): answers that arrive once the round is
    // over are not counted.
    let tally = Arc::new(Mutex::new((Vec::<Duration>::new(), 0u64)));
    let cpu_before = server.cpu_seconds();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut sender in senders {
        let stop = stop.clone();
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let Some((status, _)) = send(&mut sender, None).await else {
                    return;
                };
                let latency = t.elapsed();
                let mut tally = tally.lock().expect("not poisoned");
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if status == 200 {
                    tally.0.push(latency);
                } else {
                    tally.1 += 1;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let (mut served, refused) = {
        let mut tally = tally.lock().expect("not poisoned");
        stop.store(true, Ordering::Relaxed);
        (std::mem::take(&mut tally.0), tally.1)
    };
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    for t in &tasks {
        t.abort();
    }
    served.sort_unstable();
    let answers = (served.len() as u64 + refused).max(1) as f64;
    Ok(FloodRound {
        kind,
        served_per_s: served.len() as f64 / elapsed,
        refused_per_s: refused as f64 / elapsed,
        p50_ms: percentile_ms(&served, 0.5),
        p99_ms: percentile_ms(&served, 0.99),
        cpu_us_per_answer: cpu * 1e6 / answers,
        server_busy: cpu / elapsed,
    })
}

// === report ===

/// `f` of every round of `kind` at `load` (all loads when `None`).
fn of(
    open: &[OpenRound],
    kind: &str,
    load: Option<f64>,
    f: impl Fn(&OpenRound) -> f64,
) -> Vec<f64> {
    open.iter()
        .filter(|r| r.kind == kind && load.is_none_or(|l| r.load == l))
        .map(f)
        .collect()
}

/// `median (min-max)` of `v`, with `digits` decimals.
fn spread(v: &[f64], digits: usize) -> String {
    let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if finite.is_empty() {
        return "—".into();
    }
    let m = crate::median(finite.clone());
    if finite.len() == 1 {
        return format!("{m:.digits$}");
    }
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{m:.digits$} ({lo:.digits$}-{hi:.digits$})")
}

/// The p99 goal, in ms: 4 service times.
fn p99_goal_ms() -> f64 {
    SERVICE.as_secs_f64() * 4e3
}

/// What the bare server serves at 1x, in time or late (median over
/// rounds): every `200` answer that arrived during the round over its
/// wall time, the throughput the server really has on this machine in
/// this run. (In time alone it serves little: at 1x its queue grows
/// without bound, every request sharing the worker with all the others.)
fn bare_at_1x(open: &[OpenRound]) -> f64 {
    crate::median(of(open, "bare", Some(1.0), |r| r.served_per_s))
}

/// The targets: at every load, ours' goodput at least 95% of what the bare
/// server serves at 1x, and the p99 of what ours serves at most 4 service
/// times.
pub(crate) fn targets(open: &[OpenRound]) -> Vec<crate::Target> {
    let mut t = Vec::new();
    let bare = bare_at_1x(open);
    for load in LOADS {
        let what = format!("Overload end to end (axum on loopback), {load}x: goodput (ours)");
        let goal = ">= 95% of what the bare server serves at 1x".to_owned();
        let good = of(open, "stack", Some(load), |r| r.goodput_per_s);
        if good.is_empty() || !bare.is_finite() {
            t.push(crate::not_measured(what, goal));
        } else {
            let m = crate::median(good.clone());
            let met = m >= 0.95 * bare;
            t.push(crate::Target {
                what,
                goal,
                figure: format!(
                    "{:.0}% ({} served in time per s, median (min-max) of {} rounds; the bare server at 1x served {bare:.0}/s, {:.0}/s of them in time; capacity {:.0}/s)",
                    100.0 * m / bare,
                    spread(&good, 0),
                    good.len(),
                    crate::median(of(open, "bare", Some(1.0), |r| r.goodput_per_s)),
                    capacity()
                ),
                met: Some(met),
                gap: if met {
                    String::new()
                } else {
                    format!("{:.0} points", 95.0 - 100.0 * m / bare)
                },
            });
        }
        let what = format!("Overload end to end (axum on loopback), {load}x: p99 of served (ours)");
        let goal = format!(
            "<= {:.0} ms (4x the {} ms service time)",
            p99_goal_ms(),
            SERVICE.as_millis()
        );
        let p99 = of(open, "stack", Some(load), |r| r.p99_ms);
        if p99.is_empty() {
            t.push(crate::not_measured(what, goal));
        } else {
            let m = crate::median(p99.clone());
            let met = m <= p99_goal_ms();
            t.push(crate::Target {
                what,
                goal,
                figure: format!(
                    "{} ms (median (min-max) of {} rounds)",
                    spread(&p99, 1),
                    p99.len()
                ),
                met: Some(met),
                gap: if met {
                    String::new()
                } else {
                    format!("{:.1} ms over", m - p99_goal_ms())
                },
            });
        }
    }
    t
}

/// Why a target of this section was missed, from this run's figures.
pub(crate) fn why_missed(what: &str, open: &[OpenRound]) -> Option<String> {
    if !what.starts_with("Overload end to end (axum on loopback)") {
        return None;
    }
    let load = LOADS
        .into_iter()
        .find(|l| what.contains(&format!(", {l}x:")))?;
    let med = |kind: &str, f: fn(&OpenRound) -> f64| crate::median(of(open, kind, Some(load), f));
    let busy = med("stack", |r| r.server_busy);
    let noise = format!(
        "The server process was busy {:.0}% of the wall time in ours' rounds at this load (the handler spins for its service time, so a server that serves its capacity is busy about 100%; less means it waited for its core: the machine's other work, the load generator included, took it).",
        100.0 * busy
    );
    if what.ends_with("goodput (ours)") {
        Some(format!(
            "At {load}x ours served {:.0}/s in time and refused {:.0}/s; tower's `LoadShed` + `ConcurrencyLimit` served {:.0}/s; the capacity is {:.0}/s. {noise} A request is served in time or refused; what is missing from the capacity is time the worker did not spend in the handler: refusing (each refusal is a whole HTTP exchange, parsed and answered on the same worker), or waiting for its core.",
            med("stack", |r| r.goodput_per_s),
            med("stack", |r| r.refused_per_s),
            med("tower", |r| r.goodput_per_s),
            capacity(),
        ))
    } else {
        Some(format!(
            "At {load}x the p50 of what ours served was {:.1} ms and its p99 {:.1} ms, against {:.1} / {:.1} ms for tower's `LoadShed` + `ConcurrencyLimit` (which never queues: it refuses whatever finds the slot taken, and serves fewer). A request ours serves waited in the queue first: with the queue's defaults a waiter may wait up to the standing target (the 5 ms CoDel target raised to 1.5 smoothed service times, {:.0} ms here) under a heavy standing queue, 4 times that while the standing queue refuses at most one arrival in ten (load about the capacity), and up to its deadline ({} ms) before a standing queue is seen (one 200 ms interval). These defaults are chosen for goodput at 1x-1.2x (the simulated harness's goals, `benches/overload`); 4 service times leaves room for less than 3 service times of waiting. {noise}",
            med("stack", |r| r.p50_ms),
            med("stack", |r| r.p99_ms),
            med("tower", |r| r.p50_ms),
            med("tower", |r| r.p99_ms),
            SERVICE.as_secs_f64() * 1.5e3,
            DEADLINE.as_millis(),
        ))
    }
}

/// The section: every kind at every load, then the flood.
pub(crate) fn write_section(w: &mut String, r: &crate::Results) {
    use std::fmt::Write as _;
    let (open, flood) = (&r.overload_open, &r.overload_flood);
    if open.is_empty() && flood.is_empty() {
        return;
    }
    let _ = writeln!(w, "## Overload end to end (axum on loopback)\n");
    let rounds = open
        .iter()
        .filter(|x| x.kind == "stack" && x.load == LOADS[0])
        .count();
    let mut seeds: Vec<String> = open.iter().map(|r| format!("{:#x}", r.seed)).collect();
    seeds.dedup();
    let seeds = seeds.join(", ");
    let _ = writeln!(
        w,
        "A real axum server on loopback, each round in a fresh child process of the report binary (`report --serve-overload`, a tokio runtime with 1 worker), one route whose handler does {} ms of CPU in slices of {} us with a `yield_now` between (each slice spins on the clock, so one request holds the worker for the service time: a capacity of {:.0} requests/s). Three servers: the bare router; tower's `LoadShed` + `ConcurrencyLimit({SLOTS})` with a `HandleErrorLayer` answering `503` + `Retry-After`, applied around the whole router as one service (`ServiceBuilder::new().layer(HandleErrorLayer::new(..)).load_shed().concurrency_limit({SLOTS}).service(router)`, served with `axum::ServiceExt::into_make_service`: added with `Router::layer` instead, axum applies the layer again each time it turns the handlers into routes, which `axum::serve` does for every connection (`Router::with_state`), so every connection gets a limit of its own and nothing is refused); ours, `Router::layer(ServerStackLayer::http(config))` with the queue at its defaults but `concurrency({SLOTS})` (its state is shared by every `layer()` call). The load generator runs in this process on its own runtime (1 worker): a Poisson schedule at 1x, 2x and 5x the capacity over {OPEN_CONNECTIONS} keep-alive HTTP/1 connections; every request carries its deadline ({} ms) in `x-deadline-ms`, the time it has left when sent, as our clients send it, and its latency runs from its scheduled time (no coordinated omission); a request whose deadline passed before a connection was free is not sent (`missed`, as are those still unanswered when the round ends, its last deadline and 50 ms after its last request). Goodput: `200` answers within the deadline, per second; throughput: every `200` answer that arrived during the round, in time or late, over the round's wall time. {rounds} round(s) of every server at every load on the same seeds ({seeds}), the order of the servers rotating; figures are the median over rounds with the (min-max) spread. The machine is shared (its load average is in the header): the figures move with it.\n",
        SERVICE.as_millis(),
        SLICE.as_micros(),
        capacity(),
        DEADLINE.as_millis(),
    );
    let _ = writeln!(
        w,
        "| load | server | offered/s | goodput/s | late/s | throughput/s | refused/s | missed/s | p50 ms | p99 ms | server busy |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for load in LOADS {
        for kind in KINDS {
            let v = |f: fn(&OpenRound) -> f64, d: usize| spread(&of(open, kind, Some(load), f), d);
            if of(open, kind, Some(load), |r| r.load).is_empty() {
                continue;
            }
            let _ = writeln!(
                w,
                "| {load}x | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                label(kind),
                v(|r| r.offered_per_s, 0),
                v(|r| r.goodput_per_s, 0),
                v(|r| r.late_per_s, 0),
                v(|r| r.served_per_s, 0),
                v(|r| r.refused_per_s, 0),
                v(|r| r.missed_per_s, 0),
                v(|r| r.p50_ms, 1),
                v(|r| r.p99_ms, 1),
                v(|r| r.server_busy * 100.0, 0) + "%",
            );
        }
    }
    let bare = bare_at_1x(open);
    if bare.is_finite() {
        let _ = writeln!(
            w,
            "\nGoals (ours): goodput at least 95% of what the bare server serves at 1x, in time or late (95% of {:.0}/s here: the throughput the server has on this machine in this run; in time the bare server serves little, its queue growing without bound at 1x), at every load; p99 of served at most {:.0} ms (4 service times); see the targets table.\n",
            bare,
            p99_goal_ms()
        );
    }
    if flood.is_empty() {
        return;
    }
    let _ = writeln!(w, "### Closed-loop flood\n");
    let _ = writeln!(
        w,
        "{FLOOD_CONNECTIONS} connections, each sending its next request as soon as the answer to the last one arrives, whatever it was (they ignore `Retry-After`, as `wrk` does), no deadline header; the handler does {} ms of CPU in slices of {} us, {FLOOD_SLOTS} slots for tower's limit and our queue. Served and refused per second, the p50 and p99 of served requests (from send), the server's CPU per answer (utime + stime from `/proc/PID/stat` over all answers, served or refused).\n",
        FLOOD_SERVICE.as_millis(),
        FLOOD_SLICE.as_micros()
    );
    let _ = writeln!(
        w,
        "| server | served/s | refused/s | p50 ms | p99 ms | server CPU us per answer | server busy |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for kind in KINDS {
        let v = |f: fn(&FloodRound) -> f64, d: usize| {
            spread(
                &flood
                    .iter()
                    .filter(|x| x.kind == kind)
                    .map(f)
                    .collect::<Vec<_>>(),
                d,
            )
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {}% |",
            label(kind),
            v(|r| r.served_per_s, 0),
            v(|r| r.refused_per_s, 0),
            v(|r| r.p50_ms, 1),
            v(|r| r.p99_ms, 1),
            v(|r| r.cpu_us_per_answer, 1),
            v(|r| r.server_busy * 100.0, 0),
        );
    }
    if !r.overload_client_flood.is_empty() {
        let c = &r.overload_client_flood;
        let v = |f: fn(&ClientFloodRound) -> f64, d: usize| {
            spread(&c.iter().map(f).collect::<Vec<_>>(), d)
        };
        let _ = writeln!(
            w,
            "| ours, the callers through our client stack | {} | {} (+ {} refused by the client stack itself) | {} | — | — | {}% |",
            v(|r| r.served_per_s, 0),
            v(|r| r.server_refused_per_s, 0),
            v(|r| r.local_refused_per_s, 0),
            v(|r| r.p50_ms, 1),
            v(|r| r.server_busy * 100.0, 0),
        );
        let _ = writeln!(
            w,
            "\nThe last row: the same {FLOOD_CONNECTIONS} callers resending at once, each call made through `resilience::client::ClientStack` (its defaults, without the active health checks, which need a health route, and without the breaker, which would open on the `503`s and refuse every call for its open time): its retry honours `Retry-After` and never retries a refusal of its own, and its adaptive throttle refuses locally a share of the calls while the server refuses many, so most of the flood never reaches the server."
        );
    }
    let refusal = |name: &str| r.median("refusal", name).map(|ns| ns / 1e3);
    if let (Some(base), Some(served), Some(refused), Some(tower)) = (
        refusal("baseline"),
        refusal("ours/served"),
        refusal("ours/refused"),
        refusal("tower/refused"),
    ) {
        let _ = writeln!(
            w,
            "\nWhat a refusal costs in the stack itself (criterion, `refusal` bench, without the HTTP connection's own work): {refused:.2} us a refused call through our stack, {served:.2} us a served one, {tower:.2} us a refusal by tower's `LoadShed` + `ConcurrencyLimit`, {base:.2} us the bare service (medians of this run). The rest of a refusal's server CPU in the table above is the HTTP exchange itself (hyper reading and parsing the request, writing the answer, the socket calls), the same for every server.\n"
        );
    }
    let _ = writeln!(
        w,
        "\nA flood of clients that resend at once takes the worker's time whatever the server answers: every refusal is a whole HTTP exchange, and the handler's slices wait for their turn among the connections' tasks. A server can only make each refusal cheap; clients that honour `Retry-After` (our client stack's retry and adaptive throttle) are what lowers the flood.\n"
    );
}

// === flood through our client stack ===

/// The flood again, its clients calling through our client stack
/// (`resilience::client::ClientStack`, its defaults but the active health
/// checks, which need a health route, and the breaker: what meets the
/// flood is the retry honouring `Retry-After` and the adaptive throttle;
/// a breaker that opened on the `503`s would refuse every call for its
/// open time).
#[derive(Debug, Clone)]
pub(crate) struct ClientFloodRound {
    /// `200` answers per second.
    pub(crate) served_per_s: f64,
    /// Refusals by the server that reached the callers, per second.
    pub(crate) server_refused_per_s: f64,
    /// Calls the client stack refused itself (throttle, open circuit), per
    /// second: they never reached the server.
    pub(crate) local_refused_per_s: f64,
    pub(crate) p50_ms: f64,
    pub(crate) server_busy: f64,
}

/// `rounds` rounds of `secs` seconds against our server stack.
pub(crate) fn run_client_flood(
    exe: &Path,
    rounds: usize,
    secs: f64,
) -> Result<Vec<ClientFloodRound>, String> {
    let rt = client_runtime()?;
    let mut out = Vec::new();
    for _ in 0..rounds {
        let server = start_server(exe, "stack", FLOOD_SLOTS, FLOOD_SERVICE, FLOOD_SLICE)?;
        let round = rt.block_on(client_flood_round(&server, secs))?;
        eprintln!(
            "report: e2e flood through our client stack: served {:.0}/s, refused by the server {:.0}/s, refused locally {:.0}/s, server busy {:.0}%",
            round.served_per_s,
            round.server_refused_per_s,
            round.local_refused_per_s,
            round.server_busy * 100.0
        );
        out.push(round);
    }
    Ok(out)
}

async fn client_flood_round(server: &Server, secs: f64) -> Result<ClientFloodRound, String> {
    use resilience::client::{ClientConfig, ClientPart, ClientStack};
    use resilience::discovery::Endpoint;
    use tower::ServiceExt as _;

    let config = ClientConfig::builder("flood")
        .without(ClientPart::HealthCheck)
        .without(ClientPart::Breaker)
        .build()
        .map_err(|e| e.to_string())?;
    let client = ClientStack::builder(config)
        .endpoints([Endpoint::new(server.addr())])
        .build_http::<Empty<Bytes>>()
        .map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    // (served latencies, refused by the server, refused locally): answers
    // that arrive once the round is over are not counted.
    let tally = Arc::new(Mutex::new((Vec::<Duration>::new(), 0u64, 0u64)));
    let cpu_before = server.cpu_seconds();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..FLOOD_CONNECTIONS {
        let client = client.clone();
        let stop = stop.clone();
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let req = http::Request::get("/")
                    .body(Empty::new())
                    .expect("valid request");
                let outcome = match client.clone().oneshot(req).await {
                    Ok(rsp) => {
                        let ok = rsp.status() == 200;
                        let _ = rsp.into_body().collect().await;
                        Some(ok)
                    }
                    Err(_) => None,
                };
                let latency = t.elapsed();
                {
                    let mut tally = tally.lock().expect("not poisoned");
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    match outcome {
                        Some(true) => tally.0.push(latency),
                        Some(false) => tally.1 += 1,
                        None => tally.2 += 1,
                    }
                }
                if outcome.is_none() {
                    // A local refusal is immediate: let the others run.
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let (mut served, refused, local) = {
        let mut tally = tally.lock().expect("not poisoned");
        stop.store(true, Ordering::Relaxed);
        (std::mem::take(&mut tally.0), tally.1, tally.2)
    };
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = server.cpu_seconds() - cpu_before;
    for t in &tasks {
        t.abort();
    }
    served.sort_unstable();
    Ok(ClientFloodRound {
        served_per_s: served.len() as f64 / elapsed,
        server_refused_per_s: refused as f64 / elapsed,
        local_refused_per_s: local as f64 / elapsed,
        p50_ms: percentile_ms(&served, 0.5),
        server_busy: cpu / elapsed,
    })
}
