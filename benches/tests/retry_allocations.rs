//! Allocations of `resilience_retry` on its pass-through path, counted by
//! a global allocator: a request without a body to buffer (and without
//! headers or extensions to copy) whose first try succeeds allocates
//! nothing in the retry layer, above a no-op service or above the round
//! robin that avoids the endpoints tried; a second try makes the record.
//!
//! One test function: the count is process-wide, so nothing else runs
//! while it counts.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use resilience_benches::{CountingAlloc, allocations};
use resilience_core::{AttemptFromExtensions, BoxError};
use resilience_discovery::{Endpoint, RoundRobinBuilder};
use resilience_retry::{HedgeConfig, HedgeLayer, RetryBody, RetryConfig, RetryLayer};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

type Body = RetryBody<Empty<Bytes>>;

/// `poll_ready`, `call` and poll to the end, by hand (no runtime work that
/// allocates); the answer's status.
fn call<S: Service<R, Response = Response<u16>>, R>(svc: &mut S, req: R) -> u16
where
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("not ready"),
    }
    let mut fut = std::pin::pin!(svc.call(req));
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return *out.expect("answered").body();
        }
    }
}

/// The fewest allocations per call of `f` over 3 runs of 1 000 calls
/// (the count is process-wide; the fewest is this code's own).
fn per_call(mut f: impl FnMut()) -> f64 {
    f(); // warm: lazy statics, thread-locals
    (0..3)
        .map(|_| {
            let before = allocations();
            for _ in 0..1_000 {
                f();
            }
            (allocations() - before) as f64 / 1_000.0
        })
        .fold(f64::INFINITY, f64::min)
}

fn get() -> Request<Empty<Bytes>> {
    Request::new(Empty::new())
}

fn retry() -> RetryLayer {
    RetryLayer::new(RetryConfig::builder().name("allocs").build().unwrap())
}

/// The round robin over three endpoints that answer at once, avoiding the
/// endpoints a request tried.
fn balancer<B: 'static>()
-> impl Service<Request<B>, Response = Response<u16>, Error = BoxError> + Clone {
    RoundRobinBuilder::new()
        .avoid_tried(AttemptFromExtensions)
        .build_with_endpoints(
            (1..=3).map(|p| Endpoint::new(SocketAddr::from(([127, 0, 0, 1], p)))),
            |_: &Endpoint| {
                service_fn(|_: Request<B>| {
                    std::future::ready(Ok::<_, BoxError>(Response::new(200)))
                })
            },
        )
}

#[test]
fn a_bodiless_request_passing_through_allocates_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();

    // Over a no-op service.
    let noop =
        service_fn(|_: Request<Body>| std::future::ready(Ok::<_, Infallible>(Response::new(200))));
    let mut svc = retry().layer(noop);
    assert_eq!(per_call(|| assert_eq!(call(&mut svc, get()), 200)), 0.0);

    // Over the round robin that avoids the endpoints tried: the first try
    // carries no record; the balancer reports its pick to a thread-local
    // slot. Compared with the balancer alone.
    let mut alone = balancer::<Empty<Bytes>>();
    let mut ours = retry().layer(balancer::<Body>());
    let base = per_call(|| assert_eq!(call(&mut alone, get()), 200));

    let with_retry = per_call(|| assert_eq!(call(&mut ours, get()), 200));
    assert!(base.is_finite());
    assert_eq!(
        with_retry - base,
        0.0,
        "balancer alone {base}, with retry {with_retry}"
    );

    // A hedge layer whose primary answers at once: nothing either.
    let mut hedged = HedgeLayer::new(HedgeConfig::builder().name("allocs").build().unwrap()).layer(
        service_fn(|_: Request<Body>| std::future::ready(Ok::<_, Infallible>(Response::new(200)))),
    );
    assert_eq!(per_call(|| assert_eq!(call(&mut hedged, get()), 200)), 0.0);

    // The count sees allocations: a request that is retried makes its
    // record (and a retry's extension map) when the second try is made.
    // (Every tenth request fails at first with `Retry-After: 0`: retried
    // at once, within the budget.)
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let flaky = service_fn(move |_: Request<Body>| {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let status = if n % 20 == 0 { 503 } else { 200 };
        std::future::ready(Ok::<_, Infallible>(
            Response::builder()
                .status(status)
                .header("retry-after", "0")
                .body(status)
                .unwrap(),
        ))
    });
    let mut retried = retry().layer(flaky);
    let retried_allocs = per_call(|| assert_eq!(call(&mut retried, get()), 200));
    assert!(retried_allocs > 0.0, "{retried_allocs}");
}
