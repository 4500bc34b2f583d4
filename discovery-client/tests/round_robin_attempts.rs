//! The balancer honours a request's `Attempt`: a retry goes to an endpoint
//! the request has not tried yet when there is one, and the endpoint each
//! try goes to is recorded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use http::Request;
use resilience_core::{Attempt, AttemptFromExtensions, BoxError, IgnoreAttempt};
use resilience_discovery::{
    Endpoint, EndpointState, RoundRobin, RoundRobinBuilder, RoundRobinConfig,
};
use tower::{Service, ServiceExt, service_fn};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn endpoints(n: u16) -> Vec<Endpoint> {
    (1..=n).map(|p| Endpoint::new(addr(p))).collect()
}

/// An endpoint service that answers with its own address.
fn answer_with_address(
    ep: &Endpoint,
) -> tower::util::BoxCloneSyncService<Request<()>, SocketAddr, BoxError> {
    let a = ep.addr();
    tower::util::BoxCloneSyncService::new(service_fn(move |_: Request<()>| async move {
        Ok::<_, BoxError>(a)
    }))
}

/// A retry of a request whose earlier tries went to `tried`.
fn retry_after(tried: &[u16]) -> (Request<()>, Attempt) {
    let first = Attempt::first();
    for port in tried {
        first.record(addr(*port));
    }
    let retry = first.next();
    let mut req = Request::new(());
    req.extensions_mut().insert(retry.clone());
    (req, retry)
}

