//! Per-call cost of `resilience_retry` when no retry is needed, over a
//! no-op service that answers at once:
//!
//! - **Pass-through** (the first attempt succeeds): `RetryLayer` beside
//!   tower 0.5's `Retry` with a `TpsBudget` (the policy of tower's docs:
//!   clone the request for a possible retry, deposit on success) and
//!   tower-resilience 0.13's retry (defaults), each over the same no-op
//!   service and the same request: a `GET` without a body. Ours also with
//!   a `POST` (not retryable: passed through untouched).
//! - **Body**: a `PUT` with a 1 KiB body that the no-op service reads to
//!   the end: ours keeps a copy for replay; tower's policy clones the
//!   `Full` body (a reference count), as a user of tower would.
//! - **Hedge**, the primary wins: `HedgeLayer` over a service that answers
//!   at its first poll (no timer), and over one that is pending once
//!   first (the hedge delay's timer is armed, then the primary answers).
//!
//! `cargo bench -p resilience-benches --bench retry`; allocations per call
//! are printed after the run (`retry/<case>: N allocations per call`).

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use resilience_benches::{CountingAlloc, allocations_per_call};
use resilience_retry::{HedgeConfig, HedgeLayer, RetryBody, RetryConfig, RetryLayer};
use tower::retry::budget::{Budget as _, TpsBudget};
use tower::{Layer, Service, service_fn};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// 1 KiB of request body, shared (a reference count per request).
static KIB: [u8; 1024] = [b'x'; 1024];

/// A no-op service for any request: answers at once, with no header.
fn noop<R>() -> impl Service<
    R,
    Response = Response<()>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<()>, Infallible>>,
> + Clone {
    service_fn(|_: R| std::future::ready(Ok(Response::new(()))))
}

/// A no-op service that reads the request body to its end first (as a
/// client sending it would), then answers.
fn reading<B>() -> impl Service<
    Request<B>,
    Response = Response<()>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<()>, Infallible>>,
> + Clone
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    service_fn(|req: Request<B>| async move {
        let body = req.into_body().collect().await.expect("body reads");
        black_box(body);
        Ok(Response::new(()))
    })
}

/// A no-op service whose answer is pending once (it wakes itself), as a
/// call over a network is at its first poll.
fn pending_once<R>()
-> impl Service<R, Response = Response<()>, Error = Infallible, Future = PendingOnce> + Clone {
    service_fn(|_: R| PendingOnce { polled: false })
}

struct PendingOnce {
    polled: bool,
}

impl Future for PendingOnce {
    type Output = Result<Response<()>, Infallible>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.polled {
            return Poll::Ready(Ok(Response::new(())));
        }
        self.polled = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// `poll_ready`, `call`, then poll the answer to the end; `true` when it
/// succeeded.
#[inline]
fn call<S: Service<R>, R>(svc: &mut S, req: R) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("not ready"),
    }
    let mut fut = std::pin::pin!(svc.call(req));
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out.is_ok();
        }
    }
}

fn get() -> Request<Empty<Bytes>> {
    Request::new(Empty::new())
}

fn post() -> Request<Empty<Bytes>> {
    let mut req = Request::new(Empty::new());
    *req.method_mut() = http::Method::POST;
    req
}

fn put_kib() -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::from_static(&KIB)));
    *req.method_mut() = http::Method::PUT;
    req
}

/// A copy of a request, as a user of tower's `Retry` (or of
/// tower-resilience's, which takes `Clone` requests) writes it for
/// `http::Request`.
fn clone_request<B: Clone>(req: &Request<B>) -> Request<B> {
    let mut copy = Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    copy
}

/// An `http::Request` that tower-resilience's retry can clone.
struct Cloneable<B>(Request<B>);

impl<B: Clone> Clone for Cloneable<B> {
    fn clone(&self) -> Self {
        Self(clone_request(&self.0))
    }
}

/// tower's `Retry` policy as its docs write it with a `TpsBudget`: a
/// 502/503/504 or an error is retried while attempts and budget are left;
/// a success deposits into the budget.
#[derive(Clone)]
struct TowerPolicy {
    left: usize,
    budget: Arc<TpsBudget>,
}

impl<B: Clone, E> tower::retry::Policy<Request<B>, Response<()>, E> for TowerPolicy {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<B>,
        result: &mut Result<Response<()>, E>,
    ) -> Option<Self::Future> {
        let failed = match result {
            Ok(rsp) => matches!(rsp.status().as_u16(), 502..=504),
            Err(_) => true,
        };
        if !failed {
            self.budget.deposit();
            return None;
        }
        if self.left == 0 || !self.budget.withdraw() {
            return None;
        }
        self.left -= 1;
        Some(std::future::ready(()))
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        Some(clone_request(req))
    }
}

