//! Configuration and client-side promises of the correlation layers, driven
//! without a network.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use resilience_core::{Deadline, Elapsed, Priority, TimeoutLayer};
use resilience_correlation::{
    CorrelationConfig, CorrelationLayer, PropagateContextLayer, RequestContext, TraceContext,
};
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

/// Runs one request through a server layer; returns the response headers and
/// the id the handler saw.
async fn serve(
    config: CorrelationConfig,
    headers: &[(&'static str, &'static str)],
) -> (HeaderMap, String) {
    let seen = Arc::new(Mutex::new(String::new()));
    let sink = seen.clone();
    let svc = CorrelationLayer::with_config(config).layer(service_fn(move |_: Request<()>| {
        let sink = sink.clone();
        async move {
            *sink.lock().unwrap() = RequestContext::current()
                .unwrap()
                .correlation_id()
                .to_string();
            Ok::<_, Infallible>(Response::new(()))
        }
    }));
    let mut req = Request::new(());
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    let rsp = svc.oneshot(req).await.unwrap();
    let id = seen.lock().unwrap().clone();
    (rsp.headers().clone(), id)
}

#[tokio::test]
async fn an_id_is_accepted_from_x_request_id_too() {
    let (headers, id) = serve(
        CorrelationConfig::default(),
        &[("x-request-id", "from-proxy")],
    )
    .await;
    assert_eq!(id, "from-proxy");
    assert_eq!(headers["x-correlation-id"], "from-proxy");
    // The primary header wins when both are present.
    let (_, id) = serve(
        CorrelationConfig::default(),
        &[("x-request-id", "second"), ("x-correlation-id", "first")],
    )
    .await;
    assert_eq!(id, "first");
    // Unless alternates are switched off.
    let strict = CorrelationConfig::builder()
        .no_accept_headers()
        .build()
        .unwrap();
    let (_, id) = serve(strict, &[("x-request-id", "from-proxy")]).await;
    assert_ne!(id, "from-proxy");
}

#[tokio::test]
async fn a_custom_id_header_and_no_echo() {
    let custom = CorrelationConfig::builder()
        .id_header("x-trace-ref")
        .build()
        .unwrap();
    let (headers, id) = serve(custom, &[("x-trace-ref", "abc-1")]).await;
    assert_eq!(id, "abc-1");
    assert_eq!(headers["x-trace-ref"], "abc-1");
    assert!(headers.get("x-correlation-id").is_none());

    let quiet = CorrelationConfig::builder().echo(false).build().unwrap();
    let (headers, id) = serve(quiet, &[("x-correlation-id", "abc-2")]).await;
    assert_eq!(id, "abc-2");
    assert!(headers.is_empty(), "{headers:?}");
}

#[test]
fn invalid_header_names_fail_when_built() {
    let err = CorrelationConfig::builder()
        .id_header("bad header")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "id_header");
    let err = CorrelationConfig::builder()
        .accept_header("x\ny")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "accept_header");
}

#[test]
fn the_deadline_policys_maximum_follows_the_duration_rule() {
    use resilience_core::DeadlinePolicy;
    use resilience_core::config::MAX_DURATION;
    let with_max = |max| {
        CorrelationConfig::builder()
            .deadline_policy(DeadlinePolicy::new().max(max))
            .build()
    };
    for bad in [
        Duration::ZERO,
        MAX_DURATION + Duration::from_nanos(1),
        Duration::from_secs(400 * 24 * 3600),
        Duration::MAX,
    ] {
        let err = with_max(bad).unwrap_err();
        assert_eq!(err.field(), "deadline_policy.max", "{bad:?}");
    }
    assert!(with_max(MAX_DURATION).is_ok());
    assert!(with_max(Duration::from_nanos(1)).is_ok());
}

/// What the recording client's inner service saw of the outgoing request.
type Seen = Arc<Mutex<Option<http::request::Parts>>>;

