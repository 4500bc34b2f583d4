//! The retry layer through its public API, with paused time.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use resilience_core::attempt::{ATTEMPT_HEADER, GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER};
use resilience_core::{Attempt, BoxError, Deadline, Elapsed, Priority, Rejected, RejectionKind};
use resilience_retry::{RetryBody, RetryBudgetConfig, RetryConfig, RetryConfigBuilder, RetryLayer};
use support::{Answer, Chunks, dependency, grpc, ok, status, status_with};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// Backoff caps 100 ms, 200 ms, ... and jitter fixed at half the cap:
/// retries wait 50 ms, 100 ms, 200 ms.
fn config() -> RetryConfigBuilder {
    RetryConfig::builder().backoff(Duration::from_millis(100), Duration::from_secs(1))
}

fn layer(config: RetryConfigBuilder) -> RetryLayer {
    RetryLayer::new(config.build().unwrap()).with_random(|| 0.5)
}

fn get() -> Request<Full<Bytes>> {
    Request::get("/stock/42").body(Full::default()).unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn send<S, B>(svc: &mut S, req: Request<B>) -> Result<Response<()>, BoxError>
where
    S: Service<Request<B>, Response = Response<()>, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_503_is_retried_after_a_jittered_backoff() {
    let (dep, log) = dependency(|n| if n < 2 { status(503) } else { ok() });
    let mut svc = layer(config()).layer(dep);
    let rsp = send(&mut svc, get()).await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(log.times(), [ms(0), ms(50), ms(150)]);
    assert_eq!(log.header(0, "x-attempt"), None);
    assert_eq!(log.header(1, "x-attempt").as_deref(), Some("2"));
    assert_eq!(log.header(2, "x-attempt").as_deref(), Some("3"));
    assert_eq!(log.header(1, "grpc-previous-rpc-attempts"), None);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_retry_carries_its_attempt_sharing_one_record() {
    let (dep, log) = dependency(|n| if n < 2 { status(503) } else { ok() });
    let mut svc = layer(config()).layer(dep);
    // An attempt the caller put there is replaced: the layer numbers its
    // own tries, and the first try carries none.
    let mut req = get();
    let stale = Attempt::first().next().next();
    req.extensions_mut().insert(stale.clone());
    assert_eq!(send(&mut svc, req).await.unwrap().status(), 200);
    let attempts: Vec<Option<Attempt>> = log.all().into_iter().map(|s| s.attempt).collect();
    assert!(attempts[0].is_none(), "the first try carries no attempt");
    let retries: Vec<Attempt> = attempts[1..].iter().map(|a| a.clone().unwrap()).collect();
    let numbers: Vec<u32> = retries.iter().map(Attempt::number).collect();
    assert_eq!(numbers, [2, 3]);
    assert!(retries[1].same_request(&retries[0]));
    assert!(!retries[0].same_request(&stale));
    // What one try records, the next sees.
    let a: std::net::SocketAddr = "10.0.0.1:80".parse().unwrap();
    retries[0].record(a);
    assert!(retries[1].tried().contains(a));
    // The headers are core's, written by `Attempt::write_headers`.
    assert_eq!(log.header(0, ATTEMPT_HEADER.as_str()), None);
    assert_eq!(log.header(2, ATTEMPT_HEADER.as_str()).as_deref(), Some("3"));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_request_passed_through_carries_no_attempt() {
    // Not idempotent, over the replay cap, or one attempt only: sent once,
    // untouched.
    let (dep, log) = dependency(|_| status(503));
    let mut svc = layer(config().max_replay_body(4)).layer(dep.clone());
    let post = Request::post("/orders").body(Full::default()).unwrap();
    assert_eq!(send(&mut svc, post).await.unwrap().status(), 503);
    let big = Request::put("/blob")
        .body(Full::new(Bytes::from_static(b"0123456789")))
        .unwrap();
    assert_eq!(send(&mut svc, big).await.unwrap().status(), 503);
    let mut once = layer(config().max_attempts(1)).layer(dep);
    assert_eq!(send(&mut once, get()).await.unwrap().status(), 503);
    let seen = log.all();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.attempt.is_none()), "{seen:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn gives_up_after_max_attempts_with_the_last_outcome() {
    let (dep, log) = dependency(|n| status_with(503, &[("x-n", &n.to_string())]));
    let mut svc = layer(config().max_attempts(2)).layer(dep);
    let rsp = send(&mut svc, get()).await.unwrap();
    assert_eq!(rsp.status(), 503);
    assert_eq!(rsp.headers()["x-n"], "1", "the last attempt's response");
    assert_eq!(log.len(), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn four_xx_and_other_5xx_are_never_retried() {
    for code in [400, 401, 404, 409, 429, 500, 501] {
        let (dep, log) = dependency(move |_| status_with(code, &[("retry-after", "1")]));
        let mut svc = layer(config()).layer(dep);
        assert_eq!(send(&mut svc, get()).await.unwrap().status(), code);
        assert_eq!(log.len(), 1, "{code}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn local_refusals_are_never_retried() {
    for kind in [
        RejectionKind::CircuitOpen,
        RejectionKind::Throttled,
        RejectionKind::Overloaded,
        RejectionKind::NoHealthyEndpoint,
        RejectionKind::Disabled,
    ] {
        let (dep, log) = dependency(move |_| {
            Answer::Error(Rejected::new(kind, "").with_retry_after(ms(10)).into())
        });
        let mut svc = layer(config()).layer(dep);
        let err = send(&mut svc, get()).await.unwrap_err();
        assert_eq!(err.downcast_ref::<Rejected>().unwrap().kind(), kind);
        assert_eq!(log.len(), 1, "{kind:?}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn transport_errors_and_attempt_timeouts_are_retried() {
    let (dep, log) = dependency(|n| match n {
        0 => Answer::Error(std::io::Error::other("connection reset").into()),
        1 => Answer::Error(Elapsed::new().into()),
        _ => ok(),
    });
    let mut svc = layer(config()).layer(dep);
    assert_eq!(send(&mut svc, get()).await.unwrap().status(), 200);
    assert_eq!(log.len(), 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_hung_attempt_times_out_and_is_retried() {
    let (dep, log) = dependency(|n| if n == 0 { Answer::Hang } else { ok() });
    let mut svc = layer(config().attempt_timeout(ms(300))).layer(dep);
    let start = Instant::now();
    assert_eq!(send(&mut svc, get()).await.unwrap().status(), 200);
    assert_eq!(log.times(), [ms(0), ms(350)]);
    assert_eq!(start.elapsed(), ms(350));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_attempt_timeout_never_runs_past_the_deadline() {
    let (dep, log) = dependency(|_| Answer::Hang);
    let mut svc = layer(config().attempt_timeout(ms(300))).layer(dep);
    let mut req = get();
    req.extensions_mut().insert(Deadline::after(ms(200)));
    let err = send(&mut svc, req).await.unwrap_err();
    let elapsed = err.downcast_ref::<Elapsed>().unwrap();
    assert!(elapsed.is_deadline());
    assert_eq!(log.len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn no_attempt_starts_past_the_deadline() {
    // Each attempt fails after 300 ms; backoff 50, 100, 200, ... ms.
    let (dep, log) = dependency(|_| Answer::After(ms(300), Box::new(status(503))));
    let budget = RetryBudgetConfig::builder().build().unwrap();
    let mut svc = layer(config().max_attempts(10).budget(budget)).layer(dep);
    let mut req = get();
    req.extensions_mut().insert(Deadline::after(ms(1000)));
    let start = Instant::now();
    let rsp = send(&mut svc, req).await.unwrap();
    assert_eq!(rsp.status(), 503);
    // 0..300, 350..650; the next would start at 650 + 300 + 200 > 1000
    assert_eq!(log.times(), [ms(0), ms(350), ms(750)]);
    // The third attempt ends at 1050 (no timeout here); no fourth attempt
    // starts, and the last outcome is returned without waiting.
    assert_eq!(start.elapsed(), ms(1050));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_backoff_past_the_deadline_returns_the_last_outcome_at_once() {
    let (dep, log) = dependency(|_| Answer::After(ms(30), Box::new(status(503))));
    // 0.99 of a 100 ms cap: 99 ms of backoff
    let mut svc = RetryLayer::new(config().build().unwrap())
        .with_random(|| 0.99)
        .layer(dep);
    let mut req = get();
    req.extensions_mut().insert(Deadline::after(ms(100)));
    let start = Instant::now();
    assert_eq!(send(&mut svc, req).await.unwrap().status(), 503);
    assert_eq!(log.len(), 1);
    assert_eq!(start.elapsed(), ms(30));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retry_after_in_seconds_delays_the_retry() {
    let (dep, log) = dependency(|n| {
        if n == 0 {
            status_with(503, &[("retry-after", "2")])
        } else {
            ok()
        }
    });
    let mut svc = layer(config()).layer(dep);
    assert_eq!(send(&mut svc, get()).await.unwrap().status(), 200);
    assert_eq!(log.times(), [ms(0), ms(2000)]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retry_after_as_an_http_date_delays_the_retry() {
    let date = support::http_date(SystemTime::now() + Duration::from_secs(5));
    let (dep, log) = dependency(move |n| {
        if n == 0 {
            status_with(503, &[("retry-after", &date)])
        } else {
            ok()
        }
    });
    let mut svc = layer(config()).layer(dep);
    assert_eq!(send(&mut svc, get()).await.unwrap().status(), 200);
    let wait = log.times()[1];
    // whole seconds on the wire, and the wall clock moves on a little
    assert!(
        wait > Duration::from_secs(3) && wait <= Duration::from_secs(5),
        "{wait:?}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_malformed_retry_after_is_ignored() {
    for bad in ["soon", "-3", "3.5", "Sun, 99 Nov 1994 08:49:37 GMT", ""] {
        let bad = bad.to_owned();
        let (dep, log) = dependency(move |n| {
            if n == 0 {
                status_with(503, &[("retry-after", &bad)])
            } else {
                ok()
            }
        });
        let mut svc = layer(config()).layer(dep);
        assert_eq!(send(&mut svc, get()).await.unwrap().status(), 200);
        // the normal backoff
        assert_eq!(log.times(), [ms(0), ms(50)]);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_pushback_past_the_deadline_or_the_maximum_means_no_retry() {
    let (dep, log) = dependency(|_| status_with(503, &[("retry-after", "2")]));
    let mut svc = layer(config()).layer(dep.clone());
    let mut req = get();
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(1)));
    let start = Instant::now();
    assert_eq!(send(&mut svc, req).await.unwrap().status(), 503);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(log.len(), 1);

    let mut svc = layer(config().max_pushback(Duration::from_secs(1))).layer(dep);
    assert_eq!(send(&mut svc, get()).await.unwrap().status(), 503);
    assert_eq!(log.len(), 2);
}

fn grpc_request(path: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("content-type", "application/grpc")
        .header("grpc-timeout", "5S")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")))
        .unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn grpc_pushback_delays_the_retry() {
    let (dep, log) = dependency(|n| {
        if n == 0 {
            grpc(14, &[("grpc-retry-pushback-ms", "700")])
        } else {
            grpc(0, &[])
        }
    });
    let mut svc = layer(config().grpc_method("/shop.Inventory/GetStock")).layer(dep);
    let mut req = grpc_request("/shop.Inventory/GetStock");
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(5)));
    let rsp = send(&mut svc, req).await.unwrap();
    assert_eq!(rsp.headers()["grpc-status"], "0");
    assert_eq!(log.times(), [ms(0), ms(700)]);
    assert_eq!(
        log.header(1, "grpc-previous-rpc-attempts").as_deref(),
        Some("1")
    );
    assert_eq!(log.header(1, "x-attempt").as_deref(), Some("2"));
    // the deadline header says what is left, the body is the same
    assert_eq!(log.header(0, "grpc-timeout").as_deref(), Some("5S"));
    assert_eq!(log.header(1, "grpc-timeout").as_deref(), Some("4300000u"));
    assert_eq!(log.header(1, "x-deadline-ms"), None);
    let seen = log.all();
    assert_eq!(seen[0].body, seen[1].body);
    assert_eq!(seen[1].body.as_ref().unwrap().as_ref(), b"\0\0\0\0\x02hi");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_negative_or_malformed_grpc_pushback_stops_retries() {
    for value in ["-1", "-500", "soon", "1.5", ""] {
        let value = value.to_owned();
        let (dep, log) = dependency(move |_| grpc(14, &[("grpc-retry-pushback-ms", &value)]));
        let mut svc = layer(config().grpc_method("/shop.Inventory/*")).layer(dep);
        let rsp = send(&mut svc, grpc_request("/shop.Inventory/GetStock"))
            .await
            .unwrap();
        assert_eq!(rsp.headers()["grpc-status"], "14");
        assert_eq!(log.len(), 1);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn grpc_methods_are_retried_only_when_opted_in() {
    let (dep, log) = dependency(|_| grpc(14, &[]));
    let mut svc = layer(config().grpc_method("/shop.Inventory/GetStock")).layer(dep);
    send(&mut svc, grpc_request("/shop.Orders/Place"))
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
    send(&mut svc, grpc_request("/shop.Inventory/GetStock"))
        .await
        .unwrap();
    assert_eq!(log.len(), 4);
    // other codes are not retried, even on an opted-in method
    let (dep, log) = dependency(|_| grpc(3, &[]));
    let mut svc = layer(config().grpc_method("/shop.Inventory/GetStock")).layer(dep);
    send(&mut svc, grpc_request("/shop.Inventory/GetStock"))
        .await
        .unwrap();
    assert_eq!(log.len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_post_is_retried_only_with_an_idempotency_key() {
    let (dep, log) = dependency(|_| status(503));
    let mut svc = layer(config()).layer(dep);
    let post = || {
        Request::post("/orders")
            .body(Full::new(Bytes::from_static(b"{\"sku\":42}")))
            .unwrap()
    };
    assert_eq!(send(&mut svc, post()).await.unwrap().status(), 503);
    assert_eq!(log.len(), 1, "a POST without a key is sent once");

    let mut keyed = post();
    keyed
        .headers_mut()
        .insert("idempotency-key", "order-7".parse().unwrap());
    assert_eq!(send(&mut svc, keyed).await.unwrap().status(), 503);
    let seen = log.all();
    assert_eq!(seen.len(), 4, "1 + 3 attempts");
    for s in &seen[1..] {
        assert_eq!(s.method, http::Method::POST);
        assert_eq!(s.body.as_ref().unwrap().as_ref(), b"{\"sku\":42}");
        assert_eq!(s.headers["idempotency-key"], "order-7");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_custom_classifier_decides() {
    let (dep, log) = dependency(|_| status(503));
    let mut svc = RetryLayer::new(config().build().unwrap())
        .with_random(|| 0.5)
        .with_request_classifier(|p: &http::request::Parts| p.uri.path() == "/search")
        .layer(dep);
    let search = Request::post("/search").body(Full::default()).unwrap();
    send(&mut svc, search).await.unwrap();
    assert_eq!(log.len(), 3);
    send(&mut svc, get()).await.unwrap();
    assert_eq!(log.len(), 4, "a GET elsewhere is not retried any more");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_body_over_the_cap_is_sent_once() {
    // known to be too large: not even buffered
    let (dep, log) = dependency(|_| status(503));
    let mut svc = layer(config().max_replay_body(8)).layer(dep);
    let put = Request::put("/doc")
        .body(Full::new(Bytes::from_static(b"0123456789abcdef")))
        .unwrap();
    assert_eq!(send(&mut svc, put).await.unwrap().status(), 503);
    assert_eq!(log.len(), 1);
    assert_eq!(
        log.all()[0].body.as_ref().unwrap().as_ref(),
        b"0123456789abcdef"
    );

    // exactly the cap: replayed
    let put = Request::put("/doc")
        .body(Full::new(Bytes::from_static(b"01234567")))
        .unwrap();
    send(&mut svc, put).await.unwrap();
    assert_eq!(log.len(), 4);
    assert_eq!(log.all()[3].body.as_ref().unwrap().as_ref(), b"01234567");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_streamed_body_that_grows_over_the_cap_is_sent_once() {
    let (dep, log) = dependency(|_| status(503));
    let mut svc = layer(config().max_replay_body(8)).layer(dep);
    let (body, _) = Chunks::new(&[b"0123", b"4567", b"89ab"]);
    let put = Request::put("/doc").body(body).unwrap();
    assert_eq!(send(&mut svc, put).await.unwrap().status(), 503);
    assert_eq!(log.len(), 1);
    assert_eq!(
        log.all()[0].body.as_ref().unwrap().as_ref(),
        b"0123456789ab"
    );

    let (body, _) = Chunks::new(&[b"0123", b"4567"]);
    let put = Request::put("/doc").body(body).unwrap();
    send(&mut svc, put).await.unwrap();
    assert_eq!(log.len(), 4, "at the cap: replayed");
    for s in &log.all()[1..] {
        assert_eq!(s.body.as_ref().unwrap().as_ref(), b"01234567");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropping_the_future_mid_backoff_cancels_everything() {
    let (dep, log) = dependency(|_| status_with(503, &[("retry-after", "10")]));
    let layer = layer(config());
    let handle = layer.handle();
    let mut svc = layer.layer(dep);
    let (body, alive) = Chunks::new(&[b"payload"]);
    let req = Request::put("/doc").body(body).unwrap();
    let mut fut = tokio_test::task::spawn(svc.ready().await.unwrap().call(req));
    assert!(fut.poll().is_pending()); // first attempt answered; backing off 10 s
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(fut.poll().is_pending());
    assert_eq!(log.len(), 1);
    assert_eq!(handle.snapshot().retries_total(), 1);
    assert_eq!(
        Arc::strong_count(&alive),
        2,
        "a copy of the body is kept for the retry"
    );
    drop(fut);
    assert_eq!(Arc::strong_count(&alive), 1, "the copy is freed");
    tokio::time::advance(Duration::from_secs(20)).await;
    tokio::task::yield_now().await;
    assert_eq!(log.len(), 1, "no retry after the future was dropped");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropping_the_future_mid_attempt_cancels_the_attempt() {
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let hanging = tower::service_fn(move |_: Request<RetryBody<Full<Bytes>>>| {
        let guard = Guard(d.clone());
        async move {
            let _guard = guard;
            std::future::pending::<Result<Response<()>, BoxError>>().await
        }
    });
    let mut svc = layer(config().attempt_timeout(ms(100))).layer(hanging);
    let mut fut = tokio_test::task::spawn(svc.ready().await.unwrap().call(get()));
    assert!(fut.poll().is_pending());
    tokio::time::advance(ms(120)).await; // first attempt timed out, backing off
    assert!(fut.poll().is_pending());
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    tokio::time::advance(ms(60)).await; // second attempt in flight
    assert!(fut.poll().is_pending());
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    drop(fut);
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        2,
        "the attempt in flight was dropped"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_empty_budget_stops_retries() {
    let budget = RetryBudgetConfig::builder()
        .ratio(0.0)
        .min_per_second(0)
        .build()
        .unwrap();
    let (dep, log) = dependency(|_| status(503));
    let mut svc = layer(config().budget(budget)).layer(dep);
    for _ in 0..10 {
        assert_eq!(send(&mut svc, get()).await.unwrap().status(), 503);
    }
    assert_eq!(log.len(), 10, "never retried while the budget is empty");
}

/// Under sustained failure (every attempt fails), retries add at most the
/// budget's ratio to the requests of the window.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sustained_failure_never_exceeds_the_budget_ratio() {
    let window = Duration::from_secs(10);
    let budget = RetryBudgetConfig::builder()
        .ratio(0.2)
        .min_per_second(0)
        .window(window)
        .build()
        .unwrap();
    let (dep, log) = dependency(|_| status(503));
    let layer = RetryLayer::new(config().budget(budget).build().unwrap()).with_random(|| 0.0);
    let handle = layer.handle();
    let mut svc = layer.layer(dep);
    let requests = 3000;
    for _ in 0..requests {
        send(&mut svc, get()).await.unwrap();
        tokio::time::advance(ms(10)).await; // 100 requests per second
    }
    let seen = log.all();
    let firsts: Vec<Duration> = seen
        .iter()
        .filter(|s| !s.headers.contains_key(ATTEMPT_HEADER))
        .map(|s| s.at)
        .collect();
    let retries: Vec<Duration> = seen
        .iter()
        .filter(|s| s.headers.contains_key(ATTEMPT_HEADER))
        .map(|s| s.at)
        .collect();
    assert_eq!(firsts.len(), requests);
    // In every window, retries <= 20% of the requests of that window and
    // one bucket (1 s) before it, plus the 31 requests a batch may hold.
    for &t in retries.iter().step_by(7) {
        let in_window = retries
            .iter()
            .filter(|&&r| r <= t && r + window > t)
            .count();
        let funded = firsts
            .iter()
            .filter(|&&r| r <= t && r + window + Duration::from_secs(1) > t)
            .count();
        assert!(
            in_window as f64 <= 0.2 * (funded + 31) as f64,
            "{in_window} retries in the window ending {t:?}, {funded} requests"
        );
    }
    let amplification = seen.len() as f64 / requests as f64;
    assert!(
        amplification > 1.15 && amplification <= 1.2,
        "{amplification}"
    );
    let snap = handle.snapshot();
    assert_eq!(snap.requests_total(), requests as u64);
    assert_eq!(snap.retries_total(), retries.len() as u64);
}

/// After quiet seconds, a burst of failures is retried within the budget's
/// ratio of the burst's own requests (the default burst window, 1 s), not
/// with all that the quiet seconds saved in the 10 s window.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_burst_of_failures_after_quiet_seconds_keeps_to_the_ratio() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fail = failing.clone();
    let (dep, log) = dependency(move |_| {
        if fail.load(Ordering::Relaxed) {
            status(503)
        } else {
            ok()
        }
    });
    // the default budget: 20% and 10/s over 10 s, burst window 1 s
    let layer = layer(config());
    let handle = layer.handle();
    let svc = layer.layer(dep);
    // 200 requests per second: 8 s that succeed, then 2 s that fail
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..2000u32 {
        tokio::time::sleep_until(start + ms(5) * i).await;
        if i == 1600 {
            failing.store(true, Ordering::Relaxed);
        }
        let mut svc = svc.clone();
        tasks.push(tokio::spawn(async move { send(&mut svc, get()).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let retries = handle.snapshot().retries_total();
    let in_log = log
        .all()
        .iter()
        .filter(|s| s.headers.contains_key(ATTEMPT_HEADER))
        .count();
    assert_eq!(retries, in_log as u64);
    // 400 failed requests over 2 s, the last retries up to 150 ms later:
    // at most 20% of them and of one burst window of the quiet ones before
    // (120), with room for the floor's 10 per burst window besides (30).
    // The 10 s window alone would allow 20% of all 2,000: 400.
    assert!(retries <= 150, "{retries} retries");
    assert!(retries >= 60, "the budget is used: {retries} retries");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn lower_priorities_stop_retrying_first() {
    // A floor of 10 retries over the window, no ratio, all available at
    // once (no burst window).
    let budget = RetryBudgetConfig::builder()
        .ratio(0.0)
        .min_per_second(1)
        .window(Duration::from_secs(10))
        .burst_window(Duration::from_secs(10))
        .build()
        .unwrap();
    let (dep, log) = dependency(|_| status(503));
    let mut svc = layer(config().max_attempts(2).budget(budget)).layer(dep);
    async fn retries<S>(svc: &mut S, log: &support::Log, p: Priority, n: usize) -> usize
    where
        S: Service<Request<Full<Bytes>>, Response = Response<()>, Error = BoxError>,
    {
        let mut retried = 0;
        for _ in 0..n {
            let before = log.len();
            let mut req = get();
            req.extensions_mut().insert(p);
            send(svc, req).await.unwrap();
            retried += log.len() - before - 1;
        }
        retried
    }
    // sheddable retries while more than half of the 10 is left: 5 times
    assert_eq!(retries(&mut svc, &log, Priority::Sheddable, 8).await, 5);
    let critical = retries(&mut svc, &log, Priority::Critical, 8).await;
    assert_eq!(critical, 5, "critical retries while any is left");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn clones_share_one_budget() {
    let budget = RetryBudgetConfig::builder()
        .ratio(0.0)
        .min_per_second(1)
        .window(Duration::from_secs(2))
        .burst_window(Duration::from_secs(2))
        .build()
        .unwrap();
    let (dep, log) = dependency(|_| status(503));
    let layer = layer(config().max_attempts(2).budget(budget));
    let mut a = layer.layer(dep.clone());
    let mut b = a.clone();
    let mut c = layer.layer(dep);
    send(&mut a, get()).await.unwrap();
    send(&mut b, get()).await.unwrap();
    send(&mut c, get()).await.unwrap();
    assert_eq!(log.len(), 5, "2 retries in the budget, whoever asks");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn max_attempts_one_passes_everything_through() {
    let (dep, log) = dependency(|_| status(503));
    let mut svc = layer(config().max_attempts(1)).layer(dep);
    assert_eq!(send(&mut svc, get()).await.unwrap().status(), 503);
    assert_eq!(log.len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_attempt_header_names_every_retry() {
    let (dep, log) = dependency(|_| status(502));
    let mut svc = layer(config().max_attempts(4)).layer(dep);
    send(&mut svc, get()).await.unwrap();
    let attempts: Vec<Option<String>> = (0..4)
        .map(|i| log.header(i, ATTEMPT_HEADER.as_str()))
        .collect();
    assert_eq!(
        attempts,
        [None, Some("2".into()), Some("3".into()), Some("4".into())]
    );
    assert!(
        log.all()
            .iter()
            .all(|s| !s.headers.contains_key(GRPC_PREVIOUS_RPC_ATTEMPTS_HEADER))
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_response_body_of_the_answer_is_untouched() {
    let answer = tower::service_fn(|req: Request<RetryBody<Full<Bytes>>>| async move {
        let body = req.into_body().collect().await?.to_bytes();
        Ok::<_, BoxError>(Response::new(body))
    });
    let mut svc = layer(config()).layer(answer);
    let rsp = svc
        .ready()
        .await
        .unwrap()
        .call(
            Request::put("/x")
                .body(Full::new(Bytes::from_static(b"echo")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rsp.into_body(), "echo");
}

#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn emits_metrics() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    // 2 retries in the budget (a floor of 1/s over 2 s, all available at
    // once), 3 attempts each
    let budget = RetryBudgetConfig::builder()
        .ratio(0.0)
        .min_per_second(1)
        .window(Duration::from_secs(2))
        .burst_window(Duration::from_secs(2))
        .build()
        .unwrap();
    let (dep, _log) = dependency(|n| match n {
        0 => status(503),
        1 => Answer::Error(std::io::Error::other("reset").into()),
        _ => status(503),
    });
    let mut svc = layer(config().name("metered").budget(budget)).layer(dep);
    send(&mut svc, get()).await.unwrap(); // 503, error, 503: max attempts
    let mut sheddable = get();
    sheddable.extensions_mut().insert(Priority::Sheddable);
    send(&mut svc, sheddable).await.unwrap(); // budget exhausted
    send(&mut svc, Request::post("/x").body(Full::default()).unwrap())
        .await
        .unwrap(); // not retryable: no decline counted

    let mut seen = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        seen.insert(
            format!("{}{{{}}}", key.key().name(), labels.join(",")),
            value,
        );
    }
    let get = |k: &str| seen.get(k).unwrap_or_else(|| panic!("{k} in {seen:?}"));
    assert_eq!(
        get("resilience_retry_attempts_total{name=metered}"),
        &DebugValue::Counter(5)
    );
    assert_eq!(
        get("resilience_retry_retries_total{name=metered,reason=status}"),
        &DebugValue::Counter(1)
    );
    assert_eq!(
        get("resilience_retry_retries_total{name=metered,reason=error}"),
        &DebugValue::Counter(1)
    );
    assert_eq!(
        get("resilience_retry_declined_total{name=metered,reason=max_attempts,priority=critical}"),
        &DebugValue::Counter(1)
    );
    assert_eq!(
        get(
            "resilience_retry_declined_total{name=metered,reason=budget_exhausted,priority=sheddable}"
        ),
        &DebugValue::Counter(1)
    );
    assert_eq!(
        get("resilience_retry_declined_total{name=metered,reason=deadline,priority=critical}"),
        &DebugValue::Counter(0)
    );
}

/// A retry waits for the inner service to be ready again, and the deadline
/// is checked once more before the attempt starts.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_retry_waits_for_readiness_and_not_past_the_deadline() {
    use tokio_test::{assert_pending, assert_ready};
    use tower_test::mock;

    let (inner, mut handle) = mock::pair::<Request<RetryBody<Full<Bytes>>>, Response<()>>();
    handle.allow(1);
    let mut svc = layer(config()).layer(inner);
    let mut req = get();
    req.extensions_mut().insert(Deadline::after(ms(500)));
    let mut fut = tokio_test::task::spawn(svc.ready().await.unwrap().call(req));
    assert_pending!(fut.poll());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::builder().status(503).body(()).unwrap());
    assert_pending!(fut.poll()); // backing off 50 ms
    tokio::time::advance(ms(60)).await;
    assert_pending!(fut.poll()); // waiting for the inner service to be ready
    assert_pending!(handle.poll_request());
    tokio::time::advance(ms(600)).await; // the deadline passes meanwhile
    handle.allow(1);
    let rsp = assert_ready!(fut.poll()).unwrap();
    assert_eq!(rsp.status(), 503, "the last outcome, no late attempt");
    assert_pending!(handle.poll_request());

    // Without a deadline, the retry goes once the service is ready.
    handle.allow(1);
    let mut fut = tokio_test::task::spawn(svc.ready().await.unwrap().call(get()));
    assert_pending!(fut.poll());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::builder().status(503).body(()).unwrap());
    assert_pending!(fut.poll()); // backing off
    tokio::time::advance(ms(60)).await;
    assert_pending!(fut.poll()); // waiting for readiness
    handle.allow(1);
    assert_pending!(fut.poll());
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.headers()["x-attempt"], "2");
    send.send_response(Response::new(()));
    assert_eq!(assert_ready!(fut.poll()).unwrap().status(), 200);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_reconfiguration_applies_to_the_next_requests_and_keeps_the_budget() {
    let (dep, log) = dependency(|_| status(503));
    let layer = layer(config().max_attempts(3));
    let handle = layer.handle();
    let mut svc = layer.layer(dep);
    assert_eq!(send(&mut svc, get()).await.unwrap().status(), 503);
    assert_eq!(log.len(), 3);
    let spent = handle.snapshot();
    assert_eq!(spent.retries_total(), 2);

    // Fewer tries and a longer backoff: the next request uses them, the
    // budget keeps what it counted.
    let new = config()
        .max_attempts(2)
        .backoff(ms(400), Duration::from_secs(1))
        .build()
        .unwrap();
    assert!(handle.reconfigure(&new).is_empty());
    assert_eq!(handle.snapshot().retries_total(), 2);
    assert_eq!(handle.snapshot().requests_total(), spent.requests_total());
    let start = Instant::now();
    assert_eq!(send(&mut svc, get()).await.unwrap().status(), 503);
    assert_eq!(log.len(), 5, "two tries");
    assert_eq!(start.elapsed(), ms(200), "half the new cap of 400 ms");
    assert_eq!(handle.config().max_attempts(), 2);

    // Restart-only settings are listed and keep their old values.
    let renamed = config().name("other").max_attempts(4).build().unwrap();
    assert_eq!(handle.reconfigure(&renamed), ["name"]);
    assert_eq!(handle.config().name(), RetryConfig::default().name());
    assert_eq!(handle.config().max_attempts(), 4);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_lower_budget_ratio_applies_to_the_next_retries() {
    let (dep, log) = dependency(|_| status(503));
    let budget = |ratio: f64| {
        RetryBudgetConfig::builder()
            .ratio(ratio)
            .min_per_second(0)
            .build()
            .unwrap()
    };
    let layer = layer(config().max_attempts(2).budget(budget(1.0)));
    let handle = layer.handle();
    let mut svc = layer.layer(dep);
    assert_eq!(send(&mut svc, get()).await.unwrap().status(), 503);
    assert_eq!(
        log.len(),
        2,
        "retried: the ratio allows one retry per request"
    );
    let new = config()
        .max_attempts(2)
        .budget(budget(0.01))
        .build()
        .unwrap();
    assert!(handle.reconfigure(&new).is_empty());
    assert_eq!(send(&mut svc, get()).await.unwrap().status(), 503);
    assert_eq!(log.len(), 3, "not retried: 1% of two requests allows none");
    assert_eq!(
        handle.snapshot().retries_total(),
        1,
        "the retry counted before is kept"
    );
}
