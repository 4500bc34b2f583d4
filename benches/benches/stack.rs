//! The whole stack, end to end: what our layers cost together on one
//! proxied request, over no-op services that answer at once.
//!
//! - **Server side**, as an axum app would stack them: `CorrelationLayer`
//!   (an incoming id, `traceparent` and deadline, on a request shaped as
//!   axum hands it over: a `Host` header, one extension already present),
//!   `TimeoutLayer`, `BoundedQueueLayer`;
//!   beside tower's nearest equivalent: tower-http's `SetRequestIdLayer` +
//!   `PropagateRequestIdLayer`, tower's `Timeout` and `ConcurrencyLimit`.
//! - **Client side**, inside the handler's request context (a deadline and
//!   a non-default priority): `PropagateContextLayer`, `RetryLayer`,
//!   `ThrottleLayer`, `CircuitBreakerLayer`, `TimeoutLayer` over a
//!   round-robin pick of three endpoints (avoiding the ones a retry tried).
//!
//! - **Whole stack**: the server side whose handler makes one client call
//!   through the client side over a round-robin pick of three endpoints
//!   (what one proxied request costs with every layer), beside tower-http +
//!   tower + tower-resilience's circuit breaker (tower has no round-robin
//!   pick without a `Discover` and a `Buffer`, so that stack calls one
//!   endpoint: it does less work than ours).
//!
//! `cargo bench -p resilience-benches --bench stack`; with
//! `STACK_PROFILE=<variant> STACK_CALLS=<n>` it only loops over one variant
//! (for `perf stat` or callgrind).

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use futures::FutureExt;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::Empty;
use resilience_benches::{CountingAlloc, allocations_per_call};
use resilience_bounded_queue::{BoundedQueueConfig, BoundedQueueLayer};
use resilience_circuit_breaker::throttle::{ThrottleConfig, ThrottleLayer};
use resilience_circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use resilience_core::BoxError;
use resilience_core::TimeoutLayer;
use resilience_correlation::{CorrelationLayer, PropagateContextLayer, RequestContext};
use resilience_discovery::{Endpoint, RoundRobinBuilder};
use resilience_retry::{RetryConfig, RetryLayer};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const ID: &[u8] = b"0192f0c1-7d3e-7a4b-9c1d-2e3f4a5b6c7d";
const TRACEPARENT: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const DEADLINE_MS: &[u8] = b"1000";
const TIMEOUT: Duration = Duration::from_secs(1);

thread_local! {
    /// One read buffer holding both inbound values, as hyper hands them to a
    /// server (every header value a reference-counted slice of it).
    static WIRE: Bytes = Bytes::copy_from_slice([ID, TRACEPARENT, DEADLINE_MS].concat().as_slice());
}

/// The body of the handler's outgoing calls.
type Out = Empty<Bytes>;

/// An inbound request as axum hands it to a route's layers (a `Host`
/// header, one extension), carrying an id (under `id_header`), a
/// traceparent and a deadline.
fn inbound(id_header: &'static str) -> Request<()> {
    let (id, traceparent, deadline) = WIRE.with(|wire| {
        let t = ID.len() + TRACEPARENT.len();
        (
            wire.slice(..ID.len()),
            wire.slice(ID.len()..t),
            wire.slice(t..),
        )
    });
    let value = |b| HeaderValue::from_maybe_shared(b).expect("valid header value");
    let mut req = Request::new(());
    let headers = req.headers_mut();
    headers.insert(HeaderName::from_static(id_header), value(id));
    headers.insert(HeaderName::from_static("traceparent"), value(traceparent));
    headers.insert(HeaderName::from_static("x-deadline-ms"), value(deadline));
    resilience_benches::axum_shaped(&mut req);
    req
}

/// The handler's outgoing request (a `content-type`, an empty body).
fn outgoing_request() -> Request<Out> {
    resilience_benches::outgoing_request().map(|()| Empty::new())
}

