//! The fleet-wide rate limit against a real `redis-server` started on a
//! free loopback port (skipped with a message when the binary is missing,
//! unless `RESILIENCE_REQUIRE_SERVERS=1`).
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request};
use resilience_bounded_queue::fleet::{
    FleetMode, FleetRateLimitConfig, FleetRateLimitConfigBuilder, FleetRateLimitHandle,
    FleetRateLimitLayer, KeyBy, WhenRedisFails,
};
use resilience_core::{BoxError, Priority, Rejected, RejectionKind};
use resilience_test_support::RedisServer;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

type Svc = BoxCloneSyncService<Request<()>, &'static str, BoxError>;

/// The tests that measure rates and waits in real time run one at a time,
/// so that they do not take each other's CPU (two cores in CI).
static TIMED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn tenant() -> HeaderName {
    HeaderName::from_static("x-tenant")
}

/// One instance: its own layer and its own Redis connection.
fn instance(url: &str, config: FleetRateLimitConfig, key: KeyBy) -> (Svc, FleetRateLimitHandle) {
    let layer = FleetRateLimitLayer::new(config, redis::Client::open(url).unwrap()).with_key(key);
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: Request<()>| async {
            Ok::<_, BoxError>("ok")
        }));
    (BoxCloneSyncService::new(svc), handle)
}

/// A builder whose Redis timeout a busy machine does not reach: only the
/// tests about a slow or missing Redis set a short one.
fn config(name: &str) -> FleetRateLimitConfigBuilder {
    FleetRateLimitConfig::builder()
        .name(name)
        .redis_timeout(PATIENT)
}

/// Longer than any Redis round trip on a loaded machine.
const PATIENT: Duration = Duration::from_secs(5);

fn req(tenant_key: &[u8], priority: Priority) -> Request<()> {
    let mut req = Request::get("/")
        .header(tenant(), HeaderValue::from_bytes(tenant_key).unwrap())
        .body(())
        .unwrap();
    req.extensions_mut().insert(priority);
    req
}

/// Sends `n` requests at once-ish (sequentially, no pacing); the admitted
/// count.
async fn burst(svc: &mut Svc, key: &[u8], priority: Priority, n: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..n {
        match svc.ready().await.unwrap().call(req(key, priority)).await {
            Ok(_) => admitted += 1,
            Err(e) => assert_throttled(&e),
        }
    }
    admitted
}

fn assert_throttled(e: &BoxError) {
    let r = e
        .downcast_ref::<Rejected>()
        .unwrap_or_else(|| panic!("not a rejection: {e}"));
    assert_eq!(r.kind(), RejectionKind::Throttled);
}

#[derive(Default)]
struct Counts {
    offered: AtomicU64,
    admitted: AtomicU64,
    /// Admitted inside the measured window.
    in_window: AtomicU64,
    max_latency_us: AtomicU64,
}

