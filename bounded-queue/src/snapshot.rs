//! [`LayerSnapshot`] for [`BoundedQueueHandle`] (feature `snapshot`), so a
//! [`SnapshotRegistry`](resilience_core::snapshot::SnapshotRegistry) serves
//! its state.
//!
//! A queue's `state` object (kind `bounded_queue`):
//!
//! ```json
//! { "in_service": 1, "queued": 1,
//!   "queued_by_priority": { "sheddable": 0, "sheddable_plus": 0,
//!                           "critical": 1, "critical_plus": 0 },
//!   "limit": 1, "capacity": 2, "overloaded": false,
//!   "admission_level": "sheddable", "service_time_ms": 0.0, "yielded": 0,
//!   "rejected": { "full": 1, "wait_timeout": 0, "shed": 0, "deadline": 0 } }
//! ```
//!
//! A rate limit's `state` object (kind `rate_limit`, from
//! [`RateLimitHandle`](crate::rate::RateLimitHandle)):
//!
//! ```json
//! { "per_second": 100.0, "burst": 10, "available": 7, "rejected": 3 }
//! ```
//!
//! Each queue of a [`KindQueuesLayer`](crate::kind::KindQueuesLayer) has its
//! own handle ([`KindQueuesLayer::handle`](crate::kind::KindQueuesLayer::handle)):
//! register one per kind; each appears as a `bounded_queue` named after its
//! kind.

use resilience_core::snapshot::{LayerSnapshot, PerPriority, millis, priority_key};
use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::handle::BoundedQueueHandle;
use crate::rate::{RateLimitHandle, RateLimitSnapshot};
use crate::state::{BoundedQueueSnapshot, RejectedCounts};

/// The kind of a bounded queue in the snapshot document.
pub(crate) const BOUNDED_QUEUE: &str = "bounded_queue";
/// The kind of a rate limit in the snapshot document.
pub(crate) const RATE_LIMIT: &str = "rate_limit";

// === impl RateLimitHandle ===

impl LayerSnapshot for RateLimitHandle {
    type Snapshot = RateLimitSnapshot;

    fn kind(&self) -> &'static str {
        RATE_LIMIT
    }

    fn name(&self) -> &str {
        RateLimitHandle::name(self)
    }

    fn snapshot(&self) -> RateLimitSnapshot {
        RateLimitHandle::snapshot(self)
    }
}

/// Serialized as `{per_second, burst, available, rejected}`.
impl Serialize for RateLimitSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("RateLimitSnapshot", 4)?;
        s.serialize_field("per_second", &self.per_second)?;
        s.serialize_field("burst", &self.burst)?;
        s.serialize_field("available", &self.available)?;
        s.serialize_field("rejected", &self.rejected)?;
        s.end()
    }
}

// === impl BoundedQueueHandle ===

impl LayerSnapshot for BoundedQueueHandle {
    type Snapshot = BoundedQueueSnapshot;

    fn kind(&self) -> &'static str {
        BOUNDED_QUEUE
    }

    fn name(&self) -> &str {
        BoundedQueueHandle::name(self)
    }

    fn snapshot(&self) -> BoundedQueueSnapshot {
        BoundedQueueHandle::snapshot(self)
    }
}

/// Serialized with `queued_by_priority` keyed by priority (`sheddable`,
/// `sheddable_plus`, `critical`, `critical_plus`), the `admission_level` in
/// the same spelling, `service_time_ms` and `yielded`.
impl Serialize for BoundedQueueSnapshot {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("BoundedQueueSnapshot", 10)?;
        s.serialize_field("in_service", &self.in_service)?;
        s.serialize_field("queued", &self.queued)?;
        s.serialize_field("queued_by_priority", &PerPriority(self.queued_by_priority))?;
        s.serialize_field("limit", &self.limit)?;
        s.serialize_field("capacity", &self.capacity)?;
        s.serialize_field("overloaded", &self.overloaded)?;
        s.serialize_field("admission_level", priority_key(self.admission_level))?;
        s.serialize_field("service_time_ms", &millis(self.service_time))?;
        s.serialize_field("yielded", &self.yielded)?;
        s.serialize_field("rejected", &self.rejected)?;
        s.end()
    }
}

