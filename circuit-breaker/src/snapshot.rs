//! [`LayerSnapshot`] for the breaker's and the throttle's handles (feature
//! `snapshot`), so a
//! [`SnapshotRegistry`](resilience_core::snapshot::SnapshotRegistry) serves
//! their state.
//!
//! A breaker's `state` object (kind `circuit_breaker`):
//!
//! ```json
//! { "state": "open", "calls": 4, "failures": 4, "slow_calls": 0,
//!   "failure_rate": 100.0, "slow_call_rate": 0.0,
//!   "time_until_half_open_ms": 10000.0, "consecutive_opens": 1,
//!   "probes_in_use": 0, "ramping": false }
//! ```
//!
//! An [`EndpointBreakers`](crate::EndpointBreakers)' handle (kind
//! `endpoint_breakers`): each live endpoint's breaker as above, keyed by
//! endpoint, in key order:
//!
//! ```json
//! { "endpoints": { "10.0.0.1:8080": { "state": "open", ... },
//!                  "10.0.0.2:8080": { "state": "closed", ... } } }
//! ```
//!
//! A throttle's (kind `throttle`):
//!
//! ```json
//! { "mode": "adaptive", "allow_percent": 100.0, "requests": 40, "accepts": 10,
//!   "accept_ratio": 0.25,
//!   "reject_probability": { "sheddable": 0.5, "sheddable_plus": 0.5,
//!                           "critical": 0.0, "critical_plus": 0.0 },
//!   "waiting": 0 }
//! ```

use resilience_core::snapshot::{LayerSnapshot, PerPriority, millis};
use serde::ser::{Serialize, SerializeMap, SerializeStruct, Serializer};

use crate::endpoints::{EndpointBreakersHandle, EndpointBreakersSnapshot};
use crate::handle::{CircuitBreakerHandle, CircuitBreakerSnapshot};
use crate::throttle::{ThrottleHandle, ThrottleMode, ThrottleSnapshot};

/// The kind of a breaker in the snapshot document.
pub(crate) const CIRCUIT_BREAKER: &str = "circuit_breaker";
/// The kind of a set of breakers per endpoint in the snapshot document.
pub(crate) const ENDPOINT_BREAKERS: &str = "endpoint_breakers";
/// The kind of a throttle in the snapshot document.
pub(crate) const THROTTLE: &str = "throttle";

// === impl CircuitBreakerHandle ===

impl LayerSnapshot for CircuitBreakerHandle {
    type Snapshot = CircuitBreakerSnapshot;

    fn kind(&self) -> &'static str {
        CIRCUIT_BREAKER
    }

    fn name(&self) -> &str {
        CircuitBreakerHandle::name(self)
    }

    fn snapshot(&self) -> CircuitBreakerSnapshot {
        CircuitBreakerHandle::snapshot(self)
    }
}

/// Serialized with the state as its lowercase label (`closed`, `open`,
/// `half_open`, `forced_open`, `disabled`, `metrics_only`), rates in
/// percent (`null` while the window is empty) and
/// `time_until_half_open_ms` (`null` unless open).
impl Serialize for CircuitBreakerSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("CircuitBreakerSnapshot", 10)?;
        s.serialize_field("state", self.state().as_str())?;
        s.serialize_field("calls", &self.calls())?;
        s.serialize_field("failures", &self.failures())?;
        s.serialize_field("slow_calls", &self.slow_calls())?;
        s.serialize_field("failure_rate", &self.failure_rate())?;
        s.serialize_field("slow_call_rate", &self.slow_call_rate())?;
        s.serialize_field(
            "time_until_half_open_ms",
            &self.time_until_half_open().map(millis),
        )?;
        s.serialize_field("consecutive_opens", &self.consecutive_opens())?;
        s.serialize_field("probes_in_use", &self.probes_in_use())?;
        s.serialize_field("ramping", &self.is_ramping())?;
        s.end()
    }
}

// === impl EndpointBreakersHandle ===

impl LayerSnapshot for EndpointBreakersHandle {
    type Snapshot = EndpointBreakersSnapshot;

    fn kind(&self) -> &'static str {
        ENDPOINT_BREAKERS
    }

    fn name(&self) -> &str {
        EndpointBreakersHandle::name(self)
    }

    fn snapshot(&self) -> EndpointBreakersSnapshot {
        EndpointBreakersHandle::snapshot(self)
    }
}

