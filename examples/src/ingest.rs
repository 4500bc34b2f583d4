//! Reference service 3, event ingestion: bounded queues and backpressure.
//!
//! An `ingest` service takes device telemetry and answers searches over
//! what it stored. As in Elasticsearch, whose thread pools (`write`,
//! `search`, `get`, ...) each have their own bounded queue, every kind of
//! operation waits in its own queue, with its own concurrency and capacity
//! ([`KindQueuesLayer`]): a flood of bulk writes fills the `bulk` queue and
//! is refused there, while searches keep their own slots.
//!
//! | request | kind | work: a fixed service time (a tokio sleep), then |
//! |---|---|---|
//! | `POST /events`, one event (a line of text) | `index` | stores it, answers its id |
//! | `POST /bulk`, one event per line | `bulk` | stores the batch, answers the ids |
//! | `GET /search?q=<word>` | `search` | counts the stored events containing the word |
//! | `GET /events/{id}` | `get` | answers the event, or `404` |
//!
//! ```text
//! CorrelationLayer        the id, on every response (refusals too) and log line
//!  └ HandleErrorLayer     a refusal becomes 429 + Retry-After, at once
//!     └ KindQueuesLayer   one bounded queue per kind: concurrency, capacity, wait budget
//!        └ handler        the kind's service time, then the in-memory store
//! ```
//!
//! # Backpressure
//!
//! While all of a kind's slots are busy, its requests wait, at most
//! `capacity` of them, oldest first, and each for at most the kind's *wait
//! budget*: the service's latency goal minus the kind's service time
//! ([`IngestSettings::wait_budget`]; 70 ms for `index` in
//! [`IngestSettings::DEMO`]). A request that finds the queue full, or
//! whose expected wait (recent service times x its place in line) is
//! longer than the budget, is refused at once with `429 Too Many Requests`
//! and `Retry-After`; one whose budget runs out while it waits is refused
//! then. Memory and latency never grow without bound; the store keeps only
//! the latest [`STORE_LIMIT`] events.
//!
//! The budget is the bounded-queue crate's guidance for a service whose
//! service time is known (its docs, "Choosing the settings"): it is each
//! queue's `max_wait` and its CoDel target, so a served request takes at
//! most about the latency goal, however hard the senders push. The capacity
//! alone would not do that: a full queue makes every request wait capacity
//! x service time / concurrency (320 ms for 16 waiting in front of one
//! 20 ms slot), and a flood keeps it full. Under overload the queue serves
//! the highest priority first and sheds the lowest when a waiter runs out
//! of budget, so critical events are the last to be refused.
//!
//! Why `429` and not the family's default `503`
//! ([`ErrorResponder::overloaded_status`]): a full queue is backpressure
//! addressed to the sender, not a sign that the service is down.
//! - A `503` tells load balancers and clients that this instance is
//!   unhealthy: a balancer ejects it, and a client's circuit breaker (which
//!   counts 5xx as failures) opens, turning a momentarily full bulk queue
//!   into an outage of every kind, searches included. A `429` counts as the
//!   caller's problem, which it is: send less, or later.
//! - Elasticsearch answers `429` for a full thread-pool queue
//!   (`es_rejected_execution_exception`), and its clients, Logstash and
//!   Beats retry those after backing off.
//!
//! [`Ingest::queue`] gives each kind's [`BoundedQueueHandle`] (in service,
//! queued, rejections by reason); [`Ingest::watch`] samples all of them in
//! the background to find the peaks; [`Ingest::queue_states`] prints them.
//!
//! # The telemetry source
//!
//! A [`Source`] sends open-loop: at a fixed rate, each request in its own
//! task, whatever the answers. Its requests come from `devices` devices in
//! turn; a device that was refused honours `Retry-After` and sends nothing
//! until it has passed (a well-behaved client), unless the source is set to
//! ignore it (a backfill job that hammers on). It counts accepted, refused
//! (with `Retry-After`) and failed requests, and the sends skipped while
//! backing off, and keeps the latencies of each. Each request carries the
//! correlation id `<kind>-<device>-<n>`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use resilience_examples::ingest::{Demo, IngestSettings, Kind, KindSettings, Op, SourceSettings};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), resilience_core::BoxError> {
//! let mut settings = IngestSettings::DEMO;
//! // One bulk at a time, and no room to wait.
//! settings.bulk = KindSettings { concurrency: 1, capacity: 0, service_time: Duration::from_millis(500) };
//! settings.latency_goal = Duration::from_secs(1);
//! let demo = Demo::start(&settings).await?;
//!
//! let stored = demo.call(&Op::Index("device-7 temp=21.5".into())).await?;
//! assert_eq!((stored.status.as_u16(), stored.body.as_str()), (200, "1\n"));
//! let found = demo.call(&Op::Search("device-7".into())).await?;
//! assert_eq!(found.body, "1\n");
//!
//! // While a bulk is in service, the next one is refused at once.
//! let bulk = Op::Bulk(vec!["device-1 temp=20.1".into(), "device-2 temp=19.8".into()]);
//! let queue = demo.ingest.queue(Kind::Bulk);
//! let (first, second) = tokio::join!(demo.call(&bulk), async {
//!     while queue.snapshot().in_service == 0 {
//!         tokio::time::sleep(Duration::from_millis(1)).await;
//!     }
//!     demo.call(&bulk).await
//! });
//! let (first, second) = (first?, second?);
//! assert_eq!(first.body, "2 3\n");
//! assert_eq!(second.status, 429);
//! assert_eq!(second.retry_after, Some(Duration::from_secs(1)));
//! assert!(second.elapsed < Duration::from_millis(500));
//! assert_eq!(queue.snapshot().rejected.full, 1);
//!
//! // Devices sending telemetry at 100 events/s for a moment.
//! let source = demo.source(SourceSettings::telemetry(100));
//! tokio::time::sleep(Duration::from_millis(200)).await;
//! let report = source.stop().await;
//! assert_eq!(report.counts.errors, 0);
//! println!("{}", demo.ingest.queue_states()); // index: 0/2 in service, 0/32 queued, 0 refused ...
//! # Ok(()) }
//! ```
//!
//! Run the scripted scenario: `cargo run -p resilience-examples --bin ingest`

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::RETRY_AFTER;
use http_body_util::BodyExt;
use resilience_bounded_queue::kind::KindQueuesLayer;
use resilience_bounded_queue::{BoundedQueueConfig, BoundedQueueHandle, BoundedQueueSnapshot};
use resilience_core::http::ErrorResponder;
use resilience_core::{BoxError, ConfigError};
use resilience_correlation::CorrelationLayer;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tower::{ServiceBuilder, ServiceExt};
use tracing::Instrument;

