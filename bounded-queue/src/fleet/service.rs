//! [`FleetRateLimitLayer`], [`FleetRateLimit`] and their future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use resilience_core::priority::{PriorityFromExtensions, ReadPriority};
use resilience_core::{BoxError, ConfigError, Priority, Rejected};
use tower_layer::Layer;
use tower_service::Service;

use super::config::FleetRateLimitConfig;
use super::key::{KeyBy, MakeKey, normalize};
use super::shared::{Acquire, FleetMode, Shared};

/// Applies [`FleetRateLimit`] to services.
///
/// Cloning the layer (or any service it made) shares one set of leased
/// tokens and one Redis connection: build one layer per instance and limit.
#[derive(Clone)]
pub struct FleetRateLimitLayer<K = KeyBy, P = PriorityFromExtensions> {
    shared: Arc<Shared>,
    key: Arc<K>,
    priority: P,
}

/// Admits requests against a limit per key kept in Redis for the whole
/// fleet; see the [module docs](super).
pub struct FleetRateLimit<S, K = KeyBy, P = PriorityFromExtensions> {
    inner: S,
    shared: Arc<Shared>,
    key: Arc<K>,
    priority: P,
}

/// Read-only view of a [`FleetRateLimitLayer`]'s state.
#[derive(Clone)]
pub struct FleetRateLimitHandle {
    shared: Arc<Shared>,
}

/// A point-in-time view of a fleet rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetRateLimitSnapshot {
    /// The current mode.
    pub mode: FleetMode,
    /// Keys tracked locally.
    pub keys: usize,
    /// Lease commands sent to Redis (one `EVALSHA` each).
    pub redis_commands: u64,
    /// Tokens leased from Redis.
    pub tokens_leased: u64,
    /// Requests refused.
    pub rejected: u64,
    /// Changes of mode since the layer was built (Redis lost, Redis back).
    pub mode_changes: u64,
}

type Waiting = Pin<Box<dyn Future<Output = Acquire> + Send>>;

pin_project! {
    /// The response future of [`FleetRateLimit`].
    pub struct FleetRateLimitFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Called {
            #[pin]
            fut: S::Future,
        },
        Waiting {
            wait: Waiting,
            inner: Option<S>,
            req: Option<Req>,
        },
        Rejected {
            error: Option<Rejected>,
        },
    }
}

// === impl FleetRateLimitLayer ===

impl FleetRateLimitLayer {
    /// A layer whose limit is kept in the Redis that `client` points at.
    /// Connects lazily, in the background, on the first lease; never
    /// blocks. Requests are keyed by [`KeyBy::default`] (one key, `_`)
    /// until [`with_key`](Self::with_key).
    ///
    /// `client` is a type of the `redis` crate, version 0.32: to build the
    /// layer from a URL without naming that crate (and its version), use
    /// [`from_url`](Self::from_url).
    ///
    /// Install the metrics recorder before building the layer.
    pub fn new(config: FleetRateLimitConfig, client: redis::Client) -> Self {
        Self {
            shared: Arc::new(Shared::new(config, client)),
            key: Arc::new(KeyBy::default()),
            priority: PriorityFromExtensions,
        }
    }

    /// [`new`](Self::new) with a client of the Redis at `url`
    /// (`redis://[user:password@]host:port[/db]`, or
    /// `redis+unix:///path/to.sock`). Parses the URL only: connects lazily,
    /// as `new` does.
    ///
    /// # Errors
    /// - `url` is not a Redis URL (field `url`; the message does not repeat
    ///   the URL, which may hold a password)
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilience_bounded_queue::fleet::{FleetRateLimitConfig, FleetRateLimitLayer};
    ///
    /// let config = FleetRateLimitConfig::builder()
    ///     .name("payments")
    ///     .rate(1_000, Duration::from_secs(1))
    ///     .build()?;
    /// let layer = FleetRateLimitLayer::from_url(config.clone(), "redis://127.0.0.1:6379/")?;
    /// # drop(layer);
    /// let err = FleetRateLimitLayer::from_url(config, "http://127.0.0.1:6379/").unwrap_err();
    /// assert_eq!(err.field(), "url");
    /// # Ok::<_, resilience_core::ConfigError>(())
    /// ```
    pub fn from_url(config: FleetRateLimitConfig, url: &str) -> Result<Self, ConfigError> {
        let client = redis::Client::open(url).map_err(|_| {
            ConfigError::new(
                "url",
                "not a Redis URL (redis://host:port/db or redis+unix:///path)",
            )
        })?;
        Ok(Self::new(config, client))
    }
}

