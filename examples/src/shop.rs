//! Reference service 2, shop and inventory: 4xx against 5xx, timeouts,
//! correlation ids, client-side discovery and semantic monitoring.
//!
//! A `shop` takes orders (`POST /order/{item}?country=DE`). Its `invoice`
//! step reads the order, then asks `inventory`'s `warehouse` step to reserve
//! the item (`POST /reserve/{item}?country=DE`). `inventory` runs as several
//! instances on loopback; the shop finds them through service discovery and
//! sends each call through the standard client stack
//! ([`resilience::client`]), built from the `[client]` table of the shop's
//! one configuration file, `examples/config/shop.toml` ([`client_config`]):
//!
//! ```ignore
//! let inventory = ClientStack::builder(client_config())
//!     .endpoints(endpoints)
//!     .build_http::<Body>()?;
//! ```
//!
//! ```text
//! call deadline + PropagateContext  900 ms for the call, tries included (or the order's own, if
//!  │                                sooner); the order's correlation id, priority, deadline go along
//!  └ RetryLayer             a failed try (timeout, transport error, 5xx) again, on another instance,
//!     │                     within the call's deadline and a retry budget
//!     └ ThrottleLayer       adaptive: backs off sheddable calls while inventory refuses many
//!        └ RoundRobin       the next healthy instance, one the order has not tried yet;
//!           │               GET /health every interval (active checks), ejection after consecutive
//!           │               5xx or timeouts (passive)
//!           └ a breaker per instance  5xx and timeouts count, 4xx do not; an instance whose
//!              │                      circuit is open is skipped by the balancer
//!              └ TimeoutLayer  per instance and try: a timeout counts against the slow instance
//!                 └ hyper client  one connection pool shared by the instances
//! ```
//!
//! **Retries, safely.** A reservation is a `POST`, which a retry layer
//! never sends twice on its own: the shop marks each one with an
//! `Idempotency-Key` header, the order's id (its correlation id), and over
//! gRPC opts `Reserve` in ([`RESERVE_PATH`], whose request carries the
//! order id). That is safe because inventory's
//! reservations are idempotent per order id: an instance reserves from the
//! stock table every instance shares and changes nothing in it, so reserving
//! an order a second time, on the same instance or another, answers the
//! same and reserves nothing more. The retry layer sits above the balancer
//! and the breakers, so each try picks an instance anew, one the order has
//! not tried; a refusal (throttled, no instance to pick) is never retried.
//! Each try has [`ShopSettings::timeout`], the call as a whole
//! [`ShopSettings::attempts`] times that (or less: the order's own
//! deadline); [`Shop::retry`] counts the retries.
//!
//! What it shows:
//!
//! - **4xx is the caller's fault.** An unknown country code (`400`) or an
//!   unknown item (`404`) goes back to the customer as it is, and counts
//!   against nobody: every breaker stays closed and no instance is
//!   ejected, however many there are.
//! - **5xx and timeouts count.** An instance that answers `500` is ejected
//!   after [`ShopSettings::ejection_failures`] failures in a row, and the
//!   others take its traffic (the orders it failed were tried again on
//!   another instance); an instance whose `/health` answers `503`
//!   gets no traffic from its next failed checks on, without a failed order.
//! - **Without a timeout you cannot tell slow from dead.** A hanging
//!   instance costs an order at most [`ShopSettings::timeout`] before it is
//!   tried on another instance; the timeout is a failure of that instance,
//!   which ejects it like a `500`.
//! - **An outage downstream does not take the shop down.** With every
//!   instance failing, every instance's breaker opens and the shop answers
//!   at once, without a call: `503` with `Retry-After` (when the first
//!   circuit half-opens) and a [`DEGRADED_HEADER`] saying why
//!   (`inventory=circuit open`). Its own `/health` stays `200`: the shop
//!   is up, ordering is paused. One failing instance opens its own
//!   circuit only ([`Shop::breakers`], one per instance): the others keep
//!   serving.
//! - **One id per operation.** The shop and the instance that served the
//!   order log with the same correlation id, and no handler passes it by
//!   hand (run the binary to see it):
//!
//!   ```text
//!   12:00:01 [invoice] WARN [123-gda] Unknown country code country=XX
//!   12:00:01 [warehouse] ERROR [123-gda] Invalid country code country=XX instance=inventory-2
//!   ```
//! - **Elasticity.** An instance inserted at run time
//!   ([`RoundRobinHandle::insert`], [`Demo::add_instance`]) takes its share
//!   of the orders once its first health check passes.
//! - **Semantic monitoring.** A [`SyntheticMonitor`] places an order for a
//!   CD every interval, as a customer would, and records whether "people
//!   can order CDs", with a timestamp: red during an outage, green after.
//!
//! Each [`Inventory`] instance has a switch ([`Inventory::set_mode`]):
//! healthy, failing (`500`), hanging (never answers an order), or draining
//! (its `/health` answers `503`, orders are still served). It counts the
//! orders and health checks that reach it and remembers what came with each
//! order ([`Inventory::seen`]: correlation id, trace id, priority, time
//! left). Every answer of an instance names it in [`SERVED_BY_HEADER`], and
//! the shop passes that on.
//!
//! **Over gRPC.** The same instances also serve `inventory.v1.Inventory`
//! over gRPC, and [`Shop::new_grpc`] ([`Demo::start_grpc`]) calls them that
//! way instead of HTTP: the same story with `UNAVAILABLE` for `500`,
//! `NOT_FOUND` / `INVALID_ARGUMENT` for `404` / `400`, `grpc.health.v1`
//! for `GET /health`, and the same client stack over tonic channels; see
//! the [`grpc`](crate::grpc) module (retries included). HTTP stays the
//! default.
//!
//! # Example
//!
//! ```
//! use resilience_examples::shop::{Demo, Mode, client_config};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), resilience_core::BoxError> {
//! let demo = Demo::start(client_config()).await?;
//!
//! let order = demo.order("cd", "DE", "123-gda").await?;
//! assert_eq!(order.status, 200);
//! let served_by = order.served_by.as_deref().unwrap();
//! assert!(demo.instance(served_by).saw_correlation_id("123-gda"));
//!
//! // The caller's mistake: a 400, passed on, and nobody's failure.
//! let order = demo.order("cd", "XX", "124-gda").await?;
//! assert_eq!(order.status, 400);
//! let breakers = demo.shop.breakers().unwrap().snapshot();
//! assert!(breakers.iter().all(|(_, b)| b.failures() == 0));
//!
//! demo.instance("inventory-2").set_mode(Mode::Failing);
//! println!("{}", demo.shop.status()); // inventory-1=healthy (breaker closed, 1 calls, 0 failed) ...
//! # Ok(()) }
//! ```
//!
//! Run the scripted scenario: `cargo run -p resilience-examples --bin shop`
//! (over gRPC: `-- --grpc`)

