//! The request's scope covers the handler's future for its whole life: while
//! it is polled and while it is dropped (a request cancelled by a timeout or
//! a client that went away), as tokio's `task_local!` does.

use std::convert::Infallible;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use resilience_correlation::{CorrelationConfig, CorrelationLayer, RequestContext};
use tower::{Layer, ServiceExt, service_fn};
use tracing_subscriber::fmt::MakeWriter;

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

/// Logs, when dropped, the id of the request in scope.
struct LogsOnDrop;

impl Drop for LogsOnDrop {
    fn drop(&mut self) {
        let id = RequestContext::current().map(|c| c.correlation_id().to_string());
        tracing::warn!(
            correlation_id = id.as_deref().unwrap_or("-"),
            "handler dropped"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_line_logged_while_the_handlers_future_drops_carries_the_id() {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // No span: the id can only come from the context.
    let config = CorrelationConfig::builder().span(false).build().unwrap();
    let svc = CorrelationLayer::with_config(config).layer(service_fn(|_: Request<()>| async {
        let _logs = LogsOnDrop;
        std::future::pending::<()>().await;
        Ok::<_, Infallible>(Response::new(()))
    }));
    let mut req = Request::new(());
    req.headers_mut()
        .insert("x-correlation-id", "dropped-1".parse().unwrap());
    let timed_out = tokio::time::timeout(Duration::from_secs(1), svc.oneshot(req)).await;
    assert!(timed_out.is_err(), "the handler never answers");
    assert!(
        RequestContext::current().is_none(),
        "the scope ends with the drop"
    );
    let out = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert!(
        out.contains("handler dropped correlation_id=\"dropped-1\""),
        "{out}"
    );
}

#[tokio::test]
async fn a_future_dropped_inside_another_scope_restores_it() {
    let inner = RequestContext::new(
        "inner".parse().unwrap(),
        resilience_correlation::TraceContext::new_root(),
    );
    let outer = RequestContext::new(
        "outer".parse().unwrap(),
        resilience_correlation::TraceContext::new_root(),
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    outer
        .scope(async move {
            struct Record(Arc<Mutex<Vec<Option<String>>>>);
            impl Drop for Record {
                fn drop(&mut self) {
                    self.0
                        .lock()
                        .unwrap()
                        .push(RequestContext::current().map(|c| c.correlation_id().to_string()));
                }
            }
            let record = Record(sink.clone());
            let fut = inner.scope(async move {
                let _record = record;
                std::future::pending::<()>().await;
            });
            drop(fut); // never polled: dropped inside the outer scope
            sink.lock()
                .unwrap()
                .push(RequestContext::current().map(|c| c.correlation_id().to_string()));
        })
        .await;
    assert_eq!(
        *seen.lock().unwrap(),
        [Some("inner".to_owned()), Some("outer".to_owned())]
    );
}

#[tokio::test]
async fn the_inner_services_call_runs_in_the_scope_too() {
    // What a layer below logs in its `call` (tower-http's `TraceLayer`
    // logs the request's start there) sees the context.
    let svc = CorrelationLayer::new().layer(service_fn(|_: Request<()>| {
        let id = RequestContext::current().map(|c| c.correlation_id().to_string());
        async move { Ok::<_, Infallible>(Response::new(id)) }
    }));
    let mut req = Request::new(());
    req.headers_mut()
        .insert("x-correlation-id", "in-call-1".parse().unwrap());
    let rsp = svc.oneshot(req).await.unwrap();
    assert_eq!(rsp.body().as_deref(), Some("in-call-1"));
    assert!(RequestContext::current().is_none());
}
