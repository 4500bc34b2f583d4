//! Settings of the standard stacks changed at run time: from a file, from a
//! real etcd, and by hand; under load, with the state kept.
#![cfg(all(
    feature = "client",
    feature = "axum",
    feature = "serde",
    feature = "etcd"
))]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::{Request, StatusCode};
use resilience::client::{ClientConfig, ClientHandles, ClientPart, ClientStack, HttpService};
use resilience::discovery::Endpoint;
use resilience::reload::{EtcdSource, FileSource};
use resilience::server::{ServerConfig, ServerStackLayer};
use resilience_test_support::EtcdServer;
use tower::{Service, ServiceExt};

/// A loopback HTTP server answering 200 on every path.
async fn instance() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The client's configuration as TOML: a breaker per endpoint with a count
/// window of 1000 calls (so that its counts grow through the test), and the
/// given failure-rate threshold, open duration and tries.
fn client_toml(addr: SocketAddr, threshold: f64, open_for: &str, tries: u32) -> String {
    format!(
        r#"
name = "inventory"
deadline = "5s"
attempt_timeout = "2s"
without = ["health_check"]
endpoints = ["{addr}"]
[retry]
name = "inventory"
max_attempts = {tries}
[breaker]
name = "inventory"
window_size = 1000
minimum_calls = 1000
failure_rate_threshold = {threshold:.1}
open_for = "{open_for}"
"#
    )
}

/// Calls made and calls failed by [`load`].
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    ok: AtomicU64,
    failed: AtomicU64,
}

