use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use futures_core::Stream;
use futures_util::{FutureExt, StreamExt};
use resilience_core::BoxError;
use resilience_core::attempt::{self, Attempt, IgnoreAttempt, ReadAttempt};
use resilience_core::classify::{ClassifyOutcome, ErrorsAsFailures, classify_error};
use tokio::time::Instant;
use tower_service::Service;

use super::config::RoundRobinConfig;
use super::future::ResponseFuture;
use super::pool::{
    EJECTED, EndpointStats, PENDING, Pool, REMOVED, STRIPES, Shared, Snapshot, Stripe, UNHEALTHY,
};
use super::{EndpointState, EndpointStatus, RoundRobinSnapshot};
use crate::endpoint::{Change, Endpoint, MakeEndpoint};
use crate::health::{CheckHealth, HealthCheckConfig, HealthChecker};

/// The rejection reason when no endpoint can take a request.
const NO_ENDPOINT: &str = "no healthy, ready endpoint";
/// The rejection reason of a call made without a `poll_ready` before it.
const NOT_POLLED: &str = "no endpoint picked: call without poll_ready";

/// A `tower::Service` that sends each request to the next healthy, ready
/// endpoint in turn.
///
/// See the [crate documentation](crate) for an example, the clone semantics,
/// errors and metrics, and how an endpoint is picked. `A` reads the
/// [`Attempt`] a retry layer puts on a request (see
/// [`RoundRobinBuilder::avoid_tried`]); by default none is read.
pub struct RoundRobin<S, C = ErrorsAsFailures, A = IgnoreAttempt> {
    shared: Arc<Shared<S>>,
    classify: C,
    attempts: A,
    /// The endpoint picked by `poll_ready` for the next `call`.
    ready: Option<Picked<S>>,
    /// Endpoint services that were not ready at the last poll, kept so that
    /// their wakers stay registered (dropping a not-ready clone may forget
    /// the waker, as tower's `Buffer` does).
    parked: Vec<S>,
    rejected: bool,
    /// This clone's turn: a clone takes the shared turn at its first pick,
    /// then goes round on its own, so busy clones on different threads do
    /// not contend. `NOT_STARTED` until the first pick.
    cursor: usize,
    /// The endpoint snapshot, loaded at the first `poll_ready` and reloaded
    /// when the generation moves (a clone that never polls holds none, so
    /// it keeps no endpoint service alive).
    snapshot: Option<Arc<Snapshot<S>>>,
    generation: u64,
    /// Which of an endpoint's stat handles this clone's futures hold.
    stripe: usize,
}

/// Builds a [`RoundRobin`] with a configuration, a classifier and active
/// health checks.
#[must_use]
pub struct RoundRobinBuilder<C = ErrorsAsFailures, A = IgnoreAttempt> {
    config: RoundRobinConfig,
    classify: C,
    attempts: A,
    health: Option<HealthChecker>,
}

/// Reads and changes the endpoint set of a [`RoundRobin`] from outside.
///
/// Cloning a handle is cheap; every clone refers to the same balancer.
#[derive(Clone)]
pub struct RoundRobinHandle {
    inner: Arc<dyn Control>,
}

/// A pick kept from `poll_ready` for the next `call`.
struct Picked<S> {
    /// Its place in the ring of the balancer's snapshot.
    idx: usize,
    stripe: Option<Arc<Stripe>>,
    service: S,
}

/// Whether a pick may take an endpoint; reads the clock and the panic
/// state at most once per pick, and only when an endpoint's flags need it.
struct Eligible<'a> {
    pool: &'a Pool,
    now: Option<Instant>,
    panic: Option<bool>,
}

trait Control: Send + Sync {
    fn name(&self) -> &str;
    fn apply(&self, changes: Vec<Change>);
    fn snapshot(&self) -> RoundRobinSnapshot;
}

// === impl RoundRobin ===

