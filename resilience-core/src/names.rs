//! Metric, label, span and field names used across the family.
//!
//! Metric names follow `resilience_<crate>_<what>_<unit>`: counters end in
//! `_total`, durations in `_seconds`. Label values are the user-chosen layer
//! `name` (validated by [`validate_name`](crate::config::validate_name)) and
//! bounded enums (`state`, `to`, `outcome`, `reason`, `priority`, `change`,
//! `header`); never ids or paths. The one exception is `endpoint` on the
//! breakers of `resilience_circuit_breaker::EndpointBreakers`: one value per
//! endpoint of the user's discovered set (bounded by that set), cleared when
//! the endpoint leaves.
//!
//! Metrics go through the `metrics` facade: install a recorder *before*
//! building the layers (a handle stays bound to the recorder present when it
//! was registered). No layer installs a recorder or a subscriber.
//!
//! Every metric any crate of the family emits (`name` is the user-chosen
//! name of the instance that emits it; `priority` is a
//! [`Priority`](crate::Priority) in its wire form: `sheddable`,
//! `sheddable-plus`, `critical`, `critical-plus`):
//!
//! | metric | kind | labels = values | meaning |
//! |---|---|---|---|
//! | [`resilience_circuit_breaker_state`](CIRCUIT_BREAKER_STATE) | gauge, one-hot | `name` (`endpoint` for a breaker per endpoint), `state` = `closed`\|`open`\|`half_open`\|`forced_open`\|`disabled`\|`metrics_only` | 1 for the breaker's current state, 0 for the others |
//! | [`resilience_circuit_breaker_transitions_total`](CIRCUIT_BREAKER_TRANSITIONS_TOTAL) | counter | `name` (`endpoint` for a breaker per endpoint), `to` = the `state` values | state transitions, by the state entered |
//! | [`resilience_circuit_breaker_calls_total`](CIRCUIT_BREAKER_CALLS_TOTAL) | counter | `name` (`endpoint` for a breaker per endpoint), `outcome` = `success`\|`failure`\|`rejected` | calls through a breaker: `rejected` = refused by it; a caller error counts as `success` |
//! | [`resilience_throttle_rejected_total`](THROTTLE_REJECTED_TOTAL) | counter | `name`, `priority` | calls refused by a client-side throttle |
//! | [`resilience_bounded_queue_depth`](BOUNDED_QUEUE_DEPTH) | gauge | `name` | requests waiting in a queue (published when it is contended) |
//! | [`resilience_bounded_queue_in_service`](BOUNDED_QUEUE_IN_SERVICE) | gauge | `name` | requests in service, as of the last contended event or snapshot; 0 once idle |
//! | [`resilience_bounded_queue_limit`](BOUNDED_QUEUE_LIMIT) | gauge | `name` | a queue's current concurrency limit (moves with an adaptive limit) |
//! | [`resilience_bounded_queue_wait_seconds`](BOUNDED_QUEUE_WAIT_SECONDS) | histogram | `name` | how long each request admitted from the queue waited for a slot |
//! | [`resilience_bounded_queue_rejected_total`](BOUNDED_QUEUE_REJECTED_TOTAL) | counter | `name`, `reason` = `full`\|`wait_timeout`\|`shed`\|`deadline`, `priority` | requests a queue refused (a per-kind queue's `name` is its kind) |
//! | [`resilience_rate_limit_rejected_total`](RATE_LIMIT_REJECTED_TOTAL) | counter | `name` | requests a rate limit refused |
//! | [`resilience_fleet_rate_limit_mode`](FLEET_RATE_LIMIT_MODE) | gauge, one-hot | `name`, `mode` = `shared`\|`local`\|`closed` | 1 for a fleet rate limit's current mode: limits kept in Redis, the local fallback share, or failing closed |
//! | [`resilience_fleet_rate_limit_mode_changes_total`](FLEET_RATE_LIMIT_MODE_CHANGES_TOTAL) | counter | `name`, `mode` = the mode entered | changes of a fleet rate limit's mode (each also logged once) |
//! | [`resilience_fleet_rate_limit_rejected_total`](FLEET_RATE_LIMIT_REJECTED_TOTAL) | counter | `name`, `priority` | requests a fleet rate limit refused |
//! | [`resilience_fleet_rate_limit_redis_calls_total`](FLEET_RATE_LIMIT_REDIS_CALLS_TOTAL) | counter | `name`, `outcome` = `granted`\|`denied`\|`error` | token leases asked of Redis (one command each) |
//! | [`resilience_timeout_elapsed_total`](TIMEOUT_ELAPSED_TOTAL) | counter | `name` | requests that timed out (layer timeout or request deadline); named timeout layers only |
//! | [`resilience_retry_attempts_total`](RETRY_ATTEMPTS_TOTAL) | counter | `name` | attempts a retry layer sent: every request's first attempt and every retry |
//! | [`resilience_retry_retries_total`](RETRY_RETRIES_TOTAL) | counter | `name`, `reason` = `status`\|`grpc_status`\|`error`\|`timeout` | retries scheduled, by what the failed attempt got |
//! | [`resilience_retry_declined_total`](RETRY_DECLINED_TOTAL) | counter | `name`, `reason` = `budget_exhausted`\|`deadline`\|`pushback`\|`body`\|`max_attempts`, `priority` | retryable failures returned without a retry, by why |
//! | [`resilience_retry_hedges_total`](RETRY_HEDGES_TOTAL) | counter | `name` | hedges a hedge layer sent: extra attempts of a request whose earlier attempts had not answered after the hedge delay |
//! | [`resilience_retry_hedges_won_total`](RETRY_HEDGES_WON_TOTAL) | counter | `name` | requests whose answer came from a hedge rather than the first attempt |
//! | [`resilience_discovery_endpoints`](DISCOVERY_ENDPOINTS) | gauge | `name`, `state` = `healthy`\|`unhealthy`\|`ejected`\|`pending` | a balancer's endpoints, by health (`pending` = awaiting a first check) |
//! | [`resilience_discovery_updates_total`](DISCOVERY_UPDATES_TOTAL) | counter | `name`, `change` = `added`\|`removed` | endpoints added to or removed from a balancer |
//! | [`resilience_discovery_ejections_total`](DISCOVERY_EJECTIONS_TOTAL) | counter | `name` | endpoints a balancer ejected after consecutive failures |
//! | [`resilience_discovery_source_errors_total`](DISCOVERY_SOURCE_ERRORS_TOTAL) | counter | `name` (the source's) | failed reads of an endpoint source; the last good set is kept |
//! | [`resilience_discovery_staleness_seconds`](DISCOVERY_STALENESS_SECONDS) | gauge | `name` (the source's) | age of a source's endpoint set: 0 after a good read, updated on each failed one |
//! | [`resilience_correlation_invalid_total`](CORRELATION_INVALID_TOTAL) | counter | `header` = `correlation_id`\|`traceparent`\|`x-priority`\|`deadline` | invalid inbound context values: replaced (a deadline: ignored), never echoed |
//! | [`resilience_flags_evaluations_total`](FLAGS_EVALUATIONS_TOTAL) | counter | `name` (the store's), `reason` = `static`\|`targeting_match`\|`split`\|`disabled`\|`override`\|`error` | flag evaluations, by why the value was chosen |
//! | [`resilience_flags_source_errors_total`](FLAGS_SOURCE_ERRORS_TOTAL) | counter | `name` (the store's) | failed or rejected reads of a flag source (the same error twice in a row counts once); the last good set is kept |
//! | [`resilience_chaos_injected_total`](CHAOS_INJECTED_TOTAL) | counter | `name`, `fault` = `latency`\|`error`\|`abort` | requests a chaos layer delayed, failed or never answered (latency and error on one request count in both) |
//!
//! Tracing: per-request decisions are `debug!` events, state changes
//! `info!`; a rejection we produced on purpose is never an `error!`.
//! The correlation layer opens one span, [`SPAN_REQUEST`], with the fields
//! [`FIELD_CORRELATION_ID`] and [`FIELD_TRACE_ID`]; a request's attempt
//! number, where a layer records it, is the field [`FIELD_ATTEMPT`].

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
/// Label: a kind of injected fault (`latency`, `error`, `abort`).
pub const LABEL_FAULT: &str = "fault";
/// Label: a fleet rate limit's mode.
pub const LABEL_MODE: &str = "mode";

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

