//! The `request` span: its fields reach every log line of the handler while
//! a subscriber listens at `INFO`, and it is not built otherwise.

use std::convert::Infallible;
use std::io::Write;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use resilience_correlation::{CorrelationConfig, CorrelationLayer};
use tower::{Layer, ServiceExt, service_fn};
use tracing_subscriber::fmt::MakeWriter;

const ID: &str = "span-test-id-1";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

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

/// Serves one request whose handler logs at `WARN`, under a subscriber
/// with `max_level`; returns what was written.
async fn logged(config: CorrelationConfig, max_level: tracing::Level) -> String {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_max_level(max_level)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let svc = CorrelationLayer::with_config(config).layer(service_fn(|_: Request<()>| async {
        tracing::warn!("handling");
        Ok::<_, Infallible>(Response::new(()))
    }));
    let mut req = Request::new(());
    req.headers_mut()
        .insert("x-correlation-id", ID.parse().unwrap());
    req.headers_mut()
        .insert("traceparent", TRACEPARENT.parse().unwrap());
    svc.oneshot(req).await.unwrap();
    let bytes = out.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn handler_lines_carry_the_ids_at_info() {
    let out = logged(CorrelationConfig::default(), tracing::Level::INFO).await;
    assert!(out.contains("handling"), "{out}");
    assert!(out.contains(&format!("correlation_id={ID}")), "{out}");
    assert!(
        out.contains("trace_id=4bf92f3577b34da6a3ce929d0e0e4736"),
        "{out}"
    );
}

#[tokio::test]
async fn no_span_when_info_is_off_or_spans_are_disabled() {
    let out = logged(CorrelationConfig::default(), tracing::Level::WARN).await;
    assert!(out.contains("handling"), "{out}");
    assert!(!out.contains("correlation_id"), "{out}");

    let config = CorrelationConfig::builder().span(false).build().unwrap();
    let out = logged(config, tracing::Level::INFO).await;
    assert!(out.contains("handling"), "{out}");
    assert!(!out.contains("correlation_id"), "{out}");
}
