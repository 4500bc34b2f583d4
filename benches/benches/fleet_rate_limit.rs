//! Per-call cost of an admitted request through the fleet-wide rate limit
//! (`resilience_bounded_queue::fleet`, tokens leased from a real Redis in
//! batches) beside `governor`'s direct limiter, tower's `RateLimit` and our
//! local `rate::RateLimitLayer`; allocations per call; Redis commands per
//! 1,000 requests. Starts `redis-server` on a free loopback port, or skips
//! the fleet rows (with a message) when it is not installed.

use std::borrow::Cow;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use governor::{Quota, RateLimiter};
use http::{Request, Response};
use resilience_benches::{CountingAlloc, allocations_per_call};
use resilience_bounded_queue::fleet::{FleetRateLimitConfig, FleetRateLimitLayer, MakeKey};
use resilience_bounded_queue::rate::{RateLimitConfig, RateLimitLayer};
use resilience_core::BoxError;
use resilience_test_support::RedisServer;
use tower::{Layer, Service, service_fn};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

type Noop =
    tower::util::ServiceFn<fn(Request<()>) -> std::future::Ready<Result<Response<()>, BoxError>>>;

fn noop() -> Noop {
    fn answer(_: Request<()>) -> std::future::Ready<Result<Response<()>, BoxError>> {
        std::future::ready(Ok(Response::new(())))
    }
    service_fn(answer as fn(_) -> _)
}

/// 32 tenants in turn (no allocation): Redis allows at most a million
/// tokens per second per key, less than this loop calls.
#[derive(Debug, Default)]
struct Tenants(AtomicUsize);

const TENANTS: [&str; 32] = [
    "t00", "t01", "t02", "t03", "t04", "t05", "t06", "t07", "t08", "t09", "t10", "t11", "t12",
    "t13", "t14", "t15", "t16", "t17", "t18", "t19", "t20", "t21", "t22", "t23", "t24", "t25",
    "t26", "t27", "t28", "t29", "t30", "t31",
];

impl<B> MakeKey<Request<B>> for Tenants {
    fn make_key<'a>(&'a self, _: &'a Request<B>) -> Option<Cow<'a, [u8]>> {
        let i = self.0.fetch_add(1, Ordering::Relaxed) % TENANTS.len();
        Some(Cow::Borrowed(TENANTS[i].as_bytes()))
    }
}

/// `poll_ready` then `call`; a request that must wait for a lease is
/// driven on `rt`. `true` when admitted.
#[inline]
fn call<S>(svc: &mut S, rt: &tokio::runtime::Runtime) -> bool
where
    S: Service<Request<()>, Error = BoxError>,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("not ready"),
    }
    let mut fut = pin!(svc.call(Request::new(())));
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(r) => r.is_ok(),
        Poll::Pending => rt.block_on(fut).is_ok(),
    }
}

fn bench(c: &mut Criterion) {
    // One worker for the lease tasks; this thread polls the services.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let redis = rt.block_on(RedisServer::start());

    let mut baseline = noop();
    let governor = RateLimiter::direct(Quota::per_second(NonZeroU32::new(u32::MAX).unwrap()));
    let mut tower_rate =
        tower::limit::RateLimitLayer::new(u64::MAX / 2, Duration::from_secs(1)).layer(noop());
    let mut local = RateLimitLayer::new(
        RateLimitConfig::builder()
            .rate(1_000_000_000, Duration::from_secs(1))
            .burst(1_000_000)
            .build()
            .unwrap(),
    )
    .layer(noop());
    let fleet = |batch: u64| {
        let url = redis.as_ref().map(|r| r.url().to_owned())?;
        let config = FleetRateLimitConfig::builder()
            .name(format!("bench-{batch}"))
            .rate(1_000_000, Duration::from_secs(1))
            .batch(batch)
            .burst(1_000_000)
            .redis_timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let layer = FleetRateLimitLayer::new(config, redis::Client::open(url).unwrap())
            .with_key(Tenants::default());
        Some((layer.handle(), layer.layer(noop())))
    };
    let mut fleet_1000 = fleet(1000);

    let mut g = c.benchmark_group("fleet_rate_limit/admitted");
    g.bench_function("baseline", |b| {
        b.iter(|| black_box(call(&mut baseline, &rt)))
    });
    g.bench_function("governor_direct", |b| {
        b.iter(|| {
            black_box(governor.check().is_ok() && call(&mut baseline, &rt));
        })
    });
    g.bench_function("tower_rate_limit", |b| {
        b.iter(|| black_box(call(&mut tower_rate, &rt)))
    });
    g.bench_function("local_rate_limit", |b| {
        b.iter(|| black_box(call(&mut local, &rt)))
    });
    if let Some((_, svc)) = fleet_1000.as_mut() {
        g.bench_function("fleet_redis_batch_1000", |b| {
            b.iter(|| black_box(call(svc, &rt)))
        });
    }
    g.finish();

    for (name, n) in [
        (
            "baseline",
            allocations_per_call(10_000, || assert!(call(&mut baseline, &rt))),
        ),
        (
            "local_rate_limit",
            allocations_per_call(10_000, || assert!(call(&mut local, &rt))),
        ),
    ] {
        println!("fleet_rate_limit/{name}: {n:.2} allocations per call");
    }
    let Some(_) = redis else {
        eprintln!("SKIPPED fleet rows: redis-server not installed");
        return;
    };
    // Allocations and Redis commands, measured over 100,000 calls each
    // (the waits for a lease and the lease tasks included).
    for batch in [20, 100, 1000] {
        let (handle, mut svc) = fleet(batch).unwrap();
        for _ in 0..10_000 {
            call(&mut svc, &rt); // warm: every tenant has a lease
        }
        let before = handle.snapshot();
        let mut admitted = 0u64;
        let allocs = allocations_per_call(100_000, || admitted += u64::from(call(&mut svc, &rt)));
        let after = handle.snapshot();
        let commands = after.redis_commands - before.redis_commands;
        println!(
            "fleet_rate_limit/fleet_redis_batch_{batch}: {allocs:.2} allocations per call, \
             {:.1} redis commands per 1,000 requests, {admitted} of 100000 admitted",
            commands as f64 * 1000.0 / 100_000.0
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
