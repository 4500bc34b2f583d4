//! The reference deployment: every reference service at once, driven by
//! open-loop traffic with mixed priorities through a chaos scenario.
//!
//! [`Deployment::start`] serves, in this process on `127.0.0.1` ports and
//! with static discovery (nothing to install):
//!
//! - the `profile` page and its three components (`publications`,
//!   `about-me`, `institution`), each component behind a
//!   [`ChaosLayer`] (the latency
//!   monkey's switch);
//! - the `shop` and three `inventory` instances behind the standard client
//!   stack (retries, round robin where a retry goes to another instance,
//!   health checks, a breaker per instance), each instance behind a chaos
//!   layer (the chaos monkey's
//!   switch); the shop's orders reach inventory over gRPC (the
//!   [gRPC hop](crate::grpc): `grpc.health.v1` checks, an adaptive
//!   throttle, the context as metadata), on the same port as the
//!   instance's HTTP routes;
//! - `ingest`, with one bounded queue per kind of operation;
//! - an admin server with a live dashboard (`/`) that polls every
//!   service's `/resilience` once a second.
//!
//! Every service answers `/health`, `/resilience` (its layers' snapshots,
//! [`SnapshotRegistry`]) and `/metrics` (Prometheus text; one process, so
//! each service's `/metrics` shows the whole process, told apart by the
//! layers' `name` labels).
//!
//! [`Scenario::run`] then drives [`Load`] through five phases:
//!
//! | phase | what happens | what the layers do |
//! |---|---|---|
//! | steady | mixed traffic, nothing wrong | nothing to see |
//! | kill | `inventory-2` stops answering (a dead host: no answer at all) | its calls time out and are tried again on another instance; it is ejected and fails its health checks; orders go to the others |
//! | latency | `publications` answers 500 ms late, past the profile's 300 ms timeout | the page still answers, with a fallback for publications; its breaker opens |
//! | overload | ingest gets 2.5x its event capacity and a bulk flood | critical events and searches are served; what is served waits at most its queue's wait budget (50 ms for an event); sheddable work is refused at once with `429` + `Retry-After` |
//! | recovery | faults off, traffic back to steady | breakers probe and close, the instance passes its checks and is back, the queues drain |
//!
//! and [`Report`] tells what happened: a table per phase and service, the
//! log line of every hop a sample request crossed, an SVG chart and the
//! time series as JSON.

mod load;
mod report;

pub use self::load::{
    CLASSES, Front, Load, Outcome, Rates, Reason, Record, Recorder, Targets, classify,
};
pub use self::report::{PhaseStats, Report, ServiceStats, TimeSample, Transition};

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use resilience_circuit_breaker::CircuitState;
use resilience_core::BoxError;
use resilience_core::chaos::{ChaosHandle, ChaosLayer, Fault};
use resilience_core::etcd::EtcdClient;
use resilience_core::snapshot::{self, SnapshotRegistry};
use resilience_discovery::source::{EtcdConfig, EtcdSource, Registration};
use resilience_discovery::{Endpoint, EndpointState};
use tokio::time::Instant;
use tower::ServiceBuilder;

use crate::grpc::GrpcServerSettings;
use crate::ingest::{Ingest, IngestSettings, KindSettings};
use crate::profile::{Component, ComponentService, NEW_FEATURE_FLAG, Profile};
use crate::shop::{Inventory, NAME_KEY, Shop};
use crate::{get_text, http_client, serve, serve_on};

/// The page the admin server serves at `/`.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// The scenario's phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Mixed traffic, nothing wrong.
    Steady,
    /// One inventory instance stops answering.
    Kill,
    /// The latency monkey slows `publications` down.
    Latency,
    /// Ingest gets 2.5 times its event capacity and a bulk flood.
    Overload,
    /// Faults off, traffic back to steady.
    Recovery,
}

