//! Snapshots of every layer's state, collected into one JSON document.
//!
//! Each layer's handle (a breaker's, a queue's, a balancer's, a flag
//! store's, ...) implements [`LayerSnapshot`]: a kind, a name, and a
//! serde-serializable view of its state now. A [`SnapshotRegistry`] holds
//! the handles of one service under their names and renders them all as one
//! document, the body of a `/resilience` route that dashboards and health
//! checks poll:
//!
//! ```json
//! {
//!   "schema_version": 1,
//!   "service": "shop",
//!   "layers": [
//!     { "kind": "circuit_breaker", "name": "inventory", "state": { "state": "closed", ... } }
//!   ]
//! }
//! ```
//!
//! Taking a snapshot reads the handles' atomics or swaps an `Arc`: it never
//! takes a lock that the request path waits on. The registry's own list is
//! behind a lock that only registration and rendering take.
//!
//! [`SnapshotRegistry::response`] is the document as an HTTP response, for
//! any server;
#![cfg_attr(
    feature = "axum",
    doc = "with the `axum` feature, [`SnapshotRegistry::router`] is a ready \
           `GET /resilience` route and [`SnapshotRegistry::method_router`] the \
           same handler to mount on a router with state."
)]
#![cfg_attr(
    not(feature = "axum"),
    doc = "with the `axum` feature, `SnapshotRegistry::router` is a ready \
           `GET /resilience` route and `SnapshotRegistry::method_router` the \
           same handler to mount on a router with state."
)]
//!
//! # Example
//!
//! ```
//! use resilience_core::snapshot::{LayerSnapshot, SnapshotRegistry};
//!
//! #[derive(Clone)]
//! struct Counter(std::sync::Arc<std::sync::atomic::AtomicU64>);
//!
//! #[derive(serde::Serialize)]
//! struct CounterSnapshot { value: u64 }
//!
//! impl LayerSnapshot for Counter {
//!     type Snapshot = CounterSnapshot;
//!     fn kind(&self) -> &'static str { "counter" }
//!     fn name(&self) -> &str { "requests" }
//!     fn snapshot(&self) -> CounterSnapshot {
//!         CounterSnapshot { value: self.0.load(std::sync::atomic::Ordering::Relaxed) }
//!     }
//! }
//!
//! let registry = SnapshotRegistry::new("shop");
//! registry.register(Counter(Default::default()));
//! let doc = registry.to_json();
//! assert_eq!(doc["schema_version"], 1);
//! assert_eq!(doc["layers"][0]["kind"], "counter");
//! assert_eq!(doc["layers"][0]["state"]["value"], 0);
//! ```

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Value, json};

use crate::Priority;

/// The path [`SnapshotRegistry`]'s axum route serves: `/resilience`.
pub const PATH: &str = "/resilience";

/// The version of the document [`SnapshotRegistry::to_json`] renders; it
/// changes when a field is removed or changes meaning (adding a field does
/// not change it).
pub const SCHEMA_VERSION: u32 = 1;

/// A layer handle that can report a point-in-time view of its state.
///
/// Implemented by every layer's handle in the family (with the crate's
/// `snapshot` feature). Taking a snapshot must not block the request path.
pub trait LayerSnapshot: Send + Sync + 'static {
    /// The view of the state; serialized into the registry's document.
    type Snapshot: Serialize;

    /// What kind of layer this is, a lowercase constant
    /// (`circuit_breaker`, `bounded_queue`, `round_robin`, ...).
    fn kind(&self) -> &'static str;

    /// The layer instance's name (its `name` metric label).
    fn name(&self) -> &str;

    /// The state now.
    fn snapshot(&self) -> Self::Snapshot;
}

/// One value per [`Priority`], indexed by [`Priority::index`]; serialized
/// as an object keyed by [`priority_key`]:
/// `{"sheddable": .., "sheddable_plus": .., "critical": .., "critical_plus": ..}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PerPriority<T>(pub [T; 4]);

/// Named layer handles of one service, rendered as one JSON document.
///
/// Cheap to clone; clones share the list.
#[derive(Clone)]
pub struct SnapshotRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    entries: RwLock<Vec<Arc<dyn ErasedSnapshot>>>,
}

