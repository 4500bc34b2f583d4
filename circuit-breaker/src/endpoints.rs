//! A circuit breaker per endpoint: [`EndpointBreakers`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use resilience_core::HttpOutcome;

use crate::config::{CircuitBreakerConfig, SlidingWindow};
use crate::handle::{CircuitBreakerHandle, CircuitBreakerSnapshot, Endpoint, Shared};
use crate::layer::CircuitBreakerLayer;
use crate::metrics::Metrics;
use crate::state::CircuitState;

/// One circuit breaker per endpoint of a dependency: each endpoint's calls
/// open and close only its own circuit.
///
/// A [`CircuitBreakerLayer`] (and every clone of it) is *one* breaker: put
/// in front of each endpoint of a balancer, one bad instance would open the
/// circuit for all of them. `EndpointBreakers` keeps a separate state per
/// endpoint key instead, made from one configuration:
///
/// - [`layer_for(key)`](EndpointBreakers::layer_for) gives the layer of
///   `key`'s breaker. Asked again while the key's breaker is alive, it gives
///   the same state (so a balancer that remakes an endpoint's service keeps
///   its breaker).
/// - A key's state lives as long as something holds it: a layer, a service
///   made by one, an in-flight call, or a [`CircuitBreakerHandle`]. When the
///   balancer drops the service of an endpoint that left (and its last call
///   has completed), the state is dropped and the key is forgotten: its
///   state gauges go to 0, and a later `layer_for` of the key starts a new,
///   closed breaker.
/// - [`handle`](EndpointBreakers::handle) lists every live endpoint's
///   breaker and snapshots them all.
/// - Metrics carry an `endpoint` label (the key) beside `name` (the
///   configuration's name, shared by all endpoints). Use the endpoint's
///   address as its key: the label's values are bounded by the endpoint set.
///
/// # Example
///
/// Two endpoints; one fails, and only its circuit opens:
///
/// ```
/// use std::time::Duration;
/// use resilience_circuit_breaker::{CircuitBreakerConfig, CircuitState, EndpointBreakers};
/// use resilience_core::BoxError;
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let config = CircuitBreakerConfig::builder()
///     .name("inventory")
///     .count_window(4)
///     .minimum_calls(4)
///     .build()
///     .unwrap();
/// let breakers = EndpointBreakers::new(config);
///
/// // what a balancer's endpoint maker does for each endpoint
/// let make = |addr: &str| {
///     let status = if addr == "10.0.0.1:8080" { 503 } else { 200 };
///     ServiceBuilder::new()
///         .layer(breakers.layer_for(addr))
///         .service(service_fn(move |_: http::Request<()>| async move {
///             Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
///         }))
/// };
/// let mut bad = make("10.0.0.1:8080");
/// let mut good = make("10.0.0.2:8080");
/// for _ in 0..4 {
///     bad.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
///     good.ready().await.unwrap().call(http::Request::new(())).await.unwrap();
/// }
///
/// let handle = breakers.handle();
/// assert_eq!(handle.get("10.0.0.1:8080").unwrap().state(), CircuitState::Open);
/// assert_eq!(handle.get("10.0.0.2:8080").unwrap().state(), CircuitState::Closed);
/// assert!(good.ready().await.unwrap().call(http::Request::new(())).await.is_ok());
///
/// // the first endpoint leaves: its service is dropped, and its state with it
/// drop(bad);
/// assert_eq!(handle.snapshot().len(), 1);
/// # }
/// ```
///
/// With a balancer (resilience-discovery's round robin, or tower's), the
/// endpoint maker puts `breakers.layer_for(addr)` in front of each
/// endpoint's client.
///
/// # Clone semantics
///
/// Cloning `EndpointBreakers` shares the registry of endpoint states: clones
/// give the same breaker for the same key.
pub struct EndpointBreakers<C = HttpOutcome> {
    registry: Arc<Registry>,
    classify: C,
}

/// Lists and snapshots the breakers of an [`EndpointBreakers`], one per
/// live endpoint.
///
/// Holding this handle does not keep any endpoint's state alive; the
/// [`CircuitBreakerHandle`]s it gives out do.
#[derive(Clone)]
pub struct EndpointBreakersHandle {
    registry: Arc<Registry>,
}