/// How long each phase lasts, how much traffic, and the faults.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// How long each phase lasts but the last.
    pub phase: Duration,
    /// How long the recovery lasts (breakers that kept failing their probes
    /// wait up to 2 s before the next one).
    pub recovery: Duration,
    /// Traffic in every phase but the overload.
    pub steady: Rates,
    /// Traffic during the overload.
    pub overload: Rates,
    /// Each request's deadline (sent along as `x-deadline-ms`).
    pub deadline: Duration,
    /// Latency added to `publications` in the latency phase.
    pub latency: Duration,
    /// The instance killed in the kill phase (0-based).
    pub killed: usize,
    /// Seeds the arrivals and the chaos layers.
    pub seed: u64,
    /// How often the live state (breakers, endpoints, queues) is sampled
    /// for the chart.
    pub sample_every: Duration,
}

/// How [`Deployment::start`] serves the services.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Renders `/metrics` (install the recorder before starting: the layers
    /// bind their metrics when they are built).
    pub metrics: Option<PrometheusHandle>,
    /// The admin server's port on `127.0.0.1`; `0` for any free one.
    pub admin_port: u16,
    /// An etcd to take discovery and flags from (`http://127.0.0.1:2379`):
    /// the inventory instances register under [`ETCD_INVENTORY_PREFIX`]
    /// with a lease and the shop watches that prefix; the profile's flags
    /// come from [`ETCD_FLAGS_PREFIX`]. `None`: static discovery and flags
    /// in code (the embedded default).
    pub etcd: Option<String>,
}

/// Where the inventory instances register in etcd (`--etcd`).
pub const ETCD_INVENTORY_PREFIX: &str = "/resilience-demo/services/inventory/";
/// Where the profile's flags live in etcd (`--etcd`).
pub const ETCD_FLAGS_PREFIX: &str = "/resilience-demo/flags/";
/// The lease of an instance's registration: a dead instance leaves the
/// registry this long after its last keep-alive.
pub const REGISTRATION_TTL: Duration = Duration::from_secs(3);

/// The etcd side of a deployment started with [`StartOptions::etcd`].
struct EtcdParts {
    config: EtcdConfig,
    /// Each instance's registration; `None` while it is dead.
    registrations: Mutex<Vec<Option<Registration>>>,
    endpoints: Vec<Endpoint>,
    _flags: resilience_flags::source::SourceHandle,
}

impl fmt::Debug for EtcdParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdParts")
            .field("endpoints", &self.config.endpoints())
            .finish_non_exhaustive()
    }
}

/// A service of the deployment, as the dashboard lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceInfo {
    /// Its name (`profile`, `publications`, `inventory-2`, ...).
    pub name: String,
    /// What it is (`front`, `component`, `instance`).
    pub role: &'static str,
    /// Its base URL.
    pub url: String,
}

/// What the dashboard shows of the run besides the services.
#[derive(Debug, Clone, Default)]
pub struct LiveStatus {
    inner: Arc<Mutex<StatusInner>>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
struct StatusInner {
    phase: Option<Phase>,
    phase_index: usize,
    phases: usize,
    elapsed_s: f64,
    sent: u64,
    succeeded: u64,
    in_flight: u64,
    finished: bool,
}

/// Every service of the reference deployment, served on loopback.
#[derive(Debug)]
pub struct Deployment {
    /// The profile front service (its breakers).
    pub profile: Profile,
    /// The component services, in [`Component::ALL`] order.
    pub components: [ComponentService; 3],
    /// Each component's chaos switch, in [`Component::ALL`] order.
    pub component_chaos: [ChaosHandle; 3],
    /// The shop (its breakers, one per instance, and balancer).
    pub shop: Shop,
    /// The inventory instances.
    pub inventories: Vec<Inventory>,
    /// Each instance's chaos switch, in the same order.
    pub inventory_chaos: Vec<ChaosHandle>,
    /// The ingest service (its queues).
    pub ingest: Ingest,
    /// Every service, fronts first.
    pub services: Vec<ServiceInfo>,
    /// The admin server's base URL: the dashboard is at `/`.
    pub admin_url: String,
    /// The run's status, shown on the dashboard.
    pub status: LiveStatus,
    etcd: Option<EtcdParts>,
}

/// Runs the phases against a [`Deployment`].
#[derive(Debug)]
pub struct Scenario<'a> {
    deployment: &'a Deployment,
    settings: DemoSettings,
}