/// Drives `svc` at `rate` requests/s until `until`, counting admissions
/// between `from` and `until`.
async fn drive(mut svc: Svc, rate: u64, from: Instant, until: Instant, counts: Arc<Counts>) {
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        let at = tick.tick().await;
        if at >= until {
            return;
        }
        counts.offered.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let result = svc
            .ready()
            .await
            .unwrap()
            .call(req(b"shared", Priority::Critical))
            .await;
        let took = start.elapsed().as_micros() as u64;
        counts.max_latency_us.fetch_max(took, Ordering::Relaxed);
        match result {
            Ok(_) => {
                counts.admitted.fetch_add(1, Ordering::Relaxed);
                if Instant::now() >= from {
                    counts.in_window.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => assert_throttled(&e),
        }
    }
}

/// Runs one instance per rate in `rates` (requests/s offered to each, as a
/// load balancer would spread them) against `cfg` for `secs` seconds; the
/// counts and the handles. Admissions are counted in the window after the
/// first second (the first burst).
async fn fleet(
    redis: &RedisServer,
    cfg: &FleetRateLimitConfig,
    rates: &[u64],
    secs: u64,
) -> (Vec<Arc<Counts>>, Vec<FleetRateLimitHandle>) {
    let start = Instant::now();
    let from = start + Duration::from_secs(1);
    let until = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    let mut handles = Vec::new();
    let mut counts = Vec::new();
    for &rate in rates {
        let (svc, handle) = instance(redis.url(), cfg.clone(), KeyBy::Header(tenant()));
        let c = Arc::new(Counts::default());
        tasks.push(tokio::spawn(drive(svc, rate, from, until, c.clone())));
        handles.push(handle);
        counts.push(c);
    }
    for t in tasks {
        t.await.unwrap();
    }
    (counts, handles)
}

fn sum(counts: &[Arc<Counts>], field: impl Fn(&Counts) -> &AtomicU64) -> u64 {
    counts
        .iter()
        .map(|c| field(c).load(Ordering::Relaxed))
        .sum()
}

/// Three instances behind a load balancer that spreads the load evenly,
/// each offered the whole limit (3x together): the fleet admits the limit,
/// and each instance its share, within 20% of limit / 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_at_three_times_the_limit_admit_the_limit() {
    let _timed = TIMED.lock().await;
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    const LIMIT: u64 = 300;
    let cfg = config("three")
        .rate(LIMIT, Duration::from_secs(1))
        .batch(10)
        .instances(3)
        .build()
        .unwrap();
    assert_eq!(cfg.over_admission_bound(), 30);
    let (counts, handles) = fleet(&redis, &cfg, &[LIMIT; 3], 5).await;
    let admitted = sum(&counts, |c| &c.in_window);
    let offered = sum(&counts, |c| &c.offered);
    let total = sum(&counts, |c| &c.admitted);
    let commands: u64 = handles.iter().map(|h| h.snapshot().redis_commands).sum();
    let expected = LIMIT * 4; // the 4 s window
    let share = expected / 3;
    let per_instance: Vec<u64> = counts
        .iter()
        .map(|c| c.in_window.load(Ordering::Relaxed))
        .collect();
    println!(
        "limit {LIMIT}/s; offered {offered} in 5 s; admitted {admitted} in the 4 s window \
         (expected {expected}, {:+.2}%); per instance {per_instance:?} (share {share}); \
         redis commands per 1,000 requests offered: {:.1}, per 1,000 admitted: {:.1}",
        (admitted as f64 - expected as f64) * 100.0 / expected as f64,
        commands as f64 * 1000.0 / offered as f64,
        commands as f64 * 1000.0 / total as f64,
    );
    assert!(
        offered as f64 >= 2.5 * LIMIT as f64 * 5.0,
        "the load was offered: {offered}"
    );
    // Redis grants at most the limit over the window plus the burst, and
    // what was leased before it is at most a batch per instance: the bound
    // holds however slow the machine. Below it, the machine must only keep
    // up with the leases.
    assert!(
        admitted <= expected + cfg.burst() + cfg.over_admission_bound(),
        "admitted {admitted}, at most {expected} + burst + unspent"
    );
    assert!(
        admitted as f64 >= expected as f64 * 0.9,
        "admitted {admitted}, expected {expected}"
    );
    // Saturated and evenly loaded: each instance admits its share.
    for (i, n) in per_instance.iter().enumerate() {
        assert!(
            n.abs_diff(share) * 5 <= share,
            "instance {i} admitted {n}, not within 20% of its share {share}: {per_instance:?}"
        );
    }
    // No round trip per request: a lease serves several requests, and
    // refused ones mostly never reach Redis.
    assert!(
        commands * 4 < offered,
        "{commands} commands for {offered} requests"
    );
    assert!(handles.iter().all(|h| h.mode() == FleetMode::Shared));
    // Every admission spent a token Redis granted, and what the fleet holds
    // unspent (its most over-admission in a later window) is within the
    // documented bound: at most a batch per instance.
    let mut unspent = 0;
    for (h, c) in handles.iter().zip(&counts) {
        let leased = h.snapshot().tokens_leased;
        let admitted = c.admitted.load(Ordering::Relaxed);
        assert!(admitted <= leased, "admitted {admitted} of {leased} leased");
        assert!(
            leased - admitted <= cfg.batch(),
            "holds {} unspent",
            leased - admitted
        );
        unspent += leased - admitted;
    }
    println!(
        "unspent at the end: {unspent} (bound {})",
        cfg.over_admission_bound()
    );
    assert!(unspent <= cfg.over_admission_bound());
}

