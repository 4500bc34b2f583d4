//! Shared helpers: a scripted dependency that records every attempt.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use resilience_core::{Attempt, BoxError};
use resilience_retry::RetryBody;
use tokio::time::Instant;
use tower::Service;

/// What the dependency answers to one attempt.
pub enum Answer {
    /// A response with this status and these headers.
    Status(u16, Vec<(&'static str, String)>),
    /// An error.
    Error(BoxError),
    /// Wait, then answer.
    After(Duration, Box<Answer>),
    /// Never answer.
    Hang,
}

/// One attempt as the dependency saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Duration,
    pub method: http::Method,
    pub headers: HeaderMap,
    /// The `Attempt` in the request's extensions, if any.
    pub attempt: Option<Attempt>,
    pub body: Result<Bytes, String>,
}

/// Every attempt the dependency saw.
#[derive(Clone)]
pub struct Log {
    start: Instant,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Log {
    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn times(&self) -> Vec<Duration> {
        self.all().iter().map(|s| s.at).collect()
    }

    pub fn header(&self, i: usize, name: &str) -> Option<String> {
        self.all()[i]
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

pub fn ok() -> Answer {
    Answer::Status(200, vec![])
}

pub fn status(code: u16) -> Answer {
    Answer::Status(code, vec![])
}

pub fn status_with(code: u16, headers: &[(&'static str, &str)]) -> Answer {
    Answer::Status(
        code,
        headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
    )
}

/// A gRPC trailers-only answer with `grpc-status: code` and more headers.
pub fn grpc(code: u8, headers: &[(&'static str, &str)]) -> Answer {
    let mut h: Vec<(&'static str, String)> = vec![
        ("content-type", "application/grpc".to_owned()),
        ("grpc-status", code.to_string()),
    ];
    h.extend(headers.iter().map(|(k, v)| (*k, (*v).to_owned())));
    Answer::Status(200, h)
}

pub type Fut = Pin<Box<dyn Future<Output = Result<Response<()>, BoxError>> + Send>>;

/// A dependency that answers attempt `n` (from 0) with `script(n)`, reading
/// each request's whole body first.
pub fn dependency<B, F>(
    script: F,
) -> (
    impl Service<Request<RetryBody<B>>, Response = Response<()>, Error = BoxError, Future = Fut> + Clone,
    Log,
)
where
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
    F: Fn(usize) -> Answer + Clone + Send + Sync + 'static,
{
    let log = Log {
        start: Instant::now(),
        seen: Arc::default(),
    };
    let l = log.clone();
    let svc = tower::service_fn(move |req: Request<RetryBody<B>>| {
        let log = l.clone();
        let script = script.clone();
        Box::pin(async move {
            let at = log.start.elapsed();
            let (parts, body) = req.into_parts();
            let n = {
                let mut seen = log.seen.lock().unwrap();
                seen.push(Seen {
                    at,
                    method: parts.method.clone(),
                    headers: parts.headers.clone(),
                    attempt: Attempt::from_extensions(&parts.extensions).cloned(),
                    body: Err("not read yet".into()),
                });
                seen.len() - 1
            };
            let body = body
                .collect()
                .await
                .map(|c| Bytes::copy_from_slice(&c.to_bytes())) // a copy: the test bodies watch their own bytes
                .map_err(|e| e.to_string());
            log.seen.lock().unwrap()[n].body = body;
            answer(script(n)).await
        }) as Fut
    });
    (svc, log)
}

async fn answer(a: Answer) -> Result<Response<()>, BoxError> {
    let mut a = a;
    loop {
        match a {
            Answer::Status(code, headers) => {
                let mut b = Response::builder().status(code);
                for (k, v) in headers {
                    b = b.header(k, v);
                }
                return Ok(b.body(()).unwrap());
            }
            Answer::Error(e) => return Err(e),
            Answer::After(d, next) => {
                tokio::time::sleep(d).await;
                a = *next;
            }
            Answer::Hang => std::future::pending::<()>().await,
        }
    }
}

/// An IMF-fixdate for `t` (whole seconds).
pub fn http_date(t: std::time::SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let days = secs / 86400;
    // civil from days (Howard Hinnant)
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[m as usize - 1],
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A streamed body of `chunks`, of unknown size. Each chunk holds `alive`
/// (the `Arc` returned with it) until the last copy of its bytes is
/// dropped.
pub struct Chunks {
    chunks: VecDeque<Bytes>,
}

struct Owned(&'static [u8], Arc<()>);

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        self.0
    }
}

impl Chunks {
    pub fn new(chunks: &[&'static [u8]]) -> (Self, Arc<()>) {
        let alive = Arc::new(());
        let body = Self {
            chunks: chunks
                .iter()
                .map(|c| Bytes::from_owner(Owned(c, alive.clone())))
                .collect(),
        };
        (body, alive)
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }
}