// === impl Phase ===

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 5] = [
        Phase::Steady,
        Phase::Kill,
        Phase::Latency,
        Phase::Overload,
        Phase::Recovery,
    ];

    /// Its name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Steady => "steady",
            Phase::Kill => "kill",
            Phase::Latency => "latency",
            Phase::Overload => "overload",
            Phase::Recovery => "recovery",
        }
    }

    /// What happens in it, in a few words.
    pub const fn describe(self) -> &'static str {
        match self {
            Phase::Steady => "steady traffic, nothing wrong",
            Phase::Kill => "inventory-2 killed (no answer at all)",
            Phase::Latency => "latency monkey on publications (+500 ms)",
            Phase::Overload => "ingest at 2.5x capacity, bulk flood beside searches",
            Phase::Recovery => "faults off, instance back, traffic steady",
        }
    }
}

// === impl DemoSettings ===

impl DemoSettings {
    /// The full scenario: 15 s per phase (75 s).
    pub fn full() -> Self {
        Self {
            phase: Duration::from_secs(15),
            recovery: Duration::from_secs(15),
            ..Self::quick()
        }
    }

    /// The quick scenario: 3 s per phase and 5 s of recovery (17 s).
    pub fn quick() -> Self {
        Self {
            phase: Duration::from_secs(3),
            recovery: Duration::from_secs(5),
            steady: Rates {
                profile: 20.0,
                shop: 20.0,
                ingest: 25.0,
                search: 10.0,
                bulk: 5.0,
            },
            overload: Rates {
                profile: 20.0,
                shop: 20.0,
                ingest: 250.0,
                search: 10.0,
                bulk: 100.0,
            },
            deadline: Duration::from_secs(1),
            latency: Duration::from_millis(500),
            killed: 1,
            seed: 7,
            sample_every: Duration::from_millis(250),
        }
    }

    /// Ingest's queues in the demo: `index` 2 x 20 ms (100 events/s) with
    /// 16 waiting, `bulk` 1 x 20 ms (50 batches/s) with 4 waiting, `search`
    /// 2 x 10 ms with 16 waiting; a latency goal of 70 ms, so that a served
    /// request waits at most 50 ms for `index` and `bulk` and 60 ms for
    /// `search` ([`IngestSettings::wait_budget`]).
    ///
    /// Why these: a served event waits at most 50 ms and takes 20 ms, so
    /// that ingest's p99 stays within 100 ms with room for the hops (the
    /// old settings, one slot, no wait budget and 16 waiting, kept a flood
    /// waiting 320 ms: a p99 of 553 ms). Critical events (5% of the events,
    /// an eighth of `index`'s capacity in the overload phase) are served
    /// first, but queue behind each other: with a single 20 ms slot and
    /// half of the capacity critical, some of them wait past any budget
    /// that keeps the p99 under 100 ms and are refused (2-10 of 340-400 in
    /// 15 s with a 60 ms budget, in a paused-clock simulation of the same
    /// queue at 5x on ten seeds); two slots (one freeing every 10 ms)
    /// leave them room. The overload is 2.5x, not 5x: at 500 events/s, on
    /// two cores busy with other work, this debug-build process (services
    /// and load generator in one) fell behind its own timers and refused
    /// critical events for it (10% in a quick run, p99 329 ms), where 250
    /// events/s kept them all with a p99 of 75-91 ms. A budget of at least
    /// two service times keeps a single-slot kind from refusing at low
    /// load: with one service time (`bulk` at 1 x 40 ms and a 80 ms goal), a
    /// batch that found one in service was refused at once, the measured
    /// service time being a little longer than the sleep (15% of the
    /// batches at a fifth of the capacity).
    pub fn ingest() -> IngestSettings {
        let mut s = IngestSettings::DEMO;
        s.index = KindSettings {
            concurrency: 2,
            capacity: 16,
            service_time: Duration::from_millis(20),
        };
        s.bulk = KindSettings {
            concurrency: 1,
            capacity: 4,
            service_time: Duration::from_millis(20),
        };
        s.search = KindSettings {
            concurrency: 2,
            capacity: 16,
            service_time: Duration::from_millis(10),
        };
        s.latency_goal = Duration::from_millis(70);
        s
    }

