//! Arbitrary inbound header bytes never panic, are never echoed unless
//! valid, and always yield a usable context.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{HeaderValue, Request, Response};
use proptest::prelude::*;
use resilience_correlation::{CorrelationId, CorrelationLayer, RequestContext};
use tower::{Layer, ServiceExt, service_fn};

fn run(headers: &[(&'static str, HeaderValue)]) -> (Response<()>, RequestContext) {
    let seen = Arc::new(Mutex::new(None));
    let sink = seen.clone();
    let svc = CorrelationLayer::new().layer(service_fn(move |req: Request<()>| {
        let sink = sink.clone();
        async move {
            let from_ext = req.extensions().get::<RequestContext>().cloned().unwrap();
            let current = RequestContext::current().unwrap();
            assert_eq!(from_ext.correlation_id(), current.correlation_id());
            assert_eq!(
                resilience_core::Priority::from_extensions(req.extensions()).unwrap_or_default(),
                current.priority()
            );
            *sink.lock().unwrap() = Some(current);
            Ok::<_, Infallible>(Response::new(()))
        }
    }));
    let mut req = Request::new(());
    for (k, v) in headers {
        req.headers_mut().append(*k, v.clone());
    }
    let rsp = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(svc.oneshot(req))
        .unwrap();
    let ctx = seen.lock().unwrap().take().expect("the inner service ran");
    (rsp, ctx)
}

#[test]
fn context_outside_a_request_is_none() {
    assert!(RequestContext::current().is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_in_every_context_header(
        id in proptest::collection::vec(any::<u8>(), 0..200),
        tp in proptest::collection::vec(any::<u8>(), 0..80),
        prio in proptest::collection::vec(any::<u8>(), 0..20),
        deadline in proptest::collection::vec(any::<u8>(), 0..24),
        grpc in proptest::collection::vec(any::<u8>(), 0..12),
    ) {
        let mut headers = Vec::new();
        for (name, bytes) in [("x-correlation-id", &id), ("traceparent", &tp), ("x-priority", &prio), ("x-deadline-ms", &deadline), ("grpc-timeout", &grpc)] {
            if let Ok(v) = HeaderValue::from_bytes(bytes) {
                headers.push((name, v));
            }
        }
        let (rsp, ctx) = run(&headers);
        let echoed = rsp.headers()["x-correlation-id"].clone();
        prop_assert!(CorrelationId::from_header(&echoed).is_ok(), "echoed id is always valid");
        prop_assert_eq!(echoed.as_bytes(), ctx.correlation_id().as_str().as_bytes());
        if let Some((_, v)) = headers.iter().find(|(n, _)| *n == "x-correlation-id") {
            let valid = CorrelationId::from_header(v).is_ok();
            prop_assert_eq!(valid, echoed == v, "echoed iff valid");
        }
        prop_assert!(ctx.priority() <= resilience_core::Priority::Critical);
    }
}

#[cfg(feature = "metrics")]
#[test]
fn invalid_inbound_values_are_counted_by_header() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        run(&[
            ("x-correlation-id", HeaderValue::from_static("has spaces")),
            ("traceparent", HeaderValue::from_static("00-zz")),
            ("x-priority", HeaderValue::from_static("urgent")),
            ("x-deadline-ms", HeaderValue::from_static("soon")),
        ]);
        run(&[("grpc-timeout", HeaderValue::from_static("99999999H"))]);
        run(&[
            ("x-correlation-id", HeaderValue::from_static("fine-id")),
            ("x-deadline-ms", HeaderValue::from_static("250")),
        ]);
    });
    let mut counts = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        assert_eq!(key.key().name(), "resilience_correlation_invalid_total");
        let header = key
            .key()
            .labels()
            .find(|l| l.key() == "header")
            .unwrap()
            .value()
            .to_owned();
        let DebugValue::Counter(n) = value else {
            panic!("a counter")
        };
        counts.insert(header, n);
    }
    let want: std::collections::BTreeMap<String, u64> = [
        ("correlation_id", 1),
        ("deadline", 2),
        ("traceparent", 1),
        ("x-priority", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(counts, want);
}