/// An instance offered less than its share leaves the rest to the others:
/// it admits (nearly) all it is offered, the two saturated instances split
/// the remainder evenly, and the fleet still admits the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_with_less_demand_leaves_its_share_to_the_others() {
    let _timed = TIMED.lock().await;
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    const LIMIT: u64 = 300;
    let cfg = config("uneven")
        .rate(LIMIT, Duration::from_secs(1))
        .batch(10)
        .instances(3)
        .build()
        .unwrap();
    // A and B offered the whole limit each; C a tenth of it (its share is
    // a third).
    let (counts, _) = fleet(&redis, &cfg, &[LIMIT, LIMIT, LIMIT / 10], 4).await;
    let expected = LIMIT * 3; // the 3 s window
    let admitted = sum(&counts, |c| &c.in_window);
    let per_instance: Vec<u64> = counts
        .iter()
        .map(|c| c.in_window.load(Ordering::Relaxed))
        .collect();
    let (c_offered, c_admitted) = (
        counts[2].offered.load(Ordering::Relaxed),
        counts[2].admitted.load(Ordering::Relaxed),
    );
    println!(
        "limit {LIMIT}/s; admitted {admitted} in the 3 s window (expected {expected}); \
         per instance {per_instance:?}; the light one admitted {c_admitted} of {c_offered}"
    );
    assert!(
        c_admitted * 10 >= c_offered * 9,
        "the light instance gets what it asks for: {c_admitted} of {c_offered}"
    );
    assert!(
        admitted as f64 >= expected as f64 * 0.9,
        "its unused share goes to the others: {admitted} of {expected}"
    );
    assert!(admitted <= expected + cfg.burst() + cfg.over_admission_bound());
    let rest = (admitted - per_instance[2]) / 2;
    for n in &per_instance[..2] {
        assert!(
            n.abs_diff(rest) * 5 <= rest,
            "the saturated instances split the rest evenly: {per_instance:?}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn keys_are_isolated_and_over_admission_is_bounded() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // A long period: nothing refills during the test.
    let cfg = config("keys")
        .rate(20, Duration::from_secs(3600))
        .batch(4)
        .burst(20)
        .instances(2)
        .build()
        .unwrap();
    let (mut a, ha) = instance(redis.url(), cfg.clone(), KeyBy::Header(tenant()));
    let (mut b, _hb) = instance(redis.url(), cfg.clone(), KeyBy::Header(tenant()));
    // Both instances hammer tenant 1: together they get its burst, no more.
    let one = burst(&mut a, b"t1", Priority::Critical, 30).await
        + burst(&mut b, b"t1", Priority::Critical, 30).await;
    assert_eq!(one, 20, "the fleet admits tenant 1's limit exactly");
    // Tenant 2 is untouched by tenant 1's exhaustion.
    assert_eq!(burst(&mut a, b"t2", Priority::Critical, 25).await, 20);
    // Leased but unspent tokens are the only over-admission: each instance
    // holds at most a batch.
    let (mut c, hc) = instance(redis.url(), cfg.clone(), KeyBy::Header(tenant()));
    assert_eq!(burst(&mut c, b"t3", Priority::Critical, 1).await, 1);
    let leased = hc.snapshot().tokens_leased;
    assert!(
        leased <= cfg.batch(),
        "a lease is at most a batch: {leased}"
    );
    let snap = ha.snapshot();
    assert_eq!(snap.keys, 2);
    assert!(snap.rejected > 0);
}

#[tokio::test(flavor = "current_thread")]
async fn critical_requests_draw_on_a_reserve() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let cfg = config("reserve")
        .rate(10, Duration::from_secs(3600))
        .batch(2)
        .burst(10)
        .reserve(4)
        .build()
        .unwrap();
    let (mut svc, _) = instance(redis.url(), cfg, KeyBy::Header(tenant()));
    let low = burst(&mut svc, b"t", Priority::Sheddable, 20).await;
    assert_eq!(low, 6, "sheddable requests stop at the reserve");
    let high = burst(&mut svc, b"t", Priority::Critical, 20).await;
    assert_eq!(high, 4, "critical requests get the reserve, and no more");
    // The refusal maps to 429 with Retry-After.
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(req(b"t", Priority::CriticalPlus))
        .await
        .unwrap_err();
    let rsp = resilience_core::http::error_response(&*err);
    assert_eq!(rsp.status(), 429);
    assert!(rsp.headers().contains_key("retry-after"));
    assert_eq!(
        resilience_core::grpc::into_status(err).code(),
        tonic::Code::ResourceExhausted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_run_falls_back_and_recovers() {
    let _timed = TIMED.lock().await;
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    const LIMIT: u64 = 300;
    let bound = Duration::from_millis(250);
    let cfg = config("outage")
        .rate(LIMIT, Duration::from_secs(1))
        .batch(10)
        .instances(3)
        .redis_timeout(bound)
        .probe_every(Duration::from_millis(200))
        .build()
        .unwrap();
    let (svc, handle) = instance(redis.url(), cfg, KeyBy::Header(tenant()));
    // Twice the limit offered: the limit is reached even when the machine
    // lags behind the pace.
    let phase = |secs: f64| {
        let svc = svc.clone();
        async move {
            let c = Arc::new(Counts::default());
            let start = Instant::now();
            let end = start + Duration::from_secs_f64(secs);
            drive(svc, 2 * LIMIT, start, end, c.clone()).await;
            c
        }
    };
    let shared = phase(1.0).await;
    assert_eq!(handle.mode(), FleetMode::Shared);
    let admitted = shared.in_window.load(Ordering::Relaxed);
    assert!(
        admitted >= 250,
        "alone, one instance gets the fleet's limit: {admitted}"
    );

    redis.stop();
    let down = phase(2.0).await;
    assert_eq!(handle.mode(), FleetMode::Local);
    let admitted = down.in_window.load(Ordering::Relaxed);
    let max_wait = Duration::from_micros(down.max_latency_us.load(Ordering::Relaxed));
    println!(
        "redis down: admitted {admitted} in 2 s (local share 100/s); longest call {max_wait:?}"
    );
    // The local share (limit / 3 = 100/s, a burst of 10) plus the tokens
    // held (at most a batch): at most 220, whatever the machine's pace.
    assert!(
        (100..=220).contains(&admitted),
        "the fallback holds the local share: {admitted}"
    );
    // Without the bound a request would wait on the dead Redis for the
    // whole phase; the margin is for a loaded machine.
    assert!(
        max_wait < bound + Duration::from_secs(1),
        "no request waits on redis past the bound: {max_wait:?}"
    );

    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while handle.mode() != FleetMode::Shared {
        assert!(Instant::now() < deadline, "the shared limit returns");
        let _ = phase(0.1).await;
    }
    let back = phase(1.0).await;
    let admitted = back.in_window.load(Ordering::Relaxed);
    assert!(
        admitted >= 250,
        "the shared limit is back (above the local share): {admitted}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn fail_closed_refuses_once_held_tokens_are_spent() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let cfg = config("closed")
        .rate(100, Duration::from_secs(1))
        .batch(5)
        .burst(100)
        .when_redis_fails(WhenRedisFails::FailClosed)
        .build()
        .unwrap();
    let (mut svc, handle) = instance(redis.url(), cfg, KeyBy::Header(tenant()));
    assert_eq!(burst(&mut svc, b"t", Priority::Critical, 3).await, 3);
    redis.stop();
    let start = Instant::now();
    let admitted = burst(&mut svc, b"t", Priority::Critical, 50).await;
    assert!(admitted <= 5, "only the tokens held: {admitted}");
    // Refused at once, not after waiting out the Redis timeout each.
    assert!(start.elapsed() < PATIENT, "{:?}", start.elapsed());
    assert_eq!(handle.mode(), FleetMode::Closed);
}

#[tokio::test(flavor = "current_thread")]
async fn hostile_keys_are_bounded() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let cfg = config("hostile")
        .rate(5, Duration::from_secs(60))
        .batch(1)
        .max_keys(64)
        .build()
        .unwrap();
    let (mut svc, handle) = instance(redis.url(), cfg, KeyBy::Header(tenant()));
    let mut answered = 0;
    for i in 0..1500u32 {
        let mut key = match i % 3 {
            0 => vec![b'k'; 16 * 1024],
            1 => vec![0xff, 0xfe, 0x80],
            _ => b"t".to_vec(),
        };
        key.extend_from_slice(i.to_string().as_bytes());
        let r = svc
            .ready()
            .await
            .unwrap()
            .call(req(&key, Priority::Critical))
            .await;
        if let Err(e) = &r {
            assert_throttled(e);
        }
        answered += 1;
    }
    assert_eq!(answered, 1500);
    let snap = handle.snapshot();
    assert!(snap.keys <= 64, "keys tracked stay bounded: {}", snap.keys);
    assert_eq!(snap.mode, FleetMode::Shared, "no key broke the script");
    // A request with no key at all is limited under `_`.
    let mut no_key = Request::get("/").body(()).unwrap();
    no_key.extensions_mut().insert(Priority::Critical);
    assert!(svc.ready().await.unwrap().call(no_key).await.is_ok());
}

/// No server needed: an unreachable Redis and the local share, on the
/// paused clock.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn unreachable_redis_uses_the_local_share() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed when the listener drops: nothing listens
    let cfg = config("local")
        .rate(30, Duration::from_secs(1))
        .batch(3)
        .burst(30)
        .instances(3)
        .probe_every(Duration::from_secs(3600))
        .build()
        .unwrap();
    let (mut svc, handle) = instance(
        &format!("redis://127.0.0.1:{port}/"),
        cfg,
        KeyBy::Header(tenant()),
    );
    // The first request waits for the failing lease, then takes the fallback.
    let first = burst(&mut svc, b"t", Priority::Critical, 1).await;
    tokio::time::sleep(Duration::from_millis(1)).await; // the lease task ends
    assert_eq!(handle.mode(), FleetMode::Local);
    // Local share: 10/s, burst 30 / 3 = 10.
    let more = burst(&mut svc, b"t", Priority::Critical, 50).await;
    assert_eq!(first + more, 10);
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(burst(&mut svc, b"t", Priority::Critical, 50).await, 5);
}

/// Each change of mode is counted once and the mode gauge is one-hot:
/// Redis down (local), then back (shared).
#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread")]
async fn mode_changes_are_metrics() {
    let _timed = TIMED.lock().await;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let cfg = config("metered")
        .rate(1000, Duration::from_secs(1))
        .batch(5)
        .probe_every(Duration::from_millis(50))
        .build()
        .unwrap();
    let (mut svc, handle) = instance(redis.url(), cfg, KeyBy::Header(tenant()));
    let series = || -> std::collections::HashMap<String, DebugValue> {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let mode = key
                    .key()
                    .labels()
                    .find(|l| l.key() == "mode")
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default();
                (format!("{}{{{mode}}}", key.key().name()), value)
            })
            .collect()
    };
    assert_eq!(burst(&mut svc, b"t", Priority::Critical, 3).await, 3);
    redis.stop();
    // Several failing leases, one change of mode.
    for _ in 0..5 {
        burst(&mut svc, b"t", Priority::Critical, 20).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(handle.mode(), FleetMode::Local);
    let seen = series();
    assert_eq!(
        seen["resilience_fleet_rate_limit_mode_changes_total{local}"],
        DebugValue::Counter(1)
    );
    assert_eq!(
        seen["resilience_fleet_rate_limit_mode{local}"],
        DebugValue::Gauge(1.0.into())
    );
    assert_eq!(
        seen["resilience_fleet_rate_limit_mode{shared}"],
        DebugValue::Gauge(0.0.into())
    );
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.mode() != FleetMode::Shared {
        assert!(Instant::now() < deadline, "back to shared");
        burst(&mut svc, b"t", Priority::Critical, 1).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    let seen = series();
    assert_eq!(
        seen["resilience_fleet_rate_limit_mode_changes_total{shared}"],
        DebugValue::Counter(1)
    );
    assert_eq!(handle.snapshot().mode_changes, 2, "to local and back");
    assert_eq!(
        seen["resilience_fleet_rate_limit_mode{shared}"],
        DebugValue::Gauge(1.0.into())
    );
}

/// The handle serves its state in a `SnapshotRegistry` document.
#[cfg(feature = "snapshot")]
#[tokio::test(flavor = "current_thread")]
async fn the_snapshot_is_served_as_fleet_rate_limit() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let cfg = config("snap")
        .rate(10, Duration::from_secs(3600))
        .batch(2)
        .burst(10)
        .build()
        .unwrap();
    let (mut svc, handle) = instance(redis.url(), cfg, KeyBy::Header(tenant()));
    assert_eq!(burst(&mut svc, b"a", Priority::Critical, 12).await, 10);
    let registry = resilience_core::snapshot::SnapshotRegistry::new("svc");
    registry.register(handle);
    let doc = registry.to_json();
    let layer = &doc["layers"][0];
    assert_eq!(layer["kind"], "fleet_rate_limit");
    assert_eq!(layer["name"], "snap");
    assert_eq!(layer["state"]["mode"], "shared");
    assert_eq!(layer["state"]["keys"], 1);
    assert_eq!(layer["state"]["tokens_leased"], 10);
    assert_eq!(layer["state"]["rejected"], 2);
    assert_eq!(layer["state"]["mode_changes"], 0);
    assert!(layer["state"]["redis_commands"].as_u64().unwrap() >= 5);
}