    /// The shop's inventory client in the demo: the shop's own file,
    /// [`client_config`](crate::shop::client_config) (a breaker per
    /// instance, so one dead instance in three opens its own circuit only;
    /// health checks that time out after 150 ms, and ejections of 2 s, so
    /// that a dead instance fails its health checks before its ejection
    /// ends).
    pub fn shop() -> resilience::client::ClientConfig {
        crate::shop::client_config()
    }

    /// How long `phase` lasts.
    pub fn length(&self, phase: Phase) -> Duration {
        match phase {
            Phase::Recovery => self.recovery,
            _ => self.phase,
        }
    }

    /// The whole run: five phases.
    pub fn total(&self) -> Duration {
        Phase::ALL.iter().map(|p| self.length(*p)).sum()
    }
}

impl Default for DemoSettings {
    fn default() -> Self {
        Self::full()
    }
}

// === impl LiveStatus ===

impl LiveStatus {
    fn update(&self, f: impl FnOnce(&mut StatusInner)) {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&*self.inner.lock().unwrap_or_else(PoisonError::into_inner))
            .unwrap_or_default()
    }

    /// The phase now, if the scenario runs.
    pub fn phase(&self) -> Option<Phase> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .phase
    }
}

// === impl Deployment ===

impl Deployment {
    /// Serves every service and the admin server on loopback (ephemeral
    /// ports; the admin server on `options.admin_port` when it is not
    /// zero) and returns once every inventory instance passed its first
    /// health check.
    ///
    /// # Errors
    /// - a port cannot be bound, or an instance is not healthy within 10 s
    /// - with `options.etcd`: etcd cannot be reached, or refuses a
    ///   registration or the flags
    pub async fn start(settings: &DemoSettings, options: &StartOptions) -> Result<Self, BoxError> {
        let metrics = options.metrics.clone();
        let mut services = Vec::new();
        let mut backends = Vec::new();

        // Profile's components, each behind its chaos switch.
        let components = Component::ALL.map(ComponentService::new);
        let mut component_chaos = Vec::new();
        let mut component_urls = Vec::new();
        for (i, svc) in components.iter().enumerate() {
            let name = svc.component().name();
            let chaos = ChaosLayer::new(name).with_seed(settings.seed + i as u64);
            let registry = SnapshotRegistry::new(name);
            registry.register(chaos.handle());
            let app = with_chaos(
                svc.app().merge(ops(&registry, metrics.clone(), true)),
                &chaos,
            );
            let url = format!("http://{}", serve(app).await?);
            component_chaos.push(chaos.handle());
            component_urls.push(url.clone());
            backends.push(ServiceInfo {
                name: name.to_owned(),
                role: "component",
                url,
            });
        }
        // Each component's client from the profile's file.
        let profile = Profile::with_configs(crate::profile::client_config, |c| {
            component_urls[c.index()].clone()
        })?;
        let registry = SnapshotRegistry::new("profile");
        for c in Component::ALL {
            registry.register(profile.breaker(c).clone());
        }
        registry.register(profile.flags().clone());
        let url = serve(profile.app().merge(ops(&registry, metrics.clone(), true))).await?;
        services.push(ServiceInfo {
            name: "profile".into(),
            role: "front",
            url: format!("http://{url}"),
        });

        // Inventory instances, each behind its chaos switch, and the shop.
        let mut inventories = Vec::new();
        let mut inventory_chaos = Vec::new();
        let mut endpoints = Vec::new();
        for n in 1..=crate::shop::Demo::INSTANCES {
            let name = format!("inventory-{n}");
            let inventory = Inventory::new(&name);
            let chaos = ChaosLayer::new(&name).with_seed(settings.seed + 10 + n as u64);
            let registry = SnapshotRegistry::new(name.clone());
            registry.register(chaos.handle());
            // `/health` is the instance's own (it drains); the chaos layer
            // wraps everything, so a killed instance answers nothing at all.
            // The gRPC services (what the shop calls, and grpc.health.v1)
            // share the port with the HTTP routes.
            let (grpc, _queue) = crate::grpc::routes(&inventory, &GrpcServerSettings::DEMO)?;
            let app = with_chaos(
                inventory
                    .app()
                    .merge(ops(&registry, metrics.clone(), false))
                    .merge(grpc.into_axum_router()),
                &chaos,
            );
            let addr = serve(app).await?;
            endpoints.push(crate::shop::endpoint(&inventory, addr));
            backends.push(ServiceInfo {
                name,
                role: "instance",
                url: format!("http://{addr}"),
            });
            inventories.push(inventory);
            inventory_chaos.push(chaos.handle());
        }
        let (shop, etcd) = match &options.etcd {
            None => (Shop::new_grpc(DemoSettings::shop(), endpoints)?, None),
            Some(url) => {
                let parts = EtcdParts::start(url, &inventories, endpoints, &profile).await?;
                let source = EtcdSource::new(parts.config.clone(), ETCD_INVENTORY_PREFIX);
                let shop = Shop::with_source_grpc(DemoSettings::shop(), source.into_stream())?;
                (shop, Some(parts))
            }
        };
        let registry = SnapshotRegistry::new("shop");
        registry.register(shop.retry().clone());
        if let Some(breakers) = shop.breakers() {
            registry.register(breakers.clone());
        }
        registry.register(shop.balancer().clone());
        if let Some(throttle) = shop.throttle() {
            registry.register(throttle.clone());
        }
        // The shop has its own `/health`.
        let url = serve(shop.app().merge(ops(&registry, metrics.clone(), false))).await?;
        services.push(ServiceInfo {
            name: "shop".into(),
            role: "front",
            url: format!("http://{url}"),
        });

        // Ingest and its queues.
        let ingest = Ingest::new(&DemoSettings::ingest())?;
        let registry = SnapshotRegistry::new("ingest");
        for kind in crate::ingest::Kind::ALL {
            registry.register(ingest.queue(kind).clone());
        }
        let url = serve(ingest.app().merge(ops(&registry, metrics.clone(), true))).await?;
        services.push(ServiceInfo {
            name: "ingest".into(),
            role: "front",
            url: format!("http://{url}"),
        });
        services.extend(backends);

        let status = LiveStatus::default();
        let admin = admin_app(services.clone(), status.clone());
        let admin_url = format!("http://{}", serve_on(admin, options.admin_port).await?);

        let deployment = Self {
            profile,
            components,
            component_chaos: component_chaos
                .try_into()
                .expect("one chaos handle per component"),
            shop,
            inventories,
            inventory_chaos,
            ingest,
            services,
            admin_url,
            status,
            etcd,
        };
        let instances = deployment.inventories.len();
        deployment
            .shop
            .wait_healthy(instances, Duration::from_secs(10))
            .await?;
        Ok(deployment)
    }