/// A point-in-time view of every live endpoint's breaker, from
/// [`EndpointBreakersHandle::snapshot`], ordered by endpoint key.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointBreakersSnapshot {
    name: String,
    endpoints: Vec<(String, CircuitBreakerSnapshot)>,
}

/// The endpoint states of an [`EndpointBreakers`]: its configuration and a
/// weak reference per key.
pub(crate) struct Registry {
    name: String,
    /// The configuration of new endpoints' breakers (changed by
    /// [`EndpointBreakersHandle::reconfigure`]).
    config: Mutex<CircuitBreakerConfig>,
    endpoints: Mutex<HashMap<Arc<str>, Weak<Shared>>>,
}

// === impl EndpointBreakers ===

impl EndpointBreakers {
    /// Breakers for HTTP responses ([`HttpOutcome`]), one per endpoint, each
    /// configured with `config`.
    ///
    /// With the `metrics` feature, install the metrics recorder before
    /// asking for the layers: an endpoint's metric handles are registered
    /// when its breaker is made.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self {
            registry: Arc::new(Registry {
                name: config.name().to_owned(),
                config: Mutex::new(config),
                endpoints: Mutex::new(HashMap::new()),
            }),
            classify: HttpOutcome::new(),
        }
    }
}

impl Default for EndpointBreakers {
    /// [`EndpointBreakers::new`] with [`CircuitBreakerConfig::default`].
    fn default() -> Self {
        Self::new(CircuitBreakerConfig::default())
    }
}

impl<C> EndpointBreakers<C> {
    /// Classifies outcomes with `classify` instead (see
    /// [`CircuitBreakerLayer::with_classifier`]), for the layers given from
    /// now on.
    pub fn with_classifier<C2>(self, classify: C2) -> EndpointBreakers<C2> {
        EndpointBreakers {
            registry: self.registry,
            classify,
        }
    }

    /// The layer of `key`'s breaker: the live state of `key` if there is
    /// one, else a new, closed breaker.
    ///
    /// Takes the registry's lock (not a request-path operation: call it when
    /// an endpoint's service is made).
    pub fn layer_for(&self, key: impl Into<String>) -> CircuitBreakerLayer<C>
    where
        C: Clone,
    {
        let shared = self.registry.get_or_make(key.into());
        CircuitBreakerLayer::with_shared(shared, self.classify.clone())
    }

    /// A handle listing every live endpoint's breaker.
    pub fn handle(&self) -> EndpointBreakersHandle {
        EndpointBreakersHandle {
            registry: self.registry.clone(),
        }
    }
}

impl<C: Clone> Clone for EndpointBreakers<C> {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<C> fmt::Debug for EndpointBreakers<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointBreakers")
            .field("name", &&self.registry.name)
            .field("endpoints", &self.registry.len())
            .finish_non_exhaustive()
    }
}

// === impl EndpointBreakersHandle ===

impl EndpointBreakersHandle {
    /// The breakers' name (their `name` metric label).
    pub fn name(&self) -> &str {
        &self.registry.name
    }

    /// Changes the settings of every endpoint's breaker in place, and of
    /// the breakers of endpoints that come later: see
    /// [`CircuitBreakerHandle::reconfigure`] for what changes and what is
    /// kept. Returns the settings that differ but cannot change at run time
    /// (`name`, `window`): they keep their old values.
    pub fn reconfigure(&self, config: &CircuitBreakerConfig) -> Vec<&'static str> {
        self.registry.reconfigure(config)
    }

    /// The configuration of the breakers: the one they were made with, or
    /// the last given to [`reconfigure`](Self::reconfigure) with its
    /// restart-only settings at their old values.
    pub fn config(&self) -> CircuitBreakerConfig {
        self.registry
            .config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A handle on `key`'s breaker, if it is alive. Holding it keeps the
    /// state alive.
    pub fn get(&self, key: &str) -> Option<CircuitBreakerHandle> {
        let shared = self.registry.lock().get(key).and_then(Weak::upgrade);
        shared.map(|shared| CircuitBreakerHandle { shared })
    }

    /// A handle on every live endpoint's breaker, ordered by key. Holding
    /// them keeps the states alive.
    pub fn endpoints(&self) -> Vec<CircuitBreakerHandle> {
        let mut live = self.registry.live();
        live.sort_by(|a, b| a.endpoint().cmp(&b.endpoint()));
        live.into_iter()
            .map(|shared| CircuitBreakerHandle { shared })
            .collect()
    }

    /// How many endpoints have a live breaker.
    pub fn len(&self) -> usize {
        self.registry.len()
    }

    /// Whether no endpoint has a live breaker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every live endpoint's breaker.
    pub fn snapshot(&self) -> EndpointBreakersSnapshot {
        let endpoints = self
            .endpoints()
            .into_iter()
            .map(|h| (h.endpoint().unwrap_or_default().to_owned(), h.snapshot()))
            .collect();
        EndpointBreakersSnapshot {
            name: self.name().to_owned(),
            endpoints,
        }
    }
}