fn tower_policy() -> TowerPolicy {
    TowerPolicy {
        left: 2,
        budget: Arc::new(TpsBudget::default()),
    }
}

fn ours() -> RetryLayer {
    RetryLayer::new(RetryConfig::builder().name("bench").build().expect("valid"))
}

fn hedge() -> HedgeLayer {
    HedgeLayer::new(HedgeConfig::builder().name("bench").build().expect("valid"))
}

type TrResponse = Response<()>;

fn tower_resilience<B: Clone + Send + 'static>()
-> tower_resilience::retry::RetryLayer<Cloneable<B>, TrResponse, Infallible> {
    tower_resilience::retry::RetryLayer::<Cloneable<B>, TrResponse, Infallible>::builder().build()
}

/// Builds every case's service once and hands `f` each case's id
/// (`group/name`) with one call of it (`true`: it succeeded), in report
/// order. Checks afterwards that no hedge was sent: the primary always
/// won.
fn with_cases(mut f: impl FnMut(&'static str, &mut dyn FnMut() -> bool)) {
    // Pass-through: the first attempt succeeds.
    let mut baseline = noop::<Request<Empty<Bytes>>>();
    f("retry/baseline", &mut || call(&mut baseline, get()));
    let mut ours_get = ours().layer(noop::<Request<RetryBody<Empty<Bytes>>>>());
    f("retry/ours", &mut || call(&mut ours_get, get()));
    let mut ours_post = ours().layer(noop::<Request<RetryBody<Empty<Bytes>>>>());
    f("retry/ours_not_retryable", &mut || {
        call(&mut ours_post, post())
    });
    let mut tower = tower::retry::Retry::new(tower_policy(), noop::<Request<Empty<Bytes>>>());
    f("retry/tower_tps_budget", &mut || call(&mut tower, get()));
    let mut tr = tower_resilience().layer(noop::<Cloneable<Empty<Bytes>>>());
    f("retry/tower_resilience", &mut || {
        call(&mut tr, Cloneable(get()))
    });
    // A 1 KiB body, read to its end by the service.
    let mut body_baseline = reading::<Full<Bytes>>();
    f("retry/body_1kib/baseline", &mut || {
        call(&mut body_baseline, put_kib())
    });
    let mut body_ours = ours().layer(reading::<RetryBody<Full<Bytes>>>());
    f("retry/body_1kib/ours", &mut || {
        call(&mut body_ours, put_kib())
    });
    let mut body_tower = tower::retry::Retry::new(tower_policy(), reading::<Full<Bytes>>());
    f("retry/body_1kib/tower_tps_budget", &mut || {
        call(&mut body_tower, put_kib())
    });
    // Hedging, the primary wins.
    let mut hedge_baseline = pending_once::<Request<Empty<Bytes>>>();
    f("retry/hedge/baseline", &mut || {
        call(&mut hedge_baseline, get())
    });
    let mut hedge_ready = hedge().layer(noop::<Request<RetryBody<Empty<Bytes>>>>());
    f("retry/hedge/ours_answered_at_once", &mut || {
        call(&mut hedge_ready, get())
    });
    let pending_layer = hedge();
    let handle = pending_layer.handle();
    let mut hedge_pending = pending_layer.layer(pending_once::<Request<RetryBody<Empty<Bytes>>>>());
    f("retry/hedge/ours_pending_once", &mut || {
        call(&mut hedge_pending, get())
    });
    assert_eq!(handle.hedges_total(), 0, "the primary won every race");
}

fn bench(c: &mut Criterion) {
    let rt = resilience_benches::runtime();
    let _guard = rt.enter();
    with_cases(|id, run| {
        let (group, name) = id.rsplit_once('/').expect("group/name");
        c.benchmark_group(group)
            .bench_function(name, |b| b.iter(|| black_box(run())));
    });
    // With services built anew, after the timings.
    with_cases(|id, run| {
        let n = allocations_per_call(10_000, || assert!(run()));
        println!("{id}: {n:.2} allocations per call");
    });
}

/// Loops over one case only (`RETRY_PROFILE=<case> RETRY_CALLS=<n>`, the
/// case's id without `retry/`, e.g. `ours` or `hedge/ours_pending_once`;
/// for `perf stat` or callgrind).
fn profile(case: &str) {
    let rt = resilience_benches::runtime();
    let _guard = rt.enter();
    let n = resilience_benches::profile_calls("RETRY_CALLS", 1_000_000);
    let mut found = false;
    with_cases(|id, run| {
        if id.strip_prefix("retry/") == Some(case) {
            found = true;
            for _ in 0..n {
                black_box(run());
            }
        }
    });
    assert!(found, "unknown case {case}");
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(case) = std::env::var("RETRY_PROFILE") {
        profile(&case);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
