//! The soak run: the full server and client stacks over loopback for
//! minutes, at five times the fleet's capacity, with an instance dying and
//! coming back, checking that nothing grows.
//!
//! A benchmark says how fast a layer is; it runs for seconds and cannot see
//! a leak. The soak runs the layers the way a service runs them, for long
//! enough that a leak of one task, one socket or a few bytes per request
//! shows, and fails if it does.
//!
//! # What runs
//!
//! Three instances of one service, each on its own loopback port, behind
//! the standard server stack (outermost first):
//!
//! ```text
//! CorrelationLayer        id, priority and deadline (x-deadline-ms) in
//!  └ HandleErrorLayer     refusals to 429 + Retry-After, timeouts to 408
//!     └ TimeoutLayer      deadline-aware: the request's deadline, at most 1 s
//!        └ BoundedQueueLayer   `concurrency` in service, `queue_capacity` waiting,
//!           │                  priority shedding, no wait past `max_wait` or the deadline
//!           └ handler     `service_time` of work (a tokio sleep): the fleet serves
//!                         instances x concurrency / service_time requests a second
//! ```
//!
//! and one client calling them through the standard client stack over a
//! hyper-util client (one connection pool):
//!
//! ```text
//! PropagateContextLayer   id, priority and deadline out (x-priority, x-deadline-ms)
//!  └ TimeoutLayer         the request's deadline (deadline-aware)
//!     └ ThrottleLayer     adaptive (accept ratio, 429 counts as a refusal),
//!        │                sheddable levels throttled, critical never
//!        └ RoundRobin     the three instances, GET /health checks, passive ejection
//!           └ CircuitBreakerLayer   one per instance
//!              └ TimeoutLayer       per attempt (blames the instance, not the deadline)
//!                 └ hyper client
//! ```
//!
//! The load is open-loop: Poisson arrivals at [`SoakSettings::overload`]
//! (5) times the fleet's capacity, whatever the answers; each request in its
//! own task, with a priority drawn from the mix (`critical`,
//! `sheddable-plus`, `sheddable`: [`CLASSES`]) and a deadline drawn between
//! [`SoakSettings::deadline_min`] and [`SoakSettings::deadline_max`]. The
//! client gives up at the deadline: it drops the request's future, wherever
//! it is (throttle, balancer, on the wire, queued in the server), and so
//! exercises every layer's cancellation path.
//!
//! Every [`SoakSettings::death_every`], half way through the period, one
//! instance (each in turn) dies: it stops accepting connections and closes
//! the ones it has, dropping the requests in flight (see
//! [`KillableServer::kill`](crate::KillableServer::kill)). It comes back on
//! the same port [`SoakSettings::down_for`] later, with the same queue.
//!
//! # What is measured
//!
//! Every [`SoakSettings::sample_every`], a [`Sample`]: the process's
//! resident memory (`VmRSS` in `/proc/self/status`), its open file
//! descriptors (`/proc/self/fd`), the runtime's live tokio tasks, each
//! queue's depth and requests in service (their handles' snapshots), each
//! instance's state in the balancer, and the requests served, refused,
//! dropped at their deadline and failed in the interval, per priority.
//!
//! # The verdict
//!
//! Nothing may grow after the warm-up ([`SoakSettings::warmup`]). A machine
//! with two busy cores makes every figure noisy, so "grows" compares
//! windows, not samples: the early window is the first whole periods of
//! instance deaths after the warm-up, the late window the last as many
//! ([`Windows`]), so both hold the same deaths and revivals. A figure grows
//! when its late peak (maximum) is above the early peak, or its late floor
//! (minimum) above the early floor, by more than its [`Slack`] (a
//! relative part plus an absolute part, [`Metric::slack`]): a leak raises
//! the floor even when noise hides it in the peaks. Then the load stops,
//! and within [`DRAIN_WITHIN`] live tasks and file descriptors must come
//! back to within [`DRAIN_SLACK`] of what they were before it started
//! ([`Level`]), and every queue must be empty with nothing in service:
//! what the load created, it must release. And the fleet must serve
//! requests in every interval of the late window (a stack that wedged
//! would leak nothing and serve nothing).
//!
//! The memory figure is resident memory, which the allocator does not give
//! back at once: a leak of a few bytes per request shows over ten minutes
//! (hundreds of thousands of requests), not over the quick run's 30 s,
//! which is there to prove the run works and to catch leaks of tasks,
//! descriptors and queue slots, which the drain counts exactly.
//!
//! # Example
//!
//! The growth rule on its own:
//!
//! ```
//! use std::time::Duration;
//! use resilience_examples::soak::{Growth, Slack, Windows};
//!
//! let windows = Windows::of(Duration::from_secs(30), Duration::from_secs(10), Duration::from_secs(10)).unwrap();
//! let s = |n: u64| Duration::from_secs(n);
//! let flat = [(s(10), 100.0), (s(14), 130.0), (s(18), 110.0), (s(24), 125.0), (s(28), 105.0)];
//! let slack = Slack { abs: 16.0, rel: 0.25 };
//! assert!(!Growth::of(&flat, &windows, slack).unwrap().grows());
//!
//! let leaking = [(s(10), 100.0), (s(14), 110.0), (s(18), 120.0), (s(24), 180.0), (s(28), 190.0)];
//! assert!(Growth::of(&leaking, &windows, slack).unwrap().grows());
//! ```
//!
//! Run it: `cargo run -p resilience-examples --bin soak` (10 minutes), or
//! `-- --quick` (30 s: a death every 10 s, a sample every 2 s, 10 s of
//! warm-up; what CI runs).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use resilience_bounded_queue::{BoundedQueueConfig, BoundedQueueHandle, BoundedQueueLayer};
use resilience_circuit_breaker::throttle::{ThrottleConfig, ThrottleLayer};
use resilience_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use resilience_core::config::validate_positive_duration;
use resilience_core::error::find_in_chain;
use resilience_core::http::ErrorResponder;
use resilience_core::timeout::TimeoutConfig;
use resilience_core::{
    BoxError, ConfigError, Deadline, Elapsed, HttpOutcome, Rejected, TimeoutLayer,
};
use resilience_correlation::{CorrelationLayer, PropagateContextLayer, RequestContext};
use resilience_discovery::health::{HealthCheckConfig, HttpHealthCheck};
use resilience_discovery::{
    Endpoint, EndpointState, RoundRobinBuilder, RoundRobinConfig, RoundRobinHandle,
};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

