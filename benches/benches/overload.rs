//! The overload harness: how admission layers behave when offered 0.7x to
//! 5x the capacity of a service.
//!
//! Run it with
//!
//! ```text
//! cargo bench -p resilience-benches --bench overload
//! ```
//!
//! The model: a service of capacity C = K workers x service time S
//! (10 x 10 ms = 1000 req/s), an open-loop Poisson arrival stream (every
//! request is its own task, so backpressure cannot slow the generator), a
//! priority mix of 20% critical (`critical-plus`), 30% default (`critical`)
//! and 50% `sheddable`, and a client deadline of 200 ms: a late answer is
//! not goodput (the client gives up and drops the call).
//!
//! Every configuration runs at 0.7x, 0.8x, 0.9x, 1x, 1.2x, 2x and 5x. The
//! `defaults` row is our queue with only `concurrency(10)` set; it, the
//! tuned `ours` and the peers `ConcurrencyLimit`, `LoadShed+Buffer(100)+CL`
//! and `Bulkhead(50ms)` run on six seeds (42, 1-5) and with two kinds of
//! client: one that drops the call at its deadline and one that waits for
//! every answer (a late answer is not goodput). The table shows seed 42 with
//! dropping clients; after it the harness checks the defaults against their
//! goals on every seed and client (at 0.7x-0.9x at least 99.9% of offered
//! requests served within the deadline; at 1x 98.5% of capacity with a p99
//! of successes within 50 ms; at 1.2x 99%; at 2x and 5x 99% with a p99
//! within 25 ms, critical requests at 99% and 95%, and never more queued
//! than the queue's capacity) and lists each miss.
//!
//! Deterministic: tokio's paused clock on one thread and fixed seeds. The
//! paused clock snaps timers to whole milliseconds, so model time is dilated
//! [`DILATION`] times (a 10 ms service time sleeps 1 s of paused time) and
//! every figure is printed back in model milliseconds.
//!
//! After the table come upper bounds computed from the same arrivals: the
//! most requests any admission policy could serve with every wait at most
//! 15 ms (the p99 <= 25 ms goal with a 10 ms service time), plus the 1% of
//! successes the p99 lets wait longer; overall, for critical alone and for
//! critical + default (see [`bounds`]). Each bound is reached by an online
//! policy, FIFO with a 15 ms queue timeout that refuses every other class,
//! which no other target allows (at 2x the critical + default bound leaves
//! goodput at that bound, below 99%, and at 5x it serves critical requests
//! no better than default ones): they bound what a policy meeting every
//! target can reach; they are not all reachable together.
//!
//! Our queue's settings can be changed from the command line, in model
//! milliseconds where they are times: `-- --set target=5 --set max_wait=15
//! --set interval=100 --set capacity=50 --set lifo=1 --set long=120
//! --set seed=42` (one seed instead of six), `--set d.NAME=...` for the
//! defaults row (see [`defaults_config`]), and
//! `--set priorities=0` sends every request at the default priority;
//! `-- ours` runs only our rows, `--reasons` lists rejections by reason.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use resilience_bounded_queue::{BoundedQueueConfig, BoundedQueueHandle, BoundedQueueLayer};
use resilience_core::{BoxError, Deadline, Priority};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// Model time runs this many times slower than paused tokio time.
const DILATION: u32 = 100;
/// Workers (the concurrency the service can take).
const K: usize = 10;
/// Service time, in model time.
const S: Duration = Duration::from_millis(10);
/// Client deadline, in model time.
const CLIENT_DEADLINE: Duration = Duration::from_millis(200);
/// How long arrivals are generated, in model time.
const RUN: Duration = Duration::from_secs(10);
/// The priorities of the mix, as (level, share, label).
const MIX: [(Priority, f64, &str); 3] = [
    (Priority::CriticalPlus, 0.2, "critical"),
    (Priority::Critical, 0.3, "default"),
    (Priority::Sheddable, 0.5, "sheddable"),
];

/// Model time to paused time.
fn dilate(d: Duration) -> Duration {
    d * DILATION
}

/// Paused time to model milliseconds.
fn model_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0 / f64::from(DILATION)
}

/// When the request arrived, carried to the inner service to measure queueing.
#[derive(Clone)]
struct Arrival {
    at: Instant,
    started: Arc<AtomicBool>,
}

