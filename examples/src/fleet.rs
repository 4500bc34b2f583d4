//! Three instances of one service sharing a Redis-backed rate limit, and a
//! rolling restart of all three, one at a time, through an etcd lock.
//!
//! Each instance is an axum server behind its own
//! [`FleetRateLimitLayer`] (its own Redis connection), registered in etcd.
//! A client offers three times the fleet's limit through round robin over
//! the registry while every instance in turn takes the restart lock,
//! deregisters, drains, restarts (a new server, a new layer), registers
//! again and releases the lock. [`run`] reports what each instance
//! admitted against its fair share of the limit (`limit / 3`: the load is
//! spread evenly and saturates every instance, so each should admit close
//! to it), the Redis commands it sent, and who held the lock when.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use resilience_bounded_queue::fleet::{
    FleetRateLimitConfig, FleetRateLimitHandle, FleetRateLimitLayer,
};
use resilience_core::BoxError;
use resilience_discovery::source::etcd::{RestartLock, RestartLockConfig};
use resilience_discovery::source::{EtcdConfig, EtcdSource, Registration};
use resilience_discovery::{Endpoint, RoundRobinBuilder, RoundRobinConfig};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

const PREFIX: &str = "/services/fleet-demo/";
const LOCK: &str = "/locks/restart/fleet-demo";

/// What to run.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// The Redis URL (`redis://127.0.0.1:6379/`).
    pub redis: String,
    /// The etcd URL (`http://127.0.0.1:2379`).
    pub etcd: String,
    /// The fleet's limit, requests per second.
    pub limit: u64,
    /// How long the client offers load (the restart runs inside it).
    pub duration: Duration,
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct FleetReport {
    /// Per instance (`instance-0` ...), its restarts included.
    pub per_instance: BTreeMap<String, InstanceReport>,
    /// Requests offered.
    pub offered: u64,
    /// Requests that failed otherwise (not 200, not 429).
    pub failed: u64,
    /// Who held the restart lock, from and to (seconds since the start).
    pub lock_timeline: Vec<(String, f64, f64)>,
    /// How long the load ran.
    pub elapsed: Duration,
    /// The fleet's limit per second.
    pub limit: u64,
}

/// What one instance did, over its restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstanceReport {
    /// Requests admitted.
    pub admitted: u64,
    /// Requests refused by the fleet rate limit (429).
    pub refused: u64,
    /// Lease commands its rate limit sent to Redis.
    pub redis_commands: u64,
    /// Tokens its rate limit leased from Redis.
    pub tokens_leased: u64,
    /// Changes of its rate limit's mode (Redis slow or unreachable: its
    /// local share then; Redis back).
    pub mode_changes: u64,
}

struct Instance {
    addr: SocketAddr,
    in_flight: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    limit: FleetRateLimitHandle,
}

// === impl FleetReport ===

impl FleetReport {
    /// Requests admitted, all instances together.
    pub fn admitted(&self) -> u64 {
        self.per_instance.values().map(|r| r.admitted).sum()
    }

    /// Each instance's fair share of the limit, requests per second: the
    /// limit over the instances.
    pub fn fair_share(&self) -> f64 {
        self.limit as f64 / self.per_instance.len().max(1) as f64
    }

    /// Per instance, what it admitted per second against its
    /// [fair share](Self::fair_share): `0.05` is 5% above, `-0.2` 20% below.
    pub fn split(&self) -> BTreeMap<String, f64> {
        let secs = self.elapsed.as_secs_f64();
        let fair = self.fair_share();
        self.per_instance
            .iter()
            .map(|(name, r)| (name.clone(), r.admitted as f64 / secs / fair - 1.0))
            .collect()
    }
}

// === impl InstanceReport ===

impl InstanceReport {
    fn add_limit(&mut self, limit: &FleetRateLimitHandle) {
        let snap = limit.snapshot();
        self.redis_commands += snap.redis_commands;
        self.tokens_leased += snap.tokens_leased;
        self.mode_changes += snap.mode_changes;
    }
}

