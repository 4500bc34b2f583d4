//! `FlagsLayer` per request: targeting key, extensions, task-local, and
//! header overrides (trusted/untrusted x overridable/protected).

use std::convert::Infallible;

use http::{HeaderValue, Request, Response};
use resilience_correlation::RequestContext;
use resilience_flags::{Flag, FlagSet, FlagStore, Flags, FlagsConfig, FlagsLayer, Reason};
use tower::{Layer, ServiceExt, service_fn};

fn store() -> FlagStore {
    FlagStore::new(
        FlagSet::builder()
            .flag(Flag::boolean("open").rollout(0.0).overridable(true))
            .flag(Flag::boolean("protected").rollout(0.0))
            .flag(
                Flag::variant("color", "blue", "green")
                    .enabled(false)
                    .overridable(true),
            )
            .flag(
                Flag::boolean("beta-header")
                    .rollout(0.0)
                    .when_header("x-beta", "1", true),
            )
            .flag(Flag::boolean("vip").rollout(0.0).allow(["ann"]))
            .build()
            .unwrap(),
    )
}

/// What the handler saw: flags from the extensions, from the task-local, and
/// the forwarded headers of the current request context.
#[derive(Debug)]
struct Seen {
    flags: Flags,
    current_matches: bool,
    forwarded: Vec<(String, String)>,
}