    /// The front services' URLs, for [`Load`].
    pub fn targets(&self) -> Targets {
        let url = |name: &str| {
            self.service(name)
                .map(|s| s.url.clone())
                .unwrap_or_default()
        };
        Targets {
            profile: url("profile"),
            shop: url("shop"),
            ingest: url("ingest"),
        }
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceInfo> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Every breaker: the profile's three and the shop's, one per inventory
    /// instance (named after the instance).
    pub fn breakers(&self) -> Vec<(String, CircuitState)> {
        let mut out: Vec<(String, CircuitState)> = Component::ALL
            .iter()
            .map(|c| (c.name().to_owned(), self.profile.breaker(*c).state()))
            .collect();
        for (name, breaker) in self.shop.instance_breakers() {
            out.push((name, breaker.state()));
        }
        out
    }

    /// Each inventory instance's state in the shop's balancer.
    pub fn instance_states(&self) -> Vec<(String, Option<EndpointState>)> {
        self.inventories
            .iter()
            .map(|i| (i.name().to_owned(), self.shop.instance_state(i.name())))
            .collect()
    }

    /// Turns every fault off and brings dead instances back (with etcd:
    /// registered again).
    ///
    /// # Errors
    /// - with etcd: a registration failed (the instance serves, but the
    ///   shop will not find it)
    pub async fn recover(&self) -> Result<(), BoxError> {
        for chaos in self.component_chaos.iter().chain(&self.inventory_chaos) {
            chaos.clear();
        }
        if let Some(etcd) = &self.etcd {
            etcd.register_missing(&self.inventories).await?;
        }
        Ok(())
    }

    /// Kills instance `i`: from now on it answers nothing, health checks
    /// included (a host that vanished); with etcd its registration's
    /// keep-alive stops too, so it leaves the registry when its lease
    /// expires ([`REGISTRATION_TTL`]).
    pub fn kill_instance(&self, i: usize) {
        if let Some(chaos) = self.inventory_chaos.get(i) {
            chaos.set(Fault::abort());
        }
        if let Some(etcd) = &self.etcd {
            // Dropping a registration stops its keep-alive, as a crash would.
            drop(etcd.lock().get_mut(i).and_then(Option::take));
        }
    }

    /// Whether discovery and flags come from etcd.
    pub fn uses_etcd(&self) -> bool {
        self.etcd.is_some()
    }

    /// Slows `component` down by `latency` on every request.
    pub fn slow_down(&self, component: Component, latency: Duration) {
        self.component_chaos[component.index()].set(Fault::latency(latency));
    }
}

// === impl EtcdParts ===

impl EtcdParts {
    /// Registers every instance under [`ETCD_INVENTORY_PREFIX`] (after
    /// clearing what an earlier run left there), writes the profile's flag
    /// under [`ETCD_FLAGS_PREFIX`] and feeds the profile's flag store from
    /// that prefix.
    async fn start(
        url: &str,
        inventories: &[Inventory],
        endpoints: Vec<Endpoint>,
        profile: &Profile,
    ) -> Result<Self, BoxError> {
        let config = EtcdConfig::builder()
            .endpoint(url)
            .name("inventory")
            .build()?;
        let client = EtcdClient::new(vec![url.to_owned()], Duration::from_secs(2));
        let (_, stale) = client
            .range_prefix(ETCD_INVENTORY_PREFIX)
            .await
            .map_err(|e| format!("etcd at {url}: {e}"))?;
        for kv in stale {
            client.delete(&String::from_utf8_lossy(&kv.key)).await?;
        }
        let flag = format!("{ETCD_FLAGS_PREFIX}{NEW_FEATURE_FLAG}");
        client
            .put(&flag, br#"{"enabled": false, "overridable": true}"#, 0)
            .await?;
        let flags = resilience_flags::source::EtcdSource::builder(url, ETCD_FLAGS_PREFIX)
            .build()?
            .spawn(profile.flags().clone());
        let parts = Self {
            config,
            registrations: Mutex::new(inventories.iter().map(|_| None).collect()),
            endpoints,
            _flags: flags,
        };
        parts.register_missing(inventories).await?;
        Ok(parts)
    }

    /// Registers every instance that has no registration.
    async fn register_missing(&self, inventories: &[Inventory]) -> Result<(), BoxError> {
        for (i, inventory) in inventories.iter().enumerate() {
            if self.lock()[i].is_some() {
                continue;
            }
            let key = format!("{ETCD_INVENTORY_PREFIX}{}", inventory.name());
            let registration =
                Registration::register(&self.config, key, &self.endpoints[i], REGISTRATION_TTL)
                    .await?;
            self.lock()[i] = Some(registration);
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Registration>>> {
        self.registrations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// `app` behind `chaos`, whose injected errors become responses.
fn with_chaos(app: Router, chaos: &ChaosLayer) -> Router {
    app.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(resilience_core::http::handle_error))
            .layer(chaos.clone()),
    )
}

/// `/resilience`, `/metrics`, and
/// `/health` when `health` is set.
fn ops(registry: &SnapshotRegistry, metrics: Option<PrometheusHandle>, health: bool) -> Router {
    let mut router = registry.router();
    router = router.route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                match metrics {
                    Some(handle) => handle.render().into_response(),
                    None => (
                        http::StatusCode::NOT_FOUND,
                        "no metrics recorder installed\n",
                    )
                        .into_response(),
                }
            }
        }),
    );
    if health {
        router = router.route("/health", get(|| async { "ok\n" }));
    }
    router
}

