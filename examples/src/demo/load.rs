//! The demo's load generator: open-loop Poisson arrivals with mixed
//! priorities, and the record of every answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::BodyExt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use resilience_core::{Deadline, Priority};
use resilience_correlation::RequestContext;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::{Body, HttpClient};

/// The front services the generator sends to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Front {
    /// `GET /profile/{user}`.
    Profile,
    /// `POST /order/cd?country=DE`.
    Shop,
    /// `POST /events` (5% critical, 30% sheddable-plus, 65% sheddable) and
    /// `GET /search` (critical).
    Ingest,
    /// `POST /bulk`: a bulk flood, all sheddable.
    IngestBulk,
}

/// The three priority classes of the demo's traffic, by their wire names.
pub const CLASSES: [Priority; 3] = [
    Priority::Critical,
    Priority::SheddablePlus,
    Priority::Sheddable,
];

/// Why a request did not succeed, as its caller saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No answer within the caller's deadline, or `504`.
    Timeout,
    /// A circuit breaker was open (`503` saying so).
    BreakerOpen,
    /// A client-side throttle refused it.
    Throttled,
    /// A bounded queue was full (`429`/`503`).
    QueueFull,
    /// A bounded queue would have kept it waiting longer than its wait
    /// budget (`429`/`503`, "queue time exceeded").
    QueueTime,
    /// Shed for a higher priority (`429`/`503`).
    Shed,
    /// It would have missed its deadline in a queue.
    Deadline,
    /// A rate limit refused it.
    RateLimited,
    /// No healthy instance to send it to.
    NoEndpoint,
    /// Any other failure (5xx, transport).
    Error,
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A full answer.
    Ok,
    /// An answer with a fallback part (`x-degraded`): still served.
    Degraded,
    /// Not served.
    Rejected(Reason),
}

/// One answered (or failed) request.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Record {
    /// When it was sent, in ms since the run started.
    pub at_ms: u64,
    /// Where it went.
    pub front: Front,
    /// Its priority.
    #[serde(serialize_with = "priority_name")]
    pub priority: Priority,
    /// What became of it.
    pub outcome: Outcome,
    /// How long the answer took, in ms.
    pub latency_ms: f64,
    /// For a refusal (`429`/`503`): whether it carried `Retry-After`.
    pub retry_after: bool,
    /// The status, `0` when no answer came.
    pub status: u16,
}

/// Every record of a run, shared by the generator's tasks.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<RecorderInner>,
}

#[derive(Debug)]
struct RecorderInner {
    started: Instant,
    records: Mutex<Vec<Record>>,
    sent: AtomicU64,
    in_flight: AtomicU64,
}

/// Arrival rates (per second) of each front service and its priority mix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Profile pages per second.
    pub profile: f64,
    /// Shop orders per second.
    pub shop: f64,
    /// Ingest events per second (mixed priorities).
    pub ingest: f64,
    /// Ingest searches per second (critical).
    pub search: f64,
    /// Ingest bulk batches per second (sheddable).
    pub bulk: f64,
}

/// A running generator; [`Load::set_rates`] changes its rates at once.
#[derive(Debug)]
pub struct Load {
    rates: Arc<Mutex<Rates>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Where the front services are.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The profile's base URL.
    pub profile: String,
    /// The shop's base URL.
    pub shop: String,
    /// Ingest's base URL.
    pub ingest: String,
}

// === impl Recorder ===

