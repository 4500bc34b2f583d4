//! Reference service 1 over real loopback HTTP: the profile page renders
//! whatever its components do, and each component's breaker opens, fails
//! fast and closes again as documented.
//!
//! Real sockets, so real time: durations are short and every wait for a
//! state is a bounded poll, never a fixed sleep.

use std::future::Future;
use std::time::Duration;

use resilience::client::{ClientConfig, ClientPart};
use resilience_circuit_breaker::CircuitState;
use resilience_examples::profile::{
    Component, Demo, Mode, NEW_FEATURE_FLAG, Profile, ProfileSettings, client_config,
};

/// Settings for tests: a breaker that never half-opens during a test unless
/// the test asks for a short `open_for`. Tests where no call should time
/// out use a 2 s timeout: far above a loopback call, even on a loaded
/// machine.
fn settings(timeout_ms: u64, open_for: Duration) -> ProfileSettings {
    ProfileSettings {
        timeout: Duration::from_millis(timeout_ms),
        window: 4,
        open_for,
    }
}

/// Polls `check` every 10 ms until it holds; fails the test after 10 s.
async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    resilience_examples::wait_until(what, Duration::from_millis(10), check).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_components_give_the_full_page() {
    let demo = Demo::start(&settings(2_000, Duration::from_secs(30)))
        .await
        .unwrap();
    let page = demo.page("alice", "healthy-1").await.unwrap();

    assert_eq!(page.status, 200);
    assert_eq!(page.degraded, None);
    assert!(
        page.body.contains("publications: 3 papers by alice"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("about-me: alice builds services"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains("institution: Institute of Resilient Systems")
    );
    assert!(page.body.contains("all components available"));
    for c in Component::ALL {
        assert_eq!(demo.component(c).calls(), 1, "{c}");
        assert_eq!(demo.profile.breaker(c).state(), CircuitState::Closed, "{c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_component_degrades_only_itself_within_the_timeout() {
    let timeout = Duration::from_millis(400);
    let demo = Demo::start(&settings(400, Duration::from_secs(30)))
        .await
        .unwrap();
    demo.component(Component::Institution).set_mode(Mode::Slow);

    let page = demo.page("alice", "slow-1").await.unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(page.degraded.as_deref(), Some("institution=timeout"));
    assert!(
        page.body
            .contains("institution: institution not available right now")
    );
    assert!(page.body.contains("publications: 3 papers by alice"));
    assert!(page.body.contains("about-me: alice builds services"));
    assert!(page.body.contains("degraded: institution=timeout"));
    assert!(page.elapsed >= timeout, "{:?}", page.elapsed);
    // Generous margin: a hung call would hold the page forever.
    assert!(
        page.elapsed < timeout + Duration::from_secs(2),
        "{:?}",
        page.elapsed
    );

    // One timeout is one failure in a window of 4: the breaker stays closed.
    let s = demo.profile.breaker(Component::Institution).snapshot();
    assert_eq!(
        (s.state(), s.calls(), s.failures()),
        (CircuitState::Closed, 1, 1)
    );
    assert_eq!(
        demo.profile
            .breaker(Component::Publications)
            .snapshot()
            .failures(),
        0
    );
}

/// The three calls run at the same time: three hung components cost the
/// page one timeout, not three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_are_called_concurrently() {
    let timeout = Duration::from_secs(1);
    let demo = Demo::start(&settings(1_000, Duration::from_secs(30)))
        .await
        .unwrap();
    for c in Component::ALL {
        demo.component(c).set_mode(Mode::Slow);
    }

    let page = demo.page("alice", "slow-all").await.unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(
        page.degraded.as_deref(),
        Some("publications=timeout, about-me=timeout, institution=timeout")
    );
    assert!(page.elapsed >= timeout, "{:?}", page.elapsed);
    assert!(
        page.elapsed < timeout * 2,
        "one after another? {:?}",
        page.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_component_opens_its_breaker_which_then_keeps_calls_away() {
    let demo = Demo::start(&settings(2_000, Duration::from_secs(30)))
        .await
        .unwrap();
    let publications = demo.component(Component::Publications);
    let breaker = demo.profile.breaker(Component::Publications);
    publications.set_mode(Mode::Failing);

    // The window needs 4 calls before it decides; 4 failures of 4 open it.
    for n in 1..=4 {
        let page = demo.page("alice", &format!("fail-{n}")).await.unwrap();
        assert_eq!(page.status, 200);
        assert_eq!(
            page.degraded.as_deref(),
            Some("publications=error (HTTP 500)")
        );
        assert!(
            page.body
                .contains("publications: publications are not available right now")
        );
        let expected = if n < 4 {
            CircuitState::Closed
        } else {
            CircuitState::Open
        };
        assert_eq!(breaker.state(), expected, "after {n} failures");
    }
    assert_eq!(publications.calls(), 4);

    for n in 1..=3 {
        let page = demo.page("alice", &format!("open-{n}")).await.unwrap();
        assert_eq!(page.status, 200);
        assert_eq!(page.degraded.as_deref(), Some("publications=circuit open"));
        assert!(page.body.contains("degraded: publications=circuit open"));
        assert!(page.body.contains("about-me: alice builds services"));
    }
    assert_eq!(publications.calls(), 4, "an open breaker does not call");
    assert_eq!(demo.component(Component::AboutMe).calls(), 7);
    assert!(breaker.snapshot().time_until_half_open().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_closes_again_once_the_component_is_healthy() {
    let demo = Demo::start(&settings(2_000, Duration::from_millis(100)))
        .await
        .unwrap();
    let publications = demo.component(Component::Publications);
    let breaker = demo.profile.breaker(Component::Publications);
    let mut transitions = breaker.subscribe();
    publications.set_mode(Mode::Failing);
    for n in 1..=4 {
        demo.page("alice", &format!("fail-{n}")).await.unwrap();
    }
    assert_eq!(breaker.state(), CircuitState::Open);

    publications.set_mode(Mode::Healthy);
    let mut n = 0;
    wait_until("a page is whole again", || {
        n += 1;
        let id = format!("recover-{n}");
        let demo = &demo;
        async move {
            let page = demo.page("alice", &id).await.unwrap();
            assert_eq!(page.status, 200);
            page.degraded.is_none()
        }
    })
    .await;

    assert_eq!(breaker.state(), CircuitState::Closed);
    let mut seen = Vec::new();
    while let Ok(t) = transitions.try_recv() {
        seen.push((t.from(), t.to()));
    }
    assert_eq!(
        seen,
        [
            (CircuitState::Closed, CircuitState::Open),
            (CircuitState::Open, CircuitState::HalfOpen),
            (CircuitState::HalfOpen, CircuitState::Closed),
        ]
    );
    // 4 failures, then exactly one probe.
    assert_eq!(publications.calls(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_is_not_a_failure_and_does_not_open_the_breaker() {
    let demo = Demo::start(&settings(2_000, Duration::from_secs(30)))
        .await
        .unwrap();
    let publications = demo.component(Component::Publications);
    publications.set_mode(Mode::NotFound);

    for n in 1..=8 {
        let page = demo.page("nobody", &format!("404-{n}")).await.unwrap();
        assert_eq!(page.status, 200);
        assert_eq!(page.degraded, None, "a 404 is not a degradation");
        assert!(page.body.contains("publications: (nothing to show)"));
    }
    let s = demo.profile.breaker(Component::Publications).snapshot();
    assert_eq!(
        (s.state(), s.calls(), s.failures()),
        (CircuitState::Closed, 4, 0)
    );
    assert_eq!(publications.calls(), 8, "every call went through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_correlation_id_reaches_every_component() {
    let demo = Demo::start(&settings(2_000, Duration::from_secs(30)))
        .await
        .unwrap();

    let page = demo.page("alice", "123-gda").await.unwrap();
    assert_eq!(page.correlation_id.as_deref(), Some("123-gda"));
    for c in Component::ALL {
        assert!(demo.component(c).saw_correlation_id("123-gda"), "{c}");
    }

    // Without an id, the profile makes one, and passes that one on.
    let req = http::Request::get(format!("{}/profile/alice", demo.url))
        .body(Default::default())
        .unwrap();
    let page = demo.fetch(req).await.unwrap();
    let id = page
        .correlation_id
        .expect("the profile returns the id it made");
    for c in Component::ALL {
        assert!(demo.component(c).saw_correlation_id(&id), "{c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_switches_the_new_section_on_for_one_request() {
    let demo = Demo::start(&settings(2_000, Duration::from_secs(30)))
        .await
        .unwrap();
    let marker = format!("(flag {NEW_FEATURE_FLAG})");

    let page = demo.page("alice", "flag-off").await.unwrap();
    assert!(!page.body.contains(&marker), "{}", page.body);

    let req = demo
        .page_request("alice", "flag-on")
        .header("X-Flag-NewFeature", "1")
        .body(Default::default())
        .unwrap();
    let page = demo.fetch(req).await.unwrap();
    assert!(page.body.contains(&marker), "{}", page.body);

    let page = demo.page("alice", "flag-off-again").await.unwrap();
    assert!(!page.body.contains(&marker), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_name_that_is_not_plain_is_refused_before_any_call() {
    let demo = Demo::start(&settings(2_000, Duration::from_secs(30)))
        .await
        .unwrap();
    for user in ["a%20b", "..%2Fadmin", "x%3Fy%3D1"] {
        let page = demo.page(user, "bad-user").await.unwrap();
        assert_eq!(page.status, 400, "{user}");
    }
    for c in Component::ALL {
        assert_eq!(demo.component(c).calls(), 0, "{c}");
    }
}

/// The profile's file and [`ProfileSettings::DEMO`] describe the same
/// component clients.
#[test]
fn the_profiles_file_holds_the_demo_settings() {
    for component in Component::ALL {
        let file = client_config(component);
        let code = ProfileSettings::DEMO.client_config(component).unwrap();
        assert_eq!(file.name(), component.name());
        assert_eq!(file.name(), code.name());
        assert_eq!(file.deadline(), code.deadline());
        assert_eq!(file.attempt_timeout(), code.attempt_timeout());
        assert_eq!(file.retry(), code.retry());
        assert_eq!(file.throttle(), code.throttle());
        assert_eq!(file.breaker(), code.breaker());
        assert_eq!(file.balancer(), code.balancer());
        assert_eq!(file.health_check(), code.health_check());
        assert_eq!(file.retry().max_attempts(), 1, "no retries");
        assert!(file.throttle().is_none() && file.health_check().is_none());
    }
}

/// A component's client needs its breaker and an `http://<ip>:<port>` URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_breaker_or_with_a_bad_url_is_refused() {
    let url = |_| "http://127.0.0.1:9".to_owned();
    let no_breaker = |c: Component| {
        ClientConfig::builder(c.name())
            .without(ClientPart::Breaker)
            .build()
            .unwrap()
    };
    let err = Profile::with_configs(no_breaker, url).unwrap_err();
    assert_eq!(err.field(), "breaker");
    let err = Profile::new(&ProfileSettings::DEMO, |_| "localhost:80".to_owned()).unwrap_err();
    assert_eq!(err.field(), "url");
    assert!(Profile::with_configs(client_config, url).is_ok());
}