use crate::{Body, HttpClient, http_client, serve};

/// How many events the store keeps (the latest ones): memory stays bounded
/// however long the devices send.
pub const STORE_LIMIT: usize = 4096;

/// The longest event accepted, in bytes.
pub const MAX_EVENT_LEN: usize = 512;

/// The most events in one bulk request.
pub const MAX_BATCH: usize = 1000;

/// The refusal of a full queue: `429` with `Retry-After`, a timeout `408`
/// (see the [module docs](self) for why not `503`).
const RESPONDER: ErrorResponder = ErrorResponder::new()
    .serving()
    .overloaded_status(StatusCode::TOO_MANY_REQUESTS);

/// A kind of operation, each with its own queue (named after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `POST /events`: store one event.
    Index,
    /// `POST /bulk`: store a batch of events.
    Bulk,
    /// `GET /search?q=<word>`: count the events containing a word.
    Search,
    /// `GET /events/{id}`: one event.
    Get,
}

/// One kind's queue and work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSettings {
    /// Requests in service at once.
    pub concurrency: usize,
    /// Requests that may wait for a slot; `0` refuses as soon as all slots
    /// are busy.
    pub capacity: usize,
    /// The simulated work of one request (one batch, for `bulk`).
    pub service_time: Duration,
}

/// The queues of the `ingest` service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestSettings {
    /// `POST /events`.
    pub index: KindSettings,
    /// `POST /bulk`.
    pub bulk: KindSettings,
    /// `GET /search`.
    pub search: KindSettings,
    /// `GET /events/{id}`.
    pub get: KindSettings,
    /// The `Retry-After` of a refusal (whole seconds on the wire, at least 1).
    pub retry_after: Duration,
    /// The latency a served request should stay within, queueing and
    /// service: each kind may wait for a slot this long minus its service
    /// time ([`wait_budget`](Self::wait_budget)). Longer than every kind's
    /// service time; leave each kind room for two hand-offs (a goal of at
    /// least service time x (1 + 2 / concurrency)), or a request that finds
    /// every slot busy may be refused at low load.
    pub latency_goal: Duration,
}

/// The `ingest` service: its queues and its store.
///
/// Cheap to clone; clones share the queues, the store and the counters.
#[derive(Debug, Clone)]
pub struct Ingest {
    inner: Arc<IngestInner>,
}

/// What [`Ingest::watch`] saw of one queue: the most requests in service
/// and waiting at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peak {
    /// The most requests in service at once.
    pub in_service: usize,
    /// The most requests waiting at once.
    pub queued: usize,
}

/// Samples every queue's snapshot in the background and keeps the peaks;
/// from [`Ingest::watch`]. Dropping it stops the sampling.
#[derive(Debug)]
pub struct QueueWatch {
    peaks: Arc<Mutex<[Peak; 4]>>,
    task: JoinHandle<()>,
}