use std::collections::{HashMap, VecDeque};
use std::error::Error;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use resilience::client::{ClientConfig, ClientHandles, ClientStack, ClientStackBuilder};
use resilience::server::{ServerConfig, ServerStackLayer};
use resilience_circuit_breaker::throttle::{ThrottleConfig, ThrottleHandle};
use resilience_circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerHandle, CircuitState, EndpointBreakersHandle,
};
use resilience_core::error::find_in_chain;
use resilience_core::http::retry_after_value;
use resilience_core::{
    BoxError, Classify, ConfigError, Deadline, Elapsed, Priority, Rejected, RejectionKind,
};
use resilience_correlation::{CorrelationLayer, RequestContext};
use resilience_discovery::health::HealthCheckConfig;
use resilience_discovery::source::SourceStream;
use resilience_discovery::{Endpoint, EndpointState, RoundRobinConfig, RoundRobinHandle};
use resilience_retry::{IDEMPOTENCY_KEY, RetryConfig, RetryHandle};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::Instrument;

use crate::grpc::{
    GrpcInstance, GrpcServerSettings, GrpcTransport, InventoryClient, RESERVE_PATH, ReserveRequest,
    SERVICE_NAME,
};
use crate::{Body, HttpClient, http_client, serve};

/// The header naming the inventory instance that served a call, on the
/// instance's answers and on the shop's.
pub const SERVED_BY_HEADER: &str = "x-served-by";

/// The header of a degraded answer of the shop, e.g. `inventory=timeout`.
pub const DEGRADED_HEADER: &str = "x-degraded";

/// The endpoint metadata key holding an instance's name.
pub const NAME_KEY: &str = "name";

/// The items inventory knows, and how many are in stock.
const STOCK: [(&str, u32); 3] = [("cd", 12), ("dvd", 7), ("book", 30)];

/// The countries the shop invoices and inventory ships to.
const COUNTRIES: [&str; 5] = ["DE", "FR", "GB", "NL", "US"];

/// How an inventory instance behaves; flip it at run time with
/// [`Inventory::set_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Serves orders; `/health` answers `200`.
    Healthy = 0,
    /// Answers every order `500 Internal Server Error`; `/health` still
    /// answers `200` (the process is up, its work fails: only real traffic
    /// shows it).
    Failing = 1,
    /// Never answers an order (the caller's timeout decides); `/health`
    /// still answers `200`.
    Hanging = 2,
    /// `/health` answers `503` (the instance asks to be taken out of
    /// rotation); orders that still reach it are served.
    Draining = 3,
}

/// One inventory instance and its run-time switch. Cheap to clone; clones
/// share the switch and the counters.
#[derive(Debug, Clone)]
pub struct Inventory {
    name: Arc<str>,
    state: Arc<Switch>,
}

/// The shop's timeouts, retries, breakers, health checks and ejection, as
/// knobs in code: [`client_config`](Self::client_config) makes the client
/// stack's configuration of them. The shop's own file,
/// `examples/config/shop.toml` ([`client_config`]),
/// holds [`ShopSettings::DEMO`]; tests turn the knobs.
#[derive(Debug, Clone)]
pub struct ShopSettings {
    /// Timeout of each call to an inventory instance (of each try).
    pub timeout: Duration,
    /// Tries per reservation, the first included (`1`: no retry; at most
    /// 10); a call as a whole may take `attempts` times
    /// [`timeout`](Self::timeout), or less when the order's deadline is
    /// nearer.
    pub attempts: u32,
    /// Calls each instance's breaker remembers (a count window), and needs
    /// before it decides; it opens when half of them or more failed.
    pub window: u32,
    /// How long an opened breaker fails fast before it lets one probe
    /// through (doubles on each re-open without a close, up to 4 times
    /// this).
    pub open_for: Duration,
    /// Time between two `GET /health` checks of an instance (an instance is
    /// unhealthy after 2 failed checks in a row, healthy after 1 passing
    /// one).
    pub health_interval: Duration,
    /// How long a health check may take before it counts as failed.
    pub health_timeout: Duration,
    /// Failures (5xx, timeouts) in a row that eject an instance.
    pub ejection_failures: u32,
    /// How long a first ejection lasts (the n-th lasts n times as long, up
    /// to 4 times this).
    pub ejection_time: Duration,
}

/// The `shop` service: its inventory client stack (the standard
/// [`ClientStack`]) and the stack's handles: retries, throttle, balancer,
/// a breaker per instance.
///
/// Cheap to clone; clones share the client stack.
#[derive(Debug, Clone)]
pub struct Shop {
    inner: Arc<ShopInner>,
}

/// The inventory instances and the shop, served on loopback: what the
/// binary and the tests run.
#[derive(Debug)]
pub struct Demo {
    /// The shop (for its breakers and balancer).
    pub shop: Shop,
    /// The shop's base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    instances: Vec<Inventory>,
    grpc: Vec<GrpcInstance>,
    grpc_server: Option<GrpcServerSettings>,
    client: HttpClient,
}

/// An order as the demo's client saw it.
#[derive(Debug, Clone)]
pub struct OrderResponse {
    /// The status: `200` placed, `4xx` the order was wrong, `503` ordering
    /// is paused.
    pub status: StatusCode,
    /// The correlation id the shop returned.
    pub correlation_id: Option<String>,
    /// The inventory instance that served the order, if one answered.
    pub served_by: Option<String>,
    /// The `x-degraded` header: why inventory could not be had.
    pub degraded: Option<String>,
    /// The `Retry-After` header, in seconds.
    pub retry_after: Option<String>,
    /// The answer's text.
    pub body: String,
    /// How long the order took.
    pub elapsed: Duration,
}

/// A synthetic customer checking that "people can order CDs": it orders a
/// CD through the shop every interval and records each check.
///
/// The checks run on a task that stops when the monitor is dropped.
#[derive(Debug)]
pub struct SyntheticMonitor {
    record: Arc<Mutex<Record>>,
    task: AbortHandle,
}

/// One synthetic check.
#[derive(Debug, Clone)]
pub struct Check {
    /// The check's number, from 1.
    pub seq: u64,
    /// When it started.
    pub at: SystemTime,
    /// Whether a CD could be ordered.
    pub passed: bool,
    /// The shop's status, if it answered.
    pub status: Option<StatusCode>,
    /// What the shop said, or why there was no answer.
    pub detail: String,
    /// The check's correlation id, `synthetic-<seq>`.
    pub correlation_id: String,
    /// How long it took.
    pub elapsed: Duration,
}

struct Switch {
    mode: AtomicU8,
    orders: AtomicU64,
    health_checks: AtomicU64,
    seen: Mutex<VecDeque<SeenOrder>>,
}

/// What an instance saw of an order: the context that came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenOrder {
    /// The correlation id.
    pub correlation_id: String,
    /// The W3C trace id (32 hex digits).
    pub trace_id: String,
    /// The priority.
    pub priority: Priority,
    /// The time that was left of the order's deadline when it arrived, if
    /// it came with one (`x-deadline-ms`, `grpc-timeout`).
    pub deadline_left: Option<Duration>,
    /// How it came: `"http"` or `"grpc"`.
    pub over: &'static str,
    /// The order's id, if it came with one (HTTP `Idempotency-Key`, gRPC
    /// `order_id`): the same on every try of one order.
    pub order_id: Option<String>,
}

/// What an instance made of an order (before HTTP or gRPC says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reservation {
    /// Reserved; `left` in stock.
    Reserved { left: u32 },
    /// The instance is failing.
    Failing,
    /// The country is not one inventory ships to.
    InvalidCountry,
    /// No such item.
    UnknownItem,
}

