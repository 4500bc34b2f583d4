//! Per-call cost of `resilience_bounded_queue::rate::RateLimitLayer` beside
//! tower's `RateLimit` and governor 0.10 (a direct, unkeyed limiter checked
//! before the inner call, as a tower `Service`), over a no-op service that
//! answers at once: the pass-through path (a rate far above the call rate),
//! on 1 thread and on 2 threads sharing one limiter, and the rate-limited
//! rejection path. Beside them, tower's `LoadShed` and `Buffer`
//! pass-through. Also counts heap allocations per call.
//!
//! `cargo bench -p resilience-benches --bench rate_limit`

use std::convert::Infallible;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use futures::future::Either;
use http::Request;
use resilience_benches::{CountingAlloc, allocations_per_call, two_threads};
use resilience_bounded_queue::rate::{RateLimitConfig, RateLimitLayer};
use resilience_core::BoxError;
use tower::{Layer, Service, ServiceExt, service_fn};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

type Noop = tower::util::ServiceFn<fn(Request<()>) -> std::future::Ready<Result<(), Infallible>>>;

fn noop() -> Noop {
    fn answer(_: Request<()>) -> std::future::Ready<Result<(), Infallible>> {
        std::future::ready(Ok(()))
    }
    service_fn(answer as fn(_) -> _)
}

/// `poll_ready` then `call`, answered at once; `true` when it succeeded,
/// `false` when refused (tower's `RateLimit` is never refused: it is not
/// ready instead, which this bench never reaches).
#[inline]
fn call<S: Service<Request<()>>>(svc: &mut S) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(_)) => return false,
        Poll::Pending => panic!("not ready"),
    }
    svc.call(Request::new(()))
        .now_or_never()
        .expect("answers at once")
        .is_ok()
}

type Governor = governor::DefaultDirectRateLimiter;

/// governor as a tower `Service`: one shared limiter, checked in `call`.
#[derive(Clone)]
struct GovernorService {
    limiter: Arc<Governor>,
    inner: Noop,
}

impl Service<Request<()>> for GovernorService {
    type Response = ();
    type Error = BoxError;
    type Future = Either<
        futures::future::MapErr<
            std::future::Ready<Result<(), Infallible>>,
            fn(Infallible) -> BoxError,
        >,
        std::future::Ready<Result<(), BoxError>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(|e| match e {})
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        use futures::TryFutureExt;
        match self.limiter.check() {
            Ok(()) => Either::Left(
                self.inner
                    .call(req)
                    .map_err((|e| match e {}) as fn(Infallible) -> BoxError),
            ),
            Err(_) => Either::Right(std::future::ready(Err("rate limited".into()))),
        }
    }
}

fn governor(quota: governor::Quota) -> GovernorService {
    GovernorService {
        limiter: Arc::new(governor::RateLimiter::direct(quota)),
        inner: noop(),
    }
}

/// Ours with a rate far above any call rate.
fn ours_open() -> impl Service<Request<()>> + Clone + Send {
    let config = RateLimitConfig::builder()
        .name("bench")
        .rate(1_000_000_000, Duration::from_secs(1))
        .burst(1_000_000)
        .build()
        .expect("valid rate limit");
    RateLimitLayer::new(config).layer(noop())
}

