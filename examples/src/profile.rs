//! Reference service 1, the profile page: degrading functionality.
//!
//! A `profile` front service renders `/profile/{user}` from three component
//! services, `publications`, `about-me` and `institution`, called at the
//! same time. Each component call goes through its own standard client
//! stack ([`resilience::client`], [`ProfileSettings::client_config`]),
//! trimmed to what a single fallback-backed dependency needs:
//!
//! ```text
//! call deadline + PropagateContext  the caller's correlation id, priority and deadline go along;
//!  │                                the call ends at the component's timeout
//!  └ RoundRobin           over the component's one endpoint (no health checks, no ejection)
//!     └ CircuitBreaker    one breaker per component; 5xx and timeouts count, 4xx do not;
//!        │                while open, the endpoint is not ready and the call is refused
//!        └ TimeoutLayer   under the breaker, so that a timeout counts as a failure
//!           └ hyper client
//! ```
//!
//! The parts of the standard stack a component leaves out, and why:
//! **retries** (a component has a fallback, and the page must not wait more
//! than one timeout for it: a second try would double the wait of a slow
//! component), the **adaptive throttle** (the breaker already keeps calls
//! away from a failing component, and the fallback serves the page), and
//! **health checks and ejection** (one endpoint per component: ejecting
//! it would only stop the breaker's probes; the breaker decides when it is
//! back). So the page costs at most one timeout per component, and a
//! component whose circuit is open is answered by its fallback at once.
//!
//! When a component errors, times out or has its breaker open, the page
//! still renders (200): the component is replaced by a fallback, and the
//! page says which component degraded and why (`timeout`, `circuit open`,
//! `error`), in its text and in an `x-degraded` header. A slow component
//! costs the page at most its timeout; a component that answers `404` has
//! nothing to show, which is not a failure: its breaker stays closed.
//!
//! Each component service has a switch ([`ComponentService::set_mode`]) that
//! makes it healthy, failing (`500`), slow (it never answers) or answer
//! `404`, and counts the calls that reach it, so a test can check that an
//! open breaker keeps calls away. [`Profile::breaker`] gives each breaker's
//! [`CircuitBreakerHandle`] (state, snapshot, transition events).
//!
//! The page also has a section behind the runtime flag `newfeature` (from
//! resilience-flags): off for everyone, and switched on for one request by
//! the header `X-Flag-NewFeature: 1`.
//!
//! Every service sits behind [`CorrelationLayer`], so the log lines of one
//! page, in the profile and in the three components, carry the same id.
//!
//! # Example
//!
//! ```
//! use resilience_examples::profile::{Component, Demo, Mode, ProfileSettings};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), resilience_core::BoxError> {
//! let demo = Demo::start(&ProfileSettings::DEMO).await?;
//! demo.component(Component::Institution).set_mode(Mode::Slow);
//!
//! let req = demo.page_request("alice", "123-gda").body(Default::default())?;
//! let page = demo.fetch(req).await?;
//! assert_eq!(page.status, 200);
//! assert_eq!(page.degraded.as_deref(), Some("institution=timeout"));
//! assert!(page.body.contains("institution: institution not available right now"));
//! println!("{}", demo.profile.breaker_states()); // institution=closed (1 calls, 1 failed) ...
//! # Ok(()) }
//! ```
//!
//! Run the scripted scenario: `cargo run -p resilience-examples --bin profile`

use std::error::Error;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::BodyExt;
use resilience::client::{ClientConfig, ClientPart, ClientStack};
use resilience::server::{ServerConfig, ServerStackLayer};
use resilience_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerHandle};
use resilience_core::error::find_in_chain;
use resilience_core::{BoxError, ConfigError, Elapsed, Rejected, RejectionKind};
use resilience_correlation::{CorrelationLayer, RequestContext};
use resilience_discovery::{Endpoint, RoundRobinConfig};
use resilience_flags::{Flag, FlagSet, FlagStore, Flags, FlagsConfig, FlagsLayer};
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::Instrument;

use crate::{Body, HttpClient, http_client, serve};

/// The flag that switches the page's new section on.
pub const NEW_FEATURE_FLAG: &str = "newfeature";

/// The response header listing degraded components, e.g.
/// `publications=circuit open, institution=timeout`.
pub const DEGRADED_HEADER: &str = "x-degraded";