mod report;
#[cfg(test)]
mod tests;
mod verdict;

pub use self::report::{SoakReport, describe, header, row};
pub use self::verdict::{Growth, Metric, Slack, Windows};
pub use crate::demo::CLASSES;

use self::report::{loadavg, unix_now};
use crate::{Body, HttpClient, KillableServer, forward_to, serve_killable};

/// After the load stops, live tasks and open file descriptors must come
/// back to at most this many above their level before it started: room
/// for what a component keeps once it has been used (the connection pool's
/// idle reaper, say), not for anything per request.
pub const DRAIN_SLACK: usize = 4;

/// How long the load may take to drain: its last requests end at their
/// deadline, idle pooled connections close after [`POOL_IDLE`].
pub const DRAIN_WITHIN: Duration = Duration::from_secs(10);

/// How long the client keeps an idle connection.
pub const POOL_IDLE: Duration = Duration::from_secs(1);

/// Idle connections the client keeps per instance at most.
pub const POOL_MAX_IDLE: usize = 32;

/// The refusal of a full queue: `429` with `Retry-After` (backpressure,
/// which neither the breakers nor the ejection count as the instance's
/// failure), a timeout `408`.
const RESPONDER: ErrorResponder = ErrorResponder::new()
    .serving()
    .overloaded_status(StatusCode::TOO_MANY_REQUESTS);

/// The path the load calls.
const WORK_PATH: &str = "/work";

/// How far the generator may fall behind its schedule (a starved
/// machine) before it skips arrivals instead of sending them in one burst.
const MAX_LAG: Duration = Duration::from_millis(250);

