//! The hedge layer through its public API, with paused time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use resilience_core::attempt::ATTEMPT_HEADER;
use resilience_core::{Attempt, AttemptFromExtensions, BoxError};
use resilience_discovery::{Endpoint, RoundRobinBuilder};
use resilience_retry::{
    HedgeConfig, HedgeConfigBuilder, HedgeLayer, RetryBody, RetryBudget, RetryBudgetConfig,
    RetryConfig, RetryLayer,
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// How the dependency answers one call: after this long (`None`: never),
/// with this status.
type Script = fn(usize) -> (Option<Duration>, u16);

/// One call as the dependency saw it.
#[derive(Debug, Clone)]
struct Call {
    attempt: Option<Attempt>,
    attempt_header: Option<String>,
    body: Bytes,
}

/// Every call, and the calls whose future was dropped before it answered.
#[derive(Clone, Default)]
struct Probe {
    calls: Arc<Mutex<Vec<Call>>>,
    cancelled: Arc<Mutex<Vec<usize>>>,
    in_flight: Arc<AtomicUsize>,
}

/// Records a call cancelled if its future is dropped before it answered.
struct Guard {
    n: usize,
    probe: Probe,
    answered: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.probe.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.answered {
            self.probe.cancelled.lock().unwrap().push(self.n);
        }
    }
}

impl Probe {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn cancelled(&self) -> Vec<usize> {
        self.cancelled.lock().unwrap().clone()
    }