/// One of the page's components, each served by its own service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    /// The user's publications.
    Publications,
    /// The user's own description.
    AboutMe,
    /// The user's institution.
    Institution,
}

/// How a component service answers; flip it at run time with
/// [`ComponentService::set_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// `200` with the component's content.
    Healthy = 0,
    /// `500 Internal Server Error`.
    Failing = 1,
    /// Never answers (the caller's timeout decides).
    Slow = 2,
    /// `404 Not Found`: nothing to show for this user.
    NotFound = 3,
}

/// A component service with its run-time switch. Cheap to clone; clones
/// share the switch and the counters.
#[derive(Debug, Clone)]
pub struct ComponentService {
    component: Component,
    state: Arc<Switch>,
}

/// Timeouts and breaker settings of the profile's component calls.
#[derive(Debug, Clone)]
pub struct ProfileSettings {
    /// Timeout of each component call.
    pub timeout: Duration,
    /// Calls each breaker remembers (a count window), and needs before it
    /// decides; it opens when half of them or more failed.
    pub window: u32,
    /// How long an opened breaker fails fast before it lets one probe
    /// through (grows on each re-open without a close in between).
    pub open_for: Duration,
}

/// The `profile` front service: its component clients and their breakers.
///
/// Cheap to clone; clones share the clients and the breakers.
#[derive(Debug, Clone)]
pub struct Profile {
    inner: Arc<ProfileInner>,
}

/// The component services and the profile, served on loopback: what the
/// binary and the tests run.
#[derive(Debug)]
pub struct Demo {
    /// The front service (for its breakers).
    pub profile: Profile,
    /// The profile's base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    components: [ComponentService; 3],
    client: HttpClient,
}

/// A page as the demo's client saw it.
#[derive(Debug, Clone)]
pub struct PageResponse {
    /// The status (200, also when degraded).
    pub status: StatusCode,
    /// The correlation id the profile returned.
    pub correlation_id: Option<String>,
    /// The `x-degraded` header: `component=reason, ...`, if any degraded.
    pub degraded: Option<String>,
    /// The page's text.
    pub body: String,
    /// How long the page took.
    pub elapsed: Duration,
}

/// What happened to one component of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Section {
    /// The component's content.
    Content(String),
    /// The component answered `404`: nothing to show (not a failure).
    Missing,
    /// The component could not be had; the page shows a fallback.
    Degraded(Degraded),
}

/// Why a component was replaced by its fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Degraded {
    /// The call took longer than its timeout.
    Timeout,
    /// The component's breaker is open: the call was not made.
    CircuitOpen,
    /// The component failed: a 5xx, or a transport error.
    Error(String),
}

struct Switch {
    mode: AtomicU8,
    calls: AtomicU64,
    ids: Mutex<Vec<String>>,
}

#[derive(Debug)]
struct ProfileInner {
    deps: [Dependency; 3],
    flags: FlagStore,
}

#[derive(Debug)]
struct Dependency {
    component: Component,
    /// The call's whole time, body included.
    timeout: Duration,
    url: String,
    client: HttpClient,
    breaker: CircuitBreakerHandle,
}

// === impl Component ===

impl Component {
    /// The three components, in page order.
    pub const ALL: [Component; 3] = [
        Component::Publications,
        Component::AboutMe,
        Component::Institution,
    ];

    /// The component's (and its service's and breaker's) name.
    pub const fn name(self) -> &'static str {
        match self {
            Component::Publications => "publications",
            Component::AboutMe => "about-me",
            Component::Institution => "institution",
        }
    }

    /// Its position in [`Component::ALL`].
    pub const fn index(self) -> usize {
        match self {
            Component::Publications => 0,
            Component::AboutMe => 1,
            Component::Institution => 2,
        }
    }

    /// The span that names the component's log lines (span names are
    /// static, hence one `info_span!` per component).
    fn span(self) -> tracing::Span {
        match self {
            Component::Publications => tracing::info_span!("publications"),
            Component::AboutMe => tracing::info_span!("about-me"),
            Component::Institution => tracing::info_span!("institution"),
        }
    }

    fn content(self, user: &str) -> String {
        match self {
            Component::Publications => {
                format!("3 papers by {user}, latest: \"Failing gracefully\"")
            }
            Component::AboutMe => format!("{user} builds services that degrade instead of failing"),
            Component::Institution => "Institute of Resilient Systems".to_owned(),
        }
    }

    fn fallback(self) -> &'static str {
        match self {
            Component::Publications => "publications are not available right now",
            Component::AboutMe => "no description right now",
            Component::Institution => "institution not available right now",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl Mode ===

impl Mode {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Mode::Failing,
            2 => Mode::Slow,
            3 => Mode::NotFound,
            _ => Mode::Healthy,
        }
    }
}