impl Recorder {
    /// An empty record; times count from now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(RecorderInner {
                started: Instant::now(),
                records: Mutex::new(Vec::new()),
                sent: AtomicU64::new(0),
                in_flight: AtomicU64::new(0),
            }),
        }
    }

    /// When the run started.
    pub fn started(&self) -> Instant {
        self.inner.started
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.inner.sent.load(Ordering::Relaxed)
    }

    /// Requests sent and not answered yet.
    pub fn in_flight(&self) -> u64 {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// A copy of every record so far.
    pub fn records(&self) -> Vec<Record> {
        self.lock().clone()
    }

    /// Records sent at or after `from_ms`, and how many of those succeeded.
    pub fn counts_since(&self, from_ms: u64) -> (u64, u64) {
        let records = self.lock();
        let mut total = 0;
        let mut ok = 0;
        for r in records.iter().rev() {
            if r.at_ms < from_ms {
                break;
            }
            total += 1;
            if !matches!(r.outcome, Outcome::Rejected(_)) {
                ok += 1;
            }
        }
        (total, ok)
    }

    fn push(&self, record: Record) {
        // Records arrive in completion order; keep them sorted by send time
        // for the readers (an insertion near the end: answers come back
        // within a second).
        let mut records = self.lock();
        let at = records
            .iter()
            .rposition(|r| r.at_ms <= record.at_ms)
            .map_or(0, |i| i + 1);
        records.insert(at, record);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.inner
            .records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Rates ===

impl Rates {
    /// No traffic.
    pub const ZERO: Rates = Rates {
        profile: 0.0,
        shop: 0.0,
        ingest: 0.0,
        search: 0.0,
        bulk: 0.0,
    };

    fn of(&self, front: Front) -> f64 {
        match front {
            Front::Profile => self.profile,
            Front::Shop => self.shop,
            Front::Ingest => self.ingest + self.search,
            Front::IngestBulk => self.bulk,
        }
    }
}

// === impl Load ===

impl Load {
    /// Starts sending to `targets` at `rates` through `client` (the demo's
    /// client stack: context propagation over a timeout), each request in
    /// its own task with a fresh correlation id, its priority and a
    /// `deadline`; answers go to `recorder`. Arrivals are Poisson (seeded
    /// with `seed`): open loop, whatever the answers.
    pub fn start(
        client: HttpClient,
        targets: Targets,
        rates: Rates,
        deadline: Duration,
        recorder: Recorder,
        seed: u64,
    ) -> Self {
        let rates = Arc::new(Mutex::new(rates));
        let fronts = [
            Front::Profile,
            Front::Shop,
            Front::Ingest,
            Front::IngestBulk,
        ];
        let tasks = fronts
            .into_iter()
            .enumerate()
            .map(|(i, front)| {
                let source = Source {
                    front,
                    client: client.clone(),
                    targets: targets.clone(),
                    rates: rates.clone(),
                    deadline,
                    recorder: recorder.clone(),
                    rng: SmallRng::seed_from_u64(seed.wrapping_add(i as u64)),
                };
                tokio::spawn(source.run())
            })
            .collect();
        Self { rates, tasks }
    }

    /// Switches to `rates` from the next arrival on.
    pub fn set_rates(&self, rates: Rates) {
        *self.rates.lock().unwrap_or_else(PoisonError::into_inner) = rates;
    }

    /// The rates now.
    pub fn rates(&self) -> Rates {
        *self.rates.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops sending (requests already sent still complete).
    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Source {
    front: Front,
    client: HttpClient,
    targets: Targets,
    rates: Arc<Mutex<Rates>>,
    deadline: Duration,
    recorder: Recorder,
    rng: SmallRng,
}

impl Source {
    async fn run(mut self) {
        let mut next = Instant::now();
        let mut n: u64 = 0;
        loop {
            let rates = *self.rates.lock().unwrap_or_else(PoisonError::into_inner);
            let rate = rates.of(self.front);
            if rate <= 0.0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                next = Instant::now();
                continue;
            }
            // Exponential gaps: a Poisson process at `rate`.
            let u: f64 = self.rng.random_range(f64::MIN_POSITIVE..1.0);
            next += Duration::from_secs_f64(-u.ln() / rate);
            tokio::time::sleep_until(next).await;
            n += 1;
            let (req, priority) = self.request(&rates, n);
            let send = Send {
                client: self.client.clone(),
                recorder: self.recorder.clone(),
                front: self.front,
                priority,
                deadline: self.deadline,
            };
            tokio::spawn(send.run(req));
        }
    }

    /// The next request and its priority.
    fn request(&mut self, rates: &Rates, n: u64) -> (http::request::Builder, Priority) {
        let draw: f64 = self.rng.random();
        match self.front {
            Front::Profile => {
                let priority = mix(draw, [0.3, 0.4]);
                let user = ["alice", "bob", "carol", "dave"][(n % 4) as usize];
                let uri = format!("{}/profile/{user}", self.targets.profile);
                (http::Request::get(uri), priority)
            }
            Front::Shop => {
                let priority = mix(draw, [0.3, 0.4]);
                let uri = format!("{}/order/cd?country=DE", self.targets.shop);
                (http::Request::post(uri), priority)
            }
            Front::Ingest => {
                let searches = rates.search / (rates.search + rates.ingest).max(f64::MIN_POSITIVE);
                if self.rng.random::<f64>() < searches {
                    let uri = format!("{}/search?q=temp", self.targets.ingest);
                    (http::Request::get(uri), Priority::Critical)
                } else {
                    // Critical events (alarms) are a small share: 5%, an
                    // eighth of the index capacity in the overload phase
                    // (see `DemoSettings::ingest`).
                    let priority = mix(draw, [0.05, 0.3]);
                    let uri = format!("{}/events", self.targets.ingest);
                    (http::Request::post(uri), priority)
                }
            }
            Front::IngestBulk => {
                let uri = format!("{}/bulk", self.targets.ingest);
                (http::Request::post(uri), Priority::Sheddable)
            }
        }
    }
}

fn priority_name<S: serde::Serializer>(p: &Priority, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_str())
}

/// `critical` with probability `shares[0]`, `sheddable-plus` with
/// `shares[1]`, else `sheddable`.
fn mix(draw: f64, shares: [f64; 2]) -> Priority {
    if draw < shares[0] {
        Priority::Critical
    } else if draw < shares[0] + shares[1] {
        Priority::SheddablePlus
    } else {
        Priority::Sheddable
    }
}

struct Send {
    client: HttpClient,
    recorder: Recorder,
    front: Front,
    priority: Priority,
    deadline: Duration,
}

impl Send {
    async fn run(self, req: http::request::Builder) {
        let inner = &self.recorder.inner;
        inner.sent.fetch_add(1, Ordering::Relaxed);
        inner.in_flight.fetch_add(1, Ordering::Relaxed);
        let at_ms = self.recorder.now_ms();
        let started = Instant::now();
        let body = match self.front {
            Front::Ingest | Front::IngestBulk => {
                Body::from(format!("device-{} temp=21.5\n", at_ms % 97))
            }
            _ => Body::default(),
        };
        let ctx = RequestContext::new_root()
            .with_priority(self.priority)
            .with_deadline(Some(Deadline::after(self.deadline)));
        let (status, retry_after, degraded, text) = match req.extension(ctx).body(body) {
            Ok(req) => match self.client.clone().oneshot(req).await {
                Ok(rsp) => {
                    let status = rsp.status().as_u16();
                    let retry_after = rsp.headers().contains_key(http::header::RETRY_AFTER);
                    let degraded = rsp
                        .headers()
                        .get("x-degraded")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let text = match tokio::time::timeout(self.deadline, rsp.into_body().collect())
                        .await
                    {
                        Ok(Ok(body)) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                        _ => String::new(),
                    };
                    (status, retry_after, degraded, text)
                }
                Err(_) => (0, false, None, String::new()),
            },
            Err(_) => (0, false, None, String::new()),
        };
        let outcome = classify(status, degraded.as_deref(), &text);
        self.recorder.push(Record {
            at_ms,
            front: self.front,
            priority: self.priority,
            outcome,
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            retry_after,
            status,
        });
        inner.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What an answer means to its caller: the status, the `x-degraded` header
/// the front services set, and the refusal's text.
pub fn classify(status: u16, degraded: Option<&str>, text: &str) -> Outcome {
    match status {
        200..=299 if degraded.is_some() => Outcome::Degraded,
        200..=299 => Outcome::Ok,
        0 | 408 | 504 => Outcome::Rejected(Reason::Timeout),
        429 | 503 => {
            let why = degraded.unwrap_or(text).to_ascii_lowercase();
            let reason = if why.contains("circuit") || why.contains("breaker") {
                Reason::BreakerOpen
            } else if why.contains("no healthy") || why.contains("no endpoint") {
                Reason::NoEndpoint
            } else if why.contains("throttl") {
                Reason::Throttled
            } else if why.contains("shed") || why.contains("priority") {
                Reason::Shed
            } else if why.contains("deadline") {
                Reason::Deadline
            } else if why.contains("rate") {
                Reason::RateLimited
            } else if why.contains("timeout") {
                Reason::Timeout
            } else if why.contains("queue time") {
                Reason::QueueTime
            } else if why.contains("full") || why.contains("queue") || why.contains("overload") {
                Reason::QueueFull
            } else {
                Reason::Error
            };
            Outcome::Rejected(reason)
        }
        _ => Outcome::Rejected(Reason::Error),
    }
}

// === impl Reason ===

impl Reason {
    /// Every reason, in table order.
    pub const ALL: [Reason; 10] = [
        Reason::Timeout,
        Reason::BreakerOpen,
        Reason::Throttled,
        Reason::QueueFull,
        Reason::QueueTime,
        Reason::Shed,
        Reason::Deadline,
        Reason::RateLimited,
        Reason::NoEndpoint,
        Reason::Error,
    ];

    /// A short label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::BreakerOpen => "breaker open",
            Reason::Throttled => "throttled",
            Reason::QueueFull => "queue full",
            Reason::QueueTime => "queue time",
            Reason::Shed => "shed",
            Reason::Deadline => "deadline",
            Reason::RateLimited => "rate limited",
            Reason::NoEndpoint => "no endpoint",
            Reason::Error => "error",
        }
    }
}