/// The soak's timing, fleet, load and stacks.
#[derive(Debug, Clone, PartialEq)]
pub struct SoakSettings {
    /// How long the load runs.
    pub duration: Duration,
    /// The start of the run that is not judged: caches, pools and
    /// allocator arenas fill up.
    pub warmup: Duration,
    /// Time between two samples.
    pub sample_every: Duration,
    /// One instance dies once per period, half way through it.
    pub death_every: Duration,
    /// How long a dead instance stays down.
    pub down_for: Duration,
    /// Instances of the service.
    pub instances: usize,
    /// Requests each instance serves at once (its queue's concurrency).
    pub concurrency: usize,
    /// The work of one request.
    pub service_time: Duration,
    /// Requests that may wait in each instance's queue.
    pub queue_capacity: usize,
    /// The longest a request waits in a queue.
    pub max_wait: Duration,
    /// The offered load, in multiples of the fleet's capacity.
    pub overload: f64,
    /// Shares of `critical`, `sheddable-plus` and `sheddable` requests
    /// ([`CLASSES`]); they add up to 1.
    pub mix: [f64; 3],
    /// The shortest deadline a request gets.
    pub deadline_min: Duration,
    /// The longest deadline a request gets.
    pub deadline_max: Duration,
    /// The client's timeout per attempt on one instance.
    pub attempt_timeout: Duration,
    /// Time between two health checks of an instance.
    pub health_interval: Duration,
    /// Seeds the arrivals, priorities and deadlines.
    pub seed: u64,
}

/// What became of one request, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered `200` within its deadline.
    Served,
    /// Refused: `429`/`503` from an instance, or the client's own throttle,
    /// an open breaker, no healthy instance.
    Refused,
    /// Dropped at its deadline by the client (or answered `408`/`504`).
    Dropped,
    /// Failed otherwise: a connection closed by a dying instance, a `5xx`.
    Failed,
}

/// The process's resources at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: usize,
    /// Live tokio tasks.
    pub tasks: usize,
}

/// One instance in a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceState {
    /// Its state in the client's balancer.
    pub state: Option<EndpointState>,
    /// Whether it is dead (killed, not back yet).
    pub down: bool,
}

/// One sample of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When it was due, since the load started.
    pub at: Duration,
    /// The process's resources.
    pub level: Level,
    /// Requests waiting in each instance's queue.
    pub queued: Vec<usize>,
    /// Requests in service in each instance.
    pub in_service: Vec<usize>,
    /// Each instance, as the client sees it.
    pub instances: Vec<InstanceState>,
    /// Requests per priority ([`CLASSES`]) and [`Outcome`], during the
    /// interval that ended with this sample (by the time they ended).
    pub counts: [[u64; 4]; 3],
}

/// The client's counters, shared by the generator's tasks.
#[derive(Debug, Default)]
struct Counts {
    by: [[AtomicU64; 4]; 3],
    in_flight: AtomicU64,
    skipped: AtomicU64,
}

/// One instance: its app (and queue) outlive its deaths.
#[derive(Debug)]
struct Instance {
    app: Router,
    queue: BoundedQueueHandle,
    addr: SocketAddr,
    server: Option<KillableServer>,
}

/// The client stack and the handles the samples read.
#[derive(Debug)]
struct ClientStack {
    client: HttpClient,
    balancer: RoundRobinHandle,
}

// === impl SoakSettings ===

impl SoakSettings {
    /// The 10-minute run: a sample every 10 s, a death every minute (down
    /// 20 s), one minute of warm-up; three instances of 2 x 50 ms (120
    /// requests/s together) offered 600 requests/s.
    pub fn full() -> Self {
        Self {
            duration: Duration::from_secs(600),
            warmup: Duration::from_secs(60),
            sample_every: Duration::from_secs(10),
            death_every: Duration::from_secs(60),
            down_for: Duration::from_secs(20),
            instances: 3,
            concurrency: 2,
            service_time: Duration::from_millis(50),
            queue_capacity: 8,
            max_wait: Duration::from_millis(200),
            overload: 5.0,
            mix: [0.1, 0.3, 0.6],
            deadline_min: Duration::from_millis(150),
            deadline_max: Duration::from_millis(300),
            attempt_timeout: Duration::from_millis(250),
            health_interval: Duration::from_millis(250),
            seed: 7,
        }
    }

