//! Cost of evaluating a flag (per call, no lock, no allocation for booleans)
//! and of `FlagsLayer` per request, beside a baseline.

use std::convert::Infallible;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use http::{HeaderValue, Request, Response};
use resilience_benches::{CountingAlloc, allocations_per_call};
use resilience_flags::{Flag, FlagContext, FlagSet, FlagStore, Flags, FlagsConfig, FlagsLayer};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn store() -> FlagStore {
    let mut set = FlagSet::builder()
        .flag(Flag::boolean("static-on"))
        .flag(Flag::boolean("rollout-20").rollout(20.0).overridable(true))
        .flag(Flag::boolean("allow-listed").rollout(0.0).allow(["user-7"]))
        .flag(Flag::variant("color", "blue", "green").rollout(50.0));
    // A realistic number of other flags in the set.
    for i in 0..50 {
        set = set.flag(Flag::boolean(format!("other-{i}")).rollout(10.0));
    }
    FlagStore::new(set.build().expect("valid flags"))
}

fn call<S>(svc: &mut S, req: Request<()>) -> bool
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    svc.call(req)
        .now_or_never()
        .expect("answers at once")
        .is_ok()
}

fn request(override_: bool) -> Request<()> {
    let mut req = Request::new(());
    req.headers_mut()
        .insert("x-user-id", HeaderValue::from_static("user-42"));
    if override_ {
        req.headers_mut()
            .insert("x-flag-rollout-20", HeaderValue::from_static("1"));
    }
    req
}

fn bench(c: &mut Criterion) {
    let store = store();
    let ctx = FlagContext::new().with_key("user-42");
    let flags = Flags::new(store.clone(), ctx.clone());

    let mut g = c.benchmark_group("flags_eval");
    // Baseline: reading the targeting key, what any hand-written check does.
    g.bench_function("baseline", |b| {
        b.iter(|| black_box(black_box(&ctx).key().is_some_and(|k| k.len() == 7)))
    });
    g.bench_function("bool/static", |b| {
        b.iter(|| black_box(store.is_active(black_box("static-on"), black_box(&ctx))))
    });
    g.bench_function("bool/rollout", |b| {
        b.iter(|| black_box(store.is_active(black_box("rollout-20"), black_box(&ctx))))
    });
    g.bench_function("bool/allow_list", |b| {
        b.iter(|| black_box(store.is_active(black_box("allow-listed"), black_box(&ctx))))
    });
    g.bench_function("bool/missing", |b| {
        b.iter(|| black_box(store.is_active(black_box("no-such-flag"), black_box(&ctx))))
    });
    g.bench_function("bool/handle_rollout", |b| {
        b.iter(|| black_box(black_box(&flags).is_active(black_box("rollout-20"))))
    });
    g.bench_function("parts/bucket", |b| {
        b.iter(|| {
            black_box(resilience_flags::hash::bucket(
                black_box("rollout-20"),
                black_box("user-42"),
            ))
        })
    });
    g.bench_function("parts/snapshot_get", |b| {
        b.iter(|| black_box(store.flag_set().get(black_box("rollout-20")).is_some()))
    });
    g.bench_function("variant/rollout", |b| {
        b.iter(|| black_box(store.evaluate_variant(black_box("color"), black_box(&ctx), "blue")))
    });
    g.finish();

    let noop = || service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
    let mut baseline = noop();
    let mut layered = FlagsLayer::new(store.clone()).layer(noop());
    let trusting = FlagsConfig::builder()
        .trust_overrides(|_| true)
        .build()
        .unwrap();
    let mut trusted = FlagsLayer::with_config(store.clone(), trusting).layer(noop());
    let mut g = c.benchmark_group("flags_layer");
    g.bench_function("baseline", |b| {
        b.iter(|| black_box(call(&mut baseline, request(false))))
    });
    g.bench_function("layer", |b| {
        b.iter(|| black_box(call(&mut layered, request(false))))
    });
    g.bench_function("layer/trusted_override", |b| {
        b.iter(|| black_box(call(&mut trusted, request(true))))
    });
    g.finish();

    for (name, allocs) in [
        (
            "eval/bool/static",
            allocations_per_call(100_000, || {
                black_box(store.is_active("static-on", &ctx));
            }),
        ),
        (
            "eval/bool/rollout",
            allocations_per_call(100_000, || {
                black_box(store.is_active("rollout-20", &ctx));
            }),
        ),
        (
            "eval/bool/missing",
            allocations_per_call(100_000, || {
                black_box(store.is_active("no-such-flag", &ctx));
            }),
        ),
        (
            "eval/bool/handle_rollout",
            allocations_per_call(100_000, || {
                black_box(flags.is_active("rollout-20"));
            }),
        ),
        (
            "eval/variant/rollout",
            allocations_per_call(100_000, || {
                black_box(store.evaluate_variant("color", &ctx, "blue"));
            }),
        ),
        (
            "layer/baseline",
            allocations_per_call(10_000, || {
                assert!(call(&mut baseline, request(false)));
            }),
        ),
        (
            "layer/layer",
            allocations_per_call(10_000, || {
                assert!(call(&mut layered, request(false)));
            }),
        ),
    ] {
        println!("flags/{name}: {allocs:.2} allocations per call");
    }
    assert_eq!(
        allocations_per_call(100_000, || {
            black_box(store.is_active("rollout-20", &ctx));
        }),
        0.0,
        "boolean evaluation must not allocate"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
