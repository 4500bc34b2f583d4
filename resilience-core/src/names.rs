//! Metric, label, span and field names used across the family.
//!
//! Metric names follow `resilience_<crate>_<what>_<unit>`: counters end in
//! `_total`, durations in `_seconds`. Label values are the user-chosen layer
//! `name` (validated by [`validate_name`](crate::config::validate_name)) and
//! bounded enums (`state`, `outcome`, `reason`, `priority`); never ids, paths
//! or peer addresses.
//!
//! Metrics go through the `metrics` facade: install a recorder *before*
//! building the layers (a handle stays bound to the recorder present when it
//! was registered). No layer installs a recorder or a subscriber.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | [`CIRCUIT_BREAKER_STATE`] | gauge, one-hot | `name`, `state` |
//! | [`CIRCUIT_BREAKER_TRANSITIONS_TOTAL`] | counter | `name`, `to` |
//! | [`CIRCUIT_BREAKER_CALLS_TOTAL`] | counter | `name`, `outcome` |
//! | [`THROTTLE_REJECTED_TOTAL`] | counter | `name`, `priority` |
//! | [`BOUNDED_QUEUE_DEPTH`] | gauge | `name` |
//! | [`BOUNDED_QUEUE_IN_SERVICE`] | gauge | `name` |
//! | [`BOUNDED_QUEUE_LIMIT`] | gauge | `name` |
//! | [`BOUNDED_QUEUE_WAIT_SECONDS`] | histogram | `name` |
//! | [`BOUNDED_QUEUE_REJECTED_TOTAL`] | counter | `name`, `reason`, `priority` |
//! | [`TIMEOUT_ELAPSED_TOTAL`] | counter | `name` |
//! | [`DISCOVERY_ENDPOINTS`] | gauge | `name`, `state` |
//! | [`DISCOVERY_UPDATES_TOTAL`] | counter | `name`, `change` |
//! | [`DISCOVERY_SOURCE_ERRORS_TOTAL`] | counter | `name` |
//! | [`DISCOVERY_STALENESS_SECONDS`] | gauge | `name` |
//! | [`DISCOVERY_EJECTIONS_TOTAL`] | counter | `name` |
//! | [`CORRELATION_INVALID_TOTAL`] | counter | `header` |
//! | [`FLAGS_EVALUATIONS_TOTAL`] | counter | `name`, `reason` |
//! | [`FLAGS_SOURCE_ERRORS_TOTAL`] | counter | `name` |
//!
//! Tracing: per-request decisions are `debug!` events, state changes
//! `info!`; a rejection we produced on purpose is never an `error!`.
//! The correlation layer opens one span, [`SPAN_REQUEST`], with the fields
//! [`FIELD_CORRELATION_ID`] and [`FIELD_TRACE_ID`].

/// Label: the user-chosen name of a layer instance.
pub const LABEL_NAME: &str = "name";
/// Label: a state (`closed`, `open`, `half_open`, ...).
pub const LABEL_STATE: &str = "state";
/// Label: the state a transition went to.
pub const LABEL_TO: &str = "to";
/// Label: a call's outcome (`success`, `failure`, `rejected`, ...).
pub const LABEL_OUTCOME: &str = "outcome";
/// Label: why something was rejected (`full`, `wait_timeout`, ...).
pub const LABEL_REASON: &str = "reason";
/// Label: a [`Priority`](crate::Priority) as its wire form.
pub const LABEL_PRIORITY: &str = "priority";
/// Label: what changed (`added`, `removed`).
pub const LABEL_CHANGE: &str = "change";
/// Label: a header name from a fixed set.
pub const LABEL_HEADER: &str = "header";

/// Gauge, one series per state set to 1 for the current one.
pub const CIRCUIT_BREAKER_STATE: &str = "resilience_circuit_breaker_state";
/// Counter of state transitions.
pub const CIRCUIT_BREAKER_TRANSITIONS_TOTAL: &str = "resilience_circuit_breaker_transitions_total";
/// Counter of calls by outcome.
pub const CIRCUIT_BREAKER_CALLS_TOTAL: &str = "resilience_circuit_breaker_calls_total";
/// Counter of calls refused by a throttle.
pub const THROTTLE_REJECTED_TOTAL: &str = "resilience_throttle_rejected_total";

/// Gauge: requests waiting in the queue.
pub const BOUNDED_QUEUE_DEPTH: &str = "resilience_bounded_queue_depth";
/// Gauge: requests in service.
pub const BOUNDED_QUEUE_IN_SERVICE: &str = "resilience_bounded_queue_in_service";
/// Gauge: the current concurrency limit.
pub const BOUNDED_QUEUE_LIMIT: &str = "resilience_bounded_queue_limit";
/// Histogram: time spent waiting in the queue.
pub const BOUNDED_QUEUE_WAIT_SECONDS: &str = "resilience_bounded_queue_wait_seconds";
/// Counter of requests refused, by reason.
pub const BOUNDED_QUEUE_REJECTED_TOTAL: &str = "resilience_bounded_queue_rejected_total";

/// Counter of requests that timed out.
pub const TIMEOUT_ELAPSED_TOTAL: &str = "resilience_timeout_elapsed_total";

/// Gauge: endpoints known, by health state.
pub const DISCOVERY_ENDPOINTS: &str = "resilience_discovery_endpoints";
/// Counter of endpoint set changes.
pub const DISCOVERY_UPDATES_TOTAL: &str = "resilience_discovery_updates_total";
/// Counter of failed reads from a registry.
pub const DISCOVERY_SOURCE_ERRORS_TOTAL: &str = "resilience_discovery_source_errors_total";
/// Gauge: age of the endpoint set since the last good read.
pub const DISCOVERY_STALENESS_SECONDS: &str = "resilience_discovery_staleness_seconds";
/// Counter of passive ejections.
pub const DISCOVERY_EJECTIONS_TOTAL: &str = "resilience_discovery_ejections_total";

/// Counter of inbound context headers that were invalid and replaced.
pub const CORRELATION_INVALID_TOTAL: &str = "resilience_correlation_invalid_total";

/// Counter of flag evaluations, by reason.
pub const FLAGS_EVALUATIONS_TOTAL: &str = "resilience_flags_evaluations_total";
/// Counter of failed reads from a flag source.
pub const FLAGS_SOURCE_ERRORS_TOTAL: &str = "resilience_flags_source_errors_total";

/// The span the correlation layer opens around a request.
pub const SPAN_REQUEST: &str = "request";
/// Span field: the correlation id.
pub const FIELD_CORRELATION_ID: &str = "correlation_id";
/// Span field: the W3C trace id.
pub const FIELD_TRACE_ID: &str = "trace_id";

#[cfg(feature = "metrics")]
pub(crate) fn describe_timeout_metrics() {
    metrics::describe_counter!(
        TIMEOUT_ELAPSED_TOTAL,
        metrics::Unit::Count,
        "Requests that timed out (layer timeout or request deadline)."
    );
}