/// A request to the `ingest` service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `POST /events` with one event.
    Index(String),
    /// `POST /bulk` with these events, one per line.
    Bulk(Vec<String>),
    /// `GET /search?q=<word>`; the word is 1 to 64 characters of
    /// `[A-Za-z0-9._=-]`.
    Search(String),
    /// `GET /events/{id}`.
    Get(u64),
}

/// An answer as a client saw it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status: `200`, `429` when refused, `400`, `404`.
    pub status: StatusCode,
    /// The `Retry-After` header, in seconds (refusals carry one).
    pub retry_after: Option<Duration>,
    /// The correlation id the service returned.
    pub correlation_id: Option<String>,
    /// The body's text.
    pub body: String,
    /// How long the answer took, body included.
    pub elapsed: Duration,
}

/// What a [`Source`] sends, how fast, and how it takes refusals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSettings {
    /// The kind of request: events (`Index`), batches (`Bulk`), searches
    /// or gets (ids `1..=100` in turn; a `404` counts as accepted).
    pub kind: Kind,
    /// Requests per second (at least 1), sent open-loop.
    pub rate: u32,
    /// The devices the requests come from, in turn (at least 1); each backs
    /// off on its own.
    pub devices: usize,
    /// Events per bulk request (at least 1).
    pub batch: usize,
    /// Whether a refused device waits for `Retry-After` before it sends
    /// again. When off, it keeps sending (a backfill job that hammers on).
    pub honour_retry_after: bool,
}

/// Requests a [`Source`] made, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceCounts {
    /// Requests sent.
    pub sent: u64,
    /// Answered `2xx` (or `404` for gets).
    pub accepted: u64,
    /// Refused with `429` or `503` and a `Retry-After`.
    pub rejected: u64,
    /// Anything else: no answer (a 10 s timeout), another status, or a
    /// refusal without `Retry-After`.
    pub errors: u64,
    /// Sends skipped because their device was waiting out a `Retry-After`.
    pub deferred: u64,
}

/// Latencies, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latencies(Vec<Duration>);

/// What a [`Source`] did, from [`Source::stop`].
#[derive(Debug, Clone, Default)]
pub struct SourceReport {
    /// Requests by outcome.
    pub counts: SourceCounts,
    /// Latencies of the accepted requests.
    pub accepted: Latencies,
    /// Latencies of the refusals.
    pub rejected: Latencies,
    /// The first refusal, as a sample.
    pub first_rejection: Option<Reply>,
}

/// A running open-loop source of requests; see the [module docs](self).
/// Dropping it stops sending (requests in flight finish on their own).
#[derive(Debug)]
pub struct Source {
    state: Arc<SourceState>,
    stop: Option<oneshot::Sender<()>>,
    pump: JoinHandle<()>,
}

/// The `ingest` service on loopback: what the binary and the tests run.
#[derive(Debug)]
pub struct Demo {
    /// The service (for its queues and counters).
    pub ingest: Ingest,
    /// Its base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    client: HttpClient,
}

/// The router's kind function: a request's queue, by its matched route.
type KindOf = fn(&Request) -> &'static str;

#[derive(Debug)]
struct IngestInner {
    settings: IngestSettings,
    queues: KindQueuesLayer<KindOf>,
    handles: [BoundedQueueHandle; 4],
    store: Mutex<Store>,
    served: [AtomicU64; 4],
}

/// The latest [`STORE_LIMIT`] events, oldest first, with ids from 1 up.
#[derive(Debug, Default)]
struct Store {
    events: VecDeque<(u64, String)>,
    last_id: u64,
}

#[derive(Debug)]
struct SourceState {
    settings: SourceSettings,
    client: HttpClient,
    url: String,
    started: Instant,
    /// Per device: until when it backs off, in µs since `started` (0: not).
    backoff: Vec<AtomicU64>,
    tally: Mutex<Tally>,
}

#[derive(Debug, Default)]
struct Tally {
    counts: SourceCounts,
    accepted: Vec<Duration>,
    rejected: Vec<Duration>,
    first_rejection: Option<Reply>,
}

// === impl Kind ===

impl Kind {
    /// Every kind, in table order.
    pub const ALL: [Kind; 4] = [Kind::Index, Kind::Bulk, Kind::Search, Kind::Get];

