//! `CorrelationFormat` finds the id on our own span, whatever other spans
//! are called, and without allocating per line.
#![cfg(feature = "fmt")]

use std::convert::Infallible;
use std::io::Write;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use resilience_correlation::fmt::CorrelationFormat;
use resilience_correlation::{CorrelationConfig, CorrelationLayer};
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};
use tower_http::trace::TraceLayer;
use tracing_subscriber::fmt::MakeWriter;

const ID: &str = "fmt-test-id-1";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn subscriber(
    out: &Captured,
    level: tracing::Level,
    ansi: bool,
    format: CorrelationFormat,
) -> impl tracing::Subscriber + Send + Sync + 'static {
    tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_max_level(level)
        .with_ansi(ansi)
        .event_format(format)
        .finish()
}

fn request() -> Request<String> {
    let mut req = Request::new(String::new());
    req.headers_mut()
        .insert("x-correlation-id", ID.parse().unwrap());
    req
}

/// The layer order the crate docs recommend: ours outermost, tower-http's
/// `TraceLayer` (whose span is named `request` too) inside it.
#[tokio::test]
async fn lines_under_tower_https_request_span_carry_the_id() {
    for ansi in [false, true] {
        let out = Captured::default();
        let _guard = tracing::subscriber::set_default(subscriber(
            &out,
            tracing::Level::DEBUG,
            ansi,
            CorrelationFormat::new("svc").with_time(false),
        ));
        let svc = ServiceBuilder::new()
            .layer(CorrelationLayer::new())
            .layer(TraceLayer::new_for_http())
            .service(service_fn(|_: Request<String>| async {
                tracing::warn!("handling");
                Ok::<_, Infallible>(Response::new(String::new()))
            }));
        svc.oneshot(request()).await.unwrap();
        let lines = out.lines();
        let handling: Vec<_> = lines.iter().filter(|l| l.contains("handling")).collect();
        assert_eq!(handling.len(), 1, "{lines:#?}");
        assert!(
            handling[0].contains(&format!("[{ID}]")),
            "ansi {ansi}: {lines:#?}"
        );
        // tower-http's own lines, in its span inside ours, too.
        assert!(
            lines
                .iter()
                .filter(|l| l.contains("DEBUG"))
                .all(|l| l.contains(&format!("[{ID}]"))),
            "ansi {ansi}: {lines:#?}"
        );
    }
}

#[tokio::test]
async fn a_span_of_someone_else_named_request_is_not_ours() {
    let out = Captured::default();
    let _guard = tracing::subscriber::set_default(subscriber(
        &out,
        tracing::Level::INFO,
        false,
        CorrelationFormat::new("svc").with_time(false),
    ));
    tracing::info_span!("request", correlation_id = "forged").in_scope(|| {
        tracing::warn!("outside any request");
    });
    assert_eq!(
        out.lines(),
        ["[svc] WARN [-] outside any request"],
        "the id comes from our span only"
    );
}

#[tokio::test]
async fn without_the_span_the_id_comes_from_the_context() {
    // A subscriber at WARN: the span (INFO) is not built.
    let out = Captured::default();
    let _guard = tracing::subscriber::set_default(subscriber(
        &out,
        tracing::Level::WARN,
        false,
        CorrelationFormat::new("svc").with_time(false),
    ));
    let svc = CorrelationLayer::with_config(CorrelationConfig::default()).layer(service_fn(
        |_: Request<String>| async {
            tracing::warn!("handling");
            Ok::<_, Infallible>(Response::new(String::new()))
        },
    ));
    svc.oneshot(request()).await.unwrap();
    tracing::warn!("after");
    assert_eq!(
        out.lines(),
        [
            format!("[svc] WARN [{ID}] handling"),
            "[svc] WARN [-] after".to_owned()
        ]
    );
}

