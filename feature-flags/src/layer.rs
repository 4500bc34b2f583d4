use std::sync::Arc;

use tower_layer::Layer;

use crate::config::FlagsConfig;
use crate::service::FlagsService;
use crate::store::FlagStore;

/// Applies [`FlagsService`] to services: gives every request its [`Flags`](crate::Flags).
///
/// Cloning this layer (or the services it makes) shares the store and the
/// configuration; it creates no new state.
#[derive(Debug, Clone)]
pub struct FlagsLayer {
    store: FlagStore,
    config: Arc<FlagsConfig>,
}

// === impl FlagsLayer ===

impl FlagsLayer {
    /// A layer over `store` with the default configuration (key from
    /// `x-user-id`, no request trusted to override flags).
    pub fn new(store: FlagStore) -> Self {
        Self::with_config(store, FlagsConfig::default())
    }

    /// A layer over `store` with `config`.
    pub fn with_config(store: FlagStore, config: FlagsConfig) -> Self {
        Self {
            store,
            config: Arc::new(config),
        }
    }
}

impl<S> Layer<S> for FlagsLayer {
    type Service = FlagsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FlagsService::new(inner, self.store.clone(), self.config.clone())
    }
}