    /// The 30-second run CI does: a sample every 2 s, a death every 10 s
    /// (down 3 s), 10 s of warm-up; the same fleet and load as
    /// [`full`](Self::full).
    pub fn quick() -> Self {
        Self {
            duration: Duration::from_secs(30),
            warmup: Duration::from_secs(10),
            sample_every: Duration::from_secs(2),
            death_every: Duration::from_secs(10),
            down_for: Duration::from_secs(3),
            ..Self::full()
        }
    }

    /// Requests per second the fleet can serve, all instances up.
    pub fn capacity(&self) -> f64 {
        (self.instances * self.concurrency) as f64 / self.service_time.as_secs_f64()
    }

    /// Requests per second offered: [`overload`](Self::overload) x
    /// [`capacity`](Self::capacity).
    pub fn rate(&self) -> f64 {
        self.overload * self.capacity()
    }

    /// The windows the verdict compares (see [`Windows::of`]).
    pub fn windows(&self) -> Option<Windows> {
        Windows::of(self.duration, self.warmup, self.death_every)
    }

    /// The samples' due times, since the load started.
    pub fn sample_times(&self) -> Vec<Duration> {
        let n = (self.duration.as_nanos() / self.sample_every.as_nanos().max(1)) as u32;
        (1..=n).map(|i| self.sample_every * i).collect()
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// - a duration is zero or above `MAX_DURATION`
    /// - fewer than 2 instances, no concurrency, an overload or a mix that
    ///   is not a positive, finite number (the mix adding up to 1)
    /// - `deadline_min` above `deadline_max`, `down_for` not shorter than
    ///   `death_every`, `warmup` not shorter than `duration`
    /// - a window of the verdict with fewer than 2 samples
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, d) in [
            ("duration", self.duration),
            ("warmup", self.warmup),
            ("sample_every", self.sample_every),
            ("death_every", self.death_every),
            ("down_for", self.down_for),
            ("service_time", self.service_time),
            ("max_wait", self.max_wait),
            ("deadline_min", self.deadline_min),
            ("deadline_max", self.deadline_max),
            ("attempt_timeout", self.attempt_timeout),
            ("health_interval", self.health_interval),
        ] {
            validate_positive_duration(field, d)?;
        }
        if self.instances < 2 {
            return Err(ConfigError::new(
                "instances",
                "must be at least 2 (one of them dies)",
            ));
        }
        if self.concurrency == 0 {
            return Err(ConfigError::new("concurrency", "must be at least 1"));
        }
        if !(self.overload.is_finite() && self.overload > 0.0) {
            return Err(ConfigError::new("overload", "must be a positive number"));
        }
        let sum: f64 = self.mix.iter().sum();
        if self.mix.iter().any(|s| !s.is_finite() || *s < 0.0) || (sum - 1.0).abs() > 1e-9 {
            return Err(ConfigError::new(
                "mix",
                "must be three non-negative shares adding up to 1",
            ));
        }
        if self.deadline_min > self.deadline_max {
            return Err(ConfigError::new(
                "deadline_min",
                "must not be above deadline_max",
            ));
        }
        if self.down_for >= self.death_every {
            return Err(ConfigError::new(
                "down_for",
                "must be shorter than death_every",
            ));
        }
        if self.warmup >= self.duration {
            return Err(ConfigError::new("warmup", "must be shorter than duration"));
        }
        let windows = self
            .windows()
            .ok_or_else(|| ConfigError::new("duration", "leaves no time after the warm-up"))?;
        let times = self.sample_times();
        let early = times.iter().filter(|t| windows.in_early(**t)).count();
        let late = times.iter().filter(|t| windows.in_late(**t)).count();
        if early < 2 || late < 2 {
            return Err(ConfigError::new(
                "duration",
                format!(
                    "too short for sample_every: the verdict's windows hold {early} and {late} samples, it needs 2 each"
                ),
            ));
        }
        Ok(())
    }

    /// When the `n`-th death (from 0) happens and when that instance comes
    /// back, since the load started; `None` once it would not be back
    /// before the run ends.
    fn death(&self, n: u32) -> Option<(Duration, Duration)> {
        let at = self.death_every / 2 + self.death_every * n;
        let back = at + self.down_for;
        (back < self.duration).then_some((at, back))
    }
}