#[tokio::test]
async fn span_names_skip_request_spans() {
    let out = Captured::default();
    let _guard = tracing::subscriber::set_default(subscriber(
        &out,
        tracing::Level::DEBUG,
        false,
        CorrelationFormat::new("svc")
            .with_time(false)
            .with_span_names(true),
    ));
    let svc = ServiceBuilder::new()
        .layer(CorrelationLayer::new())
        .layer(TraceLayer::new_for_http())
        .service(service_fn(|_: Request<String>| async {
            tracing::warn!("handling");
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
    tracing::Instrument::instrument(svc.oneshot(request()), tracing::info_span!("invoice"))
        .await
        .unwrap();
    let lines = out.lines();
    assert!(
        lines.contains(&format!("[invoice] WARN [{ID}] handling")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn formatting_a_line_allocates_nothing() {
    let out = Captured::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .with_max_level(tracing::Level::DEBUG)
            .event_format(CorrelationFormat::new("svc"))
            .finish(),
    );
    let counted = Arc::new(Mutex::new(None));
    let sink = counted.clone();
    let svc = ServiceBuilder::new()
        .layer(CorrelationLayer::new())
        .layer(TraceLayer::new_for_http())
        .service(service_fn(move |_: Request<String>| {
            let sink = sink.clone();
            async move {
                // The subscriber's line buffer grows to the longest line.
                tracing::warn!(n = 1000, "handling");
                let info = allocation_counter::measure(|| {
                    for n in 0..100 {
                        tracing::warn!(n, "handling");
                    }
                });
                *sink.lock().unwrap() = Some(info.count_total);
                Ok::<_, Infallible>(Response::new(String::new()))
            }
        }));
    svc.oneshot(request()).await.unwrap();
    drop(out);
    assert_eq!(
        *counted.lock().unwrap(),
        Some(0),
        "allocations for 100 lines"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_line_logged_while_a_cancelled_handler_drops_carries_the_id() {
    struct LogsOnDrop;
    impl Drop for LogsOnDrop {
        fn drop(&mut self) {
            tracing::warn!("cancelled");
        }
    }
    for level in [tracing::Level::INFO, tracing::Level::WARN] {
        let out = Captured::default();
        let _guard = tracing::subscriber::set_default(subscriber(
            &out,
            level,
            false,
            CorrelationFormat::new("svc").with_time(false),
        ));
        let svc = CorrelationLayer::new().layer(service_fn(|_: Request<String>| async {
            let _logs = LogsOnDrop;
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
        let call = svc.oneshot(request());
        let timeout = tokio::time::timeout(std::time::Duration::from_secs(1), call);
        assert!(timeout.await.is_err());
        assert_eq!(
            out.lines(),
            [format!("[svc] WARN [{ID}] cancelled")],
            "{level}"
        );
    }
}

/// A handler behind our server layer calls a dependency twice through
/// `PropagateContextLayer`, as a retry layer above it would: each try's
/// request carries its `Attempt`. Lines logged during a try show its
/// number after the id, and the `attempt` span carries it for any other
/// formatter; a call without an `Attempt` shows none.
#[tokio::test]
async fn lines_of_an_outgoing_attempt_show_its_number() {
    use resilience_core::Attempt;
    use resilience_correlation::PropagateContextLayer;

    let client = PropagateContextLayer::new().layer(service_fn(|req: Request<()>| async move {
        tracing::warn!(status = 503, "dependency answered");
        Ok::<_, Infallible>(Response::new(req.headers()["x-correlation-id"].clone()))
    }));
    let handler = service_fn(move |_: Request<String>| {
        let client = client.clone();
        async move {
            let first = Attempt::first();
            let mut tries = vec![first.clone(), first.next()];
            for attempt in tries.drain(..) {
                let mut req = Request::new(());
                req.extensions_mut().insert(attempt);
                let rsp = client.clone().oneshot(req).await?;
                assert_eq!(rsp.body(), ID, "the try carries the request's id");
            }
            client.clone().oneshot(Request::new(())).await?;
            Ok::<_, Infallible>(Response::new(String::new()))
        }
    });
    let svc = CorrelationLayer::new().layer(handler);

    let out = Captured::default();
    let guard = tracing::subscriber::set_default(subscriber(
        &out,
        tracing::Level::INFO,
        false,
        CorrelationFormat::new("svc").with_time(false),
    ));
    svc.oneshot(request()).await.unwrap();
    drop(guard);
    let lines = out.lines();
    assert_eq!(
        lines,
        [
            format!("[svc] WARN [{ID} attempt=1] dependency answered status=503"),
            format!("[svc] WARN [{ID} attempt=2] dependency answered status=503"),
            format!("[svc] WARN [{ID}] dependency answered status=503"),
        ],
        "{lines:#?}"
    );

    // Any formatter that prints spans shows the number as a span field.
    let out = Captured::default();
    let plain = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .without_time()
        .finish();
    let svc = CorrelationLayer::new().layer(service_fn(|_: Request<String>| async {
        let client = PropagateContextLayer::new().layer(service_fn(|_: Request<()>| async {
            tracing::info!("sent");
            Ok::<_, Infallible>(Response::new(()))
        }));
        let mut req = Request::new(());
        req.extensions_mut().insert(Attempt::first().next().next());
        client.oneshot(req).await?;
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let guard = tracing::subscriber::set_default(plain);
    svc.oneshot(request()).await.unwrap();
    drop(guard);
    let lines = out.lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains(&format!("request{{correlation_id={ID} "))
            && lines[0].contains("}:attempt{attempt=3}: "),
        "{lines:#?}"
    );
}

/// The standard client order: the context propagated above the retry
/// layer. The first try's lines have no number; a retry's lines show the
/// number from the span the retry layer opens around it.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn lines_of_a_retry_below_the_propagation_show_its_number() {
    use resilience_correlation::PropagateContextLayer;
    use resilience_retry::{RetryBody, RetryConfig, RetryLayer};
    use std::sync::atomic::{AtomicU32, Ordering};

    let calls = Arc::new(AtomicU32::new(0));
    let dependency = {
        let calls = calls.clone();
        service_fn(move |_: Request<RetryBody<String>>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let status = if n == 0 { 503 } else { 200 };
                tracing::warn!(status, "dependency answered");
                let mut rsp = Response::new(());
                *rsp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                Ok::<_, Infallible>(rsp)
            }
        })
    };
    let retry = RetryLayer::new(
        RetryConfig::builder()
            .name("fmt")
            .max_attempts(2)
            .build()
            .unwrap(),
    );
    let client = ServiceBuilder::new()
        .layer(PropagateContextLayer::new())
        .layer(retry)
        .service(dependency);
    let svc = CorrelationLayer::new().layer(service_fn(move |_: Request<String>| {
        let client = client.clone();
        async move {
            let rsp = client.oneshot(Request::new(String::new())).await.unwrap();
            assert_eq!(rsp.status(), 200, "the retry succeeded");
            Ok::<_, Infallible>(Response::new(String::new()))
        }
    }));

    let out = Captured::default();
    let guard = tracing::subscriber::set_default(subscriber(
        &out,
        tracing::Level::INFO,
        false,
        CorrelationFormat::new("svc").with_time(false),
    ));
    svc.oneshot(request()).await.unwrap();
    drop(guard);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let lines = out.lines();
    assert_eq!(
        lines,
        [
            format!("[svc] WARN [{ID}] dependency answered status=503"),
            format!("[svc] WARN [{ID} attempt=2] dependency answered status=200"),
        ],
        "{lines:#?}"
    );
}
