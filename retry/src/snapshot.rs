//! [`LayerSnapshot`] for [`RetryHandle`] and [`HedgeHandle`] (feature
//! `snapshot`), so a
//! [`SnapshotRegistry`](resilience_core::snapshot::SnapshotRegistry) serves
//! a retry layer's and a hedge layer's state.
//!
//! A retry layer's `state` object (kind `retry`):
//!
//! ```json
//! { "level": 0.93, "available": 112.0, "allowance": 120.0,
//!   "requests": 100, "retries": 8, "retry_ratio": 0.08,
//!   "requests_total": 5400, "retries_total": 31, "attempts_total": 5431 }
//! ```
//!
//! A hedge layer's (kind `hedge`): the delay in milliseconds, whether it
//! is learned, the hedges sent and won, and its budget as above:
//!
//! ```json
//! { "delay_ms": 42.0, "delay_learned": true,
//!   "hedges_total": 310, "hedges_won_total": 122,
//!   "budget": { "level": 0.93, "available": 112.0, ... } }
//! ```

use resilience_core::snapshot::LayerSnapshot;
use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::budget::BudgetSnapshot;
use crate::handle::RetryHandle;
use crate::hedge::{HedgeHandle, HedgeSnapshot};

/// The kind of a retry layer in the snapshot document.
pub(crate) const RETRY: &str = "retry";
/// The kind of a hedge layer in the snapshot document.
pub(crate) const HEDGE: &str = "hedge";

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

// === impl HedgeHandle ===

impl LayerSnapshot for HedgeHandle {
    type Snapshot = HedgeSnapshot;

    fn kind(&self) -> &'static str {
        HEDGE
    }

    fn name(&self) -> &str {
        HedgeHandle::name(self)
    }

    fn snapshot(&self) -> HedgeSnapshot {
        HedgeHandle::snapshot(self)
    }
}

/// Serialized with `delay_ms` (the delay a hedge waits for now, in
/// milliseconds), `delay_learned`, `hedges_total`, `hedges_won_total`, and
/// `budget`, the [`RetryBudgetSnapshot`](crate::RetryBudgetSnapshot) of the budget hedges draw from.
impl Serialize for HedgeSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("HedgeSnapshot", 5)?;
        s.serialize_field("delay_ms", &(self.delay().as_secs_f64() * 1000.0))?;
        s.serialize_field("delay_learned", &self.is_delay_learned())?;
        s.serialize_field("hedges_total", &self.hedges_total())?;
        s.serialize_field("hedges_won_total", &self.hedges_won_total())?;
        s.serialize_field("budget", self.budget())?;
        s.end()
    }
}

/// Serialized with the budget's `level` (share left, `0` to `1`),
/// `available` and `allowance` (retries), the window's `requests`,
/// `retries` and `retry_ratio` (`null` without requests), and the
/// counters since the budget was made.
impl Serialize for BudgetSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("BudgetSnapshot", 9)?;
        s.serialize_field("level", &self.level())?;
        s.serialize_field("available", &self.available())?;
        s.serialize_field("allowance", &self.allowance())?;
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
        assert_eq!(state["available"], 96.8);
        assert_eq!(state["attempts_total"], 8);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hedge_layer_in_the_document() {
        use std::time::Duration;

        use crate::{HedgeConfig, HedgeLayer};

        let layer = HedgeLayer::new(
            HedgeConfig::builder()
                .name("inventory")
                .delay(Duration::from_millis(20))
                .build()
                .unwrap(),
        );
        let registry = SnapshotRegistry::new("shop");
        registry.register(layer.handle());
        let doc = registry.to_json();
        assert_eq!(doc["layers"][0]["kind"], "hedge");
        assert_eq!(doc["layers"][0]["name"], "inventory");
        let state = &doc["layers"][0]["state"];
        assert_eq!(state["delay_ms"], 20.0);
        assert_eq!(state["delay_learned"], false);
        assert_eq!(state["hedges_total"], 0);
        assert_eq!(state["budget"]["level"], 1.0);

        // The first call stalls; its hedge answers.
        let mut calls = 0;
        let slow_first = service_fn(move |_: http::Request<crate::RetryBody<String>>| {
            calls += 1;
            let stall = calls == 1;
            async move {
                if stall {
                    std::future::pending::<()>().await;
                }
                Ok::<_, BoxError>(http::Response::new(()))
            }
        });
        let svc = ServiceBuilder::new().layer(layer).service(slow_first);
        svc.oneshot(http::Request::new(String::new()))
            .await
            .unwrap();
        let doc = registry.to_json();
        let state = &doc["layers"][0]["state"];
        assert_eq!(state["hedges_total"], 1);
        assert_eq!(state["hedges_won_total"], 1);
        assert_eq!(state["budget"]["requests"], 1);
        assert_eq!(state["budget"]["retries"], 1);
        assert!(state["budget"]["level"].as_f64().unwrap() < 1.0);
    }
}