/// A client whose inner service records the outgoing request's head.
fn recording_client() -> (
    impl tower::Service<Request<()>, Response = Response<()>, Error = resilience_core::BoxError> + Clone,
    Seen,
) {
    let seen = Arc::new(Mutex::new(None));
    let sink = seen.clone();
    let svc = ServiceBuilder::new()
        .layer(PropagateContextLayer::new())
        .layer(TimeoutLayer::new(Duration::from_secs(5)))
        .service(service_fn(move |req: Request<()>| {
            // What the layers below read for this call (while it runs in
            // the caller's scope), kept as plain extensions of the record.
            let priority = Priority::from_extensions(req.extensions());
            let deadline = Deadline::from_extensions(req.extensions());
            let (mut parts, ()) = req.into_parts();
            if let Some(p) = priority {
                parts.extensions.insert(p);
            }
            if let Some(d) = deadline {
                parts.extensions.insert(d);
            }
            *sink.lock().unwrap() = Some(parts);
            async { Ok::<_, resilience_core::BoxError>(Response::new(())) }
        }));
    (svc, seen)
}

#[tokio::test]
async fn outside_a_request_the_client_leaves_the_request_alone() {
    let (client, seen) = recording_client();
    client.oneshot(Request::new(())).await.unwrap();
    let parts = seen.lock().unwrap().take().unwrap();
    assert!(parts.headers.is_empty(), "{:?}", parts.headers);
}

