//! The retry-storm scenario: does a short slowdown of a service turn into
//! an outage once every client retries?
//!
//! Run it with
//!
//! ```text
//! cargo bench -p resilience-benches --bench retry_storm
//! ```
//!
//! The model, the overload harness's (`benches/overload.rs`): a service of
//! capacity C = K workers x service time S (10 x 10 ms = 1000 req/s), an
//! open-loop Poisson arrival stream at 0.8 C (every request is its own task,
//! so neither backpressure nor retries slow the generator), on tokio's
//! paused clock on one thread with a fixed seed. Time is not dilated here:
//! the retry layers' defaults (budget windows, backoffs) are in real time,
//! and every time in the model is a whole number of milliseconds, which the
//! paused clock keeps exactly (arrivals snap to the millisecond).
//!
//! - **The trigger**: from [`TRIGGER_START`] for [`TRIGGER`] (2 s) the
//!   service is 4x slower (a job started then takes 40 ms); then it ends.
//! - **The server**, the same for every client configuration, in three
//!   settings, each a table ([`QUEUES`]). Two are our bounded queue (K
//!   slots, 50 places, FIFO, deadline-aware admission: a waiter whose
//!   expected wait is past its deadline is refused at once, and none waits
//!   past it) in front of resilience-core's `TimeoutLayer`, which stops
//!   work at the request's deadline, as the reference stack has them: a
//!   15 ms wait budget with CoDel (tuned for this service as the overload
//!   harness's `ours`), and deadline only (the reference deployment's
//!   shape: no CoDel, a 200 ms `max_wait`). The third, `unbounded FIFO`,
//!   is tower's `ConcurrencyLimit` alone: a queue without limit that works
//!   on every attempt it was sent, whether its client still waits or not
//!   (the server of the issue's "for scale" figures). The server
//!   runs in its own tasks behind a "wire": a client that gives up on an
//!   attempt does not stop the server's work on it (what the server does
//!   with it is the server's business), and the server's refusals reach
//!   the client as HTTP answers (`resilience_core::http`'s mapping: `503`
//!   with `Retry-After`).
//! - **The clients**: each request has a deadline of [`CLIENT_DEADLINE`]
//!   (300 ms, room for three attempts) which the server sees (the
//!   `Deadline` a header would carry), a per-attempt timeout of
//!   [`ATTEMPT_TIMEOUT`] (100 ms) and at most 3 attempts:
//!   - `no retry`: tower's `Timeout` alone;
//!   - `tower Retry`: tower's `Retry`, retrying a timeout or a 502/503/504
//!     at once, no budget;
//!   - `tower Retry+TpsBudget`: the same with `TpsBudget::default()` (10 s,
//!     10/s, 20%), used as tower's documentation does (deposit on success,
//!     withdraw before a retry);
//!   - `tower-resilience`: tower-resilience 0.13's retry with its defaults
//!     (3 attempts, exponential backoff from 100 ms, no budget, every
//!     error retried, answers never), above tower's `Timeout`;
//!   - `ours`: `resilience_retry::RetryLayer` with its defaults and an
//!     `attempt_timeout` of 100 ms, the request's `Deadline` in its
//!     extensions.
//!
//! Measured per configuration: goodput (answers `200` within the request's
//! deadline / requests offered) per 100 ms bin of arrival time; the time
//! from the trigger's end until goodput is back at or above 95% and stays
//! there until the end of the run; the amplification (attempts sent per
//! request offered) during the trigger and after it; and the share of the
//! server's busy time spent on attempts their client had already given up
//! on. A `RETRY_STORM_SETUP` line gives the model's parameters; each table
//! row is followed by a machine-readable `RETRY_STORM_ROW` line and a
//! `RETRY_STORM_BINS` line (its goodput per bin); `-- --bins` prints each
//! configuration's goodput per bin in the text too, and `-- --seed N`
//! changes the seed. The benchmark report (`--bin report`) runs this
//! harness, reads those lines, and draws goodput over time per
//! configuration and server (`benches/retry_storm.svg`).
//!
//! What it shows (seed 42): on our bounded queue every configuration is
//! back within 0.1 s of the trigger's end, since the server drops attempts
//! it can no longer finish in time; what differs is the amplification
//! during the trigger: tower's `Retry` 2.9 attempts per request on the
//! deadline-only server, `TpsBudget` 1.6 (a 2 s slowdown after quiet
//! seconds spends the allowance its 10 s window saved), tower-resilience
//! 1.3, ours 1.17 (its budget holds every stretch of its burst window
//! that ends at a retry and starts on a tenth of it to 20% of that
//! stretch's own requests, so the trigger, which starts on such a tenth,
//! gets no retries paid by the requests before it: 1.172 on this seed,
//! 1.165 to 1.171 on seeds 1 to 4). On the unbounded FIFO, no retry is back after
//! 5.5 s (the backlog the trigger left drains at 200 requests/s),
//! `TpsBudget` after 11 s (deposits on success only: while everything
//! fails, only its floor is left), and tower's `Retry`, tower-resilience
//! and ours never within the run: the backlog makes every attempt time
//! out, and the retries, 1.18 attempts per request for ours, keep the
//! server at 95% of its capacity, too busy to drain it. A client-side
//! budget bounds the load retries add; it cannot make a server drop the
//! work its clients gave up on: that half is the server's.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use resilience_bounded_queue::{BoundedQueueConfig, BoundedQueueLayer};
use resilience_core::{BoxError, Deadline, TimeoutLayer};
use resilience_retry::{RetryConfig, RetryLayer};
use tokio::time::Instant;
use tower::retry::budget::{Budget as _, TpsBudget};
use tower::util::BoxCloneService;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// Workers (the concurrency the service can take).
const K: usize = 10;
/// Service time.
const S: Duration = Duration::from_millis(10);
/// How much slower the service is during the trigger.
const SLOWDOWN: u32 = 4;
/// Offered load, times the capacity.
const LOAD: f64 = 0.8;
/// When the trigger starts (the budgets have filled by then).
const TRIGGER_START: Duration = Duration::from_secs(5);
/// How long the trigger lasts.
const TRIGGER: Duration = Duration::from_secs(2);
/// How long arrivals are generated.
const RUN: Duration = Duration::from_secs(30);
/// Each request's deadline.
const CLIENT_DEADLINE: Duration = Duration::from_millis(300);
/// Each attempt's timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(100);
/// Attempts per request at most, the first included.
const ATTEMPTS: usize = 3;
/// The goodput bins.
const BIN: Duration = Duration::from_millis(100);
/// Goodput counts as recovered at or above this share of offered.
const RECOVERED: f64 = 0.95;
/// The configurations, in the table's order.
const CONFIGS: [&str; 5] = [
    "no retry",
    "tower Retry",
    "tower Retry+TpsBudget",
    "tower-resilience",
    "ours",
];

