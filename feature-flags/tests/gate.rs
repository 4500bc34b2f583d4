//! `RequireFlagLayer` and `FlagGateLayer`.

use http::{Request, Response, StatusCode};
use resilience_core::{BoxError, Rejected, RejectionKind, http::error_response};
use resilience_flags::gate::{FlagGateLayer, RequireFlagLayer};
use resilience_flags::{Flag, FlagSet, FlagStore, FlagsLayer};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

fn store() -> FlagStore {
    FlagStore::new(
        FlagSet::builder()
            .flag(Flag::boolean("beta").rollout(0.0).allow(["ann"]))
            .build()
            .unwrap(),
    )
}

fn req(user: &str) -> Request<()> {
    Request::get("/")
        .header("x-user-id", user)
        .body(())
        .unwrap()
}

fn reply(
    text: &'static str,
) -> impl tower::Service<Request<()>, Response = Response<&'static str>, Error = BoxError> + Clone {
    service_fn(move |_: Request<()>| async move { Ok::<_, BoxError>(Response::new(text)) })
}

#[tokio::test]
async fn require_flag_refuses_with_disabled() {
    let svc = ServiceBuilder::new()
        .layer(FlagsLayer::new(store()))
        .layer(RequireFlagLayer::new("beta"))
        .service(reply("ok"));
    assert_eq!(*svc.clone().oneshot(req("ann")).await.unwrap().body(), "ok");
    let err = svc.clone().oneshot(req("bob")).await.unwrap_err();
    let rejected = err.downcast_ref::<Rejected>().expect("a Rejected");
    assert_eq!(rejected.kind(), RejectionKind::Disabled);
    assert_eq!(error_response(&*err).status(), StatusCode::NOT_FOUND);

    // Without FlagsLayer every flag is off.
    let bare = RequireFlagLayer::new("beta").layer(reply("ok"));
    assert!(bare.oneshot(req("ann")).await.unwrap_err().is::<Rejected>());
}

#[tokio::test]
async fn inner_errors_pass_through() {
    let failing = service_fn(|_: Request<()>| async {
        Err::<Response<()>, _>(std::io::Error::other("boom"))
    });
    let svc = ServiceBuilder::new()
        .layer(FlagsLayer::new(store()))
        .layer(RequireFlagLayer::new("beta"))
        .service(failing);
    let err = svc.oneshot(req("ann")).await.unwrap_err();
    assert!(err.is::<std::io::Error>());
}

#[tokio::test]
async fn gate_routes_by_flag() {
    let svc = ServiceBuilder::new()
        .layer(FlagsLayer::new(store()))
        .layer(FlagGateLayer::new("beta", reply("new")))
        .service(reply("old"));
    assert_eq!(
        *svc.clone().oneshot(req("ann")).await.unwrap().body(),
        "new"
    );
    assert_eq!(
        *svc.clone().oneshot(req("bob")).await.unwrap().body(),
        "old"
    );
}

#[tokio::test]
async fn gate_is_ready_when_both_are() {
    let (on, mut on_handle) = tower_test::mock::pair::<Request<()>, Response<&'static str>>();
    let layer = FlagGateLayer::new("beta", on);
    let mut svc = tower_test::mock::Spawn::new(layer.layer(reply("old")));
    on_handle.allow(0);
    assert_pending!(svc.poll_ready());
    on_handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
}