impl<K, P> FleetRateLimitLayer<K, P> {
    /// Takes each request's key with `key` (a [`KeyBy`], a
    /// [`KeyFn`](super::KeyFn) or any [`MakeKey`]).
    pub fn with_key<K2>(self, key: K2) -> FleetRateLimitLayer<K2, P> {
        FleetRateLimitLayer {
            shared: self.shared,
            key: Arc::new(key),
            priority: self.priority,
        }
    }

    /// Reads each request's priority with `priority` (default: from
    /// `http::Request` extensions).
    pub fn with_priority<P2>(self, priority: P2) -> FleetRateLimitLayer<K, P2> {
        FleetRateLimitLayer {
            shared: self.shared,
            key: self.key,
            priority,
        }
    }

    /// A read-only handle on the limit's state.
    pub fn handle(&self) -> FleetRateLimitHandle {
        FleetRateLimitHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S, K, P: Clone> Layer<S> for FleetRateLimitLayer<K, P> {
    type Service = FleetRateLimit<S, K, P>;

    fn layer(&self, inner: S) -> Self::Service {
        FleetRateLimit {
            inner,
            shared: self.shared.clone(),
            key: self.key.clone(),
            priority: self.priority.clone(),
        }
    }
}

impl<K, P> fmt::Debug for FleetRateLimitLayer<K, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetRateLimitLayer")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

// === impl FleetRateLimit ===

impl<S, K, P> FleetRateLimit<S, K, P> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, K, P: Clone> Clone for FleetRateLimit<S, K, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            key: self.key.clone(),
            priority: self.priority.clone(),
        }
    }
}

impl<S, K, P> fmt::Debug for FleetRateLimit<S, K, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetRateLimit")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<S, K, P, Req> Service<Req> for FleetRateLimit<S, K, P>
where
    // `Clone` only: a request that waits for a lease takes the ready service
    // with it; what waits on Redis (a spawned task, a boxed future) never
    // holds the service, so it need not be `Send` or `'static`.
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: MakeKey<Req>,
    P: ReadPriority<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = FleetRateLimitFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let priority: Priority = self.priority.read_priority(&req);
        let acquired = {
            let key = normalize(self.key.make_key(&req));
            self.shared.acquire(&key, priority)
        };
        let state = match acquired {
            Acquire::Admitted => State::Called {
                fut: self.inner.call(req),
            },
            Acquire::Rejected(error) => State::Rejected { error: Some(error) },
            Acquire::Wait(st) => {
                // The ready service goes with the request; a clone stays.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                State::Waiting {
                    wait: Box::pin(self.shared.clone().wait(st, priority)),
                    inner: Some(inner),
                    req: Some(req),
                }
            }
        };
        FleetRateLimitFuture { state }
    }
}

// === impl FleetRateLimitFuture ===

impl<S, Req> Future for FleetRateLimitFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            let next = match this.state.as_mut().project() {
                StateProj::Called { fut } => return fut.poll(cx).map_err(Into::into),
                StateProj::Rejected { error } => {
                    return Poll::Ready(Err(error.take().expect("polled after completion").into()));
                }
                StateProj::Waiting { wait, inner, req } => match wait.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Acquire::Admitted) => {
                        let mut inner = inner.take().expect("polled after completion");
                        let req = req.take().expect("polled after completion");
                        State::Called {
                            fut: inner.call(req),
                        }
                    }
                    Poll::Ready(Acquire::Rejected(e)) => State::Rejected { error: Some(e) },
                    Poll::Ready(Acquire::Wait(_)) => unreachable!("wait never asks to wait"),
                },
            };
            this.state.set(next);
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for FleetRateLimitFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetRateLimitFuture")
            .finish_non_exhaustive()
    }
}

// === impl FleetRateLimitHandle ===

impl FleetRateLimitHandle {
    /// The limit's name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// The current mode.
    pub fn mode(&self) -> FleetMode {
        self.shared.mode()
    }

    /// The state now.
    pub fn snapshot(&self) -> FleetRateLimitSnapshot {
        FleetRateLimitSnapshot {
            mode: self.shared.mode(),
            keys: self.shared.keys(),
            redis_commands: self.shared.redis_commands(),
            tokens_leased: self.shared.tokens_leased(),
            rejected: self.shared.rejected(),
            mode_changes: self.shared.mode_changes(),
        }
    }
}

impl fmt::Debug for FleetRateLimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetRateLimitHandle")
            .field("name", &self.name())
            .field("mode", &self.mode())
            .finish()
    }
}
