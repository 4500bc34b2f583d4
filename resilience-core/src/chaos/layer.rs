use std::sync::Arc;

use tower_layer::Layer;

use super::handle::{ChaosHandle, Shared};
use super::service::Chaos;
use crate::config::{ConfigError, validate_name};
use crate::priority::PriorityFromExtensions;

/// Applies [`Chaos`] to services.
///
/// The layer, every service it makes, every clone of those, and every
/// [`ChaosHandle`] share one state: one fault, one sequence of draws, one
/// set of counters. Build one layer per dependency you want to break.
#[derive(Debug, Clone)]
pub struct ChaosLayer<P = PriorityFromExtensions> {
    shared: Arc<Shared>,
    read_priority: P,
}

// === impl ChaosLayer ===

impl ChaosLayer {
    /// The seed used unless [`ChaosLayer::with_seed`] sets one:
    /// `0x5EED_C4A0_5EED_C4A0`.
    pub const DEFAULT_SEED: u64 = 0x5EED_C4A0_5EED_C4A0;

    /// A layer named `name` (the `name` label of its metrics and logs),
    /// with no fault set and the [default seed](Self::DEFAULT_SEED).
    ///
    /// The name is not checked; use [`ChaosLayer::try_new`] for a name that
    /// comes from configuration. Install the metrics recorder before
    /// building the layer: its counters are registered here.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            shared: Arc::new(Shared::new(name.into(), Self::DEFAULT_SEED)),
            read_priority: PriorityFromExtensions,
        }
    }

    /// [`ChaosLayer::new`], checking the name.
    ///
    /// # Errors
    /// - `name` is not 1 to 64 characters of `[A-Za-z0-9_.-]`
    pub fn try_new(name: impl Into<String>) -> Result<Self, ConfigError> {
        let name = name.into();
        validate_name("name", &name)?;
        Ok(Self::new(name))
    }
}

impl<P> ChaosLayer<P> {
    /// Sets the seed of the random draws (and restarts their sequence).
    ///
    /// Draw `i` after a [`set`](ChaosHandle::set) is a hash of the seed and
    /// `i`, so the same requests, in the same order, get the same decisions
    /// in every run.
    #[must_use]
    pub fn with_seed(self, seed: u64) -> Self {
        self.shared.set_seed(seed);
        self
    }

    /// Reads request priorities with `read` instead (for
    /// [`Fault::only`](super::Fault::only)): a
    /// [`FixedPriority`](crate::FixedPriority) or a closure
    /// `Fn(&Req) -> Priority` for request types other than `http::Request`.
    pub fn with_priority<P2>(self, read: P2) -> ChaosLayer<P2> {
        ChaosLayer {
            shared: self.shared,
            read_priority: read,
        }
    }

    /// The handle that switches this layer's fault.
    pub fn handle(&self) -> ChaosHandle {
        ChaosHandle {
            shared: self.shared.clone(),
        }
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        self.shared.name()
    }
}

impl<S, P: Clone> Layer<S> for ChaosLayer<P> {
    type Service = Chaos<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Chaos::with_parts(inner, self.shared.clone(), self.read_priority.clone())
    }
}
