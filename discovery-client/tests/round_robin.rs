//! The balancer and passive ejection, driven through mocks with paused time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use resilience_core::{BoxError, HttpOutcome, Rejected, RejectionKind};
use resilience_discovery::health::{HealthCheckConfig, check_fn};
use resilience_discovery::source::StaticSource;
use resilience_discovery::{
    Endpoint, EndpointState, RoundRobin, RoundRobinBuilder, RoundRobinConfig,
};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Service, ServiceExt, service_fn};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn endpoints(n: u16) -> Vec<Endpoint> {
    (1..=n).map(|p| Endpoint::new(addr(p))).collect()
}

type Counts = Arc<Mutex<HashMap<SocketAddr, usize>>>;

/// An endpoint service that counts its calls and answers `status(addr)`.
fn counting(
    counts: &Counts,
    status: impl Fn(SocketAddr) -> u16 + Clone + Send + Sync + 'static,
) -> impl Fn(&Endpoint) -> tower::util::BoxCloneSyncService<Request<()>, Response<()>, BoxError>
+ Send
+ Sync
+ 'static {
    let counts = counts.clone();
    move |ep: &Endpoint| {
        let counts = counts.clone();
        let status = status.clone();
        let a = ep.addr();
        tower::util::BoxCloneSyncService::new(service_fn(move |_req: Request<()>| {
            *counts.lock().unwrap().entry(a).or_default() += 1;
            let code = status(a);
            async move {
                Ok::<_, BoxError>(
                    Response::builder()
                        .status(code)
                        .body(())
                        .expect("valid response"),
                )
            }
        }))
    }
}

async fn send<S>(svc: &mut S, n: usize) -> usize
where
    S: Service<Request<()>, Response = Response<()>, Error = BoxError>,
{
    let mut errors = 0;
    for _ in 0..n {
        let rsp = svc.ready().await.unwrap().call(Request::new(())).await;
        match rsp {
            Ok(rsp) if rsp.status().is_server_error() => errors += 1,
            Ok(_) => {}
            Err(_) => errors += 1,
        }
    }
    errors
}

fn count(counts: &Counts, port: u16) -> usize {
    counts
        .lock()
        .unwrap()
        .get(&addr(port))
        .copied()
        .unwrap_or(0)
}

fn reset(counts: &Counts) {
    counts.lock().unwrap().clear();
}

type Endpoints = tower::util::BoxCloneSyncService<Request<()>, Response<()>, BoxError>;