impl<S> RoundRobin<S, ErrorsAsFailures>
where
    S: Clone + Send + Sync + 'static,
{
    /// A balancer over a fixed list of endpoints with the default
    /// configuration and no active health checks.
    pub fn new<M, Args>(endpoints: impl IntoIterator<Item = Endpoint>, maker: M) -> Self
    where
        M: MakeEndpoint<Args, Service = S> + Send + Sync + 'static,
    {
        RoundRobinBuilder::new().build_with_endpoints(endpoints, maker)
    }
}

impl<S, C, A> RoundRobin<S, C, A> {
    /// A handle to read the endpoint set and health, or to change the set.
    pub fn handle(&self) -> RoundRobinHandle
    where
        S: Clone + Send + Sync + 'static,
    {
        RoundRobinHandle {
            inner: self.shared.clone(),
        }
    }
}

impl<S, C: Clone, A: Clone> Clone for RoundRobin<S, C, A> {
    fn clone(&self) -> Self {
        Self::from_shared(
            self.shared.clone(),
            self.classify.clone(),
            self.attempts.clone(),
        )
    }
}

impl<S, C, A> RoundRobin<S, C, A> {
    const NOT_STARTED: usize = usize::MAX;

    fn from_shared(shared: Arc<Shared<S>>, classify: C, attempts: A) -> Self {
        Self {
            shared,
            classify,
            attempts,
            ready: None,
            parked: Vec::new(),
            rejected: false,
            cursor: Self::NOT_STARTED,
            snapshot: None,
            generation: 0,
            stripe: 0,
        }
    }
}

impl<S, C, A, Req> Service<Req> for RoundRobin<S, C, A>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: ClassifyOutcome<S::Response> + Clone,
    A: ReadAttempt<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.shared.checks_deferred.load(Ordering::Relaxed) {
            self.shared.start_deferred_checks();
        }
        // A pick kept from an earlier `poll_ready` (a long-lived balancer
        // polls ready long before it calls) is checked again, as tower's
        // balancer polls its chosen service again: the endpoint may have
        // left, been ejected or turned unhealthy, or its service may no
        // longer be ready. A kept "no endpoint" is not trusted either.
        if let Some(picked) = &mut self.ready {
            if still_good::<S, Req>(self.snapshot.as_deref(), &self.shared.pool, picked, cx) {
                return Poll::Ready(Ok(()));
            }
            self.ready = None;
        }
        self.rejected = false;
        let generation = self.shared.generation.load(Ordering::Acquire);
        let snapshot = match &mut self.snapshot {
            Some(snapshot) if generation == self.generation => &**snapshot,
            stale => {
                self.generation = generation;
                &**stale.insert(self.shared.snapshot.load_full())
            }
        };
        let ring = &snapshot.ring;
        let len = ring.len();
        if len == 0 {
            self.rejected = true;
            return Poll::Ready(Ok(()));
        }
        if self.cursor >= len {
            if self.cursor == Self::NOT_STARTED {
                // A clone that only ever makes one call (one clone per
                // request) still takes its turn: the turn is shared.
                let turn = self.shared.cursor.fetch_add(1, Ordering::Relaxed);
                self.cursor = turn;
                self.stripe = turn % STRIPES;
            }
            self.cursor %= len;
        }
        let start = self.cursor;
        let mut eligible = Eligible::new(&self.shared.pool);
        let mut parked = Vec::new();
        for i in 0..len {
            let mut idx = start + i;
            if idx >= len {
                idx -= len;
            }
            let slot = &ring[idx];
            if !eligible.check(&slot.stats) {
                continue;
            }
            let mut svc = slot.service.clone();
            match svc.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    // Skipped endpoints do not shift the turn onto the one
                    // after them.
                    self.cursor = idx + 1;
                    tracing::trace!(peer.addr = %slot.stats.addr, panic = ?eligible.panic, "picked endpoint");
                    // Passive ejection off: no handle to the endpoint's stats, no
                    // reference count to bump.
                    let stripe = (self.shared.pool.config.consecutive_failures > 0)
                        .then(|| slot.stripes[self.stripe].clone());
                    self.ready = Some(Picked {
                        idx,
                        stripe,
                        service: svc,
                    });
                    if !self.parked.is_empty() {
                        self.parked.clear();
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(err)) => not_ready(&slot.stats, err.into()),
                Poll::Pending => parked.push(svc),
            }
        }
        if !parked.is_empty() {
            self.parked = parked;
            return Poll::Pending;
        }
        self.parked.clear();
        tracing::debug!(name = %self.shared.pool.config.name, "no healthy, ready endpoint");
        self.rejected = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(mut picked) = self.ready.take() {
            if let Some(attempt) = self.attempts.read_attempt(&req) {
                self.honour_attempt(attempt, &mut picked);
            } else if self.attempts.reports_first_pick() {
                // A first try carries no attempt: a retry layer above
                // watching this call learns the pick this way.
                if let Some(entry) = self
                    .snapshot
                    .as_deref()
                    .and_then(|s| s.ring.get(picked.idx))
                {
                    attempt::report_first_pick(entry.stats.addr);
                }
            }
            let Picked {
                stripe,
                mut service,
                ..
            } = picked;
            return ResponseFuture::called(service.call(req), stripe, self.classify.clone());
        }
        if !std::mem::replace(&mut self.rejected, false) {
            // No endpoint was picked for this call: `poll_ready` was not
            // called (or its pick was spent by an earlier call).
            tracing::warn!(
                name = %self.shared.pool.config.name,
                "call without poll_ready: no endpoint picked"
            );
            return ResponseFuture::rejected(NOT_POLLED);
        }
        ResponseFuture::rejected(NO_ENDPOINT)
    }
}