/// The admin server: the dashboard, the services it polls, the run's
/// status, and each service's `/resilience` through one origin
/// (`/api/resilience/{service}`; `504` when the service does not answer
/// within 800 ms, as a dead one does not).
fn admin_app(services: Vec<ServiceInfo>, status: LiveStatus) -> Router {
    let services = Arc::new(services);
    let client = http_client(Duration::from_millis(800));
    let list = services.clone();
    Router::new()
        .route("/", get(|| async { Html(DASHBOARD_HTML) }))
        .route(
            "/api/services",
            get(move || {
                let list = list.clone();
                async move { axum::Json(serde_json::to_value(&*list).unwrap_or_default()) }
            }),
        )
        .route(
            "/api/resilience/{service}",
            get(move |Path(name): Path<String>| {
                let (services, client) = (services.clone(), client.clone());
                async move {
                    let Some(svc) = services.iter().find(|s| s.name == name) else {
                        return (http::StatusCode::NOT_FOUND, "no such service\n").into_response();
                    };
                    match get_text(&client, &format!("{}{}", svc.url, snapshot::PATH)).await {
                        Ok((status, body)) if status.is_success() => {
                            ([(http::header::CONTENT_TYPE, "application/json")], body)
                                .into_response()
                        }
                        Ok((status, _)) => (
                            http::StatusCode::BAD_GATEWAY,
                            format!("{name} answered {status}\n"),
                        )
                            .into_response(),
                        Err(error) => (
                            http::StatusCode::GATEWAY_TIMEOUT,
                            format!("{name} did not answer: {error}\n"),
                        )
                            .into_response(),
                    }
                }
            }),
        )
        .route(
            "/api/status",
            get(|State(status): State<LiveStatus>| async move { axum::Json(status.to_json()) }),
        )
        .with_state(status)
}

