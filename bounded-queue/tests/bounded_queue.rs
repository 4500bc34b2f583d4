//! The bounded queue through its public API, with tower-test mocks and
//! paused time.

mod support;

use std::time::Duration;

use resilience_bounded_queue::{BoundedQueueConfig, BoundedQueueLayer};
use resilience_core::config::MAX_DURATION;
use resilience_core::http::{ErrorResponder, error_response};
use resilience_core::{BoxError, Classify, Deadline, ErrorClass, Priority, RejectionKind};
use support::{Req, layer, reason, rejection, req, req_d, req_p};
use tokio::time::{Instant, advance};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok, task};
use tower::{Service, ServiceExt, service_fn};
use tower_test::mock;

fn cfg() -> resilience_bounded_queue::BoundedQueueConfigBuilder {
    BoundedQueueConfig::builder().name("test")
}

/// The id of the next request to reach the inner service.
async fn next(
    handle: &mut mock::Handle<Req, &'static str>,
) -> (u32, mock::SendResponse<&'static str>) {
    let (r, send) = handle.next_request().await.expect("a request");
    (r.id, send)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn admits_queues_then_rejects_when_full() {
    let layer = layer(cfg().concurrency(1).capacity(1));
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);

    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call(req(1)));
    assert_ready_ok!(svc.poll_ready());
    let mut b = task::spawn(svc.call(req(2)));
    assert_ready_ok!(svc.poll_ready(), "always ready: admission is per request");
    let mut c = task::spawn(svc.call(req(3)));

    let err = assert_ready!(c.poll()).unwrap_err();
    assert_eq!(reason(&err), "queue full");
    assert_eq!(rejection(&err).kind(), RejectionKind::Overloaded);
    assert_eq!(
        rejection(&err).retry_after(),
        Some(BoundedQueueConfig::DEFAULT_RETRY_AFTER)
    );

    assert_pending!(a.poll());
    assert_pending!(b.poll());
    let s = h.snapshot();
    assert_eq!((s.in_service, s.queued, s.rejected.full), (1, 1, 1));

    let (id, send) = next(&mut handle).await;
    assert_eq!(id, 1);
    assert_pending!(
        handle.poll_request(),
        "the queued request has not reached the service"
    );
    send.send_response("a");
    assert_eq!(assert_ready_ok!(a.poll()), "a");

    // The slot was handed to the waiter.
    assert!(b.is_woken());
    assert_eq!(h.snapshot().queued, 0);
    assert_pending!(b.poll());
    let (id, send) = next(&mut handle).await;
    assert_eq!(id, 2);
    send.send_response("b");
    assert_eq!(assert_ready_ok!(b.poll()), "b");
    let s = h.snapshot();
    assert_eq!((s.in_service, s.queued), (0, 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn capacity_zero_sheds_at_once() {
    let layer = layer(cfg().concurrency(1).capacity(0));
    let (mut svc, _handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call(req(1)));
    assert_pending!(a.poll());
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call(req(2)).await.unwrap_err();
    assert_eq!(reason(&err), "queue full");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn fifo_then_lifo_under_a_standing_queue() {
    let layer = layer(
        cfg()
            .concurrency(1)
            .capacity(10)
            .codel(false)
            // Adaptive LIFO is off by default (FIFO keeps the most requests
            // within their wait; see the crate docs): turned on here.
            .lifo(true)
            .codel_interval(Duration::from_millis(100))
            .max_wait(Duration::from_secs(5)),
    );
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);

    let mut futs = Vec::new();
    for id in 1..=3 {
        assert_ready_ok!(svc.poll_ready());
        let mut f = task::spawn(svc.call(req(id)));
        assert_pending!(f.poll());
        futs.push(f);
    }
    // FIFO: 2 before 3.
    let (id, send) = next(&mut handle).await;
    assert_eq!(id, 1);
    send.send_response("1");
    assert_ready_ok!(futs[0].poll());
    assert_pending!(futs[1].poll());
    assert_pending!(futs[2].poll());
    let (id, send2) = next(&mut handle).await;
    assert_eq!(id, 2, "FIFO without a standing queue");
    assert!(!h.snapshot().overloaded);

    assert_ready_ok!(svc.poll_ready());
    let mut f4 = task::spawn(svc.call(req(4)));
    assert_pending!(f4.poll());

    // The queue has not been empty for a whole interval: LIFO.
    advance(Duration::from_millis(150)).await;
    send2.send_response("2");
    assert_ready_ok!(futs[1].poll());
    assert_pending!(futs[2].poll());
    assert_pending!(f4.poll());
    assert!(h.snapshot().overloaded);
    let (id, send) = next(&mut handle).await;
    assert_eq!(id, 4, "LIFO: the newest waiter goes first");
    send.send_response("4");
    assert_ready_ok!(f4.poll());
    assert_pending!(futs[2].poll());
    let (id, send) = next(&mut handle).await;
    assert_eq!(id, 3);
    send.send_response("3");
    assert_ready_ok!(futs[2].poll());
    assert!(!h.snapshot().overloaded, "drained: FIFO again");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn codel_target_bounds_the_wait_under_a_standing_queue() {
    let layer = layer(
        cfg()
            .concurrency(1)
            .capacity(10)
            .max_wait(Duration::from_secs(1))
            .codel_target(Duration::from_millis(5))
            .codel_interval(Duration::from_millis(100)),
    );
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call(req(1)));
    assert_pending!(a.poll());
    let (_, _send_a) = next(&mut handle).await;

    // No standing queue yet: the normal wait applies.
    assert_ready_ok!(svc.poll_ready());
    let mut b = task::spawn(svc.call(req(2)));
    assert_pending!(b.poll());
    advance(Duration::from_millis(100)).await;
    assert_pending!(b.poll(), "still within max_wait");

    // The queue has not been empty for 100 ms: a new arrival may wait 5 ms.
    let start = Instant::now();
    assert_ready_ok!(svc.poll_ready());
    let mut c = task::spawn(svc.call(req(3)));
    assert_pending!(c.poll());
    assert!(h.snapshot().overloaded);
    // b has waited far longer than the target: it leaves now.
    assert!(b.is_woken());
    let err = assert_ready!(b.poll()).unwrap_err();
    assert_eq!(reason(&err), "queue time exceeded");

    // Few arrivals refused so far (the load is about what the service
    // takes): four times the target, 20 ms.
    advance(Duration::from_millis(19)).await;
    assert_pending!(c.poll());
    advance(Duration::from_millis(1)).await;
    let err = assert_ready!(c.poll()).unwrap_err();
    assert_eq!(reason(&err), "queue time exceeded");
    assert_eq!(start.elapsed(), Duration::from_millis(20));
    assert_eq!(h.snapshot().rejected.wait_timeout, 2);
    assert_eq!(h.snapshot().queued, 0);

    // Refusing more than one arrival in ten (sustained overload): a
    // waiter may wait only the target itself.
    for id in 10..15 {
        assert_ready_ok!(svc.poll_ready());
        let mut f = task::spawn(svc.call(req(id)));
        assert_pending!(f.poll());
        advance(Duration::from_millis(20)).await;
        assert!(assert_ready!(f.poll()).is_err());
    }
    assert!(h.snapshot().overloaded);
    let start = Instant::now();
    assert_ready_ok!(svc.poll_ready());
    let mut d = task::spawn(svc.call(req(20)));
    assert_pending!(d.poll());
    advance(Duration::from_millis(4)).await;
    assert_pending!(d.poll());
    advance(Duration::from_millis(1)).await;
    let err = assert_ready!(d.poll()).unwrap_err();
    assert_eq!(reason(&err), "queue time exceeded");
    assert_eq!(start.elapsed(), Duration::from_millis(5));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_standing_target_follows_the_service_time() {
    // The same standing queue in front of a 40 ms service: with the
    // target raised to 1.5 service times (60 ms; four times that, 240 ms,
    // while few are refused) a request that waited 100 ms stays; with the
    // fixed 5 ms target (20 ms while few are refused) it leaves.
    for (n, stays) in [(1.5, true), (0.0, false)] {
        let layer = layer(
            cfg()
                .concurrency(1)
                .capacity(10)
                .max_wait(Duration::from_secs(1))
                .codel_target(Duration::from_millis(5))
                .codel_interval(Duration::from_millis(100))
                .target_service_times(n),
        );
        let h = layer.handle();
        let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
        // One call measures the service time.
        assert_ready_ok!(svc.poll_ready());
        let mut first = task::spawn(svc.call(req(1)));
        assert_pending!(first.poll());
        let (_, send) = next(&mut handle).await;
        advance(Duration::from_millis(40)).await;
        send.send_response("1");
        assert_ready_ok!(first.poll());
        assert_eq!(h.snapshot().service_time, Duration::from_millis(40));

        assert_ready_ok!(svc.poll_ready());
        let mut a = task::spawn(svc.call(req(2)));
        assert_pending!(a.poll());
        let (_, _send_a) = next(&mut handle).await;
        assert_ready_ok!(svc.poll_ready());
        let mut b = task::spawn(svc.call(req(3)));
        assert_pending!(b.poll());
        advance(Duration::from_millis(100)).await;
        assert_ready_ok!(svc.poll_ready());
        let mut c = task::spawn(svc.call(req(4)));
        if stays {
            // Expected to wait 80 ms (two 40 ms calls ahead): queued.
            assert_pending!(c.poll());
            assert_pending!(b.poll(), "100 ms is within 240 ms");
        } else {
            // 80 ms is beyond 20 ms: refused at once, and b leaves.
            let err = assert_ready!(c.poll()).unwrap_err();
            assert_eq!(reason(&err), "queue time exceeded");
            let err = assert_ready!(b.poll()).unwrap_err();
            assert_eq!(reason(&err), "queue time exceeded");
        }
        assert!(h.snapshot().overloaded, "target_service_times({n})");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_queue_that_drains_as_it_fills_is_not_standing() {
    // Never empty for far longer than the interval, but every waiter starts
    // within the (5 ms) target: not standing, and nobody is refused.
    let layer = layer(
        cfg()
            .concurrency(1)
            .capacity(10)
            .max_wait(Duration::from_secs(1))
            .codel_target(Duration::from_millis(5))
            .codel_interval(Duration::from_millis(100)),
    );
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut current = task::spawn(svc.call(req(0)));
    assert_pending!(current.poll());
    let (_, mut send) = next(&mut handle).await;
    assert_ready_ok!(svc.poll_ready());
    let mut waiting = task::spawn(svc.call(req(1)));
    assert_pending!(waiting.poll());
    for id in 2..60 {
        // Every 4 ms one arrives and the one in service finishes: one
        // waiter at least all along (240 ms), each starting after 4 ms.
        advance(Duration::from_millis(4)).await;
        assert_ready_ok!(svc.poll_ready());
        let mut arrived = task::spawn(svc.call(req(id)));
        assert_pending!(arrived.poll());
        send.send_response("ok");
        assert_ready_ok!(current.poll());
        assert_pending!(waiting.poll());
        let (_, s) = next(&mut handle).await;
        send = s;
        current = waiting;
        waiting = arrived;
        assert!(h.snapshot().queued >= 1);
    }
    let s = h.snapshot();
    assert!(!s.overloaded);
    assert_eq!(s.rejected, Default::default());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn max_wait_without_codel() {
    let layer = layer(
        cfg()
            .concurrency(1)
            .codel(false)
            .max_wait(Duration::from_millis(300)),
    );
    let (mut svc, _handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call(req(1)));
    assert_pending!(a.poll());
    let start = Instant::now();
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call(req(2)).await.unwrap_err();
    assert_eq!(reason(&err), "queue time exceeded");
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}

/// The longest `max_wait` (365 days): in effect no queue timeout, a waiter
/// is bounded only by its deadline (no overflow computing when its wait
/// ends).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_longest_max_wait_is_bounded_only_by_the_deadline() {
    for codel in [false, true] {
        let layer = layer(
            cfg()
                .concurrency(1)
                .capacity(2)
                .codel(codel)
                .codel_target(MAX_DURATION)
                .codel_interval(MAX_DURATION)
                .max_wait(MAX_DURATION),
        );
        let h = layer.handle();
        let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
        assert_ready_ok!(svc.poll_ready());
        let mut a = task::spawn(svc.call(req(1)));
        assert_ready_ok!(svc.poll_ready());
        let mut patient = task::spawn(svc.call(req(2)));
        assert_ready_ok!(svc.poll_ready());
        let mut bounded = task::spawn(svc.call(req_d(3, Duration::from_secs(10))));
        assert_pending!(a.poll());
        assert_pending!(patient.poll());
        assert_pending!(bounded.poll());
        let (_, send_a) = next(&mut handle).await;

        advance(Duration::from_secs(9)).await;
        assert_pending!(patient.poll());
        assert_pending!(bounded.poll());
        advance(Duration::from_secs(1)).await;
        assert!(bounded.is_woken());
        let err = assert_ready!(bounded.poll()).unwrap_err();
        assert_eq!(reason(&err), "deadline cannot be met");

        advance(Duration::from_secs(86_400)).await;
        assert!(!patient.is_woken(), "no queue timeout for a year");
        assert_pending!(patient.poll());
        assert_eq!(h.snapshot().queued, 1);
        send_a.send_response("a");
        assert_ready_ok!(a.poll());
        assert!(patient.is_woken());
        assert_pending!(patient.poll());
        let (id, send) = next(&mut handle).await;
        assert_eq!(id, 2);
        send.send_response("p");
        assert_eq!(assert_ready_ok!(patient.poll()), "p");
        let s = h.snapshot();
        assert_eq!((s.in_service, s.queued), (0, 0));
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn higher_priority_displaces_the_lowest_queued() {
    let layer = layer(cfg().concurrency(1).capacity(2));
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    let mut call = |r: Req| {
        assert_ready_ok!(svc.poll_ready());
        task::spawn(svc.call(r))
    };
    let mut a = call(req_p(1, Priority::Critical));
    let mut s1 = call(req_p(2, Priority::Sheddable));
    let mut s2 = call(req_p(3, Priority::SheddablePlus));
    assert_pending!(a.poll());
    assert_pending!(s1.poll());
    assert_pending!(s2.poll());
    // Full. A critical arrival sheds the lowest priority waiter.
    let mut c = call(req_p(4, Priority::Critical));
    assert_pending!(c.poll());
    assert!(s1.is_woken());
    // Counted when it is displaced, not when its future is polled again.
    assert_eq!(h.snapshot().rejected.shed, 1);
    let err = assert_ready!(s1.poll()).unwrap_err();
    assert_eq!(reason(&err), "shed for higher priority");
    assert_eq!(h.snapshot().queued_by_priority, [0, 1, 1, 0]);
    // Nothing lower than sheddable-plus to displace: queue full.
    let mut s3 = call(req_p(5, Priority::SheddablePlus));
    let err = assert_ready!(s3.poll()).unwrap_err();
    assert_eq!(reason(&err), "queue full");
    assert_eq!(h.snapshot().rejected.shed, 1);

    // The critical waiter is served before the older sheddable-plus one.
    let (id, send) = next(&mut handle).await;
    assert_eq!(id, 1);
    send.send_response("a");
    assert_ready_ok!(a.poll());
    assert_pending!(c.poll());
    assert_pending!(s2.poll());
    let (id, send) = next(&mut handle).await;
    assert_eq!(id, 4);
    send.send_response("c");
    assert_ready_ok!(c.poll());
    assert_pending!(s2.poll());
    let (id, send) = next(&mut handle).await;
    assert_eq!(id, 3);
    send.send_response("s2");
    assert_ready_ok!(s2.poll());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn reserved_share_serves_a_lower_priority_under_saturation() {
    let layer = layer(
        cfg()
            .concurrency(2)
            .capacity(10)
            .reserve(Priority::Sheddable, 0.5),
    );
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    let mut call = |r: Req| {
        assert_ready_ok!(svc.poll_ready());
        let mut f = task::spawn(svc.call(r));
        let _ = f.poll();
        f
    };
    let mut a = call(req_p(1, Priority::Critical));
    let _b = call(req_p(2, Priority::Critical));
    let mut s = call(req_p(3, Priority::Sheddable));
    let mut c = call(req_p(4, Priority::Critical));
    let (_, send_a) = next(&mut handle).await;
    let (_, _send_b) = next(&mut handle).await;
    send_a.send_response("a");
    assert_ready_ok!(a.poll());
    assert_pending!(s.poll());
    assert_pending!(c.poll());
    let (id, _send) = next(&mut handle).await;
    assert_eq!(id, 3, "sheddable is below its reserved share: served first");
}

/// A displaced waiter is counted as shed at once, also when its future is
/// dropped without being polled again, and only once.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_displaced_waiter_is_counted_once_when_displaced() {
    let layer = layer(cfg().concurrency(1).capacity(1));
    let h = layer.handle();
    let (mut svc, _handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    let mut call = |r: Req| {
        assert_ready_ok!(svc.poll_ready());
        task::spawn(svc.call(r))
    };
    let mut a = call(req_p(1, Priority::Critical));
    let mut s = call(req_p(2, Priority::Sheddable));
    assert_pending!(a.poll());
    assert_pending!(s.poll());
    let mut c = call(req_p(3, Priority::Critical));
    assert_pending!(c.poll());
    assert_eq!(h.snapshot().rejected.shed, 1);
    drop(s);
    let snap = h.snapshot();
    assert_eq!((snap.rejected.shed, snap.queued), (1, 1));
}

/// A priority below its reserved share keeps it while the admission level
/// sheds everything below a starving priority: it is neither shed from the
/// queue nor refused on arrival, and gets the next free slot.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn reserved_share_survives_priority_shedding() {
    let layer = layer(
        cfg()
            .concurrency(2)
            .capacity(10)
            .codel(false)
            .lifo(false)
            .max_wait(Duration::from_millis(100))
            .reserve(Priority::Sheddable, 0.5),
    );
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    let mut call = |r: Req| {
        assert_ready_ok!(svc.poll_ready());
        task::spawn(svc.call(r))
    };
    let mut a = call(req_p(1, Priority::Critical));
    let mut b = call(req_p(2, Priority::Critical));
    assert_pending!(a.poll());
    assert_pending!(b.poll());
    let (_, send_a) = next(&mut handle).await;
    let (_, _send_b) = next(&mut handle).await;
    let mut c = call(req_p(3, Priority::Critical));
    assert_pending!(c.poll());
    advance(Duration::from_millis(50)).await;
    let mut s1 = call(req_p(4, Priority::Sheddable));
    assert_pending!(s1.poll());
    assert_eq!(h.snapshot().queued_by_priority, [1, 0, 1, 0]);

    // The critical waiter starves and raises the admission level...
    advance(Duration::from_millis(50)).await;
    assert_eq!(
        reason(&assert_ready!(c.poll()).unwrap_err()),
        "queue time exceeded"
    );
    assert_eq!(h.snapshot().admission_level, Priority::Critical);
    // ...but sheddable holds none of its reserved slot: it stays queued,
    assert_pending!(s1.poll());
    // and its arrivals are still queued, while sheddable-plus (no share)
    // is refused.
    let mut s2 = call(req_p(5, Priority::Sheddable));
    assert_pending!(s2.poll());
    let mut sp = call(req_p(6, Priority::SheddablePlus));
    assert_eq!(
        reason(&assert_ready!(sp.poll()).unwrap_err()),
        "shed for higher priority"
    );
    assert_eq!(h.snapshot().queued_by_priority, [2, 0, 0, 0]);

    // The next free slot is the sheddable share's.
    send_a.send_response("a");
    assert_ready_ok!(a.poll());
    assert!(s1.is_woken());
    assert_pending!(s1.poll());
    let (id, _send) = next(&mut handle).await;
    assert_eq!(id, 4);
    assert_eq!(h.snapshot().rejected.shed, 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn rejects_at_once_when_the_deadline_cannot_be_met() {
    let layer = layer(cfg().concurrency(1).capacity(10));
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);

    // Teach the EWMA a 100 ms service time.
    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call(req(1)));
    assert_pending!(a.poll());
    let (_, send) = next(&mut handle).await;
    advance(Duration::from_millis(100)).await;
    send.send_response("a");
    assert_ready_ok!(a.poll());
    assert_eq!(h.snapshot().service_time, Duration::from_millis(100));

    assert_ready_ok!(svc.poll_ready());
    let mut b = task::spawn(svc.call(req(2)));
    assert_pending!(b.poll());

    // Expected wait 100 ms > 50 ms left: rejected at once.
    assert_ready_ok!(svc.poll_ready());
    let mut c = task::spawn(svc.call(req_d(3, Duration::from_millis(50))));
    let err = assert_ready!(c.poll()).unwrap_err();
    assert_eq!(reason(&err), "deadline cannot be met");
    // Already expired: rejected at once.
    assert_ready_ok!(svc.poll_ready());
    let mut e = task::spawn(svc.call(Req {
        deadline: Some(Deadline::at(Instant::now())),
        ..req(5)
    }));
    assert_eq!(
        reason(&assert_ready!(e.poll()).unwrap_err()),
        "deadline cannot be met"
    );
    // Enough time left: queued, and leaves when its deadline passes.
    assert_ready_ok!(svc.poll_ready());
    let mut d = task::spawn(svc.call(req_d(4, Duration::from_millis(500))));
    assert_pending!(d.poll());
    assert_eq!(h.snapshot().queued, 1);
    advance(Duration::from_millis(500)).await;
    let err = assert_ready!(d.poll()).unwrap_err();
    assert_eq!(reason(&err), "deadline cannot be met");
    assert_eq!(h.snapshot().rejected.deadline, 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropped_waiter_leaves_the_queue() {
    let layer = layer(cfg().concurrency(1).capacity(1));
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call(req(1)));
    assert_pending!(a.poll());
    // Dropped before its first poll.
    assert_ready_ok!(svc.poll_ready());
    drop(svc.call(req(2)));
    assert_eq!(h.snapshot().queued, 0);
    // Dropped after polling.
    assert_ready_ok!(svc.poll_ready());
    let mut b = task::spawn(svc.call(req(3)));
    assert_pending!(b.poll());
    assert_eq!(h.snapshot().queued, 1);
    drop(b);
    assert_eq!(h.snapshot().queued, 0);
    // The space is free again.
    assert_ready_ok!(svc.poll_ready());
    let mut c = task::spawn(svc.call(req(4)));
    assert_pending!(c.poll());
    let (_, send) = next(&mut handle).await;
    send.send_response("a");
    assert_ready_ok!(a.poll());
    assert_pending!(c.poll());
    let (id, send) = next(&mut handle).await;
    assert_eq!(id, 4);
    send.send_response("c");
    assert_ready_ok!(c.poll());
    let s = h.snapshot();
    assert_eq!((s.in_service, s.queued), (0, 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropped_admitted_future_releases_its_slot() {
    let layer = layer(cfg().concurrency(1).capacity(4));
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    // Admitted at once, dropped in service.
    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call(req(1)));
    assert_pending!(a.poll());
    assert_eq!(h.snapshot().in_service, 1);
    assert_ready_ok!(svc.poll_ready());
    let mut b = task::spawn(svc.call(req(2)));
    assert_pending!(b.poll());
    drop(a);
    // The slot went straight to the waiter.
    let s = h.snapshot();
    assert_eq!((s.in_service, s.queued), (1, 0));
    assert!(b.is_woken());

    // b was granted but is dropped before it resumes: the slot moves on.
    assert_ready_ok!(svc.poll_ready());
    let mut c = task::spawn(svc.call(req(3)));
    assert_pending!(c.poll());
    drop(b);
    let s = h.snapshot();
    assert_eq!((s.in_service, s.queued), (1, 0));
    assert_pending!(c.poll());

    // c resumed, reached the service, then is dropped mid-call.
    let _ = next(&mut handle).await; // a's request, never answered
    let (id, _send) = next(&mut handle).await;
    assert_eq!(id, 3);
    drop(c);
    let s = h.snapshot();
    assert_eq!((s.in_service, s.queued), (0, 0));
}

/// The slot is released when the response is ready, not when the future
/// is dropped; polling a finished future again panics and releases nothing
/// twice.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_finished_future_has_released_its_slot() {
    let layer = layer(cfg().concurrency(1).capacity(0));
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call(req(1)));
    assert_pending!(a.poll());
    let (_, send) = next(&mut handle).await;
    send.send_response("ok");
    assert_eq!(assert_ready_ok!(a.poll()), "ok");
    assert_eq!(
        h.snapshot().in_service,
        0,
        "released, the future still alive"
    );

    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.poll()));
    assert!(again.is_err(), "polled after completion");
    drop(a);
    assert_eq!(h.snapshot().in_service, 0);
    assert_ready_ok!(svc.poll_ready());
    let mut b = task::spawn(svc.call(req(2)));
    assert_pending!(b.poll(), "admitted at once, in service");
    assert_eq!(h.snapshot().in_service, 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn inner_errors_pass_through_and_release() {
    let layer = layer(cfg().concurrency(1));
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call(req(1)));
    assert_pending!(a.poll());
    let (_, send) = next(&mut handle).await;
    send.send_error("boom");
    let err = assert_ready!(a.poll()).unwrap_err();
    assert_eq!(err.to_string(), "boom");
    assert!(err.downcast_ref::<resilience_core::Rejected>().is_none());
    assert_eq!(h.snapshot().in_service, 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn clones_share_one_queue() {
    let layer = layer(cfg().concurrency(1).capacity(0));
    let (mut svc, _handle) = mock::spawn_layer::<Req, &'static str, _>(layer.clone());
    let (mut other, _h2) = mock::spawn_layer::<Req, &'static str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call(req(1)));
    assert_pending!(a.poll());
    assert_ready_ok!(other.poll_ready());
    assert_eq!(reason(&other.call(req(2)).await.unwrap_err()), "queue full");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn reads_priority_and_deadline_from_http_extensions() {
    let queue = BoundedQueueLayer::new(cfg().concurrency(1).capacity(1).build().unwrap());
    let h = queue.handle();
    let mut svc = tower::ServiceBuilder::new()
        .layer(queue)
        .service(service_fn(|_r: http::Request<()>| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, BoxError>("ok")
        }));
    let with = |p: Priority| {
        let mut r = http::Request::new(());
        r.extensions_mut().insert(p);
        r
    };
    let mut a = task::spawn(svc.ready().await.unwrap().call(with(Priority::Sheddable)));
    assert_pending!(a.poll());
    let mut b = task::spawn(svc.ready().await.unwrap().call(with(Priority::Sheddable)));
    assert_pending!(b.poll());
    // Default priority (critical) displaces the sheddable waiter.
    let mut c = task::spawn(svc.ready().await.unwrap().call(http::Request::new(())));
    assert_pending!(c.poll());
    assert_eq!(
        reason(&assert_ready!(b.poll()).unwrap_err()),
        "shed for higher priority"
    );
    assert_eq!(h.snapshot().queued_by_priority, [0, 0, 1, 0]);
    // An expired deadline in the extensions.
    let mut r = http::Request::new(());
    r.extensions_mut().insert(Deadline::at(Instant::now()));
    let err = svc.ready().await.unwrap().call(r).await.unwrap_err();
    assert_eq!(reason(&err), "deadline cannot be met");
    assert_eq!(a.await.unwrap(), "ok");
    assert_eq!(c.await.unwrap(), "ok");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn rejections_map_to_503_429_and_resource_exhausted() {
    let layer = layer(
        cfg()
            .concurrency(1)
            .capacity(0)
            .retry_after(Duration::from_millis(1500)),
    );
    let (mut svc, _handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call(req(1)));
    assert_pending!(a.poll());
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call(req(2)).await.unwrap_err();
    let found = resilience_core::error::find(&*err).unwrap();
    assert_eq!(found.error_class(), ErrorClass::Overloaded);

    let rsp = error_response(&*err);
    assert_eq!(rsp.status(), 503);
    assert_eq!(rsp.headers()["retry-after"], "2");
    let rsp = ErrorResponder::new()
        .overloaded_status(http::StatusCode::TOO_MANY_REQUESTS)
        .respond(&*err);
    assert_eq!(rsp.status(), 429);
    assert_eq!(rsp.headers()["retry-after"], "2");
    let status = resilience_core::grpc::into_status(err);
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
}

#[test]
fn config_validation_names_the_field() {
    let field =
        |b: resilience_bounded_queue::BoundedQueueConfigBuilder| b.build().unwrap_err().field();
    assert_eq!(field(cfg().concurrency(0)), "concurrency");
    assert_eq!(field(cfg().max_wait(Duration::ZERO)), "max_wait");
    assert!(cfg().capacity(0).max_wait(Duration::ZERO).build().is_ok());
    assert_eq!(field(cfg().codel_target(Duration::ZERO)), "codel_target");
    assert_eq!(
        field(cfg().codel_interval(Duration::ZERO)),
        "codel_interval"
    );
    assert_eq!(
        field(
            cfg()
                .codel_target(Duration::from_secs(1))
                .codel_interval(Duration::from_millis(100))
        ),
        "codel_target"
    );
    assert_eq!(field(cfg().retry_after(Duration::ZERO)), "retry_after");
    assert_eq!(field(cfg().retry_after(Duration::MAX)), "retry_after");
    assert!(
        cfg()
            .retry_after(BoundedQueueConfig::MAX_RETRY_AFTER)
            .build()
            .is_ok()
    );
    assert!(
        cfg()
            .max_wait(MAX_DURATION)
            .codel_target(MAX_DURATION)
            .codel_interval(MAX_DURATION)
            .build()
            .is_ok()
    );
    // One rule for every configured duration: at most 365 days.
    let over = MAX_DURATION + Duration::from_secs(1);
    assert_eq!(field(cfg().max_wait(over)), "max_wait");
    assert_eq!(field(cfg().max_wait(Duration::MAX)), "max_wait");
    assert_eq!(field(cfg().codel_interval(over)), "codel_interval");
    assert_eq!(
        field(cfg().codel_target(over).codel_interval(over)),
        "codel_target"
    );
    assert_eq!(field(cfg().reserve(Priority::Critical, 1.5)), "reserved");
    assert_eq!(
        field(cfg().reserve(Priority::Critical, f64::NAN)),
        "reserved"
    );
    assert_eq!(
        field(
            cfg()
                .reserve(Priority::Critical, 0.7)
                .reserve(Priority::Sheddable, 0.7)
        ),
        "reserved"
    );
    assert_eq!(field(cfg().name("")), "name");
    assert_eq!(field(cfg().name("has space")), "name");
}

#[cfg(feature = "serde")]
#[test]
fn config_deserializes_with_the_same_validation() {
    let c: BoundedQueueConfig = serde_json::from_str(
        r#"{"name":"api","concurrency":4,"capacity":8,"max_wait":"250ms","codel_target":"10ms",
            "reserved":{"critical":0.5}}"#,
    )
    .unwrap();
    assert_eq!(c.max_wait(), Duration::from_millis(250));
    assert_eq!(c.reserved().critical, 0.5);
    assert!(serde_json::from_str::<BoundedQueueConfig>(r#"{"concurrency":0}"#).is_err());
    assert!(serde_json::from_str::<BoundedQueueConfig>(r#"{"bogus":1}"#).is_err());
}

/// Huge durations in a config file: refused with the field's name (one
/// rule: at most 365 days), never a panic; the longest allowed works.
#[cfg(feature = "serde")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn huge_serde_durations_build_or_fail_cleanly() {
    let c: BoundedQueueConfig = serde_json::from_str(
        r#"{"concurrency":1,"capacity":1,"max_wait":"8760h",
            "codel_target":31536000000,"codel_interval":"31536000s"}"#,
    )
    .unwrap();
    assert_eq!(c.max_wait(), MAX_DURATION);
    let for_huge = |json: &str| {
        serde_json::from_str::<BoundedQueueConfig>(json)
            .unwrap_err()
            .to_string()
    };
    for (json, field) in [
        (r#"{"retry_after":"18446744073709551615s"}"#, "retry_after"),
        (r#"{"max_wait":"18446744073709551615s"}"#, "max_wait"),
        (r#"{"max_wait":"8761h"}"#, "max_wait"),
        (
            r#"{"codel_target":"8761h","codel_interval":"8761h"}"#,
            "codel_target",
        ),
        (
            r#"{"codel_interval":18446744073709551615}"#,
            "codel_interval",
        ),
    ] {
        let err = for_huge(json);
        assert!(err.contains(field), "{json}: {err}");
    }
    assert!(for_huge(r#"{"max_wait":"18446744073709551615h"}"#).contains("too large"));
    assert!(for_huge(r#"{"max_wait":"99999999999999999999999s"}"#).contains("too large"));

    // The longest configuration works: a waiter without a deadline waits,
    // one with a deadline is bounded by it.
    let layer = BoundedQueueLayer::new(c)
        .with_priority((|r: &Req| r.priority) as support::ReadP)
        .with_deadline((|r: &Req| r.deadline) as support::ReadD);
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call(req(1)));
    assert_pending!(a.poll());
    assert_ready_ok!(svc.poll_ready());
    let mut b = task::spawn(svc.call(req_d(2, Duration::from_secs(3600))));
    assert_pending!(b.poll());
    advance(Duration::from_secs(3600)).await;
    assert_eq!(
        reason(&assert_ready!(b.poll()).unwrap_err()),
        "deadline cannot be met"
    );
    let (_, send) = next(&mut handle).await;
    send.send_response("a");
    assert_ready_ok!(a.poll());

    let err = serde_json::from_str::<resilience_bounded_queue::rate::RateLimitConfig>(
        r#"{"num":1,"per":"18446744073709551615s"}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("per"), "{err}");
}

#[cfg(feature = "metrics")]
#[test]
fn metrics_count_rejections_by_reason_and_priority() {
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
            let layer = layer(cfg().name("m").concurrency(1).capacity(0));
            let (mut svc, _handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
            assert_ready_ok!(svc.poll_ready());
            let mut a = task::spawn(svc.call(req(1)));
            assert_pending!(a.poll());
            assert_ready_ok!(svc.poll_ready());
            assert!(svc.call(req_p(2, Priority::Sheddable)).await.is_err());
        });
    });
    let snap = snapshotter.snapshot().into_vec();
    let found = snap.iter().find(|(key, _, _, _)| {
        let k = key.key();
        k.name() == resilience_core::names::BOUNDED_QUEUE_REJECTED_TOTAL
            && k.labels()
                .any(|l| l.key() == "reason" && l.value() == "full")
            && k.labels()
                .any(|l| l.key() == "priority" && l.value() == "sheddable")
            && k.labels().any(|l| l.key() == "name" && l.value() == "m")
    });
    let (_, _, _, value) = found.expect("rejection counter");
    assert_eq!(value, &DebugValue::Counter(1));
    let in_service = snap.iter().find(|(key, _, _, _)| {
        key.key().name() == resilience_core::names::BOUNDED_QUEUE_IN_SERVICE
    });
    assert!(in_service.is_some());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_starving_priority_sheds_the_ones_below_it_until_quiet() {
    let layer = layer(
        cfg()
            .concurrency(1)
            .capacity(10)
            .codel(false)
            .codel_interval(Duration::from_millis(100))
            .max_wait(Duration::from_millis(100)),
    );
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    let mut call = |r: Req| {
        assert_ready_ok!(svc.poll_ready());
        task::spawn(svc.call(r))
    };
    let mut a = call(req_p(1, Priority::Critical));
    assert_pending!(a.poll());
    let (_, _send_a) = next(&mut handle).await;
    let mut c = call(req_p(2, Priority::Critical));
    assert_pending!(c.poll());
    advance(Duration::from_millis(50)).await;
    let mut s = call(req_p(3, Priority::Sheddable));
    assert_pending!(s.poll());

    // The critical waiter starves: it times out, and the sheddable one
    // queued behind it is shed at once rather than left to time out later.
    advance(Duration::from_millis(50)).await;
    assert_eq!(
        reason(&assert_ready!(c.poll()).unwrap_err()),
        "queue time exceeded"
    );
    assert!(s.is_woken());
    assert_eq!(h.snapshot().rejected.shed, 1, "counted when shed");
    assert_eq!(
        reason(&assert_ready!(s.poll()).unwrap_err()),
        "shed for higher priority"
    );
    assert_eq!(h.snapshot().rejected.shed, 1, "and only once");
    assert_eq!(h.snapshot().admission_level, Priority::Critical);
    // While saturated, arrivals below critical are refused on arrival...
    let mut s2 = call(req_p(4, Priority::SheddablePlus));
    assert_eq!(
        reason(&assert_ready!(s2.poll()).unwrap_err()),
        "shed for higher priority"
    );
    // ...critical ones still queue.
    let mut c2 = call(req_p(5, Priority::Critical));
    assert_pending!(c2.poll());
    drop(c2);
    // One level per quiet interval: sheddable-plus after 100 ms, sheddable
    // after 200 ms.
    advance(Duration::from_millis(100)).await;
    let mut s3 = call(req_p(6, Priority::Sheddable));
    assert_eq!(
        reason(&assert_ready!(s3.poll()).unwrap_err()),
        "shed for higher priority"
    );
    let mut s4 = call(req_p(7, Priority::SheddablePlus));
    assert_pending!(s4.poll());
    drop(s4);
    advance(Duration::from_millis(100)).await;
    let mut s5 = call(req_p(8, Priority::Sheddable));
    assert_pending!(s5.poll());
    assert_eq!(h.snapshot().queued, 1);
    assert_eq!(h.snapshot().admission_level, Priority::Sheddable);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn rejects_at_once_when_the_expected_wait_exceeds_the_allowed_wait() {
    let layer = layer(
        cfg()
            .concurrency(1)
            .capacity(10)
            .codel(false)
            .max_wait(Duration::from_millis(150)),
    );
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call(req(1)));
    assert_pending!(a.poll());
    let (_, send) = next(&mut handle).await;
    advance(Duration::from_millis(100)).await;
    send.send_response("a");
    assert_ready_ok!(a.poll());

    assert_ready_ok!(svc.poll_ready());
    let mut b = task::spawn(svc.call(req(2)));
    assert_pending!(b.poll()); // in service
    // First in line: 100 ms expected, within the 150 ms allowed.
    assert_ready_ok!(svc.poll_ready());
    let mut c = task::spawn(svc.call(req(3)));
    assert_pending!(c.poll());
    // Second in line: 200 ms expected: refused now, not after 150 ms.
    assert_ready_ok!(svc.poll_ready());
    let mut d = task::spawn(svc.call(req(4)));
    assert_eq!(
        reason(&assert_ready!(d.poll()).unwrap_err()),
        "queue time exceeded"
    );
    assert_eq!(h.snapshot().queued, 1);
}

/// A recorder that counts every operation on each gauge and keeps its last
/// value.
#[cfg(feature = "metrics")]
mod counting {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    #[derive(Default, Clone)]
    pub(crate) struct Gauges(Arc<Mutex<HashMap<String, (usize, f64)>>>);

    struct One(String, Gauges);

    impl Gauges {
        /// (operations, last value) of the gauge `name`.
        pub(crate) fn get(&self, name: &str) -> (usize, f64) {
            self.0
                .lock()
                .unwrap()
                .get(name)
                .copied()
                .unwrap_or_default()
        }

        fn op(&self, name: &str, f: impl FnOnce(f64) -> f64) {
            let mut m = self.0.lock().unwrap();
            let e = m.entry(name.to_owned()).or_default();
            e.0 += 1;
            e.1 = f(e.1);
        }
    }

    impl GaugeFn for One {
        fn increment(&self, v: f64) {
            self.1.op(&self.0, |x| x + v);
        }
        fn decrement(&self, v: f64) {
            self.1.op(&self.0, |x| x - v);
        }
        fn set(&self, v: f64) {
            self.1.op(&self.0, |_| v);
        }
    }

    impl Recorder for Gauges {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(Arc::new(One(key.name().to_owned(), self.clone())))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }
}

/// Uncontended requests do no metrics work; the in-service gauge is
/// published once the queue is contended, on snapshots, and drops to zero
/// when the queue goes idle.
#[cfg(feature = "metrics")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn in_service_gauge_is_published_off_the_uncontended_path() {
    use resilience_core::names::BOUNDED_QUEUE_IN_SERVICE as IN_SERVICE;
    let gauges = counting::Gauges::default();
    let layer = metrics::with_local_recorder(&gauges, || layer(cfg().concurrency(2).capacity(4)));
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);

    for id in 0..10 {
        assert_ready_ok!(svc.poll_ready());
        let mut a = task::spawn(svc.call(req(id)));
        assert_ready_ok!(svc.poll_ready());
        let mut b = task::spawn(svc.call(req(id + 100)));
        assert_pending!(a.poll());
        assert_pending!(b.poll());
        for _ in 0..2 {
            let (_, send) = next(&mut handle).await;
            send.send_response("ok");
        }
        assert_ready_ok!(a.poll());
        assert_ready_ok!(b.poll());
    }
    assert_eq!(
        gauges.get(IN_SERVICE).0,
        0,
        "no gauge work while uncontended"
    );

    // Contended: a request queues, and the gauge says the slots are full.
    assert_ready_ok!(svc.poll_ready());
    let mut a = task::spawn(svc.call(req(1)));
    assert_ready_ok!(svc.poll_ready());
    let mut b = task::spawn(svc.call(req(2)));
    assert_ready_ok!(svc.poll_ready());
    let mut c = task::spawn(svc.call(req(3)));
    assert_pending!(a.poll());
    assert_pending!(b.poll());
    assert_pending!(c.poll());
    assert_eq!(gauges.get(IN_SERVICE).1, 2.0);
    let ops = gauges.get(IN_SERVICE).0;
    let (_, send) = next(&mut handle).await;
    send.send_response("a");
    assert_ready_ok!(a.poll());
    assert_eq!(
        gauges.get(IN_SERVICE),
        (ops + 1, 2.0),
        "published by the hand-off to the waiter"
    );
    let (_, send) = next(&mut handle).await;
    send.send_response("b");
    assert_ready_ok!(b.poll());
    assert_pending!(c.poll());
    let (_, send) = next(&mut handle).await;
    send.send_response("c");
    assert_ready_ok!(c.poll());
    assert_eq!(gauges.get(IN_SERVICE).1, 0.0, "idle again");

    // Idle transitions are not re-published once zero.
    let ops = gauges.get(IN_SERVICE).0;
    assert_ready_ok!(svc.poll_ready());
    let mut d = task::spawn(svc.call(req(4)));
    assert_pending!(d.poll());
    let (_, send) = next(&mut handle).await;
    send.send_response("d");
    assert_ready_ok!(d.poll());
    assert_eq!(gauges.get(IN_SERVICE).0, ops);

    // A snapshot publishes the exact figure.
    assert_ready_ok!(svc.poll_ready());
    let mut e = task::spawn(svc.call(req(5)));
    assert_pending!(e.poll());
    assert_eq!(h.snapshot().in_service, 1);
    assert_eq!(gauges.get(IN_SERVICE), (ops + 1, 1.0));
    let (_, send) = next(&mut handle).await;
    send.send_response("e");
    assert_ready_ok!(e.poll());
    assert_eq!(gauges.get(IN_SERVICE).1, 0.0);
}

/// With a yield margin, an older `Critical` waiter goes ahead of a
/// `CriticalPlus` one that can spare the slot, and not when it cannot.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn yield_margin_serves_an_older_waiter_while_the_higher_one_can_wait() {
    let layer = layer(
        cfg()
            .concurrency(1)
            .capacity(10)
            .max_wait(Duration::from_millis(25))
            .codel(false)
            .yield_margin(1.0),
    );
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    let mut call = |r: Req| {
        assert_ready_ok!(svc.poll_ready());
        let mut f = task::spawn(svc.call(r));
        let _ = f.poll();
        f
    };
    // Teach the EWMA a 10 ms service time (one slot: 10 ms per hand-off).
    let mut a = call(req_p(1, Priority::CriticalPlus));
    let (_, send) = next(&mut handle).await;
    advance(Duration::from_millis(10)).await;
    send.send_response("a");
    assert_ready_ok!(a.poll());
    assert_eq!(h.snapshot().service_time, Duration::from_millis(10));

    // The higher priority has 25 ms to wait, more than one hand-off (10 ms):
    // the older default goes first.
    let mut b = call(req_p(2, Priority::CriticalPlus));
    let (_, send_b) = next(&mut handle).await;
    let mut d = call(req_p(3, Priority::Critical));
    advance(Duration::from_millis(1)).await;
    let mut c = call(req_p(4, Priority::CriticalPlus));
    advance(Duration::from_millis(1)).await;
    send_b.send_response("b");
    assert_ready_ok!(b.poll());
    assert_pending!(d.poll());
    let (id, send_d) = next(&mut handle).await;
    assert_eq!(id, 3, "the older default went ahead");
    assert_eq!(h.snapshot().yielded, 1);

    // Now another older default, but the critical-plus waiter has waited
    // 17 ms of its 25: less than one hand-off left, so it is served first.
    let mut e = call(req_p(5, Priority::Critical));
    advance(Duration::from_millis(15)).await;
    send_d.send_response("d");
    assert_ready_ok!(d.poll());
    assert_pending!(c.poll());
    let (id, _send) = next(&mut handle).await;
    assert_eq!(id, 4, "the higher priority could not spare the slot");
    assert_eq!(h.snapshot().yielded, 1);
    assert_pending!(e.poll());
}

/// Without a yield margin (the default) the highest priority always goes
/// first, however old the lower one.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn without_a_yield_margin_priority_order_is_strict() {
    let layer = layer(cfg().concurrency(1).capacity(10).codel(false));
    let h = layer.handle();
    let (mut svc, mut handle) = mock::spawn_layer::<Req, &'static str, _>(layer);
    let mut call = |r: Req| {
        assert_ready_ok!(svc.poll_ready());
        let mut f = task::spawn(svc.call(r));
        let _ = f.poll();
        f
    };
    let mut a = call(req_p(1, Priority::CriticalPlus));
    let (_, send) = next(&mut handle).await;
    advance(Duration::from_millis(10)).await;
    let _d = call(req_p(2, Priority::Critical));
    advance(Duration::from_millis(1)).await;
    let mut c = call(req_p(3, Priority::CriticalPlus));
    send.send_response("a");
    assert_ready_ok!(a.poll());
    assert_pending!(c.poll());
    let (id, _send) = next(&mut handle).await;
    assert_eq!(id, 3);
    assert_eq!(h.snapshot().yielded, 0);
}