/// `ready`, `call`, answered at once, on any request type.
fn call_any<R, S: Service<R>>(svc: &mut S, req: R) -> bool {
    let ready = svc.ready().now_or_never().expect("ready at once").is_ok();
    ready
        && svc
            .call(req)
            .now_or_never()
            .expect("answers at once")
            .is_ok()
}

/// A no-op endpoint for any request body.
fn noop_any<B>() -> impl Service<
    Request<B>,
    Response = Response<()>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<()>, Infallible>> + Send,
> + Clone
+ Send
+ Sync {
    service_fn(|_: Request<B>| async { Ok::<_, Infallible>(resilience_benches::response()) })
}

/// `ready`, `call`, answered at once; `true` when it succeeded.
fn call<S: Service<Request<()>>>(svc: &mut S, req: Request<()>) -> bool {
    let ready = svc.ready().now_or_never().expect("ready at once").is_ok();
    ready
        && svc
            .call(req)
            .now_or_never()
            .expect("answers at once")
            .is_ok()
}

fn noop() -> impl Service<
    Request<()>,
    Response = Response<()>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<()>, Infallible>> + Send,
> + Clone
+ Send {
    service_fn(|_: Request<()>| async { Ok::<_, Infallible>(resilience_benches::response()) })
}

/// Ours, server side, as an axum app stacks them.
fn server_ours() -> impl Service<Request<()>> {
    let queue = BoundedQueueConfig::builder()
        .name("stack")
        .concurrency(100)
        .capacity(100)
        .build()
        .expect("valid queue config");
    ServiceBuilder::new()
        .layer(CorrelationLayer::new())
        .layer(TimeoutLayer::new(TIMEOUT))
        .layer(BoundedQueueLayer::new(queue))
        .service(noop())
}

/// tower's nearest equivalent of [`server_ours`].
fn server_tower() -> impl Service<Request<()>> {
    ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(tower::timeout::TimeoutLayer::new(TIMEOUT))
        .layer(tower::limit::ConcurrencyLimitLayer::new(100))
        .service(noop())
}

/// Ours, client side, as the design's standard client stack has it:
/// propagation, retry, throttle, breaker, attempt timeout, round robin
/// over three endpoints.
fn client_ours() -> impl Service<
    Request<Out>,
    Response = Response<()>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<()>, BoxError>> + Send,
> + Clone
+ Send
+ 'static {
    let endpoints = (1..=3u8)
        .map(|i| Endpoint::new(std::net::SocketAddr::from(([10, 0, 0, i], 8080))))
        .collect::<Vec<_>>();
    let pick = RoundRobinBuilder::new()
        .avoid_tried(resilience_core::AttemptFromExtensions)
        .build_with_endpoints(endpoints, |_: &Endpoint| noop_any());
    let retry = RetryConfig::builder()
        .name("stack")
        .build()
        .expect("valid retry config");
    ServiceBuilder::new()
        .layer(PropagateContextLayer::new())
        .layer(RetryLayer::new(retry))
        .layer(ThrottleLayer::new(ThrottleConfig::default()))
        .layer(CircuitBreakerLayer::new(CircuitBreakerConfig::default()))
        .layer(TimeoutLayer::new(TIMEOUT))
        .service(pick)
}

/// A handler that makes one call through `client` per request.
fn handler<C>(
    client: C,
) -> impl Service<
    Request<()>,
    Response = Response<()>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<()>, BoxError>> + Send,
> + Clone
+ Send
where
    C: Service<Request<Out>> + Clone + Send + 'static,
    C::Future: Send,
    C::Error: Into<BoxError>,
{
    service_fn(move |_: Request<()>| {
        let mut client = client.clone();
        async move {
            client.ready().await.map_err(Into::into)?;
            client.call(outgoing_request()).await.map_err(Into::into)?;
            Ok::<_, BoxError>(resilience_benches::response())
        }
    })
}