// === impl Outcome ===

impl Outcome {
    /// Every outcome, in table order.
    pub const ALL: [Outcome; 4] = [
        Outcome::Served,
        Outcome::Refused,
        Outcome::Dropped,
        Outcome::Failed,
    ];

    /// A short label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Served => "served",
            Outcome::Refused => "refused",
            Outcome::Dropped => "dropped",
            Outcome::Failed => "failed",
        }
    }

    /// The outcome of an answer with `status`.
    pub fn of_status(status: StatusCode) -> Self {
        match status.as_u16() {
            200..=299 => Outcome::Served,
            429 | 503 => Outcome::Refused,
            408 | 504 => Outcome::Dropped,
            _ => Outcome::Failed,
        }
    }

    /// The outcome of a call that failed with `err`.
    pub fn of_error(err: &BoxError) -> Self {
        if find_in_chain::<Rejected>(&**err).is_some() {
            Outcome::Refused
        } else if find_in_chain::<Elapsed>(&**err).is_some() {
            Outcome::Dropped
        } else {
            Outcome::Failed
        }
    }
}

// === impl Level ===

impl Level {
    /// The process's resources now (Linux: `/proc/self`); the tasks of the
    /// current tokio runtime.
    ///
    /// # Errors
    /// - `/proc/self/status` or `/proc/self/fd` cannot be read
    ///
    /// # Panics
    /// - outside a tokio runtime
    pub fn now() -> std::io::Result<Level> {
        let status = std::fs::read_to_string("/proc/self/status")?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| std::io::Error::other("no VmRSS in /proc/self/status"))?;
        // The directory's own descriptor is one of the entries.
        let fds = std::fs::read_dir("/proc/self/fd")?
            .count()
            .saturating_sub(1);
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        Ok(Level {
            rss_kib,
            fds,
            tasks,
        })
    }
}

// === impl Counts ===

impl Counts {
    fn add(&self, class: usize, outcome: Outcome) {
        self.by[class][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> [[u64; 4]; 3] {
        self.by
            .each_ref()
            .map(|row| row.each_ref().map(|c| c.load(Ordering::Relaxed)))
    }
}

/// Takes one request off the in-flight count when dropped.
struct InFlight(Arc<Counts>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Instance ===

impl Instance {
    /// The app of instance `n` and its queue (not served yet).
    fn new(settings: &SoakSettings, n: usize) -> Result<Self, ConfigError> {
        let name = format!("soak-{n}");
        let queue = BoundedQueueLayer::new(
            BoundedQueueConfig::builder()
                .name(&name)
                .concurrency(settings.concurrency)
                .capacity(settings.queue_capacity)
                .max_wait(settings.max_wait)
                // The service time is known: the wait budget is max_wait,
                // oldest (earliest deadline) first.
                .codel(false)
                .lifo(false)
                .build()?,
        );
        let handle = queue.handle();
        let timeout = TimeoutLayer::new(
            TimeoutConfig::builder()
                .name(&name)
                .timeout(Duration::from_secs(1))
                .build()?,
        );
        let service_time = settings.service_time;
        async fn refuse(err: BoxError) -> Response<String> {
            RESPONDER.respond(&*err)
        }
        let app = Router::new()
            .route(
                WORK_PATH,
                post(move || async move {
                    tokio::time::sleep(service_time).await;
                    "done\n"
                }),
            )
            .route_layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(refuse))
                    .layer(timeout)
                    .layer(queue),
            )
            .layer(CorrelationLayer::new())
            .route("/health", get(|| async { "ok\n" }));
        Ok(Self {
            app,
            queue: handle,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            server: None,
        })
    }

    /// Serves the app on its port (a free one the first time).
    async fn serve(&mut self) -> Result<(), BoxError> {
        // The port was just freed; a socket of the dead server may still
        // hold it for a moment.
        let mut tries = 0;
        let server = loop {
            match serve_killable(self.app.clone(), self.addr.port()).await {
                Ok(server) => break server,
                Err(error) if tries < 100 => {
                    tracing::debug!(%error, "bind failed, retrying");
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(error) => {
                    return Err(format!("cannot bind {} again: {error}", self.addr).into());
                }
            }
        };
        self.addr = server.addr();
        self.server = Some(server);
        Ok(())
    }

    async fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill().await;
        }
    }
}