impl<S, C, A> RoundRobin<S, C, A> {
    /// Applies a request's [`Attempt`] to the pick made in `poll_ready`:
    /// if the request already tried the picked endpoint, takes the next
    /// eligible endpoint it has not tried whose service is ready now, if
    /// any (else keeps the pick); records the endpoint the request goes to.
    fn honour_attempt<Req>(&mut self, attempt: &Attempt, picked: &mut Picked<S>)
    where
        S: Service<Req> + Clone,
        S::Error: Into<BoxError>,
    {
        let Some(ring) = self.snapshot.as_deref().map(|s| &s.ring) else {
            return;
        };
        let Some(entry) = ring.get(picked.idx) else {
            return;
        };
        if attempt.record_if_new(entry.stats.addr) {
            return;
        }
        let tried = attempt.tried();
        // Another endpoint must be ready now: `call` cannot wait for one
        // (and must not fail because of the attempt). Its service is polled
        // once with a waker that does nothing; one that is not ready is let
        // go at once, as `poll_ready` lets go of a pick it drops.
        let mut cx = Context::from_waker(Waker::noop());
        let mut eligible = Eligible::new(&self.shared.pool);
        let len = ring.len();
        for i in 1..len {
            let mut idx = picked.idx + i;
            if idx >= len {
                idx -= len;
            }
            let other = &ring[idx];
            if tried.contains(other.stats.addr) || !eligible.check(&other.stats) {
                continue;
            }
            let mut service = other.service.clone();
            match service.poll_ready(&mut cx) {
                Poll::Ready(Ok(())) => {
                    tracing::debug!(
                        name = %self.shared.pool.config.name,
                        peer.addr = %other.stats.addr,
                        tried = %entry.stats.addr,
                        attempt = attempt.number(),
                        "endpoint already tried by this request: picked another"
                    );
                    let stripe = (self.shared.pool.config.consecutive_failures > 0)
                        .then(|| other.stripes[self.stripe].clone());
                    attempt.record(other.stats.addr);
                    *picked = Picked {
                        idx,
                        stripe,
                        service,
                    };
                    // As if `poll_ready` had skipped the tried endpoint: the
                    // turn goes on after the one taken.
                    self.cursor = idx + 1;
                    return;
                }
                Poll::Ready(Err(err)) => not_ready(&other.stats, err.into()),
                Poll::Pending => {}
            }
        }
        // Every other eligible endpoint was tried or is busy: the pick
        // stands, and becomes the record's most recent.
        attempt.record(entry.stats.addr);
    }
}

