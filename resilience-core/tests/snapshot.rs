//! The snapshot registry: the document's shape, handles that fail to
//! serialize, and the axum route.

#![cfg(feature = "snapshot")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use resilience_core::snapshot::{LayerSnapshot, SCHEMA_VERSION, SnapshotRegistry};
use serde::Serialize;

#[derive(Clone, Default)]
struct Counter {
    name: &'static str,
    value: Arc<AtomicU64>,
}

#[derive(Serialize)]
struct CounterSnapshot {
    value: u64,
}

impl LayerSnapshot for Counter {
    type Snapshot = CounterSnapshot;
    fn kind(&self) -> &'static str {
        "counter"
    }
    fn name(&self) -> &str {
        self.name
    }
    fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            value: self.value.load(Ordering::Relaxed),
        }
    }
}

/// A handle whose snapshot never serializes.
struct Broken;

struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("boom"))
    }
}

impl LayerSnapshot for Broken {
    type Snapshot = Unserializable;
    fn kind(&self) -> &'static str {
        "broken"
    }
    fn name(&self) -> &str {
        "broken"
    }
    fn snapshot(&self) -> Unserializable {
        Unserializable
    }
}

#[test]
fn empty_registry() {
    let registry = SnapshotRegistry::new("shop");
    assert!(registry.is_empty());
    assert_eq!(registry.len(), 0);
    assert_eq!(registry.service(), "shop");
    let doc = registry.to_json();
    assert_eq!(doc["schema_version"], SCHEMA_VERSION);
    assert_eq!(doc["service"], "shop");
    assert_eq!(doc["layers"], serde_json::json!([]));
}

#[test]
fn two_handles_in_registration_order_with_live_state() {
    let registry = SnapshotRegistry::new("shop");
    let requests = Counter {
        name: "requests",
        ..Counter::default()
    };
    let errors = Counter {
        name: "errors",
        ..Counter::default()
    };
    registry.register(requests.clone()).register(errors.clone());
    assert_eq!(registry.len(), 2);

    requests.value.store(7, Ordering::Relaxed);
    errors.value.store(1, Ordering::Relaxed);
    let doc = registry.to_json();
    let layers = doc["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0]["kind"], "counter");
    assert_eq!(layers[0]["name"], "requests");
    assert_eq!(layers[0]["state"]["value"], 7);
    assert_eq!(layers[1]["name"], "errors");
    assert_eq!(layers[1]["state"]["value"], 1);

    // Clones share the list, and every document reads the state now.
    requests.value.store(8, Ordering::Relaxed);
    assert_eq!(registry.clone().to_json()["layers"][0]["state"]["value"], 8);
    let debug = format!("{registry:?}");
    assert!(debug.contains("counter/requests"), "{debug}");
}

#[test]
fn a_snapshot_that_fails_to_serialize_becomes_an_error_object() {
    let registry = SnapshotRegistry::new("shop");
    registry.register(Broken).register(Counter {
        name: "requests",
        ..Counter::default()
    });
    let doc = registry.to_json();
    assert_eq!(doc["layers"][0]["kind"], "broken");
    let error = doc["layers"][0]["state"]["error"].as_str().unwrap();
    assert!(error.contains("boom"), "{error}");
    // The other handles are unaffected.
    assert_eq!(doc["layers"][1]["state"]["value"], 0);
}

#[test]
fn response_is_json_and_not_cached() {
    let registry = SnapshotRegistry::new("shop");
    registry.register(Counter::default());
    let rsp = registry.response();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["content-type"], "application/json");
    assert_eq!(rsp.headers()["cache-control"], "no-store");
    let doc: serde_json::Value = serde_json::from_str(rsp.body()).unwrap();
    assert_eq!(doc, registry.to_json());
}

#[test]
fn helpers_spell_priorities_and_milliseconds() {
    use resilience_core::Priority;
    use resilience_core::snapshot::{PerPriority, millis, priority_key};
    let v = serde_json::to_value(PerPriority([1, 2, 3, 4])).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"sheddable": 1, "sheddable_plus": 2, "critical": 3, "critical_plus": 4})
    );
    assert_eq!(priority_key(Priority::SheddablePlus), "sheddable_plus");
    assert_eq!(millis(std::time::Duration::from_micros(1500)), 1.5);
}

#[cfg(feature = "axum")]
mod axum_route {
    use super::*;
    use resilience_core::snapshot::PATH;
    use tower::ServiceExt;

    async fn get(app: axum::Router, uri: &str) -> (http::StatusCode, http::HeaderMap, Vec<u8>) {
        let req = http::Request::get(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        let rsp = app.oneshot(req).await.unwrap();
        let (parts, body) = rsp.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (parts.status, parts.headers, body.to_vec())
    }

    #[tokio::test]
    async fn router_serves_the_document() {
        let registry = SnapshotRegistry::new("shop");
        let requests = Counter {
            name: "requests",
            ..Counter::default()
        };
        registry.register(requests.clone());
        requests.value.store(3, Ordering::Relaxed);

        let app = registry.router();
        let (status, headers, body) = get(app.clone(), PATH).await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "application/json");
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["service"], "shop");
        assert_eq!(doc["layers"][0]["name"], "requests");
        assert_eq!(doc["layers"][0]["state"]["value"], 3);

        // Handles registered after the router was built appear too.
        registry.register(Broken);
        let (_, _, body) = get(app.clone(), "/resilience").await;
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["layers"].as_array().unwrap().len(), 2);

        let (status, _, _) = get(app, "/other").await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn method_router_mounts_on_a_router_with_state() {
        #[derive(Clone)]
        struct AppState;
        let registry = SnapshotRegistry::new("shop");
        let app: axum::Router = axum::Router::new()
            .route("/admin/resilience", registry.method_router())
            .with_state(AppState);
        let (status, _, body) = get(app, "/admin/resilience").await;
        assert_eq!(status, 200);
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["layers"], serde_json::json!([]));
    }
}