fn bins() -> usize {
    (RUN.as_millis() / BIN.as_millis()) as usize
}

fn bin_of(offset: Duration) -> usize {
    ((offset.as_millis() / BIN.as_millis()) as usize).min(bins() - 1)
}

/// What one configuration's run counted.
struct Stats {
    start: Instant,
    /// Per bin of arrival time.
    offered: Vec<u64>,
    good: Vec<u64>,
    /// Attempts sent, per bin of the time they were sent.
    attempts: Vec<u64>,
    /// Server busy time, and the part of it spent on attempts whose client
    /// had already given up.
    busy: Duration,
    wasted: Duration,
}

impl Stats {
    fn new(start: Instant) -> Self {
        Stats {
            start,
            offered: vec![0; bins()],
            good: vec![0; bins()],
            attempts: vec![0; bins()],
            busy: Duration::ZERO,
            wasted: Duration::ZERO,
        }
    }
}

/// Set when the client stops waiting for an attempt.
#[derive(Clone)]
struct Abandoned(Arc<AtomicBool>);

struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

type Server = BoxCloneService<Request<()>, (), BoxError>;

/// A server setting: our bounded queue, FIFO with 50 places and
/// deadline-aware (a waiter whose expected wait is past its deadline is
/// refused at once, and none waits past it), with a timeout at the
/// request's deadline; or an unbounded FIFO that works on every attempt it
/// was sent, abandoned or not.
struct Queue {
    label: &'static str,
    max_wait: Duration,
    codel: bool,
    /// An unbounded FIFO in front of the K workers (tower's
    /// `ConcurrencyLimit`), no deadline, no timeout: `max_wait` and `codel`
    /// do not apply.
    fifo: bool,
}

