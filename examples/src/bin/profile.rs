//! Reference service 1 on loopback: a profile page rendered from three
//! components, degrading one component at a time. A scripted scenario:
//! all healthy; `institution` hangs; `publications` fails until its breaker
//! opens; `publications` recovers and its breaker closes after half-open.
//! Each step prints the page and the breakers; the log lines of a page, in
//! every service, carry the page's correlation id.
//!
//! Run: `cargo run -p resilience-examples --bin profile`

use resilience_core::BoxError;
use resilience_examples::profile::{Component, Demo, Mode, PageResponse, ProfileSettings};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    resilience_examples::init_logging("demo");
    let settings = ProfileSettings::DEMO;
    let demo = Demo::start(&settings).await?;
    println!(
        "profile on {}; component timeout {:?}, breakers decide after {} calls, open for {:?}\n",
        demo.url, settings.timeout, settings.window, settings.open_for
    );
    let publications = demo.component(Component::Publications);
    let institution = demo.component(Component::Institution);
    let breaker = demo.profile.breaker(Component::Publications);
    let mut transitions = breaker.subscribe();

    step(&demo, "1. all healthy", demo.page("alice", "demo-1").await?);
    let req = demo
        .page_request("alice", "demo-2")
        .header("X-Flag-NewFeature", "1")
        .body(Default::default())?;
    step(
        &demo,
        "1b. all healthy, new section switched on for this request",
        demo.fetch(req).await?,
    );

    institution.set_mode(Mode::Slow);
    step(
        &demo,
        "2. institution hangs: the page answers after its timeout, without it",
        demo.page("alice", "demo-3").await?,
    );
    institution.set_mode(Mode::Healthy);

    publications.set_mode(Mode::Failing);
    let mut n = 0;
    while !breaker.state().is_open() && n < 10 {
        n += 1;
        let id = format!("demo-4.{n}");
        let page = demo.page("alice", &id).await?;
        step(&demo, &format!("3.{n}. publications fails (500)"), page);
    }
    let s = breaker.snapshot();
    println!(
        "   the breaker opened after {n} failed pages: {} of its last {} calls failed (threshold 50%)\n",
        s.failures(),
        s.calls()
    );
    let before = publications.calls();
    let page = demo.page("alice", "demo-5").await?;
    step(
        &demo,
        "3b. publications' breaker is open: the page does not even call it",
        page,
    );
    println!(
        "   calls that reached publications: {before} before, {} after\n",
        publications.calls()
    );

    publications.set_mode(Mode::Healthy);
    if let Some(left) = breaker.snapshot().time_until_half_open() {
        println!(
            "   publications is healthy again; waiting {left:?} for the breaker to half-open\n"
        );
        tokio::time::sleep(left).await;
    }
    step(
        &demo,
        "4. open period over: one probe call goes through, succeeds and closes the breaker",
        demo.page("alice", "demo-6").await?,
    );

    println!("publications' breaker transitions:");
    while let Ok(t) = transitions.try_recv() {
        println!("   {} -> {} ({})", t.from(), t.to(), t.reason());
    }
    Ok(())
}

fn step(demo: &Demo, title: &str, page: PageResponse) {
    println!(
        "== {title}\n-> {} in {} ms, id {}, degraded: {}\n{}   breakers: {}\n",
        page.status,
        page.elapsed.as_millis(),
        page.correlation_id.as_deref().unwrap_or("-"),
        page.degraded.as_deref().unwrap_or("none"),
        indent(&page.body),
        demo.profile.breaker_states()
    );
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   | {l}\n")).collect()
}