async fn send<S>(rr: &mut S, req: Request<()>) -> SocketAddr
where
    S: Service<Request<()>, Response = SocketAddr, Error = BoxError>,
{
    rr.ready().await.unwrap().call(req).await.unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_retry_avoids_the_endpoint_already_tried() {
    let mut rr = RoundRobinBuilder::new()
        .avoid_tried(AttemptFromExtensions)
        .build_with_endpoints(endpoints(3), answer_with_address);
    let mut landed = Vec::new();
    // Every turn of the cursor, including those that would pick 1.
    for _ in 0..9 {
        let (req, attempt) = retry_after(&[1]);
        let to = send(&mut rr, req).await;
        assert_ne!(to, addr(1), "went back to the endpoint already tried");
        assert_eq!(
            attempt.tried().as_slice(),
            [addr(1), to],
            "the endpoint it went to is recorded"
        );
        landed.push(to.port());
    }
    // The turn goes on after the endpoint taken: 2 and 3 share the load.
    let twos = landed.iter().filter(|p| **p == 2).count();
    assert!((4..=5).contains(&twos), "{landed:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn each_try_lands_on_another_instance_while_others_call_in_between() {
    let mut rr = RoundRobinBuilder::new()
        .avoid_tried(AttemptFromExtensions)
        .build_with_endpoints(endpoints(3), answer_with_address);
    let first = Attempt::first();
    let mut went = Vec::new();
    let mut attempt = first.clone();
    for _ in 0..3 {
        let mut req = Request::new(());
        req.extensions_mut().insert(attempt.clone());
        went.push(send(&mut rr, req).await);
        // Two other requests bring the cursor back round to the endpoint
        // this try went to.
        for _ in 0..2 {
            send(&mut rr, Request::new(())).await;
        }
        attempt = attempt.next();
    }
    went.sort();
    assert_eq!(
        went,
        [addr(1), addr(2), addr(3)],
        "three tries, three instances"
    );
    assert_eq!(first.tried().len(), 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_endpoint_tried_still_lands_and_is_recorded() {
    let mut rr = RoundRobinBuilder::new()
        .avoid_tried(AttemptFromExtensions)
        .build_with_endpoints(endpoints(3), answer_with_address);
    for expected in [1, 2, 3, 1] {
        let (req, attempt) = retry_after(&[1, 2, 3]);
        let to = send(&mut rr, req).await;
        assert_eq!(to, addr(expected), "picked as usual");
        assert_eq!(attempt.tried().last(), Some(to), "the most recent");
        assert_eq!(attempt.tried().len(), 3);
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_first_try_goes_as_usual_and_records_its_endpoint() {
    let mut rr = RoundRobinBuilder::new()
        .avoid_tried(AttemptFromExtensions)
        .build_with_endpoints(endpoints(3), answer_with_address);
    for expected in [1, 2, 3, 1, 2, 3] {
        let attempt = Attempt::first();
        let mut req = Request::new(());
        req.extensions_mut().insert(attempt.clone());
        assert_eq!(send(&mut rr, req).await, addr(expected));
        assert_eq!(attempt.tried().as_slice(), [addr(expected)]);
    }
    // And requests without an attempt still go round in turn.
    for expected in [1, 2, 3, 1] {
        assert_eq!(send(&mut rr, Request::new(())).await, addr(expected));
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn by_default_attempts_are_neither_read_nor_recorded() {
    let mut rr: RoundRobin<_, _, IgnoreAttempt> =
        RoundRobin::new(endpoints(3), answer_with_address);
    let (req, attempt) = retry_after(&[1]);
    assert_eq!(send(&mut rr, req).await, addr(1));
    assert_eq!(attempt.tried().as_slice(), [addr(1)]);
    let (req, attempt) = retry_after(&[3]);
    assert_eq!(send(&mut rr, req).await, addr(2));
    assert_eq!(attempt.tried().as_slice(), [addr(3)], "nothing recorded");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_heavier_tried_endpoint_is_skipped_at_each_of_its_places() {
    let eps = vec![
        Endpoint::new(addr(1)).with_weight(3),
        Endpoint::new(addr(2)).with_weight(1),
    ];
    let mut rr = RoundRobinBuilder::new()
        .avoid_tried(AttemptFromExtensions)
        .build_with_endpoints(eps, answer_with_address);
    for _ in 0..8 {
        let (req, _) = retry_after(&[1]);
        assert_eq!(send(&mut rr, req).await, addr(2));
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_other_endpoint_must_be_eligible() {
    // Endpoint 2 fails once and is ejected; a retry that tried 1 goes to 3.
    let config = RoundRobinConfig::builder()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let mut rr = RoundRobinBuilder::new()
        .config(config)
        .avoid_tried(AttemptFromExtensions)
        .build_with_endpoints(endpoints(3), |ep: &Endpoint| {
            let a = ep.addr();
            service_fn(move |_: Request<()>| async move {
                if a.port() == 2 {
                    Err::<SocketAddr, BoxError>(std::io::Error::other("refused").into())
                } else {
                    Ok(a)
                }
            })
        });
    for _ in 0..3 {
        let _ = rr.ready().await.unwrap().call(Request::new(())).await;
    }
    assert_eq!(rr.handle().snapshot().count(EndpointState::Ejected), 1);
    for _ in 0..6 {
        let (req, attempt) = retry_after(&[1]);
        let to = rr.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(to, addr(3));
        assert_eq!(attempt.tried().as_slice(), [addr(1), addr(3)]);
    }
}

/// An endpoint service whose readiness a test switches.
#[derive(Clone)]
struct Gate {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    waiting: Arc<Mutex<Vec<Waker>>>,
}

impl Gate {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            open: Arc::new(AtomicBool::new(true)),
            waiting: Arc::default(),
        }
    }

    fn set(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
        if open {
            for w in self.waiting.lock().unwrap().drain(..) {
                w.wake();
            }
        }
    }
}

impl Service<Request<()>> for Gate {
    type Response = SocketAddr;
    type Error = BoxError;
    type Future = std::future::Ready<Result<SocketAddr, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.open.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            self.waiting.lock().unwrap().push(cx.waker().clone());
            Poll::Pending
        }
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        std::future::ready(Ok(self.addr))
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_other_endpoint_must_be_ready_and_a_busy_one_is_not_waited_for() {
    let gates: Vec<Gate> = (1..=3).map(|p| Gate::new(addr(p))).collect();
    let by_addr = gates.clone();
    let mut rr = RoundRobinBuilder::new()
        .avoid_tried(AttemptFromExtensions)
        .build_with_endpoints(endpoints(3), move |ep: &Endpoint| {
            by_addr
                .iter()
                .find(|g| g.addr == ep.addr())
                .unwrap()
                .clone()
        });

    // 2 is busy: a retry that tried 1 (picked first) goes to 3.
    gates[1].set(false);
    let (req, attempt) = retry_after(&[1]);
    assert_eq!(send(&mut rr, req).await, addr(3));
    assert_eq!(attempt.tried().as_slice(), [addr(1), addr(3)]);

    // 2 and 3 busy, 1 ready and picked: the retry goes to 1 rather than
    // wait or fail.
    gates[2].set(false);
    let (req, attempt) = retry_after(&[1]);
    assert_eq!(send(&mut rr, req).await, addr(1));
    assert_eq!(attempt.tried().as_slice(), [addr(1)]);

    // Ready again: the next retry that tried 1 goes to 2 or 3 once more.
    gates[1].set(true);
    gates[2].set(true);
    let (req, _) = retry_after(&[1]);
    assert_ne!(send(&mut rr, req).await, addr(1));
}

/// A first try carries no attempt: the balancer reports its pick to a
/// layer watching the call (`observe_first_try`), unless it ignores
/// attempts.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_first_try_without_an_attempt_reports_its_pick_to_the_watching_layer() {
    use resilience_core::attempt::observe_first_try;

    let mut rr = RoundRobinBuilder::new()
        .avoid_tried(AttemptFromExtensions)
        .build_with_endpoints(endpoints(3), answer_with_address);
    for _ in 0..4 {
        rr.ready().await.unwrap();
        let (fut, seen) = observe_first_try(|| rr.call(Request::new(())));
        let went_to = fut.await.unwrap();
        assert_eq!(seen.endpoint(), Some(went_to), "the pick reported");
        // The retry starts its record with it, and avoids it.
        let second = seen.into_second();
        let mut retry = Request::new(());
        retry.extensions_mut().insert(second.clone());
        let retried_on = send(&mut rr, retry).await;
        assert_ne!(retried_on, went_to);
        assert_eq!(second.tried().as_slice(), [went_to, retried_on]);
    }
    // Not watched: nothing to report to, nothing kept.
    assert_ne!(send(&mut rr, Request::new(())).await.port(), 0);

    let mut ignoring: RoundRobin<_, _, IgnoreAttempt> =
        RoundRobinBuilder::new().build_with_endpoints(endpoints(3), answer_with_address);
    ignoring.ready().await.unwrap();
    let (fut, seen) = observe_first_try(|| ignoring.call(Request::new(())));
    fut.await.unwrap();
    assert!(
        seen.is_empty(),
        "a balancer that ignores attempts reports nothing"
    );
}