/// The two servers. `wait budget`: tuned for this service as the overload
/// harness's `ours` is (a known 10 ms service time: at most 15 ms of
/// queueing, CoDel with a 15 ms target); the queue's defaults (a 5 ms CoDel
/// target, adaptive LIFO) suit services of unknown speed and here turn
/// away about 5% of the requests at 0.8x, trigger or not. `deadline only`:
/// the reference deployment's shape (`examples/src/soak`: no CoDel, a
/// 200 ms `max_wait`), so a waiter stays until its deadline (300 ms) or
/// `max_wait`, well past its attempt's timeout (100 ms). `unbounded FIFO`:
/// the server of the issue's "for scale" figures, which keeps working on
/// attempts their client has abandoned, behind a queue without limit.
const QUEUES: [Queue; 3] = [
    Queue {
        label: "wait budget 15ms",
        max_wait: Duration::from_millis(15),
        codel: true,
        fifo: false,
    },
    Queue {
        label: "deadline only",
        max_wait: Duration::from_millis(200),
        codel: false,
        fifo: false,
    },
    Queue {
        label: "unbounded FIFO",
        max_wait: Duration::ZERO,
        codel: false,
        fifo: true,
    },
];

/// The server: our bounded queue (deadline-aware admission) in front of a
/// timeout at the request's deadline, in front of K workers' worth of
/// service time (4x longer for a job started during the trigger).
fn server(stats: Arc<Mutex<Stats>>, queue: &Queue) -> Server {
    let start = stats.lock().unwrap().start;
    let service = service_fn(move |req: Request<()>| {
        let stats = stats.clone();
        async move {
            let since = start.elapsed();
            let slow = since >= TRIGGER_START && since < TRIGGER_START + TRIGGER;
            let took = if slow { S * SLOWDOWN } else { S };
            tokio::time::sleep(took).await;
            let mut s = stats.lock().unwrap();
            s.busy += took;
            if req
                .extensions()
                .get::<Abandoned>()
                .is_some_and(|a| a.0.load(Ordering::Relaxed))
            {
                s.wasted += took;
            }
            Ok::<_, Infallible>(())
        }
    });
    if queue.fifo {
        return ServiceBuilder::new()
            .concurrency_limit(K)
            .service(service)
            .map_err(Into::into)
            .boxed_clone();
    }
    let queue = BoundedQueueConfig::builder()
        .name("retry-storm")
        .concurrency(K)
        .capacity(50)
        .max_wait(queue.max_wait)
        .codel(queue.codel)
        .codel_target(Duration::from_millis(15))
        .lifo(false)
        .build()
        .expect("valid");
    ServiceBuilder::new()
        .layer(BoundedQueueLayer::new(queue))
        .layer(TimeoutLayer::new(Duration::from_secs(1)))
        .service(service)
        .map_err(Into::into)
        .boxed_clone()
}

/// A request of the peers' clients, which need `Clone` requests (tower's
/// `Retry` and tower-resilience's retry clone each attempt).
#[derive(Clone)]
struct Call {
    deadline: Deadline,
}

/// What the wire reads from a client's request.
trait ToWire {
    fn deadline(&self) -> Deadline;
}

impl ToWire for Call {
    fn deadline(&self) -> Deadline {
        self.deadline
    }
}

