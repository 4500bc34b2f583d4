//! [`LayerSnapshot`] for [`RetryHandle`] (feature `snapshot`), so a
//! [`SnapshotRegistry`](resilience_core::snapshot::SnapshotRegistry) serves
//! a retry layer's state.
//!
//! Its `state` object (kind `retry`):
//!
//! ```json
//! { "level": 0.93, "available": 112.0, "allowance": 120.0,
//!   "burst_available": 10.0, "burst_allowance": 12.0,
//!   "requests": 100, "retries": 8, "retry_ratio": 0.08,
//!   "requests_total": 5400, "retries_total": 31, "attempts_total": 5431 }
//! ```

use resilience_core::snapshot::LayerSnapshot;
use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::budget::BudgetSnapshot;
use crate::handle::RetryHandle;

/// The kind of a retry layer in the snapshot document.
pub(crate) const RETRY: &str = "retry";

// === impl RetryHandle ===

impl LayerSnapshot for RetryHandle {
    type Snapshot = BudgetSnapshot;

    fn kind(&self) -> &'static str {
        RETRY
    }

    fn name(&self) -> &str {
        RetryHandle::name(self)
    }

    fn snapshot(&self) -> BudgetSnapshot {
        RetryHandle::snapshot(self)
    }
}

/// Serialized with the budget's `level` (share left of the tighter
/// allowance, `0` to `1`), `available` and `allowance` (retries, the
/// window's), `burst_available` and `burst_allowance` (retries, the burst
/// window's), the window's `requests`,
/// `retries` and `retry_ratio` (`null` without requests), and the
/// counters since the budget was made.
impl Serialize for BudgetSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("BudgetSnapshot", 11)?;
        s.serialize_field("level", &self.level())?;
        s.serialize_field("available", &self.available())?;
        s.serialize_field("allowance", &self.allowance())?;
        s.serialize_field("burst_available", &self.burst_available())?;
        s.serialize_field("burst_allowance", &self.burst_allowance())?;
        s.serialize_field("requests", &self.requests())?;
        s.serialize_field("retries", &self.retries())?;
        s.serialize_field("retry_ratio", &self.retry_ratio())?;
        s.serialize_field("requests_total", &self.requests_total())?;
        s.serialize_field("retries_total", &self.retries_total())?;
        s.serialize_field("attempts_total", &self.attempts_total())?;
        s.end()
    }
}

#[cfg(test)]
mod tests {
    use resilience_core::BoxError;
    use resilience_core::snapshot::SnapshotRegistry;
    use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

    use crate::{RetryConfig, RetryLayer};

    #[tokio::test(start_paused = true)]
    async fn a_retry_layer_in_the_document() {
        let layer = RetryLayer::new(RetryConfig::builder().name("inventory").build().unwrap())
            .with_random(|| 0.0);
        let registry = SnapshotRegistry::new("shop");
        registry.register(layer.handle());
        let doc = registry.to_json();
        assert_eq!(doc["layers"][0]["kind"], "retry");
        assert_eq!(doc["layers"][0]["name"], "inventory");
        let state = &doc["layers"][0]["state"];
        assert_eq!(state["level"], 1.0);
        assert_eq!(state["available"], 100.0);
        assert_eq!(state["burst_available"], 10.0);
        assert!(state["retry_ratio"].is_null());

        let mut calls = 0;
        let flaky = service_fn(move |_: http::Request<crate::RetryBody<String>>| {
            calls += 1;
            let status = if calls % 2 == 1 { 503 } else { 200 };
            async move { Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap()) }
        });
        let mut svc = ServiceBuilder::new().layer(layer).service(flaky);
        for _ in 0..4 {
            let rsp = svc
                .ready()
                .await
                .unwrap()
                .call(http::Request::new(String::new()))
                .await
                .unwrap();
            assert_eq!(rsp.status(), 200);
        }
        let doc = registry.to_json();
        let state = &doc["layers"][0]["state"];
        assert_eq!(state["requests"], 4);
        assert_eq!(state["retries"], 4);
        assert_eq!(state["retry_ratio"], 1.0);
        // the floor (10/s over 10 s) is more than 20% of 4 requests
        assert_eq!(state["allowance"], 100.0);
        assert_eq!(state["available"], 96.0);
        // within the burst window (1 s), 10; 4 retries spent
        assert_eq!(state["burst_allowance"], 10.0);
        assert_eq!(state["burst_available"], 6.0);
        assert_eq!(state["attempts_total"], 8);
    }
}