impl std::fmt::Display for FleetReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "offered {} requests in {secs:.1} s ({:.0}/s) against a fleet limit of {}/s",
            self.offered,
            self.offered as f64 / secs,
            self.limit
        )?;
        let split = self.split();
        for (name, r) in &self.per_instance {
            writeln!(
                f,
                "  {name}: admitted {:>5} ({:>5.1}/s, {:+4.0}% of its fair share {:.1}/s), \
                 refused (429) {:>5}; {} redis commands, {} tokens leased, {} changes of mode",
                r.admitted,
                r.admitted as f64 / secs,
                split[name] * 100.0,
                self.fair_share(),
                r.refused,
                r.redis_commands,
                r.tokens_leased,
                r.mode_changes,
            )?;
        }
        writeln!(
            f,
            "  fleet: admitted {} ({:.1}/s), other failures {}",
            self.admitted(),
            self.admitted() as f64 / secs,
            self.failed
        )?;
        writeln!(f, "restart lock:")?;
        for (holder, from, to) in &self.lock_timeline {
            writeln!(f, "  {holder} held it from {from:.2} s to {to:.2} s")?;
        }
        Ok(())
    }
}

/// Runs three instances and a rolling restart; see the [module docs](self).
///
/// # Errors
///
/// When Redis or etcd cannot be used, or a restart step fails.
pub async fn run(settings: FleetSettings) -> Result<FleetReport, BoxError> {
    let etcd = EtcdConfig::builder()
        .endpoint(settings.etcd.clone())
        .name("fleet-demo")
        .request_timeout(Duration::from_secs(2))
        .build()?;
    // Fail early and clearly when a store is not there.
    let redis_client = redis::Client::open(settings.redis.as_str())?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(2),
        redis_client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| format!("redis at {} did not answer", settings.redis))?
    .map_err(|e| format!("redis at {}: {e}", settings.redis))?;
    let _: String = redis::cmd("PING").query_async(&mut conn).await?;

    let config = FleetRateLimitConfig::builder()
        .name("fleet-demo")
        .rate(settings.limit, Duration::from_secs(1))
        .batch((settings.limit / 20).max(1))
        .instances(3)
        .build()?;
    let counts: Arc<Mutex<BTreeMap<String, InstanceReport>>> = Arc::default();
    let mut instances = Vec::new();
    let mut regs = Vec::new();
    for i in 0..3 {
        let inst = start_instance(&settings.redis, config.clone()).await?;
        regs.push(Some(register(&etcd, i, inst.addr).await?));
        instances.push(inst);
    }
    let names: Arc<Mutex<BTreeMap<u16, String>>> = Arc::new(Mutex::new(
        instances
            .iter()
            .enumerate()
            .map(|(i, s)| (s.addr.port(), format!("instance-{i}")))
            .collect(),
    ));

    let rr = RoundRobinBuilder::new()
        .config(RoundRobinConfig::builder().name("fleet-demo").build()?)
        .build_with_source(EtcdSource::new(etcd.clone(), PREFIX).into_stream(), maker());
    let handle = rr.handle();
    let rr: Call = BoxCloneSyncService::new(rr);
    let start = Instant::now();
    while handle.snapshot().endpoints.len() < 3 {
        if start.elapsed() > Duration::from_secs(10) {
            return Err("the instances did not appear in etcd".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The client: three times the limit, paced, each request its own task.
    let stop = Arc::new(AtomicBool::new(false));
    let offered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let load = {
        let (stop, offered, failed, counts, names) = (
            stop.clone(),
            offered.clone(),
            failed.clone(),
            counts.clone(),
            names.clone(),
        );
        let period = Duration::from_nanos(1_000_000_000 / (3 * settings.limit));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            let mut tasks = tokio::task::JoinSet::new();
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                offered.fetch_add(1, Ordering::Relaxed);
                let (rr, failed, counts, names) =
                    (rr.clone(), failed.clone(), counts.clone(), names.clone());
                tasks.spawn(async move {
                    match rr.oneshot(()).await {
                        Ok((port, status)) => {
                            let name = names
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .get(&port)
                                .cloned()
                                .unwrap_or_else(|| format!("port-{port}"));
                            let mut counts = counts
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            let entry = counts.entry(name).or_default();
                            match status {
                                200 => entry.admitted += 1,
                                429 => entry.refused += 1,
                                _ => {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "request failed");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        })
    };

    // The rolling restart, one instance at a time.
    tokio::time::sleep(settings.duration / 5).await;
    let lock = RestartLock::new(
        &etcd,
        RestartLockConfig::builder()
            .registry_prefix(PREFIX)
            .lock_key(LOCK)
            .min_healthy(2)
            .lease_ttl(Duration::from_secs(5))
            .wait_timeout(Duration::from_secs(30))
            .poll(Duration::from_millis(20))
            .build()?,
    );
    let mut timeline = Vec::new();
    for i in 0..3 {
        let name = format!("instance-{i}");
        let permit = lock.acquire(&name, &key(i)).await?;
        let from = start.elapsed().as_secs_f64();
        permit
            .deregister(regs[i].take().expect("registered"))
            .await?;
        let in_flight = instances[i].in_flight.clone();
        permit
            .drain(
                move || in_flight.load(Ordering::SeqCst),
                Duration::from_millis(300),
                Duration::from_secs(5),
            )
            .await?;
        instances[i].task.abort();
        counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(name.clone())
            .or_default()
            .add_limit(&instances[i].limit);
        let inst = start_instance(&settings.redis, config.clone()).await?;
        names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(inst.addr.port(), name.clone());
        regs[i] = Some(register(&etcd, i, inst.addr).await?);
        instances[i] = inst;
        permit
            .release_when_registered(&key(i), Duration::from_secs(10))
            .await?;
        timeline.push((name, from, start.elapsed().as_secs_f64()));
    }
    let rest = settings.duration.saturating_sub(start.elapsed());
    tokio::time::sleep(rest).await;
    stop.store(true, Ordering::Relaxed);
    load.await?;
    let elapsed = start.elapsed();
    for reg in regs.into_iter().flatten() {
        let _ = reg.deregister().await;
    }
    let mut per_instance = counts
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for (i, inst) in instances.into_iter().enumerate() {
        inst.task.abort();
        per_instance
            .entry(format!("instance-{i}"))
            .or_default()
            .add_limit(&inst.limit);
    }
    Ok(FleetReport {
        per_instance,
        offered: offered.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        lock_timeline: timeline,
        elapsed,
        limit: settings.limit,
    })
}

fn key(i: usize) -> String {
    format!("{PREFIX}instance-{i}")
}

async fn register(etcd: &EtcdConfig, i: usize, addr: SocketAddr) -> Result<Registration, BoxError> {
    Registration::register(etcd, key(i), &Endpoint::new(addr), Duration::from_secs(5)).await
}

/// One instance: `GET /` behind the fleet rate limit (429 when refused),
/// counting its requests in flight.
async fn start_instance(redis: &str, config: FleetRateLimitConfig) -> Result<Instance, BoxError> {
    let limit = FleetRateLimitLayer::new(config, redis::Client::open(redis)?);
    let handle = limit.handle();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let n = in_flight.clone();
    let app = Router::new()
        .route(
            "/",
            get(move || {
                let n = n.clone();
                async move {
                    n.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    n.fetch_sub(1, Ordering::SeqCst);
                    "ok"
                }
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(resilience_core::http::handle_error))
                .layer(limit),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "instance stopped");
        }
    });
    Ok(Instance {
        addr,
        in_flight,
        task,
        limit: handle,
    })
}

type Call = BoxCloneSyncService<(), (u16, u16), BoxError>;

/// Endpoint services: `GET /`, answering the port and the status.
fn maker() -> impl Fn(&Endpoint) -> Call + Send + Sync + 'static {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    move |ep: &Endpoint| {
        let client = client.clone();
        let port = ep.addr().port();
        let uri: http::Uri = format!("http://{}/", ep.addr())
            .parse()
            .expect("an address is a valid URI");
        BoxCloneSyncService::new(service_fn(move |()| {
            let (client, uri) = (client.clone(), uri.clone());
            async move {
                let rsp = client.get(uri).await?;
                let status = rsp.status().as_u16();
                rsp.into_body().collect().await?;
                Ok::<_, BoxError>((port, status))
            }
        }))
    }
}
