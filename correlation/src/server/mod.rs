//! The server layer: reads, validates or creates the request context.

mod config;
pub mod future;
mod layer;
mod service;

pub use self::config::{CorrelationConfig, CorrelationConfigBuilder, RequestHead};
pub use self::layer::CorrelationLayer;
pub use self::service::Correlation;
#[cfg(feature = "fmt")]
pub(crate) use self::service::request_span_metadata;