// === impl Scenario ===

impl<'a> Scenario<'a> {
    /// The scenario of `settings` against `deployment`.
    pub fn new(deployment: &'a Deployment, settings: DemoSettings) -> Self {
        Self {
            deployment,
            settings,
        }
    }

    /// Runs the five phases; `on_tick` is called every sample with the
    /// phase, the time into the run and the requests sent and succeeded so
    /// far (a progress bar's hook). Returns everything that was recorded.
    pub async fn run(self, mut on_tick: impl FnMut(Phase, Duration, u64, u64)) -> Report {
        let d = self.deployment;
        let s = &self.settings;
        let recorder = Recorder::new();
        let started = recorder.started();
        let transitions = Arc::new(Mutex::new(Vec::<Transition>::new()));
        let mut watchers = Vec::new();
        for c in Component::ALL {
            watchers.push(watch_breaker(
                c.name(),
                d.profile.breaker(c).subscribe(),
                started,
                transitions.clone(),
            ));
        }
        for (name, breaker) in d.shop.instance_breakers() {
            watchers.push(watch_breaker(
                &name,
                breaker.subscribe(),
                started,
                transitions.clone(),
            ));
        }
        watchers.push(watch_instances(d, started, transitions.clone()));

        // The sample requests, sent first and traced through the log.
        let samples = send_samples(d).await;

        let load = Load::start(
            http_client(s.deadline + Duration::from_secs(1)),
            d.targets(),
            s.steady,
            s.deadline,
            recorder.clone(),
            s.seed,
        );
        let mut samples_over_time = Vec::new();
        let mut phases = Vec::new();
        let ticks = Arc::new(AtomicU64::new(0));
        for (index, phase) in Phase::ALL.into_iter().enumerate() {
            let from = started.elapsed();
            let retries_before = d.shop.retry().snapshot().retries_total();
            tracing::info!(phase = phase.as_str(), "phase: {}", phase.describe());
            match phase {
                Phase::Steady => {}
                Phase::Kill => d.kill_instance(s.killed),
                Phase::Latency => d.slow_down(Component::Publications, s.latency),
                Phase::Overload => load.set_rates(s.overload),
                Phase::Recovery => {
                    load.set_rates(s.steady);
                    if let Err(error) = d.recover().await {
                        tracing::warn!(%error, "an instance could not register again");
                    }
                }
            }
            d.status.update(|st| {
                st.phase = Some(phase);
                st.phase_index = index;
                st.phases = Phase::ALL.len();
            });
            let end = started + Phase::ALL[..=index].iter().map(|p| s.length(*p)).sum();
            while Instant::now() < end {
                let next = (Instant::now() + s.sample_every).min(end);
                tokio::time::sleep_until(next).await;
                ticks.fetch_add(1, Ordering::Relaxed);
                let sample = TimeSample::take(d, phase, started.elapsed());
                samples_over_time.push(sample);
                let (sent, ok) = recorder.counts_since(0);
                d.status.update(|st| {
                    st.elapsed_s = started.elapsed().as_secs_f64();
                    st.sent = sent;
                    st.succeeded = ok;
                    st.in_flight = recorder.in_flight();
                });
                on_tick(phase, started.elapsed(), sent, ok);
            }
            let retries = d.shop.retry().snapshot().retries_total() - retries_before;
            phases.push((phase, from, started.elapsed(), retries));
        }
        load.stop();
        // Let the last requests finish (they all have a deadline).
        let drain = Instant::now() + s.deadline + Duration::from_secs(1);
        while recorder.in_flight() > 0 && Instant::now() < drain {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for w in watchers {
            w.abort();
        }
        d.status.update(|st| st.finished = true);
        let transitions = transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Report::new(
            phases,
            recorder.records(),
            samples_over_time,
            transitions,
            samples,
        )
    }
}

/// Collects `name`'s breaker transitions.
fn watch_breaker(
    name: &str,
    mut events: tokio::sync::broadcast::Receiver<resilience_circuit_breaker::Transition>,
    started: Instant,
    out: Arc<Mutex<Vec<Transition>>>,
) -> tokio::task::JoinHandle<()> {
    let name = name.to_owned();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(t) => out
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Transition {
                        at_s: started.elapsed().as_secs_f64(),
                        what: "breaker",
                        name: name.clone(),
                        from: t.from().to_string(),
                        to: t.to().to_string(),
                    }),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    })
}