impl<S, C, A> fmt::Debug for RoundRobin<S, C, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoundRobin")
            .field("pool", &self.shared.pool)
            .finish_non_exhaustive()
    }
}

/// Checks a kept pick again: its endpoint still in the set and eligible,
/// its service still ready.
fn still_good<S, Req>(
    snapshot: Option<&Snapshot<S>>,
    pool: &Pool,
    picked: &mut Picked<S>,
    cx: &mut Context<'_>,
) -> bool
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    let Some(entry) = snapshot.and_then(|s| s.ring.get(picked.idx)) else {
        return false;
    };
    if !Eligible::new(pool).check(&entry.stats) {
        tracing::trace!(peer.addr = %entry.stats.addr, "kept pick no longer eligible");
        return false;
    }
    match picked.service.poll_ready(cx) {
        Poll::Ready(Ok(())) => true,
        Poll::Ready(Err(err)) => {
            not_ready(&entry.stats, err.into());
            false
        }
        // Picked again below; a fresh clone of it keeps the waker.
        Poll::Pending => false,
    }
}

/// An endpoint's service failed to become ready: that counts against it.
fn not_ready(stats: &EndpointStats, err: BoxError) {
    tracing::debug!(peer.addr = %stats.addr, error = %err, "endpoint failed to become ready");
    stats.record(classify_error(&err).is_failure());
}

// === impl Eligible ===

impl<'a> Eligible<'a> {
    fn new(pool: &'a Pool) -> Self {
        Self {
            pool,
            now: None,
            panic: None,
        }
    }

    /// Whether the endpoint of `stats` may be picked: in the set, past its
    /// first health check, and neither unhealthy nor ejected (unless in
    /// panic, when traffic spreads over all of them).
    #[inline]
    fn check(&mut self, stats: &EndpointStats) -> bool {
        let flags = stats.flags();
        if flags == 0 {
            return true;
        }
        if flags & (PENDING | REMOVED) != 0 {
            return false;
        }
        let ejected =
            flags & EJECTED != 0 && stats.still_ejected(*self.now.get_or_insert_with(Instant::now));
        !((ejected || flags & UNHEALTHY != 0)
            && !*self.panic.get_or_insert_with(|| self.pool.in_panic()))
    }
}

// === impl RoundRobinBuilder ===

impl RoundRobinBuilder<ErrorsAsFailures> {
    /// A builder with the default configuration, [`ErrorsAsFailures`] and
    /// no active health checks.
    pub fn new() -> Self {
        Self {
            config: RoundRobinConfig::default(),
            classify: ErrorsAsFailures,
            attempts: IgnoreAttempt,
            health: None,
        }
    }
}

impl Default for RoundRobinBuilder<ErrorsAsFailures> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C, A> RoundRobinBuilder<C, A> {
    /// Sets the configuration (passive ejection, panic threshold, name).
    pub fn config(mut self, config: RoundRobinConfig) -> Self {
        self.config = config;
        self
    }

    /// Classifies outcomes with `classify` instead: it decides which
    /// responses count against an endpoint, e.g.
    /// [`HttpOutcome`](resilience_core::HttpOutcome) (5xx and errors count,
    /// 4xx never) or [`GrpcOutcome`](resilience_core::GrpcOutcome); the
    /// default, [`ErrorsAsFailures`], counts errors only.
    pub fn with_classifier<C2>(self, classify: C2) -> RoundRobinBuilder<C2, A> {
        RoundRobinBuilder {
            config: self.config,
            classify,
            attempts: self.attempts,
            health: self.health,
        }
    }

