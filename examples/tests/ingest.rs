//! Reference service 3 over real loopback HTTP: each kind of operation has
//! its own bounded queue; a full queue refuses at once with `429` and
//! `Retry-After`, never holds more than its capacity, does not slow the
//! other kinds down, and drains once the flood stops.
//!
//! Real sockets, so real time: service times are short (or long where a
//! test needs a queue to stay full while it looks), margins are generous,
//! and every wait for a state is a bounded poll, never a fixed sleep. What
//! the wait budget does (a served request stays within the latency goal)
//! is tested on tokio's paused clock, through the router without sockets.

use std::future::Future;
use std::time::Duration;

use resilience_examples::ingest::{
    Demo, Ingest, IngestSettings, Kind, KindSettings, Op, SourceSettings,
};
use tokio::time::Instant;

/// The demo's settings with a 10 s latency goal, so that in the tests over
/// real sockets only the capacity bounds a queue (a full queue refuses
/// with "queue full"), however slow a loaded machine is.
fn settings() -> IngestSettings {
    IngestSettings {
        latency_goal: Duration::from_secs(10),
        ..IngestSettings::DEMO
    }
}

fn kind(concurrency: usize, capacity: usize, service_ms: u64) -> KindSettings {
    KindSettings {
        concurrency,
        capacity,
        service_time: Duration::from_millis(service_ms),
    }
}

/// Polls `check` every 2 ms until it holds; fails the test after 10 s.
async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    resilience_examples::wait_until(what, Duration::from_millis(2), check).await;
}

async fn wait_idle(ingest: &Ingest) {
    wait_until("every queue is empty and idle", || async {
        ingest.is_idle()
    })
    .await;
}