/// Four tasks calling `client` until told to stop.
fn load(client: &HttpService<String>) -> Arc<Load> {
    let load = Arc::new(Load::default());
    for _ in 0..4 {
        let (client, load) = (client.clone(), load.clone());
        tokio::spawn(async move {
            while !load.stop.load(Ordering::Relaxed) {
                let req = Request::get("/").body(String::new()).unwrap();
                match client.clone().oneshot(req).await {
                    Ok(rsp) if rsp.status() == StatusCode::OK => {
                        load.ok.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => load.failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    load
}

/// Waits (polling, up to 20 s) until `ok`.
async fn wait_for(mut ok: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 20 s");
}

/// Waits until the stack applied `n` configurations in all.
async fn wait_applied(handles: &ClientHandles, n: u64) {
    for _ in 0..2000 {
        if handles.reload().snapshot().applied >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not applied: {:?}", handles.reload().snapshot());
}

/// The only endpoint breaker's `(calls, failures)`.
fn breaker_counts(handles: &ClientHandles) -> (u64, u64) {
    let breakers = handles.breakers().unwrap().endpoints();
    assert_eq!(breakers.len(), 1);
    let snap = breakers[0].snapshot();
    (snap.calls(), snap.failures())
}

fn breaker_threshold(handles: &ClientHandles) -> f64 {
    let config = handles.reload().config();
    config.breaker().unwrap().failure_rate_threshold()
}

/// Checks a change applied under load: no call failed, the breaker kept
/// its window (its count only grew, from `before`), and calls went on.
async fn under_load_then_check(load: &Load, handles: &ClientHandles, before: (u64, u64)) {
    let ok = load.ok.load(Ordering::Relaxed);
    wait_for(|| load.ok.load(Ordering::Relaxed) > ok + 50).await;
    let after = breaker_counts(handles);
    assert!(
        after.0 > before.0,
        "the breaker's window kept its calls: {before:?} then {after:?}"
    );
    assert_eq!(after.1, 0);
    assert_eq!(load.failed.load(Ordering::Relaxed), 0, "no call failed");
}

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_change_applies_under_load_and_keeps_the_breakers_window() {
    let addr = instance().await;
    let dir = std::env::temp_dir().join(format!("resilience-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("inventory.toml");
    let first = client_toml(addr, 50.0, "30s", 3);
    write_atomically(&path, &first);
    let config: ClientConfig = toml::from_str(&first).unwrap();
    let client = ClientStack::builder(config).build_http::<String>().unwrap();
    let handles = client.handles().clone();
    let client = client.into_service();
    wait_for(|| handles.balancer().snapshot().endpoints.len() == 1).await;

    let load = load(&client);
    wait_for(|| load.ok.load(Ordering::Relaxed) > 50).await;
    let source = handles.reload().follow_file(
        FileSource::builder(&path)
            .interval(Duration::from_millis(20))
            .build()
            .unwrap(),
    );
    // The first read applies the same configuration.
    wait_applied(&handles, 1).await;
    let before = breaker_counts(&handles);
    assert!(before.0 > 0);

    // A new threshold, open duration and tries.
    write_atomically(&path, &client_toml(addr, 80.0, "5s", 2));
    wait_applied(&handles, 2).await;
    let config = handles.reload().config();
    assert_eq!(breaker_threshold(&handles), 80.0);
    assert_eq!(config.breaker().unwrap().open_for(), Duration::from_secs(5));
    assert_eq!(config.retry().max_attempts(), 2);
    assert_eq!(handles.retry().config().max_attempts(), 2);
    assert_eq!(
        handles
            .breakers()
            .unwrap()
            .config()
            .failure_rate_threshold(),
        80.0
    );
    under_load_then_check(&load, &handles, before).await;

    // A file that does not parse: refused, counted, the last good one kept.
    let refused = handles.reload().snapshot().refused;
    write_atomically(&path, "name = \"inventory\"\n[breaker\n");
    wait_for(|| handles.reload().snapshot().refused > refused).await;
    assert_eq!(breaker_threshold(&handles), 80.0);
    assert!(handles.reload().snapshot().last_error.is_some());
    assert!(source.snapshot().last_error.is_some());
    // A file that parses but is invalid (the same rules as at build time).
    let refused = handles.reload().snapshot().refused;
    write_atomically(
        &path,
        &client_toml(addr, 80.0, "5s", 2)
            .replace("attempt_timeout = \"2s\"", "attempt_timeout = \"0s\""),
    );
    wait_for(|| handles.reload().snapshot().refused > refused).await;
    assert_eq!(
        handles.reload().config().attempt_timeout(),
        Some(Duration::from_secs(2))
    );

    let before = breaker_counts(&handles);
    under_load_then_check(&load, &handles, before).await;
    load.stop.store(true, Ordering::Relaxed);
    source.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_change_applies_under_load_and_keeps_the_breakers_window() {
    let Some(etcd) = EtcdServer::start().await else {
        return;
    };
    let addr = instance().await;
    let key = "/config/inventory";
    let first = client_toml(addr, 50.0, "30s", 3);
    etcd.client().put(key, first.as_bytes(), 0).await.unwrap();
    let config: ClientConfig = toml::from_str(&first).unwrap();
    let client = ClientStack::builder(config).build_http::<String>().unwrap();
    let handles = client.handles().clone();
    let client = client.into_service();
    wait_for(|| handles.balancer().snapshot().endpoints.len() == 1).await;

    let load = load(&client);
    wait_for(|| load.ok.load(Ordering::Relaxed) > 50).await;
    let source = handles.reload().follow_etcd(
        EtcdSource::builder(etcd.url(), key)
            .retry_interval(Duration::from_millis(50))
            .build()
            .unwrap(),
    );
    wait_applied(&handles, 1).await;
    let before = breaker_counts(&handles);
    assert!(before.0 > 0);

    // The value as JSON this time (a value starting with `{`).
    let json = format!(
        r#"{{"name": "inventory", "deadline": "5s", "attempt_timeout": "2s",
            "without": ["health_check"], "endpoints": ["{addr}"],
            "retry": {{"name": "inventory", "max_attempts": 2}},
            "breaker": {{"name": "inventory", "window_size": 1000, "minimum_calls": 1000,
                         "failure_rate_threshold": 70.0, "open_for": "5s"}}}}"#
    );
    etcd.client().put(key, json.as_bytes(), 0).await.unwrap();
    wait_applied(&handles, 2).await;
    assert_eq!(breaker_threshold(&handles), 70.0);
    assert_eq!(handles.retry().config().max_attempts(), 2);
    under_load_then_check(&load, &handles, before).await;

    // Invalid: refused, counted, the last good one kept.
    let refused = handles.reload().snapshot().refused;
    let invalid = client_toml(addr, 150.0, "5s", 2);
    etcd.client().put(key, invalid.as_bytes(), 0).await.unwrap();
    wait_for(|| handles.reload().snapshot().refused > refused).await;
    assert_eq!(breaker_threshold(&handles), 70.0);
    // A restart-only change (the window's size) is applied but for it.
    let resized = client_toml(addr, 60.0, "5s", 2).replace(
        "window_size = 1000\nminimum_calls = 1000",
        "window_size = 10\nminimum_calls = 10",
    );
    let applied = handles.reload().snapshot().applied;
    etcd.client().put(key, resized.as_bytes(), 0).await.unwrap();
    wait_for(|| handles.reload().snapshot().applied > applied).await;
    assert_eq!(breaker_threshold(&handles), 60.0);
    assert!(handles.reload().snapshot().restart_only >= 1);
    assert_eq!(
        handles.breakers().unwrap().config().window(),
        resilience::breaker::SlidingWindow::Count { size: 1000 }
    );

    let before = breaker_counts(&handles);
    under_load_then_check(&load, &handles, before).await;
    load.stop.store(true, Ordering::Relaxed);
    source.stop();
}

#[tokio::test]
async fn an_invalid_configuration_is_refused_and_the_last_good_one_kept() {
    let config = ClientConfig::builder("inventory")
        .without(ClientPart::HealthCheck)
        .build()
        .unwrap();
    let client = ClientStack::builder(config)
        .endpoints([Endpoint::new(instance().await)])
        .build_http::<String>()
        .unwrap();
    let reload = client.handles().reload();
    let before = reload.config().retry().max_attempts();
    // Does not parse.
    let err = reload.apply_toml("name = ").unwrap_err();
    assert_eq!(err.field(), "config");
    // Parses, fails validation.
    assert!(
        reload
            .apply_toml("name = \"inventory\"\n[retry]\nmax_attempts = 0")
            .is_err()
    );
    assert!(reload.apply_json("{\"name\": \"bad name\"}").is_err());
    let snap = reload.snapshot();
    assert_eq!((snap.applied, snap.refused), (0, 3));
    assert!(snap.last_error.is_some());
    assert_eq!(reload.config().retry().max_attempts(), before);
    assert_eq!(client.handles().retry().config().max_attempts(), before);
    // A good one clears the error.
    reload
        .apply_toml("name = \"inventory\"\nwithout = [\"health_check\"]\n[retry]\nname = \"inventory\"\nmax_attempts = 5")
        .unwrap();
    let snap = reload.snapshot();
    assert_eq!((snap.applied, snap.refused, snap.last_error), (1, 3, None));
    assert_eq!(client.handles().retry().config().max_attempts(), 5);
}

#[tokio::test]
async fn restart_only_settings_keep_their_values_and_are_listed() {
    let config = ClientConfig::builder("inventory")
        .without(ClientPart::HealthCheck)
        .build()
        .unwrap();
    let client = ClientStack::builder(config)
        .endpoints([Endpoint::new(instance().await)])
        .build_http::<String>()
        .unwrap();
    let reload = client.handles().reload();
    let renamed = ClientConfig::builder("other")
        .without(ClientPart::HealthCheck)
        .without(ClientPart::Throttle)
        .attempt_timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    let applied = reload.apply(renamed).unwrap();
    // The sub-configurations named after the new client are renamed too.
    for setting in ["name", "throttle", "retry.name", "breaker.name", "balancer"] {
        assert!(
            applied.restart_only().contains(&setting),
            "{setting} in {:?}",
            applied.restart_only()
        );
    }
    let config = reload.config();
    assert_eq!(config.name(), "inventory");
    assert!(config.throttle().is_some());
    assert_eq!(config.attempt_timeout(), Some(Duration::from_millis(700)));
    assert_eq!(config.retry().name(), "inventory");
    assert_eq!(reload.snapshot().restart_only, 5);
}

// === the server stack, in paused time ===

/// A handler that takes `ms` of (paused) time.
fn slow_app(stack: ServerStackLayer) -> Router {
    Router::new()
        .route(
            "/{ms}",
            get(
                |axum::extract::Path(ms): axum::extract::Path<u64>| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "done"
                },
            ),
        )
        .layer(stack)
}

fn req(path: &str) -> Request<axum::body::Body> {
    Request::get(path).body(axum::body::Body::empty()).unwrap()
}

/// Sends a request through `app` itself (not a clone of it).
async fn send(app: &mut Router, path: &str) -> StatusCode {
    ServiceExt::<Request<axum::body::Body>>::ready(app)
        .await
        .unwrap()
        .call(req(path))
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_longer_server_timeout_applies_to_the_next_requests() {
    let stack = ServerStackLayer::http(
        toml::from_str::<ServerConfig>("[timeout]\ntimeout = \"1s\"").unwrap(),
    );
    let reload = stack.reload_handle();
    let mut app = slow_app(stack);
    let mut clone = app.clone();
    assert_eq!(send(&mut app, "/2000").await, StatusCode::GATEWAY_TIMEOUT);
    reload.apply_toml("[timeout]\ntimeout = \"5s\"").unwrap();
    // The same service, and a clone made before the change, follow it.
    assert_eq!(send(&mut app, "/2000").await, StatusCode::OK);
    assert_eq!(send(&mut clone, "/2000").await, StatusCode::OK);
    reload.apply_toml("[timeout]\ntimeout = \"500ms\"").unwrap();
    assert_eq!(send(&mut clone, "/1000").await, StatusCode::GATEWAY_TIMEOUT);
    // Removing the timeout is restart-only: the last one stays.
    let applied = reload.apply_toml("without = [\"timeout\"]").unwrap();
    assert_eq!(applied.restart_only(), ["timeout"]);
    assert_eq!(
        reload.config().timeout().unwrap().timeout(),
        Duration::from_millis(500)
    );
    assert_eq!(send(&mut app, "/1000").await, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_wider_queue_admits_its_waiters_at_once_and_keeps_them() {
    let stack = ServerStackLayer::http(
        toml::from_str::<ServerConfig>(
            "[timeout]\ntimeout = \"60s\"\n[queue]\nname = \"api\"\nconcurrency = 1\ncapacity = 10\nmax_wait = \"30s\"",
        )
        .unwrap(),
    );
    let queue = stack.queue_handle().unwrap();
    let reload = stack.reload_handle();
    let app = slow_app(stack);
    let calls: Vec<_> = (0..3)
        .map(|_| tokio::spawn(app.clone().oneshot(req("/1000"))))
        .collect();
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    let snap = queue.snapshot();
    assert_eq!((snap.in_service, snap.queued), (1, 2));

    let applied = reload
        .apply_toml("[timeout]\ntimeout = \"60s\"\n[queue]\nname = \"api\"\nconcurrency = 3\ncapacity = 10\nmax_wait = \"30s\"")
        .unwrap();
    assert!(applied.restart_only().is_empty());
    let snap = queue.snapshot();
    assert_eq!((snap.in_service, snap.queued, snap.limit), (3, 0, 3));
    // Every call finishes in one handler's time: none waited for another.
    let start = tokio::time::Instant::now();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(queue.snapshot().rejected.full, 0);

    // A renamed queue keeps its name (restart-only), the rest applies.
    let applied = reload
        .apply_toml("[queue]\nname = \"other\"\nconcurrency = 2")
        .unwrap();
    assert_eq!(applied.restart_only(), ["queue.name"]);
    assert_eq!(queue.snapshot().limit, 2);
    assert_eq!(reload.config().queue().unwrap().name(), "api");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_shorter_queue_wait_refuses_the_next_waiters_sooner() {
    let stack = ServerStackLayer::http(
        toml::from_str::<ServerConfig>(
            "without = [\"timeout\"]\n[queue]\nconcurrency = 1\ncapacity = 10\nmax_wait = \"10s\"\ncodel = false",
        )
        .unwrap(),
    );
    let reload = stack.reload_handle();
    let app = slow_app(stack);
    let first = tokio::spawn(app.clone().oneshot(req("/5000")));
    tokio::task::yield_now().await;
    reload
        .apply_toml("without = [\"timeout\"]\n[queue]\nconcurrency = 1\ncapacity = 10\nmax_wait = \"1s\"\ncodel = false")
        .unwrap();
    let start = tokio::time::Instant::now();
    let second = app.clone().oneshot(req("/1")).await.unwrap();
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
}

/// A loopback HTTP server answering 200 after 300 ms.
async fn slow_instance() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(get(|| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        "ok"
    }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn the_call_deadline_and_the_attempt_timeout_change_for_the_next_calls() {
    let addr = slow_instance().await;
    let toml = |deadline: &str, attempt: &str| {
        format!(
            "name = \"inventory\"\ndeadline = \"{deadline}\"\nattempt_timeout = \"{attempt}\"\n\
             without = [\"health_check\", \"throttle\"]\nendpoints = [\"{addr}\"]\n\
             [retry]\nname = \"inventory\"\nmax_attempts = 1"
        )
    };
    let config: ClientConfig = toml::from_str(&toml("100ms", "10s")).unwrap();
    let client = ClientStack::builder(config).build_http::<String>().unwrap();
    let reload = client.handles().reload().clone();
    let call = |client: &ClientStack<HttpService<String>>| {
        client
            .clone()
            .oneshot(Request::get("/").body(String::new()).unwrap())
    };
    // The deadline (100 ms) ends the call before the answer (300 ms).
    let err = call(&client).await.unwrap_err();
    assert!(err.is::<resilience::Elapsed>(), "{err}");
    reload.apply_toml(&toml("10s", "10s")).unwrap();
    assert_eq!(call(&client).await.unwrap().status(), StatusCode::OK);
    // Now the attempt timeout ends the try.
    reload.apply_toml(&toml("10s", "100ms")).unwrap();
    let err = call(&client).await.unwrap_err();
    assert!(err.is::<resilience::Elapsed>(), "{err}");
    reload.apply_toml(&toml("10s", "10s")).unwrap();
    assert_eq!(call(&client).await.unwrap().status(), StatusCode::OK);
    assert_eq!(reload.snapshot().applied, 3);
}
