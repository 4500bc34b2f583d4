//! What ids and trace contexts keep alive, and what the request path
//! allocates (counted on this thread with `allocation_counter`).
//!
//! Values made on the request path are slices of shared buffers (the read
//! buffer, a per-thread 4 KiB buffer for generated ids and `traceparent`s),
//! which is what keeps that path cheap; an id or `traceparent` kept beyond
//! its request must keep only its own bytes.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use resilience_correlation::{
    CorrelationId, CorrelationLayer, PropagateContextLayer, RequestContext, TraceContext,
};
use tower::{Layer, Service, service_fn};

/// What a retained id may keep: its bytes (36 for a UUID) and a small
/// shared header.
const PER_KEPT_ID: i64 = 64;
/// The per-thread buffer values are cut from may be a different one at the
/// end of a measurement than at its start.
const ONE_BUFFER: i64 = 4096 + 256;

fn answer<F: std::future::Future>(fut: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("answers at once"),
    }
}

#[test]
fn ids_kept_from_the_request_path_keep_only_their_own_bytes() {
    const REQUESTS: usize = 10_000;
    const EVERY: usize = 100;
    let kept = Arc::new(Mutex::new(Vec::with_capacity(REQUESTS / EVERY)));
    let sink = kept.clone();
    let mut svc = CorrelationLayer::new().layer(service_fn(move |req: Request<usize>| {
        let sink = sink.clone();
        async move {
            // An audit buffer: every 100th request's id is kept.
            if *req.body() % EVERY == 0 {
                let ctx = RequestContext::current().expect("in scope");
                sink.lock().unwrap().push(ctx.correlation_id().clone());
            }
            Ok::<_, Infallible>(Response::new(()))
        }
    }));
    answer(svc.call(Request::new(usize::MAX))).unwrap(); // warm up
    let info = allocation_counter::measure(|| {
        for i in 0..REQUESTS {
            answer(svc.call(Request::new(i))).unwrap();
        }
    });
    let kept = kept.lock().unwrap();
    assert_eq!(kept.len(), REQUESTS / EVERY);
    assert!(kept.iter().all(|id| id.as_str().len() == 36));
    let bound = kept.len() as i64 * PER_KEPT_ID + ONE_BUFFER;
    println!("{} ids kept {} bytes", kept.len(), info.bytes_current);
    assert!(
        info.bytes_current <= bound,
        "{} ids kept {} bytes (at most {bound})",
        kept.len(),
        info.bytes_current
    );
}

#[test]
fn ids_and_traceparents_kept_from_the_public_api_keep_only_their_own_bytes() {
    const KEEP: usize = 100;
    const EVERY: usize = 100;

    // Generated directly, as a job that starts here does.
    let mut ids = Vec::with_capacity(KEEP);
    let info = allocation_counter::measure(|| {
        for i in 0..KEEP * EVERY {
            let id = CorrelationId::generate();
            if i % EVERY == 0 {
                ids.push(id);
            }
        }
    });
    let bound = KEEP as i64 * PER_KEPT_ID + ONE_BUFFER;
    assert!(
        info.bytes_current <= bound,
        "generated: {}",
        info.bytes_current
    );

    // Cloned out of a context that is then dropped.
    let mut ids = Vec::with_capacity(KEEP);
    let info = allocation_counter::measure(|| {
        for i in 0..KEEP * EVERY {
            let ctx = RequestContext::new_root();
            if i % EVERY == 0 {
                ids.push(ctx.correlation_id().clone());
            }
        }
    });
    assert!(
        info.bytes_current <= bound,
        "cloned: {}",
        info.bytes_current
    );

    // `traceparent`s, formatted for keeping.
    let mut values = Vec::with_capacity(KEEP);
    let info = allocation_counter::measure(|| {
        for i in 0..KEEP * EVERY {
            let tp = TraceContext::new_root().to_traceparent();
            if i % EVERY == 0 {
                values.push(tp);
            }
        }
    });
    assert!(
        info.bytes_current <= bound,
        "traceparents: {}",
        info.bytes_current
    );
}

#[test]
fn a_kept_inbound_id_does_not_keep_the_read_buffer() {
    // Inbound header values are slices of the connection's read buffer.
    const KEEP: usize = 10;
    let mut ids = Vec::with_capacity(KEEP);
    let info = allocation_counter::measure(|| {
        for _ in 0..KEEP {
            let mut wire = vec![b'x'; 16 * 1024];
            wire[100..136].copy_from_slice(b"0192f0c1-7d3e-7a4b-9c1d-2e3f4a5b6c7d");
            let wire = Bytes::from(wire);
            let value = HeaderValue::from_maybe_shared(wire.slice(100..136)).unwrap();
            let id = CorrelationId::from_header(&value).unwrap();
            ids.push(id.clone());
        }
    });
    assert!(ids.iter().all(|id| id.as_str().starts_with("0192f0c1")));
    assert!(
        info.bytes_current <= KEEP as i64 * PER_KEPT_ID,
        "{}",
        info.bytes_current
    );
}

/// Allocations per call of `f`, on this thread.
fn per_call(n: u64, mut f: impl FnMut()) -> f64 {
    f(); // warm up
    let info = allocation_counter::measure(|| {
        for _ in 0..n {
            f();
        }
    });
    info.count_total as f64 / n as f64
}