// === impl ClientStack ===

impl ClientStack {
    fn new(settings: &SoakSettings, addrs: &[SocketAddr]) -> Result<Self, ConfigError> {
        let hyper = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .build_http::<Body>();
        // Under the balancer, so a slow instance is blamed for its own
        // timeouts; but not for the caller's deadline, which the layer
        // above the balancer enforces: a request that ran out of time in an
        // overloaded queue says nothing about the instance's health.
        let attempt = TimeoutLayer::new(
            TimeoutConfig::builder()
                .name("soak-attempt")
                .timeout(settings.attempt_timeout)
                .honor_deadline(false)
                .build()?,
        );
        let mut breakers = Vec::with_capacity(addrs.len());
        for (n, addr) in addrs.iter().enumerate() {
            let config = CircuitBreakerConfig::builder()
                .name(format!("soak-{}", n + 1))
                .count_window(20)
                .minimum_calls(10)
                .failure_rate_threshold(50.0)
                .open_for(Duration::from_secs(1))
                .max_open_for(Duration::from_secs(4))
                .build()?;
            breakers.push((*addr, CircuitBreakerLayer::new(config)));
        }
        let fallback = CircuitBreakerLayer::new(CircuitBreakerConfig::builder().build()?);
        let instance = move |ep: &Endpoint| -> HttpClient {
            let breaker = breakers
                .iter()
                .find(|(addr, _)| *addr == ep.addr())
                .map_or_else(|| fallback.clone(), |(_, b)| b.clone());
            BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(breaker)
                    .layer(attempt.clone())
                    .service(forward_to(hyper.clone(), ep.addr())),
            )
        };
        let health = HealthCheckConfig::builder()
            .interval(settings.health_interval)
            .timeout(settings.health_interval)
            .unhealthy_threshold(2)
            .healthy_threshold(1)
            .build()?;
        let balancer = RoundRobinBuilder::new()
            .config(
                RoundRobinConfig::builder()
                    .name("soak")
                    .consecutive_failures(3)
                    .base_ejection_time(Duration::from_secs(1))
                    .max_ejection_time(Duration::from_secs(4))
                    .build()?,
            )
            .with_classifier(HttpOutcome::new())
            .health_check(health.clone(), HttpHealthCheck::from_config(&health))
            .build_with_endpoints(addrs.iter().map(|a| Endpoint::new(*a)), instance);
        let handle = balancer.handle();
        let throttle = ThrottleLayer::new(
            ThrottleConfig::builder()
                .name("soak")
                .adaptive()
                .window(Duration::from_secs(10))
                .build()?,
        )
        // An instance's 429 is the refusal the throttle learns from.
        .with_classifier(HttpOutcome::new().rate_limited_is_failure(true));
        let deadline = TimeoutLayer::new(
            TimeoutConfig::builder()
                .name("soak-deadline")
                .timeout(settings.deadline_max)
                .build()?,
        );
        let client = BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(PropagateContextLayer::new())
                .layer(deadline)
                .layer(throttle)
                .service(balancer),
        );
        Ok(Self {
            client,
            balancer: handle,
        })
    }

    fn states(&self, addrs: &[SocketAddr]) -> Vec<Option<EndpointState>> {
        let snapshot = self.balancer.snapshot();
        addrs
            .iter()
            .map(|addr| {
                snapshot
                    .endpoints
                    .iter()
                    .find(|e| e.endpoint.addr() == *addr)
                    .map(|e| e.state)
            })
            .collect()
    }

    async fn wait_healthy(&self, n: usize, within: Duration) -> Result<(), BoxError> {
        let deadline = Instant::now() + within;
        while self.balancer.snapshot().count(EndpointState::Healthy) < n {
            if Instant::now() >= deadline {
                return Err(format!(
                    "the instances did not pass their first health check within {within:?}"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

// === the run ===

/// Runs the soak with `settings`, calling `on_sample` with each sample as
/// it is taken, and returns every sample with the verdict.
///
/// # Errors
/// - the settings are invalid ([`SoakSettings::validate`])
/// - a port cannot be bound, the instances are not healthy within 10 s, or
///   `/proc/self` cannot be read
pub async fn run(
    settings: &SoakSettings,
    mut on_sample: impl FnMut(&Sample),
) -> Result<SoakReport, BoxError> {
    settings.validate()?;
    let windows = settings.windows().ok_or("no windows")?;
    let mut fleet = Vec::with_capacity(settings.instances);
    for n in 1..=settings.instances {
        let mut instance = Instance::new(settings, n)?;
        instance.serve().await?;
        fleet.push(instance);
    }
    let addrs: Vec<SocketAddr> = fleet.iter().map(|i| i.addr).collect();
    let queues: Vec<BoundedQueueHandle> = fleet.iter().map(|i| i.queue.clone()).collect();
    let stack = ClientStack::new(settings, &addrs)?;
    stack
        .wait_healthy(settings.instances, Duration::from_secs(10))
        .await?;
    let idle = Level::now()?;

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let down = Arc::new(AtomicUsize::new(usize::MAX));
    let wall_start = unix_now();
    let loadavg_start = loadavg();
    let start = Instant::now();
    let load = tokio::spawn(generate(
        stack.client.clone(),
        settings.clone(),
        counts.clone(),
        stop.clone(),
    ));
    let deaths = tokio::spawn(chaos(fleet, settings.clone(), start, down.clone()));

    let mut samples = Vec::new();
    let mut last = [[0; 4]; 3];
    for at in settings.sample_times() {
        tokio::time::sleep_until(start + at).await;
        let now = counts.snapshot();
        let mut counts_in = [[0; 4]; 3];
        for (c, row) in counts_in.iter_mut().enumerate() {
            for (o, v) in row.iter_mut().enumerate() {
                *v = now[c][o] - last[c][o];
            }
        }
        last = now;
        let snapshots: Vec<_> = queues.iter().map(BoundedQueueHandle::snapshot).collect();
        let dead = down.load(Ordering::Relaxed);
        let sample = Sample {
            at,
            level: Level::now()?,
            queued: snapshots.iter().map(|s| s.queued).collect(),
            in_service: snapshots.iter().map(|s| s.in_service).collect(),
            instances: stack
                .states(&addrs)
                .into_iter()
                .enumerate()
                .map(|(i, state)| InstanceState {
                    state,
                    down: i == dead,
                })
                .collect(),
            counts: counts_in,
        };
        on_sample(&sample);
        samples.push(sample);
    }

    stop.store(true, Ordering::Relaxed);
    load.await?;
    let (fleet, deaths) = deaths.await??;
    let wall_end = unix_now();
    let loadavg_end = loadavg();
    // The last requests end at their deadline; then pooled connections
    // idle out, and the tasks and descriptors they held go.
    let drain_start = Instant::now();
    let queues_now = || {
        queues.iter().fold((0, 0), |(q, b), h| {
            let s = h.snapshot();
            (q + s.queued, b + s.in_service)
        })
    };
    let (mut drained, mut drained_queues) = (Level::now()?, queues_now());
    while drain_start.elapsed() < DRAIN_WITHIN {
        (drained, drained_queues) = (Level::now()?, queues_now());
        if counts.in_flight.load(Ordering::Relaxed) == 0
            && drained_ok(&idle, &drained, drained_queues)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_took = drain_start.elapsed();
    drop(fleet);

    let growth = Metric::ALL
        .into_iter()
        .filter_map(|m| {
            let series: Vec<(Duration, f64)> = samples.iter().map(|s| (s.at, m.value(s))).collect();
            Growth::of(&series, &windows, m.slack(settings)).map(|g| (m, g))
        })
        .collect();
    Ok(SoakReport {
        settings: settings.clone(),
        samples,
        windows,
        growth,
        idle,
        drained,
        drain_took,
        drained_queues,
        totals: counts.snapshot(),
        skipped: counts.skipped.load(Ordering::Relaxed),
        deaths,
        wall: (wall_start, wall_end),
        loadavg: (loadavg_start, loadavg_end),
    })
}

/// Whether `drained` is back to within [`DRAIN_SLACK`] of `idle`, with
/// nothing `queued` or in service.
fn drained_ok(idle: &Level, drained: &Level, (queued, in_service): (usize, usize)) -> bool {
    drained.tasks <= idle.tasks + DRAIN_SLACK
        && drained.fds <= idle.fds + DRAIN_SLACK
        && queued == 0
        && in_service == 0
}

/// Sends the open-loop load until `stop`.
async fn generate(
    client: HttpClient,
    settings: SoakSettings,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = SmallRng::seed_from_u64(settings.seed);
    let rate = settings.rate();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Exponential gaps: a Poisson process at `rate`.
        let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
        next += Duration::from_secs_f64(-u.ln() / rate);
        let now = Instant::now();
        if now > next + MAX_LAG {
            // A stall: skip what was due instead of a burst of it.
            let behind = (now - next).as_secs_f64() * rate;
            counts.skipped.fetch_add(behind as u64, Ordering::Relaxed);
            next = now;
        }
        tokio::time::sleep_until(next).await;
        let draw: f64 = rng.random();
        let class = if draw < settings.mix[0] {
            0
        } else if draw < settings.mix[0] + settings.mix[1] {
            1
        } else {
            2
        };
        let span = settings.deadline_max - settings.deadline_min;
        let deadline = settings.deadline_min + span.mul_f64(rng.random::<f64>());
        counts.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(counts.clone());
        tokio::spawn(send(client.clone(), class, deadline, in_flight));
    }
}

/// One request: sent with its priority and deadline, dropped at the
/// deadline if it has not been answered by then.
async fn send(client: HttpClient, class: usize, deadline: Duration, in_flight: InFlight) {
    let ctx = RequestContext::new_root()
        .with_priority(CLASSES[class])
        .with_deadline(Some(Deadline::after(deadline)));
    let call = async {
        let req = http::Request::post(format!("http://soak{WORK_PATH}"))
            .extension(ctx)
            .body(Body::default())?;
        let rsp = client.oneshot(req).await?;
        let status = rsp.status();
        rsp.into_body().collect().await?;
        Ok::<_, BoxError>(status)
    };
    let outcome = match tokio::time::timeout(deadline, call).await {
        Ok(Ok(status)) => Outcome::of_status(status),
        Ok(Err(err)) => Outcome::of_error(&err),
        // The client gives up: the call's future, and whatever it held in
        // every layer, is dropped here.
        Err(_) => Outcome::Dropped,
    };
    in_flight.0.add(class, outcome);
}

/// Kills one instance (each in turn) every `death_every`, half way through
/// the period, and serves it again `down_for` later; returns the fleet and
/// how many deaths there were, every instance up.
async fn chaos(
    mut fleet: Vec<Instance>,
    settings: SoakSettings,
    start: Instant,
    down: Arc<AtomicUsize>,
) -> Result<(Vec<Instance>, u32), BoxError> {
    let mut n = 0;
    while let Some((at, back)) = settings.death(n) {
        let i = n as usize % fleet.len();
        tokio::time::sleep_until(start + at).await;
        down.store(i, Ordering::Relaxed);
        fleet[i].kill().await;
        tracing::info!(instance = i + 1, "instance killed");
        tokio::time::sleep_until(start + back).await;
        fleet[i].serve().await?;
        down.store(usize::MAX, Ordering::Relaxed);
        tracing::info!(instance = i + 1, "instance back");
        n += 1;
    }
    Ok((fleet, n))
}