    /// The kind's (and its queue's) name.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Index => "index",
            Kind::Bulk => "bulk",
            Kind::Search => "search",
            Kind::Get => "get",
        }
    }

    /// The route it serves.
    pub const fn route(self) -> &'static str {
        match self {
            Kind::Index => "/events",
            Kind::Bulk => "/bulk",
            Kind::Search => "/search",
            Kind::Get => "/events/{id}",
        }
    }

    const fn index(self) -> usize {
        match self {
            Kind::Index => 0,
            Kind::Bulk => 1,
            Kind::Search => 2,
            Kind::Get => 3,
        }
    }

    /// The queue of `req`, by the route it matched (set by axum before the
    /// route's layers run); anything else waits with `index`.
    fn of_request(req: &Request) -> &'static str {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        Kind::ALL
            .into_iter()
            .find(|k| Some(k.route()) == route)
            .unwrap_or(Kind::Index)
            .name()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

// === impl KindSettings ===

impl KindSettings {
    /// The most requests per second it serves: concurrency / service time.
    pub fn throughput(&self) -> f64 {
        self.concurrency as f64 / self.service_time.as_secs_f64().max(1e-6)
    }

    /// The longest a request waits when the queue is full and nothing is
    /// slower than usual: capacity x service time / concurrency.
    pub fn longest_wait(&self) -> Duration {
        let waves = self.capacity.div_ceil(self.concurrency.max(1));
        self.service_time
            .saturating_mul(u32::try_from(waves).unwrap_or(u32::MAX))
    }
}

// === impl IngestSettings ===

impl IngestSettings {
    /// Settings for a demo: `index` 2 x 10 ms with 32 waiting (200 events/s),
    /// `bulk` 2 x 20 ms with 8 waiting (100 batches/s), `search` 4 x 10 ms
    /// with 16 waiting, `get` 4 x 2 ms with 16 waiting; `Retry-After: 1`;
    /// a latency goal of 80 ms (`index` waits at most 70 ms, `bulk` 60 ms).
    pub const DEMO: IngestSettings = IngestSettings {
        index: KindSettings {
            concurrency: 2,
            capacity: 32,
            service_time: Duration::from_millis(10),
        },
        bulk: KindSettings {
            concurrency: 2,
            capacity: 8,
            service_time: Duration::from_millis(20),
        },
        search: KindSettings {
            concurrency: 4,
            capacity: 16,
            service_time: Duration::from_millis(10),
        },
        get: KindSettings {
            concurrency: 4,
            capacity: 16,
            service_time: Duration::from_millis(2),
        },
        retry_after: Duration::from_secs(1),
        latency_goal: Duration::from_millis(80),
    };

    /// The settings of `kind`.
    pub fn kind(&self, kind: Kind) -> &KindSettings {
        match kind {
            Kind::Index => &self.index,
            Kind::Bulk => &self.bulk,
            Kind::Search => &self.search,
            Kind::Get => &self.get,
        }
    }

    /// How long a request of `kind` may wait for a slot: the latency goal
    /// minus the kind's service time (zero when the service time alone
    /// takes the goal, which [`queue_config`](Self::queue_config) refuses).
    pub fn wait_budget(&self, kind: Kind) -> Duration {
        self.latency_goal
            .saturating_sub(self.kind(kind).service_time)
    }

    /// The longest a request of `kind` waits for a slot: its
    /// [`wait_budget`](Self::wait_budget), or less when a full queue is
    /// shorter than that ([`KindSettings::longest_wait`]).
    pub fn longest_wait(&self, kind: Kind) -> Duration {
        self.wait_budget(kind).min(self.kind(kind).longest_wait())
    }

    /// The queue of `kind`: its concurrency and capacity, oldest first
    /// (the crate's default), and its [`wait_budget`](Self::wait_budget)
    /// as both `max_wait` and CoDel target (see the [module docs](self)).
    ///
    /// # Errors
    /// - `latency_goal` is not longer than the kind's service time
    /// - `concurrency` is zero, or `retry_after` is zero or above a day
    pub fn queue_config(&self, kind: Kind) -> Result<BoundedQueueConfig, ConfigError> {
        let k = self.kind(kind);
        let budget = self.wait_budget(kind);
        if budget.is_zero() {
            return Err(ConfigError::new(
                "latency_goal",
                "must be longer than every kind's service time",
            ));
        }
        BoundedQueueConfig::builder()
            .name(kind.name())
            .concurrency(k.concurrency)
            .capacity(k.capacity)
            .max_wait(budget)
            .codel_target(budget)
            // The target may not be longer than the interval.
            .codel_interval(budget.max(BoundedQueueConfig::DEFAULT_CODEL_INTERVAL))
            .retry_after(self.retry_after)
            .build()
    }
}

// === impl Ingest ===