/// The server side with a handler that calls `client`, as ours stacks it.
fn with_server_ours<C>(client: C) -> impl Service<Request<()>>
where
    C: Service<Request<Out>> + Clone + Send + 'static,
    C::Future: Send,
    C::Error: Into<BoxError>,
{
    let queue = BoundedQueueConfig::builder()
        .name("whole")
        .concurrency(100)
        .capacity(100)
        .build()
        .expect("valid queue config");
    ServiceBuilder::new()
        .layer(CorrelationLayer::new())
        .layer(TimeoutLayer::new(TIMEOUT))
        .layer(BoundedQueueLayer::new(queue))
        .service(handler(client))
}

/// The whole stack, ours: server side, handler, client side
/// ([`client_ours`]).
fn whole_ours() -> impl Service<Request<()>> {
    with_server_ours(client_ours())
}

/// The same handler over bare no-op services: no layer anywhere.
fn whole_baseline() -> impl Service<Request<()>> {
    handler(noop_any())
}

/// The closest whole stack users build today: tower-http's request-id
/// pair, tower's `Timeout` and `ConcurrencyLimit` on the server side;
/// tower-resilience's circuit breaker and tower's `Timeout` on the client
/// side, over one endpoint.
fn whole_tower() -> impl Service<Request<()>> {
    let breaker = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .sliding_window_size(100)
        .build()
        .expect("valid breaker");
    let client = breaker.layer(tower::timeout::TimeoutLayer::new(TIMEOUT).layer(noop_any()));
    ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(tower::timeout::TimeoutLayer::new(TIMEOUT))
        .layer(tower::limit::ConcurrencyLimitLayer::new(100))
        .service(handler(client))
}

/// A client call made from inside a handler: with `ctx` as the current
/// request context.
fn in_scope<S: Service<Request<Out>>>(ctx: &RequestContext, svc: &mut S) -> bool {
    ctx.clone()
        .scope(async { call_any(svc, outgoing_request()) })
        .now_or_never()
        .expect("answers at once")
}

/// The context of an inbound request with a deadline and a non-default
/// priority, as the server layer makes it.
fn inbound_context() -> RequestContext {
    RequestContext::new_root()
        .with_priority(resilience_core::Priority::SheddablePlus)
        .with_deadline(Some(resilience_core::Deadline::after(Duration::from_secs(
            3600,
        ))))
}

fn bench(c: &mut Criterion) {
    let rt = resilience_benches::runtime();
    let _guard = rt.enter();
    let (mut baseline, mut server_ours, mut server_tower) = (noop(), server_ours(), server_tower());
    let (mut client_baseline, mut client_ours) = (noop_any(), client_ours());
    let ctx = inbound_context();

    let mut g = c.benchmark_group("stack");
    g.bench_function("server/baseline", |b| {
        b.iter(|| black_box(call(&mut baseline, inbound("x-correlation-id"))))
    });
    g.bench_function("server/ours", |b| {
        b.iter(|| black_box(call(&mut server_ours, inbound("x-correlation-id"))))
    });
    g.bench_function("server/tower", |b| {
        b.iter(|| black_box(call(&mut server_tower, inbound("x-request-id"))))
    });
    g.bench_function("client/baseline", |b| {
        b.iter(|| black_box(in_scope(&ctx, &mut client_baseline)))
    });
    g.bench_function("client/ours", |b| {
        b.iter(|| black_box(in_scope(&ctx, &mut client_ours)))
    });
    let mut whole = (whole_baseline(), whole_ours(), whole_tower());
    bench_whole(&mut g, &mut whole);
    g.finish();

    for (name, allocs) in [
        (
            "server/baseline",
            allocations_per_call(10_000, || {
                assert!(call(&mut baseline, inbound("x-correlation-id")))
            }),
        ),
        (
            "server/ours",
            allocations_per_call(10_000, || {
                assert!(call(&mut server_ours, inbound("x-correlation-id")))
            }),
        ),
        (
            "server/tower",
            allocations_per_call(10_000, || {
                assert!(call(&mut server_tower, inbound("x-request-id")))
            }),
        ),
        (
            "client/baseline",
            allocations_per_call(10_000, || assert!(in_scope(&ctx, &mut client_baseline))),
        ),
        (
            "client/ours",
            allocations_per_call(10_000, || assert!(in_scope(&ctx, &mut client_ours))),
        ),
    ] {
        println!("stack/{name}: {allocs:.2} allocations per call");
    }
    whole_allocations("stack", &mut whole);
    with_recorder(c);
}

