//! Per-call cost of `resilience_core::chaos::ChaosLayer` over a no-op
//! service that answers at once: switched off (the pass-through path, one
//! relaxed load) and switched on with a fraction of 0 (the decision path:
//! fault load and one draw, then pass-through).

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use http::Request;
use resilience_benches::{CountingAlloc, allocations_per_call};
use resilience_core::chaos::{ChaosLayer, Fault};
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

    let mut baseline = noop();
    let mut off = ChaosLayer::new("bench-off").layer(noop());
    let on_layer = ChaosLayer::new("bench-on");
    on_layer
        .handle()
        .set(Fault::latency(Duration::from_secs(1)).fraction(0.0));
    let mut on = on_layer.layer(noop());

    let mut g = c.benchmark_group("chaos");
    g.bench_function("baseline", |b| b.iter(|| black_box(call(&mut baseline))));
    g.bench_function("off", |b| b.iter(|| black_box(call(&mut off))));
    g.bench_function("on_fraction_0", |b| b.iter(|| black_box(call(&mut on))));
    g.finish();

    for (name, allocs) in [
        (
            "baseline",
            allocations_per_call(10_000, || assert!(call(&mut baseline))),
        ),
        (
            "off",
            allocations_per_call(10_000, || assert!(call(&mut off))),
        ),
        (
            "on_fraction_0",
            allocations_per_call(10_000, || assert!(call(&mut on))),
        ),
    ] {
        println!("chaos/{name}: {allocs:.2} allocations per call");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
