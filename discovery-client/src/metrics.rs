//! Metric handles, created once per balancer or source.

use metrics::{Counter, Gauge, Unit};
use resilience_core::names::{
    DISCOVERY_EJECTIONS_TOTAL, DISCOVERY_ENDPOINTS, DISCOVERY_SOURCE_ERRORS_TOTAL,
    DISCOVERY_STALENESS_SECONDS, DISCOVERY_UPDATES_TOTAL, LABEL_CHANGE, LABEL_NAME, LABEL_STATE,
};

pub(crate) struct BalancerMetrics {
    pub(crate) ejections: Counter,
    pub(crate) added: Counter,
    pub(crate) removed: Counter,
    healthy: Gauge,
    unhealthy: Gauge,
    ejected: Gauge,
    pending: Gauge,
}

pub(crate) struct SourceMetrics {
    pub(crate) errors: Counter,
    pub(crate) staleness: Gauge,
}

fn describe() {
    metrics::describe_gauge!(
        DISCOVERY_ENDPOINTS,
        Unit::Count,
        "Endpoints known to a balancer, by state (healthy, unhealthy, ejected, pending)."
    );
    metrics::describe_counter!(
        DISCOVERY_UPDATES_TOTAL,
        Unit::Count,
        "Endpoint set changes (added, removed)."
    );
    metrics::describe_counter!(
        DISCOVERY_EJECTIONS_TOTAL,
        Unit::Count,
        "Endpoints passively ejected after consecutive failures."
    );
    metrics::describe_counter!(
        DISCOVERY_SOURCE_ERRORS_TOTAL,
        Unit::Count,
        "Failed reads from an endpoint source (registry, DNS, file)."
    );
    metrics::describe_gauge!(
        DISCOVERY_STALENESS_SECONDS,
        Unit::Seconds,
        "Age of the endpoint set since the source's last good read."
    );
}

impl BalancerMetrics {
    pub(crate) fn new(name: &str) -> Self {
        describe();
        let name = name.to_owned();
        let gauge = |state: &'static str| metrics::gauge!(DISCOVERY_ENDPOINTS, LABEL_NAME => name.clone(), LABEL_STATE => state);
        Self {
            ejections: metrics::counter!(DISCOVERY_EJECTIONS_TOTAL, LABEL_NAME => name.clone()),
            added: metrics::counter!(DISCOVERY_UPDATES_TOTAL, LABEL_NAME => name.clone(), LABEL_CHANGE => "added"),
            removed: metrics::counter!(DISCOVERY_UPDATES_TOTAL, LABEL_NAME => name.clone(), LABEL_CHANGE => "removed"),
            healthy: gauge("healthy"),
            unhealthy: gauge("unhealthy"),
            ejected: gauge("ejected"),
            pending: gauge("pending"),
        }
    }

    #[allow(clippy::cast_precision_loss)]
    pub(crate) fn set_endpoints(
        &self,
        healthy: usize,
        down: usize,
        ejected: usize,
        pending: usize,
    ) {
        self.healthy.set(healthy as f64);
        self.unhealthy.set(down.saturating_sub(ejected) as f64);
        self.ejected.set(ejected as f64);
        self.pending.set(pending as f64);
    }
}

impl SourceMetrics {
    #[cfg_attr(
        not(any(feature = "file", feature = "dns", feature = "etcd")),
        allow(dead_code)
    )]
    pub(crate) fn new(name: &str) -> Self {
        describe();
        Self {
            errors: metrics::counter!(DISCOVERY_SOURCE_ERRORS_TOTAL, LABEL_NAME => name.to_owned()),
            staleness: metrics::gauge!(DISCOVERY_STALENESS_SECONDS, LABEL_NAME => name.to_owned()),
        }
    }
}
