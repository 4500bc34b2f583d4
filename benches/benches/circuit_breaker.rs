//! Per-call cost of `resilience_circuit_breaker::CircuitBreakerLayer` beside
//! recloser 1.4 (`AsyncRecloser`), failsafe 1.3 and tower-resilience 0.13, over
//! a no-op service that answers at once: closed state on 1 thread and on 2
//! threads sharing one breaker, the open-state rejection path, and the count
//! window against the time window. Also counts heap allocations per call.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use futures::FutureExt;
use http::{Request, Response};
use resilience_benches::{CountingAlloc, allocations_per_call, two_threads};
use resilience_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer, CircuitState};
use resilience_core::BoxError;
use tower::{Layer, Service, service_fn};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Makes the no-op service fail (to open the peers' breakers).
static FAIL: AtomicBool = AtomicBool::new(false);

type Noop =
    tower::util::ServiceFn<fn(Request<()>) -> std::future::Ready<Result<Response<()>, BoxError>>>;

fn noop() -> Noop {
    fn answer(_: Request<()>) -> std::future::Ready<Result<Response<()>, BoxError>> {
        std::future::ready(if FAIL.load(Ordering::Relaxed) {
            Err("down".into())
        } else {
            Ok(Response::new(()))
        })
    }
    service_fn(answer as fn(_) -> _)
}

/// `poll_ready` then `call`, answered at once; `true` when it succeeded.
#[inline]
fn call<S: Service<Request<()>>>(svc: &mut S) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("not ready"),
    }
    svc.call(Request::new(()))
        .now_or_never()
        .expect("answers at once")
        .is_ok()
}

/// Like [`call`], but waits when the service is not ready at once
/// (tower-resilience's lock can be contended on 2 threads).
fn call_blocking<S: Service<Request<()>>>(svc: &mut S) -> bool {
    futures::executor::block_on(async {
        std::future::poll_fn(|cx| svc.poll_ready(cx))
            .await
            .map_err(|_| ())
            .expect("ready");
        svc.call(Request::new(())).await.is_ok()
    })
}

fn recloser_call(r: &recloser::AsyncRecloser, inner: &mut Noop) -> bool {
    r.call(inner.call(Request::new(())))
        .now_or_never()
        .expect("answers at once")
        .is_ok()
}

fn failsafe_call<F: failsafe::CircuitBreaker>(cb: &F, inner: &mut Noop) -> bool {
    cb.call(|| {
        inner
            .call(Request::new(()))
            .now_or_never()
            .expect("answers at once")
    })
    .is_ok()
}

fn ours(
    window: &str,
) -> resilience_circuit_breaker::CircuitBreaker<Noop, resilience_core::HttpOutcome> {
    let b = CircuitBreakerConfig::builder().name("bench");
    let b = match window {
        "count" => b.count_window(100),
        "time" => b.time_window(Duration::from_secs(60)),
        _ => b.consecutive_failures(5),
    };
    CircuitBreakerLayer::new(b.build().unwrap()).layer(noop())
}

/// recloser as a tower `Service` (how it would sit in a tower stack): the
/// same request pass-through as ours, for an apples-to-apples comparison.
#[derive(Clone)]
struct RecloserService {
    recloser: recloser::AsyncRecloser,
    inner: Noop,
}

impl Service<Request<()>> for RecloserService {
    type Response = Response<()>;
    type Error = recloser::Error<BoxError>;
    type Future =
        recloser::RecloserFuture<<Noop as Service<Request<()>>>::Future, recloser::AnyError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(recloser::Error::Inner)
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        self.recloser.call(self.inner.call(req))
    }
}

fn recloser() -> recloser::AsyncRecloser {
    recloser::AsyncRecloser::from(recloser::Recloser::custom().closed_len(100).build())
}

fn tower_resilience() -> impl Service<Request<()>> + Clone + Send {
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .sliding_window_size(100)
        .build()
        .unwrap()
        .layer(noop())
}

