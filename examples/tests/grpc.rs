//! The gRPC hop end to end on loopback: the shop calls the inventory
//! instances over gRPC (`Demo::start_grpc`), through real sockets.

use std::future::Future;
use std::time::Duration;

use http::HeaderValue;
use resilience::client::ClientConfig;
use resilience_circuit_breaker::CircuitState;
use resilience_core::Priority;
use resilience_discovery::EndpointState;
use resilience_examples::Body;
use resilience_examples::grpc::{
    ANSWER_MARGIN, GrpcServerSettings, InventoryClient, ReserveRequest,
};
use resilience_examples::shop::{Demo, Mode, OrderResponse, ShopSettings};
use tonic::transport::Channel;
use tower::ServiceBuilder;

/// Settings for tests: a breaker that decides after 6 calls and never
/// half-opens during a test, ejections that last the whole test, gRPC
/// health checks every 50 ms. Tests where no call should time out use a
/// 2 s timeout.
fn settings(timeout_ms: u64) -> ShopSettings {
    ShopSettings {
        timeout: Duration::from_millis(timeout_ms),
        attempts: 3,
        window: 6,
        open_for: Duration::from_secs(30),
        health_interval: Duration::from_millis(50),
        health_timeout: Duration::from_secs(1),
        ejection_failures: 3,
        ejection_time: Duration::from_secs(30),
    }
}

fn config(settings: ShopSettings) -> ClientConfig {
    settings.client_config().unwrap()
}

/// Each instance's breaker state, by instance name.
fn breaker_states(demo: &Demo) -> Vec<(String, CircuitState)> {
    demo.shop
        .instance_breakers()
        .into_iter()
        .map(|(name, b)| (name, b.state()))
        .collect()
}

/// Whether every instance's breaker is in `state`.
fn all_breakers(demo: &Demo, state: CircuitState) -> bool {
    let states = breaker_states(demo);
    states.len() == demo.instances().len() && states.iter().all(|(_, s)| *s == state)
}

/// Failures in the windows of every instance's breaker.
fn failures(demo: &Demo) -> u64 {
    let snapshot = demo.shop.breakers().unwrap().snapshot();
    snapshot.iter().map(|(_, b)| b.failures()).sum()
}

/// Polls `check` every 10 ms until it holds; fails the test after 10 s.
async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    resilience_examples::wait_until(what, Duration::from_millis(10), check).await;
}

/// Orders `item` for `country` with the given extra headers.
async fn order_with(
    demo: &Demo,
    item: &str,
    country: &str,
    headers: &[(&str, &str)],
) -> OrderResponse {
    let mut req = demo.order_request(item, country);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    demo.fetch(req.body(Body::default()).unwrap())
        .await
        .unwrap()
}