async fn run(layer: FlagsLayer, req: Request<()>) -> Seen {
    let svc = layer.layer(service_fn(|req: Request<()>| async move {
        let flags = req
            .extensions()
            .get::<Flags>()
            .cloned()
            .expect("flags in extensions");
        let current = Flags::current().expect("flags in task-local");
        let current_matches = current.is_active("open") == flags.is_active("open")
            && Flags::is_active_now("open") == flags.is_active("open");
        let forwarded: Vec<(String, String)> = RequestContext::current()
            .map(|c| {
                c.forwarded_headers()
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let ext_ctx = req
            .extensions()
            .get::<RequestContext>()
            .map(|c| c.forwarded_headers().len());
        assert_eq!(
            ext_ctx.unwrap_or(0),
            forwarded.len(),
            "extension and task-local agree"
        );
        Ok::<_, Infallible>(Response::new(Seen {
            flags,
            current_matches,
            forwarded,
        }))
    }));
    svc.oneshot(req).await.unwrap().into_body()
}

fn trusting() -> FlagsLayer {
    let config = FlagsConfig::builder()
        .trust_overrides(|p| p.headers.get("x-staff").is_some_and(|v| v == "yes"))
        .build()
        .unwrap();
    FlagsLayer::with_config(store(), config)
}

fn request(headers: &[(&'static str, &'static str)]) -> Request<()> {
    let mut req = Request::builder().uri("/shop");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let mut req = req.body(()).unwrap();
    req.extensions_mut().insert(RequestContext::new_root());
    req
}

#[tokio::test]
async fn overrides_trusted_untrusted_overridable_protected() {
    // (trusted, flag, expected)
    let cases = [
        (true, "open", true),
        (true, "protected", false),
        (false, "open", false),
        (false, "protected", false),
    ];
    for (trusted, flag, expected) in cases {
        let header = if flag == "open" {
            "x-flag-open"
        } else {
            "x-flag-protected"
        };
        let mut req = request(&[("x-user-id", "bob")]);
        req.headers_mut()
            .insert(header, HeaderValue::from_static("1"));
        if trusted {
            req.headers_mut()
                .insert("x-staff", HeaderValue::from_static("yes"));
        }
        let seen = run(trusting(), req).await;
        let eval = seen.flags.evaluate_bool(flag, false);
        assert_eq!(*eval.value(), expected, "trusted={trusted} flag={flag}");
        assert_eq!(
            eval.reason() == Reason::Override,
            expected,
            "trusted={trusted} flag={flag}"
        );
        assert!(seen.current_matches);
        let forwarded = seen
            .forwarded
            .contains(&(header.to_owned(), "1".to_owned()));
        assert_eq!(
            forwarded, expected,
            "forwarded trusted={trusted} flag={flag}"
        );
        assert_eq!(seen.forwarded.len(), usize::from(expected));
    }
}

#[tokio::test]
async fn default_config_trusts_nobody() {
    let req = request(&[
        ("x-flag-open", "1"),
        ("x-staff", "yes"),
        ("x-user-id", "bob"),
    ]);
    let seen = run(FlagsLayer::new(store()), req).await;
    assert!(!seen.flags.is_active("open"));
    assert_eq!(seen.flags.overrides().count(), 0);
    assert!(seen.forwarded.is_empty());
}

#[tokio::test]
async fn variant_overrides_and_bad_values() {
    let req = request(&[
        ("x-staff", "yes"),
        ("x-flag-color", "green"),
        ("x-flag-open", "maybe"),
        ("x-flag-unknown", "1"),
    ]);
    let seen = run(trusting(), req).await;
    let color = seen.flags.evaluate_variant("color", "blue");
    assert_eq!(
        (&**color.value(), color.reason()),
        ("green", Reason::Override)
    );
    assert!(!seen.flags.is_active("open"), "an invalid value is ignored");
    assert_eq!(
        seen.forwarded,
        vec![("x-flag-color".to_owned(), "green".to_owned())]
    );

    // A variant the flag does not have is ignored (no arbitrary strings).
    let seen = run(
        trusting(),
        request(&[("x-staff", "yes"), ("x-flag-color", "purple")]),
    )
    .await;
    assert_eq!(&*seen.flags.variant("color", "blue"), "blue");
    assert_eq!(
        seen.flags.evaluate_variant("color", "blue").reason(),
        Reason::Disabled
    );
}

#[tokio::test]
async fn max_overrides_bounds_the_work() {
    let config = FlagsConfig::builder()
        .trust_overrides(|_| true)
        .max_overrides(1)
        .build()
        .unwrap();
    let req = request(&[("x-flag-open", "1"), ("x-flag-color", "green")]);
    let seen = run(FlagsLayer::with_config(store(), config), req).await;
    assert_eq!(seen.flags.overrides().count(), 1);
}

#[tokio::test]
async fn targeting_key_from_header_or_closure() {
    let seen = run(FlagsLayer::new(store()), request(&[("x-user-id", "ann")])).await;
    assert_eq!(seen.flags.context().key(), Some("ann"));
    assert!(seen.flags.is_active("vip"));

    let seen = run(FlagsLayer::new(store()), request(&[("x-user-id", "a n")])).await;
    assert_eq!(seen.flags.context().key(), None, "invalid key ignored");
    let long: &'static str = Box::leak("k".repeat(300).into_boxed_str());
    let seen = run(FlagsLayer::new(store()), request(&[("x-user-id", long)])).await;
    assert_eq!(seen.flags.context().key(), None, "too long key ignored");

    let config = FlagsConfig::builder()
        .targeting_key_fn(|p| p.uri.path().strip_prefix("/").map(str::to_owned))
        .build()
        .unwrap();
    let seen = run(
        FlagsLayer::with_config(store(), config),
        request(&[("x-user-id", "ann")]),
    )
    .await;
    assert_eq!(seen.flags.context().key(), Some("shop"));
    assert!(!seen.flags.is_active("vip"));

    assert_eq!(
        FlagsConfig::builder()
            .targeting_key_header("bad header")
            .build()
            .unwrap_err()
            .field(),
        "targeting_key_header"
    );
    assert_eq!(
        FlagsConfig::builder()
            .max_overrides(65)
            .build()
            .unwrap_err()
            .field(),
        "max_overrides"
    );
}

#[tokio::test]
async fn header_rules_see_the_request_headers() {
    let seen = run(
        FlagsLayer::new(store()),
        request(&[("x-beta", "1"), ("x-user-id", "bob")]),
    )
    .await;
    assert!(seen.flags.is_active("beta-header"));
    assert_eq!(seen.flags.context().path(), Some("/shop"));
    let seen = run(FlagsLayer::new(store()), request(&[("x-user-id", "bob")])).await;
    assert!(!seen.flags.is_active("beta-header"));
}

#[tokio::test]
async fn without_a_request_context_overrides_apply_but_are_not_forwarded() {
    let mut req = request(&[("x-staff", "yes"), ("x-flag-open", "1")]);
    req.extensions_mut().remove::<RequestContext>();
    let seen = run(trusting(), req).await;
    assert!(seen.flags.is_active("open"));
    assert!(seen.forwarded.is_empty());
}

#[test]
fn outside_a_request_there_are_no_current_flags() {
    assert!(Flags::current().is_none());
    assert!(!Flags::is_active_now("open"));
}

#[tokio::test]
async fn readiness_and_errors_are_the_inner_services() {
    use tokio_test::{assert_pending, assert_ready_ok};
    let (mut svc, mut handle) =
        tower_test::mock::spawn_layer::<Request<()>, Response<()>, _>(FlagsLayer::new(store()));
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(2);
    assert_ready_ok!(svc.poll_ready());
    let rsp = svc.call(request(&[("x-user-id", "ann")]));
    let (req, send) = handle.next_request().await.unwrap();
    assert!(req.extensions().get::<Flags>().unwrap().is_active("vip"));
    send.send_response(Response::new(()));
    rsp.await.unwrap();

    assert_ready_ok!(svc.poll_ready());
    let rsp = svc.call(request(&[]));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("boom");
    assert_eq!(rsp.await.unwrap_err().to_string(), "boom");
}
