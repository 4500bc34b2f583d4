use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tower_layer::Layer;

use super::config::HedgeConfig;
use super::handle::HedgeHandle;
use super::latency::Latencies;
use super::metrics::HedgeMetrics;
use super::service::Hedge;
use crate::budget::RetryBudget;
use crate::classify::{ClassifyOutcomes, IdempotentRequests};
use crate::config::RetryConfig;
use crate::layer::Shared;

/// Applies [`Hedge`] to services.
///
/// Cloning this layer will not create a new budget or a new latency
/// ring: the layer, every service it makes and every clone of those share
/// one [`RetryBudget`], one learned delay and one set of counters, as do
/// the [`HedgeHandle`]s it hands out. Build one layer per destination.
pub struct HedgeLayer<C = IdempotentRequests> {
    pub(crate) shared: Arc<Shared<HedgePolicy, C>>,
}

/// Everything a hedged request needs, behind one `Arc`.
pub(crate) struct HedgePolicy {
    pub(crate) config: HedgeConfig,
    pub(crate) name: Arc<str>,
    pub(crate) outcomes: ClassifyOutcomes,
    pub(crate) budget: RetryBudget,
    /// Whether this layer counts the requests into the budget (its own
    /// budget), or another layer does ([`HedgeLayer::with_budget`]).
    pub(crate) deposits: bool,
    pub(crate) latencies: Latencies,
    pub(crate) hedges: AtomicU64,
    pub(crate) won: AtomicU64,
    pub(crate) metrics: HedgeMetrics,
}

// === impl HedgeLayer ===

impl HedgeLayer {
    /// A hedge layer with its own budget, hedging idempotent HTTP requests
    /// and the gRPC methods of `config` ([`IdempotentRequests`]).
    ///
    /// With the `metrics` feature, install the metrics recorder before
    /// calling this: the layer's metric handles are registered here.
    pub fn new(config: HedgeConfig) -> Self {
        let classify = IdempotentRequests::from_grpc_methods(&config.grpc_methods);
        let budget = RetryBudget::new(config.budget.clone());
        Self {
            shared: Arc::new(Shared {
                policy: Arc::new(HedgePolicy::new(config, budget, true)),
                classify,
            }),
        }
    }
}

impl Default for HedgeLayer {
    /// [`HedgeLayer::new`] with [`HedgeConfig::default`].
    fn default() -> Self {
        Self::new(HedgeConfig::default())
    }
}

impl<C> HedgeLayer<C> {
    /// Decides which requests may be hedged with `classify` instead: a
    /// [`ClassifyRequest`](crate::ClassifyRequest), such as a closure
    /// `Fn(&http::request::Parts) -> bool`. It replaces the default rule
    /// entirely (gRPC opt-ins included).
    pub fn with_request_classifier<C2>(self, classify: C2) -> HedgeLayer<C2> {
        HedgeLayer {
            shared: Arc::new(Shared {
                policy: self.shared.policy.clone(),
                classify,
            }),
        }
    }

    /// Draws hedges from `budget` instead of the layer's own: the budget of
    /// the [`RetryLayer`](crate::RetryLayer) of the same destination
    /// (`retry.budget().clone()`), so that retries and hedges together stay
    /// within one allowance. That layer counts the requests into the
    /// budget; this one only draws hedges from it. Resets the layer's
    /// counters and learned delay.
    pub fn with_budget(self, budget: RetryBudget) -> Self
    where
        C: Clone,
    {
        let config = self.shared.policy.config.clone();
        Self {
            shared: Arc::new(Shared {
                policy: Arc::new(HedgePolicy::new(config, budget, false)),
                classify: self.shared.classify.clone(),
            }),
        }
    }

    /// A handle on the layer's counters, delay and budget.
    pub fn handle(&self) -> HedgeHandle {
        HedgeHandle {
            policy: self.shared.policy.clone(),
        }
    }

    /// The budget the layer draws hedges from.
    pub fn budget(&self) -> &RetryBudget {
        &self.shared.policy.budget
    }
}

impl<S, C> Layer<S> for HedgeLayer<C> {
    type Service = Hedge<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge::with_shared(inner, self.shared.clone())
    }
}

impl<C> Clone for HedgeLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<C> fmt::Debug for HedgeLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let policy = &self.shared.policy;
        f.debug_struct("HedgeLayer")
            .field("name", &policy.name)
            .field("max_hedges", &policy.config.max_hedges)
            .field("delay", &policy.latencies.delay())
            .field("budget", &policy.budget)
            .finish_non_exhaustive()
    }
}

// === impl HedgePolicy ===

impl HedgePolicy {
    fn new(config: HedgeConfig, budget: RetryBudget, deposits: bool) -> Self {
        Self {
            name: Arc::from(config.name.as_str()),
            outcomes: ClassifyOutcomes::new(&RetryConfig::default()),
            budget,
            deposits,
            latencies: Latencies::new(&config),
            hedges: AtomicU64::new(0),
            won: AtomicU64::new(0),
            metrics: HedgeMetrics::new(&config.name),
            config,
        }
    }

    pub(crate) fn hedge_sent(&self) {
        self.hedges.fetch_add(1, Ordering::Relaxed);
        self.metrics.hedge();
    }

    pub(crate) fn hedge_won(&self) {
        self.won.fetch_add(1, Ordering::Relaxed);
        self.metrics.won();
    }
}
