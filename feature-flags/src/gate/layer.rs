use std::sync::Arc;

use tower_layer::Layer;

use super::service::{FlagGate, RequireFlag};

/// Applies [`RequireFlag`]: refuses requests for which a boolean flag is off.
///
/// Cloning is cheap (the flag name is shared).
#[derive(Debug, Clone)]
pub struct RequireFlagLayer {
    flag: Arc<str>,
}

/// Applies [`FlagGate`]: requests for which the flag is on go to `on`, the
/// others to the wrapped service.
///
/// Every service this layer makes gets a clone of `on`.
#[derive(Debug, Clone)]
pub struct FlagGateLayer<On> {
    flag: Arc<str>,
    on: On,
}

// === impl RequireFlagLayer ===

impl RequireFlagLayer {
    /// Requires the boolean flag `flag`.
    pub fn new(flag: impl Into<Arc<str>>) -> Self {
        Self { flag: flag.into() }
    }
}

impl<S> Layer<S> for RequireFlagLayer {
    type Service = RequireFlag<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireFlag::new(inner, self.flag.clone())
    }
}

// === impl FlagGateLayer ===

impl<On> FlagGateLayer<On> {
    /// Sends requests for which `flag` is on to `on`.
    pub fn new(flag: impl Into<Arc<str>>, on: On) -> Self {
        Self {
            flag: flag.into(),
            on,
        }
    }
}

impl<S, On: Clone> Layer<S> for FlagGateLayer<On> {
    type Service = FlagGate<S, On>;

    fn layer(&self, off: S) -> Self::Service {
        FlagGate::new(off, self.on.clone(), self.flag.clone())
    }
}