impl Ingest {
    /// The service with an empty store.
    ///
    /// # Errors
    /// - a kind's settings make an invalid queue (see
    ///   [`IngestSettings::queue_config`])
    pub fn new(settings: &IngestSettings) -> Result<Self, ConfigError> {
        let mut builder = KindQueuesLayer::builder();
        for kind in Kind::ALL {
            builder = builder.queue(settings.queue_config(kind)?);
        }
        let queues = builder
            .default_kind(Kind::Index.name())
            .build(Kind::of_request as KindOf)?;
        let handles = Kind::ALL.map(|k| queues.handle(k.name()).expect("one queue per kind"));
        Ok(Self {
            inner: Arc::new(IngestInner {
                settings: settings.clone(),
                queues,
                handles,
                store: Mutex::new(Store::default()),
                served: Default::default(),
            }),
        })
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &IngestSettings {
        &self.inner.settings
    }

    /// The queue of `kind`: in service, queued, refusals by reason.
    pub fn queue(&self, kind: Kind) -> &BoundedQueueHandle {
        &self.inner.handles[kind.index()]
    }

    /// Requests of `kind` that did their work (admitted, and valid) since
    /// the service started.
    pub fn served(&self, kind: Kind) -> u64 {
        self.inner.served[kind.index()].load(Ordering::Relaxed)
    }

    /// Requests of `kind` refused since the service started, all reasons.
    pub fn refused(&self, kind: Kind) -> u64 {
        refused(&self.queue(kind).snapshot())
    }

    /// Whether every queue is empty and nothing is in service.
    pub fn is_idle(&self) -> bool {
        self.inner.handles.iter().all(|h| {
            let s = h.snapshot();
            s.in_service == 0 && s.queued == 0
        })
    }

    /// Polls every millisecond until [`is_idle`](Self::is_idle); how long
    /// that took, or `None` if it was not idle within `within`.
    pub async fn wait_idle(&self, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        loop {
            if self.is_idle() {
                return Some(started.elapsed());
            }
            if started.elapsed() >= within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Starts sampling every queue every `every` (at least 1 ms), keeping
    /// the peaks; a peak shorter than a sampling period can be missed.
    /// Call it within a tokio runtime.
    pub fn watch(&self, every: Duration) -> QueueWatch {
        let peaks = Arc::new(Mutex::new([Peak::default(); 4]));
        let handles = self.inner.handles.clone();
        let seen = peaks.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
            tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let now = handles.each_ref().map(BoundedQueueHandle::snapshot);
                let mut peaks = lock(&seen);
                for (peak, s) in peaks.iter_mut().zip(&now) {
                    peak.in_service = peak.in_service.max(s.in_service);
                    peak.queued = peak.queued.max(s.queued);
                }
            }
        });
        QueueWatch { peaks, task }
    }

    /// One line per kind, e.g. `bulk: 2/2 in service, 8/8 queued, 41
    /// refused (41 full)`.
    pub fn queue_states(&self) -> String {
        let mut out = String::new();
        for kind in Kind::ALL {
            let s = self.queue(kind).snapshot();
            let r = s.rejected;
            out.push_str(&format!(
                "{kind}: {}/{} in service, {}/{} queued, {} refused",
                s.in_service,
                s.limit,
                s.queued,
                s.capacity,
                refused(&s)
            ));
            if r.wait_timeout + r.shed + r.deadline > 0 {
                out.push_str(&format!(
                    " ({} full, {} waited too long, {} shed, {} past deadline)",
                    r.full, r.wait_timeout, r.shed, r.deadline
                ));
            } else if r.full > 0 {
                out.push_str(&format!(" ({} full)", r.full));
            }
            out.push('\n');
        }
        out
    }

