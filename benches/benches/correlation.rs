//! Per-request cost of the correlation layers beside tower-http's
//! `SetRequestIdLayer` + `PropagateRequestIdLayer` with `MakeRequestUuid`.
//!
//! - `correlation`: on a bare `http::Request<()>` (no extensions, no
//!   header but ours).
//! - `correlation_axum`: on a request shaped as axum hands it to a route's
//!   layers (a `Host` header, one extension already present), without and
//!   with an inbound id, `traceparent` and deadline (`x-deadline-ms`).
//! - `correlation_client`: `PropagateContextLayer` on an outgoing call
//!   made inside a request context with a deadline and a non-default
//!   priority, beside tower-http's `PropagateRequestIdLayer` with the id
//!   and the deadline header set by hand (what a user writes without us).
//! - `correlation_fmt`: the axum-shaped case again with a
//!   `tracing_subscriber::fmt` subscriber at `INFO` (writing to a sink), so
//!   the `request` span is built: what the span adds per request.
//! - `correlation_otel` (feature `otel-pipeline`): the axum-shaped case
//!   under an OpenTelemetry pipeline (`tracing-opentelemetry` layer, SDK
//!   tracer, simple processor, an exporter that drops the spans), beside a
//!   bare service that opens a `request` span of its own per request (what
//!   the pipeline costs without us); with an inbound `traceparent` (the
//!   span joins the caller's trace) and without (a new trace). And
//!   `correlation_otel_client`: an outgoing call from inside a handler's
//!   span, beside the bare call. Run with `--features otel-pipeline` (the
//!   layers built without their `opentelemetry` feature: the spans are
//!   exported but join no trace) and with `--features opentelemetry` (the
//!   feature on, which every other group then measures too): the
//!   difference is what joining the trace costs.

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

const DEADLINE_MS: HeaderValue = HeaderValue::from_static("1000");

const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT_NAME: HeaderName = HeaderName::from_static("traceparent");

thread_local! {
    /// One read buffer holding both inbound values, as hyper hands them to a
    /// server: every header value is a reference-counted slice of it, so a
    /// layer that clones a value pays what it would pay behind hyper.
    static WIRE: Bytes = Bytes::copy_from_slice(
        [ID.as_bytes(), TRACEPARENT.as_bytes(), DEADLINE_MS.as_bytes()].concat().as_slice(),
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
        (
            wire.slice(..split),
            wire.slice(split..split + TRACEPARENT.len()),
        )
    });
    let value = |b| HeaderValue::from_maybe_shared(b).expect("valid header value");
    req.headers_mut().insert(name, value(id));
    if trace {
        req.headers_mut()
            .insert(TRACEPARENT_NAME, value(traceparent));
    }
    req
}