impl<B> ToWire for Request<B> {
    fn deadline(&self) -> Deadline {
        *self.extensions().get::<Deadline>().expect("a deadline")
    }
}

/// The client's end of the wire: sends each attempt to the server, which
/// runs it in its own task (dropping the attempt does not stop it), and
/// answers the server's refusals as HTTP would.
#[derive(Clone)]
struct Wire {
    server: Server,
    stats: Arc<Mutex<Stats>>,
}

impl<R: ToWire> Service<R> for Wire {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Response<String>, BoxError>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        let deadline = req.deadline();
        {
            let mut s = self.stats.lock().unwrap();
            let bin = bin_of(s.start.elapsed());
            s.attempts[bin] += 1;
        }
        let abandoned = Arc::new(AtomicBool::new(false));
        let guard = AbandonOnDrop(abandoned.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = self.server.clone();
        tokio::spawn(async move {
            let mut req = Request::new(());
            req.extensions_mut().insert(deadline);
            req.extensions_mut().insert(Abandoned(abandoned));
            let rsp = match server.oneshot(req).await {
                Ok(()) => Response::new(String::new()),
                Err(e) => resilience_core::http::error_response(&*e),
            };
            let _ = tx.send(rsp);
        });
        Box::pin(async move {
            let _guard = guard;
            rx.await.map_err(|_| BoxError::from("server task ended"))
        })
    }
}

/// tower's `Retry` policy: a timeout (or any error) or a 502/503/504 is
/// retried at once while attempts are left and, with a budget, while the
/// budget allows it (deposit on success, withdraw before a retry, as in
/// tower's documentation).
#[derive(Clone)]
struct TowerPolicy {
    left: usize,
    budget: Option<Arc<TpsBudget>>,
}

impl tower::retry::Policy<Call, Response<String>, BoxError> for TowerPolicy {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut Call,
        result: &mut Result<Response<String>, BoxError>,
    ) -> Option<Self::Future> {
        let failed = match result {
            Ok(rsp) => matches!(rsp.status().as_u16(), 502..=504),
            Err(_) => true,
        };
        if !failed {
            if let Some(b) = &self.budget {
                b.deposit();
            }
            return None;
        }
        if self.left == 0 {
            return None;
        }
        if self.budget.as_ref().is_some_and(|b| !b.withdraw()) {
            return None;
        }
        self.left -= 1;
        Some(std::future::ready(()))
    }

    fn clone_request(&mut self, req: &Call) -> Option<Call> {
        Some(req.clone())
    }
}