/// Runs `f` on 2 threads, `iters` times each; returns the wall time.
fn bench(c: &mut Criterion) {
    let rt = resilience_benches::runtime();
    let _guard = rt.enter();

    // === closed, 1 thread ===
    let mut baseline = noop();
    let mut ours_count = ours("count");
    let mut ours_time = ours("time");
    let mut ours_consecutive = ours("consecutive");
    let rec = recloser();
    let mut rec_inner = noop();
    let fs = failsafe::Config::new().build();
    let mut fs_inner = noop();
    let mut tr = tower_resilience();

    let mut g = c.benchmark_group("circuit_breaker/closed");
    g.bench_function("baseline", |b| b.iter(|| black_box(call(&mut baseline))));
    g.bench_function("ours", |b| b.iter(|| black_box(call(&mut ours_count))));
    g.bench_function("recloser", |b| {
        b.iter(|| black_box(recloser_call(&rec, &mut rec_inner)))
    });
    let mut rec_svc = RecloserService {
        recloser: rec.clone(),
        inner: noop(),
    };
    g.bench_function("recloser_as_service", |b| {
        b.iter(|| black_box(call(&mut rec_svc)))
    });
    g.bench_function("failsafe", |b| {
        b.iter(|| black_box(failsafe_call(&fs, &mut fs_inner)))
    });
    g.bench_function("tower_resilience", |b| b.iter(|| black_box(call(&mut tr))));
    g.bench_function("ours_time_window", |b| {
        b.iter(|| black_box(call(&mut ours_time)))
    });
    let mut ours_disabled = ours("count");
    ours_disabled.handle().disable();
    g.bench_function("ours_disabled", |b| {
        b.iter(|| black_box(call(&mut ours_disabled)))
    });
    g.finish();

    // === count vs time window (closed) ===
    // The smallest request and response (a `u64`), as in the issue's
    // reference figures: the no-op costs a few nanoseconds, so what is left
    // is the breakers' own work, not moving an `http::Response` around.
    let mut small_baseline = small::noop();
    let mut small_ours = small::ours();
    let mut small_inner = small::noop();
    let mut g = c.benchmark_group("circuit_breaker/closed_small");
    g.bench_function("baseline", |b| {
        b.iter(|| black_box(small::call(&mut small_baseline, 1)))
    });
    g.bench_function("ours", |b| {
        b.iter(|| black_box(small::call(&mut small_ours, 1)))
    });
    g.bench_function("recloser", |b| {
        b.iter(|| black_box(small::recloser_call(&rec, &mut small_inner, 1)))
    });
    g.finish();

    let mut g = c.benchmark_group("circuit_breaker/window");
    g.bench_function("count", |b| b.iter(|| black_box(call(&mut ours_count))));
    g.bench_function("time", |b| b.iter(|| black_box(call(&mut ours_time))));
    g.bench_function("consecutive", |b| {
        b.iter(|| black_box(call(&mut ours_consecutive)))
    });
    let mut ours_disabled = ours("count");
    ours_disabled.handle().disable();
    g.bench_function("disabled", |b| {
        b.iter(|| black_box(call(&mut ours_disabled)))
    });
    g.finish();

    // === closed, 2 threads sharing one breaker ===
    let mut g = c.benchmark_group("circuit_breaker/closed_2_threads");
    g.bench_function("baseline", |b| {
        b.iter_custom(|iters| two_threads(iters, noop(), noop(), call))
    });
    g.bench_function("ours", |b| {
        b.iter_custom(|iters| two_threads(iters, ours_count.clone(), ours_count.clone(), call))
    });
    g.bench_function("ours_time_window", |b| {
        b.iter_custom(|iters| two_threads(iters, ours_time.clone(), ours_time.clone(), call))
    });
    g.bench_function("recloser", |b| {
        b.iter_custom(|iters| {
            two_threads(
                iters,
                (rec.clone(), noop()),
                (rec.clone(), noop()),
                |(r, inner)| recloser_call(r, inner),
            )
        })
    });
    g.bench_function("recloser_as_service", |b| {
        b.iter_custom(|iters| two_threads(iters, rec_svc.clone(), rec_svc.clone(), call))
    });
    g.bench_function("failsafe", |b| {
        b.iter_custom(|iters| {
            two_threads(
                iters,
                (fs.clone(), noop()),
                (fs.clone(), noop()),
                |(cb, inner)| failsafe_call(cb, inner),
            )
        })
    });
    g.bench_function("tower_resilience", |b| {
        b.iter_custom(|iters| two_threads(iters, tr.clone(), tr.clone(), call_blocking))
    });
    g.finish();

    // === allocations per call, closed ===
    let allocs = [
        (
            "baseline",
            allocations_per_call(10_000, || assert!(call(&mut baseline))),
        ),
        (
            "ours (count window)",
            allocations_per_call(10_000, || assert!(call(&mut ours_count))),
        ),
        (
            "ours (time window)",
            allocations_per_call(10_000, || assert!(call(&mut ours_time))),
        ),
        (
            "recloser",
            allocations_per_call(10_000, || assert!(recloser_call(&rec, &mut rec_inner))),
        ),
        (
            "failsafe",
            allocations_per_call(10_000, || assert!(failsafe_call(&fs, &mut fs_inner))),
        ),
        (
            "tower_resilience",
            allocations_per_call(10_000, || assert!(call(&mut tr))),
        ),
    ];
    for (name, n) in allocs {
        println!("circuit_breaker/closed/{name}: {n:.2} allocations per call");
    }
    assert_eq!(allocs[1].1, 0.0, "our closed path allocates");
    assert_eq!(allocs[2].1, 0.0, "our closed path allocates");

    // === open: the rejection path ===
    let open_layer = CircuitBreakerLayer::new(
        CircuitBreakerConfig::builder()
            .open_for(Duration::from_secs(3600))
            .max_open_for(Duration::from_secs(3600))
            .build()
            .unwrap(),
    );
    open_layer.handle().trip();
    assert_eq!(open_layer.handle().state(), CircuitState::Open);
    let mut ours_open = open_layer.layer(noop());

    FAIL.store(true, Ordering::Relaxed);
    let rec_open = recloser::AsyncRecloser::from(
        recloser::Recloser::custom()
            .closed_len(1)
            .open_wait(Duration::from_secs(3600))
            .build(),
    );
    let fs_open = failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            1,
            failsafe::backoff::constant(Duration::from_secs(3600)),
        ))
        .build();
    let mut tr_open = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .sliding_window_size(1)
        .minimum_number_of_calls(1)
        .wait_duration_in_open(Duration::from_secs(3600))
        .build()
        .unwrap()
        .layer(noop());
    for _ in 0..3 {
        recloser_call(&rec_open, &mut rec_inner);
        failsafe_call(&fs_open, &mut fs_inner);
        call(&mut tr_open);
    }
    FAIL.store(false, Ordering::Relaxed);
    assert!(!recloser_call(&rec_open, &mut rec_inner), "recloser open");
    assert!(!failsafe_call(&fs_open, &mut fs_inner), "failsafe open");
    assert!(!call(&mut tr_open), "tower-resilience open");

    let mut g = c.benchmark_group("circuit_breaker/open");
    g.bench_function("ours", |b| b.iter(|| black_box(call(&mut ours_open))));
    g.bench_function("recloser", |b| {
        b.iter(|| black_box(recloser_call(&rec_open, &mut rec_inner)))
    });
    g.bench_function("failsafe", |b| {
        b.iter(|| black_box(failsafe_call(&fs_open, &mut fs_inner)))
    });
    g.bench_function("tower_resilience", |b| {
        b.iter(|| black_box(call(&mut tr_open)))
    });
    g.finish();
}