/// The limit asks nothing of the inner service but `Clone`: one that is
/// neither `Send` nor `'static` (it borrows a local and holds an `Rc`)
/// works, on a request admitted at once and on one that waits for a lease.
#[tokio::test(flavor = "current_thread")]
async fn the_inner_service_need_not_be_send_or_static() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let cfg = config("local-svc")
        .rate(5, Duration::from_secs(3600))
        .batch(1)
        .burst(5)
        .build()
        .unwrap();
    let calls = std::cell::Cell::new(0u32);
    let not_send = std::rc::Rc::new("ok");
    let inner = service_fn(|_: Request<()>| {
        calls.set(calls.get() + 1);
        let body = *not_send;
        async move { Ok::<_, BoxError>(body) }
    });
    let layer = FleetRateLimitLayer::new(cfg, redis::Client::open(redis.url()).unwrap());
    let mut svc = tower::Layer::layer(&layer, inner);
    let mut admitted = 0;
    for _ in 0..8 {
        if let Ok(body) = svc
            .ready()
            .await
            .unwrap()
            .call(req(b"t", Priority::Critical))
            .await
        {
            assert_eq!(body, "ok");
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
    assert_eq!(calls.get(), 5, "refused requests never reach the service");
}

/// A TCP proxy in front of Redis for one instance: [`hang`](Self::hang)
/// stops it passing bytes either way (connections stay open, as when Redis
/// is slow or unreachable for this instance only), [`resume`](Self::resume)
/// passes them again, in order.
struct Proxy {
    port: u16,
    hung: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Proxy {
    async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hung = Arc::new(tokio::sync::watch::Sender::new(false));
        let watch = hung.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(Self::pipe(cr, sw, watch.subscribe()));
                tokio::spawn(Self::pipe(sr, cw, watch.subscribe()));
            }
        });
        Self { port, hung }
    }

    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut hung: tokio::sync::watch::Receiver<bool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if hung.wait_for(|h| !*h).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn hang(&self) {
        self.hung.send_replace(true);
    }

    fn resume(&self) {
        self.hung.send_replace(false);
    }
}

