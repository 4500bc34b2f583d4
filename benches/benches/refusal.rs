//! What one refusal costs the server, beside a served request: the standard
//! server stack (`resilience::server::ServerStackLayer`, the queue with one
//! slot and no waiting room) around a service that answers at once, on a
//! request as a flood's client sends it (a `Host` header, no id, no
//! deadline, the way `wrk` sends it), with the slot free (`ours/served`) and held by a
//! request that never finishes (`ours/refused`: every call is refused,
//! `503` + `Retry-After` + the correlation id); beside the bare service
//! (`baseline`) and tower's `LoadShed` + `ConcurrencyLimit` with a
//! `HandleError` that answers `503` + `Retry-After` (`tower/served`,
//! `tower/refused`). The hyper connection's own work (parsing, writing) is
//! the same for every case and is not in these figures: the end-to-end
//! flood in the report measures the whole.
//!
//! `cargo bench -p resilience-benches --bench refusal`; with
//! `REFUSAL_PROFILE=<variant> REFUSAL_CALLS=<n>` it only loops over one
//! variant (for `perf stat` or callgrind).

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;

use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use futures::FutureExt;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use resilience::queue::BoundedQueueConfig;
use resilience::server::{ServerConfig, ServerStackLayer};
use resilience_benches::{CountingAlloc, allocations_per_call};
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt, service_fn};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

type Body = Full<Bytes>;
type Handler = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// A request as a flood's client sends it, as hyper hands it over.
fn request(path: &'static str) -> Request<()> {
    let mut req = Request::get(path).body(()).expect("valid request");
    resilience_benches::axum_shaped(&mut req);
    req
}

/// The service: answers `ok` at once, except on `/hold`, which never
/// answers (it holds its slot for as long as its future lives).
fn app()
-> impl Service<Request<()>, Response = Response<Body>, Error = Infallible, Future = Handler>
+ Clone
+ Send {
    service_fn(|req: Request<()>| -> Handler {
        if req.uri().path() == "/hold" {
            Box::pin(std::future::pending())
        } else {
            Box::pin(async { Ok(Response::new(Full::new(Bytes::from_static(b"ok")))) })
        }
    })
}

fn ours() -> ServerStackLayer {
    let queue = BoundedQueueConfig::builder()
        .name("refusal")
        .concurrency(1)
        .capacity(0)
        .build()
        .expect("valid queue");
    ServerStackLayer::http(
        ServerConfig::builder()
            .queue(queue)
            .build()
            .expect("valid config"),
    )
}

/// tower's `LoadShed` + `ConcurrencyLimit`, its refusal mapped as users
/// map it: `503` + `Retry-After`.
fn tower_stack<S>(inner: S) -> impl Service<Request<()>, Response = Response<Body>> + Clone
where
    S: Service<Request<()>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let limited = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1)
        .service(inner);
    limited.map_result(|r: Result<Response<Body>, BoxError>| {
        Ok::<_, BoxError>(match r {
            Ok(rsp) => rsp,
            Err(_) => {
                let mut rsp = Response::new(Full::new(Bytes::from_static(b"overloaded\n")));
                *rsp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                rsp.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("1"),
                );
                rsp
            }
        })
    })
}

/// `ready`, `call`, answered at once; the status.
fn call<S: Service<Request<()>, Response = Response<B>>, B>(svc: &mut S, req: Request<()>) -> u16 {
    if svc.ready().now_or_never().expect("ready at once").is_err() {
        return 0;
    }
    match svc.call(req).now_or_never().expect("answers at once") {
        Ok(rsp) => rsp.status().as_u16(),
        Err(_) => 0,
    }
}

/// Takes the one slot of `svc` for as long as the returned future lives.
fn hold<S>(svc: &mut S) -> Pin<Box<S::Future>>
where
    S: Service<Request<()>>,
{
    assert!(svc.ready().now_or_never().expect("ready at once").is_ok());
    let mut held = Box::pin(svc.call(request("/hold")));
    assert!(
        (&mut held).now_or_never().is_none(),
        "the held call answered"
    );
    held
}

fn bench(c: &mut Criterion) {
    let rt = resilience_benches::runtime();
    let _guard = rt.enter();
    let mut baseline = app();
    let mut ours_served = ours().layer(app());
    let mut ours_refused = ours().layer(app());
    let _held_ours = hold(&mut ours_refused);
    let mut tower_served = tower_stack(app());
    let mut tower_refused = tower_stack(app());
    let _held_tower = hold(&mut tower_refused);
    // What each case answers, checked once.
    assert_eq!(call(&mut baseline, request("/")), 200);
    assert_eq!(call(&mut ours_served, request("/")), 200);
    assert_eq!(call(&mut ours_refused, request("/")), 503);
    assert_eq!(call(&mut tower_served, request("/")), 200);
    assert_eq!(call(&mut tower_refused, request("/")), 503);

    let mut g = c.benchmark_group("refusal");
    g.bench_function("baseline", |b| {
        b.iter(|| black_box(call(&mut baseline, request("/"))))
    });
    g.bench_function("ours/served", |b| {
        b.iter(|| black_box(call(&mut ours_served, request("/"))))
    });
    g.bench_function("ours/refused", |b| {
        b.iter(|| black_box(call(&mut ours_refused, request("/"))))
    });
    g.bench_function("tower/served", |b| {
        b.iter(|| black_box(call(&mut tower_served, request("/"))))
    });
    g.bench_function("tower/refused", |b| {
        b.iter(|| black_box(call(&mut tower_refused, request("/"))))
    });
    g.finish();

    let n = 10_000;
    for (name, a) in [
        (
            "baseline",
            allocations_per_call(n, || {
                call(&mut baseline, request("/"));
            }),
        ),
        (
            "ours/served",
            allocations_per_call(n, || {
                call(&mut ours_served, request("/"));
            }),
        ),
        (
            "ours/refused",
            allocations_per_call(n, || {
                call(&mut ours_refused, request("/"));
            }),
        ),
        (
            "tower/served",
            allocations_per_call(n, || {
                call(&mut tower_served, request("/"));
            }),
        ),
        (
            "tower/refused",
            allocations_per_call(n, || {
                call(&mut tower_refused, request("/"));
            }),
        ),
    ] {
        println!("refusal/{name}: {a:.2} allocations per call");
    }
}

/// Loops over one variant only (for `perf stat` or callgrind).
fn profile(variant: &str) {
    let rt = resilience_benches::runtime();
    let _guard = rt.enter();
    let calls = resilience_benches::profile_calls("REFUSAL_CALLS", 1_000_000);
    let mut ok = 0u64;
    let mut run = |mut f: Box<dyn FnMut() -> u16>| {
        for _ in 0..calls {
            ok += u64::from(f() != 0);
        }
    };
    match variant {
        "baseline" => {
            let mut svc = app();
            run(Box::new(move || call(&mut svc, request("/"))));
        }
        "ours/served" => {
            let mut svc = ours().layer(app());
            run(Box::new(move || call(&mut svc, request("/"))));
        }
        "ours/refused" => {
            let mut svc = ours().layer(app());
            let held = hold(&mut svc);
            run(Box::new(move || {
                let _ = &held;
                call(&mut svc, request("/"))
            }));
        }
        other => panic!("unknown variant `{other}` (baseline, ours/served, ours/refused)"),
    }
    black_box(ok);
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(variant) = std::env::var("REFUSAL_PROFILE") {
        profile(&variant);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