impl fmt::Debug for EndpointBreakersHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointBreakersHandle")
            .field("name", &self.name())
            .field("endpoints", &self.len())
            .finish()
    }
}

// === impl EndpointBreakersSnapshot ===

impl EndpointBreakersSnapshot {
    /// The breakers' name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Each live endpoint's key and snapshot, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &CircuitBreakerSnapshot)> {
        self.endpoints.iter().map(|(k, s)| (k.as_str(), s))
    }

    /// The snapshot of `key`'s breaker, if it was alive.
    pub fn get(&self, key: &str) -> Option<&CircuitBreakerSnapshot> {
        self.endpoints
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &self.endpoints[i].1)
    }

    /// How many endpoints had a live breaker.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether no endpoint had a live breaker.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// How many endpoints' breakers were in `state`.
    pub fn count(&self, state: CircuitState) -> usize {
        self.endpoints
            .iter()
            .filter(|(_, s)| s.state() == state)
            .count()
    }
}

// === impl Registry ===

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Weak<Shared>>> {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The live state of `key`, or a new one.
    fn get_or_make(self: &Arc<Self>, key: String) -> Arc<Shared> {
        let mut endpoints = self.lock();
        if let Some(shared) = endpoints.get(key.as_str()).and_then(Weak::upgrade) {
            // Returned, never dropped under the lock (its drop takes it).
            return shared;
        }
        let key: Arc<str> = Arc::from(key);
        let endpoint = Endpoint {
            key: key.clone(),
            registry: self.clone(),
        };
        let config = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        let shared = Arc::new(Shared::new(&config, Some(endpoint)));
        drop(config);
        // Replaces the entry of a state being dropped, if any: its drop
        // then finds this live one and leaves the key (and its gauges) alone.
        endpoints.insert(key, Arc::downgrade(&shared));
        shared
    }

    /// Changes every live breaker's settings in place, and those of the
    /// breakers made from now on; see
    /// [`EndpointBreakersHandle::reconfigure`].
    fn reconfigure(&self, config: &CircuitBreakerConfig) -> Vec<&'static str> {
        let mut restart_only = Vec::new();
        if config.name() != self.name {
            restart_only.push("name");
        }
        let mut kept = config.clone();
        kept.name.clone_from(&self.name);
        {
            let mut current = self.config.lock().unwrap_or_else(PoisonError::into_inner);
            let consecutive = matches!(
                (kept.window, current.window),
                (
                    SlidingWindow::ConsecutiveFailures { .. },
                    SlidingWindow::ConsecutiveFailures { .. }
                )
            );
            if kept.window != current.window && !consecutive {
                restart_only.push("window");
                kept.window = current.window;
            }
            *current = kept.clone();
        }
        for shared in self.live() {
            shared.core.reconfigure(&kept);
        }
        restart_only
    }

    /// The live states.
    fn live(&self) -> Vec<Arc<Shared>> {
        // Collected under the lock, dropped after it (the last reference's
        // drop takes the lock).
        let endpoints = self.lock();
        let live: Vec<_> = endpoints.values().filter_map(Weak::upgrade).collect();
        drop(endpoints);
        live
    }

    fn len(&self) -> usize {
        self.lock()
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// `key`'s state is being dropped (its last reference went): forget the
    /// key and set its state gauges to 0, unless the key has a new live
    /// state already (whose gauges are the same series).
    pub(crate) fn forget(&self, key: &str, metrics: &Metrics) {
        let mut endpoints = self.lock();
        match endpoints.get(key) {
            Some(weak) if weak.strong_count() > 0 => {}
            _ => {
                endpoints.remove(key);
                metrics.clear_state();
            }
        }
    }
}