/// Offers the arrivals to `client`, whose requests `make` builds.
async fn offer<S, R>(client: S, stats: Arc<Mutex<Stats>>, make: fn(Deadline) -> R, seed: u64)
where
    S: Service<R, Response = Response<String>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send,
    R: Send + 'static,
{
    let start = stats.lock().unwrap().start;
    let mut tasks = Vec::new();
    for offset in schedule(seed) {
        tokio::time::sleep_until(start + offset).await;
        let client = client.clone();
        let stats = stats.clone();
        tasks.push(tokio::spawn(async move {
            let bin = bin_of(offset);
            stats.lock().unwrap().offered[bin] += 1;
            let req = make(Deadline::after(CLIENT_DEADLINE));
            let out = tokio::time::timeout(CLIENT_DEADLINE, client.oneshot(req)).await;
            if matches!(out, Ok(Ok(ref rsp)) if rsp.status() == StatusCode::OK) {
                stats.lock().unwrap().good[bin] += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// The open-loop Poisson arrivals at `LOAD` x C over `RUN`.
fn schedule(seed: u64) -> Vec<Duration> {
    let rate = K as f64 / S.as_secs_f64() * LOAD;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut next = Duration::ZERO;
    let mut out = Vec::new();
    loop {
        let u: f64 = rng.random::<f64>().max(1e-12);
        next += Duration::from_secs_f64(-u.ln() / rate);
        if next >= RUN {
            return out;
        }
        out.push(next);
    }
}

fn http_request(deadline: Deadline) -> Request<String> {
    let mut req = Request::get("/stock/42").body(String::new()).unwrap();
    req.extensions_mut().insert(deadline);
    req
}

fn call(deadline: Deadline) -> Call {
    Call { deadline }
}

async fn scenario(name: &str, queue: &Queue, seed: u64) -> Stats {
    let stats = Arc::new(Mutex::new(Stats::new(Instant::now())));
    let wire = Wire {
        server: server(stats.clone(), queue),
        stats: stats.clone(),
    };
    let attempt = ServiceBuilder::new()
        .timeout(ATTEMPT_TIMEOUT)
        .service(wire.clone());
    match name {
        "no retry" => offer(attempt, stats.clone(), call, seed).await,
        "tower Retry" => {
            let policy = TowerPolicy {
                left: ATTEMPTS - 1,
                budget: None,
            };
            let client = tower::retry::Retry::new(policy, attempt);
            offer(client, stats.clone(), call, seed).await;
        }
        "tower Retry+TpsBudget" => {
            let policy = TowerPolicy {
                left: ATTEMPTS - 1,
                budget: Some(Arc::new(TpsBudget::default())),
            };
            let client = tower::retry::Retry::new(policy, attempt);
            offer(client, stats.clone(), call, seed).await;
        }
        "tower-resilience" => {
            let layer =
                tower_resilience::retry::RetryLayer::<Call, Response<String>, BoxError>::builder()
                    .build();
            let client = ServiceBuilder::new().layer(layer).service(attempt);
            offer(client, stats.clone(), call, seed).await;
        }
        "ours" => {
            let config = RetryConfig::builder()
                .name("retry-storm")
                .attempt_timeout(ATTEMPT_TIMEOUT)
                .build()
                .expect("valid");
            let client = ServiceBuilder::new()
                .layer(RetryLayer::new(config).with_seed(seed))
                .service(wire);
            offer(client, stats.clone(), http_request, seed).await;
        }
        other => unreachable!("unknown configuration {other}"),
    }
    // Server tasks of abandoned attempts may still hold a clone.
    let mut s = stats.lock().unwrap();
    let start = s.start;
    std::mem::replace(&mut *s, Stats::new(start))
}

/// One configuration's figures.
struct Row {
    name: &'static str,
    /// Goodput per bin, 0..=1.
    goodput: Vec<f64>,
    /// From the trigger's end until goodput is back and stays; `None`:
    /// never within the run.
    recovery: Option<Duration>,
    amp_during: f64,
    amp_after: f64,
    /// Goodput over the whole run, 0..=1.
    total: f64,
    /// Server busy time spent on abandoned attempts, 0..=1.
    wasted: f64,
}

fn row(name: &'static str, s: &Stats) -> Row {
    let goodput: Vec<f64> = s
        .offered
        .iter()
        .zip(&s.good)
        .map(|(&o, &g)| if o == 0 { 1.0 } else { g as f64 / o as f64 })
        .collect();
    let end = bin_of(TRIGGER_START + TRIGGER);
    let recovery = (end..goodput.len())
        .find(|&i| goodput[i..].iter().all(|&g| g >= RECOVERED))
        .map(|i| BIN * (i - end) as u32);
    let ratio = |range: std::ops::Range<usize>| {
        let attempts: u64 = s.attempts[range.clone()].iter().sum();
        let offered: u64 = s.offered[range].iter().sum();
        attempts as f64 / offered.max(1) as f64
    };
    let total = s.good.iter().sum::<u64>() as f64 / s.offered.iter().sum::<u64>().max(1) as f64;
    Row {
        name,
        goodput,
        recovery,
        amp_during: ratio(bin_of(TRIGGER_START)..end),
        amp_after: ratio(end..bins()),
        total,
        wasted: s.wasted.as_secs_f64() / s.busy.as_secs_f64().max(1e-9),
    }
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".to_owned()
    }
}

fn main() {
    let seed = std::env::args()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[0] == "--seed")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(42u64);
    let bins_wanted = std::env::args().any(|a| a == "--bins");
    println!(
        "retry storm: K={K} x S={}ms (C={} req/s), Poisson arrivals at {LOAD}x for {}s, service {SLOWDOWN}x slower from {}s for {}s, deadline {}ms, attempt timeout {}ms, at most {ATTEMPTS} attempts, seed {seed}",
        S.as_millis(),
        K as f64 / S.as_secs_f64(),
        RUN.as_secs(),
        TRIGGER_START.as_secs(),
        TRIGGER.as_secs(),
        CLIENT_DEADLINE.as_millis(),
        ATTEMPT_TIMEOUT.as_millis(),
    );
    println!(
        "RETRY_STORM_SETUP {{\"trigger_start_s\":{},\"trigger_s\":{},\"run_s\":{},\"load\":{LOAD},\"slowdown\":{SLOWDOWN},\"capacity\":{},\"deadline_ms\":{},\"attempt_timeout_ms\":{},\"attempts\":{ATTEMPTS},\"recovered\":{RECOVERED}}}",
        TRIGGER_START.as_secs_f64(),
        TRIGGER.as_secs_f64(),
        RUN.as_secs_f64(),
        K as f64 / S.as_secs_f64(),
        CLIENT_DEADLINE.as_millis(),
        ATTEMPT_TIMEOUT.as_millis(),
    );
    for queue in &QUEUES {
        println!();
        if queue.fifo {
            println!(
                "server: {} (tower ConcurrencyLimit({K}): no limit on waiters, no deadline, every attempt worked on)",
                queue.label
            );
        } else {
            println!(
                "server: bounded queue, {} (FIFO, max_wait {}ms, CoDel {}, deadline-aware)",
                queue.label,
                queue.max_wait.as_millis(),
                if queue.codel { "15ms" } else { "off" }
            );
        }
        println!();
        println!(
            "| config | goodput % | recovery after trigger (s) | amplification during | amplification after | server work wasted % |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        let mut rows = Vec::new();
        for name in CONFIGS {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let stats = rt.block_on(scenario(name, queue, seed));
            let r = row(name, &stats);
            let recovery = r
                .recovery
                .map_or("never".to_owned(), |d| format!("{:.1}", d.as_secs_f64()));
            println!(
                "| {} | {:.1} | {} | {:.2} | {:.2} | {:.1} |",
                r.name,
                r.total * 100.0,
                recovery,
                r.amp_during,
                r.amp_after,
                r.wasted * 100.0,
            );
            rows.push(r);
        }
        println!();
        for r in &rows {
            if bins_wanted {
                let line: Vec<String> = r
                    .goodput
                    .iter()
                    .map(|g| format!("{:.0}", g * 100.0))
                    .collect();
                println!("{}: {}", r.name, line.join(" "));
            }
            // The same row, machine-readable.
            println!(
                "RETRY_STORM_ROW {{\"server\":\"{}\",\"config\":\"{}\",\"seed\":{seed},\"goodput\":{},\"recovery_s\":{},\"amplification_during\":{},\"amplification_after\":{},\"wasted\":{}}}",
                queue.label,
                r.name,
                json_num(r.total * 100.0),
                r.recovery
                    .map_or("null".to_owned(), |d| json_num(d.as_secs_f64())),
                json_num(r.amp_during),
                json_num(r.amp_after),
                json_num(r.wasted * 100.0),
            );
            // Its goodput per bin, for the report's chart.
            let bins: Vec<String> = r.goodput.iter().map(|&g| json_num(g * 100.0)).collect();
            println!(
                "RETRY_STORM_BINS {{\"server\":\"{}\",\"config\":\"{}\",\"seed\":{seed},\"bin_ms\":{},\"goodput\":[{}]}}",
                queue.label,
                r.name,
                BIN.as_millis(),
                bins.join(","),
            );
        }
    }
}