/// Counter of requests refused by a rate limit.
pub const RATE_LIMIT_REJECTED_TOTAL: &str = "resilience_rate_limit_rejected_total";

/// Gauge (one-hot): a fleet rate limit's mode (`mode` = `shared`, `local`,
/// `closed`).
pub const FLEET_RATE_LIMIT_MODE: &str = "resilience_fleet_rate_limit_mode";
/// Counter: changes of a fleet rate limit's mode, by the mode entered.
pub const FLEET_RATE_LIMIT_MODE_CHANGES_TOTAL: &str =
    "resilience_fleet_rate_limit_mode_changes_total";
/// Counter: requests a fleet rate limit refused, by priority.
pub const FLEET_RATE_LIMIT_REJECTED_TOTAL: &str = "resilience_fleet_rate_limit_rejected_total";
/// Counter: token leases asked of Redis, by outcome (`granted`, `denied`,
/// `error`).
pub const FLEET_RATE_LIMIT_REDIS_CALLS_TOTAL: &str =
    "resilience_fleet_rate_limit_redis_calls_total";

/// Counter of requests that timed out.
pub const TIMEOUT_ELAPSED_TOTAL: &str = "resilience_timeout_elapsed_total";

/// Counter: attempts a retry layer sent (first attempts and retries).
pub const RETRY_ATTEMPTS_TOTAL: &str = "resilience_retry_attempts_total";
/// Counter: retries scheduled, by reason.
pub const RETRY_RETRIES_TOTAL: &str = "resilience_retry_retries_total";
/// Counter: retryable failures returned without a retry, by reason and
/// priority.
pub const RETRY_DECLINED_TOTAL: &str = "resilience_retry_declined_total";
/// Counter: hedges sent (extra attempts of a slow request).
pub const RETRY_HEDGES_TOTAL: &str = "resilience_retry_hedges_total";
/// Counter: requests answered by a hedge rather than the first attempt.
pub const RETRY_HEDGES_WON_TOTAL: &str = "resilience_retry_hedges_won_total";

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

/// Counter of requests a chaos layer delayed, failed or never answered,
/// by fault.
pub const CHAOS_INJECTED_TOTAL: &str = "resilience_chaos_injected_total";

/// The span the correlation layer opens around a request.
pub const SPAN_REQUEST: &str = "request";
/// Span field: the correlation id.
pub const FIELD_CORRELATION_ID: &str = "correlation_id";
/// Span field: the W3C trace id.
pub const FIELD_TRACE_ID: &str = "trace_id";
/// Span and event field: the attempt number of a request
/// ([`Attempt::number`](crate::Attempt::number), `1` for the first try).
pub const FIELD_ATTEMPT: &str = "attempt";

#[cfg(feature = "metrics")]
pub(crate) fn describe_timeout_metrics() {
    metrics::describe_counter!(
        TIMEOUT_ELAPSED_TOTAL,
        metrics::Unit::Count,
        "Requests that timed out (layer timeout or request deadline)."
    );
}