    /// The router: the four routes of the [module docs](self).
    ///
    /// Layer order, outermost first: [`CorrelationLayer`] (so refusals carry
    /// the id too), then, on the routes only, `HandleErrorLayer` (refusals
    /// to `429`) over the [`KindQueuesLayer`]: an unknown path is a plain
    /// `404` that waits in no queue.
    pub fn app(&self) -> Router {
        async fn index(State(ingest): State<Ingest>, body: String) -> Response {
            let work = async {
                let event = match Event::parse(&body) {
                    Ok(event) => event,
                    Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
                };
                ingest.work(Kind::Index).await;
                let id = ingest.store().push(event);
                tracing::debug!(id, "event stored");
                format!("{id}\n").into_response()
            };
            work.instrument(tracing::info_span!("ingest")).await
        }
        async fn bulk(State(ingest): State<Ingest>, body: String) -> Response {
            let work = async {
                let events = match Event::parse_batch(&body) {
                    Ok(events) => events,
                    Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
                };
                ingest.work(Kind::Bulk).await;
                let mut store = ingest.store();
                let ids: Vec<String> = events
                    .into_iter()
                    .map(|e| store.push(e).to_string())
                    .collect();
                drop(store);
                tracing::debug!(events = ids.len(), "batch stored");
                format!("{}\n", ids.join(" ")).into_response()
            };
            work.instrument(tracing::info_span!("ingest")).await
        }
        async fn search(State(ingest): State<Ingest>, RawQuery(query): RawQuery) -> Response {
            let work = async {
                let Some(word) = query.as_deref().and_then(search_word) else {
                    return (
                        StatusCode::BAD_REQUEST,
                        "expected ?q=<word>, 1 to 64 of [A-Za-z0-9._=-]\n",
                    )
                        .into_response();
                };
                ingest.work(Kind::Search).await;
                let hits = ingest.store().count(word);
                format!("{hits}\n").into_response()
            };
            work.instrument(tracing::info_span!("ingest")).await
        }
        async fn get_event(State(ingest): State<Ingest>, Path(id): Path<u64>) -> Response {
            let work = async {
                ingest.work(Kind::Get).await;
                match ingest.store().get(id) {
                    Some(event) => format!("{event}\n").into_response(),
                    None => (StatusCode::NOT_FOUND, "no such event\n").into_response(),
                }
            };
            work.instrument(tracing::info_span!("ingest")).await
        }
        async fn refuse(err: BoxError) -> Response<String> {
            RESPONDER.respond(&*err)
        }
        Router::new()
            .route(Kind::Index.route(), post(index))
            .route(Kind::Bulk.route(), post(bulk))
            .route(Kind::Search.route(), get(search))
            .route(Kind::Get.route(), get(get_event))
            .with_state(self.clone())
            .route_layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(refuse))
                    .layer(self.inner.queues.clone()),
            )
            .layer(CorrelationLayer::new())
    }

    /// The simulated work of one request of `kind`.
    async fn work(&self, kind: Kind) {
        tokio::time::sleep(self.inner.settings.kind(kind).service_time).await;
        self.inner.served[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.inner.store)
    }
}

/// All refusals of a snapshot, every reason.
fn refused(s: &BoundedQueueSnapshot) -> u64 {
    let r = s.rejected;
    r.full + r.wait_timeout + r.shed + r.deadline
}

/// `q=<word>` from a query string, if the word is plain.
fn search_word(query: &str) -> Option<&str> {
    let word = query.split('&').find_map(|p| p.strip_prefix("q="))?;
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '=' | '-');
    (!word.is_empty() && word.len() <= 64 && word.chars().all(plain)).then_some(word)
}

/// Nothing panics while these locks are held: a poisoned lock is fine.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An event's text, validated.
struct Event(String);

impl Event {
    fn parse(text: &str) -> Result<Self, &'static str> {
        let text = text.trim();
        if text.is_empty() || text.contains('\n') {
            return Err("expected one event: a line of text\n");
        }
        if text.len() > MAX_EVENT_LEN {
            return Err("event too long\n");
        }
        Ok(Self(text.to_owned()))
    }

    fn parse_batch(text: &str) -> Result<Vec<Self>, &'static str> {
        let events = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(Event::parse)
            .collect::<Result<Vec<_>, _>>()?;
        match events.len() {
            0 => Err("expected events, one per line\n"),
            n if n > MAX_BATCH => Err("too many events in one batch\n"),
            _ => Ok(events),
        }
    }
}

// === impl Store ===

impl Store {
    fn push(&mut self, event: Event) -> u64 {
        self.last_id += 1;
        if self.events.len() == STORE_LIMIT {
            self.events.pop_front();
        }
        self.events.push_back((self.last_id, event.0));
        self.last_id
    }

    fn get(&self, id: u64) -> Option<&str> {
        let first = self.events.front()?.0;
        let at = usize::try_from(id.checked_sub(first)?).ok()?;
        self.events.get(at).map(|(_, e)| e.as_str())
    }

    fn count(&self, word: &str) -> usize {
        self.events.iter().filter(|(_, e)| e.contains(word)).count()
    }
}

// === impl QueueWatch ===

impl QueueWatch {
    /// The peaks so far, indexed like [`Kind::ALL`].
    pub fn peaks(&self) -> [Peak; 4] {
        *lock(&self.peaks)
    }

    /// The peak of `kind` so far.
    pub fn peak(&self, kind: Kind) -> Peak {
        self.peaks()[kind.index()]
    }

    /// Forgets the peaks (say, at the start of a phase).
    pub fn reset(&self) {
        *lock(&self.peaks) = [Peak::default(); 4];
    }
}

impl Drop for QueueWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// === impl Op ===

impl Op {
    /// The kind it is.
    pub fn kind(&self) -> Kind {
        match self {
            Op::Index(_) => Kind::Index,
            Op::Bulk(_) => Kind::Bulk,
            Op::Search(_) => Kind::Search,
            Op::Get(_) => Kind::Get,
        }
    }