/// An axum-shaped request (a `Host` header, one extension): with
/// `context`, an id under `id_header`, a `traceparent` and `x-deadline-ms`.
fn axum_request(context: Option<&'static str>) -> Request<()> {
    let mut req = match context {
        Some(name) => request(Inbound::IdAndTrace(name)),
        None => request(Inbound::Nothing),
    };
    if context.is_some() {
        let deadline = WIRE.with(|wire| wire.slice(ID.len() + TRACEPARENT.len()..));
        req.headers_mut().insert(
            HeaderName::from_static("x-deadline-ms"),
            HeaderValue::from_maybe_shared(deadline).expect("digits"),
        );
    }
    resilience_benches::axum_shaped(&mut req);
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

    bench_axum(c);
    bench_client(c);
    bench_fmt(c);
    #[cfg(feature = "otel-pipeline")]
    otel::bench(c);

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

fn noop() -> impl Service<Request<()>, Response = Response<()>, Error = Infallible> + Clone {
    service_fn(|_: Request<()>| async { Ok::<_, Infallible>(resilience_benches::response()) })
}

fn tower_http_pair() -> impl Service<Request<()>, Response = Response<()>, Error = Infallible> {
    ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .service(noop())
}

/// The server layers on axum-shaped requests.
fn bench_axum(c: &mut Criterion) {
    let rt = resilience_benches::runtime();
    let _guard = rt.enter();
    let (mut baseline, mut ours, mut pair) = (
        noop(),
        CorrelationLayer::new().layer(noop()),
        tower_http_pair(),
    );
    let mut g = c.benchmark_group("correlation_axum");
    g.bench_function("baseline", |b| {
        b.iter(|| black_box(call(&mut baseline, axum_request(None))))
    });
    g.bench_function("baseline_with_context", |b| {
        b.iter(|| black_box(call(&mut baseline, axum_request(Some("x-correlation-id")))))
    });
    g.bench_function("ours/no_context", |b| {
        b.iter(|| black_box(call(&mut ours, axum_request(None))))
    });
    g.bench_function("ours/with_context", |b| {
        b.iter(|| black_box(call(&mut ours, axum_request(Some("x-correlation-id")))))
    });
    g.bench_function("tower_http/no_context", |b| {
        b.iter(|| black_box(call(&mut pair, axum_request(None))))
    });
    g.bench_function("tower_http/with_context", |b| {
        b.iter(|| black_box(call(&mut pair, axum_request(Some("x-request-id")))))
    });
    g.finish();
    let count = |name: &str, svc: &mut dyn FnMut() -> bool| {
        let n = allocations_per_call(10_000, || assert!(svc()));
        println!("correlation_axum/{name}: {n:.2} allocations per call");
    };
    count("baseline", &mut || call(&mut baseline, axum_request(None)));
    count("baseline_with_context", &mut || {
        call(&mut baseline, axum_request(Some("x-correlation-id")))
    });
    count("ours/no_context", &mut || {
        call(&mut ours, axum_request(None))
    });
    count("ours/with_context", &mut || {
        call(&mut ours, axum_request(Some("x-correlation-id")))
    });
    count("tower_http/no_context", &mut || {
        call(&mut pair, axum_request(None))
    });
    count("tower_http/with_context", &mut || {
        call(&mut pair, axum_request(Some("x-request-id")))
    });
}

/// The context of an inbound request with a deadline and a non-default
/// priority, as the server layer makes it.
fn inbound_context() -> RequestContext {
    RequestContext::new_root()
        .with_priority(resilience_correlation::Priority::SheddablePlus)
        .with_deadline(Some(resilience_correlation::Deadline::after(
            std::time::Duration::from_secs(1),
        )))
}

/// An outgoing call made inside `ctx`'s scope (as from a handler).
fn outgoing<S>(ctx: &RequestContext, svc: &mut S) -> bool
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    ctx.clone()
        .scope(async { call(svc, resilience_benches::outgoing_request()) })
        .now_or_never()
        .expect("answers at once")
}

/// What a user writes without us: tower-http's `PropagateRequestIdLayer`
/// and the id and the time left set by hand from the inbound context.
fn hand_written_client() -> impl Service<Request<()>, Response = Response<()>, Error = Infallible> {
    ServiceBuilder::new()
        .layer(PropagateRequestIdLayer::x_request_id())
        .map_request(|mut req: Request<()>| {
            if let Some(ctx) = RequestContext::current() {
                let headers = req.headers_mut();
                headers.insert(X_REQUEST_ID, ctx.correlation_id().to_header_value());
                if let Some(deadline) = ctx.deadline() {
                    let ms = deadline.remaining().as_millis() as u64;
                    headers.insert(
                        HeaderName::from_static("x-deadline-ms"),
                        HeaderValue::from(ms),
                    );
                }
            }
            req
        })
        .service(noop())
}

/// The client layer on an outgoing call with a deadline and a priority.
fn bench_client(c: &mut Criterion) {
    let rt = resilience_benches::runtime();
    let _guard = rt.enter();
    let ctx = inbound_context();
    let (mut baseline, mut ours, mut peer) = (
        noop(),
        PropagateContextLayer::new().layer(noop()),
        hand_written_client(),
    );
    let mut g = c.benchmark_group("correlation_client");
    g.bench_function("baseline", |b| {
        b.iter(|| black_box(outgoing(&ctx, &mut baseline)))
    });
    g.bench_function("ours", |b| b.iter(|| black_box(outgoing(&ctx, &mut ours))));
    g.bench_function("tower_http", |b| {
        b.iter(|| black_box(outgoing(&ctx, &mut peer)))
    });
    g.finish();
    for (name, n) in [
        (
            "baseline",
            allocations_per_call(10_000, || assert!(outgoing(&ctx, &mut baseline))),
        ),
        (
            "ours",
            allocations_per_call(10_000, || assert!(outgoing(&ctx, &mut ours))),
        ),
        (
            "tower_http",
            allocations_per_call(10_000, || assert!(outgoing(&ctx, &mut peer))),
        ),
    ] {
        println!("correlation_client/{name}: {n:.2} allocations per call");
    }
}

