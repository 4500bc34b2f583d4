//! Per-kind queues, the shared rate limit and adaptive limits, through the
//! public API.

mod support;

use std::time::Duration;

use resilience_bounded_queue::adaptive::{AimdConfig, Gradient2Config};
use resilience_bounded_queue::kind::KindQueuesLayer;
use resilience_bounded_queue::rate::{RateLimitConfig, RateLimitLayer};
use resilience_bounded_queue::{BoundedQueueConfig, BoundedQueueLayer, FixedPriority};
use resilience_core::timeout::NoDeadline;
use resilience_core::{BoxError, Classify, Priority};
use support::reason;
use tokio::time::advance;
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_test::mock;

fn kind_of(r: &&'static str) -> &'static str {
    if r.starts_with("bulk") {
        "bulk"
    } else {
        "search"
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_flood_of_one_kind_does_not_starve_another() {
    let layer = KindQueuesLayer::builder()
        .queue(
            BoundedQueueConfig::builder()
                .name("search")
                .concurrency(2)
                .capacity(2)
                .build()
                .unwrap(),
        )
        .queue(
            BoundedQueueConfig::builder()
                .name("bulk")
                .concurrency(1)
                .capacity(1)
                .build()
                .unwrap(),
        )
        .build(kind_of as fn(&&'static str) -> &'static str)
        .unwrap()
        .with_priority(FixedPriority(Priority::Critical))
        .with_deadline(NoDeadline);
    let bulk = layer.handle("bulk").unwrap();
    let search = layer.handle("search").unwrap();
    assert!(layer.handle("nope").is_none());
    let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);

    let mut futs = Vec::new();
    for _ in 0..2 {
        assert_ready_ok!(svc.poll_ready());
        let mut f = task::spawn(svc.call("bulk"));
        assert_pending!(f.poll());
        futs.push(f);
    }
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call("bulk").await.unwrap_err();
    assert_eq!(reason(&err), "queue full");
    assert_eq!((bulk.snapshot().in_service, bulk.snapshot().queued), (1, 1));

    // Search is untouched by the bulk flood.
    assert_ready_ok!(svc.poll_ready());
    let mut s = task::spawn(svc.call("search"));
    assert_pending!(s.poll());
    assert_eq!(search.snapshot().in_service, 1);
    let (r, _) = handle.next_request().await.unwrap();
    assert_eq!(r, "bulk");
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(r, "search");
    send.send_response("found");
    assert_eq!(assert_ready_ok!(s.poll()), "found");
    // Unknown kinds go to the default (first) queue.
    assert_ready_ok!(svc.poll_ready());
    let mut other = task::spawn(svc.call("other"));
    assert_pending!(other.poll());
    assert_eq!(search.snapshot().in_service, 1);
}

#[test]
fn kind_queues_validate() {
    let q = |n: &str| BoundedQueueConfig::builder().name(n).build().unwrap();
    let f = |_: &()| "a";
    assert_eq!(
        KindQueuesLayer::builder().build(f).unwrap_err().field(),
        "queues"
    );
    assert_eq!(
        KindQueuesLayer::builder()
            .queue(q("a"))
            .queue(q("a"))
            .build(f)
            .unwrap_err()
            .field(),
        "queues"
    );
    assert_eq!(
        KindQueuesLayer::builder()
            .queue(q("a"))
            .default_kind("b")
            .build(f)
            .unwrap_err()
            .field(),
        "default_kind"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn rate_limit_is_shared_by_clones_and_says_when_to_retry() {
    let layer = RateLimitLayer::new(
        RateLimitConfig::builder()
            .name("rl")
            .rate(10, Duration::from_secs(1))
            .burst(2)
            .build()
            .unwrap(),
    );
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|_: ()| async { Ok::<_, BoxError>("ok") }));
    let mut other = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: ()| async { Ok::<_, BoxError>("ok") }));
    let mut a = svc.clone();
    let mut b = svc;
    assert!(a.ready().await.unwrap().call(()).await.is_ok());
    assert!(b.ready().await.unwrap().call(()).await.is_ok());
    let err = other.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(reason(&err), "rate limited");
    let r = err.downcast_ref::<resilience_core::Rejected>().unwrap();
    assert_eq!(r.retry_after(), Some(Duration::from_millis(100)));
    advance(Duration::from_millis(100)).await;
    assert!(a.ready().await.unwrap().call(()).await.is_ok());
    assert!(b.ready().await.unwrap().call(()).await.is_err());
}

#[test]
fn rate_limit_builds_outside_a_runtime() {
    let layer = RateLimitLayer::new(RateLimitConfig::builder().build().unwrap());
    let _svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn aimd_limit_grows_with_success_and_backs_off_on_errors() {
    let config = BoundedQueueConfig::builder()
        .adaptive(
            AimdConfig::builder()
                .initial(2)
                .min(1)
                .max(4)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let layer = BoundedQueueLayer::new(config)
        .with_priority(FixedPriority::default())
        .with_deadline(NoDeadline);
    let h = layer.handle();
    assert_eq!(h.snapshot().limit, 2);
    let (mut svc, mut handle) = mock::spawn_layer::<u32, u32, _>(layer);
    for i in 0..3 {
        assert_ready_ok!(svc.poll_ready());
        let mut f = task::spawn(svc.call(i));
        assert_pending!(f.poll());
        let (_, send) = handle.next_request().await.unwrap();
        advance(Duration::from_millis(10)).await;
        send.send_response(i);
        assert_ready_ok!(f.poll());
    }
    // +1 only while the limit is in use (1 in flight x 2 >= 2), then
    // app-limited (1 x 2 < 3): no more growth.
    assert_eq!(h.snapshot().limit, 3);
    assert_ready_ok!(svc.poll_ready());
    let mut f = task::spawn(svc.call(9));
    assert_pending!(f.poll());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("boom");
    assert!(assert_ready!(f.poll()).is_err());
    assert_eq!(h.snapshot().limit, 2, "x0.9 on an error");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn gradient2_limit_shrinks_when_latency_rises() {
    let config = BoundedQueueConfig::builder()
        .capacity(1000)
        .adaptive(
            Gradient2Config::builder()
                .initial(20)
                .min(2)
                .max(40)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let layer = BoundedQueueLayer::new(config)
        .with_priority(FixedPriority::default())
        .with_deadline(NoDeadline);
    let h = layer.handle();
    let slow = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = slow.clone();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |_: u32| {
            let slow = flag.load(std::sync::atomic::Ordering::Relaxed);
            async move {
                let ms = if slow { 100 } else { 10 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, BoxError>(())
            }
        }));
    let round = |n: usize| {
        let futs: Vec<_> = (0..n)
            .map(|i| tokio::spawn(svc.clone().oneshot(i as u32)))
            .collect();
        async move {
            for f in futs {
                let _ = f.await.unwrap(); // some are refused once the limit drops
            }
        }
    };
    for _ in 0..20 {
        round(20).await;
    }
    let steady = h.snapshot().limit;
    assert!(
        steady > 20,
        "grows by the queue allowance while in use: {steady}"
    );
    slow.store(true, std::sync::atomic::Ordering::Relaxed);
    for _ in 0..5 {
        round(40).await;
    }
    let congested = h.snapshot().limit;
    assert!(congested < steady, "{congested} < {steady}");
    assert!(congested >= 2);
}

/// The priority readers are resilience-core's: one trait for the queue and
/// the throttle, so a reader written against core plugs in here.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn priority_readers_are_the_ones_from_core() {
    #[derive(Clone)]
    struct ByLength;
    impl resilience_core::ReadPriority<&'static str> for ByLength {
        fn read_priority(&self, req: &&'static str) -> Priority {
            if req.len() > 3 {
                Priority::CriticalPlus
            } else {
                Priority::Sheddable
            }
        }
    }
    fn same_trait<R: resilience_bounded_queue::ReadPriority<Req>, Req>(
        r: &R,
        req: &Req,
    ) -> Priority {
        resilience_core::ReadPriority::read_priority(r, req)
    }
    let fixed: resilience_core::FixedPriority = FixedPriority(Priority::Sheddable);
    assert_eq!(same_trait(&fixed, &"x"), Priority::Sheddable);
    assert_eq!(same_trait(&ByLength, &"long"), Priority::CriticalPlus);
    let from_ext: resilience_core::PriorityFromExtensions =
        resilience_bounded_queue::PriorityFromExtensions;
    let mut req = http::Request::new(());
    req.extensions_mut().insert(Priority::SheddablePlus);
    assert_eq!(same_trait(&from_ext, &req), Priority::SheddablePlus);

    let layer = BoundedQueueLayer::new(
        BoundedQueueConfig::builder()
            .concurrency(1)
            .capacity(1)
            .build()
            .unwrap(),
    )
    .with_priority(ByLength)
    .with_deadline(NoDeadline);
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<&'static str, &'static str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call("first"));
    assert_ready_ok!(svc.poll_ready());
    let mut low = task::spawn(svc.call("low"));
    assert_ready_ok!(svc.poll_ready());
    let mut high = task::spawn(svc.call("high"));
    // The core reader ranked "high" above "low": it displaced it.
    assert_eq!(
        reason(&assert_ready!(low.poll()).unwrap_err()),
        "shed for higher priority"
    );
    assert_eq!(
        h.snapshot().queued_by_priority[Priority::CriticalPlus.index()],
        1
    );
    assert_pending!(a.poll());
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response("a");
    assert_ready_ok!(a.poll());
    assert_pending!(high.poll());
    let (r, send) = handle.next_request().await.unwrap();
    assert_eq!(r, "high");
    send.send_response("h");
    assert_eq!(assert_ready_ok!(high.poll()), "h");
}