/// One instance cut off from Redis while the others reach it: it falls
/// back to its local share, and the others could take the whole limit in
/// Redis meanwhile. When it reaches Redis again it is charged for what it
/// admitted on its own, so the fleet still admits its limit. A period of an
/// hour: nothing refills during the test, every count is exact however
/// slow the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_redis_is_charged_for_what_it_admitted_alone() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    const LIMIT: u64 = 30;
    let proxy = Proxy::start(redis.port()).await;
    let cfg = |timeout: Duration| {
        config("split")
            .rate(LIMIT, Duration::from_secs(3600))
            .batch(3)
            .burst(LIMIT)
            .instances(3)
            .redis_timeout(timeout)
            .probe_every(Duration::from_millis(20))
            .build()
            .unwrap()
    };
    // A and B never give up on Redis: only C's lease times out.
    let (mut a, _) = instance(redis.url(), cfg(PATIENT), KeyBy::Header(tenant()));
    let (mut b, _) = instance(redis.url(), cfg(PATIENT), KeyBy::Header(tenant()));
    let (mut c, hc) = instance(
        &proxy.url(),
        cfg(Duration::from_millis(200)),
        KeyBy::Header(tenant()),
    );
    let mut c_admitted = burst(&mut c, b"t", Priority::Critical, 1).await;
    assert_eq!(c_admitted, 1);

    // Cut off: C spends the tokens it holds, then its local share (a burst
    // of 30 / 3 = 10; its rate is 10 an hour).
    proxy.hang();
    let alone = burst(&mut c, b"t", Priority::Critical, 30).await;
    assert_eq!(hc.mode(), FleetMode::Local);
    assert_eq!(alone, 2 + 10, "the two tokens held, then the local share");
    c_admitted += alone;

    // C reaches Redis again (a probe every 20 ms); its local share is
    // spent, so it admits nothing more until it is back on shared tokens.
    proxy.resume();
    let deadline = Instant::now() + Duration::from_secs(30);
    while hc.mode() != FleetMode::Shared {
        assert!(Instant::now() < deadline, "C reaches Redis again");
        c_admitted += burst(&mut c, b"t", Priority::Critical, 1).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A and B take what is left of the limit in Redis.
    let others = burst(&mut a, b"t", Priority::Critical, 40).await
        + burst(&mut b, b"t", Priority::Critical, 40).await;
    let fleet = c_admitted + others;
    println!(
        "C admitted {c_admitted} (10 alone; leased {}), A and B {others}: the fleet {fleet} of {LIMIT}",
        hc.snapshot().tokens_leased
    );
    assert!(
        fleet <= LIMIT as usize,
        "the fleet admits its limit, what C admitted alone included: {fleet}"
    );
    assert!(others >= 10, "A and B get what is left, not less: {others}");
}