/// Serialized as `{full, wait_timeout, shed, deadline}`, the reasons of the
/// `reason` metric label.
impl Serialize for RejectedCounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("RejectedCounts", 4)?;
        s.serialize_field("full", &self.full)?;
        s.serialize_field("wait_timeout", &self.wait_timeout)?;
        s.serialize_field("shed", &self.shed)?;
        s.serialize_field("deadline", &self.deadline)?;
        s.end()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use resilience_core::Priority;
    use resilience_core::snapshot::SnapshotRegistry;
    use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
    use tower_test::mock;

    use crate::rate::{RateLimitConfig, RateLimitLayer};
    use crate::{BoundedQueueConfig, BoundedQueueLayer};

    fn req(priority: Priority) -> http::Request<()> {
        let mut req = http::Request::new(());
        req.extensions_mut().insert(priority);
        req
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_queue_with_a_waiter_and_a_rejection() {
        let layer = BoundedQueueLayer::new(
            BoundedQueueConfig::builder()
                .name("ingest")
                .concurrency(1)
                .capacity(1)
                .build()
                .unwrap(),
        );
        let registry = SnapshotRegistry::new("shop");
        registry.register(layer.handle());
        let (mut svc, _handle) = mock::spawn_layer::<http::Request<()>, &'static str, _>(layer);

        let doc = registry.to_json();
        assert_eq!(doc["layers"][0]["kind"], "bounded_queue");
        assert_eq!(doc["layers"][0]["name"], "ingest");
        assert_eq!(doc["layers"][0]["state"]["queued"], 0);
        assert_eq!(doc["layers"][0]["state"]["admission_level"], "sheddable");

        assert_ready_ok!(svc.poll_ready());
        let mut a = task::spawn(svc.call(req(Priority::Critical)));
        assert_ready_ok!(svc.poll_ready());
        let mut b = task::spawn(svc.call(req(Priority::SheddablePlus)));
        assert_ready_ok!(svc.poll_ready());
        let mut c = task::spawn(svc.call(req(Priority::Sheddable)));
        assert_pending!(a.poll());
        assert_pending!(b.poll());
        assert!(assert_ready!(c.poll()).is_err(), "the queue is full");

        let doc = registry.to_json();
        let state = &doc["layers"][0]["state"];
        assert_eq!(state["in_service"], 1);
        assert_eq!(state["queued"], 1);
        assert_eq!(state["queued_by_priority"]["sheddable_plus"], 1);
        assert_eq!(state["queued_by_priority"]["critical"], 0);
        assert_eq!(state["limit"], 1);
        assert_eq!(state["capacity"], 1);
        assert_eq!(state["overloaded"], false);
        assert_eq!(state["service_time_ms"], 0.0);
        assert_eq!(state["yielded"], 0);
        assert_eq!(state["rejected"]["full"], 1);
        assert_eq!(state["rejected"]["wait_timeout"], 0);
        assert_eq!(state["rejected"]["shed"], 0);
        assert_eq!(state["rejected"]["deadline"], 0);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_rate_limit_spent_then_refilled() {
        use std::time::Duration;
        use tower::{Service, ServiceExt, service_fn};

        let layer = RateLimitLayer::new(
            RateLimitConfig::builder()
                .name("api")
                .rate(10, Duration::from_secs(1))
                .burst(3)
                .build()
                .unwrap(),
        );
        let registry = SnapshotRegistry::new("shop");
        registry.register(layer.handle());
        let state = |doc: &serde_json::Value| doc["layers"][0]["state"].clone();

        let doc = registry.to_json();
        assert_eq!(doc["layers"][0]["kind"], "rate_limit");
        assert_eq!(doc["layers"][0]["name"], "api");
        assert_eq!(state(&doc)["per_second"], 10.0);
        assert_eq!(state(&doc)["burst"], 3);
        assert_eq!(state(&doc)["available"], 3);
        assert_eq!(state(&doc)["rejected"], 0);

        let mut svc = tower::ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(|()| async {
                Ok::<_, resilience_core::BoxError>(())
            }));
        for _ in 0..3 {
            svc.ready().await.unwrap().call(()).await.unwrap();
        }
        assert!(svc.ready().await.unwrap().call(()).await.is_err());
        let doc = registry.to_json();
        assert_eq!(state(&doc)["available"], 0);
        assert_eq!(state(&doc)["rejected"], 1);

        // One interval later, one more request may come.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(state(&registry.to_json())["available"], 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(state(&registry.to_json())["available"], 3);
    }
}