#[derive(Default)]
struct Stats {
    arrivals: [u64; 3],
    successes: [u64; 3],
    success_latency: Vec<Duration>,
    rejection_latency: Vec<Duration>,
    rejections: u64,
    reasons: std::collections::BTreeMap<(usize, String), u64>,
    client_timeouts: u64,
    queue_time: Vec<Duration>,
    waiting: u64,
    peak_waiting: u64,
    /// The most requests our queue held waiting (its own snapshot, read at
    /// every arrival); 0 for the peers.
    peak_queued: u64,
}

/// A row of the table.
struct Row {
    goodput: f64,
    /// Successes within the deadline, percent of the requests offered.
    served: f64,
    p50: f64,
    p99: f64,
    queue_p99: f64,
    reject_p50: f64,
    reject_p99: f64,
    rejections: u64,
    timeouts: u64,
    peak_waiting: u64,
    peak_queued: u64,
    per_priority: [f64; 3],
    /// Critical and default together, percent of their arrivals.
    critical_default: f64,
    reasons: std::collections::BTreeMap<(usize, String), u64>,
}

fn percentile(v: &mut [Duration], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    model_ms(v[i])
}

/// The inner service: K workers' worth of fixed service time; records how
/// long each request waited before it started.
fn inner(
    stats: Arc<Mutex<Stats>>,
) -> impl Service<Request<()>, Response = (), Error = Infallible, Future: Send> + Clone + Send + 'static
{
    service_fn(move |req: Request<()>| {
        let stats = stats.clone();
        async move {
            if let Some(a) = req.extensions().get::<Arrival>() {
                a.started.store(true, Ordering::Relaxed);
                let mut s = stats.lock().unwrap();
                s.queue_time.push(a.at.elapsed());
                s.waiting -= 1;
            }
            tokio::time::sleep(dilate(S)).await;
            Ok::<_, Infallible>(())
        }
    })
}

thread_local! {
    /// The handle of the queue under test, if ours, for [`run`] to read its
    /// depth.
    static QUEUE: std::cell::RefCell<Option<BoundedQueueHandle>> = const { std::cell::RefCell::new(None) };
}

/// [`BoundedQueueLayer::new`], with its handle left for [`run`].
fn queue_layer(config: BoundedQueueConfig) -> BoundedQueueLayer {
    let layer = BoundedQueueLayer::new(config);
    QUEUE.with(|q| *q.borrow_mut() = Some(layer.handle()));
    layer
}

/// What a client does with a request past its deadline.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Client {
    /// Gives up at its deadline and drops the call (the future is dropped,
    /// so a queued request leaves the queue).
    Drops,
    /// Waits for every answer; an answer after the deadline is not goodput.
    Waits,
}

impl Client {
    const BOTH: [Client; 2] = [Client::Drops, Client::Waits];

    fn as_str(self) -> &'static str {
        match self {
            Client::Drops => "drops",
            Client::Waits => "waits",
        }
    }
}

