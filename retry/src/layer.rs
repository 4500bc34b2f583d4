use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tower_layer::Layer;

use crate::backoff::{Backoff, Random};
use crate::budget::RetryBudget;
use crate::classify::{ClassifyOutcomes, IdempotentRequests};
use crate::config::RetryConfig;
use crate::handle::RetryHandle;
use crate::metrics::Metrics;
use crate::service::Retry;

/// Applies [`Retry`] to services.
///
/// Cloning this layer will not create a new budget: the layer, every
/// service it makes and every clone of those share one
/// [`RetryBudget`], as do the [`RetryHandle`]s it hands out. Build one
/// layer per destination (or share one budget between layers with
/// [`with_budget`](Self::with_budget)).
pub struct RetryLayer<C = IdempotentRequests> {
    pub(crate) shared: Arc<Shared<Policy, C>>,
}

/// What every service of a layer (a retry layer's, with `P` its
/// [`Policy`], or a hedge layer's) shares: the policy, and which requests
/// may be sent again.
pub(crate) struct Shared<P, C> {
    pub(crate) policy: Arc<P>,
    pub(crate) classify: C,
}

/// Everything a retrying request needs, behind one `Arc`.
#[derive(Clone)]
pub(crate) struct Policy {
    pub(crate) name: Arc<str>,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) max_pushback: Duration,
    pub(crate) max_replay_body: usize,
    pub(crate) outcomes: ClassifyOutcomes,
    pub(crate) budget: RetryBudget,
    pub(crate) random: Random,
    pub(crate) metrics: Metrics,
    pub(crate) first_tries: FirstTries,
}

/// Whether a layer's first tries carry their [`Attempt`]: not until the
/// layer learns that they reach the balancer out of its sight (see
/// [`resilience_core::attempt`]).
///
/// [`Attempt`]: resilience_core::Attempt
#[derive(Debug, Default)]
pub(crate) struct FirstTries {
    carry: AtomicBool,
}

// === impl FirstTries ===

impl FirstTries {
    /// Whether first tries carry their attempt.
    #[inline]
    pub(crate) fn carry(&self) -> bool {
        self.carry.load(Ordering::Relaxed)
    }

    /// From now on, first tries carry their attempt; `true` the first time.
    pub(crate) fn learn(&self) -> bool {
        !self.carry.swap(true, Ordering::Relaxed)
    }
}

impl Clone for FirstTries {
    fn clone(&self) -> Self {
        Self {
            carry: AtomicBool::new(self.carry()),
        }
    }
}

// === impl RetryLayer ===

impl RetryLayer {
    /// A retry layer with its own budget, retrying idempotent HTTP
    /// requests and the gRPC methods of `config`
    /// ([`IdempotentRequests`]).
    ///
    /// With the `metrics` feature, install the metrics recorder before
    /// calling this: the layer's metric handles are registered here.
    pub fn new(config: RetryConfig) -> Self {
        let classify = IdempotentRequests::from_config(&config);
        let policy = Policy {
            name: Arc::from(config.name.as_str()),
            max_attempts: config.max_attempts,
            backoff: Backoff::new(&config),
            attempt_timeout: config.attempt_timeout,
            max_pushback: config.max_pushback,
            max_replay_body: config.max_replay_body,
            outcomes: ClassifyOutcomes::new(&config),
            budget: RetryBudget::new(config.budget.clone()),
            random: Random::from_entropy(),
            metrics: Metrics::new(&config.name),
            first_tries: FirstTries::default(),
        };
        Self {
            shared: Arc::new(Shared {
                policy: Arc::new(policy),
                classify,
            }),
        }
    }
}

impl Default for RetryLayer {
    /// [`RetryLayer::new`] with [`RetryConfig::default`].
    fn default() -> Self {
        Self::new(RetryConfig::default())
    }
}

impl<C> RetryLayer<C> {
    /// Decides which requests may be retried with `classify` instead: a
    /// [`ClassifyRequest`](crate::ClassifyRequest), such as a closure
    /// `Fn(&http::request::Parts) -> bool`. It replaces the default rule
    /// entirely (gRPC opt-ins included); build the default with
    /// [`IdempotentRequests::from_config`] to extend it.
    pub fn with_request_classifier<C2>(self, classify: C2) -> RetryLayer<C2> {
        RetryLayer {
            shared: Arc::new(Shared {
                policy: self.shared.policy.clone(),
                classify,
            }),
        }
    }

    /// Draws retries from `budget` instead of the layer's own, e.g. one
    /// budget for the HTTP and the gRPC layers of one destination. The
    /// budget's configuration replaces the layer's.
    pub fn with_budget(self, budget: RetryBudget) -> Self
    where
        C: Clone,
    {
        self.map_policy(|p| p.budget = budget)
    }

    /// Draws the backoff jitter from a reproducible sequence seeded with
    /// `seed` (default: seeded at random), shared by every service of the
    /// layer.
    pub fn with_seed(self, seed: u64) -> Self
    where
        C: Clone,
    {
        self.map_policy(|p| p.random = Random::seeded(seed))
    }

    /// Draws the backoff jitter from `random`, which returns numbers in
    /// `[0, 1)` (values outside are clamped): e.g. `|| 0.5` for a fixed
    /// delay of half the backoff cap in tests.
    pub fn with_random(self, random: impl Fn() -> f64 + Send + Sync + 'static) -> Self
    where
        C: Clone,
    {
        self.map_policy(|p| p.random = Random::from_fn(random))
    }

    /// A handle on the layer's budget and counters.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle {
            name: self.shared.policy.name.clone(),
            budget: self.shared.policy.budget.clone(),
        }
    }

    /// The budget the layer draws retries from.
    pub fn budget(&self) -> &RetryBudget {
        &self.shared.policy.budget
    }

    fn map_policy(self, f: impl FnOnce(&mut Policy)) -> Self
    where
        C: Clone,
    {
        let mut policy = (*self.shared.policy).clone();
        f(&mut policy);
        Self {
            shared: Arc::new(Shared {
                policy: Arc::new(policy),
                classify: self.shared.classify.clone(),
            }),
        }
    }
}

impl<S, C> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::with_shared(inner, self.shared.clone())
    }
}

impl<C> Clone for RetryLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<C> fmt::Debug for RetryLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("name", &self.shared.policy.name)
            .field("max_attempts", &self.shared.policy.max_attempts)
            .field("budget", &self.shared.policy.budget)
            .finish_non_exhaustive()
    }
}
