//! The names most services use: `use resilience::prelude::*;`.
//!
//! The shared vocabulary always; the stacks, the layers and their
//! configurations with the features that bring them.

pub use resilience_core::{BoxError, ConfigError, Deadline, Priority, Rejected, TimeoutLayer};

#[cfg(feature = "queue")]
pub use resilience_bounded_queue::{BoundedQueueConfig, BoundedQueueLayer};
#[cfg(feature = "breaker")]
pub use resilience_circuit_breaker::{
    CircuitBreakerConfig, CircuitBreakerLayer, EndpointBreakers, throttle::ThrottleConfig,
    throttle::ThrottleLayer,
};
#[cfg(feature = "correlation")]
pub use resilience_correlation::{CorrelationLayer, PropagateContextLayer, RequestContext};
#[cfg(feature = "discovery")]
pub use resilience_discovery::{Endpoint, RoundRobinBuilder, RoundRobinConfig};
#[cfg(feature = "flags")]
pub use resilience_flags::{FlagSet, FlagStore, Flags, FlagsLayer};
#[cfg(feature = "retry")]
pub use resilience_retry::{RetryConfig, RetryLayer};

#[cfg(feature = "client")]
pub use crate::client::{ClientConfig, ClientStack};
#[cfg(feature = "server")]
pub use crate::server::{ServerConfig, ServerStackLayer};