/// A balancer over `n` counting endpoints with `config`, classifying by
/// HTTP status, where the endpoint on port 1 answers 500 and the others 200.
fn first_answers_500(
    counts: &Counts,
    n: u16,
    config: RoundRobinConfig,
) -> RoundRobin<Endpoints, HttpOutcome> {
    RoundRobinBuilder::new()
        .config(config)
        .with_classifier(HttpOutcome::new())
        .build_with_endpoints(
            endpoints(n),
            counting(counts, |a| if a.port() == 1 { 500 } else { 200 }),
        )
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn spreads_3000_requests_1000_each_over_3() {
    let counts = Counts::default();
    let mut rr = RoundRobin::new(endpoints(3), counting(&counts, |_| 200));
    assert_eq!(send(&mut rr, 3000).await, 0);
    for port in 1..=3 {
        let n = count(&counts, port);
        assert!(n.abs_diff(1000) <= 1, "endpoint {port} got {n}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn clones_share_the_turn() {
    let counts = Counts::default();
    let rr = RoundRobin::new(endpoints(3), counting(&counts, |_| 200));
    let mut a = rr.clone();
    let mut b = rr.clone();
    for _ in 0..500 {
        send(&mut a, 1).await;
        send(&mut b, 1).await;
    }
    for port in 1..=3 {
        let n = count(&counts, port);
        assert!(n.abs_diff(333) <= 1, "endpoint {port} got {n}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn weights_are_honoured() {
    let counts = Counts::default();
    let eps = vec![
        Endpoint::new(addr(1)).with_weight(3),
        Endpoint::new(addr(2)).with_weight(1),
    ];
    let mut rr = RoundRobin::new(eps, counting(&counts, |_| 200));
    send(&mut rr, 400).await;
    assert_eq!(count(&counts, 1), 300);
    assert_eq!(count(&counts, 2), 100);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn endpoint_answering_500_is_ejected_404_is_not() {
    let counts = Counts::default();
    let config = RoundRobinConfig::builder()
        .consecutive_failures(3)
        .base_ejection_time(Duration::from_secs(10))
        .max_ejection_percent(100)
        .build()
        .unwrap();
    let mut rr = RoundRobinBuilder::new()
        .config(config)
        .with_classifier(HttpOutcome::new())
        .build_with_endpoints(
            endpoints(3),
            counting(&counts, |a| match a.port() {
                1 => 500,
                2 => 404,
                _ => 200,
            }),
        );
    // Failover: the dead endpoint fails exactly `consecutive_failures`
    // requests before it is ejected.
    let failures = send(&mut rr, 300).await;
    assert_eq!(failures, 3);
    assert_eq!(count(&counts, 1), 3);
    assert_eq!(count(&counts, 2) + count(&counts, 3), 297);
    assert!(count(&counts, 2).abs_diff(count(&counts, 3)) <= 3);
    let snap = rr.handle().snapshot();
    assert_eq!(snap.count(EndpointState::Ejected), 1);
    assert_eq!(snap.count(EndpointState::Healthy), 2);
    assert_eq!(snap.endpoints[0].state, EndpointState::Ejected);

    // Back after the base ejection time; fails again; the second ejection is
    // twice as long.
    tokio::time::advance(Duration::from_secs(10)).await;
    reset(&counts);
    assert_eq!(send(&mut rr, 30).await, 3);
    assert_eq!(count(&counts, 1), 3);
    tokio::time::advance(Duration::from_secs(10)).await;
    reset(&counts);
    send(&mut rr, 30).await;
    assert_eq!(count(&counts, 1), 0, "still ejected: 2 x base");
    tokio::time::advance(Duration::from_secs(10)).await;
    reset(&counts);
    send(&mut rr, 30).await;
    assert_eq!(count(&counts, 1), 3);
    // Third ejection: 3 x base. After it ends and a quiet spell of
    // max_ejection_time, the multiplier starts over at 1 x base.
    tokio::time::advance(Duration::from_secs(30)).await;
    send(&mut rr, 30).await; // back, fails 3 times: ejected (4 x base)
    tokio::time::advance(Duration::from_secs(40)).await;
    send(&mut rr, 30).await; // back, ejected again (5 x base = 50 s)
    tokio::time::advance(Duration::from_secs(50)).await;
    reset(&counts);
    send(&mut rr, 30).await;
    assert_eq!(count(&counts, 1), 3, "back after 5 x base");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn ejection_multiplier_starts_over_after_a_quiet_spell() {
    let counts = Counts::default();
    let failing = Arc::new(AtomicBool::new(true));
    let f = failing.clone();
    let config = RoundRobinConfig::builder()
        .consecutive_failures(1)
        .base_ejection_time(Duration::from_secs(10))
        .max_ejection_time(Duration::from_secs(60))
        .max_ejection_percent(100)
        .panic_threshold_percent(0)
        .build()
        .unwrap();
    let mut rr = RoundRobinBuilder::new()
        .config(config)
        .with_classifier(HttpOutcome::new())
        .build_with_endpoints(
            endpoints(2),
            counting(&counts, move |a| {
                if a.port() == 1 && f.load(Ordering::Relaxed) {
                    500
                } else {
                    200
                }
            }),
        );
    send(&mut rr, 2).await; // ejected for 10 s
    tokio::time::advance(Duration::from_secs(10)).await;
    send(&mut rr, 2).await; // back, fails: ejected for 20 s
    tokio::time::advance(Duration::from_secs(20)).await;
    failing.store(false, Ordering::Relaxed);
    send(&mut rr, 2).await; // back and fine
    // A quiet minute (max_ejection_time), then a failure: 1 x base again.
    tokio::time::advance(Duration::from_secs(60)).await;
    failing.store(true, Ordering::Relaxed);
    send(&mut rr, 2).await;
    assert_eq!(rr.handle().snapshot().count(EndpointState::Ejected), 1);
    tokio::time::advance(Duration::from_secs(10)).await;
    reset(&counts);
    failing.store(false, Ordering::Relaxed);
    send(&mut rr, 4).await;
    assert_eq!(count(&counts, 1), 2, "ejected for 10 s, not 30 s");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn ejects_at_most_the_configured_share() {
    let counts = Counts::default();
    let config = RoundRobinConfig::builder()
        .consecutive_failures(2)
        .max_ejection_percent(10)
        .panic_threshold_percent(0)
        .build()
        .unwrap();
    let mut rr = RoundRobinBuilder::new()
        .config(config)
        .with_classifier(HttpOutcome::new())
        .build_with_endpoints(endpoints(3), counting(&counts, |_| 503));
    send(&mut rr, 30).await;
    let snap = rr.handle().snapshot();
    // 10% of 3 rounds down to 0, but one endpoint may always be ejected.
    assert_eq!(snap.count(EndpointState::Ejected), 1);
    assert_eq!(snap.count(EndpointState::Healthy), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn no_endpoint_is_a_typed_503() {
    let counts = Counts::default();
    let mut rr = RoundRobin::new(Vec::new(), counting(&counts, |_| 200));
    let err = rr
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    let rejected = err.downcast_ref::<Rejected>().expect("a Rejected");
    assert_eq!(rejected.kind(), RejectionKind::NoHealthyEndpoint);
    assert_eq!(resilience_core::http::error_response(&*err).status(), 503);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn errors_pass_through_and_eject() {
    let config = RoundRobinConfig::builder()
        .consecutive_failures(2)
        .build()
        .unwrap();
    let mut rr = RoundRobinBuilder::new()
        .config(config)
        .build_with_endpoints(endpoints(1), |_: &Endpoint| {
            service_fn(|_: ()| async { Err::<(), _>(std::io::Error::other("refused")) })
        });
    for _ in 0..2 {
        let err = rr.ready().await.unwrap().call(()).await.unwrap_err();
        assert!(err.is::<std::io::Error>(), "inner error unchanged: {err}");
    }
    // The only endpoint is ejected: 0% healthy is below the panic threshold,
    // so traffic still goes to it rather than nowhere.
    assert!(rr.handle().snapshot().panic);
    let err = rr.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(err.is::<std::io::Error>());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn without_panic_all_ejected_is_no_healthy_endpoint() {
    let config = RoundRobinConfig::builder()
        .consecutive_failures(1)
        .panic_threshold_percent(0)
        .build()
        .unwrap();
    let mut rr = RoundRobinBuilder::new()
        .config(config)
        .build_with_endpoints(endpoints(1), |_: &Endpoint| {
            service_fn(|_: ()| async { Err::<(), _>(std::io::Error::other("refused")) })
        });
    assert!(rr.ready().await.unwrap().call(()).await.is_err());
    let err = rr.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(err.is::<Rejected>());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn skips_endpoints_that_are_not_ready() {
    let (a, mut ha) = tower_test::mock::pair::<&'static str, &'static str>();
    let (b, mut hb) = tower_test::mock::pair::<&'static str, &'static str>();
    let mocks = HashMap::from([(addr(1), a), (addr(2), b)]);
    let mut rr =
        tower_test::mock::Spawn::new(RoundRobin::new(endpoints(2), move |ep: &Endpoint| {
            mocks[&ep.addr()].clone()
        }));
    ha.allow(0);
    hb.allow(10);
    for _ in 0..4 {
        assert_ready_ok!(rr.poll_ready());
        let fut = rr.call("hi");
        let (_, send) = hb.next_request().await.expect("b gets every request");
        send.send_response("ok");
        assert_eq!(fut.await.unwrap(), "ok");
    }
    hb.allow(0);
    assert_pending!(rr.poll_ready());
    ha.allow(1);
    assert!(rr.is_woken());
    assert_ready_ok!(rr.poll_ready());
    let fut = rr.call("hi");
    let (_, send) = ha.next_request().await.unwrap();
    send.send_response("from a");
    assert_eq!(fut.await.unwrap(), "from a");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn removed_endpoint_finishes_in_flight_and_gets_no_new_requests() {
    let (a, mut ha) = tower_test::mock::pair::<&'static str, &'static str>();
    let (b, mut hb) = tower_test::mock::pair::<&'static str, &'static str>();
    let mocks = HashMap::from([(addr(1), a), (addr(2), b)]);
    let mut rr = RoundRobin::new(endpoints(2), move |ep: &Endpoint| mocks[&ep.addr()].clone());
    let handle = rr.handle();
    let in_flight = rr.ready().await.unwrap().call("first");
    let (req, send_a) = ha.next_request().await.unwrap();
    assert_eq!(req, "first");
    handle.remove(addr(1));
    for _ in 0..3 {
        let fut = rr.ready().await.unwrap().call("next");
        let (_, send) = hb.next_request().await.unwrap();
        send.send_response("b");
        assert_eq!(fut.await.unwrap(), "b");
    }
    send_a.send_response("a finished");
    assert_eq!(in_flight.await.unwrap(), "a finished");
    assert_pending!(tokio_test::task::spawn(ha.next_request()).poll());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn new_endpoint_gets_traffic_at_once() {
    let counts = Counts::default();
    let mut rr = RoundRobin::new(endpoints(2), counting(&counts, |_| 200));
    send(&mut rr, 10).await;
    rr.handle().insert(Endpoint::new(addr(3)));
    reset(&counts);
    send(&mut rr, 30).await;
    for port in 1..=3 {
        assert_eq!(count(&counts, port), 10);
    }
}

/// Health flags per endpoint, flipped by the test.
fn health_flags(n: u16) -> Arc<HashMap<SocketAddr, AtomicBool>> {
    Arc::new((1..=n).map(|p| (addr(p), AtomicBool::new(true))).collect())
}

fn flag_check(
    flags: &Arc<HashMap<SocketAddr, AtomicBool>>,
    checks: &Arc<AtomicUsize>,
) -> impl resilience_discovery::health::CheckHealth {
    let flags = flags.clone();
    let checks = checks.clone();
    check_fn(move |ep: &Endpoint| {
        checks.fetch_add(1, Ordering::Relaxed);
        let ok = flags[&ep.addr()].load(Ordering::Relaxed);
        async move { if ok { Ok(()) } else { Err("503".into()) } }
    })
}

/// Checks exactly every 10 s: the tests below count checks against the
/// clock, which the default ±10% jitter would make a matter of luck.
fn health_config() -> HealthCheckConfig {
    HealthCheckConfig::builder()
        .interval(Duration::from_secs(10))
        .jitter_percent(0)
        .timeout(Duration::from_secs(10))
        .unhealthy_threshold(3)
        .healthy_threshold(2)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn unhealthy_endpoint_gets_no_traffic_then_comes_back() {
    let counts = Counts::default();
    let flags = health_flags(3);
    let checks = Arc::new(AtomicUsize::new(0));
    let mut rr = RoundRobinBuilder::new()
        .health_check(health_config(), flag_check(&flags, &checks))
        .build_with_endpoints(endpoints(3), counting(&counts, |_| 200));
    // Pending until the first check passes: no traffic yet.
    assert_eq!(rr.handle().snapshot().count(EndpointState::Pending), 3);
    let err = rr.ready().await.unwrap().call(Request::new(())).await;
    assert!(err.unwrap_err().is::<Rejected>());
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(rr.handle().snapshot().count(EndpointState::Healthy), 3);

    flags[&addr(1)].store(false, Ordering::Relaxed);
    // Two failed checks: still healthy.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(rr.handle().snapshot().count(EndpointState::Healthy), 3);
    // The third: unhealthy, no traffic.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let snap = rr.handle().snapshot();
    assert_eq!(snap.endpoints[0].state, EndpointState::Unhealthy);
    reset(&counts);
    send(&mut rr, 100).await;
    assert_eq!(count(&counts, 1), 0);
    assert_eq!(count(&counts, 2), 50);

    flags[&addr(1)].store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        rr.handle().snapshot().endpoints[0].state,
        EndpointState::Unhealthy,
        "one pass is not enough"
    );
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(rr.handle().snapshot().count(EndpointState::Healthy), 3);
    reset(&counts);
    send(&mut rr, 30).await;
    assert_eq!(count(&counts, 1), 10);
    // Checks are their own traffic: about one per endpoint per interval.
    let n = checks.load(Ordering::Relaxed);
    assert!((15..=30).contains(&n), "{n} checks");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn below_panic_threshold_traffic_spreads_over_all() {
    let counts = Counts::default();
    let flags = health_flags(3);
    let checks = Arc::new(AtomicUsize::new(0));
    let config = RoundRobinConfig::builder()
        .panic_threshold_percent(50)
        .build()
        .unwrap();
    let mut rr = RoundRobinBuilder::new()
        .config(config)
        .health_check(health_config(), flag_check(&flags, &checks))
        .build_with_endpoints(endpoints(3), counting(&counts, |_| 200));
    tokio::time::sleep(Duration::from_millis(1)).await;

    // 1 of 3 unhealthy: 67% healthy, above the threshold: avoid it.
    flags[&addr(1)].store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(35)).await;
    send(&mut rr, 300).await;
    assert_eq!(count(&counts, 1), 0);
    assert!(!rr.handle().snapshot().panic);

    // 2 of 3 unhealthy: 33% < 50%: panic, spread over all.
    flags[&addr(2)].store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(35)).await;
    let snap = rr.handle().snapshot();
    assert_eq!(snap.count(EndpointState::Unhealthy), 2);
    assert!(snap.panic);
    reset(&counts);
    send(&mut rr, 300).await;
    for port in 1..=3 {
        assert_eq!(count(&counts, port), 100, "endpoint {port}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn slow_health_check_times_out() {
    let counts = Counts::default();
    let check = check_fn(|_: &Endpoint| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(())
    });
    let config = HealthCheckConfig::builder()
        .timeout(Duration::from_secs(1))
        .interval(Duration::from_secs(2))
        .unhealthy_threshold(2)
        .build()
        .unwrap();
    let rr = RoundRobinBuilder::new()
        .health_check(config, check)
        .build_with_endpoints(endpoints(2), counting(&counts, |_| 200));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(rr.handle().snapshot().count(EndpointState::Unhealthy), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn follows_a_source() {
    let counts = Counts::default();
    let mut rr = RoundRobinBuilder::new()
        .build_with_source(StaticSource::new(endpoints(3)), counting(&counts, |_| 200));
    tokio::task::yield_now().await;
    send(&mut rr, 30).await;
    for port in 1..=3 {
        assert_eq!(count(&counts, port), 10);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_source_works_with_towers_p2c() {
    use tower::balance::p2c::Balance;
    use tower::load::{CompleteOnResponse, PendingRequestsDiscover};
    let counts = Counts::default();
    let d = resilience_discovery::source::discover(
        StaticSource::new(endpoints(3)),
        counting(&counts, |_| 200),
    );
    let mut balance = Balance::new(PendingRequestsDiscover::new(
        d,
        CompleteOnResponse::default(),
    ));
    for _ in 0..30 {
        balance
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
    }
    assert_eq!((1..=3).map(|p| count(&counts, p)).sum::<usize>(), 30);
}

#[cfg(feature = "metrics")]
#[test]
fn metrics_count_ejections_and_updates() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let counts = Counts::default();
            let config = RoundRobinConfig::builder()
                .name("users")
                .consecutive_failures(1)
                .build()
                .unwrap();
            let mut rr = first_answers_500(&counts, 3, config);
            send(&mut rr, 6).await;
        });
    });
    let snap = snapshotter.snapshot().into_hashmap();
    let find = |name: &str, label: Option<(&str, &str)>| {
        snap.iter()
            .find(|(k, _)| {
                k.key().name() == name
                    && label.is_none_or(|(l, v)| {
                        k.key().labels().any(|x| x.key() == l && x.value() == v)
                    })
            })
            .map(|(_, (_, _, v))| v)
    };
    assert_eq!(
        find("resilience_discovery_ejections_total", None),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        find(
            "resilience_discovery_updates_total",
            Some(("change", "added"))
        ),
        Some(&DebugValue::Counter(3))
    );
    let Some(DebugValue::Gauge(ejected)) =
        find("resilience_discovery_endpoints", Some(("state", "ejected")))
    else {
        panic!("no ejected gauge")
    };
    assert_eq!(ejected.into_inner(), 1.0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn passive_ejection_off_never_ejects() {
    let counts = Counts::default();
    let config = RoundRobinConfig::builder()
        .consecutive_failures(0)
        .build()
        .unwrap();
    let mut rr = first_answers_500(&counts, 2, config);
    assert_eq!(send(&mut rr, 100).await, 50);
    assert_eq!(rr.handle().snapshot().count(EndpointState::Healthy), 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn clones_per_request_still_rotate() {
    let counts = Counts::default();
    let rr = RoundRobin::new(endpoints(3), counting(&counts, |_| 200));
    for _ in 0..300 {
        rr.clone().oneshot(Request::new(())).await.unwrap();
    }
    // Frameworks clone more than once per request (axum clones the router,
    // then the state): clones that make no call do not take a turn.
    for _ in 0..300 {
        let (a, b) = (rr.clone(), rr.clone());
        drop(a);
        b.clone().oneshot(Request::new(())).await.unwrap();
    }
    for port in 1..=3 {
        assert_eq!(count(&counts, port), 200, "endpoint {port}");
    }
}

/// A `call` without a `poll_ready` before it fails with a typed rejection
/// instead of panicking, and the balancer keeps working.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn call_without_poll_ready_is_rejected_not_a_panic() {
    let counts = Counts::default();
    let mut rr = RoundRobin::new(endpoints(2), counting(&counts, |_| 200));
    let err = rr.call(Request::new(())).await.unwrap_err();
    let rejected = err.downcast_ref::<Rejected>().expect("typed");
    assert_eq!(rejected.kind(), RejectionKind::NoHealthyEndpoint);
    assert_eq!(
        rejected.reason(),
        "no endpoint picked: call without poll_ready"
    );
    // One pick serves one call: the second call after it is refused too.
    rr.ready().await.unwrap();
    rr.call(Request::new(())).await.unwrap();
    assert!(rr.call(Request::new(())).await.is_err());
    assert_eq!(send(&mut rr, 4).await, 0);
    assert_eq!(count(&counts, 1) + count(&counts, 2), 5);
}

/// The longest ejection time accepted (a year) ends on time, with no
/// `Instant` overflow on the way; a longer one is refused at `build()`.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_longest_ejection_time_ends_on_time() {
    use resilience_core::config::MAX_DURATION;
    let counts = Counts::default();
    let config = RoundRobinConfig::builder()
        .consecutive_failures(1)
        .base_ejection_time(MAX_DURATION)
        .max_ejection_time(MAX_DURATION)
        .max_ejection_percent(100)
        .build()
        .unwrap();
    let mut rr = first_answers_500(&counts, 2, config);
    assert_eq!(send(&mut rr, 10).await, 1);
    tokio::time::sleep(MAX_DURATION - Duration::from_secs(1)).await;
    reset(&counts);
    assert_eq!(send(&mut rr, 10).await, 0);
    assert_eq!(count(&counts, 1), 0, "still ejected");
    tokio::time::sleep(Duration::from_secs(1)).await;
    reset(&counts);
    assert_eq!(send(&mut rr, 2).await, 1, "back, and fails once");
    assert_eq!(count(&counts, 1), 1);

    let err = RoundRobinConfig::builder()
        .max_ejection_time(MAX_DURATION + Duration::from_nanos(1))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_ejection_time");
}

/// Endpoints added where no tokio runtime runs (a balancer built in `main`
/// before the runtime, an endpoint inserted from a plain thread) are checked
/// from the balancer's next `poll_ready` on, on the runtime it runs in.
#[test]
fn health_checks_of_endpoints_added_outside_a_runtime_start_when_polled() {
    let counts = Counts::default();
    let flags = health_flags(4);
    let checks = Arc::new(AtomicUsize::new(0));
    let mut rr = RoundRobinBuilder::new()
        .health_check(health_config(), flag_check(&flags, &checks))
        .build_with_endpoints(endpoints(2), counting(&counts, |_| 200));
    let handle = rr.handle();
    let insert_from_a_thread = |port| {
        let handle = handle.clone();
        std::thread::spawn(move || handle.insert(Endpoint::new(addr(port))))
            .join()
            .unwrap();
    };
    insert_from_a_thread(3);
    assert_eq!(handle.snapshot().count(EndpointState::Pending), 3);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(checks.load(Ordering::Relaxed), 0, "nothing ran them yet");
        // All pending: this first request finds no endpoint, but its
        // `poll_ready` starts the checks.
        let err = rr.ready().await.unwrap().call(Request::new(())).await;
        assert!(err.unwrap_err().is::<Rejected>());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(handle.snapshot().count(EndpointState::Healthy), 3);
        // From now on an endpoint added from a plain thread is checked at
        // once, on the runtime the others are checked on.
        insert_from_a_thread(4);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(handle.snapshot().count(EndpointState::Healthy), 4);
        reset(&counts);
        assert_eq!(send(&mut rr, 40).await, 0);
        assert_eq!(count(&counts, 4), 10);
    });
}

/// A maker that panics for one endpoint leaves the balancer usable: the
/// panic reaches the caller that added the endpoint, nothing else.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_panicking_maker_does_not_break_the_balancer() {
    let counts = Counts::default();
    let make = counting(&counts, |_| 200);
    let mut rr = RoundRobin::new(endpoints(2), move |ep: &Endpoint| {
        assert_ne!(ep.addr().port(), 13, "no service for port 13");
        make(ep)
    });
    let handle = rr.handle();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handle.insert(Endpoint::new(addr(13)));
    }));
    assert!(caught.is_err());
    handle.insert(Endpoint::new(addr(3)));
    assert_eq!(handle.snapshot().endpoints.len(), 3);
    assert_eq!(send(&mut rr, 30).await, 0);
    for port in 1..=3 {
        assert_eq!(count(&counts, port), 10);
    }
}

/// The request a mock endpoint received, if any, without waiting forever.
async fn next_request<T, U>(
    handle: &mut tower_test::mock::Handle<T, U>,
) -> Option<(T, tower_test::mock::SendResponse<U>)> {
    tokio::time::timeout(Duration::from_secs(1), handle.next_request())
        .await
        .ok()
        .flatten()
}

/// A long-lived balancer (behind `Buffer`, a tonic client used through
/// `&mut`) polls ready long before it calls: the endpoint it picked then
/// may have left meanwhile. The next `poll_ready` picks again.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stored_pick_of_a_removed_endpoint_is_made_again() {
    let (a, mut ha) = tower_test::mock::pair::<&'static str, &'static str>();
    let (b, mut hb) = tower_test::mock::pair::<&'static str, &'static str>();
    let mocks = HashMap::from([(addr(1), a), (addr(2), b)]);
    let rr = RoundRobin::new(endpoints(2), move |ep: &Endpoint| mocks[&ep.addr()].clone());
    let handle = rr.handle();
    let mut rr = tower_test::mock::Spawn::new(rr);
    assert_ready_ok!(rr.poll_ready()); // the first turn: endpoint 1
    handle.remove(addr(1));
    assert_ready_ok!(rr.poll_ready());
    let fut = rr.call("hi");
    assert!(
        next_request(&mut ha).await.is_none(),
        "sent to a removed endpoint"
    );
    let (_, send) = next_request(&mut hb).await.expect("endpoint 2 gets it");
    send.send_response("b");
    assert_eq!(fut.await.unwrap(), "b");
}

/// As above, for an endpoint ejected (by another clone's traffic) between
/// the pick and the call.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stored_pick_of_an_ejected_endpoint_is_made_again() {
    let counts = Counts::default();
    let config = RoundRobinConfig::builder()
        .consecutive_failures(1)
        .max_ejection_percent(100)
        .panic_threshold_percent(0)
        .build()
        .unwrap();
    let rr = first_answers_500(&counts, 2, config);
    let (mut long_lived, mut other) = (rr.clone(), rr.clone());
    long_lived.ready().await.unwrap(); // the first turn: endpoint 1
    // The other clone's turns: endpoint 2, then endpoint 1, which fails
    // once and is ejected.
    assert_eq!(send(&mut other, 2).await, 1);
    assert_eq!(rr.handle().snapshot().count(EndpointState::Ejected), 1);
    let rsp = long_lived
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(count(&counts, 1), 1, "no request to the ejected endpoint");
    assert_eq!(count(&counts, 2), 2);
}

/// A stored pick whose service stopped being ready (here: it fails its
/// readiness) is dropped for another endpoint.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stored_pick_that_is_no_longer_ready_is_made_again() {
    let (a, mut ha) = tower_test::mock::pair::<&'static str, &'static str>();
    let (b, mut hb) = tower_test::mock::pair::<&'static str, &'static str>();
    let mocks = HashMap::from([(addr(1), a), (addr(2), b)]);
    let mut rr =
        tower_test::mock::Spawn::new(RoundRobin::new(endpoints(2), move |ep: &Endpoint| {
            mocks[&ep.addr()].clone()
        }));
    assert_ready_ok!(rr.poll_ready()); // endpoint 1
    ha.send_error("connection lost");
    assert_ready_ok!(rr.poll_ready());
    let fut = rr.call("hi");
    assert!(next_request(&mut ha).await.is_none());
    let (_, send) = next_request(&mut hb).await.expect("endpoint 2 gets it");
    send.send_response("b");
    assert_eq!(fut.await.unwrap(), "b");
}

/// "No healthy endpoint" found by one `poll_ready` is not kept: once an
/// endpoint appears, the next `poll_ready` finds it.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stored_no_healthy_endpoint_is_checked_again() {
    let counts = Counts::default();
    let mut rr = RoundRobin::new(Vec::new(), counting(&counts, |_| 200));
    rr.ready().await.unwrap(); // nothing to pick: the call would be refused
    rr.handle().insert(Endpoint::new(addr(1)));
    let rsp = rr.ready().await.unwrap().call(Request::new(())).await;
    assert_eq!(rsp.expect("endpoint 1 answers").status(), 200);
    assert_eq!(count(&counts, 1), 1);
}

/// An endpoint service that reports whether it (or a clone, or a response
/// future of it) is still alive.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    alive: Arc<()>,
}

impl<S, Req> Service<Req> for Tracked<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let (fut, alive) = (self.inner.call(req), self.alive.clone());
        Box::pin(async move {
            let rsp = fut.await;
            drop(alive);
            rsp
        })
    }
}

/// Which endpoint services (with their clones and response futures) are
/// still alive, by address.
type Alive = Arc<Mutex<HashMap<SocketAddr, std::sync::Weak<()>>>>;

/// Wraps the services `make` makes in [`Tracked`], noted in `alive`.
fn tracked<S>(
    alive: &Alive,
    make: impl Fn(&Endpoint) -> S + Send + Sync + 'static,
) -> impl Fn(&Endpoint) -> Tracked<S> + Send + Sync + 'static {
    let alive = alive.clone();
    move |ep: &Endpoint| {
        let token = Arc::new(());
        alive
            .lock()
            .unwrap()
            .insert(ep.addr(), Arc::downgrade(&token));
        Tracked {
            inner: make(ep),
            alive: token,
        }
    }
}

fn is_alive(alive: &Alive, port: u16) -> bool {
    alive.lock().unwrap()[&addr(port)].strong_count() > 0
}

/// State kept per endpoint service (a breaker per endpoint) relies on the
/// balancer letting go of a service whose endpoint left: once its in-flight
/// calls end, nothing holds it, not even clones that never made a call.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_removed_endpoints_service_is_dropped_after_its_in_flight_calls() {
    let (a, mut ha) = tower_test::mock::pair::<&'static str, &'static str>();
    let (b, mut hb) = tower_test::mock::pair::<&'static str, &'static str>();
    let mocks = HashMap::from([(addr(1), a), (addr(2), b)]);
    let alive = Alive::default();
    let mut rr = RoundRobin::new(
        endpoints(2),
        tracked(&alive, move |ep: &Endpoint| mocks[&ep.addr()].clone()),
    );
    let is_alive = |port| is_alive(&alive, port);
    // Clones that exist but never call, as a framework's router or state
    // keeps one to clone per request.
    let idle = rr.clone();
    let idle_clone = idle.clone();
    let handle = rr.handle();

    let in_flight = rr.ready().await.unwrap().call("first"); // endpoint 1
    let (_, send_a) = next_request(&mut ha).await.unwrap();
    handle.remove(addr(1));
    let fut = rr.ready().await.unwrap().call("next");
    let (_, send_b) = next_request(&mut hb).await.unwrap();
    send_b.send_response("b");
    assert_eq!(fut.await.unwrap(), "b");
    assert!(is_alive(1), "its in-flight call holds it");

    send_a.send_response("a");
    assert_eq!(in_flight.await.unwrap(), "a");
    assert!(!is_alive(1), "the removed endpoint's service is still held");
    assert!(is_alive(2));
    drop((idle, idle_clone));
}

/// An endpoint added where no runtime runs waits for its health checks to
/// start; removed meanwhile, its service is not kept for them.
#[test]
fn an_endpoint_removed_before_its_checks_start_is_dropped() {
    let alive = Alive::default();
    let counts = Counts::default();
    let rr = RoundRobinBuilder::new()
        .health_check(
            health_config(),
            check_fn(|_: &Endpoint| async { Ok::<_, BoxError>(()) }),
        )
        .build_with_endpoints(endpoints(2), tracked(&alive, counting(&counts, |_| 200)));
    rr.handle().remove(addr(1));
    assert!(!is_alive(&alive, 1), "kept for its health checks");
    assert!(is_alive(&alive, 2));
}

/// A plain function is a maker, no boxing: by value as it is; by
/// reference with `use<>`, as its `impl Service` would otherwise borrow
/// the endpoint (edition 2024).
fn answer_with_port(
    ep: Endpoint,
) -> impl Service<Request<()>, Response = Response<String>, Error = BoxError> + Clone {
    let port = ep.addr().port();
    service_fn(move |_: Request<()>| async move { Ok(Response::new(port.to_string())) })
}

fn answer_with_port_by_ref(
    ep: &Endpoint,
) -> impl Service<Request<()>, Response = Response<String>, Error = BoxError> + Clone + use<> {
    answer_with_port(ep.clone())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_plain_function_is_a_maker() {
    async fn answers<S>(rr: S) -> Vec<String>
    where
        S: Service<Request<()>, Response = Response<String>, Error = BoxError> + Clone,
    {
        let mut seen = Vec::new();
        for _ in 0..4 {
            let rsp = rr.clone().oneshot(Request::new(())).await.unwrap();
            seen.push(rsp.into_body());
        }
        seen.sort();
        seen
    }
    let by_value = RoundRobin::new(endpoints(2), answer_with_port);
    assert_eq!(answers(by_value).await, ["1", "1", "2", "2"]);
    let by_ref = RoundRobinBuilder::new()
        .with_classifier(HttpOutcome::new())
        .build_with_source(StaticSource::new(endpoints(2)), answer_with_port_by_ref);
    tokio::task::yield_now().await;
    assert_eq!(answers(by_ref).await, ["1", "1", "2", "2"]);
    // And for tower's balancers.
    let d =
        resilience_discovery::source::discover(StaticSource::new(endpoints(2)), answer_with_port);
    let mut p2c = tower::balance::p2c::Balance::new(tower::load::PendingRequestsDiscover::new(
        d,
        tower::load::CompleteOnResponse::default(),
    ));
    let rsp = p2c.ready().await.unwrap().call(Request::new(())).await;
    assert!(["1", "2"].contains(&rsp.unwrap().into_body().as_str()));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
#[allow(deprecated)]
async fn the_old_classifier_names_still_work_the_same() {
    use resilience_discovery::ErrorsAreFailures;

    let config = || {
        RoundRobinConfig::builder()
            .consecutive_failures(3)
            .base_ejection_time(Duration::from_secs(10))
            .max_ejection_percent(100)
            .build()
            .unwrap()
    };
    // `classify` forwards to `with_classifier`: 500s eject as before.
    let counts = Counts::default();
    let mut rr: RoundRobin<Endpoints, HttpOutcome> = RoundRobinBuilder::new()
        .config(config())
        .classify(HttpOutcome::new())
        .build_with_endpoints(
            endpoints(3),
            counting(&counts, |a| if a.port() == 1 { 500 } else { 200 }),
        );
    assert_eq!(send(&mut rr, 300).await, 3);
    assert_eq!(rr.handle().snapshot().count(EndpointState::Ejected), 1);

    // `ErrorsAreFailures` is `ErrorsAsFailures`, as a type and as a value:
    // a 500 response is a success for it, so nothing is ejected.
    let counts = Counts::default();
    let mut rr: RoundRobin<Endpoints, resilience_discovery::ErrorsAsFailures> =
        RoundRobinBuilder::new()
            .config(config())
            .classify(ErrorsAreFailures)
            .build_with_endpoints(
                endpoints(3),
                counting(&counts, |a| if a.port() == 1 { 500 } else { 200 }),
            );
    assert_eq!(send(&mut rr, 300).await, 100); // the 500s, all answered
    assert_eq!(rr.handle().snapshot().count(EndpointState::Ejected), 0);
    let _default: RoundRobinBuilder<ErrorsAreFailures> = RoundRobinBuilder::new();
}