    /// The request to the service at `base_url`; add headers (say,
    /// `x-correlation-id`), then [`body`](Self::body).
    pub fn request(&self, base_url: &str) -> http::request::Builder {
        match self {
            Op::Index(_) => http::Request::post(format!("{base_url}/events")),
            Op::Bulk(_) => http::Request::post(format!("{base_url}/bulk")),
            Op::Search(word) => http::Request::get(format!("{base_url}/search?q={word}")),
            Op::Get(id) => http::Request::get(format!("{base_url}/events/{id}")),
        }
    }

    /// The request's body.
    pub fn body(&self) -> Body {
        match self {
            Op::Index(event) => Body::from(event.clone()),
            Op::Bulk(events) => Body::from(events.join("\n")),
            Op::Search(_) | Op::Get(_) => Body::default(),
        }
    }
}

// === impl Reply ===

impl Reply {
    /// Whether it is a refusal a client can retry later: `429` or `503`
    /// with a `Retry-After`.
    pub fn is_refusal(&self) -> bool {
        matches!(self.status.as_u16(), 429 | 503) && self.retry_after.is_some()
    }
}

/// Sends `req` through `client` and reads the whole answer.
async fn send(client: &HttpClient, req: http::Request<Body>) -> Result<Reply, BoxError> {
    let started = Instant::now();
    let rsp = client.clone().oneshot(req).await?;
    let status = rsp.status();
    let headers = rsp.headers();
    // Delta-seconds only: what the family sends (an HTTP date is ignored).
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let correlation_id = headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        retry_after,
        correlation_id,
        body: String::from_utf8_lossy(&body).into_owned(),
        elapsed: started.elapsed(),
    })
}

// === impl SourceSettings ===

impl SourceSettings {
    /// Device telemetry: `rate` events per second from 40 devices, one
    /// event per request, honouring `Retry-After`.
    pub fn telemetry(rate: u32) -> Self {
        Self {
            kind: Kind::Index,
            rate,
            devices: 40,
            batch: 1,
            honour_retry_after: true,
        }
    }

    /// Batches of `batch` events, `rate` per second from 10 senders,
    /// honouring `Retry-After`.
    pub fn bulk(rate: u32, batch: usize) -> Self {
        Self {
            kind: Kind::Bulk,
            rate,
            devices: 10,
            batch,
            honour_retry_after: true,
        }
    }

    /// `rate` searches per second from 10 users, honouring `Retry-After`.
    pub fn searches(rate: u32) -> Self {
        Self {
            kind: Kind::Search,
            rate,
            devices: 10,
            batch: 1,
            honour_retry_after: true,
        }
    }

    /// `rate` gets per second (ids `1..=100` in turn) from 10 users,
    /// honouring `Retry-After`.
    pub fn gets(rate: u32) -> Self {
        Self {
            kind: Kind::Get,
            ..Self::searches(rate)
        }
    }

    /// The same, but refusals do not slow it down.
    #[must_use]
    pub fn ignoring_retry_after(mut self) -> Self {
        self.honour_retry_after = false;
        self
    }

    /// The `n`th request, from `device`.
    fn op(&self, n: u64, device: usize) -> Op {
        let event = |i: u64| format!("device-{device} seq={i} temp={}.{}", 18 + i % 7, i % 10);
        match self.kind {
            Kind::Index => Op::Index(event(n)),
            Kind::Bulk => {
                let batch = self.batch.max(1) as u64;
                Op::Bulk((0..batch).map(|i| event(n * batch + i)).collect())
            }
            Kind::Search => Op::Search(format!("device-{}", device % 10)),
            Kind::Get => Op::Get(n % 100 + 1),
        }
    }
}

// === impl Latencies ===