/// `CB_PROFILE=<variant> CB_CALLS=<n>`: only loop over one variant, for
/// `perf stat` or `valgrind --tool=callgrind` (instructions per call);
/// `CB_PROFILE=2:<variant>` runs it on 2 threads sharing one breaker;
/// `ours_open` is the rejection path of a tripped breaker.
fn profile(variant: &str) {
    let rt = resilience_benches::runtime();
    let _guard = rt.enter();
    let n: u64 = resilience_benches::profile_calls("CB_CALLS", 10_000_000);
    let mut baseline = noop();
    let mut ours_count = ours("count");
    let mut ours_time = ours("time");
    let rec = recloser();
    let mut inner = noop();
    let mut rec_svc = RecloserService {
        recloser: rec.clone(),
        inner: noop(),
    };
    let open_layer = CircuitBreakerLayer::new(
        CircuitBreakerConfig::builder()
            .open_for(Duration::from_secs(3600))
            .max_open_for(Duration::from_secs(3600))
            .build()
            .unwrap(),
    );
    open_layer.handle().trip();
    let mut ours_open = open_layer.layer(noop());
    if let Some(variant) = variant.strip_prefix("2:") {
        // 2 threads sharing one breaker, each with its own clone
        let took = match variant {
            "baseline" => two_threads(n, noop(), noop(), call),
            "ours" => two_threads(n, ours_count.clone(), ours_count.clone(), call),
            "ours_time" => two_threads(n, ours_time.clone(), ours_time.clone(), call),
            "recloser" => two_threads(
                n,
                (rec.clone(), noop()),
                (rec.clone(), noop()),
                |(r, inner)| recloser_call(r, inner),
            ),
            "recloser_as_service" => two_threads(n, rec_svc.clone(), rec_svc.clone(), call),
            other => panic!("unknown variant {other}"),
        };
        black_box(took);
        return;
    }
    if let Some(variant) = variant.strip_prefix("small:") {
        let mut baseline = small::noop();
        let mut ours = small::ours();
        let mut inner = small::noop();
        for i in 0..n {
            black_box(match variant {
                "baseline" => small::call(&mut baseline, i),
                "ours" => small::call(&mut ours, i),
                "recloser" => small::recloser_call(&rec, &mut inner, i),
                other => panic!("unknown variant {other}"),
            });
        }
        return;
    }
    for _ in 0..n {
        black_box(match variant {
            "baseline" => call(&mut baseline),
            "ours" => call(&mut ours_count),
            "ours_time" => call(&mut ours_time),
            "ours_open" => call(&mut ours_open),
            "recloser" => recloser_call(&rec, &mut inner),
            "recloser_as_service" => call(&mut rec_svc),
            other => panic!("unknown variant {other}"),
        });
    }
}

