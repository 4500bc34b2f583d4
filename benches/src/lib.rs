//! Criterion benchmarks of the resilience layers, side by side with peers.
//!
//! Run them with `cargo bench -p resilience-benches`; every group has a
//! `baseline` (a bare service) measured in the same run, so read the results
//! as ratios. This library holds the helpers the bench targets share.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// A global allocator that counts allocations, to check "0 allocations per
/// call" claims. Install it in a bench target with `#[global_allocator]`.
#[derive(Debug)]
pub struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY-free: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations made so far by this process (with [`CountingAlloc`]
/// installed).
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Average allocations per call of `f` over `n` calls.
pub fn allocations_per_call(n: u64, mut f: impl FnMut()) -> f64 {
    let before = allocations();
    for _ in 0..n {
        f();
    }
    (allocations() - before) as f64 / n as f64
}

/// A single-threaded runtime with timers, for benches of services that read
/// tokio's clock or arm timers. Enter it (`let _guard = rt.enter();`) and
/// poll the services by hand.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime builds")
}

/// The number of calls a profile loop makes (`CB_PROFILE`-style modes, for
/// `perf stat` or callgrind): the environment variable `var` if it is set
/// to a number, else `default`.
pub fn profile_calls(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `f` on 2 threads sharing `a` and `b` (each thread its own state,
/// both over one shared layer), `iters` times each, inside the current
/// tokio runtime; returns the wall time from when both were ready.
// Wall-clock time is what a benchmark measures: tokio's (pausable) clock
// is for code under test.
#[allow(clippy::disallowed_types)]
pub fn two_threads<T: Send>(
    iters: u64,
    mut a: T,
    mut b: T,
    f: fn(&mut T) -> bool,
) -> std::time::Duration {
    let barrier = std::sync::Barrier::new(2);
    let start = std::sync::Mutex::new(None);
    let rt = tokio::runtime::Handle::current();
    std::thread::scope(|s| {
        for state in [&mut a, &mut b] {
            let barrier = &barrier;
            let start = &start;
            let rt = rt.clone();
            s.spawn(move || {
                let _guard = rt.enter();
                if barrier.wait().is_leader() {
                    *start.lock().unwrap() = Some(std::time::Instant::now());
                }
                for _ in 0..iters {
                    std::hint::black_box(f(state));
                }
            });
        }
    });
    let started = start.lock().unwrap().expect("started");
    started.elapsed()
}

/// The response a no-op service answers with: one `content-type`, as an
/// axum handler's `&str`, `Json` or tonic's responses carry, so a layer
/// that adds a header grows a map that exists, as it does in a server
/// (on a response with no header at all, the first insert allocates the
/// map's two buffers).
pub fn response() -> http::Response<()> {
    let mut rsp = http::Response::new(());
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

/// An outgoing request as a handler builds it: one `content-type`, as a
/// JSON or gRPC client's requests carry (see [`response`]).
pub fn outgoing_request() -> http::Request<()> {
    let mut req = http::Request::new(());
    req.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    req
}

/// What axum's `Router` puts in a request's extensions before any layer
/// of a route sees it (its `MatchedPath`): a request behind axum already
/// has an extension map, so a layer's first insert only boxes its value.
#[derive(Debug, Clone, Copy)]
pub struct Matched(pub &'static str);

/// Makes `req` look like what axum hands a route's layers: a `Host`
/// header (hyper's parse) and one extension already present ([`Matched`]).
pub fn axum_shaped<B>(req: &mut http::Request<B>) {
    req.headers_mut().insert(
        http::header::HOST,
        http::HeaderValue::from_static("127.0.0.1:3000"),
    );
    req.extensions_mut().insert(Matched("/"));
}

/// A `tracing_subscriber::fmt` subscriber at `INFO` writing to a sink, as
/// a service logs (without the cost of a terminal).
pub fn fmt_subscriber() -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::sink)
        .with_ansi(false)
        .finish()
}
