//! Where the instances of a dependency are, and which one to call: endpoint
//! sources, health checks and a round-robin balancer.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod endpoint;
pub mod health;
#[cfg(feature = "metrics")]
mod metrics;
pub mod round_robin;
pub mod source;

pub use crate::endpoint::{Change, Endpoint};
pub use crate::round_robin::{
    EndpointState, EndpointStatus, ErrorsAreFailures, RoundRobin, RoundRobinBuilder,
    RoundRobinConfig, RoundRobinConfigBuilder, RoundRobinHandle, RoundRobinSnapshot,
};