fn batch(n: usize) -> Op {
    Op::Bulk((0..n).map(|i| format!("backfill-{i} temp=20.0")).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_stored_fetched_and_searched() {
    let demo = Demo::start(&settings()).await.unwrap();

    let one = demo
        .call(&Op::Index("device-1 temp=21.5".into()))
        .await
        .unwrap();
    assert_eq!((one.status.as_u16(), one.body.as_str()), (200, "1\n"));
    let many = demo
        .call(&Op::Bulk(vec![
            "device-2 temp=19.0".into(),
            "device-1 temp=21.7".into(),
        ]))
        .await
        .unwrap();
    assert_eq!((many.status.as_u16(), many.body.as_str()), (200, "2 3\n"));

    let got = demo.call(&Op::Get(3)).await.unwrap();
    assert_eq!(
        (got.status.as_u16(), got.body.as_str()),
        (200, "device-1 temp=21.7\n")
    );
    assert_eq!(demo.call(&Op::Get(99)).await.unwrap().status, 404);
    let hits = demo.call(&Op::Search("device-1".into())).await.unwrap();
    assert_eq!((hits.status.as_u16(), hits.body.as_str()), (200, "2\n"));

    // Bad input is the caller's: 400, no refusal, nothing stored.
    assert_eq!(
        demo.call(&Op::Index("  ".into())).await.unwrap().status,
        400
    );
    assert_eq!(
        demo.call(&Op::Search("a%20b".into())).await.unwrap().status,
        400
    );
    assert_eq!(demo.call(&Op::Bulk(Vec::new())).await.unwrap().status, 400);

    // Each kind was served in its own queue (bad input does no work).
    for (k, served) in [
        (Kind::Index, 1),
        (Kind::Bulk, 1),
        (Kind::Search, 1),
        (Kind::Get, 2),
    ] {
        assert_eq!(demo.ingest.served(k), served, "{k}");
        assert_eq!(demo.ingest.refused(k), 0, "{k}");
    }

    // An unknown path is a plain 404 that waits in no queue.
    let req = http::Request::get(format!("{}/nowhere", demo.url))
        .body(Default::default())
        .unwrap();
    assert_eq!(demo.send(req).await.unwrap().status, 404);
    assert_eq!(demo.ingest.served(Kind::Index), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_with_429_retry_after_and_the_id() {
    // One bulk in service and two waiting: 3 s of work. The long service
    // time keeps the queue full while the test looks at it.
    let service = Duration::from_secs(1);
    let mut settings = settings();
    settings.bulk = kind(1, 2, 1_000);
    let demo = Demo::start(&settings).await.unwrap();
    let queue = demo.ingest.queue(Kind::Bulk);
    let op = batch(3);

    let full = async {
        wait_until("the bulk queue is full", || async {
            let s = queue.snapshot();
            s.in_service == 1 && s.queued == 2
        })
        .await;
        let req = op
            .request(&demo.url)
            .header("x-correlation-id", "full-1")
            .body(op.body())
            .unwrap();
        let with_id = demo.send(req).await.unwrap();
        let without_id = demo.call(&op).await.unwrap();
        let s = queue.snapshot();
        assert_eq!((s.in_service, s.queued, s.rejected.full), (1, 2, 2));
        (with_id, without_id)
    };
    let (a, b, c, (refused, refused_without_id)) =
        tokio::join!(demo.call(&op), demo.call(&op), demo.call(&op), full);

    assert_eq!(refused.status, 429);
    assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
    assert_eq!(refused.body, "service overloaded: queue full\n");
    assert_eq!(refused.correlation_id.as_deref(), Some("full-1"));
    // At once: the queue holds 3 s of work; the answer takes a loopback
    // round trip (half a service time is a generous bound for that).
    assert!(
        refused.elapsed < service / 2,
        "refused after {:?}",
        refused.elapsed
    );
    assert_eq!(refused_without_id.status, 429);
    assert!(refused_without_id.elapsed < service / 2);
    let id = refused_without_id.correlation_id.expect("a generated id");
    assert!(!id.is_empty());

    // The three that got in are all served, in turn.
    for r in [a, b, c] {
        let r = r.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    wait_idle(&demo.ingest).await;
    assert_eq!(demo.ingest.served(Kind::Bulk), 3, "refusals never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_never_queues_beyond_capacity_and_drains_after() {
    // Bulk serves 20 batches/s and holds 4 waiting (at most 200 ms of
    // queueing); the flood offers 200/s, ten times that, and hammers on.
    let mut settings = settings();
    settings.bulk = kind(1, 4, 50);
    let bulk = settings.bulk;
    let demo = Demo::start(&settings).await.unwrap();
    let queue = demo.ingest.queue(Kind::Bulk);

    let flood = demo.source(SourceSettings::bulk(200, 5).ignoring_retry_after());
    let started = Instant::now();
    let mut peak = 0;
    // Sample for a second, and on until the flood has filled the queue.
    while started.elapsed() < Duration::from_secs(1)
        || (peak < bulk.capacity && started.elapsed() < Duration::from_secs(10))
    {
        let s = queue.snapshot();
        assert!(s.queued <= bulk.capacity, "queued {}", s.queued);
        assert!(
            s.in_service <= bulk.concurrency,
            "in service {}",
            s.in_service
        );
        peak = peak.max(s.queued);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let report = flood.stop().await;
    assert_eq!(peak, bulk.capacity, "the flood filled the queue");

    let c = report.counts;
    assert!(c.rejected > c.accepted, "{c:?}");
    assert_eq!(c.errors, 0, "every refusal had a Retry-After: {c:?}");
    assert_eq!(c.sent, c.accepted + c.rejected);
    // Latency stays bounded: an unbounded queue would hold ~9 s of work
    // after a second of this flood; this one at most 250 ms (with a
    // generous margin for a loaded machine).
    let worst = report.accepted.max().unwrap();
    assert!(
        worst < bulk.longest_wait() + bulk.service_time + Duration::from_secs(1),
        "an accepted batch took {worst:?}"
    );

    wait_idle(&demo.ingest).await;
    let s = queue.snapshot();
    assert_eq!((s.in_service, s.queued), (0, 0));
    assert_eq!(demo.ingest.served(Kind::Bulk), c.accepted);
    assert_eq!(s.rejected.full, c.rejected, "server and client agree");
    // And it serves again at once.
    assert_eq!(demo.call(&batch(1)).await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_flood_does_not_starve_searches() {
    // Bulk serves 20 batches/s and the flood offers 100/s. Searches (50/s)
    // get room to spare: 4 slots, 64 waiting, so that a machine too loaded
    // to keep its sleeps short cannot fill their queue either.
    let mut settings = settings();
    settings.bulk = kind(1, 4, 50);
    settings.search = kind(4, 64, 10);
    let search_time = settings.search.service_time;
    let demo = Demo::start(&settings).await.unwrap();
    let bulk = demo.ingest.queue(Kind::Bulk);

    let flood = demo.source(SourceSettings::bulk(100, 5).ignoring_retry_after());
    wait_until("the flood fills the bulk queue", || async {
        bulk.snapshot().queued == 4
    })
    .await;
    let refused_before = demo.ingest.refused(Kind::Bulk);
    let searches = demo.source(SourceSettings::searches(50));
    tokio::time::sleep(Duration::from_secs(1)).await; // the length of the run
    let searches = searches.stop().await;
    let refused_during = demo.ingest.refused(Kind::Bulk) - refused_before;
    let flood = flood.stop().await;

    let c = searches.counts;
    assert!(c.sent >= 20, "{c:?}");
    assert_eq!((c.accepted, c.rejected, c.errors), (c.sent, 0, 0), "{c:?}");
    assert!(refused_during > 0, "the flood went on during the searches");
    assert_eq!(demo.ingest.refused(Kind::Search), 0);

    // Searches stay near their service time; bulk waits in a full queue.
    let p50 = searches.accepted.percentile(50.0).unwrap();
    let p90 = searches.accepted.percentile(90.0).unwrap();
    let bulk_p50 = flood.accepted.percentile(50.0).unwrap();
    assert!(
        p50 < search_time + Duration::from_millis(90),
        "searches: {}",
        searches.accepted
    );
    assert!(
        p90 < bulk_p50,
        "searches {} vs bulk {}",
        searches.accepted,
        flood.accepted
    );

    wait_idle(&demo.ingest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_behaved_source_waits_out_retry_after() {
    // Index serves 50 events/s with 2 waiting; 4 devices offer 400/s
    // between them, one send each every 10 ms.
    let mut settings = settings();
    settings.index = kind(1, 2, 20);
    let demo = Demo::start(&settings).await.unwrap();

    let source = demo.source(SourceSettings {
        devices: 4,
        ..SourceSettings::telemetry(400)
    });
    // Once every device has had a refusal back, none sends until its
    // Retry-After (1 s) has passed: 100 ticks in a row (250 ms) defer and
    // send nothing. A source that ignored Retry-After would send on every
    // tick. (How many refusals each device gets first depends on how many
    // of its requests were in flight when the first came back: a loaded
    // machine answers slower, so that number is not asserted.)
    let mut last_send = source.counts();
    wait_until("100 ticks in a row send nothing", || {
        let now = source.counts();
        if now.sent != last_send.sent {
            last_send = now;
        }
        let quiet = now.deferred >= last_send.deferred + 100;
        async move { quiet }
    })
    .await;
    let report = source.stop().await;

    let c = report.counts;
    assert_eq!(c.errors, 0, "{c:?}");
    assert!(c.accepted > 0 && c.rejected > 0, "{c:?}");
    assert_eq!(demo.ingest.refused(Kind::Index), c.rejected);
    let sample = report.first_rejection.expect("a refusal");
    assert_eq!(sample.status, 429);
    assert_eq!(sample.retry_after, Some(Duration::from_secs(1)));

    wait_idle(&demo.ingest).await;
}

#[test]
fn invalid_settings_are_refused() {
    let mut settings = IngestSettings::DEMO;
    settings.search.concurrency = 0;
    let err = Ingest::new(&settings).unwrap_err();
    assert_eq!(err.field(), "concurrency");

    let mut settings = IngestSettings::DEMO;
    settings.retry_after = Duration::ZERO;
    assert_eq!(Ingest::new(&settings).unwrap_err().field(), "retry_after");
}

#[test]
fn a_latency_goal_within_a_service_time_is_refused() {
    for goal in [10, 20] {
        let mut settings = IngestSettings::DEMO;
        settings.bulk = kind(2, 8, 20);
        settings.latency_goal = Duration::from_millis(goal);
        let err = Ingest::new(&settings).unwrap_err();
        assert_eq!(err.field(), "latency_goal", "goal {goal} ms");
        assert!(settings.queue_config(Kind::Bulk).is_err());
    }
    let mut settings = IngestSettings::DEMO;
    settings.bulk = kind(2, 8, 20);
    settings.latency_goal = Duration::from_millis(21);
    assert!(Ingest::new(&settings).is_ok());
}

#[test]
fn each_queue_waits_at_most_the_goal_minus_its_service_time() {
    let settings = IngestSettings::DEMO; // 80 ms goal
    for (kind, budget_ms) in [
        (Kind::Index, 70),
        (Kind::Bulk, 60),
        (Kind::Search, 70),
        (Kind::Get, 78),
    ] {
        let budget = Duration::from_millis(budget_ms);
        assert_eq!(settings.wait_budget(kind), budget, "{kind}");
        let config = settings.queue_config(kind).unwrap();
        assert_eq!(config.name(), kind.name());
        assert_eq!(config.max_wait(), budget, "{kind}");
        assert_eq!(config.codel_target(), Some(budget), "{kind}");
        assert!(!config.lifo(), "{kind}: oldest first");
        assert_eq!(config.capacity(), settings.kind(kind).capacity);
        assert_eq!(config.concurrency(), settings.kind(kind).concurrency);
    }
    // The budget, or a full queue if that is shorter: 16 waiting for 4 x 2 ms.
    assert_eq!(
        settings.longest_wait(Kind::Index),
        Duration::from_millis(70)
    );
    assert_eq!(settings.longest_wait(Kind::Get), Duration::from_millis(8));

    // A goal longer than CoDel's interval: the interval follows the target.
    let long = settings_with_goal(Duration::from_secs(10));
    let config = long.queue_config(Kind::Index).unwrap();
    assert_eq!(config.codel_target(), Some(Duration::from_millis(9_990)));
    assert!(config.codel_interval() >= Duration::from_millis(9_990));
}

fn settings_with_goal(goal: Duration) -> IngestSettings {
    IngestSettings {
        latency_goal: goal,
        ..IngestSettings::DEMO
    }
}

/// One event at `priority` through the router (no sockets): status, the
/// `Retry-After` header, the body, and how long it took.
async fn post_event(
    app: axum::Router,
    priority: &'static str,
) -> (u16, Option<String>, String, Duration) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = http::Request::post("/events")
        .header("x-priority", priority)
        .body(axum::body::Body::from("device-1 temp=20.5"))
        .unwrap();
    let started = Instant::now();
    let rsp = app.oneshot(req).await.unwrap();
    let status = rsp.status().as_u16();
    let retry_after = rsp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    (status, retry_after, body, started.elapsed())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn under_a_flood_served_events_stay_within_the_latency_goal_critical_first() {
    // One 20 ms slot and room for 16: a full queue would make the last one
    // wait 320 ms. The goal of 80 ms lets each wait at most 60 ms.
    let mut settings = settings_with_goal(Duration::from_millis(80));
    settings.index = kind(1, 16, 20);
    let ingest = Ingest::new(&settings).unwrap();
    let app = ingest.app();

    // 16 sheddable events at once, then two critical ones 5 ms later.
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..16 {
        flood.spawn(post_event(app.clone(), "sheddable"));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let critical: Vec<_> = (0..2)
        .map(|_| tokio::spawn(post_event(app.clone(), "critical")))
        .collect();

    for c in critical {
        let (status, _, body, took) = c.await.unwrap();
        assert_eq!(status, 200, "{body}");
        // Served ahead of every sheddable waiter: within two service times.
        assert!(took <= Duration::from_millis(60), "critical took {took:?}");
    }
    let (mut served, mut refused) = (0u64, 0u64);
    while let Some(answer) = flood.join_next().await {
        let (status, retry_after, body, took) = answer.unwrap();
        match status {
            200 => {
                served += 1;
                assert!(
                    took <= settings.latency_goal + Duration::from_millis(2),
                    "served after {took:?}"
                );
            }
            429 => {
                refused += 1;
                assert_eq!(retry_after.as_deref(), Some("1"));
                assert!(
                    body.contains("queue time exceeded") || body.contains("shed"),
                    "{body}"
                );
                // Refused no later than its wait budget ran out.
                assert!(took <= Duration::from_millis(62), "refused after {took:?}");
            }
            other => panic!("status {other}: {body}"),
        }
    }
    // 80 ms hold four service times: the two critical events, and at most
    // two sheddable ones (the first at once).
    assert!((1..=2).contains(&served), "served {served}");
    assert_eq!(served + refused, 16);
    assert_eq!(ingest.served(Kind::Index), served + 2);
    assert_eq!(ingest.refused(Kind::Index), refused);
    let s = ingest.queue(Kind::Index).snapshot();
    assert_eq!((s.in_service, s.queued), (0, 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_demos_overload_serves_every_critical_event_within_the_goal() {
    use rand::{Rng, SeedableRng};
    // The demo's ingest and its overload phase: events at 2.5x the index
    // capacity, Poisson, 5% critical, 30% sheddable-plus, 65% sheddable
    // (`demo::Load`), for 5 s on each of three seeds.
    let settings = resilience_examples::demo::DemoSettings::ingest();
    let goal = settings.latency_goal;
    let rate = 2.5 * settings.index.throughput();
    for seed in 1..=3 {
        let ingest = Ingest::new(&settings).unwrap();
        let app = ingest.app();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let mut answers = tokio::task::JoinSet::new();
        let start = Instant::now();
        let mut at = Duration::ZERO;
        while at < Duration::from_secs(5) {
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            at += Duration::from_secs_f64(-u.ln() / rate);
            tokio::time::sleep_until(start + at).await;
            let draw: f64 = rng.random();
            let class = match draw {
                d if d < 0.05 => 0,
                d if d < 0.35 => 1,
                _ => 2,
            };
            let priority = ["critical", "sheddable-plus", "sheddable"][class];
            let app = app.clone();
            answers.spawn(async move { (class, post_event(app, priority).await) });
        }
        let mut sent = [0u32; 3];
        let mut served = [0u32; 3];
        while let Some(answer) = answers.join_next().await {
            let (class, (status, retry_after, body, took)) = answer.unwrap();
            sent[class] += 1;
            match status {
                200 => {
                    served[class] += 1;
                    assert!(
                        took <= goal + Duration::from_millis(2),
                        "seed {seed}: served after {took:?}"
                    );
                }
                429 => assert_eq!(retry_after.as_deref(), Some("1"), "{body}"),
                other => panic!("seed {seed}: status {other}: {body}"),
            }
        }
        assert!(sent[0] > 30, "seed {seed}: {sent:?}");
        assert_eq!(served[0], sent[0], "seed {seed}: every critical event");
        assert!(
            served[2] * 5 < sent[2],
            "seed {seed}: sheddable mostly refused: {served:?} of {sent:?}"
        );
        // The index kept busy: at least 95% of its capacity over 5 s.
        let total: u32 = served.iter().sum();
        assert!(
            f64::from(total) >= 0.95 * 5.0 * settings.index.throughput(),
            "seed {seed}: served {total}"
        );
    }
}