/// The same comparison with the smallest request and response (a `u64`):
/// a no-op costs a few nanoseconds, as in the reference figures,
/// instead of building and dropping an `http::Request` and `Response`.
mod small {
    use super::*;

    pub(super) type Noop =
        tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<u64, BoxError>>>;

    pub(super) fn noop() -> Noop {
        fn answer(x: u64) -> std::future::Ready<Result<u64, BoxError>> {
            std::future::ready(if FAIL.load(Ordering::Relaxed) {
                Err("down".into())
            } else {
                Ok(x)
            })
        }
        service_fn(answer as fn(_) -> _)
    }

    pub(super) fn ours() -> impl Service<u64, Response = u64> {
        let classify =
            resilience_core::classify::classify_fn(|r: Result<&u64, &BoxError>| match r {
                Ok(_) => resilience_core::classify::Outcome::Success,
                Err(_) => resilience_core::classify::Outcome::Failure,
            });
        CircuitBreakerLayer::new(
            CircuitBreakerConfig::builder()
                .name("bench")
                .count_window(100)
                .build()
                .unwrap(),
        )
        .with_classifier(classify)
        .layer(noop())
    }

    #[inline]
    pub(super) fn call<S: Service<u64, Response = u64>>(svc: &mut S, x: u64) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match svc.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => {}
            _ => panic!("not ready"),
        }
        svc.call(x).now_or_never().expect("answers at once").is_ok()
    }

    pub(super) fn recloser_call(r: &recloser::AsyncRecloser, inner: &mut Noop, x: u64) -> bool {
        r.call(inner.call(x))
            .now_or_never()
            .expect("answers at once")
            .is_ok()
    }
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(variant) = std::env::var("CB_PROFILE") {
        profile(&variant);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
