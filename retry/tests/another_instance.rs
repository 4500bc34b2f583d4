//! A retry goes to another instance: the retry layer tags every retry with
//! a `resilience_core::Attempt` (the first try carries none: the balancer
//! reports its pick to the retry layer watching the call), and a round
//! robin that reads it (`avoid_tried`) sends the retry to an endpoint the
//! request has not tried.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use resilience_core::{Attempt, AttemptFromExtensions, BoxError, IgnoreAttempt, ReadAttempt};
use resilience_discovery::{Endpoint, RoundRobinBuilder};
use resilience_retry::{RetryBody, RetryConfig, RetryLayer};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// Per try: the endpoint it reached and the attempt it carried.
type Seen = Arc<Mutex<Vec<(SocketAddr, Option<Attempt>)>>>;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_retry_lands_on_another_endpoint() {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    // Endpoint 1 answers 503; the others 200.
    let balancer = RoundRobinBuilder::new()
        .avoid_tried(AttemptFromExtensions)
        .build_with_endpoints(
            (1..=3).map(|p| Endpoint::new(addr(p))),
            move |ep: &Endpoint| {
                let at = ep.addr();
                let log = log.clone();
                service_fn(move |req: Request<RetryBody<String>>| {
                    log.lock()
                        .unwrap()
                        .push((at, Attempt::from_extensions(req.extensions()).cloned()));
                    let status = if at == addr(1) { 503 } else { 200 };
                    async move {
                        Ok::<_, BoxError>(Response::builder().status(status).body(at).unwrap())
                    }
                })
            },
        );
    let config = RetryConfig::builder()
        .name("inventory")
        .max_attempts(2)
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .build()
        .unwrap();
    // Retry above the balancer: each try picks an endpoint again.
    let client = ServiceBuilder::new()
        .layer(RetryLayer::new(config).with_seed(7))
        .service(balancer);

    let req = Request::get("/stock/42").body(String::new()).unwrap();
    let rsp = client.oneshot(req).await.unwrap();
    assert_eq!(rsp.status(), 200);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one failed try, one retry: {seen:?}");
    let (first_at, first) = &seen[0];
    let (retry_at, retry) = &seen[1];
    assert_eq!(
        *first_at,
        addr(1),
        "the first try goes to the first endpoint"
    );
    assert_ne!(retry_at, first_at, "the retry goes to another endpoint");
    assert_eq!(*rsp.body(), *retry_at);

    assert!(first.is_none(), "the first try carries no attempt");
    let retry = retry.as_ref().unwrap();
    assert_eq!(retry.number(), 2);
    // The first endpoint (reported by the balancer) and the retry's
    // (recorded by it) are in the record.
    assert_eq!(retry.tried().as_slice(), [*first_at, *retry_at]);
}

/// An endpoint that answers with its address; endpoint 1 answers `503` and
/// then makes the others busy for one `poll_ready` each (they ask to be
/// polled again at once).
#[derive(Clone)]
struct Instance {
    at: SocketAddr,
    busy_polls: Arc<AtomicU32>,
    seen: Seen,
}

impl Service<Request<RetryBody<String>>> for Instance {
    type Response = Response<SocketAddr>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let busy = self.at != addr(1)
            && self
                .busy_polls
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
        if busy {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RetryBody<String>>) -> Self::Future {
        let attempt = Attempt::from_extensions(req.extensions()).cloned();
        self.seen.lock().unwrap().push((self.at, attempt));
        let status = if self.at == addr(1) {
            self.busy_polls.store(2, Ordering::Relaxed);
            503
        } else {
            200
        };
        std::future::ready(Ok(Response::builder()
            .status(status)
            .body(self.at)
            .unwrap()))
    }
}

/// Sends one request through retry and a round robin over endpoints 1 to
/// 3 reading attempts with `avoid`: the status and the endpoints tried.
///
/// Endpoint 1 fails the first try and the others are busy for one poll
/// right after, so the balancer's own turn comes back to endpoint 1 for
/// the retry; only the request's record of tried endpoints moves it on.
async fn send_through<A>(avoid: A) -> (u16, Vec<SocketAddr>)
where
    A: ReadAttempt<Request<RetryBody<String>>> + Clone + Send + 'static,
{
    let layer = RetryLayer::new(RetryConfig::builder().max_attempts(2).build().unwrap());
    let (status, seen) = send_via(&layer, avoid, false).await;
    (status, seen.into_iter().map(|(at, _)| at).collect())
}