#[test]
fn the_request_path_allocates_no_more_than_before() {
    let noop = || service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
    let mut baseline = noop();
    let mut server = CorrelationLayer::new().layer(noop());
    let base = per_call(10_000, || {
        answer(baseline.call(Request::new(()))).unwrap();
    });
    let no_id = per_call(10_000, || {
        answer(server.call(Request::new(()))).unwrap();
    });
    let wire = HeaderValue::from_static("0192f0c1-7d3e-7a4b-9c1d-2e3f4a5b6c7d");
    let with_id = per_call(10_000, || {
        let mut req = Request::new(());
        req.headers_mut().insert("x-correlation-id", wire.clone());
        answer(server.call(req)).unwrap();
    });
    let mut client = PropagateContextLayer::new().layer(noop());
    let ctx = RequestContext::new_root();
    let id = ctx.correlation_id().clone();
    // Every call cuts its `traceparent` from the per-thread buffer.
    let first_call = per_call(10_000, || {
        let fresh = RequestContext::new(id.clone(), TraceContext::new_root());
        answer(fresh.scope(async { client.call(Request::new(())).await })).unwrap();
    });
    let later_call = per_call(10_000, || {
        answer(
            ctx.clone()
                .scope(async { client.call(Request::new(())).await }),
        )
        .unwrap();
    });
    println!(
        "baseline {base}, no id {no_id}, with id {with_id}, first call {first_call}, later call {later_call}"
    );
    assert_eq!(base, 0.0);
    // The extensions (map, table, boxed context: 3; the context is the
    // only extension and is not shared behind an `Arc`), the echoed id
    // growing the response's empty header map (2); and a generated id cut
    // from the per-thread buffer (a fraction).
    assert!(no_id < 5.05, "{no_id}");
    // The request's own header map (2) and the above but the generated id.
    assert_eq!(with_id, 8.0);
    // The outgoing request's header map (2); the `traceparent` cut from the
    // per-thread buffer (a fraction); no extension.
    assert!(first_call < 2.05, "{first_call}");
    assert!(later_call < 2.05, "{later_call}");
}

/// A request as axum hands it to a route's layers: a `Host` header and one
/// extension already there (axum's `MatchedPath`); with `context`, an id, a
/// `traceparent` and a deadline, slices of one read buffer.
fn axum_request(wire: &Bytes, context: bool) -> Request<()> {
    #[derive(Clone)]
    struct Matched;
    let mut req = Request::new(());
    let headers = req.headers_mut();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:3000"));
    if context {
        let value = |a, b| HeaderValue::from_maybe_shared(wire.slice(a..b)).unwrap();
        headers.insert("x-correlation-id", value(0, 36));
        headers.insert("traceparent", value(36, 91));
        headers.insert("x-deadline-ms", value(91, 95));
    }
    req.extensions_mut().insert(Matched);
    req
}

/// A response as a handler makes it: with a `content-type`.
fn typed_response() -> Response<()> {
    let mut rsp = Response::new(());
    rsp.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    rsp
}

#[test]
fn behind_axum_the_server_layer_adds_at_most_one_allocation() {
    let wire = Bytes::from_static(
        b"0192f0c1-7d3e-7a4b-9c1d-2e3f4a5b6c7d00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011000",
    );
    let noop = || service_fn(|_: Request<()>| async { Ok::<_, Infallible>(typed_response()) });
    let mut baseline = noop();
    let mut server = CorrelationLayer::new().layer(noop());
    for context in [false, true] {
        let base = per_call(10_000, || {
            answer(baseline.call(axum_request(&wire, context))).unwrap();
        });
        let ours = per_call(10_000, || {
            let rsp = answer(server.call(axum_request(&wire, context))).unwrap();
            assert!(rsp.headers().contains_key("x-correlation-id"));
        });
        println!("context {context}: baseline {base}, ours {ours}");
        // The boxed context (1): priority and deadline travel inside it; a
        // generated id is cut from the per-thread buffer (a fraction).
        assert!(ours - base <= 1.05, "context {context}: {ours} vs {base}");
    }
}

#[test]
fn an_outgoing_call_with_a_deadline_and_a_priority_allocates_nothing_of_its_own() {
    let noop = || service_fn(|_: Request<()>| async { Ok::<_, Infallible>(typed_response()) });
    let outgoing = || {
        let mut req = Request::new(());
        req.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        req
    };
    let ctx = RequestContext::new_root()
        .with_priority(resilience_correlation::Priority::SheddablePlus)
        .with_deadline(Some(resilience_correlation::Deadline::after(
            std::time::Duration::from_secs(60),
        )));
    let mut baseline = noop();
    let mut client = PropagateContextLayer::new().layer(noop());
    let base = per_call(10_000, || {
        answer(ctx.clone().scope(async { baseline.call(outgoing()).await })).unwrap();
    });
    let ours = per_call(10_000, || {
        let rsp = answer(ctx.clone().scope(async { client.call(outgoing()).await }));
        rsp.unwrap();
    });
    println!("client: baseline {base}, ours {ours}");
    // Headers into the map the request has; `traceparent` and the time
    // left cut from the per-thread buffer (fractions); no extension.
    assert!(ours - base <= 0.1, "{ours} vs {base}");
}
