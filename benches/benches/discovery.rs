//! Endpoint pick overhead of `resilience_discovery::RoundRobin` over 3 and
//! 100 no-op endpoints, on 1 and 2 threads, beside a bare no-op service
//! (baseline) and tower's p2c `Balance` over the same endpoints.
//!
//! One call is `poll_ready` + `call` + the response, answered at once. On 2
//! threads, both threads share one `RoundRobin` (clones: one cursor, one
//! snapshot); tower's `Balance` is not `Clone` (sharing it takes a
//! `Buffer`), so each thread gets its own, which flatters p2c there.
//! Figures are ns per call per thread. `round_robin_passive_off` has
//! passive ejection off, so its response futures hold no handle to the
//! endpoint's health.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use futures::task::noop_waker_ref;
use resilience_core::BoxError;
use resilience_discovery::source::{StaticSource, discover};
use resilience_discovery::{Endpoint, RoundRobin, RoundRobinBuilder, RoundRobinConfig};
use tower::Service;
use tower::balance::p2c::Balance;
use tower::load::{CompleteOnResponse, PendingRequestsDiscover};
use tower::service_fn;

/// Requests and responses are `()`, so the figures are the pick alone.
type Noop = tower::util::ServiceFn<fn(()) -> std::future::Ready<Result<(), BoxError>>>;

fn noop() -> Noop {
    fn answer((): ()) -> std::future::Ready<Result<(), BoxError>> {
        std::future::ready(Ok(()))
    }
    service_fn(answer as fn(_) -> _)
}

fn endpoints(n: u16) -> Vec<Endpoint> {
    (0..n)
        .map(|i| Endpoint::new(SocketAddr::from(([10, 0, (i / 256) as u8, i as u8], 8080))))
        .collect()
}

/// `poll_ready` then `call`, answered at once; `true` when it succeeded.
#[inline]
fn call<S>(svc: &mut S) -> bool
where
    S: Service<()>,
{
    let mut cx = Context::from_waker(noop_waker_ref());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => return false,
    }
    svc.call(()).now_or_never().is_some_and(|r| r.is_ok())
}

/// Runs `iters` calls on each of `threads` threads, each with its own
/// service from `make`; the wall time of the slowest thread.
fn on_threads<S, F>(threads: usize, iters: u64, make: F) -> Duration
where
    S: Service<()> + Send + 'static,
    F: Fn() -> S,
{
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let mut svc = make();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                // Warm up (p2c discovers its endpoints on the first poll).
                for _ in 0..100 {
                    assert!(call(&mut svc));
                }
                barrier.wait();
                let start = std::time::SystemTime::now();
                for _ in 0..iters {
                    black_box(call(&mut svc));
                }
                start.elapsed().unwrap()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap()
}

fn p2c(n: u16) -> impl Service<(), Response = (), Error = BoxError> + Send {
    let d = discover(StaticSource::new(endpoints(n)), |_: &Endpoint| noop());
    Balance::new(PendingRequestsDiscover::new(
        d,
        CompleteOnResponse::default(),
    ))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("discovery");
    for threads in [1usize, 2] {
        g.bench_function(format!("baseline/threads={threads}"), |b| {
            b.iter_custom(|iters| on_threads(threads, iters, noop))
        });
        for n in [3u16, 100] {
            let rr = RoundRobin::new(endpoints(n), |_: &Endpoint| noop());
            g.bench_function(
                format!("round_robin/endpoints={n}/threads={threads}"),
                |b| b.iter_custom(|iters| on_threads(threads, iters, || rr.clone())),
            );
            let off = RoundRobinConfig::builder()
                .consecutive_failures(0)
                .build()
                .unwrap();
            let rr_off = RoundRobinBuilder::new()
                .config(off)
                .build_with_endpoints(endpoints(n), |_: &Endpoint| noop());
            g.bench_function(
                format!("round_robin_passive_off/endpoints={n}/threads={threads}"),
                |b| b.iter_custom(|iters| on_threads(threads, iters, || rr_off.clone())),
            );
            g.bench_function(format!("p2c/endpoints={n}/threads={threads}"), |b| {
                b.iter_custom(|iters| on_threads(threads, iters, || p2c(n)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