/// [`LayerSnapshot`] with its snapshot rendered to JSON, so handles of
/// different types share one list.
trait ErasedSnapshot: Send + Sync {
    fn kind(&self) -> &'static str;
    fn name(&self) -> &str;
    fn state(&self) -> Value;
}

impl<T: LayerSnapshot> ErasedSnapshot for T {
    fn kind(&self) -> &'static str {
        LayerSnapshot::kind(self)
    }
    fn name(&self) -> &str {
        LayerSnapshot::name(self)
    }
    fn state(&self) -> Value {
        serde_json::to_value(self.snapshot()).unwrap_or_else(|error| {
            tracing::warn!(%error, kind = self.kind(), name = self.name(), "snapshot did not serialize");
            json!({ "error": error.to_string() })
        })
    }
}

/// A duration in milliseconds, as the documents' `_ms` fields carry it.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A priority level as the documents spell it, in keys and values:
/// `sheddable`, `sheddable_plus`, `critical`, `critical_plus` (snake case,
/// unlike the `x-priority` header's and the metric label's
/// [`Priority::as_str`]).
pub const fn priority_key(priority: Priority) -> &'static str {
    match priority {
        Priority::Sheddable => "sheddable",
        Priority::SheddablePlus => "sheddable_plus",
        Priority::Critical => "critical",
        Priority::CriticalPlus => "critical_plus",
    }
}

// === impl PerPriority ===

impl<T: Serialize> Serialize for PerPriority<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(4))?;
        for p in Priority::ALL {
            map.serialize_entry(priority_key(p), &self.0[p.index()])?;
        }
        map.end()
    }
}

// === impl SnapshotRegistry ===

impl SnapshotRegistry {
    /// An empty registry for the service called `service`.
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                service: service.into(),
                entries: RwLock::new(Vec::new()),
            }),
        }
    }

    /// The service's name.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Adds a handle; it appears in every document from now on, in the
    /// order of registration. Returns `self` for chaining.
    pub fn register(&self, handle: impl LayerSnapshot) -> &Self {
        self.inner
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(handle));
        self
    }

    /// How many handles are registered.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether no handle is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entries(&self) -> Vec<Arc<dyn ErasedSnapshot>> {
        self.inner
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The document: `schema_version`, `service`, and `layers`, one
    /// `{kind, name, state}` object per handle.
    pub fn to_json(&self) -> Value {
        let layers: Vec<Value> = self
            .entries()
            .iter()
            .map(|e| json!({ "kind": e.kind(), "name": e.name(), "state": e.state() }))
            .collect();
        json!({
            "schema_version": SCHEMA_VERSION,
            "service": self.inner.service,
            "layers": layers,
        })
    }

    /// The document as an `application/json` HTTP response.
    pub fn response(&self) -> http::Response<String> {
        let mut rsp = http::Response::new(self.to_json().to_string());
        rsp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        rsp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        rsp
    }
}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl SnapshotRegistry {
    /// A router with one route, `GET /resilience` ([`PATH`]), answering
    /// [`Self::response`]; merge it into the service's router:
    ///
    /// ```
    /// use resilience_core::snapshot::SnapshotRegistry;
    ///
    /// let registry = SnapshotRegistry::new("shop");
    /// let app: axum::Router = axum::Router::new()
    ///     .route("/", axum::routing::get(|| async { "hello" }))
    ///     .merge(registry.router());
    /// # drop(app);
    /// ```
    pub fn router(&self) -> axum::Router {
        axum::Router::new().route(PATH, self.method_router())
    }

    /// The `GET` handler of [`Self::router`], for a router with state
    /// (`Router<S>`) or another path:
    /// `router.route("/admin/resilience", registry.method_router())`.
    pub fn method_router<S>(&self) -> axum::routing::MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let registry = self.clone();
        axum::routing::get(move || {
            let registry = registry.clone();
            async move { registry.response() }
        })
    }
}

impl fmt::Debug for SnapshotRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .entries()
            .iter()
            .map(|e| format!("{}/{}", e.kind(), e.name()))
            .collect();
        f.debug_struct("SnapshotRegistry")
            .field("service", &self.inner.service)
            .field("layers", &names)
            .finish()
    }
}