#[derive(Debug)]
struct ShopInner {
    /// A call's whole time, tries included (the client's deadline).
    call_timeout: Duration,
    inventory: InventoryCalls,
    handles: ClientHandles,
}

/// The shop's configuration file, `examples/config/shop.toml`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    server: ServerConfig,
    client: ClientConfig,
}

/// How the shop calls inventory.
#[derive(Debug, Clone)]
enum InventoryCalls {
    /// `POST /reserve/{item}?country=XX`.
    Http(HttpClient),
    /// `inventory.v1.Inventory/Reserve`.
    Grpc(InventoryClient<GrpcTransport>),
}

/// Why inventory could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unavailable {
    /// The instance did not answer within the timeout.
    Timeout,
    /// The breaker is open: the call was not made.
    CircuitOpen,
    /// No instance is healthy.
    NoInstance,
    /// The instance failed: a 5xx, a gRPC failure, or a transport error.
    Error(String),
    /// Inventory is overloaded: an instance answered `RESOURCE_EXHAUSTED`.
    Overloaded,
    /// The shop's own throttle refused the call: inventory has been
    /// refusing calls lately.
    Throttled,
}

#[derive(Debug, Default)]
struct Record {
    checks: VecDeque<Check>,
    passed: u64,
    failed: u64,
}

// === impl Mode ===

impl Mode {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Mode::Failing,
            2 => Mode::Hanging,
            3 => Mode::Draining,
            _ => Mode::Healthy,
        }
    }
}

// === impl Inventory ===

impl Inventory {
    /// Correlation ids remembered per instance (the latest ones).
    const KEEP_IDS: usize = 256;