    /// Sets the classifier.
    #[deprecated(since = "0.1.0", note = "use `RoundRobinBuilder::with_classifier`")]
    pub fn classify<C2>(self, classify: C2) -> RoundRobinBuilder<C2, A> {
        self.with_classifier(classify)
    }

    /// Sends a retry to an endpoint its request has not tried yet, when
    /// there is one (Envoy's "previous hosts" rule), reading the request's
    /// [`Attempt`] with `attempts`: for `http::Request`s (hyper, axum, a
    /// tonic `Channel`),
    /// [`AttemptFromExtensions`](resilience_core::AttemptFromExtensions).
    ///
    /// For a request that carries an [`Attempt`], the balancer records the
    /// endpoint it goes to, and skips the endpoints already tried if
    /// another eligible endpoint is ready; when every one was tried (or
    /// the others are busy), it picks as usual, never fails or waits
    /// because of the attempt. A request without one (the first try: a
    /// retry layer puts none on it) costs one extension lookup, and its
    /// pick is reported to a retry layer above watching the call
    /// ([`resilience_core::attempt::report_first_pick`], one per-thread
    /// cell access), so that its retry avoids that endpoint too. Without this setting ([`IgnoreAttempt`], the default, for
    /// requests of any type) attempts are neither read nor recorded.
    ///
    /// ```
    /// use resilience_core::{Attempt, AttemptFromExtensions, BoxError};
    /// use resilience_discovery::{Endpoint, RoundRobinBuilder};
    /// use tower::{ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let endpoints = ["10.0.0.1:80", "10.0.0.2:80"].map(|a| Endpoint::new(a.parse().unwrap()));
    /// let balancer = RoundRobinBuilder::new()
    ///     .avoid_tried(AttemptFromExtensions)
    ///     .build_with_endpoints(endpoints, |ep: &Endpoint| {
    ///         let addr = ep.addr();
    ///         service_fn(move |_: http::Request<()>| async move { Ok::<_, BoxError>(addr) })
    ///     });
    ///
    /// // The first try went to 10.0.0.1 and failed; the retry avoids it.
    /// let first = Attempt::first();
    /// first.record("10.0.0.1:80".parse()?);
    /// let mut retry = http::Request::new(());
    /// retry.extensions_mut().insert(first.next());
    /// let went_to = balancer.oneshot(retry).await?;
    /// assert_eq!(went_to, "10.0.0.2:80".parse()?);
    /// assert_eq!(first.tried().last(), Some(went_to)); // recorded
    /// # Ok(())
    /// # }
    /// ```
    pub fn avoid_tried<A2>(self, attempts: A2) -> RoundRobinBuilder<C, A2> {
        RoundRobinBuilder {
            config: self.config,
            classify: self.classify,
            attempts,
            health: self.health,
        }
    }

    /// Turns active health checks on: each endpoint is checked by `check`
    /// on its own schedule, apart from user traffic, and gets traffic only
    /// after its first passing check.
    ///
    /// The checks are tokio tasks, spawned on the runtime an endpoint is
    /// added in, else on the one the balancer's checks already run on. An
    /// endpoint added before any runtime ran (a balancer built in `main`
    /// before the runtime starts) is checked from the balancer's first
    /// `poll_ready` on, with a warning in the log; until its first check
    /// passes it gets no traffic.
    pub fn health_check(mut self, config: HealthCheckConfig, check: impl CheckHealth) -> Self {
        self.health = Some(HealthChecker::new(config, check));
        self
    }

    /// A balancer with no endpoints yet; add them through
    /// [`RoundRobin::handle`].
    pub fn build<S, M, Args>(self, maker: M) -> RoundRobin<S, C, A>
    where
        S: Clone + Send + Sync + 'static,
        M: MakeEndpoint<Args, Service = S> + Send + Sync + 'static,
    {
        let maker = Box::new(move |ep: &Endpoint| maker.make_endpoint(ep));
        let shared = Arc::new(Shared::new(self.config, maker, self.health));
        RoundRobin::from_shared(shared, self.classify, self.attempts)
    }