    /// A dependency answering call `n` (from 0) as `script(n)` says; the
    /// response carries `x-call: n`.
    fn service(
        &self,
        script: Script,
    ) -> impl Service<
        Request<RetryBody<Full<Bytes>>>,
        Response = Response<usize>,
        Error = BoxError,
        Future = impl Send,
    > + Clone
    + Send {
        let probe = self.clone();
        service_fn(move |req: Request<RetryBody<Full<Bytes>>>| {
            let probe = probe.clone();
            let n = {
                let mut calls = probe.calls.lock().unwrap();
                calls.push(Call {
                    attempt: Attempt::from_extensions(req.extensions()).cloned(),
                    attempt_header: req
                        .headers()
                        .get(ATTEMPT_HEADER)
                        .map(|v| v.to_str().unwrap().to_owned()),
                    body: Bytes::new(),
                });
                calls.len() - 1
            };
            probe.in_flight.fetch_add(1, Ordering::SeqCst);
            let guard = Guard {
                n,
                probe: probe.clone(),
                answered: false,
            };
            async move {
                let mut guard = guard;
                let body = req.into_body().collect().await?.to_bytes();
                probe.calls.lock().unwrap()[n].body = body;
                let (after, status) = script(n);
                match after {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
                guard.answered = true;
                Ok::<_, BoxError>(Response::builder().status(status).body(n).unwrap())
            }
        })
    }
}

fn config() -> HedgeConfigBuilder {
    HedgeConfig::builder()
        .name("inventory")
        .delay(Duration::from_millis(50))
}

fn get() -> Request<Full<Bytes>> {
    Request::get("/stock/42").body(Full::default()).unwrap()
}

const MS: fn(u64) -> Duration = Duration::from_millis;

#[tokio::test(start_paused = true)]
async fn a_slow_first_attempt_loses_to_the_hedge_which_cancels_it() {
    let probe = Probe::default();
    // The first call stalls for 1 s, the hedge answers in 10 ms.
    let svc = probe.service(|n| match n {
        0 => (Some(MS(1000)), 200),
        _ => (Some(MS(10)), 200),
    });
    let layer = HedgeLayer::new(config().build().unwrap());
    let handle = layer.handle();
    let start = Instant::now();
    let rsp = layer.layer(svc).oneshot(get()).await.unwrap();

    assert_eq!(*rsp.body(), 1, "the hedge answered");
    assert_eq!(start.elapsed(), MS(60), "50 ms of delay, 10 ms of hedge");
    assert_eq!(probe.cancelled(), [0], "the first attempt was dropped");
    assert_eq!(probe.in_flight.load(Ordering::SeqCst), 0);
    assert_eq!((handle.hedges_total(), handle.hedges_won_total()), (1, 1));
    assert_eq!(handle.budget().snapshot().retries_total(), 1);
    let snap = handle.snapshot();
    assert_eq!((snap.hedges_total(), snap.hedges_won_total()), (1, 1));
    assert_eq!(snap.delay(), MS(50));
    assert!(!snap.is_delay_learned());
    assert_eq!(
        snap.budget().retries(),
        1,
        "the hedge was paid from the budget"
    );
    assert!(snap.budget().level() < 1.0);

    let calls = probe.calls();
    assert!(
        calls[0].attempt.is_none(),
        "the first try carries no attempt"
    );
    let hedge = calls[1].attempt.as_ref().unwrap();
    assert_eq!(hedge.number(), 2);
    assert_eq!(calls[0].attempt_header, None);
    assert_eq!(calls[1].attempt_header.as_deref(), Some("2"));
}

#[tokio::test(start_paused = true)]
async fn a_fast_first_attempt_sends_no_hedge() {
    let probe = Probe::default();
    let svc = probe.service(|_| (Some(MS(49)), 200));
    let layer = HedgeLayer::new(config().build().unwrap());
    let handle = layer.handle();
    let mut svc = layer.layer(svc);
    for _ in 0..3 {
        let rsp = svc.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(rsp.status(), 200);
    }
    tokio::time::sleep(MS(1000)).await;
    assert_eq!(probe.calls().len(), 3);
    assert_eq!(handle.hedges_total(), 0);
    assert_eq!(handle.budget().snapshot().retries_total(), 0);
    assert!(probe.cancelled().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_request_that_may_not_be_sent_twice_is_never_hedged() {
    let probe = Probe::default();
    let svc = probe.service(|_| (Some(MS(1000)), 200));
    let layer = HedgeLayer::new(config().build().unwrap());
    let handle = layer.handle();
    let start = Instant::now();
    let post = Request::post("/orders")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let rsp = layer.layer(svc).oneshot(post).await.unwrap();
    assert_eq!(*rsp.body(), 0);
    assert_eq!(start.elapsed(), MS(1000));
    let calls = probe.calls();
    assert_eq!(calls.len(), 1, "not hedged");
    assert!(calls[0].attempt.is_none(), "passed through untouched");
    assert_eq!(calls[0].body, "{}");
    assert_eq!(handle.hedges_total(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_sends_no_hedge() {
    let probe = Probe::default();
    let svc = probe.service(|_| (Some(MS(1000)), 200));
    let empty = RetryBudgetConfig::builder()
        .ratio(0.0)
        .min_per_second(0)
        .build()
        .unwrap();
    let layer = HedgeLayer::new(config().build().unwrap()).with_budget(RetryBudget::new(empty));
    let handle = layer.handle();
    let start = Instant::now();
    let rsp = layer.layer(svc).oneshot(get()).await.unwrap();
    assert_eq!(*rsp.body(), 0);
    assert_eq!(start.elapsed(), MS(1000));
    assert_eq!(probe.calls().len(), 1);
    assert_eq!(handle.hedges_total(), 0);
}

#[tokio::test(start_paused = true)]
async fn hedges_share_the_retry_layers_budget() {
    let calls = Arc::new(AtomicUsize::new(0));
    let count = calls.clone();
    // Below a retry layer, the hedge layer sees its `RetryBody`.
    let svc = service_fn(move |_: Request<RetryBody<RetryBody<Full<Bytes>>>>| {
        let n = count.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(if n == 0 { MS(1000) } else { MS(1) }).await;
            Ok::<_, BoxError>(Response::new(n))
        }
    });
    let retry = RetryLayer::new(RetryConfig::builder().name("inventory").build().unwrap());
    let hedge = HedgeLayer::new(config().build().unwrap()).with_budget(retry.budget().clone());
    let client = ServiceBuilder::new()
        .layer(retry.clone())
        .layer(hedge)
        .service(svc);
    let rsp = client.oneshot(get()).await.unwrap();
    assert_eq!(*rsp.body(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let snap = retry.handle().snapshot();
    assert_eq!(
        snap.requests_total(),
        1,
        "the retry layer counts the request once"
    );
    assert_eq!(
        snap.retries_total(),
        1,
        "the hedge was drawn from its budget"
    );
}

#[tokio::test(start_paused = true)]
async fn the_learned_percentile_replaces_the_fixed_delay_after_min_samples() {
    let probe = Probe::default();
    // Calls 0 to 2 answer in 20 ms; call 3 stalls, its hedge (call 4)
    // answers at once.
    let svc = probe.service(|n| match n {
        0..=2 => (Some(MS(20)), 200),
        3 => (None, 200),
        _ => (Some(Duration::ZERO), 200),
    });
    let config = config()
        .delay(MS(500))
        .percentile(0.95)
        .min_samples(3)
        .build()
        .unwrap();
    let layer = HedgeLayer::new(config);
    let handle = layer.handle();
    let mut svc = layer.layer(svc);
    for i in 0..3 {
        assert_eq!(handle.delay(), MS(500), "fixed before {i} samples");
        assert!(!handle.is_delay_learned());
        svc.ready().await.unwrap().call(get()).await.unwrap();
    }
    assert!(handle.is_delay_learned());
    assert_eq!(handle.delay(), MS(20));

    let start = Instant::now();
    let rsp = svc.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(*rsp.body(), 4, "the hedge answered");
    assert_eq!(start.elapsed(), MS(20), "hedged after the learned p95");
    assert_eq!(probe.cancelled(), [3]);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_response_future_drops_every_attempt() {
    let probe = Probe::default();
    let svc = probe.service(|_| (None, 200));
    let layer = HedgeLayer::new(config().max_hedges(2).build().unwrap());
    let handle = layer.handle();
    let mut svc = layer.layer(svc);
    let mut fut = tokio_test::task::spawn(svc.ready().await.unwrap().call(get()));
    assert!(fut.poll().is_pending());
    for _ in 0..2 {
        tokio::time::sleep(MS(50)).await;
        assert!(fut.poll().is_pending());
    }
    assert_eq!(probe.calls().len(), 3, "the first attempt and two hedges");
    assert_eq!(probe.in_flight.load(Ordering::SeqCst), 3);
    assert_eq!(handle.hedges_total(), 2);
    // No third hedge: at most `max_hedges`.
    tokio::time::sleep(MS(500)).await;
    assert!(fut.poll().is_pending());
    assert_eq!(probe.calls().len(), 3);

    drop(fut);
    assert_eq!(probe.in_flight.load(Ordering::SeqCst), 0);
    let mut cancelled = probe.cancelled();
    cancelled.sort_unstable();
    assert_eq!(cancelled, [0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_hedge_does_not_end_the_race() {
    let probe = Probe::default();
    // The hedge fails fast with 503; the first attempt answers at 200 ms.
    let svc = probe.service(|n| match n {
        0 => (Some(MS(200)), 200),
        _ => (Some(MS(1)), 503),
    });
    let layer = HedgeLayer::new(config().build().unwrap());
    let handle = layer.handle();
    let rsp = layer.layer(svc).oneshot(get()).await.unwrap();
    assert_eq!((rsp.status().as_u16(), *rsp.body()), (200, 0));
    assert_eq!((handle.hedges_total(), handle.hedges_won_total()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn when_every_attempt_fails_the_last_outcome_is_returned() {
    let probe = Probe::default();
    let svc = probe.service(|n| match n {
        0 => (Some(MS(100)), 503),
        _ => (Some(MS(100)), 502),
    });
    let layer = HedgeLayer::new(config().build().unwrap());
    let rsp = layer.layer(svc).oneshot(get()).await.unwrap();
    assert_eq!(rsp.status(), 502, "the hedge finished last");
}

#[tokio::test(start_paused = true)]
async fn the_hedge_replays_the_body_and_a_body_over_the_cap_is_not_hedged() {
    let probe = Probe::default();
    let svc = probe.service(|n| match n {
        0 | 2 => (Some(MS(1000)), 200),
        _ => (Some(MS(1)), 200),
    });
    let layer = HedgeLayer::new(config().max_replay_body(4).build().unwrap());
    let mut svc = layer.layer(svc);
    let put = |body: &'static [u8]| {
        Request::put("/stock/42")
            .body(Full::new(Bytes::from_static(body)))
            .unwrap()
    };
    let rsp = svc.ready().await.unwrap().call(put(b"abcd")).await.unwrap();
    assert_eq!(*rsp.body(), 1);
    let calls = probe.calls();
    assert_eq!(
        (&calls[0].body[..], &calls[1].body[..]),
        (&b"abcd"[..], &b"abcd"[..])
    );

    let start = Instant::now();
    let rsp = svc
        .ready()
        .await
        .unwrap()
        .call(put(b"abcde"))
        .await
        .unwrap();
    assert_eq!(*rsp.body(), 2);
    assert_eq!(start.elapsed(), MS(1000), "over the cap: sent once");
    assert_eq!(probe.calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_hedge_lands_on_another_endpoint() {
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    type Seen = Arc<Mutex<Vec<(SocketAddr, Option<Attempt>)>>>;
    let seen: Seen = Arc::default();
    let log = seen.clone();
    // Endpoint 1 stalls; the others answer at once.
    let balancer = RoundRobinBuilder::new()
        .avoid_tried(AttemptFromExtensions)
        .build_with_endpoints(
            (1..=3).map(|p| Endpoint::new(addr(p))),
            move |ep: &Endpoint| {
                let at = ep.addr();
                let log = log.clone();
                service_fn(move |req: Request<RetryBody<Full<Bytes>>>| {
                    let attempt = Attempt::from_extensions(req.extensions()).cloned();
                    log.lock().unwrap().push((at, attempt));
                    async move {
                        if at == addr(1) {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Ok::<_, BoxError>(Response::new(at))
                    }
                })
            },
        );
    let client = ServiceBuilder::new()
        .layer(HedgeLayer::new(config().build().unwrap()))
        .service(balancer);
    let rsp = client.oneshot(get()).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, addr(1));
    assert_ne!(seen[1].0, addr(1));
    assert_eq!(*rsp.body(), seen[1].0);
    // The first try carries no attempt: the balancer reported its pick
    // to the hedge layer, which started the hedge's record with it.
    assert!(seen[0].1.is_none());
    let hedge = seen[1].1.as_ref().unwrap();
    assert_eq!(hedge.number(), 2);
    assert_eq!(hedge.tried().as_slice(), [seen[0].0, seen[1].0]);
}

#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn emits_hedge_metrics() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use resilience_retry::names::{RETRY_HEDGES_TOTAL, RETRY_HEDGES_WON_TOTAL};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let probe = Probe::default();
    // Request 1: the hedge wins. Request 2: the first attempt wins over
    // its hedge. Request 3: no hedge.
    let svc = probe.service(|n| match n {
        0 => (Some(MS(1000)), 200),
        1 => (Some(MS(1)), 200),
        2 => (Some(MS(60)), 200),
        3 => (Some(MS(1000)), 200),
        _ => (Some(MS(1)), 200),
    });
    let mut svc = HedgeLayer::new(config().name("metered").build().unwrap()).layer(svc);
    for _ in 0..3 {
        svc.ready().await.unwrap().call(get()).await.unwrap();
    }

    let snapshot = snapshotter.snapshot().into_vec();
    let counter = |name: &str| {
        snapshot
            .iter()
            .find(|(key, ..)| {
                key.key().name() == name
                    && key
                        .key()
                        .labels()
                        .any(|l| l.key() == "name" && l.value() == "metered")
            })
            .map(|(.., value)| value)
    };
    assert_eq!(counter(RETRY_HEDGES_TOTAL), Some(&DebugValue::Counter(2)));
    assert_eq!(
        counter(RETRY_HEDGES_WON_TOTAL),
        Some(&DebugValue::Counter(1))
    );
}