/// Calls its inner service only when its response future is first
/// polled, as a `Buffer` or a spawned task does: out of sight of a layer
/// above watching the call.
#[derive(Clone)]
struct Later<S>(S);

impl<S, R> Service<R> for Later<S>
where
    S: Service<R> + Clone + Send + 'static,
    S::Future: Send,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let clone = self.0.clone();
        let mut ready = std::mem::replace(&mut self.0, clone);
        Box::pin(async move { ready.call(req).await })
    }
}

/// As [`send_through`], through `layer`, with the balancer behind
/// [`Later`] if `later`: the status and, per try, the endpoint and the
/// attempt it carried.
async fn send_via<A>(
    layer: &RetryLayer,
    avoid: A,
    later: bool,
) -> (u16, Vec<(SocketAddr, Option<Attempt>)>)
where
    A: ReadAttempt<Request<RetryBody<String>>> + Clone + Send + 'static,
{
    let seen: Seen = Arc::default();
    let busy_polls: Arc<AtomicU32> = Arc::default();
    let log = seen.clone();
    let balancer = RoundRobinBuilder::new()
        .avoid_tried(avoid)
        .build_with_endpoints(
            (1..=3).map(|p| Endpoint::new(addr(p))),
            move |ep: &Endpoint| Instance {
                at: ep.addr(),
                busy_polls: busy_polls.clone(),
                seen: log.clone(),
            },
        );
    let req = Request::get("/stock/42").body(String::new()).unwrap();
    let rsp = if later {
        layer.layer(Later(balancer)).oneshot(req).await
    } else {
        layer.layer(balancer).oneshot(req).await
    };
    let seen = seen.lock().unwrap().clone();
    (rsp.unwrap().status().as_u16(), seen)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_balancer_out_of_sight_is_learned_and_first_tries_carry_their_attempt() {
    let layer = RetryLayer::new(RetryConfig::builder().max_attempts(2).build().unwrap());
    // The balancer is called after the retry layer's call returned: the
    // first try's pick goes unseen, and the retry, whose record lacks it,
    // is sent back to the failed endpoint by the turn.
    let (status, seen) = send_via(&layer, AttemptFromExtensions, true).await;
    assert_eq!(status, 503);
    assert_eq!(seen[0].0, addr(1));
    assert!(seen[0].1.is_none());
    let (at, retry) = &seen[1];
    assert_eq!(*at, addr(1));
    assert_eq!(retry.as_ref().unwrap().tried().as_slice(), [addr(1)]);
    // The layer learned it: from now on its first tries carry their
    // attempt, the balancer records the first endpoint in it, and the
    // retry goes elsewhere.
    let (status, seen) = send_via(&layer, AttemptFromExtensions, true).await;
    assert_eq!(status, 200);
    let first = seen[0]
        .1
        .as_ref()
        .expect("the first try carries its attempt");
    let retry = seen[1].1.as_ref().unwrap();
    assert_eq!((first.number(), retry.number()), (1, 2));
    assert!(retry.same_request(first));
    assert_eq!(
        seen.iter().map(|(at, _)| *at).collect::<Vec<_>>(),
        [addr(1), addr(2)]
    );
    // A balancer in sight never teaches it: a fresh layer keeps first
    // tries bare.
    let fresh = RetryLayer::new(RetryConfig::builder().max_attempts(2).build().unwrap());
    for _ in 0..2 {
        let (status, seen) = send_via(&fresh, AttemptFromExtensions, false).await;
        assert_eq!(status, 200);
        assert!(seen[0].1.is_none());
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_record_moves_a_retry_the_turn_would_send_back() {
    // Without reading attempts, the retry goes back to the failed endpoint.
    let (status, tried) = send_through(IgnoreAttempt).await;
    assert_eq!((status, tried), (503, vec![addr(1), addr(1)]));
    // Reading them, it goes to the next endpoint, ready by then.
    let (status, tried) = send_through(AttemptFromExtensions).await;
    assert_eq!((status, tried), (200, vec![addr(1), addr(2)]));
}
