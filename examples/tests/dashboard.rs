//! The demo's dashboard in a real browser: headless Chromium loads it while
//! an inventory instance is dead and a breaker is open, and its DOM shows
//! both. Saves a screenshot next to the test's output.
//!
//! Needs Debian's `chromium-headless-shell` (or `chromium`); without it the
//! test says why and passes, unless `RESILIENCE_REQUIRE_SERVERS=1` (set by
//! `.ci/run`, which installs it).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use resilience_circuit_breaker::CircuitState;
use resilience_discovery::EndpointState;
use resilience_examples::demo::{DemoSettings, Deployment, StartOptions};
use resilience_examples::profile::Component;
use resilience_examples::wait_until;

fn browser() -> Option<PathBuf> {
    ["chromium-headless-shell", "chromium", "chromium-browser"]
        .into_iter()
        .find_map(|name| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|dir| PathBuf::from(dir).join(name))
                .find(|p| p.is_file())
        })
}

/// Runs the browser on `url` with `extra` arguments, letting the page's
/// scripts run for a few seconds of virtual time; returns standard output.
fn run_browser(browser: &PathBuf, url: &str, extra: &[&str]) -> String {
    let profile = std::env::temp_dir().join(format!("resilience-chromium-{}", std::process::id()));
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--run-all-compositor-stages-before-draw",
            "--virtual-time-budget=4000",
            "--window-size=1280,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("the browser runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "browser failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_dead_instance_and_an_open_breaker() {
    let Some(browser) = browser() else {
        assert!(
            !resilience_test_support::servers_required(),
            "no chromium-headless-shell or chromium on PATH and {}=1",
            resilience_test_support::REQUIRE_SERVERS
        );
        eprintln!("skipped: no chromium-headless-shell or chromium on PATH");
        return;
    };
    let d = Deployment::start(&DemoSettings::quick(), &StartOptions::default())
        .await
        .unwrap();

    // The kill phase's state: inventory-2 dead and out of rotation, and the
    // publications breaker open.
    d.kill_instance(1);
    d.profile.breaker(Component::Publications).force_open();
    wait_until(
        "inventory-2 is out of rotation",
        Duration::from_millis(20),
        || async {
            matches!(
                d.shop.instance_state("inventory-2"),
                Some(EndpointState::Unhealthy | EndpointState::Ejected)
            )
        },
    )
    .await;
    assert_eq!(
        d.profile.breaker(Component::Publications).state(),
        CircuitState::ForcedOpen
    );

    let url = format!("{}/", d.admin_url);
    let b = browser.clone();
    let dom = tokio::task::spawn_blocking(move || run_browser(&b, &url, &["--dump-dom"]))
        .await
        .unwrap();
    // Every service has a card; the shop's balancer shows inventory-2 out.
    for s in &d.services {
        assert!(
            dom.contains(&format!("data-service=\"{}\"", s.name)),
            "no card for {}:\n{dom}",
            s.name
        );
    }
    let chip = regex_lite_find(&dom, "data-endpoint=\"inventory-2\"");
    assert!(
        chip.contains("data-state=\"unhealthy\"") || chip.contains("data-state=\"ejected\""),
        "inventory-2's chip: {chip}"
    );
    // The shop's breakers, one per instance, each named after its instance.
    for n in 1..=3 {
        let chip = regex_lite_find(&dom, &format!("data-breaker=\"inventory-{n}\""));
        assert!(
            chip.contains("data-state=\""),
            "inventory-{n}'s breaker: {chip}"
        );
    }
    let breaker = regex_lite_find(
        &dom,
        "data-kind=\"circuit_breaker\" data-name=\"publications\"",
    );
    assert!(breaker.contains("data-state=\"forced_open\""), "{breaker}");
    // The dead instance does not answer its own `/resilience` either.
    let card = regex_lite_find(&dom, "data-service=\"inventory-2\"");
    assert!(card.contains("data-up=\"false\""), "{card}");

    // A screenshot for people.
    let shot = std::env::temp_dir().join("resilience-dashboard.png");
    let url = format!("{}/", d.admin_url);
    let arg = format!("--screenshot={}", shot.display());
    tokio::task::spawn_blocking(move || run_browser(&browser, &url, &[&arg]))
        .await
        .unwrap();
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG: {}", shot.display());
    println!("screenshot: {}", shot.display());
}

/// The opening tag that contains `needle`.
fn regex_lite_find<'a>(dom: &'a str, needle: &str) -> &'a str {
    let at = dom
        .find(needle)
        .unwrap_or_else(|| panic!("no {needle} in the page:\n{dom}"));
    let start = dom[..at].rfind('<').unwrap_or(0);
    let end = dom[at..].find('>').map_or(dom.len(), |e| at + e + 1);
    &dom[start..end]
}