/// A server that speaks RESP but answers `+OK` to every command, the
/// lease script included: garbage, never tokens.
async fn garbage_redis() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    // One answer per command (an array header at a line start).
                    let data = &buf[..n];
                    let commands = usize::from(data.first() == Some(&b'*'))
                        + data
                            .windows(3)
                            .filter(|w| w[0] == b'\n' && w[1] == b'*' && w[2].is_ascii_digit())
                            .count();
                    let reply = b"+OK\r\n".repeat(commands.max(1));
                    if conn.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_answering_garbage_is_a_failing_redis() {
    let port = garbage_redis().await;
    // An hour's period: the local share does not refill during the test.
    let cfg = config("garbage")
        .rate(30, Duration::from_secs(3600))
        .batch(3)
        .burst(30)
        .instances(3)
        .build()
        .unwrap();
    let (mut svc, handle) = instance(
        &format!("redis://127.0.0.1:{port}/"),
        cfg,
        KeyBy::Header(tenant()),
    );
    let start = Instant::now();
    let admitted = burst(&mut svc, b"t", Priority::Critical, 30).await;
    // A garbage answer fails at once: nobody waits out the Redis timeout.
    assert!(start.elapsed() < PATIENT, "{:?}", start.elapsed());
    let deadline = Instant::now() + Duration::from_secs(30);
    while handle.mode() != FleetMode::Local {
        assert!(
            Instant::now() < deadline,
            "garbage switches to the fallback"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Only the local share (burst 30 / 3 = 10), never tokens from garbage.
    assert_eq!(admitted, 10);
    assert_eq!(handle.snapshot().tokens_leased, 0);
}

/// A hung Redis (frozen: connections open, no answers): no request waits
/// past the bound, the fallback admits the local share, and the shared
/// limit returns when Redis answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_never_holds_a_request_past_the_bound() {
    let _timed = TIMED.lock().await;
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    const LIMIT: u64 = 300;
    let bound = Duration::from_millis(250);
    let cfg = config("hung")
        .rate(LIMIT, Duration::from_secs(1))
        .batch(10)
        .instances(3)
        .redis_timeout(bound)
        .probe_every(Duration::from_millis(200))
        .build()
        .unwrap();
    let (svc, handle) = instance(redis.url(), cfg, KeyBy::Header(tenant()));
    let phase = |secs: f64| {
        let svc = svc.clone();
        async move {
            let c = Arc::new(Counts::default());
            let start = Instant::now();
            drive(
                svc,
                2 * LIMIT,
                start,
                start + Duration::from_secs_f64(secs),
                c.clone(),
            )
            .await;
            c
        }
    };
    phase(0.5).await;
    assert_eq!(handle.mode(), FleetMode::Shared);
    redis.pause();
    let hung = phase(2.0).await;
    let max_wait = Duration::from_micros(hung.max_latency_us.load(Ordering::Relaxed));
    let admitted = hung.in_window.load(Ordering::Relaxed);
    println!("redis hung: admitted {admitted} in 2 s; longest call {max_wait:?} (bound {bound:?})");
    assert_eq!(handle.mode(), FleetMode::Local);
    assert!(
        max_wait >= bound / 2,
        "some request did wait for the hung lease"
    );
    // Without the bound a request would wait for the whole hang; the
    // margin is for a loaded machine.
    assert!(
        max_wait < bound + Duration::from_secs(1),
        "no request waits on redis past the bound: {max_wait:?}"
    );
    // The local share (100/s, a burst of 10) and the tokens held.
    assert!(
        (100..=220).contains(&admitted),
        "the local share: {admitted}"
    );
    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(30);
    while handle.mode() != FleetMode::Shared {
        assert!(Instant::now() < deadline, "the shared limit returns");
        let _ = phase(0.1).await;
    }
}