#[tokio::test]
async fn headers_the_caller_set_are_kept() {
    let (client, seen) = recording_client();
    let ctx = RequestContext::new("ctx-id".parse().unwrap(), TraceContext::new_root())
        .with_priority(Priority::Critical);
    ctx.clone()
        .scope(async {
            let req = Request::builder()
                .header("x-correlation-id", "caller-id")
                .header("x-priority", "sheddable")
                .body(())
                .unwrap();
            client.oneshot(req).await.unwrap();
        })
        .await;
    let parts = seen.lock().unwrap().take().unwrap();
    assert_eq!(parts.headers["x-correlation-id"], "caller-id");
    assert_eq!(parts.headers["x-priority"], "sheddable");
    // traceparent always comes from the context: this hop's span as parent.
    assert_eq!(parts.headers["traceparent"], ctx.trace().to_traceparent());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_expired_deadline_is_not_sent() {
    let (client, seen) = recording_client();
    let ctx =
        RequestContext::new_root().with_deadline(Some(Deadline::after(Duration::from_millis(10))));
    tokio::time::advance(Duration::from_millis(20)).await;
    let err = ctx
        .scope(client.oneshot(Request::new(())))
        .await
        .unwrap_err();
    assert!(err.is::<Elapsed>(), "{err}");
    assert!(
        seen.lock().unwrap().is_none(),
        "the call never reached the wire"
    );
}

#[tokio::test]
async fn the_priority_reaches_client_side_layers_and_the_wire() {
    use resilience_core::{PriorityFromExtensions, ReadPriority};
    for priority in Priority::ALL {
        let (client, seen) = recording_client();
        RequestContext::new_root()
            .with_priority(priority)
            .scope(client.oneshot(Request::new(())))
            .await
            .unwrap();
        let parts = seen.lock().unwrap().take().unwrap();
        assert_eq!(parts.headers["x-priority"], priority.as_str());
        // What a throttle or queue below this layer reads (a missing
        // extension reads as the default level).
        let req = Request::from_parts(parts, ());
        assert_eq!(PriorityFromExtensions.read_priority(&req), priority);
    }
}

#[tokio::test]
async fn every_call_of_a_request_carries_this_hops_span_as_parent() {
    let (client, seen) = recording_client();
    let ctx = RequestContext::new_root();
    let mut sent = Vec::new();
    for _ in 0..3 {
        ctx.clone()
            .scope(client.clone().oneshot(Request::new(())))
            .await
            .unwrap();
        let parts = seen.lock().unwrap().take().unwrap();
        sent.push(parts.headers["traceparent"].clone());
    }
    let expected = format!("00-{}-{}-01", ctx.trace().trace_id(), ctx.trace().span_id());
    assert!(sent.iter().all(|v| v == expected.as_str()), "{sent:?}");
}

/// The deadline headers and extension an outgoing request left with, when
/// sent from a request with `inbound` left through a recording client.
async fn sent_deadline(inbound: Option<Duration>, req: Request<()>) -> http::request::Parts {
    let (client, seen) = recording_client();
    RequestContext::new_root()
        .with_deadline(inbound.map(Deadline::after))
        .scope(client.oneshot(req))
        .await
        .unwrap();
    seen.lock().unwrap().take().unwrap()
}

fn left(parts: &http::request::Parts) -> Duration {
    Deadline::from_extensions(&parts.extensions)
        .expect("the deadline is in the extensions")
        .remaining()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_callers_own_deadline_header_below_the_inbound_one_is_kept() {
    let req = Request::builder()
        .header("x-deadline-ms", "100")
        .body(())
        .unwrap();
    let parts = sent_deadline(Some(Duration::from_secs(1)), req).await;
    assert_eq!(parts.headers["x-deadline-ms"], "100");
    assert!(parts.headers.get("grpc-timeout").is_none());
    assert_eq!(left(&parts), Duration::from_millis(100));

    // The reverse: the inbound deadline is the smaller one.
    let req = Request::builder()
        .header("x-deadline-ms", "5000")
        .body(())
        .unwrap();
    let parts = sent_deadline(Some(Duration::from_secs(1)), req).await;
    assert_eq!(parts.headers["x-deadline-ms"], "1000");
    assert_eq!(left(&parts), Duration::from_secs(1));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_grpc_timeout_on_a_plain_request_is_tightened_too() {
    // Downstream servers read `grpc-timeout` before `x-deadline-ms`: left
    // as it was, a larger one would loosen the deadline.
    let req = Request::builder()
        .header("grpc-timeout", "5S")
        .body(())
        .unwrap();
    let parts = sent_deadline(Some(Duration::from_secs(1)), req).await;
    assert_eq!(parts.headers["grpc-timeout"], "1000000u");
    assert_eq!(parts.headers["x-deadline-ms"], "1000");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_smallest_of_context_extension_and_headers_wins() {
    for (ext, header, expected) in [(300, "200", 200), (200, "300", 200), (2000, "3000", 1000)] {
        let mut req = Request::builder()
            .header("x-deadline-ms", header)
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(Deadline::after(Duration::from_millis(ext)));
        let parts = sent_deadline(Some(Duration::from_secs(1)), req).await;
        assert_eq!(
            parts.headers["x-deadline-ms"],
            expected.to_string().as_str()
        );
        assert_eq!(left(&parts), Duration::from_millis(expected));
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_malformed_deadline_header_is_never_trusted() {
    for bad in ["-5", "soon", "1.5", ""] {
        let req = Request::builder()
            .header("x-deadline-ms", bad)
            .header("grpc-timeout", bad)
            .body(())
            .unwrap();
        let parts = sent_deadline(Some(Duration::from_secs(1)), req).await;
        assert_eq!(parts.headers["x-deadline-ms"], "1000", "{bad:?}");
        assert_eq!(parts.headers["grpc-timeout"], "1000000u", "{bad:?}");
        assert_eq!(left(&parts), Duration::from_secs(1));
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn without_an_inbound_deadline_the_callers_own_travels() {
    // Only the caller's header: it is the smallest, left as it is.
    let req = Request::builder()
        .header("x-deadline-ms", "250")
        .body(())
        .unwrap();
    let parts = sent_deadline(None, req).await;
    assert_eq!(parts.headers["x-deadline-ms"], "250");

    // An extension and a header: the smaller goes on the wire.
    for (ext, header, expected) in [(400, "250", "250"), (200, "250", "200")] {
        let mut req = Request::builder()
            .header("x-deadline-ms", header)
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(Deadline::after(Duration::from_millis(ext)));
        let parts = sent_deadline(None, req).await;
        assert_eq!(parts.headers["x-deadline-ms"], expected);
    }

    // Nothing at all: no deadline is made up.
    let parts = sent_deadline(None, Request::new(())).await;
    assert!(parts.headers.get("x-deadline-ms").is_none());
    assert!(Deadline::from_extensions(&parts.extensions).is_none());
}

mod tonic_client {
    //! A real tonic client over a recording transport: the deadline a
    //! `tonic::Request::set_timeout` sets is what tonic's own `Channel`
    //! enforces and what the server reads.

    use super::*;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    /// Sends one health check with `timeout` set by the caller, inside a
    /// request with `inbound` left; returns what reached the transport.
    async fn grpc_sent(inbound: Duration, timeout: Duration) -> http::request::Parts {
        let seen = Arc::new(Mutex::new(None));
        let sink = seen.clone();
        let transport = service_fn(move |req: Request<tonic::body::Body>| {
            // The deadline the transport reads, in the caller's scope.
            let deadline = Deadline::from_extensions(req.extensions());
            let (mut parts, _) = req.into_parts();
            if let Some(d) = deadline {
                parts.extensions.insert(d);
            }
            *sink.lock().unwrap() = Some(parts);
            async {
                Err::<Response<tonic::body::Body>, resilience_core::BoxError>("recorded".into())
            }
        });
        let mut client = HealthClient::new(PropagateContextLayer::new().layer(transport));
        RequestContext::new_root()
            .with_deadline(Some(Deadline::after(inbound)))
            .scope(async {
                let mut req = tonic::Request::new(HealthCheckRequest::default());
                req.set_timeout(timeout);
                client.check(req).await.unwrap_err();
            })
            .await;
        seen.lock()
            .unwrap()
            .take()
            .expect("the call reached the transport")
    }

    fn grpc_timeout(parts: &http::request::Parts) -> Duration {
        resilience_core::deadline::parse_grpc_timeout(parts.headers["grpc-timeout"].as_bytes())
            .unwrap()
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn set_timeout_below_the_inbound_deadline_is_kept() {
        let parts = grpc_sent(Duration::from_secs(1), Duration::from_millis(100)).await;
        assert_eq!(grpc_timeout(&parts), Duration::from_millis(100));
        assert_eq!(parts.headers["x-deadline-ms"], "100");
        assert_eq!(left(&parts), Duration::from_millis(100));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn an_inbound_deadline_below_set_timeout_wins() {
        let parts = grpc_sent(Duration::from_secs(1), Duration::from_secs(5)).await;
        assert_eq!(grpc_timeout(&parts), Duration::from_secs(1));
        assert_eq!(parts.headers["x-deadline-ms"], "1000");
        assert_eq!(left(&parts), Duration::from_secs(1));
    }
}

/// With `insert_context`, the outgoing request carries the context (with
/// the call's deadline) for layers that run outside the caller's scope;
/// without it, nothing is inserted and the layers below read the caller's
/// scope while they run.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn insert_context_puts_the_context_into_the_outgoing_request() {
    let seen = Arc::new(Mutex::new(None));
    let sink = seen.clone();
    let record = service_fn(move |req: Request<()>| {
        *sink.lock().unwrap() = Some(req.into_parts().0);
        async { Ok::<_, Infallible>(Response::new(())) }
    });
    let inbound = RequestContext::new_root()
        .with_priority(Priority::Sheddable)
        .with_deadline(Some(Deadline::after(Duration::from_secs(1))));
    for insert in [false, true] {
        let client = PropagateContextLayer::new()
            .insert_context(insert)
            .layer(record.clone());
        // The caller tightens this call to 100 ms.
        let req = Request::builder()
            .header("x-deadline-ms", "100")
            .body(())
            .unwrap();
        inbound.clone().scope(client.oneshot(req)).await.unwrap();
        let parts = seen.lock().unwrap().take().unwrap();
        // Out of the scope now: only what the request itself carries.
        let ctx = parts.extensions.get::<RequestContext>();
        assert_eq!(ctx.is_some(), insert);
        assert_eq!(
            Priority::from_extensions(&parts.extensions),
            insert.then_some(Priority::Sheddable)
        );
        // The tighter deadline is in the extensions either way.
        assert_eq!(
            Deadline::from_extensions(&parts.extensions).map(|d| d.remaining()),
            Some(Duration::from_millis(100))
        );
        if let Some(ctx) = ctx {
            assert_eq!(ctx.correlation_id(), inbound.correlation_id());
            assert_eq!(
                ctx.deadline().unwrap().remaining(),
                Duration::from_millis(100)
            );
        }
    }
}