/// Offers `load` x C for `span` (model time) to `svc`, returns the row.
async fn run<S>(
    svc: S,
    stats: Arc<Mutex<Stats>>,
    load: f64,
    seed: u64,
    span: Duration,
    client: Client,
) -> Row
where
    S: Service<Request<()>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError> + Send + 'static,
    S::Response: Send + 'static,
{
    let capacity = K as f64 / S.as_secs_f64(); // per model second
    let start = Instant::now();
    let mut tasks = Vec::new();
    let queue = QUEUE.with(|q| q.borrow_mut().take());
    for (offset, class) in schedule(load, seed, span) {
        tokio::time::sleep_until(start + offset).await;
        if let Some(h) = &queue {
            let mut s = stats.lock().unwrap();
            s.peak_queued = s.peak_queued.max(h.snapshot().queued as u64);
        }
        let svc = svc.clone();
        let stats = stats.clone();
        tasks.push(tokio::spawn(async move {
            let arrived = Instant::now();
            let mut req = Request::new(());
            // `--set priorities=0`: every request the default priority.
            if knob("priorities", 1) != 0 {
                req.extensions_mut().insert(MIX[class].0);
            }
            req.extensions_mut()
                .insert(Deadline::after(dilate(CLIENT_DEADLINE)));
            let started = Arc::new(AtomicBool::new(false));
            req.extensions_mut().insert(Arrival {
                at: arrived,
                started: started.clone(),
            });
            {
                let mut s = stats.lock().unwrap();
                s.arrivals[class] += 1;
                s.waiting += 1;
                s.peak_waiting = s.peak_waiting.max(s.waiting);
            }
            let out = match client {
                Client::Drops => {
                    tokio::time::timeout(dilate(CLIENT_DEADLINE), svc.oneshot(req)).await
                }
                Client::Waits => {
                    let out = svc.oneshot(req).await;
                    match out {
                        // A late answer is not goodput.
                        Ok(_) if arrived.elapsed() > dilate(CLIENT_DEADLINE) => {
                            let mut s = stats.lock().unwrap();
                            if !started.load(Ordering::Relaxed) {
                                s.waiting -= 1;
                            }
                            s.client_timeouts += 1;
                            return;
                        }
                        out => Ok(out),
                    }
                }
            };
            let took = arrived.elapsed();
            let mut s = stats.lock().unwrap();
            if !started.load(Ordering::Relaxed) {
                s.waiting -= 1;
            }
            match out {
                Ok(Ok(_)) => {
                    s.successes[class] += 1;
                    s.success_latency.push(took);
                }
                Ok(Err(e)) => {
                    let e: BoxError = e.into();
                    let why = match e.downcast_ref::<resilience_core::Rejected>() {
                        Some(r) => r.reason().to_owned(),
                        None => e.to_string(),
                    };
                    *s.reasons.entry((class, why)).or_default() += 1;
                    s.rejections += 1;
                    s.rejection_latency.push(took);
                }
                Err(_) => s.client_timeouts += 1,
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut s = stats.lock().unwrap();
    let total_success: u64 = s.successes.iter().sum();
    let model_capacity = capacity * span.as_secs_f64();
    let per_priority = std::array::from_fn(|i| {
        if s.arrivals[i] == 0 {
            f64::NAN
        } else {
            100.0 * s.successes[i] as f64 / s.arrivals[i] as f64
        }
    });
    Row {
        goodput: 100.0 * total_success as f64 / model_capacity,
        served: 100.0 * total_success as f64 / s.arrivals.iter().sum::<u64>().max(1) as f64,
        p50: percentile(&mut s.success_latency, 0.50),
        p99: percentile(&mut s.success_latency, 0.99),
        queue_p99: percentile(&mut s.queue_time, 0.99),
        reject_p50: percentile(&mut s.rejection_latency, 0.50),
        reject_p99: percentile(&mut s.rejection_latency, 0.99),
        rejections: s.rejections,
        timeouts: s.client_timeouts,
        peak_waiting: s.peak_waiting,
        peak_queued: s.peak_queued,
        per_priority,
        critical_default: 100.0 * (s.successes[0] + s.successes[1]) as f64
            / (s.arrivals[0] + s.arrivals[1]).max(1) as f64,
        reasons: std::mem::take(&mut s.reasons),
    }
}

/// The open-loop arrivals for `load` x C and `seed` over `span` (model
/// time): (offset from the start, dilated, and class). `run` offers them
/// and the bounds are computed from them, so both see the same requests.
fn schedule(load: f64, seed: u64, span: Duration) -> Vec<(Duration, usize)> {
    let rate = K as f64 / S.as_secs_f64() * load; // per model second
    let mut rng = StdRng::seed_from_u64(seed);
    let end = dilate(span);
    let mut next = Duration::ZERO;
    let mut out = Vec::new();
    loop {
        let u: f64 = rng.random::<f64>().max(1e-12);
        next += dilate(Duration::from_secs_f64(-u.ln() / rate));
        if next >= end {
            return out;
        }
        let pick: f64 = rng.random();
        let mut class = MIX.len() - 1;
        let mut acc = 0.0;
        for (i, (_, share, _)) in MIX.iter().enumerate() {
            acc += share;
            if pick < acc {
                class = i;
                break;
            }
        }
        out.push((next, class));
    }
}

/// [`schedule`] in model seconds.
fn arrivals(load: f64, seed: u64, span: Duration) -> Vec<(f64, usize)> {
    schedule(load, seed, span)
        .into_iter()
        .map(|(at, class)| (at.as_secs_f64() / f64::from(DILATION), class))
        .collect()
}

/// The most requests of `classes` any admission policy can serve from these
/// arrivals with every one waiting at most `wait` (model seconds) on K
/// workers of service time S: FIFO, each admitted iff a worker frees within
/// its wait. With equal service times and equal allowed waits this greedy
/// schedule is optimal (an exchange argument: serving an earlier arrival
/// in place of a later one never ends a worker's busy time later; checked
/// against exhaustive search on small instances).
/// Requests of other classes are left out, which only frees workers, so it
/// bounds those classes' successes in the mixed stream too.
fn best_within(arrivals: &[(f64, usize)], classes: &[usize], wait: f64) -> u64 {
    let s = S.as_secs_f64();
    let mut free = [0.0f64; K];
    let mut served = 0;
    for &(at, _) in arrivals.iter().filter(|a| classes.contains(&a.1)) {
        let (i, &earliest) = free
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .expect("K > 0");
        let start = at.max(earliest);
        if start - at <= wait + 1e-9 {
            free[i] = start + s;
            served += 1;
        }
    }
    served
}

/// Strict priority order, for comparison (not a bound): a free worker
/// always takes the highest priority waiting (FIFO within a priority), and a
/// request leaves after waiting `wait`. Successes per class.
fn strict_priority(arrivals: &[(f64, usize)], wait: f64) -> [u64; 3] {
    let s = S.as_secs_f64();
    let mut free = [0.0f64; K];
    let mut lanes: [std::collections::VecDeque<f64>; 3] = Default::default();
    let mut served = [0u64; 3];
    let mut next = arrivals.iter().peekable();
    loop {
        let (w, &tf) = free
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .expect("K > 0");
        let queued = lanes.iter().any(|l| !l.is_empty());
        match next.peek() {
            // A worker frees before the next arrival: it takes the best
            // waiter still within its wait.
            Some(&&(at, _)) if queued && tf <= at => {}
            None if queued => {}
            Some(&&(at, class)) => {
                next.next();
                if !queued && tf <= at {
                    free[w] = at + s;
                    served[class] += 1;
                } else {
                    lanes[class].push_back(at);
                }
                continue;
            }
            None => return served,
        }
        for l in &mut lanes {
            while l.front().is_some_and(|&a| tf - a > wait + 1e-9) {
                l.pop_front();
            }
        }
        if let Some(class) = (0..3).find(|&c| !lanes[c].is_empty()) {
            lanes[class].pop_front();
            free[w] = tf + s;
            served[class] += 1;
        } else {
            // Everyone waiting left: the worker idles until the next arrival.
            free[w] = next.peek().map_or(f64::MAX, |a| a.0.max(tf));
        }
    }
}

/// Upper bounds for the goals, from the same arrivals: p99 of successes at
/// most 25 ms lets at most 1% of successes wait more than 15 ms, so a class
/// can succeed at most `best_within(15 ms)` plus 1% of all successes (so
/// at most `best_within` over all classes / 0.99). Beside them, what strict
/// priority order with a 15 ms wait reaches.
fn bounds(load: f64, seed: u64, span: Duration) -> String {
    let a = arrivals(load, seed, span);
    let wait = 0.015;
    let all = best_within(&a, &[0, 1, 2], wait);
    let cap = (K as f64 / S.as_secs_f64() * span.as_secs_f64()) as u64;
    // At most 1% of n successes wait longer, and n <= all + n / 100.
    let slack = all.div_ceil(99);
    let count = |cs: &[usize]| a.iter().filter(|x| cs.contains(&x.1)).count() as f64;
    let pct = |n: u64, d: f64| 100.0 * n as f64 / d;
    let crit = best_within(&a, &[0], wait);
    let high = best_within(&a, &[0, 1], wait);
    let strict = strict_priority(&a, wait);
    // Strict order with every sheddable request refused: what ordering by
    // priority alone caps critical + default at, whatever is shed.
    let high_only: Vec<(f64, usize)> = a.iter().copied().filter(|x| x.1 < 2).collect();
    let strict_high = strict_priority(&high_only, wait);
    // A bound holds for every policy, strict priority order included.
    assert!(
        strict.iter().sum::<u64>() <= all && strict[0] <= crit && strict[0] + strict[1] <= high
    );
    if load == 1.0 {
        // The 1x goal allows a p99 of 50 ms: waits up to 40 ms.
        let w40 = best_within(&a, &[0, 1, 2], 0.040);
        let s40 = strict_priority(&a, 0.040);
        return format!(
            "bound 1x (any policy, every wait <= 15ms | <= 40ms): goodput {:.1}% | {:.1}%; strict priority with 15ms | 40ms waits: goodput {:.1}% | {:.1}%",
            pct(all, cap as f64),
            pct(w40, cap as f64),
            pct(strict.iter().sum(), cap as f64),
            pct(s40.iter().sum(), cap as f64),
        );
    }
    format!(
        "bound {load}x (any policy, every wait <= 15ms | +1% of successes waiting longer): goodput {:.1}% | {:.1}%, critical {:.1}% | {:.1}%, critical+default {:.1}% | {:.1}%; strict priority with 15ms waits: goodput {:.1}%, critical {:.1}%, default {:.1}%, sheddable {:.1}%; the same refusing every sheddable request: critical+default {:.1}%",
        pct(all, cap as f64),
        pct(all + slack, cap as f64),
        pct(crit, count(&[0])),
        pct(crit + slack, count(&[0])).min(100.0),
        pct(high, count(&[0, 1])),
        pct(high + slack, count(&[0, 1])).min(100.0),
        pct(strict.iter().sum(), cap as f64),
        pct(strict[0], count(&[0])),
        pct(strict[1], count(&[1])),
        pct(strict[2], count(&[2])),
        pct(strict_high[0] + strict_high[1], count(&[0, 1])),
    )
}

/// A finite number as JSON (`null` for NaN, e.g. a p99 with no successes).
fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

/// The bounds of [`bounds`] as numbers, in percent: (every wait <= 15 ms,
/// with 1% of successes waiting longer).
struct Bound {
    goodput: (f64, f64),
    critical: (f64, f64),
    critical_default: (f64, f64),
    /// What strict priority order with 15 ms waits reaches for critical +
    /// default (an online policy, for comparison; not a bound).
    strict_critical_default: f64,
}

impl Bound {
    fn new(load: f64, seed: u64, span: Duration) -> Self {
        let a = arrivals(load, seed, span);
        let wait = 0.015;
        let all = best_within(&a, &[0, 1, 2], wait);
        let cap = K as f64 / S.as_secs_f64() * span.as_secs_f64();
        let slack = all.div_ceil(99);
        let count = |cs: &[usize]| a.iter().filter(|x| cs.contains(&x.1)).count() as f64;
        let pct = |n: u64, d: f64| 100.0 * n as f64 / d;
        let share = |n: u64, d: f64| pct(n, d).min(100.0);
        let crit = best_within(&a, &[0], wait);
        let high = best_within(&a, &[0, 1], wait);
        let strict = strict_priority(&a, wait);
        Bound {
            strict_critical_default: pct(strict[0] + strict[1], count(&[0, 1])),
            goodput: (pct(all, cap), pct(all + slack, cap)),
            critical: (share(crit, count(&[0])), share(crit + slack, count(&[0]))),
            critical_default: (
                share(high, count(&[0, 1])),
                share(high + slack, count(&[0, 1])),
            ),
        }
    }
}

/// A model-time setting of ours, overridable with `--set NAME=MS`.
fn knob(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .filter(|w| w[0] == "--set")
        .filter_map(|w| w[1].strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .next_back()
        .unwrap_or(default)
}

/// Ours, tuned for this service as a user would: the goal "p99 of
/// successes at most 25 ms with a 10 ms service time" is a 15 ms queueing
/// budget, so both the normal wait and the CoDel target are 15 ms (the
/// defaults, 1 s and 5 ms, suit services of unknown speed; a 5 ms target is
/// half a service time here and turns away work the service could do in
/// time). FIFO under a standing queue too: the client deadline (200 ms) is
/// far beyond the 15 ms budget, so no waiter is stale, and oldest first
/// (earliest deadline first) loses the fewest requests to queue timeouts.
/// The `ours(5ms,LIFO)` row keeps the default CoDel target and adaptive LIFO
/// (with the same 15 ms wait).
///
/// A yield margin of 3 (`--set yield=0` turns it off): at 2x, critical and
/// default together fill the service, and strict priority order times out
/// defaults that a FIFO order would serve while critical requests could
/// have waited (strict order caps critical + default below the bound even
/// with every sheddable request dropped: see the `strict priority` figures
/// after the table). With the margin, an older default goes first while
/// every critical waiter keeps three expected hand-offs of slack and no
/// critical request ran out of queue time recently; at 5x critical requests
/// time out often enough that the queue stays in strict order. Margins of 2
/// to 4 were tried on seeds 42 and 1-5: 2 costs critical requests at 2x,
/// 4 gives back part of the gain on seed 42. Reserving headroom for higher
/// priorities (sheddable requests start only while a slot stays free) was
/// tried too: it lifts critical + default by at most 0.5 point at 2x
/// (strict order caps it), at the cost of 6 points of sheddable success at
/// 1x.
fn ours_config() -> BoundedQueueConfig {
    ours_config_with_yield(knob("yield", 3) as f64)
}

/// [`ours_config`] with another yield margin (`0.0`: strict priority
/// order, the `ours(no yield)` row).
fn ours_config_with_yield(margin: f64) -> BoundedQueueConfig {
    let ms = |name, default| dilate(Duration::from_millis(knob(name, default)));
    BoundedQueueConfig::builder()
        .name("overload")
        .concurrency(K)
        .capacity(knob("capacity", 50) as usize)
        .max_wait(ms("max_wait", 15))
        .codel_target(ms("target", 15))
        .codel_interval(ms("interval", 100))
        .lifo(knob("lifo", 0) != 0)
        .yield_margin(margin)
        .retry_after(Duration::from_secs(1))
        .build()
        .expect("valid")
}

/// The queue as a user who sets only the concurrency gets it: every other
/// setting its `DEFAULT_*`, the times dilated like the model's.
///
/// To try other values from the command line (model milliseconds):
/// `--set d.max_wait=MS --set d.target=MS --set d.interval=MS --set d.lifo=0|1
/// --set d.capacity=N --set d.tst=TENTHS --set d.yield=M`.
fn defaults_config() -> BoundedQueueConfig {
    let d = BoundedQueueConfig::default();
    let ms = |name, default: Duration| {
        dilate(Duration::from_millis(knob(
            name,
            default.as_millis() as u64,
        )))
    };
    BoundedQueueConfig::builder()
        .name("overload-defaults")
        .concurrency(K)
        .capacity(knob("d.capacity", d.capacity() as u64) as usize)
        .max_wait(ms("d.max_wait", d.max_wait()))
        .codel_target(ms("d.target", BoundedQueueConfig::DEFAULT_CODEL_TARGET))
        .codel_interval(ms("d.interval", d.codel_interval()))
        .lifo(knob("d.lifo", u64::from(d.lifo())) != 0)
        .target_service_times(
            knob(
                "d.tst",
                (d.target_service_times().unwrap_or(0.0) * 10.0).round() as u64,
            ) as f64
                / 10.0,
        )
        .yield_margin(knob("d.yield", d.yield_margin().unwrap_or(0.0) as u64) as f64)
        .retry_after(dilate(d.retry_after()))
        .build()
        .expect("valid")
}

async fn scenario(name: &str, load: f64, seed: u64, span: Duration, client: Client) -> Row {
    let stats = Arc::new(Mutex::new(Stats::default()));
    let svc = inner(stats.clone());
    match name {
        "defaults" => {
            let svc = ServiceBuilder::new()
                .layer(queue_layer(defaults_config()))
                .service(svc);
            run(svc, stats, load, seed, span, client).await
        }
        "ours" => {
            let svc = ServiceBuilder::new()
                .layer(queue_layer(ours_config()))
                .service(svc);
            run(svc, stats, load, seed, span, client).await
        }
        "ours(no yield)" => {
            let svc = ServiceBuilder::new()
                .layer(queue_layer(ours_config_with_yield(0.0)))
                .service(svc);
            run(svc, stats, load, seed, span, client).await
        }
        "ours(5ms,LIFO)" => {
            let config = BoundedQueueConfig::builder()
                .name("overload-default-codel")
                .concurrency(K)
                .capacity(50)
                .max_wait(dilate(Duration::from_millis(15)))
                .codel_target(dilate(BoundedQueueConfig::DEFAULT_CODEL_TARGET))
                .codel_interval(dilate(BoundedQueueConfig::DEFAULT_CODEL_INTERVAL))
                .lifo(true)
                .retry_after(Duration::from_secs(1))
                .build()
                .expect("valid");
            let svc = ServiceBuilder::new()
                .layer(queue_layer(config))
                .service(svc);
            run(svc, stats, load, seed, span, client).await
        }
        "ConcurrencyLimit" => {
            let svc = ServiceBuilder::new().concurrency_limit(K).service(svc);
            run(svc, stats, load, seed, span, client).await
        }
        "Buffer(100)+CL" => {
            let svc = ServiceBuilder::new()
                .buffer(100)
                .concurrency_limit(K)
                .service(svc);
            run(svc, stats, load, seed, span, client).await
        }
        "LoadShed+CL" => {
            let svc = ServiceBuilder::new()
                .load_shed()
                .concurrency_limit(K)
                .service(svc);
            run(svc, stats, load, seed, span, client).await
        }
        "LoadShed+Buffer(100)+CL" => {
            let svc = ServiceBuilder::new()
                .load_shed()
                .buffer(100)
                .concurrency_limit(K)
                .service(svc);
            run(svc, stats, load, seed, span, client).await
        }
        "Bulkhead(50ms)" => {
            let svc = ServiceBuilder::new()
                .layer(
                    tower_resilience::bulkhead::BulkheadLayer::builder()
                        .max_concurrent_calls(K)
                        .max_wait_duration(dilate(Duration::from_millis(50)))
                        .build()
                        .expect("valid"),
                )
                .service(svc);
            run(svc, stats, load, seed, span, client).await
        }
        other => unreachable!("unknown configuration {other}"),
    }
}

/// The offered loads, x capacity.
const LOADS: [f64; 7] = [0.7, 0.8, 0.9, 1.0, 1.2, 2.0, 5.0];
/// The seeds every goal is checked on (the first gives the main table).
const SEEDS: [u64; 6] = [42, 1, 2, 3, 4, 5];
/// The configurations run on every seed and in both client behaviours
/// (the others only on the main seed, clients dropping at the deadline).
const EVERY_SEED: [&str; 5] = [
    "defaults",
    "ours",
    "ConcurrencyLimit",
    "LoadShed+Buffer(100)+CL",
    "Bulkhead(50ms)",
];

/// The issue's goals for one row: `None` when met, else what missed.
fn missed(r: &Row, load: f64, capacity: usize) -> Option<String> {
    let mut m = Vec::new();
    if load < 1.0 && r.served < 99.9 {
        m.push(format!("served {:.2}% of offered < 99.9%", r.served));
    }
    if load == 1.0 {
        if r.goodput < 98.5 {
            m.push(format!("goodput {:.1}% < 98.5%", r.goodput));
        }
        if r.p99.is_nan() || r.p99 > 50.0 {
            m.push(format!("p99 {:.1}ms > 50ms", r.p99));
        }
    }
    if load > 1.0 && r.goodput < 99.0 {
        m.push(format!("goodput {:.1}% < 99%", r.goodput));
    }
    if load >= 2.0 {
        if r.p99.is_nan() || r.p99 > 25.0 {
            m.push(format!("p99 {:.1}ms > 25ms", r.p99));
        }
        let goal = if load >= 5.0 { 95.0 } else { 99.0 };
        if r.per_priority[0] < goal {
            m.push(format!("critical {:.1}% < {goal}%", r.per_priority[0]));
        }
        if r.peak_queued > capacity as u64 {
            m.push(format!("peak queued {} > {capacity}", r.peak_queued));
        }
    }
    (!m.is_empty()).then(|| m.join(", "))
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

fn main() {
    let configs = [
        "defaults",
        "ours",
        "ours(no yield)",
        "ours(5ms,LIFO)",
        "ConcurrencyLimit",
        "Buffer(100)+CL",
        "LoadShed+CL",
        "LoadShed+Buffer(100)+CL",
        "Bulkhead(50ms)",
    ];
    // The first argument that is neither an option nor a `--set` value.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let only: Option<String> = args
        .iter()
        .enumerate()
        .find(|(i, a)| !a.starts_with('-') && (*i == 0 || args[i - 1] != "--set"))
        .map(|(_, a)| a.clone());
    let verbose = std::env::args().any(|a| a == "--reasons");
    // `--set seed=N` runs one seed; by default every seed of SEEDS.
    let seeds: Vec<u64> = match knob("seed", 0) {
        0 => SEEDS.to_vec(),
        s => vec![s],
    };
    let main_seed = seeds[0];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "overload: K={K} x S={}ms (C={} req/s), Poisson arrivals for {}s, deadline {}ms, mix 20% critical / 30% default / 50% sheddable, seeds {seeds:?} (table: seed {main_seed}, clients dropping at the deadline), time dilated x{DILATION}",
        S.as_millis(),
        K as f64 / S.as_secs_f64(),
        RUN.as_secs(),
        CLIENT_DEADLINE.as_millis()
    );
    let _ = writeln!(
        out,
        "{:<24} {:>4} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>6} {:>7} {:>7} {:>7}",
        "config",
        "load",
        "goodput%",
        "p50ms",
        "p99ms",
        "q-p99ms",
        "rej-p50",
        "rej-p99",
        "rejects",
        "timeouts",
        "peakW",
        "crit%",
        "dflt%",
        "shed%"
    );
    let c = ours_config();
    let _ = writeln!(
        out,
        "ours: max_wait {}ms, CoDel target {}ms, {}, yield margin {} (older defaults go ahead of critical waiters that can spare the slot; --set yield=0 for strict priority order)",
        model_ms(c.max_wait()),
        c.codel_target().map_or(f64::NAN, model_ms),
        if c.lifo() { "adaptive LIFO" } else { "FIFO" },
        c.yield_margin().unwrap_or(0.0),
    );
    let d = defaults_config();
    let _ = writeln!(
        out,
        "defaults: concurrency {K}, everything else BoundedQueueConfig's DEFAULT_* (capacity {}, max_wait {}ms, CoDel target {}ms, interval {}ms, {}, yield margin {})",
        d.capacity(),
        model_ms(d.max_wait()),
        d.codel_target().map_or(f64::NAN, model_ms),
        model_ms(d.codel_interval()),
        if d.lifo() { "adaptive LIFO" } else { "FIFO" },
        d.yield_margin().unwrap_or(0.0),
    );
    print!("{out}");
    // Goals missed, per configuration checked against them.
    let mut misses: Vec<String> = Vec::new();
    let mut checked = 0usize;
    for name in configs {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let every = EVERY_SEED.contains(&name);
        for &seed in &seeds {
            if seed != main_seed && !every {
                continue;
            }
            for client in Client::BOTH {
                if client == Client::Waits && !every {
                    continue;
                }
                for load in LOADS {
                    let r = paused_runtime().block_on(scenario(name, load, seed, RUN, client));
                    if seed == main_seed && client == Client::Drops {
                        println!(
                            "{:<24} {:>3}x {:>8.1} {:>7.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>7} {:>8} {:>6} {:>7.1} {:>7.1} {:>7.1}",
                            name,
                            load,
                            r.goodput,
                            r.p50,
                            r.p99,
                            r.queue_p99,
                            r.reject_p50,
                            r.reject_p99,
                            r.rejections,
                            r.timeouts,
                            r.peak_waiting,
                            r.per_priority[0],
                            r.per_priority[1],
                            r.per_priority[2],
                        );
                        if verbose {
                            for ((class, why), n) in &r.reasons {
                                println!("    {:<10} {why}: {n}", MIX[*class].2);
                            }
                        }
                    }
                    if name == "defaults" {
                        checked += 1;
                        if let Some(m) = missed(&r, load, d.capacity()) {
                            misses.push(format!(
                                "defaults {load}x seed {seed} client {}: {m}",
                                client.as_str()
                            ));
                        }
                    }
                    // The row, machine-readable, for the report binary.
                    println!(
                        "OVERLOAD_ROW {{\"config\":\"{name}\",\"seed\":{seed},\"client\":\"{}\",\"load\":{load},\"goodput\":{},\"served\":{},\"p50\":{},\"p99\":{},\"critical\":{},\"default\":{},\"sheddable\":{},\"critical_default\":{},\"peak_waiting\":{},\"peak_queued\":{}}}",
                        client.as_str(),
                        json_num(r.goodput),
                        json_num(r.served),
                        json_num(r.p50),
                        json_num(r.p99),
                        json_num(r.per_priority[0]),
                        json_num(r.per_priority[1]),
                        json_num(r.per_priority[2]),
                        json_num(r.critical_default),
                        r.peak_waiting,
                        r.peak_queued,
                    );
                }
            }
        }
    }
    if checked > 0 {
        println!(
            "defaults against the goals: {} of {checked} runs miss ({} seeds x 2 client behaviours x {} loads)",
            misses.len(),
            seeds.len(),
            LOADS.len()
        );
        for m in &misses {
            println!("  missed: {m}");
        }
    }
    // What any admission policy could reach on the same arrivals.
    for &seed in &seeds {
        for load in LOADS {
            if seed == main_seed {
                println!("{}", bounds(load, seed, RUN));
            }
            let b = Bound::new(load, seed, RUN);
            println!(
                "OVERLOAD_BOUND {{\"seed\":{seed},\"load\":{load},\"goodput\":{},\"goodput_slack\":{},\"critical\":{},\"critical_slack\":{},\"critical_default\":{},\"critical_default_slack\":{},\"strict_critical_default\":{}}}",
                json_num(b.goodput.0),
                json_num(b.goodput.1),
                json_num(b.critical.0),
                json_num(b.critical.1),
                json_num(b.critical_default.0),
                json_num(b.critical_default.1),
                json_num(b.strict_critical_default),
            );
        }
    }
    // Memory over a long run: what waits (and so what the queue holds) stays
    // bounded by the capacity however long the overload lasts.
    if only
        .as_deref()
        .is_none_or(|o| "ours".contains(o) || "defaults".contains(o))
    {
        let long = Duration::from_secs(knob("long", 120));
        for (name, capacity) in [
            ("ours", ours_config().capacity()),
            ("defaults", d.capacity()),
        ] {
            let r = paused_runtime().block_on(scenario(name, 5.0, 7, long, Client::Drops));
            println!(
                "{name} at 5x for {}s: goodput {:.1}%, p99 {:.1}ms, peak waiting {} (capacity {capacity})",
                long.as_secs(),
                r.goodput,
                r.p99,
                r.peak_waiting,
            );
        }
    }
}