fn bench(c: &mut Criterion) {
    let rt = resilience_benches::runtime();
    let _guard = rt.enter();

    let mut baseline = noop();
    let mut ours = ours_open();
    let mut tower_rate =
        tower::limit::RateLimitLayer::new(u64::MAX / 2, Duration::from_secs(1)).layer(noop());
    let gov_open = governor(governor::Quota::per_second(NonZeroU32::MAX));
    let mut gov = gov_open.clone();
    let mut load_shed = tower::load_shed::LoadShedLayer::new().layer(noop());

    let mut g = c.benchmark_group("rate_limit/pass_through");
    g.bench_function("baseline", |b| b.iter(|| black_box(call(&mut baseline))));
    g.bench_function("ours", |b| b.iter(|| black_box(call(&mut ours))));
    g.bench_function("tower_rate_limit", |b| {
        b.iter(|| black_box(call(&mut tower_rate)))
    });
    g.bench_function("governor", |b| b.iter(|| black_box(call(&mut gov))));
    g.bench_function("tower_load_shed", |b| {
        b.iter(|| black_box(call(&mut load_shed)))
    });
    g.finish();

    // tower's `RateLimit` is not `Clone` (each clone would be its own
    // limit), so it has no shared 2-thread case.
    let mut g = c.benchmark_group("rate_limit/pass_through_2_threads");
    g.bench_function("baseline", |b| {
        b.iter_custom(|iters| two_threads(iters, noop(), noop(), call))
    });
    let shared = ours_open();
    g.bench_function("ours", |b| {
        b.iter_custom(|iters| two_threads(iters, shared.clone(), shared.clone(), call))
    });
    g.bench_function("governor", |b| {
        b.iter_custom(|iters| two_threads(iters, gov_open.clone(), gov_open.clone(), call))
    });
    g.finish();

    // The rejection path: one token an hour, spent.
    let spent = RateLimitConfig::builder()
        .name("spent")
        .rate(1, Duration::from_secs(3600))
        .burst(1)
        .build()
        .expect("valid rate limit");
    let mut ours_limited = RateLimitLayer::new(spent).layer(noop());
    while call(&mut ours_limited) {}
    let mut gov_limited = governor(governor::Quota::per_hour(NonZeroU32::MIN));
    while call(&mut gov_limited) {}
    let mut g = c.benchmark_group("rate_limit/rejected");
    g.bench_function("ours", |b| b.iter(|| black_box(!call(&mut ours_limited))));
    g.bench_function("governor", |b| {
        b.iter(|| black_box(!call(&mut gov_limited)))
    });
    g.finish();

    // tower's `Buffer`: every call goes through a channel to a worker task,
    // so the call has to run on the runtime; the baseline pays the same
    // `block_on`.
    let mut buffered = rt.block_on(async { tower::buffer::Buffer::new(noop(), 1024) });
    let mut g = c.benchmark_group("rate_limit/buffer");
    let mut block_baseline = noop();
    g.bench_function("baseline", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(
                    block_baseline
                        .ready()
                        .await
                        .unwrap()
                        .call(Request::new(()))
                        .await
                        .is_ok(),
                )
            })
        })
    });
    g.bench_function("tower_buffer", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(
                    buffered
                        .ready()
                        .await
                        .unwrap()
                        .call(Request::new(()))
                        .await
                        .is_ok(),
                )
            })
        })
    });
    g.finish();

    for (name, allocs) in [
        (
            "pass_through/baseline",
            allocations_per_call(10_000, || assert!(call(&mut baseline))),
        ),
        (
            "pass_through/ours",
            allocations_per_call(10_000, || assert!(call(&mut ours))),
        ),
        (
            "pass_through/tower_rate_limit",
            allocations_per_call(10_000, || assert!(call(&mut tower_rate))),
        ),
        (
            "pass_through/governor",
            allocations_per_call(10_000, || assert!(call(&mut gov))),
        ),
        (
            "pass_through/tower_load_shed",
            allocations_per_call(10_000, || assert!(call(&mut load_shed))),
        ),
        (
            "rejected/ours",
            allocations_per_call(10_000, || assert!(!call(&mut ours_limited))),
        ),
        (
            "rejected/governor",
            allocations_per_call(10_000, || assert!(!call(&mut gov_limited))),
        ),
        (
            "buffer/tower_buffer",
            allocations_per_call(10_000, || {
                assert!(rt.block_on(async {
                    buffered
                        .ready()
                        .await
                        .unwrap()
                        .call(Request::new(()))
                        .await
                        .is_ok()
                }))
            }),
        ),
    ] {
        println!("rate_limit/{name}: {allocs:.2} allocations per call");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
