//! Per-call cost of `resilience_core::TimeoutLayer` beside
//! `tower::timeout::Timeout`, over a no-op service that answers at once.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use http::Request;
use resilience_benches::{CountingAlloc, allocations_per_call};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn call<S: Service<Request<()>>>(svc: &mut S) -> bool
where
    S::Error: std::fmt::Debug,
{
    let fut = svc.call(Request::new(()));
    fut.now_or_never().expect("answers at once").is_ok()
}

fn bench(c: &mut Criterion) {
    let rt = resilience_benches::runtime();
    let _guard = rt.enter();
    let noop = || service_fn(|_: Request<()>| async { Ok::<_, Infallible>(()) });
    let timeout = Duration::from_secs(1);

    let mut baseline = noop();
    let mut ours = resilience_core::TimeoutLayer::new(timeout).layer(noop());
    let mut tower = tower::timeout::TimeoutLayer::new(timeout).layer(noop());

    let mut g = c.benchmark_group("timeout");
    g.bench_function("baseline", |b| b.iter(|| black_box(call(&mut baseline))));
    g.bench_function("ours", |b| b.iter(|| black_box(call(&mut ours))));
    g.bench_function("tower", |b| b.iter(|| black_box(call(&mut tower))));
    g.finish();

    for (name, allocs) in [
        (
            "baseline",
            allocations_per_call(10_000, || assert!(call(&mut baseline))),
        ),
        (
            "ours",
            allocations_per_call(10_000, || assert!(call(&mut ours))),
        ),
        (
            "tower",
            allocations_per_call(10_000, || assert!(call(&mut tower))),
        ),
    ] {
        println!("timeout/{name}: {allocs:.2} allocations per call");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