    /// A healthy instance called `name` (e.g. `inventory-1`).
    pub fn new(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            state: Arc::new(Switch {
                mode: AtomicU8::new(Mode::Healthy as u8),
                orders: AtomicU64::new(0),
                health_checks: AtomicU64::new(0),
                seen: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// The instance's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Switches how it behaves from the next request on.
    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// How it behaves now.
    pub fn mode(&self) -> Mode {
        Mode::from_u8(self.state.mode.load(Ordering::Relaxed))
    }

    /// Orders (`/reserve` calls) that reached the instance, whatever its
    /// mode and whatever it answered.
    pub fn orders(&self) -> u64 {
        self.state.orders.load(Ordering::Relaxed)
    }

    /// `GET /health` calls that reached the instance.
    pub fn health_checks(&self) -> u64 {
        self.state.health_checks.load(Ordering::Relaxed)
    }

    /// Whether an order with correlation id `id` reached the instance.
    pub fn saw_correlation_id(&self, id: &str) -> bool {
        self.seen(id).is_some()
    }

    /// What the instance saw of the latest order with correlation id `id`.
    pub fn seen(&self, id: &str) -> Option<SeenOrder> {
        self.seen_orders()
            .iter()
            .rev()
            .find(|seen| seen.correlation_id == id)
            .cloned()
    }

    /// Counts a health check; returns the mode it answers for.
    pub(crate) fn count_health_check(&self) -> Mode {
        self.state.health_checks.fetch_add(1, Ordering::Relaxed);
        self.mode()
    }

    /// The router: `POST /reserve/{item}?country=XX` behind
    /// [`CorrelationLayer`], and `GET /health` (no correlation: a probe is
    /// not an operation).
    pub fn app(&self) -> Router {
        async fn reserve(
            State(inventory): State<Inventory>,
            Path(item): Path<String>,
            Query(query): Query<HashMap<String, String>>,
            headers: http::HeaderMap,
        ) -> Response {
            let country = query.get("country").cloned().unwrap_or_default();
            let order_id = headers
                .get(IDEMPOTENCY_KEY)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            inventory
                .reserve(item, country, order_id)
                .instrument(tracing::info_span!("warehouse"))
                .await
        }
        async fn health(State(inventory): State<Inventory>) -> (StatusCode, &'static str) {
            match inventory.count_health_check() {
                Mode::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
                _ => (StatusCode::OK, "ok\n"),
            }
        }
        Router::new()
            .route("/reserve/{item}", post(reserve))
            .layer(CorrelationLayer::new())
            .route("/health", get(health))
            .with_state(self.clone())
    }

    /// The `warehouse` step: reserves one `item` for shipping to `country`.
    async fn reserve(self, item: String, country: String, order_id: Option<String>) -> Response {
        let (status, body) = match self.take_order(&item, &country, order_id, "http").await {
            Reservation::Failing => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error\n".to_owned(),
            ),
            Reservation::InvalidCountry => {
                (StatusCode::BAD_REQUEST, "invalid country code\n".to_owned())
            }
            Reservation::Reserved { left } => (
                StatusCode::OK,
                format!("reserved 1 {item} for {country}, {left} in stock\n"),
            ),
            Reservation::UnknownItem => (StatusCode::NOT_FOUND, "unknown item\n".to_owned()),
        };
        let mut rsp = (status, body).into_response();
        if let Ok(name) = HeaderValue::from_str(&self.name) {
            rsp.headers_mut().insert(SERVED_BY_HEADER, name);
        }
        rsp
    }

    /// Takes an order that came `over` HTTP or gRPC: counts it, remembers
    /// its context, and decides (never returns when the instance hangs).
    ///
    /// Idempotent per order id: reserving reads the stock table the
    /// instances share and changes nothing in it, so the same order taken
    /// twice (a retry, here or on another instance) answers the same and
    /// reserves nothing more.
    pub(crate) async fn take_order(
        &self,
        item: &str,
        country: &str,
        order_id: Option<String>,
        over: &'static str,
    ) -> Reservation {
        self.state.orders.fetch_add(1, Ordering::Relaxed);
        if let Some(ctx) = RequestContext::current() {
            let seen = SeenOrder {
                correlation_id: ctx.correlation_id().as_str().to_owned(),
                trace_id: ctx.trace().trace_id().to_string(),
                priority: ctx.priority(),
                deadline_left: ctx.deadline().map(|d| d.remaining_at(Instant::now())),
                over,
                order_id,
            };
            let mut orders = self.seen_orders();
            if orders.len() == Self::KEEP_IDS {
                orders.pop_front();
            }
            orders.push_back(seen);
        }
        let instance = &*self.name;
        match self.mode() {
            Mode::Failing => {
                tracing::error!(%item, %instance, "failing (switched to fail)");
                Reservation::Failing
            }
            Mode::Hanging => {
                tracing::warn!(%item, %instance, "hanging (switched to hang)");
                std::future::pending().await
            }
            Mode::Healthy | Mode::Draining => {
                if !COUNTRIES.contains(&country) {
                    tracing::error!(%country, %instance, "Invalid country code");
                    Reservation::InvalidCountry
                } else if let Some((_, left)) = STOCK.iter().find(|(name, _)| *name == item) {
                    tracing::info!(%item, %country, %instance, "reserved");
                    Reservation::Reserved { left: *left }
                } else {
                    tracing::warn!(%item, %instance, "Unknown item");
                    Reservation::UnknownItem
                }
            }
        }
    }

    fn seen_orders(&self) -> MutexGuard<'_, VecDeque<SeenOrder>> {
        // Nothing can panic while the lock is held: a poisoned list is fine.
        self.state
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Switch")
            .field("mode", &Mode::from_u8(self.mode.load(Ordering::Relaxed)))
            .field("orders", &self.orders.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The shop's server stack, from `examples/config/shop.toml`'s `[server]`
/// (context in, timeout, bounded queue, refusals answered).
pub fn server_config() -> ServerConfig {
    config_file().server
}

/// The shop's inventory client stack, from `examples/config/shop.toml`'s
/// `[client]`: the values of [`ShopSettings::DEMO`] (propagation, a 900 ms
/// deadline, 3 tries of 300 ms on different instances, the adaptive
/// throttle, round robin with health checks and ejection, a breaker per
/// instance). Give it to [`Shop::new`] or [`Demo::start`].
pub fn client_config() -> ClientConfig {
    config_file().client
}

fn config_file() -> ConfigFile {
    toml::from_str(include_str!("../config/shop.toml"))
        .expect("examples/config/shop.toml is a valid configuration")
}

// === impl ShopSettings ===

impl ShopSettings {
    /// Settings for a demo, the values of `examples/config/shop.toml`: a
    /// 300 ms timeout, 3 tries, breakers that decide after 6 calls and stay
    /// open for 1 s, health checks every 100 ms that time out after 150 ms,
    /// ejection after 3 failures in a row for 2 s (so that a dead instance
    /// fails its health checks before its ejection ends).
    pub const DEMO: ShopSettings = ShopSettings {
        timeout: Duration::from_millis(300),
        attempts: 3,
        window: 6,
        open_for: Duration::from_secs(1),
        health_interval: Duration::from_millis(100),
        health_timeout: Duration::from_millis(150),
        ejection_failures: 3,
        ejection_time: Duration::from_secs(2),
    };

    /// The configuration of the inventory client stack: the call's
    /// deadline ([`call_timeout`](Self::call_timeout)), the attempt
    /// timeout, and the configurations of the methods below.
    ///
    /// # Errors
    /// - as the methods below; `timeout` is zero
    pub fn client_config(&self) -> Result<ClientConfig, ConfigError> {
        ClientConfig::builder("inventory")
            .deadline(self.call_timeout())
            .attempt_timeout(self.timeout)
            .retry(self.retry_config()?)
            .throttle(self.throttle_config()?)
            .breaker(self.breaker_config()?)
            .balancer(self.balancer_config()?)
            .health_check(self.health_config()?)
            .build()
    }

    /// The adaptive throttle: sheddable calls backed off while inventory
    /// refuses many, over 10 s (from its 20th call in the window on).
    ///
    /// # Errors
    /// - never with these values; kept fallible as the others
    pub fn throttle_config(&self) -> Result<ThrottleConfig, ConfigError> {
        ThrottleConfig::builder()
            .name("inventory")
            .adaptive()
            .window(Duration::from_secs(10))
            .build()
    }

    /// The breaker of each inventory instance.
    ///
    /// # Errors
    /// - `window` is zero or above 1,000,000, or `open_for` is zero
    pub fn breaker_config(&self) -> Result<CircuitBreakerConfig, ConfigError> {
        CircuitBreakerConfig::builder()
            .name("inventory")
            .count_window(self.window)
            .minimum_calls(self.window)
            .failure_rate_threshold(50.0)
            .open_for(self.open_for)
            .max_open_for(self.open_for.saturating_mul(4))
            .jitter(0.0) // a demo wants exact times; keep the default ±10% in production
            .half_open_probes(1)
            .build()
    }

    /// The retries of the inventory calls: `attempts` tries, the
    /// reservations opted in (they carry an `Idempotency-Key` over HTTP;
    /// over gRPC, [`RESERVE_PATH`]), and a `500` of an instance retried
    /// too, since reserving is idempotent per order.
    ///
    /// # Errors
    /// - `attempts` is not 1 to 10
    pub fn retry_config(&self) -> Result<RetryConfig, ConfigError> {
        RetryConfig::builder()
            .name("inventory")
            .max_attempts(self.attempts)
            .retryable_status(500)
            .grpc_method(RESERVE_PATH)
            .build()
    }

    /// How long a call to inventory may take as a whole: `attempts` times
    /// `timeout`.
    pub fn call_timeout(&self) -> Duration {
        self.timeout.saturating_mul(self.attempts.max(1))
    }

    /// The balancer's passive ejection.
    ///
    /// # Errors
    /// - `ejection_time` is zero while `ejection_failures` is not
    pub fn balancer_config(&self) -> Result<RoundRobinConfig, ConfigError> {
        RoundRobinConfig::builder()
            .name("inventory")
            .consecutive_failures(self.ejection_failures)
            .base_ejection_time(self.ejection_time)
            .max_ejection_time(self.ejection_time.saturating_mul(4))
            .build()
    }

    /// The active health checks: `GET /health` every `health_interval`.
    ///
    /// # Errors
    /// - `health_interval` or `health_timeout` is zero
    pub fn health_config(&self) -> Result<HealthCheckConfig, ConfigError> {
        HealthCheckConfig::builder()
            .path("/health")
            .interval(self.health_interval)
            .timeout(self.health_timeout)
            .unhealthy_threshold(2)
            .healthy_threshold(1)
            .build()
    }
}

// === impl Shop ===

impl Shop {
    /// A shop calling the inventory instances at `endpoints` (name each
    /// one with the [`NAME_KEY`] metadata for readable snapshots) through
    /// the standard client stack `config` describes ([`client_config`]:
    /// the shop's file; [`ShopSettings::client_config`]: knobs in code).
    ///
    /// Build it inside a tokio runtime: the health checks start at once, and
    /// an instance gets orders once its first check passes.
    ///
    /// # Errors
    /// - the client stack refuses the configuration
    ///   ([`ClientStackBuilder::build_http`])
    pub fn new(
        config: ClientConfig,
        endpoints: impl IntoIterator<Item = Endpoint>,
    ) -> Result<Self, ConfigError> {
        Self::build(config, Instances::Static(endpoints.into_iter().collect()))
    }

    /// A shop calling the inventory instances that `source` reports (an
    /// etcd prefix, a DNS name, a file), watched: instances that appear
    /// take orders once healthy, instances that go are dropped.
    ///
    /// # Errors
    /// - as [`Shop::new`]
    pub fn with_source(config: ClientConfig, source: SourceStream) -> Result<Self, ConfigError> {
        Self::build(config, Instances::Source(source))
    }

    fn build(config: ClientConfig, instances: Instances) -> Result<Self, ConfigError> {
        let inventory = instances.stack(config.clone()).build_http::<Body>()?;
        Ok(Self::with_stack(&config, inventory, InventoryCalls::Http))
    }

    /// A shop calling the inventory instances at `endpoints` over gRPC
    /// (each one served by [`grpc::serve`](crate::grpc::serve)), through
    /// the same standard stack over tonic channels (see the
    /// [`grpc`](crate::grpc) module's docs): `grpc.health.v1` checks of
    /// [`SERVICE_NAME`] instead of `GET /health`, outcomes by gRPC status.
    ///
    /// # Errors
    /// - as [`Shop::new`]
    pub fn new_grpc(
        config: ClientConfig,
        endpoints: impl IntoIterator<Item = Endpoint>,
    ) -> Result<Self, ConfigError> {
        Self::build_grpc(config, Instances::Static(endpoints.into_iter().collect()))
    }

    /// [`Shop::with_source`], over gRPC.
    ///
    /// # Errors
    /// - as [`Shop::new`]
    pub fn with_source_grpc(
        config: ClientConfig,
        source: SourceStream,
    ) -> Result<Self, ConfigError> {
        Self::build_grpc(config, Instances::Source(source))
    }

    fn build_grpc(config: ClientConfig, instances: Instances) -> Result<Self, ConfigError> {
        let stack = instances.stack(config.clone());
        let inventory = stack.grpc_health_service(SERVICE_NAME).build_grpc()?;
        Ok(Self::with_stack(&config, inventory, |t| {
            InventoryCalls::Grpc(InventoryClient::new(t))
        }))
    }

    /// The shop around its inventory client stack.
    fn with_stack<S>(
        config: &ClientConfig,
        stack: ClientStack<S>,
        calls: impl FnOnce(S) -> InventoryCalls,
    ) -> Self {
        let handles = stack.handles().clone();
        Self {
            inner: Arc::new(ShopInner {
                call_timeout: config.deadline().unwrap_or(ClientConfig::DEFAULT_DEADLINE),
                inventory: calls(stack.into_service()),
                handles,
            }),
        }
    }

    /// The handles of the inventory client stack's layers.
    pub fn handles(&self) -> &ClientHandles {
        &self.inner.handles
    }

    /// The retries of the inventory calls: their budget and counters
    /// ([`RetryHandle::snapshot`]: tries, retries).
    pub fn retry(&self) -> &RetryHandle {
        self.inner.handles.retry()
    }

    /// The breakers of the inventory calls, one per instance (keyed by
    /// its address), unless the configuration removed them.
    pub fn breakers(&self) -> Option<&EndpointBreakersHandle> {
        self.inner.handles.breakers()
    }

    /// The breaker of the instance called `name`, if the balancer has it
    /// and the configuration has breakers.
    pub fn breaker_of(&self, name: &str) -> Option<CircuitBreakerHandle> {
        let addr = self.instance_addr(name)?;
        self.breakers()?.get(&addr.to_string())
    }

    /// Each instance's breaker, by instance name (in name order).
    pub fn instance_breakers(&self) -> Vec<(String, CircuitBreakerHandle)> {
        let Some(breakers) = self.breakers() else {
            return Vec::new();
        };
        let mut out: Vec<_> = self
            .balancer()
            .snapshot()
            .endpoints
            .iter()
            .filter_map(|e| {
                let breaker = breakers.get(&e.endpoint.addr().to_string())?;
                Some((instance_name(&e.endpoint), breaker))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// When every instance's circuit is open (the balancer then has no
    /// instance to pick): the soonest one half-opens.
    pub fn all_open(&self) -> Option<Duration> {
        let snapshot = self.breakers()?.snapshot();
        let mut soonest: Option<Duration> = None;
        for (_, b) in snapshot.iter() {
            if !matches!(b.state(), CircuitState::Open | CircuitState::ForcedOpen) {
                return None;
            }
            let left = b.time_until_half_open().unwrap_or(Duration::from_secs(1));
            soonest = Some(soonest.map_or(left, |s| s.min(left)));
        }
        soonest
    }

    /// The adaptive throttle of the inventory calls, unless the
    /// configuration removed it.
    pub fn throttle(&self) -> Option<&ThrottleHandle> {
        self.inner.handles.throttle()
    }

    /// The balancer over the inventory instances: its snapshot, and
    /// [`insert`](RoundRobinHandle::insert) /
    /// [`remove`](RoundRobinHandle::remove) at run time.
    pub fn balancer(&self) -> &RoundRobinHandle {
        self.inner.handles.balancer()
    }

    /// How many instances are in `state` now.
    pub fn instances_in(&self, state: EndpointState) -> usize {
        self.balancer().snapshot().count(state)
    }

    /// Waits until at least `n` instances are healthy (their first health
    /// check passed), polling every 10 ms.
    ///
    /// # Errors
    /// - fewer than `n` are healthy after `within`; the error says which
    pub async fn wait_healthy(&self, n: usize, within: Duration) -> Result<(), BoxError> {
        let deadline = Instant::now() + within;
        while self.instances_in(EndpointState::Healthy) < n {
            if Instant::now() >= deadline {
                return Err(format!(
                    "the inventory instances did not pass their first health check within {within:?}: {}",
                    self.status()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The state of the instance called `name`, if the balancer has it.
    pub fn instance_state(&self, name: &str) -> Option<EndpointState> {
        self.balancer()
            .snapshot()
            .endpoints
            .into_iter()
            .find(|e| e.endpoint.metadata().get(NAME_KEY).map(String::as_str) == Some(name))
            .map(|e| e.state)
    }

    fn instance_addr(&self, name: &str) -> Option<SocketAddr> {
        self.balancer()
            .snapshot()
            .endpoints
            .into_iter()
            .find(|e| e.endpoint.metadata().get(NAME_KEY).map(String::as_str) == Some(name))
            .map(|e| e.endpoint.addr())
    }

    /// One line with each instance's state in the balancer and its
    /// breaker's state and window, e.g. `inventory-1=healthy (breaker
    /// closed, 6 calls, 0 failed)  inventory-2=ejected (breaker open, 6
    /// calls, 6 failed, half-open in 800ms)  ...`.
    pub fn status(&self) -> String {
        let snapshot = self.balancer().snapshot();
        let breakers = self.breakers().map(EndpointBreakersHandle::snapshot);
        let mut instances: Vec<(String, String)> = snapshot
            .endpoints
            .iter()
            .map(|e| {
                let mut line = format!("{}={}", instance_name(&e.endpoint), e.state.as_str());
                let key = e.endpoint.addr().to_string();
                if let Some(b) = breakers.as_ref().and_then(|b| b.get(&key)) {
                    line.push_str(&format!(
                        " (breaker {}, {} calls, {} failed",
                        b.state(),
                        b.calls(),
                        b.failures()
                    ));
                    if let Some(left) = b.time_until_half_open() {
                        line.push_str(&format!(", half-open in {}ms", left.as_millis()));
                    }
                    line.push(')');
                }
                (instance_name(&e.endpoint), line)
            })
            .collect();
        instances.sort();
        let mut line = instances
            .into_iter()
            .map(|(_, l)| l)
            .collect::<Vec<_>>()
            .join("  ");
        if snapshot.panic {
            line.push_str("  (panic: too few healthy, traffic to all)");
        }
        line
    }

    /// The router: `POST /order/{item}?country=XX`, behind the standard
    /// server stack ([`ServerStackLayer`] with [`server_config`]: the
    /// correlation id on every log line and every inventory call, a timeout,
    /// a bounded queue, refusals answered), and `GET /health`, which answers `200` as long as the shop
    /// itself runs, whatever inventory does.
    pub fn app(&self) -> Router {
        async fn order(
            State(shop): State<Shop>,
            Path(item): Path<String>,
            Query(query): Query<HashMap<String, String>>,
        ) -> Response {
            let country = query.get("country").cloned().unwrap_or_default();
            shop.place(item, country)
                .instrument(tracing::info_span!("invoice"))
                .await
        }
        Router::new()
            .route("/order/{item}", post(order))
            .layer(ServerStackLayer::http(server_config()))
            .route("/health", get(|| async { "ok\n" }))
            .with_state(self.clone())
    }

    /// The `invoice` step: checks the order, then reserves the item.
    async fn place(self, item: String, country: String) -> Response {
        // Both go into inventory's URL: accept plain values only.
        let plain_item = !item.is_empty()
            && item.len() <= 32
            && item
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let country = country.to_ascii_uppercase();
        let plain_country = country.len() == 2 && country.chars().all(|c| c.is_ascii_uppercase());
        if !plain_item || !plain_country {
            return (StatusCode::BAD_REQUEST, "invalid order\n").into_response();
        }
        if !COUNTRIES.contains(&country.as_str()) {
            // Not the invoice's call to refuse: it cannot add tax, says so,
            // and lets the warehouse decide whether it ships there.
            tracing::warn!(%country, "Unknown country code");
        }
        tracing::info!(%item, %country, "placing order");

        // No id passed by hand: the client stack takes it from the context.
        let (status, served_by, text) = match self.call(item.clone(), &country).await {
            Ok(answer) => answer,
            Err(err) => {
                let served_by = err
                    .downcast_ref::<tonic::Status>()
                    .and_then(|s| s.metadata().get(SERVED_BY_HEADER))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let mut why = Unavailable::from_error(&*err);
                let mut retry_after = Unavailable::retry_after(&*err);
                // No instance to pick because every instance's circuit is
                // open: say so, and when the first one half-opens.
                if why == Unavailable::NoInstance {
                    if let Some(left) = self.all_open() {
                        why = Unavailable::CircuitOpen;
                        retry_after = Some(left);
                    }
                }
                let mut rsp = why.respond(served_by.as_deref(), retry_after);
                if let Some(value) = served_by.and_then(|s| HeaderValue::from_str(&s).ok()) {
                    rsp.headers_mut().insert(SERVED_BY_HEADER, value);
                }
                return rsp;
            }
        };
        let mut rsp = if status.is_success() {
            tracing::info!(%item, %country, "order placed");
            (
                StatusCode::OK,
                format!("order placed: 1 {item} to {country}\n"),
            )
                .into_response()
        } else if status == StatusCode::NOT_FOUND {
            (StatusCode::NOT_FOUND, format!("no such item: {item}\n")).into_response()
        } else if status.is_client_error() {
            tracing::warn!(%status, "inventory refused the order");
            (
                status,
                format!("cannot ship to {country}: {}", text.trim_end()) + "\n",
            )
                .into_response()
        } else {
            Unavailable::Error(format!("HTTP {}", status.as_u16()))
                .respond(served_by.as_deref(), None)
        };
        if let Some(value) = served_by.and_then(|s| HeaderValue::from_str(&s).ok()) {
            rsp.headers_mut().insert(SERVED_BY_HEADER, value);
        }
        rsp
    }

    /// Reserves `item` for `country` through the inventory stack and
    /// returns the status (a gRPC answer as its HTTP equivalent), the
    /// instance that answered and the text.
    async fn call(
        &self,
        item: String,
        country: &str,
    ) -> Result<(StatusCode, Option<String>, String), BoxError> {
        match &self.inner.inventory {
            InventoryCalls::Http(client) => {
                let url = format!("http://inventory/reserve/{item}?country={country}");
                self.call_http(client, &url).await
            }
            InventoryCalls::Grpc(client) => self.call_grpc(client, item, country.to_owned()).await,
        }
    }

    /// POSTs `url` through the HTTP stack, with the order's id as its
    /// `Idempotency-Key` (so that it may be retried). The call's deadline
    /// ([`ShopSettings::call_timeout`], or the order's if nearer) bounds the
    /// tries; the body is read within what is left of it.
    async fn call_http(
        &self,
        client: &HttpClient,
        url: &str,
    ) -> Result<(StatusCode, Option<String>, String), BoxError> {
        let deadline = Deadline::after(self.inner.call_timeout);
        let mut req = http::Request::post(url).body(Body::default())?;
        if let Some(key) = order_id().and_then(|id| HeaderValue::from_str(&id).ok()) {
            req.headers_mut().insert(IDEMPOTENCY_KEY, key);
        }
        req.extensions_mut().insert(deadline);
        let rsp = client.clone().oneshot(req).await?;
        let status = rsp.status();
        let served_by = rsp
            .headers()
            .get(SERVED_BY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let left = deadline.remaining_at(Instant::now());
        let body = tokio::time::timeout(left, rsp.into_body().collect())
            .await
            .map_err(|_| Elapsed::new())??
            .to_bytes();
        Ok((
            status,
            served_by,
            String::from_utf8_lossy(&body).into_owned(),
        ))
    }

    /// Calls `Reserve` through the gRPC stack. `NOT_FOUND` and
    /// `INVALID_ARGUMENT` come back as `404` and `400`; any other status is
    /// an error.
    async fn call_grpc(
        &self,
        client: &InventoryClient<GrpcTransport>,
        item: String,
        country: String,
    ) -> Result<(StatusCode, Option<String>, String), BoxError> {
        let order_id = order_id().unwrap_or_default();
        let mut req = tonic::Request::new(ReserveRequest {
            item,
            country,
            order_id,
        });
        // Sent as `grpc-timeout`; the propagation layer lowers it to what
        // is left of the order's own deadline, and a retry to what is left
        // when it starts.
        req.set_timeout(self.inner.call_timeout);
        req.extensions_mut()
            .insert(Deadline::after(self.inner.call_timeout));
        match client.clone().reserve(req).await {
            Ok(rsp) => {
                let reply = rsp.into_inner();
                Ok((StatusCode::OK, Some(reply.instance), reply.message))
            }
            Err(status) => {
                let code = match status.code() {
                    tonic::Code::NotFound => StatusCode::NOT_FOUND,
                    tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
                    _ => return Err(status.into()),
                };
                let served_by = status
                    .metadata()
                    .get(SERVED_BY_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                Ok((code, served_by, status.message().to_owned()))
            }
        }
    }
}

/// The id of the order being placed: its correlation id (the order's
/// context is the shop's handler's scope).
fn order_id() -> Option<String> {
    RequestContext::current().map(|ctx| ctx.correlation_id().as_str().to_owned())
}

// === impl Unavailable ===

impl Unavailable {
    /// Why a call failed, from its error.
    fn from_error(err: &(dyn Error + 'static)) -> Self {
        match find_in_chain::<Rejected>(err).map(Rejected::kind) {
            Some(RejectionKind::CircuitOpen) => Unavailable::CircuitOpen,
            Some(RejectionKind::NoHealthyEndpoint) => Unavailable::NoInstance,
            Some(RejectionKind::Throttled) => Unavailable::Throttled,
            _ if find_in_chain::<Elapsed>(err).is_some() => Unavailable::Timeout,
            // tonic's channel enforces the `grpc-timeout` it sends too.
            _ if find_in_chain::<tonic::TimeoutExpired>(err).is_some() => Unavailable::Timeout,
            _ => match err.downcast_ref::<tonic::Status>().map(tonic::Status::code) {
                Some(tonic::Code::ResourceExhausted) => Unavailable::Overloaded,
                Some(tonic::Code::DeadlineExceeded) => Unavailable::Timeout,
                Some(code) => Unavailable::Error(format!("gRPC {code:?}")),
                None => Unavailable::Error(err.to_string()),
            },
        }
    }

    /// How long the caller should wait: a retry-after of our layers, or
    /// the pushback an instance sent with its status.
    fn retry_after(err: &(dyn Error + 'static)) -> Option<Duration> {
        if let Some(after) = find_in_chain::<Rejected>(err).and_then(Classify::retry_after) {
            return Some(after);
        }
        let status = err.downcast_ref::<tonic::Status>()?;
        let ms = status
            .metadata()
            .get(resilience_core::grpc::RETRY_PUSHBACK_KEY)?
            .to_str()
            .ok()?
            .parse::<u64>()
            .ok()?;
        Some(Duration::from_millis(ms))
    }

    /// The shop's degraded answer: `503`, `Retry-After` (`retry_after`, the
    /// breaker's time left when it is open, else 1 s) and
    /// [`DEGRADED_HEADER`].
    fn respond(&self, served_by: Option<&str>, retry_after: Option<Duration>) -> Response {
        match served_by {
            Some(instance) => {
                tracing::warn!(reason = %self, %instance, "inventory unavailable, order refused");
            }
            None => tracing::warn!(reason = %self, "inventory unavailable, order refused"),
        }
        let retry_after = retry_after.unwrap_or(Duration::from_secs(1));
        let mut rsp = (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "orders are paused: inventory unavailable ({self}); please try again shortly\n"
            ),
        )
            .into_response();
        let headers = rsp.headers_mut();
        headers.insert(http::header::RETRY_AFTER, retry_after_value(retry_after));
        if let Ok(value) = HeaderValue::from_str(&format!("inventory={self}")) {
            headers.insert(DEGRADED_HEADER, value);
        }
        rsp
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::Timeout => f.write_str("timeout"),
            Unavailable::CircuitOpen => f.write_str("circuit open"),
            Unavailable::NoInstance => f.write_str("no healthy instance"),
            Unavailable::Error(detail) => write!(f, "error ({detail})"),
            Unavailable::Overloaded => f.write_str("overloaded"),
            Unavailable::Throttled => f.write_str("throttled"),
        }
    }
}

// === impl Demo ===

impl Demo {
    /// Inventory instances the demo starts with.
    pub const INSTANCES: usize = 3;

    /// Serves three inventory instances (`inventory-1` to `inventory-3`)
    /// and the shop on loopback (ephemeral ports), every instance healthy,
    /// and returns once each has passed its first health check.
    ///
    /// # Errors
    /// - a port cannot be bound, the configuration is invalid, or the
    ///   instances are not all healthy within 10 s
    pub async fn start(config: ClientConfig) -> Result<Self, BoxError> {
        let mut instances = Vec::with_capacity(Self::INSTANCES);
        let mut endpoints = Vec::with_capacity(Self::INSTANCES);
        for n in 1..=Self::INSTANCES {
            let inventory = Inventory::new(&format!("inventory-{n}"));
            endpoints.push(endpoint(&inventory, serve(inventory.app()).await?));
            instances.push(inventory);
        }
        let shop = Shop::new(config, endpoints)?;
        Self::serve_shop(shop, instances, Vec::new(), None).await
    }

    /// [`Demo::start`] over gRPC: the instances serve `inventory.v1` (see
    /// [`grpc::serve`](crate::grpc::serve)), and the shop calls them with
    /// [`Shop::new_grpc`].
    ///
    /// # Errors
    /// - as [`Demo::start`]
    pub async fn start_grpc(
        config: ClientConfig,
        server: &GrpcServerSettings,
    ) -> Result<Self, BoxError> {
        let mut instances = Vec::with_capacity(Self::INSTANCES);
        let mut servers = Vec::with_capacity(Self::INSTANCES);
        let mut endpoints = Vec::with_capacity(Self::INSTANCES);
        for n in 1..=Self::INSTANCES {
            let inventory = Inventory::new(&format!("inventory-{n}"));
            let instance = crate::grpc::serve(&inventory, server).await?;
            endpoints.push(endpoint(&inventory, instance.addr()));
            instances.push(inventory);
            servers.push(instance);
        }
        let shop = Shop::new_grpc(config, endpoints)?;
        Self::serve_shop(shop, instances, servers, Some(server.clone())).await
    }

    async fn serve_shop(
        shop: Shop,
        instances: Vec<Inventory>,
        grpc: Vec<GrpcInstance>,
        grpc_server: Option<GrpcServerSettings>,
    ) -> Result<Self, BoxError> {
        let addr = serve(shop.app()).await?;
        let demo = Self {
            shop,
            url: format!("http://{addr}"),
            instances,
            grpc,
            grpc_server,
            client: http_client(Duration::from_secs(10)),
        };
        demo.shop
            .wait_healthy(Self::INSTANCES, Duration::from_secs(10))
            .await?;
        Ok(demo)
    }

    /// Serves `inventory` on loopback as one more instance (over gRPC in a
    /// demo started with [`Demo::start_grpc`]) and inserts it into the
    /// shop's balancer: it gets orders once its first health check passes.
    /// Set its mode first to have it join in that mode.
    ///
    /// # Errors
    /// - a port cannot be bound
    pub async fn add_instance(&mut self, inventory: Inventory) -> Result<(), BoxError> {
        let addr = match &self.grpc_server {
            None => serve(inventory.app()).await?,
            Some(settings) => {
                let instance = crate::grpc::serve(&inventory, settings).await?;
                let addr = instance.addr();
                self.grpc.push(instance);
                addr
            }
        };
        self.shop.balancer().insert(endpoint(&inventory, addr));
        self.instances.push(inventory);
        Ok(())
    }

    /// The instance called `name`.
    ///
    /// # Panics
    /// - no instance is called `name`
    pub fn instance(&self, name: &str) -> &Inventory {
        self.instances
            .iter()
            .find(|i| i.name() == name)
            .unwrap_or_else(|| panic!("no inventory instance called {name}"))
    }

    /// Every instance, in the order they were started.
    pub fn instances(&self) -> &[Inventory] {
        &self.instances
    }

    /// The gRPC server of the instance called `name` (a demo started with
    /// [`Demo::start_grpc`]): its address, its queue, its kill switch.
    ///
    /// # Panics
    /// - no instance called `name` is served over gRPC
    pub fn grpc_instance(&self, name: &str) -> &GrpcInstance {
        self.grpc
            .iter()
            .find(|i| i.inventory().name() == name)
            .unwrap_or_else(|| panic!("no gRPC inventory instance called {name}"))
    }

    /// A request ordering `item` for `country`; add headers (say,
    /// `x-correlation-id`), then [`fetch`](Self::fetch).
    pub fn order_request(&self, item: &str, country: &str) -> http::request::Builder {
        http::Request::post(format!("{}/order/{item}?country={country}", self.url))
    }

    /// Sends `req` to the shop as an outside caller would.
    ///
    /// # Errors
    /// - the call failed (10 s timeout), or the body could not be read
    pub async fn fetch(&self, req: http::Request<Body>) -> Result<OrderResponse, BoxError> {
        let started = Instant::now();
        let rsp = self.client.clone().oneshot(req).await?;
        let status = rsp.status();
        let header = |name: &str| {
            rsp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let correlation_id = header("x-correlation-id");
        let served_by = header(SERVED_BY_HEADER);
        let degraded = header(DEGRADED_HEADER);
        let retry_after = header("retry-after");
        let body = rsp.into_body().collect().await?.to_bytes();
        Ok(OrderResponse {
            status,
            correlation_id,
            served_by,
            degraded,
            retry_after,
            body: String::from_utf8_lossy(&body).into_owned(),
            elapsed: started.elapsed(),
        })
    }

    /// Orders `item` for `country`, with `correlation_id`.
    ///
    /// # Errors
    /// - as [`fetch`](Self::fetch)
    pub async fn order(
        &self,
        item: &str,
        country: &str,
        correlation_id: &str,
    ) -> Result<OrderResponse, BoxError> {
        let req = self
            .order_request(item, country)
            .header("x-correlation-id", correlation_id)
            .body(Body::default())?;
        self.fetch(req).await
    }

    /// The status of the shop's own `GET /health`.
    ///
    /// # Errors
    /// - as [`fetch`](Self::fetch)
    pub async fn shop_health(&self) -> Result<StatusCode, BoxError> {
        let req = http::Request::get(format!("{}/health", self.url)).body(Body::default())?;
        Ok(self.fetch(req).await?.status)
    }

    /// Starts a synthetic customer ordering a CD through the shop every
    /// `interval` (see [`SyntheticMonitor`]).
    pub fn monitor(&self, interval: Duration) -> SyntheticMonitor {
        SyntheticMonitor::start(&self.url, interval, Duration::from_secs(2))
    }
}

/// Where the shop's instances come from.
enum Instances {
    Static(Vec<Endpoint>),
    Source(SourceStream),
}

impl Instances {
    /// The client stack of `config` over these instances.
    fn stack(self, config: ClientConfig) -> ClientStackBuilder {
        let builder = ClientStack::builder(config);
        match self {
            Instances::Static(endpoints) => builder.endpoints(endpoints),
            Instances::Source(source) => builder.source(source),
        }
    }
}

/// An instance's name ([`NAME_KEY`]), or its address.
fn instance_name(endpoint: &Endpoint) -> String {
    endpoint
        .metadata()
        .get(NAME_KEY)
        .cloned()
        .unwrap_or_else(|| endpoint.to_string())
}

/// The balancer's endpoint for `inventory` served at `addr`.
pub fn endpoint(inventory: &Inventory, addr: SocketAddr) -> Endpoint {
    Endpoint::new(addr).with_metadata(NAME_KEY, inventory.name())
}

// === impl SyntheticMonitor ===

impl SyntheticMonitor {
    /// Checks remembered (the latest ones).
    const KEEP: usize = 1024;

    /// Orders a CD for Germany through the shop at `shop_url` every
    /// `interval`, each order with its own correlation id
    /// (`synthetic-<n>`) and at most `timeout` to answer: a check passes
    /// when the order is placed (`200`), and fails on any other answer, an
    /// error, or no answer in time.
    ///
    /// # Panics
    /// - outside a tokio runtime
    pub fn start(shop_url: &str, interval: Duration, timeout: Duration) -> Self {
        let record = Arc::new(Mutex::new(Record::default()));
        let client = http_client(timeout);
        let url = format!("{shop_url}/order/cd?country=DE");
        let task = tokio::spawn(
            run_checks(client, url, interval, record.clone())
                .instrument(tracing::info_span!("synthetic")),
        );
        Self {
            record,
            task: task.abort_handle(),
        }
    }

    /// The latest check, if one finished.
    pub fn latest(&self) -> Option<Check> {
        self.record().checks.back().cloned()
    }

    /// The latest checks, oldest first.
    pub fn history(&self) -> Vec<Check> {
        self.record().checks.iter().cloned().collect()
    }

    /// Checks that passed and failed so far.
    pub fn totals(&self) -> (u64, u64) {
        let r = self.record();
        (r.passed, r.failed)
    }

    /// One line: the latest check and the totals, e.g. `GREEN people can
    /// order CDs: 12:00:01.234 200 in 3 ms [synthetic-7] (7 passed, 0 failed)`.
    pub fn status(&self) -> String {
        let (passed, failed) = self.totals();
        match self.latest() {
            Some(check) => format!("{check} ({passed} passed, {failed} failed)"),
            None => "no synthetic check yet".to_owned(),
        }
    }

    fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for SyntheticMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run_checks(
    client: HttpClient,
    url: String,
    interval: Duration,
    record: Arc<Mutex<Record>>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_passing = None;
    for seq in 1.. {
        ticker.tick().await;
        let check = check_once(&client, &url, seq).await;
        if was_passing != Some(check.passed) {
            if check.passed {
                tracing::info!(id = %check.correlation_id, "people can order CDs");
            } else {
                tracing::warn!(id = %check.correlation_id, detail = %check.detail, "people cannot order CDs");
            }
            was_passing = Some(check.passed);
        }
        let mut r = record.lock().unwrap_or_else(PoisonError::into_inner);
        if check.passed {
            r.passed += 1;
        } else {
            r.failed += 1;
        }
        if r.checks.len() == SyntheticMonitor::KEEP {
            r.checks.pop_front();
        }
        r.checks.push_back(check);
    }
}

async fn check_once(client: &HttpClient, url: &str, seq: u64) -> Check {
    let at = SystemTime::now();
    let started = Instant::now();
    let correlation_id = format!("synthetic-{seq}");
    let result = async {
        let req = http::Request::post(url)
            .header("x-correlation-id", &correlation_id)
            .body(Body::default())?;
        let rsp = client.clone().oneshot(req).await?;
        let status = rsp.status();
        let degraded = rsp.headers().get(DEGRADED_HEADER).cloned();
        let body = rsp.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&body).trim_end().to_owned();
        let detail = match degraded.as_ref().and_then(|v| v.to_str().ok()) {
            Some(why) => format!("{text} [{why}]"),
            None => text,
        };
        Ok::<_, BoxError>((status, detail))
    }
    .await;
    let (status, passed, detail) = match result {
        Ok((status, detail)) => (Some(status), status == StatusCode::OK, detail),
        Err(err) => (None, false, format!("no answer: {err}")),
    };
    Check {
        seq,
        at,
        passed,
        status,
        detail,
        correlation_id,
        elapsed: started.elapsed(),
    }
}

// === impl Check ===

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self
            .at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let (secs, millis) = (ms / 1000 % 86_400, ms % 1000);
        let verdict = if self.passed {
            "GREEN people can order CDs"
        } else {
            "RED people cannot order CDs"
        };
        let status = self
            .status
            .map_or_else(|| "no answer".to_owned(), |s| s.as_u16().to_string());
        write!(
            f,
            "{verdict}: {:02}:{:02}:{:02}.{millis:03} {status} in {} ms [{}]",
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            self.elapsed.as_millis(),
            self.correlation_id
        )?;
        if !self.passed {
            write!(f, " {}", self.detail)?;
        }
        Ok(())
    }
}