// === impl ComponentService ===

impl ComponentService {
    /// Correlation ids remembered per component (the latest ones).
    const KEEP_IDS: usize = 256;

    /// A healthy component service.
    pub fn new(component: Component) -> Self {
        Self {
            component,
            state: Arc::new(Switch {
                mode: AtomicU8::new(Mode::Healthy as u8),
                calls: AtomicU64::new(0),
                ids: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Which component it serves.
    pub fn component(&self) -> Component {
        self.component
    }

    /// Switches how it answers from the next request on.
    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// How it answers now.
    pub fn mode(&self) -> Mode {
        Mode::from_u8(self.state.mode.load(Ordering::Relaxed))
    }

    /// Requests that reached the service, whatever its mode.
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::Relaxed)
    }

    /// Whether a request with correlation id `id` reached the service.
    pub fn saw_correlation_id(&self, id: &str) -> bool {
        self.ids().iter().any(|seen| seen == id)
    }

    /// The router: `GET /<component>/{user}`, behind [`CorrelationLayer`].
    pub fn app(&self) -> Router {
        async fn handle(State(svc): State<ComponentService>, Path(user): Path<String>) -> Response {
            let span = svc.component.span();
            svc.respond(user).instrument(span).await
        }
        Router::new()
            .route(&format!("/{}/{{user}}", self.component.name()), get(handle))
            .with_state(self.clone())
            .layer(CorrelationLayer::new())
    }

    async fn respond(self, user: String) -> Response {
        self.state.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(ctx) = RequestContext::current() {
            let mut ids = self.ids();
            if ids.len() == Self::KEEP_IDS {
                ids.remove(0);
            }
            ids.push(ctx.correlation_id().as_str().to_owned());
        }
        match self.mode() {
            Mode::Healthy => {
                tracing::info!(user, "serving");
                self.component.content(&user).into_response()
            }
            Mode::Failing => {
                tracing::error!(user, "failing (switched to fail)");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
            Mode::Slow => {
                tracing::warn!(user, "hanging (switched to slow)");
                std::future::pending().await
            }
            Mode::NotFound => {
                tracing::info!(user, "nothing for this user");
                StatusCode::NOT_FOUND.into_response()
            }
        }
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        // Nothing can panic while the lock is held: a poisoned list is fine.
        self.state
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl fmt::Debug for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Switch")
            .field("mode", &Mode::from_u8(self.mode.load(Ordering::Relaxed)))
            .field("calls", &self.calls.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

// === impl ProfileSettings ===

impl ProfileSettings {
    /// Settings for a demo: a 300 ms timeout, breakers that decide after 4
    /// calls and stay open for 1 s (up to 2 s when probes keep failing).
    pub const DEMO: ProfileSettings = ProfileSettings {
        timeout: Duration::from_millis(300),
        window: 4,
        open_for: Duration::from_secs(1),
    };

    /// The breaker of `component`'s calls.
    ///
    /// # Errors
    /// - the settings are out of the breaker's ranges (`window` zero or
    ///   above 1,000,000, `open_for` zero)
    pub fn breaker_config(
        &self,
        component: Component,
    ) -> Result<CircuitBreakerConfig, ConfigError> {
        CircuitBreakerConfig::builder()
            .name(component.name())
            .count_window(self.window)
            .minimum_calls(self.window)
            .failure_rate_threshold(50.0)
            .open_for(self.open_for)
            .max_open_for(self.open_for.saturating_mul(2))
            .jitter(0.0) // a demo wants exact times; keep the default ±10% in production
            .half_open_probes(1)
            .build()
    }

    /// The client stack of `component`'s calls: the call's deadline and the
    /// attempt timeout both `timeout`, the breaker of
    /// [`breaker_config`](Self::breaker_config), passive ejection off, and
    /// no retries, throttle or health checks (see the
    /// [module docs](self) for why).
    ///
    /// # Errors
    /// - as [`breaker_config`](Self::breaker_config); `timeout` is zero
    pub fn client_config(&self, component: Component) -> Result<ClientConfig, ConfigError> {
        ClientConfig::builder(component.name())
            .deadline(self.timeout)
            .attempt_timeout(self.timeout)
            .breaker(self.breaker_config(component)?)
            .balancer(
                RoundRobinConfig::builder()
                    .name(component.name())
                    .consecutive_failures(0)
                    .build()?,
            )
            .without(ClientPart::Retry)
            .without(ClientPart::Throttle)
            .without(ClientPart::HealthCheck)
            .build()
    }
}

/// The profile's configuration file, `examples/config/profile.toml`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    server: ServerConfig,
    clients: ClientsFile,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientsFile {
    publications: ClientConfig,
    #[serde(rename = "about-me")]
    about_me: ClientConfig,
    institution: ClientConfig,
}

fn config_file() -> ConfigFile {
    toml::from_str(include_str!("../config/profile.toml"))
        .expect("examples/config/profile.toml is a valid configuration")
}

/// The profile page's server stack, from `examples/config/profile.toml`'s
/// `[server]` (context in, timeout, bounded queue, refusals answered).
pub fn server_config() -> ServerConfig {
    config_file().server
}

/// The client stack of `component`'s calls, from
/// `examples/config/profile.toml`'s `[clients.<component>]`: the values of
/// [`ProfileSettings::DEMO`]. Give it to [`Profile::with_configs`].
pub fn client_config(component: Component) -> ClientConfig {
    let clients = config_file().clients;
    match component {
        Component::Publications => clients.publications,
        Component::AboutMe => clients.about_me,
        Component::Institution => clients.institution,
    }
}

// === impl Profile ===

impl Profile {
    /// A profile calling each component at `url_of(component)`, a base URL
    /// such as `http://127.0.0.1:8080`.
    ///
    /// Build it inside a tokio runtime.
    ///
    /// # Errors
    /// - the settings make an invalid client configuration (see
    ///   [`ProfileSettings::client_config`])
    /// - a URL is not `http://<ip>:<port>`
    pub fn new(
        settings: &ProfileSettings,
        url_of: impl Fn(Component) -> String,
    ) -> Result<Self, ConfigError> {
        let mut configs = Vec::with_capacity(3);
        for component in Component::ALL {
            configs.push(settings.client_config(component)?);
        }
        Self::with_configs(|c| configs[c.index()].clone(), url_of)
    }

    /// A profile calling each component at `url_of(component)` through the
    /// client stack `config_of(component)` describes (for instance
    /// [`client_config`], from the profile's file). Without a deadline, a
    /// component's call (its body included) may take
    /// [`ClientConfig::DEFAULT_DEADLINE`].
    ///
    /// Build it inside a tokio runtime.
    ///
    /// # Errors
    /// - the client stack refuses a configuration
    /// - a URL is not `http://<ip>:<port>`
    pub fn with_configs(
        config_of: impl Fn(Component) -> ClientConfig,
        url_of: impl Fn(Component) -> String,
    ) -> Result<Self, ConfigError> {
        let mut deps = Vec::with_capacity(3);
        for component in Component::ALL {
            let config = config_of(component);
            let timeout = config.deadline().unwrap_or(ClientConfig::DEFAULT_DEADLINE);
            let url = url_of(component);
            let addr: SocketAddr = url
                .strip_prefix("http://")
                .and_then(|a| a.trim_end_matches('/').parse().ok())
                .ok_or(ConfigError::new("url", "must be http://<ip>:<port>"))?;
            // Named after the component: its log lines, metrics and
            // snapshots say which call timed out, which breaker opened.
            let stack = ClientStack::builder(config)
                .endpoints([Endpoint::new(addr)])
                .build_http::<Body>()?;
            let breaker = stack
                .handles()
                .breakers()
                .and_then(|b| b.get(&addr.to_string()))
                .ok_or(ConfigError::new(
                    "breaker",
                    "a component's client needs its breaker",
                ))?;
            deps.push(Dependency {
                component,
                timeout,
                url,
                client: stack.into_service(),
                breaker,
            });
        }
        let deps: [Dependency; 3] = deps.try_into().expect("one per component");
        let flags = FlagStore::new(
            FlagSet::builder()
                .flag(
                    Flag::boolean(NEW_FEATURE_FLAG)
                        .enabled(false)
                        .overridable(true),
                )
                .build()?,
        );
        Ok(Self {
            inner: Arc::new(ProfileInner { deps, flags }),
        })
    }

    /// The breaker of `component`'s calls.
    pub fn breaker(&self, component: Component) -> &CircuitBreakerHandle {
        &self.inner.deps[component.index()].breaker
    }

    /// The page's flag store (the `newfeature` flag).
    pub fn flags(&self) -> &FlagStore {
        &self.inner.flags
    }

    /// One line with every breaker's state and window, e.g.
    /// `publications=open (4 calls, 4 failed, half-open in 950ms) about-me=closed (4 calls, 0 failed) ...`.
    pub fn breaker_states(&self) -> String {
        let mut line = String::new();
        for dep in &self.inner.deps {
            let s = dep.breaker.snapshot();
            if !line.is_empty() {
                line.push_str("  ");
            }
            line.push_str(&format!(
                "{}={} ({} calls, {} failed",
                dep.component,
                s.state(),
                s.calls(),
                s.failures()
            ));
            if let Some(left) = s.time_until_half_open() {
                line.push_str(&format!(", half-open in {}ms", left.as_millis()));
            }
            line.push(')');
        }
        line
    }

    /// The router: `GET /profile/{user}`.
    ///
    /// Layer order, outermost first: the standard server stack
    /// ([`ServerStackLayer`] with [`server_config`]: the id on every log line
    /// below and on every component call, a timeout, a bounded queue,
    /// refusals answered), then [`FlagsLayer`]
    /// (this request's flags, with `x-flag-<name>` overrides).
    pub fn app(&self) -> Router {
        async fn page(
            State(profile): State<Profile>,
            Path(user): Path<String>,
            flags: Flags,
        ) -> Response {
            profile
                .render(user, flags)
                .instrument(tracing::info_span!("profile"))
                .await
        }
        // A demo on loopback trusts every caller's overrides; a real edge
        // service checks who is asking (staff credentials, an internal
        // network) before honouring them.
        let flags_config = FlagsConfig::builder()
            .trust_overrides(|_| true)
            .build()
            .expect("valid flags configuration");
        Router::new()
            .route("/profile/{user}", get(page))
            .with_state(self.clone())
            .layer(FlagsLayer::with_config(
                self.inner.flags.clone(),
                flags_config,
            ))
            .layer(ServerStackLayer::http(server_config()))
    }

    async fn render(self, user: String, flags: Flags) -> Response {
        // The user goes into the components' URLs: accept plain names only.
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if user.is_empty() || user.len() > 64 || !user.chars().all(valid) {
            return (StatusCode::BAD_REQUEST, "invalid user name\n").into_response();
        }
        tracing::info!(user, "rendering profile");
        let [p, a, i] = &self.inner.deps;
        // At the same time, in this task: the request context (a task-local)
        // stays in scope for the client layers. A spawned task would lose it.
        let (p, a, i) = tokio::join!(
            self.section(p, &user),
            self.section(a, &user),
            self.section(i, &user)
        );
        let sections = Component::ALL.into_iter().zip([p, a, i]);

        let mut body = format!("Profile of {user}\n");
        let mut degraded = Vec::new();
        for (component, section) in sections {
            let text = match &section {
                Section::Content(text) => text.as_str(),
                Section::Missing => "(nothing to show)",
                Section::Degraded(why) => {
                    tracing::warn!(%component, reason = %why, "component degraded, serving its fallback");
                    degraded.push(format!("{component}={why}"));
                    component.fallback()
                }
            };
            body.push_str(&format!("  {component}: {text}\n"));
        }
        if flags.is_active(NEW_FEATURE_FLAG) {
            body.push_str(&format!(
                "  new: recommended reading for you (flag {NEW_FEATURE_FLAG})\n"
            ));
        }
        if degraded.is_empty() {
            body.push_str("all components available\n");
        } else {
            body.push_str(&format!("degraded: {}\n", degraded.join(", ")));
        }

        let mut rsp = body.into_response();
        if !degraded.is_empty() {
            if let Ok(value) = HeaderValue::from_str(&degraded.join(", ")) {
                rsp.headers_mut().insert(DEGRADED_HEADER, value);
            }
        }
        rsp
    }

    async fn section(&self, dep: &Dependency, user: &str) -> Section {
        let url = format!("{}/{}/{user}", dep.url, dep.component.name());
        match self.call(dep, &url).await {
            Ok((StatusCode::OK, text)) => Section::Content(text),
            Ok((StatusCode::NOT_FOUND, _)) => Section::Missing,
            Ok((status, _)) => {
                Section::Degraded(Degraded::Error(format!("HTTP {}", status.as_u16())))
            }
            Err(err) => Section::Degraded(Degraded::from_error(&*err)),
        }
    }

    /// GETs `url` through the component's stack. The timeout layer bounds
    /// the wait for the response head; the body is read within what is left
    /// of the same timeout, so a component that stalls mid-body cannot hold
    /// the page either.
    async fn call(&self, dep: &Dependency, url: &str) -> Result<(StatusCode, String), BoxError> {
        let started = Instant::now();
        let req = http::Request::get(url).body(Body::default())?;
        let rsp = dep.client.clone().oneshot(req).await?;
        let status = rsp.status();
        let left = dep.timeout.saturating_sub(started.elapsed());
        let body = tokio::time::timeout(left, rsp.into_body().collect())
            .await
            .map_err(|_| Elapsed::new())??
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

// === impl Degraded ===

impl Degraded {
    /// Why a call failed, from its error: a breaker's refusal, a timeout
    /// ([`Elapsed`]), or anything else. Under the client stack's balancer,
    /// the component's one endpoint is not ready while its circuit is open,
    /// so the refusal comes as "no healthy endpoint" (with health checks
    /// and ejection off, nothing else takes the endpoint out).
    fn from_error(err: &(dyn Error + 'static)) -> Self {
        let refused = find_in_chain::<Rejected>(err).map(Rejected::kind);
        if matches!(
            refused,
            Some(RejectionKind::CircuitOpen | RejectionKind::NoHealthyEndpoint)
        ) {
            Degraded::CircuitOpen
        } else if find_in_chain::<Elapsed>(err).is_some() {
            Degraded::Timeout
        } else {
            Degraded::Error(err.to_string())
        }
    }
}

impl fmt::Display for Degraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Degraded::Timeout => f.write_str("timeout"),
            Degraded::CircuitOpen => f.write_str("circuit open"),
            Degraded::Error(detail) => write!(f, "error ({detail})"),
        }
    }
}

// === impl Demo ===

impl Demo {
    /// Serves the three component services and the profile on loopback
    /// (ephemeral ports), every component healthy.
    ///
    /// # Errors
    /// - a port cannot be bound, or the settings are invalid
    pub async fn start(settings: &ProfileSettings) -> Result<Self, BoxError> {
        let components = Component::ALL.map(ComponentService::new);
        let mut urls = Vec::with_capacity(3);
        for svc in &components {
            urls.push(format!("http://{}", serve(svc.app()).await?));
        }
        let profile = Profile::new(settings, |c| urls[c.index()].clone())?;
        let addr = serve(profile.app()).await?;
        Ok(Self {
            profile,
            url: format!("http://{addr}"),
            components,
            client: http_client(Duration::from_secs(10)),
        })
    }

    /// The service of `component` (its switch and counters).
    pub fn component(&self, component: Component) -> &ComponentService {
        &self.components[component.index()]
    }

    /// A request for `user`'s page carrying `correlation_id`; add headers
    /// (say, `X-Flag-NewFeature: 1`) and a body, then [`fetch`](Self::fetch).
    pub fn page_request(&self, user: &str, correlation_id: &str) -> http::request::Builder {
        http::Request::get(format!("{}/profile/{user}", self.url))
            .header("x-correlation-id", correlation_id)
    }

    /// Sends `req` to the profile as an outside caller would.
    ///
    /// # Errors
    /// - the call failed (10 s timeout), or the body could not be read
    pub async fn fetch(&self, req: http::Request<Body>) -> Result<PageResponse, BoxError> {
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
        let degraded = header(DEGRADED_HEADER);
        let body = rsp.into_body().collect().await?.to_bytes();
        Ok(PageResponse {
            status,
            correlation_id,
            degraded,
            body: String::from_utf8_lossy(&body).into_owned(),
            elapsed: started.elapsed(),
        })
    }

    /// The page of `user`, with `correlation_id`.
    ///
    /// # Errors
    /// - as [`fetch`](Self::fetch)
    pub async fn page(&self, user: &str, correlation_id: &str) -> Result<PageResponse, BoxError> {
        self.fetch(
            self.page_request(user, correlation_id)
                .body(Body::default())?,
        )
        .await
    }
}
