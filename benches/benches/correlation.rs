//! Per-request cost of the correlation layers beside tower-http's
//! `SetRequestIdLayer` + `PropagateRequestIdLayer` with `MakeRequestUuid`.

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use futures::FutureExt;
use http::{HeaderName, HeaderValue, Request, Response};
use resilience_benches::{CountingAlloc, allocations_per_call};
use resilience_correlation::{CorrelationLayer, PropagateContextLayer, RequestContext};
use tower::{Layer, Service, ServiceBuilder, service_fn};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const ID: HeaderValue = HeaderValue::from_static("0192f0c1-7d3e-7a4b-9c1d-2e3f4a5b6c7d");
const TRACEPARENT: HeaderValue =
    HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");

const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT_NAME: HeaderName = HeaderName::from_static("traceparent");

thread_local! {
    /// One read buffer holding both inbound values, as hyper hands them to a
    /// server: every header value is a reference-counted slice of it, so a
    /// layer that clones a value pays what it would pay behind hyper.
    static WIRE: Bytes = Bytes::copy_from_slice(
        [ID.as_bytes(), TRACEPARENT.as_bytes()].concat().as_slice(),
    );
}

/// What an inbound request carries.
#[derive(Clone, Copy)]
enum Inbound {
    /// No header of ours.
    Nothing,
    /// An id under this header name, no `traceparent`.
    Id(&'static str),
    /// An id under this header name and a `traceparent`.
    IdAndTrace(&'static str),
}

fn request(inbound: Inbound) -> Request<()> {
    let mut req = Request::new(());
    let (name, trace) = match inbound {
        Inbound::Nothing => return req,
        Inbound::Id(name) => (name, false),
        Inbound::IdAndTrace(name) => (name, true),
    };
    let name = if name == "x-request-id" {
        X_REQUEST_ID
    } else {
        X_CORRELATION_ID
    };
    let (id, traceparent) = WIRE.with(|wire| {
        let split = ID.len();
        (wire.slice(..split), wire.slice(split..))
    });
    let value = |b| HeaderValue::from_maybe_shared(b).expect("valid header value");
    req.headers_mut().insert(name, value(id));
    if trace {
        req.headers_mut()
            .insert(TRACEPARENT_NAME, value(traceparent));
    }
    req
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

fn bench(c: &mut Criterion) {
    let noop = || {
        service_fn(|_: Request<()>| async { Ok::<_, Infallible>(resilience_benches::response()) })
    };
    let mut baseline = noop();
    let mut ours = CorrelationLayer::new().layer(noop());
    let mut tower_http = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .service(noop());
    let mut client = PropagateContextLayer::new().layer(noop());
    let ctx = RequestContext::new_root();

    let mut g = c.benchmark_group("correlation");
    g.bench_function("baseline", |b| {
        b.iter(|| black_box(call(&mut baseline, request(Inbound::Nothing))))
    });
    g.bench_function("baseline_with_id", |b| {
        b.iter(|| {
            black_box(call(
                &mut baseline,
                request(Inbound::IdAndTrace("x-correlation-id")),
            ))
        })
    });
    g.bench_function("baseline_with_id_only", |b| {
        b.iter(|| {
            black_box(call(
                &mut baseline,
                request(Inbound::Id("x-correlation-id")),
            ))
        })
    });
    g.bench_function("server/ours/with_id_only", |b| {
        b.iter(|| black_box(call(&mut ours, request(Inbound::Id("x-correlation-id")))))
    });
    g.bench_function("server/tower_http/with_id_only", |b| {
        b.iter(|| black_box(call(&mut tower_http, request(Inbound::Id("x-request-id")))))
    });
    g.bench_function("server/ours/no_id", |b| {
        b.iter(|| black_box(call(&mut ours, request(Inbound::Nothing))))
    });
    g.bench_function("server/ours/with_id", |b| {
        b.iter(|| {
            black_box(call(
                &mut ours,
                request(Inbound::IdAndTrace("x-correlation-id")),
            ))
        })
    });
    g.bench_function("server/tower_http/no_id", |b| {
        b.iter(|| black_box(call(&mut tower_http, request(Inbound::Nothing))))
    });
    g.bench_function("server/tower_http/with_id", |b| {
        b.iter(|| {
            black_box(call(
                &mut tower_http,
                request(Inbound::IdAndTrace("x-request-id")),
            ))
        })
    });
    // Each request gets a fresh context from the server layer; the first
    // outgoing call formats its traceparent, later calls reuse it.
    let fresh = || {
        RequestContext::new(
            ctx.correlation_id().clone(),
            resilience_correlation::TraceContext::new_root(),
        )
    };
    g.bench_function("client/baseline_in_scope", |b| {
        b.iter(|| {
            let fut = fresh()
                .scope(async { call(&mut baseline, resilience_benches::outgoing_request()) });
            black_box(fut.now_or_never())
        })
    });
    g.bench_function("client/ours_in_scope", |b| {
        b.iter(|| {
            let fut =
                fresh().scope(async { call(&mut client, resilience_benches::outgoing_request()) });
            black_box(fut.now_or_never())
        })
    });
    g.bench_function("client/ours_in_scope_later_call", |b| {
        b.iter(|| {
            let fut = ctx
                .clone()
                .scope(async { call(&mut client, resilience_benches::outgoing_request()) });
            black_box(fut.now_or_never())
        })
    });
    g.finish();

    // The parts of the server path, to see where time goes.
    let mut g = c.benchmark_group("correlation_parts");
    g.bench_function("validate_id", |b| {
        b.iter(|| {
            black_box(resilience_correlation::CorrelationId::from_header(
                black_box(&ID),
            ))
        })
    });
    g.bench_function("parse_traceparent", |b| {
        b.iter(|| {
            black_box(resilience_correlation::TraceContext::child_of(black_box(
                TRACEPARENT.as_bytes(),
            )))
        })
    });
    g.bench_function("generate_id", |b| {
        b.iter(|| black_box(resilience_correlation::CorrelationId::generate()))
    });
    g.bench_function("new_root_trace", |b| {
        b.iter(|| black_box(resilience_correlation::TraceContext::new_root()))
    });
    g.finish();

    for (name, allocs) in [
        (
            "baseline",
            allocations_per_call(10_000, || {
                assert!(call(&mut baseline, request(Inbound::Nothing)))
            }),
        ),
        (
            "server/ours/no_id",
            allocations_per_call(10_000, || {
                assert!(call(&mut ours, request(Inbound::Nothing)))
            }),
        ),
        (
            "server/ours/with_id",
            allocations_per_call(10_000, || {
                assert!(call(
                    &mut ours,
                    request(Inbound::IdAndTrace("x-correlation-id"))
                ))
            }),
        ),
        (
            "server/tower_http/no_id",
            allocations_per_call(10_000, || {
                assert!(call(&mut tower_http, request(Inbound::Nothing)))
            }),
        ),
        (
            "server/tower_http/with_id",
            allocations_per_call(10_000, || {
                assert!(call(
                    &mut tower_http,
                    request(Inbound::IdAndTrace("x-request-id"))
                ))
            }),
        ),
    ] {
        println!("correlation/{name}: {allocs:.2} allocations per call");
    }
}

/// `CORRELATION_PROFILE=<variant> CORRELATION_CALLS=<n>`: only loop over one
/// variant, for `perf stat` or `valgrind --tool=callgrind` (instructions per
/// call are steadier than nanoseconds on a noisy machine).
fn profile(variant: &str) {
    let n: u64 = resilience_benches::profile_calls("CORRELATION_CALLS", 1_000_000);
    let noop = || {
        service_fn(|_: Request<()>| async { Ok::<_, Infallible>(resilience_benches::response()) })
    };
    let mut baseline = noop();
    let mut ours = CorrelationLayer::new().layer(noop());
    let mut tower_http = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .service(noop());
    let mut client = PropagateContextLayer::new().layer(noop());
    let id = RequestContext::new_root().correlation_id().clone();
    let fresh =
        || RequestContext::new(id.clone(), resilience_correlation::TraceContext::new_root());
    for _ in 0..n {
        black_box(match variant {
            "baseline" => call(&mut baseline, request(Inbound::Nothing)),
            "baseline_with_id" => call(
                &mut baseline,
                request(Inbound::IdAndTrace("x-correlation-id")),
            ),
            "ours/no_id" => call(&mut ours, request(Inbound::Nothing)),
            "ours/with_id" => call(&mut ours, request(Inbound::IdAndTrace("x-correlation-id"))),
            "baseline_with_id_only" => {
                call(&mut baseline, request(Inbound::Id("x-correlation-id")))
            }
            "ours/with_id_only" => call(&mut ours, request(Inbound::Id("x-correlation-id"))),
            "tower_http/with_id_only" => {
                call(&mut tower_http, request(Inbound::Id("x-request-id")))
            }
            "client/baseline" => fresh()
                .scope(async { call(&mut baseline, resilience_benches::outgoing_request()) })
                .now_or_never()
                .expect("answers at once"),
            "client/ours" => fresh()
                .scope(async { call(&mut client, resilience_benches::outgoing_request()) })
                .now_or_never()
                .expect("answers at once"),
            "tower_http/no_id" => call(&mut tower_http, request(Inbound::Nothing)),
            "tower_http/with_id" => call(
                &mut tower_http,
                request(Inbound::IdAndTrace("x-request-id")),
            ),
            other => panic!("unknown variant {other}"),
        });
    }
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(variant) = std::env::var("CORRELATION_PROFILE") {
        profile(&variant);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