/// Serialized as `{"endpoints": {key: breaker snapshot, ...}}`, in key
/// order.
impl Serialize for EndpointBreakersSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Endpoints<'a>(&'a EndpointBreakersSnapshot);
        impl Serialize for Endpoints<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for (key, snapshot) in self.0.iter() {
                    map.serialize_entry(key, snapshot)?;
                }
                map.end()
            }
        }
        let mut s = serializer.serialize_struct("EndpointBreakersSnapshot", 1)?;
        s.serialize_field("endpoints", &Endpoints(self))?;
        s.end()
    }
}

// === impl ThrottleHandle ===

impl LayerSnapshot for ThrottleHandle {
    type Snapshot = ThrottleSnapshot;

    fn kind(&self) -> &'static str {
        THROTTLE
    }

    fn name(&self) -> &str {
        ThrottleHandle::name(self)
    }

    fn snapshot(&self) -> ThrottleSnapshot {
        ThrottleHandle::snapshot(self)
    }
}

/// Serialized with the mode as `fixed` or `adaptive`, the
/// `accept_ratio` (`null` while the window is empty) and the rejection
/// probabilities keyed by priority (`sheddable`, `sheddable_plus`,
/// `critical`, `critical_plus`).
impl Serialize for ThrottleSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mode = match self.mode {
            ThrottleMode::Fixed => "fixed",
            ThrottleMode::Adaptive => "adaptive",
        };
        let mut s = serializer.serialize_struct("ThrottleSnapshot", 7)?;
        s.serialize_field("mode", mode)?;
        s.serialize_field("allow_percent", &self.allow_percent)?;
        s.serialize_field("requests", &self.requests)?;
        s.serialize_field("accepts", &self.accepts)?;
        s.serialize_field("accept_ratio", &self.accept_ratio())?;
        s.serialize_field("reject_probability", &PerPriority(self.reject_probability))?;
        s.serialize_field("waiting", &self.waiting)?;
        s.end()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::Duration;

    use resilience_core::snapshot::SnapshotRegistry;
    use resilience_core::{BoxError, Priority};
    use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

    use crate::throttle::{ThrottleConfig, ThrottleLayer};
    use crate::{CircuitBreakerConfig, CircuitBreakerLayer};

    #[tokio::test(start_paused = true)]
    async fn breaker_tripped_by_failures_then_forced_open() {
        let config = CircuitBreakerConfig::builder()
            .name("inventory")
            .count_window(4)
            .minimum_calls(4)
            .open_for(Duration::from_secs(10))
            .jitter(0.0)
            .build()
            .unwrap();
        let layer = CircuitBreakerLayer::new(config);
        let handle = layer.handle();
        let registry = SnapshotRegistry::new("shop");
        registry.register(handle.clone());

        let doc = registry.to_json();
        let state = &doc["layers"][0]["state"];
        assert_eq!(doc["layers"][0]["kind"], "circuit_breaker");
        assert_eq!(doc["layers"][0]["name"], "inventory");
        assert_eq!(state["state"], "closed");
        assert_eq!(state["calls"], 0);
        assert!(state["failure_rate"].is_null());
        assert!(state["time_until_half_open_ms"].is_null());

        let failing = service_fn(|_: http::Request<()>| async {
            Ok::<_, BoxError>(http::Response::builder().status(503).body(()).unwrap())
        });
        let mut svc = ServiceBuilder::new().layer(layer).service(failing);
        for _ in 0..4 {
            let req = http::Request::new(());
            svc.ready().await.unwrap().call(req).await.unwrap();
        }
        tokio::time::advance(Duration::from_secs(4)).await;

        let doc = registry.to_json();
        let state = &doc["layers"][0]["state"];
        assert_eq!(state["state"], "open");
        assert_eq!(state["failures"], 4);
        assert_eq!(state["slow_calls"], 0);
        assert_eq!(state["failure_rate"], 100.0);
        assert_eq!(state["slow_call_rate"], 0.0);
        assert_eq!(state["time_until_half_open_ms"], 6000.0);
        assert_eq!(state["consecutive_opens"], 1);
        assert_eq!(state["probes_in_use"], 0);
        assert_eq!(state["ramping"], false);

        handle.force_open();
        let doc = registry.to_json();
        assert_eq!(doc["layers"][0]["state"]["state"], "forced_open");
    }

    #[tokio::test(start_paused = true)]
    async fn breakers_per_endpoint_keyed_by_endpoint() {
        let config = CircuitBreakerConfig::builder()
            .name("inventory")
            .count_window(2)
            .minimum_calls(2)
            .build()
            .unwrap();
        let breakers = crate::EndpointBreakers::new(config);
        let registry = SnapshotRegistry::new("shop");
        registry.register(breakers.handle());
        let make = |addr: &str, status: u16| {
            ServiceBuilder::new()
                .layer(breakers.layer_for(addr))
                .service(service_fn(move |_: http::Request<()>| async move {
                    Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
                }))
        };
        let mut bad = make("10.0.0.1:8080", 503);
        let good = make("10.0.0.2:8080", 200);
        for _ in 0..2 {
            let req = http::Request::new(());
            bad.ready().await.unwrap().call(req).await.unwrap();
        }
        let doc = registry.to_json();
        assert_eq!(doc["layers"][0]["kind"], "endpoint_breakers");
        assert_eq!(doc["layers"][0]["name"], "inventory");
        let endpoints = &doc["layers"][0]["state"]["endpoints"];
        assert_eq!(endpoints["10.0.0.1:8080"]["state"], "open");
        assert_eq!(endpoints["10.0.0.1:8080"]["failures"], 2);
        assert_eq!(endpoints["10.0.0.2:8080"]["state"], "closed");
        let keys: Vec<_> = endpoints.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["10.0.0.1:8080", "10.0.0.2:8080"]);

        drop(bad);
        let doc = registry.to_json();
        let endpoints = doc["layers"][0]["state"]["endpoints"].as_object().unwrap();
        assert_eq!(endpoints.len(), 1, "the first endpoint's state is gone");
        drop(good);
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_at_a_fixed_share() {
        let throttle = ThrottleLayer::new(
            ThrottleConfig::builder()
                .name("search")
                .allow_percent(25.0)
                .build()
                .unwrap(),
        );
        let handle = throttle.handle();
        let registry = SnapshotRegistry::new("shop");
        registry.register(handle.clone());

        let doc = registry.to_json();
        assert_eq!(doc["layers"][0]["kind"], "throttle");
        assert_eq!(doc["layers"][0]["name"], "search");
        let state = &doc["layers"][0]["state"];
        assert_eq!(state["mode"], "fixed");
        assert_eq!(state["allow_percent"], 25.0);
        let p = &state["reject_probability"];
        assert_eq!(p["sheddable"], 0.75);
        assert_eq!(p["sheddable_plus"], 0.75);
        assert_eq!(p["critical"], 0.0);
        assert_eq!(p["critical_plus"], 0.0);
        assert_eq!(state["waiting"], 0);
        assert!(state["accept_ratio"].is_null());

        handle.set_allow_percent(0.0);
        let doc = registry.to_json();
        assert_eq!(
            doc["layers"][0]["state"]["reject_probability"]["sheddable"],
            1.0
        );
        assert_eq!(handle.reject_probability(Priority::Critical), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn adaptive_throttle_reports_its_window() {
        let throttle = ThrottleLayer::new(ThrottleConfig::builder().adaptive().build().unwrap())
            .with_priority(crate::throttle::FixedPriority(Priority::Sheddable));
        let handle = throttle.handle();
        let failing = service_fn(|_: http::Request<()>| async {
            Ok::<_, BoxError>(http::Response::builder().status(503).body(()).unwrap())
        });
        let mut svc = ServiceBuilder::new().layer(throttle).service(failing);
        for _ in 0..20 {
            let _ = svc
                .ready()
                .await
                .unwrap()
                .call(http::Request::new(()))
                .await;
        }
        let registry = SnapshotRegistry::new("shop");
        registry.register(handle);
        let doc = registry.to_json();
        let state = &doc["layers"][0]["state"];
        assert_eq!(state["mode"], "adaptive");
        assert_eq!(state["requests"], 20);
        assert_eq!(state["accepts"], 0);
        assert_eq!(state["accept_ratio"], 0.0);
        assert!(state["reject_probability"]["sheddable"].as_f64().unwrap() > 0.5);
        assert_eq!(state["reject_probability"]["critical"], 0.0);
    }
}
