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

use serde::Serialize;
use serde_json::{Value, json};

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