    /// A balancer over a fixed list of endpoints.
    pub fn build_with_endpoints<S, M, Args>(
        self,
        endpoints: impl IntoIterator<Item = Endpoint>,
        maker: M,
    ) -> RoundRobin<S, C, A>
    where
        S: Clone + Send + Sync + 'static,
        M: MakeEndpoint<Args, Service = S> + Send + Sync + 'static,
    {
        let rr = self.build(maker);
        rr.shared.apply(endpoints.into_iter().map(Change::Insert));
        rr
    }

    /// A balancer that follows a source: a stream of [`Change`]s, such as
    /// [`StaticSource`](crate::source::StaticSource) or one of the registry
    /// sources. A task applies the changes; it ends when the stream ends or
    /// the last clone of the balancer is dropped.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn build_with_source<S, M, Args, St>(self, source: St, maker: M) -> RoundRobin<S, C, A>
    where
        S: Clone + Send + Sync + 'static,
        M: MakeEndpoint<Args, Service = S> + Send + Sync + 'static,
        St: Stream<Item = Change> + Send + 'static,
    {
        let rr = self.build(maker);
        let weak = Arc::downgrade(&rr.shared);
        let driver = tokio::spawn(async move {
            let mut source = std::pin::pin!(source);
            while let Some(first) = source.next().await {
                let mut batch = vec![first];
                while let Some(Some(change)) = source.next().now_or_never() {
                    batch.push(change);
                }
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                shared.apply(batch);
            }
        });
        rr.shared.set_driver(driver.abort_handle());
        rr
    }
}

impl<C: fmt::Debug, A: fmt::Debug> fmt::Debug for RoundRobinBuilder<C, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoundRobinBuilder")
            .field("config", &self.config)
            .field("classify", &self.classify)
            .field("attempts", &self.attempts)
            .field("health_check", &self.health.is_some())
            .finish()
    }
}

// === impl RoundRobinHandle ===

impl RoundRobinHandle {
    /// The balancer's name (its `name` metric label).
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// Applies changes to the endpoint set at once.
    pub fn apply(&self, changes: impl IntoIterator<Item = Change>) {
        self.inner.apply(changes.into_iter().collect());
    }

    /// Adds an endpoint, or replaces the one with the same address.
    pub fn insert(&self, endpoint: Endpoint) {
        self.apply([Change::Insert(endpoint)]);
    }

    /// Removes the endpoint at `addr`: it gets no new requests, and its
    /// in-flight requests finish.
    pub fn remove(&self, addr: std::net::SocketAddr) {
        self.apply([Change::Remove(addr)]);
    }

    /// The endpoints and their health now.
    pub fn snapshot(&self) -> RoundRobinSnapshot {
        self.inner.snapshot()
    }
}

impl fmt::Debug for RoundRobinHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoundRobinHandle")
            .field("name", &self.name())
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl<S: Clone + Send + Sync + 'static> Control for Shared<S> {
    fn name(&self) -> &str {
        &self.pool.config.name
    }

    fn apply(&self, changes: Vec<Change>) {
        Shared::apply(self, changes);
    }

    fn snapshot(&self) -> RoundRobinSnapshot {
        let endpoints = self
            .endpoints()
            .into_iter()
            .map(|(endpoint, flags)| EndpointStatus {
                endpoint,
                state: EndpointState::from_flags(flags),
            })
            .collect();
        let (healthy, _, _, pending) = self.pool.counts();
        let active = self
            .pool
            .total
            .load(Ordering::Relaxed)
            .saturating_sub(pending);
        RoundRobinSnapshot {
            panic: healthy * 100 < usize::from(self.pool.config.panic_threshold_percent) * active,
            endpoints,
        }
    }
}