/// Collects the instances' state changes in the shop's balancer (sampled
/// every 10 ms), `removed` when one leaves the set (discovery from etcd).
fn watch_instances(
    d: &Deployment,
    started: Instant,
    out: Arc<Mutex<Vec<Transition>>>,
) -> tokio::task::JoinHandle<()> {
    let balancer = d.shop.balancer().clone();
    tokio::spawn(async move {
        let mut last: Option<Vec<(String, EndpointState)>> = None;
        loop {
            let now: Vec<(String, EndpointState)> = balancer
                .snapshot()
                .endpoints
                .into_iter()
                .map(|e| {
                    let name = e.endpoint.metadata().get(NAME_KEY).cloned();
                    (name.unwrap_or_else(|| e.endpoint.to_string()), e.state)
                })
                .collect();
            let push = |name: &str, from: &str, to: &str| {
                out.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Transition {
                        at_s: started.elapsed().as_secs_f64(),
                        what: "endpoint",
                        name: name.to_owned(),
                        from: from.to_owned(),
                        to: to.to_owned(),
                    });
            };
            if let Some(last) = &last {
                for (name, state) in &now {
                    match last.iter().find(|(n, _)| n == name) {
                        Some((_, before)) if before != state => {
                            push(name, before.as_str(), state.as_str());
                        }
                        Some(_) => {}
                        // Found again (discovery from a registry).
                        None => push(name, "removed", state.as_str()),
                    }
                }
                for (name, before) in last {
                    if !now.iter().any(|(n, _)| n == name) {
                        push(name, before.as_str(), "removed");
                    }
                }
            }
            last = Some(now);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// Sends one profile page and one order with known correlation ids, for
/// the trace at the end.
async fn send_samples(d: &Deployment) -> Vec<String> {
    let client = http_client(Duration::from_secs(2));
    let targets = d.targets();
    let mut ids = Vec::new();
    let requests = [
        (
            "sample-profile-1",
            http::Request::get(format!("{}/profile/alice", targets.profile)),
        ),
        (
            "sample-order-1",
            http::Request::post(format!("{}/order/cd?country=DE", targets.shop)),
        ),
    ];
    for (id, req) in requests {
        if let Ok(req) = req
            .header("x-correlation-id", id)
            .body(crate::Body::default())
        {
            let _ = tower::ServiceExt::oneshot(client.clone(), req).await;
            ids.push(id.to_owned());
        }
    }
    ids
}