impl Latencies {
    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p`th percentile (`0.0..=100.0`, nearest rank), if any.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let n = self.0.len();
        if n == 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
        Some(self.0[rank.clamp(1, n) - 1])
    }

    /// The longest, if any.
    pub fn max(&self) -> Option<Duration> {
        self.0.last().copied()
    }

    /// All of them, shortest first.
    pub fn as_slice(&self) -> &[Duration] {
        &self.0
    }

    fn sorted(mut v: Vec<Duration>) -> Self {
        v.sort_unstable();
        Self(v)
    }
}

impl fmt::Display for Latencies {
    /// `p50 12 ms, p99 15 ms` (or `none`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.percentile(50.0), self.percentile(99.0)) {
            (Some(p50), Some(p99)) => write!(
                f,
                "p50 {:.1} ms, p99 {:.1} ms",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            ),
            _ => f.write_str("none"),
        }
    }
}

// === impl Source ===

impl Source {
    /// Starts sending to the service at `url` through `client`. Call it
    /// within a tokio runtime.
    pub fn start(client: HttpClient, url: impl Into<String>, settings: SourceSettings) -> Self {
        let devices = settings.devices.max(1);
        let state = Arc::new(SourceState {
            settings,
            client,
            url: url.into(),
            started: Instant::now(),
            backoff: (0..devices).map(|_| AtomicU64::new(0)).collect(),
            tally: Mutex::new(Tally::default()),
        });
        let (stop, stopped) = oneshot::channel();
        let pump = tokio::spawn(state.clone().pump(stopped));
        Self {
            state,
            stop: Some(stop),
            pump,
        }
    }

    /// The counts so far (requests in flight are not counted yet).
    pub fn counts(&self) -> SourceCounts {
        lock(&self.state.tally).counts
    }

    /// Stops sending, waits for the requests in flight, and reports.
    pub async fn stop(mut self) -> SourceReport {
        drop(self.stop.take());
        // The pump only ends by the stop signal; a panic would be a bug.
        if let Err(err) = (&mut self.pump).await {
            std::panic::resume_unwind(err.into_panic());
        }
        let tally = std::mem::take(&mut *lock(&self.state.tally));
        SourceReport {
            counts: tally.counts,
            accepted: Latencies::sorted(tally.accepted),
            rejected: Latencies::sorted(tally.rejected),
            first_rejection: tally.first_rejection,
        }
    }
}

// === impl SourceState ===

impl SourceState {
    /// Sends one request per tick, each in its own task, until `stopped`
    /// fires (or its sender is dropped); then waits for those in flight.
    async fn pump(self: Arc<Self>, mut stopped: oneshot::Receiver<()>) {
        let rate = self.settings.rate.max(1);
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        // Open loop: a late tick is made up for, not skipped.
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut in_flight = JoinSet::new();
        let devices = self.backoff.len();
        for n in 0u64.. {
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                _ = tick.tick() => {}
            }
            while in_flight.try_join_next().is_some() {}
            let device = (n % devices as u64) as usize;
            if self.settings.honour_retry_after && self.backing_off(device) {
                lock(&self.tally).counts.deferred += 1;
                continue;
            }
            lock(&self.tally).counts.sent += 1;
            in_flight.spawn(self.clone().one(n, device));
        }
        while in_flight.join_next().await.is_some() {}
    }

    fn backing_off(&self, device: usize) -> bool {
        let until = self.backoff[device].load(Ordering::Relaxed);
        until > micros(self.started.elapsed())
    }

    async fn one(self: Arc<Self>, n: u64, device: usize) {
        let op = self.settings.op(n, device);
        let id = format!("{}-{device}-{n}", op.kind());
        let req = op
            .request(&self.url)
            .header("x-correlation-id", id)
            .body(op.body())
            .expect("a valid request");
        let result = send(&self.client, req).await;
        let mut tally = lock(&self.tally);
        let reply = match result {
            Ok(reply) => reply,
            Err(error) => {
                tracing::debug!(%error, "request failed");
                tally.counts.errors += 1;
                return;
            }
        };
        let accepted = reply.status.is_success()
            || (op.kind() == Kind::Get && reply.status == StatusCode::NOT_FOUND);
        if accepted {
            tally.counts.accepted += 1;
            tally.accepted.push(reply.elapsed);
        } else if let (true, Some(after)) = (reply.is_refusal(), reply.retry_after) {
            tally.counts.rejected += 1;
            tally.rejected.push(reply.elapsed);
            let until = micros(self.started.elapsed().saturating_add(after));
            self.backoff[device].fetch_max(until, Ordering::Relaxed);
            tally.first_rejection.get_or_insert(reply);
        } else {
            tracing::debug!(status = %reply.status, "unexpected answer");
            tally.counts.errors += 1;
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

// === impl Demo ===

impl Demo {
    /// Serves `ingest` on loopback (an ephemeral port), with an empty store.
    ///
    /// # Errors
    /// - the port cannot be bound, or the settings are invalid
    pub async fn start(settings: &IngestSettings) -> Result<Self, BoxError> {
        let ingest = Ingest::new(settings)?;
        let addr = serve(ingest.app()).await?;
        Ok(Self {
            ingest,
            url: format!("http://{addr}"),
            client: http_client(Duration::from_secs(10)),
        })
    }

    /// Sends `req` as an outside caller would.
    ///
    /// # Errors
    /// - the call failed (10 s timeout), or the body could not be read
    pub async fn send(&self, req: http::Request<Body>) -> Result<Reply, BoxError> {
        send(&self.client, req).await
    }

    /// Sends `op`.
    ///
    /// # Errors
    /// - as [`send`](Self::send)
    pub async fn call(&self, op: &Op) -> Result<Reply, BoxError> {
        self.send(op.request(&self.url).body(op.body())?).await
    }

    /// Starts a [`Source`] sending to the service.
    pub fn source(&self, settings: SourceSettings) -> Source {
        Source::start(self.client.clone(), self.url.clone(), settings)
    }
}
