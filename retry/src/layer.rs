use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tower_layer::Layer;

use crate::backoff::{Backoff, Random};
use crate::budget::RetryBudget;
use crate::classify::{ClassifyOutcomes, IdempotentRequests};
use crate::config::{Jitter, RetryConfig};
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
    /// What [`RetryHandle::reconfigure`] changes in place.
    pub(crate) tunables: Arc<Tunables>,
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

/// The settings a reconfiguration changes in place: atomics, each read
/// once per decision with a relaxed load, never a lock.
pub(crate) struct Tunables {
    max_attempts: AtomicU32,
    /// Nanoseconds; `u64::MAX`: none.
    attempt_timeout: AtomicU64,
    max_pushback: AtomicU64,
    backoff_base: AtomicU64,
    backoff_max: AtomicU64,
    /// `f64` bits.
    backoff_multiplier: AtomicU64,
    jitter: AtomicU8,
    /// The configuration in force: what cannot change is compared with it.
    config: std::sync::Mutex<RetryConfig>,
}

// === impl Tunables ===

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)
}

impl Tunables {
    fn new(config: &RetryConfig) -> Self {
        let t = Self {
            max_attempts: AtomicU32::new(0),
            attempt_timeout: AtomicU64::new(u64::MAX),
            max_pushback: AtomicU64::new(0),
            backoff_base: AtomicU64::new(0),
            backoff_max: AtomicU64::new(0),
            backoff_multiplier: AtomicU64::new(0),
            jitter: AtomicU8::new(0),
            config: std::sync::Mutex::new(config.clone()),
        };
        t.store(config);
        t
    }

    fn store(&self, config: &RetryConfig) {
        let r = Ordering::Relaxed;
        self.max_attempts.store(config.max_attempts, r);
        self.attempt_timeout
            .store(config.attempt_timeout.map_or(u64::MAX, nanos), r);
        self.max_pushback.store(nanos(config.max_pushback), r);
        self.backoff_base.store(nanos(config.backoff_base), r);
        self.backoff_max.store(nanos(config.backoff_max), r);
        self.backoff_multiplier
            .store(config.backoff_multiplier.to_bits(), r);
        let jitter = match config.jitter {
            Jitter::Equal => 1,
            Jitter::None => 2,
            _ => 0,
        };
        self.jitter.store(jitter, r);
    }

    /// Changes the settings that can change; see [`RetryHandle::reconfigure`].
    pub(crate) fn reconfigure(
        &self,
        config: &RetryConfig,
        budget: &RetryBudget,
    ) -> Vec<&'static str> {
        let mut current = self
            .config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut restart_only = Vec::new();
        if config.name != current.name {
            restart_only.push("name");
        }
        if config.max_replay_body != current.max_replay_body {
            restart_only.push("max_replay_body");
        }
        if config.retryable_statuses != current.retryable_statuses
            || config.retryable_grpc_codes != current.retryable_grpc_codes
        {
            restart_only.push("retryable");
        }
        if config.grpc_methods != current.grpc_methods {
            restart_only.push("grpc_methods");
        }
        self.store(config);
        restart_only.extend(budget.reconfigure(&config.budget));
        current.max_attempts = config.max_attempts;
        current.attempt_timeout = config.attempt_timeout;
        current.max_pushback = config.max_pushback;
        current.backoff_base = config.backoff_base;
        current.backoff_max = config.backoff_max;
        current.backoff_multiplier = config.backoff_multiplier;
        current.jitter = config.jitter;
        current.budget.ratio = config.budget.ratio;
        current.budget.min_per_second = config.budget.min_per_second;
        current.budget.reserve = config.budget.reserve;
        restart_only
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> RetryConfig {
        self.config
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

// === impl Policy ===

impl Policy {
    /// The most attempts a request makes, the first included.
    #[inline]
    pub(crate) fn max_attempts(&self) -> u32 {
        self.tunables.max_attempts.load(Ordering::Relaxed)
    }

    /// The attempt timeout, if any.
    #[inline]
    pub(crate) fn attempt_timeout(&self) -> Option<Duration> {
        match self.tunables.attempt_timeout.load(Ordering::Relaxed) {
            u64::MAX => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    /// The longest pushback honoured.
    #[inline]
    pub(crate) fn max_pushback(&self) -> Duration {
        Duration::from_nanos(self.tunables.max_pushback.load(Ordering::Relaxed))
    }

    /// The backoff schedule in force.
    pub(crate) fn backoff(&self) -> Backoff {
        let t = &self.tunables;
        let r = Ordering::Relaxed;
        Backoff::from_parts(
            Duration::from_nanos(t.backoff_base.load(r)),
            Duration::from_nanos(t.backoff_max.load(r)),
            f64::from_bits(t.backoff_multiplier.load(r)),
            match t.jitter.load(r) {
                1 => Jitter::Equal,
                2 => Jitter::None,
                _ => Jitter::Full,
            },
        )
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
            tunables: Arc::new(Tunables::new(&config)),
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
            tunables: self.shared.policy.tunables.clone(),
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
            .field("max_attempts", &self.shared.policy.max_attempts())
            .field("budget", &self.shared.policy.budget)
            .finish_non_exhaustive()
    }
}
