//! [`LayerSnapshot`] for [`RoundRobinHandle`] (feature `snapshot`), so a
//! [`SnapshotRegistry`](resilience_core::snapshot::SnapshotRegistry) serves
//! a balancer's endpoints.
//!
//! A balancer's `state` object (kind `round_robin`):
//!
//! ```json
//! { "endpoints": [ { "address": "10.0.0.1:8080", "state": "ejected", "weight": 1,
//!                    "metadata": { "name": "users-1" } },
//!                  { "address": "10.0.0.2:8080", "state": "healthy", "weight": 1,
//!                    "metadata": {} } ],
//!   "total": 2,
//!   "counts": { "healthy": 1, "unhealthy": 0, "ejected": 1, "pending": 0 },
//!   "panic": false }
//! ```

use resilience_core::snapshot::LayerSnapshot;
use serde::ser::{Serialize, SerializeMap, SerializeStruct, Serializer};

use crate::round_robin::{EndpointState, EndpointStatus, RoundRobinHandle, RoundRobinSnapshot};

/// The kind of a round-robin balancer in the snapshot document.
pub(crate) const ROUND_ROBIN: &str = "round_robin";

const STATES: [EndpointState; 4] = [
    EndpointState::Healthy,
    EndpointState::Unhealthy,
    EndpointState::Ejected,
    EndpointState::Pending,
];

// === impl RoundRobinHandle ===

impl LayerSnapshot for RoundRobinHandle {
    type Snapshot = RoundRobinSnapshot;

    fn kind(&self) -> &'static str {
        ROUND_ROBIN
    }

    fn name(&self) -> &str {
        RoundRobinHandle::name(self)
    }

    fn snapshot(&self) -> RoundRobinSnapshot {
        RoundRobinHandle::snapshot(self)
    }
}

/// Serialized as `{endpoints, total, counts, panic}`: each endpoint as
/// `{address, state, weight}` with the state's lowercase label (`healthy`,
/// `unhealthy`, `ejected`, `pending`), and `counts` keyed by the same
/// labels.
impl Serialize for RoundRobinSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("RoundRobinSnapshot", 4)?;
        s.serialize_field("endpoints", &self.endpoints)?;
        s.serialize_field("total", &self.endpoints.len())?;
        s.serialize_field("counts", &Counts(self))?;
        s.serialize_field("panic", &self.panic)?;
        s.end()
    }
}

/// Serialized as `{address, state, weight}`.
impl Serialize for EndpointStatus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("EndpointStatus", 4)?;
        s.serialize_field("address", &self.endpoint.addr().to_string())?;
        s.serialize_field("state", self.state.as_str())?;
        s.serialize_field("weight", &self.endpoint.weight())?;
        s.serialize_field("metadata", self.endpoint.metadata())?;
        s.end()
    }
}

struct Counts<'a>(&'a RoundRobinSnapshot);

impl Serialize for Counts<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(STATES.len()))?;
        for state in STATES {
            map.serialize_entry(state.as_str(), &self.0.count(state))?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use resilience_core::snapshot::SnapshotRegistry;
    use resilience_core::{BoxError, HttpOutcome};
    use tower::{Service, ServiceExt, service_fn};

    use crate::{Endpoint, RoundRobinBuilder, RoundRobinConfig};

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn an_ejected_endpoint() {
        let config = RoundRobinConfig::builder()
            .name("inventory")
            .consecutive_failures(1)
            .base_ejection_time(Duration::from_secs(10))
            .max_ejection_percent(100)
            .panic_threshold_percent(0)
            .build()
            .unwrap();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut rr = RoundRobinBuilder::new()
            .config(config)
            .with_classifier(HttpOutcome::new())
            .build_with_endpoints(
                [Endpoint::new(a), Endpoint::new(b).with_weight(3)],
                |ep: &Endpoint| {
                    let status = if ep.addr().port() == 1 { 500 } else { 200 };
                    service_fn(move |_: http::Request<()>| async move {
                        let rsp = http::Response::builder().status(status).body(());
                        Ok::<_, BoxError>(rsp.unwrap())
                    })
                },
            );
        let registry = SnapshotRegistry::new("shop");
        registry.register(rr.handle());

        let doc = registry.to_json();
        assert_eq!(doc["layers"][0]["kind"], "round_robin");
        assert_eq!(doc["layers"][0]["name"], "inventory");
        assert_eq!(doc["layers"][0]["state"]["counts"]["healthy"], 2);

        for _ in 0..2 {
            let _ = rr.ready().await.unwrap().call(http::Request::new(())).await;
        }

        let doc = registry.to_json();
        let state = &doc["layers"][0]["state"];
        assert_eq!(state["endpoints"][0]["address"], "127.0.0.1:1");
        assert_eq!(state["endpoints"][0]["state"], "ejected");
        assert_eq!(state["endpoints"][0]["weight"], 1);
        assert_eq!(state["endpoints"][0]["metadata"], serde_json::json!({}));
        assert_eq!(state["endpoints"][1]["address"], "127.0.0.1:2");
        assert_eq!(state["endpoints"][1]["state"], "healthy");
        assert_eq!(state["endpoints"][1]["weight"], 3);
        assert_eq!(state["total"], 2);
        assert_eq!(state["counts"]["healthy"], 1);
        assert_eq!(state["counts"]["ejected"], 1);
        assert_eq!(state["counts"]["unhealthy"], 0);
        assert_eq!(state["counts"]["pending"], 0);
        assert_eq!(state["panic"], false);
    }
}
