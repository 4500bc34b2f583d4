//! Per-call cost of `resilience_circuit_breaker::throttle::ThrottleLayer` over
//! a no-op service that answers at once: the pass-through case (fixed mode
//! at 100%, and adaptive mode with a healthy backend) beside the circuit
//! breaker, and the rejection path. Also counts heap allocations per call.

use std::hint::black_box;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group};
use futures::FutureExt;
use http::{Request, Response};
use resilience_benches::{CountingAlloc, allocations_per_call};
use resilience_circuit_breaker::throttle::{ThrottleConfig, ThrottleLayer};
use resilience_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use resilience_core::{BoxError, Priority};
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

/// A backend that answers every call with a 503 (the adaptive throttle's
/// window fills with requests and no accepts).
fn unavailable() -> Noop {
    fn answer(_: Request<()>) -> std::future::Ready<Result<Response<()>, BoxError>> {
        let mut rsp = Response::new(());
        *rsp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        std::future::ready(Ok(rsp))
    }
    service_fn(answer as fn(_) -> _)
}

fn request(priority: Option<Priority>) -> Request<()> {
    let mut req = Request::new(());
    if let Some(p) = priority {
        req.extensions_mut().insert(p);
    }
    req
}

/// `poll_ready` then `call`, answered at once; `true` when it succeeded.
#[inline]
fn call<S: Service<Request<()>>>(svc: &mut S, priority: Option<Priority>) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("not ready"),
    }
    svc.call(request(priority))
        .now_or_never()
        .expect("answers at once")
        .is_ok()
}

fn bench(c: &mut Criterion) {
    let rt = resilience_benches::runtime();
    let _guard = rt.enter();

    let mut baseline = noop();
    let mut breaker = CircuitBreakerLayer::new(CircuitBreakerConfig::default()).layer(noop());
    let mut fixed = ThrottleLayer::new(ThrottleConfig::default()).layer(noop());
    let mut adaptive =
        ThrottleLayer::new(ThrottleConfig::builder().adaptive().build().unwrap()).layer(noop());
    let mut rejecting = ThrottleLayer::new(
        ThrottleConfig::builder()
            .allow_percent(0.0)
            .build()
            .unwrap(),
    )
    .layer(noop());
    let mut failing = ThrottleLayer::new(ThrottleConfig::builder().adaptive().build().unwrap())
        .layer(unavailable());
    let sheddable = Some(Priority::Sheddable);

    let mut g = c.benchmark_group("throttle/pass_through");
    g.bench_function("baseline", |b| {
        b.iter(|| black_box(call(&mut baseline, None)))
    });
    g.bench_function("baseline_with_priority", |b| {
        b.iter(|| black_box(call(&mut baseline, sheddable)))
    });
    g.bench_function("circuit_breaker", |b| {
        b.iter(|| black_box(call(&mut breaker, None)))
    });
    g.bench_function("fixed_critical", |b| {
        b.iter(|| black_box(call(&mut fixed, None)))
    });
    g.bench_function("fixed_sheddable_100pct", |b| {
        b.iter(|| black_box(call(&mut fixed, sheddable)))
    });
    g.bench_function("adaptive_healthy", |b| {
        b.iter(|| black_box(call(&mut adaptive, sheddable)))
    });
    g.finish();

    let mut g = c.benchmark_group("throttle/rejected");
    g.bench_function("fixed_0pct", |b| {
        b.iter(|| black_box(call(&mut rejecting, sheddable)))
    });
    // The backend fails every call: the adaptive probability is at its
    // maximum (0.9), so most calls are refused and the rest reach a 503.
    g.bench_function("adaptive_failing", |b| {
        b.iter(|| black_box(call(&mut failing, sheddable)))
    });
    g.finish();

    for (name, n) in [
        (
            "baseline",
            allocations_per_call(10_000, || assert!(call(&mut baseline, sheddable))),
        ),
        (
            "fixed",
            allocations_per_call(10_000, || assert!(call(&mut fixed, sheddable))),
        ),
        (
            "adaptive",
            allocations_per_call(10_000, || assert!(call(&mut adaptive, sheddable))),
        ),
    ] {
        println!("throttle/pass_through/{name}: {n:.2} allocations per call");
    }
}

/// `THROTTLE_PROFILE=<variant> THROTTLE_CALLS=<n>`: only loop over one
/// variant (`baseline_with_priority`, `fixed`, `adaptive`,
/// `adaptive_failing`), for `perf stat`
/// or `valgrind --tool=callgrind` (instructions per call).
fn profile(variant: &str) {
    let rt = resilience_benches::runtime();
    let _guard = rt.enter();
    let n: u64 = resilience_benches::profile_calls("THROTTLE_CALLS", 10_000_000);
    let sheddable = Some(Priority::Sheddable);
    let mut svc: Box<dyn FnMut() -> bool> = match variant {
        "baseline_with_priority" => {
            let mut s = noop();
            Box::new(move || call(&mut s, sheddable))
        }
        "fixed" => {
            let mut s = ThrottleLayer::new(ThrottleConfig::default()).layer(noop());
            Box::new(move || call(&mut s, sheddable))
        }
        "adaptive" => {
            let mut s = ThrottleLayer::new(ThrottleConfig::builder().adaptive().build().unwrap())
                .layer(noop());
            Box::new(move || call(&mut s, sheddable))
        }
        "adaptive_failing" => {
            let mut s = ThrottleLayer::new(ThrottleConfig::builder().adaptive().build().unwrap())
                .layer(unavailable());
            Box::new(move || call(&mut s, sheddable))
        }
        other => panic!("unknown variant {other}"),
    };
    for _ in 0..n {
        black_box(svc());
    }
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(variant) = std::env::var("THROTTLE_PROFILE") {
        profile(&variant);
        return;
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