/// The axum-shaped server case with a `fmt` subscriber at `INFO`.
fn bench_fmt(c: &mut Criterion) {
    let rt = resilience_benches::runtime();
    let _guard = rt.enter();
    let _subscriber = tracing::subscriber::set_default(resilience_benches::fmt_subscriber());
    let (mut baseline, mut ours) = (noop(), CorrelationLayer::new().layer(noop()));
    let mut g = c.benchmark_group("correlation_fmt");
    g.bench_function("baseline", |b| {
        b.iter(|| black_box(call(&mut baseline, axum_request(Some("x-correlation-id")))))
    });
    g.bench_function("ours", |b| {
        b.iter(|| black_box(call(&mut ours, axum_request(Some("x-correlation-id")))))
    });
    g.finish();
    for (name, n) in [
        (
            "baseline",
            allocations_per_call(10_000, || {
                assert!(call(&mut baseline, axum_request(Some("x-correlation-id"))))
            }),
        ),
        (
            "ours",
            allocations_per_call(10_000, || {
                assert!(call(&mut ours, axum_request(Some("x-correlation-id"))))
            }),
        ),
    ] {
        println!("correlation_fmt/{name}: {n:.2} allocations per call");
    }
}

/// Runs `call` inside `ctx`'s scope and `span` (as a handler does).
fn from_span(span: &tracing::Span, ctx: &RequestContext, call: &mut dyn FnMut() -> bool) -> bool {
    use tracing::Instrument;
    ctx.clone()
        .scope(async { call() })
        .instrument(span.clone())
        .now_or_never()
        .expect("answers at once")
}

/// The layers under an OpenTelemetry pipeline.
#[cfg(feature = "otel-pipeline")]
mod otel {
    use super::*;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
    use tracing::Instrument;
    use tracing_subscriber::layer::SubscriberExt;

    /// Drops every span: the pipeline's cost without an exporter's.
    #[derive(Debug)]
    struct Discard;

    impl SpanExporter for Discard {
        fn export(
            &self,
            batch: Vec<SpanData>,
        ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
            black_box(batch);
            std::future::ready(Ok(()))
        }
    }

    /// Sets a pipeline for this thread: registry, OpenTelemetry layer, SDK
    /// tracer, simple processor, [`Discard`].
    pub(super) fn pipeline() -> (SdkTracerProvider, tracing::subscriber::DefaultGuard) {
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(Discard)
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
        (provider, tracing::subscriber::set_default(subscriber))
    }

    /// A bare service that opens a `request` span per request, as an
    /// application's own tracing layer would: the pipeline's cost per
    /// request without the correlation layer.
    pub(super) fn spanned() -> impl Service<Request<()>, Response = Response<()>, Error = Infallible>
    {
        service_fn(|_: Request<()>| {
            let span = tracing::info_span!("request");
            async { Ok::<_, Infallible>(resilience_benches::response()) }.instrument(span)
        })
    }

