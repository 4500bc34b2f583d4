//! The round-robin balancer.

mod config;
pub mod future;
pub(crate) mod pool;
mod service;

pub use self::config::{RoundRobinConfig, RoundRobinConfigBuilder};
pub use self::service::{RoundRobin, RoundRobinBuilder, RoundRobinHandle};
/// The default classifier of [`RoundRobin`]: every error (transport,
/// timeout, ...) is a failure, every response a success, except errors of
/// [`ErrorClass::Client`](resilience_core::ErrorClass::Client) and local
/// rejections (the family's one `ErrorsAsFailures`, re-exported).
///
/// For HTTP, use [`HttpOutcome`](resilience_core::HttpOutcome) so that 5xx
/// count (and 4xx never do); for gRPC,
/// [`GrpcOutcome`](resilience_core::GrpcOutcome).
pub use resilience_core::classify::ErrorsAsFailures;

/// The old name of [`ErrorsAsFailures`].
#[deprecated(since = "0.1.0", note = "use `ErrorsAsFailures`")]
pub type ErrorsAreFailures = ErrorsAsFailures;

/// The old name of [`ErrorsAsFailures`], as a value.
#[deprecated(since = "0.1.0", note = "use `ErrorsAsFailures`")]
#[allow(non_upper_case_globals)]
pub const ErrorsAreFailures: ErrorsAsFailures = ErrorsAsFailures;

use crate::endpoint::Endpoint;
use pool::{EJECTED, PENDING, UNHEALTHY};

/// The state of one endpoint in a balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndpointState {
    /// Gets traffic.
    Healthy,
    /// Failed its active health check: no traffic (unless in panic).
    Unhealthy,
    /// Passively ejected after consecutive failures: no traffic (unless in
    /// panic) until the ejection ends.
    Ejected,
    /// Waiting for its first passing health check: no traffic.
    Pending,
}

/// One endpoint and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Its state.
    pub state: EndpointState,
}

/// A balancer's endpoints and their states, from
/// [`RoundRobinHandle::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoundRobinSnapshot {
    /// The endpoints, by address.
    pub endpoints: Vec<EndpointStatus>,
    /// Whether fewer than the panic threshold are healthy, so traffic
    /// spreads over all endpoints.
    pub panic: bool,
}

// === impl EndpointState ===

impl EndpointState {
    fn from_flags(flags: u8) -> Self {
        if flags & PENDING != 0 {
            EndpointState::Pending
        } else if flags & EJECTED != 0 {
            EndpointState::Ejected
        } else if flags & UNHEALTHY != 0 {
            EndpointState::Unhealthy
        } else {
            EndpointState::Healthy
        }
    }

    /// The state as a bounded, lowercase label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndpointState::Healthy => "healthy",
            EndpointState::Unhealthy => "unhealthy",
            EndpointState::Ejected => "ejected",
            EndpointState::Pending => "pending",
        }
    }
}

// === impl RoundRobinSnapshot ===

impl RoundRobinSnapshot {
    /// How many endpoints are in `state`.
    pub fn count(&self, state: EndpointState) -> usize {
        self.endpoints.iter().filter(|e| e.state == state).count()
    }
}