/// A client straight to one instance, which adds `headers` to every call
/// as they are (bytes a tonic client would refuse to send included).
fn direct_client(
    addr: std::net::SocketAddr,
    headers: Vec<(&'static str, HeaderValue)>,
) -> InventoryClient<
    tower::util::MapRequest<
        Channel,
        impl FnMut(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> + Clone,
    >,
> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    InventoryClient::new(
        ServiceBuilder::new()
            .map_request(move |mut req: http::Request<tonic::body::Body>| {
                for (name, value) in &headers {
                    req.headers_mut().insert(*name, value.clone());
                }
                req
            })
            .service(channel),
    )
}

fn cd() -> ReserveRequest {
    ReserveRequest {
        item: "cd".into(),
        country: "DE".into(),
        order_id: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_that_served_saw_the_id_the_priority_and_a_shrinking_deadline() {
    let demo = Demo::start_grpc(config(settings(2_000)), &GrpcServerSettings::DEMO)
        .await
        .unwrap();
    let order = order_with(
        &demo,
        "cd",
        "DE",
        &[
            ("x-correlation-id", "grpc-123"),
            ("x-priority", "sheddable"),
            ("x-deadline-ms", "1500"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ],
    )
    .await;
    assert_eq!(order.status, 200, "{order:?}");
    assert_eq!(order.body, "order placed: 1 cd to DE\n");
    assert_eq!(order.correlation_id.as_deref(), Some("grpc-123"));
    let served_by = order.served_by.expect("the instance is named");
    let seen = demo
        .instance(&served_by)
        .seen("grpc-123")
        .expect("the instance that served saw the id");
    assert_eq!(seen.over, "grpc");
    assert_eq!(seen.priority, Priority::Sheddable);
    assert_eq!(seen.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    let left = seen.deadline_left.expect("grpc-timeout arrived");
    assert!(
        left < Duration::from_millis(1500) && left > Duration::from_millis(500),
        "the deadline shrank on the way, but not to nothing: {left:?}"
    );
    for other in demo.instances() {
        if other.name() != served_by {
            assert!(!other.saw_correlation_id("grpc-123"), "{}", other.name());
        }
    }

    // Without a deadline of its own, the order carries the shop's call
    // timeout (3 tries of 2 s) as `grpc-timeout`, and the default priority.
    let order = demo.order("cd", "FR", "grpc-124").await.unwrap();
    assert_eq!(order.status, 200, "{order:?}");
    let seen = demo
        .instance(order.served_by.as_deref().unwrap())
        .seen("grpc-124")
        .unwrap();
    assert_eq!(seen.priority, Priority::Critical);
    let left = seen.deadline_left.expect("the shop's timeout arrived");
    assert!(
        left <= Duration::from_secs(6) && left > Duration::from_secs(5),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_instance_answers_resource_exhausted_at_once_and_the_throttle_backs_off() {
    // One call at a time per instance, none waiting.
    let server = GrpcServerSettings {
        concurrency: 1,
        capacity: 0,
        timeout: Duration::from_secs(60),
    };
    let demo = Demo::start_grpc(config(settings(2_000)), &server)
        .await
        .unwrap();

    // Every instance's only slot is taken by a call that hangs.
    let mut holds = Vec::new();
    for inventory in demo.instances() {
        inventory.set_mode(Mode::Hanging);
        let mut client = direct_client(demo.grpc_instance(inventory.name()).addr(), Vec::new());
        holds.push(tokio::spawn(async move { client.reserve(cd()).await }));
    }
    wait_until("every slot is taken", || {
        let busy = demo
            .instances()
            .iter()
            .all(|i| demo.grpc_instance(i.name()).queue().snapshot().in_service == 1);
        async move { busy }
    })
    .await;
    let refused = || -> u64 {
        demo.instances()
            .iter()
            .map(|i| {
                demo.grpc_instance(i.name())
                    .queue()
                    .snapshot()
                    .rejected
                    .full
            })
            .sum()
    };

    // Straight to an instance: RESOURCE_EXHAUSTED at once, with the queue's
    // retry hint as `grpc-retry-pushback-ms`.
    let status = direct_client(demo.grpc_instance("inventory-1").addr(), Vec::new())
        .reserve(cd())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "service overloaded: queue full");
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "1000"
    );
    assert_eq!(refused(), 1);

    // Through the shop: RESOURCE_EXHAUSTED at once (not after the 2 s
    // timeout), with the pushback passed on as Retry-After.
    let sheddable = [("x-priority", "sheddable")];
    let first = order_with(&demo, "cd", "DE", &sheddable).await;
    assert_eq!(first.status, 503, "{first:?}");
    assert_eq!(first.degraded.as_deref(), Some("inventory=overloaded"));
    assert_eq!(first.retry_after.as_deref(), Some("1"));
    assert!(first.elapsed < Duration::from_secs(1), "{first:?}");
    assert_eq!(refused(), 2);

    // The throttle backs off: sheddable orders stop leaving the shop. (It
    // recomputes its probability a few times a second, so count until it
    // has refused enough, within a bound.)
    let (mut overloaded, mut throttled, mut sent) = (1, 0, 1);
    while throttled < 20 && sent < 2_000 {
        sent += 1;
        let order = order_with(&demo, "cd", "DE", &sheddable).await;
        assert_eq!(order.status, 503, "{order:?}");
        match order.degraded.as_deref() {
            Some("inventory=overloaded") => overloaded += 1,
            Some("inventory=throttled") => throttled += 1,
            other => panic!("unexpected answer {other:?}: {order:?}"),
        }
    }
    assert!(
        throttled >= 20,
        "{throttled} throttled, {overloaded} overloaded"
    );
    assert_eq!(sent, overloaded + throttled);
    assert_eq!(
        refused(),
        overloaded + 1,
        "every other order reached an instance"
    );
    let throttle = demo
        .shop
        .throttle()
        .expect("the shop's client has a throttle");
    assert!(throttle.reject_probability(Priority::Sheddable) > 0.5);
    assert_eq!(throttle.reject_probability(Priority::Critical), 0.0);

    // Overload is the throttle's business: every breaker stays closed and
    // no instance is ejected.
    assert!(
        all_breakers(&demo, CircuitState::Closed),
        "{}",
        demo.shop.status()
    );
    assert_eq!(failures(&demo), 0);
    assert_eq!(demo.shop.instances_in(EndpointState::Healthy), 3);

    // Critical orders are never throttled: they still reach an instance.
    let critical = order_with(&demo, "cd", "DE", &[("x-priority", "critical")]).await;
    assert_eq!(critical.degraded.as_deref(), Some("inventory=overloaded"));
    assert_eq!(refused(), overloaded + 2);

    // The hanging calls go away; the slots are free again.
    for inventory in demo.instances() {
        inventory.set_mode(Mode::Healthy);
    }
    for hold in holds {
        hold.abort();
    }
    wait_until("the slots are free", || {
        let free = demo
            .instances()
            .iter()
            .all(|i| demo.grpc_instance(i.name()).queue().snapshot().in_service == 0);
        async move { free }
    })
    .await;
    let order = demo.order("cd", "DE", "after-overload").await.unwrap();
    assert_eq!(order.status, 200, "{order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instance_is_ejected_and_orders_keep_succeeding_on_the_others() {
    // Health checks far apart: passive ejection (real traffic) decides.
    let settings = ShopSettings {
        health_interval: Duration::from_secs(60),
        ..settings(2_000)
    };
    let demo = Demo::start_grpc(config(settings), &GrpcServerSettings::DEMO)
        .await
        .unwrap();
    for n in 0..6 {
        let order = demo
            .order("cd", "DE", &format!("before-{n}"))
            .await
            .unwrap();
        assert_eq!(order.status, 200, "{order:?}");
    }
    assert!(demo.instance("inventory-2").orders() > 0);

    demo.grpc_instance("inventory-2").kill();
    // No order fails: each one the dead instance gets is tried again on
    // another, with the same order id, until the failures eject it.
    let retries_before = demo.shop.retry().snapshot().retries_total();
    let mut failed = Vec::new();
    for n in 0..20 {
        let id = format!("during-{n}");
        let order = demo.order("cd", "DE", &id).await.unwrap();
        if order.status != 200 {
            failed.push(order);
        } else {
            // (The kill takes effect as the server task ends: an order
            // right after it may still be served by inventory-2.)
            let served_by = order.served_by.as_deref().unwrap();
            let seen = demo.instance(served_by).seen(&id).unwrap();
            assert_eq!(seen.order_id.as_deref(), Some(id.as_str()));
        }
        if demo.shop.instance_state("inventory-2") == Some(EndpointState::Ejected) {
            break;
        }
    }
    assert_eq!(
        demo.shop.instance_state("inventory-2"),
        Some(EndpointState::Ejected),
        "{}",
        demo.shop.status()
    );
    assert!(failed.is_empty(), "orders failed: {failed:?}");
    let retries = demo.shop.retry().snapshot().retries_total() - retries_before;
    assert!(
        retries >= 3,
        "{retries} retries: the ejecting failures were retried"
    );

    let dead_orders = demo.instance("inventory-2").orders();
    for n in 0..20 {
        let order = demo.order("cd", "DE", &format!("after-{n}")).await.unwrap();
        assert_eq!(order.status, 200, "{order:?}");
        assert_ne!(order.served_by.as_deref(), Some("inventory-2"));
    }
    assert_eq!(demo.instance("inventory-2").orders(), dead_orders);
    // The others' breakers stay closed (the dead one's may have opened).
    for name in ["inventory-1", "inventory-3"] {
        let breaker = demo.shop.breaker_of(name).unwrap();
        assert_eq!(breaker.state(), CircuitState::Closed, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_serving_instance_gets_no_orders_until_it_serves_again() {
    let demo = Demo::start_grpc(config(settings(2_000)), &GrpcServerSettings::DEMO)
        .await
        .unwrap();
    let checks = demo.instance("inventory-3").health_checks();
    assert!(checks > 0, "grpc.health.v1 checks reached the instance");
    demo.instance("inventory-3").set_mode(Mode::Draining);
    wait_until("inventory-3 is unhealthy", || {
        let state = demo.shop.instance_state("inventory-3");
        async move { state == Some(EndpointState::Unhealthy) }
    })
    .await;
    let before = demo.instance("inventory-3").orders();
    for n in 0..9 {
        let order = demo.order("cd", "DE", &format!("drain-{n}")).await.unwrap();
        assert_eq!(order.status, 200, "{order:?}");
    }
    assert_eq!(demo.instance("inventory-3").orders(), before);
    demo.instance("inventory-3").set_mode(Mode::Healthy);
    wait_until("inventory-3 is healthy again", || {
        let state = demo.shop.instance_state("inventory-3");
        async move { state == Some(EndpointState::Healthy) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_and_invalid_argument_never_open_the_breaker_but_unavailable_does() {
    let demo = Demo::start_grpc(config(settings(2_000)), &GrpcServerSettings::DEMO)
        .await
        .unwrap();
    for n in 0..12 {
        let order = demo.order("vinyl", "DE", &format!("nf-{n}")).await.unwrap();
        assert_eq!(order.status, 404, "{order:?}");
        assert_eq!(order.body, "no such item: vinyl\n");
        let order = demo.order("cd", "XX", &format!("ia-{n}")).await.unwrap();
        assert_eq!(order.status, 400, "{order:?}");
        assert!(order.served_by.is_some(), "{order:?}");
    }
    assert!(all_breakers(&demo, CircuitState::Closed));
    assert_eq!(failures(&demo), 0);
    assert_eq!(demo.shop.instances_in(EndpointState::Healthy), 3);

    // UNAVAILABLE from every instance: every breaker opens.
    for inventory in demo.instances() {
        inventory.set_mode(Mode::Failing);
    }
    let mut answers = Vec::new();
    for n in 0..30 {
        if all_breakers(&demo, CircuitState::Open) {
            break;
        }
        let order = demo.order("cd", "DE", &format!("down-{n}")).await.unwrap();
        assert_eq!(order.status, 503, "{order:?}");
        if order.degraded.as_deref() == Some("inventory=error (gRPC Unavailable)") {
            assert!(
                order.served_by.is_some(),
                "the failing instance is named: {order:?}"
            );
        }
        answers.push(order.degraded.unwrap_or_default());
    }
    assert!(
        all_breakers(&demo, CircuitState::Open),
        "{answers:?} {}",
        demo.shop.status()
    );
    assert!(
        answers
            .iter()
            .any(|a| a == "inventory=error (gRPC Unavailable)"),
        "{answers:?}"
    );
    let order = demo.order("cd", "DE", "while-open").await.unwrap();
    assert_eq!(order.status, 503);
    assert_eq!(order.degraded.as_deref(), Some("inventory=circuit open"));
    assert!(order.retry_after.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_open_the_breaker() {
    let demo = Demo::start_grpc(config(settings(200)), &GrpcServerSettings::DEMO)
        .await
        .unwrap();
    for inventory in demo.instances() {
        inventory.set_mode(Mode::Hanging);
    }
    // Every instance out of rotation: ejected (3 timeouts in a row) or its
    // circuit open (6 in its window), whichever came first.
    let out = |demo: &Demo| {
        demo.instances().iter().all(|i| {
            demo.shop.instance_state(i.name()) == Some(EndpointState::Ejected)
                || demo.shop.breaker_of(i.name()).unwrap().state() == CircuitState::Open
        })
    };
    let mut answers = Vec::new();
    for n in 0..30 {
        if out(&demo) {
            break;
        }
        let order = demo.order("cd", "DE", &format!("slow-{n}")).await.unwrap();
        assert_eq!(order.status, 503, "{order:?}");
        answers.push(order.degraded.unwrap_or_default());
    }
    assert!(out(&demo), "{answers:?} {}", demo.shop.status());
    assert!(
        answers.iter().any(|a| a == "inventory=timeout"),
        "{answers:?}"
    );
    // The timeouts counted against each instance, and opened breakers.
    for (name, breaker) in demo.shop.instance_breakers() {
        assert!(
            breaker.snapshot().failures() >= 3,
            "{name}: {}",
            demo.shop.status()
        );
    }
    assert!(
        breaker_states(&demo)
            .iter()
            .any(|(_, s)| *s == CircuitState::Open),
        "{}",
        demo.shop.status()
    );
    // Nothing left to call: refused at once.
    let calls: u64 = demo.instances().iter().map(|i| i.orders()).sum();
    let order = demo.order("cd", "DE", "while-out").await.unwrap();
    assert_eq!(order.status, 503);
    assert!(
        matches!(
            order.degraded.as_deref(),
            Some("inventory=no healthy instance" | "inventory=circuit open")
        ),
        "{order:?}"
    );
    let after: u64 = demo.instances().iter().map(|i| i.orders()).sum();
    assert_eq!(after, calls, "no instance was called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_instance_answers_deadline_exceeded_at_its_own_timeout() {
    let server = GrpcServerSettings {
        timeout: Duration::from_millis(300),
        ..GrpcServerSettings::DEMO
    };
    let demo = Demo::start_grpc(config(settings(2_000)), &server)
        .await
        .unwrap();
    demo.instance("inventory-1").set_mode(Mode::Hanging);
    let addr = demo.grpc_instance("inventory-1").addr();
    // No deadline, a malformed one, or one longer than the server's own
    // timeout: the server's timeout decides.
    for timeout in [None, Some("bogus"), Some("5S")] {
        let headers = timeout
            .map(|t| vec![("grpc-timeout", HeaderValue::from_static(t))])
            .unwrap_or_default();
        let started = tokio::time::Instant::now();
        let status = direct_client(addr, headers)
            .reserve(cd())
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::DeadlineExceeded,
            "{timeout:?}: {status:?}"
        );
        assert_eq!(status.message(), "request timed out");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{timeout:?}: {took:?}"
        );
    }
    assert_eq!(
        demo.grpc_instance("inventory-1")
            .queue()
            .snapshot()
            .in_service,
        0,
        "a timed-out call frees its slot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_answers_deadline_exceeded_at_the_callers_deadline() {
    let server = GrpcServerSettings {
        timeout: Duration::from_secs(10),
        ..GrpcServerSettings::DEMO
    };
    let demo = Demo::start_grpc(config(settings(2_000)), &server)
        .await
        .unwrap();
    demo.instance("inventory-1").set_mode(Mode::Hanging);
    let addr = demo.grpc_instance("inventory-1").addr();
    // A plain HTTP/2 client: tonic's channel would give up at the deadline
    // itself, and we want to see what the server answers.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<tonic::body::Body>();
    let origin: http::Uri = format!("http://{addr}").parse().unwrap();
    for _ in 0..5 {
        let mut grpc = tonic::client::Grpc::with_origin(h2.clone(), origin.clone());
        grpc.ready().await.unwrap();
        let mut req = tonic::Request::new(cd());
        req.metadata_mut()
            .insert("grpc-timeout", "100m".parse().unwrap());
        let started = tokio::time::Instant::now();
        let status = grpc
            .unary::<ReserveRequest, resilience_examples::grpc::ReserveReply, _>(
                req,
                http::uri::PathAndQuery::from_static(resilience_examples::grpc::RESERVE_PATH),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
        let took = started.elapsed();
        // The server's own timer, a margin before the caller's deadline
        // (tonic's, at the deadline, would answer CANCELLED).
        assert!(
            took >= Duration::from_millis(100) - ANSWER_MARGIN && took < Duration::from_secs(2),
            "{took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metadata_gets_a_clear_status_or_a_safe_default() {
    let demo = Demo::start_grpc(config(settings(2_000)), &GrpcServerSettings::DEMO)
        .await
        .unwrap();
    let instance = demo.instance("inventory-1");
    let addr = demo.grpc_instance("inventory-1").addr();
    let id_of = |rsp: &tonic::Response<_>| -> String {
        let rsp: &tonic::Response<resilience_examples::grpc::ReserveReply> = rsp;
        rsp.metadata()
            .get("x-correlation-id")
            .expect("the id comes back")
            .to_str()
            .unwrap()
            .to_owned()
    };

    // Malformed or absurd `grpc-timeout`: ignored, the call is served (the
    // server's own timeout still bounds it).
    for bad in ["bogus", "999999999H", "-5S", "12"] {
        let mut client = direct_client(
            addr,
            vec![
                ("grpc-timeout", HeaderValue::from_static(bad)),
                ("x-correlation-id", HeaderValue::from_static("bad-timeout")),
            ],
        );
        let rsp = client
            .reserve(cd())
            .await
            .unwrap_or_else(|s| panic!("{bad}: {s:?}"));
        assert_eq!(id_of(&rsp), "bad-timeout");
        assert_eq!(
            instance.seen("bad-timeout").unwrap().deadline_left,
            None,
            "{bad}"
        );
    }

    // Oversized, non-ASCII or spaced ids: replaced by a fresh one.
    let long = "a".repeat(300);
    for bad in [
        HeaderValue::from_str(&long).unwrap(),
        HeaderValue::from_bytes(b"caf\xc3\xa9-\xff").unwrap(),
        HeaderValue::from_static("no spaces allowed"),
    ] {
        let mut client = direct_client(addr, vec![("x-correlation-id", bad.clone())]);
        let rsp = client.reserve(cd()).await.unwrap();
        let id = id_of(&rsp);
        assert_eq!(id.len(), 36, "a fresh UUID instead of {bad:?}: {id}");
        assert!(instance.saw_correlation_id(&id));
        assert_ne!(id.as_bytes(), bad.as_bytes());
    }

    // Unknown or non-ASCII priorities: the default, critical.
    for bad in [
        HeaderValue::from_static("urgent"),
        HeaderValue::from_bytes(b"\xffcritical-plus").unwrap(),
        HeaderValue::from_static("critical-plus"), // above what an untrusted caller may ask
    ] {
        let mut client = direct_client(
            addr,
            vec![
                ("x-priority", bad.clone()),
                ("x-correlation-id", HeaderValue::from_static("bad-priority")),
            ],
        );
        let rsp = client.reserve(cd()).await.unwrap();
        assert_eq!(id_of(&rsp), "bad-priority");
        assert_eq!(
            instance.seen("bad-priority").unwrap().priority,
            Priority::Critical,
            "{bad:?}"
        );
    }

    // An unknown method: UNIMPLEMENTED, and the instance is still fine.
    let status = tonic::client::Grpc::new(
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy(),
    );
    let mut grpc = status;
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<ReserveRequest, resilience_examples::grpc::ReserveReply, _>(
            tonic::Request::new(cd()),
            http::uri::PathAndQuery::from_static("/inventory.v1.Inventory/Steal"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let order = demo.order("cd", "DE", "still-fine").await.unwrap();
    assert_eq!(order.status, 200, "{order:?}");
}