    pub(super) fn bench(c: &mut Criterion) {
        let rt = resilience_benches::runtime();
        let _guard = rt.enter();
        let _pipeline = pipeline();

        let (mut baseline, mut ours) = (spanned(), CorrelationLayer::new().layer(noop()));
        let mut g = c.benchmark_group("correlation_otel");
        g.bench_function("baseline", |b| {
            b.iter(|| black_box(call(&mut baseline, axum_request(Some("x-correlation-id")))))
        });
        g.bench_function("ours/with_context", |b| {
            b.iter(|| black_box(call(&mut ours, axum_request(Some("x-correlation-id")))))
        });
        g.bench_function("ours/no_context", |b| {
            b.iter(|| black_box(call(&mut ours, axum_request(None))))
        });
        g.finish();

        // An outgoing call from a handler's span, inside its request context.
        let ctx = inbound_context();
        let handler = tracing::info_span!("handler");
        let (mut bare, mut client) = (noop(), PropagateContextLayer::new().layer(noop()));
        let from_handler = |svc: &mut dyn FnMut() -> bool| from_span(&handler, &ctx, svc);
        let mut g = c.benchmark_group("correlation_otel_client");
        g.bench_function("baseline", |b| {
            b.iter(|| {
                black_box(from_handler(&mut || {
                    call(&mut bare, resilience_benches::outgoing_request())
                }))
            })
        });
        g.bench_function("ours", |b| {
            b.iter(|| {
                black_box(from_handler(&mut || {
                    call(&mut client, resilience_benches::outgoing_request())
                }))
            })
        });
        g.finish();

        for (name, n) in [
            (
                "correlation_otel/baseline",
                allocations_per_call(10_000, || {
                    assert!(call(&mut baseline, axum_request(Some("x-correlation-id"))))
                }),
            ),
            (
                "correlation_otel/ours/with_context",
                allocations_per_call(10_000, || {
                    assert!(call(&mut ours, axum_request(Some("x-correlation-id"))))
                }),
            ),
            (
                "correlation_otel/ours/no_context",
                allocations_per_call(10_000, || assert!(call(&mut ours, axum_request(None)))),
            ),
            (
                "correlation_otel_client/baseline",
                allocations_per_call(10_000, || {
                    assert!(from_handler(&mut || {
                        call(&mut bare, resilience_benches::outgoing_request())
                    }))
                }),
            ),
            (
                "correlation_otel_client/ours",
                allocations_per_call(10_000, || {
                    assert!(from_handler(&mut || {
                        call(&mut client, resilience_benches::outgoing_request())
                    }))
                }),
            ),
        ] {
            println!("{name}: {n:.2} allocations per call");
        }
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
    let rt = resilience_benches::runtime();
    let _guard = rt.enter();
    let deadline_ctx = inbound_context();
    let mut hand_written = hand_written_client();
    // `fmt*/`: under a `fmt` subscriber; `otel*/`: under an OpenTelemetry
    // pipeline (feature `otel-pipeline`).
    let _fmt = variant
        .starts_with("fmt")
        .then(|| tracing::subscriber::set_default(resilience_benches::fmt_subscriber()));
    #[cfg(feature = "otel-pipeline")]
    let (_pipeline, mut spanned) = (
        variant.starts_with("otel").then(otel::pipeline),
        otel::spanned(),
    );
    let handler = tracing::info_span!("handler");
    for _ in 0..n {
        black_box(match variant {
            "fmt/baseline" => call(&mut baseline, axum_request(Some("x-correlation-id"))),
            "fmt/ours" => call(&mut ours, axum_request(Some("x-correlation-id"))),
            "fmt_client/baseline" | "otel_client/baseline" => {
                from_span(&handler, &deadline_ctx, &mut || {
                    call(&mut baseline, resilience_benches::outgoing_request())
                })
            }
            "fmt_client/ours" | "otel_client/ours" => {
                from_span(&handler, &deadline_ctx, &mut || {
                    call(&mut client, resilience_benches::outgoing_request())
                })
            }
            #[cfg(feature = "otel-pipeline")]
            "otel/baseline" => call(&mut spanned, axum_request(Some("x-correlation-id"))),
            "otel/ours/with_context" => call(&mut ours, axum_request(Some("x-correlation-id"))),
            "otel/ours/no_context" => call(&mut ours, axum_request(None)),
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
            "axum/baseline_with_context" => {
                call(&mut baseline, axum_request(Some("x-correlation-id")))
            }
            "axum/ours/with_context" => call(&mut ours, axum_request(Some("x-correlation-id"))),
            "axum/tower_http/with_context" => {
                call(&mut tower_http, axum_request(Some("x-request-id")))
            }
            "client/deadline/baseline" => outgoing(&deadline_ctx, &mut baseline),
            "client/deadline/ours" => outgoing(&deadline_ctx, &mut client),
            "client/deadline/tower_http" => outgoing(&deadline_ctx, &mut hand_written),
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