/// The three whole stacks (no layers, ours, tower's) as criterion cases
/// of `g`.
fn bench_whole<A, B, C>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    (baseline, ours, tower): &mut (A, B, C),
) where
    A: Service<Request<()>>,
    B: Service<Request<()>>,
    C: Service<Request<()>>,
{
    g.bench_function("whole/baseline", |b| {
        b.iter(|| black_box(call(baseline, inbound("x-correlation-id"))))
    });
    g.bench_function("whole/ours", |b| {
        b.iter(|| black_box(call(ours, inbound("x-correlation-id"))))
    });
    g.bench_function("whole/tower", |b| {
        b.iter(|| black_box(call(tower, inbound("x-request-id"))))
    });
}

/// Prints the allocations per call of the three whole stacks, as
/// `{group}/whole/...` lines.
fn whole_allocations<A, B, C>(group: &str, (baseline, ours, tower): &mut (A, B, C))
where
    A: Service<Request<()>>,
    B: Service<Request<()>>,
    C: Service<Request<()>>,
{
    let counts = [
        (
            "baseline",
            allocations_per_call(10_000, || {
                assert!(call(baseline, inbound("x-correlation-id")))
            }),
        ),
        (
            "ours",
            allocations_per_call(10_000, || assert!(call(ours, inbound("x-correlation-id")))),
        ),
        (
            "tower",
            allocations_per_call(10_000, || assert!(call(tower, inbound("x-request-id")))),
        ),
    ];
    for (name, allocs) in counts {
        println!("{group}/whole/{name}: {allocs:.2} allocations per call");
    }
}

/// The whole stack again with a Prometheus recorder installed, as in a
/// service that exports its metrics (above, the `metrics` facade has no
/// recorder, so every metric is a no-op). Runs last: a process installs a
/// recorder once, and the stacks are built after it, so the layers register
/// their metrics with it.
fn with_recorder(c: &mut Criterion) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("no recorder installed before");
    let mut whole = (whole_baseline(), whole_ours(), whole_tower());
    let mut g = c.benchmark_group("stack_with_recorder");
    bench_whole(&mut g, &mut whole);
    g.finish();
    whole_allocations("stack_with_recorder", &mut whole);
    // The layers did register with the recorder.
    assert!(
        handle.render().contains("resilience_"),
        "the layers' metrics reached the recorder"
    );
}

/// Loops over one variant only.
fn profile(variant: &str) {
    let rt = resilience_benches::runtime();
    let _guard = rt.enter();
    let n: u64 = resilience_benches::profile_calls("STACK_CALLS", 1_000_000);
    let (mut baseline, mut server_ours, mut server_tower) = (noop(), server_ours(), server_tower());
    let (mut client_baseline, mut client_ours) = (noop_any(), client_ours());
    let ctx = inbound_context();
    let (mut whole_baseline, mut whole_ours, mut whole_tower) =
        (whole_baseline(), whole_ours(), whole_tower());
    for _ in 0..n {
        black_box(match variant {
            "server/baseline" => call(&mut baseline, inbound("x-correlation-id")),
            "server/ours" => call(&mut server_ours, inbound("x-correlation-id")),
            "server/tower" => call(&mut server_tower, inbound("x-request-id")),
            "client/baseline" => in_scope(&ctx, &mut client_baseline),
            "client/ours" => in_scope(&ctx, &mut client_ours),
            "whole/baseline" => call(&mut whole_baseline, inbound("x-correlation-id")),
            "whole/ours" => call(&mut whole_ours, inbound("x-correlation-id")),
            "whole/tower" => call(&mut whole_tower, inbound("x-request-id")),
            other => panic!("unknown variant {other}"),
        });
    }
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(variant) = std::env::var("STACK_PROFILE") {
        profile(&variant);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
